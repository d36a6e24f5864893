/* The CUDA side of nn/ as far as the foundation goes: device discovery and
 * the one error-checking macro every CUDA/cuBLAS/cuDNN/NCCL call goes
 * through. Device tensors and kernels come with the CUDA backend issue.
 * In a CPU-only build (no nvcc) these report no device. */
#ifndef NCMI_CUDA_H
#define NCMI_CUDA_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Number of usable CUDA devices (0 in a CPU-only build or without a driver). */
int nn_cuda_device_count(void);
/* Writes the device's name (or why none) into buf; returns buf. */
char *nn_cuda_describe(int device, char *buf, size_t n);
/* 1 when this build contains the CUDA backend. */
int nn_cuda_built(void);

#ifdef __cplusplus
}
#endif

#endif
