build-gpu/tests/test_mil_asmil.o: tests/test_mil_asmil.c \
 tests/../mil/mil.h tests/../mil/../nn/rng.h \
 tests/../mil/../train/trainer.h tests/../mil/../train/../nn/loss.h \
 tests/../mil/../train/../nn/tensor.h tests/../mil/../train/../nn/ncmi.h \
 tests/../mil/../train/../nn/params.h tests/../mil/../train/../nn/rng.h \
 tests/../mil/../train/../nn/safetensors.h \
 tests/../mil/../train/../nn/optim.h tests/../mil/../train/../nn/params.h \
 tests/../mil/../train/../nn/rng.h tests/../mil/../train/../nn/tensor.h \
 tests/../nn/error.h tests/../nn/loss.h tests/../nn/ops.h \
 tests/../nn/rng.h tests/../nn/tensor.h tests/../nn/params.h \
 tests/../nn/safetensors.h tests/golden_io.h tests/../nn/tensor.h \
 tests/test.h
tests/../mil/mil.h:
tests/../mil/../nn/rng.h:
tests/../mil/../train/trainer.h:
tests/../mil/../train/../nn/loss.h:
tests/../mil/../train/../nn/tensor.h:
tests/../mil/../train/../nn/ncmi.h:
tests/../mil/../train/../nn/params.h:
tests/../mil/../train/../nn/rng.h:
tests/../mil/../train/../nn/safetensors.h:
tests/../mil/../train/../nn/optim.h:
tests/../mil/../train/../nn/params.h:
tests/../mil/../train/../nn/rng.h:
tests/../mil/../train/../nn/tensor.h:
tests/../nn/error.h:
tests/../nn/loss.h:
tests/../nn/ops.h:
tests/../nn/rng.h:
tests/../nn/tensor.h:
tests/../nn/params.h:
tests/../nn/safetensors.h:
tests/golden_io.h:
tests/../nn/tensor.h:
tests/test.h:
