/* ASMIL head (mil/asmil.c).
 *
 * Golden: tests/golden/mil_asmil.safetensors (tests/reference/
 * golden_mil_asmil.py, the official, unfolded module structure in PyTorch,
 * float64): bags of 1, 7 and 40 instances in eval mode and a training-mode
 * bag with two tokens dropped (the same indices on both sides through the
 * test hook below), dropout 0. Compared: z, the attention weights, the KD
 * term, the class logits of the linear head "Slide_classifier.fc", the loss
 * CE + KD, every student parameter gradient (except the k_proj biases, whose
 * gradient is identically zero), the classifier's, the input's; then the
 * anchor after one EMA update. Rule as tests/test_golden.c:
 *     |ours - ref| <= 1e-4 * max(|ref|, 1e-2 * max_j |ref_j|)
 * (the floor is for elements near zero by cancellation).
 *
 * Also: finite differences of the whole head (z and the KD term) on a tiny
 * bag, the anchor frozen / EMA behaviour, token dropping drawn from the rng. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../mil/mil.h"
#include "../nn/error.h"
#include "../nn/loss.h"
#include "../nn/ops.h"
#include "../nn/params.h"
#include "../nn/safetensors.h"
#include "golden_io.h"
#include "test.h"

/* test hook, defined in mil/asmil.c */
void mil_asmil_set_drop(tr_model *m, const int *idx, int n);

#define RTOL 1e-4
#define FLOOR 1e-2

static const char *golden_dir(void)
{
    const char *d = getenv("NCMI_GOLDEN");
    return d && *d ? d : "tests/golden";
}

typedef struct {
    const nn_safetensors *st;
    double worst;
    char worst_name[128];
    int n;
} cmp_stats;

/* Compare n floats with tensor `name` of the golden file. */
static void cmp(cmp_stats *cs, const char *name, const float *ours, size_t n)
{
    if (!ours) {
        test_fail_at(__FILE__, __LINE__, "%s: no values (gradient never computed?)", name);
        return;
    }
    float *ref = malloc((n ? n : 1) * sizeof *ref);
    NCMI_CHECK(ref, "out of memory");
    if (nn_st_read_f32(cs->st, name, ref, n, -1, NULL) != 0) {
        test_fail_at(__FILE__, __LINE__, "%s", ncmi_error());
        free(ref);
        return;
    }
    double maxref = 0, worst = 0;
    for (size_t i = 0; i < n; i++) maxref = fmax(maxref, fabs((double)ref[i]));
    size_t wi = 0;
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        double den = fmax(fabs((double)ref[i]), FLOOR * maxref);
        // NOLINTNEXTLINE(clang-analyzer-core.UndefinedBinaryOperatorResult): false positive, ours and ref hold n values written by the caller
        double d = fabs((double)ours[i] - (double)ref[i]);
        double e = den > 0 ? d / den : (d > 0 ? INFINITY : 0);
        if (isnan(e)) e = INFINITY;
        if (e > worst) {
            worst = e;
            wi = i;
        }
        if (!(d <= RTOL * den)) bad++;
    }
    if (bad)
        test_fail_at(__FILE__, __LINE__, "%s: %d of %zu off; worst [%zu] ours %.9g ref %.9g (rel %.3g)",
                     name, bad, n, wi, ours[wi], ref[wi], worst);
    if (worst > cs->worst || cs->n == 0) {
        cs->worst = worst;
        snprintf(cs->worst_name, sizeof cs->worst_name, "%s", name);
    }
    cs->n++;
    free(ref);
}

static void golden_opts(mil_opts *o)
{
    mil_opts_default(o, MIL_ASMIL);
    o->d_feat = 24;
    o->d_inner = 16;
    o->asmil_heads = 4;
    o->asmil_tokens = 4;
    o->dropout = 0.f;
    o->asmil_kd_T = 0.5f;
    o->asmil_kd_weight = 0.7f;
    o->asmil_ema = 0.9f;
}

static int ends_with(const char *s, const char *suf)
{
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

TEST(mil_asmil_golden)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/mil_asmil.safetensors", golden_dir());
    nn_safetensors st;
    REQUIRE(nn_st_open(&st, path) == 0,
            "cannot open golden file (committed; regenerate with `make golden`): %s",
            ncmi_error());
    cmp_stats cs = {.st = &st};
    mil_opts o;
    golden_opts(&o);
    nn_rng rng;
    nn_rng_seed(&rng, 7);
    tr_model m;
    REQUIRE(mil_asmil_init(&m, &o, &rng) == 0, "init: %s", ncmi_error());
    EXPECT(!strcmp(m.classifier, "Slide_classifier.fc"), "classifier '%s'", m.classifier);
    EXPECT(m.dim == 16, "dim %d", m.dim);
    nn_params Ph;
    nn_params_init(&Ph);
    nn_linear_m fc;
    nn_linear_m_init(&fc, &Ph, m.classifier, 16, 3, 1, &rng);
    nn_graph *g = nn_graph_new();
    nn_graph_set_free_dead(g, 1);
    if (nn_params_load_st(m.params, &st, 0) != 0 || nn_params_load_st(&Ph, &st, 0) != 0) {
        test_fail_at(__FILE__, __LINE__, "loading parameters: %s", ncmi_error());
        goto done;
    }
    /* every anchor tensor is a buffer */
    int n_anchor = 0;
    for (int i = 0; i < m.params->n; i++)
        if (!strncmp(m.params->t[i]->name, "EMA_model.", 10)) {
            n_anchor++;
            EXPECT(m.params->kind[i] == NN_PARAM_BUFFER && !m.params->t[i]->requires_grad,
                   "%s is trained", m.params->t[i]->name);
        } else {
            EXPECT(m.params->kind[i] == NN_PARAM_WEIGHT, "%s is not trained",
                   m.params->t[i]->name);
        }
    EXPECT(n_anchor == 2 + 4 * 4, "%d anchor tensors", n_anchor);

    static const char *cases[] = {"eval_n1", "eval_n7", "eval_n40", "train_n40"};
    for (int ci = 0; ci < 4; ci++) {
        const char *cname = cases[ci];
        int training = !strncmp(cname, "train", 5);
        char nm[256];
        snprintf(nm, sizeof nm, "%s.x", cname);
        nn_tensor *x = test_st_tensor(&st, nm);
        int64_t y64 = -1;
        snprintf(nm, sizeof nm, "%s.y", cname);
        if (!x || nn_st_read_i64(&st, nm, &y64, 1) != 0) {
            test_fail_at(__FILE__, __LINE__, "%s: x / y missing", cname);
            nn_tensor_free(x);
            continue;
        }
        int y = (int)y64, N = x->shape[0];
        if (training) {
            int64_t d64[2];
            snprintf(nm, sizeof nm, "%s.drop", cname);
            REQUIRE(nn_st_read_i64(&st, nm, d64, 2) == 0, "%s", ncmi_error());
            int drop[2] = {(int)d64[0], (int)d64[1]};
            mil_asmil_set_drop(&m, drop, 2);
        }
        x->requires_grad = 1;
        nn_params_zero_grad(m.params);
        nn_params_zero_grad(&Ph);
        nn_tensor *aux = NULL;
        nn_tensor *z = m.forward(&m, g, &x, 1, training, training ? &rng : NULL, &aux);
        REQUIRE(aux && aux->numel == 1, "no KD term");
        nn_tensor *logits = nn_linear_m_forward(g, &fc, z);
        nn_tensor *loss = nn_loss_add_aux(g, nn_cross_entropy(g, logits, &y, 0.f), aux, 1.f);
        nn_tensor_keep(z); /* free_dead as tr_step: the gradients must not depend on it */
        nn_tensor_keep(aux);
        nn_tensor_keep(logits);
        REQUIRE(nn_backward(g, loss) == 0, "backward: %s", ncmi_error());

#define CMP(suffix, ptr, n)                                                     \
    do {                                                                        \
        snprintf(nm, sizeof nm, "%s.%s", cname, suffix);                        \
        cmp(&cs, nm, ptr, n);                                                   \
    } while (0)
        CMP("z", z->data, z->numel);
        CMP("kd", aux->data, 1);
        CMP("logits", logits->data, logits->numel);
        CMP("loss", loss->data, 1);
        /* attention: ours [N, H*T] column h*T + t; golden [H, T, N] */
        int an = 0, ak = 0;
        const float *att = mil_last_attention(&m, &an, &ak);
        EXPECT(att && an == N && ak == 16, "attention %d x %d", an, ak);
        if (att && an == N && ak == 16) {
            float *A = malloc((size_t)N * 16 * sizeof *A);
            for (int n = 0; n < N; n++)
                for (int j = 0; j < 16; j++) A[(size_t)j * N + n] = att[(size_t)n * 16 + j];
            CMP("attn", A, (size_t)N * 16);
            free(A);
        }
        for (int i = 0; i < m.params->n; i++) {
            nn_tensor *p = m.params->t[i];
            if (m.params->kind[i] != NN_PARAM_WEIGHT) {
                EXPECT(p->grad == NULL, "%s: buffer received a gradient", p->name);
                continue;
            }
            if (ends_with(p->name, "k_proj.bias")) continue; /* identically zero */
            char gn[160];
            snprintf(gn, sizeof gn, "grad.%s", p->name);
            CMP(gn, p->grad, p->numel);
        }
        for (int i = 0; i < Ph.n; i++) {
            char gn[160];
            snprintf(gn, sizeof gn, "grad.%s", Ph.t[i]->name);
            CMP(gn, Ph.t[i]->grad, Ph.t[i]->numel);
        }
        CMP("grad.x", x->grad, x->numel);
#undef CMP
        if (training) mil_asmil_set_drop(&m, NULL, -1);
        nn_graph_reset(g);
        nn_tensor_free(x);
    }

    /* one EMA update (decay 0.9) from the stored weights */
    m.after_step(&m);
    for (int i = 0; i < m.params->n; i++) {
        nn_tensor *p = m.params->t[i];
        if (strncmp(p->name, "EMA_model.", 10)) continue;
        char nm[200];
        snprintf(nm, sizeof nm, "ema.after.%s", p->name);
        cmp(&cs, nm, p->data, p->numel);
    }
    printf("    mil_asmil.safetensors: %d tensors, max rel err %.3g (%s)\n", cs.n, cs.worst,
           cs.worst_name);
done:
    nn_graph_free(g);
    nn_params_free(&Ph);
    tr_model_free(&m);
    nn_st_close(&st);
}

/* ---- finite differences on a tiny bag ---- */

typedef struct {
    tr_model m;
    nn_graph *g;
    nn_tensor *x, *R;
    float r_aux;
    int training;
} fd_ctx;

/* L = sum(R * z) + r_aux * KD, accumulated in double from the float outputs. */
static double fd_loss(fd_ctx *c, int backward)
{
    nn_graph_reset(c->g);
    nn_tensor *aux = NULL;
    nn_tensor *z = c->m.forward(&c->m, c->g, &c->x, 1, c->training, NULL, &aux);
    double L = c->r_aux * (double)aux->data[0];
    for (size_t i = 0; i < z->numel; i++) L += (double)c->R->data[i] * z->data[i];
    if (backward) {
        nn_tensor *t = nn_add(c->g, nn_sum_all(c->g, nn_mul(c->g, z, c->R)),
                              nn_scale(c->g, aux, c->r_aux));
        NCMI_CHECK(nn_backward(c->g, t) == 0, "backward: %s", ncmi_error());
    }
    return L;
}

static void fd_check_tensor(fd_ctx *c, nn_tensor *p, const char *what, int *worst_bad)
{
    const float eps = 1e-2f;
    for (size_t j = 0; j < p->numel; j++) {
        float v = p->data[j];
        p->data[j] = v + eps;
        double lp = fd_loss(c, 0);
        p->data[j] = v - eps;
        double lm = fd_loss(c, 0);
        p->data[j] = v;
        double num = (lp - lm) / (2.0 * eps);
        double ana = p->grad ? p->grad[j] : 0.0;
        if (!(fabs(ana - num) <= 1e-3 + 1e-2 * fabs(num))) {
            if (*worst_bad < 5)
                test_fail_at(__FILE__, __LINE__, "%s%s[%zu]: analytic %.6g, numeric %.6g",
                             c->training ? "train " : "eval ", what, j, ana, num);
            (*worst_bad)++;
        }
    }
}

static void fd_run(int training)
{
    mil_opts o;
    mil_opts_default(&o, MIL_ASMIL);
    o.d_feat = 5;
    o.d_inner = 6;
    o.asmil_heads = 2;
    o.asmil_tokens = 3;
    o.dropout = 0.f;
    o.asmil_kd_T = 0.5f;
    o.asmil_kd_weight = 1.f;
    fd_ctx c = {.training = training, .r_aux = 0.8f};
    nn_rng rng;
    nn_rng_seed(&rng, 11);
    REQUIRE(mil_asmil_init(&c.m, &o, &rng) == 0, "init: %s", ncmi_error());
    /* non-trivial weights; dimreduction and x positive so that no ReLU
     * pre-activation sits within eps of its kink */
    for (int i = 0; i < c.m.params->n; i++) {
        nn_tensor *p = c.m.params->t[i];
        if (strstr(p->name, "dimreduction"))
            nn_init_uniform(p, 0.05f, 0.5f, &rng);
        else if (strstr(p->name, "layer_norm.weight"))
            nn_init_uniform(p, 0.5f, 1.5f, &rng);
        else
            nn_init_uniform(p, -0.8f, 0.8f, &rng);
    }
    c.g = nn_graph_new();
    c.x = nn_tensor_new2(NULL, 4, 5);
    nn_init_uniform(c.x, 0.2f, 1.f, &rng);
    c.x->requires_grad = 1;
    c.R = nn_tensor_new2(NULL, 1, 6);
    nn_init_uniform(c.R, -1.f, 1.f, &rng);
    if (training) {
        int drop[1] = {1};
        mil_asmil_set_drop(&c.m, drop, 1);
    }
    nn_params_zero_grad(c.m.params);
    fd_loss(&c, 1);
    int bad = 0, checked = 0;
    for (int i = 0; i < c.m.params->n; i++) {
        if (c.m.params->kind[i] != NN_PARAM_WEIGHT) continue;
        fd_check_tensor(&c, c.m.params->t[i], c.m.params->t[i]->name, &bad);
        checked += (int)c.m.params->t[i]->numel;
    }
    fd_check_tensor(&c, c.x, "x", &bad);
    checked += (int)c.x->numel;
    EXPECT(bad == 0, "%d of %d elements disagree with finite differences", bad, checked);
    nn_graph_free(c.g);
    nn_tensor_free(c.x);
    nn_tensor_free(c.R);
    tr_model_free(&c.m);
}

TEST(mil_asmil_finite_differences_eval) { fd_run(0); }

TEST(mil_asmil_finite_differences_train_drop) { fd_run(1); }

/* ---- anchor: frozen stays, ema moves ---- */

static void anchor_run(int frozen)
{
    mil_opts o;
    mil_opts_default(&o, MIL_ASMIL);
    o.d_feat = 8;
    o.d_inner = 8;
    o.asmil_heads = 2;
    o.asmil_tokens = 2;
    o.asmil_anchor_frozen = frozen;
    o.asmil_ema = 0.99f;
    nn_rng rng;
    nn_rng_seed(&rng, 3);
    tr_model m;
    REQUIRE(mil_asmil_init(&m, &o, &rng) == 0, "init: %s", ncmi_error());
    REQUIRE(m.after_step != NULL, "no after_step hook");
    EXPECT(strstr(m.desc, frozen ? "frozen" : "ema") != NULL, "desc '%s'", m.desc);
    nn_params *P = m.params;
    /* snapshot the anchor */
    size_t total = 0;
    for (int i = 0; i < P->n; i++)
        if (!strncmp(P->t[i]->name, "EMA_model.", 10)) total += P->t[i]->numel;
    float *before = malloc(total * sizeof *before);
    size_t off = 0;
    for (int i = 0; i < P->n; i++)
        if (!strncmp(P->t[i]->name, "EMA_model.", 10)) {
            memcpy(before + off, P->t[i]->data, P->t[i]->numel * sizeof(float));
            off += P->t[i]->numel;
        }
    m.after_step(&m);
    m.after_step(&m);
    off = 0;
    int changed = 0, matches = 1;
    for (int i = 0; i < P->n; i++) {
        nn_tensor *a = P->t[i];
        if (strncmp(a->name, "EMA_model.", 10)) continue;
        const nn_tensor *s = nn_params_get(P, a->name + 10);
        REQUIRE(s && s->numel == a->numel, "%s has no student twin", a->name);
        for (size_t j = 0; j < a->numel; j++) {
            // NOLINTNEXTLINE(clang-analyzer-core.uninitialized.Assign): false positive, before holds a copy of every EMA tensor (same order, same offsets)
            float b = before[off + j];
            if (a->data[j] != b) changed++;
            /* two updates: a = d^2 b + (1 - d^2) s */
            double want = frozen ? b : 0.9801 * b + 0.0199 * s->data[j];
            if (fabs(a->data[j] - want) > 1e-6 * (1 + fabs(want))) matches = 0;
        }
        off += a->numel;
    }
    if (frozen)
        EXPECT(changed == 0, "frozen anchor changed in %d elements", changed);
    else
        EXPECT(changed > (int)total / 2, "EMA anchor moved in %d of %zu elements", changed,
               total);
    EXPECT(matches, "anchor values differ from the %s rule", frozen ? "frozen" : "EMA");
    free(before);
    tr_model_free(&m);
}

TEST(mil_asmil_anchor_frozen) { anchor_run(1); }

TEST(mil_asmil_anchor_ema) { anchor_run(0); }

/* ---- token dropping from the rng ---- */

TEST(mil_asmil_token_drop_rng)
{
    mil_opts o;
    mil_opts_default(&o, MIL_ASMIL);
    o.d_feat = 8;
    o.d_inner = 8;
    o.asmil_heads = 2;
    o.asmil_tokens = 6;
    o.asmil_drop = 2;
    o.dropout = 0.f;
    nn_rng rng;
    nn_rng_seed(&rng, 5);
    tr_model m;
    REQUIRE(mil_asmil_init(&m, &o, &rng) == 0, "init: %s", ncmi_error());
    nn_graph *g = nn_graph_new();
    nn_tensor *x = nn_tensor_new2(NULL, 9, 8);
    nn_init_uniform(x, -1.f, 1.f, &rng);
    int seen[6] = {0};
    float z0[8];
    for (int it = 0; it < 12; it++) {
        nn_rng r;
        nn_rng_seed(&r, 100 + (uint64_t)it);
        nn_params_zero_grad(m.params);
        nn_tensor *z = m.forward(&m, g, &x, 1, 1, &r, NULL);
        if (it == 0) memcpy(z0, z->data, sizeof z0);
        REQUIRE(nn_backward(g, nn_sum_all(g, z)) == 0, "backward: %s", ncmi_error());
        /* a dropped token's out_proj gets no gradient */
        int dropped = 0;
        for (int t = 0; t < 6; t++) {
            char nm[64];
            snprintf(nm, sizeof nm, "sub_attention.%d.out_proj.weight", t);
            nn_tensor *w = nn_params_get(m.params, nm);
            double s = 0;
            for (size_t j = 0; w->grad && j < w->numel; j++) s += fabs(w->grad[j]);
            if (s == 0) {
                dropped++;
                seen[t]++;
            }
        }
        EXPECT(dropped == 2, "step %d: %d tokens dropped, want 2", it, dropped);
        nn_graph_reset(g);
    }
    int distinct = 0;
    for (int t = 0; t < 6; t++) distinct += seen[t] > 0;
    EXPECT(distinct >= 4, "only %d different tokens were ever dropped", distinct);
    /* same seed, same draw; eval keeps every token and differs */
    nn_rng r;
    nn_rng_seed(&r, 100);
    nn_tensor *z = m.forward(&m, g, &x, 1, 1, &r, NULL);
    EXPECT(!memcmp(z->data, z0, sizeof z0), "same rng seed gave another z");
    nn_graph_reset(g);
    nn_graph_set_no_grad(g, 1);
    z = m.forward(&m, g, &x, 1, 0, NULL, NULL);
    EXPECT(memcmp(z->data, z0, sizeof z0) != 0, "eval z equals a token-dropped z");
    nn_tensor_free(x);
    nn_graph_free(g);
    tr_model_free(&m);
}

TEST(mil_asmil_bad_options)
{
    mil_opts o;
    nn_rng rng;
    nn_rng_seed(&rng, 1);
    tr_model m;
    mil_opts_default(&o, MIL_ASMIL);
    o.d_inner = 12;
    o.asmil_heads = 8;
    EXPECT(mil_asmil_init(&m, &o, &rng) != 0 && strstr(ncmi_error(), "multiple"),
           "d_inner 12 with 8 heads accepted");
    mil_opts_default(&o, MIL_ASMIL);
    o.asmil_drop = o.asmil_tokens;
    EXPECT(mil_asmil_init(&m, &o, &rng) != 0 && strstr(ncmi_error(), "drop"),
           "dropping every token accepted");
    mil_opts_default(&o, MIL_ASMIL);
    o.d_feat = 32;
    o.d_inner = 16;
    REQUIRE(mil_asmil_init(&m, &o, &rng) == 0, "defaults: %s", ncmi_error());
    /* official names */
    static const char *names[] = {"q", "cls", "dimreduction.fc1.weight",
                                  "sub_attention.7.q_proj.weight", "sub_attention.0.k_proj.bias",
                                  "sub_attention.3.v_proj.weight", "sub_attention.5.out_proj.bias",
                                  "sub_attention.2.layer_norm.weight",
                                  "bag_attention.layer_norm.bias", "bag_attention.q_proj.weight",
                                  "EMA_model.q", "EMA_model.dimreduction.fc1.weight",
                                  "EMA_model.sub_attention.7.k_proj.bias"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        EXPECT(nn_params_get(m.params, names[i]) != NULL, "no tensor %s", names[i]);
    EXPECT(nn_params_get(m.params, "dimreduction.fc1.bias") == NULL, "dimreduction has a bias");
    nn_tensor *cls = nn_params_get(m.params, "cls"), *q = nn_params_get(m.params, "q");
    double qs = 0, cs = 0;
    for (size_t j = 0; j < q->numel; j++) qs += (double)q->data[j] * q->data[j];
    for (size_t j = 0; j < cls->numel; j++) cs += fabs(cls->data[j]);
    qs = sqrt(qs / (double)q->numel);
    EXPECT(cs == 0, "cls not zero-initialised");
    EXPECT(qs > 5e-7 && qs < 2e-6, "q std %.3g, want ~1e-6", qs);
    EXPECT(q->ndim == 3 && q->shape[0] == 1 && q->shape[1] == 8 && q->shape[2] == 16,
           "q shape");
    tr_model_free(&m);
}

/* ---- through the trainer: key-instance bags, AdamW, one bag per step ---- */

enum { TB_N = 48, TB_F = 8 };

typedef struct tbags {
    int size[TB_N];
    float *X[TB_N];
    char id[TB_N][16];
} tbags;

static const char *tb_id(const tr_dataset *d, int i) { return ((tbags *)d->ctx)->id[i]; }

static int tb_inputs(const tr_dataset *d, nn_graph *g, const int *idx, int n, int training,
                     nn_rng *rng, nn_tensor **out)
{
    (void)training, (void)rng;
    if (n != 1) return ncmi_error_set("bags come one at a time");
    tbags *b = d->ctx;
    int shape[2] = {b->size[idx[0]], TB_F};
    out[0] = nn_tensor_from(g, 2, shape, b->X[idx[0]]);
    return 1;
}

TEST(mil_asmil_trainer_key_instances)
{
    tbags b;
    int labels[TB_N];
    nn_rng r;
    nn_rng_seed(&r, 21);
    for (int i = 0; i < TB_N; i++) {
        labels[i] = i % 2;
        b.size[i] = 6 + (int)nn_rng_below(&r, 15);
        b.X[i] = malloc((size_t)b.size[i] * TB_F * sizeof(float));
        nn_rng_fill_normal(&r, b.X[i], (size_t)b.size[i] * TB_F, 0.f, 1.f);
        /* positive bags hold 1-3 key instances shifted along the first axes */
        int keys = labels[i] ? 1 + (int)nn_rng_below(&r, 3) : 0;
        for (int k = 0; k < keys; k++)
            for (int j = 0; j < 3; j++) b.X[i][k * TB_F + j] += 3.f;
        snprintf(b.id[i], sizeof b.id[i], "bag%d", i);
    }
    tr_dataset d = {0};
    snprintf(d.name, sizeof d.name, "train");
    d.n = TB_N;
    d.labels = labels;
    d.bags = 1;
    d.sample_id = tb_id;
    d.inputs = tb_inputs;
    d.ctx = &b;

    mil_opts o;
    mil_opts_default(&o, MIL_ASMIL);
    o.d_feat = TB_F;
    o.d_inner = 16;
    o.asmil_heads = 4;
    o.asmil_tokens = 4;
    o.asmil_drop = 1;
    o.asmil_ema = 0.99f;
    nn_rng ir;
    nn_rng_seed(&ir, 2);
    tr_model m;
    REQUIRE(mil_asmil_init(&m, &o, &ir) == 0, "init: %s", ncmi_error());
    nn_tensor *aq = nn_params_get(m.params, "EMA_model.q");
    float aq0 = aq->data[0];
    tr_config c;
    tr_config_default(&c);
    char *names[2] = {"neg", "pos"};
    c.optim = NN_OPTIM_ADAMW;
    c.lr = 2e-3f;
    c.weight_decay = 1e-5f;
    c.schedule.base_lr = c.lr;
    c.clip_grad_norm = 5.f;
    c.epochs = 12;
    c.batch_size = 1;
    c.n_classes = 2;
    c.class_names = names;
    c.progress = -1;
    tr_trainer t;
    REQUIRE(tr_init(&t, &c, &m, &d, &d, NULL, &ir) == 0, "%s", ncmi_error());
    EXPECT(nn_params_get(&t.P_all, "Slide_classifier.fc.weight") != NULL,
           "no Slide_classifier.fc.weight in the checkpoint set");
    REQUIRE(tr_fit(&t) == 0, "%s", ncmi_error());
    int pred[TB_N];
    double prob[TB_N * 2];
    REQUIRE(tr_predict(&t, &d, TR_METHOD_LINEAR, pred, prob) == 0, "%s", ncmi_error());
    int hit = 0;
    for (int i = 0; i < TB_N; i++) hit += pred[i] == labels[i];
    printf("    asmil key-instance bags: training accuracy %.3f after %d epochs\n",
           (double)hit / TB_N, c.epochs);
    EXPECT(hit >= 0.9 * TB_N, "training accuracy %d of %d", hit, TB_N);
    EXPECT(aq->data[0] != aq0, "the EMA anchor never moved");
    tr_free(&t);
    tr_model_free(&m);
    for (int i = 0; i < TB_N; i++) free(b.X[i]);
}
