build-gpu/tests/gpu/test_gpu_runtime.o: tests/gpu/test_gpu_runtime.c \
 tests/gpu/../../nn/error.h tests/gpu/gpu_check.h \
 tests/gpu/../../nn/cuda.h tests/gpu/../../nn/ops.h \
 tests/gpu/../../nn/rng.h tests/gpu/../../nn/tensor.h \
 tests/gpu/../gradcheck.h tests/gpu/../../nn/ops.h tests/gpu/../test.h \
 tests/gpu/../test.h
tests/gpu/../../nn/error.h:
tests/gpu/gpu_check.h:
tests/gpu/../../nn/cuda.h:
tests/gpu/../../nn/ops.h:
tests/gpu/../../nn/rng.h:
tests/gpu/../../nn/tensor.h:
tests/gpu/../gradcheck.h:
tests/gpu/../../nn/ops.h:
tests/gpu/../test.h:
tests/gpu/../test.h:
