/* CPU-only build: the CUDA entry points exist, report that there is no GPU
 * (nn_cuda_init fails with a clear message), and the data functions abort:
 * they are unreachable, since no tensor can be placed on a GPU. */
#include "cuda.h"

#include <stdio.h>

#include "error.h"

#if !NCMI_HAVE_CUDA
#define NO_GPU(fn) ncmi_fatal_at(__FILE__, __LINE__, "%s: this ncmi was built without CUDA", fn)

int nn_cuda_built(void) { return 0; }
int nn_cuda_device_count(void) { return 0; }
char *nn_cuda_describe(int device, char *buf, size_t n)
{
    snprintf(buf, n, "no CUDA device %d (built without CUDA)", device);
    return buf;
}
int nn_cuda_init(int device)
{
    return ncmi_error_set("CUDA device %d requested, but this ncmi was built without CUDA "
                          "(no nvcc at build time; install the CUDA toolkit and rebuild)",
                          device);
}
int nn_cuda_current(void) { return -1; }
const char *nn_device_name(int is_cuda) { return is_cuda ? "cuda (not built)" : "cpu"; }
void *nn_cuda_stream(void) { return NULL; }
void *nn_cuda_cublas(void) { return NULL; }
void *nn_cuda_cudnn(void) { return NULL; }
void *nn_cuda_workspace(size_t bytes) { (void)bytes; NO_GPU("nn_cuda_workspace"); }
void *nn_cuda_alloc(size_t bytes) { (void)bytes; NO_GPU("nn_cuda_alloc"); }
void nn_cuda_free(void *p) { if (p) NO_GPU("nn_cuda_free"); }
void nn_cuda_mem_stats_get(nn_cuda_mem_stats *s) { *s = (nn_cuda_mem_stats){0}; }
void nn_cuda_reset_peak(void) {}
void nn_cuda_empty_cache(void) {}
void nn_cuda_memset0(void *d, size_t b) { (void)d; (void)b; NO_GPU("nn_cuda_memset0"); }
void nn_cuda_h2d(void *d, const void *s, size_t b) { (void)d; (void)s; (void)b; NO_GPU("nn_cuda_h2d"); }
void nn_cuda_d2h(void *d, const void *s, size_t b) { (void)d; (void)s; (void)b; NO_GPU("nn_cuda_d2h"); }
void nn_cuda_d2d(void *d, const void *s, size_t b) { (void)d; (void)s; (void)b; NO_GPU("nn_cuda_d2d"); }
void nn_cuda_synchronize(void) {}
void *nn_cuda_host_alloc(size_t bytes) { (void)bytes; return NULL; }
void nn_cuda_host_free(void *p) { if (p) NO_GPU("nn_cuda_host_free"); }
void nn_cuda_h2d_async(void *d, const void *s, size_t b) { (void)d; (void)s; (void)b; NO_GPU("nn_cuda_h2d_async"); }
void nn_cuda_d2h_async(void *d, const void *s, size_t b) { (void)d; (void)s; (void)b; NO_GPU("nn_cuda_d2h_async"); }
void *nn_cuda_event_new(void) { NO_GPU("nn_cuda_event_new"); }
void nn_cuda_event_record(void *ev) { (void)ev; NO_GPU("nn_cuda_event_record"); }
void nn_cuda_event_wait(void *ev) { (void)ev; NO_GPU("nn_cuda_event_wait"); }
void nn_cuda_event_free(void *ev) { if (ev) NO_GPU("nn_cuda_event_free"); }
long nn_cuda_host_syncs(void) { return 0; }
void nn_cuda_fill(float *x, float v, size_t n) { (void)x; (void)v; (void)n; NO_GPU("nn_cuda_fill"); }
void nn_cuda_axpy(float *y, const float *x, float a, size_t n)
{
    (void)y; (void)x; (void)a; (void)n;
    NO_GPU("nn_cuda_axpy");
}
void nn_cuda_scal(float *x, float a, size_t n) { (void)x; (void)a; (void)n; NO_GPU("nn_cuda_scal"); }
void nn_cuda_set_tf32(int on) { (void)on; }
int nn_cuda_tf32(void) { return 0; }
void nn_cuda_set_cudnn_benchmark(int on) { (void)on; }
int nn_cuda_cudnn_benchmark(void) { return 0; }
void nn_cuda_set_conv_exact(int on) { (void)on; }
int nn_cuda_conv_exact(void) { return 0; }
void nn_cuda_set_debug_sync(int on) { (void)on; }
int nn_cuda_debug_sync(void) { return 0; }
void nn_cuda_after_launch(const char *file, int line) { (void)file; (void)line; }
#else
/* the definitions live in nn/cuda/runtime.cu and nn/cuda/core.cu */
typedef int nn_cuda_stub_unused;
#endif
