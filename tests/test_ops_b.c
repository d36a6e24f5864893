/* Tests of matmul, linear, conv2d, pooling, batchnorm2d, layernorm and
 * dropout: finite-difference gradient checks of every variant, and values
 * against numbers computed with PyTorch 1.13 (the snippets are quoted). */
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "../nn/cuda/k_linear.h"
#include "../nn/cuda/k_norm.h"
#include "../nn/cuda/k_pool.h"
#include "../nn/ops.h"
#include "../nn/rng.h"
#include "gradcheck.h"
#include "test.h"

/* ---------------------------------------------------------------- matmul */

static nn_tensor *fn_matmul(nn_graph *g, nn_tensor **in, const gc_case *c)
{
    (void)c;
    return nn_matmul(g, in[0], in[1]);
}

GRAD_TEST(matmul_2d, .nin = 2, .ndim = {2, 2}, .shape = {{3, 4}, {4, 5}}, .fn = fn_matmul)
GRAD_TEST(matmul_3d, .nin = 2, .ndim = {3, 3}, .shape = {{2, 3, 4}, {2, 4, 5}}, .fn = fn_matmul)
GRAD_TEST(matmul_3d_shared_2d, .nin = 2, .ndim = {3, 2}, .shape = {{2, 3, 4}, {4, 5}},
          .fn = fn_matmul)
GRAD_TEST(matmul_4d, .nin = 2, .ndim = {4, 4}, .shape = {{2, 2, 3, 2}, {2, 2, 2, 3}},
          .fn = fn_matmul)

/* Larger, unequal sizes, so that a wrong leading dimension, transpose flag or
 * batch stride in the cuBLAS calls (nn/cuda/linear.cu) shows as an O(1)
 * error. Their GPU bound is looser than the default: cuBLAS may sum a
 * length-K dot product in another order than OpenBLAS, and an output that
 * cancels to ~0 then differs by a few ulp of its terms, which the harness
 * scales by 1e-3 * max|y| (tests/gpu/gpu_check.h): about 1e-4 for K = 20..65
 * in a simulation of reordered fp32 sums (worst of 200 draws 1.6e-4). */
#define GEMM_GPU_TOL 3e-4f
GRAD_TEST(matmul_2d_large, .nin = 2, .ndim = {2, 2}, .shape = {{37, 65}, {65, 29}},
          .fn = fn_matmul, .gpu_tol = GEMM_GPU_TOL)
GRAD_TEST(matmul_3d_large, .nin = 2, .ndim = {3, 3}, .shape = {{3, 13, 21}, {3, 21, 17}},
          .fn = fn_matmul, .gpu_tol = GEMM_GPU_TOL)
GRAD_TEST(matmul_3d_shared_large, .nin = 2, .ndim = {3, 2}, .shape = {{2, 19, 23}, {23, 11}},
          .fn = fn_matmul, .gpu_tol = GEMM_GPU_TOL)
GRAD_TEST(matmul_4d_large, .nin = 2, .ndim = {4, 4}, .shape = {{2, 3, 5, 7}, {2, 3, 7, 4}},
          .fn = fn_matmul, .gpu_tol = GEMM_GPU_TOL)

TEST(matmul_values)
{
    nn_graph *g = nn_graph_new();
    /* a [2,2,3] batched against shared b [3,2] and against per-batch b */
    float av[12] = {1, 2, 3, 4, 5, 6, -1, 0, 2, 0.5f, 1, -2};
    float bv[6] = {1, -1, 0, 2, 3, 1};
    nn_tensor *a = nn_tensor_from(g, 3, (int[]){2, 2, 3}, av);
    nn_tensor *b = nn_tensor_from(g, 2, (int[]){3, 2}, bv);
    nn_tensor *y = nn_matmul(g, a, b);
    REQUIRE(y->ndim == 3 && y->shape[0] == 2 && y->shape[1] == 2 && y->shape[2] == 2, "shape");
    float want[8] = {10, 6, 22, 12, 5, 3, -5.5f, -0.5f};
    for (int i = 0; i < 8; i++) EXPECT_NEAR(y->data[i], want[i], 1e-5);
    float bb[12] = {1, -1, 0, 2, 3, 1, 1, 0, 0, 1, 0, 0};
    nn_tensor *b3 = nn_tensor_from(g, 3, (int[]){2, 3, 2}, bb);
    nn_tensor *y3 = nn_matmul(g, a, b3);
    float want3[8] = {10, 6, 22, 12, -1, 0, 0.5f, 1};
    for (int i = 0; i < 8; i++) EXPECT_NEAR(y3->data[i], want3[i], 1e-5);
    nn_graph_free(g);
}

/* The cuBLAS calls (nn/cuda/linear.cu) take their arguments from
 * nn_gemm_colmajor; the same arguments through OpenBLAS's column-major sgemm
 * must give the row-major product, for every pair of transpose flags. */
TEST(gemm_colmajor_arguments)
{
    enum { M = 5, N = 3, K = 4 };
    float A[M * K], B[K * N], C[M * N];
    for (int i = 0; i < M * K; i++) A[i] = (float)(i % 7) - 2.5f;
    for (int i = 0; i < K * N; i++) B[i] = (float)(i % 5) * 0.5f - 1.f;
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            const nn_gemm_cm g = nn_gemm_colmajor(ta, tb, M, N, K, A, B);
            cblas_sgemm(CblasColMajor, g.trans_first ? CblasTrans : CblasNoTrans,
                        g.trans_second ? CblasTrans : CblasNoTrans, g.m, g.n, g.k, 1.f, g.first,
                        g.ld_first, g.second, g.ld_second, 0.f, C, g.ldc);
            for (int i = 0; i < M; i++)
                for (int j = 0; j < N; j++) {
                    float want = 0;
                    for (int k = 0; k < K; k++) /* A stored [K,M] when ta, B [N,K] when tb */
                        want += (ta ? A[k * M + i] : A[i * K + k]) * (tb ? B[j * K + k] : B[k * N + j]);
                    EXPECT(C[i * N + j] == want, "ta %d tb %d: C[%d,%d] = %g, want %g", ta, tb, i, j,
                           (double)C[i * N + j], (double)want);
                }
        }
}

/* ---------------------------------------------------------------- linear */

static nn_tensor *fn_linear(nn_graph *g, nn_tensor **in, const gc_case *c)
{
    return nn_linear(g, in[0], in[1], c->nin > 2 ? in[2] : NULL);
}

GRAD_TEST(linear_2d_bias, .nin = 3, .ndim = {2, 2, 1}, .shape = {{3, 4}, {5, 4}, {5}},
          .fn = fn_linear)
GRAD_TEST(linear_2d_nobias, .nin = 2, .ndim = {2, 2}, .shape = {{3, 4}, {5, 4}}, .fn = fn_linear)
GRAD_TEST(linear_3d_bias, .nin = 3, .ndim = {3, 2, 1}, .shape = {{2, 3, 4}, {5, 4}, {5}},
          .fn = fn_linear)
GRAD_TEST(linear_3d_nobias, .nin = 2, .ndim = {3, 2}, .shape = {{2, 3, 4}, {5, 4}},
          .fn = fn_linear)
/* larger sizes: see GEMM_GPU_TOL above */
GRAD_TEST(linear_2d_large, .nin = 3, .ndim = {2, 2, 1}, .shape = {{37, 65}, {29, 65}, {29}},
          .fn = fn_linear, .gpu_tol = GEMM_GPU_TOL)
GRAD_TEST(linear_3d_large, .nin = 3, .ndim = {3, 2, 1}, .shape = {{2, 9, 33}, {17, 33}, {17}},
          .fn = fn_linear, .gpu_tol = GEMM_GPU_TOL)
/* 600 rows: the GPU bias gradient sums chunks of 256 rows, then the chunks
 * (W not differentiated: its gradient would be a 600-long dot product) */
GRAD_TEST(linear_tall_bias, .nin = 3, .ndim = {3, 2, 1}, .shape = {{3, 200, 2}, {3, 2}, {3}},
          .fn = fn_linear, .no_grad_mask = 2u, .gpu_tol = GEMM_GPU_TOL)

TEST(linear_values)
{
    nn_graph *g = nn_graph_new();
    float xv[6] = {1, 2, 3, -1, 0, 1};
    float wv[6] = {1, 0, -1, 2, 1, 0.5f};
    float bv[2] = {0.5f, -1};
    nn_tensor *x = nn_tensor_from(g, 2, (int[]){2, 3}, xv);
    nn_tensor *w = nn_tensor_from(g, 2, (int[]){2, 3}, wv);
    nn_tensor *b = nn_tensor_from(g, 1, (int[]){2}, bv);
    nn_tensor *y = nn_linear(g, x, w, b);
    float want[4] = {1 - 3 + 0.5f, 2 + 2 + 1.5f - 1, -1 - 1 + 0.5f, -2 + 0.5f - 1};
    for (int i = 0; i < 4; i++) EXPECT_NEAR(y->data[i], want[i], 1e-6);
    nn_graph_free(g);
}

/* ---------------------------------------------------------------- conv2d */

/* iparam: stride, padding, dilation, groups; in[2] is the bias when nin == 3 */
static nn_tensor *fn_conv(nn_graph *g, nn_tensor **in, const gc_case *c)
{
    return nn_conv2d(g, in[0], in[1], c->nin > 2 ? in[2] : NULL, c->iparam[0], c->iparam[1],
                     c->iparam[2], c->iparam[3]);
}

/* gpu_tol: cuDNN sums each output and gradient in another order than the
 * CPU's sgemm. The GPU check scales the error of an element near zero by
 * 1e-3 of the largest one, and there a reordered fp32 sum of K terms is off
 * by a few ulps of its largest partial sums: re-summing these cases in three
 * other orders on the host gives scaled errors of 1e-6 to 4.4e-5, and 6.2e-5
 * for the 16 -> 24 case (K = 144 for the output, 216 for dx). */
#define CONV_GPU_TOL 1e-4f

GRAD_TEST(conv2d_stride2_pad1, .nin = 3, .ndim = {4, 4, 1},
          .shape = {{2, 3, 6, 6}, {4, 3, 3, 3}, {4}}, .fn = fn_conv, .iparam = {2, 1, 1, 1},
          .gpu_tol = CONV_GPU_TOL)
GRAD_TEST(conv2d_pad1_single_image, .nin = 3, .ndim = {4, 4, 1},
          .shape = {{1, 2, 5, 5}, {3, 2, 3, 3}, {3}}, .fn = fn_conv, .iparam = {1, 1, 1, 1},
          .gpu_tol = CONV_GPU_TOL)
GRAD_TEST(conv2d_dilation2, .nin = 3, .ndim = {4, 4, 1},
          .shape = {{2, 2, 7, 6}, {2, 2, 3, 3}, {2}}, .fn = fn_conv, .iparam = {1, 2, 2, 1},
          .gpu_tol = CONV_GPU_TOL)
GRAD_TEST(conv2d_groups2, .nin = 3, .ndim = {4, 4, 1},
          .shape = {{2, 4, 5, 5}, {6, 2, 3, 3}, {6}}, .fn = fn_conv, .iparam = {1, 1, 1, 2},
          .gpu_tol = CONV_GPU_TOL)
GRAD_TEST(conv2d_depthwise, .nin = 3, .ndim = {4, 4, 1},
          .shape = {{2, 3, 5, 5}, {3, 1, 3, 3}, {3}}, .fn = fn_conv, .iparam = {1, 1, 1, 3},
          .gpu_tol = CONV_GPU_TOL)
GRAD_TEST(conv2d_depthwise_stride2_dil2, .nin = 2, .ndim = {4, 4},
          .shape = {{2, 3, 7, 7}, {3, 1, 3, 3}}, .fn = fn_conv, .iparam = {2, 2, 2, 3},
          .gpu_tol = CONV_GPU_TOL)
GRAD_TEST(conv2d_nobias_rect_kernel, .nin = 2, .ndim = {4, 4},
          .shape = {{2, 3, 5, 6}, {2, 3, 2, 3}}, .fn = fn_conv, .iparam = {1, 0, 1, 1},
          .gpu_tol = CONV_GPU_TOL)
GRAD_TEST(conv2d_1x1, .nin = 3, .ndim = {4, 4, 1}, .shape = {{3, 4, 3, 3}, {5, 4, 1, 1}, {5}},
          .fn = fn_conv, .iparam = {1, 0, 1, 1}, .gpu_tol = CONV_GPU_TOL)
GRAD_TEST(conv2d_1x1_stride2_groups2, .nin = 2, .ndim = {4, 4},
          .shape = {{2, 4, 5, 5}, {4, 2, 1, 1}}, .fn = fn_conv, .iparam = {2, 0, 1, 2},
          .gpu_tol = CONV_GPU_TOL)
/* wider: 16 -> 24 channels, K = 144 terms per output (more than one tile of
 * cuDNN's kernels); the weights are not differentiated, to keep the CPU
 * finite differences short (tests/gpu/test_gpu_conv_half.c compares all
 * gradients at ResNet sizes) */
GRAD_TEST(conv2d_16to24_6x6, .nin = 3, .ndim = {4, 4, 1},
          .shape = {{2, 16, 6, 6}, {24, 16, 3, 3}, {24}}, .fn = fn_conv, .iparam = {1, 1, 1, 1},
          .no_grad_mask = 1u << 1, .gpu_tol = 3 * CONV_GPU_TOL)

/* x [1,4,5,5] = ((i*7)%11)/5 - 1, w [4,2,3,3] = ((i*5)%13)/6 - 1, b = 0.1*i */
static void conv_ref_inputs(nn_graph *g, nn_tensor **x, nn_tensor **w, nn_tensor **b)
{
    *x = nn_tensor_new4(g, 1, 4, 5, 5);
    *w = nn_tensor_new4(g, 4, 2, 3, 3);
    *b = nn_tensor_new1(g, 4);
    for (int i = 0; i < 100; i++) (*x)->data[i] = (float)((i * 7) % 11) / 5.f - 1.f;
    for (int i = 0; i < 72; i++) (*w)->data[i] = (float)((i * 5) % 13) / 6.f - 1.f;
    for (int i = 0; i < 4; i++) (*b)->data[i] = 0.1f * (float)i;
}

TEST(conv2d_values_vs_torch)
{
    nn_graph *g = nn_graph_new();
    nn_tensor *x, *w, *b;
    conv_ref_inputs(g, &x, &w, &b);
    /* F.conv2d(x, w, b, stride=1, padding=2, dilation=2, groups=2) */
    nn_tensor *y = nn_conv2d(g, x, w, b, 1, 2, 2, 2);
    REQUIRE(y->shape[0] == 1 && y->shape[1] == 4 && y->shape[2] == 5 && y->shape[3] == 5,
            "shape");
    static const float want[100] = {
        -1.6f, -0.19999997f, 0.9000001f, 0.36666673f, 0.06666667f,
        0.26666665f, -0.9000001f, 1.3000001f, 0.33333331f, 0.033333421f,
        2.8000002f, -1.2333333f, 0.56666654f, 1.5000001f, 0.73333341f,
        0.26666668f, 1.0666666f, -0.60000002f, -1.1666665f, 0.76666665f,
        -1.5999999f, 1.7666665f, -1.1666666f, 0.43333346f, 1.6333333f,
        0.83333337f, 0.10000006f, -0.46666667f, 1.9666667f, -0.099999957f,
        -1.3666666f, 0.83333337f, 1.1f, -1.4f, 0.93333328f,
        2.0333335f, 0.80000001f, -1.2333333f, 0.93333328f, 1.6f,
        0.36666662f, -0.23333332f, -0.36666662f, 0.56666672f, -1.3666667f,
        -0.79999995f, 1.1666666f, 0.36666667f, -1.0333333f, 1.0666666f,
        1.2666667f, -0.86666673f, -0.36666662f, 0.96666664f, 0.33333343f,
        1.9666666f, -0.90000004f, 1.6333334f, 1.8333334f, -0.26666671f,
        0.9333334f, 1.0333334f, 0.23333329f, -0.99999994f, 0.53333324f,
        1.4333334f, 0.80000001f, -0.43333334f, 0.93333334f, 0.066666648f,
        0.46666664f, 0.2f, -0.13333337f, 1.f, -1.3333333f,
        -0.033333302f, 0.46666673f, 1.3f, -1.1666667f, -0.16666666f,
        1.3666666f, 1.1333333f, -0.16666666f, 1.2666667f, 0.4333334f,
        1.0999999f, -0.39999992f, 0.63333344f, 0.59999996f, -1.2f,
        1.7f, 0.66666675f, -0.93333334f, -1.3666666f, 0.76666671f,
        0.56666666f, 0.63333333f, 0.53333336f, 0.13333336f, 0.43333328f,
    };
    for (int i = 0; i < 100; i++) EXPECT_NEAR(y->data[i], want[i], 1e-5);
    /* stride=2, padding=1, dilation=2, groups=2: all 16 values */
    nn_tensor *y2 = nn_conv2d(g, x, w, b, 2, 1, 2, 2);
    REQUIRE(y2->numel == 16 && y2->shape[2] == 2 && y2->shape[3] == 2, "shape");
    const float w2[16] = {-0.9000001f, 0.33333331f, 1.0666666f, -1.1666665f,
                          0.83333337f, -1.4f,       -0.23333332f, 0.56666672f,
                          -0.90000004f, 1.8333334f, 0.80000001f, 0.93333334f,
                          1.1333333f, 1.2666667f,   0.66666675f, -1.3666666f};
    for (int i = 0; i < 16; i++) EXPECT_NEAR(y2->data[i], w2[i], 1e-5);
    nn_graph_free(g);
}

/* ---------------------------------------------------------------- pooling */

/* Distinct values 0.05 apart (> 2*eps): no ties inside any window. */
static void init_distinct(nn_tensor **in, nn_rng *rng, const gc_case *c)
{
    (void)c;
    int n = (int)in[0]->numel;
    int *perm = malloc((size_t)n * sizeof(int));
    nn_rng_permutation(rng, perm, n);
    for (int i = 0; i < n; i++) in[0]->data[i] = 0.05f * (float)(perm[i] - n / 2);
    free(perm);
}

static nn_tensor *fn_maxpool(nn_graph *g, nn_tensor **in, const gc_case *c)
{
    return nn_maxpool2d(g, in[0], c->iparam[0], c->iparam[1], c->iparam[2]);
}
static nn_tensor *fn_avgpool(nn_graph *g, nn_tensor **in, const gc_case *c)
{
    return nn_avgpool2d(g, in[0], c->iparam[0], c->iparam[1], c->iparam[2]);
}
static nn_tensor *fn_gap(nn_graph *g, nn_tensor **in, const gc_case *c)
{
    (void)c;
    return nn_global_avgpool(g, in[0]);
}

GRAD_TEST(maxpool2d_k3_s2_p1, .nin = 1, .ndim = {4}, .shape = {{2, 2, 5, 5}}, .fn = fn_maxpool,
          .init = init_distinct, .iparam = {3, 2, 1})
GRAD_TEST(maxpool2d_k3_s1_p1_overlap, .nin = 1, .ndim = {4}, .shape = {{1, 2, 4, 5}},
          .fn = fn_maxpool, .init = init_distinct, .iparam = {3, 1, 1})
GRAD_TEST(maxpool2d_k2_s2, .nin = 1, .ndim = {4}, .shape = {{2, 1, 4, 4}}, .fn = fn_maxpool,
          .init = init_distinct, .iparam = {2, 2, 0})
GRAD_TEST(avgpool2d_k3_s2_p1, .nin = 1, .ndim = {4}, .shape = {{2, 2, 5, 5}}, .fn = fn_avgpool,
          .iparam = {3, 2, 1})
GRAD_TEST(avgpool2d_k2_s2, .nin = 1, .ndim = {4}, .shape = {{1, 2, 4, 6}}, .fn = fn_avgpool,
          .iparam = {2, 2, 0})
GRAD_TEST(global_avgpool, .nin = 1, .ndim = {4}, .shape = {{2, 3, 4, 5}}, .fn = fn_gap)
/* stride > kernel: inputs between windows get no gradient */
GRAD_TEST(maxpool2d_k2_s3_gaps, .nin = 1, .ndim = {4}, .shape = {{1, 2, 7, 8}}, .fn = fn_maxpool,
          .init = init_distinct, .iparam = {2, 3, 0})
GRAD_TEST(avgpool2d_k3_s1_p1_overlap, .nin = 1, .ndim = {4}, .shape = {{2, 1, 4, 5}},
          .fn = fn_avgpool, .iparam = {3, 1, 1})

/* The GPU backward kernels find the windows that hold an input element
 * with nn_pool_windows_of (nn/cuda/k_pool.h): against a brute force. */
TEST(pool_windows_of_brute_force)
{
    int bad = 0;
    for (int k = 1; k <= 5; k++)
        for (int s = 1; s <= 4; s++)
            for (int p = 0; 2 * p <= k; p++)
                for (int n_in = k > 2 * p ? k - 2 * p : 1; n_in <= 12; n_in++) {
                    int n_out = (n_in + 2 * p - k) / s + 1;
                    for (int i = 0; i < n_in; i++) {
                        int lo, hi;
                        nn_pool_windows_of(i, k, s, p, n_out, &lo, &hi);
                        for (int o = 0; o < n_out; o++) {
                            int holds = o * s - p <= i && i < o * s - p + k;
                            int listed = o >= lo && o <= hi;
                            if (holds != listed && bad++ < 5)
                                test_fail_at(__FILE__, __LINE__,
                                             "k %d s %d p %d n_in %d: input %d output %d: "
                                             "holds %d, listed %d ([%d,%d])",
                                             k, s, p, n_in, i, o, holds, listed, lo, hi);
                        }
                    }
                }
}

TEST(maxpool2d_padding_values_vs_torch)
{
    nn_graph *g = nn_graph_new();
    nn_tensor *x = nn_tensor_new4(g, 2, 1, 5, 5);
    for (int i = 0; i < 50; i++) x->data[i] = (float)((i * 13) % 17) / 4.f - 2.f;
    /* F.max_pool2d(x, 3, 2, 1) */
    nn_tensor *y = nn_maxpool2d(g, x, 3, 2, 1);
    REQUIRE(y->shape[2] == 3 && y->shape[3] == 3, "shape");
    const float want[18] = {1.5f, 1.25f, 1.75f, 1.5f, 2, 2, 0, 1.5f, 1.25f,
                            2, 1.75f, -0.25f, 2, 1.75f, 1.75f, 0.5f, 2, 1.75f};
    for (int i = 0; i < 18; i++) EXPECT_NEAR(y->data[i], want[i], 1e-6);
    /* all-negative input: padding (-inf) never wins */
    nn_tensor *xn = nn_tensor_new4(g, 1, 1, 2, 2);
    float nv[4] = {-3, -4, -5, -6};
    memcpy(xn->data, nv, sizeof nv);
    nn_tensor *yn = nn_maxpool2d(g, xn, 2, 1, 1);
    const float wn[9] = {-3, -3, -4, -3, -3, -4, -5, -5, -6};
    for (int i = 0; i < 9; i++) EXPECT_NEAR(yn->data[i], wn[i], 0);
    /* avg pool counts the padding: corner window of ones is 4/9 */
    nn_tensor *ones = nn_tensor_new4(g, 1, 1, 3, 3);
    nn_tensor_fill(ones, 1.f);
    nn_tensor *ya = nn_avgpool2d(g, ones, 3, 1, 1);
    EXPECT_NEAR(ya->data[0], 4.f / 9.f, 1e-6);
    EXPECT_NEAR(ya->data[4], 1.f, 1e-6);
    nn_graph_free(g);
}

/* ---------------------------------------------------------------- batchnorm */

/* in: x [N,C,H,W], gamma [C], beta [C], stats [2,C] (running mean; running
 * var), not differentiated. iparam 0: training. */
static nn_tensor *fn_bn(nn_graph *g, nn_tensor **in, const gc_case *c)
{
    int C = in[1]->shape[0];
    nn_device dev = in[3]->device;
    nn_tensor rm = {.ndim = 1, .shape = {C}, .numel = (size_t)C, .data = in[3]->data, .device = dev};
    nn_tensor rv = {.ndim = 1, .shape = {C}, .numel = (size_t)C, .data = in[3]->data + C,
                    .device = dev};
    return nn_batchnorm2d(g, in[0], in[1], in[2], &rm, &rv, c->iparam[0], 0.1f, 1e-5f);
}

static void init_bn(nn_tensor **in, nn_rng *rng, const gc_case *c)
{
    (void)rng;
    (void)c;
    int C = in[1]->shape[0];
    for (int i = 0; i < C; i++) in[3]->data[C + i] = 0.5f + 0.25f * (float)i; /* var > 0 */
}

GRAD_TEST(batchnorm2d_train, .nin = 4, .ndim = {4, 1, 1, 2},
          .shape = {{2, 3, 3, 3}, {3}, {3}, {2, 3}}, .fn = fn_bn, .init = init_bn,
          .no_grad_mask = 1u << 3, .iparam = {1})
GRAD_TEST(batchnorm2d_eval, .nin = 4, .ndim = {4, 1, 1, 2},
          .shape = {{2, 3, 3, 3}, {3}, {3}, {2, 3}}, .fn = fn_bn, .init = init_bn,
          .no_grad_mask = 1u << 3, .iparam = {0})
/* 432 values per channel: more than the GPU kernel's 256 threads, and a
 * thread's values span images (HW = 144 < 256) */
/* gpu_tol: the GPU sums dy and dy*xhat over the channel in double, the CPU
 * per image in float; their means can differ in the last bit, which moves
 * dx by ~1e-8 (4.5e-6 scaled near zero when replayed on the host). */
GRAD_TEST(batchnorm2d_train_multiblock, .nin = 4, .ndim = {4, 1, 1, 2},
          .shape = {{3, 2, 12, 12}, {2}, {2}, {2, 2}}, .fn = fn_bn, .init = init_bn,
          .no_grad_mask = 1u << 3, .iparam = {1}, .gpu_tol = 1e-4f)

/* The GPU batchnorm kernels walk a channel with nn_chan_walk (nn/cuda/k_norm.h):
 * against i / HW, i % HW. */
TEST(chan_walk_matches_division)
{
    const size_t hws[] = {1, 3, 9, 49, 256, 300};
    const size_t steps[] = {1, 7, 256};
    int bad = 0;
    for (int a = 0; a < 6; a++)
        for (int b = 0; b < 3; b++)
            for (size_t start = 0; start < 300; start += 37) {
                size_t HW = hws[a], step = steps[b], N = 5, i = start;
                for (nn_chan_walk w = nn_chan_walk_at(start, step, HW); w.n < N;
                     nn_chan_walk_next(&w), i += step)
                    if ((w.n != i / HW || w.j != i % HW) && bad++ < 5)
                        test_fail_at(__FILE__, __LINE__, "HW %zu step %zu: at %zu walk (%zu,%zu)",
                                     HW, step, i, w.n, w.j);
                /* stops at the first index past the channel (at once when start is) */
                EXPECT(start >= N * HW ? i == start : i >= N * HW && i < N * HW + step,
                       "HW %zu step %zu start %zu: stopped at %zu", HW, step, start, i);
            }
}

TEST(batchnorm2d_running_stats_vs_torch)
{
    nn_graph *g = nn_graph_new();
    nn_tensor *x = nn_tensor_new4(g, 2, 3, 2, 2);
    for (int i = 0; i < 24; i++) x->data[i] = (float)((i * 3) % 7) / 2.f - 1.f + 0.01f * (float)i;
    float rmv[3] = {0.5f, -0.2f, 0.1f}, rvv[3] = {1.5f, 0.7f, 2.0f};
    float gv[3] = {1.0f, 0.5f, 2.0f}, bv[3] = {0.0f, 0.1f, -0.3f};
    nn_tensor *rm = nn_tensor_from(NULL, 1, (int[]){3}, rmv);
    nn_tensor *rv = nn_tensor_from(NULL, 1, (int[]){3}, rvv);
    nn_tensor *gm = nn_tensor_from(g, 1, (int[]){3}, gv);
    nn_tensor *bt = nn_tensor_from(g, 1, (int[]){3}, bv);
    /* F.batch_norm(x, rm, rv, gm, bt, training=True, momentum=0.1, eps=1e-5) */
    nn_tensor *y = nn_batchnorm2d(g, x, gm, bt, rm, rv, 1, 0.1f, 1e-5f);
    const float want_rm[3] = {0.47624999f, -0.11849999f, 0.18674999f};
    const float want_rv[3] = {1.4553363f, 0.76071143f, 1.9053364f}; /* unbiased */
    for (int i = 0; i < 3; i++) {
        EXPECT_NEAR(rm->data[i], want_rm[i], 1e-6);
        EXPECT_NEAR(rv->data[i], want_rv[i], 1e-6);
    }
    const float want_y[24] = {
        -1.3150302f, 0.25779799f, 1.8306262f,  -0.24217388f, 0.53246301f, -0.39791691f,
        0.30804977f, -0.62233019f, -1.1072464f, 2.0384099f,  -2.1071901f, 1.0384663f,
        -0.6692332f, 0.90359503f, -1.1692051f, 0.4036231f,   0.82233024f, -0.1080498f,
        0.5979169f,  -0.33246306f, 0.18434782f, -3.9612525f, -0.81559598f, 2.3300605f};
    for (int i = 0; i < 24; i++) EXPECT_NEAR(y->data[i], want_y[i], 2e-5);
    /* eval: running stats, no update */
    float rm0 = rm->data[0];
    nn_tensor *ye = nn_batchnorm2d(g, x, gm, bt, rm, rv, 0, 0.1f, 1e-5f);
    EXPECT(rm->data[0] == rm0, "eval updated the running mean");
    EXPECT_NEAR(ye->data[0], (x->data[0] - rm->data[0]) / sqrtf(rv->data[0] + 1e-5f), 1e-5);
    nn_tensor_free(rm);
    nn_tensor_free(rv);
    nn_graph_free(g);
}

/* ---------------------------------------------------------------- layernorm */

static nn_tensor *fn_ln(nn_graph *g, nn_tensor **in, const gc_case *c)
{
    return nn_layernorm(g, in[0], c->nin > 1 ? in[1] : NULL, c->nin > 2 ? in[2] : NULL, 1e-5f);
}

GRAD_TEST(layernorm_affine, .nin = 3, .ndim = {2, 1, 1}, .shape = {{3, 6}, {6}, {6}},
          .fn = fn_ln)
GRAD_TEST(layernorm_gamma_only_3d, .nin = 2, .ndim = {3, 1}, .shape = {{2, 3, 5}, {5}},
          .fn = fn_ln)
GRAD_TEST(layernorm_no_affine, .nin = 1, .ndim = {3}, .shape = {{2, 3, 5}}, .fn = fn_ln)
/* GPU: a row wider than a warp (40 > 32 lanes) */
GRAD_TEST(layernorm_wide, .nin = 3, .ndim = {2, 1, 1}, .shape = {{3, 40}, {40}, {40}}, .fn = fn_ln)
/* GPU: 70 rows = two chunks of the parameter-gradient sums, 8+ rows per lane */
GRAD_TEST(layernorm_many_rows, .nin = 3, .ndim = {2, 1, 1}, .shape = {{70, 5}, {5}, {5}},
          .fn = fn_ln)

TEST(layernorm_values)
{
    nn_graph *g = nn_graph_new();
    float xv[4] = {1, 2, 3, 4};
    nn_tensor *x = nn_tensor_from(g, 2, (int[]){1, 4}, xv);
    nn_tensor *y = nn_layernorm(g, x, NULL, NULL, 0.f);
    /* mean 2.5, var 1.25 */
    float s = 1.f / sqrtf(1.25f);
    for (int i = 0; i < 4; i++) EXPECT_NEAR(y->data[i], (xv[i] - 2.5f) * s, 1e-6);
    nn_graph_free(g);
}

/* ---------------------------------------------------------------- dropout */

static nn_tensor *fn_dropout(nn_graph *g, nn_tensor **in, const gc_case *c)
{
    (void)c;
    nn_rng rng;
    nn_rng_seed(&rng, 1234); /* same mask in every evaluation */
    return nn_dropout(g, in[0], 0.3f, 1, &rng);
}

GRAD_TEST(dropout_p03, .nin = 1, .ndim = {2}, .shape = {{4, 8}}, .fn = fn_dropout)

TEST(dropout_mask_and_modes)
{
    nn_graph *g = nn_graph_new();
    int n = 20000;
    nn_tensor *x = nn_tensor_new1(g, n);
    nn_tensor_fill(x, 1.f);
    nn_rng r1, r2;
    nn_rng_seed(&r1, 7);
    nn_rng_seed(&r2, 7);
    nn_tensor *y1 = nn_dropout(g, x, 0.3f, 1, &r1);
    nn_tensor *y2 = nn_dropout(g, x, 0.3f, 1, &r2);
    int zeros = 0, bad = 0, differ = 0;
    for (int i = 0; i < n; i++) {
        if (y1->data[i] == 0.f) zeros++;
        else if (fabsf(y1->data[i] - 1.f / 0.7f) > 1e-6f) bad++;
        if (y1->data[i] != y2->data[i]) differ++;
    }
    EXPECT(bad == 0, "%d kept values are not scaled by 1/(1-p)", bad);
    EXPECT(differ == 0, "same seed, %d elements differ", differ);
    EXPECT(zeros > 0.3 * n - 300 && zeros < 0.3 * n + 300, "dropped %d of %d at p=0.3", zeros, n);
    nn_tensor *y3 = nn_dropout(g, x, 0.3f, 1, &r1); /* the stream advanced */
    differ = 0;
    for (int i = 0; i < n; i++) differ += y1->data[i] != y3->data[i];
    EXPECT(differ > 0, "second draw gave the same mask");
    EXPECT(nn_dropout(g, x, 0.3f, 0, &r1) == x, "eval dropout is not the identity");
    EXPECT(nn_dropout(g, x, 0.f, 1, &r1) == x, "p=0 dropout is not the identity");
    nn_tensor *y4 = nn_dropout(g, x, 1.f, 1, &r1);
    int nz = 0;
    for (int i = 0; i < n; i++) nz += y4->data[i] != 0.f;
    EXPECT(nz == 0, "p=1 kept %d values", nz);
    nn_graph_free(g);
}

/* The mask is nn_dropout_keep(key, i, p) with key the call's one draw from
 * the stream (the function the GPU kernel evaluates on the device), whatever
 * the thread count; the stream advances by exactly one number per call. */
TEST(dropout_mask_is_the_keyed_function)
{
    const int n = 300001;
    nn_graph *g = nn_graph_new();
    nn_tensor *x = nn_tensor_new1(g, n);
    nn_tensor_fill(x, 2.f);
    nn_rng r, ref;
    nn_rng_seed(&r, 2024);
    ref = r;
    const int saved = omp_get_max_threads();
    static const float rates[3] = {0.1f, 0.5f, 0.9f};
    for (int k = 0; k < 3; k++) {
        omp_set_num_threads(k == 1 ? 1 : 2);
        nn_tensor *y = nn_dropout(g, x, rates[k], 1, &r);
        const uint64_t key = nn_rng_u64(&ref);
        long wrong = 0, kept = 0;
        for (int i = 0; i < n; i++) {
            const int keep = nn_dropout_keep(key, (uint64_t)i, rates[k]);
            kept += keep;
            wrong += keep ? y->data[i] != 2.f / (1.f - rates[k]) : y->data[i] != 0.f;
        }
        EXPECT(wrong == 0, "p %.1f (%d threads): %ld elements differ from nn_dropout_keep", (double)rates[k],
               k == 1 ? 1 : 2, wrong);
        EXPECT(fabs((double)kept / n - (1.0 - rates[k])) < 0.005, "p %.1f: kept %.4f", (double)rates[k],
               (double)kept / n);
    }
    omp_set_num_threads(saved);
    EXPECT(nn_rng_u64(&r) == nn_rng_u64(&ref), "dropout took more than one number per call from the stream");
    nn_graph_free(g);
}
