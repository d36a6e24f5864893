build-gpu/tiler/slide.o: tiler/slide.c tiler/slide.h tiler/../nn/error.h
tiler/slide.h:
tiler/../nn/error.h:
