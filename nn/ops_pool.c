/* Pooling, NCHW, as torch.nn.functional (ceil_mode False, dilation 1).
 *
 *   maxpool2d  x [N,C,H,W] -> [N,C,Ho,Wo], Ho = (H + 2p - k)/s + 1; padding is
 *              -inf; the gradient goes to the first maximal element of each
 *              window (row-major scan), whose plane index is saved in aux.
 *   avgpool2d  same shape; count_include_pad = True: divisor k*k.
 *   global_avgpool  [N,C,H,W] -> [N,C].
 * Planes (n,c) are independent and spread over OpenMP threads. The CUDA
 * twins (nn/cuda/pool.cu) compute every value in the same order. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cuda.h"
#include "cuda/k_pool.h"
#include "error.h"
#include "ops.h"
#include "ops_internal.h"

static void pool_out_shape(const char *op, const nn_tensor *x, int k, int s, int p, int *Ho, int *Wo)
{
    char sx[64];
    nn_shape_str(x->ndim, x->shape, sx, sizeof sx);
    NCMI_CHECK(x->ndim == 4, "%s: x %s: need [N,C,H,W]", op, sx);
    NCMI_CHECK(k >= 1 && s >= 1 && p >= 0 && 2 * p <= k,
               "%s: kernel %d, stride %d, padding %d (padding must be at most kernel/2)", op, k, s, p);
    int H = x->shape[2], W = x->shape[3];
    NCMI_CHECK(H + 2 * p >= k && W + 2 * p >= k, "%s: x %s smaller than kernel %d", op, sx, k);
    *Ho = (H + 2 * p - k) / s + 1;
    *Wo = (W + 2 * p - k) / s + 1;
}

/* ------------------------------------------------------------------------ */
/* maxpool2d: iparam 0 kernel, 1 stride, 2 padding; aux int32 argmax [N,C,Ho,Wo] */

static void maxpool2d_backward(nn_tensor *out)
{
    nn_tensor *x = out->src[0];
    if (!nn_op_needs_grad(out, 0)) return;
    int HW = x->shape[2] * x->shape[3];
    int P = out->shape[2] * out->shape[3];
    long planes = (long)out->shape[0] * out->shape[1];
    const int32_t *arg = out->aux;
    float *dx = nn_tensor_grad(x);
    const float *dy = out->grad;
    if (NN_ON_GPU(out)) {
        nn_cuda_maxpool2d_bwd(dy, arg, dx, (size_t)planes, x->shape[2], x->shape[3], out->shape[2],
                              out->shape[3], out->iparam[0], out->iparam[1], out->iparam[2]);
        return;
    }
#pragma omp parallel for schedule(static)
    for (long pl = 0; pl < planes; pl++) {
        float *dxp = dx + (size_t)pl * HW;
        const float *dyp = dy + (size_t)pl * P;
        const int32_t *ap = arg + (size_t)pl * P;
        for (int q = 0; q < P; q++) dxp[ap[q]] += dyp[q];
    }
}

nn_tensor *nn_maxpool2d(nn_graph *g, nn_tensor *x, int kernel, int stride, int padding)
{
    int Ho, Wo;
    pool_out_shape("maxpool2d", x, kernel, stride, padding, &Ho, &Wo);
    int N = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
    int shape[4] = {N, C, Ho, Wo};
    nn_tensor *out = nn_op_output(g, "maxpool2d", 4, shape, maxpool2d_backward, 1, &x);
    out->bwd_reads = NN_BWD_NONE; /* aux: the argmax */
    out->iparam[0] = kernel;
    out->iparam[1] = stride;
    out->iparam[2] = padding;
    long planes = (long)N * C;
    if (NN_ON_GPU(out)) {
        /* the argmax stays on the device for the backward (aux_cuda) */
        int32_t *darg = out->backward ? nn_cuda_alloc(out->numel * sizeof(int32_t)) : NULL;
        nn_cuda_maxpool2d_fwd(x->data, out->data, darg, (size_t)planes, H, W, Ho, Wo, kernel, stride,
                              padding);
        out->aux = darg;
        out->aux_cuda = 1;
        return out;
    }
    int32_t *arg = malloc((out->numel ? out->numel : 1) * sizeof(int32_t));
    NCMI_CHECK(arg != NULL, "maxpool2d: out of memory");
#pragma omp parallel for schedule(static)
    for (long pl = 0; pl < planes; pl++) {
        const float *xp = x->data + (size_t)pl * H * W;
        float *op = out->data + (size_t)pl * Ho * Wo;
        int32_t *ap = arg + (size_t)pl * Ho * Wo;
        for (int oh = 0; oh < Ho; oh++) {
            int h0 = oh * stride - padding, h1 = h0 + kernel;
            if (h0 < 0) h0 = 0;
            if (h1 > H) h1 = H;
            for (int ow = 0; ow < Wo; ow++) {
                int w0 = ow * stride - padding, w1 = w0 + kernel;
                if (w0 < 0) w0 = 0;
                if (w1 > W) w1 = W;
                float m = -INFINITY;
                int32_t am = h0 * W + w0;
                for (int ih = h0; ih < h1; ih++) {
                    const float *xr = xp + ih * W;
                    for (int iw = w0; iw < w1; iw++) {
                        float v = xr[iw];
                        if (v > m || v != v) { /* first maximum; NaN propagates, as torch */
                            m = v;
                            am = ih * W + iw;
                        }
                    }
                }
                op[oh * Wo + ow] = m;
                ap[oh * Wo + ow] = am;
            }
        }
    }
    if (out->backward) {
        out->aux = arg;
    } else {
        free(arg);
    }
    return out;
}

/* ------------------------------------------------------------------------ */
/* avgpool2d: iparam 0 kernel, 1 stride, 2 padding */

static void avgpool2d_backward(nn_tensor *out)
{
    nn_tensor *x = out->src[0];
    if (!nn_op_needs_grad(out, 0)) return;
    int k = out->iparam[0], s = out->iparam[1], p = out->iparam[2];
    int H = x->shape[2], W = x->shape[3], Ho = out->shape[2], Wo = out->shape[3];
    long planes = (long)out->shape[0] * out->shape[1];
    float inv = 1.f / (float)(k * k);
    float *dx = nn_tensor_grad(x);
    if (NN_ON_GPU(out)) {
        nn_cuda_avgpool2d_bwd(out->grad, dx, (size_t)planes, H, W, Ho, Wo, k, s, p);
        return;
    }
#pragma omp parallel for schedule(static)
    for (long pl = 0; pl < planes; pl++) {
        float *dxp = dx + (size_t)pl * H * W;
        const float *dyp = out->grad + (size_t)pl * Ho * Wo;
        for (int oh = 0; oh < Ho; oh++) {
            int h0 = oh * s - p, h1 = h0 + k;
            if (h0 < 0) h0 = 0;
            if (h1 > H) h1 = H;
            for (int ow = 0; ow < Wo; ow++) {
                int w0 = ow * s - p, w1 = w0 + k;
                if (w0 < 0) w0 = 0;
                if (w1 > W) w1 = W;
                float d = dyp[oh * Wo + ow] * inv;
                for (int ih = h0; ih < h1; ih++)
                    for (int iw = w0; iw < w1; iw++) dxp[ih * W + iw] += d;
            }
        }
    }
}

nn_tensor *nn_avgpool2d(nn_graph *g, nn_tensor *x, int kernel, int stride, int padding)
{
    int Ho, Wo;
    pool_out_shape("avgpool2d", x, kernel, stride, padding, &Ho, &Wo);
    int N = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
    int shape[4] = {N, C, Ho, Wo};
    nn_tensor *out = nn_op_output(g, "avgpool2d", 4, shape, avgpool2d_backward, 1, &x);
    out->bwd_reads = NN_BWD_NONE;
    out->iparam[0] = kernel;
    out->iparam[1] = stride;
    out->iparam[2] = padding;
    float inv = 1.f / (float)(kernel * kernel);
    long planes = (long)N * C;
    if (NN_ON_GPU(out)) {
        nn_cuda_avgpool2d_fwd(x->data, out->data, (size_t)planes, H, W, Ho, Wo, kernel, stride, padding);
        return out;
    }
#pragma omp parallel for schedule(static)
    for (long pl = 0; pl < planes; pl++) {
        const float *xp = x->data + (size_t)pl * H * W;
        float *op = out->data + (size_t)pl * Ho * Wo;
        for (int oh = 0; oh < Ho; oh++) {
            int h0 = oh * stride - padding, h1 = h0 + kernel;
            if (h0 < 0) h0 = 0;
            if (h1 > H) h1 = H;
            for (int ow = 0; ow < Wo; ow++) {
                int w0 = ow * stride - padding, w1 = w0 + kernel;
                if (w0 < 0) w0 = 0;
                if (w1 > W) w1 = W;
                float acc = 0.f;
                for (int ih = h0; ih < h1; ih++)
                    for (int iw = w0; iw < w1; iw++) acc += xp[ih * W + iw];
                op[oh * Wo + ow] = acc * inv;
            }
        }
    }
    return out;
}

/* ------------------------------------------------------------------------ */
/* global_avgpool: [N,C,H,W] -> [N,C] */

static void global_avgpool_backward(nn_tensor *out)
{
    nn_tensor *x = out->src[0];
    if (!nn_op_needs_grad(out, 0)) return;
    size_t HW = (size_t)x->shape[2] * x->shape[3];
    long planes = (long)out->numel;
    float inv = 1.f / (float)HW;
    float *dx = nn_tensor_grad(x);
    if (NN_ON_GPU(out)) {
        nn_cuda_global_avgpool_bwd(out->grad, dx, (size_t)planes, HW);
        return;
    }
#pragma omp parallel for schedule(static)
    for (long pl = 0; pl < planes; pl++) {
        float d = out->grad[pl] * inv;
        float *dxp = dx + (size_t)pl * HW;
        for (size_t i = 0; i < HW; i++) dxp[i] += d;
    }
}

nn_tensor *nn_global_avgpool(nn_graph *g, nn_tensor *x)
{
    char sx[64];
    nn_shape_str(x->ndim, x->shape, sx, sizeof sx);
    NCMI_CHECK(x->ndim == 4 && x->shape[2] * x->shape[3] > 0,
               "global_avgpool: x %s: need [N,C,H,W] with H*W > 0", sx);
    size_t HW = (size_t)x->shape[2] * x->shape[3];
    int shape[2] = {x->shape[0], x->shape[1]};
    nn_tensor *out = nn_op_output(g, "global_avgpool", 2, shape, global_avgpool_backward, 1, &x);
    out->bwd_reads = NN_BWD_NONE;
    long planes = (long)out->numel;
    if (NN_ON_GPU(out)) {
        nn_cuda_global_avgpool_fwd(x->data, out->data, (size_t)planes, HW);
        return out;
    }
#pragma omp parallel for schedule(static)
    for (long pl = 0; pl < planes; pl++) {
        const float *xp = x->data + (size_t)pl * HW;
        float acc = 0.f;
        for (size_t i = 0; i < HW; i++) acc += xp[i];
        out->data[pl] = acc / (float)HW;
    }
    return out;
}
