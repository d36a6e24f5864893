build-gpu/nn/cuda_stub.o: nn/cuda_stub.c nn/cuda.h nn/error.h
nn/cuda.h:
nn/error.h:
