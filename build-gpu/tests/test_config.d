build-gpu/tests/test_config.o: tests/test_config.c tests/../cli/config.h \
 tests/../cli/train_config.h tests/../cli/config.h tests/../nn/error.h \
 tests/test.h
tests/../cli/config.h:
tests/../cli/train_config.h:
tests/../cli/config.h:
tests/../nn/error.h:
tests/test.h:
