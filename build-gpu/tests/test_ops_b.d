build-gpu/tests/test_ops_b.o: tests/test_ops_b.c tests/../nn/ops.h \
 tests/../nn/rng.h tests/../nn/tensor.h tests/../nn/rng.h \
 tests/gradcheck.h tests/test.h
tests/../nn/ops.h:
tests/../nn/rng.h:
tests/../nn/tensor.h:
tests/../nn/rng.h:
tests/gradcheck.h:
tests/test.h:
