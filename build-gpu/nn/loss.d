build-gpu/nn/loss.o: nn/loss.c nn/loss.h nn/tensor.h nn/error.h nn/ops.h \
 nn/rng.h
nn/loss.h:
nn/tensor.h:
nn/error.h:
nn/ops.h:
nn/rng.h:
