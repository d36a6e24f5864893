build-gpu/tests/test_tensor.o: tests/test_tensor.c tests/../nn/error.h \
 tests/../nn/ops.h tests/../nn/rng.h tests/../nn/tensor.h \
 tests/../nn/rng.h tests/test.h
tests/../nn/error.h:
tests/../nn/ops.h:
tests/../nn/rng.h:
tests/../nn/tensor.h:
tests/../nn/rng.h:
tests/test.h:
