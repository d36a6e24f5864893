build-gpu/tests/test_tile_cmd.o: tests/test_tile_cmd.c \
 tests/../eval/csv.h tests/../nn/error.h tests/../tiler/coords_h5.h \
 tests/../tiler/synth_slide.h tests/../tiler/tile.h tests/../tiler/grid.h \
 tests/../tiler/seg.h tests/test.h
tests/../eval/csv.h:
tests/../nn/error.h:
tests/../tiler/coords_h5.h:
tests/../tiler/synth_slide.h:
tests/../tiler/tile.h:
tests/../tiler/grid.h:
tests/../tiler/seg.h:
tests/test.h:
