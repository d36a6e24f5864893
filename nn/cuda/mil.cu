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

// Seq conv forward (BWD false: out[c,i,j] = sum_t w[c,t] v[c,i+t-P,j]) and
// input gradient (BWD true: gv[c,r,j] += sum_t w[c,t] go[c,r-t+P,j]) by row
// tiles: block (c, tile of R rows) stages the R + 2P input rows it needs
// (zeros outside [0, np)) and w[c, :] in shared memory, then each thread sums
// its outputs' taps in t order, skipping rows outside the sequence (the same
// sums as k_seq_conv_fwd / k_seq_conv_bwd_v). Dynamic shared memory:
// (R + 2P) * dh + K floats.
template <bool BWD>
__global__ void k_seq_conv_tiled(float *out, const float *in, const float *w, int h, int np, int dh, int K, int R)
{
    extern __shared__ float smem[];
    const int P = K / 2, ntile = (np + R - 1) / R;
    float *sw = smem, *tile = smem + K;
    for (size_t b = blockIdx.x; b < (size_t)h * ntile; b += gridDim.x) {
        const int c = (int)(b / (size_t)ntile), r0 = (int)(b % (size_t)ntile) * R;
        const int rows = np - r0 < R ? np - r0 : R;
        const float *ic = in + (size_t)c * np * dh;
        __syncthreads(); // the previous tile has been used
        for (int t = (int)threadIdx.x; t < K; t += THREADS) sw[t] = w[(size_t)c * K + t];
        const size_t nload = (size_t)(rows + 2 * P) * dh;
        for (size_t k = threadIdx.x; k < nload; k += THREADS) {
            const int rr = r0 - P + (int)(k / (size_t)dh), j = (int)(k % (size_t)dh);
            tile[k] = rr >= 0 && rr < np ? ic[(size_t)rr * dh + j] : 0.f;
        }
        __syncthreads();
        float *oc = out + (size_t)c * np * dh;
        for (size_t k = threadIdx.x; k < (size_t)rows * dh; k += THREADS) {
            const int il = (int)(k / (size_t)dh), j = (int)(k % (size_t)dh), i = r0 + il;
            float acc = 0.f;
            for (int t = 0; t < K; t++) {
                const int off = BWD ? P - t : t - P; // input row i + off
                if (i + off < 0 || i + off >= np) continue;
                acc += sw[t] * tile[(size_t)(il + off + P) * dh + j];
            }
            if (BWD)
                oc[(size_t)i * dh + j] += acc;
            else
                oc[(size_t)i * dh + j] = acc;
        }
    }
}

// rows per tile of k_seq_conv_tiled within 48 KiB of shared memory (at most
// 64), or 0 when fewer than 8 fit (the untiled kernels then)
static int seq_conv_tile_rows(int dh, int K)
{
    const long budget = 12000 - K; // floats
    long R = budget / (dh > 0 ? dh : 1) - 2L * (K / 2);
    if (R > 64) R = 64;
    return R >= 8 ? (int)R : 0;
}

// Weight gradient of the seq conv, two passes (deterministic, no atomics).
// Pass 1: block (c, tap group tg, row chunk rc) with SC_TG taps t = tg*SC_TG ..;
// each thread takes the elements (i, j) of rows rc*rows_per_chunk .. of head c
// (k = tid, tid + THREADS, ...: consecutive threads, consecutive j), reads
// go[c,i,j] once and accumulates go * v[c, i+t-P, j] for the group's taps in
// registers (double); the block sums each tap's THREADS values in a fixed tree
// and writes part[((c*K + t) * nchunk + rc)]. Pass 2: one thread per (c, t) adds
// its nchunk partials in chunk order.
constexpr int SC_TG = 8;

__global__ void k_seq_conv_bwd_w_part(double *part, const float *go, const float *v, int h, int np, int dh, int K,
                                      int rows_per_chunk, int nchunk)
{
    __shared__ double sh[SC_TG][THREADS];
    const int P = K / 2, ntg = (K + SC_TG - 1) / SC_TG;
    const size_t nblk = (size_t)h * ntg * nchunk;
    for (size_t b = blockIdx.x; b < nblk; b += gridDim.x) {
        const int rc = (int)(b % (size_t)nchunk);
        const size_t ct = b / (size_t)nchunk;
        const int tg = (int)(ct % (size_t)ntg), c = (int)(ct / (size_t)ntg);
        const int t0 = tg * SC_TG;
        const int r0 = rc * rows_per_chunk;
        const int r1 = r0 + rows_per_chunk < np ? r0 + rows_per_chunk : np;
        const float *gc = go + (size_t)c * np * dh, *vc = v + (size_t)c * np * dh;
        double acc[SC_TG];
#pragma unroll
        for (int u = 0; u < SC_TG; u++) acc[u] = 0;
        const size_t cnt = r1 > r0 ? (size_t)(r1 - r0) * dh : 0;
        for (size_t k = threadIdx.x; k < cnt; k += THREADS) {
            const int i = r0 + (int)(k / (size_t)dh), j = (int)(k % (size_t)dh);
            const double g = gc[(size_t)i * dh + j];
#pragma unroll
            for (int u = 0; u < SC_TG; u++) {
                const int r = i + t0 + u - P;
                if (t0 + u < K && r >= 0 && r < np) acc[u] += g * (double)vc[(size_t)r * dh + j];
            }
        }
        __syncthreads(); // sh of the previous block index has been read
#pragma unroll
        for (int u = 0; u < SC_TG; u++) sh[u][threadIdx.x] = acc[u];
        __syncthreads();
        for (unsigned s2 = THREADS / 2; s2 > 0; s2 >>= 1) {
            if (threadIdx.x < s2)
#pragma unroll
                for (int u = 0; u < SC_TG; u++) sh[u][threadIdx.x] += sh[u][threadIdx.x + s2];
            __syncthreads();
        }
        if (threadIdx.x < SC_TG && t0 + (int)threadIdx.x < K)
            part[((size_t)c * K + t0 + threadIdx.x) * nchunk + rc] = sh[threadIdx.x][0];
    }
}

// out[e] += (float)(sum over r < nchunk of part[e * nchunk + r], in r order), e < n
__global__ void k_sum_parts_add(float *out, const double *part, size_t n, int nchunk)
{
    GRID_STRIDE(e, n)
    {
        const double *p = part + e * (size_t)nchunk;
        double s = 0;
        for (int r = 0; r < nchunk; r++) s += p[r];
        out[e] += (float)s;
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

// ---- PPEG, kernel size known at compile time (K = 1, 3, 5, 7: the op's K*K <= 64) ----
// Block (PG_C lanes = channels, PG_R rows): blockIdx.y the channel chunk,
// thread (lane, row) owns channel c = blockIdx.y*PG_C + lane and the cells
// blockIdx.x*PG_R + row, + gridDim.x*PG_R, ...; its channel's K*K weights are
// loaded once into registers; a warp reads one cell's 32 consecutive channels
// (coalesced). Same sums in the same order as the generic kernels above.
constexpr int PG_C = 32, PG_R = (int)THREADS / PG_C;

template <int K>
__global__ void k_ppeg_fwd_k(float *out, const float *acc, const float *x, const float *w, const float *b, int S,
                             int d)
{
    constexpr int P = K / 2;
    const int lane = (int)threadIdx.x % PG_C, row = (int)threadIdx.x / PG_C;
    const int c = (int)blockIdx.y * PG_C + lane;
    if (c >= d) return; // no block-wide sync below
    float wr[K * K];
#pragma unroll
    for (int t = 0; t < K * K; t++) wr[t] = w[(size_t)c * K * K + t];
    const float bc = b[c];
    if (blockIdx.x == 0 && row == 0) out[c] = acc[c]; // the class token
    const size_t cells = (size_t)S * S;
    for (size_t cell = (size_t)blockIdx.x * PG_R + row; cell < cells; cell += (size_t)gridDim.x * PG_R) {
        const int i = (int)(cell / (size_t)S), j = (int)(cell % (size_t)S);
        const size_t idx = (1 + cell) * d + c;
        float o = acc[idx] + bc;
#pragma unroll
        for (int u = 0; u < K; u++) {
            const int p = i + u - P;
            if (p < 0 || p >= S) continue;
#pragma unroll
            for (int v = 0; v < K; v++) {
                const int q = j + v - P;
                if (q < 0 || q >= S) continue;
                o += wr[u * K + v] * x[(size_t)(1 + (size_t)p * S + q) * d + c];
            }
        }
        out[idx] = o;
    }
}

template <int K>
__global__ void k_ppeg_bwd_x_k(float *gx, const float *go, const float *w, int S, int d)
{
    constexpr int P = K / 2;
    const int lane = (int)threadIdx.x % PG_C, row = (int)threadIdx.x / PG_C;
    const int c = (int)blockIdx.y * PG_C + lane;
    if (c >= d) return;
    float wr[K * K];
#pragma unroll
    for (int t = 0; t < K * K; t++) wr[t] = w[(size_t)c * K * K + t];
    const size_t cells = (size_t)S * S;
    for (size_t cell = (size_t)blockIdx.x * PG_R + row; cell < cells; cell += (size_t)gridDim.x * PG_R) {
        const int p = (int)(cell / (size_t)S), q = (int)(cell % (size_t)S);
        float a = 0.f;
#pragma unroll
        for (int u = 0; u < K; u++) {
            const int i = p - u + P;
            if (i < 0 || i >= S) continue;
#pragma unroll
            for (int v = 0; v < K; v++) {
                const int j = q - v + P;
                if (j < 0 || j >= S) continue;
                a += wr[u * K + v] * go[(size_t)(1 + (size_t)i * S + j) * d + c];
            }
        }
        gx[(1 + cell) * d + c] += a;
    }
}

// Weight and bias gradients, pass 1: block (cell chunk blockIdx.x of
// PG_R * PW_CELLS consecutive cells, channel chunk blockIdx.y); thread (lane,
// row) takes channel c and the cells chunk*PG_R*PW_CELLS + row + k*PG_R
// (k < PW_CELLS), reads each go once and accumulates all K*K taps and the
// bias in double registers. The PG_R rows of a channel are then added in row
// order through shared memory, tap by tap, into
// part[(chunk * (K*K+1) + t) * d + c] (t == K*K the bias). Pass 2
// (k_ppeg_wb_sum) adds the chunks in order.
constexpr int PW_CELLS = 32;

template <int K>
__global__ void k_ppeg_bwd_wb_part(double *part, const float *go, const float *x, int S, int d)
{
    constexpr int P = K / 2, T = K * K + 1;
    __shared__ double sh[THREADS];
    const int lane = (int)threadIdx.x % PG_C, row = (int)threadIdx.x / PG_C;
    const int c = (int)blockIdx.y * PG_C + lane;
    const size_t cells = (size_t)S * S, chunk = blockIdx.x;
    double a[T];
#pragma unroll
    for (int t = 0; t < T; t++) a[t] = 0;
    if (c < d) {
        const size_t c0 = chunk * (size_t)(PG_R * PW_CELLS);
        for (int k = 0; k < PW_CELLS; k++) {
            const size_t cell = c0 + (size_t)row + (size_t)k * PG_R;
            if (cell >= cells) break;
            const int i = (int)(cell / (size_t)S), j = (int)(cell % (size_t)S);
            const double g = go[(1 + cell) * d + c];
            a[K * K] += g;
#pragma unroll
            for (int u = 0; u < K; u++) {
                const int p = i + u - P;
                if (p < 0 || p >= S) continue;
#pragma unroll
                for (int v = 0; v < K; v++) {
                    const int q = j + v - P;
                    if (q >= 0 && q < S) a[u * K + v] += g * (double)x[(size_t)(1 + (size_t)p * S + q) * d + c];
                }
            }
        }
    }
#pragma unroll
    for (int t = 0; t < T; t++) {
        __syncthreads(); // the previous tap's sums have been read
        sh[threadIdx.x] = a[t];
        __syncthreads();
        if (row == 0 && c < d) {
            double s2 = 0;
            for (int r = 0; r < PG_R; r++) s2 += sh[r * PG_C + lane];
            part[(chunk * T + t) * (size_t)d + c] = s2;
        }
    }
}

// Pass 2: thread (t, c) adds part[(chunk * T + t) * d + c] over the chunks in
// order into gw[c, t] (t < K*K) or gb[c] (t == K*K); either may be NULL.
__global__ void k_ppeg_wb_sum(float *gw, float *gb, const double *part, int d, int K, int nchunk)
{
    const int T = K * K + 1;
    GRID_STRIDE(e, (size_t)T * d)
    {
        const int t = (int)(e / (size_t)d), c = (int)(e % (size_t)d);
        if (t < K * K ? !gw : !gb) continue;
        double s = 0;
        for (int r = 0; r < nchunk; r++) s += part[((size_t)r * T + t) * d + c];
        if (t == K * K)
            gb[c] += (float)s;
        else
            gw[(size_t)c * K * K + t] += (float)s;
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

// out = seq_conv(in) (forward: in = v) or its input gradient (BWD: in = the
// output gradient, out = gv, the kernel flipped): the tiled kernel when a
// tile fits in shared memory, else the plain one.
template <bool BWD>
static void seq_conv_launch(float *out, const float *in, const float *w, int h, int np, int dh, int K)
{
    const size_t n = (size_t)h * np * dh;
    if (!n) return;
    const int R = seq_conv_tile_rows(dh, K);
    if (R > 0) {
        const size_t shm = ((size_t)(R + 2 * (K / 2)) * dh + K) * sizeof(float);
        const size_t nblk = (size_t)h * ((np + R - 1) / R);
        k_seq_conv_tiled<BWD><<<blocks_for(nblk), THREADS, shm, NN_STREAM>>>(out, in, w, h, np, dh, K, R);
    } else if (BWD) {
        k_seq_conv_bwd_v<<<nn_grid(n), THREADS, 0, NN_STREAM>>>(out, in, w, h, np, dh, K);
    } else {
        k_seq_conv_fwd<<<nn_grid(n), THREADS, 0, NN_STREAM>>>(out, in, w, h, np, dh, K);
    }
    NN_CUDA_LAUNCHED();
}

extern "C" void nn_cuda_mil_seq_conv_fwd(float *out, const float *v, const float *w, int h, int np, int dh, int K)
{
    seq_conv_launch<false>(out, v, w, h, np, dh, K);
}

extern "C" void nn_cuda_mil_seq_conv_bwd_v(float *gv, const float *go, const float *w, int h, int np, int dh, int K)
{
    seq_conv_launch<true>(gv, go, w, h, np, dh, K);
}

extern "C" void nn_cuda_mil_seq_conv_bwd_w(float *gw, const float *go, const float *v, int h, int np, int dh, int K)
{
    if (h <= 0 || K <= 0) return;
    if (np <= 0 || dh <= 0) return; // empty sums: gw unchanged
    // about 8192 elements (32 per thread) per row chunk
    const int rows_per_chunk = dh >= 8192 ? 1 : 8192 / dh;
    const int nchunk = (np + rows_per_chunk - 1) / rows_per_chunk;
    const size_t n = (size_t)h * K;
    double *part = (double *)nn_cuda_alloc(n * (size_t)nchunk * sizeof(double));
    const size_t nblk = (size_t)h * ((K + SC_TG - 1) / SC_TG) * nchunk;
    k_seq_conv_bwd_w_part<<<blocks_for(nblk), THREADS, 0, NN_STREAM>>>(part, go, v, h, np, dh, K, rows_per_chunk,
                                                                      nchunk);
    NN_CUDA_LAUNCHED();
    k_sum_parts_add<<<nn_grid(n), THREADS, 0, NN_STREAM>>>(gw, part, n, nchunk);
    NN_CUDA_LAUNCHED();
    nn_cuda_free(part); // stream-ordered reuse
}

// grid of the PPEG kernels: (cell blocks, channel chunks)
static dim3 ppeg_grid(int S, int d)
{
    const size_t cells = (size_t)S * S;
    size_t bx = (cells + PG_R * 8 - 1) / (PG_R * 8); // about 8 cells per thread
    if (bx < 1) bx = 1;
    if (bx > 65535u * 16u) bx = 65535u * 16u;
    return dim3((unsigned)bx, (unsigned)((d + PG_C - 1) / PG_C));
}

extern "C" void nn_cuda_mil_ppeg_fwd(float *out, const float *acc, const float *x, const float *w, const float *b,
                                     int S, int d, int K)
{
    const size_t n = (size_t)(1 + (size_t)S * S) * d;
    if (!n) return;
    const dim3 gr = ppeg_grid(S, d);
    switch (K) {
    case 1: k_ppeg_fwd_k<1><<<gr, THREADS, 0, NN_STREAM>>>(out, acc, x, w, b, S, d); break;
    case 3: k_ppeg_fwd_k<3><<<gr, THREADS, 0, NN_STREAM>>>(out, acc, x, w, b, S, d); break;
    case 5: k_ppeg_fwd_k<5><<<gr, THREADS, 0, NN_STREAM>>>(out, acc, x, w, b, S, d); break;
    case 7: k_ppeg_fwd_k<7><<<gr, THREADS, 0, NN_STREAM>>>(out, acc, x, w, b, S, d); break;
    default: k_ppeg_fwd<<<nn_grid(n), THREADS, 0, NN_STREAM>>>(out, acc, x, w, b, S, d, K);
    }
    NN_CUDA_LAUNCHED();
}

extern "C" void nn_cuda_mil_ppeg_bwd_x(float *gx, const float *go, const float *w, int S, int d, int K)
{
    const size_t n = (size_t)S * S * d;
    if (!n) return;
    const dim3 gr = ppeg_grid(S, d);
    switch (K) {
    case 1: k_ppeg_bwd_x_k<1><<<gr, THREADS, 0, NN_STREAM>>>(gx, go, w, S, d); break;
    case 3: k_ppeg_bwd_x_k<3><<<gr, THREADS, 0, NN_STREAM>>>(gx, go, w, S, d); break;
    case 5: k_ppeg_bwd_x_k<5><<<gr, THREADS, 0, NN_STREAM>>>(gx, go, w, S, d); break;
    case 7: k_ppeg_bwd_x_k<7><<<gr, THREADS, 0, NN_STREAM>>>(gx, go, w, S, d); break;
    default: k_ppeg_bwd_x<<<nn_grid(n), THREADS, 0, NN_STREAM>>>(gx, go, w, S, d, K);
    }
    NN_CUDA_LAUNCHED();
}

extern "C" void nn_cuda_mil_ppeg_bwd_wb(float *gw, float *gb, const float *go, const float *x, int S, int d, int K)
{
    if (d <= 0 || (!gw && !gb)) return;
    if (K == 1 || K == 3 || K == 5 || K == 7) {
        const size_t cells = (size_t)S * S, per = (size_t)PG_R * PW_CELLS;
        const size_t nchunk = cells ? (cells + per - 1) / per : 1; // S == 0: one chunk of zeros
        if (nchunk > 0x7fffffffu) return;                          // not reachable with int S
        const int T = K * K + 1;
        double *part = (double *)nn_cuda_alloc(nchunk * (size_t)T * d * sizeof(double));
        const dim3 gr((unsigned)nchunk, (unsigned)((d + PG_C - 1) / PG_C));
        switch (K) {
        case 1: k_ppeg_bwd_wb_part<1><<<gr, THREADS, 0, NN_STREAM>>>(part, go, x, S, d); break;
        case 3: k_ppeg_bwd_wb_part<3><<<gr, THREADS, 0, NN_STREAM>>>(part, go, x, S, d); break;
        case 5: k_ppeg_bwd_wb_part<5><<<gr, THREADS, 0, NN_STREAM>>>(part, go, x, S, d); break;
        default: k_ppeg_bwd_wb_part<7><<<gr, THREADS, 0, NN_STREAM>>>(part, go, x, S, d); break;
        }
        NN_CUDA_LAUNCHED();
        k_ppeg_wb_sum<<<nn_grid((size_t)T * d), THREADS, 0, NN_STREAM>>>(gw, gb, part, d, K, (int)nchunk);
        NN_CUDA_LAUNCHED();
        nn_cuda_free(part);
        return;
    }
    const size_t nblk = (size_t)((d + PW_C - 1) / PW_C) * (size_t)(K * K + 1);
    k_ppeg_bwd_wb<<<blocks_for(nblk), THREADS, 0, NN_STREAM>>>(gw, gb, go, x, S, d, K);
    NN_CUDA_LAUNCHED();
}
