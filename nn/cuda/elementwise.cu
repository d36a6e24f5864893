// CUDA twins of the elementwise ops (nn/ops_elementwise.c) and of the
// elementwise halves of the fused ops (nn/ops_fused.c); API in k_elementwise.h.
//
// The formulas are the CPU reference's, operation for operation. nvcc fuses
// a*b + c into one FMA by default while the CPU build (x86-64 baseline, no
// FMA) rounds the product first; where a product feeds an addition, nf()
// keeps it a separately rounded multiply. exp and erf are taken in double
// and rounded to float (expf_cr, erff_cr), which is the correctly rounded
// value; glibc's expf and erff give that value for 99.9% and 98% of inputs,
// CUDA's are only within 2 ulp, and cancellations (1 + erf(x/sqrt 2) for
// x < -2.5, 1 - sigmoid) would magnify such differences past 1e-5.
// So these kernels round like the CPU and differ from it only through tanhf,
// log1pf, logf, powf (a few ulp, no cancellation after them) and, in the
// broadcast reduction of wide gradients, the summation order.
#include "check.cuh"
#include "k_elementwise.h"

namespace {

// a * b rounded on its own (never contracted into an FMA with a following +/-)
__device__ __forceinline__ float nf(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ float expf_cr(float x) { return (float)exp((double)x); }
__device__ __forceinline__ float erff_cr(float x) { return (float)erf((double)x); }

#define GRID_STRIDE(i, n)                                                                  \
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < (n);               \
         i += (size_t)gridDim.x * blockDim.x)

// ---------------------------------------------------------------------------
// binary ops with broadcasting

struct bcast_fwd {
    int s[4];
    size_t sa[4], sb[4];
};

__device__ __forceinline__ float bin_apply(int kind, float a, float b)
{
    switch (kind) {
    case NN_CU_ADD: return a + b;
    case NN_CU_SUB: return a - b;
    case NN_CU_MUL: return a * b;
    default: return a / b;
    }
}

__global__ void k_binary_fwd(int kind, float *out, const float *a, const float *b, bcast_fwd p,
                             size_t n)
{
    GRID_STRIDE(i, n)
    {
        size_t r = i, oa = 0, ob = 0;
        for (int d = 3; d >= 0; d--) {
            size_t c = r % (size_t)p.s[d];
            r /= (size_t)p.s[d];
            oa += c * p.sa[d];
            ob += c * p.sb[d];
        }
        out[i] = bin_apply(kind, a[oa], b[ob]);
    }
}

// a, b and out of one shape (no broadcasting): no index arithmetic
__global__ void k_binary_same(int kind, float *out, const float *a, const float *b, size_t n)
{
    GRID_STRIDE(i, n) out[i] = bin_apply(kind, a[i], b[i]);
}

// d out / d self at one output element (upstream g), as the CPU writes it
__device__ __forceinline__ float bin_grad(int kind, int side, float g, float a, float b)
{
    switch (kind) {
    case NN_CU_ADD: return g;
    case NN_CU_SUB: return side ? -g : g;
    case NN_CU_MUL: return side ? nf(g, a) : nf(g, b);
    default: return side ? -g * a / (b * b) : g / b;
    }
}

// An input element for bin_grad: only MUL and DIV read the inputs (ADD and
// SUB ops declare that their backward reads no data, and under nn_backward's
// free_dead their inputs may be freed: a, b are then NULL)
__device__ __forceinline__ float bin_ld(int kind, const float *p, size_t i)
{
    return kind == NN_CU_MUL || kind == NN_CU_DIV ? p[i] : 0.f;
}

__global__ void k_binary_bwd_same(int kind, int side, float *g, const float *gout, const float *a,
                                  const float *b, size_t n)
{
    GRID_STRIDE(i, n) g[i] += bin_grad(kind, side, gout[i], bin_ld(kind, a, i), bin_ld(kind, b, i));
}

// Few output elements per input element: one thread per input element adds
// them into its gradient in increasing output order, as the CPU does.
__global__ void k_binary_bwd_serial(int kind, int side, float *g, const float *gout,
                                    const float *a, const float *b, nn_bcast_plan p, size_t n_in)
{
    const float *self = side ? b : a, *other = side ? a : b;
    GRID_STRIDE(e, n_in)
    {
        size_t o0, t0;
        nn_bcast_base(&p, e, &o0, &t0);
        const float xs = bin_ld(kind, self, e);
        float acc = g[e];
        for (size_t r = 0; r < p.cnt; r++) {
            size_t o, t;
            nn_bcast_step(&p, r, &o, &t);
            const float xo = bin_ld(kind, other, t0 + t), gj = gout[o0 + o];
            acc += side ? bin_grad(kind, 1, gj, xo, xs) : bin_grad(kind, 0, gj, xs, xo);
        }
        g[e] = acc;
    }
}

constexpr int RED_THREADS = 256;

// Block-wide sum of one double per thread (blockDim.x == RED_THREADS); every
// thread gets the total, summed in the same order.
__device__ double block_sum(double v)
{
    __shared__ double sh[RED_THREADS / 32];
    for (int off = 16; off; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
    __syncthreads(); // earlier readers of sh are done
    if ((threadIdx.x & 31) == 0) sh[threadIdx.x >> 5] = v;
    __syncthreads();
    double t = 0;
    for (int w = 0; w < RED_THREADS / 32; w++) t += sh[w];
    return t;
}

// Many output elements per input element: the set of input element e is cut
// into nsplit chunks; one block sums a chunk (double) into part[e*nsplit+k].
__global__ void k_binary_bwd_part(int kind, int side, double *part, const float *gout,
                                  const float *a, const float *b, nn_bcast_plan p, size_t n_in,
                                  size_t nsplit, size_t chunk)
{
    const float *self = side ? b : a, *other = side ? a : b;
    for (size_t q = blockIdx.x; q < n_in * nsplit; q += gridDim.x) {
        const size_t e = q / nsplit, k = q % nsplit;
        const size_t r0 = k * chunk, r1 = r0 + chunk < p.cnt ? r0 + chunk : p.cnt;
        size_t o0, t0;
        nn_bcast_base(&p, e, &o0, &t0);
        const float xs = bin_ld(kind, self, e);
        double acc = 0;
        for (size_t r = r0 + threadIdx.x; r < r1; r += blockDim.x) {
            size_t o, t;
            nn_bcast_step(&p, r, &o, &t);
            const float xo = bin_ld(kind, other, t0 + t), gj = gout[o0 + o];
            acc += side ? bin_grad(kind, 1, gj, xo, xs) : bin_grad(kind, 0, gj, xs, xo);
        }
        acc = block_sum(acc);
        if (threadIdx.x == 0) part[q] = acc;
    }
}

// g[e] += the sum of its nsplit partial sums (in order)
__global__ void k_binary_bwd_finish(float *g, const double *part, size_t n_in, size_t nsplit)
{
    GRID_STRIDE(e, n_in)
    {
        double t = 0;
        for (size_t k = 0; k < nsplit; k++) t += part[e * nsplit + k];
        g[e] += (float)t;
    }
}

// ---------------------------------------------------------------------------
// unary ops (the table of nn/ops_elementwise.c)

__device__ __forceinline__ float sigmoidf_stable(float x)
{
    if (x >= 0) return 1.f / (1.f + expf_cr(-x));
    float e = expf_cr(x);
    return e / (1.f + e);
}

__device__ __forceinline__ float gelu_phi(float x)
{
    return 0.5f * (1.f + erff_cr(x * 0.70710678118654752f));
}
__device__ __forceinline__ float gelu_pdf(float x)
{
    return 0.39894228040143268f * expf_cr(-0.5f * x * x);
}

constexpr float SOFTPLUS_THRESHOLD = 20.f;

template <int K> __device__ __forceinline__ float un_fwd(float x, float p0, float p1)
{
    switch (K) {
    case NN_CU_UN_scale: return p0 * x;
    case NN_CU_UN_add_scalar: return x + p0;
    case NN_CU_UN_relu: return x < 0.f ? 0.f : x;
    case NN_CU_UN_gelu: return x * gelu_phi(x);
    case NN_CU_UN_tanh: return tanhf(x);
    case NN_CU_UN_sigmoid: return sigmoidf_stable(x);
    case NN_CU_UN_softplus: return x > SOFTPLUS_THRESHOLD ? x : log1pf(expf_cr(x));
    case NN_CU_UN_exp: return expf_cr(x);
    case NN_CU_UN_log: return logf(x);
    case NN_CU_UN_sqrt: return sqrtf(x);
    case NN_CU_UN_pow: return powf(x, p0);
    default: return x < p0 ? p0 : (x > p1 ? p1 : x); // clamp
    }
}

template <int K> __device__ __forceinline__ float un_der(float x, float y, float p0, float p1)
{
    switch (K) {
    case NN_CU_UN_scale: return p0;
    case NN_CU_UN_add_scalar: return 1.f;
    case NN_CU_UN_relu: return y > 0.f ? 1.f : 0.f; // y > 0 exactly when x > 0 (the CPU's step01(y))
    case NN_CU_UN_gelu: return gelu_phi(x) + nf(x, gelu_pdf(x));
    case NN_CU_UN_tanh: return 1.f - nf(y, y);
    case NN_CU_UN_sigmoid: return y * (1.f - y);
    case NN_CU_UN_softplus: return x > SOFTPLUS_THRESHOLD ? 1.f : sigmoidf_stable(x);
    case NN_CU_UN_exp: return y;
    case NN_CU_UN_log: return 1.f / x;
    case NN_CU_UN_sqrt: return 0.5f / y;
    case NN_CU_UN_pow: return p0 == 0.f ? 0.f : p0 * powf(x, p0 - 1.f);
    default: return (x >= p0 && x <= p1) ? 1.f : 0.f; // clamp
    }
}

// no __restrict__: the forward may run in place
template <int K> __global__ void k_unary_fwd(float *y, const float *x, size_t n, float p0, float p1)
{
    GRID_STRIDE(i, n) y[i] = un_fwd<K>(x[i], p0, p1);
}

// what un_der<K> reads, as the CPU table's RD: 0 nothing, 1 x, 2 y; the
// other array may have been freed (NULL) by nn_backward's free_dead
template <int K> __host__ __device__ constexpr int un_rd()
{
    return K == NN_CU_UN_scale || K == NN_CU_UN_add_scalar ? 0
           : K == NN_CU_UN_relu || K == NN_CU_UN_tanh || K == NN_CU_UN_sigmoid || K == NN_CU_UN_exp ||
                   K == NN_CU_UN_sqrt
               ? 2
               : 1;
}

template <int K>
__global__ void k_unary_bwd(float *gx, const float *gy, const float *x, const float *y, size_t n,
                            float p0, float p1)
{
    GRID_STRIDE(i, n)
    {
        const float xv = un_rd<K>() == 1 ? x[i] : 0.f, yv = un_rd<K>() == 2 ? y[i] : 0.f;
        gx[i] += nf(gy[i], un_der<K>(xv, yv, p0, p1));
    }
}

template <int K> void unary_fwd_launch(float *y, const float *x, size_t n, float p0, float p1)
{
    k_unary_fwd<K><<<nn_grid(n), 256, 0, NN_STREAM>>>(y, x, n, p0, p1);
    NN_CUDA_LAUNCHED();
}

template <int K>
void unary_bwd_launch(float *gx, const float *gy, const float *x, const float *y, size_t n, float p0,
                      float p1)
{
    k_unary_bwd<K><<<nn_grid(n), 256, 0, NN_STREAM>>>(gx, gy, x, y, n, p0, p1);
    NN_CUDA_LAUNCHED();
}

// ---------------------------------------------------------------------------
// fused ops

__global__ void k_relu_mask(float *dy, const float *y, size_t n)
{
    GRID_STRIDE(i, n) dy[i] = y[i] > 0.f ? dy[i] : 0.f;
}

// The CPU's vectorisable expf / tanhf / sigmoid of nn/ops_fused.c (Cephes
// polynomials), with the same rounding (nf): the gate's values match the
// CPU bit for bit.
__device__ __forceinline__ float fused_expf(float x)
{
    const float hi = 88.f, lo = -87.3365447504f;
    const float xc = x > hi ? hi : (x < lo ? lo : x);
    const float magic = 12582912.f;
    const float fn = (nf(xc, 1.44269504088896341f) + magic) - magic;
    float r = xc - nf(fn, 0.693359375f);
    r = r - nf(fn, -2.12194440e-4f);
    const float z = nf(r, r);
    float y = 1.9875691500E-4f;
    y = nf(y, r) + 1.3981999507E-3f;
    y = nf(y, r) + 8.3334519073E-3f;
    y = nf(y, r) + 4.1665795894E-2f;
    y = nf(y, r) + 1.6666665459E-1f;
    y = nf(y, r) + 5.0000001201E-1f;
    y = nf(y, z) + r + 1.f;
    const float fs = fn == fn ? fn : 0.f;
    const float p = __int_as_float((int)(((unsigned)((int)fs + 127)) << 23));
    const float e = y * p;
    return x < lo ? 0.f : e;
}

__device__ __forceinline__ float fused_tanhf(float x)
{
    const float ax = fabsf(x);
    const float z = nf(x, x);
    float p = -5.70498872745E-3f;
    p = nf(p, z) + 2.06390887954E-2f;
    p = nf(p, z) - 5.37397155531E-2f;
    p = nf(p, z) + 1.33314422036E-1f;
    p = nf(p, z) - 3.33332819422E-1f;
    const float small = nf(nf(p, z), x) + x;
    const float e = fused_expf(2.f * (ax > 9.f ? 9.f : ax));
    const float q = 1.f - 2.f / (e + 1.f);
    const float big = copysignf(ax > 9.f ? 1.f : q, x);
    return ax < 0.625f ? small : (x != x ? x : big);
}

__device__ __forceinline__ float fused_sigmoidf(float x)
{
    const float e = fused_expf(-fabsf(x));
    const float s = (x >= 0.f ? 1.f : e) / (1.f + e);
    return x != x ? x : s;
}

__global__ void k_gate_fwd(float *y, float *t, float *s, const float *a, const float *b, size_t n)
{
    GRID_STRIDE(k, n)
    {
        const float tk = fused_tanhf(a[k]), sk = fused_sigmoidf(b[k]);
        if (t) {
            t[k] = tk;
            s[k] = sk;
        }
        y[k] = tk * sk;
    }
}

__global__ void k_gate_bwd_a(float *da, const float *dy, const float *t, const float *s, size_t n)
{
    GRID_STRIDE(k, n) da[k] += nf(nf(dy[k], s[k]), 1.f - nf(t[k], t[k]));
}

__global__ void k_gate_bwd_b(float *db, const float *dy, const float *t, const float *s, size_t n)
{
    GRID_STRIDE(k, n) db[k] += nf(nf(dy[k], t[k]), s[k] * (1.f - s[k]));
}

} // namespace

// ---------------------------------------------------------------------------
// entry points

extern "C" void nn_cuda_binary_fwd(int kind, float *out, const float *a, const float *b,
                                   const int s[4], const size_t sa[4], const size_t sb[4])
{
    bcast_fwd p;
    size_t n = 1;
    int same = 1; // a and b both have the output's shape
    for (int d = 3; d >= 0; d--) {
        p.s[d] = s[d];
        p.sa[d] = sa[d];
        p.sb[d] = sb[d];
        if (s[d] > 1 && (sa[d] != n || sb[d] != n)) same = 0;
        n *= (size_t)s[d];
    }
    if (!n) return;
    if (same)
        k_binary_same<<<nn_grid(n), 256, 0, NN_STREAM>>>(kind, out, a, b, n);
    else
        k_binary_fwd<<<nn_grid(n), 256, 0, NN_STREAM>>>(kind, out, a, b, p, n);
    NN_CUDA_LAUNCHED();
}

// Below this many output elements per input element one thread sums them.
constexpr size_t SERIAL_MAX_CNT = 64;

extern "C" void nn_cuda_binary_bwd(int kind, int side, float *g, const float *gout, const float *a,
                                   const float *b, const nn_bcast_plan *p, size_t n_in)
{
    if (!n_in || !p->cnt) return;
    int same = p->cnt == 1; // self, other and the output share one shape
    for (int d = 0; d < 4; d++)
        if (p->in4[d] > 1 && p->so[d] != p->os[d]) same = 0;
    if (same) {
        k_binary_bwd_same<<<nn_grid(n_in), 256, 0, NN_STREAM>>>(kind, side, g, gout, a, b, n_in);
        NN_CUDA_LAUNCHED();
        return;
    }
    if (p->cnt < SERIAL_MAX_CNT) {
        k_binary_bwd_serial<<<nn_grid(n_in), 256, 0, NN_STREAM>>>(kind, side, g, gout, a, b, *p,
                                                                 n_in);
        NN_CUDA_LAUNCHED();
        return;
    }
    // Chunks of >= 1024 elements, and enough of them that ~2048 blocks run
    // when the input is small (a broadcast scalar's gradient sums the whole
    // output).
    size_t nsplit = (p->cnt + 1023) / 1024, want = (2048 + n_in - 1) / n_in;
    if (want < nsplit) nsplit = want;
    const size_t chunk = (p->cnt + nsplit - 1) / nsplit;
    double *part = (double *)nn_cuda_alloc(n_in * nsplit * sizeof(double));
    k_binary_bwd_part<<<nn_grid(n_in * nsplit, 1), RED_THREADS, 0, NN_STREAM>>>(
        kind, side, part, gout, a, b, *p, n_in, nsplit, chunk);
    NN_CUDA_LAUNCHED();
    k_binary_bwd_finish<<<nn_grid(n_in), 256, 0, NN_STREAM>>>(g, part, n_in, nsplit);
    NN_CUDA_LAUNCHED();
    nn_cuda_free(part);
}

#define UNARY_DISPATCH(CALL)                                                                      \
    switch (kind) {                                                                               \
    case NN_CU_UN_scale: CALL(NN_CU_UN_scale); break;                                             \
    case NN_CU_UN_add_scalar: CALL(NN_CU_UN_add_scalar); break;                                   \
    case NN_CU_UN_relu: CALL(NN_CU_UN_relu); break;                                               \
    case NN_CU_UN_gelu: CALL(NN_CU_UN_gelu); break;                                               \
    case NN_CU_UN_tanh: CALL(NN_CU_UN_tanh); break;                                               \
    case NN_CU_UN_sigmoid: CALL(NN_CU_UN_sigmoid); break;                                         \
    case NN_CU_UN_softplus: CALL(NN_CU_UN_softplus); break;                                       \
    case NN_CU_UN_exp: CALL(NN_CU_UN_exp); break;                                                 \
    case NN_CU_UN_log: CALL(NN_CU_UN_log); break;                                                 \
    case NN_CU_UN_sqrt: CALL(NN_CU_UN_sqrt); break;                                               \
    case NN_CU_UN_pow: CALL(NN_CU_UN_pow); break;                                                 \
    case NN_CU_UN_clamp: CALL(NN_CU_UN_clamp); break;                                             \
    default:                                                                                      \
        fprintf(stderr, "ncmi: %s:%d: unary kind %d\n", __FILE__, __LINE__, kind);               \
        abort();                                                                                  \
    }

extern "C" void nn_cuda_unary_fwd(int kind, float *y, const float *x, size_t n, float p0, float p1)
{
    if (!n) return;
#define FWD(K) unary_fwd_launch<K>(y, x, n, p0, p1)
    UNARY_DISPATCH(FWD)
#undef FWD
}

extern "C" void nn_cuda_unary_bwd(int kind, float *gx, const float *gy, const float *x,
                                  const float *y, size_t n, float p0, float p1)
{
    if (!n) return;
#define BWD(K) unary_bwd_launch<K>(gx, gy, x, y, n, p0, p1)
    UNARY_DISPATCH(BWD)
#undef BWD
}

extern "C" void nn_cuda_relu_mask(float *dy, const float *y, size_t n)
{
    if (!n) return;
    k_relu_mask<<<nn_grid(n), 256, 0, NN_STREAM>>>(dy, y, n);
    NN_CUDA_LAUNCHED();
}

extern "C" void nn_cuda_gate_fwd(float *y, float *t, float *s, const float *a, const float *b, size_t n)
{
    if (!n) return;
    k_gate_fwd<<<nn_grid(n), 256, 0, NN_STREAM>>>(y, t, s, a, b, n);
    NN_CUDA_LAUNCHED();
}

extern "C" void nn_cuda_gate_bwd_a(float *da, const float *dy, const float *t, const float *s, size_t n)
{
    if (!n) return;
    k_gate_bwd_a<<<nn_grid(n), 256, 0, NN_STREAM>>>(da, dy, t, s, n);
    NN_CUDA_LAUNCHED();
}

extern "C" void nn_cuda_gate_bwd_b(float *db, const float *dy, const float *t, const float *s, size_t n)
{
    if (!n) return;
    k_gate_bwd_b<<<nn_grid(n), 256, 0, NN_STREAM>>>(db, dy, t, s, n);
    NN_CUDA_LAUNCHED();
}
