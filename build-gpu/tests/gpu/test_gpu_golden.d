build-gpu/tests/gpu/test_gpu_golden.o: tests/gpu/test_gpu_golden.c \
 tests/gpu/gpu_check.h tests/gpu/../../nn/cuda.h tests/gpu/../../nn/ops.h \
 tests/gpu/../../nn/rng.h tests/gpu/../../nn/tensor.h \
 tests/gpu/../gradcheck.h tests/gpu/../../nn/ops.h tests/gpu/../test.h \
 tests/gpu/../test.h
tests/gpu/gpu_check.h:
tests/gpu/../../nn/cuda.h:
tests/gpu/../../nn/ops.h:
tests/gpu/../../nn/rng.h:
tests/gpu/../../nn/tensor.h:
tests/gpu/../gradcheck.h:
tests/gpu/../../nn/ops.h:
tests/gpu/../test.h:
tests/gpu/../test.h:
