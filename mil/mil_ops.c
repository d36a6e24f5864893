/* The MIL heads' own ops (mil/mil_ops.h): CPU references, and on the GPU
 * their CUDA twins (nn/cuda/mil.cu) or cuBLAS / nn/cuda kernels. The
 * TransMIL ops are documented in mil/transmil.c (why they exist: memory);
 * ASMIL's in mil/asmil.c. */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../nn/cuda.h"
#include "../nn/cuda/k_linear.h"
#include "../nn/cuda/k_mil.h"
#include "../nn/cuda/k_reduce.h"
#include "../nn/cuda/k_shape.h"
#include "../nn/error.h"
#include "../nn/ops.h"
#include "../nn/ops_internal.h"
#include "mil_ops.h"

/* ---- ASMIL: the anchor's normalised sigmoid, the EMA update ---- */

nn_tensor *mil_sigmax(nn_graph *g, nn_tensor *x, float inv_t, float eps)
{
    NCMI_CHECK(x->ndim == 2, "mil_sigmax: x [rows, D] expected");
    const int R = x->shape[0], N = x->shape[1];
    nn_tensor *P = nn_op_output(g, "mil_sigmax", 2, x->shape, NULL, 1, &x);
    if (NN_ON_GPU(P)) {
        nn_cuda_mil_sigmax(P->data, x->data, (size_t)R, N, inv_t, eps);
        return P;
    }
    for (int r = 0; r < R; r++) {
        const float *xr = x->data + (size_t)r * N;
        float *y = P->data + (size_t)r * N;
        double sum = 0;
        for (int n = 0; n < N; n++) {
            float sg = 1.f / (1.f + expf(-xr[n] * inv_t));
            y[n] = sg;
            sum += sg;
        }
        float inv = (float)(1.0 / (sum + eps));
        for (int n = 0; n < N; n++) y[n] *= inv;
    }
    return P;
}

void mil_ema_update(nn_tensor *dst, const nn_tensor *src, float decay)
{
    NCMI_CHECK(dst->numel == src->numel && dst->device == src->device,
               "mil_ema_update: %s and %s differ in size or device", dst->name, src->name);
    if (NN_ON_GPU(dst)) {
        nn_cuda_mil_ema(dst->data, src->data, decay, dst->numel);
        return;
    }
    float *a = dst->data;
    const float *x = src->data;
    for (size_t j = 0; j < dst->numel; j++) a[j] = decay * a[j] + (1.f - decay) * x[j];
}

/* ---- TransMIL ---- */

nn_tensor *mil_diag_const(nn_graph *g, nn_device dev, int m, float v)
{
    int shape[2] = {m, m};
    nn_tensor *t = nn_tensor_new_on(g, dev, 2, shape); /* zeroed */
    if (m <= 0) return t;
#if NCMI_HAVE_CUDA /* a CPU-only build has no tensor on the GPU (and no such kernels to link) */
    if (dev != NN_DEVICE_CPU) { /* t[0, 0] = v, then t[i, i] = t[0, 0] for i >= 1 (reads never overlap writes) */
        nn_cuda_fill(t->data, v, 1);
        if (m > 1)
            nn_cuda_block_copy(t->data + (size_t)m + 1, (size_t)m + 1, 0, t->data, 0, 0, (size_t)m - 1, 1, 0);
        return t;
    }
#endif
    for (int i = 0; i < m; i++) t->data[(size_t)i * m + i] = v;
    return t;
}

static void softmax_abt_backward(nn_tensor *out)
{
    nn_tensor *a = out->src[0], *b = out->src[1];
    const int h = a->shape[0], n = a->shape[1], k = a->shape[2], m = b->shape[1];
    const float scale = out->fparam[0];
    const size_t nm = (size_t)n * m;
    if (NN_ON_GPU(out)) { /* dL = scale S * (dS - rowsum(dS * S)), then two batched GEMMs */
        float *dl = nn_cuda_alloc((size_t)h * nm * sizeof(float));
        nn_cuda_memset0(dl, (size_t)h * nm * sizeof(float));
        nn_cuda_softmax_bwd(dl, out->data, out->grad, (size_t)h * n, m);
        /* the scale as the GEMMs' alpha (as the CPU's sgemm), not a pass over dL */
        if (nn_op_needs_grad(out, 0)) /* da [n, k] += scale dL [n, m] b [m, k] */
            nn_cuda_gemm_batched_alpha(0, 0, n, k, m, scale, dl, nm, b->data, (size_t)m * k, 1.f,
                                       nn_tensor_grad(a), (size_t)n * k, h);
        if (nn_op_needs_grad(out, 1)) /* db [m, k] += scale dL^T [m, n] a [n, k] */
            nn_cuda_gemm_batched_alpha(1, 0, m, k, n, scale, dl, nm, a->data, (size_t)n * k, 1.f,
                                       nn_tensor_grad(b), (size_t)m * k, h);
        nn_cuda_free(dl); /* after the queued GEMMs: stream-ordered reuse */
        return;
    }
    float *dl = malloc((nm ? nm : 1) * sizeof *dl);
    NCMI_CHECK(dl != NULL, "transmil: out of memory (%zu floats)", nm);
    float *ga = nn_op_needs_grad(out, 0) ? nn_tensor_grad(a) : NULL;
    float *gb = nn_op_needs_grad(out, 1) ? nn_tensor_grad(b) : NULL;
    for (int hh = 0; hh < h; hh++) {
        const float *S = out->data + (size_t)hh * nm, *dS = out->grad + (size_t)hh * nm;
#pragma omp parallel for if (nm >= 65536)
        for (int r = 0; r < n; r++) {
            const float *sr = S + (size_t)r * m, *gr = dS + (size_t)r * m;
            double dot = 0;
            for (int j = 0; j < m; j++) dot += (double)gr[j] * sr[j];
            float *dr = dl + (size_t)r * m;
            for (int j = 0; j < m; j++) dr[j] = sr[j] * (gr[j] - (float)dot);
        }
        const float *ah = a->data + (size_t)hh * n * k, *bh = b->data + (size_t)hh * m * k;
        if (ga)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, k, m, scale, dl, m, bh, k, 1.f,
                        ga + (size_t)hh * n * k, k);
        if (gb)
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, m, k, n, scale, dl, m, ah, k, 1.f,
                        gb + (size_t)hh * m * k, k);
    }
    free(dl);
}


nn_tensor *mil_softmax_abt(nn_graph *g, nn_tensor *a, nn_tensor *b, float scale)
{
    NCMI_CHECK(a->ndim == 3 && b->ndim == 3 && a->shape[0] == b->shape[0] && a->shape[2] == b->shape[2],
               "mil_softmax_abt: a [h, n, k] and b [h, m, k] expected");
    const int h = a->shape[0], n = a->shape[1], k = a->shape[2], m = b->shape[1];
    int shape[3] = {h, n, m};
    nn_tensor *src[2] = {a, b};
    nn_tensor *out = nn_op_output(g, "transmil_softmax_abt", 3, shape, softmax_abt_backward, 2, src);
    out->bwd_reads = NN_BWD_OUT | NN_BWD_SRC(0) | NN_BWD_SRC(1);
    out->fparam[0] = scale;
    const size_t nm = (size_t)n * m;
    if (NN_ON_GPU(out)) { /* S = scale a b^T (batched over heads, the scale as alpha), softmax in place */
        nn_cuda_gemm_batched_alpha(0, 1, n, m, k, scale, a->data, (size_t)n * k, b->data, (size_t)m * k, 0.f,
                                   out->data, nm, h);
        nn_cuda_softmax(out->data, out->data, (size_t)h * n, m);
        return out;
    }
    for (int hh = 0; hh < h; hh++) {
        float *S = out->data + (size_t)hh * nm;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, m, k, scale, a->data + (size_t)hh * n * k, k,
                    b->data + (size_t)hh * m * k, k, 0.f, S, m);
#pragma omp parallel for if (nm >= 65536)
        for (int r = 0; r < n; r++) { /* as nn_softmax: max shift, float exp, double sum */
            float *sr = S + (size_t)r * m, mx = sr[0];
            for (int j = 1; j < m; j++)
                if (sr[j] > mx) mx = sr[j];
            double sum = 0;
            for (int j = 0; j < m; j++) {
                sr[j] = expf(sr[j] - mx);
                sum += sr[j];
            }
            const float inv = (float)(1.0 / sum);
            for (int j = 0; j < m; j++) sr[j] *= inv;
        }
    }
    return out;
}


static void qkv_heads_backward(nn_tensor *out)
{
    nn_tensor *x = out->src[0];
    const int h = out->shape[0], np = out->shape[1], dh = out->shape[2], part = out->iparam[0];
    const int w = x->shape[1];
    float *gx = nn_tensor_grad(x);
    if (NN_ON_GPU(out)) { /* one permutation kernel for all heads: gx[r, (part h + hh) dh + c] += go[hh, r, c] */
        const int os[4] = {1, h, np, dh};
        const size_t ost[4] = {0, (size_t)dh, (size_t)w, 1};
        nn_cuda_transpose_bwd(out->grad, gx + (size_t)part * h * dh, os, ost, out->numel);
        return;
    }
#pragma omp parallel for if ((size_t)np * h * dh >= 65536)
    for (int r = 0; r < np; r++)
        for (int hh = 0; hh < h; hh++) {
            const float *go = out->grad + ((size_t)hh * np + r) * dh;
            float *gi = gx + (size_t)r * w + (size_t)(part * h + hh) * dh;
            for (int c = 0; c < dh; c++) gi[c] += go[c];
        }
}


nn_tensor *mil_qkv_heads(nn_graph *g, nn_tensor *qkv, int part, int h, int dh)
{
    const int np = qkv->shape[0], w = qkv->shape[1];
    NCMI_CHECK(qkv->ndim == 2 && part >= 0 && part < 3 && (size_t)w >= (size_t)3 * h * dh,
               "mil_qkv_heads: qkv [np, 3 h dh] expected");
    int shape[3] = {h, np, dh};
    nn_tensor *out = nn_op_output(g, "transmil_qkv_heads", 3, shape, qkv_heads_backward, 1, &qkv);
    out->bwd_reads = NN_BWD_NONE;
    out->iparam[0] = part;
    if (NN_ON_GPU(out)) { /* one permutation kernel for all heads: out[hh, r, c] = qkv[r, (part h + hh) dh + c] */
        const int os[4] = {1, h, np, dh};
        const size_t ost[4] = {0, (size_t)dh, (size_t)w, 1};
        nn_cuda_transpose_fwd(qkv->data + (size_t)part * h * dh, out->data, os, ost, out->numel);
        return out;
    }
#pragma omp parallel for if ((size_t)np * h * dh >= 65536)
    for (int r = 0; r < np; r++)
        for (int hh = 0; hh < h; hh++)
            memcpy(out->data + ((size_t)hh * np + r) * dh, qkv->data + (size_t)r * w + (size_t)(part * h + hh) * dh,
                   (size_t)dh * sizeof(float));
    return out;
}


static void seq_conv_backward(nn_tensor *out)
{
    nn_tensor *v = out->src[0], *w = out->src[1];
    const int h = v->shape[0], np = v->shape[1], dh = v->shape[2], K = w->shape[2], P = K / 2;
    float *gv = nn_op_needs_grad(out, 0) ? nn_tensor_grad(v) : NULL;
    float *gw = nn_op_needs_grad(out, 1) ? nn_tensor_grad(w) : NULL;
    if (NN_ON_GPU(out)) {
        if (gv) nn_cuda_mil_seq_conv_bwd_v(gv, out->grad, w->data, h, np, dh, K);
        if (gw) nn_cuda_mil_seq_conv_bwd_w(gw, out->grad, v->data, h, np, dh, K);
        return;
    }
#pragma omp parallel for if ((size_t)h * np * dh >= 65536)
    for (int c = 0; c < h; c++) {
        const float *wc = w->data + (size_t)c * K, *vc = v->data + (size_t)c * np * dh;
        const float *go = out->grad + (size_t)c * np * dh;
        for (int t = 0; t < K; t++) {
            const int lo = P - t > 0 ? P - t : 0, hi = np + P - t < np ? np + P - t : np;
            double acc = 0;
            for (int i = lo; i < hi; i++) {
                const float *gr = go + (size_t)i * dh, *vr = vc + (size_t)(i + t - P) * dh;
                if (gv) {
                    float *gvr = gv + (size_t)c * np * dh + (size_t)(i + t - P) * dh;
                    for (int j = 0; j < dh; j++) gvr[j] += wc[t] * gr[j];
                }
                if (gw)
                    for (int j = 0; j < dh; j++) acc += (double)gr[j] * vr[j];
            }
            if (gw) gw[(size_t)c * K + t] += (float)acc;
        }
    }
}


nn_tensor *mil_seq_conv(nn_graph *g, nn_tensor *v, nn_tensor *w)
{
    const int h = v->shape[0], np = v->shape[1], dh = v->shape[2], K = w->shape[2], P = K / 2;
    NCMI_CHECK(v->ndim == 3 && w->ndim == 4 && w->shape[0] == h && w->shape[1] == 1 && w->shape[3] == 1 &&
                   K % 2 == 1,
               "mil_seq_conv: v [h, np, dh] and w [h, 1, K odd, 1] expected");
    nn_tensor *src[2] = {v, w};
    nn_tensor *out = nn_op_output(g, "transmil_seq_conv", 3, v->shape, seq_conv_backward, 2, src);
    out->bwd_reads = NN_BWD_SRC(0) | NN_BWD_SRC(1); /* v, w */
    if (NN_ON_GPU(out)) {
        nn_cuda_mil_seq_conv_fwd(out->data, v->data, w->data, h, np, dh, K);
        return out;
    }
#pragma omp parallel for if ((size_t)h * np * dh >= 65536)
    for (int c = 0; c < h; c++) {
        const float *wc = w->data + (size_t)c * K, *vc = v->data + (size_t)c * np * dh;
        float *oc = out->data + (size_t)c * np * dh;
        for (int i = 0; i < np; i++) {
            float *orow = oc + (size_t)i * dh;
            const int lo = P - i > 0 ? P - i : 0, hi = np + P - i < K ? np + P - i : K;
            for (int t = lo; t < hi; t++) {
                const float *vr = vc + (size_t)(i + t - P) * dh;
                for (int j = 0; j < dh; j++) orow[j] += wc[t] * vr[j];
            }
        }
    }
    return out;
}


static void add_merge_backward(nn_tensor *out)
{
    nn_tensor *a = out->src[0], *b = out->src[1];
    const int h = a->shape[0], np = a->shape[1], dh = a->shape[2];
    float *ga = nn_op_needs_grad(out, 0) ? nn_tensor_grad(a) : NULL;
    float *gb = nn_op_needs_grad(out, 1) ? nn_tensor_grad(b) : NULL;
    if (NN_ON_GPU(out)) { /* g[hh, r, c] += go[r, hh dh + c]: go [np, h, dh] permuted, one kernel per input */
        const int os[4] = {1, np, h, dh};
        const size_t ost[4] = {0, (size_t)dh, (size_t)np * dh, 1};
        if (ga) nn_cuda_transpose_bwd(out->grad, ga, os, ost, out->numel);
        if (gb) nn_cuda_transpose_bwd(out->grad, gb, os, ost, out->numel);
        return;
    }
#pragma omp parallel for if ((size_t)np * h * dh >= 65536)
    for (int r = 0; r < np; r++)
        for (int hh = 0; hh < h; hh++) {
            const float *go = out->grad + (size_t)r * h * dh + (size_t)hh * dh;
            const size_t o = ((size_t)hh * np + r) * dh;
            if (ga)
                for (int c = 0; c < dh; c++) ga[o + c] += go[c];
            if (gb)
                for (int c = 0; c < dh; c++) gb[o + c] += go[c];
        }
}


nn_tensor *mil_add_merge_heads(nn_graph *g, nn_tensor *a, nn_tensor *b)
{
    const int h = a->shape[0], np = a->shape[1], dh = a->shape[2];
    int s2[2] = {np, h * dh};
    NCMI_CHECK(a->ndim == 3 && nn_tensor_same_shape(a, b), "mil_add_merge_heads: a, b [h, np, dh] expected");
    nn_tensor *src[2] = {a, b};
    nn_tensor *out = nn_op_output(g, "transmil_add_merge_heads", 2, s2, add_merge_backward, 2, src);
    out->bwd_reads = NN_BWD_NONE;
    if (NN_ON_GPU(out)) { /* out[r, hh dh + c] = a[hh, r, c], then += b[hh, r, c] (= a + b, as the CPU) */
        const int os_out[4] = {1, np, h, dh}, os_in[4] = {1, h, np, dh};
        const size_t st_in[4] = {0, (size_t)dh, (size_t)np * dh, 1}, st_out[4] = {0, (size_t)dh, (size_t)h * dh, 1};
        nn_cuda_transpose_fwd(a->data, out->data, os_out, st_in, out->numel);
        nn_cuda_transpose_bwd(b->data, out->data, os_in, st_out, out->numel);
        return out;
    }
#pragma omp parallel for if ((size_t)np * h * dh >= 65536)
    for (int r = 0; r < np; r++)
        for (int hh = 0; hh < h; hh++) {
            float *o = out->data + (size_t)r * h * dh + (size_t)hh * dh;
            const float *pa = a->data + ((size_t)hh * np + r) * dh, *pb = b->data + ((size_t)hh * np + r) * dh;
            for (int c = 0; c < dh; c++) o[c] = pa[c] + pb[c];
        }
    return out;
}


static void ppeg_conv_backward(nn_tensor *out)
{
    nn_tensor *acc = out->src[0], *x = out->src[1], *w = out->src[2], *b = out->src[3];
    const int d = x->shape[1], S = out->iparam[0], K = w->shape[2], P = K / 2;
    const float *go = out->grad;
    if (NN_ON_GPU(out)) {
        if (nn_op_needs_grad(out, 0)) nn_cuda_axpy(nn_tensor_grad(acc), go, 1.f, out->numel);
        if (nn_op_needs_grad(out, 1)) nn_cuda_mil_ppeg_bwd_x(nn_tensor_grad(x), go, w->data, S, d, K);
        float *gw = nn_op_needs_grad(out, 2) ? nn_tensor_grad(w) : NULL;
        float *gb = nn_op_needs_grad(out, 3) ? nn_tensor_grad(b) : NULL;
        if (gw || gb) nn_cuda_mil_ppeg_bwd_wb(gw, gb, go, x->data, S, d, K);
        return;
    }
    if (nn_op_needs_grad(out, 0)) {
        float *ga = nn_tensor_grad(acc);
        for (size_t i = 0; i < out->numel; i++) ga[i] += go[i];
    }
    if (nn_op_needs_grad(out, 1)) { /* dx[p, q] = sum_uv w[u, v] go[p - u + P, q - v + P] */
        float *gx = nn_tensor_grad(x);
#pragma omp parallel for if ((size_t)S * S * d >= 65536)
        for (int p = 0; p < S; p++)
            for (int q = 0; q < S; q++) {
                float *gr = gx + (size_t)(1 + p * S + q) * d;
                for (int u = 0; u < K; u++) {
                    const int i = p - u + P;
                    if (i < 0 || i >= S) continue;
                    for (int v = 0; v < K; v++) {
                        const int j = q - v + P;
                        if (j < 0 || j >= S) continue;
                        const float *gor = go + (size_t)(1 + i * S + j) * d;
                        const float *wc = w->data + (size_t)u * K + v;
                        for (int c = 0; c < d; c++) gr[c] += wc[(size_t)c * K * K] * gor[c];
                    }
                }
            }
    }
    const int need_w = nn_op_needs_grad(out, 2), need_b = nn_op_needs_grad(out, 3);
    if (!need_w && !need_b) return;
    /* dw[c, u, v] = sum_ij go[i, j, c] x[i + u - P, j + v - P, c], db[c] = sum_ij go[i, j, c]:
       per channel, in double */
    float *gw = need_w ? nn_tensor_grad(w) : NULL, *gb = need_b ? nn_tensor_grad(b) : NULL;
#pragma omp parallel for if ((size_t)S * S * d >= 65536)
    for (int c = 0; c < d; c++) {
        double sb = 0, sw[64];
        for (int t = 0; t < K * K; t++) sw[t] = 0;
        for (int i = 0; i < S; i++)
            for (int j = 0; j < S; j++) {
                const double gv = go[(size_t)(1 + i * S + j) * d + c];
                sb += gv;
                if (!gw) continue;
                for (int u = 0; u < K; u++) {
                    const int p = i + u - P;
                    if (p < 0 || p >= S) continue;
                    for (int v = 0; v < K; v++) {
                        const int q = j + v - P;
                        if (q >= 0 && q < S) sw[u * K + v] += gv * x->data[(size_t)(1 + p * S + q) * d + c];
                    }
                }
            }
        if (gb) gb[c] += (float)sb;
        if (gw)
            for (int t = 0; t < K * K; t++) gw[(size_t)c * K * K + t] += (float)sw[t];
    }
}


nn_tensor *mil_ppeg_conv_add(nn_graph *g, nn_tensor *acc, nn_tensor *x, nn_tensor *w, nn_tensor *b, int S)
{
    NCMI_CHECK(x->ndim == 2 && nn_tensor_same_shape(acc, x) && (size_t)x->shape[0] == 1 + (size_t)S * S &&
                   w->ndim == 4 && w->shape[0] == x->shape[1] && w->shape[1] == 1 && w->shape[2] == w->shape[3] &&
                   b != NULL && (int)b->numel == x->shape[1],
               "mil_ppeg_conv_add: x [1 + S*S, d], w [d, 1, K, K], b [d] expected");
    const int d = x->shape[1], K = w->shape[2], P = K / 2;
    NCMI_CHECK(K % 2 == 1 && K * K <= 64, "transmil: PPEG kernel %d", K);
    nn_tensor *src[4] = {acc, x, w, b};
    nn_tensor *out = nn_op_output(g, "transmil_ppeg_conv", 2, x->shape, ppeg_conv_backward, 4, src);
    out->bwd_reads = NN_BWD_SRC(1) | NN_BWD_SRC(2); /* x, w */
    out->iparam[0] = S;
    if (NN_ON_GPU(out)) {
        nn_cuda_mil_ppeg_fwd(out->data, acc->data, x->data, w->data, b->data, S, d, K);
        return out;
    }
    float *wt = malloc((size_t)K * K * d * sizeof *wt); /* [u][v][c]: contiguous over channels */
    NCMI_CHECK(wt != NULL, "transmil: out of memory");
    for (int c = 0; c < d; c++)
        for (int t = 0; t < K * K; t++) wt[(size_t)t * d + c] = w->data[(size_t)c * K * K + t];
    memcpy(out->data, acc->data, (size_t)d * sizeof(float)); /* the class token */
#pragma omp parallel for if ((size_t)S * S * d >= 65536)
    for (int i = 0; i < S; i++)
        for (int j = 0; j < S; j++) {
            const size_t r = (size_t)(1 + i * S + j) * d;
            float *o = out->data + r;
            const float *a = acc->data + r;
            for (int c = 0; c < d; c++) o[c] = a[c] + b->data[c];
            for (int u = 0; u < K; u++) {
                const int p = i + u - P;
                if (p < 0 || p >= S) continue;
                for (int v = 0; v < K; v++) {
                    const int q = j + v - P;
                    if (q < 0 || q >= S) continue;
                    const float *xr = x->data + (size_t)(1 + p * S + q) * d, *wr = wt + (size_t)(u * K + v) * d;
                    // NOLINTNEXTLINE(clang-analyzer-core.UndefinedBinaryOperatorResult): false positive, wt holds K*K*d weights filled above
                    for (int c = 0; c < d; c++) o[c] += wr[c] * xr[c];
                }
            }
        }
    free(wt);
    return out;
}

