// CUDA twins of the MIL heads' own ops (declared in k_mil.h; the CPU
// references are mil/mil_ops.c). Plain kernels: grid-stride loops, one
// thread per output element, or one block per reduced element with a
// double-precision block sum (the CPU sums in double too).
#include "check.cuh"
#include "k_mil.h"

namespace {

constexpr unsigned THREADS = 256;

#define GRID_STRIDE(i, n)                                                                          \
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < (n); i += (size_t)gridDim.x * blockDim.x)

// sum of v over the block (THREADS threads); every thread gets the result
__device__ double block_sum(double v)
{
    __shared__ double sh[THREADS];
    __syncthreads(); // sh may still be read by a previous call
    sh[threadIdx.x] = v;
    __syncthreads();
    for (unsigned s = THREADS / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) sh[threadIdx.x] += sh[threadIdx.x + s];
        __syncthreads();
    }
    return sh[0];
}

__global__ void k_sigmax(float *y, const float *x, size_t rows, int D, float inv_t, float eps)
{
    for (size_t r = blockIdx.x; r < rows; r += gridDim.x) {
        const float *px = x + r * (size_t)D;
        float *py = y + r * (size_t)D;
        double s = 0;
        for (int n = threadIdx.x; n < D; n += THREADS) {
            const float sg = 1.f / (1.f + expf(-px[n] * inv_t));
            py[n] = sg;
            s += sg;
        }
        s = block_sum(s);
        const float inv = (float)(1.0 / (s + (double)eps));
        for (int n = threadIdx.x; n < D; n += THREADS) py[n] *= inv; // the elements this thread wrote
    }
}

__global__ void k_ema(float *a, const float *x, float d, size_t n)
{
    const float c = 1.f - d;
    GRID_STRIDE(i, n) a[i] = __fadd_rn(__fmul_rn(d, a[i]), __fmul_rn(c, x[i]));
}

// ---- TransMIL residual conv over the sequence ----

__global__ void k_seq_conv_fwd(float *out, const float *v, const float *w, int h, int np, int dh, int K)
{
    const size_t n = (size_t)h * np * dh;
    const int P = K / 2;
    GRID_STRIDE(idx, n)
    {
        const int j = (int)(idx % (size_t)dh);
        const size_t ci = idx / (size_t)dh;
        const int i = (int)(ci % (size_t)np), c = (int)(ci / (size_t)np);
        const float *vc = v + (size_t)c * np * dh;
        float acc = 0.f;
        for (int t = 0; t < K; t++) {
            const int r = i + t - P;
            if (r >= 0 && r < np) acc += w[(size_t)c * K + t] * vc[(size_t)r * dh + j];
        }
        out[idx] = acc;
    }
}

__global__ void k_seq_conv_bwd_v(float *gv, const float *go, const float *w, int h, int np, int dh, int K)
{
    const size_t n = (size_t)h * np * dh;
    const int P = K / 2;
    GRID_STRIDE(idx, n)
    {
        const int j = (int)(idx % (size_t)dh);
        const size_t ci = idx / (size_t)dh;
        const int r = (int)(ci % (size_t)np), c = (int)(ci / (size_t)np);
        const float *gc = go + (size_t)c * np * dh;
        float acc = 0.f;
        for (int t = 0; t < K; t++) { // out row i = r - t + P read v row r through tap t
            const int i = r - t + P;
            if (i >= 0 && i < np) acc += w[(size_t)c * K + t] * gc[(size_t)i * dh + j];
        }
        gv[idx] += acc;
    }
}

// one block per (c, t)
__global__ void k_seq_conv_bwd_w(float *gw, const float *go, const float *v, int h, int np, int dh, int K)
{
    const int P = K / 2;
    for (size_t bt = blockIdx.x; bt < (size_t)h * K; bt += gridDim.x) {
        const int c = (int)(bt / (size_t)K), t = (int)(bt % (size_t)K);
        const int lo = P - t > 0 ? P - t : 0, hi = np + P - t < np ? np + P - t : np;
        const float *gc = go + (size_t)c * np * dh, *vc = v + (size_t)c * np * dh;
        double acc = 0;
        const size_t cnt = hi > lo ? (size_t)(hi - lo) * dh : 0;
        for (size_t k = threadIdx.x; k < cnt; k += THREADS) {
            const int i = lo + (int)(k / (size_t)dh), j = (int)(k % (size_t)dh);
            acc += (double)gc[(size_t)i * dh + j] * vc[(size_t)(i + t - P) * dh + j];
        }
        acc = block_sum(acc);
        if (threadIdx.x == 0) gw[bt] += (float)acc;
    }
}

// ---- TransMIL PPEG conv on the token grid (channels last) ----

__global__ void k_ppeg_fwd(float *out, const float *acc, const float *x, const float *w, const float *b, int S,
                           int d, int K)
{
    const size_t n = (size_t)(1 + (size_t)S * S) * d;
    const int P = K / 2;
    GRID_STRIDE(idx, n)
    {
        const int c = (int)(idx % (size_t)d);
        const size_t row = idx / (size_t)d;
        if (row == 0) {
            out[idx] = acc[idx];
            continue;
        }
        const int i = (int)((row - 1) / (size_t)S), j = (int)((row - 1) % (size_t)S);
        float o = acc[idx] + b[c];
        const float *wc = w + (size_t)c * K * K;
        for (int u = 0; u < K; u++) {
            const int p = i + u - P;
            if (p < 0 || p >= S) continue;
            for (int v = 0; v < K; v++) {
                const int q = j + v - P;
                if (q < 0 || q >= S) continue;
                o += wc[u * K + v] * x[(size_t)(1 + (size_t)p * S + q) * d + c];
            }
        }
        out[idx] = o;
    }
}

__global__ void k_ppeg_bwd_x(float *gx, const float *go, const float *w, int S, int d, int K)
{
    const size_t n = (size_t)S * S * d;
    const int P = K / 2;
    GRID_STRIDE(k, n)
    {
        const int c = (int)(k % (size_t)d);
        const size_t cell = k / (size_t)d;
        const int p = (int)(cell / (size_t)S), q = (int)(cell % (size_t)S);
        const float *wc = w + (size_t)c * K * K;
        float acc = 0.f;
        for (int u = 0; u < K; u++) {
            const int i = p - u + P;
            if (i < 0 || i >= S) continue;
            for (int v = 0; v < K; v++) {
                const int j = q - v + P;
                if (j < 0 || j >= S) continue;
                acc += wc[u * K + v] * go[(size_t)(1 + (size_t)i * S + j) * d + c];
            }
        }
        gx[(1 + cell) * d + c] += acc;
    }
}

// Weight and bias gradients: block (t, chunk of PW_C channels), t < K*K the
// weight tap (u, v) = (t / K, t % K), t == K*K the bias. Thread (row, lane):
// channel chunk*PW_C + lane, cells row, row + PW_R, ... (consecutive lanes read
// consecutive channels: coalesced); the PW_R partial sums of a channel are
// added in a fixed order (deterministic).
constexpr int PW_C = 32, PW_R = (int)THREADS / PW_C;

__global__ void k_ppeg_bwd_wb(float *gw, float *gb, const float *go, const float *x, int S, int d, int K)
{
    __shared__ double sh[THREADS];
    const int P = K / 2, T = K * K + 1, nchunk = (d + PW_C - 1) / PW_C;
    const int lane = (int)threadIdx.x % PW_C, row = (int)threadIdx.x / PW_C;
    const size_t cells = (size_t)S * S;
    for (size_t bt = blockIdx.x; bt < (size_t)nchunk * T; bt += gridDim.x) {
        const int t = (int)(bt % (size_t)T), c = (int)(bt / (size_t)T) * PW_C + lane;
        if ((t < K * K && !gw) || (t == K * K && !gb)) continue; // uniform over the block
        const int u = t / K, v = t % K;
        double acc = 0;
        if (c < d)
            for (size_t cell = (size_t)row; cell < cells; cell += PW_R) {
                const double gv = go[(1 + cell) * d + c];
                if (t == K * K) {
                    acc += gv;
                    continue;
                }
                const int i = (int)(cell / (size_t)S), j = (int)(cell % (size_t)S);
                const int p = i + u - P, q = j + v - P;
                if (p >= 0 && p < S && q >= 0 && q < S) acc += gv * x[(size_t)(1 + (size_t)p * S + q) * d + c];
            }
        __syncthreads(); // sh of the previous (t, chunk) has been read
        sh[threadIdx.x] = acc;
        __syncthreads();
        if (row == 0 && c < d) {
            double sum = 0;
            for (int r = 0; r < PW_R; r++) sum += sh[r * PW_C + lane];
            if (t == K * K)
                gb[c] += (float)sum;
            else
                gw[(size_t)c * K * K + t] += (float)sum;
        }
    }
}

inline unsigned blocks_for(size_t n)
{
    if (n < 1) return 1;
    return n > 65535u * 16u ? 65535u * 16u : (unsigned)n;
}

} // namespace

extern "C" void nn_cuda_mil_sigmax(float *y, const float *x, size_t rows, int D, float inv_t, float eps)
{
    if (!rows || D <= 0) return;
    k_sigmax<<<blocks_for(rows), THREADS, 0, NN_STREAM>>>(y, x, rows, D, inv_t, eps);
    NN_CUDA_LAUNCHED();
}

extern "C" void nn_cuda_mil_ema(float *a, const float *x, float decay, size_t n)
{
    if (!n) return;
    k_ema<<<nn_grid(n), THREADS, 0, NN_STREAM>>>(a, x, decay, n);
    NN_CUDA_LAUNCHED();
}

extern "C" void nn_cuda_mil_seq_conv_fwd(float *out, const float *v, const float *w, int h, int np, int dh, int K)
{
    const size_t n = (size_t)h * np * dh;
    if (!n) return;
    k_seq_conv_fwd<<<nn_grid(n), THREADS, 0, NN_STREAM>>>(out, v, w, h, np, dh, K);
    NN_CUDA_LAUNCHED();
}

extern "C" void nn_cuda_mil_seq_conv_bwd_v(float *gv, const float *go, const float *w, int h, int np, int dh, int K)
{
    const size_t n = (size_t)h * np * dh;
    if (!n) return;
    k_seq_conv_bwd_v<<<nn_grid(n), THREADS, 0, NN_STREAM>>>(gv, go, w, h, np, dh, K);
    NN_CUDA_LAUNCHED();
}

extern "C" void nn_cuda_mil_seq_conv_bwd_w(float *gw, const float *go, const float *v, int h, int np, int dh, int K)
{
    if (h <= 0 || K <= 0) return;
    k_seq_conv_bwd_w<<<blocks_for((size_t)h * K), THREADS, 0, NN_STREAM>>>(gw, go, v, h, np, dh, K);
    NN_CUDA_LAUNCHED();
}

extern "C" void nn_cuda_mil_ppeg_fwd(float *out, const float *acc, const float *x, const float *w, const float *b,
                                     int S, int d, int K)
{
    const size_t n = (size_t)(1 + (size_t)S * S) * d;
    if (!n) return;
    k_ppeg_fwd<<<nn_grid(n), THREADS, 0, NN_STREAM>>>(out, acc, x, w, b, S, d, K);
    NN_CUDA_LAUNCHED();
}

extern "C" void nn_cuda_mil_ppeg_bwd_x(float *gx, const float *go, const float *w, int S, int d, int K)
{
    const size_t n = (size_t)S * S * d;
    if (!n) return;
    k_ppeg_bwd_x<<<nn_grid(n), THREADS, 0, NN_STREAM>>>(gx, go, w, S, d, K);
    NN_CUDA_LAUNCHED();
}

extern "C" void nn_cuda_mil_ppeg_bwd_wb(float *gw, float *gb, const float *go, const float *x, int S, int d, int K)
{
    if (d <= 0 || (!gw && !gb)) return;
    const size_t nblk = (size_t)((d + PW_C - 1) / PW_C) * (size_t)(K * K + 1);
    k_ppeg_bwd_wb<<<blocks_for(nblk), THREADS, 0, NN_STREAM>>>(gw, gb, go, x, S, d, K);
    NN_CUDA_LAUNCHED();
}
