build-gpu/tests/test_metrics.o: tests/test_metrics.c \
 tests/../eval/metrics.h tests/../nn/error.h tests/test.h
tests/../eval/metrics.h:
tests/../nn/error.h:
tests/test.h:
