/* ABMIL (Ilse et al. 2018, the WSI variant of the ACMIL/AEM/ASMIL code
 * bases) and AEM (the same network + the attention-entropy term), as
 * ../shared/docs/mil-heads.md specifies.
 *
 *   H [N, D_feat]
 *   h     = relu(H W1^T)                        dimreduction.fc1 (no bias)   [N, D_inner]
 *   a     = w^T( tanh(V h) * sigmoid(U h) ) + b  attention.attention_V.0,
 *                                               attention.attention_U.0 (D_inner -> hidden),
 *                                               attention.attention_weights (hidden -> 1) [N, 1]
 *   alpha = softmax over the N instances        [1, N]
 *   z     = alpha h                             [1, D_inner]
 *   logits = classifier.fc(z)                   the trainer's linear head (tr_model.classifier)
 *
 * Ilse et al.'s network for the MIL benchmarks (opts n_instance_layers > 0,
 * e.g. Musk: fc-256 + ReLU + dropout, fc-128 + ReLU + dropout, fc-64 + ReLU +
 * dropout, attention with 64 hidden units, fc-1 + sigmoid) replaces
 * dimreduction.fc1 by
 *   h = drop(relu(... drop(relu(H W_0^T + b_0)) ...  W_{n-1}^T + b_{n-1}))   [N, layers[n-1]]
 * named as the PyTorch nn.Sequential(Linear, ReLU, Dropout, Linear, ...) module
 * `feature_extractor`: `feature_extractor.<3 i>` for layer i (the paper
 * publishes no code for this network; the name follows the official MNIST
 * model's feature_extractor_part*). Dropout (instance_dropout) in training only.
 * gated = 0: a = w^T tanh(V h) + b (no U; Ilse et al.'s "attention", the gated
 * form being their "gated attention").
 *
 * Parameter names are the state_dict keys of `ABMIL` in dazhangyu123/AEM
 * architecture/transformer.py (the same module is in dazhangyu123/ACMIL):
 * DimReduction -> `dimreduction.fc1`, Attention_Gated -> `attention.attention_V.0`
 * (nn.Sequential(Linear, Tanh)), `attention.attention_U.0` (Sequential(Linear,
 * Sigmoid)), `attention.attention_weights` (Linear(hidden, K = 1)), and
 * Classifier_1fc -> `classifier.fc`. CLAM's Attn_Net_Gated (attention_a / _b
 * / _c) is the same computation under other names:
 *     CLAM attention_net.3.attention_a.0  <->  attention.attention_V.0
 *     CLAM attention_net.3.attention_b.0  <->  attention.attention_U.0
 *     CLAM attention_net.3.attention_c    <->  attention.attention_weights
 *     CLAM attention_net.0 (Linear + bias) ~   dimreduction.fc1 (no bias)
 * Init: PyTorch's nn.Linear default everywhere (the official code sets no
 * other), drawn from our rng in the module order above.
 *
 * AEM (dazhangyu123/AEM main.py): loss = CE + lambda * sum_i alpha_i ln alpha_i
 * (ln alpha = log_softmax(a)); with top_k > 0: the min(k, N) largest alpha
 * renormalised to sum 1, v, and sum_j v_j ln v_j. The term is returned as
 * the forward's *aux (weight lambda * lambda_scale included) whenever the
 * caller asks for it (the trainer asks when training). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../nn/error.h"
#include "../nn/ops.h"
#include "mil.h"

typedef struct abmil {
    mil_head_base base; /* first: mil_last_attention / mil_store_attention */
    mil_opts o;
    nn_params P;
    nn_linear_m fc1, att_v, att_u, att_w;
    nn_linear_m inst[MIL_MAX_INSTANCE_LAYERS]; /* n_instance_layers > 0: instead of fc1 */
    int D; /* embedding size: d_inner, or the last instance layer's width */
    float lambda_scale; /* AEM: the trainer's cosine factor (1 by default) */
    int *topk_idx;      /* AEM top-k scratch */
    int topk_cap;
} abmil;

/* Indices of the k largest of v[0..n) (ties: lower index first), any order. */
static void topk_indices(const float *v, int n, int k, int *idx)
{
    /* min-heap of size k on (value, -index) */
    int m = 0;
#define LESS(i, j) (v[i] < v[j] || (v[i] == v[j] && (i) > (j)))
    for (int i = 0; i < n; i++) {
        if (m < k) {
            int c = m++;
            idx[c] = i;
            while (c > 0) {
                int p = (c - 1) / 2;
                if (!LESS(idx[c], idx[p])) break;
                int t = idx[c];
                idx[c] = idx[p];
                idx[p] = t;
                c = p;
            }
        } else if (LESS(idx[0], i)) {
            idx[0] = i;
            int c = 0;
            for (;;) {
                int l = 2 * c + 1, r = l + 1, s = c;
                if (l < m && LESS(idx[l], idx[s])) s = l;
                if (r < m && LESS(idx[r], idx[s])) s = r;
                if (s == c) break;
                int t = idx[c];
                idx[c] = idx[s];
                idx[s] = t;
                c = s;
            }
        }
    }
#undef LESS
}

/* lambda * sum_j p_j ln p_j of the attention (a: logits [1,N], alpha = softmax(a)). */
static nn_tensor *aem_term(abmil *s, nn_graph *g, nn_tensor *a, nn_tensor *alpha, float lambda)
{
    const int N = alpha->shape[1];
    nn_tensor *ent;
    if (s->o.aem_topk > 0 && s->o.aem_topk < N) {
        const int k = s->o.aem_topk;
        if (k > s->topk_cap) {
            int *p = realloc(s->topk_idx, (size_t)k * sizeof *p);
            NCMI_CHECK(p != NULL, "out of memory (%d indices)", k);
            s->topk_idx = p;
            s->topk_cap = k;
        }
        /* the top-k selection is host code: alpha read back from the GPU in one copy */
        float *ah = nn_host_view(alpha);
        topk_indices(ah, N, k, s->topk_idx);
        nn_host_release(alpha, ah);
        int col[2] = {N, 1};
        nn_tensor *v = nn_index_select(g, nn_reshape(g, alpha, 2, col), s->topk_idx, k); /* [k,1] */
        nn_tensor *vn = nn_div(g, v, nn_sum_all(g, v));
        ent = nn_sum_all(g, nn_mul(g, vn, nn_log(g, vn)));
    } else if (s->o.aem_topk > 0) {
        /* k >= N: every instance, renormalised (sum alpha = 1 up to rounding) */
        nn_tensor *vn = nn_div(g, alpha, nn_sum_all(g, alpha));
        ent = nn_sum_all(g, nn_mul(g, vn, nn_log(g, vn)));
    } else {
        ent = nn_sum_all(g, nn_mul(g, alpha, nn_log_softmax(g, a)));
    }
    return nn_scale(g, ent, lambda);
}

static nn_tensor *abmil_forward(tr_model *m, nn_graph *g, nn_tensor *const *in, int n_in,
                                int training, nn_rng *rng, nn_tensor **aux)
{
    abmil *s = m->ctx;
    NCMI_CHECK(n_in == 1, "%s: one input tensor (the bag) expected, got %d",
               mil_head_kind_name(s->o.kind), n_in);
    nn_tensor *x = in[0];
    char sx[64];
    nn_shape_str(x->ndim, x->shape, sx, sizeof sx);
    /* [N, D] or the official code's batch of one [1, N, D] */
    NCMI_CHECK((x->ndim == 2 || (x->ndim == 3 && x->shape[0] == 1)) &&
                   x->shape[x->ndim - 1] == s->o.d_feat && x->shape[x->ndim - 2] >= 1,
               "%s: bag %s, expected [N >= 1, %d]", mil_head_kind_name(s->o.kind), sx,
               s->o.d_feat);
    const int N = x->shape[x->ndim - 2];
    if (x->ndim == 3) {
        int sh[2] = {N, s->o.d_feat};
        x = nn_reshape(g, x, 2, sh);
    }
    /* fused ops: the same values as relu(linear) and tanh * sigmoid (tests/test_grad_fused.c),
     * with fewer [N, .] buffers */
    nn_tensor *h;                                                              /* [N, Di] */
    if (s->o.n_instance_layers > 0) {
        h = x;
        for (int i = 0; i < s->o.n_instance_layers; i++) {
            h = nn_linear_relu(g, h, s->inst[i].weight, s->inst[i].bias);
            if (s->o.instance_dropout > 0.f)
                h = nn_dropout(g, h, s->o.instance_dropout, training, training ? rng : NULL);
        }
    } else {
        h = nn_linear_relu(g, x, s->fc1.weight, NULL);
    }
    nn_tensor *gate = s->o.gated ? nn_tanh_sigmoid_gate(g, nn_linear_m_forward(g, &s->att_v, h),
                                                        nn_linear_m_forward(g, &s->att_u, h))
                                 : nn_tanh(g, nn_linear_m_forward(g, &s->att_v, h)); /* [N, A] */
    nn_tensor *a = nn_linear_m_forward(g, &s->att_w, gate);                   /* [N, 1] */
    int row[2] = {1, N};
    a = nn_reshape(g, a, 2, row);                                             /* [1, N] */
    nn_tensor *alpha = nn_softmax(g, a);
    nn_tensor *z = nn_matmul(g, alpha, h);                                    /* [1, Di] */
    mil_store_attention_tensor(m, alpha, N, 1, NULL); /* on the GPU: read back when asked */
    if (aux) {
        *aux = NULL;
        const float lambda = s->o.aem_lambda * s->lambda_scale;
        if (s->o.kind == MIL_AEM && lambda != 0.f) *aux = aem_term(s, g, a, alpha, lambda);
    }
    return z;
}

static void abmil_free(tr_model *m)
{
    abmil *s = m->ctx;
    if (!s) return;
    nn_params_free(&s->P);
    mil_head_base_release(&s->base);
    free(s->topk_idx);
    free(s);
    m->ctx = NULL;
    m->params = NULL;
}

int mil_abmil_init(tr_model *m, const mil_opts *o, nn_rng *rng)
{
    memset(m, 0, sizeof *m);
    if (o->kind != MIL_ABMIL && o->kind != MIL_AEM)
        return ncmi_error_set("mil_abmil_init: head '%s' is not abmil or aem",
                              mil_head_kind_name(o->kind));
    if (o->d_feat < 1 || o->d_inner < 1 || o->attn_hidden < 1)
        return ncmi_error_set("%s: d_feat %d, d_inner %d, attn_hidden %d must be >= 1",
                              mil_head_kind_name(o->kind), o->d_feat, o->d_inner, o->attn_hidden);
    if (o->n_instance_layers < 0 || o->n_instance_layers > MIL_MAX_INSTANCE_LAYERS)
        return ncmi_error_set("%s: %d instance layers (at most %d)", mil_head_kind_name(o->kind),
                              o->n_instance_layers, MIL_MAX_INSTANCE_LAYERS);
    for (int i = 0; i < o->n_instance_layers; i++)
        if (o->instance_layers[i] < 1)
            return ncmi_error_set("%s: instance layer %d has width %d", mil_head_kind_name(o->kind), i,
                                  o->instance_layers[i]);
    if (!(o->instance_dropout >= 0.f && o->instance_dropout < 1.f))
        return ncmi_error_set("%s: instance dropout %g not in [0, 1)", mil_head_kind_name(o->kind),
                              (double)o->instance_dropout);
    if (o->kind == MIL_AEM && (!isfinite(o->aem_lambda) || o->aem_topk < 0))
        return ncmi_error_set("aem: lambda %g must be finite and top_k %d >= 0",
                              (double)o->aem_lambda, o->aem_topk);
    abmil *s = calloc(1, sizeof *s);
    if (!s) return ncmi_error_set("out of memory");
    s->o = *o;
    s->lambda_scale = 1.f;
    nn_params_init(&s->P);
    /* the official module order: DimReduction (or the instance layers), Attention_Gated
     * (V, U, weights) */
    if (o->n_instance_layers > 0) {
        int in = o->d_feat;
        for (int i = 0; i < o->n_instance_layers; i++) {
            char name[64];
            snprintf(name, sizeof name, "feature_extractor.%d", 3 * i);
            nn_linear_m_init(&s->inst[i], &s->P, name, in, o->instance_layers[i], 1, rng);
            in = o->instance_layers[i];
        }
        s->D = in;
    } else {
        nn_linear_m_init(&s->fc1, &s->P, "dimreduction.fc1", o->d_feat, o->d_inner, 0, rng);
        s->D = o->d_inner;
    }
    nn_linear_m_init(&s->att_v, &s->P, "attention.attention_V.0", s->D, o->attn_hidden, 1, rng);
    if (o->gated)
        nn_linear_m_init(&s->att_u, &s->P, "attention.attention_U.0", s->D, o->attn_hidden, 1, rng);
    nn_linear_m_init(&s->att_w, &s->P, "attention.attention_weights", o->attn_hidden, 1, 1, rng);
    m->params = &s->P;
    m->dim = s->D;
    /* "abmil 166-256-128-64 (dropout 0.5), attention 64" or "abmil 1024-512, gated attention 128" */
    char net[160];
    int len = snprintf(net, sizeof net, "%d", o->d_feat);
    if (o->n_instance_layers > 0) {
        for (int i = 0; i < o->n_instance_layers && len < (int)sizeof net; i++)
            len += snprintf(net + len, sizeof net - (size_t)len, "-%d", o->instance_layers[i]);
        if (o->instance_dropout > 0.f && len < (int)sizeof net)
            snprintf(net + len, sizeof net - (size_t)len, " (dropout %g)", (double)o->instance_dropout);
    } else {
        snprintf(net + len, sizeof net - (size_t)len, "-%d", o->d_inner);
    }
    const char *att = o->gated ? "gated attention" : "attention";
    snprintf(m->classifier, sizeof m->classifier, "classifier.fc");
    if (o->kind == MIL_AEM) {
        char topk[32] = "";
        if (o->aem_topk > 0) snprintf(topk, sizeof topk, ", top-%d", o->aem_topk);
        snprintf(m->desc, sizeof m->desc, "aem %s, %s %d, lambda %g%s%s", net, att, o->attn_hidden,
                 (double)o->aem_lambda, topk, o->aem_cosine ? ", cosine" : "");
    } else {
        snprintf(m->desc, sizeof m->desc, "abmil %s, %s %d", net, att, o->attn_hidden);
    }
    m->forward = abmil_forward;
    m->free = abmil_free;
    m->gpu_ok = 1; /* nn/ ops only; attention and top-k read back explicitly */
    m->ctx = s;
    return 0;
}

void mil_aem_set_lambda_scale(tr_model *m, float scale)
{
    NCMI_CHECK(m && m->forward == abmil_forward, "mil_aem_set_lambda_scale: not an abmil/aem head");
    NCMI_CHECK(isfinite(scale), "mil_aem_set_lambda_scale: scale %g", (double)scale);
    abmil *s = m->ctx;
    s->lambda_scale = scale;
}
