build-gpu/tests/test_golden.o: tests/test_golden.c tests/../nn/error.h \
 tests/../nn/ops.h tests/../nn/rng.h tests/../nn/tensor.h \
 tests/../nn/params.h tests/../nn/safetensors.h tests/../nn/safetensors.h \
 tests/golden_io.h tests/../nn/tensor.h tests/test.h
tests/../nn/error.h:
tests/../nn/ops.h:
tests/../nn/rng.h:
tests/../nn/tensor.h:
tests/../nn/params.h:
tests/../nn/safetensors.h:
tests/../nn/safetensors.h:
tests/golden_io.h:
tests/../nn/tensor.h:
tests/test.h:
