build-gpu/eval/metrics.o: eval/metrics.c eval/metrics.h \
 eval/../nn/error.h eval/../nn/rng.h
eval/metrics.h:
eval/../nn/error.h:
eval/../nn/rng.h:
