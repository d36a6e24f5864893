// matmul / linear on the GPU: cuBLAS GEMMs plus the bias kernels
// (contracts in k_linear.h).
//
// cuBLAS is column-major. A row-major [R,C] array with leading dimension C is
// the column-major [C,R] array, its transpose, in the same memory. So the
// row-major product C[M,N] = op(A)[M,K] @ op(B)[K,N] is computed as the
// column-major C^T[N,M] = op(B)^T[N,K] @ op(A)^T[K,M] (nn_gemm_colmajor).
#include "check.cuh"
#include "k_linear.h"

namespace {

// Rows summed by one thread in the first pass of the bias gradient.
constexpr int COLSUM_CHUNK = 256;

__global__ void k_bias_fill(float *y, const float *b, size_t rows, size_t n)
{
    const size_t total = rows * n;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x)
        y[i] = b[i % n];
}

// part[c, o] = sum of x[r, o] over rows r of chunk c (rows c*CHUNK .. +CHUNK).
__global__ void k_colsum_part(const float *x, size_t rows, size_t n, float *part, size_t nchunks)
{
    const size_t total = nchunks * n;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        const size_t c = i / n, o = i % n;
        const size_t r0 = c * COLSUM_CHUNK, r1 = r0 + COLSUM_CHUNK < rows ? r0 + COLSUM_CHUNK : rows;
        float s = 0.f;
        for (size_t r = r0; r < r1; r++) s += x[r * n + o];
        part[i] = s;
    }
}

// db[o] += x[0, o] + x[1, o] + ... in row order (one thread per column: the
// CPU reference's order when x is the gradient itself).
__global__ void k_colsum_add(const float *x, size_t rows, size_t n, float *db)
{
    for (size_t o = blockIdx.x * (size_t)blockDim.x + threadIdx.x; o < n; o += (size_t)gridDim.x * blockDim.x) {
        float acc = db[o];
        for (size_t r = 0; r < rows; r++) acc += x[r * n + o];
        db[o] = acc;
    }
}

cublasHandle_t handle() { return (cublasHandle_t)nn_cuda_cublas(); }

cublasOperation_t op(int t) { return t ? CUBLAS_OP_T : CUBLAS_OP_N; }

} // namespace

extern "C" void nn_cuda_gemm(int ta, int tb, int M, int N, int K, const float *A, const float *B,
                             float beta, float *C)
{
    if (M <= 0 || N <= 0 || K <= 0) return;
    const float alpha = 1.f;
    const nn_gemm_cm g = nn_gemm_colmajor(ta, tb, M, N, K, A, B);
    NN_GPU_CHECK(cublasSgemm(handle(), op(g.trans_first), op(g.trans_second), g.m, g.n, g.k, &alpha,
                             g.first, g.ld_first, g.second, g.ld_second, &beta, C, g.ldc));
}

extern "C" void nn_cuda_gemm_batched(int ta, int tb, int M, int N, int K, const float *A, size_t sa,
                                     const float *B, size_t sb, float beta, float *C, size_t sc,
                                     int batches)
{
    nn_cuda_gemm_batched_alpha(ta, tb, M, N, K, 1.f, A, sa, B, sb, beta, C, sc, batches);
}

extern "C" void nn_cuda_gemm_batched_alpha(int ta, int tb, int M, int N, int K, float alpha, const float *A,
                                           size_t sa, const float *B, size_t sb, float beta, float *C, size_t sc,
                                           int batches)
{
    if (M <= 0 || N <= 0 || K <= 0 || batches <= 0) return;
    const nn_gemm_cm g = nn_gemm_colmajor(ta, tb, M, N, K, A, B);
    NN_GPU_CHECK(cublasSgemmStridedBatched(handle(), op(g.trans_first), op(g.trans_second), g.m, g.n,
                                           g.k, &alpha, g.first, g.ld_first, (long long)sb, g.second,
                                           g.ld_second, (long long)sa, &beta, C, g.ldc,
                                           (long long)sc, batches));
}

extern "C" void nn_cuda_bias_fill(float *y, const float *b, int rows, int n)
{
    const size_t total = (size_t)rows * (size_t)n;
    if (!total) return;
    k_bias_fill<<<nn_grid(total), 256, 0, NN_STREAM>>>(y, b, (size_t)rows, (size_t)n);
    NN_CUDA_LAUNCHED();
}

extern "C" void nn_cuda_bias_grad(float *db, const float *dy, int rows, int n)
{
    if (rows <= 0 || n <= 0) return;
    if (rows <= COLSUM_CHUNK) {
        k_colsum_add<<<nn_grid((size_t)n), 256, 0, NN_STREAM>>>(dy, (size_t)rows, (size_t)n, db);
        NN_CUDA_LAUNCHED();
        return;
    }
    // Two passes keep thousands of threads busy on tall dy (MIL bags of
    // ~1e5 rows): chunk sums, then their sum per column. No atomics: the
    // result does not depend on scheduling.
    const size_t nchunks = ((size_t)rows + COLSUM_CHUNK - 1) / COLSUM_CHUNK;
    float *part = (float *)nn_cuda_alloc(nchunks * (size_t)n * sizeof(float));
    k_colsum_part<<<nn_grid(nchunks * (size_t)n), 256, 0, NN_STREAM>>>(dy, (size_t)rows, (size_t)n, part, nchunks);
    NN_CUDA_LAUNCHED();
    k_colsum_add<<<nn_grid((size_t)n), 256, 0, NN_STREAM>>>(part, nchunks, (size_t)n, db);
    NN_CUDA_LAUNCHED();
    nn_cuda_free(part);
}
