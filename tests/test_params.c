/* Parameter sets: add/get, safetensors save/load with precise errors and
 * no modification on error, PyTorch init statistics, module forwards. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../nn/error.h"
#include "../nn/ops.h"
#include "../nn/params.h"
#include "test.h"

TEST(params_add_get_numel)
{
    nn_params P;
    nn_params_init(&P);
    nn_tensor *w = nn_params_add(&P, "fc.weight", NN_PARAM_WEIGHT, 2, (int[]){10, 256});
    nn_tensor *b = nn_params_addf(&P, "fc", "bias", NN_PARAM_WEIGHT, 1, (int[]){10});
    nn_tensor *r = nn_params_addf(&P, NULL, "centre", NN_PARAM_BUFFER, 1, (int[]){7});
    nn_tensor *s = nn_params_addf(&P, "", "scale", NN_PARAM_BUFFER, 0, NULL);
    EXPECT(P.n == 4, "n = %d", P.n);
    EXPECT(strcmp(b->name, "fc.bias") == 0 && strcmp(r->name, "centre") == 0 &&
               strcmp(s->name, "scale") == 0,
           "names %s %s %s", b->name, r->name, s->name);
    EXPECT(nn_params_get(&P, "fc.weight") == w && nn_params_get(&P, "fc.bias") == b &&
               nn_params_get(&P, "centre") == r && nn_params_get(&P, "nope") == NULL,
           "get");
    EXPECT(w->requires_grad && b->requires_grad && !r->requires_grad && !s->requires_grad,
           "requires_grad follows the kind");
    EXPECT(w->graph == NULL && w->numel == 2560, "persistent tensor");
    EXPECT(s->ndim == 0 && s->numel == 1, "scalar buffer");
    for (size_t i = 0; i < w->numel; i++) EXPECT(w->data[i] == 0.f, "not zero-filled");
    EXPECT(P.save_dtype[0] == NN_ST_F32, "default save dtype F32");
    EXPECT(nn_params_numel(&P, 0) == 2560 + 10 + 7 + 1, "numel %zu", nn_params_numel(&P, 0));
    EXPECT(nn_params_numel(&P, 1) == 2570, "trainable numel %zu", nn_params_numel(&P, 1));
    /* growth past the initial capacity keeps earlier pointers valid */
    for (int i = 0; i < 100; i++) {
        char nm[32];
        snprintf(nm, sizeof nm, "extra%d", i);
        nn_params_add(&P, nm, NN_PARAM_WEIGHT, 1, (int[]){1});
    }
    EXPECT(nn_params_get(&P, "fc.weight") == w && nn_params_get(&P, "extra99") != NULL, "after growth");
    nn_tensor_grad(w)[3] = 5.f;
    nn_params_zero_grad(&P);
    EXPECT(w->grad[3] == 0.f, "zero_grad");
    nn_params_free(&P);
    EXPECT(P.n == 0 && P.t == NULL, "free resets");
}

/* A small model with every module kind (no forward needed). */
typedef struct model {
    nn_params P;
    nn_conv2d_m conv;
    nn_batchnorm2d_m bn;
    nn_layernorm_m ln;
    nn_linear_m fc;
} model;

static void model_init(model *m, uint64_t seed, int fc_in)
{
    nn_rng rng;
    nn_rng_seed(&rng, seed);
    nn_params_init(&m->P);
    nn_conv2d_m_init(&m->conv, &m->P, "conv1", 3, 8, 3, 1, 1, 1, 1, 0, &rng);
    nn_batchnorm2d_m_init(&m->bn, &m->P, "bn1", 8);
    nn_layernorm_m_init(&m->ln, &m->P, "norm", 16, 1e-6f);
    nn_linear_m_init(&m->fc, &m->P, "fc", fc_in, 10, 1, &rng);
}

static float *snapshot(const nn_params *P)
{
    float *s = malloc(nn_params_numel(P, 0) * sizeof(float));
    size_t o = 0;
    for (int i = 0; i < P->n; i++) {
        memcpy(s + o, P->t[i]->data, P->t[i]->numel * sizeof(float));
        o += P->t[i]->numel;
    }
    return s;
}

static int same_as_snapshot(const nn_params *P, const float *s)
{
    size_t o = 0;
    for (int i = 0; i < P->n; i++) {
        if (memcmp(s + o, P->t[i]->data, P->t[i]->numel * sizeof(float)) != 0) return 0;
        o += P->t[i]->numel;
    }
    return 1;
}

TEST(params_save_load_roundtrip)
{
    model a, b;
    model_init(&a, 1, 256);
    model_init(&b, 2, 256);
    EXPECT(a.P.n == 1 + 5 + 2 + 2, "parameter count %d", a.P.n);
    EXPECT(strcmp(a.bn.num_batches_tracked->name, "bn1.num_batches_tracked") == 0, "bn names");
    a.bn.num_batches_tracked->data[0] = 1234567.f;
    for (int i = 0; i < 8; i++) {
        a.bn.running_mean->data[i] = 0.5f * i;
        a.bn.running_var->data[i] = 1.f + i;
    }
    const char *path = test_tmp_path("model.safetensors");
    const char *mk[] = {"model", "classes"}, *mv[] = {"tiny", "a,b"};
    REQUIRE(nn_params_save(&a.P, path, mk, mv, 2) == 0, "%s", ncmi_error());
    EXPECT(memcmp(a.fc.weight->data, b.fc.weight->data, 40 * sizeof(float)) != 0,
           "different seeds gave the same init");
    /* the file as PyTorch expects it */
    nn_safetensors st;
    REQUIRE(nn_st_open(&st, path) == 0, "%s", ncmi_error());
    EXPECT(st.n == a.P.n, "%d tensors in file", st.n);
    const nn_st_entry *e = nn_st_find(&st, "bn1.num_batches_tracked");
    EXPECT(e && e->dtype == NN_ST_I64 && e->ndim == 0, "num_batches_tracked saved as I64 scalar");
    int64_t nbt = 0;
    EXPECT(nn_st_read_i64(&st, "bn1.num_batches_tracked", &nbt, 1) == 0 && nbt == 1234567, "nbt %lld",
           (long long)nbt);
    e = nn_st_find(&st, "conv1.weight");
    EXPECT(e && e->dtype == NN_ST_F32 && e->ndim == 4 && e->shape[0] == 8 && e->shape[1] == 3 &&
               e->shape[2] == 3 && e->shape[3] == 3,
           "conv weight entry");
    EXPECT(nn_st_find(&st, "conv1.bias") == NULL, "conv without bias saved a bias");
    EXPECT(nn_st_meta(&st, "model") && strcmp(nn_st_meta(&st, "model"), "tiny") == 0, "metadata");
    nn_st_close(&st);

    REQUIRE(nn_params_load(&b.P, path, 1) == 0, "%s", ncmi_error());
    for (int i = 0; i < a.P.n; i++) {
        EXPECT(strcmp(a.P.t[i]->name, b.P.t[i]->name) == 0, "order");
        EXPECT(memcmp(a.P.t[i]->data, b.P.t[i]->data, a.P.t[i]->numel * sizeof(float)) == 0,
               "tensor %s differs after load", a.P.t[i]->name);
    }
    EXPECT(b.bn.num_batches_tracked->data[0] == 1234567.f, "nbt loaded");
    nn_params_free(&a.P);
    nn_params_free(&b.P);
}

TEST(params_load_errors_leave_params_untouched)
{
    model a, b;
    model_init(&a, 1, 512);
    model_init(&b, 2, 256);
    const char *path = test_tmp_path("m512.safetensors");
    REQUIRE(nn_params_save(&a.P, path, NULL, NULL, 0) == 0, "%s", ncmi_error());
    float *snap = snapshot(&b.P);
    char want[800];

    /* shape mismatch: the exact message */
    EXPECT(nn_params_load(&b.P, path, 1) == -1, "shape mismatch accepted");
    snprintf(want, sizeof want, "%s: tensor 'fc.weight': shape [10,512] in file, [10,256] expected", path);
    EXPECT(strcmp(ncmi_error(), want) == 0, "message: %s", ncmi_error());
    EXPECT(same_as_snapshot(&b.P, snap), "params modified by a failed load");
    EXPECT(nn_params_load(&b.P, path, 0) == -1, "shape mismatch accepted when not strict");
    EXPECT(same_as_snapshot(&b.P, snap), "params modified by a failed load");

    /* missing tensor: a model with an extra parameter */
    model c;
    model_init(&c, 3, 512);
    nn_params_add(&c.P, "head.weight", NN_PARAM_WEIGHT, 2, (int[]){2, 10});
    float *csnap = snapshot(&c.P);
    EXPECT(nn_params_load(&c.P, path, 0) == -1, "missing tensor accepted");
    snprintf(want, sizeof want, "%s: tensor 'head.weight' missing from the file", path);
    EXPECT(strcmp(ncmi_error(), want) == 0, "message: %s", ncmi_error());
    EXPECT(same_as_snapshot(&c.P, csnap), "params modified by a failed load");
    nn_params_add(&c.P, "head.bias", NN_PARAM_WEIGHT, 1, (int[]){2});
    EXPECT(nn_params_load(&c.P, path, 0) == -1, "missing tensors accepted");
    EXPECT(strstr(ncmi_error(), "'head.weight' missing from the file (and 1 more)"), "message: %s",
           ncmi_error());

    /* unexpected tensor: only when strict */
    model d;
    model_init(&d, 4, 512);
    nn_params_add(&d.P, "extra.buf", NN_PARAM_BUFFER, 1, (int[]){3});
    const char *path2 = test_tmp_path("extra.safetensors");
    REQUIRE(nn_params_save(&d.P, path2, NULL, NULL, 0) == 0, "%s", ncmi_error());
    model e;
    model_init(&e, 5, 512);
    float *esnap = snapshot(&e.P);
    EXPECT(nn_params_load(&e.P, path2, 1) == -1, "unexpected tensor accepted when strict");
    snprintf(want, sizeof want, "%s: unexpected tensor 'extra.buf' in the file", path2);
    EXPECT(strcmp(ncmi_error(), want) == 0, "message: %s", ncmi_error());
    EXPECT(same_as_snapshot(&e.P, esnap), "params modified by a failed load");
    EXPECT(nn_params_load(&e.P, path2, 0) == 0, "non-strict load: %s", ncmi_error());
    EXPECT(memcmp(e.fc.weight->data, d.fc.weight->data, 5120 * sizeof(float)) == 0, "loaded");

    /* unreadable files */
    const char *nope = test_tmp_path("nope.safetensors");
    EXPECT(nn_params_load(&b.P, nope, 1) == -1, "missing file accepted");
    EXPECT(strncmp(ncmi_error(), nope, strlen(nope)) == 0, "message: %s", ncmi_error());
    const char *junk = test_tmp_path("junk.safetensors");
    FILE *f = fopen(junk, "wb");
    fputs("\x05\0\0\0\0\0\0\0{\"a\":", f);
    fclose(f);
    EXPECT(nn_params_load(&b.P, junk, 1) == -1, "junk accepted");
    EXPECT(strncmp(ncmi_error(), junk, strlen(junk)) == 0, "message: %s", ncmi_error());
    EXPECT(same_as_snapshot(&b.P, snap), "params modified by a failed load");

    /* entries named optim.* (a checkpoint's optimizer state) are not unexpected */
    const char *path3 = test_tmp_path("withoptim.safetensors");
    nn_st_tensor *ts = calloc((size_t)a.P.n + 1, sizeof *ts);
    int64_t nbt = 0;
    for (int i = 0; i < a.P.n; i++) {
        ts[i].name = a.P.t[i]->name;
        ts[i].dtype = NN_ST_F32;
        ts[i].ndim = a.P.t[i]->ndim;
        for (int k = 0; k < a.P.t[i]->ndim; k++) ts[i].shape[k] = a.P.t[i]->shape[k];
        ts[i].data = a.P.t[i]->data;
    }
    ts[a.P.n] = (nn_st_tensor){"optim.step", NN_ST_I64, 0, {0}, &nbt};
    REQUIRE(nn_st_write(path3, ts, a.P.n + 1, NULL, NULL, 0) == 0, "%s", ncmi_error());
    free(ts);
    model g;
    model_init(&g, 6, 512);
    EXPECT(nn_params_load(&g.P, path3, 1) == 0, "strict load of a checkpoint: %s", ncmi_error());

    free(snap);
    free(csnap);
    free(esnap);
    nn_params_free(&a.P);
    nn_params_free(&b.P);
    nn_params_free(&c.P);
    nn_params_free(&d.P);
    nn_params_free(&e.P);
    nn_params_free(&g.P);
}

/* mean, variance, min, max of t */
static void stats(const nn_tensor *t, double *mean, double *var, double *mn, double *mx)
{
    double s = 0, s2 = 0;
    *mn = INFINITY;
    *mx = -INFINITY;
    for (size_t i = 0; i < t->numel; i++) {
        double x = t->data[i];
        s += x;
        s2 += x * x;
        if (x < *mn) *mn = x;
        if (x > *mx) *mx = x;
    }
    *mean = s / (double)t->numel;
    *var = s2 / (double)t->numel - *mean * *mean;
}

TEST(params_init_fans_and_statistics)
{
    nn_rng rng;
    nn_rng_seed(&rng, 7);
    int fi, fo;
    nn_tensor *w2 = nn_tensor_new2(NULL, 300, 400);
    nn_init_fans(w2, &fi, &fo);
    EXPECT(fi == 400 && fo == 300, "linear fans %d %d", fi, fo);
    nn_tensor *w4 = nn_tensor_new4(NULL, 64, 16, 3, 5);
    nn_init_fans(w4, &fi, &fo);
    EXPECT(fi == 16 * 15 && fo == 64 * 15, "conv fans %d %d", fi, fo);
    nn_tensor *w3 = nn_tensor_new3(NULL, 4, 6, 7);
    nn_init_fans(w3, &fi, &fo);
    EXPECT(fi == 42 && fo == 28, "3-D fans %d %d", fi, fo);

    double m, v, mn, mx;
    /* kaiming_uniform(a) : bound sqrt(6 / ((1 + a^2) fan_in)) */
    const float as[] = {sqrtf(5.f), 0.f, 1.f};
    for (int k = 0; k < 3; k++) {
        nn_init_kaiming_uniform(w2, as[k], &rng);
        double bound = sqrt(6.0 / ((1.0 + (double)as[k] * as[k]) * 400));
        stats(w2, &m, &v, &mn, &mx);
        EXPECT(mn >= -bound && mx < bound, "a=%g: range [%g, %g] beyond %g", as[k], mn, mx, bound);
        EXPECT(mn < -0.999 * bound && mx > 0.999 * bound, "a=%g: range [%g, %g] short of %g", as[k],
               mn, mx, bound);
        EXPECT_NEAR(m, 0.0, 0.01 * bound);
        EXPECT_NEAR(v, bound * bound / 3, 0.01 * bound * bound / 3);
    }
    nn_init_kaiming_uniform(w2, sqrtf(5.f), &rng);
    stats(w2, &m, &v, &mn, &mx);
    EXPECT(mx <= 1.0 / sqrt(400.0), "nn.Linear default bound 1/sqrt(fan_in)");

    /* kaiming_normal_(fan_out, relu): std sqrt(2 / fan_out) */
    nn_tensor *c = nn_tensor_new4(NULL, 128, 64, 3, 3); /* fan_out 1152, 73728 values */
    nn_init_kaiming_normal_fan_out(c, &rng);
    stats(c, &m, &v, &mn, &mx);
    double sd = sqrt(2.0 / (128 * 9));
    EXPECT_NEAR(m, 0.0, 0.02 * sd);
    EXPECT_NEAR(sqrt(v), sd, 0.01 * sd);
    EXPECT(mx > 3.5 * sd && mn < -3.5 * sd, "normal tails missing");

    /* xavier: std gain * sqrt(2 / (fan_in + fan_out)), uniform bound sqrt(3) std */
    nn_init_xavier_uniform(w2, 2.f, &rng);
    double xb = 2.0 * sqrt(6.0 / 700.0);
    stats(w2, &m, &v, &mn, &mx);
    EXPECT(mn >= -xb && mx < xb && mx > 0.999 * xb && mn < -0.999 * xb, "xavier uniform range [%g,%g] vs %g",
           mn, mx, xb);
    EXPECT_NEAR(v, xb * xb / 3, 0.01 * xb * xb / 3);
    nn_init_xavier_normal(c, 0.5f, &rng);
    stats(c, &m, &v, &mn, &mx);
    double xs = 0.5 * sqrt(2.0 / (64 * 9 + 128 * 9));
    EXPECT_NEAR(sqrt(v), xs, 0.01 * xs);

    nn_init_uniform(w3, -2.f, 3.f, &rng);
    stats(w3, &m, &v, &mn, &mx);
    EXPECT(mn >= -2 && mx < 3, "uniform range");
    nn_init_normal(w2, 5.f, 0.1f, &rng);
    stats(w2, &m, &v, &mn, &mx);
    EXPECT_NEAR(m, 5.0, 0.001);
    EXPECT_NEAR(sqrt(v), 0.1, 0.001);
    nn_init_constant(w3, 0.25f);
    stats(w3, &m, &v, &mn, &mx);
    EXPECT(mn == 0.25 && mx == 0.25, "constant");

    /* determinism */
    nn_rng r1, r2;
    nn_rng_seed(&r1, 99);
    nn_rng_seed(&r2, 99);
    nn_tensor *t1 = nn_tensor_new2(NULL, 5, 6), *t2 = nn_tensor_new2(NULL, 5, 6);
    nn_init_kaiming_uniform(t1, sqrtf(5.f), &r1);
    nn_init_kaiming_uniform(t2, sqrtf(5.f), &r2);
    EXPECT(memcmp(t1->data, t2->data, 30 * sizeof(float)) == 0, "same seed, different init");
    nn_tensor_free(t1);
    nn_tensor_free(t2);
    nn_tensor_free(w2);
    nn_tensor_free(w3);
    nn_tensor_free(w4);
    nn_tensor_free(c);
}

TEST(params_module_default_inits)
{
    nn_rng rng;
    nn_rng_seed(&rng, 11);
    nn_params P;
    nn_params_init(&P);
    nn_linear_m fc;
    nn_linear_m_init(&fc, &P, "fc", 2048, 600, 1, &rng);
    EXPECT(fc.weight->shape[0] == 600 && fc.weight->shape[1] == 2048 && fc.bias->shape[0] == 600,
           "linear shapes");
    double m, v, mn, mx, bound = 1.0 / sqrt(2048.0);
    stats(fc.weight, &m, &v, &mn, &mx);
    EXPECT(mn >= -bound && mx < bound && mx > 0.999 * bound, "linear weight range [%g,%g] vs %g", mn,
           mx, bound);
    EXPECT_NEAR(v, bound * bound / 3, 0.01 * bound * bound / 3);
    stats(fc.bias, &m, &v, &mn, &mx);
    EXPECT(mn >= -bound && mx < bound && mx > 0.9 * bound, "linear bias range [%g,%g] vs %g", mn, mx,
           bound);
    nn_linear_m nb;
    nn_linear_m_init(&nb, &P, "nobias", 4, 3, 0, &rng);
    EXPECT(nb.bias == NULL && nn_params_get(&P, "nobias.bias") == NULL, "bias=0");

    nn_conv2d_m cv;
    nn_conv2d_m_init(&cv, &P, "layer1.0.conv1", 64, 128, 3, 2, 1, 1, 4, 1, &rng);
    EXPECT(cv.weight->ndim == 4 && cv.weight->shape[0] == 128 && cv.weight->shape[1] == 16 &&
               cv.weight->shape[2] == 3 && cv.weight->shape[3] == 3,
           "grouped conv weight shape");
    double cb = 1.0 / sqrt(16.0 * 9);
    stats(cv.weight, &m, &v, &mn, &mx);
    EXPECT(mn >= -cb && mx < cb && mx > 0.99 * cb, "conv weight range [%g,%g] vs %g", mn, mx, cb);
    stats(cv.bias, &m, &v, &mn, &mx);
    EXPECT(mn >= -cb && mx < cb, "conv bias range [%g,%g] vs %g", mn, mx, cb);
    EXPECT(cv.stride == 2 && cv.padding == 1 && cv.dilation == 1 && cv.groups == 4, "conv fields");

    nn_batchnorm2d_m bn;
    nn_batchnorm2d_m_init(&bn, &P, "bn", 5);
    for (int i = 0; i < 5; i++)
        EXPECT(bn.weight->data[i] == 1 && bn.bias->data[i] == 0 && bn.running_mean->data[i] == 0 &&
                   bn.running_var->data[i] == 1,
               "bn init");
    EXPECT(bn.num_batches_tracked->data[0] == 0 && bn.momentum == 0.1f && bn.eps == 1e-5f, "bn fields");
    EXPECT(bn.weight->requires_grad && !bn.running_mean->requires_grad &&
               !bn.num_batches_tracked->requires_grad,
           "bn kinds");
    EXPECT(P.save_dtype[P.n - 1] == NN_ST_I64 && P.save_dtype[P.n - 2] == NN_ST_F32, "bn save dtypes");
    nn_layernorm_m ln;
    nn_layernorm_m_init(&ln, &P, "ln", 6, 1e-6f);
    EXPECT(ln.weight->data[5] == 1 && ln.bias->data[5] == 0 && ln.eps == 1e-6f && ln.d == 6, "ln init");
    nn_params_free(&P);
}

/* ---- module forwards: these call the ops of nn/ops.h ---- */

TEST(modules_forward_linear_conv)
{
    nn_rng rng;
    nn_rng_seed(&rng, 3);
    nn_params P;
    nn_params_init(&P);
    nn_linear_m fc;
    nn_linear_m_init(&fc, &P, "fc", 3, 4, 1, &rng);
    nn_conv2d_m cv;
    nn_conv2d_m_init(&cv, &P, "conv", 2, 3, 3, 1, 1, 1, 1, 1, &rng);
    nn_graph *g = nn_graph_new();
    float xd[6] = {1, -2, 0.5f, 3, 0.25f, -1};
    nn_tensor *x = nn_tensor_from(g, 2, (int[]){2, 3}, xd);
    nn_tensor *y = nn_linear_m_forward(g, &fc, x);
    REQUIRE(y->ndim == 2 && y->shape[0] == 2 && y->shape[1] == 4, "linear output shape");
    for (int n = 0; n < 2; n++)
        for (int o = 0; o < 4; o++) {
            double s = fc.bias->data[o];
            for (int i = 0; i < 3; i++) s += (double)xd[n * 3 + i] * fc.weight->data[o * 3 + i];
            EXPECT_NEAR(y->data[n * 4 + o], s, 1e-5);
        }
    nn_tensor *xi = nn_tensor_new4(g, 1, 2, 4, 4);
    nn_rng_fill_normal(&rng, xi->data, xi->numel, 0, 1);
    nn_tensor *yc = nn_conv2d_m_forward(g, &cv, xi);
    REQUIRE(yc->ndim == 4 && yc->shape[1] == 3 && yc->shape[2] == 4 && yc->shape[3] == 4, "conv shape");
    for (int o = 0; o < 3; o++)
        for (int h = 0; h < 4; h++)
            for (int w = 0; w < 4; w++) {
                double s = cv.bias->data[o];
                for (int c = 0; c < 2; c++)
                    for (int kh = 0; kh < 3; kh++)
                        for (int kw = 0; kw < 3; kw++) {
                            int ih = h + kh - 1, iw = w + kw - 1;
                            if (ih < 0 || iw < 0 || ih >= 4 || iw >= 4) continue;
                            s += (double)xi->data[(c * 4 + ih) * 4 + iw] *
                                 cv.weight->data[((o * 2 + c) * 3 + kh) * 3 + kw];
                        }
                EXPECT_NEAR(yc->data[(o * 4 + h) * 4 + w], s, 1e-5);
            }
    nn_graph_free(g);
    nn_params_free(&P);
}

TEST(modules_forward_batchnorm_layernorm)
{
    nn_params P;
    nn_params_init(&P);
    nn_batchnorm2d_m bn;
    nn_batchnorm2d_m_init(&bn, &P, "bn", 2);
    nn_layernorm_m ln;
    nn_layernorm_m_init(&ln, &P, "ln", 4, 1e-5f);
    nn_graph *g = nn_graph_new();
    nn_tensor *x = nn_tensor_new4(g, 2, 2, 2, 2);
    for (size_t i = 0; i < x->numel; i++) x->data[i] = (float)i;
    nn_tensor *y = nn_batchnorm2d_m_forward(g, &bn, x, 1);
    EXPECT(bn.num_batches_tracked->data[0] == 1.f, "training forward counts batches");
    /* channel 0 holds 0..3 and 8..11: mean 5.5 */
    EXPECT_NEAR(bn.running_mean->data[0], 0.55, 1e-6);
    double m0 = 0;
    for (int n = 0; n < 2; n++)
        for (int k = 0; k < 4; k++) m0 += y->data[n * 8 + k];
    EXPECT_NEAR(m0 / 8, 0.0, 1e-5);
    nn_batchnorm2d_m_forward(g, &bn, x, 1);
    EXPECT(bn.num_batches_tracked->data[0] == 2.f, "second batch");
    nn_batchnorm2d_m_forward(g, &bn, x, 0);
    EXPECT(bn.num_batches_tracked->data[0] == 2.f, "eval forward must not count");
    nn_tensor *z = nn_tensor_new2(g, 3, 4);
    for (size_t i = 0; i < z->numel; i++) z->data[i] = (float)(i * i) * 0.1f;
    nn_tensor *o = nn_layernorm_m_forward(g, &ln, z);
    for (int r = 0; r < 3; r++) {
        double s = 0, s2 = 0;
        for (int k = 0; k < 4; k++) {
            s += o->data[r * 4 + k];
            s2 += (double)o->data[r * 4 + k] * o->data[r * 4 + k];
        }
        EXPECT_NEAR(s / 4, 0.0, 1e-5);
        EXPECT_NEAR(s2 / 4, 1.0, 1e-3);
    }
    nn_graph_free(g);
    nn_params_free(&P);
}
