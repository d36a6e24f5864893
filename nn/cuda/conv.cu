// conv2d on the GPU through cuDNN (API, precisions and the caches in k_conv.h).
//
// Per shape (a `plan`) the descriptors are made once and the algorithms of
// each direction are ranked once, on the first use:
//  - default: cuDNN's heuristic (cudnnGet*Algorithm_v7: no kernels run, no
//    host synchronisation), in cuDNN's order, as PyTorch does with
//    torch.backends.cudnn.benchmark = False;
//  - benchmark mode (nn_cuda_set_cudnn_benchmark(1), NCMI_CUDNN_BENCHMARK=1,
//    like torch.backends.cudnn.benchmark = True): cudnnFind*Ex times every
//    algorithm on this shape (on scratch outputs) and ranks them by time.
// The candidates kept are those whose status is success and whose workspace
// query succeeds; those needing at most ws_preferred() bytes (an eighth of
// the free device memory at the first plan, between 256 MiB and 2 GiB) come
// first. For fp32 without TF32 they run with CUDNN_FMA_MATH (no tensor-core
// rounding). In exact mode (nn_cuda_set_conv_exact(1), NCMI_CONV_EXACT=1;
// off by default) the algorithms that sum the products directly (GEMM-like)
// come before the FFT and Winograd ones, whose transforms round more: fp32
// results then match the CPU reference to fp32 rounding. If cuDNN refuses to
// run a candidate (a status returned before any kernel is queued), the next
// one is used from then on for that shape. NCMI_CUDNN_LOG=1 prints each
// plan's choice on stderr.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mutex>
#include <vector>

#include "check.cuh"
#include "k_conv.h"

extern "C" {
#include "../error.h"
}

#if NCMI_HAVE_CUDNN

namespace {

// ---- fp32 bias ----

// y [N,Co,P] += b[co]
__global__ void k_bias_add(float *y, const float *b, int Co, size_t P, size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        y[i] += b[(i / P) % (size_t)Co];
}

// db[co] += sum over n, q of dy[n,co,q]: one block (256 threads) per channel,
// double partial sums (the CPU sums each image in float, then in double).
__global__ void k_bias_grad(const float *dy, float *db, int N, int Co, size_t P)
{
    __shared__ double part[256];
    int co = blockIdx.x;
    double acc = 0;
    for (int n = 0; n < N; n++) {
        const float *d = dy + ((size_t)n * Co + co) * P;
        for (size_t q = threadIdx.x; q < P; q += blockDim.x) acc += d[q];
    }
    part[threadIdx.x] = acc;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if ((int)threadIdx.x < s) part[threadIdx.x] += part[threadIdx.x + s];
        __syncthreads();
    }
    if (threadIdx.x == 0) db[co] += (float)part[0];
}

// ---- half precision layout conversions ----

__device__ inline void put(__half *p, float v) { *p = __float2half_rn(v); }
__device__ inline void put(__nv_bfloat16 *p, float v) { *p = __float2bfloat16_rn(v); }
__device__ inline float get(const __half *p) { return __half2float(*p); }
__device__ inline float get(const __nv_bfloat16 *p) { return __bfloat162float(*p); }

// Tiled transposes: a tile goes through shared memory so that both the read
// and the write are coalesced.

// x [N,C,HW] fp32 -> xh [N,HW,Cp] half; channels C..Cp-1 are 0. A tile is
// 64 channels x 32 positions (block (32, 8), grid (ceil(HW/32), ceil(Cp/64),
// N)): a warp reads 32 consecutive floats of one channel, and writes 64
// consecutive channels of one position as 32 pairs (128 bytes). Cp is a
// multiple of 8, so a pair never straddles the end of a row.
__device__ inline void put2(__half *p, float a, float b) { *(__half2 *)p = __floats2half2_rn(a, b); }
__device__ inline void put2(__nv_bfloat16 *p, float a, float b) { *(__nv_bfloat162 *)p = __floats2bfloat162_rn(a, b); }

template <typename T>
__global__ void k_nchw_to_nhwc(const float *x, T *xh, int C, int Cp, int HW)
{
    __shared__ float tile[64][33];
    int p0 = blockIdx.x * 32, c0 = blockIdx.y * 64, n = blockIdx.z;
    const float *xn = x + (size_t)n * C * HW;
    T *hn = xh + (size_t)n * HW * Cp;
    int pp = p0 + threadIdx.x;
#pragma unroll
    for (int c = threadIdx.y; c < 64; c += 8) {
        int cc = c0 + c;
        tile[c][threadIdx.x] = (cc < C && pp < HW) ? xn[(size_t)cc * HW + pp] : 0.f;
    }
    __syncthreads();
    int cc = c0 + 2 * threadIdx.x;
    if (cc >= Cp) return;
#pragma unroll
    for (int p = threadIdx.y; p < 32; p += 8) {
        int q = p0 + p;
        if (q < HW) put2(hn + (size_t)q * Cp + cc, tile[2 * threadIdx.x][p], tile[2 * threadIdx.x + 1][p]);
    }
}

// yh [N,P,Kp] half -> y [N,Co,P] fp32 + b[co] (b may be NULL); channels
// Co..Kp-1 (padding) are dropped. 32x32 tiles: block (32, 8), grid
// (ceil(P/32), ceil(Co/32), N).
template <typename T>
__global__ void k_nhwc_to_nchw_bias(const T *yh, const float *b, float *y, int Co, int Kp, int P)
{
    __shared__ float tile[32][33];
    int p0 = blockIdx.x * 32, c0 = blockIdx.y * 32, n = blockIdx.z;
    const T *hn = yh + (size_t)n * P * Kp;
    float *yn = y + (size_t)n * Co * P;
    for (int p = threadIdx.y; p < 32; p += 8) {
        int pp = p0 + p, cc = c0 + threadIdx.x;
        tile[p][threadIdx.x] = (pp < P && cc < Co) ? get(hn + (size_t)pp * Kp + cc) : 0.f;
    }
    __syncthreads();
    for (int c = threadIdx.y; c < 32; c += 8) {
        int cc = c0 + c, pp = p0 + threadIdx.x;
        if (cc < Co && pp < P) yn[(size_t)cc * P + pp] = tile[threadIdx.x][c] + (b ? b[cc] : 0.f);
    }
}

// w [Co,C,kh,kw] fp32 -> wh [Kp,kh,kw,Cp] half (cuDNN's NHWC filter layout);
// padded filters and channels are 0. Element i = ((k*kh + r)*kw + s)*Cp + c.
template <typename T>
__global__ void k_weight_to_nhwc(const float *w, T *wh, int Co, int C, int kh, int kw, int Kp, int Cp)
{
    size_t n = (size_t)Kp * kh * kw * Cp;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        int c = (int)(i % (size_t)Cp);
        size_t q = i / (size_t)Cp;
        int s = (int)(q % (size_t)kw);
        q /= (size_t)kw;
        int r = (int)(q % (size_t)kh);
        int k = (int)(q / (size_t)kh);
        float v = (k < Co && c < C) ? w[(((size_t)k * C + c) * kh + r) * kw + s] : 0.f;
        put(wh + i, v);
    }
}

// ---- plans ----

enum { PREC_FP32 = 0, PREC_BF16 = 1, PREC_FP16 = 2 };
const int MAX_ALGOS = 16;

struct plan_key {
    int N, C, H, W, Co, kh, kw, Ho, Wo, stride, pad, dilation, groups, prec, tf32, find, exact;
};

// modes (k_conv.h); -1: not yet read from the environment
int mode_find = -1, mode_exact = -1, mode_log = -1;

int env_flag(const char *name)
{
    const char *v = getenv(name);
    return v && *v && strcmp(v, "0") != 0;
}

void read_modes()
{
    if (mode_find < 0) mode_find = env_flag("NCMI_CUDNN_BENCHMARK");
    if (mode_exact < 0) mode_exact = env_flag("NCMI_CONV_EXACT");
    if (mode_log < 0) mode_log = env_flag("NCMI_CUDNN_LOG");
}

size_t ws_preferred()
{
    static size_t cap = 0;
    if (!cap) {
        size_t fr = 0, tot = 0;
        if (cudaMemGetInfo(&fr, &tot) != cudaSuccess) fr = 0;
        cap = fr / 8;
        if (cap < ((size_t)256 << 20)) cap = (size_t)256 << 20;
        if (cap > ((size_t)2 << 30)) cap = (size_t)2 << 30;
    }
    return cap;
}

// Candidate algorithms of one direction, best first; cur is the one in use.
struct algo_list {
    int n, cur;
    int algo[MAX_ALGOS];
    cudnnMathType_t math[MAX_ALGOS];
    size_t ws[MAX_ALGOS];
};

struct plan {
    plan_key key;
    int Cp, Kp; // channels as cuDNN sees them (padded to 8 in half precision)
    cudnnTensorDescriptor_t x, y;
    cudnnFilterDescriptor_t w;
    cudnnConvolutionDescriptor_t conv;
    bool fwd_ready, bwd_ready;
    algo_list fwd, bwd_data, bwd_filter;
};

std::mutex mu; // guards plans, the half weights and the descriptors' math type
std::vector<plan *> plans;

cudnnHandle_t handle() { return (cudnnHandle_t)nn_cuda_cudnn(); }

const char *prec_name(int prec) { return prec == PREC_BF16 ? "bf16" : prec == PREC_FP16 ? "fp16" : "fp32"; }

char *describe(const plan_key *k, char *buf, size_t n)
{
    snprintf(buf, n, "x [%d,%d,%d,%d], w [%d,%d,%d,%d], stride %d, padding %d, dilation %d, groups %d, %s%s",
             k->N, k->C, k->H, k->W, k->Co, k->C / k->groups, k->kh, k->kw, k->stride, k->pad,
             k->dilation, k->groups, prec_name(k->prec), k->tf32 ? " (TF32)" : "");
    return buf;
}

int round8(int c) { return (c + 7) / 8 * 8; }

plan *get_plan(const nn_cuda_conv_shape *s, int prec)
{
    plan_key k;
    memset(&k, 0, sizeof k);
    k.N = s->N, k.C = s->C, k.H = s->H, k.W = s->W, k.Co = s->Co, k.kh = s->kh, k.kw = s->kw;
    k.Ho = s->Ho, k.Wo = s->Wo, k.stride = s->stride, k.pad = s->pad, k.dilation = s->dilation;
    k.groups = s->groups, k.prec = prec, k.tf32 = prec == PREC_FP32 && nn_cuda_tf32();
    read_modes();
    k.find = mode_find, k.exact = mode_exact;
    for (plan *p : plans)
        if (memcmp(&p->key, &k, sizeof k) == 0) return p;

    plan *p = new plan();
    p->key = k;
    NN_GPU_CHECK(cudnnCreateTensorDescriptor(&p->x));
    NN_GPU_CHECK(cudnnCreateTensorDescriptor(&p->y));
    NN_GPU_CHECK(cudnnCreateFilterDescriptor(&p->w));
    NN_GPU_CHECK(cudnnCreateConvolutionDescriptor(&p->conv));
    if (prec == PREC_FP32) {
        p->Cp = k.C, p->Kp = k.Co;
        NN_GPU_CHECK(cudnnSetTensor4dDescriptor(p->x, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, k.N, k.C, k.H, k.W));
        NN_GPU_CHECK(cudnnSetTensor4dDescriptor(p->y, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, k.N, k.Co, k.Ho, k.Wo));
        NN_GPU_CHECK(cudnnSetFilter4dDescriptor(p->w, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW, k.Co, k.C / k.groups,
                                                k.kh, k.kw));
    } else {
        cudnnDataType_t dt = prec == PREC_BF16 ? CUDNN_DATA_BFLOAT16 : CUDNN_DATA_HALF;
        p->Cp = round8(k.C), p->Kp = round8(k.Co);
        NN_GPU_CHECK(cudnnSetTensor4dDescriptor(p->x, CUDNN_TENSOR_NHWC, dt, k.N, p->Cp, k.H, k.W));
        NN_GPU_CHECK(cudnnSetTensor4dDescriptor(p->y, CUDNN_TENSOR_NHWC, dt, k.N, p->Kp, k.Ho, k.Wo));
        NN_GPU_CHECK(cudnnSetFilter4dDescriptor(p->w, dt, CUDNN_TENSOR_NHWC, p->Kp, p->Cp, k.kh, k.kw));
    }
    // fp32 accumulation in every precision
    NN_GPU_CHECK(cudnnSetConvolution2dDescriptor(p->conv, k.pad, k.pad, k.stride, k.stride, k.dilation,
                                                 k.dilation, CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
    NN_GPU_CHECK(cudnnSetConvolutionGroupCount(p->conv, k.groups));
    NN_GPU_CHECK(cudnnSetConvolutionMathType(p->conv, prec != PREC_FP32 ? CUDNN_TENSOR_OP_MATH
                                                      : k.tf32           ? CUDNN_DEFAULT_MATH
                                                                         : CUDNN_FMA_MATH));
    int on, oc, oh, ow;
    NN_GPU_CHECK(cudnnGetConvolution2dForwardOutputDim(p->conv, p->x, p->w, &on, &oc, &oh, &ow));
    char d[320];
    NCMI_CHECK(on == k.N && oc == p->Kp && oh == k.Ho && ow == k.Wo,
               "conv2d: %s: cuDNN computes an output of [%d,%d,%d,%d], ncmi [%d,%d,%d,%d]",
               describe(&k, d, sizeof d), on, oc, oh, ow, k.N, p->Kp, k.Ho, k.Wo);
    plans.push_back(p);
    return p;
}

// Fills L from cuDNN's ranked perf results (see the top of this file);
// ws_of(algo, &bytes) is the workspace query of the direction.
// direct(algo) says whether an algorithm sums the products directly.
template <typename Perf, typename DirectFn, typename WsFn>
void fill_list(algo_list *L, const plan *p, const char *dir, const Perf *perf, int n, DirectFn direct,
               WsFn ws_of)
{
    bool strict = p->key.prec == PREC_FP32 && !p->key.tf32;
    bool prefer_direct = p->key.exact && !p->key.tf32;
    size_t ws_pref = ws_preferred();
    L->n = L->cur = 0;
    // pass = rank of a candidate: 2 for a transform algorithm (exact mode,
    // unless TF32), plus 1 for a workspace above ws_pref
    for (int pass = 0; pass < 4; pass++)
        for (int i = 0; i < n && L->n < MAX_ALGOS; i++) {
            if (perf[i].status != CUDNN_STATUS_SUCCESS) continue;
            cudnnMathType_t math = perf[i].mathType;
            if (strict) {
                if (math == CUDNN_TENSOR_OP_MATH || math == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION) continue;
                math = CUDNN_FMA_MATH; // an entry reported as DEFAULT_MATH too: TF32 is off
            }
            NN_GPU_CHECK(cudnnSetConvolutionMathType(p->conv, math));
            size_t ws = 0;
            if (ws_of((int)perf[i].algo, &ws) != CUDNN_STATUS_SUCCESS) continue;
            int rank = (prefer_direct && !direct(perf[i].algo) ? 2 : 0) + (ws > ws_pref ? 1 : 0);
            if (rank != pass) continue;
            L->algo[L->n] = (int)perf[i].algo;
            L->math[L->n] = math;
            L->ws[L->n] = ws;
            L->n++;
        }
    char d[320];
    NCMI_CHECK(L->n > 0, "conv2d: %s: cuDNN offers no %s algorithm%s", describe(&p->key, d, sizeof d), dir,
               strict ? " with FMA (non-TF32) math" : "");
    if (mode_log) {
        fprintf(stderr, "ncmi: cudnn %s %s [%s]:", p->key.find ? "benchmark" : "heuristic", dir,
                describe(&p->key, d, sizeof d));
        for (int i = 0; i < L->n; i++)
            fprintf(stderr, " %d/%s/%.0fMiB", L->algo[i],
                    L->math[i] == CUDNN_FMA_MATH ? "fma" : L->math[i] == CUDNN_DEFAULT_MATH ? "default" : "tensor",
                    L->ws[i] / 1048576.0);
        fprintf(stderr, "\n");
    }
}

// the plan's own math type (fill_list changes the descriptor's while it ranks)
cudnnMathType_t base_math(const plan *p)
{
    return p->key.prec != PREC_FP32 ? CUDNN_TENSOR_OP_MATH : p->key.tf32 ? CUDNN_DEFAULT_MATH : CUDNN_FMA_MATH;
}

// x, w: the inputs (cuDNN's layout); y: an output buffer it may overwrite
void choose_fwd(plan *p, const void *x, const void *w, void *y)
{
    cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
    int n = 0;
    NN_GPU_CHECK(cudnnSetConvolutionMathType(p->conv, base_math(p)));
    if (p->key.find) {
        size_t wsb = ws_preferred();
        NN_GPU_CHECK(cudnnFindConvolutionForwardAlgorithmEx(handle(), p->x, x, p->w, w, p->conv, p->y, y,
                                                            CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &n, perf,
                                                            nn_cuda_workspace(wsb), wsb));
    } else {
        NN_GPU_CHECK(cudnnGetConvolutionForwardAlgorithm_v7(handle(), p->x, p->w, p->conv, p->y,
                                                            CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &n, perf));
    }
    auto direct = [](cudnnConvolutionFwdAlgo_t a) {
        return a == CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM || a == CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM ||
               a == CUDNN_CONVOLUTION_FWD_ALGO_GEMM || a == CUDNN_CONVOLUTION_FWD_ALGO_DIRECT;
    };
    fill_list(&p->fwd, p, "forward", perf, n, direct, [p](int algo, size_t *ws) {
        return cudnnGetConvolutionForwardWorkspaceSize(handle(), p->x, p->w, p->conv, p->y,
                                                       (cudnnConvolutionFwdAlgo_t)algo, ws);
    });
    p->fwd_ready = true;
}

// fp32 only; x, w, dy: the inputs. Benchmark mode times on scratch dx, dw
// (the real ones accumulate, cudnnFind*Ex overwrites).
void choose_bwd(plan *p, const float *x, const float *w, const float *dy)
{
    const plan_key &k = p->key;
    float *scratch = nullptr;
    size_t wsb = ws_preferred();
    if (k.find) {
        size_t nx = (size_t)k.N * k.C * k.H * k.W, nw = (size_t)k.Co * (k.C / k.groups) * k.kh * k.kw;
        scratch = (float *)nn_cuda_alloc((nx > nw ? nx : nw) * sizeof(float));
    }
    cudnnConvolutionBwdDataAlgoPerf_t dperf[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
    int n = 0;
    NN_GPU_CHECK(cudnnSetConvolutionMathType(p->conv, base_math(p)));
    if (k.find)
        NN_GPU_CHECK(cudnnFindConvolutionBackwardDataAlgorithmEx(handle(), p->w, w, p->y, dy, p->conv, p->x, scratch,
                                                                 CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &n, dperf,
                                                                 nn_cuda_workspace(wsb), wsb));
    else
        NN_GPU_CHECK(cudnnGetConvolutionBackwardDataAlgorithm_v7(handle(), p->w, p->y, p->conv, p->x,
                                                                 CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &n, dperf));
    auto ddirect = [](cudnnConvolutionBwdDataAlgo_t a) {
        return a == CUDNN_CONVOLUTION_BWD_DATA_ALGO_0 || a == CUDNN_CONVOLUTION_BWD_DATA_ALGO_1;
    };
    fill_list(&p->bwd_data, p, "backward-data", dperf, n, ddirect, [p](int algo, size_t *ws) {
        return cudnnGetConvolutionBackwardDataWorkspaceSize(handle(), p->w, p->y, p->conv, p->x,
                                                            (cudnnConvolutionBwdDataAlgo_t)algo, ws);
    });
    cudnnConvolutionBwdFilterAlgoPerf_t fperf[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
    n = 0;
    NN_GPU_CHECK(cudnnSetConvolutionMathType(p->conv, base_math(p)));
    if (k.find)
        NN_GPU_CHECK(cudnnFindConvolutionBackwardFilterAlgorithmEx(
            handle(), p->x, x, p->y, dy, p->conv, p->w, scratch, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &n, fperf,
            nn_cuda_workspace(wsb), wsb));
    else
        NN_GPU_CHECK(cudnnGetConvolutionBackwardFilterAlgorithm_v7(handle(), p->x, p->y, p->conv, p->w,
                                                                   CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &n, fperf));
    auto fdirect = [](cudnnConvolutionBwdFilterAlgo_t a) {
        return a == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_0 || a == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1 ||
               a == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_3;
    };
    fill_list(&p->bwd_filter, p, "backward-filter", fperf, n, fdirect, [p](int algo, size_t *ws) {
        return cudnnGetConvolutionBackwardFilterWorkspaceSize(handle(), p->x, p->y, p->conv, p->w,
                                                              (cudnnConvolutionBwdFilterAlgo_t)algo, ws);
    });
    if (scratch) nn_cuda_free(scratch);
    p->bwd_ready = true;
}

// Runs run(algo, workspace, bytes) with L's current algorithm, moving on to
// the next candidate (for good) when cuDNN refuses one.
template <typename RunFn>
void run_list(algo_list *L, const plan *p, const char *dir, RunFn run)
{
    cudnnStatus_t st = CUDNN_STATUS_NOT_SUPPORTED;
    for (; L->cur < L->n; L->cur++) {
        NN_GPU_CHECK(cudnnSetConvolutionMathType(p->conv, L->math[L->cur]));
        size_t bytes = L->ws[L->cur];
        void *ws = bytes ? nn_cuda_workspace(bytes) : nullptr;
        st = run(L->algo[L->cur], ws, bytes);
        if (st == CUDNN_STATUS_SUCCESS) return;
    }
    char d[320];
    NCMI_CHECK(0, "conv2d: %s: every cuDNN %s algorithm failed, the last with %s", describe(&p->key, d, sizeof d),
               dir, cudnnGetErrorString(st));
}

// ---- half-precision weights, cached per weight buffer ----

struct half_weights {
    const float *src;
    int Co, C, kh, kw, bf16;
    void *buf; // [Kp,kh,kw,Cp]
};
std::vector<half_weights> wcache;

template <typename T>
const T *weights_half(const float *w, const nn_cuda_conv_shape *s, int bf16, int Kp, int Cp)
{
    half_weights *slot = nullptr;
    for (half_weights &e : wcache) {
        if (e.src != w) continue;
        if (e.Co == s->Co && e.C == s->C && e.kh == s->kh && e.kw == s->kw && e.bf16 == bf16) return (const T *)e.buf;
        nn_cuda_free(e.buf); // same buffer, other shape or type: replaced
        slot = &e;
        break;
    }
    if (!slot) {
        wcache.push_back(half_weights());
        slot = &wcache.back();
    }
    size_t n = (size_t)Kp * s->kh * s->kw * Cp;
    T *buf = (T *)nn_cuda_alloc(n * sizeof(T));
    k_weight_to_nhwc<T><<<nn_grid(n), 256, 0, NN_STREAM>>>(w, buf, s->Co, s->C, s->kh, s->kw, Kp, Cp);
    NN_CUDA_LAUNCHED();
    *slot = half_weights{w, s->Co, s->C, s->kh, s->kw, bf16, buf};
    return buf;
}

template <typename T>
void conv_half(plan *p, const nn_cuda_conv_shape *s, int bf16, const float *x, const float *w, const float *b,
               float *y)
{
    int Cp = p->Cp, Kp = p->Kp, HW = s->H * s->W, P = s->Ho * s->Wo;
    const T *wh = weights_half<T>(w, s, bf16, Kp, Cp);
    T *xh = (T *)nn_cuda_alloc((size_t)s->N * HW * Cp * sizeof(T));
    T *yh = (T *)nn_cuda_alloc((size_t)s->N * P * Kp * sizeof(T));
    dim3 block(32, 8);
    dim3 gx((unsigned)((HW + 31) / 32), (unsigned)((Cp + 63) / 64), (unsigned)s->N);
    k_nchw_to_nhwc<T><<<gx, block, 0, NN_STREAM>>>(x, xh, s->C, Cp, HW);
    NN_CUDA_LAUNCHED();
    if (!p->fwd_ready) choose_fwd(p, xh, wh, yh);
    float one = 1.f, zero = 0.f;
    run_list(&p->fwd, p, "forward", [&](int algo, void *ws, size_t bytes) {
        return cudnnConvolutionForward(handle(), &one, p->x, xh, p->w, wh, p->conv, (cudnnConvolutionFwdAlgo_t)algo,
                                       ws, bytes, &zero, p->y, yh);
    });
    dim3 gy((unsigned)((P + 31) / 32), (unsigned)((s->Co + 31) / 32), (unsigned)s->N);
    k_nhwc_to_nchw_bias<T><<<gy, block, 0, NN_STREAM>>>(yh, b, y, s->Co, Kp, P);
    NN_CUDA_LAUNCHED();
    nn_cuda_free(xh); // stream-ordered: safe right after queuing
    nn_cuda_free(yh);
}

} // namespace

extern "C" void nn_cuda_conv2d_fwd(const nn_cuda_conv_shape *s, const float *x, const float *w, const float *b,
                                   float *y)
{
    {
        std::lock_guard<std::mutex> lk(mu);
        plan *p = get_plan(s, PREC_FP32);
        if (!p->fwd_ready) choose_fwd(p, x, w, y);
        float one = 1.f, zero = 0.f;
        run_list(&p->fwd, p, "forward", [&](int algo, void *ws, size_t bytes) {
            return cudnnConvolutionForward(handle(), &one, p->x, x, p->w, w, p->conv,
                                           (cudnnConvolutionFwdAlgo_t)algo, ws, bytes, &zero, p->y, y);
        });
    }
    if (b) {
        size_t P = (size_t)s->Ho * s->Wo, n = (size_t)s->N * s->Co * P;
        k_bias_add<<<nn_grid(n), 256, 0, NN_STREAM>>>(y, b, s->Co, P, n);
        NN_CUDA_LAUNCHED();
    }
}

extern "C" void nn_cuda_conv2d_bwd(const nn_cuda_conv_shape *s, const float *x, const float *w, const float *dy,
                                   float *dx, float beta_dx, float *dw, float beta_dw, float *db)
{
    if (db) {
        k_bias_grad<<<(unsigned)s->Co, 256, 0, NN_STREAM>>>(dy, db, s->N, s->Co, (size_t)s->Ho * s->Wo);
        NN_CUDA_LAUNCHED();
    }
    if (!dx && !dw) return;
    std::lock_guard<std::mutex> lk(mu);
    plan *p = get_plan(s, PREC_FP32);
    if (!p->bwd_ready) choose_bwd(p, x, w, dy);
    float one = 1.f; // beta 1: gradients add into dx and dw; beta 0: overwrite
    if (dw)
        run_list(&p->bwd_filter, p, "backward-filter", [&](int algo, void *ws, size_t bytes) {
            return cudnnConvolutionBackwardFilter(handle(), &one, p->x, x, p->y, dy, p->conv,
                                                  (cudnnConvolutionBwdFilterAlgo_t)algo, ws, bytes, &beta_dw, p->w,
                                                  dw);
        });
    if (dx)
        run_list(&p->bwd_data, p, "backward-data", [&](int algo, void *ws, size_t bytes) {
            return cudnnConvolutionBackwardData(handle(), &one, p->w, w, p->y, dy, p->conv,
                                                (cudnnConvolutionBwdDataAlgo_t)algo, ws, bytes, &beta_dx, p->x, dx);
        });
}

extern "C" void nn_cuda_conv2d_fwd_half(const nn_cuda_conv_shape *s, int bf16, const float *x, const float *w,
                                        const float *b, float *y)
{
    NCMI_CHECK(s->groups == 1, "conv2d: half precision needs groups == 1 (got %d)", s->groups);
    NCMI_CHECK(s->N <= 65535, "conv2d: half precision takes at most 65535 images per call (got %d)", s->N);
    std::lock_guard<std::mutex> lk(mu);
    plan *p = get_plan(s, bf16 ? PREC_BF16 : PREC_FP16);
    if (bf16)
        conv_half<__nv_bfloat16>(p, s, 1, x, w, b, y);
    else
        conv_half<__half>(p, s, 0, x, w, b, y);
}

extern "C" void nn_cuda_set_cudnn_benchmark(int on)
{
    std::lock_guard<std::mutex> lk(mu);
    read_modes();
    mode_find = on != 0;
}
extern "C" int nn_cuda_cudnn_benchmark(void)
{
    std::lock_guard<std::mutex> lk(mu);
    read_modes();
    return mode_find;
}
extern "C" void nn_cuda_set_conv_exact(int on)
{
    std::lock_guard<std::mutex> lk(mu);
    read_modes();
    mode_exact = on != 0;
}
extern "C" int nn_cuda_conv_exact(void)
{
    std::lock_guard<std::mutex> lk(mu);
    read_modes();
    return mode_exact;
}

extern "C" void nn_cuda_conv_half_cache_clear(void)
{
    std::lock_guard<std::mutex> lk(mu);
    for (half_weights &e : wcache) nn_cuda_free(e.buf);
    wcache.clear();
}

#else // CUDA without cuDNN

#define NO_CUDNN() NCMI_CHECK(0, "conv2d on the GPU needs cuDNN: this ncmi was built with CUDA but without cudnn.h")

extern "C" void nn_cuda_conv2d_fwd(const nn_cuda_conv_shape *, const float *, const float *, const float *, float *)
{
    NO_CUDNN();
}
extern "C" void nn_cuda_conv2d_bwd(const nn_cuda_conv_shape *, const float *, const float *, const float *, float *,
                                   float, float *, float, float *)
{
    NO_CUDNN();
}
extern "C" void nn_cuda_conv2d_fwd_half(const nn_cuda_conv_shape *, int, const float *, const float *,
                                        const float *, float *)
{
    NO_CUDNN();
}
extern "C" void nn_cuda_conv_half_cache_clear(void) {}
extern "C" void nn_cuda_set_cudnn_benchmark(int) {}
extern "C" int nn_cuda_cudnn_benchmark(void) { return 0; }
extern "C" void nn_cuda_set_conv_exact(int) {}
extern "C" int nn_cuda_conv_exact(void) { return 0; }

#endif
