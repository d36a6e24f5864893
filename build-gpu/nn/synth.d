build-gpu/nn/synth.o: nn/synth.c nn/synth.h nn/rng.h nn/error.h
nn/synth.h:
nn/rng.h:
nn/error.h:
