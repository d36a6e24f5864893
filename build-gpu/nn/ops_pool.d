build-gpu/nn/ops_pool.o: nn/ops_pool.c nn/error.h nn/ops.h nn/rng.h \
 nn/tensor.h
nn/error.h:
nn/ops.h:
nn/rng.h:
nn/tensor.h:
