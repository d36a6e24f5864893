build-gpu/tests/gradcheck.o: tests/gradcheck.c tests/gradcheck.h \
 tests/../nn/ops.h tests/../nn/rng.h tests/../nn/tensor.h tests/test.h \
 tests/../nn/error.h
tests/gradcheck.h:
tests/../nn/ops.h:
tests/../nn/rng.h:
tests/../nn/tensor.h:
tests/test.h:
tests/../nn/error.h:
