build-gpu/tests/test_mil_data.o: tests/test_mil_data.c \
 tests/../features/features_h5.h tests/../mil/bags.h \
 tests/../mil/../train/trainer.h tests/../mil/../train/../nn/loss.h \
 tests/../mil/../train/../nn/tensor.h tests/../mil/../train/../nn/ncmi.h \
 tests/../mil/../train/../nn/params.h tests/../mil/../train/../nn/rng.h \
 tests/../mil/../train/../nn/safetensors.h \
 tests/../mil/../train/../nn/optim.h tests/../mil/../train/../nn/params.h \
 tests/../mil/../train/../nn/rng.h tests/../mil/../train/../nn/tensor.h \
 tests/../nn/error.h tests/../nn/ops.h tests/../nn/rng.h \
 tests/../nn/tensor.h tests/mil_synth.h tests/test.h
tests/../features/features_h5.h:
tests/../mil/bags.h:
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
tests/../nn/ops.h:
tests/../nn/rng.h:
tests/../nn/tensor.h:
tests/mil_synth.h:
tests/test.h:
