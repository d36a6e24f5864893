build-gpu/bench_gpu_ops: bench/gpu_ops.c bench/../nn/cuda.h \
 bench/../nn/error.h bench/../nn/ops.h bench/../nn/rng.h \
 bench/../nn/tensor.h
bench/../nn/cuda.h:
bench/../nn/error.h:
bench/../nn/ops.h:
bench/../nn/rng.h:
bench/../nn/tensor.h:
