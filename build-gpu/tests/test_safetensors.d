build-gpu/tests/test_safetensors.o: tests/test_safetensors.c \
 tests/../nn/error.h tests/../nn/safetensors.h tests/test.h
tests/../nn/error.h:
tests/../nn/safetensors.h:
tests/test.h:
