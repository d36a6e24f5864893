build-gpu/mil/asmil.o: mil/asmil.c mil/../nn/error.h mil/../nn/ops.h \
 mil/../nn/rng.h mil/../nn/tensor.h mil/../nn/params.h \
 mil/../nn/safetensors.h mil/mil.h mil/../nn/rng.h mil/../train/trainer.h \
 mil/../train/../nn/loss.h mil/../train/../nn/tensor.h \
 mil/../train/../nn/ncmi.h mil/../train/../nn/params.h \
 mil/../train/../nn/rng.h mil/../train/../nn/optim.h \
 mil/../train/../nn/safetensors.h mil/../train/../nn/params.h \
 mil/../train/../nn/rng.h mil/../train/../nn/tensor.h
mil/../nn/error.h:
mil/../nn/ops.h:
mil/../nn/rng.h:
mil/../nn/tensor.h:
mil/../nn/params.h:
mil/../nn/safetensors.h:
mil/mil.h:
mil/../nn/rng.h:
mil/../train/trainer.h:
mil/../train/../nn/loss.h:
mil/../train/../nn/tensor.h:
mil/../train/../nn/ncmi.h:
mil/../train/../nn/params.h:
mil/../train/../nn/rng.h:
mil/../train/../nn/optim.h:
mil/../train/../nn/safetensors.h:
mil/../train/../nn/params.h:
mil/../train/../nn/rng.h:
mil/../train/../nn/tensor.h:
