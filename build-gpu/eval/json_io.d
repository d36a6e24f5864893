build-gpu/eval/json_io.o: eval/json_io.c eval/json_io.h eval/metrics.h \
 eval/../nn/error.h
eval/json_io.h:
eval/metrics.h:
eval/../nn/error.h:
