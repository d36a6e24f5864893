build-gpu/cli/train_config.o: cli/train_config.c cli/train_config.h \
 cli/config.h cli/../nn/error.h cli/../train/trainer.h \
 cli/../train/../nn/loss.h cli/../train/../nn/tensor.h \
 cli/../train/../nn/ncmi.h cli/../train/../nn/params.h \
 cli/../train/../nn/rng.h cli/../train/../nn/safetensors.h \
 cli/../train/../nn/optim.h cli/../train/../nn/params.h \
 cli/../train/../nn/rng.h cli/../train/../nn/tensor.h
cli/train_config.h:
cli/config.h:
cli/../nn/error.h:
cli/../train/trainer.h:
cli/../train/../nn/loss.h:
cli/../train/../nn/tensor.h:
cli/../train/../nn/ncmi.h:
cli/../train/../nn/params.h:
cli/../train/../nn/rng.h:
cli/../train/../nn/safetensors.h:
cli/../train/../nn/optim.h:
cli/../train/../nn/params.h:
cli/../train/../nn/rng.h:
cli/../train/../nn/tensor.h:
