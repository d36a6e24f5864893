build-gpu/train/trainer.o: train/trainer.c train/trainer.h \
 train/../nn/loss.h train/../nn/tensor.h train/../nn/ncmi.h \
 train/../nn/params.h train/../nn/rng.h train/../nn/safetensors.h \
 train/../nn/optim.h train/../nn/params.h train/../nn/rng.h \
 train/../nn/tensor.h \
 /usr/include/x86_64-linux-gnu/openblas-pthread/cblas.h \
 /usr/include/x86_64-linux-gnu/openblas-pthread/openblas_config.h \
 train/../eval/json_io.h train/../eval/metrics.h train/../eval/metrics.h \
 train/../eval/predictions.h train/../nn/error.h train/../nn/ops.h \
 train/../nn/safetensors.h
train/trainer.h:
train/../nn/loss.h:
train/../nn/tensor.h:
train/../nn/ncmi.h:
train/../nn/params.h:
train/../nn/rng.h:
train/../nn/safetensors.h:
train/../nn/optim.h:
train/../nn/params.h:
train/../nn/rng.h:
train/../nn/tensor.h:
/usr/include/x86_64-linux-gnu/openblas-pthread/cblas.h:
/usr/include/x86_64-linux-gnu/openblas-pthread/openblas_config.h:
train/../eval/json_io.h:
train/../eval/metrics.h:
train/../eval/metrics.h:
train/../eval/predictions.h:
train/../nn/error.h:
train/../nn/ops.h:
train/../nn/safetensors.h:
