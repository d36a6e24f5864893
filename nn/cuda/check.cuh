// One checking macro for CUDA runtime calls (cuBLAS/cuDNN/NCCL variants come
// with the CUDA backend): reports file:line and the library's error string.
#ifndef NCMI_CUDA_CHECK_CUH
#define NCMI_CUDA_CHECK_CUH

#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>

#define NN_CUDA_CHECK(call)                                                     \
    do {                                                                        \
        cudaError_t e_ = (call);                                                \
        if (e_ != cudaSuccess) {                                                \
            fprintf(stderr, "ncmi: CUDA error at %s:%d: %s (%s)\n", __FILE__,   \
                    __LINE__, cudaGetErrorString(e_), #call);                   \
            abort();                                                            \
        }                                                                       \
    } while (0)

#endif
