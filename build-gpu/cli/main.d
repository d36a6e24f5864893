build-gpu/cli/main.o: cli/main.c cli/cli.h
cli/cli.h:
