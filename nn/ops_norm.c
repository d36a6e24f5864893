/* Normalisation and regularisation: batchnorm2d, layernorm, dropout, with
 * PyTorch semantics.
 *
 *   batchnorm2d x [N,C,H,W]; per channel over M = N*H*W values:
 *       training: y = gamma * (x - mean) / sqrt(var + eps) + beta with the
 *                 batch mean and biased var; running stats updated in place:
 *                 r = (1 - momentum) * r + momentum * stat, var unbiased
 *                 (var * M/(M-1));
 *       eval:     the running statistics, no update.
 *   layernorm   x [...,D], over the last axis (biased var).
 *   dropout     inverted; mask from a per-chunk fork of rng, so the same seed
 *               gives the same mask at any thread count.
 *
 * The CUDA twins (nn/cuda/norm.cu) follow the same arithmetic. Dropout's mask
 * is drawn here on the host from the same rng stream on both devices (so a
 * seed gives the same mask on the CPU and the GPU, and the rng advances the
 * same way) and uploaded with nn_cuda_h2d, which does not wait. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cuda.h"
#include "cuda/k_norm.h"
#include "error.h"
#include "ops.h"
#include "ops_internal.h"

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    NCMI_CHECK(p != NULL, "out of memory (%zu bytes)", n);
    return p;
}

/* ------------------------------------------------------------------------ */
/* batchnorm2d: src x, gamma, beta; iparam 0 training; aux [2C] mean, rstd
 * (batch statistics in training, running ones in eval). */

static void batchnorm2d_backward(nn_tensor *out)
{
    nn_tensor *x = out->src[0], *gamma = out->src[1], *beta = out->src[2];
    int training = out->iparam[0];
    int N = x->shape[0], C = x->shape[1];
    size_t HW = (size_t)x->shape[2] * x->shape[3];
    double M = (double)N * (double)HW;
    const float *stats = out->aux; /* mean [C], rstd [C] */
    const float *dy = out->grad;
    float *dx = nn_op_needs_grad(out, 0) ? nn_tensor_grad(x) : NULL;
    float *dgamma = nn_op_needs_grad(out, 1) ? nn_tensor_grad(gamma) : NULL;
    float *dbeta = nn_op_needs_grad(out, 2) ? nn_tensor_grad(beta) : NULL;
    if (NN_ON_GPU(out)) {
        nn_cuda_batchnorm2d_bwd(x->data, gamma ? gamma->data : NULL, stats, dy, dx, dgamma, dbeta, N, C,
                                HW, training);
        return;
    }
#pragma omp parallel for schedule(static)
    for (int c = 0; c < C; c++) {
        float mean = stats[c], rstd = stats[C + c];
        float gm = gamma ? gamma->data[c] : 1.f;
        /* sum(dy), sum(dy * xhat) */
        double sdy = 0, sdyx = 0;
        for (int n = 0; n < N; n++) {
            size_t off = ((size_t)n * C + c) * HW;
            const float *xp = x->data + off, *dp = dy + off;
            float a = 0.f, b = 0.f;
            for (size_t i = 0; i < HW; i++) {
                a += dp[i];
                b += dp[i] * (xp[i] - mean) * rstd;
            }
            sdy += a;
            sdyx += b;
        }
        if (dgamma) dgamma[c] += (float)sdyx;
        if (dbeta) dbeta[c] += (float)sdy;
        if (!dx) continue;
        if (training) {
            /* dx = gamma*rstd * (dy - mean(dy) - xhat * mean(dy*xhat)) */
            float k = gm * rstd, mdy = (float)(sdy / M), mdyx = (float)(sdyx / M);
            for (int n = 0; n < N; n++) {
                size_t off = ((size_t)n * C + c) * HW;
                const float *xp = x->data + off, *dp = dy + off;
                float *dxp = dx + off;
                for (size_t i = 0; i < HW; i++) {
                    float xh = (xp[i] - mean) * rstd;
                    dxp[i] += k * (dp[i] - mdy - xh * mdyx);
                }
            }
        } else {
            float k = gm * rstd;
            for (int n = 0; n < N; n++) {
                size_t off = ((size_t)n * C + c) * HW;
                const float *dp = dy + off;
                float *dxp = dx + off;
                for (size_t i = 0; i < HW; i++) dxp[i] += k * dp[i];
            }
        }
    }
}

nn_tensor *nn_batchnorm2d(nn_graph *g, nn_tensor *x, nn_tensor *gamma, nn_tensor *beta,
                          nn_tensor *running_mean, nn_tensor *running_var, int training,
                          float momentum, float eps)
{
    char sx[64];
    nn_shape_str(x->ndim, x->shape, sx, sizeof sx);
    NCMI_CHECK(x->ndim == 4, "batchnorm2d: x %s: need [N,C,H,W]", sx);
    int N = x->shape[0], C = x->shape[1];
    size_t HW = (size_t)x->shape[2] * x->shape[3];
    size_t M = (size_t)N * HW;
    NCMI_CHECK((!gamma || gamma->numel == (size_t)C) && (!beta || beta->numel == (size_t)C),
               "batchnorm2d: x %s: gamma/beta must have %d elements", sx, C);
    NCMI_CHECK(running_mean && running_var && running_mean->numel == (size_t)C &&
                   running_var->numel == (size_t)C,
               "batchnorm2d: x %s: running stats must have %d elements", sx, C);
    NCMI_CHECK(!training || M > 1,
               "batchnorm2d: x %s: training needs more than one value per channel", sx);
    nn_tensor *src[3] = {x, gamma, beta};
    nn_tensor *out = nn_op_output(g, "batchnorm2d", 4, x->shape, batchnorm2d_backward, 3, src);
    out->bwd_reads = NN_BWD_SRC(0) | NN_BWD_SRC(1); /* x, gamma; aux: mean, rstd */
    out->iparam[0] = training != 0;
    out->fparam[0] = momentum;
    out->fparam[1] = eps;
    if (NN_ON_GPU(out)) {
        NCMI_CHECK(running_mean->device == NN_DEVICE_CUDA && running_var->device == NN_DEVICE_CUDA,
                   "batchnorm2d: x %s is on the GPU, its running stats are not", sx);
        float *dstats = out->backward ? nn_cuda_alloc(2 * (size_t)C * sizeof(float)) : NULL;
        nn_cuda_batchnorm2d_fwd(x->data, gamma ? gamma->data : NULL, beta ? beta->data : NULL,
                                running_mean->data, running_var->data, out->data, dstats, N, C, HW,
                                training != 0, momentum, eps);
        out->aux = dstats;
        out->aux_cuda = 1;
        return out;
    }
    float *stats = xmalloc(2 * (size_t)C * sizeof(float)); /* mean [C], rstd [C] */
#pragma omp parallel for schedule(static)
    for (int c = 0; c < C; c++) {
        float mean, rstd;
        if (training) {
            double s = 0;
            for (int n = 0; n < N; n++) {
                const float *xp = x->data + ((size_t)n * C + c) * HW;
                for (size_t i = 0; i < HW; i++) s += xp[i];
            }
            double m = s / (double)M, ss = 0;
            for (int n = 0; n < N; n++) {
                const float *xp = x->data + ((size_t)n * C + c) * HW;
                for (size_t i = 0; i < HW; i++) {
                    double d = xp[i] - m;
                    ss += d * d;
                }
            }
            double var = ss / (double)M;
            mean = (float)m;
            rstd = (float)(1.0 / sqrt(var + (double)eps));
            running_mean->data[c] = (1.f - momentum) * running_mean->data[c] + momentum * (float)m;
            running_var->data[c] = (1.f - momentum) * running_var->data[c] +
                                   momentum * (float)(ss / (double)(M - 1));
        } else {
            mean = running_mean->data[c];
            rstd = (float)(1.0 / sqrt((double)running_var->data[c] + (double)eps));
        }
        stats[c] = mean;
        stats[C + c] = rstd;
        float gm = gamma ? gamma->data[c] : 1.f, bt = beta ? beta->data[c] : 0.f;
        float k = gm * rstd, b0 = bt - mean * k; /* y = k*x + b0 */
        for (int n = 0; n < N; n++) {
            size_t off = ((size_t)n * C + c) * HW;
            const float *xp = x->data + off;
            float *yp = out->data + off;
            for (size_t i = 0; i < HW; i++) yp[i] = k * xp[i] + b0;
        }
    }
    if (out->backward) {
        out->aux = stats;
    } else {
        free(stats);
    }
    return out;
}

/* ------------------------------------------------------------------------ */
/* layernorm: src x, gamma, beta (either may be NULL); iparam 0 rows, 1 D;
 * aux [2*rows] mean, rstd */

static void layernorm_backward(nn_tensor *out)
{
    nn_tensor *x = out->src[0], *gamma = out->src[1], *beta = out->src[2];
    long rows = out->iparam[0];
    int D = out->iparam[1];
    const float *mean = out->aux, *rstd = (const float *)out->aux + rows;
    const float *dy = out->grad;
    if (NN_ON_GPU(out)) {
        float *dx = nn_op_needs_grad(out, 0) ? nn_tensor_grad(x) : NULL;
        float *dgamma = nn_op_needs_grad(out, 1) ? nn_tensor_grad(gamma) : NULL;
        float *dbeta = nn_op_needs_grad(out, 2) ? nn_tensor_grad(beta) : NULL;
        nn_cuda_layernorm_bwd(x->data, gamma ? gamma->data : NULL, out->aux, dy, dx, dgamma, dbeta,
                              (size_t)rows, D);
        return;
    }
    if (nn_op_needs_grad(out, 0)) {
        float *dx = nn_tensor_grad(x);
#pragma omp parallel for schedule(static)
        for (long r = 0; r < rows; r++) {
            const float *xp = x->data + (size_t)r * D, *dp = dy + (size_t)r * D;
            float *dxp = dx + (size_t)r * D;
            float m = mean[r], rs = rstd[r];
            /* dxhat = dy * gamma; dx = rstd * (dxhat - mean(dxhat) - xhat*mean(dxhat*xhat)) */
            double s1 = 0, s2 = 0;
            for (int i = 0; i < D; i++) {
                float dxh = dp[i] * (gamma ? gamma->data[i] : 1.f);
                s1 += dxh;
                s2 += dxh * (xp[i] - m) * rs;
            }
            float m1 = (float)(s1 / D), m2 = (float)(s2 / D);
            for (int i = 0; i < D; i++) {
                float dxh = dp[i] * (gamma ? gamma->data[i] : 1.f);
                float xh = (xp[i] - m) * rs;
                dxp[i] += rs * (dxh - m1 - xh * m2);
            }
        }
    }
    float *dgamma = nn_op_needs_grad(out, 1) ? nn_tensor_grad(gamma) : NULL;
    float *dbeta = nn_op_needs_grad(out, 2) ? nn_tensor_grad(beta) : NULL;
    if (dgamma || dbeta) {
        for (long r = 0; r < rows; r++) {
            const float *xp = x->data + (size_t)r * D, *dp = dy + (size_t)r * D;
            float m = mean[r], rs = rstd[r];
            if (dgamma)
                for (int i = 0; i < D; i++) dgamma[i] += dp[i] * (xp[i] - m) * rs;
            if (dbeta)
                for (int i = 0; i < D; i++) dbeta[i] += dp[i];
        }
    }
}

nn_tensor *nn_layernorm(nn_graph *g, nn_tensor *x, nn_tensor *gamma, nn_tensor *beta, float eps)
{
    char sx[64];
    nn_shape_str(x->ndim, x->shape, sx, sizeof sx);
    NCMI_CHECK(x->ndim >= 1, "layernorm: x %s", sx);
    int D = x->shape[x->ndim - 1];
    NCMI_CHECK(D > 0, "layernorm: x %s: empty last axis", sx);
    NCMI_CHECK((!gamma || gamma->numel == (size_t)D) && (!beta || beta->numel == (size_t)D),
               "layernorm: x %s: gamma/beta must have %d elements", sx, D);
    long rows = (long)(x->numel / (size_t)D);
    nn_tensor *src[3] = {x, gamma, beta};
    nn_tensor *out = nn_op_output(g, "layernorm", x->ndim, x->shape, layernorm_backward, 3, src);
    out->bwd_reads = NN_BWD_SRC(0) | NN_BWD_SRC(1); /* x, gamma; aux: mean, rstd */
    out->iparam[0] = (int)rows;
    out->iparam[1] = D;
    out->fparam[0] = eps;
    if (NN_ON_GPU(out)) {
        float *dstats = out->backward ? nn_cuda_alloc(2 * (size_t)rows * sizeof(float)) : NULL;
        nn_cuda_layernorm_fwd(x->data, gamma ? gamma->data : NULL, beta ? beta->data : NULL, out->data,
                              dstats, (size_t)rows, D, eps);
        out->aux = dstats;
        out->aux_cuda = 1;
        return out;
    }
    float *stats = xmalloc(2 * (size_t)(rows ? rows : 1) * sizeof(float));
#pragma omp parallel for schedule(static)
    for (long r = 0; r < rows; r++) {
        const float *xp = x->data + (size_t)r * D;
        float *yp = out->data + (size_t)r * D;
        double s = 0, ss = 0;
        for (int i = 0; i < D; i++) s += xp[i];
        double m = s / D;
        for (int i = 0; i < D; i++) {
            double d = xp[i] - m;
            ss += d * d;
        }
        float mf = (float)m, rs = (float)(1.0 / sqrt(ss / D + (double)eps));
        stats[r] = mf;
        stats[rows + r] = rs;
        for (int i = 0; i < D; i++) {
            float v = (xp[i] - mf) * rs;
            if (gamma) v *= gamma->data[i];
            if (beta) v += beta->data[i];
            yp[i] = v;
        }
    }
    if (out->backward) {
        out->aux = stats;
    } else {
        free(stats);
    }
    return out;
}

/* ------------------------------------------------------------------------ */
/* dropout: aux uint8 mask [numel] (1 keep), fparam 0 scale 1/(1-p) */


static void dropout_backward(nn_tensor *out)
{
    nn_tensor *x = out->src[0];
    if (!nn_op_needs_grad(out, 0)) return;
    const uint8_t *mask = out->aux;
    float scale = out->fparam[0];
    float *dx = nn_tensor_grad(x);
    long n = (long)out->numel;
    if (NN_ON_GPU(out)) {
        nn_cuda_dropout_bwd(out->grad, mask, dx, scale, (size_t)n);
        return;
    }
#pragma omp parallel for schedule(static)
    for (long i = 0; i < n; i++)
        if (mask[i]) dx[i] += out->grad[i] * scale;
}

/* mask [n] (1 keep) of the call with that key: nn_dropout_keep per element
 * (nn/cuda/k_norm.h), the same on any thread count and on the GPU. */
static void dropout_mask(uint64_t key, float p, size_t n, uint8_t *mask)
{
#pragma omp parallel for schedule(static)
    for (long i = 0; i < (long)n; i++) mask[i] = (uint8_t)nn_dropout_keep(key, (uint64_t)i, p);
}

nn_tensor *nn_dropout(nn_graph *g, nn_tensor *x, float p, int training, nn_rng *rng)
{
    NCMI_CHECK(p >= 0.f && p <= 1.f, "dropout: p = %g outside [0,1]", (double)p);
    if (!training || p == 0.f) return x;
    NCMI_CHECK(rng != NULL, "dropout: training with p = %g needs an rng", (double)p);
    nn_tensor *out = nn_op_output(g, "dropout", x->ndim, x->shape, dropout_backward, 1, &x);
    out->bwd_reads = NN_BWD_NONE; /* aux: the mask */
    float scale = p < 1.f ? 1.f / (1.f - p) : 0.f;
    out->fparam[0] = scale;
    out->fparam[1] = p;
    size_t n = x->numel;
    /* one draw from the stream per call; the mask is a function of it */
    const uint64_t key = nn_rng_u64(rng);
    if (NN_ON_GPU(out)) {
        uint8_t *dmask = out->backward ? nn_cuda_alloc(n ? n : 1) : NULL;
        nn_cuda_dropout_fwd(x->data, dmask, out->data, scale, p, key, n);
        if (dmask) {
            out->aux = dmask;
            out->aux_cuda = 1;
        }
        return out;
    }
    uint8_t *mask = xmalloc(n ? n : 1);
    dropout_mask(key, p, n, mask);
#pragma omp parallel for schedule(static)
    for (long i = 0; i < (long)n; i++) out->data[i] = mask[i] ? x->data[i] * scale : 0.f;
    if (out->backward) {
        out->aux = mask;
    } else {
        free(mask);
    }
    return out;
}
