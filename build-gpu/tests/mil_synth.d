build-gpu/tests/mil_synth.o: tests/mil_synth.c tests/mil_synth.h \
 tests/../features/features_h5.h tests/../nn/rng.h
tests/mil_synth.h:
tests/../features/features_h5.h:
tests/../nn/rng.h:
