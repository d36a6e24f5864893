// CUDA twins of the reductions and row ops (nn/ops_reduce.c); API in k_reduce.h.
//
// Rows (a last-axis reduction, softmax and friends) go to a warp each when
// they have at most 256 elements, else to a block of 256 threads: the
// group's threads take every 32nd (256th) element and combine through warp
// shuffles (and shared memory). Reductions over an inner axis (inner > 1)
// use 32 x 8 tiles: 32 neighbouring outputs side by side (coalesced reads),
// 8 threads down the reduced axis. No atomics: every result is written by
// one thread, so runs are deterministic.
//
// Formulas are the CPU reference's: double accumulation where it uses
// double, the same float expressions elsewhere, and nf() keeps a product
// that feeds an addition separately rounded (nvcc would fuse it into an FMA;
// the CPU build does not). expf is computed as exp in double rounded to
// float (expf_cr), the correctly rounded value, which glibc's expf also
// gives for 99.9% of inputs (CUDA's expf is only within 2 ulp): softmax
// values match the CPU's nearly bit for bit, and the cancellation in their
// backward (gy - sum gy y) has no library difference to magnify.
#include <limits.h>
#include <math.h>

#include "check.cuh"
#include "k_reduce.h"

namespace {

constexpr int THREADS = 256;      // per block, every kernel here
constexpr int WARP_ROW_MAX = 256; // longer rows get a block
constexpr unsigned FULL = 0xffffffffu;

__device__ __forceinline__ float nf(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ float expf_cr(float x) { return (float)exp((double)x); }

#define GRID_STRIDE(i, n)                                                                  \
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < (n);               \
         i += (size_t)gridDim.x * blockDim.x)

// ---- groups: a warp (BLOCK false) or the whole block per row ----

template <bool BLOCK> __device__ __forceinline__ int grp_lane()
{
    return BLOCK ? (int)threadIdx.x : (int)(threadIdx.x & 31);
}
template <bool BLOCK> __device__ __forceinline__ int grp_width() { return BLOCK ? THREADS : 32; }
template <bool BLOCK> __device__ __forceinline__ size_t grp_first()
{
    return BLOCK ? blockIdx.x : (size_t)blockIdx.x * (THREADS / 32) + threadIdx.x / 32;
}
template <bool BLOCK> __device__ __forceinline__ size_t grp_stride()
{
    return BLOCK ? gridDim.x : (size_t)gridDim.x * (THREADS / 32);
}

// rows r of this group; a row's elements j of this thread
#define FOR_ROWS(r, rows) for (size_t r = grp_first<BLOCK>(); r < (rows); r += grp_stride<BLOCK>())
#define FOR_COLS(j, D) for (int j = grp_lane<BLOCK>(); j < (D); j += grp_width<BLOCK>())

// Sum over the group; every thread gets the same total (the butterfly adds
// the same pairs in every lane, the block stage reads the warps in order).
template <bool BLOCK> __device__ double grp_sum(double v)
{
    for (int off = 16; off; off >>= 1) v += __shfl_xor_sync(FULL, v, off);
    if constexpr (BLOCK) {
        __shared__ double sh[THREADS / 32];
        __syncthreads(); // earlier readers of sh are done
        if ((threadIdx.x & 31) == 0) sh[threadIdx.x >> 5] = v;
        __syncthreads();
        v = 0;
        for (int w = 0; w < THREADS / 32; w++) v += sh[w];
    }
    return v;
}

// Max over the group ignoring NaN (fmaxf), as the CPU's `x > m` scan.
template <bool BLOCK> __device__ float grp_max(float v)
{
    for (int off = 16; off; off >>= 1) v = fmaxf(v, __shfl_xor_sync(FULL, v, off));
    if constexpr (BLOCK) {
        __shared__ float sh[THREADS / 32];
        __syncthreads();
        if ((threadIdx.x & 31) == 0) sh[threadIdx.x >> 5] = v;
        __syncthreads();
        v = sh[0];
        for (int w = 1; w < THREADS / 32; w++) v = fmaxf(v, sh[w]);
    }
    return v;
}

// Does (v, k) beat the current best (bv, bk)? NaN beats everything, then the
// larger value, then the smaller index: the CPU's answer (the first NaN, else
// the first maximal element) is the best of the row under this order,
// whatever order the candidates meet in. (-INFINITY, INT_MAX) is beaten by
// every element.
__device__ __forceinline__ bool max_better(float v, int k, float bv, int bk)
{
    const bool vn = v != v, bn = bv != bv;
    if (vn || bn) return vn && (!bn || k < bk);
    return v > bv || (v == bv && k < bk);
}

template <bool BLOCK> __device__ void grp_argmax(float &v, int &k)
{
    for (int off = 16; off; off >>= 1) {
        const float ov = __shfl_xor_sync(FULL, v, off);
        const int ok = __shfl_xor_sync(FULL, k, off);
        if (max_better(ov, ok, v, k)) {
            v = ov;
            k = ok;
        }
    }
    if constexpr (BLOCK) {
        __shared__ float sv[THREADS / 32];
        __shared__ int sk[THREADS / 32];
        __syncthreads();
        if ((threadIdx.x & 31) == 0) {
            sv[threadIdx.x >> 5] = v;
            sk[threadIdx.x >> 5] = k;
        }
        __syncthreads();
        v = sv[0];
        k = sk[0];
        for (int w = 1; w < THREADS / 32; w++)
            if (max_better(sv[w], sk[w], v, k)) {
                v = sv[w];
                k = sk[w];
            }
    }
}

// ---- sum / max over one axis ----

// inner == 1: rows of n
template <bool BLOCK> __global__ void k_sum_rows(float *y, const float *x, size_t rows, int n, float s)
{
    FOR_ROWS(r, rows)
    {
        const float *px = x + r * (size_t)n;
        double acc = 0;
        FOR_COLS(j, n) acc += px[j];
        acc = grp_sum<BLOCK>(acc);
        if (grp_lane<BLOCK>() == 0) y[r] = (float)(acc * s);
    }
}

// inner > 1: a block (32, 8) per tile of 32 consecutive outputs (o, i..i+31)
constexpr int TILE_X = 32, TILE_Y = 8;

__global__ void k_sum_tiled(float *y, const float *x, size_t outer, int n, size_t inner, float s)
{
    __shared__ double part[TILE_Y][TILE_X];
    const size_t tiles_i = (inner + TILE_X - 1) / TILE_X, ntiles = outer * tiles_i;
    for (size_t t = blockIdx.x; t < ntiles; t += gridDim.x) {
        const size_t o = t / tiles_i, i = (t % tiles_i) * TILE_X + threadIdx.x;
        double acc = 0;
        if (i < inner)
            for (int k = threadIdx.y; k < n; k += TILE_Y) acc += x[(o * n + k) * inner + i];
        part[threadIdx.y][threadIdx.x] = acc;
        __syncthreads();
        if (threadIdx.y == 0 && i < inner) {
            double tot = 0;
            for (int r = 0; r < TILE_Y; r++) tot += part[r][threadIdx.x];
            y[o * inner + i] = (float)(tot * s);
        }
        __syncthreads(); // part is rewritten for the next tile
    }
}

__global__ void k_sum_axis_bwd(float *gx, const float *gy, size_t outer, int n, size_t inner,
                               float s)
{
    const size_t total = outer * (size_t)n * inner;
    GRID_STRIDE(idx, total)
    {
        const size_t o = idx / ((size_t)n * inner), i = idx % inner;
        gx[idx] += nf(s, gy[o * inner + i]);
    }
}

template <bool BLOCK> __global__ void k_max_rows(float *y, int *arg, const float *x, size_t rows, int n)
{
    FOR_ROWS(r, rows)
    {
        const float *px = x + r * (size_t)n;
        float bv = -INFINITY;
        int bk = INT_MAX;
        FOR_COLS(j, n)
        {
            if (max_better(px[j], j, bv, bk)) {
                bv = px[j];
                bk = j;
            }
        }
        grp_argmax<BLOCK>(bv, bk);
        if (grp_lane<BLOCK>() == 0) {
            y[r] = bv;
            arg[r] = bk;
        }
    }
}

__global__ void k_max_tiled(float *y, int *arg, const float *x, size_t outer, int n, size_t inner)
{
    __shared__ float pv[TILE_Y][TILE_X];
    __shared__ int pk[TILE_Y][TILE_X];
    const size_t tiles_i = (inner + TILE_X - 1) / TILE_X, ntiles = outer * tiles_i;
    for (size_t t = blockIdx.x; t < ntiles; t += gridDim.x) {
        const size_t o = t / tiles_i, i = (t % tiles_i) * TILE_X + threadIdx.x;
        float bv = -INFINITY;
        int bk = INT_MAX;
        if (i < inner)
            for (int k = threadIdx.y; k < n; k += TILE_Y) {
                const float v = x[(o * n + k) * inner + i];
                if (max_better(v, k, bv, bk)) {
                    bv = v;
                    bk = k;
                }
            }
        pv[threadIdx.y][threadIdx.x] = bv;
        pk[threadIdx.y][threadIdx.x] = bk;
        __syncthreads();
        if (threadIdx.y == 0 && i < inner) {
            for (int r = 1; r < TILE_Y; r++)
                if (max_better(pv[r][threadIdx.x], pk[r][threadIdx.x], bv, bk)) {
                    bv = pv[r][threadIdx.x];
                    bk = pk[r][threadIdx.x];
                }
            y[o * inner + i] = bv;
            arg[o * inner + i] = bk;
        }
        __syncthreads();
    }
}

__global__ void k_max_axis_bwd(float *gx, const float *gy, const int *arg, size_t outer, int n,
                               size_t inner)
{
    GRID_STRIDE(idx, outer * inner)
    {
        const size_t o = idx / inner, i = idx % inner;
        gx[(o * n + (size_t)arg[idx]) * inner + i] += gy[idx];
    }
}

// ---- sum over everything: per-block partial sums, then one block ----

constexpr unsigned SUM_ALL_BLOCKS = 1024;

__global__ void k_sum_all_part(double *part, const float *x, size_t n)
{
    double acc = 0;
    GRID_STRIDE(i, n) acc += x[i];
    acc = grp_sum<true>(acc);
    if (threadIdx.x == 0) part[blockIdx.x] = acc;
}

__global__ void k_sum_all_finish(float *y, const double *part, unsigned nb, size_t n, int mean)
{
    double acc = 0;
    for (unsigned k = threadIdx.x; k < nb; k += THREADS) acc += part[k];
    acc = grp_sum<true>(acc);
    if (threadIdx.x == 0) y[0] = (float)(mean ? acc / (double)n : acc);
}

__global__ void k_sum_all_bwd(float *gx, const float *gy, float s, size_t n)
{
    const float gs = gy[0] * s;
    GRID_STRIDE(i, n) gx[i] += gs;
}

// ---- row ops ----

// the CPU's row_shift: the row max (NaN ignored), 0 when not finite
template <bool BLOCK> __device__ float row_shift(const float *px, int D)
{
    float m = -INFINITY;
    FOR_COLS(j, D) m = fmaxf(m, px[j]);
    m = grp_max<BLOCK>(m);
    return isfinite(m) ? m : 0.f;
}

// the CPU's row_lse: log sum exp in double after the shift
template <bool BLOCK> __device__ float row_lse(const float *px, int D)
{
    const float m = row_shift<BLOCK>(px, D);
    double s = 0;
    FOR_COLS(j, D) s += exp((double)(px[j] - m));
    s = grp_sum<BLOCK>(s);
    return (float)((double)m + log(s));
}

template <bool BLOCK> __global__ void k_logsumexp(float *y, const float *x, size_t rows, int D)
{
    FOR_ROWS(r, rows)
    {
        const float v = row_lse<BLOCK>(x + r * (size_t)D, D);
        if (grp_lane<BLOCK>() == 0) y[r] = v;
    }
}

__global__ void k_logsumexp_bwd(float *gx, const float *x, const float *y, const float *gy,
                                size_t rows, int D)
{
    GRID_STRIDE(idx, rows * (size_t)D)
    {
        const size_t r = idx / (size_t)D;
        gx[idx] += nf(gy[r], expf_cr(x[idx] - y[r]));
    }
}

template <bool BLOCK> __global__ void k_softmax(float *y, const float *x, size_t rows, int D)
{
    FOR_ROWS(r, rows)
    {
        const float *px = x + r * (size_t)D;
        float *py = y + r * (size_t)D;
        const float m = row_shift<BLOCK>(px, D);
        double s = 0;
        FOR_COLS(j, D)
        {
            py[j] = expf_cr(px[j] - m);
            s += py[j];
        }
        s = grp_sum<BLOCK>(s);
        const float inv = (float)(1.0 / s);
        FOR_COLS(j, D) py[j] *= inv; // the elements this thread wrote above
    }
}

template <bool BLOCK>
__global__ void k_softmax_bwd(float *gx, const float *y, const float *gy, size_t rows, int D)
{
    FOR_ROWS(r, rows)
    {
        const float *py = y + r * (size_t)D, *pgy = gy + r * (size_t)D;
        float *pg = gx + r * (size_t)D;
        double dot = 0;
        FOR_COLS(j, D) dot += (double)pgy[j] * py[j];
        const float d = (float)grp_sum<BLOCK>(dot);
        FOR_COLS(j, D) pg[j] += nf(py[j], pgy[j] - d);
    }
}

template <bool BLOCK> __global__ void k_log_softmax(float *y, const float *x, size_t rows, int D)
{
    FOR_ROWS(r, rows)
    {
        const float *px = x + r * (size_t)D;
        float *py = y + r * (size_t)D;
        const float lse = row_lse<BLOCK>(px, D);
        FOR_COLS(j, D) py[j] = px[j] - lse;
    }
}

template <bool BLOCK>
__global__ void k_log_softmax_bwd(float *gx, const float *y, const float *gy, size_t rows, int D)
{
    FOR_ROWS(r, rows)
    {
        const float *py = y + r * (size_t)D, *pgy = gy + r * (size_t)D;
        float *pg = gx + r * (size_t)D;
        double s = 0;
        FOR_COLS(j, D) s += pgy[j];
        const float sf = (float)grp_sum<BLOCK>(s);
        FOR_COLS(j, D) pg[j] += pgy[j] - nf(expf_cr(py[j]), sf);
    }
}

template <bool BLOCK>
__global__ void k_l2_normalize(float *y, float *norms, const float *x, size_t rows, int D, float eps)
{
    FOR_ROWS(r, rows)
    {
        const float *px = x + r * (size_t)D;
        float *py = y + r * (size_t)D;
        double ss = 0;
        FOR_COLS(j, D) ss += (double)px[j] * px[j];
        ss = grp_sum<BLOCK>(ss);
        const float n = (float)sqrt(ss);
        if (grp_lane<BLOCK>() == 0) norms[r] = n;
        const float den = n > eps ? n : eps;
        FOR_COLS(j, D) py[j] = px[j] / den;
    }
}

template <bool BLOCK>
__global__ void k_l2_normalize_bwd(float *gx, const float *y, const float *gy, const float *norms,
                                   size_t rows, int D, float eps)
{
    FOR_ROWS(r, rows)
    {
        const float *py = y + r * (size_t)D, *pgy = gy + r * (size_t)D;
        float *pg = gx + r * (size_t)D;
        const float n = norms[r]; // the same in the whole group: the branch is uniform
        if (n >= eps && n > 0) {
            double dot = 0;
            FOR_COLS(j, D) dot += (double)py[j] * pgy[j];
            const float d = (float)grp_sum<BLOCK>(dot), inv = 1.f / n;
            FOR_COLS(j, D) pg[j] += nf(pgy[j] - nf(py[j], d), inv);
        } else {
            FOR_COLS(j, D) pg[j] += pgy[j] / eps;
        }
    }
}

} // namespace

// A row kernel over [rows, D]: a warp per row for short rows (8 rows per
// block), else a block per row.
#define ROW_LAUNCH(kernel, rows, D, ...)                                                        \
    do {                                                                                      \
        if ((D) <= WARP_ROW_MAX)                                                              \
            kernel<false><<<nn_grid((rows), THREADS / 32), THREADS, 0, NN_STREAM>>>(__VA_ARGS__); \
        else                                                                                  \
            kernel<true><<<nn_grid((rows), 1), THREADS, 0, NN_STREAM>>>(__VA_ARGS__);        \
        NN_CUDA_LAUNCHED();                                                                   \
    } while (0)

extern "C" void nn_cuda_sum_axis(float *y, const float *x, size_t outer, int n, size_t inner, float s)
{
    if (!outer || !inner) return;
    if (inner == 1) {
        ROW_LAUNCH(k_sum_rows, outer, n, y, x, outer, n, s);
    } else {
        const size_t ntiles = outer * ((inner + TILE_X - 1) / TILE_X);
        k_sum_tiled<<<nn_grid(ntiles, 1), dim3(TILE_X, TILE_Y), 0, NN_STREAM>>>(y, x, outer, n,
                                                                                 inner, s);
        NN_CUDA_LAUNCHED();
    }
}

extern "C" void nn_cuda_sum_axis_bwd(float *gx, const float *gy, size_t outer, int n, size_t inner,
                                     float s)
{
    const size_t total = outer * (size_t)n * inner;
    if (!total) return;
    k_sum_axis_bwd<<<nn_grid(total), THREADS, 0, NN_STREAM>>>(gx, gy, outer, n, inner, s);
    NN_CUDA_LAUNCHED();
}

extern "C" void nn_cuda_max_axis(float *y, int *arg, const float *x, size_t outer, int n, size_t inner)
{
    if (!outer || !inner || n <= 0) return;
    if (inner == 1) {
        ROW_LAUNCH(k_max_rows, outer, n, y, arg, x, outer, n);
    } else {
        const size_t ntiles = outer * ((inner + TILE_X - 1) / TILE_X);
        k_max_tiled<<<nn_grid(ntiles, 1), dim3(TILE_X, TILE_Y), 0, NN_STREAM>>>(y, arg, x, outer,
                                                                                 n, inner);
        NN_CUDA_LAUNCHED();
    }
}

extern "C" void nn_cuda_max_axis_bwd(float *gx, const float *gy, const int *arg, size_t outer, int n,
                                     size_t inner)
{
    if (!outer || !inner) return;
    k_max_axis_bwd<<<nn_grid(outer * inner), THREADS, 0, NN_STREAM>>>(gx, gy, arg, outer, n, inner);
    NN_CUDA_LAUNCHED();
}

extern "C" void nn_cuda_sum_all(float *y, const float *x, size_t n, int mean)
{
    // runs for n == 0 too: the sum is 0, the mean 0/0 = NaN, as on the CPU
    unsigned nb = nn_grid(n, THREADS);
    if (nb > SUM_ALL_BLOCKS) nb = SUM_ALL_BLOCKS;
    double *part = (double *)nn_cuda_alloc(nb * sizeof(double));
    k_sum_all_part<<<nb, THREADS, 0, NN_STREAM>>>(part, x, n);
    NN_CUDA_LAUNCHED();
    k_sum_all_finish<<<1, THREADS, 0, NN_STREAM>>>(y, part, nb, n, mean);
    NN_CUDA_LAUNCHED();
    nn_cuda_free(part);
}

extern "C" void nn_cuda_sum_all_bwd(float *gx, const float *gy, float s, size_t n)
{
    if (!n) return;
    k_sum_all_bwd<<<nn_grid(n), THREADS, 0, NN_STREAM>>>(gx, gy, s, n);
    NN_CUDA_LAUNCHED();
}

extern "C" void nn_cuda_logsumexp(float *y, const float *x, size_t rows, int D)
{
    if (!rows) return;
    ROW_LAUNCH(k_logsumexp, rows, D, y, x, rows, D);
}

extern "C" void nn_cuda_logsumexp_bwd(float *gx, const float *x, const float *y, const float *gy,
                                      size_t rows, int D)
{
    const size_t total = rows * (size_t)D;
    if (!total) return;
    k_logsumexp_bwd<<<nn_grid(total), THREADS, 0, NN_STREAM>>>(gx, x, y, gy, rows, D);
    NN_CUDA_LAUNCHED();
}

extern "C" void nn_cuda_softmax(float *y, const float *x, size_t rows, int D)
{
    if (!rows) return;
    ROW_LAUNCH(k_softmax, rows, D, y, x, rows, D);
}

extern "C" void nn_cuda_softmax_bwd(float *gx, const float *y, const float *gy, size_t rows, int D)
{
    if (!rows) return;
    ROW_LAUNCH(k_softmax_bwd, rows, D, gx, y, gy, rows, D);
}

extern "C" void nn_cuda_log_softmax(float *y, const float *x, size_t rows, int D)
{
    if (!rows) return;
    ROW_LAUNCH(k_log_softmax, rows, D, y, x, rows, D);
}

extern "C" void nn_cuda_log_softmax_bwd(float *gx, const float *y, const float *gy, size_t rows,
                                        int D)
{
    if (!rows) return;
    ROW_LAUNCH(k_log_softmax_bwd, rows, D, gx, y, gy, rows, D);
}

extern "C" void nn_cuda_l2_normalize(float *y, float *norms, const float *x, size_t rows, int D,
                                     float eps)
{
    if (!rows) return;
    ROW_LAUNCH(k_l2_normalize, rows, D, y, norms, x, rows, D, eps);
}

extern "C" void nn_cuda_l2_normalize_bwd(float *gx, const float *y, const float *gy,
                                         const float *norms, size_t rows, int D, float eps)
{
    if (!rows) return;
    ROW_LAUNCH(k_l2_normalize_bwd, rows, D, gx, y, gy, norms, rows, D, eps);
}
