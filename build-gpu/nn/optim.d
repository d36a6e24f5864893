build-gpu/nn/optim.o: nn/optim.c nn/optim.h nn/params.h nn/rng.h \
 nn/safetensors.h nn/tensor.h nn/error.h
nn/optim.h:
nn/params.h:
nn/rng.h:
nn/safetensors.h:
nn/tensor.h:
nn/error.h:
