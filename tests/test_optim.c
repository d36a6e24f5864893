/* Optimizers (SGD, AdamW, Adam), clipping and LR schedules against torch (golden file written
 * by tests/reference/optim_reference.py), optimizer state and checkpoints. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../nn/error.h"
#include "../nn/optim.h"
#include "golden_io.h"
#include "test.h"

#define GOLDEN "tests/golden/optim_reference.safetensors"

TEST(optim_golden_torch)
{
    nn_safetensors st;
    REQUIRE(nn_st_open(&st, GOLDEN) == 0, "%s (regenerate with tests/reference/optim_reference.py)",
            ncmi_error());
    int nvar = 0, nsgd = 0, nadam = 0, nadaml2 = 0;
    for (int mi = 0; mi < st.n_meta; mi++) {
        if (strncmp(st.meta_keys[mi], "optim.", 6) != 0) continue;
        const char *var = st.meta_keys[mi] + 6;
        char kind[16];
        float lr, mom, wd, b1, b2, eps;
        int nest;
        REQUIRE(sscanf(st.meta_vals[mi], "%15s %f %f %f %d %f %f %f", kind, &lr, &mom, &wd, &nest, &b1,
                       &b2, &eps) == 8,
                "metadata %s = %s", st.meta_keys[mi], st.meta_vals[mi]);
        nn_params P;
        nn_params_init(&P);
        nn_tensor *p[2];
        p[0] = nn_params_add(&P, "p0", NN_PARAM_WEIGHT, 2, (int[]){3, 4});
        p[1] = nn_params_add(&P, "p1", NN_PARAM_WEIGHT, 1, (int[]){5});
        nn_tensor *buf = nn_params_add(&P, "buf", NN_PARAM_BUFFER, 1, (int[]){2});
        nn_tensor_grad(buf)[0] = 1.f; /* buffers are never stepped, even with a grad */
        REQUIRE(nn_st_read_f32(&st, "init.p0", p[0]->data, 12, 2, (int[]){3, 4}) == 0, "%s", ncmi_error());
        REQUIRE(nn_st_read_f32(&st, "init.p1", p[1]->data, 5, 1, (int[]){5}) == 0, "%s", ncmi_error());
        nn_optim o;
        int is_sgd = strcmp(kind, "sgd") == 0;
        if (is_sgd) {
            nn_optim_sgd_init(&o, &P, lr, mom, wd, nest);
            nsgd++;
        } else if (!strcmp(kind, "adam")) {
            nn_optim_adam_init(&o, &P, lr, b1, b2, eps, wd); /* torch.optim.Adam: L2 weight decay */
            nadaml2++;
        } else {
            nn_optim_adamw_init(&o, &P, lr, b1, b2, eps, wd);
            nadam++;
        }
        char name[128];
        for (int s = 0; s < 5; s++) {
            for (int k = 0; k < 2; k++) {
                snprintf(name, sizeof name, "grad.p%d.%d", k, s);
                REQUIRE(nn_st_read_f32(&st, name, nn_tensor_grad(p[k]), p[k]->numel, -1, NULL) == 0,
                        "%s", ncmi_error());
            }
            nn_optim_step(&o);
        }
        EXPECT(o.step == 5, "%s: step %ld", var, o.step);
        EXPECT(buf->data[0] == 0.f, "%s: a buffer was stepped", var);
        for (int k = 0; k < 2; k++) {
            size_t n;
            snprintf(name, sizeof name, "%s.p%d", var, k);
            float *want = test_st_read_all(&st, name, &n);
            REQUIRE(want && n == p[k]->numel, "golden %s", name);
            test_close_all(p[k]->data, want, n, 1e-6, 2e-6, name); /* torch fuses multiply-adds (FMA): ulp-level differences */
            free(want);
            for (int w = 1; w <= 2; w++) {
                snprintf(name, sizeof name, "%s.p%d.state%d", var, k, w);
                want = test_st_read_all(&st, name, &n);
                float *ours = w == 1 ? o.state1[k] : o.state2[k];
                if (!want) {
                    EXPECT(ours == NULL, "%s: state%d exists, torch has none", var, w);
                    continue;
                }
                REQUIRE(ours != NULL, "%s: no state%d", var, w);
                test_close_all(ours, want, n, 1e-7, 2e-6, name);
                free(want);
            }
        }
        nn_optim_free(&o);
        nn_params_free(&P);
        nvar++;
    }
    EXPECT(nvar == 10 && nsgd == 5 && nadam == 3 && nadaml2 == 2, "%d variants (%d SGD, %d AdamW, %d Adam)",
           nvar, nsgd, nadam, nadaml2);
    nn_st_close(&st);
}

TEST(optim_skips_params_without_grad)
{
    nn_params P;
    nn_params_init(&P);
    nn_tensor *a = nn_params_add(&P, "a", NN_PARAM_WEIGHT, 1, (int[]){3});
    nn_tensor *b = nn_params_add(&P, "b", NN_PARAM_WEIGHT, 1, (int[]){3});
    nn_tensor_fill(a, 1.f);
    nn_tensor_fill(b, 1.f);
    nn_tensor_grad(a)[1] = 2.f;
    nn_optim o;
    nn_optim_adamw_init(&o, &P, 0.1f, 0.9f, 0.999f, 1e-8f, 0.5f);
    nn_optim_step(&o);
    EXPECT(b->data[0] == 1.f && o.state1[1] == NULL, "param without grad was stepped");
    /* AdamW first step: p*(1-lr*wd) - lr*sign(g) (bias-corrected m/sqrt(v) = g/|g|) */
    EXPECT_NEAR(a->data[0], 0.95, 1e-6);
    EXPECT_NEAR(a->data[1], 0.95 - 0.1, 1e-6);
    nn_optim_free(&o);
    /* plain SGD: p -= lr * (g + wd p) */
    nn_tensor_fill(a, 1.f);
    nn_optim_sgd_init(&o, &P, 0.5f, 0.f, 0.1f, 0);
    nn_optim_step(&o);
    EXPECT_NEAR(a->data[0], 1.0 - 0.5 * 0.1, 1e-7);
    EXPECT_NEAR(a->data[1], 1.0 - 0.5 * 2.1, 1e-7);
    EXPECT(o.state1[0] == NULL, "momentum buffer without momentum");
    nn_optim_free(&o);
    nn_params_free(&P);
}

TEST(clip_grad_norm_golden_torch)
{
    nn_safetensors st;
    REQUIRE(nn_st_open(&st, GOLDEN) == 0, "%s", ncmi_error());
    const char *vars[] = {"clipped", "unclipped"};
    for (int v = 0; v < 2; v++) {
        char key[64], name[64];
        snprintf(key, sizeof key, "clip.%s", vars[v]);
        const char *m = nn_st_meta(&st, key);
        float max_norm, norm;
        REQUIRE(m && sscanf(m, "%f %f", &max_norm, &norm) == 2, "metadata %s", key);
        nn_params P;
        nn_params_init(&P);
        nn_tensor *p0 = nn_params_add(&P, "p0", NN_PARAM_WEIGHT, 2, (int[]){3, 4});
        nn_tensor *p1 = nn_params_add(&P, "p1", NN_PARAM_WEIGHT, 1, (int[]){5});
        nn_tensor *nog = nn_params_add(&P, "nograd", NN_PARAM_WEIGHT, 1, (int[]){5});
        nn_tensor *bufp = nn_params_add(&P, "buffer", NN_PARAM_BUFFER, 1, (int[]){1});
        nn_tensor_grad(bufp)[0] = 1000.f; /* not a trainable parameter: not counted */
        snprintf(name, sizeof name, "clip.%s.g0", vars[v]);
        REQUIRE(nn_st_read_f32(&st, name, nn_tensor_grad(p0), 12, -1, NULL) == 0, "%s", ncmi_error());
        snprintf(name, sizeof name, "clip.%s.g1", vars[v]);
        REQUIRE(nn_st_read_f32(&st, name, nn_tensor_grad(p1), 5, -1, NULL) == 0, "%s", ncmi_error());
        float got = nn_clip_grad_norm(&P, max_norm);
        EXPECT_NEAR(got, norm, 2e-6 * norm);
        EXPECT(nog->grad == NULL, "grad allocated for a parameter without one");
        float *w0 = NULL, *w1 = NULL;
        snprintf(name, sizeof name, "clip.%s.out0", vars[v]);
        w0 = test_st_read_all(&st, name, NULL);
        snprintf(name, sizeof name, "clip.%s.out1", vars[v]);
        w1 = test_st_read_all(&st, name, NULL);
        REQUIRE(w0 && w1, "golden clip outputs");
        test_close_all(p0->grad, w0, 12, 1e-7, 2e-6, "clipped g0");
        test_close_all(p1->grad, w1, 5, 1e-7, 2e-6, "clipped g1");
        if (v == 0) {
            double s = 0;
            for (int i = 0; i < 12; i++) s += (double)p0->grad[i] * p0->grad[i];
            for (int i = 0; i < 5; i++) s += (double)p1->grad[i] * p1->grad[i];
            EXPECT(norm > max_norm && sqrt(s) <= max_norm, "clipped norm %g", sqrt(s));
        }
        EXPECT(bufp->grad[0] == 1000.f, "a buffer's grad was clipped");
        free(w0);
        free(w1);
        nn_params_free(&P);
    }
    nn_st_close(&st);
}

TEST(lr_schedules_golden_torch)
{
    nn_safetensors st;
    REQUIRE(nn_st_open(&st, GOLDEN) == 0, "%s", ncmi_error());
    int nsched = 0;
    for (int mi = 0; mi < st.n_meta; mi++) {
        if (strncmp(st.meta_keys[mi], "lr.", 3) != 0) continue;
        nn_lr_schedule s;
        memset(&s, 0, sizeof s);
        char kind[16];
        float gamma;
        int off = 0;
        REQUIRE(sscanf(st.meta_vals[mi], "%15s %f %f %lf %lf %f%n", kind, &s.base_lr, &s.min_lr,
                       &s.total, &s.warmup, &gamma, &off) == 6,
                "metadata %s", st.meta_vals[mi]);
        s.gamma = gamma;
        s.kind = strcmp(kind, "multistep") == 0 ? NN_LR_MULTISTEP
                 : strcmp(kind, "cosine") == 0  ? NN_LR_COSINE
                                                : NN_LR_CONSTANT;
        const char *p = st.meta_vals[mi] + off;
        int used;
        while (s.n_milestones < 16 && sscanf(p, "%lf%n", &s.milestones[s.n_milestones], &used) == 1) {
            s.n_milestones++;
            p += used;
        }
        size_t n;
        float *want = test_st_read_all(&st, st.meta_keys[mi], &n);
        REQUIRE(want && n > 5, "golden %s", st.meta_keys[mi]);
        for (size_t t = 0; t < n; t++) {
            float got = nn_lr_at(&s, (double)t);
            /* torch's LinearLR cannot start at exactly 0: 1e-9 x base */
            if (!(fabs((double)got - want[t]) <= 2e-9 + 2e-6 * fabs((double)want[t])))
                test_fail_at(__FILE__, __LINE__, "%s at t=%zu: ours %.9g, torch %.9g", st.meta_keys[mi],
                             t, got, want[t]);
        }
        free(want);
        nsched++;
    }
    EXPECT(nsched == 5, "%d schedules", nsched);
    nn_st_close(&st);
}

TEST(lr_schedules_fractional_and_edges)
{
    nn_lr_schedule s = {.kind = NN_LR_COSINE, .base_lr = 1.f, .min_lr = 0.1f, .total = 100, .warmup = 10};
    EXPECT(nn_lr_at(&s, 0) == 0.f, "warm-up starts at 0");
    EXPECT_NEAR(nn_lr_at(&s, 2.5), 0.25, 1e-7);
    EXPECT_NEAR(nn_lr_at(&s, 10), 1.0, 1e-7);
    EXPECT_NEAR(nn_lr_at(&s, 60), 0.55, 1e-6); /* half way: (base + min) / 2 */
    EXPECT_NEAR(nn_lr_at(&s, 35), 0.1 + 0.9 * (1 + cos(M_PI * 0.25)) / 2, 1e-6);
    EXPECT_NEAR(nn_lr_at(&s, 110), 0.1, 1e-7);
    EXPECT_NEAR(nn_lr_at(&s, 500), 0.1, 1e-7); /* stays at min_lr after the half cycle */
    nn_lr_schedule m = {.kind = NN_LR_MULTISTEP, .base_lr = 0.1f, .gamma = 0.5f,
                        .milestones = {30, 10, 20}, .n_milestones = 3};
    EXPECT_NEAR(nn_lr_at(&m, 9.99), 0.1, 1e-8);
    EXPECT_NEAR(nn_lr_at(&m, 10), 0.05, 1e-9);
    EXPECT_NEAR(nn_lr_at(&m, 25.5), 0.025, 1e-9);
    EXPECT_NEAR(nn_lr_at(&m, 1000), 0.0125, 1e-9);
    nn_lr_schedule c = {.kind = NN_LR_CONSTANT, .base_lr = 3e-4f};
    EXPECT(nn_lr_at(&c, 0) == 3e-4f && nn_lr_at(&c, 1e6) == 3e-4f, "constant");
    c.warmup = 4;
    EXPECT_NEAR(nn_lr_at(&c, 1), 0.75e-4, 1e-11);
    EXPECT(nn_lr_at(&c, 4) == 3e-4f, "end of warm-up");
}

/* Deterministic pseudo-gradients for step s. */
static void fake_grads(nn_params *P, int s)
{
    for (int i = 0; i < P->n; i++) {
        if (P->kind[i] != NN_PARAM_WEIGHT) continue;
        float *g = nn_tensor_grad(P->t[i]);
        for (size_t k = 0; k < P->t[i]->numel; k++)
            g[k] = sinf(0.37f * (float)(k + 1) + 1.3f * (float)s + (float)i) + 0.1f * P->t[i]->data[k];
    }
}

static void build(nn_params *P, uint64_t seed)
{
    nn_rng rng;
    nn_rng_seed(&rng, seed);
    nn_params_init(P);
    nn_linear_m a, b;
    nn_linear_m_init(&a, P, "l1", 6, 5, 1, &rng);
    nn_batchnorm2d_m bn;
    nn_batchnorm2d_m_init(&bn, P, "bn", 5);
    nn_linear_m_init(&b, P, "l2", 5, 3, 0, &rng);
}

static void make_opt(nn_optim *o, nn_params *P, int adam)
{
    if (adam)
        nn_optim_adamw_init(o, P, 0.01f, 0.9f, 0.999f, 1e-8f, 0.05f);
    else
        nn_optim_sgd_init(o, P, 0.05f, 0.9f, 1e-4f, 1);
}

TEST(optim_checkpoint_resume_bit_identical)
{
    for (int adam = 0; adam < 2; adam++) {
        /* uninterrupted: 6 steps */
        nn_params A;
        build(&A, 5);
        nn_optim oa;
        make_opt(&oa, &A, adam);
        for (int s = 0; s < 6; s++) {
            oa.lr *= 0.9f;
            fake_grads(&A, s);
            nn_optim_step(&oa);
        }
        /* interrupted after 3 steps, resumed from a checkpoint in a fresh process state */
        nn_params B;
        build(&B, 5);
        nn_optim ob;
        make_opt(&ob, &B, adam);
        for (int s = 0; s < 3; s++) {
            ob.lr *= 0.9f;
            fake_grads(&B, s);
            nn_optim_step(&ob);
        }
        nn_params_get(&B, "bn.num_batches_tracked")->data[0] = 3;
        const char *path = test_tmp_path(adam ? "ckpt_adam.safetensors" : "ckpt_sgd.safetensors");
        const char *mk[] = {"epoch"}, *mv[] = {"3"};
        REQUIRE(nn_checkpoint_save(path, &B, &ob, mk, mv, 1) == 0, "%s", ncmi_error());
        float lr = ob.lr;
        nn_optim_free(&ob);
        nn_params_free(&B);

        nn_params C;
        build(&C, 77); /* different init: everything must come from the file */
        nn_optim oc;
        make_opt(&oc, &C, adam);
        REQUIRE(nn_checkpoint_load(path, &C, &oc) == 0, "%s", ncmi_error());
        EXPECT(oc.step == 3, "step %ld after load", oc.step);
        EXPECT(nn_params_get(&C, "bn.num_batches_tracked")->data[0] == 3.f, "buffer restored");
        oc.lr = lr;
        for (int s = 3; s < 6; s++) {
            oc.lr *= 0.9f;
            fake_grads(&C, s);
            nn_optim_step(&oc);
        }
        EXPECT(oc.step == oa.step, "steps %ld vs %ld", oc.step, oa.step);
        for (int i = 0; i < A.n; i++) {
            if (A.kind[i] != NN_PARAM_WEIGHT) continue;
            size_t nb = A.t[i]->numel * sizeof(float);
            EXPECT(memcmp(A.t[i]->data, C.t[i]->data, nb) == 0, "%s: %s differs after resume",
                   adam ? "AdamW" : "SGD", A.t[i]->name);
            EXPECT(oa.state1[i] && oc.state1[i] && memcmp(oa.state1[i], oc.state1[i], nb) == 0,
                   "state1 of %s differs", A.t[i]->name);
            if (adam)
                EXPECT(oa.state2[i] && oc.state2[i] && memcmp(oa.state2[i], oc.state2[i], nb) == 0,
                       "state2 of %s differs", A.t[i]->name);
        }
        /* the file holds the metadata and torch-style state names */
        nn_safetensors st;
        REQUIRE(nn_st_open(&st, path) == 0, "%s", ncmi_error());
        EXPECT(nn_st_meta(&st, "epoch") && strcmp(nn_st_meta(&st, "epoch"), "3") == 0, "metadata");
        EXPECT(nn_st_find(&st, adam ? "optim.l1.weight.exp_avg_sq" : "optim.l1.weight.momentum_buffer") != NULL,
               "state names");
        EXPECT(nn_st_find(&st, "optim.bn.running_mean.exp_avg") == NULL &&
                   nn_st_find(&st, "optim.bn.running_mean.momentum_buffer") == NULL,
               "state for a buffer");
        const nn_st_entry *e = nn_st_find(&st, "optim.step");
        int64_t step = -1;
        EXPECT(e && e->dtype == NN_ST_I64 && e->ndim == 0 && nn_st_read_i64(&st, "optim.step", &step, 1) == 0 &&
                   step == 3,
               "optim.step");
        nn_st_close(&st);
        nn_optim_free(&oa);
        nn_optim_free(&oc);
        nn_params_free(&A);
        nn_params_free(&C);
    }
}

TEST(optim_state_tensors_names)
{
    nn_params P;
    build(&P, 1);
    nn_optim o;
    nn_optim_sgd_init(&o, &P, 0.1f, 0.9f, 0.f, 0);
    nn_st_tensor *ts = NULL;
    int n = nn_optim_state_tensors(&o, &ts);
    EXPECT(n == 1 && strcmp(ts[0].name, "optim.step") == 0 && *(const int64_t *)ts[0].data == 0,
           "before any step: only optim.step (%d)", n);
    nn_optim_state_tensors_free(ts, n);
    free(ts);
    fake_grads(&P, 0);
    REQUIRE(strcmp(P.t[2]->name, "bn.weight") == 0, "parameter order");
    free(P.t[2]->grad); /* bn.weight gets no gradient this step */
    P.t[2]->grad = NULL;
    nn_optim_step(&o);
    n = nn_optim_state_tensors(&o, &ts);
    /* l1.weight, l1.bias, bn.bias, l2.weight (bn.weight had no grad) + step */
    EXPECT(n == 5, "%d state tensors", n);
    int found = 0;
    for (int i = 0; i < n; i++) {
        if (strcmp(ts[i].name, "optim.l1.weight.momentum_buffer") == 0) {
            found++;
            EXPECT(ts[i].ndim == 2 && ts[i].shape[0] == 5 && ts[i].shape[1] == 6 && ts[i].dtype == NN_ST_F32,
                   "shape of the l1.weight buffer");
        }
        if (strcmp(ts[i].name, "optim.step") == 0) {
            found++;
            EXPECT(*(const int64_t *)ts[i].data == 1 && ts[i].dtype == NN_ST_I64, "step value");
        }
        EXPECT(strstr(ts[i].name, "bn.weight") == NULL, "state for a param without grad");
    }
    EXPECT(found == 2, "names");
    nn_optim_state_tensors_free(ts, n);
    free(ts);
    nn_optim_free(&o);
    nn_params_free(&P);
}

TEST(optim_checkpoint_load_errors_modify_nothing)
{
    nn_params A;
    build(&A, 1);
    nn_optim sgd;
    nn_optim_sgd_init(&sgd, &A, 0.1f, 0.9f, 0.f, 0);
    fake_grads(&A, 0);
    nn_optim_step(&sgd);
    const char *ck_sgd = test_tmp_path("e_sgd.safetensors");
    REQUIRE(nn_checkpoint_save(ck_sgd, &A, &sgd, NULL, NULL, 0) == 0, "%s", ncmi_error());
    const char *weights = test_tmp_path("e_weights.safetensors");
    REQUIRE(nn_checkpoint_save(weights, &A, NULL, NULL, NULL, 0) == 0, "%s", ncmi_error());

    nn_params B;
    build(&B, 2);
    nn_optim adam;
    nn_optim_adamw_init(&adam, &B, 0.1f, 0.9f, 0.99f, 1e-8f, 0.f);
    fake_grads(&B, 1);
    nn_optim_step(&adam);
    nn_optim_step(&adam);
    float w0 = B.t[0]->data[0], m0 = adam.state1[0][0];

    /* an SGD checkpoint into AdamW */
    EXPECT(nn_checkpoint_load(ck_sgd, &B, &adam) == -1, "SGD state loaded into AdamW");
    EXPECT(strstr(ncmi_error(), ck_sgd) && strstr(ncmi_error(), "momentum_buffer"), "message: %s",
           ncmi_error());
    EXPECT(B.t[0]->data[0] == w0 && adam.step == 2 && adam.state1[0][0] == m0, "modified on error");
    /* weights only, optimizer requested */
    EXPECT(nn_checkpoint_load(weights, &B, &adam) == -1, "missing optimizer state accepted");
    EXPECT(strstr(ncmi_error(), "optim.step"), "message: %s", ncmi_error());
    EXPECT(B.t[0]->data[0] == w0 && adam.step == 2 && adam.state1[0][0] == m0, "modified on error");
    /* weights only, no optimizer: fine */
    nn_params W;
    build(&W, 9);
    EXPECT(nn_checkpoint_load(weights, &W, NULL) == 0, "%s", ncmi_error());
    EXPECT(memcmp(W.t[0]->data, A.t[0]->data, W.t[0]->numel * sizeof(float)) == 0, "weights loaded");
    /* a model of another shape: the optimizer state is valid... for the wrong model */
    nn_params D;
    nn_rng rng;
    nn_rng_seed(&rng, 3);
    nn_params_init(&D);
    nn_linear_m l1, l2;
    nn_linear_m_init(&l1, &D, "l1", 6, 5, 1, &rng);
    nn_batchnorm2d_m bn;
    nn_batchnorm2d_m_init(&bn, &D, "bn", 5);
    nn_linear_m_init(&l2, &D, "l2", 5, 4, 0, &rng); /* 4 outputs instead of 3 */
    nn_optim od;
    nn_optim_sgd_init(&od, &D, 0.1f, 0.9f, 0.f, 0);
    float d0 = D.t[0]->data[0];
    EXPECT(nn_checkpoint_load(ck_sgd, &D, &od) == -1, "shape mismatch accepted");
    EXPECT(strstr(ncmi_error(), "'optim.l2.weight.momentum_buffer': shape [3,5] in file, [4,5] expected") ||
               strstr(ncmi_error(), "'l2.weight': shape [3,5] in file, [4,5] expected"),
           "message: %s", ncmi_error());
    EXPECT(D.t[0]->data[0] == d0 && od.state1[0] == NULL && od.step == 0, "modified on error");
    /* a state tensor for a parameter the model lacks */
    nn_params E;
    nn_params_init(&E);
    nn_rng_seed(&rng, 4);
    nn_linear_m e1;
    nn_linear_m_init(&e1, &E, "l1", 6, 5, 1, &rng);
    nn_optim oe;
    nn_optim_sgd_init(&oe, &E, 0.1f, 0.9f, 0.f, 0);
    float e0 = E.t[0]->data[0];
    EXPECT(nn_checkpoint_load(ck_sgd, &E, &oe) == -1, "extra state accepted");
    EXPECT(strstr(ncmi_error(), ck_sgd) != NULL, "message: %s", ncmi_error());
    EXPECT(E.t[0]->data[0] == e0 && oe.step == 0, "modified on error");
    /* the optimizer state alone from an opened file */
    nn_safetensors st;
    REQUIRE(nn_st_open(&st, ck_sgd) == 0, "%s", ncmi_error());
    nn_optim o2;
    nn_optim_sgd_init(&o2, &W, 0.1f, 0.9f, 0.f, 0);
    EXPECT(nn_optim_state_load(&o2, &st) == 0, "%s", ncmi_error());
    EXPECT(o2.step == 1 && o2.state1[0] && memcmp(o2.state1[0], sgd.state1[0], 30 * sizeof(float)) == 0,
           "state loaded");
    nn_st_close(&st);
    EXPECT(nn_checkpoint_load(test_tmp_path("absent.safetensors"), &B, &adam) == -1, "absent file");

    nn_optim_free(&o2);
    nn_optim_free(&oe);
    nn_optim_free(&od);
    nn_optim_free(&adam);
    nn_optim_free(&sgd);
    nn_params_free(&A);
    nn_params_free(&B);
    nn_params_free(&D);
    nn_params_free(&E);
    nn_params_free(&W);
}

TEST(clip_grad_norm_large_and_edges)
{
    nn_params P;
    nn_params_init(&P);
    nn_tensor *a = nn_params_add(&P, "a", NN_PARAM_WEIGHT, 2, (int[]){300, 1000}); /* several chunks */
    nn_tensor *b = nn_params_add(&P, "b", NN_PARAM_WEIGHT, 1, (int[]){7});
    nn_rng rng;
    nn_rng_seed(&rng, 5);
    nn_rng_fill_normal(&rng, nn_tensor_grad(a), a->numel, 0.f, 0.01f);
    nn_rng_fill_normal(&rng, nn_tensor_grad(b), b->numel, 0.f, 1.f);
    float *g0 = malloc(a->numel * sizeof(float));
    memcpy(g0, a->grad, a->numel * sizeof(float));
    double s = 0;
    for (size_t k = 0; k < a->numel; k++) s += (double)a->grad[k] * a->grad[k];
    for (size_t k = 0; k < b->numel; k++) s += (double)b->grad[k] * b->grad[k];
    double norm = sqrt(s);
    /* above the norm: nothing changes */
    float got = nn_clip_grad_norm(&P, (float)norm * 2);
    EXPECT_NEAR(got, norm, 1e-6 * norm);
    EXPECT(memcmp(a->grad, g0, a->numel * sizeof(float)) == 0, "grads changed without clipping");
    /* clip to 1: every grad scaled by 1 / (norm + 1e-6) */
    got = nn_clip_grad_norm(&P, 1.f);
    EXPECT_NEAR(got, norm, 1e-6 * norm);
    float c = (float)(1.0 / (norm + 1e-6));
    int bad = 0;
    for (size_t k = 0; k < a->numel; k++) bad += a->grad[k] != g0[k] * c;
    EXPECT(bad == 0, "%d grads not scaled by the clip coefficient", bad);
    EXPECT_NEAR(nn_clip_grad_norm(&P, 1.f), 1.0, 1e-5);
    free(g0);
    nn_params_free(&P);
    /* no gradients at all: norm 0 */
    nn_params Q;
    nn_params_init(&Q);
    nn_params_add(&Q, "w", NN_PARAM_WEIGHT, 1, (int[]){3});
    EXPECT(nn_clip_grad_norm(&Q, 1.f) == 0.f, "norm without grads");
    nn_params_free(&Q);
}

/* The device API on the CPU: clipping without reading the norm back scales
 * as nn_clip_grad_norm does; moving a set to the CPU changes nothing; the
 * host-side counters and flags are marked host_only. */
TEST(clip_async_and_params_to_device_on_cpu)
{
    nn_params P, Q;
    nn_params_init(&P);
    nn_params_init(&Q);
    nn_tensor *a = nn_params_add(&P, "a", NN_PARAM_WEIGHT, 1, (int[]){1000});
    nn_tensor *b = nn_params_add(&Q, "a", NN_PARAM_WEIGHT, 1, (int[]){1000});
    nn_rng rng;
    nn_rng_seed(&rng, 8);
    nn_rng_fill_normal(&rng, nn_tensor_grad(a), a->numel, 0.f, 1.f);
    memcpy(nn_tensor_grad(b), a->grad, a->numel * sizeof(float));
    nn_clip_grad_norm(&P, 0.5f);
    nn_clip_grad_norm_async(&Q, 0.5f);
    EXPECT(memcmp(a->grad, b->grad, a->numel * sizeof(float)) == 0, "async clipping differs");
    nn_params_free(&P);
    nn_params_free(&Q);

    nn_params_init(&P);
    nn_batchnorm2d_m bn;
    nn_batchnorm2d_m_init(&bn, &P, "bn", 3);
    nn_tensor *data0 = bn.weight;
    float *d0 = bn.weight->data;
    nn_params_to_device(&P, NN_DEVICE_CPU);
    EXPECT(bn.weight == data0 && bn.weight->data == d0, "a move to the CPU reallocated");
    for (int i = 0; i < P.n; i++)
        EXPECT(P.host_only[i] == (P.t[i] == bn.num_batches_tracked), "%s: host_only %d", P.t[i]->name,
               P.host_only[i]);
    nn_optim o;
    nn_optim_sgd_init(&o, &P, 0.1f, 0.9f, 0.f, 0);
    nn_tensor_grad(bn.weight)[0] = 1.f;
    nn_optim_step(&o);
    EXPECT(o.state1[0] && o.state_dev[0] == NN_DEVICE_CPU, "momentum buffer on the CPU");
    nn_optim_free(&o);
    nn_params_free(&P);
}
