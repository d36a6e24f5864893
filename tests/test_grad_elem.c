/* Elementwise ops: finite-difference gradients (GRAD_TEST) for every binary
 * broadcasting variant and every unary op, plus forward values against
 * PyTorch 1.13 (float32) numbers hard-coded below with their snippets. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../nn/cuda/k_elementwise.h"
#include "../nn/ops.h"
#include "gradcheck.h"
#include "test.h"

/* ---- binary ops ---- */

static nn_tensor *f_add(nn_graph *g, nn_tensor **in, const gc_case *c)
{
    (void)c;
    return nn_add(g, in[0], in[1]);
}
static nn_tensor *f_sub(nn_graph *g, nn_tensor **in, const gc_case *c)
{
    (void)c;
    return nn_sub(g, in[0], in[1]);
}
static nn_tensor *f_mul(nn_graph *g, nn_tensor **in, const gc_case *c)
{
    (void)c;
    return nn_mul(g, in[0], in[1]);
}
static nn_tensor *f_div(nn_graph *g, nn_tensor **in, const gc_case *c)
{
    (void)c;
    return nn_div(g, in[0], in[1]);
}
/* x * x: the same tensor as both inputs, both gradients add into it */
static nn_tensor *f_square(nn_graph *g, nn_tensor **in, const gc_case *c)
{
    (void)c;
    return nn_mul(g, in[0], in[0]);
}
/* (a + b) * a - b / c: a small chain of broadcasts */
static nn_tensor *f_chain(nn_graph *g, nn_tensor **in, const gc_case *c)
{
    (void)c;
    return nn_sub(g, nn_mul(g, nn_add(g, in[0], in[1]), in[0]), nn_div(g, in[1], in[2]));
}

GRAD_TEST(add_same, .nin = 2, .ndim = {2, 2}, .shape = {{3, 4}, {3, 4}}, .fn = f_add)
GRAD_TEST(add_row, .nin = 2, .ndim = {2, 1}, .shape = {{3, 4}, {4}}, .fn = f_add)
GRAD_TEST(add_col, .nin = 2, .ndim = {2, 2}, .shape = {{3, 4}, {3, 1}}, .fn = f_add)
GRAD_TEST(add_bnd_b1d, .nin = 2, .ndim = {3, 3}, .shape = {{2, 3, 4}, {2, 1, 4}}, .fn = f_add)
GRAD_TEST(add_scalar_tensor, .nin = 2, .ndim = {2, 1}, .shape = {{3, 4}, {1}}, .fn = f_add)
/* both inputs broadcast: [2,1,3,1] + [4,1,2] -> [2,4,3,2] */
GRAD_TEST(add_4d_both, .nin = 2, .ndim = {4, 3}, .shape = {{2, 1, 3, 1}, {4, 1, 2}}, .fn = f_add)
GRAD_TEST(sub_row, .nin = 2, .ndim = {2, 1}, .shape = {{3, 4}, {4}}, .fn = f_sub)
/* the smaller operand on the left */
GRAD_TEST(sub_left_bcast, .nin = 2, .ndim = {1, 3}, .shape = {{4}, {2, 3, 4}}, .fn = f_sub)
GRAD_TEST(mul_same, .nin = 2, .ndim = {2, 2}, .shape = {{3, 4}, {3, 4}}, .fn = f_mul)
GRAD_TEST(mul_col, .nin = 2, .ndim = {2, 2}, .shape = {{5, 3}, {5, 1}}, .fn = f_mul)
GRAD_TEST(mul_bnd_b1d, .nin = 2, .ndim = {3, 3}, .shape = {{2, 3, 4}, {2, 1, 4}}, .fn = f_mul)
GRAD_TEST(mul_scalar_tensor, .nin = 2, .ndim = {3, 1}, .shape = {{2, 3, 2}, {1}}, .fn = f_mul)
GRAD_TEST(mul_self, .nin = 1, .ndim = {2}, .shape = {{3, 4}}, .fn = f_square)
/* denominators in [0.5, 2] (both inputs drawn there; sign of a is irrelevant) */
GRAD_TEST(div_same, .nin = 2, .ndim = {2, 2}, .shape = {{3, 4}, {3, 4}}, .fn = f_div, .lo = 0.5f,
          .hi = 2.f)
GRAD_TEST(div_row, .nin = 2, .ndim = {2, 1}, .shape = {{3, 4}, {4}}, .fn = f_div, .lo = 0.5f,
          .hi = 2.f)
GRAD_TEST(div_col, .nin = 2, .ndim = {3, 3}, .shape = {{2, 3, 4}, {2, 3, 1}}, .fn = f_div,
          .lo = 0.5f, .hi = 2.f)
GRAD_TEST(div_scalar_tensor, .nin = 2, .ndim = {2, 1}, .shape = {{3, 4}, {1}}, .fn = f_div,
          .lo = 0.5f, .hi = 2.f)
GRAD_TEST(binary_chain, .nin = 3, .ndim = {2, 1, 2}, .shape = {{3, 4}, {4}, {3, 1}}, .fn = f_chain,
          .lo = 0.5f, .hi = 2.f)
/* only the second input differentiated: the first gets no gradient buffer */
GRAD_TEST(mul_col_no_grad_a, .nin = 2, .ndim = {2, 2}, .shape = {{5, 3}, {5, 1}}, .fn = f_mul,
          .no_grad_mask = 1u)
/* Broadcasts wide enough for the GPU's block reduction of the gradient (an
 * input element gathering >= 64 output elements; nn/cuda/elementwise.cu):
 * a row of 3 over 70 rows, two inputs broadcast along crossing axes
 * ([1,9,1,8] x [8,1,9,1]: 72 each), and a scalar gathering 2100 elements,
 * which the GPU splits over 3 blocks. */
GRAD_TEST(add_row_long, .nin = 2, .ndim = {2, 1}, .shape = {{70, 3}, {3}}, .fn = f_add)
GRAD_TEST(sub_row_long, .nin = 2, .ndim = {2, 1}, .shape = {{70, 3}, {3}}, .fn = f_sub)
/* gpu_tol: the CPU adds the 72 float terms of a gradient one by one, the GPU
 * in double; where a sum cancels, the CPU's rounding shows (2e-5 here). */
GRAD_TEST(mul_cross_long, .nin = 2, .ndim = {4, 4}, .shape = {{1, 9, 1, 8}, {8, 1, 9, 1}},
          .fn = f_mul, .gpu_tol = 1e-4f)
GRAD_TEST(div_cross_long, .nin = 2, .ndim = {4, 4}, .shape = {{1, 9, 1, 8}, {8, 1, 9, 1}},
          .fn = f_div, .lo = 0.5f, .hi = 2.f, .gpu_tol = 1e-4f)
GRAD_TEST(mul_scalar_tensor_long, .nin = 2, .ndim = {2, 1}, .shape = {{3, 700}, {1}}, .fn = f_mul)

/* The GPU backward's broadcast plan (nn_bcast_plan, nn/cuda/k_elementwise.h)
 * against the definition: for each input, every output element is reached
 * exactly once, from the input element that the output reads, with the
 * other input's matching offset, in increasing output order per element. */
static void pad_and_strides(int nd, const int *shape, int *s4)
{
    for (int i = 0; i < 4; i++) s4[i] = i < 4 - nd ? 1 : shape[i - (4 - nd)];
}
static void strides_in(const int *in4, const int *out4, size_t *st)
{
    size_t s = 1;
    for (int i = 3; i >= 0; i--) {
        st[i] = (in4[i] == 1 && out4[i] != 1) ? 0 : s;
        s *= (size_t)in4[i];
    }
}

TEST(bcast_plan_index_math)
{
    static const struct {
        int na, nb, a[4], b[4];
    } cases[] = {
        {2, 1, {3, 4}, {4}},          {2, 2, {3, 4}, {3, 1}},       {4, 3, {2, 1, 3, 1}, {4, 1, 2}},
        {1, 3, {4}, {2, 3, 4}},       {4, 4, {1, 9, 1, 8}, {8, 1, 9, 1}},
        {2, 1, {3, 700}, {1}},        {3, 3, {2, 3, 4}, {2, 3, 4}}, {3, 2, {5, 1, 6}, {1, 6}},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        int a4[4], b4[4], o4[4];
        pad_and_strides(cases[c].na, cases[c].a, a4);
        pad_and_strides(cases[c].nb, cases[c].b, b4);
        size_t nout = 1;
        for (int d = 0; d < 4; d++) {
            o4[d] = a4[d] == 1 ? b4[d] : a4[d];
            nout *= (size_t)o4[d];
        }
        size_t sa[4], sb[4];
        strides_in(a4, o4, sa);
        strides_in(b4, o4, sb);
        int *seen = calloc(nout, sizeof *seen);
        REQUIRE(seen != NULL, "out of memory");
        for (int side = 0; side < 2; side++) {
            const int *self4 = side ? b4 : a4;
            const size_t *ss = side ? sb : sa, *so = side ? sa : sb;
            nn_bcast_plan p;
            nn_bcast_plan_init(&p, self4, o4, so);
            size_t nself = (size_t)self4[0] * self4[1] * self4[2] * self4[3];
            EXPECT(p.cnt * nself == nout, "case %zu side %d: %zu x %zu != %zu", c, side, p.cnt,
                   nself, nout);
            memset(seen, 0, nout * sizeof *seen);
            int bad = 0;
            for (size_t e = 0; e < nself; e++) {
                size_t o0, t0;
                nn_bcast_base(&p, e, &o0, &t0);
                size_t prev = 0;
                for (size_t r = 0; r < p.cnt; r++) {
                    size_t o, t;
                    nn_bcast_step(&p, r, &o, &t);
                    o += o0;
                    t += t0;
                    if (o >= nout || (r > 0 && o <= prev)) {
                        bad++;
                        break;
                    }
                    prev = o;
                    size_t rem = o, es = 0, et = 0;
                    for (int d = 3; d >= 0; d--) {
                        size_t cd = rem % (size_t)o4[d];
                        rem /= (size_t)o4[d];
                        es += cd * ss[d];
                        et += cd * so[d];
                    }
                    if (es != e || et != t) bad++;
                    seen[o]++;
                }
            }
            for (size_t o = 0; o < nout; o++)
                if (seen[o] != 1) bad++;
            EXPECT(bad == 0, "case %zu side %d: %d wrong mappings", c, side, bad);
        }
        free(seen);
    }
}

TEST(broadcast_forward_values)
{
    nn_graph *g = nn_graph_new();
    nn_tensor *a = nn_tensor_from(g, 2, (int[]){2, 3}, (float[]){1, 2, 3, 4, 5, 6});
    nn_tensor *r = nn_tensor_from(g, 1, (int[]){3}, (float[]){10, 20, 30});
    nn_tensor *c = nn_tensor_from(g, 2, (int[]){2, 1}, (float[]){2, 4});
    nn_tensor *s = nn_add(g, a, r);
    REQUIRE(s->ndim == 2 && s->shape[0] == 2 && s->shape[1] == 3, "add shape");
    const float es[6] = {11, 22, 33, 14, 25, 36};
    for (int i = 0; i < 6; i++) EXPECT_NEAR(s->data[i], es[i], 0);
    nn_tensor *d = nn_div(g, a, c);
    const float ed[6] = {0.5f, 1, 1.5f, 1, 1.25f, 1.5f};
    for (int i = 0; i < 6; i++) EXPECT_NEAR(d->data[i], ed[i], 1e-7);
    /* [2] - [2,1] -> [2,2]: out[i,j] = a[j] - b[i] */
    nn_tensor *u = nn_sub(g, c, nn_tensor_from(g, 1, (int[]){2}, (float[]){1, 3}));
    REQUIRE(u->ndim == 2 && u->shape[0] == 2 && u->shape[1] == 2, "sub shape");
    const float eu[4] = {1, -1, 3, 1};
    for (int i = 0; i < 4; i++) EXPECT_NEAR(u->data[i], eu[i], 0);
    /* [2,1,3,1] * [4,1,2] -> [2,4,3,2]: out[i,j,k,l] = p[i,0,k,0] * q[j,0,l] */
    float pv[6], qv[8];
    for (int i = 0; i < 6; i++) pv[i] = (float)(i + 1);
    for (int i = 0; i < 8; i++) qv[i] = (float)(10 * i + 3);
    nn_tensor *p = nn_tensor_from(g, 4, (int[]){2, 1, 3, 1}, pv);
    nn_tensor *q = nn_tensor_from(g, 3, (int[]){4, 1, 2}, qv);
    nn_tensor *m = nn_mul(g, p, q);
    REQUIRE(m->ndim == 4 && m->shape[0] == 2 && m->shape[1] == 4 && m->shape[2] == 3 &&
                m->shape[3] == 2,
            "4-D broadcast shape");
    int bad = 0;
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 4; j++)
            for (int k = 0; k < 3; k++)
                for (int l = 0; l < 2; l++)
                    if (m->data[((i * 4 + j) * 3 + k) * 2 + l] != pv[i * 3 + k] * qv[j * 2 + l])
                        bad++;
    EXPECT(bad == 0, "4-D broadcast: %d wrong elements", bad);
    nn_graph_free(g);
}

TEST(broadcast_backward_reduces)
{
    /* d sum(a + r) / d r = number of rows; d sum(a * c) / d c = row sums */
    nn_graph *g = nn_graph_new();
    nn_tensor *a = nn_tensor_from(NULL, 2, (int[]){2, 3}, (float[]){1, 2, 3, 4, 5, 6});
    nn_tensor *r = nn_tensor_from(NULL, 1, (int[]){3}, (float[]){10, 20, 30});
    nn_tensor *c = nn_tensor_from(NULL, 2, (int[]){2, 1}, (float[]){2, 4});
    r->requires_grad = c->requires_grad = 1;
    nn_tensor *loss = nn_sum_all(g, nn_add(g, nn_add(g, a, r), nn_mul(g, a, c)));
    REQUIRE(nn_backward(g, loss) == 0, "backward failed");
    EXPECT(a->grad == NULL, "input without requires_grad got a gradient");
    for (int j = 0; j < 3; j++) EXPECT_NEAR(r->grad[j], 2, 0);
    EXPECT_NEAR(c->grad[0], 6, 0);
    EXPECT_NEAR(c->grad[1], 15, 0);
    nn_graph_free(g);
    nn_tensor_free(a);
    nn_tensor_free(r);
    nn_tensor_free(c);
}

/* ---- unary ops ---- */

#define UNARY_FN(fname, expr)                                                         \
    static nn_tensor *fname(nn_graph *g, nn_tensor **in, const gc_case *c)            \
    {                                                                                 \
        (void)c;                                                                      \
        nn_tensor *x = in[0];                                                         \
        return expr;                                                                  \
    }
UNARY_FN(f_scale, nn_scale(g, x, c->fparam[0]))
UNARY_FN(f_add_scalar, nn_add_scalar(g, x, c->fparam[0]))
UNARY_FN(f_relu, nn_relu(g, x))
UNARY_FN(f_gelu, nn_gelu(g, x))
UNARY_FN(f_tanh, nn_tanh(g, x))
UNARY_FN(f_sigmoid, nn_sigmoid(g, x))
UNARY_FN(f_softplus, nn_softplus(g, x))
UNARY_FN(f_exp, nn_exp(g, x))
UNARY_FN(f_log, nn_log(g, x))
UNARY_FN(f_sqrt, nn_sqrt(g, x))
UNARY_FN(f_pow, nn_pow(g, x, c->fparam[0]))
UNARY_FN(f_clamp, nn_clamp(g, x, c->fparam[0], c->fparam[1]))

/* Moves every element at least 0.05 (> 2 * the default eps 1e-2) away from
 * the kink at p, so the central difference never straddles it. */
static void push_away(nn_tensor *t, float p)
{
    for (size_t i = 0; i < t->numel; i++) {
        float d = t->data[i] - p;
        if (fabsf(d) < 0.05f) t->data[i] = p + (d >= 0 ? 0.05f : -0.05f);
    }
}
static void init_relu(nn_tensor **in, nn_rng *rng, const gc_case *c)
{
    (void)rng;
    (void)c;
    push_away(in[0], 0.f);
}
static void init_clamp(nn_tensor **in, nn_rng *rng, const gc_case *c)
{
    (void)rng;
    push_away(in[0], c->fparam[0]);
    push_away(in[0], c->fparam[1]);
}
/* softplus: also far beyond the threshold (20) on both sides */
static void init_softplus(nn_tensor **in, nn_rng *rng, const gc_case *c)
{
    (void)rng;
    (void)c;
    in[0]->data[0] = 25.f;
    in[0]->data[1] = -25.f;
    in[0]->data[2] = 60.f;
    in[0]->data[3] = -60.f;
}

GRAD_TEST(scale, .nin = 1, .ndim = {2}, .shape = {{3, 4}}, .fn = f_scale, .fparam = {-1.7f})
GRAD_TEST(add_scalar, .nin = 1, .ndim = {2}, .shape = {{3, 4}}, .fn = f_add_scalar,
          .fparam = {0.3f})
GRAD_TEST(relu, .nin = 1, .ndim = {3}, .shape = {{2, 3, 4}}, .fn = f_relu, .init = init_relu)
GRAD_TEST(gelu, .nin = 1, .ndim = {2}, .shape = {{4, 5}}, .fn = f_gelu, .lo = -3.f, .hi = 3.f)
GRAD_TEST(tanh, .nin = 1, .ndim = {2}, .shape = {{4, 5}}, .fn = f_tanh, .lo = -2.f, .hi = 2.f)
GRAD_TEST(sigmoid, .nin = 1, .ndim = {2}, .shape = {{4, 5}}, .fn = f_sigmoid, .lo = -4.f,
          .hi = 4.f)
GRAD_TEST(softplus, .nin = 1, .ndim = {2}, .shape = {{4, 5}}, .fn = f_softplus, .lo = -4.f,
          .hi = 4.f, .init = init_softplus)
GRAD_TEST(exp, .nin = 1, .ndim = {2}, .shape = {{3, 4}}, .fn = f_exp, .lo = -2.f, .hi = 2.f)
/* log, sqrt, fractional/negative pow: positive inputs in [0.5, 2] */
GRAD_TEST(log, .nin = 1, .ndim = {2}, .shape = {{3, 4}}, .fn = f_log, .lo = 0.5f, .hi = 2.f)
GRAD_TEST(sqrt, .nin = 1, .ndim = {2}, .shape = {{3, 4}}, .fn = f_sqrt, .lo = 0.5f, .hi = 2.f)
GRAD_TEST(pow_3, .nin = 1, .ndim = {2}, .shape = {{3, 4}}, .fn = f_pow, .lo = -1.5f, .hi = 1.5f,
          .fparam = {3.f})
GRAD_TEST(pow_2_5, .nin = 1, .ndim = {2}, .shape = {{3, 4}}, .fn = f_pow, .lo = 0.5f, .hi = 2.f,
          .fparam = {2.5f})
GRAD_TEST(pow_neg_1_5, .nin = 1, .ndim = {2}, .shape = {{3, 4}}, .fn = f_pow, .lo = 0.5f,
          .hi = 2.f, .fparam = {-1.5f})
GRAD_TEST(clamp, .nin = 1, .ndim = {2}, .shape = {{4, 6}}, .fn = f_clamp, .lo = -2.f, .hi = 2.f,
          .init = init_clamp, .fparam = {-0.5f, 0.7f})

/* Forward values and derivatives at given points (upstream gradient 1). */
static void unary_values(nn_tensor *(*op)(nn_graph *, nn_tensor *), int n, const float *x,
                         const float *y, const float *dy, double tol)
{
    nn_graph *g = nn_graph_new();
    nn_tensor *in = nn_tensor_from(NULL, 1, (int[]){n}, x);
    in->requires_grad = 1;
    nn_tensor *out = op(g, in);
    for (int i = 0; i < n; i++) {
        EXPECT(isfinite(out->data[i]), "x = %g: y = %g", (double)x[i], (double)out->data[i]);
        EXPECT(fabs(out->data[i] - y[i]) <= tol * (1 + fabs(y[i])), "x = %g: y = %.9g, torch %.9g",
               (double)x[i], (double)out->data[i], (double)y[i]);
    }
    if (dy) {
        float ones[16];
        for (int i = 0; i < n; i++) ones[i] = 1.f;
        REQUIRE(nn_backward_from(g, out, ones) == 0, "backward failed");
        for (int i = 0; i < n; i++)
            EXPECT(fabs(in->grad[i] - dy[i]) <= tol * (1 + fabs(dy[i])),
                   "x = %g: dy = %.9g, torch %.9g", (double)x[i], (double)in->grad[i],
                   (double)dy[i]);
    }
    nn_graph_free(g);
    nn_tensor_free(in);
}

TEST(gelu_values_torch)
{
    /* x = torch.tensor([-3.,-1.,-0.5,0.,0.5,1.,3.], requires_grad=True)
     * y = F.gelu(x); y.sum().backward(); y.tolist(), x.grad.tolist() */
    const float x[7] = {-3, -1, -0.5f, 0, 0.5f, 1, 3};
    const float y[7] = {-0.004049867391586304f, -0.1586552858352661f, -0.1542687863111496f, 0.f,
                        0.3457311987876892f, 0.8413447141647339f, 2.995950222015381f};
    const float dy[7] = {-0.011945605278015137f, -0.08331543207168579f, 0.1325049102306366f,
                         0.5f, 0.867495059967041f, 1.083315372467041f, 1.0119456052780151f};
    unary_values(nn_gelu, 7, x, y, dy, 1e-6);
}

TEST(softplus_values_torch)
{
    /* F.softplus(torch.tensor([-100.,-20.,-1.,0.,1.,15.,20.,25.,100.])).tolist() */
    const float x[9] = {-100, -20, -1, 0, 1, 15, 20, 25, 100};
    const float y[9] = {3.783505853677006e-44f, 2.06115369216775e-09f, 0.3132616877555847f,
                        0.6931471824645996f, 1.31326162815094f, 15.f, 20.f, 25.f, 100.f};
    /* derivative = sigmoid(x) (1 above the threshold) */
    const float dy[9] = {0.f, 2.0611537e-09f, 0.26894142f, 0.5f, 0.7310586f, 0.9999997f, 1.f,
                         1.f, 1.f};
    unary_values(nn_softplus, 9, x, y, dy, 1e-6);
}

TEST(sigmoid_values_torch)
{
    /* torch.sigmoid(torch.tensor([-100.,-5.,0.,5.,100.])).tolist()
     * (torch gives exactly 0 at -100; we give the denormal 3.7e-44) */
    const float x[5] = {-100, -5, 0, 5, 100};
    const float y[5] = {0.f, 0.006692850962281227f, 0.5f, 0.9933071732521057f, 1.f};
    unary_values(nn_sigmoid, 5, x, y, NULL, 1e-6);
}

TEST(relu_clamp_edges)
{
    /* grad 0 at x == 0 for relu; clamp passes the gradient at the bounds */
    nn_graph *g = nn_graph_new();
    nn_tensor *x = nn_tensor_from(NULL, 1, (int[]){5}, (float[]){-1, 0, 0.5f, 1, 2});
    x->requires_grad = 1;
    nn_tensor *r = nn_relu(g, x);
    const float one[5] = {1, 1, 1, 1, 1};
    REQUIRE(nn_backward_from(g, r, one) == 0, "relu backward");
    const float er[5] = {0, 0, 1, 1, 1};
    for (int i = 0; i < 5; i++) EXPECT_NEAR(x->grad[i], er[i], 0);
    nn_tensor_zero_grad(x);
    nn_graph_reset(g); /* a fresh tape, so the relu node is not walked again */
    nn_tensor *c = nn_clamp(g, x, 0.f, 1.f);
    REQUIRE(nn_backward_from(g, c, one) == 0, "clamp backward");
    const float ec[5] = {0, 1, 1, 1, 0}, ecv[5] = {0, 0, 0.5f, 1, 1};
    for (int i = 0; i < 5; i++) {
        EXPECT_NEAR(x->grad[i], ec[i], 0);
        EXPECT_NEAR(c->data[i], ecv[i], 0);
    }
    /* NaN goes through relu and clamp, as torch */
    nn_tensor *xn = nn_tensor_from(g, 1, (int[]){1}, (float[]){NAN});
    EXPECT(isnan(nn_relu(g, xn)->data[0]), "relu(NaN) is not NaN");
    EXPECT(isnan(nn_clamp(g, xn, 0.f, 1.f)->data[0]), "clamp(NaN) is not NaN");
    nn_graph_free(g);
    nn_tensor_free(x);
}

TEST(unary_no_grad_records_nothing)
{
    nn_graph *g = nn_graph_new();
    nn_tensor *x = nn_tensor_from(NULL, 1, (int[]){2}, (float[]){1, 2});
    x->requires_grad = 1;
    nn_graph_set_no_grad(g, 1);
    nn_tensor *y = nn_exp(g, nn_add(g, x, x));
    EXPECT(!y->requires_grad && y->backward == NULL, "no_grad output records a backward");
    EXPECT_NEAR(y->data[1], expf(4.f), 1e-4);
    nn_graph_free(g);
    nn_tensor_free(x);
}

TEST(broadcast_large_parallel_path)
{
    /* big enough (> 32768 elements) for the OpenMP loops: column broadcast
     * (rows private, parallel backward) and row broadcast (serial backward) */
    enum { N = 64, D = 600 };
    nn_graph *g = nn_graph_new();
    nn_tensor *a = nn_tensor_new2(NULL, N, D), *col = nn_tensor_new2(NULL, N, 1),
              *row = nn_tensor_new1(NULL, D);
    for (int i = 0; i < N * D; i++) a->data[i] = (float)(i % 7) - 3.f;
    for (int i = 0; i < N; i++) col->data[i] = (float)i;
    for (int j = 0; j < D; j++) row->data[j] = 0.5f * (float)j;
    a->requires_grad = col->requires_grad = row->requires_grad = 1;
    nn_tensor *y = nn_add(g, nn_mul(g, a, col), row);
    int bad = 0;
    for (int i = 0; i < N && !bad; i++)
        for (int j = 0; j < D; j++)
            if (y->data[i * D + j] != a->data[i * D + j] * (float)i + 0.5f * (float)j) {
                bad = 1;
                break;
            }
    EXPECT(!bad, "forward mismatch");
    REQUIRE(nn_backward(g, nn_sum_all(g, y)) == 0, "backward failed");
    for (int i = 0; i < N; i++) {
        double s = 0;
        for (int j = 0; j < D; j++) s += a->data[i * D + j];
        EXPECT_NEAR(col->grad[i], s, 1e-3);
    }
    for (int j = 0; j < D; j++) EXPECT_NEAR(row->grad[j], N, 0);
    EXPECT_NEAR(a->grad[5 * D + 3], 5, 0);
    nn_graph_free(g);
    nn_tensor_free(a);
    nn_tensor_free(col);
    nn_tensor_free(row);
}
