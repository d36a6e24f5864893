build-gpu/nn/ncmi.o: nn/ncmi.c nn/ncmi.h nn/params.h nn/rng.h \
 nn/safetensors.h nn/tensor.h nn/error.h nn/ops.h
nn/ncmi.h:
nn/params.h:
nn/rng.h:
nn/safetensors.h:
nn/tensor.h:
nn/error.h:
nn/ops.h:
