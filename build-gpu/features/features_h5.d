build-gpu/features/features_h5.o: features/features_h5.c \
 features/features_h5.h features/../nn/error.h
features/features_h5.h:
features/../nn/error.h:
