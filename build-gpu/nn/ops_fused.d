build-gpu/nn/ops_fused.o: nn/ops_fused.c \
 /usr/include/x86_64-linux-gnu/openblas-pthread/cblas.h \
 /usr/include/x86_64-linux-gnu/openblas-pthread/openblas_config.h \
 nn/error.h nn/ops.h nn/rng.h nn/tensor.h nn/ops_internal.h
/usr/include/x86_64-linux-gnu/openblas-pthread/cblas.h:
/usr/include/x86_64-linux-gnu/openblas-pthread/openblas_config.h:
nn/error.h:
nn/ops.h:
nn/rng.h:
nn/tensor.h:
nn/ops_internal.h:
