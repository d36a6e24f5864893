build-gpu/tests/golden_io.o: tests/golden_io.c tests/golden_io.h \
 tests/../nn/safetensors.h tests/../nn/tensor.h tests/test.h
tests/golden_io.h:
tests/../nn/safetensors.h:
tests/../nn/tensor.h:
tests/test.h:
