/* The MIL heads' own ops (mil/mil_ops.c): gradients by finite differences
 * on the CPU; make test-gpu runs every case here on the GPU too and compares
 * the output and the gradients with the CPU (gpu_tol: float sums in another
 * order, cuBLAS for softmax_abt), and tests/gpu/test_gpu_mil.c names them.
 * Shapes include one row / one token (N = 1), rows that are not a multiple
 * of anything, kernels wider than the sequence or the token grid. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../mil/mil_ops.h"
#include "../nn/ops.h"
#include "gradcheck.h"
#include "test.h"

static nn_tensor *f_softmax_abt(nn_graph *g, nn_tensor **in, const gc_case *c)
{
    return mil_softmax_abt(g, in[0], in[1], c->fparam[0]);
}

GRAD_TEST(mil_softmax_abt, .nin = 2, .ndim = {3, 3}, .shape = {{2, 3, 4}, {2, 5, 4}}, .fn = f_softmax_abt,
          .fparam = {0.5f}, .gpu_tol = 1e-4f)
GRAD_TEST(mil_softmax_abt_n1, .nin = 2, .ndim = {3, 3}, .shape = {{1, 1, 3}, {1, 1, 3}}, .fn = f_softmax_abt,
          .fparam = {0.7f}, .gpu_tol = 1e-4f)
GRAD_TEST(mil_softmax_abt_heads, .nin = 2, .ndim = {3, 3}, .shape = {{3, 7, 2}, {3, 4, 2}}, .fn = f_softmax_abt,
          .fparam = {1.3f}, .gpu_tol = 1e-4f)

static nn_tensor *f_qkv_heads(nn_graph *g, nn_tensor **in, const gc_case *c)
{
    return mil_qkv_heads(g, in[0], c->iparam[0], c->iparam[1], c->iparam[2]);
}

GRAD_TEST(mil_qkv_heads_q, .nin = 1, .ndim = {2}, .shape = {{5, 18}}, .fn = f_qkv_heads, .iparam = {0, 2, 3})
GRAD_TEST(mil_qkv_heads_k, .nin = 1, .ndim = {2}, .shape = {{5, 18}}, .fn = f_qkv_heads, .iparam = {1, 2, 3})
GRAD_TEST(mil_qkv_heads_v, .nin = 1, .ndim = {2}, .shape = {{7, 24}}, .fn = f_qkv_heads, .iparam = {2, 4, 2})
GRAD_TEST(mil_qkv_heads_n1, .nin = 1, .ndim = {2}, .shape = {{1, 6}}, .fn = f_qkv_heads, .iparam = {2, 1, 2})

static nn_tensor *f_seq_conv(nn_graph *g, nn_tensor **in, const gc_case *c)
{
    (void)c;
    return mil_seq_conv(g, in[0], in[1]);
}

GRAD_TEST(mil_seq_conv, .nin = 2, .ndim = {3, 4}, .shape = {{2, 5, 3}, {2, 1, 33, 1}}, .fn = f_seq_conv,
          .gpu_tol = 1e-4f)
GRAD_TEST(mil_seq_conv_n1, .nin = 2, .ndim = {3, 4}, .shape = {{1, 1, 2}, {1, 1, 3, 1}}, .fn = f_seq_conv,
          .gpu_tol = 1e-4f)
GRAD_TEST(mil_seq_conv_long, .nin = 2, .ndim = {3, 4}, .shape = {{3, 40, 2}, {3, 1, 33, 1}}, .fn = f_seq_conv,
          .gpu_tol = 1e-4f)

static nn_tensor *f_add_merge(nn_graph *g, nn_tensor **in, const gc_case *c)
{
    (void)c;
    return mil_add_merge_heads(g, in[0], in[1]);
}

GRAD_TEST(mil_add_merge_heads, .nin = 2, .ndim = {3, 3}, .shape = {{2, 3, 4}, {2, 3, 4}}, .fn = f_add_merge)
GRAD_TEST(mil_add_merge_heads_n1, .nin = 2, .ndim = {3, 3}, .shape = {{1, 1, 1}, {1, 1, 1}}, .fn = f_add_merge)
GRAD_TEST(mil_add_merge_heads_b_only, .nin = 2, .ndim = {3, 3}, .shape = {{3, 5, 2}, {3, 5, 2}}, .fn = f_add_merge,
          .no_grad_mask = 1u)

/* in: acc, x [1 + S*S, d], w [d, 1, K, K], b [d]; iparam[0] = S */
static nn_tensor *f_ppeg(nn_graph *g, nn_tensor **in, const gc_case *c)
{
    return mil_ppeg_conv_add(g, in[0], in[1], in[2], in[3], c->iparam[0]);
}
/* acc = x (PPEG's first conv): in x, w, b */
static nn_tensor *f_ppeg_same(nn_graph *g, nn_tensor **in, const gc_case *c)
{
    return mil_ppeg_conv_add(g, in[0], in[0], in[1], in[2], c->iparam[0]);
}

GRAD_TEST(mil_ppeg_conv_s1, .nin = 4, .ndim = {2, 2, 4, 1}, .shape = {{2, 3}, {2, 3}, {3, 1, 3, 3}, {3}},
          .fn = f_ppeg, .iparam = {1}, .gpu_tol = 1e-4f)
GRAD_TEST(mil_ppeg_conv_s3, .nin = 4, .ndim = {2, 2, 4, 1}, .shape = {{10, 2}, {10, 2}, {2, 1, 5, 5}, {2}},
          .fn = f_ppeg, .iparam = {3}, .gpu_tol = 1e-4f)
GRAD_TEST(mil_ppeg_conv_k7, .nin = 4, .ndim = {2, 2, 4, 1}, .shape = {{17, 3}, {17, 3}, {3, 1, 7, 7}, {3}},
          .fn = f_ppeg, .iparam = {4}, .gpu_tol = 1e-4f)
GRAD_TEST(mil_ppeg_conv_same, .nin = 3, .ndim = {2, 4, 1}, .shape = {{26, 2}, {2, 1, 3, 3}, {2}},
          .fn = f_ppeg_same, .iparam = {5}, .gpu_tol = 1e-4f)

/* sigmax: rows sum to 1 / (1 + eps / sum), no gradient recorded */
TEST(mil_sigmax_rows)
{
    nn_graph *g = nn_graph_new();
    nn_tensor *x = nn_tensor_new2(g, 3, 5);
    for (size_t i = 0; i < x->numel; i++) x->data[i] = (float)i * 0.3f - 2.f;
    x->requires_grad = 1;
    nn_tensor *y = mil_sigmax(g, x, 2.f, 1e-8f);
    EXPECT(!y->requires_grad, "sigmax records a gradient");
    for (int r = 0; r < 3; r++) {
        double s = 0;
        for (int n = 0; n < 5; n++) {
            const float v = x->data[r * 5 + n];
            const double sg = 1.0 / (1.0 + exp(-2.0 * v));
            s += y->data[r * 5 + n];
            double tot = 0;
            for (int j = 0; j < 5; j++) tot += 1.0 / (1.0 + exp(-2.0 * x->data[r * 5 + j]));
            EXPECT_NEAR(y->data[r * 5 + n], sg / tot, 1e-6);
        }
        EXPECT_NEAR(s, 1.0, 1e-6);
    }
    nn_graph_free(g);
}

TEST(mil_ema_update_cpu)
{
    nn_tensor *a = nn_tensor_new1(NULL, 4), *x = nn_tensor_new1(NULL, 4);
    for (int i = 0; i < 4; i++) {
        a->data[i] = (float)i;
        x->data[i] = 10.f + (float)i;
    }
    mil_ema_update(a, x, 0.75f);
    for (int i = 0; i < 4; i++) EXPECT_NEAR(a->data[i], 0.75 * i + 0.25 * (10 + i), 1e-6);
    nn_tensor_free(a);
    nn_tensor_free(x);
}
