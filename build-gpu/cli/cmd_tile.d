build-gpu/cli/cmd_tile.o: cli/cmd_tile.c cli/../eval/manifest.h \
 cli/../nn/error.h cli/../tiler/coords_h5.h cli/../tiler/tile.h \
 cli/../tiler/grid.h cli/../tiler/seg.h cli/cli.h
cli/../eval/manifest.h:
cli/../nn/error.h:
cli/../tiler/coords_h5.h:
cli/../tiler/tile.h:
cli/../tiler/grid.h:
cli/../tiler/seg.h:
cli/cli.h:
