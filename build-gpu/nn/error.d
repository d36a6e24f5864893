build-gpu/nn/error.o: nn/error.c nn/error.h
nn/error.h:
