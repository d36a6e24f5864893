/* CUDA twins of batchnorm2d, layernorm and dropout (nn/ops_norm.c),
 * implemented in nn/cuda/norm.cu. Device pointers; gamma/beta may be NULL
 * (no affine), as may any gradient that is not wanted.
 *
 * Arithmetic follows the CPU reference step by step: statistics are summed
 * in double (the CPU does too, so the mean and rstd come out the same), the
 * float formulas round in the same order (no fma contraction), and only the
 * order of the gradient sums differs (the CPU adds each image's or row
 * range's float partial sum; the GPU sums per thread in double, or per row
 * chunk in float). */
#ifndef NCMI_CUDA_K_NORM_H
#define NCMI_CUDA_K_NORM_H

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

/* Walk over the N*HW values of one channel of [N,C,HW] from index `start`
 * in steps of `step`, without a division per step: the current value is
 * image n, position j < HW (the batchnorm kernels; tests/test_ops_b.c checks
 * it against i / HW, i % HW). */
typedef struct nn_chan_walk {
    size_t n, j, dn, dj, HW;
} nn_chan_walk;

static inline NN_HD nn_chan_walk nn_chan_walk_at(size_t start, size_t step, size_t HW)
{
    nn_chan_walk w = {start / HW, start % HW, step / HW, step % HW, HW};
    return w;
}

static inline NN_HD void nn_chan_walk_next(nn_chan_walk *w)
{
    w->j += w->dj;
    w->n += w->dn;
    if (w->j >= w->HW) {
        w->j -= w->HW;
        w->n++;
    }
}

/* x, y [N,C,HW]. training: batch mean and biased variance normalise, and the
 * running stats are updated in place (momentum, unbiased variance); else the
 * running stats normalise. stats [2C] (may be NULL) gets mean and rstd as
 * used, for the backward. */
void nn_cuda_batchnorm2d_fwd(const float *x, const float *gamma, const float *beta, float *running_mean,
                             float *running_var, float *y, float *stats, int N, int C, size_t HW, int training,
                             float momentum, float eps);
void nn_cuda_batchnorm2d_bwd(const float *x, const float *gamma, const float *stats, const float *dy, float *dx,
                             float *dgamma, float *dbeta, int N, int C, size_t HW, int training);

/* x, y [rows, D], over the last axis; stats [2*rows] (may be NULL): mean, rstd. */
void nn_cuda_layernorm_fwd(const float *x, const float *gamma, const float *beta, float *y, float *stats,
                           size_t rows, int D, float eps);
void nn_cuda_layernorm_bwd(const float *x, const float *gamma, const float *stats, const float *dy, float *dx,
                           float *dgamma, float *dbeta, size_t rows, int D);

/* Dropout's mask: element i of a call whose key is `key` is kept when
 * u >= p, u = the top 24 bits of splitmix64(key + (i + 1) * golden gamma)
 * times 2^-24 (exact in float). A pure function of (key, i): the CPU
 * reference (nn/ops_norm.c, any thread count) and the GPU kernel draw the
 * same mask, and the GPU draws it on the device (no host mask, no upload). */
#ifdef __CUDACC__
#define NN_DROPOUT_HD __host__ __device__
#else
#define NN_DROPOUT_HD
#endif
static inline NN_DROPOUT_HD int nn_dropout_keep(uint64_t key, uint64_t i, float p)
{
    uint64_t z = key + (i + 1) * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    const float u = (float)(z >> 40) * (1.0f / 16777216.0f);
    return u >= p;
}

/* y = keep ? x*scale : 0 with keep = nn_dropout_keep(key, i, p), and the
 * mask (1 keep) written to `mask` for the backward (NULL: not kept);
 * dx += mask ? dy*scale : 0. */
void nn_cuda_dropout_fwd(const float *x, uint8_t *mask, float *y, float scale, float p, uint64_t key,
                         size_t n);
void nn_cuda_dropout_bwd(const float *dy, const uint8_t *mask, float *dx, float scale, size_t n);

#ifdef __cplusplus
}
#endif

#endif
