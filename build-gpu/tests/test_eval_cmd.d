build-gpu/tests/test_eval_cmd.o: tests/test_eval_cmd.c \
 tests/../eval/cmi.h tests/../cli/cli.h tests/../eval/json_io.h \
 tests/../eval/metrics.h tests/../eval/csv.h tests/../eval/manifest.h \
 tests/../eval/metrics.h tests/../eval/predictions.h \
 tests/../features/features_h5.h tests/../nn/error.h tests/test.h
tests/../eval/cmi.h:
tests/../cli/cli.h:
tests/../eval/json_io.h:
tests/../eval/metrics.h:
tests/../eval/csv.h:
tests/../eval/manifest.h:
tests/../eval/metrics.h:
tests/../eval/predictions.h:
tests/../features/features_h5.h:
tests/../nn/error.h:
tests/test.h:
