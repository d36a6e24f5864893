build-gpu/nn/ops_loss.o: nn/ops_loss.c nn/error.h nn/ops.h nn/rng.h \
 nn/tensor.h
nn/error.h:
nn/ops.h:
nn/rng.h:
nn/tensor.h:
