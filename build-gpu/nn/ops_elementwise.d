build-gpu/nn/ops_elementwise.o: nn/ops_elementwise.c nn/error.h nn/ops.h \
 nn/rng.h nn/tensor.h
nn/error.h:
nn/ops.h:
nn/rng.h:
nn/tensor.h:
