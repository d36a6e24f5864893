build-gpu/eval/csv.o: eval/csv.c eval/csv.h eval/../nn/error.h
eval/csv.h:
eval/../nn/error.h:
