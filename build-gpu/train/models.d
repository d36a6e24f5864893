build-gpu/train/models.o: train/models.c train/../nn/error.h \
 train/../nn/ops.h train/../nn/rng.h train/../nn/tensor.h train/trainer.h \
 train/../nn/loss.h train/../nn/ncmi.h train/../nn/params.h \
 train/../nn/safetensors.h train/../nn/optim.h train/../nn/params.h \
 train/../nn/rng.h train/../nn/tensor.h
train/../nn/error.h:
train/../nn/ops.h:
train/../nn/rng.h:
train/../nn/tensor.h:
train/trainer.h:
train/../nn/loss.h:
train/../nn/ncmi.h:
train/../nn/params.h:
train/../nn/safetensors.h:
train/../nn/optim.h:
train/../nn/params.h:
train/../nn/rng.h:
train/../nn/tensor.h:
