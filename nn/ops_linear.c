/* Linear algebra ops through OpenBLAS (CPU) or cuBLAS (GPU, nn/cuda/linear.cu):
 * batched matmul and linear.
 *
 *   matmul: a [...,M,K] @ b [...,K,N] -> [...,M,N]
 *           batch dims equal, or b 2-D and shared by every batch of a.
 *   linear: x [...,in] @ W[out,in]^T + b[out] -> [...,out]
 *
 * Backward adds into the inputs' gradients with sgemm beta = 1. */
#include <cblas.h>
#include <string.h>

#include "cuda/k_linear.h"
#include "error.h"
#include "ops.h"
#include "ops_internal.h"

/* ------------------------------------------------------------------------ */
/* matmul */

/* iparam: 0 batches, 1 M, 2 K, 3 N, 4 b shared (2-D) */
static void matmul_backward(nn_tensor *out)
{
    nn_tensor *a = out->src[0], *b = out->src[1];
    int batches = out->iparam[0], M = out->iparam[1], K = out->iparam[2], N = out->iparam[3];
    int shared = out->iparam[4];
    const float *dy = out->grad;
    if (nn_op_needs_grad(out, 0)) {
        /* dA [M,K] += dY [M,N] @ B^T [N,K] */
        float *da = nn_tensor_grad(a);
        if (NN_ON_GPU(out)) {
            if (shared)
                nn_cuda_gemm(0, 1, batches * M, K, N, dy, b->data, 1.f, da);
            else
                nn_cuda_gemm_batched(0, 1, M, K, N, dy, (size_t)M * N, b->data, (size_t)K * N, 1.f,
                                     da, (size_t)M * K, batches);
        } else if (shared) {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, batches * M, K, N, 1.f, dy, N,
                        b->data, N, 1.f, da, K);
        } else {
            for (int i = 0; i < batches; i++)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, K, N, 1.f,
                            dy + (size_t)i * M * N, N, b->data + (size_t)i * K * N, N, 1.f,
                            da + (size_t)i * M * K, K);
        }
    }
    if (nn_op_needs_grad(out, 1)) {
        /* dB [K,N] += A^T [K,M] @ dY [M,N] (summed over batches when shared) */
        float *db = nn_tensor_grad(b);
        if (NN_ON_GPU(out)) {
            if (shared)
                nn_cuda_gemm(1, 0, K, N, batches * M, a->data, dy, 1.f, db);
            else
                nn_cuda_gemm_batched(1, 0, K, N, M, a->data, (size_t)M * K, dy, (size_t)M * N, 1.f,
                                     db, (size_t)K * N, batches);
        } else if (shared) {
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, K, N, batches * M, 1.f, a->data,
                        K, dy, N, 1.f, db, N);
        } else {
            for (int i = 0; i < batches; i++)
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, K, N, M, 1.f,
                            a->data + (size_t)i * M * K, K, dy + (size_t)i * M * N, N, 1.f,
                            db + (size_t)i * K * N, N);
        }
    }
}

nn_tensor *nn_matmul(nn_graph *g, nn_tensor *a, nn_tensor *b)
{
    char sa[64], sb[64];
    nn_shape_str(a->ndim, a->shape, sa, sizeof sa);
    nn_shape_str(b->ndim, b->shape, sb, sizeof sb);
    NCMI_CHECK(a->ndim >= 2 && b->ndim >= 2, "matmul: a %s, b %s: need at least 2-D", sa, sb);
    int shared = b->ndim == 2;
    NCMI_CHECK(shared || a->ndim == b->ndim, "matmul: a %s, b %s: batch dims differ", sa, sb);
    int M = a->shape[a->ndim - 2], K = a->shape[a->ndim - 1];
    int N = b->shape[b->ndim - 1];
    NCMI_CHECK(b->shape[b->ndim - 2] == K, "matmul: a %s, b %s: inner dims differ", sa, sb);
    int batches = 1;
    for (int i = 0; i < a->ndim - 2; i++) {
        if (!shared)
            NCMI_CHECK(a->shape[i] == b->shape[i], "matmul: a %s, b %s: batch dims differ", sa, sb);
        batches *= a->shape[i];
    }
    int shape[NN_MAX_DIMS];
    memcpy(shape, a->shape, sizeof shape);
    shape[a->ndim - 1] = N;
    nn_tensor *src[2] = {a, b};
    nn_tensor *out = nn_op_output(g, "matmul", a->ndim, shape, matmul_backward, 2, src);
    out->bwd_reads = NN_BWD_SRC(0) | NN_BWD_SRC(1);
    out->iparam[0] = batches;
    out->iparam[1] = M;
    out->iparam[2] = K;
    out->iparam[3] = N;
    out->iparam[4] = shared;
    if (out->numel == 0) return out;
    if (K == 0) return out; /* zeros */
    if (NN_ON_GPU(out)) {
        if (shared)
            nn_cuda_gemm(0, 0, batches * M, N, K, a->data, b->data, 0.f, out->data);
        else
            nn_cuda_gemm_batched(0, 0, M, N, K, a->data, (size_t)M * K, b->data, (size_t)K * N, 0.f,
                                 out->data, (size_t)M * N, batches);
        return out;
    }
    if (shared) {
        /* [batches*M, K] @ [K, N] in one call */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, batches * M, N, K, 1.f, a->data, K,
                    b->data, N, 0.f, out->data, N);
    } else {
        for (int i = 0; i < batches; i++)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, K, 1.f,
                        a->data + (size_t)i * M * K, K, b->data + (size_t)i * K * N, N, 0.f,
                        out->data + (size_t)i * M * N, N);
    }
    return out;
}

/* ------------------------------------------------------------------------ */
/* linear */

/* iparam: 0 rows, 1 in, 2 out. Gradients of x, W and b from dy = d/d(xW^T + b)
 * [rows, out] (a device pointer when out is on the GPU); shared with
 * linear_relu (nn/ops_fused.c). */
void nn_linear_backward_from(nn_tensor *out, const float *dy)
{
    nn_tensor *x = out->src[0], *w = out->src[1], *b = out->nsrc > 2 ? out->src[2] : NULL;
    int rows = out->iparam[0], in = out->iparam[1], nout = out->iparam[2];
    if (rows == 0) return;
    if (nn_op_needs_grad(out, 0) && nout > 0) {
        /* dx [rows,in] += dy [rows,out] @ W [out,in] (overwritten, beta 0, when new) */
        float beta;
        if (NN_ON_GPU(out) && in > 0) {
            float *dx = nn_tensor_grad_beta(x, &beta);
            nn_cuda_gemm(0, 0, rows, in, nout, dy, w->data, beta, dx);
        } else if (!NN_ON_GPU(out))
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, in, nout, 1.f, dy, nout,
                        w->data, in, 1.f, nn_tensor_grad(x), in);
    }
    if (nn_op_needs_grad(out, 1) && in > 0) {
        /* dW [out,in] += dy^T [out,rows] @ x [rows,in] (overwritten, beta 0, when new) */
        float beta;
        if (NN_ON_GPU(out) && nout > 0) {
            float *dw = nn_tensor_grad_beta(w, &beta);
            nn_cuda_gemm(1, 0, nout, in, rows, dy, x->data, beta, dw);
        } else if (!NN_ON_GPU(out))
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, nout, in, rows, 1.f, dy, nout,
                        x->data, in, 1.f, nn_tensor_grad(w), in);
    }
    if (b && nn_op_needs_grad(out, 2)) {
        /* db [out] += sum over rows of dy */
        float *db = nn_tensor_grad(b);
        if (NN_ON_GPU(out)) {
            nn_cuda_bias_grad(db, dy, rows, nout);
            return;
        }
        for (int r = 0; r < rows; r++) {
            const float *d = dy + (size_t)r * nout;
            for (int o = 0; o < nout; o++) db[o] += d[o];
        }
    }
}

static void linear_backward(nn_tensor *out) { nn_linear_backward_from(out, out->grad); }

/* y = x W^T + b as op `op` with the given backward (linear, linear_relu). */
nn_tensor *nn_linear_forward_as(nn_graph *g, const char *op, nn_backward_fn backward, nn_tensor *x,
                                nn_tensor *w, nn_tensor *b)
{
    char sx[64], sw[64];
    nn_shape_str(x->ndim, x->shape, sx, sizeof sx);
    nn_shape_str(w->ndim, w->shape, sw, sizeof sw);
    NCMI_CHECK(x->ndim >= 1 && w->ndim == 2, "%s: x %s, W %s", op, sx, sw);
    int in = x->shape[x->ndim - 1], nout = w->shape[0];
    NCMI_CHECK(w->shape[1] == in, "%s: x %s, W %s: in features differ", op, sx, sw);
    NCMI_CHECK(b == NULL || (b->ndim == 1 && b->shape[0] == nout),
               "%s: W %s, bias of %zu elements", op, sw, b ? b->numel : 0);
    int rows = 1;
    for (int i = 0; i < x->ndim - 1; i++) rows *= x->shape[i];
    int shape[NN_MAX_DIMS];
    memcpy(shape, x->shape, sizeof shape);
    shape[x->ndim - 1] = nout;
    nn_tensor *src[3] = {x, w, b};
    nn_tensor *out = nn_op_output(g, op, x->ndim, shape, backward, b ? 3 : 2, src);
    out->bwd_reads = NN_BWD_SRC(0) | NN_BWD_SRC(1); /* x, W (linear_relu adds its output) */
    out->iparam[0] = rows;
    out->iparam[1] = in;
    out->iparam[2] = nout;
    if (out->numel == 0) return out;
    if (NN_ON_GPU(out)) {
        /* as below: the bias rows first, the product added onto them */
        if (b) nn_cuda_bias_fill(out->data, b->data, rows, nout);
        nn_cuda_gemm(0, 1, rows, nout, in, x->data, w->data, b ? 1.f : 0.f, out->data);
        return out;
    }
    float beta = 0.f;
    if (b) {
        for (int r = 0; r < rows; r++) memcpy(out->data + (size_t)r * nout, b->data, (size_t)nout * sizeof(float));
        beta = 1.f;
    }
    if (in > 0)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, nout, in, 1.f, x->data, in,
                    w->data, in, beta, out->data, nout);
    return out;
}

nn_tensor *nn_linear(nn_graph *g, nn_tensor *x, nn_tensor *w, nn_tensor *b)
{
    return nn_linear_forward_as(g, "linear", linear_backward, x, w, b);
}
