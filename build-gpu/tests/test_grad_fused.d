build-gpu/tests/test_grad_fused.o: tests/test_grad_fused.c \
 tests/../nn/ops.h tests/../nn/rng.h tests/../nn/tensor.h \
 tests/gradcheck.h tests/test.h
tests/../nn/ops.h:
tests/../nn/rng.h:
tests/../nn/tensor.h:
tests/gradcheck.h:
tests/test.h:
