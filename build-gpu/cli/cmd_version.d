build-gpu/cli/cmd_version.o: cli/cmd_version.c cli/cli.h
cli/cli.h:
