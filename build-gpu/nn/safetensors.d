build-gpu/nn/safetensors.o: nn/safetensors.c nn/safetensors.h nn/error.h
nn/safetensors.h:
nn/error.h:
