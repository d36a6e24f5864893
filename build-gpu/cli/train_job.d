build-gpu/cli/train_job.o: cli/train_job.c cli/train_job.h \
 cli/../mil/mil.h cli/../mil/../nn/rng.h cli/../mil/../train/trainer.h \
 cli/../mil/../train/../nn/loss.h cli/../mil/../train/../nn/tensor.h \
 cli/../mil/../train/../nn/ncmi.h cli/../mil/../train/../nn/params.h \
 cli/../mil/../train/../nn/rng.h cli/../mil/../train/../nn/safetensors.h \
 cli/../mil/../train/../nn/optim.h cli/../mil/../train/../nn/params.h \
 cli/../mil/../train/../nn/rng.h cli/../mil/../train/../nn/tensor.h \
 cli/../nn/rng.h cli/../train/trainer.h cli/train_config.h cli/config.h \
 cli/cli.h cli/../mil/bags.h cli/../natural/mnist.h cli/../nn/error.h \
 cli/../nn/synth.h cli/../nn/rng.h
cli/train_job.h:
cli/../mil/mil.h:
cli/../mil/../nn/rng.h:
cli/../mil/../train/trainer.h:
cli/../mil/../train/../nn/loss.h:
cli/../mil/../train/../nn/tensor.h:
cli/../mil/../train/../nn/ncmi.h:
cli/../mil/../train/../nn/params.h:
cli/../mil/../train/../nn/rng.h:
cli/../mil/../train/../nn/safetensors.h:
cli/../mil/../train/../nn/optim.h:
cli/../mil/../train/../nn/params.h:
cli/../mil/../train/../nn/rng.h:
cli/../mil/../train/../nn/tensor.h:
cli/../nn/rng.h:
cli/../train/trainer.h:
cli/train_config.h:
cli/config.h:
cli/cli.h:
cli/../mil/bags.h:
cli/../natural/mnist.h:
cli/../nn/error.h:
cli/../nn/synth.h:
cli/../nn/rng.h:
