build-gpu/tests/test_losses.o: tests/test_losses.c tests/../nn/error.h \
 tests/../nn/loss.h tests/../nn/tensor.h tests/../nn/ops.h \
 tests/../nn/rng.h tests/../nn/safetensors.h tests/gradcheck.h \
 tests/test.h tests/golden_io.h tests/../nn/tensor.h
tests/../nn/error.h:
tests/../nn/loss.h:
tests/../nn/tensor.h:
tests/../nn/ops.h:
tests/../nn/rng.h:
tests/../nn/safetensors.h:
tests/gradcheck.h:
tests/test.h:
tests/golden_io.h:
tests/../nn/tensor.h:
