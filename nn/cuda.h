/* The CUDA backend's runtime, callable from C: device selection, the one
 * compute stream, the caching device allocator, host<->device copies, the
 * cuBLAS/cuDNN handles and the shared workspace, the TF32 switch and the
 * debug mode that synchronises after every launch.
 *
 * Model: one process drives one GPU (nn_cuda_init picks it) through one
 * stream. Every kernel and library call of nn/cuda/ goes to that stream, so
 * work is ordered without events. Host code only waits when it reads device
 * data back (nn_cuda_d2h), which the counter nn_cuda_host_syncs() counts:
 * a training step that never reads back does not synchronise.
 *
 * Allocator: nn_cuda_alloc rounds the request up to a size class (512 B
 * steps below 1 MiB, then 1/8 of the next power of two) and reuses a cached
 * block of that class when one is free; nn_cuda_free returns the block to
 * the cache, never to the driver. The second and later steps of a training
 * loop with fixed shapes therefore call cudaMalloc zero times (checked by
 * make test-gpu through nn_cuda_mem_stats). When cudaMalloc fails, the cache
 * is released and the call retried once before the out-of-memory message.
 *
 * In a CPU-only build (no nvcc) every entry point exists: device_count is 0,
 * nn_cuda_init fails with a clear message, and the data functions abort
 * (they are unreachable: no tensor can live on a GPU). */
#ifndef NCMI_CUDA_H
#define NCMI_CUDA_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* 1 when this build contains the CUDA backend. */
int nn_cuda_built(void);
/* Number of usable CUDA devices (0 in a CPU-only build or without a driver). */
int nn_cuda_device_count(void);
/* Writes the device's name (or why none) into buf; returns buf. */
char *nn_cuda_describe(int device, char *buf, size_t n);

/* Select device k, create the stream and the library handles. Idempotent
 * for the same k; a different k after the first init is an error. Returns 0,
 * or -1 with ncmi_error() set ("built without CUDA", "no CUDA device 1 (2
 * present)", the driver's message). */
int nn_cuda_init(int device);
/* The device nn_cuda_init selected, or -1. */
int nn_cuda_current(void);

/* `--device` values: "cpu", "cuda", "cuda:K", "auto" (the GPU when there is
 * one, else the CPU). "cuda" and "auto" pick GPU 0, or in a data-parallel
 * job the local rank's GPU (nn_dist_env_device, nn/dist.h). On success *is_cuda is 0/1, the GPU (if any) is
 * initialised, and 0 is returned; else -1 with a message naming the value. */
int nn_device_select(const char *spec, int *is_cuda);
/* "cpu" or "cuda:K (NAME)" for messages and logs. */
const char *nn_device_name(int is_cuda);

/* The compute stream (a cudaStream_t) and library handles (cublasHandle_t,
 * cudnnHandle_t; NULL when built without cuDNN), all bound to the stream. */
void *nn_cuda_stream(void);
void *nn_cuda_cublas(void);
void *nn_cuda_cudnn(void);
/* Shared scratch space of at least `bytes` on the device (cuDNN workspaces,
 * reductions). Valid until the next call with a larger size; stream-ordered
 * use only. */
void *nn_cuda_workspace(size_t bytes);

/* ---- allocator ---- */
/* Device buffer of n bytes (n == 0 gives a valid 512-byte block). Aborts
 * with a message naming the size and the memory in use when the device is
 * full even after releasing the cache. */
void *nn_cuda_alloc(size_t bytes);
void nn_cuda_free(void *p); /* NULL ok; p from nn_cuda_alloc */
typedef struct nn_cuda_mem_stats {
    size_t in_use;       /* bytes handed out and not freed (rounded sizes) */
    size_t cached;       /* bytes held in the free cache */
    size_t peak_in_use;  /* high-water mark of in_use */
    long n_cudamalloc;   /* cudaMalloc calls so far */
    long n_alloc;        /* nn_cuda_alloc calls so far */
} nn_cuda_mem_stats;
void nn_cuda_mem_stats_get(nn_cuda_mem_stats *s);
void nn_cuda_reset_peak(void);
/* Return every cached block to the driver. */
void nn_cuda_empty_cache(void);

/* ---- copies (stream-ordered) ---- */
void nn_cuda_memset0(void *dst, size_t bytes);                    /* async */
void nn_cuda_h2d(void *dst, const void *src, size_t bytes);       /* src may be reused on return */
void nn_cuda_d2h(void *dst, const void *src, size_t bytes);       /* waits: counts a host sync */
void nn_cuda_d2d(void *dst, const void *src, size_t bytes);       /* async */
/* Wait for the stream (counts a host sync). */
void nn_cuda_synchronize(void);

/* ---- pinned host memory, asynchronous copies, events (pipelines) ---- */
/* Page-locked host buffer (cudaMallocHost): copies from/to it are DMA, run
 * asynchronously and overlap host work. NULL when it cannot be had (the
 * caller falls back to malloc). */
void *nn_cuda_host_alloc(size_t bytes);
void nn_cuda_host_free(void *p); /* NULL ok */
/* Stream-ordered copies that return at once: src (h2d) and dst (d2h) must
 * stay untouched until an event recorded after the copy has been waited
 * for. From pageable memory they degrade to staged copies (still correct). */
void nn_cuda_h2d_async(void *dst, const void *src, size_t bytes);
void nn_cuda_d2h_async(void *dst, const void *src, size_t bytes);
/* A marker in the stream: record it after some work, wait for it on the
 * host (counts a host sync) without waiting for what was queued later. */
void *nn_cuda_event_new(void);
void nn_cuda_event_record(void *ev);
void nn_cuda_event_wait(void *ev);
void nn_cuda_event_free(void *ev); /* NULL ok */
long nn_cuda_host_syncs(void);

/* ---- small kernels the tensor core needs (nn/cuda/core.cu) ---- */
void nn_cuda_fill(float *x, float v, size_t n);
void nn_cuda_axpy(float *y, const float *x, float a, size_t n); /* y += a*x */
void nn_cuda_scal(float *x, float a, size_t n);                 /* x *= a */

/* ---- modes ---- */
/* TF32 tensor-core math for fp32 matmuls/convolutions (cuBLAS and cuDNN).
 * Off by default (results then match the CPU reference to fp32 rounding). */
void nn_cuda_set_tf32(int on);
int nn_cuda_tf32(void);
/* How cuDNN convolution algorithms are chosen, once per shape (nn/cuda/
 * conv.cu): by cuDNN's heuristic, in its order (the default, as PyTorch with
 * cudnn.benchmark = False), or, in benchmark mode, by timing every algorithm
 * on the first call of a shape (as cudnn.benchmark = True; also on with
 * NCMI_CUDNN_BENCHMARK=1). Exact mode (NCMI_CONV_EXACT=1) puts the algorithms
 * that sum directly before FFT/Winograd, so fp32 results match the CPU
 * reference to fp32 rounding. A change applies to shapes planned after it. */
void nn_cuda_set_cudnn_benchmark(int on);
int nn_cuda_cudnn_benchmark(void);
void nn_cuda_set_conv_exact(int on);
int nn_cuda_conv_exact(void);
/* Debug mode: synchronise and check after every kernel launch, so an
 * asynchronous error is reported at the launch that caused it. Also on
 * when the environment has NCMI_CUDA_SYNC=1. */
void nn_cuda_set_debug_sync(int on);
int nn_cuda_debug_sync(void);
/* Called by nn/cuda/ after each launch (through NN_CUDA_LAUNCHED()):
 * checks cudaGetLastError and, in debug mode, synchronises and checks. */
void nn_cuda_after_launch(const char *file, int line);

#ifdef __cplusplus
}
#endif

#endif
