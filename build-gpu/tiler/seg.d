build-gpu/tiler/seg.o: tiler/seg.c tiler/seg.h tiler/../nn/error.h
tiler/seg.h:
tiler/../nn/error.h:
