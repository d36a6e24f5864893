build-gpu/eval/predictions.o: eval/predictions.c eval/predictions.h \
 eval/../nn/error.h eval/csv.h
eval/predictions.h:
eval/../nn/error.h:
eval/csv.h:
