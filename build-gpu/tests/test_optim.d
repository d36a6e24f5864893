build-gpu/tests/test_optim.o: tests/test_optim.c tests/../nn/error.h \
 tests/../nn/optim.h tests/../nn/params.h tests/../nn/rng.h \
 tests/../nn/safetensors.h tests/../nn/tensor.h tests/golden_io.h \
 tests/../nn/safetensors.h tests/../nn/tensor.h tests/test.h
tests/../nn/error.h:
tests/../nn/optim.h:
tests/../nn/params.h:
tests/../nn/rng.h:
tests/../nn/safetensors.h:
tests/../nn/tensor.h:
tests/golden_io.h:
tests/../nn/safetensors.h:
tests/../nn/tensor.h:
tests/test.h:
