/* TransMIL head (mil/transmil.c).
 *
 * Golden: tests/golden/mil_transmil.safetensors from
 * tests/reference/golden_mil_transmil.py (a PyTorch TransMIL with the official
 * state_dict names, tests/reference/mil_ref_transmil.py; values in float64).
 * For each bag (N = 1, 7, 20, 50, and N = 1, 20 with the legacy slice) the
 * embedding z, the logits of the linear head _fc2, the class token's stored
 * attention, the cross-entropy, every parameter gradient and the input
 * gradient are compared with the rule of tests/test_golden.c:
 *     |ours - ref| <= 1e-4 * max(|ref|, 1e-2 * max_j |ref_j|)
 * (the floor: 1e-2 of the tensor's largest magnitude, for elements near zero
 * only by cancellation). Float32 PyTorch itself reaches ~8e-5 here: the six
 * pseudo-inverse iterations amplify rounding.
 *
 * Finite differences: the whole head on a tiny bag (Nystrom approximation in
 * use: 10 tokens, 3 landmarks), every input element and 12 elements spread
 * over each parameter tensor (all of them: 5 s; this keeps the test fast). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../mil/mil.h"
#include "../nn/error.h"
#include "../nn/ops.h"
#include "../nn/params.h"
#include "../nn/safetensors.h"
#include "golden_io.h"
#include "test.h"

#define TM_RTOL 1e-4
#define TM_FLOOR 1e-2

static const char *golden_dir(void)
{
    const char *d = getenv("NCMI_GOLDEN");
    return d && *d ? d : "tests/golden";
}

typedef struct {
    double worst;
    char worst_name[160];
    int ncompared;
} tm_stats;

/* Compare n floats with tensor `name` (numel checked). */
static void tm_cmp(tm_stats *ts, const nn_safetensors *st, const char *name, const float *ours,
                   size_t n)
{
    if (!ours) {
        test_fail_at(__FILE__, __LINE__, "%s: no values (gradient never computed?)", name);
        return;
    }
    float *ref = malloc((n ? n : 1) * sizeof *ref);
    NCMI_CHECK(ref, "out of memory");
    if (nn_st_read_f32(st, name, ref, n, -1, NULL) != 0) {
        test_fail_at(__FILE__, __LINE__, "%s", ncmi_error());
        free(ref);
        return;
    }
    double maxref = 0, worst = 0;
    size_t wi = 0;
    int bad = 0;
    for (size_t i = 0; i < n; i++) maxref = fmax(maxref, fabs((double)ref[i]));
    for (size_t i = 0; i < n; i++) {
        double a = ours[i], b = ref[i];
        double den = fmax(fabs(b), TM_FLOOR * maxref);
        double err = fabs(a - b) / (den > 0 ? den : 1.0);
        if (isnan(err)) err = INFINITY;
        if (err > worst) worst = err, wi = i;
        if (!(fabs(a - b) <= TM_RTOL * den)) bad++;
    }
    if (bad)
        test_fail_at(__FILE__, __LINE__, "%s: %d of %zu elements off; worst [%zu] ours %.9g ref %.9g (rel %.3g)",
                     name, bad, n, wi, ours[wi], ref[wi], worst);
    if (worst > ts->worst || ts->ncompared == 0) {
        ts->worst = worst;
        snprintf(ts->worst_name, sizeof ts->worst_name, "%s", name);
    }
    ts->ncompared++;
    free(ref);
}

static void grads_cmp(tm_stats *ts, const nn_safetensors *st, const char *cs, const nn_params *P)
{
    for (int i = 0; i < P->n; i++) {
        if (P->kind[i] != NN_PARAM_WEIGHT) continue;
        char name[NN_NAME_MAX + 64];
        snprintf(name, sizeof name, "%s.grad.%s", cs, P->t[i]->name);
        tm_cmp(ts, st, name, P->t[i]->grad, P->t[i]->numel);
    }
}

static const struct {
    const char *name;
    int n, legacy;
} tm_cases[] = {{"n1", 1, 0},  {"n7", 7, 0},         {"n20", 20, 0},
                {"n50", 50, 0}, {"n1_legacy", 1, 1}, {"n20_legacy", 20, 1}};

TEST(mil_transmil_golden)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/mil_transmil.safetensors", golden_dir());
    nn_safetensors st;
    REQUIRE(nn_st_open(&st, path) == 0,
            "cannot open golden file (committed; regenerate with `make golden`): %s", ncmi_error());
    int64_t cfg[6];
    tr_model model[2];
    memset(model, 0, sizeof model);
    nn_params Ph;
    nn_params_init(&Ph);
    nn_graph *g = nn_graph_new();
    nn_graph_set_free_dead(g, 1); /* as tr_step: activations freed as the backward passes them */
    tm_stats ts = {0};
    if (nn_st_read_i64(&st, "config", cfg, 6) != 0) {
        test_fail_at(__FILE__, __LINE__, "config: %s", ncmi_error());
        goto done;
    }
    EXPECT(cfg[2] == 8, "reference with %lld heads; ncmi's TransMIL has the official 8",
           (long long)cfg[2]);
    for (int lg = 0; lg < 2; lg++) {
        mil_opts o;
        mil_opts_default(&o, MIL_TRANSMIL);
        o.d_feat = (int)cfg[0];
        o.d_inner = (int)cfg[1];
        o.transmil_landmarks = (int)cfg[3];
        o.transmil_pinv_iters = (int)cfg[4];
        o.transmil_legacy_slice = lg;
        nn_rng rng;
        nn_rng_seed(&rng, 7);
        if (mil_transmil_init(&model[lg], &o, &rng) != 0) {
            test_fail_at(__FILE__, __LINE__, "init: %s", ncmi_error());
            goto done;
        }
        if (nn_params_load_st(model[lg].params, &st, 0) != 0) {
            test_fail_at(__FILE__, __LINE__, "loading the official names: %s", ncmi_error());
            goto done;
        }
    }
    EXPECT(strcmp(model[0].classifier, "_fc2") == 0, "classifier prefix '%s'", model[0].classifier);
    EXPECT(model[0].dim == (int)cfg[1], "dim %d", model[0].dim);
    /* every state_dict tensor of the reference (but the head) is a model parameter */
    int n_ref = 0;
    for (int i = 0; i < st.n; i++) {
        const char *nm = st.entries[i].name;
        if (strcmp(nm, "config") == 0 || strncmp(nm, "_fc2.", 5) == 0) continue;
        int is_case = 0;
        for (size_t c = 0; c < sizeof tm_cases / sizeof *tm_cases; c++) {
            size_t L = strlen(tm_cases[c].name);
            if (strncmp(nm, tm_cases[c].name, L) == 0 && nm[L] == '.') is_case = 1;
        }
        if (is_case) continue;
        n_ref++;
        EXPECT(nn_params_get(model[0].params, nm) != NULL, "reference parameter %s missing", nm);
    }
    EXPECT(n_ref == model[0].params->n, "reference has %d parameters, ncmi %d", n_ref,
           model[0].params->n);
    nn_linear_m fc2;
    nn_rng hr;
    nn_rng_seed(&hr, 8);
    nn_linear_m_init(&fc2, &Ph, "_fc2", (int)cfg[1], (int)cfg[5], 1, &hr);
    if (nn_params_load_st(&Ph, &st, 0) != 0) {
        test_fail_at(__FILE__, __LINE__, "loading _fc2: %s", ncmi_error());
        goto done;
    }

    for (size_t c = 0; c < sizeof tm_cases / sizeof *tm_cases; c++) {
        const char *cs = tm_cases[c].name;
        tr_model *m = &model[tm_cases[c].legacy];
        char name[160];
        snprintf(name, sizeof name, "%s.x", cs);
        nn_tensor *x = test_st_tensor(&st, name);
        int64_t y64;
        snprintf(name, sizeof name, "%s.y", cs);
        if (!x || x->ndim != 2 || x->shape[0] != tm_cases[c].n ||
            nn_st_read_i64(&st, name, &y64, 1) != 0) {
            test_fail_at(__FILE__, __LINE__, "%s: x / y missing or malformed", cs);
            nn_tensor_free(x);
            continue;
        }
        int y = (int)y64;
        x->requires_grad = 1;
        nn_params_zero_grad(m->params);
        nn_params_zero_grad(&Ph);
        nn_graph_reset(g);
        nn_tensor *z = m->forward(m, g, &x, 1, 0, NULL, NULL);
        nn_tensor *logits = nn_linear_m_forward(g, &fc2, z);
        nn_tensor *loss = nn_cross_entropy(g, logits, &y, 0.f);
        /* free_dead as the trainer's step: the gradients must not depend on it */
        nn_tensor_keep(z);
        nn_tensor_keep(logits);
        if (nn_backward(g, loss) != 0) {
            test_fail_at(__FILE__, __LINE__, "backward: %s", ncmi_error());
            nn_tensor_free(x);
            continue;
        }
        EXPECT(z->ndim == 2 && z->shape[0] == 1 && z->shape[1] == (int)cfg[1], "%s: z shape", cs);
        snprintf(name, sizeof name, "%s.out.z", cs);
        tm_cmp(&ts, &st, name, z->data, z->numel);
        snprintf(name, sizeof name, "%s.out.logits", cs);
        tm_cmp(&ts, &st, name, logits->data, logits->numel);
        snprintf(name, sizeof name, "%s.loss", cs);
        tm_cmp(&ts, &st, name, loss->data, 1);
        int an = 0, ak = 0;
        const float *att = mil_last_attention(m, &an, &ak);
        EXPECT(att && an == tm_cases[c].n && ak == 1, "%s: attention %d x %d", cs, an, ak);
        snprintf(name, sizeof name, "%s.out.attn", cs);
        if (att && an == tm_cases[c].n) tm_cmp(&ts, &st, name, att, (size_t)an);
        grads_cmp(&ts, &st, cs, m->params);
        grads_cmp(&ts, &st, cs, &Ph);
        snprintf(name, sizeof name, "%s.grad.x", cs);
        tm_cmp(&ts, &st, name, x->grad, x->numel);
        nn_tensor_free(x);
    }
    printf("    mil_transmil.safetensors: %d tensors, max rel err %.3g (%s)\n", ts.ncompared,
           ts.worst, ts.worst_name);
done:
    nn_graph_free(g);
    nn_params_free(&Ph);
    tr_model_free(&model[0]);
    tr_model_free(&model[1]);
    nn_st_close(&st);
}

/* ---- finite differences of the whole head ---- */

static double fd_loss(tr_model *m, nn_graph *g, nn_tensor *x, const float *R)
{
    nn_graph_reset(g);
    int prev = nn_graph_set_no_grad(g, 1);
    nn_tensor *z = m->forward(m, g, &x, 1, 0, NULL, NULL);
    double L = 0;
    for (size_t i = 0; i < z->numel; i++) L += (double)R[i] * z->data[i];
    nn_graph_set_no_grad(g, prev);
    return L;
}

/* Checks max_el elements of t spread over it (all when max_el >= numel). */
static int fd_check(tr_model *m, nn_graph *g, nn_tensor *x, const float *R, nn_tensor *t,
                    const char *what, size_t max_el, double *worst, size_t *count)
{
    const float eps = 2e-3f;
    const double atol = 1e-3, rtol = 2e-2;
    int bad = 0;
    size_t step = t->numel > max_el ? t->numel / max_el : 1;
    for (size_t j = (step - 1) / 2; j < t->numel; j += step) {
        ++*count;
        float v = t->data[j];
        t->data[j] = v + eps;
        double lp = fd_loss(m, g, x, R);
        t->data[j] = v - eps;
        double lm = fd_loss(m, g, x, R);
        t->data[j] = v;
        double num = (lp - lm) / (2.0 * eps), ana = t->grad ? t->grad[j] : 0.0;
        double err = fabs(ana - num) / (atol + rtol * fabs(num));
        if (err > *worst) *worst = err;
        if (err > 1.0 && bad++ < 3)
            test_fail_at(__FILE__, __LINE__, "%s[%zu]: analytic %.6g, numeric %.6g", what, j,
                         ana, num);
    }
    return bad;
}

TEST(mil_transmil_finite_differences)
{
    mil_opts o;
    mil_opts_default(&o, MIL_TRANSMIL);
    o.d_feat = 4;
    o.d_inner = 8; /* 8 heads of 1 */
    o.transmil_landmarks = 3;
    nn_rng rng;
    nn_rng_seed(&rng, 11);
    tr_model m;
    REQUIRE(mil_transmil_init(&m, &o, &rng) == 0, "init: %s", ncmi_error());
    /* non-trivial norms (LayerNorm weight 1 / bias 0 would hide their gradients' errors) */
    for (int i = 0; i < m.params->n; i++) {
        nn_tensor *t = m.params->t[i];
        size_t L = strlen(t->name);
        if (strstr(t->name, "norm.") && strcmp(t->name + L - 6, "weight") == 0)
            nn_rng_fill_uniform(&rng, t->data, t->numel, 0.5f, 1.5f);
        else if (strstr(t->name, "norm.") && strcmp(t->name + L - 4, "bias") == 0)
            nn_rng_fill_uniform(&rng, t->data, t->numel, -0.3f, 0.3f);
    }
    const int N = 5; /* 3x3 square, 10 tokens, padding 2, landmarks of 4 rows */
    nn_tensor *x = nn_tensor_new2(NULL, N, 4);
    nn_rng_fill_normal(&rng, x->data, x->numel, 0.f, 1.f);
    x->requires_grad = 1;
    float R[8];
    nn_rng_fill_uniform(&rng, R, 8, -1.f, 1.f);
    nn_graph *g = nn_graph_new();
    nn_params_zero_grad(m.params);
    nn_tensor *z = m.forward(&m, g, &x, 1, 0, NULL, NULL);
    REQUIRE(z->numel == 8, "z of %zu", z->numel);
    REQUIRE(nn_backward_from(g, z, R) == 0, "backward: %s", ncmi_error());
    double worst = 0;
    size_t count = 0;
    int bad = fd_check(&m, g, x, R, x, "x", x->numel, &worst, &count);
    for (int i = 0; i < m.params->n; i++)
        bad += fd_check(&m, g, x, R, m.params->t[i], m.params->t[i]->name, 12, &worst, &count);
    EXPECT(bad == 0, "%d gradient elements off", bad);
    printf("    finite differences: %zu of %zu parameter + input elements, worst |err| / tol %.3g\n",
           count, nn_params_numel(m.params, 1) + x->numel, worst);
    nn_tensor_free(x);
    nn_graph_free(g);
    tr_model_free(&m);
}

/* Training mode draws the to_out dropout from the rng; eval is deterministic;
 * attention weights are stored for every forward; default landmarks d/2. */
TEST(mil_transmil_modes)
{
    mil_opts o;
    mil_opts_default(&o, MIL_TRANSMIL);
    o.d_feat = 6;
    o.d_inner = 16;
    o.transmil_landmarks = 0; /* -> d_inner / 2 = 8 */
    nn_rng rng;
    nn_rng_seed(&rng, 3);
    tr_model m;
    REQUIRE(mil_transmil_init(&m, &o, &rng) == 0, "init: %s", ncmi_error());
    EXPECT(strstr(m.desc, "landmarks 8") != NULL, "desc '%s'", m.desc);
    EXPECT(nn_params_get(m.params, "layer2.attn.res_conv.weight") &&
               nn_params_get(m.params, "layer2.attn.res_conv.weight")->shape[2] == 33,
           "res_conv.weight [8,1,33,1]");
    EXPECT(nn_params_get(m.params, "cls_token") &&
               nn_params_get(m.params, "cls_token")->ndim == 3,
           "cls_token [1,1,d]");
    const int N = 30;
    nn_tensor *x = nn_tensor_new2(NULL, N, 6);
    nn_rng_fill_normal(&rng, x->data, x->numel, 0.f, 1.f);
    nn_graph *g = nn_graph_new();
    float ze[16], ze2[16], zt[16];
    nn_tensor *z = m.forward(&m, g, &x, 1, 0, NULL, NULL);
    memcpy(ze, z->data, sizeof ze);
    int an, ak;
    const float *a = mil_last_attention(&m, &an, &ak);
    REQUIRE(a && an == N && ak == 1, "attention %d x %d", an, ak);
    for (int i = 0; i < N; i++) EXPECT(isfinite(a[i]), "attention[%d] = %g", i, a[i]);
    nn_graph_reset(g);
    z = m.forward(&m, g, &x, 1, 0, NULL, NULL);
    memcpy(ze2, z->data, sizeof ze2);
    EXPECT(memcmp(ze, ze2, sizeof ze) == 0, "eval forward not deterministic");
    nn_graph_reset(g);
    nn_rng dr;
    nn_rng_seed(&dr, 5);
    z = m.forward(&m, g, &x, 1, 1, &dr, NULL);
    memcpy(zt, z->data, sizeof zt);
    double diff = 0;
    for (int i = 0; i < 16; i++) diff += fabs((double)zt[i] - ze[i]);
    EXPECT(diff > 1e-4, "training forward (dropout 0.1) equals eval (|diff| %g)", diff);
    /* a [1, N, D] bag is accepted too */
    nn_graph_reset(g);
    int s3[3] = {1, N, 6};
    nn_tensor *x3 = nn_tensor_from(g, 3, s3, x->data);
    z = m.forward(&m, g, &x3, 1, 0, NULL, NULL);
    EXPECT(memcmp(ze, z->data, sizeof ze) == 0, "[1,N,D] bag differs from [N,D]");
    nn_tensor_free(x);
    nn_graph_free(g);
    tr_model_free(&m);

    o.d_inner = 12; /* not a multiple of 8 heads */
    EXPECT(mil_transmil_init(&m, &o, &rng) != 0 && strstr(ncmi_error(), "heads"),
           "d_inner 12 accepted");
}
