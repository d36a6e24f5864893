/* CUDA twins of nn/ops_reduce.c, implemented in nn/cuda/reduce.cu. Every
 * pointer is a device pointer; backward entry points ADD into gx.
 *
 * An axis reduction sees x as [outer, n, inner] and writes [outer, inner];
 * a row op sees x as [rows, D]. Sums accumulate in double where the CPU
 * reference does, so results differ from it only by summation order. */
#ifndef NCMI_CUDA_K_REDUCE_H
#define NCMI_CUDA_K_REDUCE_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* y[o,i] = s * sum_k x[o,k,i];  gx[o,k,i] += s * gy[o,i] */
void nn_cuda_sum_axis(float *y, const float *x, size_t outer, int n, size_t inner, float s);
void nn_cuda_sum_axis_bwd(float *gx, const float *gy, size_t outer, int n, size_t inner, float s);

/* y[o,i] = max_k x[o,k,i], arg[o,i] = the first k attaining it (the first
 * NaN when there is one); n >= 1. Backward: gx[o,arg,i] += gy[o,i]. */
void nn_cuda_max_axis(float *y, int *arg, const float *x, size_t outer, int n, size_t inner);
void nn_cuda_max_axis_bwd(float *gx, const float *gy, const int *arg, size_t outer, int n,
                          size_t inner);

/* y[0] = sum x (mean: / n);  gx += gy[0] * s */
void nn_cuda_sum_all(float *y, const float *x, size_t n, int mean);
void nn_cuda_sum_all_bwd(float *gx, const float *gy, float s, size_t n);

/* Row ops over the last axis of [rows, D]. */
void nn_cuda_logsumexp(float *y, const float *x, size_t rows, int D);
void nn_cuda_logsumexp_bwd(float *gx, const float *x, const float *y, const float *gy, size_t rows,
                           int D);
void nn_cuda_softmax(float *y, const float *x, size_t rows, int D);
void nn_cuda_softmax_bwd(float *gx, const float *y, const float *gy, size_t rows, int D);
void nn_cuda_log_softmax(float *y, const float *x, size_t rows, int D);
void nn_cuda_log_softmax_bwd(float *gx, const float *y, const float *gy, size_t rows, int D);
/* y = x / max(||x||, eps), norms[r] = ||x_r|| (kept for the backward) */
void nn_cuda_l2_normalize(float *y, float *norms, const float *x, size_t rows, int D, float eps);
void nn_cuda_l2_normalize_bwd(float *gx, const float *y, const float *gy, const float *norms,
                              size_t rows, int D, float eps);

#ifdef __cplusplus
}
#endif

#endif
