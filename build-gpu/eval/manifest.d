build-gpu/eval/manifest.o: eval/manifest.c eval/manifest.h \
 eval/../nn/error.h eval/csv.h
eval/manifest.h:
eval/../nn/error.h:
eval/csv.h:
