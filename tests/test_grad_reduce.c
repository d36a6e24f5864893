/* Reductions, row ops and cross-entropy: finite-difference gradients for
 * every op, plus forward values against PyTorch 1.13 (float32) numbers
 * hard-coded below with their snippets. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../nn/ops.h"
#include "gradcheck.h"
#include "test.h"

/* iparam[0] = axis, iparam[1] = keepdim */
static nn_tensor *f_sum(nn_graph *g, nn_tensor **in, const gc_case *c)
{
    return nn_sum(g, in[0], c->iparam[0], c->iparam[1]);
}
static nn_tensor *f_mean(nn_graph *g, nn_tensor **in, const gc_case *c)
{
    return nn_mean(g, in[0], c->iparam[0], c->iparam[1]);
}
static nn_tensor *f_max(nn_graph *g, nn_tensor **in, const gc_case *c)
{
    return nn_max(g, in[0], c->iparam[0], c->iparam[1]);
}
static nn_tensor *f_sum_all(nn_graph *g, nn_tensor **in, const gc_case *c)
{
    (void)c;
    return nn_sum_all(g, in[0]);
}
static nn_tensor *f_mean_all(nn_graph *g, nn_tensor **in, const gc_case *c)
{
    (void)c;
    return nn_mean_all(g, in[0]);
}
static nn_tensor *f_logsumexp(nn_graph *g, nn_tensor **in, const gc_case *c)
{
    return nn_logsumexp(g, in[0], c->iparam[1]);
}
static nn_tensor *f_softmax(nn_graph *g, nn_tensor **in, const gc_case *c)
{
    (void)c;
    return nn_softmax(g, in[0]);
}
static nn_tensor *f_log_softmax(nn_graph *g, nn_tensor **in, const gc_case *c)
{
    (void)c;
    return nn_log_softmax(g, in[0]);
}
static nn_tensor *f_l2n(nn_graph *g, nn_tensor **in, const gc_case *c)
{
    return nn_l2_normalize(g, in[0], c->fparam[0]);
}
/* labels in iparam, smoothing in fparam[0] */
static nn_tensor *f_ce(nn_graph *g, nn_tensor **in, const gc_case *c)
{
    return nn_cross_entropy(g, in[0], c->iparam, c->fparam[0]);
}

/* Distinct values 0.1 apart (a shuffled ramp), so that a perturbation of
 * eps = 1e-2 never changes which element is the maximum. */
static void init_distinct(nn_tensor **in, nn_rng *rng, const gc_case *c)
{
    (void)c;
    int n = (int)in[0]->numel, *perm = malloc((size_t)n * sizeof *perm);
    REQUIRE(perm != NULL, "init_distinct: out of memory");
    nn_rng_permutation(rng, perm, n);
    for (int i = 0; i < n; i++) in[0]->data[i] = 0.1f * (float)(perm[i] - n / 2);
    free(perm);
}

/* Values in {-1, 0, 1}: many exact ties for the maximum. */
static void init_ties(nn_tensor **in, nn_rng *rng, const gc_case *c)
{
    (void)rng;
    (void)c;
    for (size_t i = 0; i < in[0]->numel; i++) in[0]->data[i] = rintf(in[0]->data[i]);
}

/* l2_normalize: rows 0..1 keep their norm (> 0.5), row 2 is scaled to a norm
 * below 0.02, so with eps 0.1 both regimes are checked in one tensor and a
 * +-1e-2 perturbation never crosses eps. */
static void init_l2n_mixed(nn_tensor **in, nn_rng *rng, const gc_case *c)
{
    (void)rng;
    (void)c;
    const int D = in[0]->shape[1];
    for (int j = 0; j < D; j++) {
        float *x0 = in[0]->data, *x2 = in[0]->data + 2 * D;
        x0[j] = x0[j] >= 0 ? x0[j] + 0.5f : x0[j] - 0.5f;
        x2[j] *= 0.004f;
    }
}

GRAD_TEST(sum_axis0, .nin = 1, .ndim = {3}, .shape = {{3, 4, 2}}, .fn = f_sum, .iparam = {0, 0})
GRAD_TEST(sum_axis1_keepdim, .nin = 1, .ndim = {3}, .shape = {{3, 4, 2}}, .fn = f_sum,
          .iparam = {1, 1})
GRAD_TEST(sum_last_neg, .nin = 1, .ndim = {3}, .shape = {{3, 4, 2}}, .fn = f_sum, .iparam = {-1, 0})
GRAD_TEST(sum_1d, .nin = 1, .ndim = {1}, .shape = {{5}}, .fn = f_sum, .iparam = {0, 0})
GRAD_TEST(mean_axis1, .nin = 1, .ndim = {3}, .shape = {{3, 4, 2}}, .fn = f_mean, .iparam = {1, 0})
GRAD_TEST(mean_4d_keepdim, .nin = 1, .ndim = {4}, .shape = {{2, 3, 2, 2}}, .fn = f_mean,
          .iparam = {2, 1})
GRAD_TEST(max_axis1, .nin = 1, .ndim = {3}, .shape = {{3, 4, 2}}, .fn = f_max, .iparam = {1, 0},
          .init = init_distinct)
GRAD_TEST(max_last_keepdim, .nin = 1, .ndim = {2}, .shape = {{4, 5}}, .fn = f_max,
          .iparam = {-1, 1}, .init = init_distinct)
GRAD_TEST(max_axis0, .nin = 1, .ndim = {2}, .shape = {{4, 5}}, .fn = f_max, .iparam = {0, 0},
          .init = init_distinct)
GRAD_TEST(sum_all, .nin = 1, .ndim = {3}, .shape = {{2, 3, 4}}, .fn = f_sum_all)
GRAD_TEST(mean_all, .nin = 1, .ndim = {2}, .shape = {{3, 5}}, .fn = f_mean_all)
GRAD_TEST(logsumexp, .nin = 1, .ndim = {2}, .shape = {{3, 5}}, .fn = f_logsumexp, .lo = -3.f,
          .hi = 3.f)
GRAD_TEST(logsumexp_keepdim_3d, .nin = 1, .ndim = {3}, .shape = {{2, 3, 4}}, .fn = f_logsumexp,
          .iparam = {0, 1}, .lo = -3.f, .hi = 3.f)
GRAD_TEST(softmax, .nin = 1, .ndim = {2}, .shape = {{3, 5}}, .fn = f_softmax, .lo = -3.f, .hi = 3.f)
GRAD_TEST(softmax_3d, .nin = 1, .ndim = {3}, .shape = {{2, 2, 4}}, .fn = f_softmax, .lo = -3.f,
          .hi = 3.f)
GRAD_TEST(log_softmax, .nin = 1, .ndim = {2}, .shape = {{3, 5}}, .fn = f_log_softmax, .lo = -3.f,
          .hi = 3.f)
GRAD_TEST(l2_normalize, .nin = 1, .ndim = {3}, .shape = {{2, 3, 4}}, .fn = f_l2n,
          .fparam = {1e-12f})
GRAD_TEST(l2_normalize_both_regimes, .nin = 1, .ndim = {2}, .shape = {{3, 5}}, .fn = f_l2n,
          .init = init_l2n_mixed, .fparam = {0.1f})
/* Sizes for the GPU kernels' other paths (nn/cuda/reduce.cu): rows longer
 * than 256 get a block instead of a warp (sum, max, the row ops at 300 and
 * 700 columns), inner axes wider than a 32-column tile and reduced axes
 * longer than its 8 rows, several blocks of partial sums for sum_all. */
GRAD_TEST(sum_row_long, .nin = 1, .ndim = {2}, .shape = {{2, 300}}, .fn = f_sum, .iparam = {-1, 0})
GRAD_TEST(mean_axis0_tiles, .nin = 1, .ndim = {2}, .shape = {{20, 40}}, .fn = f_mean,
          .iparam = {0, 1})
GRAD_TEST(sum_axis1_tiles_4d, .nin = 1, .ndim = {4}, .shape = {{3, 10, 2, 20}}, .fn = f_sum,
          .iparam = {1, 0})
GRAD_TEST(max_row_long, .nin = 1, .ndim = {2}, .shape = {{2, 300}}, .fn = f_max, .iparam = {-1, 0},
          .init = init_distinct)
GRAD_TEST(max_axis0_tiles, .nin = 1, .ndim = {2}, .shape = {{20, 40}}, .fn = f_max,
          .iparam = {0, 0}, .init = init_distinct)
/* Exact ties: the gradient goes to the first maximal element on both devices
 * (compared by tests/gpu/; on the CPU max_ties_grad_to_first checks it).
 * A central difference splits a tie's gradient, so atol switches the
 * finite-difference check off for these three. */
GRAD_TEST(max_ties_row_long, .nin = 1, .ndim = {2}, .shape = {{2, 300}}, .fn = f_max,
          .iparam = {-1, 0}, .init = init_ties, .atol = 1e3f)
GRAD_TEST(max_ties_row_warp, .nin = 1, .ndim = {2}, .shape = {{3, 40}}, .fn = f_max,
          .iparam = {1, 1}, .init = init_ties, .atol = 1e3f)
GRAD_TEST(max_ties_tiles, .nin = 1, .ndim = {2}, .shape = {{20, 40}}, .fn = f_max,
          .iparam = {0, 0}, .init = init_ties, .atol = 1e3f)
GRAD_TEST(sum_all_blocks, .nin = 1, .ndim = {2}, .shape = {{3, 300}}, .fn = f_sum_all)
GRAD_TEST(mean_all_blocks, .nin = 1, .ndim = {3}, .shape = {{3, 3, 100}}, .fn = f_mean_all)
GRAD_TEST(logsumexp_long, .nin = 1, .ndim = {2}, .shape = {{2, 700}}, .fn = f_logsumexp,
          .lo = -3.f, .hi = 3.f)
GRAD_TEST(softmax_long, .nin = 1, .ndim = {2}, .shape = {{2, 700}}, .fn = f_softmax, .lo = -3.f,
          .hi = 3.f)
GRAD_TEST(log_softmax_long, .nin = 1, .ndim = {2}, .shape = {{2, 700}}, .fn = f_log_softmax,
          .lo = -3.f, .hi = 3.f)
GRAD_TEST(l2_normalize_long, .nin = 1, .ndim = {2}, .shape = {{3, 700}}, .fn = f_l2n,
          .init = init_l2n_mixed, .fparam = {0.1f})
GRAD_TEST(cross_entropy, .nin = 1, .ndim = {2}, .shape = {{5, 4}}, .fn = f_ce, .lo = -2.f,
          .hi = 2.f, .iparam = {0, 3, 1, 1, 2}, .fparam = {0.f})
GRAD_TEST(cross_entropy_smoothing, .nin = 1, .ndim = {2}, .shape = {{5, 4}}, .fn = f_ce,
          .lo = -2.f, .hi = 2.f, .iparam = {0, 3, 1, 1, 2}, .fparam = {0.1f})
GRAD_TEST(cross_entropy_smoothing_large, .nin = 1, .ndim = {2}, .shape = {{3, 6}}, .fn = f_ce,
          .lo = -2.f, .hi = 2.f, .iparam = {5, 0, 2}, .fparam = {0.6f})

TEST(reduce_forward_values)
{
    nn_graph *g = nn_graph_new();
    /* x = arange(6).reshape(2,3) */
    nn_tensor *x = nn_tensor_from(g, 2, (int[]){2, 3}, (float[]){0, 1, 2, 3, 4, 5});
    nn_tensor *s0 = nn_sum(g, x, 0, 0), *s1 = nn_sum(g, x, 1, 1), *m1 = nn_mean(g, x, -1, 0);
    REQUIRE(s0->ndim == 1 && s0->shape[0] == 3, "sum axis 0 shape");
    REQUIRE(s1->ndim == 2 && s1->shape[0] == 2 && s1->shape[1] == 1, "sum keepdim shape");
    REQUIRE(m1->ndim == 1 && m1->shape[0] == 2, "mean shape");
    EXPECT_NEAR(s0->data[0], 3, 0);
    EXPECT_NEAR(s0->data[2], 7, 0);
    EXPECT_NEAR(s1->data[1], 12, 0);
    EXPECT_NEAR(m1->data[0], 1, 1e-7);
    EXPECT_NEAR(m1->data[1], 4, 1e-7);
    nn_tensor *sa = nn_sum_all(g, x), *ma = nn_mean_all(g, x);
    REQUIRE(sa->ndim == 1 && sa->shape[0] == 1 && ma->ndim == 1 && ma->shape[0] == 1,
            "sum_all/mean_all must have shape [1]");
    EXPECT_NEAR(sa->data[0], 15, 0);
    EXPECT_NEAR(ma->data[0], 2.5, 1e-7);
    /* reducing the only axis of a 1-D tensor: shape [1] */
    nn_tensor *v = nn_tensor_from(g, 1, (int[]){3}, (float[]){1, 2, 4});
    nn_tensor *sv = nn_sum(g, v, 0, 0);
    EXPECT(sv->ndim == 1 && sv->shape[0] == 1 && sv->data[0] == 7, "1-D sum");
    nn_graph_free(g);
}

TEST(max_ties_grad_to_first)
{
    /* torch: x = tensor([[1.,3.,3.,2.],[5.,5.,5.,5.]], requires_grad=True)
     * x.max(dim=1).values.sum().backward() -> [[0,1,0,0],[1,0,0,0]] */
    nn_graph *g = nn_graph_new();
    nn_tensor *x = nn_tensor_from(NULL, 2, (int[]){2, 4}, (float[]){1, 3, 3, 2, 5, 5, 5, 5});
    x->requires_grad = 1;
    nn_tensor *m = nn_max(g, x, 1, 0);
    EXPECT_NEAR(m->data[0], 3, 0);
    EXPECT_NEAR(m->data[1], 5, 0);
    REQUIRE(nn_backward(g, nn_sum_all(g, m)) == 0, "backward failed");
    const float e[8] = {0, 1, 0, 0, 1, 0, 0, 0};
    for (int i = 0; i < 8; i++) EXPECT_NEAR(x->grad[i], e[i], 0);
    /* NaN propagates, as torch.max */
    nn_tensor *xn = nn_tensor_from(g, 1, (int[]){3}, (float[]){1, NAN, 2});
    EXPECT(isnan(nn_max(g, xn, 0, 0)->data[0]), "max ignores NaN");
    nn_graph_free(g);
    nn_tensor_free(x);
}

TEST(log_softmax_large_logits_torch)
{
    /* l = torch.tensor([[1000.,0.,-1000.],[1000.,1000.,0.]])
     * F.log_softmax(l,-1) -> [[0,-1000,-2000],[-0.6931472,-0.6931472,-1000.6931762695312]]
     * torch.logsumexp(l,-1) -> [1000, 1000.6931762695312]
     * F.softmax(l,-1) -> [[1,0,0],[0.5,0.5,0]] */
    nn_graph *g = nn_graph_new();
    nn_tensor *l = nn_tensor_from(g, 2, (int[]){2, 3}, (float[]){1000, 0, -1000, 1000, 1000, 0});
    nn_tensor *ls = nn_log_softmax(g, l), *sm = nn_softmax(g, l), *lse = nn_logsumexp(g, l, 0);
    const float els[6] = {0, -1000, -2000, -0.6931471824645996f, -0.6931471824645996f,
                          -1000.6931762695312f};
    const float esm[6] = {1, 0, 0, 0.5f, 0.5f, 0};
    for (int i = 0; i < 6; i++) {
        EXPECT(isfinite(ls->data[i]) && isfinite(sm->data[i]), "overflow at %d", i);
        EXPECT_NEAR(ls->data[i], els[i], 1e-4);
        EXPECT_NEAR(sm->data[i], esm[i], 1e-7);
    }
    REQUIRE(lse->ndim == 1 && lse->shape[0] == 2, "logsumexp shape");
    EXPECT_NEAR(lse->data[0], 1000, 1e-4);
    EXPECT_NEAR(lse->data[1], 1000.6931762695312, 1e-4);
    nn_tensor *lk = nn_logsumexp(g, l, 1);
    EXPECT(lk->ndim == 2 && lk->shape[0] == 2 && lk->shape[1] == 1, "logsumexp keepdim shape");
    nn_graph_free(g);
}

TEST(cross_entropy_smoothing_torch)
{
    /* lg = torch.tensor([[2.,-1.,0.5,0.],[0.1,0.2,0.3,-3.],[-1.,4.,1.,2.]], requires_grad=True)
     * lab = torch.tensor([0,3,1])
     * F.cross_entropy(lg,lab) -> 1.611086368560791
     * F.cross_entropy(lg,lab,label_smoothing=0.1) -> 1.668586254119873 (.backward() -> grad)
     * F.cross_entropy(lg,lab,label_smoothing=0.25) -> 1.7548363208770752 */
    const float lg[12] = {2, -1, 0.5f, 0, 0.1f, 0.2f, 0.3f, -3, -1, 4, 1, 2};
    const int lab[3] = {0, 3, 1};
    const float eg[12] = {-0.07163338363170624f, 0.0034512626007199287f, 0.044481560587882996f,
                          0.023700522258877754f, 0.09053101390600204f, 0.10092867165803909f,
                          0.11241985857486725f, -0.3038795590400696f, -0.006448899395763874f,
                          -0.028658520430326462f, 0.005590853281319141f, 0.02951653115451336f};
    nn_graph *g = nn_graph_new();
    nn_tensor *x = nn_tensor_from(NULL, 2, (int[]){3, 4}, lg);
    x->requires_grad = 1;
    nn_tensor *l0 = nn_cross_entropy(g, x, lab, 0.f);
    nn_tensor *l25 = nn_cross_entropy(g, x, lab, 0.25f);
    EXPECT_NEAR(l0->data[0], 1.611086368560791, 1e-6);
    EXPECT_NEAR(l25->data[0], 1.7548363208770752, 1e-6);
    nn_graph_reset(g);
    nn_tensor *l1 = nn_cross_entropy(g, x, lab, 0.1f);
    REQUIRE(l1->ndim == 1 && l1->shape[0] == 1, "loss shape");
    EXPECT_NEAR(l1->data[0], 1.668586254119873, 1e-6);
    REQUIRE(nn_backward(g, l1) == 0, "backward failed");
    for (int i = 0; i < 12; i++) EXPECT_NEAR(x->grad[i], eg[i], 1e-6);
    nn_graph_free(g);
    nn_tensor_free(x);
}

TEST(l2_normalize_zero_row_torch)
{
    /* z = torch.tensor([[0.,0.,0.],[3.,4.,0.]], requires_grad=True)
     * n = F.normalize(z, dim=-1)   -> [[0,0,0],[0.6,0.8,0]]
     * (n * torch.tensor([[1.,2.,3.],[1.,1.,1.]])).sum().backward()
     * z.grad -> [[1e12, 2e12, 3e12], [0.032, -0.024, 0.2]] */
    nn_graph *g = nn_graph_new();
    nn_tensor *z = nn_tensor_from(NULL, 2, (int[]){2, 3}, (float[]){0, 0, 0, 3, 4, 0});
    z->requires_grad = 1;
    nn_tensor *n = nn_l2_normalize(g, z, 1e-12f);
    const float en[6] = {0, 0, 0, 0.6f, 0.8f, 0};
    for (int i = 0; i < 6; i++) {
        EXPECT(!isnan(n->data[i]), "NaN at %d", i);
        EXPECT_NEAR(n->data[i], en[i], 1e-7);
    }
    REQUIRE(nn_backward_from(g, n, (float[]){1, 2, 3, 1, 1, 1}) == 0, "backward failed");
    const double eg[6] = {1e12, 2e12, 3e12, 0.032, -0.024, 0.2};
    for (int i = 0; i < 3; i++) EXPECT_NEAR(z->grad[i], eg[i], 1e-6 * eg[i]);
    for (int i = 3; i < 6; i++) EXPECT_NEAR(z->grad[i], eg[i], 1e-6);
    nn_graph_free(g);
    nn_tensor_free(z);
}
