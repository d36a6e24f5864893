// Losses on logits [N,C] on the GPU (contracts in k_loss.h; the formulas
// are the CPU's, nn/ops_loss.c and nn/loss.c, written per row).
//
// One warp per row: lane l handles classes l, l+32, ...; row maxima and sums
// are warp all-reduces (xor butterflies: every lane ends with the same
// value, so every lane writes its gradients with the same row statistics).
// Row values go to a double array, then one block sums it.
#include <math.h>

#include "check.cuh"
#include "k_loss.h"

namespace {

constexpr unsigned FULL = 0xffffffffu;
constexpr int THREADS = 256; // 8 rows per block
constexpr double OCCE_DELTA = 1e-7;

__device__ double warp_sum(double v)
{
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL, v, o);
    return v;
}

// Max that ignores NaN as the CPU's `if (x > m) m = x` does (m starts at -inf).
template <typename T> __device__ T warp_max(T v)
{
    for (int o = 16; o > 0; o >>= 1) {
        const T w = __shfl_xor_sync(FULL, v, o);
        if (w > v) v = w;
    }
    return v;
}

#define ROWS_PER_WARP(n, N)                                                                         \
    const int lane = threadIdx.x & 31;                                                              \
    const size_t warp0 = (blockIdx.x * (size_t)blockDim.x + threadIdx.x) >> 5;                      \
    const size_t nwarps = ((size_t)gridDim.x * blockDim.x) >> 5;                                    \
    for (size_t n = warp0; n < (size_t)(N); n += nwarps)

unsigned row_blocks(int N) { return nn_grid((size_t)N * 32, THREADS); }

// row[n] = the cross-entropy of row n with label smoothing (ops_loss.c).
__global__ void k_ce_fwd(const float *x, const int *y, int N, int C, float eps, float *p, double *row)
{
    ROWS_PER_WARP(n, N)
    {
        const float *xn = x + n * (size_t)C;
        float m = -INFINITY;
        for (int c = lane; c < C; c += 32)
            if (xn[c] > m) m = xn[c];
        m = warp_max(m);
        if (!isfinite(m)) m = 0.f;
        double s = 0;
        for (int c = lane; c < C; c += 32) s += expf(xn[c] - m);
        s = warp_sum(s);
        const double lse = (double)m + log(s);
        const float inv = (float)(1.0 / s);
        if (p)
            for (int c = lane; c < C; c += 32) p[n * (size_t)C + c] = expf(xn[c] - m) * inv;
        double smooth = 0;
        // the smoothing term only when used: a -inf logit would make it inf
        if (eps > 0.f) {
            for (int c = lane; c < C; c += 32) smooth += lse - (double)xn[c];
            smooth = warp_sum(smooth);
        }
        if (lane == 0) {
            const double nll = lse - (double)xn[y[n]];
            row[n] = (1.0 - (double)eps) * nll + (eps > 0.f ? (double)eps / C * smooth : 0.0);
        }
    }
}

__global__ void k_ce_bwd(const float *p, const int *y, const float *grad, int N, int C, float eps, float *gx)
{
    const float gs = grad[0] / (float)N;
    const float off = eps / (float)C, on = 1.f - eps + eps / (float)C;
    const size_t total = (size_t)N * (size_t)C;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        const size_t n = i / (size_t)C;
        const int c = (int)(i % (size_t)C);
        gx[i] += gs * (p[i] - (c == y[n] ? on : off));
    }
}

// log-sum-exp of a row in double with the max shift (loss.c log_softmax_row).
__device__ double row_lse(const float *f, int C, int lane)
{
    double m = -INFINITY;
    for (int c = lane; c < C; c += 32)
        if (f[c] > m) m = f[c];
    m = warp_max(m);
    if (!isfinite(m)) m = 0;
    double s = 0;
    for (int c = lane; c < C; c += 32) s += exp((double)f[c] - m);
    s = warp_sum(s);
    return m + log(s);
}

// gr[c] = dlpy * (onehot_y - softmax_c): the gradient of a function of lp_y.
__device__ void grad_through_lpy(const float *f, int y, int C, double lse, double dlpy, float *gr, int lane)
{
    for (int c = lane; c < C; c += 32) gr[c] = (float)(dlpy * ((c == y ? 1.0 : 0.0) - exp((double)f[c] - lse)));
}

__device__ double row_focal(const float *f, int y, int C, double gamma, float *gr, int lane)
{
    const double lse = row_lse(f, C, lane);
    const double lpy = (double)f[y] - lse, pt = exp(lpy), om = -expm1(lpy);
    const double w = (gamma == 0) ? 1.0 : pow(om, gamma);
    if (gr) {
        double t2 = 0;
        if (gamma != 0 && om > 0) t2 = gamma * pt * lpy * pow(om, gamma - 1.0);
        grad_through_lpy(f, y, C, lse, -w + t2, gr, lane);
    }
    return -w * lpy;
}

__device__ double row_poly1(const float *f, int y, int C, double eps, float *gr, int lane)
{
    const double lse = row_lse(f, C, lane);
    const double lpy = (double)f[y] - lse, pt = exp(lpy);
    if (gr) grad_through_lpy(f, y, C, lse, -1.0 - eps * pt, gr, lane);
    return -lpy + eps * (1.0 - pt);
}

__device__ double row_square(const float *f, int y, int C, double k, double M, float *gr, int lane)
{
    double s = 0;
    for (int c = lane; c < C; c += 32) {
        const double fc = f[c];
        if (c == y) {
            s += k * (fc - M) * (fc - M);
            if (gr) gr[c] = (float)(2.0 * k * (fc - M) / C);
        } else {
            s += fc * fc;
            if (gr) gr[c] = (float)(2.0 * fc / C);
        }
    }
    return warp_sum(s) / C;
}

__device__ double row_squentropy(const float *f, int y, int C, float *gr, int lane)
{
    const double lse = row_lse(f, C, lane);
    double s = 0;
    for (int c = lane; c < C; c += 32)
        if (c != y) s += (double)f[c] * f[c];
    s = warp_sum(s);
    if (gr)
        for (int c = lane; c < C; c += 32) {
            double g = -1.0 * ((c == y ? 1.0 : 0.0) - exp((double)f[c] - lse));
            if (c != y) g += 2.0 * f[c] / (C - 1);
            gr[c] = (float)g;
        }
    return -((double)f[y] - lse) + s / (C - 1);
}

// anticlass: -lp_y + lambda OCCE with r = softmax(-f) (loss.c row_anticlass).
__device__ double row_anticlass(const float *f, int y, int C, double lambda, float *gr, int lane)
{
    const double cm1 = C - 1;
    double m = -INFINITY;
    for (int c = lane; c < C; c += 32)
        if (-f[c] > m) m = -f[c];
    m = warp_max(m);
    if (!isfinite(m)) m = 0;
    double s = 0;
    for (int c = lane; c < C; c += 32) s += exp(-(double)f[c] - m);
    s = warp_sum(s);
    double occe = 0, rg = 0;
    for (int c = lane; c < C; c += 32) {
        if (c == y) continue;
        const double r = exp(-(double)f[c] - m) / s;
        occe -= log(cm1 * r + OCCE_DELTA);
        rg += r * (-1.0 / (cm1 * r + OCCE_DELTA));
    }
    occe = warp_sum(occe) / cm1;
    rg = warp_sum(rg);
    const double lse = row_lse(f, C, lane);
    if (gr)
        for (int c = lane; c < C; c += 32) {
            const double r = exp(-(double)f[c] - m) / s;
            const double grc = (c == y) ? 0.0 : -1.0 / (cm1 * r + OCCE_DELTA);
            double g = -lambda * r * (grc - rg); // d/df = -d/du
            g += exp((double)f[c] - lse) - (c == y ? 1.0 : 0.0);
            gr[c] = (float)g;
        }
    return -((double)f[y] - lse) + lambda * occe;
}

__global__ void k_row_loss(nn_cuda_row_loss kind, const float *x, const int *y, int N, int C, float p0, float p1,
                           float *saved, double *row)
{
    ROWS_PER_WARP(n, N)
    {
        const float *f = x + n * (size_t)C;
        float *gr = saved ? saved + n * (size_t)C : nullptr;
        const int yn = y[n];
        double v = 0;
        switch (kind) {
        case NN_CUDA_ROW_FOCAL: v = row_focal(f, yn, C, p0, gr, lane); break;
        case NN_CUDA_ROW_POLY1: v = row_poly1(f, yn, C, p0, gr, lane); break;
        case NN_CUDA_ROW_SQUARE: v = row_square(f, yn, C, p0, p1, gr, lane); break;
        case NN_CUDA_ROW_SQUENTROPY: v = row_squentropy(f, yn, C, gr, lane); break;
        case NN_CUDA_ROW_ANTICLASS: v = row_anticlass(f, yn, C, p0, gr, lane); break;
        }
        if (lane == 0) row[n] = v;
    }
}

__global__ void k_row_loss_bwd(const float *saved, const float *grad, int N, size_t total, float *gx)
{
    const float gs = grad[0] / (float)N;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x)
        gx[i] += gs * saved[i];
}

// out[0] = (float)(sum of row[0..N) / N): one block, a fixed summation tree.
__global__ void k_mean_rows(const double *row, int N, float *out)
{
    __shared__ double sh[THREADS];
    double s = 0;
    for (int i = threadIdx.x; i < N; i += THREADS) s += row[i];
    sh[threadIdx.x] = s;
    __syncthreads();
    for (int k = THREADS / 2; k > 0; k >>= 1) {
        if ((int)threadIdx.x < k) sh[threadIdx.x] += sh[threadIdx.x + k];
        __syncthreads();
    }
    if (threadIdx.x == 0) out[0] = (float)(sh[0] / N);
}

void mean_rows(const double *row, int N, float *out)
{
    k_mean_rows<<<1, THREADS, 0, NN_STREAM>>>(row, N, out);
    NN_CUDA_LAUNCHED();
}

} // namespace

extern "C" void nn_cuda_cross_entropy_fwd(const float *logits, const int *labels, int N, int C, float eps,
                                          float *p, float *out)
{
    double *row = (double *)nn_cuda_alloc((size_t)N * sizeof(double));
    k_ce_fwd<<<row_blocks(N), THREADS, 0, NN_STREAM>>>(logits, labels, N, C, eps, p, row);
    NN_CUDA_LAUNCHED();
    mean_rows(row, N, out);
    nn_cuda_free(row);
}

extern "C" void nn_cuda_cross_entropy_bwd(const float *p, const int *labels, const float *grad, int N, int C,
                                          float eps, float *gx)
{
    const size_t total = (size_t)N * (size_t)C;
    k_ce_bwd<<<nn_grid(total), 256, 0, NN_STREAM>>>(p, labels, grad, N, C, eps, gx);
    NN_CUDA_LAUNCHED();
}

extern "C" void nn_cuda_row_loss_fwd(nn_cuda_row_loss kind, const float *logits, const int *labels, int N, int C,
                                     float p0, float p1, float *saved, float *out)
{
    double *row = (double *)nn_cuda_alloc((size_t)N * sizeof(double));
    k_row_loss<<<row_blocks(N), THREADS, 0, NN_STREAM>>>(kind, logits, labels, N, C, p0, p1, saved, row);
    NN_CUDA_LAUNCHED();
    mean_rows(row, N, out);
    nn_cuda_free(row);
}

extern "C" void nn_cuda_row_loss_bwd(const float *saved, const float *grad, int N, int C, float *gx)
{
    const size_t total = (size_t)N * (size_t)C;
    k_row_loss_bwd<<<nn_grid(total), 256, 0, NN_STREAM>>>(saved, grad, N, total, gx);
    NN_CUDA_LAUNCHED();
}
