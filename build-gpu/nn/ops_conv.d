build-gpu/nn/ops_conv.o: nn/ops_conv.c \
 /usr/include/x86_64-linux-gnu/openblas-pthread/cblas.h \
 /usr/include/x86_64-linux-gnu/openblas-pthread/openblas_config.h \
 nn/error.h nn/ops.h nn/rng.h nn/tensor.h
/usr/include/x86_64-linux-gnu/openblas-pthread/cblas.h:
/usr/include/x86_64-linux-gnu/openblas-pthread/openblas_config.h:
nn/error.h:
nn/ops.h:
nn/rng.h:
nn/tensor.h:
