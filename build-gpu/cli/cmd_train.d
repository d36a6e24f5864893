build-gpu/cli/cmd_train.o: cli/cmd_train.c \
 /usr/include/x86_64-linux-gnu/openblas-pthread/cblas.h \
 /usr/include/x86_64-linux-gnu/openblas-pthread/openblas_config.h \
 cli/../nn/error.h cli/../nn/safetensors.h cli/../train/trainer.h \
 cli/../train/../nn/loss.h cli/../train/../nn/tensor.h \
 cli/../train/../nn/ncmi.h cli/../train/../nn/params.h \
 cli/../train/../nn/rng.h cli/../train/../nn/safetensors.h \
 cli/../train/../nn/optim.h cli/../train/../nn/params.h \
 cli/../train/../nn/rng.h cli/../train/../nn/tensor.h cli/cli.h \
 cli/../nn/cuda.h cli/train_config.h cli/config.h cli/train_job.h \
 cli/../mil/mil.h cli/../mil/../nn/rng.h cli/../mil/../train/trainer.h \
 cli/../nn/rng.h
/usr/include/x86_64-linux-gnu/openblas-pthread/cblas.h:
/usr/include/x86_64-linux-gnu/openblas-pthread/openblas_config.h:
cli/../nn/error.h:
cli/../nn/safetensors.h:
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
cli/cli.h:
cli/../nn/cuda.h:
cli/train_config.h:
cli/config.h:
cli/train_job.h:
cli/../mil/mil.h:
cli/../mil/../nn/rng.h:
cli/../mil/../train/trainer.h:
cli/../nn/rng.h:
