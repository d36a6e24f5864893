build-gpu/tiler/tile.o: tiler/tile.c tiler/tile.h tiler/grid.h \
 tiler/seg.h tiler/../nn/error.h tiler/coords_h5.h tiler/slide.h
tiler/tile.h:
tiler/grid.h:
tiler/seg.h:
tiler/../nn/error.h:
tiler/coords_h5.h:
tiler/slide.h:
