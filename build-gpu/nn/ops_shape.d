build-gpu/nn/ops_shape.o: nn/ops_shape.c nn/error.h nn/ops.h nn/rng.h \
 nn/tensor.h
nn/error.h:
nn/ops.h:
nn/rng.h:
nn/tensor.h:
