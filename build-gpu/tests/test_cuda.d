build-gpu/tests/test_cuda.o: tests/test_cuda.c tests/../nn/cuda.h \
 tests/../nn/error.h tests/test.h
tests/../nn/cuda.h:
tests/../nn/error.h:
tests/test.h:
