build-gpu/nn/params.o: nn/params.c nn/params.h nn/rng.h nn/safetensors.h \
 nn/tensor.h nn/error.h nn/ops.h
nn/params.h:
nn/rng.h:
nn/safetensors.h:
nn/tensor.h:
nn/error.h:
nn/ops.h:
