build-gpu/tests/test_train.o: tests/test_train.c tests/../nn/error.h \
 tests/../nn/ops.h tests/../nn/rng.h tests/../nn/tensor.h \
 tests/../nn/optim.h tests/../nn/params.h tests/../nn/safetensors.h \
 tests/../nn/params.h tests/../nn/synth.h tests/test.h
tests/../nn/error.h:
tests/../nn/ops.h:
tests/../nn/rng.h:
tests/../nn/tensor.h:
tests/../nn/optim.h:
tests/../nn/params.h:
tests/../nn/safetensors.h:
tests/../nn/params.h:
tests/../nn/synth.h:
tests/test.h:
