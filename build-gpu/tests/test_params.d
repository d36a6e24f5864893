build-gpu/tests/test_params.o: tests/test_params.c tests/../nn/error.h \
 tests/../nn/ops.h tests/../nn/rng.h tests/../nn/tensor.h \
 tests/../nn/params.h tests/../nn/safetensors.h tests/test.h
tests/../nn/error.h:
tests/../nn/ops.h:
tests/../nn/rng.h:
tests/../nn/tensor.h:
tests/../nn/params.h:
tests/../nn/safetensors.h:
tests/test.h:
