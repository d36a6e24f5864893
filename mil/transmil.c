/* TransMIL (Shao et al. 2021): the official szc19990412/TransMIL model with
 * lucidrains/nystrom-attention's NystromAttention, forward only over nn/ops.h
 * (autograd gives the backward). Specification: docs/mil-heads.md (shared).
 *
 *   h  = ReLU(_fc1(H))                                     [N, d]
 *   square: H = W = ceil(sqrt N), h extended by its first rows to H*W rows
 *   t  = [cls_token; h]                                    [n = H*W + 1, d]
 *   t  = layer1(t); t = PPEG(t); t = layer2(t)
 *   z  = norm(t)[0]                                        [1, d]
 *   layer(t) = t + NystromAttention(LayerNorm(t))  (no feed-forward)
 *   PPEG: feature tokens as a d x H x W image, x + DW7(x) + DW5(x) + DW3(x)
 *         (depthwise, same padding, bias); the class token passes through.
 *
 * NystromAttention (heads 8, dim_head d/8, m landmarks, no mask):
 *   front zero padding of the LayerNorm output to a multiple of m rows (also
 *   when n < m: then every padded row is its own landmark); q, k, v =
 *   to_qkv(x) (no bias, so pad rows give zeros); q *= dim_head^-1/2;
 *   landmarks q_l, k_l = means of l = ceil(n/m) consecutive rows (pad rows
 *   included); attn1 = softmax(q k_l^T), attn2 = softmax(q_l k_l^T),
 *   attn3 = softmax(q_l k^T); attn2^+ by the iterative Moore-Penrose scheme
 *   (z0 = attn2^T / (max row sum * max column sum), the maxima taken over all
 *   heads together: one global scale), out = attn1 (attn2^+ (attn3 v))
 *   + res_conv(v), heads merged, to_out (Linear + Dropout), and the output
 *   slice: the LAST n rows (nystrom-attention >= 0.0.10), or the FIRST n rows
 *   with transmil_legacy_slice (0.0.9, pinned by the official repository:
 *   tokens misaligned by the padding).
 *
 * Choices that differ from the PyTorch code only by rounding:
 *   - attn1 (attn2^+ (attn3 v)) instead of (attn1 attn2^+)(attn3 v): the
 *     same product, h n m d instead of h n m^2 multiply-adds (4x fewer at the
 *     official sizes);
 *   - |attn2| is attn2 (softmax outputs are >= 0), so no abs op.
 *   - q's scale dim_head^-1/2 is applied inside the three softmax(a b^T)
 *     ops (the landmark means commute with it).
 *
 * Memory (CPU): every op output stays in the graph until it is reset, so
 * the big intermediates are made by a few ops of this file (nn_op_output,
 * hand-written backward, checked by the golden and finite-difference tests)
 * instead of chains of nn/ops: softmax(scale a b^T) without the logits and
 * the transposed copies, q/k/v read per head straight from to_qkv's output,
 * the residual conv (Conv2d(heads, heads, (33,1), padding (16,0), groups =
 * heads, no bias)) as a 1-D depthwise conv over the sequence, its sum with
 * the attention output written with the heads merged, and PPEG's three
 * depthwise convs on the token grid itself (channels last, no transposes).
 * Tensors on the GPU take the composed nn/ops path (nn_conv2d with square
 * padding 16 and the extra columns sliced off for the residual conv).
 *
 * Attention kept for heatmaps (mil_last_attention, k = 1): in layer 2, the
 * row of the effective Nystrom attention attn1 attn2^+ attn3 whose output is
 * added to the class token (padded row `pad`, or row 0 with the legacy
 * slice), at the key columns of the N instances (padded rows pad+1..pad+N;
 * the repeated square-filling tokens are not counted), averaged over heads.
 *
 * Options (mil_opts): d_feat, d_inner (= dim, divisible by the 8 heads;
 * dim_head = d_inner / 8), transmil_landmarks (<= 0: d_inner / 2, the
 * official num_landmarks = dim // 2; mil_opts_default's 256 is that value for
 * d_inner 512), transmil_pinv_iters (6), transmil_legacy_slice, dropout (the
 * to_out dropout, 0.1; training only, drawn from the rng). */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../nn/error.h"
#include "../nn/ops.h"
#include "../nn/params.h"
#include "mil.h"

#define TM_HEADS 8
#define TM_RES_KERNEL 33

typedef struct tm_layer {
    nn_layernorm_m norm;
    nn_linear_m to_qkv; /* no bias */
    nn_linear_m to_out; /* "to_out.0" */
    nn_tensor *res_conv; /* [heads, 1, 33, 1] */
} tm_layer;

typedef struct transmil {
    mil_head_base base; /* first member (mil.h) */
    nn_params P;
    int d_feat, d, heads, dim_head, landmarks, iters, legacy;
    float dropout;
    nn_linear_m fc1;     /* "_fc1.0" */
    nn_tensor *cls_token; /* [1, 1, d] */
    tm_layer layer[2];
    nn_conv2d_m proj, proj1, proj2; /* "pos_layer.proj*" */
    nn_layernorm_m norm;
} transmil;

/* The attention pieces of one layer's forward (for the stored attention). */
typedef struct tm_attn {
    int pad, n;
    nn_tensor *attn1, *attn2_inv, *attn3; /* [h, np, m], [h, m, m], [h, m, np] */
} tm_attn;

/* Constant [m, m] tensor with v on the diagonal. */
static nn_tensor *diag_const(nn_graph *g, int m, float v)
{
    nn_tensor *t = nn_tensor_new2(g, m, m);
    for (int i = 0; i < m; i++) t->data[(size_t)i * m + i] = v;
    return t;
}

/* Iterative Moore-Penrose pseudo-inverse of x [h, m, m] (nystrom-attention's
 * moore_penrose_iter_pinv; x >= 0 elementwise). */
static nn_tensor *pinv_iter(nn_graph *g, nn_tensor *x, int iters)
{
    const int h = x->shape[0], m = x->shape[1];
    int flat[1] = {h * m};
    nn_tensor *col = nn_reshape(g, nn_sum(g, x, 2, 0), 1, flat); /* row sums */
    nn_tensor *row = nn_reshape(g, nn_sum(g, x, 1, 0), 1, flat); /* column sums */
    nn_tensor *s = nn_mul(g, nn_max(g, col, 0, 1), nn_max(g, row, 0, 1)); /* [1] */
    nn_tensor *z = nn_div(g, nn_transpose(g, x, 1, 2), s);
    if (iters <= 0) return z;
    nn_tensor *I7 = diag_const(g, m, 7.f), *I15 = diag_const(g, m, 15.f),
              *I13 = diag_const(g, m, 13.f);
    for (int it = 0; it < iters; it++) {
        nn_tensor *xz = nn_matmul(g, x, z);
        nn_tensor *a = nn_sub(g, I7, xz);
        nn_tensor *b = nn_sub(g, I15, nn_matmul(g, xz, a));
        nn_tensor *c = nn_sub(g, I13, nn_matmul(g, xz, b));
        z = nn_scale(g, nn_matmul(g, z, c), 0.25f);
    }
    return z;
}

/* ------------------------------------------------------------------ */
/* softmax(scale * a b^T) as one op (CPU)                              */

/* S [h, n, m] = softmax over the last axis of scale * a b^T, a [h, n, k],
 * b [h, m, k]. The composed form (scale, transpose, matmul, softmax) keeps
 * the scaled copy of a, the transposed copy of b and the [h, n, m] logits in
 * the graph until it is reset; this op keeps only S (softmax's backward needs
 * its output) and reads a and b in place: at N = 16000 that is 3 x 128 MiB
 * of logits and 2 x 32 MiB of copies per layer less. Backward:
 * dL = S * (dS - rowsum(dS * S)), da += scale dL b, db += scale dL^T a. */
static void softmax_abt_backward(nn_tensor *out)
{
    nn_tensor *a = out->src[0], *b = out->src[1];
    const int h = a->shape[0], n = a->shape[1], k = a->shape[2], m = b->shape[1];
    const float scale = out->fparam[0];
    const size_t nm = (size_t)n * m;
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

static nn_tensor *softmax_abt(nn_graph *g, nn_tensor *a, nn_tensor *b, float scale)
{
    NCMI_CHECK(a->ndim == 3 && b->ndim == 3 && a->shape[0] == b->shape[0] && a->shape[2] == b->shape[2],
               "transmil: softmax_abt: a [h, n, k] and b [h, m, k] expected");
    if (a->device != NN_DEVICE_CPU || b->device != NN_DEVICE_CPU) /* the composed ops */
        return nn_softmax(g, nn_matmul(g, nn_scale(g, a, scale), nn_transpose(g, b, 1, 2)));
    const int h = a->shape[0], n = a->shape[1], k = a->shape[2], m = b->shape[1];
    int shape[3] = {h, n, m};
    nn_tensor *src[2] = {a, b};
    nn_tensor *out = nn_op_output(g, "transmil_softmax_abt", 3, shape, softmax_abt_backward, 2, src);
    out->fparam[0] = scale;
    const size_t nm = (size_t)n * m;
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

/* Part `part` (0 q, 1 k, 2 v) of qkv [np, 3 h dh] as [h, np, dh], read in
 * place (the composed slice + transpose make two copies). */
static void qkv_heads_backward(nn_tensor *out)
{
    nn_tensor *x = out->src[0];
    const int h = out->shape[0], np = out->shape[1], dh = out->shape[2], part = out->iparam[0];
    const int w = x->shape[1];
    float *gx = nn_tensor_grad(x);
#pragma omp parallel for if ((size_t)np * h * dh >= 65536)
    for (int r = 0; r < np; r++)
        for (int hh = 0; hh < h; hh++) {
            const float *go = out->grad + ((size_t)hh * np + r) * dh;
            float *gi = gx + (size_t)r * w + (size_t)(part * h + hh) * dh;
            for (int c = 0; c < dh; c++) gi[c] += go[c];
        }
}

static nn_tensor *qkv_heads(nn_graph *g, nn_tensor *qkv, int part, int h, int dh)
{
    const int np = qkv->shape[0], w = qkv->shape[1];
    if (qkv->device != NN_DEVICE_CPU) { /* the composed ops */
        int s[3] = {np, h, dh};
        nn_tensor *x = nn_slice(g, qkv, 1, part * h * dh, (part + 1) * h * dh);
        return nn_transpose(g, nn_reshape(g, x, 3, s), 0, 1);
    }
    int shape[3] = {h, np, dh};
    nn_tensor *out = nn_op_output(g, "transmil_qkv_heads", 3, shape, qkv_heads_backward, 1, &qkv);
    out->iparam[0] = part;
#pragma omp parallel for if ((size_t)np * h * dh >= 65536)
    for (int r = 0; r < np; r++)
        for (int hh = 0; hh < h; hh++)
            memcpy(out->data + ((size_t)hh * np + r) * dh, qkv->data + (size_t)r * w + (size_t)(part * h + hh) * dh,
                   (size_t)dh * sizeof(float));
    return out;
}

/* The residual depthwise convolution of v [h, np, dh] over the sequence,
 * kernel w [h, 1, K, 1] (K odd, zero padding K/2, no bias): out[c, i, j] =
 * sum_t w[c, t] v[c, i + t - K/2, j]. One op instead of nn_conv2d with
 * square padding (which computes dh + K - 1 columns, K - 1 of them only
 * padding, then slices them off). */
static void seq_conv_backward(nn_tensor *out)
{
    nn_tensor *v = out->src[0], *w = out->src[1];
    const int h = v->shape[0], np = v->shape[1], dh = v->shape[2], K = w->shape[2], P = K / 2;
    float *gv = nn_op_needs_grad(out, 0) ? nn_tensor_grad(v) : NULL;
    float *gw = nn_op_needs_grad(out, 1) ? nn_tensor_grad(w) : NULL;
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

static nn_tensor *seq_conv(nn_graph *g, nn_tensor *v, nn_tensor *w)
{
    const int h = v->shape[0], np = v->shape[1], dh = v->shape[2], K = w->shape[2], P = K / 2;
    if (v->device != NN_DEVICE_CPU) { /* nn_conv2d with square padding, the extra columns sliced off */
        int s4[4] = {1, h, np, dh}, s3[3] = {h, np, dh};
        nn_tensor *rc = nn_conv2d(g, nn_reshape(g, v, 4, s4), w, NULL, 1, P, 1, h);
        return nn_reshape(g, nn_slice(g, rc, 3, P, P + dh), 3, s3);
    }
    nn_tensor *src[2] = {v, w};
    nn_tensor *out = nn_op_output(g, "transmil_seq_conv", 3, v->shape, seq_conv_backward, 2, src);
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

/* a + b for a, b [h, np, dh], heads merged: [np, h dh] (the composed add,
 * transpose and reshape keep two more [np, h dh] tensors). */
static void add_merge_backward(nn_tensor *out)
{
    nn_tensor *a = out->src[0], *b = out->src[1];
    const int h = a->shape[0], np = a->shape[1], dh = a->shape[2];
    float *ga = nn_op_needs_grad(out, 0) ? nn_tensor_grad(a) : NULL;
    float *gb = nn_op_needs_grad(out, 1) ? nn_tensor_grad(b) : NULL;
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

static nn_tensor *add_merge_heads(nn_graph *g, nn_tensor *a, nn_tensor *b)
{
    const int h = a->shape[0], np = a->shape[1], dh = a->shape[2];
    int s2[2] = {np, h * dh};
    if (a->device != NN_DEVICE_CPU) /* the composed ops */
        return nn_reshape(g, nn_transpose(g, nn_add(g, a, b), 0, 1), 2, s2);
    nn_tensor *src[2] = {a, b};
    nn_tensor *out = nn_op_output(g, "transmil_add_merge_heads", 2, s2, add_merge_backward, 2, src);
#pragma omp parallel for if ((size_t)np * h * dh >= 65536)
    for (int r = 0; r < np; r++)
        for (int hh = 0; hh < h; hh++) {
            float *o = out->data + (size_t)r * h * dh + (size_t)hh * dh;
            const float *pa = a->data + ((size_t)hh * np + r) * dh, *pb = b->data + ((size_t)hh * np + r) * dh;
            for (int c = 0; c < dh; c++) o[c] = pa[c] + pb[c];
        }
    return out;
}

/* Landmarks of x [h, m*l, dh]: means of l consecutive rows -> [h, m, dh]. */
static nn_tensor *landmarks(nn_graph *g, nn_tensor *x, int m, int l)
{
    int s[4] = {x->shape[0], m, l, x->shape[2]};
    nn_tensor *r = nn_sum(g, nn_reshape(g, x, 4, s), 2, 0);
    return l == 1 ? r : nn_scale(g, r, 1.f / (float)l);
}

/* NystromAttention of x [n, d] -> [n, d]. */
static nn_tensor *nystrom(nn_graph *g, const transmil *s, const tm_layer *L, nn_tensor *x,
                          int training, nn_rng *rng, tm_attn *keep)
{
    const int n = x->shape[0], m = s->landmarks, h = s->heads, dh = s->dim_head;
    const int pad = (m - n % m) % m, np = n + pad, l = np / m;
    nn_tensor *xp = pad ? nn_pad_rows(g, x, pad, 0, 0.f) : x;
    nn_tensor *qkv = nn_linear_m_forward(g, &L->to_qkv, xp); /* [np, 3 d] */
    nn_tensor *q = qkv_heads(g, qkv, 0, h, dh), *k = qkv_heads(g, qkv, 1, h, dh), *v = qkv_heads(g, qkv, 2, h, dh);
    /* q * dim_head^-1/2 folded into the softmax ops (landmark means commute with it) */
    const float qs = 1.f / sqrtf((float)dh);
    nn_tensor *ql = landmarks(g, q, m, l), *kl = landmarks(g, k, m, l);
    nn_tensor *attn1 = softmax_abt(g, q, kl, qs);  /* [h,np,m] */
    nn_tensor *attn2 = softmax_abt(g, ql, kl, qs); /* [h,m,m] */
    nn_tensor *attn3 = softmax_abt(g, ql, k, qs);  /* [h,m,np] */
    nn_tensor *inv = pinv_iter(g, attn2, s->iters);
    nn_tensor *out = nn_matmul(g, attn1, nn_matmul(g, inv, nn_matmul(g, attn3, v)));
    /* + the residual depthwise conv over the sequence (kernel (33, 1)), heads merged: [np, inner] */
    out = add_merge_heads(g, out, seq_conv(g, v, L->res_conv));
    out = nn_linear_m_forward(g, &L->to_out, out);
    out = nn_dropout(g, out, s->dropout, training && rng, rng);
    if (pad) out = s->legacy ? nn_slice(g, out, 0, 0, n) : nn_slice(g, out, 0, pad, np);
    if (keep) {
        keep->pad = pad;
        keep->n = n;
        keep->attn1 = attn1;
        keep->attn2_inv = inv;
        keep->attn3 = attn3;
    }
    return out;
}

static nn_tensor *trans_layer(nn_graph *g, const transmil *s, const tm_layer *L, nn_tensor *t,
                              int training, nn_rng *rng, tm_attn *keep)
{
    nn_tensor *u = nn_layernorm_m_forward(g, &L->norm, t);
    return nn_add(g, t, nystrom(g, s, L, u, training, rng, keep));
}

/* out = acc + dwconv_K(x) on the feature tokens of acc, x [1 + S*S, d] (row
 * 0, the class token, is acc's): the S x S token grid is the image, channels
 * last, depthwise kernel w [d, 1, K, K] with bias b [d], zero padding K/2.
 * PPEG is three of them (7, 5, 3) on the same x, so it keeps three token
 * tensors where the composed form (slice, transpose, reshape, conv2d per
 * kernel, adds, transpose back, concat) keeps about ten. */
static void ppeg_conv_backward(nn_tensor *out)
{
    nn_tensor *acc = out->src[0], *x = out->src[1], *w = out->src[2], *b = out->src[3];
    const int d = x->shape[1], S = out->iparam[0], K = w->shape[2], P = K / 2;
    const float *go = out->grad;
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

static nn_tensor *ppeg_conv_add(nn_graph *g, nn_tensor *acc, nn_tensor *x, const nn_conv2d_m *cv, int S)
{
    const int d = x->shape[1], K = cv->weight->shape[2], P = K / 2;
    NCMI_CHECK(K % 2 == 1 && K * K <= 64, "transmil: PPEG kernel %d", K);
    nn_tensor *src[4] = {acc, x, cv->weight, cv->bias};
    nn_tensor *out = nn_op_output(g, "transmil_ppeg_conv", 2, x->shape, ppeg_conv_backward, 4, src);
    out->iparam[0] = S;
    float *wt = malloc((size_t)K * K * d * sizeof *wt); /* [u][v][c]: contiguous over channels */
    NCMI_CHECK(wt != NULL, "transmil: out of memory");
    for (int c = 0; c < d; c++)
        for (int t = 0; t < K * K; t++) wt[(size_t)t * d + c] = cv->weight->data[(size_t)c * K * K + t];
    memcpy(out->data, acc->data, (size_t)d * sizeof(float)); /* the class token */
#pragma omp parallel for if ((size_t)S * S * d >= 65536)
    for (int i = 0; i < S; i++)
        for (int j = 0; j < S; j++) {
            const size_t r = (size_t)(1 + i * S + j) * d;
            float *o = out->data + r;
            const float *a = acc->data + r;
            for (int c = 0; c < d; c++) o[c] = a[c] + cv->bias->data[c];
            for (int u = 0; u < K; u++) {
                const int p = i + u - P;
                if (p < 0 || p >= S) continue;
                for (int v = 0; v < K; v++) {
                    const int q = j + v - P;
                    if (q < 0 || q >= S) continue;
                    const float *xr = x->data + (size_t)(1 + p * S + q) * d, *wr = wt + (size_t)(u * K + v) * d;
                    for (int c = 0; c < d; c++) o[c] += wr[c] * xr[c];
                }
            }
        }
    free(wt);
    return out;
}

/* PPEG on t [1 + S*S, d]. */
static nn_tensor *ppeg(nn_graph *g, const transmil *s, nn_tensor *t, int side)
{
    const int n = t->shape[0], d = s->d;
    if (t->device == NN_DEVICE_CPU)
        return ppeg_conv_add(g, ppeg_conv_add(g, ppeg_conv_add(g, t, t, &s->proj, side), t, &s->proj1, side), t,
                             &s->proj2, side);
    nn_tensor *cls = nn_slice(g, t, 0, 0, 1);
    nn_tensor *feat = nn_slice(g, t, 0, 1, n); /* [S*S, d] */
    int img[4] = {1, d, side, side};
    nn_tensor *cnn = nn_reshape(g, nn_transpose(g, feat, 0, 1), 4, img);
    nn_tensor *y = nn_add(g, nn_conv2d_m_forward(g, &s->proj, cnn), cnn);
    y = nn_add(g, y, nn_conv2d_m_forward(g, &s->proj1, cnn));
    y = nn_add(g, y, nn_conv2d_m_forward(g, &s->proj2, cnn));
    int flat[2] = {d, side * side};
    nn_tensor *tok = nn_transpose(g, nn_reshape(g, y, 2, flat), 0, 1);
    nn_tensor *parts[2] = {cls, tok};
    return nn_concat(g, parts, 2, 0);
}

/* The class token's effective attention to the N instances, averaged over
 * heads, into the model's buffer. */
static void store_attention(tr_model *m, const transmil *s, const tm_attn *a, int N)
{
    const int h = s->heads, M = s->landmarks, np = a->n + a->pad;
    const int r = s->legacy ? 0 : a->pad;
    double *u = malloc((size_t)M * sizeof *u);
    double *acc = calloc((size_t)(N > 0 ? N : 1), sizeof *acc);
    float *out = malloc((size_t)(N > 0 ? N : 1) * sizeof *out);
    NCMI_CHECK(u && acc && out, "transmil: out of memory");
    for (int hh = 0; hh < h; hh++) {
        const float *a1 = a->attn1->data + ((size_t)hh * np + r) * M;
        const float *inv = a->attn2_inv->data + (size_t)hh * M * M;
        const float *a3 = a->attn3->data + (size_t)hh * M * np;
        for (int j = 0; j < M; j++) {
            double sum = 0;
            for (int i = 0; i < M; i++) sum += (double)a1[i] * inv[(size_t)i * M + j];
            u[j] = sum;
        }
        for (int i = 0; i < N; i++) {
            const int col = a->pad + 1 + i;
            double sum = 0;
            for (int j = 0; j < M; j++) sum += u[j] * a3[(size_t)j * np + col];
            acc[i] += sum;
        }
    }
    for (int i = 0; i < N; i++) out[i] = (float)(acc[i] / h);
    mil_store_attention(m, out, N, 1);
    free(u);
    free(acc);
    free(out);
}

static nn_tensor *transmil_forward(tr_model *m, nn_graph *g, nn_tensor *const *in, int n_in,
                                   int training, nn_rng *rng, nn_tensor **aux)
{
    (void)aux;
    transmil *s = m->ctx;
    NCMI_CHECK(n_in == 1, "transmil: one input tensor (the bag) expected, got %d", n_in);
    nn_tensor *x = in[0];
    if (x->ndim == 3 && x->shape[0] == 1) {
        int s2[2] = {x->shape[1], x->shape[2]};
        x = nn_reshape(g, x, 2, s2);
    }
    char sb[64];
    NCMI_CHECK(x->ndim == 2 && x->shape[1] == s->d_feat && x->shape[0] >= 1,
               "transmil: bag %s, expected [N >= 1, %d]", nn_shape_str(x->ndim, x->shape, sb, sizeof sb),
               s->d_feat);
    const int N = x->shape[0];
    int side = (int)ceil(sqrt((double)N));
    while (side * side < N) side++;
    while (side > 1 && (side - 1) * (side - 1) >= N) side--;

    /* inference (no_grad, as ncmi eval and score run it): only the token
     * tensor t lives from one stage to the next, so the intermediates of each
     * stage are freed at its end and the peak is one stage's, not the sum of
     * all (each is O(N): 200,000 patches would otherwise need ~23 GB) */
    const int free_stages = nn_graph_no_grad(g);
    const size_t mark = nn_graph_size(g);
    nn_tensor *h = nn_linear_relu(g, x, s->fc1.weight, s->fc1.bias);
    if (side * side > N) h = nn_repeat_rows(g, h, side * side);
    int cs[2] = {1, s->d};
    nn_tensor *parts[2] = {nn_reshape(g, s->cls_token, 2, cs), h};
    nn_tensor *t = nn_concat(g, parts, 2, 0); /* [1 + S*S, d] */
    if (free_stages) nn_graph_truncate(g, mark, t);
    t = trans_layer(g, s, &s->layer[0], t, training, rng, NULL);
    if (free_stages) nn_graph_truncate(g, mark, t);
    t = ppeg(g, s, t, side);
    if (free_stages) nn_graph_truncate(g, mark, t);
    tm_attn keep;
    t = trans_layer(g, s, &s->layer[1], t, training, rng, &keep);
    nn_tensor *z = nn_layernorm_m_forward(g, &s->norm, nn_slice(g, t, 0, 0, 1)); /* [1, d] */
    store_attention(m, s, &keep, N);
    return z;
}

static void transmil_free(tr_model *m)
{
    transmil *s = m->ctx;
    if (!s) return;
    nn_params_free(&s->P);
    free(s->base.attn);
    free(s);
    m->ctx = NULL;
    m->params = NULL;
}

static void layer_init(tm_layer *L, nn_params *P, const char *prefix, const transmil *s,
                       nn_rng *rng)
{
    char p[64];
    snprintf(p, sizeof p, "%s.norm", prefix);
    nn_layernorm_m_init(&L->norm, P, p, s->d, 1e-5f);
    snprintf(p, sizeof p, "%s.attn.to_qkv", prefix);
    nn_linear_m_init(&L->to_qkv, P, p, s->d, 3 * s->heads * s->dim_head, 0, rng);
    snprintf(p, sizeof p, "%s.attn.to_out.0", prefix);
    nn_linear_m_init(&L->to_out, P, p, s->heads * s->dim_head, s->d, 1, rng);
    snprintf(p, sizeof p, "%s.attn", prefix);
    int rs[4] = {s->heads, 1, TM_RES_KERNEL, 1};
    L->res_conv = nn_params_addf(P, p, "res_conv.weight", NN_PARAM_WEIGHT, 4, rs);
    nn_init_kaiming_uniform(L->res_conv, sqrtf(5.f), rng);
}

int mil_transmil_init(tr_model *m, const mil_opts *o, nn_rng *rng)
{
    memset(m, 0, sizeof *m);
    if (o->d_feat < 1 || o->d_inner < TM_HEADS || o->d_inner % TM_HEADS != 0)
        return ncmi_error_set("transmil: d_feat %d, d_inner %d: need d_feat >= 1 and d_inner a "
                              "positive multiple of the %d heads",
                              o->d_feat, o->d_inner, TM_HEADS);
    int landmarks = o->transmil_landmarks > 0 ? o->transmil_landmarks : o->d_inner / 2;
    if (o->transmil_pinv_iters < 0)
        return ncmi_error_set("transmil: pinv iterations %d < 0", o->transmil_pinv_iters);
    if (!(o->dropout >= 0.f && o->dropout < 1.f))
        return ncmi_error_set("transmil: dropout %g not in [0, 1)", (double)o->dropout);
    transmil *s = calloc(1, sizeof *s);
    if (!s) return ncmi_error_set("out of memory");
    nn_params_init(&s->P);
    s->d_feat = o->d_feat;
    s->d = o->d_inner;
    s->heads = TM_HEADS;
    s->dim_head = o->d_inner / TM_HEADS;
    s->landmarks = landmarks;
    s->iters = o->transmil_pinv_iters;
    s->legacy = o->transmil_legacy_slice != 0;
    s->dropout = o->dropout;

    /* in the official module's construction order */
    const int d = s->d;
    nn_conv2d_m_init(&s->proj, &s->P, "pos_layer.proj", d, d, 7, 1, 3, 1, d, 1, rng);
    nn_conv2d_m_init(&s->proj1, &s->P, "pos_layer.proj1", d, d, 5, 1, 2, 1, d, 1, rng);
    nn_conv2d_m_init(&s->proj2, &s->P, "pos_layer.proj2", d, d, 3, 1, 1, 1, d, 1, rng);
    nn_linear_m_init(&s->fc1, &s->P, "_fc1.0", s->d_feat, d, 1, rng);
    int cs[3] = {1, 1, d};
    s->cls_token = nn_params_add(&s->P, "cls_token", NN_PARAM_WEIGHT, 3, cs);
    nn_init_normal(s->cls_token, 0.f, 1.f, rng);
    layer_init(&s->layer[0], &s->P, "layer1", s, rng);
    layer_init(&s->layer[1], &s->P, "layer2", s, rng);
    nn_layernorm_m_init(&s->norm, &s->P, "norm", d, 1e-5f);

    m->params = &s->P;
    m->dim = d;
    snprintf(m->classifier, sizeof m->classifier, "_fc2");
    snprintf(m->desc, sizeof m->desc,
             "transmil %d-%d heads %d landmarks %d pinv %d%s", s->d_feat, d, s->heads,
             s->landmarks, s->iters, s->legacy ? " legacy-slice" : "");
    m->forward = transmil_forward;
    m->free = transmil_free;
    m->ctx = s;
    return 0;
}
