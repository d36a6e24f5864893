build-gpu/tests/test_cli.o: tests/test_cli.c tests/../nn/error.h \
 tests/../nn/safetensors.h tests/test.h
tests/../nn/error.h:
tests/../nn/safetensors.h:
tests/test.h:
