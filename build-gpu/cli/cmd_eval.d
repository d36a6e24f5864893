build-gpu/cli/cmd_eval.o: cli/cmd_eval.c cli/cli.h cli/../eval/cmi.h \
 cli/../eval/json_io.h cli/../eval/metrics.h cli/../eval/manifest.h \
 cli/../eval/metrics.h cli/../eval/predictions.h \
 cli/../features/features_h5.h cli/../nn/error.h cli/../train/trainer.h \
 cli/../train/../nn/loss.h cli/../train/../nn/tensor.h \
 cli/../train/../nn/ncmi.h cli/../train/../nn/params.h \
 cli/../train/../nn/rng.h cli/../train/../nn/safetensors.h \
 cli/../train/../nn/optim.h cli/../train/../nn/params.h \
 cli/../train/../nn/rng.h cli/../train/../nn/tensor.h cli/train_config.h \
 cli/config.h cli/train_job.h cli/../mil/mil.h cli/../mil/../nn/rng.h \
 cli/../mil/../train/trainer.h cli/../nn/rng.h
cli/cli.h:
cli/../eval/cmi.h:
cli/../eval/json_io.h:
cli/../eval/metrics.h:
cli/../eval/manifest.h:
cli/../eval/metrics.h:
cli/../eval/predictions.h:
cli/../features/features_h5.h:
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
cli/train_config.h:
cli/config.h:
cli/train_job.h:
cli/../mil/mil.h:
cli/../mil/../nn/rng.h:
cli/../mil/../train/trainer.h:
cli/../nn/rng.h:
