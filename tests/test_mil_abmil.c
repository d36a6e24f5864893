/* ABMIL / AEM head (mil/abmil.c).
 *
 * Golden: tests/reference/golden_mil_abmil.py writes tests/golden/mil_abmil.safetensors
 * with the PyTorch reference tests/reference/mil_ref_abmil.py (official
 * state_dict names): bags of N = 1, 7, 13, 50, forward z / attention /
 * logits, CE loss with the linear head, every parameter gradient and the
 * input gradient; AEM's term (lambda 0.1; all instances, top-5, top-100 >= N)
 * with its gradients; the NCMI head (eval mode, fixed centre) on the z rows
 * of the four bags with the gradients w.r.t. the ABMIL parameters, xi and
 * every bag. tests/golden/mil_abmil_mlp.safetensors (the same script): the
 * head with Ilse et al.'s instance network (mil.instance_layers, dropout 0),
 * gated and tanh attention, forward and every gradient. Each tensor is
 * compared element by element with
 *
 *     |ours - ref| <= 1e-4 * max(|ref|, scale)
 *     scale = max(1e-2 * max_j |ref_j| of the tensor, case floor)
 *
 * as tests/test_golden.c, plus, for gradients, a case floor of 1e-2 x the
 * largest gradient magnitude of the whole case (all parameters and inputs):
 * some gradients are identically zero in exact arithmetic (the bias of
 * attention_weights, because the softmax is shift-invariant; every attention
 * parameter at N = 1, where alpha = 1), so the float64 reference holds
 * ~1e-17 there and our float32 holds rounding noise of order 1e-7 x the
 * gradient scale: they are checked against an absolute 1e-6 x max|grad|.
 *
 * Finite differences: the whole head's forward (z and the AEM term, small
 * dims) against central differences over every parameter and the bag, as
 * tests/gradcheck.c does for single ops. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../mil/mil.h"
#include "../nn/error.h"
#include "../nn/ncmi.h"
#include "../nn/ops.h"
#include "../nn/params.h"
#include "../nn/safetensors.h"
#include "golden_io.h"
#include "test.h"

#define G_RTOL 1e-4
#define G_FLOOR 1e-2
#define G_FILE "mil_abmil.safetensors"

static const int SIZES[4] = {1, 7, 13, 50};

static const char *gdir(void)
{
    const char *d = getenv("NCMI_GOLDEN");
    return d && *d ? d : "tests/golden";
}

static int gopen(nn_safetensors *st)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", gdir(), G_FILE);
    if (nn_st_open(st, path) != 0) {
        test_fail_at(__FILE__, __LINE__,
                     "cannot open golden file (committed; regenerate with `make golden`): %s",
                     ncmi_error());
        return -1;
    }
    return 0;
}

typedef struct {
    double worst;
    char worst_name[96];
    int ncompared;
} gstats;

/* max |ref| of tensor `name` (0 if absent). */
static double gmaxabs(const nn_safetensors *st, const char *name)
{
    nn_tensor *t = test_st_tensor(st, name);
    if (!t) return 0;
    double m = 0;
    for (size_t i = 0; i < t->numel; i++) m = fmax(m, fabs((double)t->data[i]));
    nn_tensor_free(t);
    return m;
}

/* Compare n floats with golden tensor `name`; floor: the case's absolute scale. */
static void gcmp(gstats *gs, const nn_safetensors *st, const char *name, const float *ours,
                 size_t n, double floor)
{
    if (!ours) {
        test_fail_at(__FILE__, __LINE__, "%s: no values (gradient never computed?)", name);
        return;
    }
    const nn_st_entry *e = nn_st_find(st, name);
    if (!e || e->numel != n) {
        test_fail_at(__FILE__, __LINE__, "%s: missing in the golden file or %zu elements, not %zu",
                     name, e ? e->numel : 0, n);
        return;
    }
    float *ref = malloc(n * sizeof *ref);
    NCMI_CHECK(ref, "out of memory");
    if (nn_st_read_f32(st, name, ref, n, -1, NULL) != 0) {
        test_fail_at(__FILE__, __LINE__, "%s", ncmi_error());
        free(ref);
        return;
    }
    double maxref = 0;
    for (size_t i = 0; i < n; i++) maxref = fmax(maxref, fabs((double)ref[i]));
    double scale = fmax(G_FLOOR * maxref, floor);
    int bad = 0;
    double worst = 0;
    size_t wi = 0;
    for (size_t i = 0; i < n; i++) {
        double a = ours[i], b = ref[i];
        double den = fmax(fabs(b), scale);
        double err = fabs(a - b) / (den > 0 ? den : 1.0);
        if (isnan(err)) err = INFINITY;
        if (err > worst) {
            worst = err;
            wi = i;
        }
        if (!(fabs(a - b) <= G_RTOL * den)) bad++;
    }
    if (bad)
        test_fail_at(__FILE__, __LINE__,
                     "%s: %d of %zu elements off; worst [%zu] ours %.9g ref %.9g (rel %.3g)", name,
                     bad, n, wi, ours[wi], ref[wi], worst);
    if (worst > gs->worst || gs->ncompared == 0) {
        gs->worst = worst;
        snprintf(gs->worst_name, sizeof gs->worst_name, "%s", name);
    }
    gs->ncompared++;
    free(ref);
}

/* ---- the head under test, with the golden weights ---- */

typedef struct {
    tr_model m;
    nn_params P_head; /* the trainer's linear head: classifier.fc */
    nn_linear_m fc;
} head;

static int head_setup(head *h, const nn_safetensors *st, mil_head_kind kind, int topk)
{
    mil_opts o;
    mil_opts_default(&o, kind);
    o.d_feat = 32;
    o.d_inner = 16;
    o.attn_hidden = 8;
    o.aem_lambda = 0.1f;
    o.aem_topk = topk;
    nn_rng rng;
    nn_rng_seed(&rng, 3);
    if (mil_abmil_init(&h->m, &o, &rng) != 0) {
        test_fail_at(__FILE__, __LINE__, "mil_abmil_init: %s", ncmi_error());
        return -1;
    }
    nn_params_init(&h->P_head);
    nn_linear_m_init(&h->fc, &h->P_head, h->m.classifier, 16, 3, 1, &rng);
    if (nn_params_load_st(h->m.params, st, 0) != 0 || nn_params_load_st(&h->P_head, st, 0) != 0) {
        test_fail_at(__FILE__, __LINE__, "loading the golden weights: %s", ncmi_error());
        nn_params_free(&h->P_head);
        tr_model_free(&h->m);
        return -1;
    }
    return 0;
}

static void head_free(head *h)
{
    nn_params_free(&h->P_head);
    tr_model_free(&h->m);
}

/* 1e-2 x the largest reference gradient of case `c` (params + inputs). */
static double case_floor(const nn_safetensors *st, const char *c, const head *h, int with_head)
{
    char name[256];
    double m = 0;
    const nn_params *Ps[2] = {h->m.params, &h->P_head};
    for (int k = 0; k < (with_head ? 2 : 1); k++)
        for (int i = 0; i < Ps[k]->n; i++) {
            snprintf(name, sizeof name, "%s.grad.%s", c, Ps[k]->t[i]->name);
            m = fmax(m, gmaxabs(st, name));
        }
    snprintf(name, sizeof name, "%s.grad.x", c);
    m = fmax(m, gmaxabs(st, name));
    return G_FLOOR * m;
}

static void cmp_param_grads(gstats *gs, const nn_safetensors *st, const char *c,
                            const nn_params *P, double floor)
{
    char name[256];
    for (int i = 0; i < P->n; i++) {
        if (P->kind[i] != NN_PARAM_WEIGHT) continue;
        snprintf(name, sizeof name, "%s.grad.%s", c, P->t[i]->name);
        gcmp(gs, st, name, P->t[i]->grad, P->t[i]->numel, floor);
    }
}

/* One bag through the head + linear + CE (+ the AEM term when aem). */
static void run_bag_case(gstats *gs, const nn_safetensors *st, head *h, const char *c, int N,
                         int aem)
{
    char name[256];
    snprintf(name, sizeof name, "x.n%d", N);
    nn_tensor *x = test_st_tensor(st, name);
    int y[1];
    snprintf(name, sizeof name, "y.n%d", N);
    if (!x || x->ndim != 2 || x->shape[0] != N || test_st_labels(st, name, y, 1) != 0) {
        test_fail_at(__FILE__, __LINE__, "x.n%d / y.n%d missing or malformed", N, N);
        nn_tensor_free(x);
        return;
    }
    x->requires_grad = 1;
    nn_params_zero_grad(h->m.params);
    nn_params_zero_grad(&h->P_head);
    nn_graph *g = nn_graph_new();
    nn_graph_set_free_dead(g, 1); /* as tr_step: the gradients must not depend on it */
    nn_tensor *aux = NULL;
    nn_tensor *z = h->m.forward(&h->m, g, &x, 1, 1, NULL, &aux);
    nn_tensor *logits = nn_linear_m_forward(g, &h->fc, z);
    nn_tensor *loss = nn_cross_entropy(g, logits, y, 0.f);
    if (aem) {
        if (!aux) {
            test_fail_at(__FILE__, __LINE__, "%s: aem returned no aux term", c);
            goto done;
        }
        loss = nn_loss_add_aux(g, loss, aux, 1.f);
    } else {
        EXPECT(aux == NULL, "%s: abmil returned an aux term", c);
    }
    nn_tensor_keep(z);
    nn_tensor_keep(logits);
    if (aux) nn_tensor_keep(aux);
    if (nn_backward(g, loss) != 0) {
        test_fail_at(__FILE__, __LINE__, "backward: %s", ncmi_error());
        goto done;
    }
    int an = 0, ak = 0;
    const float *att = mil_last_attention(&h->m, &an, &ak);
    REQUIRE(att && an == N && ak == 1, "%s: attention %d x %d, expected %d x 1", c, an, ak, N);
    double sum = 0;
    for (int i = 0; i < N; i++) sum += att[i];
    EXPECT(fabs(sum - 1) <= 1e-5, "%s: attention sums to %.9g", c, sum);

    double floor = case_floor(st, c, h, 1);
    if (!aem) {
        snprintf(name, sizeof name, "%s.z", c);
        gcmp(gs, st, name, z->data, z->numel, 0);
        snprintf(name, sizeof name, "%s.alpha", c);
        gcmp(gs, st, name, att, (size_t)N, 0);
        snprintf(name, sizeof name, "%s.logits", c);
        gcmp(gs, st, name, logits->data, logits->numel, 0);
    } else {
        snprintf(name, sizeof name, "%s.aux", c);
        gcmp(gs, st, name, aux->data, 1, 0);
    }
    snprintf(name, sizeof name, "%s.loss", c);
    gcmp(gs, st, name, loss->data, 1, 0);
    cmp_param_grads(gs, st, c, h->m.params, floor);
    cmp_param_grads(gs, st, c, &h->P_head, floor);
    snprintf(name, sizeof name, "%s.grad.x", c);
    gcmp(gs, st, name, x->grad, x->numel, floor);
done:
    nn_graph_free(g);
    nn_tensor_free(x);
}

TEST(mil_abmil_golden_ce)
{
    nn_safetensors st;
    if (gopen(&st) != 0) return;
    head h;
    if (head_setup(&h, &st, MIL_ABMIL, 0) == 0) {
        gstats gs = {0};
        for (int i = 0; i < 4; i++) {
            char c[32];
            snprintf(c, sizeof c, "ce.n%d", SIZES[i]);
            run_bag_case(&gs, &st, &h, c, SIZES[i], 0);
        }
        printf("    %s ce: %d tensors, max rel err %.3g (%s)\n", G_FILE, gs.ncompared, gs.worst,
               gs.worst_name);
        EXPECT(gs.ncompared == 4 * 14, "only %d tensors compared", gs.ncompared);
        head_free(&h);
    }
    nn_st_close(&st);
}

TEST(mil_abmil_golden_aem)
{
    static const struct {
        const char *name;
        int topk, n, sizes[3];
    } cases[] = {{"aem", 0, 3, {1, 7, 50}}, {"aem_top5", 5, 2, {7, 50}}, {"aem_top100", 100, 1, {7}}};
    nn_safetensors st;
    if (gopen(&st) != 0) return;
    gstats gs = {0};
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        head h;
        if (head_setup(&h, &st, MIL_AEM, cases[k].topk) != 0) break;
        for (int i = 0; i < cases[k].n; i++) {
            char c[48];
            snprintf(c, sizeof c, "%s.n%d", cases[k].name, cases[k].sizes[i]);
            run_bag_case(&gs, &st, &h, c, cases[k].sizes[i], 1);
        }
        head_free(&h);
    }
    printf("    %s aem: %d tensors, max rel err %.3g (%s)\n", G_FILE, gs.ncompared, gs.worst,
           gs.worst_name);
    EXPECT(gs.ncompared == 6 * 12, "only %d tensors compared", gs.ncompared);
    nn_st_close(&st);
}

/* The NCMI head (eval mode: the centre is used, not updated) on the z rows
 * of four bags. */
TEST(mil_abmil_golden_ncmi)
{
    nn_safetensors st;
    if (gopen(&st) != 0) return;
    head h;
    if (head_setup(&h, &st, MIL_ABMIL, 0) != 0) {
        nn_st_close(&st);
        return;
    }
    nn_params Pn;
    nn_params_init(&Pn);
    nn_ncmi nc;
    nn_ncmi_cfg cfg = nn_ncmi_cfg_default();
    nn_tensor *x[4] = {0}, *xi = test_st_tensor(&st, "ncmi.xi"), *c = test_st_tensor(&st, "ncmi.center");
    int y[4];
    nn_graph *g = nn_graph_new();
    REQUIRE(nn_ncmi_init(&nc, &Pn, "ncmi", 3, 16, &cfg, NULL, NULL) == 0, "%s", ncmi_error());
    if (!xi || !c || xi->numel != 48 || c->numel != 16 || test_st_labels(&st, "ncmi.labels", y, 4) != 0) {
        test_fail_at(__FILE__, __LINE__, "ncmi.xi / center / labels missing or malformed");
        goto done;
    }
    memcpy(nc.xi->data, xi->data, 48 * sizeof(float));
    memcpy(nc.center->data, c->data, 16 * sizeof(float));
    nc.center_init->data[0] = 1;
    nn_tensor *zs[4];
    for (int i = 0; i < 4; i++) {
        char name[32];
        snprintf(name, sizeof name, "x.n%d", SIZES[i]);
        x[i] = test_st_tensor(&st, name);
        REQUIRE(x[i], "%s missing", name);
        x[i]->requires_grad = 1;
        zs[i] = h.m.forward(&h.m, g, &x[i], 1, 1, NULL, NULL);
    }
    nn_tensor *z = nn_concat(g, zs, 4, 0);
    nn_tensor *loss = nn_ncmi_loss(g, &nc, z, y, 0);
    if (nn_backward(g, loss) != 0) {
        test_fail_at(__FILE__, __LINE__, "backward: %s", ncmi_error());
        goto done;
    }
    EXPECT(memcmp(nc.center->data, c->data, 16 * sizeof(float)) == 0,
           "eval-mode NCMI moved the centre");
    gstats gs = {0};
    double m = gmaxabs(&st, "ncmi.grad.xi");
    char name[256];
    for (int i = 0; i < h.m.params->n; i++) {
        snprintf(name, sizeof name, "ncmi.grad.%s", h.m.params->t[i]->name);
        m = fmax(m, gmaxabs(&st, name));
    }
    for (int i = 0; i < 4; i++) {
        snprintf(name, sizeof name, "ncmi.grad.x.n%d", SIZES[i]);
        m = fmax(m, gmaxabs(&st, name));
    }
    const double floor = G_FLOOR * m;
    gcmp(&gs, &st, "ncmi.z", z->data, z->numel, 0);
    gcmp(&gs, &st, "ncmi.loss", loss->data, 1, 0);
    cmp_param_grads(&gs, &st, "ncmi", h.m.params, floor);
    gcmp(&gs, &st, "ncmi.grad.xi", nc.xi->grad, nc.xi->numel, floor);
    for (int i = 0; i < 4; i++) {
        snprintf(name, sizeof name, "ncmi.grad.x.n%d", SIZES[i]);
        gcmp(&gs, &st, name, x[i]->grad, x[i]->numel, floor);
    }
    printf("    %s ncmi: %d tensors, max rel err %.3g (%s)\n", G_FILE, gs.ncompared, gs.worst,
           gs.worst_name);
done:
    for (int i = 0; i < 4; i++) nn_tensor_free(x[i]);
    nn_tensor_free(xi);
    nn_tensor_free(c);
    nn_graph_free(g);
    nn_ncmi_free(&nc);
    nn_params_free(&Pn);
    head_free(&h);
    nn_st_close(&st);
}

/* ---- names, options, shapes ---- */

TEST(mil_abmil_names)
{
    static const char *const keys[] = {
        "dimreduction.fc1.weight",           "attention.attention_V.0.weight",
        "attention.attention_V.0.bias",      "attention.attention_U.0.weight",
        "attention.attention_U.0.bias",      "attention.attention_weights.weight",
        "attention.attention_weights.bias",
    };
    static const int shapes[][2] = {{512, 1024}, {128, 512}, {128, 0}, {128, 512},
                                    {128, 0},    {1, 128},   {1, 0}};
    mil_opts o;
    mil_opts_default(&o, MIL_ABMIL);
    nn_rng rng;
    nn_rng_seed(&rng, 1);
    tr_model m;
    REQUIRE(mil_abmil_init(&m, &o, &rng) == 0, "%s", ncmi_error());
    EXPECT(m.params->n == 7, "%d tensors", m.params->n);
    for (int i = 0; i < 7 && i < m.params->n; i++) {
        const nn_tensor *t = m.params->t[i];
        EXPECT(strcmp(t->name, keys[i]) == 0, "tensor %d is %s, official %s", i, t->name, keys[i]);
        EXPECT(t->shape[0] == shapes[i][0] && (shapes[i][1] == 0 ? t->ndim == 1
                                                                 : t->shape[1] == shapes[i][1]),
               "%s: shape", t->name);
    }
    EXPECT(strcmp(m.classifier, "classifier.fc") == 0, "classifier %s", m.classifier);
    EXPECT(m.dim == 512, "dim %d", m.dim);
    /* nn.Linear init: |W1| <= 1/sqrt(1024) (kaiming uniform a = sqrt 5) */
    float mx = 0;
    for (size_t i = 0; i < m.params->t[0]->numel; i++) mx = fmaxf(mx, fabsf(m.params->t[0]->data[i]));
    EXPECT(mx <= 1.f / 32.f && mx > 0.9f / 32.f, "fc1 init max %g", mx);
    EXPECT(mil_last_attention(&m, NULL, NULL) == NULL, "attention before any forward");
    tr_model_free(&m);

    o.d_inner = 0;
    EXPECT(mil_abmil_init(&m, &o, &rng) == -1 && strstr(ncmi_error(), "d_inner"),
           "d_inner 0 accepted (%s)", ncmi_error());
    mil_opts_default(&o, MIL_TRANSMIL);
    EXPECT(mil_abmil_init(&m, &o, &rng) == -1, "transmil accepted by mil_abmil_init");
    mil_opts_default(&o, MIL_AEM);
    o.aem_topk = -1;
    EXPECT(mil_abmil_init(&m, &o, &rng) == -1, "top_k -1 accepted");
}

/* Attention sums to 1 on a large bag, a [1, N, D] bag gives the same z,
 * the lambda scale multiplies the AEM term, scale 0 drops it. */
TEST(mil_abmil_attention_and_lambda_scale)
{
    mil_opts o;
    mil_opts_default(&o, MIL_AEM);
    o.d_feat = 24;
    o.d_inner = 12;
    o.attn_hidden = 6;
    nn_rng rng;
    nn_rng_seed(&rng, 5);
    tr_model m;
    REQUIRE(mil_abmil_init(&m, &o, &rng) == 0, "%s", ncmi_error());
    const int N = 5000;
    nn_tensor *x = nn_tensor_new2(NULL, N, 24);
    nn_rng_fill_uniform(&rng, x->data, x->numel, -2.f, 2.f);
    nn_graph *g = nn_graph_new();
    nn_tensor *aux = NULL;
    nn_tensor *z = m.forward(&m, g, &x, 1, 1, NULL, &aux);
    int n = 0, k = 0;
    const float *a = mil_last_attention(&m, &n, &k);
    REQUIRE(a && n == N && k == 1, "attention %d x %d", n, k);
    double sum = 0, ent = 0;
    int pos = 1;
    for (int i = 0; i < N; i++) {
        sum += a[i];
        pos &= a[i] > 0;
        ent += a[i] * log(a[i]);
    }
    EXPECT(fabs(sum - 1) <= 1e-5 && pos, "attention sums to %.9g (all > 0: %d)", sum, pos);
    REQUIRE(aux && aux->numel == 1, "no aux");
    EXPECT_NEAR(aux->data[0], 0.1 * ent, 1e-5 * fabs(ent) + 1e-7);
    float a0 = aux->data[0];
    float z0[12];
    memcpy(z0, z->data, sizeof z0);

    mil_aem_set_lambda_scale(&m, 0.5f);
    nn_graph_reset(g);
    int sh3[3] = {1, N, 24};
    nn_tensor *x3 = nn_reshape(g, x, 3, sh3);
    z = m.forward(&m, g, &x3, 1, 1, NULL, &aux);
    REQUIRE(aux, "no aux at scale 0.5");
    EXPECT_NEAR(aux->data[0], 0.5 * a0, 1e-6 * fabs(a0));
    EXPECT(z->ndim == 2 && z->shape[0] == 1 && memcmp(z->data, z0, sizeof z0) == 0,
           "[1,N,D] bag gives a different z");
    mil_aem_set_lambda_scale(&m, 0.f);
    nn_graph_reset(g);
    aux = (nn_tensor *)1;
    m.forward(&m, g, &x, 1, 1, NULL, &aux);
    EXPECT(aux == NULL, "scale 0 still returns a term");
    nn_graph_free(g);
    nn_tensor_free(x);
    tr_model_free(&m);
}

/* ---- finite differences of the whole head ---- */

typedef struct {
    tr_model m;
    nn_tensor *x;
    const float *R; /* [D_inner] upstream of z */
    int aem;
} fd_ctx;

/* L = sum R z (+ aux), accumulated in double; grads when g records. */
static double fd_loss(fd_ctx *f, int backward)
{
    nn_graph *g = nn_graph_new();
    if (!backward) nn_graph_set_no_grad(g, 1);
    nn_tensor *aux = NULL;
    nn_tensor *z = f->m.forward(&f->m, g, &f->x, 1, 1, NULL, f->aem ? &aux : NULL);
    double L = 0;
    for (size_t k = 0; k < z->numel; k++) L += (double)f->R[k] * z->data[k];
    if (aux) L += aux->data[0];
    if (backward) {
        nn_tensor *Rt = nn_tensor_from(g, 2, z->shape, f->R);
        nn_tensor *l = nn_sum_all(g, nn_mul(g, z, Rt));
        if (aux) l = nn_add(g, l, aux);
        NCMI_CHECK(nn_backward(g, l) == 0, "%s", ncmi_error());
    }
    nn_graph_free(g);
    return L;
}

static void fd_check(mil_head_kind kind, int topk)
{
    const int Df = 6, Di = 5, A = 4, N = 7;
    const float eps = 1e-2f, atol = 1e-3f, rtol = 1e-2f;
    mil_opts o;
    mil_opts_default(&o, kind);
    o.d_feat = Df;
    o.d_inner = Di;
    o.attn_hidden = A;
    o.aem_lambda = 0.5f; /* large enough that the term matters */
    o.aem_topk = topk;
    fd_ctx f = {.aem = kind == MIL_AEM};
    float R[5];
    nn_rng rng;
    /* pick a seed whose relu pre-activations all stay 3 eps * (1 + max|x|)
     * away from the kink, so no difference straddles it (deterministic) */
    int ok = 0;
    for (uint64_t seed = 1; seed < 200 && !ok; seed++) {
        nn_rng_seed(&rng, seed);
        REQUIRE(mil_abmil_init(&f.m, &o, &rng) == 0, "%s", ncmi_error());
        f.x = nn_tensor_new2(NULL, N, Df);
        nn_rng_fill_uniform(&rng, f.x->data, f.x->numel, -1.5f, 1.5f);
        const nn_tensor *W = f.m.params->t[0];
        double mw = 0;
        for (size_t i = 0; i < W->numel; i++) mw = fmax(mw, fabs(W->data[i]));
        ok = 1;
        for (int i = 0; i < N && ok; i++)
            for (int j = 0; j < Di && ok; j++) {
                double p = 0;
                for (int k = 0; k < Df; k++) p += (double)W->data[j * Df + k] * f.x->data[i * Df + k];
                if (fabs(p) < 3 * eps * (1.5 + mw)) ok = 0;
            }
        if (!ok) {
            nn_tensor_free(f.x);
            tr_model_free(&f.m);
        }
    }
    REQUIRE(ok, "no seed keeps the relu inputs away from 0");
    nn_rng_fill_uniform(&rng, R, 5, -1.f, 1.f);
    f.R = R;
    f.x->requires_grad = 1;
    fd_loss(&f, 1);
    nn_tensor *ts[8];
    int nt = 0;
    for (int i = 0; i < f.m.params->n; i++) ts[nt++] = f.m.params->t[i];
    ts[nt++] = f.x;
    int reported = 0, checked = 0;
    for (int t = 0; t < nt; t++) {
        nn_tensor *p = ts[t];
        for (size_t j = 0; j < p->numel; j++) {
            float orig = p->data[j];
            p->data[j] = orig + eps;
            double Lp = fd_loss(&f, 0);
            p->data[j] = orig - eps;
            double Lm = fd_loss(&f, 0);
            p->data[j] = orig;
            double num = (Lp - Lm) / (2.0 * eps);
            double ana = p->grad ? p->grad[j] : 0.0;
            checked++;
            if (!(fabs(ana - num) <= atol + rtol * fabs(num)) && reported++ < 5)
                test_fail_at(__FILE__, __LINE__, "%s top_k %d: %s[%zu]: analytic %.7g numeric %.7g",
                             mil_head_kind_name(kind), topk, p->name[0] ? p->name : "x", j, ana,
                             num);
        }
    }
    EXPECT(checked == Di * Df + 2 * (A * Di + A) + A + 1 + N * Df, "%d elements checked", checked);
    nn_tensor_free(f.x);
    tr_model_free(&f.m);
}

TEST(mil_abmil_finite_differences) { fd_check(MIL_ABMIL, 0); }
TEST(mil_aem_finite_differences) { fd_check(MIL_AEM, 0); }
TEST(mil_aem_topk_finite_differences) { fd_check(MIL_AEM, 3); }

/* ---- Ilse et al.'s instance network (mil.instance_layers, mil.gated) ---- */

/* ABMIL with instance layers [12, 10], attention hidden 8, dropout p, gated or
 * not; weights from the golden variant `var` (NULL: as initialised). */
static int mlp_head_setup(head *h, const nn_safetensors *st, const char *var, int gated, float p)
{
    mil_opts o;
    mil_opts_default(&o, MIL_ABMIL);
    o.d_feat = 32;
    o.attn_hidden = 8;
    o.n_instance_layers = 2;
    o.instance_layers[0] = 12;
    o.instance_layers[1] = 10;
    o.instance_dropout = p;
    o.gated = gated;
    nn_rng rng;
    nn_rng_seed(&rng, 4);
    if (mil_abmil_init(&h->m, &o, &rng) != 0) {
        test_fail_at(__FILE__, __LINE__, "mil_abmil_init: %s", ncmi_error());
        return -1;
    }
    nn_params_init(&h->P_head);
    nn_linear_m_init(&h->fc, &h->P_head, h->m.classifier, 10, 3, 1, &rng);
    const nn_params *Ps[2] = {h->m.params, &h->P_head};
    for (int k = 0; var && k < 2; k++)
        for (int i = 0; i < Ps[k]->n; i++) {
            nn_tensor *t = Ps[k]->t[i];
            char name[256];
            snprintf(name, sizeof name, "%s.%s", var, t->name);
            if (nn_st_read_f32(st, name, t->data, t->numel, t->ndim, t->shape) != 0) {
                test_fail_at(__FILE__, __LINE__, "golden %s: %s", name, ncmi_error());
                head_free(h);
                return -1;
            }
        }
    return 0;
}

TEST(mil_abmil_instance_layers_golden)
{
    nn_safetensors st;
    char path[1024];
    snprintf(path, sizeof path, "%s/mil_abmil_mlp.safetensors", gdir());
    REQUIRE(nn_st_open(&st, path) == 0, "cannot open golden file (regenerate with `make golden`): %s",
            ncmi_error());
    static const int sizes[3] = {1, 7, 50};
    for (int gated = 1; gated >= 0; gated--) {
        const char *var = gated ? "mlp_gated" : "mlp_tanh";
        head h;
        if (mlp_head_setup(&h, &st, var, gated, 0.f) != 0) break;
        EXPECT(h.m.dim == 10 && h.m.params->n == (gated ? 10 : 8), "%s: dim %d, %d tensors", var, h.m.dim,
               h.m.params->n);
        gstats gs = {0};
        for (int i = 0; i < 3; i++) {
            char c[48];
            snprintf(c, sizeof c, "%s.n%d", var, sizes[i]);
            run_bag_case(&gs, &st, &h, c, sizes[i], 0);
        }
        printf("    mil_abmil_mlp.safetensors %s: %d tensors, max rel err %.3g (%s)\n", var, gs.ncompared,
               gs.worst, gs.worst_name);
        /* z, alpha, logits, loss, the gradients of every parameter and of x */
        EXPECT(gs.ncompared == 3 * (4 + (gated ? 10 : 8) + 2 + 1), "%s: only %d tensors compared", var,
               gs.ncompared);
        head_free(&h);
    }
    nn_st_close(&st);
}

TEST(mil_abmil_instance_layers_names_dropout)
{
    static const char *const keys[] = {
        "feature_extractor.0.weight",     "feature_extractor.0.bias",
        "feature_extractor.3.weight",     "feature_extractor.3.bias",
        "attention.attention_V.0.weight", "attention.attention_V.0.bias",
        "attention.attention_weights.weight", "attention.attention_weights.bias",
    };
    head h;
    REQUIRE(mlp_head_setup(&h, NULL, NULL, 0, 0.5f) == 0, "setup");
    EXPECT(h.m.params->n == 8, "%d tensors", h.m.params->n);
    for (int i = 0; i < 8 && i < h.m.params->n; i++)
        EXPECT(strcmp(h.m.params->t[i]->name, keys[i]) == 0, "tensor %d is %s, want %s", i,
               h.m.params->t[i]->name, keys[i]);
    EXPECT(strstr(h.m.desc, "32-12-10") && strstr(h.m.desc, "dropout 0.5") && strstr(h.m.desc, ", attention 8"),
           "desc %s", h.m.desc);
    /* dropout: training with an rng changes z, evaluation is deterministic and ignores it */
    nn_rng r;
    nn_rng_seed(&r, 9);
    nn_tensor *x = nn_tensor_new2(NULL, 20, 32);
    nn_rng_fill_normal(&r, x->data, x->numel, 0.f, 1.f);
    float ze[2][10], zt[10];
    for (int k = 0; k < 2; k++) {
        nn_graph *g = nn_graph_new();
        nn_tensor *z = h.m.forward(&h.m, g, &x, 1, 0, NULL, NULL);
        memcpy(ze[k], z->data, sizeof ze[k]);
        nn_graph_free(g);
    }
    nn_graph *g = nn_graph_new();
    nn_tensor *z = h.m.forward(&h.m, g, &x, 1, 1, &r, NULL);
    memcpy(zt, z->data, sizeof zt);
    nn_graph_free(g);
    EXPECT(memcmp(ze[0], ze[1], sizeof ze[0]) == 0, "evaluation is not deterministic");
    EXPECT(memcmp(ze[0], zt, sizeof zt) != 0, "training with dropout 0.5 gave the evaluation z");
    /* the same weights without dropout give the same evaluation z */
    head h0;
    REQUIRE(mlp_head_setup(&h0, NULL, NULL, 0, 0.f) == 0, "setup");
    g = nn_graph_new();
    z = h0.m.forward(&h0.m, g, &x, 1, 0, NULL, NULL);
    EXPECT(memcmp(ze[0], z->data, sizeof zt) == 0, "dropout changed the evaluation forward");
    nn_graph_free(g);
    head_free(&h0);
    nn_tensor_free(x);
    head_free(&h);
    /* bad options */
    mil_opts o;
    mil_opts_default(&o, MIL_ABMIL);
    o.n_instance_layers = 1;
    o.instance_layers[0] = 0;
    tr_model m;
    nn_rng_seed(&r, 1);
    EXPECT(mil_abmil_init(&m, &o, &r) == -1 && strstr(ncmi_error(), "width 0"), "width 0 accepted (%s)",
           ncmi_error());
    o.instance_layers[0] = 4;
    o.instance_dropout = 1.f;
    EXPECT(mil_abmil_init(&m, &o, &r) == -1 && strstr(ncmi_error(), "dropout"), "dropout 1 accepted (%s)",
           ncmi_error());
}
