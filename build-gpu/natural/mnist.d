build-gpu/natural/mnist.o: natural/mnist.c natural/mnist.h \
 natural/../nn/error.h
natural/mnist.h:
natural/../nn/error.h:
