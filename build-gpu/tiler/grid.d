build-gpu/tiler/grid.o: tiler/grid.c tiler/grid.h tiler/seg.h \
 tiler/../nn/error.h
tiler/grid.h:
tiler/seg.h:
tiler/../nn/error.h:
