/* The CE-family losses (nn/loss.h): values and logit gradients against torch
 * (golden file written by tests/reference/losses_reference.py), finite-
 * difference gradient checks of every loss, names, configs, auxiliary terms. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../nn/error.h"
#include "../nn/loss.h"
#include "../nn/ops.h"
#include "../nn/safetensors.h"
#include "gradcheck.h"
#include "golden_io.h"
#include "test.h"

#define GOLDEN "tests/golden/losses.safetensors"

TEST(losses_golden_torch)
{
    nn_safetensors st;
    REQUIRE(nn_st_open(&st, GOLDEN) == 0, "%s (regenerate with tests/reference/losses_reference.py)",
            ncmi_error());
    int ncases = 0, seen[NN_LOSS_COUNT] = {0}, saw_n1 = 0, saw_c2 = 0;
    for (int mi = 0; mi < st.n_meta; mi++) {
        if (strncmp(st.meta_keys[mi], "loss.", 5) != 0) continue;
        const char *var = st.meta_keys[mi] + 5;
        char shape[32], kname[32];
        float p0, p1;
        REQUIRE(sscanf(st.meta_vals[mi], "%31s %31s %f %f", shape, kname, &p0, &p1) == 4,
                "metadata %s = %s", st.meta_keys[mi], st.meta_vals[mi]);
        int N, C;
        REQUIRE(sscanf(shape, "%dx%d", &N, &C) == 2, "shape %s", shape);
        nn_loss_kind k;
        REQUIRE(nn_loss_kind_parse(kname, &k) == 0, "%s", ncmi_error());
        REQUIRE(strcmp(nn_loss_kind_name(k), kname) == 0, "name round trip %s", kname);
        nn_loss_cfg cfg = nn_loss_cfg_default(k);
        switch (k) {
        case NN_LOSS_LABEL_SMOOTHING: cfg.smoothing = p0; break;
        case NN_LOSS_FOCAL: cfg.focal_gamma = p0; break;
        case NN_LOSS_POLY1: cfg.poly_eps = p0; break;
        case NN_LOSS_SQUARE: cfg.square_k = p0; cfg.square_M = p1; break;
        case NN_LOSS_ANTICLASS: cfg.anticlass_weight = p0; break;
        default: break;
        }
        char nm[128];
        snprintf(nm, sizeof nm, "%s.logits", shape);
        size_t nl = 0, ny = 0, ng = 0, nv = 0;
        float *logits = test_st_read_all(&st, nm, &nl);
        snprintf(nm, sizeof nm, "%s.labels", shape);
        float *ylab = test_st_read_all(&st, nm, &ny);
        snprintf(nm, sizeof nm, "%s.loss", var);
        float *want_v = test_st_read_all(&st, nm, &nv);
        snprintf(nm, sizeof nm, "%s.grad", var);
        float *want_g = test_st_read_all(&st, nm, &ng);
        REQUIRE(logits && ylab && want_v && want_g && nl == (size_t)N * C && ny == (size_t)N &&
                    ng == nl && nv == 1,
                "golden case %s incomplete", var);
        int *y = malloc((size_t)N * sizeof *y);
        for (int n = 0; n < N; n++) y[n] = (int)ylab[n];

        nn_graph *g = nn_graph_new();
        nn_tensor *x = nn_tensor_from(NULL, 2, (int[]){N, C}, logits);
        x->requires_grad = 1;
        nn_tensor *loss = nn_loss_forward(g, &cfg, x, y);
        REQUIRE(nn_backward(g, loss) == 0, "%s", ncmi_error());
        char what[160];
        snprintf(what, sizeof what, "%s loss", var);
        test_close_all(loss->data, want_v, 1, 1e-7, 1e-5, what);
        snprintf(what, sizeof what, "%s grad", var);
        REQUIRE(x->grad != NULL, "%s: no gradient", var);
        /* gradients are O(1/N); 1e-5 relative with an absolute floor for
         * entries that cancel to ~0 */
        test_close_all(x->grad, want_g, ng, 1e-7, 1e-5, what);
        nn_graph_free(g);
        nn_tensor_free(x);
        free(y);
        free(logits);
        free(ylab);
        free(want_v);
        free(want_g);
        ncases++;
        seen[k]++;
        if (N == 1) saw_n1++;
        if (C == 2) saw_c2++;
    }
    nn_st_close(&st);
    EXPECT(ncases >= 40, "only %d golden cases", ncases);
    for (int k = 0; k < NN_LOSS_COUNT; k++)
        EXPECT(seen[k] >= 3, "loss %s: %d golden cases", nn_loss_kind_name((nn_loss_kind)k), seen[k]);
    EXPECT(saw_n1 > 0 && saw_c2 > 0, "golden shapes must include N = 1 and C = 2");
}

/* ---- finite-difference gradients: kind in iparam[0], labels in iparam[1..],
 * hyper-parameters fparam[0], fparam[1] ---- */
static nn_tensor *f_loss(nn_graph *g, nn_tensor **in, const gc_case *c)
{
    nn_loss_cfg cfg = nn_loss_cfg_default((nn_loss_kind)c->iparam[0]);
    if (c->fparam[2] != 0) { /* non-default hyper-parameters */
        cfg.smoothing = c->fparam[0];
        cfg.focal_gamma = c->fparam[0];
        cfg.poly_eps = c->fparam[0];
        cfg.square_k = c->fparam[0];
        cfg.square_M = c->fparam[1];
        cfg.anticlass_weight = c->fparam[0];
    }
    return nn_loss_forward(g, &cfg, in[0], c->iparam + 1);
}

#define LOSS_GRAD(tname, kind, N, C, ...)                                                 \
    GRAD_TEST(loss_##tname, .nin = 1, .ndim = {2}, .shape = {{N, C}}, .fn = f_loss,       \
              .lo = -2.f, .hi = 2.f, .iparam = {kind, __VA_ARGS__})

LOSS_GRAD(ce, NN_LOSS_CE, 5, 4, 0, 3, 1, 1, 2)
LOSS_GRAD(label_smoothing, NN_LOSS_LABEL_SMOOTHING, 5, 4, 0, 3, 1, 1, 2)
LOSS_GRAD(focal, NN_LOSS_FOCAL, 5, 4, 0, 3, 1, 1, 2)
LOSS_GRAD(focal_n1, NN_LOSS_FOCAL, 1, 3, 2)
LOSS_GRAD(focal_c2, NN_LOSS_FOCAL, 4, 2, 0, 1, 1, 0)
LOSS_GRAD(poly1, NN_LOSS_POLY1, 5, 4, 0, 3, 1, 1, 2)
LOSS_GRAD(poly1_c2, NN_LOSS_POLY1, 3, 2, 1, 0, 1)
LOSS_GRAD(square, NN_LOSS_SQUARE, 5, 4, 0, 3, 1, 1, 2)
LOSS_GRAD(square_n1, NN_LOSS_SQUARE, 1, 2, 1)
LOSS_GRAD(squentropy, NN_LOSS_SQUENTROPY, 5, 4, 0, 3, 1, 1, 2)
LOSS_GRAD(squentropy_c2, NN_LOSS_SQUENTROPY, 3, 2, 0, 1, 1)
LOSS_GRAD(anticlass, NN_LOSS_ANTICLASS, 5, 4, 0, 3, 1, 1, 2)
LOSS_GRAD(anticlass_n1, NN_LOSS_ANTICLASS, 1, 5, 4)
LOSS_GRAD(anticlass_c2, NN_LOSS_ANTICLASS, 3, 2, 1, 0, 0)

/* Wider than a warp (C = 37: the GPU's lanes hold one or two classes each)
 * and more rows than one GPU block (8); labels (7n + 3) mod C, at most
 * WIDE_MAX_N rows. iparam[0]: the kind, default hyper-parameters. */
#define WIDE_MAX_N 16
static nn_tensor *f_loss_wide(nn_graph *g, nn_tensor **in, const gc_case *c)
{
    const int N = in[0]->shape[0], C = in[0]->shape[1];
    int y[WIDE_MAX_N];
    for (int n = 0; n < N && n < WIDE_MAX_N; n++) y[n] = (7 * n + 3) % C;
    nn_loss_cfg cfg = nn_loss_cfg_default((nn_loss_kind)c->iparam[0]);
    return nn_loss_forward(g, &cfg, in[0], y);
}
#define LOSS_GRAD_WIDE(tname, kind)                                                       \
    GRAD_TEST(loss_wide_##tname, .nin = 1, .ndim = {2}, .shape = {{11, 37}}, .fn = f_loss_wide, \
              .lo = -2.f, .hi = 2.f, .iparam = {kind})
LOSS_GRAD_WIDE(ce, NN_LOSS_CE)
LOSS_GRAD_WIDE(label_smoothing, NN_LOSS_LABEL_SMOOTHING)
LOSS_GRAD_WIDE(focal, NN_LOSS_FOCAL)
LOSS_GRAD_WIDE(poly1, NN_LOSS_POLY1)
LOSS_GRAD_WIDE(square, NN_LOSS_SQUARE)
LOSS_GRAD_WIDE(squentropy, NN_LOSS_SQUENTROPY)
LOSS_GRAD_WIDE(anticlass, NN_LOSS_ANTICLASS)

/* non-default hyper-parameters (fparam[2] = 1 switches them on) */
GRAD_TEST(loss_focal_gamma_half, .nin = 1, .ndim = {2}, .shape = {{4, 5}}, .fn = f_loss, .lo = -2.f,
          .hi = 2.f, .iparam = {NN_LOSS_FOCAL, 4, 0, 2, 2}, .fparam = {0.5f, 0.f, 1.f})
GRAD_TEST(loss_focal_gamma0_is_ce, .nin = 1, .ndim = {2}, .shape = {{3, 4}}, .fn = f_loss,
          .lo = -2.f, .hi = 2.f, .iparam = {NN_LOSS_FOCAL, 1, 0, 3}, .fparam = {0.f, 0.f, 1.f})
GRAD_TEST(loss_poly1_eps, .nin = 1, .ndim = {2}, .shape = {{4, 3}}, .fn = f_loss, .lo = -2.f,
          .hi = 2.f, .iparam = {NN_LOSS_POLY1, 2, 1, 0, 0}, .fparam = {-0.7f, 0.f, 1.f})
GRAD_TEST(loss_square_kM, .nin = 1, .ndim = {2}, .shape = {{4, 6}}, .fn = f_loss, .lo = -2.f,
          .hi = 2.f, .iparam = {NN_LOSS_SQUARE, 5, 0, 3, 3}, .fparam = {3.f, 5.f, 1.f})
GRAD_TEST(loss_anticlass_weight, .nin = 1, .ndim = {2}, .shape = {{4, 6}}, .fn = f_loss, .lo = -3.f,
          .hi = 3.f, .iparam = {NN_LOSS_ANTICLASS, 5, 0, 3, 3}, .fparam = {0.4f, 0.f, 1.f})

/* auxiliary term: CE(in0) + 0.3 * mean(in1^2), both inputs differentiated */
static nn_tensor *f_aux(nn_graph *g, nn_tensor **in, const gc_case *c)
{
    nn_tensor *loss = nn_loss_forward(g, &(nn_loss_cfg){.kind = NN_LOSS_CE}, in[0], c->iparam);
    nn_tensor *term = nn_mean_all(g, nn_mul(g, in[1], in[1]));
    return nn_loss_add_aux(g, loss, term, 0.3f);
}
GRAD_TEST(loss_add_aux, .nin = 2, .ndim = {2, 2}, .shape = {{3, 4}, {2, 3}}, .fn = f_aux,
          .iparam = {0, 3, 1})

TEST(loss_add_aux_value)
{
    nn_graph *g = nn_graph_new();
    float l = 1.25f, t = -2.f;
    nn_tensor *a = nn_tensor_from(g, 1, (int[]){1}, &l);
    nn_tensor *b = nn_tensor_from(g, 2, (int[]){1, 1}, &t);
    nn_tensor *s = nn_loss_add_aux(g, a, b, 0.5f);
    EXPECT(s->numel == 1 && s->ndim == 1, "aux sum must be a scalar [1]");
    EXPECT_NEAR(s->data[0], 0.25f, 1e-7);
    /* two terms chain */
    s = nn_loss_add_aux(g, s, a, 2.f);
    EXPECT_NEAR(s->data[0], 2.75f, 1e-6);
    nn_graph_free(g);
}

TEST(loss_names_and_config)
{
    nn_loss_kind k;
    const char *names[] = {"ce", "label_smoothing", "focal", "poly1", "square", "squentropy",
                           "anticlass"};
    for (int i = 0; i < NN_LOSS_COUNT; i++) {
        EXPECT(nn_loss_kind_parse(names[i], &k) == 0 && (int)k == i, "parse %s", names[i]);
        EXPECT(strcmp(nn_loss_kind_name((nn_loss_kind)i), names[i]) == 0, "name %d", i);
        nn_loss_cfg c = nn_loss_cfg_default((nn_loss_kind)i);
        EXPECT(nn_loss_cfg_check(&c) == 0, "default config of %s invalid: %s", names[i],
               ncmi_error());
    }
    EXPECT(nn_loss_kind_parse("occe", &k) == 0 && k == NN_LOSS_ANTICLASS, "alias occe");
    EXPECT(nn_loss_kind_parse("poly", &k) == 0 && k == NN_LOSS_POLY1, "alias poly");
    EXPECT(nn_loss_kind_parse("hinge", &k) != 0, "unknown name accepted");
    EXPECT(strstr(ncmi_error(), "hinge") && strstr(ncmi_error(), "squentropy"),
           "error should name the loss and the choices: %s", ncmi_error());
    EXPECT(nn_loss_kind_parse(NULL, &k) != 0, "NULL name accepted");

    nn_loss_cfg c = nn_loss_cfg_default(NN_LOSS_FOCAL);
    EXPECT(c.smoothing == 0.1f && c.focal_gamma == 2.f && c.poly_eps == 1.f && c.square_k == 1.f &&
               c.square_M == 1.f && c.anticlass_weight == 1.f,
           "defaults");
    c.focal_gamma = -1.f;
    EXPECT(nn_loss_cfg_check(&c) != 0 && strstr(ncmi_error(), "gamma"), "negative gamma: %s",
           ncmi_error());
    c = nn_loss_cfg_default(NN_LOSS_LABEL_SMOOTHING);
    c.smoothing = 1.5f;
    EXPECT(nn_loss_cfg_check(&c) != 0, "smoothing 1.5 accepted");
    c = nn_loss_cfg_default(NN_LOSS_SQUARE);
    c.square_k = 0.f;
    EXPECT(nn_loss_cfg_check(&c) != 0, "square k 0 accepted");
    c = nn_loss_cfg_default(NN_LOSS_ANTICLASS);
    c.anticlass_weight = -0.1f;
    EXPECT(nn_loss_cfg_check(&c) != 0, "negative anticlass weight accepted");
}

/* Extreme logits stay finite (focal at p_t -> 1 with gamma < 1, anticlass
 * with a huge target logit, square with large values). */
TEST(losses_extreme_logits_finite)
{
    const int N = 2, C = 3;
    float x[6] = {80.f, -80.f, 0.f, -50.f, 60.f, 60.f};
    int y[2] = {0, 1};
    for (int k = 0; k < NN_LOSS_COUNT; k++) {
        nn_loss_cfg cfg = nn_loss_cfg_default((nn_loss_kind)k);
        cfg.focal_gamma = 0.5f;
        nn_graph *g = nn_graph_new();
        nn_tensor *t = nn_tensor_from(NULL, 2, (int[]){N, C}, x);
        t->requires_grad = 1;
        nn_tensor *l = nn_loss_forward(g, &cfg, t, y);
        REQUIRE(nn_backward(g, l) == 0, "%s", ncmi_error());
        EXPECT(isfinite(l->data[0]), "%s: loss %g", nn_loss_kind_name((nn_loss_kind)k),
               (double)l->data[0]);
        for (int i = 0; i < N * C; i++)
            EXPECT(isfinite(t->grad[i]), "%s: grad[%d] = %g", nn_loss_kind_name((nn_loss_kind)k), i,
                   (double)t->grad[i]);
        nn_graph_free(g);
        nn_tensor_free(t);
    }
}
