build-gpu/nn/device.o: nn/device.c nn/cuda.h nn/error.h
nn/cuda.h:
nn/error.h:
