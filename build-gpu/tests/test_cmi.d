build-gpu/tests/test_cmi.o: tests/test_cmi.c tests/../eval/cmi.h \
 tests/../nn/error.h tests/test.h
tests/../eval/cmi.h:
tests/../nn/error.h:
tests/test.h:
