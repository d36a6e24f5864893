build-gpu/cli/cli.o: cli/cli.c cli/cli.h cli/../nn/cuda.h \
 cli/../nn/error.h
cli/cli.h:
cli/../nn/cuda.h:
cli/../nn/error.h:
