/* CUDA twins of the pooling ops (nn/ops_pool.c), implemented in
 * nn/cuda/pool.cu. Device pointers, NCHW, `planes` = N*C; kernel k, stride s,
 * padding p as the CPU ops (ceil_mode False).
 *
 * Every kernel computes each value in the CPU reference's order (the
 * forward scans a window row-major; the backward gathers, for each input
 * element, the outputs whose window holds it in increasing output order),
 * so results equal the CPU's bit for bit and no atomics are needed. */
#ifndef NCMI_CUDA_K_POOL_H
#define NCMI_CUDA_K_POOL_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#ifndef NN_HD
#ifdef __CUDACC__
#define NN_HD __host__ __device__
#else
#define NN_HD
#endif
#endif

/* Outputs o along one axis whose window [o*s - p, o*s - p + k) holds input
 * index i, as [*lo, *hi] (empty when *lo > *hi); n_out outputs. Clamping a
 * window to the input does not change which inputs it holds. (Shared by the
 * backward kernels; tests/test_ops_b.c checks it against a brute force.) */
static inline NN_HD void nn_pool_windows_of(int i, int k, int s, int p, int n_out, int *lo, int *hi)
{
    int t = i + p - k; /* o*s > t */
    *lo = t < 0 ? 0 : t / s + 1;
    int h = (i + p) / s; /* o*s <= i + p */
    *hi = h < n_out - 1 ? h : n_out - 1;
}

/* y [planes,Ho,Wo] = window max (padding -inf, NaN propagates); arg (may be
 * NULL) gets the plane index ih*W+iw of the first maximal element. */
void nn_cuda_maxpool2d_fwd(const float *x, float *y, int32_t *arg, size_t planes, int H, int W, int Ho,
                           int Wo, int k, int s, int p);
/* dx[arg] += dy */
void nn_cuda_maxpool2d_bwd(const float *dy, const int32_t *arg, float *dx, size_t planes, int H, int W,
                           int Ho, int Wo, int k, int s, int p);
/* count_include_pad: divisor k*k */
void nn_cuda_avgpool2d_fwd(const float *x, float *y, size_t planes, int H, int W, int Ho, int Wo, int k,
                           int s, int p);
void nn_cuda_avgpool2d_bwd(const float *dy, float *dx, size_t planes, int H, int W, int Ho, int Wo, int k,
                           int s, int p);
/* y [planes] = mean of x [planes, HW]; dx += dy / HW */
void nn_cuda_global_avgpool_fwd(const float *x, float *y, size_t planes, size_t HW);
void nn_cuda_global_avgpool_bwd(const float *dy, float *dx, size_t planes, size_t HW);

#ifdef __cplusplus
}
#endif

#endif
