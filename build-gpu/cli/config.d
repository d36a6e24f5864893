build-gpu/cli/config.o: cli/config.c cli/config.h cli/../nn/error.h
cli/config.h:
cli/../nn/error.h:
