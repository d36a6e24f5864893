build-gpu/tiler/coords_h5.o: tiler/coords_h5.c tiler/coords_h5.h \
 tiler/../nn/error.h
tiler/coords_h5.h:
tiler/../nn/error.h:
