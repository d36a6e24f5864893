// batchnorm2d, layernorm and dropout on the GPU (API in k_norm.h).
//
// Products that the CPU rounds before adding or subtracting are written with
// __fmul_rn (and the sums around them with __fadd_rn/__fsub_rn), which nvcc
// never contracts into an fma, so each formula rounds as the CPU's does.
#include <math.h>

#include "check.cuh"
#include "k_norm.h"

namespace {

#define GRID_STRIDE(i, n) \
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < (n); i += (size_t)gridDim.x * blockDim.x)

const int BN_THREADS = 256;

// The values of channel c of [N,C,HW] that this thread of the block takes:
// offset (w.n * C + c) * HW + w.j.
#define FOR_CHANNEL(w) \
    for (nn_chan_walk w = nn_chan_walk_at(threadIdx.x, blockDim.x, HW); w.n < (size_t)N; nn_chan_walk_next(&w))

const int LN_CHUNK = 64; // rows per partial sum of the layernorm parameter gradients

// Sum of v over the block (BN_THREADS threads), returned to every thread.
__device__ double block_sum(double v, double *sh)
{
    sh[threadIdx.x] = v;
    __syncthreads();
    for (int s = BN_THREADS / 2; s > 0; s >>= 1) {
        if ((int)threadIdx.x < s) sh[threadIdx.x] += sh[threadIdx.x + s];
        __syncthreads();
    }
    double r = sh[0];
    __syncthreads(); // sh is reused by the next call
    return r;
}

__device__ double warp_sum(double v)
{
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// ---- batchnorm2d: one block per channel ----

__global__ void k_bn_fwd(const float *x, const float *gamma, const float *beta, float *rm, float *rv, float *y,
                         float *stats, int N, int C, size_t HW, int training, float momentum, float eps)
{
    __shared__ double sh[BN_THREADS];
    int c = blockIdx.x;
    size_t M = (size_t)N * HW;
    float mean, rstd;
    if (training) {
        double s = 0;
        FOR_CHANNEL(w) s += x[(w.n * C + c) * HW + w.j];
        double m = block_sum(s, sh) / (double)M, ss = 0;
        FOR_CHANNEL(w) {
            double d = (double)x[(w.n * C + c) * HW + w.j] - m;
            ss += __dmul_rn(d, d);
        }
        ss = block_sum(ss, sh);
        mean = (float)m;
        rstd = (float)(1.0 / sqrt(ss / (double)M + (double)eps));
        if (threadIdx.x == 0) { // r = (1 - momentum) r + momentum stat, unbiased var
            float a = 1.f - momentum;
            rm[c] = __fadd_rn(__fmul_rn(a, rm[c]), __fmul_rn(momentum, (float)m));
            rv[c] = __fadd_rn(__fmul_rn(a, rv[c]), __fmul_rn(momentum, (float)(ss / (double)(M - 1))));
        }
    } else {
        mean = rm[c];
        rstd = (float)(1.0 / sqrt((double)rv[c] + (double)eps));
    }
    if (stats && threadIdx.x == 0) {
        stats[c] = mean;
        stats[C + c] = rstd;
    }
    float gm = gamma ? gamma[c] : 1.f, bt = beta ? beta[c] : 0.f;
    float k = __fmul_rn(gm, rstd), b0 = __fsub_rn(bt, __fmul_rn(mean, k)); // y = k*x + b0
    FOR_CHANNEL(w) {
        size_t o = (w.n * C + c) * HW + w.j;
        y[o] = __fadd_rn(__fmul_rn(k, x[o]), b0);
    }
}

__global__ void k_bn_bwd(const float *x, const float *gamma, const float *stats, const float *dy, float *dx,
                         float *dgamma, float *dbeta, int N, int C, size_t HW, int training)
{
    __shared__ double sh[BN_THREADS];
    int c = blockIdx.x;
    float mean = stats[c], rstd = stats[C + c];
    float gm = gamma ? gamma[c] : 1.f;
    double sdy = 0, sdyx = 0; // sum(dy), sum(dy * xhat)
    FOR_CHANNEL(w) {
        size_t o = (w.n * C + c) * HW + w.j;
        float d = dy[o];
        sdy += d;
        sdyx += __fmul_rn(__fmul_rn(d, __fsub_rn(x[o], mean)), rstd);
    }
    sdy = block_sum(sdy, sh);
    sdyx = block_sum(sdyx, sh);
    if (threadIdx.x == 0) {
        if (dgamma) dgamma[c] += (float)sdyx;
        if (dbeta) dbeta[c] += (float)sdy;
    }
    if (!dx) return;
    float k = __fmul_rn(gm, rstd);
    if (training) {
        // dx = gamma*rstd * (dy - mean(dy) - xhat * mean(dy*xhat))
        double M = (double)N * (double)HW;
        float mdy = (float)(sdy / M), mdyx = (float)(sdyx / M);
        FOR_CHANNEL(w) {
            size_t o = (w.n * C + c) * HW + w.j;
            float xh = __fmul_rn(__fsub_rn(x[o], mean), rstd);
            float t = __fsub_rn(__fsub_rn(dy[o], mdy), __fmul_rn(xh, mdyx));
            dx[o] = __fadd_rn(dx[o], __fmul_rn(k, t));
        }
    } else {
        FOR_CHANNEL(w) {
            size_t o = (w.n * C + c) * HW + w.j;
            dx[o] = __fadd_rn(dx[o], __fmul_rn(k, dy[o]));
        }
    }
}

// ---- layernorm: one warp per row ----

__global__ void k_ln_fwd(const float *x, const float *gamma, const float *beta, float *y, float *stats, size_t rows,
                         int D, float eps)
{
    int lane = threadIdx.x & 31;
    size_t warps = ((size_t)gridDim.x * blockDim.x) >> 5;
    for (size_t r = (blockIdx.x * (size_t)blockDim.x + threadIdx.x) >> 5; r < rows; r += warps) {
        const float *xp = x + r * D;
        double s = 0;
        for (int i = lane; i < D; i += 32) s += xp[i];
        double m = warp_sum(s) / D, ss = 0;
        for (int i = lane; i < D; i += 32) {
            double d = xp[i] - m;
            ss += __dmul_rn(d, d);
        }
        ss = warp_sum(ss);
        float mf = (float)m, rs = (float)(1.0 / sqrt(ss / D + (double)eps));
        if (stats && lane == 0) {
            stats[r] = mf;
            stats[rows + r] = rs;
        }
        float *yp = y + r * D;
        for (int i = lane; i < D; i += 32) {
            float v = __fmul_rn(__fsub_rn(xp[i], mf), rs);
            if (gamma) v = __fmul_rn(v, gamma[i]);
            if (beta) v = __fadd_rn(v, beta[i]);
            yp[i] = v;
        }
    }
}

__global__ void k_ln_bwd_dx(const float *x, const float *gamma, const float *stats, const float *dy, float *dx,
                            size_t rows, int D)
{
    int lane = threadIdx.x & 31;
    size_t warps = ((size_t)gridDim.x * blockDim.x) >> 5;
    for (size_t r = (blockIdx.x * (size_t)blockDim.x + threadIdx.x) >> 5; r < rows; r += warps) {
        const float *xp = x + r * D, *dp = dy + r * D;
        float *dxp = dx + r * D;
        float m = stats[r], rs = stats[rows + r];
        // dxhat = dy * gamma; dx = rstd * (dxhat - mean(dxhat) - xhat*mean(dxhat*xhat))
        double s1 = 0, s2 = 0;
        for (int i = lane; i < D; i += 32) {
            float dxh = gamma ? __fmul_rn(dp[i], gamma[i]) : dp[i];
            s1 += dxh;
            s2 += __fmul_rn(__fmul_rn(dxh, __fsub_rn(xp[i], m)), rs);
        }
        float m1 = (float)(warp_sum(s1) / D), m2 = (float)(warp_sum(s2) / D);
        for (int i = lane; i < D; i += 32) {
            float dxh = gamma ? __fmul_rn(dp[i], gamma[i]) : dp[i];
            float xh = __fmul_rn(__fsub_rn(xp[i], m), rs);
            float t = __fsub_rn(__fsub_rn(dxh, m1), __fmul_rn(xh, m2));
            dxp[i] = __fadd_rn(dxp[i], __fmul_rn(rs, t));
        }
    }
}

// Column sums of dy*xhat and dy over each chunk of LN_CHUNK rows: block
// (32 columns, 8 row lanes); lane y takes rows y, y+8, ... of the chunk and
// the lanes are added in order. pg/pb [chunks, D].
__global__ void k_ln_dparams_part(const float *x, const float *stats, const float *dy, float *pg, float *pb,
                                  size_t rows, int D, size_t chunks)
{
    __shared__ float sg[8][32], sb[8][32];
    int tx = threadIdx.x, ty = threadIdx.y;
    int i = blockIdx.x * 32 + tx;
    for (size_t ch = blockIdx.y; ch < chunks; ch += gridDim.y) {
        size_t r0 = ch * LN_CHUNK, r1 = r0 + LN_CHUNK < rows ? r0 + LN_CHUNK : rows;
        float g = 0.f, b = 0.f;
        if (i < D)
            for (size_t r = r0 + ty; r < r1; r += 8) {
                float d = dy[r * D + i];
                g = __fadd_rn(g, __fmul_rn(__fmul_rn(d, __fsub_rn(x[r * D + i], stats[r])), stats[rows + r]));
                b = __fadd_rn(b, d);
            }
        sg[ty][tx] = g;
        sb[ty][tx] = b;
        __syncthreads();
        if (ty == 0 && i < D) {
            float G = sg[0][tx], B = sb[0][tx];
            for (int k = 1; k < 8; k++) {
                G = __fadd_rn(G, sg[k][tx]);
                B = __fadd_rn(B, sb[k][tx]);
            }
            pg[ch * D + i] = G;
            pb[ch * D + i] = B;
        }
        __syncthreads(); // sg/sb are rewritten by the next chunk
    }
}

// dgamma[i] += sum over chunks of pg[., i] (in chunk order); likewise dbeta.
__global__ void k_ln_dparams_sum(const float *pg, const float *pb, float *dgamma, float *dbeta, size_t chunks, int D)
{
    GRID_STRIDE(i, (size_t)D)
    {
        if (dgamma) {
            float a = pg[i];
            for (size_t ch = 1; ch < chunks; ch++) a = __fadd_rn(a, pg[ch * D + i]);
            dgamma[i] = __fadd_rn(dgamma[i], a);
        }
        if (dbeta) {
            float a = pb[i];
            for (size_t ch = 1; ch < chunks; ch++) a = __fadd_rn(a, pb[ch * D + i]);
            dbeta[i] = __fadd_rn(dbeta[i], a);
        }
    }
}

// ---- dropout ----

__global__ void k_dropout_fwd(const float *x, uint8_t *mask, float *y, float scale, float p, uint64_t key,
                              size_t n)
{
    GRID_STRIDE(i, n)
    {
        const int keep = nn_dropout_keep(key, (uint64_t)i, p);
        if (mask) mask[i] = (uint8_t)keep;
        y[i] = keep ? __fmul_rn(x[i], scale) : 0.f;
    }
}

__global__ void k_dropout_bwd(const float *dy, const uint8_t *mask, float *dx, float scale, size_t n)
{
    GRID_STRIDE(i, n)
    {
        if (mask[i]) dx[i] = __fadd_rn(dx[i], __fmul_rn(dy[i], scale));
    }
}

} // namespace

extern "C" void nn_cuda_batchnorm2d_fwd(const float *x, const float *gamma, const float *beta, float *running_mean,
                                        float *running_var, float *y, float *stats, int N, int C, size_t HW,
                                        int training, float momentum, float eps)
{
    if (C <= 0) return;
    k_bn_fwd<<<(unsigned)C, BN_THREADS, 0, NN_STREAM>>>(x, gamma, beta, running_mean, running_var, y, stats, N, C,
                                                         HW, training, momentum, eps);
    NN_CUDA_LAUNCHED();
}

extern "C" void nn_cuda_batchnorm2d_bwd(const float *x, const float *gamma, const float *stats, const float *dy,
                                        float *dx, float *dgamma, float *dbeta, int N, int C, size_t HW, int training)
{
    if (C <= 0 || (!dx && !dgamma && !dbeta)) return;
    k_bn_bwd<<<(unsigned)C, BN_THREADS, 0, NN_STREAM>>>(x, gamma, stats, dy, dx, dgamma, dbeta, N, C, HW, training);
    NN_CUDA_LAUNCHED();
}

extern "C" void nn_cuda_layernorm_fwd(const float *x, const float *gamma, const float *beta, float *y, float *stats,
                                      size_t rows, int D, float eps)
{
    if (!rows || D <= 0) return;
    k_ln_fwd<<<nn_grid(rows * 32), 256, 0, NN_STREAM>>>(x, gamma, beta, y, stats, rows, D, eps);
    NN_CUDA_LAUNCHED();
}

extern "C" void nn_cuda_layernorm_bwd(const float *x, const float *gamma, const float *stats, const float *dy,
                                      float *dx, float *dgamma, float *dbeta, size_t rows, int D)
{
    if (!rows || D <= 0) return;
    if (dx) {
        k_ln_bwd_dx<<<nn_grid(rows * 32), 256, 0, NN_STREAM>>>(x, gamma, stats, dy, dx, rows, D);
        NN_CUDA_LAUNCHED();
    }
    if (!dgamma && !dbeta) return;
    size_t chunks = (rows + LN_CHUNK - 1) / LN_CHUNK;
    float *part = (float *)nn_cuda_alloc(2 * chunks * (size_t)D * sizeof(float));
    float *pg = part, *pb = part + chunks * (size_t)D;
    dim3 block(32, 8);
    dim3 grid((unsigned)((D + 31) / 32), (unsigned)(chunks < 65535 ? chunks : 65535));
    k_ln_dparams_part<<<grid, block, 0, NN_STREAM>>>(x, stats, dy, pg, pb, rows, D, chunks);
    NN_CUDA_LAUNCHED();
    k_ln_dparams_sum<<<nn_grid((size_t)D), 256, 0, NN_STREAM>>>(pg, pb, dgamma, dbeta, chunks, D);
    NN_CUDA_LAUNCHED();
    nn_cuda_free(part); // stream-ordered: safe right after queuing
}

extern "C" void nn_cuda_dropout_fwd(const float *x, uint8_t *mask, float *y, float scale, float p, uint64_t key,
                                    size_t n)
{
    if (!n) return;
    k_dropout_fwd<<<nn_grid(n), 256, 0, NN_STREAM>>>(x, mask, y, scale, p, key, n);
    NN_CUDA_LAUNCHED();
}

extern "C" void nn_cuda_dropout_bwd(const float *dy, const uint8_t *mask, float *dx, float scale, size_t n)
{
    if (!n) return;
    k_dropout_bwd<<<nn_grid(n), 256, 0, NN_STREAM>>>(dy, mask, dx, scale, n);
    NN_CUDA_LAUNCHED();
}
