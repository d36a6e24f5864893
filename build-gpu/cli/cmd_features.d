build-gpu/cli/cmd_features.o: cli/cmd_features.c cli/cli.h
cli/cli.h:
