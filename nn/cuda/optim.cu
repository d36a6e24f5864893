// Optimizer steps and the global gradient norm on the GPU (nn/optim.c's
// CUDA twins). The updates use the explicitly rounded intrinsics
// (__fmul_rn, __fadd_rn, __fdiv_rn, __fsqrt_rn) in the CPU code's operation
// order: nvcc would otherwise contract a*b + c into one fused multiply-add,
// and the GPU would drift from the CPU reference by an ulp per step.
#include "check.cuh"
#include "k_optim.h"

namespace {

constexpr int NT = 256; // threads per block of the reductions (a power of two)

__global__ void k_sgd(float *p, const float *g, float *buf, size_t n, float lr, float mom,
                      float damp1, float wd, int nesterov, int first)
{
    for (size_t k = blockIdx.x * (size_t)blockDim.x + threadIdx.x; k < n; k += (size_t)gridDim.x * blockDim.x) {
        const float pk = p[k];
        float d = wd != 0.f ? __fadd_rn(g[k], __fmul_rn(wd, pk)) : g[k];
        if (buf) {
            const float b = first ? d : __fadd_rn(__fmul_rn(buf[k], mom), __fmul_rn(damp1, d));
            buf[k] = b;
            d = nesterov ? __fadd_rn(d, __fmul_rn(mom, b)) : b;
        }
        p[k] = __fadd_rn(pk, __fmul_rn(-lr, d));
    }
}

__global__ void k_adamw(float *p, const float *g, float *m, float *v, size_t n, float decay, float l2,
                        float b1, float c1, float b2, float c2, float step_size, float bc2_sqrt, float eps)
{
    for (size_t k = blockIdx.x * (size_t)blockDim.x + threadIdx.x; k < n; k += (size_t)gridDim.x * blockDim.x) {
        const float gk = l2 != 0.f ? __fadd_rn(g[k], __fmul_rn(l2, p[k])) : g[k];
        const float pk = __fmul_rn(p[k], decay);
        const float mk = __fadd_rn(__fmul_rn(m[k], b1), __fmul_rn(c1, gk));
        const float vk = __fadd_rn(__fmul_rn(v[k], b2), __fmul_rn(__fmul_rn(c2, gk), gk));
        m[k] = mk;
        v[k] = vk;
        const float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(vk), bc2_sqrt), eps);
        p[k] = __fadd_rn(pk, __fmul_rn(-step_size, __fdiv_rn(mk, denom)));
    }
}

// Sum of v over the block (blockDim.x == NT); every thread gets the result.
__device__ double block_sum(double v, double *sh)
{
    sh[threadIdx.x] = v;
    __syncthreads();
    for (int s = NT / 2; s > 0; s >>= 1) {
        if ((int)threadIdx.x < s) sh[threadIdx.x] += sh[threadIdx.x + s];
        __syncthreads();
    }
    const double r = sh[0];
    __syncthreads(); // sh is reused by the caller's next reduction
    return r;
}

// part[blockIdx.x] = sum of g[k]^2 over this block's grid-stride share
__global__ void k_sumsq(const float *g, size_t n, double *part)
{
    __shared__ double sh[NT];
    double s = 0.0;
    for (size_t k = blockIdx.x * (size_t)NT + threadIdx.x; k < n; k += (size_t)gridDim.x * NT)
        s += (double)g[k] * g[k];
    s = block_sum(s, sh);
    if (threadIdx.x == 0) part[blockIdx.x] = s;
}

// one block: out = {sqrt(sum part), max_norm / (norm + 1e-6)}
__global__ void k_norm_final(const double *part, int np, float max_norm, double *out)
{
    __shared__ double sh[NT];
    double s = 0.0;
    for (int k = threadIdx.x; k < np; k += NT) s += part[k];
    s = block_sum(s, sh);
    if (threadIdx.x == 0) {
        const double norm = sqrt(s);
        out[0] = norm;
        out[1] = (double)max_norm / (norm + 1e-6);
    }
}

__global__ void k_clip_scale(float *g, size_t n, const double *out)
{
    const double coef = out[1];
    if (coef >= 1.0) return; // as the CPU code: !(coef >= 1) scales, NaN included
    const float c = (float)coef;
    for (size_t k = blockIdx.x * (size_t)blockDim.x + threadIdx.x; k < n; k += (size_t)gridDim.x * blockDim.x)
        g[k] *= c;
}

// blocks of k_sumsq for n floats: about 8 elements per thread, at most 1024
unsigned sumsq_blocks(size_t n)
{
    size_t b = (n + (size_t)NT * 8 - 1) / ((size_t)NT * 8);
    if (b < 1) b = 1;
    if (b > 1024) b = 1024;
    return (unsigned)b;
}

} // namespace

extern "C" void nn_cuda_sgd_step(float *p, const float *g, float *buf, size_t n, float lr,
                                 float momentum, float damp1, float wd, int nesterov, int first)
{
    if (!n) return;
    k_sgd<<<nn_grid(n), 256, 0, NN_STREAM>>>(p, g, buf, n, lr, momentum, damp1, wd, nesterov, first);
    NN_CUDA_LAUNCHED();
}

extern "C" void nn_cuda_adamw_step(float *p, const float *g, float *m, float *v, size_t n, float decay,
                                   float l2, float b1, float c1, float b2, float c2, float step_size,
                                   float bc2_sqrt, float eps)
{
    if (!n) return;
    k_adamw<<<nn_grid(n), 256, 0, NN_STREAM>>>(p, g, m, v, n, decay, l2, b1, c1, b2, c2, step_size,
                                               bc2_sqrt, eps);
    NN_CUDA_LAUNCHED();
}

extern "C" void nn_cuda_clip_grad_norm(float *const *grads, const size_t *numel, int k, float max_norm,
                                       double *out)
{
    // partial sums: tensor t owns part[off_t .. off_t + sumsq_blocks(numel[t]))
    size_t np = 0;
    for (int t = 0; t < k; t++) np += sumsq_blocks(numel[t]);
    double *part = (double *)nn_cuda_alloc((np ? np : 1) * sizeof(double));
    size_t off = 0;
    for (int t = 0; t < k; t++) {
        const unsigned nb = sumsq_blocks(numel[t]);
        k_sumsq<<<nb, NT, 0, NN_STREAM>>>(grads[t], numel[t], part + off);
        NN_CUDA_LAUNCHED();
        off += nb;
    }
    k_norm_final<<<1, NT, 0, NN_STREAM>>>(part, (int)np, max_norm, out);
    NN_CUDA_LAUNCHED();
    for (int t = 0; t < k; t++) {
        if (!numel[t]) continue;
        k_clip_scale<<<nn_grid(numel[t]), 256, 0, NN_STREAM>>>(grads[t], numel[t], out);
        NN_CUDA_LAUNCHED();
    }
    nn_cuda_free(part); // stream-ordered reuse: safe once the kernels are queued
}
