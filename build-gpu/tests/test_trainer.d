build-gpu/tests/test_trainer.o: tests/test_trainer.c tests/../nn/error.h \
 tests/../nn/ops.h tests/../nn/rng.h tests/../nn/tensor.h \
 tests/../nn/safetensors.h tests/../train/trainer.h \
 tests/../train/../nn/loss.h tests/../train/../nn/tensor.h \
 tests/../train/../nn/ncmi.h tests/../train/../nn/params.h \
 tests/../train/../nn/rng.h tests/../train/../nn/safetensors.h \
 tests/../train/../nn/optim.h tests/../train/../nn/params.h \
 tests/../train/../nn/rng.h tests/../train/../nn/tensor.h tests/test.h
tests/../nn/error.h:
tests/../nn/ops.h:
tests/../nn/rng.h:
tests/../nn/tensor.h:
tests/../nn/safetensors.h:
tests/../train/trainer.h:
tests/../train/../nn/loss.h:
tests/../train/../nn/tensor.h:
tests/../train/../nn/ncmi.h:
tests/../train/../nn/params.h:
tests/../train/../nn/rng.h:
tests/../train/../nn/safetensors.h:
tests/../train/../nn/optim.h:
tests/../train/../nn/params.h:
tests/../train/../nn/rng.h:
tests/../train/../nn/tensor.h:
tests/test.h:
