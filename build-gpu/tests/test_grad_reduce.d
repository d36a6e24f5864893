build-gpu/tests/test_grad_reduce.o: tests/test_grad_reduce.c \
 tests/../nn/ops.h tests/../nn/rng.h tests/../nn/tensor.h \
 tests/gradcheck.h tests/test.h
tests/../nn/ops.h:
tests/../nn/rng.h:
tests/../nn/tensor.h:
tests/gradcheck.h:
tests/test.h:
