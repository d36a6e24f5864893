build-gpu/nn/tensor.o: nn/tensor.c nn/tensor.h nn/cuda.h nn/error.h
nn/tensor.h:
nn/cuda.h:
nn/error.h:
