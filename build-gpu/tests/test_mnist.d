build-gpu/tests/test_mnist.o: tests/test_mnist.c tests/../natural/mnist.h \
 tests/../nn/error.h tests/test.h
tests/../natural/mnist.h:
tests/../nn/error.h:
tests/test.h:
