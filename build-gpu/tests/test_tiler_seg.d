build-gpu/tests/test_tiler_seg.o: tests/test_tiler_seg.c \
 tests/../nn/error.h tests/../tiler/grid.h tests/../tiler/seg.h \
 tests/../tiler/seg.h tests/test.h
tests/../nn/error.h:
tests/../tiler/grid.h:
tests/../tiler/seg.h:
tests/../tiler/seg.h:
tests/test.h:
