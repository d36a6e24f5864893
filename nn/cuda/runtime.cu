// CUDA runtime glue: device selection, the compute stream, cuBLAS/cuDNN
// handles, the shared workspace, the caching allocator, copies, the TF32 and
// debug-sync switches (API and rationale in nn/cuda.h).
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <map>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "../cuda.h"
#include "check.cuh"

extern "C" {
#include "../error.h"
}

namespace {

struct runtime {
    int device = -1;
    cudaStream_t stream = nullptr;
    cublasHandle_t cublas = nullptr;
#if NCMI_HAVE_CUDNN
    cudnnHandle_t cudnn = nullptr;
#endif
    void *ws = nullptr;
    size_t ws_bytes = 0;
    int tf32 = 0;
    int debug_sync = 0;
    long host_syncs = 0;
    char name[256] = "";
};
runtime R;

// ---- caching allocator ----
std::mutex mu;
std::map<size_t, std::vector<void *>> free_blocks;  // size class -> cached blocks
std::unordered_map<void *, size_t> live;            // block -> size class
nn_cuda_mem_stats stats;

size_t size_class(size_t n)
{
    if (n == 0) n = 1;
    if (n <= ((size_t)1 << 20)) return (n + 511) & ~(size_t)511;
    size_t p = (size_t)1 << 20;
    while (p < n) p <<= 1;       // n in (p/2, p]
    size_t step = p >> 3;        // 1/8 of the power of two
    return (n + step - 1) / step * step;
}

void release_cache_locked()
{
    for (auto &kv : free_blocks)
        for (void *p : kv.second) {
            cudaFree(p);
            stats.cached -= kv.first;
        }
    free_blocks.clear();
}

} // namespace

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

extern "C" int nn_cuda_init(int device)
{
    if (R.device >= 0) {
        if (R.device == device) return 0;
        return ncmi_error_set("CUDA device %d requested, but this process already uses device %d",
                              device, R.device);
    }
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        cudaGetLastError();
        return ncmi_error_set("no usable CUDA device: %s", cudaGetErrorString(e));
    }
    if (device < 0 || device >= n)
        return ncmi_error_set("no CUDA device %d (%d present)", device, n);
    e = cudaSetDevice(device);
    if (e != cudaSuccess) return ncmi_error_set("cannot use CUDA device %d: %s", device, cudaGetErrorString(e));
    NN_GPU_CHECK(cudaStreamCreateWithFlags(&R.stream, cudaStreamNonBlocking));
    NN_GPU_CHECK(cublasCreate(&R.cublas));
    NN_GPU_CHECK(cublasSetStream(R.cublas, R.stream));
#if NCMI_HAVE_CUDNN
    NN_GPU_CHECK(cudnnCreate(&R.cudnn));
    NN_GPU_CHECK(cudnnSetStream(R.cudnn, R.stream));
#endif
    const char *s = getenv("NCMI_CUDA_SYNC");
    if (s && *s && strcmp(s, "0") != 0) R.debug_sync = 1;
    R.device = device;
    char d[200];
    snprintf(R.name, sizeof R.name, "cuda:%d (%s)", device, nn_cuda_describe(device, d, sizeof d));
    nn_cuda_set_tf32(R.tf32);
    return 0;
}

extern "C" int nn_cuda_current(void) { return R.device; }

extern "C" const char *nn_device_name(int is_cuda) { return is_cuda && R.device >= 0 ? R.name : "cpu"; }

extern "C" void *nn_cuda_stream(void) { return R.stream; }
extern "C" void *nn_cuda_cublas(void) { return R.cublas; }
extern "C" void *nn_cuda_cudnn(void)
{
#if NCMI_HAVE_CUDNN
    return R.cudnn;
#else
    return nullptr;
#endif
}

extern "C" void *nn_cuda_workspace(size_t bytes)
{
    if (bytes > R.ws_bytes) {
        // the old workspace may still be in use by queued work: free it
        // through the allocator (stream-ordered reuse is safe on one stream)
        nn_cuda_free(R.ws);
        size_t nb = bytes + bytes / 4;
        R.ws = nn_cuda_alloc(nb);
        R.ws_bytes = nb;
    }
    return R.ws;
}

extern "C" void *nn_cuda_alloc(size_t bytes)
{
    NCMI_CHECK(R.device >= 0, "device memory requested before nn_cuda_init");
    size_t c = size_class(bytes);
    std::lock_guard<std::mutex> lk(mu);
    stats.n_alloc++;
    void *p = nullptr;
    auto it = free_blocks.find(c);
    if (it != free_blocks.end() && !it->second.empty()) {
        p = it->second.back();
        it->second.pop_back();
        stats.cached -= c;
    } else {
        cudaError_t e = cudaMalloc(&p, c);
        stats.n_cudamalloc++;
        if (e != cudaSuccess) {
            cudaGetLastError();
            // Blocks in the cache may be in use by queued kernels only in
            // stream order, so waiting for the stream makes them free to go.
            cudaStreamSynchronize(R.stream);
            release_cache_locked();
            e = cudaMalloc(&p, c);
            stats.n_cudamalloc++;
            if (e != cudaSuccess) {
                size_t fr = 0, tot = 0;
                cudaMemGetInfo(&fr, &tot);
                ncmi_fatal_at(__FILE__, __LINE__,
                              "GPU out of memory: %.1f MiB requested, %.1f MiB in use by ncmi, "
                              "%.1f of %.1f MiB free on %s (%s)",
                              c / 1048576.0, stats.in_use / 1048576.0, fr / 1048576.0,
                              tot / 1048576.0, R.name, cudaGetErrorString(e));
            }
        }
    }
    live[p] = c;
    stats.in_use += c;
    if (stats.in_use > stats.peak_in_use) stats.peak_in_use = stats.in_use;
    return p;
}

extern "C" void nn_cuda_free(void *p)
{
    if (!p) return;
    std::lock_guard<std::mutex> lk(mu);
    auto it = live.find(p);
    NCMI_CHECK(it != live.end(), "nn_cuda_free of a pointer the allocator did not hand out");
    size_t c = it->second;
    live.erase(it);
    stats.in_use -= c;
    // Kernels queued on the one stream that still read p run before any
    // later kernel that reuses it, so the block can be reused at once.
    free_blocks[c].push_back(p);
    stats.cached += c;
}

extern "C" void nn_cuda_mem_stats_get(nn_cuda_mem_stats *s)
{
    std::lock_guard<std::mutex> lk(mu);
    *s = stats;
}

extern "C" void nn_cuda_reset_peak(void)
{
    std::lock_guard<std::mutex> lk(mu);
    stats.peak_in_use = stats.in_use;
}

extern "C" void nn_cuda_empty_cache(void)
{
    if (R.device < 0) return;
    cudaStreamSynchronize(R.stream);
    std::lock_guard<std::mutex> lk(mu);
    release_cache_locked();
}

extern "C" void nn_cuda_memset0(void *dst, size_t bytes)
{
    if (bytes) NN_GPU_CHECK(cudaMemsetAsync(dst, 0, bytes, R.stream));
}

extern "C" void nn_cuda_h2d(void *dst, const void *src, size_t bytes)
{
    if (!bytes) return;
    // from pageable memory cudaMemcpyAsync stages the source before it
    // returns, so the caller may reuse src; it does not wait for the stream
    NN_GPU_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, R.stream));
}

extern "C" void nn_cuda_d2h(void *dst, const void *src, size_t bytes)
{
    if (!bytes) return;
    NN_GPU_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, R.stream));
    NN_GPU_CHECK(cudaStreamSynchronize(R.stream));
    R.host_syncs++;
}

extern "C" void *nn_cuda_host_alloc(size_t bytes)
{
    void *p = nullptr;
    if (cudaMallocHost(&p, bytes ? bytes : 1) != cudaSuccess) {
        cudaGetLastError(); // not fatal: the caller uses pageable memory
        return nullptr;
    }
    return p;
}

extern "C" void nn_cuda_host_free(void *p)
{
    if (p) NN_GPU_CHECK(cudaFreeHost(p));
}

extern "C" void nn_cuda_h2d_async(void *dst, const void *src, size_t bytes)
{
    if (bytes) NN_GPU_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, R.stream));
}

extern "C" void nn_cuda_d2h_async(void *dst, const void *src, size_t bytes)
{
    if (bytes) NN_GPU_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, R.stream));
}

extern "C" void *nn_cuda_event_new(void)
{
    cudaEvent_t ev = nullptr;
    NN_GPU_CHECK(cudaEventCreateWithFlags(&ev, cudaEventDisableTiming));
    return (void *)ev;
}

extern "C" void nn_cuda_event_record(void *ev)
{
    NN_GPU_CHECK(cudaEventRecord((cudaEvent_t)ev, R.stream));
}

extern "C" void nn_cuda_event_wait(void *ev)
{
    NN_GPU_CHECK(cudaEventSynchronize((cudaEvent_t)ev));
    R.host_syncs++;
}

extern "C" void nn_cuda_event_free(void *ev)
{
    if (ev) NN_GPU_CHECK(cudaEventDestroy((cudaEvent_t)ev));
}

extern "C" void nn_cuda_d2d(void *dst, const void *src, size_t bytes)
{
    if (bytes) NN_GPU_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, R.stream));
}

extern "C" void nn_cuda_synchronize(void)
{
    if (R.device < 0) return;
    NN_GPU_CHECK(cudaStreamSynchronize(R.stream));
    R.host_syncs++;
}

extern "C" long nn_cuda_host_syncs(void) { return R.host_syncs; }

extern "C" void nn_cuda_set_tf32(int on)
{
    R.tf32 = on != 0;
    if (R.cublas)
        NN_GPU_CHECK(cublasSetMathMode(R.cublas, R.tf32 ? CUBLAS_TF32_TENSOR_OP_MATH
                                                        : CUBLAS_DEFAULT_MATH));
}
extern "C" int nn_cuda_tf32(void) { return R.tf32; }

extern "C" void nn_cuda_set_debug_sync(int on) { R.debug_sync = on != 0; }
extern "C" int nn_cuda_debug_sync(void) { return R.debug_sync; }

extern "C" void nn_cuda_after_launch(const char *file, int line)
{
    cudaError_t e = cudaGetLastError();
    if (e == cudaSuccess && R.debug_sync) e = cudaStreamSynchronize(R.stream);
    if (e != cudaSuccess) {
        fprintf(stderr, "ncmi: CUDA error after the launch at %s:%d: %s%s\n", file, line,
                cudaGetErrorString(e), R.debug_sync ? "" : " (set NCMI_CUDA_SYNC=1 to find the launch that failed)");
        abort();
    }
}
