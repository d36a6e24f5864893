build-gpu/tests/test_tiler_slide.o: tests/test_tiler_slide.c \
 tests/../nn/error.h tests/../tiler/coords_h5.h tests/../tiler/slide.h \
 tests/../tiler/synth_slide.h tests/test.h
tests/../nn/error.h:
tests/../tiler/coords_h5.h:
tests/../tiler/slide.h:
tests/../tiler/synth_slide.h:
tests/test.h:
