build-gpu/cli/cmd_score.o: cli/cmd_score.c cli/cli.h
cli/cli.h:
