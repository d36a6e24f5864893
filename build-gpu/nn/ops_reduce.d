build-gpu/nn/ops_reduce.o: nn/ops_reduce.c nn/error.h nn/ops.h nn/rng.h \
 nn/tensor.h
nn/error.h:
nn/ops.h:
nn/rng.h:
nn/tensor.h:
