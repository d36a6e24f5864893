// CUDA runtime glue: device discovery and the checking macro.
#include <cuda_runtime.h>
#include <stdio.h>

#include "../cuda.h"
#include "check.cuh"

extern "C" int nn_cuda_built(void) { return 1; }

extern "C" int nn_cuda_device_count(void)
{
    int n = 0;
    // No driver or no device is not an error here: it means "no GPU".
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    return n;
}

extern "C" char *nn_cuda_describe(int device, char *buf, size_t n)
{
    cudaDeviceProp p;
    cudaError_t e = cudaGetDeviceProperties(&p, device);
    if (e != cudaSuccess) {
        snprintf(buf, n, "no CUDA device %d (%s)", device, cudaGetErrorString(e));
        cudaGetLastError();
        return buf;
    }
    snprintf(buf, n, "%s, sm_%d%d, %.1f GiB", p.name, p.major, p.minor,
             (double)p.totalGlobalMem / (1024.0 * 1024.0 * 1024.0));
    return buf;
}
