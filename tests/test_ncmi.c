/* The NCMI loss (nn/ncmi.h): golden values and gradients from a torch
 * re-implementation of the authors' formula (tests/reference/ncmi_reference.py),
 * fused vs composed, finite-difference gradients for every option
 * combination, centre (EMA) semantics, the Gamma floor, the single-bag
 * pitfall, init/config/checkpoint state, and a small training run. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../nn/error.h"
#include "../nn/ncmi.h"
#include "../nn/ops.h"
#include "../nn/optim.h"
#include "../nn/params.h"
#include "../nn/safetensors.h"
#include "../nn/synth.h"
#include "gradcheck.h"
#include "golden_io.h"
#include "test.h"

#define GOLDEN "tests/golden/ncmi.safetensors"

/* |a - b| <= atol + rtol |b|, with atol = afrac * max|b| (entries that
 * cancel to ~0 are judged on the scale of the whole tensor) */
static int close_rel(const float *a, const float *b, size_t n, double rtol, double afrac,
                     const char *what)
{
    double mx = 0;
    for (size_t i = 0; i < n; i++)
        if (fabs((double)b[i]) > mx) mx = fabs((double)b[i]);
    const double atol = afrac * mx + 1e-30;
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (!(d <= atol + rtol * fabs((double)b[i]))) {
            if (bad < 3)
                test_fail_at(__FILE__, __LINE__, "%s[%zu]: got %.9g, want %.9g (|diff| %.3g)", what,
                             i, a[i], b[i], d);
            bad++;
        }
    }
    return bad == 0;
}

/* ---------------------------------------------------------------------- */
/* golden: torch re-implementation of the authors' loss                   */

typedef struct golden_case {
    int N, C, D, centering, training, initialised;
    float tau, momentum, floor;
    char simplex[16], gamma[16], ratio[16];
} golden_case;

static int set_cfg_from(nn_ncmi_cfg *cfg, const golden_case *gc)
{
    *cfg = nn_ncmi_cfg_default();
    cfg->tau = gc->tau;
    cfg->momentum = gc->momentum;
    cfg->gamma_floor = gc->floor;
    cfg->centering = gc->centering;
    if (nn_ncmi_cfg_set(cfg, "simplex", gc->simplex) != 0) return -1;
    if (nn_ncmi_cfg_set(cfg, "gamma", gc->gamma) != 0) return -1;
    if (nn_ncmi_cfg_set(cfg, "ratio", gc->ratio) != 0) return -1;
    return 0;
}

TEST(ncmi_golden_torch)
{
    nn_safetensors st;
    REQUIRE(nn_st_open(&st, GOLDEN) == 0, "%s (regenerate with tests/reference/ncmi_reference.py)",
            ncmi_error());
    int ncases = 0;
    for (int mi = 0; mi < st.n_meta; mi++) {
        if (strncmp(st.meta_keys[mi], "ncmi.", 5) != 0) continue;
        const char *var = st.meta_keys[mi] + 5;
        golden_case gc;
        REQUIRE(sscanf(st.meta_vals[mi], "%d %d %d %f %15s %15s %15s %d %d %f %d %f", &gc.N, &gc.C,
                       &gc.D, &gc.tau, gc.simplex, gc.gamma, gc.ratio, &gc.centering, &gc.training,
                       &gc.momentum, &gc.initialised, &gc.floor) == 12,
                "metadata %s = %s", st.meta_keys[mi], st.meta_vals[mi]);
        const int N = gc.N, C = gc.C, D = gc.D;
        const char *fields[] = {"z", "center", "xi", "labels", "prior", "loss", "grad_z", "grad_xi",
                                "center_after"};
        const size_t sizes[] = {(size_t)N * D, (size_t)D, (size_t)C * D, (size_t)N, (size_t)C, 1,
                                (size_t)N * D, (size_t)C * D, (size_t)D};
        float *f[9];
        for (int k = 0; k < 9; k++) {
            char nm[160];
            size_t n = 0;
            snprintf(nm, sizeof nm, "%s.%s", var, fields[k]);
            f[k] = test_st_read_all(&st, nm, &n);
            REQUIRE(f[k] && n == sizes[k], "golden %s missing or wrong size", nm);
        }
        int *y = malloc((size_t)N * sizeof *y);
        for (int i = 0; i < N; i++) y[i] = (int)f[3][i];
        nn_ncmi_cfg cfg;
        REQUIRE(set_cfg_from(&cfg, &gc) == 0, "%s: %s", var, ncmi_error());

        for (int composed = 0; composed < 2; composed++) {
            nn_params P;
            nn_params_init(&P);
            nn_ncmi m;
            REQUIRE(nn_ncmi_init(&m, &P, "ncmi", C, D, &cfg, f[4], NULL) == 0, "%s", ncmi_error());
            memcpy(m.xi->data, f[2], (size_t)C * D * sizeof(float));
            memcpy(m.center->data, f[1], (size_t)D * sizeof(float));
            m.center_init->data[0] = (float)gc.initialised;
            nn_tensor *z = nn_tensor_from(NULL, 2, (int[]){N, D}, f[0]);
            z->requires_grad = 1;
            nn_graph *g = nn_graph_new();
            nn_tensor *loss = composed ? nn_ncmi_loss_composed(g, &m, z, y, gc.training)
                                       : nn_ncmi_loss(g, &m, z, y, gc.training);
            REQUIRE(nn_backward(g, loss) == 0, "%s", ncmi_error());
            REQUIRE(z->grad && m.xi->grad, "%s: gradients missing", var);
            char what[200];
            /* 1e-5 relative; entries near 0 are judged against 1e-6 (fused,
             * double inside) or 1e-5 (composed: float32 engine ops, where
             * KL = cross-entropy - entropy cancels) of the largest entry */
            const double rt = 1e-5, af = composed ? 1e-5 : 1e-6;
            const char *tag = composed ? "composed" : "fused";
            snprintf(what, sizeof what, "%s %s loss", var, tag);
            close_rel(loss->data, f[5], 1, rt, 0, what);
            snprintf(what, sizeof what, "%s %s grad_z", var, tag);
            close_rel(z->grad, f[6], (size_t)N * D, rt, af, what);
            snprintf(what, sizeof what, "%s %s grad_xi", var, tag);
            close_rel(m.xi->grad, f[7], (size_t)C * D, rt, af, what);
            snprintf(what, sizeof what, "%s %s center", var, tag);
            close_rel(m.center->data, f[8], (size_t)D, 1e-6, 1e-7, what);
            EXPECT(m.center_init->data[0] == (gc.initialised || (gc.training && gc.centering) ? 1.f : 0.f),
                   "%s: initialised flag %g", var, (double)m.center_init->data[0]);
            nn_graph_free(g);
            nn_tensor_free(z);
            nn_ncmi_free(&m);
            nn_params_free(&P);
        }
        for (int k = 0; k < 9; k++) free(f[k]);
        free(y);
        ncases++;
    }
    nn_st_close(&st);
    EXPECT(ncases >= 16, "only %d golden cases", ncases);
}

/* ---------------------------------------------------------------------- */
/* finite differences on the fused op (training == 0: c fixed)            */
/* iparam: [0] simplex, [1] gamma, [2] ratio, [3] centroids fixed,
 *         [4] no centring, [5] composed instead of fused
 * fparam: [0] tau (0 -> 0.5) */

static nn_tensor *f_ncmi(nn_graph *g, nn_tensor **in, const gc_case *c)
{
    const int N = in[0]->shape[0], D = in[0]->shape[1], C = in[1]->shape[0];
    nn_ncmi m;
    memset(&m, 0, sizeof m);
    m.cfg = nn_ncmi_cfg_default();
    m.cfg.simplex = (nn_ncmi_simplex)c->iparam[0];
    m.cfg.gamma = (nn_ncmi_gamma)c->iparam[1];
    m.cfg.ratio = (nn_ncmi_ratio)c->iparam[2];
    m.cfg.centroids = c->iparam[3] ? NN_NCMI_CENTROIDS_FIXED : NN_NCMI_CENTROIDS_LEARNED;
    m.cfg.centering = !c->iparam[4];
    m.cfg.tau = c->fparam[0] > 0 ? c->fparam[0] : 0.5f;
    m.C = C;
    m.D = D;
    double w[16];
    for (int k = 0; k < C; k++) w[k] = m.cfg.gamma == NN_NCMI_GAMMA_PRIOR ? (k + 1.0) / (C * (C + 1) / 2.0) : 1.0 / C;
    m.w = w;
    m.xi = in[1];
    float cdata[512], flag = 1.f;
    NCMI_CHECK(D <= 512 && N <= 512, "f_ncmi: case too large");
    for (int j = 0; j < D; j++) cdata[j] = 0.2f * sinf((float)j + 0.5f);
    /* the centre on the inputs' device (graph-owned: freed with g); the
     * flag is host_only, a host tensor on either device */
    nn_tensor *center = nn_tensor_new_on(g, in[0]->device, 1, (int[]){D});
    nn_tensor_from_host(center, cdata);
    nn_tensor cinit = {.ndim = 1, .shape = {1}, .numel = 1, .data = &flag};
    m.center = center;
    m.center_init = &cinit;
    int y[512];
    for (int i = 0; i < N; i++) y[i] = (i * 7 + 1) % C;
    return c->iparam[5] ? nn_ncmi_loss_composed(g, &m, in[0], y, 0) : nn_ncmi_loss(g, &m, in[0], y, 0);
}

/* keep z away from the centre (||z - c|| ~ 1 or more) */
static void init_z_off_center(nn_tensor **in, nn_rng *rng, const gc_case *c)
{
    (void)rng;
    (void)c;
    const int N = in[0]->shape[0], D = in[0]->shape[1];
    for (int i = 0; i < N; i++) in[0]->data[(size_t)i * D + (i % D)] += 1.5f;
    for (size_t k = 0; k < in[1]->numel; k++) in[1]->data[k] *= 2.f;
}

#define NCMI_GRAD(tname, N, C, D, ...)                                                     \
    GRAD_TEST(ncmi_##tname, .nin = 2, .ndim = {2, 2}, .shape = {{N, D}, {C, D}},           \
              .fn = f_ncmi, .init = init_z_off_center, __VA_ARGS__)

/* every gamma x ratio x simplex combination, learned centroids */
NCMI_GRAD(nsf_classes_per_sample, 6, 3, 5, .iparam = {0, 0, 0})
NCMI_GRAD(nsf_classes_of_means, 6, 3, 5, .iparam = {0, 0, 1})
NCMI_GRAD(nsf_prior_per_sample, 6, 3, 5, .iparam = {0, 1, 0})
NCMI_GRAD(nsf_prior_of_means, 6, 3, 5, .iparam = {0, 1, 1})
NCMI_GRAD(softmax_classes_per_sample, 6, 3, 5, .iparam = {1, 0, 0})
NCMI_GRAD(softmax_classes_of_means, 6, 3, 5, .iparam = {1, 0, 1})
NCMI_GRAD(softmax_prior_per_sample, 6, 3, 5, .iparam = {1, 1, 0})
NCMI_GRAD(softmax_prior_of_means, 6, 3, 5, .iparam = {1, 1, 1})
/* fixed centroids: xi is not differentiated (no_grad_mask) and the op must
 * not record a gradient for it (checked in ncmi_fixed_centroids_no_grad) */
NCMI_GRAD(nsf_fixed_centroids, 6, 3, 5, .iparam = {0, 0, 0, 1}, .no_grad_mask = 2u)
NCMI_GRAD(softmax_fixed_of_means, 5, 3, 4, .iparam = {1, 1, 1, 1}, .no_grad_mask = 2u)
/* one sample, two classes, D < C, no centring, the authors' tau */
NCMI_GRAD(n1, 1, 3, 4, .iparam = {0, 0, 0})
NCMI_GRAD(n1_of_means_prior, 1, 3, 4, .iparam = {0, 1, 1})
NCMI_GRAD(c2, 4, 2, 3, .iparam = {0, 0, 0})
NCMI_GRAD(c2_n1, 1, 2, 2, .iparam = {0, 0, 1})
NCMI_GRAD(d_lt_c, 5, 4, 2, .iparam = {0, 0, 0})
NCMI_GRAD(d_lt_c_prior_of_means, 6, 5, 3, .iparam = {0, 1, 1})
NCMI_GRAD(no_centering, 4, 3, 5, .iparam = {0, 0, 0, 0, 1})
NCMI_GRAD(tau02, 5, 3, 6, .iparam = {0, 0, 0}, .fparam = {0.2f}, .eps = 2e-3f)
/* sizes past one GPU block (256 threads): rows wider than a block (D > 256)
 * and more samples than the reduction block has threads (N > 256) */
NCMI_GRAD(wide_d, 2, 3, 260, .iparam = {0, 0, 0})
NCMI_GRAD(wide_d_softmax_prior_of_means, 2, 3, 260, .iparam = {1, 1, 1})
NCMI_GRAD(many_n, 300, 3, 4, .iparam = {0, 0, 0})
NCMI_GRAD(many_n_of_means, 300, 2, 3, .iparam = {0, 1, 1})
/* the composed version differentiates correctly too. gpu_tol: a chain of
 * ~20 float32 engine ops (log, softmax, sums, divisions) whose reductions the
 * GPU orders differently; measured on an H100: 1.1e-5 and 2.2e-5 (the fused
 * op, which sums in double, agrees to 1e-7). */
NCMI_GRAD(composed_nsf, 5, 3, 4, .iparam = {0, 0, 0, 0, 0, 1}, .gpu_tol = 1e-4f)
NCMI_GRAD(composed_softmax_prior_of_means, 5, 3, 4, .iparam = {1, 1, 1, 0, 0, 1}, .gpu_tol = 1e-4f)

/* ---------------------------------------------------------------------- */
/* fused vs composed on random inputs, every combination                  */

TEST(ncmi_fused_matches_composed)
{
    nn_rng rng;
    nn_rng_seed(&rng, 7);
    const int shapes[][3] = {{8, 4, 6}, {1, 2, 3}, {5, 6, 3}, {16, 10, 32}};
    int checked = 0;
    for (int s = 0; s < 4; s++) {
        const int N = shapes[s][0], C = shapes[s][1], D = shapes[s][2];
        float prior[16];
        for (int k = 0; k < C; k++) prior[k] = 1.f + (float)k;
        int y[32];
        for (int i = 0; i < N; i++) y[i] = (int)nn_rng_below(&rng, (uint64_t)C);
        float *z0 = malloc((size_t)N * D * sizeof(float));
        nn_rng_fill_normal(&rng, z0, (size_t)N * D, 0.2f, 1.f);
        for (int combo = 0; combo < 32; combo++) {
            nn_ncmi_cfg cfg = nn_ncmi_cfg_default();
            cfg.simplex = (nn_ncmi_simplex)(combo & 1);
            cfg.gamma = (nn_ncmi_gamma)((combo >> 1) & 1);
            cfg.ratio = (nn_ncmi_ratio)((combo >> 2) & 1);
            cfg.centroids = (combo >> 3) & 1 ? NN_NCMI_CENTROIDS_FIXED : NN_NCMI_CENTROIDS_LEARNED;
            cfg.centering = !((combo >> 4) & 1);
            cfg.momentum = 0.9f;
            float loss[2], *gz[2], *gx[2], ctr[2][64];
            int has_gx[2];
            for (int v = 0; v < 2; v++) {
                nn_params P;
                nn_params_init(&P);
                nn_ncmi m;
                nn_rng r2;
                nn_rng_seed(&r2, 3);
                REQUIRE(nn_ncmi_init(&m, &P, "h", C, D, &cfg, prior, &r2) == 0, "%s", ncmi_error());
                /* a trained-looking state: centre set, xi perturbed */
                for (int j = 0; j < D; j++) m.center->data[j] = 0.1f * (float)j / D;
                m.center_init->data[0] = 1.f;
                for (size_t k = 0; k < m.xi->numel; k++) m.xi->data[k] += 0.3f * sinf((float)k);
                nn_tensor *z = nn_tensor_from(NULL, 2, (int[]){N, D}, z0);
                z->requires_grad = 1;
                nn_graph *g = nn_graph_new();
                /* training = 1: the EMA update runs first in both */
                nn_tensor *L = v ? nn_ncmi_loss_composed(g, &m, z, y, 1) : nn_ncmi_loss(g, &m, z, y, 1);
                REQUIRE(nn_backward(g, L) == 0, "%s", ncmi_error());
                loss[v] = L->data[0];
                gz[v] = malloc((size_t)N * D * sizeof(float));
                gx[v] = malloc((size_t)C * D * sizeof(float));
                REQUIRE(z->grad, "no z gradient");
                memcpy(gz[v], z->grad, (size_t)N * D * sizeof(float));
                has_gx[v] = m.xi->grad != NULL;
                if (has_gx[v]) memcpy(gx[v], m.xi->grad, (size_t)C * D * sizeof(float));
                memcpy(ctr[v], m.center->data, (size_t)D * sizeof(float));
                nn_graph_free(g);
                nn_tensor_free(z);
                nn_ncmi_free(&m);
                nn_params_free(&P);
            }
            char what[96];
            snprintf(what, sizeof what, "shape %d combo %d loss", s, combo);
            close_rel(&loss[0], &loss[1], 1, 1e-5, 0, what);
            snprintf(what, sizeof what, "shape %d combo %d grad_z", s, combo);
            close_rel(gz[0], gz[1], (size_t)N * D, 1e-5, 1e-5, what);
            const int fixed = cfg.centroids == NN_NCMI_CENTROIDS_FIXED;
            EXPECT(has_gx[0] == !fixed && has_gx[1] == !fixed,
                   "combo %d: xi gradient present fused %d composed %d, fixed %d", combo, has_gx[0],
                   has_gx[1], fixed);
            if (!fixed && has_gx[0] && has_gx[1]) {
                snprintf(what, sizeof what, "shape %d combo %d grad_xi", s, combo);
                close_rel(gx[0], gx[1], (size_t)C * D, 1e-5, 1e-5, what);
            }
            EXPECT(memcmp(ctr[0], ctr[1], (size_t)D * sizeof(float)) == 0, "centre differs");
            for (int v = 0; v < 2; v++) {
                free(gz[v]);
                free(gx[v]);
            }
            checked++;
        }
        free(z0);
    }
    EXPECT(checked == 128, "checked %d", checked);
}

/* ---------------------------------------------------------------------- */
/* centre semantics                                                        */

static void setup(nn_ncmi *m, nn_params *P, int C, int D, const nn_ncmi_cfg *cfg)
{
    nn_params_init(P);
    NCMI_CHECK(nn_ncmi_init(m, P, "ncmi", C, D, cfg, NULL, NULL) == 0, "%s", ncmi_error());
}

TEST(ncmi_center_ema_semantics)
{
    const int C = 3, D = 4, N = 2;
    nn_ncmi_cfg cfg = nn_ncmi_cfg_default();
    cfg.momentum = 0.75f;
    nn_params P;
    nn_ncmi m;
    setup(&m, &P, C, D, &cfg);
    EXPECT(m.center_init->data[0] == 0.f, "fresh centre flagged initialised");
    const int y[2] = {0, 2};
    float b1[8] = {1, 2, 3, 4, 3, 2, 1, 0}, b2[8] = {-1, 0, 5, 2, 1, 4, 3, 2};
    nn_graph *g = nn_graph_new();

    /* eval before any training: c stays 0, flag stays 0 */
    nn_tensor *z = nn_tensor_from(g, 2, (int[]){N, D}, b1);
    nn_ncmi_loss(g, &m, z, y, 0);
    for (int j = 0; j < D; j++) EXPECT(m.center->data[j] == 0.f, "eval changed c[%d]", j);
    EXPECT(m.center_init->data[0] == 0.f, "eval set the flag");

    /* first training batch: c = batch mean */
    nn_tensor *L1 = nn_ncmi_loss(g, &m, z, y, 1);
    const float mean1[4] = {2, 2, 2, 2};
    for (int j = 0; j < D; j++) EXPECT_NEAR(m.center->data[j], mean1[j], 1e-6);
    EXPECT(m.center_init->data[0] == 1.f, "first batch did not set the flag");
    /* the update happens BEFORE use: the same loss in eval mode with that c */
    nn_tensor *L1e = nn_ncmi_loss(g, &m, z, y, 0);
    EXPECT(L1->data[0] == L1e->data[0], "training loss %g != eval loss with the updated c %g",
           (double)L1->data[0], (double)L1e->data[0]);

    /* second batch: c = m c + (1-m) mean */
    nn_tensor *z2 = nn_tensor_from(g, 2, (int[]){N, D}, b2);
    nn_ncmi_loss(g, &m, z2, y, 1);
    const float mean2[4] = {0, 2, 4, 2};
    for (int j = 0; j < D; j++) EXPECT_NEAR(m.center->data[j], 0.75f * mean1[j] + 0.25f * mean2[j], 1e-6);
    float keep[4];
    memcpy(keep, m.center->data, sizeof keep);

    /* eval does not change c, composed neither */
    nn_ncmi_loss(g, &m, z, y, 0);
    nn_ncmi_loss_composed(g, &m, z2, y, 0);
    EXPECT(memcmp(keep, m.center->data, sizeof keep) == 0, "eval changed c");

    /* the composed version updates exactly as the fused one */
    nn_ncmi_loss_composed(g, &m, z, y, 1);
    for (int j = 0; j < D; j++) EXPECT_NEAR(m.center->data[j], 0.75f * keep[j] + 0.25f * mean1[j], 1e-6);

    /* centering off: c is neither updated nor used */
    m.cfg.centering = 0;
    memcpy(keep, m.center->data, sizeof keep);
    nn_ncmi_loss(g, &m, z2, y, 1);
    EXPECT(memcmp(keep, m.center->data, sizeof keep) == 0, "centering off updated c");
    nn_graph_free(g);

    /* init_center: mean of the rows, flag set; errors leave c alone */
    float Z[6] = {1, 2, 3, 4, 5, 6};
    nn_ncmi m2;
    nn_params P2;
    setup(&m2, &P2, 2, 2, NULL);
    REQUIRE(nn_ncmi_init_center(&m2, Z, 3) == 0, "%s", ncmi_error());
    EXPECT_NEAR(m2.center->data[0], 3.f, 1e-6);
    EXPECT_NEAR(m2.center->data[1], 4.f, 1e-6);
    EXPECT(m2.center_init->data[0] == 1.f, "init_center did not set the flag");
    float bad[2] = {NAN, 1};
    EXPECT(nn_ncmi_init_center(&m2, bad, 1) != 0 && strstr(ncmi_error(), "row 0"),
           "NaN accepted: %s", ncmi_error());
    EXPECT(nn_ncmi_init_center(&m2, Z, 0) != 0, "n = 0 accepted");
    EXPECT_NEAR(m2.center->data[0], 3.f, 1e-6);

    nn_ncmi_free(&m);
    nn_params_free(&P);
    nn_ncmi_free(&m2);
    nn_params_free(&P2);
}

/* The MIL pitfall: one bag on the first step -> z - c = 0: the step is
 * skipped (no gradient anywhere), not a 1e12 gradient. With init_center
 * from a pass over data, the same step trains normally. */
TEST(ncmi_single_bag_first_step)
{
    const int C = 2, D = 5;
    nn_params P;
    nn_ncmi m;
    setup(&m, &P, C, D, NULL);
    float zb[5] = {0.3f, -1.2f, 2.f, 0.7f, 0.1f};
    const int y[1] = {1};
    for (int composed = 0; composed < 2; composed++) {
        m.center_init->data[0] = 0.f;
        nn_graph *g = nn_graph_new();
        nn_tensor *z = nn_tensor_from(NULL, 2, (int[]){1, D}, zb);
        z->requires_grad = 1;
        nn_tensor *L = composed ? nn_ncmi_loss_composed(g, &m, z, y, 1) : nn_ncmi_loss(g, &m, z, y, 1);
        EXPECT(m.last_skipped == 1, "first single-bag step not skipped");
        EXPECT(isfinite(L->data[0]), "loss %g", (double)L->data[0]);
        EXPECT(!L->requires_grad, "skipped step records a gradient");
        REQUIRE(nn_backward(g, L) == 0, "%s", ncmi_error());
        EXPECT(z->grad == NULL && m.xi->grad == NULL, "skipped step produced gradients");
        for (int j = 0; j < D; j++) EXPECT(m.center->data[j] == zb[j], "c != the bag");
        nn_graph_free(g);
        nn_tensor_free(z);
    }
    /* with a centre from a pass over other bags: a normal, moderate gradient */
    float others[15] = {0, 0, 0, 0, 0, 1, -1, 1, 0, 2, -0.5f, 0.4f, 1.f, 1.f, -1.f};
    m.center_init->data[0] = 0.f;
    REQUIRE(nn_ncmi_init_center(&m, others, 3) == 0, "%s", ncmi_error());
    nn_graph *g = nn_graph_new();
    nn_tensor *z = nn_tensor_from(NULL, 2, (int[]){1, D}, zb);
    z->requires_grad = 1;
    nn_tensor *L = nn_ncmi_loss(g, &m, z, y, 1);
    EXPECT(m.last_skipped == 0, "step skipped after init_center");
    REQUIRE(nn_backward(g, L) == 0, "%s", ncmi_error());
    REQUIRE(z->grad && m.xi->grad, "no gradient after init_center");
    double gn = 0;
    for (int j = 0; j < D; j++) gn += (double)z->grad[j] * z->grad[j];
    EXPECT(isfinite(gn) && sqrt(gn) > 1e-6 && sqrt(gn) < 1e3, "gradient norm %g", sqrt(gn));
    nn_graph_free(g);
    nn_tensor_free(z);
    nn_ncmi_free(&m);
    nn_params_free(&P);
}

/* A sample sitting on the centre (in a batch with others) gets no gradient;
 * the others train normally. */
TEST(ncmi_zero_norm_sample_safe)
{
    const int C = 2, D = 3;
    nn_params P;
    nn_ncmi m;
    setup(&m, &P, C, D, NULL);
    m.center_init->data[0] = 1.f;
    const float c0[3] = {0.5f, -0.5f, 1.f};
    memcpy(m.center->data, c0, sizeof c0);
    float zb[6] = {0.5f, -0.5f, 1.f, 2.f, 1.f, -1.f};
    const int y[2] = {0, 1};
    nn_graph *g = nn_graph_new();
    nn_tensor *z = nn_tensor_from(NULL, 2, (int[]){2, D}, zb);
    z->requires_grad = 1;
    nn_tensor *L = nn_ncmi_loss(g, &m, z, y, 0);
    EXPECT(m.last_skipped == 0 && isfinite(L->data[0]), "loss %g skipped %d", (double)L->data[0],
           m.last_skipped);
    REQUIRE(nn_backward(g, L) == 0, "%s", ncmi_error());
    for (int j = 0; j < D; j++) EXPECT(z->grad[j] == 0.f, "sample on the centre: grad %g", (double)z->grad[j]);
    double gn = 0;
    for (int j = 0; j < D; j++) gn += fabs((double)z->grad[D + j]);
    EXPECT(gn > 0 && isfinite(gn), "other sample's gradient %g", gn);
    nn_graph_free(g);
    nn_tensor_free(z);
    nn_ncmi_free(&m);
    nn_params_free(&P);
}

/* Gamma floor: all centroids equal and the sample's p equal to them: Gamma
 * is 0 (up to rounding), the loss is CMI / floor, finite, gradients finite. */
TEST(ncmi_gamma_floor)
{
    const int C = 3, D = 4;
    for (int ratio = 0; ratio < 2; ratio++)
        for (int composed = 0; composed < 2; composed++) {
            nn_ncmi_cfg cfg = nn_ncmi_cfg_default();
            cfg.ratio = (nn_ncmi_ratio)ratio;
            cfg.tau = 0.5f;
            nn_params P;
            nn_ncmi m;
            setup(&m, &P, C, D, &cfg);
            m.center_init->data[0] = 1.f;
            float zb[4] = {1.f, -2.f, 0.5f, 2.f};
            /* v = z / ||z|| / tau ; xi_c = v for every c -> q_c = p */
            double nrm = 0;
            for (int j = 0; j < D; j++) nrm += (double)zb[j] * zb[j];
            nrm = sqrt(nrm);
            for (int c = 0; c < C; c++)
                for (int j = 0; j < D; j++) m.xi->data[c * D + j] = (float)(zb[j] / nrm / cfg.tau);
            const int y[1] = {1};
            nn_graph *g = nn_graph_new();
            nn_tensor *z = nn_tensor_from(NULL, 2, (int[]){1, D}, zb);
            z->requires_grad = 1;
            nn_tensor *L = composed ? nn_ncmi_loss_composed(g, &m, z, y, 0) : nn_ncmi_loss(g, &m, z, y, 0);
            REQUIRE(nn_backward(g, L) == 0, "%s", ncmi_error());
            EXPECT(isfinite(L->data[0]), "ratio %d composed %d: loss %g", ratio, composed,
                   (double)L->data[0]);
            EXPECT(fabs(m.last_gamma) < 1e-5f, "Gamma %g not ~0", (double)m.last_gamma);
            /* CMI ~ 1e-10 (+ rounding): loss = CMI / floor, tiny */
            EXPECT(L->data[0] >= 0.f && L->data[0] < 1e-2f, "loss %g", (double)L->data[0]);
            for (int j = 0; j < D; j++) EXPECT(isfinite(z->grad[j]), "z grad %g", (double)z->grad[j]);
            for (int k = 0; k < C * D; k++)
                EXPECT(isfinite(m.xi->grad[k]), "xi grad %g", (double)m.xi->grad[k]);
            nn_graph_free(g);
            nn_tensor_free(z);
            nn_ncmi_free(&m);
            nn_params_free(&P);
        }
    /* below the floor the loss is exactly mean CMI / floor (all centroids
     * equal, samples elsewhere: Gamma small but CMI not) */
    nn_ncmi_cfg cfg = nn_ncmi_cfg_default();
    cfg.gamma_floor = 10.f; /* larger than any Gamma here */
    nn_params P;
    nn_ncmi m;
    setup(&m, &P, 2, 3, &cfg);
    m.center_init->data[0] = 1.f;
    for (int k = 0; k < 6; k++) m.xi->data[k] = 0.f;
    float zb[6] = {1, 0, 0, 0, 1, 1};
    const int y[2] = {0, 1};
    nn_graph *g = nn_graph_new();
    nn_tensor *z = nn_tensor_from(g, 2, (int[]){2, 3}, zb);
    nn_tensor *L = nn_ncmi_loss(g, &m, z, y, 0);
    EXPECT(m.last_gamma < 10.f, "Gamma %g", (double)m.last_gamma);
    EXPECT_NEAR(L->data[0], m.last_cmi / 10.f, 1e-6 * fabs(m.last_cmi));
    nn_graph_free(g);
    nn_ncmi_free(&m);
    nn_params_free(&P);
}

TEST(ncmi_fixed_centroids_no_grad)
{
    nn_ncmi_cfg cfg = nn_ncmi_cfg_default();
    REQUIRE(nn_ncmi_cfg_set(&cfg, "centroids", "fixed") == 0, "%s", ncmi_error());
    nn_params P;
    nn_ncmi m;
    setup(&m, &P, 3, 4, &cfg);
    float zb[8] = {1, 2, -1, 0, 0, 1, 2, -3};
    const int y[2] = {2, 0};
    for (int composed = 0; composed < 2; composed++) {
        nn_graph *g = nn_graph_new();
        nn_tensor *z = nn_tensor_from(NULL, 2, (int[]){2, 4}, zb);
        z->requires_grad = 1;
        nn_tensor *L = composed ? nn_ncmi_loss_composed(g, &m, z, y, 1) : nn_ncmi_loss(g, &m, z, y, 1);
        REQUIRE(nn_backward(g, L) == 0, "%s", ncmi_error());
        EXPECT(z->grad != NULL, "no z gradient");
        EXPECT(m.xi->grad == NULL, "fixed centroids got a gradient (composed %d)", composed);
        nn_graph_free(g);
        nn_tensor_free(z);
    }
    /* learned: xi gets one */
    m.cfg.centroids = NN_NCMI_CENTROIDS_LEARNED;
    nn_graph *g = nn_graph_new();
    nn_tensor *z = nn_tensor_from(g, 2, (int[]){2, 4}, zb);
    nn_tensor *L = nn_ncmi_loss(g, &m, z, y, 0);
    REQUIRE(nn_backward(g, L) == 0, "%s", ncmi_error());
    REQUIRE(m.xi->grad != NULL, "learned centroids without gradient");
    double s = 0;
    for (int k = 0; k < 12; k++) s += fabs(m.xi->grad[k]);
    EXPECT(s > 0, "learned centroids: zero gradient");
    nn_graph_free(g);
    nn_ncmi_free(&m);
    nn_params_free(&P);
}

/* ---------------------------------------------------------------------- */
/* init, config, state, eval helpers                                      */

TEST(ncmi_init_state_and_checkpoint)
{
    nn_params P;
    nn_params_init(&P);
    nn_ncmi m;
    REQUIRE(nn_ncmi_init(&m, &P, "head.ncmi", 3, 5, NULL, NULL, NULL) == 0, "%s", ncmi_error());
    EXPECT(nn_params_get(&P, "head.ncmi.xi") == m.xi && P.kind[0] == NN_PARAM_WEIGHT, "xi");
    EXPECT(nn_params_get(&P, "head.ncmi.center") == m.center, "center");
    EXPECT(nn_params_get(&P, "head.ncmi.center_initialized") == m.center_init, "flag");
    EXPECT(!P.host_only[0] && !P.host_only[1] && P.host_only[2],
           "only the flag stays on the host when the set moves to a GPU");
    EXPECT(nn_params_numel(&P, 1) == 15, "only xi is trainable (%zu)", nn_params_numel(&P, 1));
    for (int c = 0; c < 3; c++)
        for (int j = 0; j < 5; j++)
            EXPECT(m.xi->data[c * 5 + j] == (c == j ? 10.f : 0.f) + 1e-6f, "xi[%d,%d] = %g", c, j,
                   (double)m.xi->data[c * 5 + j]);
    /* state round trip through a checkpoint */
    m.center->data[2] = 1.5f;
    m.center_init->data[0] = 1.f;
    char path[512];
    snprintf(path, sizeof path, "%s/ncmi_state.safetensors", test_tmpdir());
    REQUIRE(nn_params_save(&P, path, NULL, NULL, 0) == 0, "%s", ncmi_error());
    nn_params P2;
    nn_params_init(&P2);
    nn_ncmi m2;
    REQUIRE(nn_ncmi_init(&m2, &P2, "head.ncmi", 3, 5, NULL, NULL, NULL) == 0, "%s", ncmi_error());
    REQUIRE(nn_params_load(&P2, path, 1) == 0, "%s", ncmi_error());
    EXPECT(m2.center->data[2] == 1.5f && m2.center_init->data[0] == 1.f, "centre state not restored");

    /* the centroid optimizer on the NCMI set steps xi only */
    nn_optim o;
    nn_optim_sgd_init(&o, &P2, 0.5f, 0.f, 0.f, 0);
    nn_tensor_grad(m2.xi)[0] = 1.f;
    nn_tensor_grad(m2.center)[0] = 1.f;
    nn_optim_step(&o);
    EXPECT_NEAR(m2.xi->data[0], 10.f + 1e-6f - 0.5f, 1e-6);
    EXPECT(m2.center->data[0] == 0.f, "optimizer stepped the centre buffer");
    nn_optim_free(&o);
    nn_ncmi_free(&m);
    nn_params_free(&P);
    nn_ncmi_free(&m2);
    nn_params_free(&P2);

    /* D < C: random directions of norm 10, distinct */
    nn_params_init(&P);
    nn_rng rng;
    nn_rng_seed(&rng, 5);
    REQUIRE(nn_ncmi_init(&m, &P, "ncmi", 6, 3, NULL, NULL, &rng) == 0, "%s", ncmi_error());
    for (int c = 0; c < 6; c++) {
        double n = 0;
        for (int j = 0; j < 3; j++) n += pow(m.xi->data[c * 3 + j] - 1e-6, 2);
        EXPECT_NEAR(sqrt(n), 10.0, 1e-3);
        for (int c2 = 0; c2 < c; c2++) {
            double d = 0;
            for (int j = 0; j < 3; j++) d += fabs(m.xi->data[c * 3 + j] - m.xi->data[c2 * 3 + j]);
            EXPECT(d > 1e-3, "centroids %d and %d coincide", c, c2);
        }
    }
    nn_ncmi_free(&m);
    nn_params_free(&P);

    /* errors: nothing registered */
    nn_params_init(&P);
    nn_ncmi_cfg cfg = nn_ncmi_cfg_default();
    cfg.gamma = NN_NCMI_GAMMA_PRIOR;
    EXPECT(nn_ncmi_init(&m, &P, "x", 3, 4, &cfg, NULL, NULL) != 0 && strstr(ncmi_error(), "prior"),
           "gamma = prior without a prior: %s", ncmi_error());
    float neg[3] = {1, -1, 2}, zero[3] = {0, 0, 0};
    EXPECT(nn_ncmi_init(&m, &P, "x", 3, 4, &cfg, neg, NULL) != 0, "negative prior accepted");
    EXPECT(nn_ncmi_init(&m, &P, "x", 3, 4, &cfg, zero, NULL) != 0, "zero prior accepted");
    EXPECT(nn_ncmi_init(&m, &P, "x", 1, 4, NULL, NULL, NULL) != 0, "C = 1 accepted");
    EXPECT(nn_ncmi_init(&m, &P, "x", 3, 1, NULL, NULL, NULL) != 0, "D = 1 accepted");
    EXPECT(P.n == 0, "failed init registered %d tensors", P.n);
    float cnt[3] = {10, 30, 60};
    REQUIRE(nn_ncmi_init(&m, &P, "x", 3, 4, &cfg, cnt, NULL) == 0, "%s", ncmi_error());
    EXPECT_NEAR(m.w[0], 0.1, 1e-12);
    EXPECT_NEAR(m.w[2], 0.6, 1e-12);
    nn_ncmi_free(&m);
    nn_params_free(&P);
}

TEST(ncmi_cfg_options)
{
    nn_ncmi_cfg c = nn_ncmi_cfg_default();
    EXPECT(c.tau == 0.2f && c.centering == 1 && c.simplex == NN_NCMI_NSF &&
               c.gamma == NN_NCMI_GAMMA_CLASSES && c.ratio == NN_NCMI_RATIO_PER_SAMPLE &&
               c.centroids == NN_NCMI_CENTROIDS_LEARNED && c.gamma_floor > 0,
           "defaults");
    EXPECT(nn_ncmi_cfg_set(&c, "simplex", "softmax") == 0 && c.simplex == NN_NCMI_SOFTMAX, "simplex");
    EXPECT(nn_ncmi_cfg_set(&c, "gamma", "prior") == 0 && c.gamma == NN_NCMI_GAMMA_PRIOR, "gamma");
    EXPECT(nn_ncmi_cfg_set(&c, "ratio", "of_means") == 0 && c.ratio == NN_NCMI_RATIO_OF_MEANS, "ratio");
    EXPECT(nn_ncmi_cfg_set(&c, "centroids", "fixed") == 0 && c.centroids == NN_NCMI_CENTROIDS_FIXED, "cent");
    EXPECT(nn_ncmi_cfg_set(&c, "centering", "false") == 0 && c.centering == 0, "centering");
    EXPECT(nn_ncmi_cfg_set(&c, "tau", "0.3") == 0 && c.tau == 0.3f, "tau");
    EXPECT(nn_ncmi_cfg_set(&c, "momentum", "0.999") == 0 && c.momentum == 0.999f, "momentum");
    nn_ncmi_cfg before = c;
    EXPECT(nn_ncmi_cfg_set(&c, "simplex", "sparsemax") != 0 && strstr(ncmi_error(), "sparsemax"),
           "bad simplex: %s", ncmi_error());
    EXPECT(nn_ncmi_cfg_set(&c, "tau", "0") != 0 && strstr(ncmi_error(), "tau"), "tau 0: %s", ncmi_error());
    EXPECT(nn_ncmi_cfg_set(&c, "momentum", "1.5") != 0, "momentum 1.5");
    EXPECT(nn_ncmi_cfg_set(&c, "tau", "abc") != 0, "tau abc");
    EXPECT(nn_ncmi_cfg_set(&c, "temperature", "1") != 0 && strstr(ncmi_error(), "temperature"),
           "unknown key: %s", ncmi_error());
    EXPECT(memcmp(&before, &c, sizeof c) == 0, "failed set changed the config");
}

TEST(ncmi_project_and_centroids)
{
    const int C = 3, D = 4, n = 2;
    for (int sm = 0; sm < 2; sm++) {
        nn_ncmi_cfg cfg = nn_ncmi_cfg_default();
        cfg.simplex = (nn_ncmi_simplex)sm;
        nn_params P;
        nn_ncmi m;
        setup(&m, &P, C, D, &cfg);
        const float c0[4] = {0.5f, 0.f, -1.f, 2.f};
        memcpy(m.center->data, c0, sizeof c0);
        m.center_init->data[0] = 1.f;
        float z[8] = {1, 2, 3, 4, -1, 0, 0.5f, 2}, zp[8], p[8], p2[8];
        nn_ncmi_project(&m, z, n, zp, p);
        nn_ncmi_project(&m, z, n, NULL, p2);
        EXPECT(memcmp(p, p2, sizeof p) == 0, "p depends on zprime being asked");
        for (int i = 0; i < n; i++) {
            double nrm = 0, ps = 0;
            for (int j = 0; j < D; j++) nrm += (double)(z[i * D + j] - c0[j]) * (z[i * D + j] - c0[j]);
            nrm = sqrt(nrm);
            double s = 0;
            for (int j = 0; j < D; j++) {
                EXPECT_NEAR(zp[i * D + j], (z[i * D + j] - c0[j]) / nrm / 0.2, 1e-5);
                s += sm ? exp(zp[i * D + j]) : 1.0 / (1.0 + exp(-zp[i * D + j]));
                ps += p[i * D + j];
            }
            for (int j = 0; j < D; j++) {
                const double e = sm ? exp(zp[i * D + j]) / s
                                    : 1.0 / (1.0 + exp(-zp[i * D + j])) / (s + 1e-8);
                EXPECT_NEAR(p[i * D + j], e, 1e-6);
            }
            EXPECT_NEAR(ps, 1.0, 1e-6);
        }
        float q[12];
        nn_ncmi_centroids(&m, q);
        for (int c = 0; c < C; c++) {
            double s = 0;
            for (int j = 0; j < D; j++) {
                const double x = m.xi->data[c * D + j];
                s += sm ? exp(x) : 1.0 / (1.0 + exp(-x));
            }
            for (int j = 0; j < D; j++) {
                const double x = m.xi->data[c * D + j];
                const double e = sm ? exp(x) / s : 1.0 / (1.0 + exp(-x)) / (s + 1e-8);
                EXPECT_NEAR(q[c * D + j], e, 1e-6);
            }
        }
        /* the loss uses the same p and q: KL(p0 || q_y0) matches last_cmi for N = 1 */
        const int y[1] = {2};
        nn_graph *g = nn_graph_new();
        nn_tensor *zt = nn_tensor_from(g, 2, (int[]){1, D}, z);
        nn_ncmi_loss(g, &m, zt, y, 0);
        double kl = 0;
        for (int j = 0; j < D; j++) kl += p[j] * log(p[j] / q[2 * D + j]);
        EXPECT_NEAR(m.last_cmi, kl, 1e-5);
        nn_graph_free(g);
        nn_ncmi_free(&m);
        nn_params_free(&P);
    }
}

/* ---------------------------------------------------------------------- */
/* training sanity: a linear encoder on Gaussian blobs, NCMI + SGD, then   */
/* nearest-centroid (KL to class-mean p over the training set) accuracy    */

static double train_blobs(nn_ncmi_simplex simplex, int centering, double *acc_learned)
{
    const int n = 800, ntr = 600, din = 16, C = 4, D = 8, bs = 50, epochs = 25;
    nn_rng rng;
    nn_rng_seed(&rng, 11);
    float *X = malloc((size_t)n * din * sizeof(float));
    int *y = malloc((size_t)n * sizeof(int));
    nn_synth_blobs(&rng, n, din, C, 6.f, X, y);
    nn_params Pm, Pc;
    nn_params_init(&Pm);
    nn_params_init(&Pc);
    nn_linear_m enc;
    nn_linear_m_init(&enc, &Pm, "enc", din, D, 1, &rng);
    nn_ncmi_cfg cfg = nn_ncmi_cfg_default();
    cfg.momentum = 0.99f; /* ~300 steps in all */
    cfg.tau = 0.5f;
    cfg.simplex = simplex;
    cfg.centering = centering;
    nn_ncmi m;
    NCMI_CHECK(nn_ncmi_init(&m, &Pc, "ncmi", C, D, &cfg, NULL, &rng) == 0, "%s", ncmi_error());
    nn_optim oe, oc;
    nn_optim_sgd_init(&oe, &Pm, 0.05f, 0.9f, 5e-4f, 0);
    nn_optim_sgd_init(&oc, &Pc, 0.05f, 0.9f, 0.f, 0);
    nn_graph *g = nn_graph_new();
    int *perm = malloc((size_t)ntr * sizeof(int));
    int *yb = malloc((size_t)bs * sizeof(int));
    float *xb = malloc((size_t)bs * din * sizeof(float));
    for (int ep = 0; ep < epochs; ep++) {
        nn_rng_permutation(&rng, perm, ntr);
        for (int b = 0; b + bs <= ntr; b += bs) {
            for (int i = 0; i < bs; i++) {
                memcpy(xb + (size_t)i * din, X + (size_t)perm[b + i] * din, din * sizeof(float));
                yb[i] = y[perm[b + i]];
            }
            nn_tensor *x = nn_tensor_from(g, 2, (int[]){bs, din}, xb);
            nn_tensor *z = nn_linear_m_forward(g, &enc, x);
            nn_tensor *L = nn_ncmi_loss(g, &m, z, yb, 1);
            NCMI_CHECK(nn_backward(g, L) == 0, "%s", ncmi_error());
            nn_clip_grad_norm(&Pm, 5.f);
            nn_optim_step(&oe);
            nn_optim_step(&oc);
            nn_params_zero_grad(&Pm);
            nn_params_zero_grad(&Pc);
            nn_graph_reset(g);
        }
    }
    /* eval: embeddings of everything (no grad), p, class means over train */
    nn_graph_set_no_grad(g, 1);
    nn_tensor *x = nn_tensor_from(g, 2, (int[]){n, din}, X);
    nn_tensor *z = nn_linear_m_forward(g, &enc, x);
    float *p = malloc((size_t)n * D * sizeof(float));
    float cen0[64];
    memcpy(cen0, m.center->data, D * sizeof(float));
    nn_ncmi_project(&m, z->data, n, NULL, p);
    NCMI_CHECK(memcmp(cen0, m.center->data, D * sizeof(float)) == 0, "project changed c");
    double qh[4][8] = {{0}};
    int cnt[4] = {0};
    for (int i = 0; i < ntr; i++) {
        cnt[y[i]]++;
        for (int j = 0; j < D; j++) qh[y[i]][j] += p[(size_t)i * D + j];
    }
    for (int c = 0; c < C; c++)
        for (int j = 0; j < D; j++) qh[c][j] /= cnt[c];
    float ql[32];
    nn_ncmi_centroids(&m, ql);
    int ok = 0, okl = 0;
    for (int i = ntr; i < n; i++) {
        int best = 0, bestl = 0;
        double bk = INFINITY, bkl = INFINITY;
        for (int c = 0; c < C; c++) {
            double kl = 0, kll = 0;
            for (int j = 0; j < D; j++) {
                const double pj = p[(size_t)i * D + j];
                kl += pj * log(pj / qh[c][j]);
                kll += pj * log(pj / ql[c * D + j]);
            }
            if (kl < bk) bk = kl, best = c;
            if (kll < bkl) bkl = kll, bestl = c;
        }
        ok += best == y[i];
        okl += bestl == y[i];
    }
    if (acc_learned) *acc_learned = (double)okl / (n - ntr);
    nn_graph_free(g);
    nn_optim_free(&oe);
    nn_optim_free(&oc);
    nn_ncmi_free(&m);
    nn_params_free(&Pm);
    nn_params_free(&Pc);
    free(X);
    free(y);
    free(perm);
    free(yb);
    free(xb);
    free(p);
    return (double)ok / (n - ntr);
}

TEST(ncmi_trains_linear_encoder_on_blobs)
{
    double acc_l = 0;
    const double acc = train_blobs(NN_NCMI_NSF, 1, &acc_l);
    printf("    NCMI (NSF, centred) nearest-centroid test accuracy %.3f, learned centroids %.3f\n",
           acc, acc_l);
    EXPECT(acc >= 0.95, "class-mean centroid accuracy %.3f < 0.95", acc);
    EXPECT(acc_l >= 0.95, "learned centroid accuracy %.3f < 0.95", acc_l);
    /* the paper's ablations (Table V), for information */
    double a_sm = train_blobs(NN_NCMI_SOFTMAX, 1, NULL), a_nc = train_blobs(NN_NCMI_NSF, 0, NULL);
    printf("    ablations: softmax %.3f, no centring %.3f\n", a_sm, a_nc);
}
