build-gpu/tests/test_ncmi.o: tests/test_ncmi.c tests/../nn/error.h \
 tests/../nn/ncmi.h tests/../nn/params.h tests/../nn/rng.h \
 tests/../nn/safetensors.h tests/../nn/tensor.h tests/../nn/ops.h \
 tests/../nn/optim.h tests/../nn/params.h tests/../nn/safetensors.h \
 tests/../nn/synth.h tests/gradcheck.h tests/test.h tests/golden_io.h \
 tests/../nn/tensor.h
tests/../nn/error.h:
tests/../nn/ncmi.h:
tests/../nn/params.h:
tests/../nn/rng.h:
tests/../nn/safetensors.h:
tests/../nn/tensor.h:
tests/../nn/ops.h:
tests/../nn/optim.h:
tests/../nn/params.h:
tests/../nn/safetensors.h:
tests/../nn/synth.h:
tests/gradcheck.h:
tests/test.h:
tests/golden_io.h:
tests/../nn/tensor.h:
