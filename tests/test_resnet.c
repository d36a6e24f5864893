/* natural/resnet.{h,c}: torchvision ResNets.
 *
 * Golden tests against torchvision (tests/reference/golden_resnet.py ->
 * tests/golden/resnet.safetensors). The weights are not stored: both sides
 * fill every tensor from a counter-based formula (formula_fill below, the
 * generator's docstring), and the SHA-256 of the weights that the generator
 * computed with hashlib must equal rn_weights_sha256_compute here, which
 * checks the formula bit for bit and the hash's definition at once.
 *
 * Tolerances, |ours - ref| <= 1e-4 * den with the reference in float64:
 *   outputs (embeddings, logits, loss, running statistics): den =
 *     max(|ref|, 1e-2 max|ref of the tensor|), as tests/test_golden.c;
 *   gradients (parameters, input) of the training case: den = max(|ref|,
 *     rms of the whole reference gradient). Batchnorm's training backward
 *     subtracts means, so float32 rounding scales with the terms, not with a
 *     small result: float32 PyTorch itself is at 2e-4 under the first scheme
 *     and 3e-5 under this one (the generator checks it). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "../natural/resnet.h"
#include "../nn/error.h"
#include "../nn/ops.h"
#include "../nn/params.h"
#include "../nn/safetensors.h"
#include "../nn/sha256.h"
#include "golden_io.h"
#include "test.h"

#define RN_RTOL 1e-4
#define RN_FLOOR 1e-2

static const char *golden_dir(void)
{
    const char *d = getenv("NCMI_GOLDEN");
    return d && *d ? d : "tests/golden";
}

static int open_golden(nn_safetensors *st)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/resnet.safetensors", golden_dir());
    if (nn_st_open(st, path) != 0) {
        test_fail_at(__FILE__, __LINE__,
                     "cannot open golden file (committed; regenerate with "
                     "tests/reference/golden_resnet.py): %s", ncmi_error());
        return -1;
    }
    return 0;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

/* ---- the weight formula (see tests/reference/golden_resnet.py) ---- */

static uint64_t fnv1a64(const char *s)
{
    uint64_t h = 0xCBF29CE484222325ull;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 0x100000001B3ull;
    }
    return h;
}

static int ends_with(const char *s, const char *suf)
{
    size_t n = strlen(s), k = strlen(suf);
    return n >= k && strcmp(s + n - k, suf) == 0;
}

static void formula_fill(rn_model *m)
{
    for (int t = 0; t < m->P.n; t++) {
        nn_tensor *x = m->P.t[t];
        const char *name = x->name;
        double a, b;
        if (ends_with(name, "num_batches_tracked")) {
            nn_tensor_fill(x, 0.f);
            continue;
        } else if (ends_with(name, "running_mean")) {
            a = 0.0, b = 0.1;
        } else if (ends_with(name, "running_var")) {
            a = 1.0, b = 0.5;
        } else if (strncmp(name, "fc.", 3) == 0) {
            a = 0.0, b = 1.0 / sqrt((double)m->out_dim);
        } else if (x->ndim == 4) {
            a = 0.0, b = sqrt(6.0 / (double)(x->shape[0] * x->shape[2] * x->shape[3]));
        } else if (ends_with(name, ".weight")) {
            a = 1.0, b = 0.25;
        } else {
            a = 0.0, b = 0.1;
        }
        const uint64_t h = fnv1a64(name);
        for (size_t i = 0; i < x->numel; i++) {
            uint64_t z = h + (uint64_t)(i + 1) * 0x9E3779B97F4A7C15ull;
            z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
            z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
            z ^= z >> 31;
            double v = ((double)(z >> 40) - 8388608.0 + 0.5) / 8388608.0;
            x->data[i] = (float)(a + b * v);
        }
    }
}

static int model_new(rn_model *m, rn_arch arch, int cifar, int stages, int classes, uint64_t seed)
{
    rn_config c = {.arch = arch, .cifar_stem = cifar, .n_stages = stages, .num_classes = classes};
    nn_rng rng;
    nn_rng_seed(&rng, seed);
    if (rn_init(m, &c, &rng) != 0) {
        test_fail_at(__FILE__, __LINE__, "rn_init: %s", ncmi_error());
        return -1;
    }
    return 0;
}

/* ---- comparisons ---- */

typedef struct {
    double worst;
    char worst_name[128];
    int n;
} cmp_stats;

/* ours vs ref (n floats) with den = max(|ref|, scale); scale < 0: 1e-2 max|ref|. */
static void cmp_vals(cmp_stats *cs, const char *name, const float *ours, const float *ref, size_t n,
                     double scale)
{
    if (scale < 0) {
        double mx = 0;
        for (size_t i = 0; i < n; i++) mx = fmax(mx, fabs((double)ref[i]));
        scale = RN_FLOOR * mx;
    }
    int bad = 0;
    double worst = 0;
    size_t wi = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)ours[i] - (double)ref[i]);
        double den = fmax(fabs((double)ref[i]), scale);
        double e = d / (den > 0 ? den : 1.0);
        if (isnan(e)) e = INFINITY;
        if (e > worst) worst = e, wi = i;
        if (!(d <= RN_RTOL * den)) bad++;
    }
    if (bad)
        test_fail_at(__FILE__, __LINE__, "%s: %d of %zu elements off; worst [%zu] ours %.9g ref %.9g (rel %.3g)",
                     name, bad, n, wi, ours[wi], ref[wi], worst);
    if (worst > cs->worst || cs->n == 0) {
        cs->worst = worst;
        snprintf(cs->worst_name, sizeof cs->worst_name, "%s", name);
    }
    cs->n++;
}

/* t (host) vs golden tensor `name` of t's shape */
static void cmp_tensor(cmp_stats *cs, const nn_safetensors *st, const char *name, const float *ours,
                       int ndim, const int *shape, size_t n, double scale)
{
    float *ref = malloc(n * sizeof(float));
    NCMI_CHECK(ref, "out of memory");
    if (nn_st_read_f32(st, name, ref, n, ndim, shape) != 0)
        test_fail_at(__FILE__, __LINE__, "%s", ncmi_error());
    else
        cmp_vals(cs, name, ours, ref, n, scale);
    free(ref);
}

static void report(const char *what, const cmp_stats *cs)
{
    printf("    %s: %d tensors, max rel err %.3g (%s)\n", what, cs->n, cs->worst, cs->worst_name);
}

static void expect_sha(const rn_model *m, const nn_safetensors *st, const char *key)
{
    char hex[NN_SHA256_HEX];
    rn_weights_sha256_compute(m, hex);
    const char *want = nn_st_meta(st, key);
    EXPECT(want && strcmp(hex, want) == 0,
           "%s: weights SHA-256 %s, the generator's %s (formula or hash definition differ)", key,
           hex, want ? want : "(missing)");
}

/* ---------------------------------------------------------------------- */

TEST(resnet_config_names)
{
    static const struct { const char *name; int dim; } want[] = {
        {"resnet50_trunc", 1024}, {"resnet50", 2048}, {"resnet18", 512},
        {"resnet34", 512},        {"resnet101", 2048},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        rn_config c;
        REQUIRE(rn_config_from_name(&c, want[i].name) == 0, "%s: %s", want[i].name, ncmi_error());
        EXPECT(!c.cifar_stem && c.num_classes == 0, "%s: ImageNet stem, no fc", want[i].name);
        nn_rng rng;
        nn_rng_seed(&rng, 1);
        rn_model m;
        REQUIRE(rn_init(&m, &c, &rng) == 0, "%s", ncmi_error());
        EXPECT(m.out_dim == want[i].dim, "%s: out_dim %d, want %d", want[i].name, m.out_dim,
               want[i].dim);
        EXPECT(nn_params_get(&m.P, "fc.weight") == NULL, "%s has an fc", want[i].name);
        EXPECT(rn_weights_sha256(&m)[0] == '\0', "sha256 before rn_load: '%s'", rn_weights_sha256(&m));
        rn_free(&m);
    }
    rn_config c;
    REQUIRE(rn_config_from_name(&c, "resnet50_trunc") == 0, "%s", ncmi_error());
    EXPECT(c.arch == RN_ARCH_50 && c.n_stages == 3, "resnet50_trunc: arch %d stages %d", c.arch,
           c.n_stages);
    EXPECT(rn_config_from_name(&c, "vit_b16") == -1, "unknown name accepted");
    EXPECT(strstr(ncmi_error(), "vit_b16") && strstr(ncmi_error(), "resnet50_trunc") &&
               strstr(ncmi_error(), "resnet18"),
           "message does not name the encoder and the known ones: %s", ncmi_error());
    rn_model m;
    EXPECT(model_new(&m, RN_ARCH_18, 0, 3, 0, 1) == 0 && m.out_dim == 256,
           "resnet18 with 3 stages: out_dim %d", m.out_dim);
    rn_free(&m);
    rn_config bad = {.arch = RN_ARCH_50, .n_stages = 5};
    nn_rng rng;
    nn_rng_seed(&rng, 1);
    EXPECT(rn_init(&m, &bad, &rng) == -1 && strstr(ncmi_error(), "n_stages"),
           "n_stages 5 accepted: %s", ncmi_error());
}

/* names, shapes and order of every tensor against torchvision's state_dict */
TEST(resnet_state_dict_names)
{
    nn_safetensors st;
    if (open_golden(&st) != 0) return;
    static const rn_arch archs[] = {RN_ARCH_18, RN_ARCH_34, RN_ARCH_50, RN_ARCH_101};
    for (int a = 0; a < 4; a++) {
        char key[64];
        snprintf(key, sizeof key, "state_dict.%s", rn_arch_name(archs[a]));
        const char *want = nn_st_meta(&st, key);
        if (!want) {
            test_fail_at(__FILE__, __LINE__, "golden metadata %s missing", key);
            continue;
        }
        rn_model m;
        if (model_new(&m, archs[a], 0, 4, 1000, 1) != 0) break;
        size_t cap = 1 << 16, len = 0;
        char *ours = malloc(cap);
        ours[0] = '\0';
        for (int i = 0; i < m.P.n; i++) {
            const nn_tensor *t = m.P.t[i];
            char sh[64];
            sh[0] = '\0';
            for (int d = 0; d < t->ndim; d++)
                snprintf(sh + strlen(sh), sizeof sh - strlen(sh), d ? ",%d" : "%d", t->shape[d]);
            if (len + strlen(t->name) + strlen(sh) + 8 > cap) {
                char *no = realloc(ours, cap *= 2);
                if (!no) abort();
                ours = no;
            }
            len += (size_t)sprintf(ours + len, "%s%s[%s]", i ? ";" : "", t->name, sh);
        }
        if (strcmp(ours, want) != 0) {
            size_t k = 0;
            while (ours[k] && ours[k] == want[k]) k++;
            size_t from = k > 60 ? k - 60 : 0;
            test_fail_at(__FILE__, __LINE__, "%s: state_dict differs at byte %zu:\n  ours  ...%.120s\n  torch ...%.120s",
                         rn_arch_name(archs[a]), k, ours + from, want + from);
        }
        free(ours);
        rn_free(&m);
    }
    nn_st_close(&st);
}

/* torchvision init: convs kaiming_normal_(fan_out, relu), BN 1/0, fc as nn.Linear */
TEST(resnet_init_stats)
{
    rn_model m;
    if (model_new(&m, RN_ARCH_50, 0, 4, 1000, 42) != 0) return;
    int nconv = 0;
    double worst = 0;
    for (int i = 0; i < m.P.n; i++) {
        const nn_tensor *t = m.P.t[i];
        const char *nm = t->name;
        if (t->ndim == 4) {
            double s = 0, ss = 0;
            for (size_t k = 0; k < t->numel; k++) s += t->data[k], ss += (double)t->data[k] * t->data[k];
            double mean = s / t->numel, sd = sqrt(ss / t->numel - mean * mean);
            double want = sqrt(2.0 / (double)(t->shape[0] * t->shape[2] * t->shape[3]));
            /* sampling error of the std: ~1/sqrt(2 numel), <= 1.1% here */
            double rel = fabs(sd / want - 1);
            worst = fmax(worst, rel);
            EXPECT(rel < 0.04, "%s: std %.5g, kaiming fan_out %.5g (%.1f%% off)", nm, sd, want, 100 * rel);
            EXPECT(fabs(mean) < 4 * want / sqrt((double)t->numel), "%s: mean %.3g", nm, mean);
            nconv++;
        } else if (ends_with(nm, "running_var") || (ends_with(nm, ".weight") && t->ndim == 1)) {
            for (size_t k = 0; k < t->numel; k++)
                if (t->data[k] != 1.f) {
                    test_fail_at(__FILE__, __LINE__, "%s[%zu] = %g, want 1", nm, k, t->data[k]);
                    break;
                }
        } else if (strncmp(nm, "fc.", 3) != 0) { /* bn bias, running_mean, counters */
            for (size_t k = 0; k < t->numel; k++)
                if (t->data[k] != 0.f) {
                    test_fail_at(__FILE__, __LINE__, "%s[%zu] = %g, want 0", nm, k, t->data[k]);
                    break;
                }
        }
    }
    EXPECT(nconv == 53, "%d convolutions in resnet50, want 53", nconv);
    /* fc: weight kaiming_uniform(a = sqrt 5) = U(+-1/sqrt(in)), bias U(+-1/sqrt(in)) */
    const nn_tensor *w = nn_params_get(&m.P, "fc.weight"), *b = nn_params_get(&m.P, "fc.bias");
    REQUIRE(w && b && w->shape[0] == 1000 && w->shape[1] == 2048, "fc shape");
    double bound = 1.0 / sqrt(2048.0), ss = 0, mx = 0;
    for (size_t k = 0; k < w->numel; k++) ss += (double)w->data[k] * w->data[k], mx = fmax(mx, fabs(w->data[k]));
    double sd = sqrt(ss / w->numel);
    EXPECT(mx <= bound && fabs(sd / (bound / sqrt(3.0)) - 1) < 0.01, "fc.weight: max %.5g (bound %.5g), std %.5g (want %.5g)",
           mx, bound, sd, bound / sqrt(3.0));
    mx = 0;
    for (size_t k = 0; k < b->numel; k++) mx = fmax(mx, fabs(b->data[k]));
    EXPECT(mx <= bound && mx > 0.9 * bound, "fc.bias: max %.5g, bound %.5g", mx, bound);
    printf("    53 convs: std within %.2f%% of kaiming fan_out; %.1fM parameters\n", 100 * worst,
           nn_params_numel(&m.P, 1) / 1e6);
    EXPECT(nn_params_numel(&m.P, 1) == 25557032, "resnet50 has %zu parameters, torchvision 25557032",
           nn_params_numel(&m.P, 1));
    rn_free(&m);
}

/* resnet50_trunc and resnet50, eval, against torchvision; then folded. */
TEST(resnet_golden_resnet50)
{
    nn_safetensors st;
    if (open_golden(&st) != 0) return;
    nn_tensor *x = test_st_tensor(&st, "trunc50.x");
    REQUIRE(x && x->ndim == 4 && x->shape[0] == 2 && x->shape[1] == 3, "trunc50.x missing or malformed");
    nn_graph *g = nn_graph_new();
    nn_graph_set_no_grad(g, 1);
    cmp_stats cs = {0};
    static const struct { int stages; const char *z, *sha; } cases[] = {
        {3, "trunc50.z", "sha256.trunc50"},
        {4, "full50.z", "sha256.full50"},
    };
    for (int c = 0; c < 2; c++) {
        rn_model m;
        if (model_new(&m, RN_ARCH_50, 0, cases[c].stages, 0, 3) != 0) break;
        formula_fill(&m);
        expect_sha(&m, &st, cases[c].sha);
        double t0 = now_s();
        nn_tensor *z = rn_forward(&m, g, x, 0);
        double t1 = now_s();
        EXPECT(z->ndim == 2 && z->shape[0] == 2 && z->shape[1] == m.out_dim, "z shape");
        EXPECT(nn_graph_size(g) == 1, "no_grad forward left %zu nodes in the graph, want 1 (z)",
               nn_graph_size(g));
        cmp_tensor(&cs, &st, cases[c].z, z->data, z->ndim, z->shape, z->numel, -1);
        float *unfolded = malloc(z->numel * sizeof(float));
        memcpy(unfolded, z->data, z->numel * sizeof(float));
        nn_graph_reset(g);

        rn_fold_bn(&m);
        EXPECT(m.folded == 1 && nn_params_get(&m.P, "layer1.0.downsample.0.bias"), "not folded");
        double t2 = now_s();
        z = rn_forward(&m, g, x, 0);
        double t3 = now_s();
        char name[64];
        snprintf(name, sizeof name, "%s (folded)", cases[c].z);
        float *ref = malloc(z->numel * sizeof(float));
        if (nn_st_read_f32(&st, cases[c].z, ref, z->numel, z->ndim, z->shape) == 0)
            cmp_vals(&cs, name, z->data, ref, z->numel, -1);
        /* folded vs unfolded float32 */
        double dmax = 0, zmax = 0;
        for (size_t i = 0; i < z->numel; i++) {
            dmax = fmax(dmax, fabs(z->data[i] - unfolded[i]));
            zmax = fmax(zmax, fabs(unfolded[i]));
        }
        EXPECT(dmax <= 1e-5 * zmax, "%s: folded vs unfolded max |diff| %.3g (max |z| %.3g)",
               cases[c].z, dmax, zmax);
        printf("    %s: eval %.0f ms, folded %.0f ms; folded vs unfolded %.2g of max|z|\n",
               cases[c].z, 1e3 * (t1 - t0), 1e3 * (t3 - t2), dmax / zmax);
        free(ref);
        free(unfolded);
        nn_graph_reset(g);
        rn_free(&m);
    }
    report("resnet50 eval (x [2,3,64,80])", &cs);
    nn_graph_free(g);
    nn_tensor_free(x);
    nn_st_close(&st);
}

/* ResNet-18, CIFAR stem, 10 classes: one training-mode step against torchvision. */
TEST(resnet_golden_resnet18_train)
{
    nn_safetensors st;
    if (open_golden(&st) != 0) return;
    rn_model m;
    if (model_new(&m, RN_ARCH_18, 1, 4, 10, 5) != 0) return;
    formula_fill(&m);
    expect_sha(&m, &st, "sha256.r18");
    nn_tensor *x = test_st_tensor(&st, "r18.x");
    int y[4];
    nn_graph *g = nn_graph_new();
    if (!x || x->ndim != 4 || x->shape[0] != 4 || test_st_labels(&st, "r18.y", y, 4) != 0) {
        test_fail_at(__FILE__, __LINE__, "r18.x [4,3,32,32] / r18.y [4] missing or malformed");
        goto done;
    }
    x->requires_grad = 1;
    double t0 = now_s();
    nn_tensor *z = rn_forward(&m, g, x, 1);
    nn_tensor *logits = rn_logits(&m, g, z);
    nn_tensor *loss = nn_cross_entropy(g, logits, y, 0.f);
    /* free_dead, as the trainer's step: activations freed during the
       backward; the gradients must not depend on it */
    nn_graph_set_free_dead(g, 1);
    nn_tensor_keep(logits);
    if (nn_backward(g, loss) != 0) {
        test_fail_at(__FILE__, __LINE__, "backward: %s", ncmi_error());
        goto done;
    }
    double t1 = now_s();
    cmp_stats out = {0}, grads = {0};
    cmp_tensor(&out, &st, "r18.logits", logits->data, 2, logits->shape, logits->numel, -1);
    cmp_tensor(&out, &st, "r18.loss", loss->data, -1, NULL, 1, -1);
    float *rg = malloc(x->numel * sizeof(float));
    if (x->grad && nn_st_read_f32(&st, "r18.grad.x", rg, x->numel, 4, x->shape) == 0) {
        double ss = 0;
        for (size_t i = 0; i < x->numel; i++) ss += (double)rg[i] * rg[i];
        cmp_vals(&grads, "r18.grad.x", x->grad, rg, x->numel, sqrt(ss / x->numel));
    } else {
        test_fail_at(__FILE__, __LINE__, "no input gradient or r18.grad.x unreadable");
    }
    free(rg);
    int nw = 0;
    for (int i = 0; i < m.P.n; i++) {
        nn_tensor *t = m.P.t[i];
        char key[192];
        if (m.P.kind[i] != NN_PARAM_WEIGHT) {
            if (ends_with(t->name, "running_mean") || ends_with(t->name, "running_var")) {
                snprintf(key, sizeof key, "r18.after.%s", t->name);
                cmp_tensor(&out, &st, key, t->data, t->ndim, t->shape, t->numel, -1);
            } else if (ends_with(t->name, "num_batches_tracked")) {
                EXPECT(t->data[0] == 1.f, "%s = %g after one training step", t->name, t->data[0]);
            }
            continue;
        }
        nw++;
        if (!t->grad) {
            test_fail_at(__FILE__, __LINE__, "%s: no gradient", t->name);
            continue;
        }
        float gnorm_ref;
        snprintf(key, sizeof key, "r18.gnorm.%s", t->name);
        if (nn_st_read_f32(&st, key, &gnorm_ref, 1, -1, NULL) != 0) {
            test_fail_at(__FILE__, __LINE__, "%s", ncmi_error());
            continue;
        }
        double ss = 0;
        for (size_t k = 0; k < t->numel; k++) ss += (double)t->grad[k] * t->grad[k];
        float gnorm = (float)sqrt(ss);
        cmp_vals(&grads, key, &gnorm, &gnorm_ref, 1, -1);
        double rms = gnorm_ref / sqrt((double)t->numel);
        snprintf(key, sizeof key, "r18.grad.%s", t->name);
        if (nn_st_find(&st, key)) {
            cmp_tensor(&grads, &st, key, t->grad, t->ndim, t->shape, t->numel, rms);
            continue;
        }
        char ikey[192];
        snprintf(ikey, sizeof ikey, "r18.gidx.%s", t->name);
        snprintf(key, sizeof key, "r18.gval.%s", t->name);
        int64_t idx[256];
        float ours[256];
        if (nn_st_read_i64(&st, ikey, idx, 256) != 0) {
            test_fail_at(__FILE__, __LINE__, "%s", ncmi_error());
            continue;
        }
        for (int k = 0; k < 256; k++) {
            REQUIRE(idx[k] >= 0 && (size_t)idx[k] < t->numel, "%s: index %lld", ikey, (long long)idx[k]);
            ours[k] = t->grad[idx[k]];
        }
        cmp_tensor(&grads, &st, key, ours, 1, (int[]){256}, 256, rms);
    }
    EXPECT(nw == 62, "%d trainable tensors, want 62", nw);
    printf("    resnet18 CIFAR x [4,3,32,32] train step %.0f ms\n", 1e3 * (t1 - t0));
    report("resnet18 train outputs + running stats", &out);
    report("resnet18 train gradients (den max(|ref|, rms))", &grads);
done:
    nn_graph_free(g);
    nn_tensor_free(x);
    rn_free(&m);
    nn_st_close(&st);
}

/* ---- loading ---- */

/* Write m's tensors to path, leaving out `drop` and giving `flatten` the
 * shape [numel], with every float tensor in dtype dt. */
static int write_variant(const rn_model *m, const char *path, const char *drop, const char *flatten,
                         nn_st_dtype dt)
{
    const nn_params *P = &m->P;
    nn_st_tensor *ts = calloc((size_t)P->n, sizeof *ts);
    void **hold = calloc((size_t)P->n, sizeof *hold);
    nn_params_st_tensors(P, ts, hold);
    int n = 0;
    for (int i = 0; i < P->n; i++) {
        if (drop && strcmp(ts[i].name, drop) == 0) continue;
        ts[n] = ts[i];
        if (ts[n].dtype == NN_ST_F32) ts[n].dtype = dt;
        if (flatten && strcmp(ts[i].name, flatten) == 0) {
            ts[n].ndim = 1;
            ts[n].shape[0] = (int64_t)P->t[i]->numel;
        }
        n++;
    }
    int rc = nn_st_write(path, ts, n, NULL, NULL, 0);
    nn_params_st_release(P, hold);
    free(hold);
    free(ts);
    return rc;
}

static int same_values(const rn_model *a, const rn_model *b)
{
    if (a->P.n != b->P.n) return 0;
    for (int i = 0; i < a->P.n; i++)
        if (a->P.t[i]->numel != b->P.t[i]->numel ||
            memcmp(a->P.t[i]->data, b->P.t[i]->data, a->P.t[i]->numel * sizeof(float)) != 0)
            return 0;
    return 1;
}

TEST(resnet_load_roundtrip_sha256)
{
    nn_safetensors st;
    if (open_golden(&st) != 0) return;
    const char *want = nn_st_meta(&st, "sha256.r18");
    rn_model a, b;
    if (model_new(&a, RN_ARCH_18, 1, 4, 10, 5) != 0) return;
    formula_fill(&a);
    const char *p = test_tmp_path("r18.safetensors");
    REQUIRE(nn_params_save(&a.P, p, NULL, NULL, 0) == 0, "%s", ncmi_error());
    if (model_new(&b, RN_ARCH_18, 1, 4, 10, 99) != 0) return;
    REQUIRE(rn_load(&b, p) == 0, "%s", ncmi_error());
    EXPECT(same_values(&a, &b), "round trip changed values");
    EXPECT(strlen(rn_weights_sha256(&b)) == 64 && want && strcmp(rn_weights_sha256(&b), want) == 0,
           "sha256 after load %s, the generator's %s", rn_weights_sha256(&b), want ? want : "?");
    char first[NN_SHA256_HEX];
    snprintf(first, sizeof first, "%s", rn_weights_sha256(&b));
    REQUIRE(rn_load(&b, p) == 0, "%s", ncmi_error());
    EXPECT(strcmp(first, rn_weights_sha256(&b)) == 0, "sha256 not stable across loads");

    /* one weight one ulp up: another hash; back: the same hash */
    nn_tensor *w = nn_params_get(&a.P, "layer3.1.conv2.weight");
    float old = w->data[777];
    w->data[777] = nextafterf(old, INFINITY);
    REQUIRE(nn_params_save(&a.P, p, NULL, NULL, 0) == 0, "%s", ncmi_error());
    REQUIRE(rn_load(&b, p) == 0, "%s", ncmi_error());
    EXPECT(strcmp(first, rn_weights_sha256(&b)) != 0, "sha256 unchanged after a weight changed");
    w->data[777] = old;
    /* the counters do not enter the hash */
    nn_params_get(&a.P, "bn1.num_batches_tracked")->data[0] = 1234.f;
    REQUIRE(nn_params_save(&a.P, p, NULL, NULL, 0) == 0, "%s", ncmi_error());
    REQUIRE(rn_load(&b, p) == 0, "%s", ncmi_error());
    EXPECT(strcmp(first, rn_weights_sha256(&b)) == 0, "sha256 depends on num_batches_tracked");
    EXPECT(nn_params_get(&b.P, "bn1.num_batches_tracked")->data[0] == 1234.f, "counter not loaded");

    /* F16 and BF16 files load (values rounded), a missing counter loads as 0 */
    static const nn_st_dtype dts[] = {NN_ST_F16, NN_ST_BF16};
    for (int k = 0; k < 2; k++) {
        const char *ph = test_tmp_path("r18_%s.safetensors", nn_st_dtype_name(dts[k]));
        REQUIRE(write_variant(&a, ph, "layer1.0.bn1.num_batches_tracked", NULL, dts[k]) == 0, "%s",
                ncmi_error());
        REQUIRE(rn_load(&b, ph) == 0, "%s: %s", nn_st_dtype_name(dts[k]), ncmi_error());
        const nn_tensor *wa = nn_params_get(&a.P, "fc.weight"), *wb = nn_params_get(&b.P, "fc.weight");
        float r = dts[k] == NN_ST_F16 ? nn_f16_to_f32(nn_f32_to_f16(wa->data[3]))
                                      : nn_bf16_to_f32(nn_f32_to_bf16(wa->data[3]));
        EXPECT(wb->data[3] == r, "%s: fc.weight[3] %g, want %g", nn_st_dtype_name(dts[k]), wb->data[3], r);
        EXPECT(nn_params_get(&b.P, "layer1.0.bn1.num_batches_tracked")->data[0] == 0.f,
               "missing counter not 0");
        EXPECT(strcmp(first, rn_weights_sha256(&b)) != 0, "%s weights hash like F32 ones",
               nn_st_dtype_name(dts[k]));
    }
    rn_free(&a);
    rn_free(&b);
    nn_st_close(&st);
}

TEST(resnet_load_errors)
{
    rn_model r18, m, ref;
    if (model_new(&r18, RN_ARCH_18, 0, 4, 0, 5) != 0) return;
    formula_fill(&r18);
    if (model_new(&m, RN_ARCH_50, 0, 3, 0, 6) != 0) return;
    if (model_new(&ref, RN_ARCH_50, 0, 3, 0, 6) != 0) return;
    formula_fill(&m);
    formula_fill(&ref);
    const char *p18 = test_tmp_path("r18_imagenet.safetensors");
    REQUIRE(nn_params_save(&r18.P, p18, NULL, NULL, 0) == 0, "%s", ncmi_error());

    /* resnet18 file into resnet50_trunc */
    EXPECT(rn_load(&m, p18) == -1, "resnet18 file loaded into resnet50_trunc");
    const char *e = ncmi_error();
    EXPECT(strstr(e, p18) && strstr(e, "layer1.0.conv1.weight") && strstr(e, "[64,64,3,3]") &&
               strstr(e, "resnet50 (ImageNet stem, 3 stages") && strstr(e, "looks like resnet18"),
           "message: %s", e);
    printf("    resnet18 file into resnet50_trunc: %s\n", e);
    EXPECT(same_values(&m, &ref) && rn_weights_sha256(&m)[0] == '\0', "model changed by a failed load");

    /* missing tensor (from a resnet50_trunc file) */
    const char *pm = test_tmp_path("missing.safetensors");
    REQUIRE(write_variant(&ref, pm, "layer2.3.bn3.running_var", NULL, NN_ST_F32) == 0, "%s", ncmi_error());
    EXPECT(rn_load(&m, pm) == -1, "file without layer2.3.bn3.running_var loaded");
    e = ncmi_error();
    EXPECT(strstr(e, pm) && strstr(e, "'layer2.3.bn3.running_var' missing") && strstr(e, "resnet50"),
           "message: %s", e);

    /* wrong shape */
    const char *ps = test_tmp_path("shape.safetensors");
    REQUIRE(write_variant(&ref, ps, NULL, "layer3.0.downsample.0.weight", NN_ST_F32) == 0, "%s", ncmi_error());
    EXPECT(rn_load(&m, ps) == -1, "flattened layer3.0.downsample.0.weight accepted");
    e = ncmi_error();
    EXPECT(strstr(e, ps) && strstr(e, "layer3.0.downsample.0.weight") && strstr(e, "[524288]") &&
               strstr(e, "[1024,512,1,1]"),
           "message: %s", e);

    /* CIFAR-stem file into an ImageNet-stem model */
    rn_model c18, i18;
    if (model_new(&c18, RN_ARCH_18, 1, 4, 10, 1) != 0) return;
    if (model_new(&i18, RN_ARCH_18, 0, 4, 10, 1) != 0) return;
    const char *pc = test_tmp_path("cifar.safetensors");
    REQUIRE(nn_params_save(&c18.P, pc, NULL, NULL, 0) == 0, "%s", ncmi_error());
    EXPECT(rn_load(&i18, pc) == -1, "CIFAR-stem weights loaded into an ImageNet stem");
    e = ncmi_error();
    EXPECT(strstr(e, "conv1.weight") && strstr(e, "CIFAR stem") && strstr(e, "ImageNet stem"),
           "message: %s", e);
    /* and an fc that is not there: resnet18 no-fc file into a 10-class model */
    EXPECT(rn_load(&i18, p18) == -1 && strstr(ncmi_error(), "'fc.weight' missing"), "message: %s",
           ncmi_error());

    /* not a ResNet at all; not a file */
    char gpath[1024];
    snprintf(gpath, sizeof gpath, "%s/convnet.safetensors", golden_dir());
    EXPECT(rn_load(&m, gpath) == -1 && strstr(ncmi_error(), "not a torchvision ResNet"),
           "message: %s", ncmi_error());
    EXPECT(rn_load(&m, test_tmp_path("nope.safetensors")) == -1 && strstr(ncmi_error(), "nope"),
           "message: %s", ncmi_error());
    EXPECT(same_values(&m, &ref), "model changed by failed loads");
    rn_free(&c18);
    rn_free(&i18);
    rn_free(&r18);
    rn_free(&m);
    rn_free(&ref);
}

/* A full torchvision resnet50 file (layer4, fc 1000) loads into resnet50_trunc. */
TEST(resnet_load_full_into_trunc)
{
    nn_safetensors st;
    if (open_golden(&st) != 0) return;
    rn_model full, trunc;
    if (model_new(&full, RN_ARCH_50, 0, 4, 1000, 1) != 0) return;
    formula_fill(&full);
    const char *p = test_tmp_path("resnet50_full.safetensors");
    REQUIRE(nn_params_save(&full.P, p, NULL, NULL, 0) == 0, "%s", ncmi_error());
    rn_config c;
    REQUIRE(rn_config_from_name(&c, "resnet50_trunc") == 0, "%s", ncmi_error());
    nn_rng rng;
    nn_rng_seed(&rng, 2);
    REQUIRE(rn_init(&trunc, &c, &rng) == 0, "%s", ncmi_error());
    REQUIRE(rn_load(&trunc, p) == 0, "%s", ncmi_error());
    const char *want = nn_st_meta(&st, "sha256.trunc50");
    EXPECT(want && strcmp(rn_weights_sha256(&trunc), want) == 0,
           "sha256 of the truncated weights %s, the generator's %s", rn_weights_sha256(&trunc),
           want ? want : "?");
    for (int i = 0; i < trunc.P.n; i++) {
        const nn_tensor *t = trunc.P.t[i], *f = nn_params_get(&full.P, t->name);
        if (!f || memcmp(t->data, f->data, t->numel * sizeof(float)) != 0) {
            test_fail_at(__FILE__, __LINE__, "%s differs from the file", t->name);
            break;
        }
    }
    remove(p);
    rn_free(&full);
    rn_free(&trunc);
    nn_st_close(&st);
}

/* ---- forward memory and misuse ---- */

TEST(resnet_graph_truncate)
{
    nn_graph *g = nn_graph_new();
    nn_graph_set_no_grad(g, 1);
    nn_tensor *x = nn_tensor_new2(g, 2, 3);
    size_t mark = nn_graph_size(g);
    nn_tensor *a = nn_relu(g, x);
    nn_tensor *b = nn_scale(g, a, 2.f);
    nn_tensor *c = nn_add_scalar(g, b, 1.f);
    (void)nn_scale(g, c, 3.f);
    nn_graph_truncate(g, mark, c);
    EXPECT(nn_graph_size(g) == 2 && c->nsrc == 0 && c->data[0] == 1.f, "truncate kept %zu nodes",
           nn_graph_size(g));
    nn_graph_truncate(g, mark, NULL);
    EXPECT(nn_graph_size(g) == 1, "truncate(NULL) kept %zu nodes", nn_graph_size(g));
    nn_graph_free(g);
}

static void truncate_grad_graph(void *ctx)
{
    (void)ctx;
    nn_graph *g = nn_graph_new();
    nn_tensor *x = nn_tensor_new2(g, 2, 3);
    nn_graph_truncate(g, 0, x);
}

static rn_model *abort_model;
static void train_folded(void *ctx)
{
    nn_tensor *x = ctx;
    nn_graph *g = nn_graph_new();
    rn_forward(abort_model, g, x, 1);
}

TEST(resnet_fold_and_graph_misuse)
{
    char msg[1024];
    EXPECT(test_aborts(truncate_grad_graph, NULL, "no_grad", msg, sizeof msg),
           "nn_graph_truncate on a recording graph did not abort: %s", msg);
    rn_model m;
    if (model_new(&m, RN_ARCH_18, 1, 4, 10, 1) != 0) return;
    nn_tensor *x = nn_tensor_new4(NULL, 2, 3, 32, 32);
    rn_fold_bn(&m);
    rn_fold_bn(&m); /* idempotent */
    EXPECT(nn_params_get(&m.P, "conv1.bias") && nn_params_get(&m.P, "layer4.1.conv2.bias"),
           "folded biases missing");
    abort_model = &m;
    EXPECT(test_aborts(train_folded, x, "folded", msg, sizeof msg),
           "training forward after folding did not abort: %s", msg);
    EXPECT(rn_load(&m, "whatever.safetensors") == -1 && strstr(ncmi_error(), "folded"),
           "load into a folded model: %s", ncmi_error());
    nn_tensor_free(x);
    rn_free(&m);
}

/* Eval on a recording graph (everything kept for backward) and on a no_grad
 * graph (intermediates freed) give the same values; a training forward
 * updates the running statistics, an eval one does not. */
TEST(resnet_eval_graph_modes)
{
    rn_model m;
    if (model_new(&m, RN_ARCH_18, 0, 4, 0, 1) != 0) return;
    formula_fill(&m);
    nn_rng rng;
    nn_rng_seed(&rng, 9);
    nn_tensor *x = nn_tensor_new4(NULL, 2, 3, 40, 36);
    nn_rng_fill_normal(&rng, x->data, x->numel, 0.f, 1.f);
    nn_graph *g1 = nn_graph_new(), *g2 = nn_graph_new();
    nn_graph_set_no_grad(g2, 1);
    nn_tensor *pre = nn_tensor_new1(g2, 5); /* made before: must survive */
    pre->data[4] = 7.f;
    nn_tensor *z1 = rn_forward(&m, g1, x, 0);
    nn_tensor *z2 = rn_forward(&m, g2, x, 0);
    EXPECT(nn_graph_size(g1) > 50 && nn_graph_size(g2) == 2, "graph sizes %zu and %zu",
           nn_graph_size(g1), nn_graph_size(g2));
    EXPECT(pre->data[4] == 7.f, "a tensor made before rn_forward was touched");
    EXPECT(z1->numel == z2->numel && memcmp(z1->data, z2->data, z1->numel * sizeof(float)) == 0,
           "no_grad and recording eval forwards differ");
    const nn_tensor *rm = nn_params_get(&m.P, "layer2.0.bn1.running_mean");
    float before = rm->data[0];
    nn_graph_reset(g1);
    rn_forward(&m, g1, x, 1);
    EXPECT(rm->data[0] != before && nn_params_get(&m.P, "bn1.num_batches_tracked")->data[0] == 1.f,
           "training forward did not update the running statistics");
    nn_graph_free(g1);
    nn_graph_free(g2);
    nn_tensor_free(x);
    rn_free(&m);
}

/* model.width and model.in_channels: every stage scales with the width, conv1
 * takes in_channels; 0 means torchvision's 64 and 3 (the network above). */
TEST(resnet_width_and_in_channels)
{
    nn_rng rng;
    nn_rng_seed(&rng, 3);
    rn_config c = {.arch = RN_ARCH_18, .cifar_stem = 1, .n_stages = 4, .width = 16, .in_channels = 1};
    rn_model m;
    REQUIRE(rn_init(&m, &c, &rng) == 0, "%s", ncmi_error());
    static const struct { const char *name; int shape[4]; } want[] = {
        {"conv1.weight", {16, 1, 3, 3}},
        {"layer1.0.conv1.weight", {16, 16, 3, 3}},
        {"layer2.0.downsample.0.weight", {32, 16, 1, 1}},
        {"layer3.1.conv2.weight", {64, 64, 3, 3}},
        {"layer4.1.bn2.running_var", {128, 0, 0, 0}},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        const nn_tensor *t = nn_params_get(&m.P, want[i].name);
        REQUIRE(t, "%s missing", want[i].name);
        for (int d = 0; d < t->ndim; d++)
            EXPECT(t->shape[d] == want[i].shape[d], "%s: dim %d is %d, want %d", want[i].name, d,
                   t->shape[d], want[i].shape[d]);
    }
    EXPECT(m.out_dim == 128 && m.width == 16 && m.in_channels == 1, "out_dim %d width %d in %d",
           m.out_dim, m.width, m.in_channels);
    char d[160];
    rn_config_describe(&c, d, sizeof d);
    EXPECT(strstr(d, "width 16") && strstr(d, "1 input channel") && strstr(d, "CIFAR"), "describe: %s", d);
    /* a training forward of MNIST-shaped images: [N,1,28,28] -> [N,128], running statistics move */
    nn_tensor *x = nn_tensor_new4(NULL, 3, 1, 28, 28);
    nn_rng_fill_normal(&rng, x->data, x->numel, 0.5f, 1.f);
    nn_graph *g = nn_graph_new();
    nn_tensor *z = rn_forward(&m, g, x, 1);
    EXPECT(z->ndim == 2 && z->shape[0] == 3 && z->shape[1] == 128, "z [%d,%d]", z->shape[0], z->shape[1]);
    const nn_tensor *rm = nn_params_get(&m.P, "bn1.running_mean");
    const nn_tensor *nb = nn_params_get(&m.P, "layer4.1.bn2.num_batches_tracked");
    EXPECT(rm && rm->data[0] != 0.f && nb && nb->data[0] == 1.f, "running stats not updated");
    nn_graph_free(g);
    nn_tensor_free(x);
    rn_free(&m);

    /* bottleneck: the output is 4 x 8 x width */
    rn_config b = {.arch = RN_ARCH_50, .cifar_stem = 0, .n_stages = 4, .width = 8};
    REQUIRE(rn_init(&m, &b, &rng) == 0, "%s", ncmi_error());
    const nn_tensor *c3 = nn_params_get(&m.P, "layer1.0.conv3.weight");
    EXPECT(m.out_dim == 256 && c3 && c3->shape[0] == 32 && c3->shape[1] == 8, "resnet50 width 8: out_dim %d",
           m.out_dim);
    EXPECT(nn_params_get(&m.P, "conv1.weight")->shape[1] == 3, "in_channels 0 is not 3");
    rn_free(&m);

    /* width 0 and 64 are torchvision's resnet18 (11,176,512 parameters without fc) */
    rn_config t0 = {.arch = RN_ARCH_18, .n_stages = 4}, t64 = t0;
    t64.width = 64;
    t64.in_channels = 3;
    REQUIRE(rn_init(&m, &t0, &rng) == 0, "%s", ncmi_error());
    EXPECT(nn_params_numel(&m.P, 1) == 11176512 && m.out_dim == 512, "width 0: %zu parameters",
           nn_params_numel(&m.P, 1));
    rn_free(&m);
    REQUIRE(rn_init(&m, &t64, &rng) == 0, "%s", ncmi_error());
    EXPECT(nn_params_numel(&m.P, 1) == 11176512, "width 64: %zu parameters", nn_params_numel(&m.P, 1));
    rn_config_describe(&t64, d, sizeof d);
    EXPECT(!strstr(d, "width") && !strstr(d, "input channel"), "describe of torchvision's: %s", d);
    rn_free(&m);

    rn_config bad = {.arch = RN_ARCH_18, .n_stages = 4, .width = -2};
    EXPECT(rn_init(&m, &bad, &rng) == -1 && strstr(ncmi_error(), "width"), "width -2: %s", ncmi_error());
    bad.width = 0;
    bad.in_channels = -1;
    EXPECT(rn_init(&m, &bad, &rng) == -1 && strstr(ncmi_error(), "in_channels"), "in_channels -1: %s",
           ncmi_error());
}
