// One checking macro for every GPU library call: NN_GPU_CHECK(call) takes a
// cudaError_t, cublasStatus_t, cudnnStatus_t or ncclResult_t (overloads of
// nn_gpu_ok / nn_gpu_errstr pick the library) and on failure reports
// file:line, the library's error string and the call, then aborts.
// NN_CUDA_LAUNCHED() follows every kernel launch: it checks the launch and,
// in debug mode (NCMI_CUDA_SYNC=1 or nn_cuda_set_debug_sync), synchronises
// so an asynchronous fault is reported at the launch that caused it.
#ifndef NCMI_CUDA_CHECK_CUH
#define NCMI_CUDA_CHECK_CUH

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>
#if NCMI_HAVE_CUDNN
#include <cudnn.h>
#endif
#if NCMI_HAVE_NCCL
#include <nccl.h>
#endif

#include "../cuda.h"

static inline bool nn_gpu_ok(cudaError_t e) { return e == cudaSuccess; }
static inline const char *nn_gpu_errstr(cudaError_t e) { return cudaGetErrorString(e); }
static inline const char *nn_gpu_lib(cudaError_t) { return "CUDA"; }

static inline bool nn_gpu_ok(cublasStatus_t e) { return e == CUBLAS_STATUS_SUCCESS; }
static inline const char *nn_gpu_errstr(cublasStatus_t e) { return cublasGetStatusString(e); }
static inline const char *nn_gpu_lib(cublasStatus_t) { return "cuBLAS"; }

#if NCMI_HAVE_CUDNN
static inline bool nn_gpu_ok(cudnnStatus_t e) { return e == CUDNN_STATUS_SUCCESS; }
static inline const char *nn_gpu_errstr(cudnnStatus_t e) { return cudnnGetErrorString(e); }
static inline const char *nn_gpu_lib(cudnnStatus_t) { return "cuDNN"; }
#endif
#if NCMI_HAVE_NCCL
static inline bool nn_gpu_ok(ncclResult_t e) { return e == ncclSuccess; }
static inline const char *nn_gpu_errstr(ncclResult_t e) { return ncclGetErrorString(e); }
static inline const char *nn_gpu_lib(ncclResult_t) { return "NCCL"; }
#endif

#define NN_GPU_CHECK(call)                                                      \
    do {                                                                        \
        auto e_ = (call);                                                       \
        if (!nn_gpu_ok(e_)) {                                                   \
            fprintf(stderr, "ncmi: %s error at %s:%d: %s (%s)\n", nn_gpu_lib(e_), \
                    __FILE__, __LINE__, nn_gpu_errstr(e_), #call);              \
            abort();                                                            \
        }                                                                       \
    } while (0)

// kept for the foundation's call sites
#define NN_CUDA_CHECK(call) NN_GPU_CHECK(call)

#define NN_CUDA_LAUNCHED() nn_cuda_after_launch(__FILE__, __LINE__)

// The stream every kernel goes to.
#define NN_STREAM ((cudaStream_t)nn_cuda_stream())

// Grid size for n elements at `threads` per block (grid-stride loops cap it).
static inline unsigned nn_grid(size_t n, unsigned threads = 256)
{
    size_t b = (n + threads - 1) / threads;
    if (b < 1) b = 1;
    if (b > 65535u * 16u) b = 65535u * 16u;
    return (unsigned)b;
}

#endif
