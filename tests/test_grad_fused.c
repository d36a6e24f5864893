/* Fused ops (nn/ops_fused.c): gradients by finite differences, and the
 * values and gradients of the composed ops they replace (linear_relu bit for
 * bit; the gate, which has its own vectorised tanh / exp, within a few ulp). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../nn/ops.h"
#include "gradcheck.h"
#include "test.h"

static nn_tensor *f_linear_relu(nn_graph *g, nn_tensor **in, const gc_case *c)
{
    return nn_linear_relu(g, in[0], in[1], c->nin > 2 ? in[2] : NULL);
}

/* One row of x: put every pre-activation at +-(0.4 .. 0.8), far from the
 * kink at 0 (a difference of eps = 1e-2 moves it by at most ~0.05). */
static void init_linear_relu(nn_tensor **in, nn_rng *rng, const gc_case *c)
{
    nn_tensor *x = in[0], *w = in[1], *b = c->nin > 2 ? in[2] : NULL;
    const int K = x->shape[x->ndim - 1], O = w->shape[0];
    if (fabsf(x->data[0]) < 0.5f) x->data[0] = x->data[0] < 0 ? -0.5f : 0.5f;
    for (int o = 0; o < O; o++) {
        float u;
        nn_rng_fill_uniform(rng, &u, 1, 0.4f, 0.8f);
        float target = (o % 2 ? -u : u);
        double rest = 0;
        for (int k = 1; k < K; k++) rest += (double)x->data[k] * w->data[o * K + k];
        if (b) {
            b->data[o] = (float)(target - rest - (double)x->data[0] * w->data[o * K]);
        } else {
            w->data[o * K] = (float)((target - rest) / x->data[0]);
        }
    }
}

GRAD_TEST(linear_relu_bias, .nin = 3, .ndim = {2, 2, 1}, .shape = {{1, 4}, {5, 4}, {5}},
          .fn = f_linear_relu, .init = init_linear_relu)
GRAD_TEST(linear_relu_nobias, .nin = 2, .ndim = {2, 2}, .shape = {{1, 4}, {5, 4}},
          .fn = f_linear_relu, .init = init_linear_relu)
GRAD_TEST(linear_relu_3d, .nin = 3, .ndim = {3, 2, 1}, .shape = {{1, 1, 4}, {6, 4}, {6}},
          .fn = f_linear_relu, .init = init_linear_relu)

static nn_tensor *f_gate(nn_graph *g, nn_tensor **in, const gc_case *c)
{
    (void)c;
    return nn_tanh_sigmoid_gate(g, in[0], in[1]);
}

GRAD_TEST(tanh_sigmoid_gate, .nin = 2, .ndim = {2, 2}, .shape = {{4, 5}, {4, 5}}, .fn = f_gate,
          .lo = -3.f, .hi = 3.f)
GRAD_TEST(tanh_sigmoid_gate_3d, .nin = 2, .ndim = {3, 3}, .shape = {{2, 3, 4}, {2, 3, 4}},
          .fn = f_gate, .lo = -3.f, .hi = 3.f)
/* only b differentiated: a gets no gradient (the GPU's two backward kernels
 * run one at a time) */
GRAD_TEST(tanh_sigmoid_gate_b_only, .nin = 2, .ndim = {2, 2}, .shape = {{3, 7}, {3, 7}},
          .fn = f_gate, .lo = -3.f, .hi = 3.f, .no_grad_mask = 1u)

static int same_floats(const float *a, const float *b, size_t n)
{
    return (a && b && memcmp(a, b, n * sizeof *a) == 0);
}

/* Many rows (some pre-activations negative, some exactly 0 from a zero
 * row): values and every gradient bit-identical to relu(linear(...)). */
TEST(linear_relu_matches_composed)
{
    nn_rng r;
    nn_rng_seed(&r, 11);
    for (int with_bias = 0; with_bias < 2; with_bias++) {
        nn_tensor *x[2], *w[2], *b[2];
        for (int k = 0; k < 2; k++) {
            x[k] = nn_tensor_new2(NULL, 37, 24);
            w[k] = nn_tensor_new2(NULL, 20, 24);
            b[k] = nn_tensor_new1(NULL, 20);
        }
        nn_rng_fill_uniform(&r, x[0]->data, x[0]->numel, -1, 1);
        memset(x[0]->data + 5 * 24, 0, 24 * sizeof(float)); /* a row of exact zeros */
        nn_rng_fill_uniform(&r, w[0]->data, w[0]->numel, -0.3f, 0.3f);
        nn_rng_fill_uniform(&r, b[0]->data, b[0]->numel, -0.2f, 0.2f);
        if (!with_bias) memset(b[0]->data, 0, 20 * sizeof(float));
        float up[37 * 20];
        nn_rng_fill_uniform(&r, up, 37 * 20, -1, 1);
        nn_tensor *y[2];
        nn_graph *g[2];
        for (int k = 0; k < 2; k++) {
            memcpy(x[k]->data, x[0]->data, x[0]->numel * sizeof(float));
            memcpy(w[k]->data, w[0]->data, w[0]->numel * sizeof(float));
            memcpy(b[k]->data, b[0]->data, b[0]->numel * sizeof(float));
            x[k]->requires_grad = w[k]->requires_grad = b[k]->requires_grad = 1;
            g[k] = nn_graph_new();
            nn_tensor *bb = with_bias ? b[k] : NULL;
            y[k] = k == 0 ? nn_linear_relu(g[k], x[k], w[k], bb)
                          : nn_relu(g[k], nn_linear(g[k], x[k], w[k], bb));
            REQUIRE(nn_backward_from(g[k], y[k], up) == 0, "backward");
        }
        EXPECT(same_floats(y[0]->data, y[1]->data, y[0]->numel), "bias %d: values differ", with_bias);
        EXPECT(same_floats(x[0]->grad, x[1]->grad, x[0]->numel), "bias %d: dx differs", with_bias);
        EXPECT(same_floats(w[0]->grad, w[1]->grad, w[0]->numel), "bias %d: dW differs", with_bias);
        if (with_bias)
            EXPECT(same_floats(b[0]->grad, b[1]->grad, b[0]->numel), "db differs");
        for (int k = 0; k < 2; k++) {
            nn_graph_free(g[k]);
            nn_tensor_free(x[k]);
            nn_tensor_free(w[k]);
            nn_tensor_free(b[k]);
        }
    }
}

/* ulp distance of two finite floats of the same sign (or both tiny) */
static double ulps(float a, float b)
{
    if (a == b) return 0;
    double d = fabs((double)a - (double)b);
    double u = fmax(nextafterf(fabsf(b), INFINITY) - fabsf(b), 1.4e-45);
    return d / u;
}

/* The vectorised exp / tanh of the gate against libm in double: within 2
 * ulp of the correctly rounded value on a dense sweep. */
float nn_fused_expf(float x);
float nn_fused_tanhf(float x);
TEST(fused_tanh_exp_accuracy)
{
    double we = 0, wt = 0;
    float xe = 0, xt = 0;
    for (float x = -87.f; x <= 88.f; x += 0.000731f) {
        double e = ulps(nn_fused_expf(x), (float)exp((double)x));
        if (e > we) we = e, xe = x;
    }
    for (float x = -12.f; x <= 12.f; x += 0.0000917f) {
        double e = ulps(nn_fused_tanhf(x), (float)tanh((double)x));
        if (e > wt) wt = e, xt = x;
    }
    for (float x = 1e-30f; x < 1.f; x *= 1.01f) { /* tiny arguments: relative accuracy */
        double e = fmax(ulps(nn_fused_tanhf(x), (float)tanh((double)x)),
                        ulps(nn_fused_tanhf(-x), (float)tanh(-(double)x)));
        if (e > wt) wt = e, xt = x;
    }
    printf("    max error: exp %.2f ulp (x = %g), tanh %.2f ulp (x = %g)\n", we, xe, wt, xt);
    EXPECT(we <= 2.0, "exp: %.2f ulp at %g", we, xe);
    EXPECT(wt <= 2.0, "tanh: %.2f ulp at %g", wt, xt);
    EXPECT(nn_fused_tanhf(INFINITY) == 1.f && nn_fused_tanhf(-INFINITY) == -1.f &&
               isnan(nn_fused_tanhf(NAN)) && nn_fused_tanhf(0.f) == 0.f,
           "tanh special values");
    EXPECT(nn_fused_expf(-INFINITY) == 0.f && nn_fused_expf(-100.f) == 0.f &&
               isnan(nn_fused_expf(NAN)),
           "exp special values");
}

/* Against tanh * sigmoid (libm inside): values within relative 1e-6 (+ 1e-7
 * x the largest magnitude), gradients also within 5e-7 x the upstream
 * gradient (the cancellation in 1 - t^2 and 1 - s), NaN / -inf. */
TEST(tanh_sigmoid_gate_matches_composed)
{
    nn_rng r;
    nn_rng_seed(&r, 12);
    const int n = 50000; /* above the OpenMP threshold */
    nn_tensor *a[2], *b[2];
    float *up = malloc(n * sizeof *up);
    nn_rng_fill_uniform(&r, up, n, -1, 1);
    for (int k = 0; k < 2; k++) {
        a[k] = nn_tensor_new2(NULL, n / 10, 10);
        b[k] = nn_tensor_new2(NULL, n / 10, 10);
    }
    nn_rng_fill_uniform(&r, a[0]->data, n, -20, 20);
    nn_rng_fill_uniform(&r, b[0]->data, n, -30, 30);
    a[0]->data[0] = NAN;
    b[0]->data[1] = -INFINITY;
    nn_tensor *y[2];
    nn_graph *g[2];
    for (int k = 0; k < 2; k++) {
        memcpy(a[k]->data, a[0]->data, n * sizeof(float));
        memcpy(b[k]->data, b[0]->data, n * sizeof(float));
        a[k]->requires_grad = b[k]->requires_grad = 1;
        g[k] = nn_graph_new();
        y[k] = k == 0 ? nn_tanh_sigmoid_gate(g[k], a[k], b[k])
                      : nn_mul(g[k], nn_tanh(g[k], a[k]), nn_sigmoid(g[k], b[k]));
        REQUIRE(nn_backward_from(g[k], y[k], up) == 0, "backward");
    }
    EXPECT(isnan(y[0]->data[0]) && y[0]->data[1] == 0.f, "NaN / -inf: %g %g", y[0]->data[0],
           y[0]->data[1]);
    const float *pairs[3][2] = {{y[0]->data, y[1]->data},
                                {a[0]->grad, a[1]->grad},
                                {b[0]->grad, b[1]->grad}};
    const char *what[3] = {"value", "grad a", "grad b"};
    for (int p = 0; p < 3; p++) {
        double mx = 0;
        for (int i = 2; i < n; i++) mx = fmax(mx, fabs((double)pairs[p][1][i]));
        int bad = 0;
        for (int i = 2; i < n; i++) {
            double d = fabs((double)pairs[p][0][i] - pairs[p][1][i]);
            /* gradients carry 1 - t^2 and s (1 - s): one ulp of t or s near
             * +-1 is a few 1e-8 absolute, times the upstream gradient */
            double tol = 1e-6 * fabs((double)pairs[p][1][i]) + 1e-7 * mx;
            if (p > 0) tol += 5e-7 * fabs((double)up[i]);
            if (!(d <= tol)) {
                if (bad++ < 3)
                    test_fail_at(__FILE__, __LINE__, "%s [%d]: fused %.9g, composed %.9g",
                                 what[p], i, pairs[p][0][i], pairs[p][1][i]);
            }
        }
    }
    for (int k = 0; k < 2; k++) {
        nn_graph_free(g[k]);
        nn_tensor_free(a[k]);
        nn_tensor_free(b[k]);
    }
    free(up);
}
