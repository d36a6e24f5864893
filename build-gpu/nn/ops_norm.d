build-gpu/nn/ops_norm.o: nn/ops_norm.c nn/error.h nn/ops.h nn/rng.h \
 nn/tensor.h
nn/error.h:
nn/ops.h:
nn/rng.h:
nn/tensor.h:
