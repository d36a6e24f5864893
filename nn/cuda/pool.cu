// Pooling on the GPU (API in k_pool.h): one thread per output element in the
// forwards, one per input element in the backwards (a gather over the
// windows that hold it, in the CPU's order: no atomics, same bits).
// Products that the CPU rounds before adding use __fmul_rn, which nvcc
// never contracts into an fma.
#include <math.h>

#include "check.cuh"
#include "k_pool.h"

namespace {

#define GRID_STRIDE(i, n) \
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < (n); i += (size_t)gridDim.x * blockDim.x)

__global__ void k_maxpool_fwd(const float *x, float *y, int32_t *arg, size_t planes, int H, int W, int Ho, int Wo,
                              int k, int s, int p)
{
    size_t n = planes * Ho * Wo;
    GRID_STRIDE(i, n)
    {
        int ow = (int)(i % Wo);
        int oh = (int)((i / Wo) % Ho);
        const float *xp = x + (i / ((size_t)Ho * Wo)) * H * W;
        int h0 = oh * s - p, h1 = h0 + k, w0 = ow * s - p, w1 = w0 + k;
        if (h0 < 0) h0 = 0;
        if (h1 > H) h1 = H;
        if (w0 < 0) w0 = 0;
        if (w1 > W) w1 = W;
        float m = -INFINITY;
        int32_t am = h0 * W + w0;
        for (int ih = h0; ih < h1; ih++)
            for (int iw = w0; iw < w1; iw++) {
                float v = xp[ih * W + iw];
                if (v > m || v != v) { // first maximum; NaN propagates (as the CPU, as torch)
                    m = v;
                    am = ih * W + iw;
                }
            }
        y[i] = m;
        if (arg) arg[i] = am;
    }
}

__global__ void k_maxpool_bwd(const float *dy, const int32_t *arg, float *dx, size_t planes, int H, int W, int Ho,
                              int Wo, int k, int s, int p)
{
    size_t n = planes * H * W;
    GRID_STRIDE(i, n)
    {
        int iw = (int)(i % W);
        int ih = (int)((i / W) % H);
        size_t off = (i / ((size_t)H * W)) * Ho * Wo;
        int32_t me = ih * W + iw;
        int oh0, oh1, ow0, ow1;
        nn_pool_windows_of(ih, k, s, p, Ho, &oh0, &oh1);
        nn_pool_windows_of(iw, k, s, p, Wo, &ow0, &ow1);
        float acc = dx[i];
        for (int oh = oh0; oh <= oh1; oh++)
            for (int ow = ow0; ow <= ow1; ow++) {
                size_t q = off + (size_t)oh * Wo + ow;
                if (arg[q] == me) acc += dy[q];
            }
        dx[i] = acc;
    }
}

__global__ void k_avgpool_fwd(const float *x, float *y, size_t planes, int H, int W, int Ho, int Wo, int k, int s,
                              int p)
{
    size_t n = planes * Ho * Wo;
    float inv = 1.f / (float)(k * k);
    GRID_STRIDE(i, n)
    {
        int ow = (int)(i % Wo);
        int oh = (int)((i / Wo) % Ho);
        const float *xp = x + (i / ((size_t)Ho * Wo)) * H * W;
        int h0 = oh * s - p, h1 = h0 + k, w0 = ow * s - p, w1 = w0 + k;
        if (h0 < 0) h0 = 0;
        if (h1 > H) h1 = H;
        if (w0 < 0) w0 = 0;
        if (w1 > W) w1 = W;
        float acc = 0.f;
        for (int ih = h0; ih < h1; ih++)
            for (int iw = w0; iw < w1; iw++) acc += xp[ih * W + iw];
        y[i] = acc * inv;
    }
}

__global__ void k_avgpool_bwd(const float *dy, float *dx, size_t planes, int H, int W, int Ho, int Wo, int k, int s,
                              int p)
{
    size_t n = planes * H * W;
    float inv = 1.f / (float)(k * k);
    GRID_STRIDE(i, n)
    {
        int iw = (int)(i % W);
        int ih = (int)((i / W) % H);
        const float *dyp = dy + (i / ((size_t)H * W)) * Ho * Wo;
        int oh0, oh1, ow0, ow1;
        nn_pool_windows_of(ih, k, s, p, Ho, &oh0, &oh1);
        nn_pool_windows_of(iw, k, s, p, Wo, &ow0, &ow1);
        float acc = dx[i];
        for (int oh = oh0; oh <= oh1; oh++)
            for (int ow = ow0; ow <= ow1; ow++) acc += __fmul_rn(dyp[oh * Wo + ow], inv);
        dx[i] = acc;
    }
}

// One thread per plane, summing in order as the CPU does (planes are many and
// small where a network pools globally).
__global__ void k_gap_fwd(const float *x, float *y, size_t planes, size_t HW)
{
    GRID_STRIDE(pl, planes)
    {
        const float *xp = x + pl * HW;
        float acc = 0.f;
        for (size_t i = 0; i < HW; i++) acc += xp[i];
        y[pl] = acc / (float)HW;
    }
}

__global__ void k_gap_bwd(const float *dy, float *dx, size_t planes, size_t HW)
{
    float inv = 1.f / (float)HW;
    GRID_STRIDE(i, planes * HW) { dx[i] += __fmul_rn(dy[i / HW], inv); }
}

} // namespace

extern "C" void nn_cuda_maxpool2d_fwd(const float *x, float *y, int32_t *arg, size_t planes, int H, int W, int Ho,
                                      int Wo, int k, int s, int p)
{
    size_t n = planes * Ho * Wo;
    if (!n) return;
    k_maxpool_fwd<<<nn_grid(n), 256, 0, NN_STREAM>>>(x, y, arg, planes, H, W, Ho, Wo, k, s, p);
    NN_CUDA_LAUNCHED();
}

extern "C" void nn_cuda_maxpool2d_bwd(const float *dy, const int32_t *arg, float *dx, size_t planes, int H, int W,
                                      int Ho, int Wo, int k, int s, int p)
{
    size_t n = planes * H * W;
    if (!n) return;
    k_maxpool_bwd<<<nn_grid(n), 256, 0, NN_STREAM>>>(dy, arg, dx, planes, H, W, Ho, Wo, k, s, p);
    NN_CUDA_LAUNCHED();
}

extern "C" void nn_cuda_avgpool2d_fwd(const float *x, float *y, size_t planes, int H, int W, int Ho, int Wo, int k,
                                      int s, int p)
{
    size_t n = planes * Ho * Wo;
    if (!n) return;
    k_avgpool_fwd<<<nn_grid(n), 256, 0, NN_STREAM>>>(x, y, planes, H, W, Ho, Wo, k, s, p);
    NN_CUDA_LAUNCHED();
}

extern "C" void nn_cuda_avgpool2d_bwd(const float *dy, float *dx, size_t planes, int H, int W, int Ho, int Wo,
                                      int k, int s, int p)
{
    size_t n = planes * H * W;
    if (!n) return;
    k_avgpool_bwd<<<nn_grid(n), 256, 0, NN_STREAM>>>(dy, dx, planes, H, W, Ho, Wo, k, s, p);
    NN_CUDA_LAUNCHED();
}

extern "C" void nn_cuda_global_avgpool_fwd(const float *x, float *y, size_t planes, size_t HW)
{
    if (!planes) return;
    k_gap_fwd<<<nn_grid(planes), 256, 0, NN_STREAM>>>(x, y, planes, HW);
    NN_CUDA_LAUNCHED();
}

extern "C" void nn_cuda_global_avgpool_bwd(const float *dy, float *dx, size_t planes, size_t HW)
{
    if (!planes || !HW) return;
    k_gap_bwd<<<nn_grid(planes * HW), 256, 0, NN_STREAM>>>(dy, dx, planes, HW);
    NN_CUDA_LAUNCHED();
}
