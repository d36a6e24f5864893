build-gpu/tests/gpu/test_gpu_train.o: tests/gpu/test_gpu_train.c \
 tests/gpu/../../nn/error.h tests/gpu/../../nn/optim.h \
 tests/gpu/../../nn/params.h tests/gpu/../../nn/rng.h \
 tests/gpu/../../nn/safetensors.h tests/gpu/../../nn/tensor.h \
 tests/gpu/../../nn/params.h tests/gpu/gpu_check.h \
 tests/gpu/../../nn/cuda.h tests/gpu/../../nn/ops.h \
 tests/gpu/../gradcheck.h tests/gpu/../../nn/ops.h tests/gpu/../test.h \
 tests/gpu/../test.h
tests/gpu/../../nn/error.h:
tests/gpu/../../nn/optim.h:
tests/gpu/../../nn/params.h:
tests/gpu/../../nn/rng.h:
tests/gpu/../../nn/safetensors.h:
tests/gpu/../../nn/tensor.h:
tests/gpu/../../nn/params.h:
tests/gpu/gpu_check.h:
tests/gpu/../../nn/cuda.h:
tests/gpu/../../nn/ops.h:
tests/gpu/../gradcheck.h:
tests/gpu/../../nn/ops.h:
tests/gpu/../test.h:
tests/gpu/../test.h:
