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
 * Memory: every op output stays in the graph until it is reset, so
 * the big intermediates are made by a few ops of mil/mil_ops.c (nn_op_output,
 * hand-written backward, checked by the golden and finite-difference tests)
 * instead of chains of nn/ops: softmax(scale a b^T) without the logits and
 * the transposed copies, q/k/v read per head straight from to_qkv's output,
 * the residual conv (Conv2d(heads, heads, (33,1), padding (16,0), groups =
 * heads, no bias)) as a 1-D depthwise conv over the sequence, its sum with
 * the attention output written with the heads merged, and PPEG's three
 * depthwise convs on the token grid itself (channels last, no transposes).
 * Each has a CUDA twin (nn/cuda/mil.cu, cuBLAS batched GEMMs for
 * softmax_abt), so a GPU step keeps the same few buffers.
 *
 * Attention kept for heatmaps (mil_last_attention, k = 1): in layer 2, the
 * row of the effective Nystrom attention attn1 attn2^+ attn3 whose output is
 * added to the class token (padded row `pad`, or row 0 with the legacy
 * slice), at the key columns of the N instances (padded rows pad+1..pad+N;
 * the repeated square-filling tokens are not counted), averaged over heads.
 * On the GPU it is computed there ([h, 1, np] products) and copied to the
 * host only when mil_last_attention asks.
 *
 * Options (mil_opts): d_feat, d_inner (= dim, divisible by the 8 heads;
 * dim_head = d_inner / 8), transmil_landmarks (<= 0: d_inner / 2, the
 * official num_landmarks = dim // 2; mil_opts_default's 256 is that value for
 * d_inner 512), transmil_pinv_iters (6), transmil_legacy_slice, dropout (the
 * to_out dropout, 0.1; training only, drawn from the rng). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../nn/error.h"
#include "../nn/ops.h"
#include "../nn/params.h"
#include "mil.h"
#include "mil_ops.h"

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
    nn_tensor *I7 = mil_diag_const(g, x->device, m, 7.f), *I15 = mil_diag_const(g, x->device, m, 15.f),
              *I13 = mil_diag_const(g, x->device, m, 13.f);
    for (int it = 0; it < iters; it++) {
        nn_tensor *xz = nn_matmul(g, x, z);
        nn_tensor *a = nn_sub(g, I7, xz);
        nn_tensor *xa = nn_matmul(g, xz, a);
        nn_tensor *b = nn_sub(g, I15, xa);
        nn_release(g, xa); /* the products that only a subtraction reads (nn_release) */
        nn_tensor *xb = nn_matmul(g, xz, b);
        nn_tensor *c = nn_sub(g, I13, xb);
        nn_release(g, xb);
        z = nn_scale(g, nn_matmul(g, z, c), 0.25f);
    }
    return z;
}

/* The fused ops (softmax(scale a b^T), the q/k/v head split, the residual
 * seq conv, the heads merge, PPEG's grid conv) are in mil/mil_ops.c, each
 * with its CUDA twin. */

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
    /* nn_release: tensors whose last reader has been recorded and whose
       backward reads nothing of them go now, as torch frees them (peak
       memory; docs/training.md, "MIL step benchmark") */
    if (pad) nn_release(g, x);
    nn_tensor *qkv = nn_linear_m_forward(g, &L->to_qkv, xp); /* [np, 3 d] */
    nn_tensor *q = mil_qkv_heads(g, qkv, 0, h, dh), *k = mil_qkv_heads(g, qkv, 1, h, dh), *v = mil_qkv_heads(g, qkv, 2, h, dh);
    nn_release(g, qkv);
    /* q * dim_head^-1/2 folded into the softmax ops (landmark means commute with it) */
    const float qs = 1.f / sqrtf((float)dh);
    nn_tensor *ql = landmarks(g, q, m, l), *kl = landmarks(g, k, m, l);
    nn_tensor *attn1 = mil_softmax_abt(g, q, kl, qs);  /* [h,np,m] */
    nn_tensor *attn2 = mil_softmax_abt(g, ql, kl, qs); /* [h,m,m] */
    nn_tensor *attn3 = mil_softmax_abt(g, ql, k, qs);  /* [h,m,np] */
    nn_tensor *inv = pinv_iter(g, attn2, s->iters);
    nn_tensor *av = nn_matmul(g, attn1, nn_matmul(g, inv, nn_matmul(g, attn3, v)));
    /* + the residual depthwise conv over the sequence (kernel (33, 1)), heads merged: [np, inner] */
    nn_tensor *rc = mil_seq_conv(g, v, L->res_conv);
    nn_tensor *out = mil_add_merge_heads(g, av, rc);
    nn_release(g, av);
    nn_release(g, rc);
    nn_tensor *lo = nn_linear_m_forward(g, &L->to_out, out);
    out = nn_dropout(g, lo, s->dropout, training && rng, rng);
    if (out != lo) nn_release(g, lo);
    if (pad) {
        nn_tensor *d = out;
        out = s->legacy ? nn_slice(g, d, 0, 0, n) : nn_slice(g, d, 0, pad, np);
        nn_release(g, d);
    }
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
    nn_tensor *a = nystrom(g, s, L, u, training, rng, keep);
    nn_tensor *r = nn_add(g, t, a);
    nn_release(g, a);
    return r;
}

/* PPEG on t [1 + S*S, d]. */
static nn_tensor *ppeg(nn_graph *g, const transmil *s, nn_tensor *t, int side)
{
    nn_tensor *y1 = mil_ppeg_conv_add(g, t, t, s->proj.weight, s->proj.bias, side);
    nn_tensor *y2 = mil_ppeg_conv_add(g, y1, t, s->proj1.weight, s->proj1.bias, side);
    nn_release(g, y1); /* an accumulator input: its data is not read backward */
    nn_tensor *y3 = mil_ppeg_conv_add(g, y2, t, s->proj2.weight, s->proj2.bias, side);
    nn_release(g, y2);
    return y3;
}

/* The class token's effective attention to the N instances, averaged over
 * heads, into the model's buffer. */
static void store_attention(tr_model *m, nn_graph *g, const transmil *s, const tm_attn *a, int N)
{
    const int h = s->heads, M = s->landmarks, np = a->n + a->pad;
    const int r = s->legacy ? 0 : a->pad;
    if (a->attn1->device != NN_DEVICE_CPU) {
        /* on the GPU: the same read-out with nn ops (no gradient; float sums
         * in cuBLAS instead of double), kept on the device as [1, N] until
         * mil_last_attention reads it back */
        const int prev = nn_graph_set_no_grad(g, 1);
        nn_tensor *row = nn_slice(g, a->attn1, 1, r, r + 1);             /* [h, 1, M] */
        nn_tensor *u = nn_matmul(g, row, a->attn2_inv);                   /* [h, 1, M] */
        nn_tensor *w = nn_matmul(g, u, a->attn3);                         /* [h, 1, np] */
        w = nn_slice(g, w, 2, a->pad + 1, a->pad + 1 + N);                /* [h, 1, N] */
        nn_tensor *mean = nn_mean(g, w, 0, 0);                            /* [1, N] */
        nn_graph_set_no_grad(g, prev);
        mil_store_attention_tensor(m, mean, N, 1, NULL);
        return;
    }
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
    nn_release(g, h); /* the repeated rows (the ReLU's own output stays: its backward reads it) */
    if (free_stages) nn_graph_truncate(g, mark, t);
    t = trans_layer(g, s, &s->layer[0], t, training, rng, NULL);
    if (free_stages) nn_graph_truncate(g, mark, t);
    t = ppeg(g, s, t, side);
    if (free_stages) nn_graph_truncate(g, mark, t);
    tm_attn keep;
    t = trans_layer(g, s, &s->layer[1], t, training, rng, &keep);
    nn_tensor *z = nn_layernorm_m_forward(g, &s->norm, nn_slice(g, t, 0, 0, 1)); /* [1, d] */
    store_attention(m, g, s, &keep, N);
    return z;
}

static void transmil_free(tr_model *m)
{
    transmil *s = m->ctx;
    if (!s) return;
    nn_params_free(&s->P);
    mil_head_base_release(&s->base);
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
    m->gpu_ok = 1; /* nn/ ops and mil/mil_ops.c (CUDA twins); attention read back when asked */
    m->ctx = s;
    return 0;
}
