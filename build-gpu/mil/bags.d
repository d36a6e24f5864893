build-gpu/mil/bags.o: mil/bags.c mil/bags.h mil/../train/trainer.h \
 mil/../train/../nn/loss.h mil/../train/../nn/tensor.h \
 mil/../train/../nn/ncmi.h mil/../train/../nn/params.h \
 mil/../train/../nn/rng.h mil/../train/../nn/safetensors.h \
 mil/../train/../nn/optim.h mil/../train/../nn/params.h \
 mil/../train/../nn/rng.h mil/../train/../nn/tensor.h \
 mil/../eval/manifest.h mil/../features/features_h5.h mil/../nn/error.h
mil/bags.h:
mil/../train/trainer.h:
mil/../train/../nn/loss.h:
mil/../train/../nn/tensor.h:
mil/../train/../nn/ncmi.h:
mil/../train/../nn/params.h:
mil/../train/../nn/rng.h:
mil/../train/../nn/safetensors.h:
mil/../train/../nn/optim.h:
mil/../train/../nn/params.h:
mil/../train/../nn/rng.h:
mil/../train/../nn/tensor.h:
mil/../eval/manifest.h:
mil/../features/features_h5.h:
mil/../nn/error.h:
