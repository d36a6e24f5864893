build-gpu/cli/cmd_report.o: cli/cmd_report.c cli/cli.h
cli/cli.h:
