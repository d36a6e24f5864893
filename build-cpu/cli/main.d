build-cpu/cli/main.o: cli/main.c cli/cli.h
cli/cli.h:
