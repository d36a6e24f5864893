build-gpu/tests/test_mil_train.o: tests/test_mil_train.c \
 tests/../features/features_h5.h tests/../nn/error.h tests/mil_synth.h \
 tests/test.h
tests/../features/features_h5.h:
tests/../nn/error.h:
tests/mil_synth.h:
tests/test.h:
