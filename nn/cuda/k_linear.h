/* CUDA twins of nn/ops_linear.c (implemented in nn/cuda/linear.cu).
 *
 * All matrices are row-major device arrays. The GEMMs go through cuBLAS on
 * the runtime's stream with the handle's math mode (fp32, or TF32 when
 * nn_cuda_set_tf32 is on). beta is 0 (the output is overwritten) or 1 (the
 * product is added into C, as the CPU backward's sgemm beta = 1). */
#ifndef NCMI_CUDA_K_LINEAR_H
#define NCMI_CUDA_K_LINEAR_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The column-major GEMM (cuBLAS's, or BLAS's CblasColMajor, argument order)
 * that computes the row-major C[M,N] = op(A) @ op(B): C^T = op(B)^T op(A)^T,
 * the operands swapped, each with its own transpose flag, every leading
 * dimension the row length of the row-major array as stored (ldc = N). The
 * host test (tests/test_ops_b.c) runs it through CblasColMajor. */
typedef struct nn_gemm_cm {
    int trans_first, trans_second; /* op of the first (B) and second (A) operand */
    int m, n, k;                   /* N, M, K */
    const float *first;            /* B */
    int ld_first;
    const float *second;           /* A */
    int ld_second;
    int ldc;
} nn_gemm_cm;
static inline nn_gemm_cm nn_gemm_colmajor(int ta, int tb, int M, int N, int K, const float *A,
                                          const float *B)
{
    nn_gemm_cm g;
    g.trans_first = tb;
    g.trans_second = ta;
    g.m = N;
    g.n = M;
    g.k = K;
    g.first = B;
    g.ld_first = tb ? K : N;  /* B stored [N,K] or [K,N] */
    g.second = A;
    g.ld_second = ta ? M : K; /* A stored [K,M] or [M,K] */
    g.ldc = N;
    return g;
}

/* C[M,N] = op(A) @ op(B) + beta * C, where op(A) is [M,K] (A stored [M,K],
 * or [K,M] when ta) and op(B) is [K,N] (B stored [K,N], or [N,K] when tb).
 * K == 0 leaves C as it is. */
void nn_cuda_gemm(int ta, int tb, int M, int N, int K, const float *A, const float *B, float beta,
                  float *C);
/* The same for `batches` independent products, matrix i of A, B, C at
 * A + i*sa, B + i*sb, C + i*sc (element strides). */
void nn_cuda_gemm_batched(int ta, int tb, int M, int N, int K, const float *A, size_t sa,
                          const float *B, size_t sb, float beta, float *C, size_t sc, int batches);
/* The same with the product scaled: C = alpha op(A) op(B) + beta C (as
 * cblas_sgemm's alpha; folds a scale into the GEMM instead of a pass). */
void nn_cuda_gemm_batched_alpha(int ta, int tb, int M, int N, int K, float alpha, const float *A, size_t sa,
                                const float *B, size_t sb, float beta, float *C, size_t sc, int batches);
/* y[r, o] = b[o] for every row r of y [rows, n]. */
void nn_cuda_bias_fill(float *y, const float *b, int rows, int n);
/* db[o] += sum over r of dy[r, o], dy [rows, n]; rows in ascending order
 * (as the CPU) up to 256 rows, else by chunks of 256 rows. */
void nn_cuda_bias_grad(float *db, const float *dy, int rows, int n);

#ifdef __cplusplus
}
#endif

#endif
