build-gpu/tiler/synth_slide.o: tiler/synth_slide.c tiler/synth_slide.h \
 tiler/../nn/error.h
tiler/synth_slide.h:
tiler/../nn/error.h:
