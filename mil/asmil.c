/* ASMIL (Ye et al., attention-stabilised MIL; official code Linfeng-Ye/ASMIL,
 * architecture/mytransformer.py: ACMIL_MYMHA = the student, ACMIL_MYMHA_EMA =
 * the anchor; Step3_WSI_classification_ASMIL.py: the loss and the EMA).
 *
 * Student, for one bag X [N, D_feat] (D = d_inner, T = asmil_tokens,
 * H = asmil_heads, c = D / H):
 *   h      = ReLU(X W_drᵀ)                          dimreduction.fc1 (no bias)  [N, D]
 *   token t (own MutiHeadAttention sub_attention.t, query q[0, t]):
 *     p_t    = q_proj(q_t)                                                     [D]
 *     S[t,h] = p_t^h · k_proj(h_n)^h / sqrt(c)     attention logits            [H, N]
 *     A[t,h] = softmax_n S[t,h]                                                [H, N]
 *     o_t    = LayerNorm(dropout(out_proj(concat_h A[t,h] v_proj(h)^h)))        [D]
 *     (LayerNorm eps 1e-6; dropout = o->dropout on the projected output, as
 *      the official module; no dropout on the attention weights)
 *   training: asmil_drop token features removed, drawn from rng (the official
 *     torch.randperm(n_token)[:n_drop]); eval: all T kept
 *   z      = bag_attention(cls, F, F)              the same module with the zero-
 *            initialised learnable query cls over the K kept token features [1, D]
 *   classifier: the trainer's linear head, named "Slide_classifier.fc" (the
 *     official Classifier_1fc Slide_classifier).
 *
 * Folded token attention (the speed note of docs/mil-heads.md): instead of
 * projecting every instance to keys and values once per token (T N D² each),
 *   S[t,h,n] = (W_k^hᵀ p_t^h) · h_n + p_t^h · b_k^h       (scale folded in)
 *   A[t,h] v_proj(h)^h = W_v^h (Σ_n A[t,h,n] h_n) + b_v^h  (Σ_n A = 1)
 * so the instance-sized work is one [N,D]x[D,TH] product for the logits and
 * one [TH,N]x[N,D] for the weighted sums: the same function up to rounding
 * (checked against the official, unfolded PyTorch module by the golden test).
 *
 * Anchor (buffers, never trained): the official ACMIL_MYMHA_EMA has the same
 * modules, and its forward returns the token attention LOGITS only; the loss
 * turns them into the normalized sigmoid sigmax(x) = σ(x) / (Σ_n σ(x) + 1e-8).
 * Only the tensors those logits depend on are kept, named "EMA_model." +
 * the student key (the official script's name of the copy; its state_dict
 * keys are the student's): EMA_model.dimreduction.fc1.weight, EMA_model.q,
 * EMA_model.sub_attention.t.{q_proj,k_proj}.{weight,bias}. (Its v/out
 * projections, layer norms, bag attention and classifiers never influence
 * the loss and are not stored.) The anchor is initialised by its own draw,
 * as the official code constructs EMA_model independently of the student.
 *   asmil_anchor_frozen = 0: anchor ← ema·anchor + (1−ema)·student after every
 *     optimizer step (after_step); the official loop does this update before
 *     its optimizer step (one step of lag; immaterial at ema 0.999).
 *   asmil_anchor_frozen = 1: never updated (the released code: its EMA
 *     condition `if torch.isnan(msd[k]).any()` is inverted).
 *
 * Loss term (*aux):
 *   KD = −asmil_kd_weight · mean_{h,t,n} sigmax(S_anchor / T_kd)[h,t,n]
 *                                       · log_softmax_n(S_student)[h,t,n]
 * over ALL T tokens (dropping affects only the bag attention), anchor without
 * gradient. The official code writes −nan_to_num(p · log(softmax(S + 1e-8)))
 * .mean(); log_softmax is the same where finite and stays finite where the
 * softmax underflows (the official nan_to_num would turn −inf into −3.4e38).
 * The anchor is computed only when aux is requested (the trainer: training
 * steps; its evaluation passes no aux).
 *
 * Per-token classifiers: ACMIL_MYMHA has classifier.t (Classifier_1fc per
 * token) whose outputs go into loss0, but the released ASMIL script sets
 * loss0 = 0 (the term is commented out), so they never train and never affect
 * z or the loss. ncmi leaves them out (the number of classes is not known to
 * the head); loading an official checkpoint ignores classifier.t.*, and
 * ncmi checkpoints load into ACMIL_MYMHA with strict=False. Nothing of them
 * goes into aux.
 *
 * Stored attention (mil_last_attention): the student's softmax weights,
 * per head and token, n = N, k = H·T, column h·T + t, i.e.
 * attns.softmax(-1)[h, t, n] of the official [H, T, N] tensor.
 *
 * Tensor names (state_dict keys of ACMIL_MYMHA): q [1,T,D], cls [1,1,D],
 * dimreduction.fc1.weight, sub_attention.t.{q_proj,k_proj,v_proj,out_proj,
 * layer_norm}.{weight,bias}, bag_attention.{same}. Init as PyTorch: Linear
 * default (kaiming-uniform a=√5, bias U(±1/√in)), LayerNorm 1/0, q ~ N(0,
 * 1e-6), cls = 0. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../nn/error.h"
#include "../nn/ops.h"
#include "../nn/params.h"
#include "mil.h"
#include "mil_ops.h"

#define ASMIL_LN_EPS 1e-6f
#define ASMIL_SIGMAX_EPS 1e-8f

typedef struct asmil_mha {
    nn_linear_m q_proj, k_proj, v_proj, out_proj;
    nn_layernorm_m layer_norm;
} asmil_mha;

typedef struct asmil {
    mil_head_base base; /* must stay first */
    mil_opts o;
    nn_params P;
    int T, H, D, c;
    /* student */
    nn_tensor *w_dr, *q, *cls;
    asmil_mha *sub; /* [T] */
    asmil_mha bag;
    nn_linear_m *s_qp, *s_kp; /* [T] copies of sub[t].q_proj / k_proj */
    /* anchor (buffers) */
    nn_tensor *a_w_dr, *a_q;
    nn_linear_m *a_qp, *a_kp; /* [T] */
    /* EMA pairs: anchor[i] <- ema anchor[i] + (1 - ema) student[i] */
    nn_tensor **ema_dst, **ema_src;
    int n_ema;
    /* test hook: fixed dropped tokens in training (hook_n < 0: draw) */
    int hook_n;
    int *hook_idx;
} asmil;

/* ---- folded token attention ---- */

/* [T, rows, cols] stack of per-token 2-D tensors (views, concatenated). */
static nn_tensor *stack_w(nn_graph *g, nn_tensor **ws, int T)
{
    nn_tensor *v[64];
    nn_tensor **vs = T <= 64 ? v : malloc((size_t)T * sizeof *vs);
    NCMI_CHECK(vs, "out of memory");
    for (int t = 0; t < T; t++) {
        int s[3] = {1, ws[t]->shape[0], ws[t]->shape[1]};
        vs[t] = nn_reshape(g, ws[t], 3, s);
    }
    nn_tensor *out = T == 1 ? vs[0] : nn_concat(g, vs, T, 0);
    if (vs != v) free(vs);
    return out;
}

/* [T, n] stack of per-token 1-D tensors [n]. */
static nn_tensor *stack_b(nn_graph *g, nn_tensor **bs, int T)
{
    nn_tensor *v[64];
    nn_tensor **vs = T <= 64 ? v : malloc((size_t)T * sizeof *vs);
    NCMI_CHECK(vs, "out of memory");
    for (int t = 0; t < T; t++) {
        int s[2] = {1, bs[t]->shape[0]};
        vs[t] = nn_reshape(g, bs[t], 2, s);
    }
    nn_tensor *out = T == 1 ? vs[0] : nn_concat(g, vs, T, 0);
    if (vs != v) free(vs);
    return out;
}

/* Gather member `field` (a tensor pointer) of T structs into ws. */
#define GATHER(ws, arr, T, field)                                               \
    do {                                                                        \
        for (int t_ = 0; t_ < (T); t_++) (ws)[t_] = (arr)[t_].field;            \
    } while (0)

/* Folded attention logits of every token query and head: [T*H, N], row
 * t*H + h. h [N, D], q [1, T, D]; qp/kp: each token's q/k projections.
 * *pq (optional) gets the projected queries [T, D]. */
static nn_tensor *token_logits(nn_graph *g, const asmil *s, nn_tensor *h, nn_tensor *q,
                               const nn_linear_m *qp, const nn_linear_m *kp)
{
    const int T = s->T, H = s->H, D = s->D, c = s->c;
    const float scale = 1.f / sqrtf((float)c);
    nn_tensor *tmp[64 * 2];
    nn_tensor **ws = T <= 64 ? tmp : malloc((size_t)T * 2 * sizeof *ws);
    NCMI_CHECK(ws, "out of memory");
    nn_tensor **bs = ws + T;

    /* p_t = W_q,t q_t + b_q,t for every token at once */
    GATHER(ws, qp, T, weight);
    GATHER(bs, qp, T, bias);
    nn_tensor *Wq = stack_w(g, ws, T);                          /* [T, D, D] */
    nn_tensor *bq = stack_b(g, bs, T);                          /* [T, D] */
    int s31[3] = {T, D, 1};
    nn_tensor *p = nn_matmul(g, Wq, nn_reshape(g, q, 3, s31)); /* [T, D, 1] */
    int s2[2] = {T, D};
    p = nn_add(g, nn_reshape(g, p, 2, s2), bq);                /* [T, D] */
    p = nn_scale(g, p, scale);                                  /* 1/sqrt(c) folded in */

    /* Kq[t,h] = W_k,t^hᵀ p_t^h: [TH, 1, c] @ [TH, c, D] */
    GATHER(ws, kp, T, weight);
    GATHER(bs, kp, T, bias);
    nn_tensor *Wk = stack_w(g, ws, T);                          /* [T, D, D] */
    nn_tensor *bk = stack_b(g, bs, T);                          /* [T, D] */
    int sp[3] = {T * H, 1, c}, sw[3] = {T * H, c, D};
    nn_tensor *Kq = nn_matmul(g, nn_reshape(g, p, 3, sp), nn_reshape(g, Wk, 3, sw));
    int skq[2] = {T * H, D};
    Kq = nn_reshape(g, Kq, 2, skq);                            /* [TH, D] */
    /* kb[t,h] = p_t^h · b_k,t^h */
    int sb[2] = {T * H, c};
    nn_tensor *kb = nn_sum(g, nn_mul(g, nn_reshape(g, p, 2, sb), nn_reshape(g, bk, 2, sb)), 1, 0);
    if (ws != tmp) free(ws);

    nn_tensor *St = nn_linear(g, h, Kq, kb);                   /* [N, TH] */
    return nn_transpose(g, St, 0, 1);                          /* [TH, N] */
}

/* Student token features [T, D] from the attention weights A [TH, N]. */
static nn_tensor *token_features(nn_graph *g, const asmil *s, nn_tensor *A, nn_tensor *h,
                                 int training, nn_rng *rng)
{
    const int T = s->T, H = s->H, D = s->D, c = s->c;
    nn_tensor *tmp[64 * 2];
    nn_tensor **ws = T <= 64 ? tmp : malloc((size_t)T * 2 * sizeof *ws);
    NCMI_CHECK(ws, "out of memory");
    nn_tensor **bs = ws + T;

    nn_tensor *AX = nn_matmul(g, A, h);                        /* [TH, D] */
    /* v[t,h] = W_v,t^h AX[t,h] + b_v,t^h: [TH, c, D] @ [TH, D, 1] */
    GATHER(ws, s->sub, T, v_proj.weight);
    GATHER(bs, s->sub, T, v_proj.bias);
    nn_tensor *Wv = stack_w(g, ws, T);
    nn_tensor *bv = stack_b(g, bs, T);
    int sw[3] = {T * H, c, D}, sa[3] = {T * H, D, 1}, s2[2] = {T, D};
    nn_tensor *v = nn_matmul(g, nn_reshape(g, Wv, 3, sw), nn_reshape(g, AX, 3, sa)); /* [TH,c,1] */
    v = nn_add(g, nn_reshape(g, v, 2, s2), bv);                /* [T, D] */

    /* out_proj per token: [T, D, D] @ [T, D, 1] */
    GATHER(ws, s->sub, T, out_proj.weight);
    GATHER(bs, s->sub, T, out_proj.bias);
    nn_tensor *Wo = stack_w(g, ws, T);
    nn_tensor *bo = stack_b(g, bs, T);
    int s31[3] = {T, D, 1};
    nn_tensor *o = nn_matmul(g, Wo, nn_reshape(g, v, 3, s31));
    o = nn_add(g, nn_reshape(g, o, 2, s2), bo);                /* [T, D] */
    o = nn_dropout(g, o, s->o.dropout, training, rng);

    /* per-token LayerNorm (eps 1e-6) */
    GATHER(ws, s->sub, T, layer_norm.weight);
    GATHER(bs, s->sub, T, layer_norm.bias);
    nn_tensor *gam = stack_b(g, ws, T), *bet = stack_b(g, bs, T);
    o = nn_add(g, nn_mul(g, nn_layernorm(g, o, NULL, NULL, ASMIL_LN_EPS), gam), bet);
    if (ws != tmp) free(ws);
    return o;
}

/* bag_attention(cls, F, F): F [K, D] -> [1, D] (plain form; K <= T). */
static nn_tensor *bag_attention(nn_graph *g, const asmil *s, nn_tensor *F, int training,
                                nn_rng *rng)
{
    const int H = s->H, D = s->D, c = s->c, K = F->shape[0];
    const asmil_mha *m = &s->bag;
    int s1d[2] = {1, D};
    nn_tensor *qb = nn_linear_m_forward(g, &m->q_proj, nn_reshape(g, s->cls, 2, s1d)); /* [1,D] */
    nn_tensor *kb = nn_linear_m_forward(g, &m->k_proj, F);                              /* [K,D] */
    nn_tensor *vb = nn_linear_m_forward(g, &m->v_proj, F);                              /* [K,D] */
    int sq[3] = {H, 1, c}, sk[3] = {H, c, K}, sv[3] = {K, H, c};
    nn_tensor *kT = nn_reshape(g, nn_transpose(g, kb, 0, 1), 3, sk);     /* [H, c, K] */
    nn_tensor *lg = nn_matmul(g, nn_reshape(g, qb, 3, sq), kT);          /* [H, 1, K] */
    nn_tensor *a = nn_softmax(g, nn_scale(g, lg, 1.f / sqrtf((float)c)));
    nn_tensor *vh = nn_transpose(g, nn_reshape(g, vb, 3, sv), 0, 1);     /* [H, K, c] */
    nn_tensor *o = nn_reshape(g, nn_matmul(g, a, vh), 2, s1d);           /* [1, D] */
    o = nn_linear_m_forward(g, &m->out_proj, o);
    o = nn_dropout(g, o, s->o.dropout, training, rng);
    return nn_layernorm_m_forward(g, &m->layer_norm, o);
}

/* The anchor's sigmax(S_anchor / T_kd) [TH, N], no gradient. */
static nn_tensor *anchor_target(nn_graph *g, asmil *s, nn_tensor *X)
{
    int prev = nn_graph_set_no_grad(g, 1);
    nn_tensor *ha = nn_relu(g, nn_linear(g, X, s->a_w_dr, NULL));
    nn_tensor *Sa = token_logits(g, s, ha, s->a_q, s->a_qp, s->a_kp); /* [TH, N] */
    nn_tensor *P = mil_sigmax(g, Sa, 1.f / s->o.asmil_kd_T, ASMIL_SIGMAX_EPS); /* CUDA twin on the GPU */
    nn_graph_set_no_grad(g, prev);
    return P;
}

/* A [TH, N] (row t*H + h) -> [N, k = H*T] with column h*T + t. */
static void attn_layout(const void *head, const float *A, float *out, int N, int k)
{
    const asmil *s = head;
    const int T = s->T, H = s->H;
    NCMI_CHECK(k == T * H, "asmil: %d attention columns for %d tokens x %d heads", k, T, H);
    for (int t = 0; t < T; t++)
        for (int h = 0; h < H; h++) {
            const float *a = A + (size_t)(t * H + h) * N;
            for (int n = 0; n < N; n++) out[(size_t)n * k + h * T + t] = a[n];
        }
}

static void store_attention(tr_model *m, asmil *s, const nn_tensor *A)
{
    const int N = A->shape[1], k = s->T * s->H;
    mil_store_attention_tensor(m, A, N, k, attn_layout); /* GPU: laid out at the read-back */
}

static nn_tensor *asmil_forward(tr_model *m, nn_graph *g, nn_tensor *const *in, int n_in,
                                int training, nn_rng *rng, nn_tensor **aux)
{
    asmil *s = m->ctx;
    NCMI_CHECK(n_in == 1, "asmil: one input tensor (the bag) expected, got %d", n_in);
    nn_tensor *X = in[0];
    NCMI_CHECK(X->ndim == 2 && X->shape[1] == s->o.d_feat && X->shape[0] >= 1,
               "asmil: bag must be [N >= 1, %d], got %d-D [%d, %d]", s->o.d_feat, X->ndim,
               X->shape[0], X->ndim > 1 ? X->shape[1] : 0);
    const int T = s->T;

    /* tokens removed from the bag attention (training only) */
    int keep[256], nkeep = T;
    int *kp = T <= 256 ? keep : malloc((size_t)T * sizeof *kp);
    NCMI_CHECK(kp, "out of memory");
    for (int t = 0; t < T; t++) kp[t] = t;
    if (training) {
        unsigned char dropped[256] = {0};
        unsigned char *dr = T <= 256 ? dropped : calloc((size_t)T, 1);
        NCMI_CHECK(dr, "out of memory");
        if (s->hook_n >= 0) {
            for (int i = 0; i < s->hook_n; i++) dr[s->hook_idx[i]] = 1;
        } else if (s->o.asmil_drop > 0) {
            NCMI_CHECK(rng != NULL, "asmil: token dropping in training needs an rng");
            int perm[256];
            int *pp = T <= 256 ? perm : malloc((size_t)T * sizeof *pp);
            NCMI_CHECK(pp, "out of memory");
            nn_rng_permutation(rng, pp, T);
            for (int i = 0; i < s->o.asmil_drop; i++) dr[pp[i]] = 1;
            if (pp != perm) free(pp);
        }
        nkeep = 0;
        for (int t = 0; t < T; t++)
            if (!dr[t]) kp[nkeep++] = t;
        if (dr != dropped) free(dr);
    }
    NCMI_CHECK(nkeep >= 1, "asmil: every token dropped");

    nn_tensor *h = nn_relu(g, nn_linear(g, X, s->w_dr, NULL)); /* [N, D] */
    nn_tensor *S = token_logits(g, s, h, s->q, s->s_qp, s->s_kp); /* [TH, N] */
    nn_tensor *A = nn_softmax(g, S);
    store_attention(m, s, A);

    nn_tensor *Fall = token_features(g, s, A, h, training, rng); /* [T, D] */
    nn_tensor *F = nkeep == T ? Fall : nn_index_select(g, Fall, kp, nkeep);
    if (kp != keep) free(kp);
    nn_tensor *z = bag_attention(g, s, F, training, rng);

    if (aux) {
        *aux = NULL;
        nn_tensor *P = anchor_target(g, s, X);
        nn_tensor *kd = nn_mean_all(g, nn_mul(g, P, nn_log_softmax(g, S)));
        *aux = nn_scale(g, kd, -s->o.asmil_kd_weight);
    }
    return z;
}

static void asmil_after_step(tr_model *m)
{
    asmil *s = m->ctx;
    if (s->o.asmil_anchor_frozen) return;
    for (int i = 0; i < s->n_ema; i++) mil_ema_update(s->ema_dst[i], s->ema_src[i], s->o.asmil_ema);
}

static void asmil_free(tr_model *m)
{
    asmil *s = m->ctx;
    if (!s) return;
    nn_params_free(&s->P);
    free(s->sub);
    free(s->s_qp);
    free(s->a_qp);
    free(s->ema_dst);
    free(s->ema_src);
    free(s->hook_idx);
    mil_head_base_release(&s->base);
    free(s);
    m->ctx = NULL;
    m->params = NULL;
}

/* Test hook (declared by tests/test_mil_asmil.c): in training, drop exactly
 * tokens idx[0..n) instead of drawing them; n < 0 goes back to drawing. */
void mil_asmil_set_drop(tr_model *m, const int *idx, int n);
void mil_asmil_set_drop(tr_model *m, const int *idx, int n)
{
    asmil *s = m->ctx;
    NCMI_CHECK(n < s->T, "asmil: cannot drop %d of %d tokens", n, s->T);
    for (int i = 0; i < n; i++)
        NCMI_CHECK(idx[i] >= 0 && idx[i] < s->T, "asmil: token %d out of range", idx[i]);
    s->hook_n = n;
    for (int i = 0; i < n; i++) s->hook_idx[i] = idx[i];
}

/* An anchor Linear (buffers) with PyTorch's default init. */
static void anchor_linear(nn_linear_m *l, nn_params *P, const char *prefix, int in, int out,
                          nn_rng *rng)
{
    l->in = in;
    l->out = out;
    l->weight = nn_params_addf(P, prefix, "weight", NN_PARAM_BUFFER, 2, (int[]){out, in});
    nn_init_kaiming_uniform(l->weight, sqrtf(5.f), rng);
    l->bias = nn_params_addf(P, prefix, "bias", NN_PARAM_BUFFER, 1, (int[]){out});
    float bd = in > 0 ? 1.f / sqrtf((float)in) : 0.f;
    nn_init_uniform(l->bias, -bd, bd, rng);
}

static void mha_init(asmil_mha *a, nn_params *P, const char *prefix, int D, nn_rng *rng)
{
    char p[128];
    snprintf(p, sizeof p, "%s.q_proj", prefix);
    nn_linear_m_init(&a->q_proj, P, p, D, D, 1, rng);
    snprintf(p, sizeof p, "%s.k_proj", prefix);
    nn_linear_m_init(&a->k_proj, P, p, D, D, 1, rng);
    snprintf(p, sizeof p, "%s.v_proj", prefix);
    nn_linear_m_init(&a->v_proj, P, p, D, D, 1, rng);
    snprintf(p, sizeof p, "%s.out_proj", prefix);
    nn_linear_m_init(&a->out_proj, P, p, D, D, 1, rng);
    snprintf(p, sizeof p, "%s.layer_norm", prefix);
    nn_layernorm_m_init(&a->layer_norm, P, p, D, ASMIL_LN_EPS);
}

int mil_asmil_init(tr_model *m, const mil_opts *o, nn_rng *rng)
{
    memset(m, 0, sizeof *m);
    const int T = o->asmil_tokens, H = o->asmil_heads, D = o->d_inner;
    if (o->d_feat < 1 || D < 1) return ncmi_error_set("asmil: d_feat %d, d_inner %d", o->d_feat, D);
    if (T < 1 || H < 1) return ncmi_error_set("asmil: %d tokens, %d heads", T, H);
    if (D % H) return ncmi_error_set("asmil: d_inner %d is not a multiple of %d heads", D, H);
    if (o->asmil_drop < 0 || o->asmil_drop >= T)
        return ncmi_error_set("asmil: cannot drop %d of %d tokens (keep at least one)",
                              o->asmil_drop, T);
    if (!(o->asmil_kd_T > 0)) return ncmi_error_set("asmil: KD temperature %g", o->asmil_kd_T);
    if (!(o->asmil_ema >= 0 && o->asmil_ema <= 1))
        return ncmi_error_set("asmil: EMA decay %g not in [0, 1]", o->asmil_ema);
    if (!(o->dropout >= 0 && o->dropout < 1))
        return ncmi_error_set("asmil: dropout %g not in [0, 1)", o->dropout);

    asmil *s = calloc(1, sizeof *s);
    if (!s) return ncmi_error_set("out of memory");
    s->o = *o;
    s->T = T;
    s->H = H;
    s->D = D;
    s->c = D / H;
    s->hook_n = -1;
    s->sub = calloc((size_t)T, sizeof *s->sub);
    /* one allocation each: [0, T) q projections, [T, 2T) k projections */
    s->s_qp = calloc((size_t)T * 2, sizeof *s->s_qp);
    s->a_qp = calloc((size_t)T * 2, sizeof *s->a_qp);
    s->hook_idx = calloc((size_t)T, sizeof *s->hook_idx);
    s->ema_dst = calloc((size_t)(2 + 4 * T), sizeof *s->ema_dst);
    s->ema_src = calloc((size_t)(2 + 4 * T), sizeof *s->ema_src);
    if (!s->sub || !s->s_qp || !s->a_qp || !s->hook_idx || !s->ema_dst || !s->ema_src) {
        free(s->sub);
        free(s->s_qp);
        free(s->a_qp);
        free(s->hook_idx);
        free(s->ema_dst);
        free(s->ema_src);
        free(s);
        return ncmi_error_set("out of memory");
    }
    nn_params_init(&s->P);

    /* student, in ACMIL_MYMHA's construction order */
    nn_linear_m dr;
    nn_linear_m_init(&dr, &s->P, "dimreduction.fc1", o->d_feat, D, 0, rng);
    s->w_dr = dr.weight;
    char p[96];
    for (int t = 0; t < T; t++) {
        snprintf(p, sizeof p, "sub_attention.%d", t);
        mha_init(&s->sub[t], &s->P, p, D, rng);
    }
    mha_init(&s->bag, &s->P, "bag_attention", D, rng);
    s->s_kp = s->s_qp + T;
    s->a_kp = s->a_qp + T;
    for (int t = 0; t < T; t++) {
        s->s_qp[t] = s->sub[t].q_proj;
        s->s_kp[t] = s->sub[t].k_proj;
    }
    s->q = nn_params_add(&s->P, "q", NN_PARAM_WEIGHT, 3, (int[]){1, T, D});
    nn_init_normal(s->q, 0.f, 1e-6f, rng);
    s->cls = nn_params_add(&s->P, "cls", NN_PARAM_WEIGHT, 3, (int[]){1, 1, D}); /* zeros */

    /* anchor: its own draw (the official EMA_model is built independently) */
    s->a_w_dr = nn_params_add(&s->P, "EMA_model.dimreduction.fc1.weight", NN_PARAM_BUFFER, 2,
                              (int[]){D, o->d_feat});
    nn_init_kaiming_uniform(s->a_w_dr, sqrtf(5.f), rng);
    int ne = 0;
    s->ema_dst[ne] = s->a_w_dr;
    s->ema_src[ne++] = s->w_dr;
    for (int t = 0; t < T; t++) {
        snprintf(p, sizeof p, "EMA_model.sub_attention.%d.q_proj", t);
        anchor_linear(&s->a_qp[t], &s->P, p, D, D, rng);
        snprintf(p, sizeof p, "EMA_model.sub_attention.%d.k_proj", t);
        anchor_linear(&s->a_kp[t], &s->P, p, D, D, rng);
        s->ema_dst[ne] = s->a_qp[t].weight;
        s->ema_src[ne++] = s->sub[t].q_proj.weight;
        s->ema_dst[ne] = s->a_qp[t].bias;
        s->ema_src[ne++] = s->sub[t].q_proj.bias;
        s->ema_dst[ne] = s->a_kp[t].weight;
        s->ema_src[ne++] = s->sub[t].k_proj.weight;
        s->ema_dst[ne] = s->a_kp[t].bias;
        s->ema_src[ne++] = s->sub[t].k_proj.bias;
    }
    s->a_q = nn_params_add(&s->P, "EMA_model.q", NN_PARAM_BUFFER, 3, (int[]){1, T, D});
    nn_init_normal(s->a_q, 0.f, 1e-6f, rng);
    s->ema_dst[ne] = s->a_q;
    s->ema_src[ne++] = s->q;
    s->n_ema = ne;

    m->params = &s->P;
    m->dim = D;
    snprintf(m->classifier, sizeof m->classifier, "Slide_classifier.fc");
    snprintf(m->desc, sizeof m->desc, "asmil %d-%d tokens %d heads %d drop %d anchor %s",
             o->d_feat, D, T, H, o->asmil_drop, o->asmil_anchor_frozen ? "frozen" : "ema");
    m->forward = asmil_forward;
    m->after_step = asmil_after_step;
    m->free = asmil_free;
    m->gpu_ok = 1; /* nn/ ops and mil/mil_ops.c (sigmax, EMA: CUDA twins) */
    m->ctx = s;
    return 0;
}
