// The few kernels the tensor core itself needs: fill, y += a*x, x *= a.
#include "check.cuh"

namespace {
__global__ void k_fill(float *x, float v, size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        x[i] = v;
}
__global__ void k_axpy(float *y, const float *x, float a, size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        y[i] += a * x[i];
}
__global__ void k_scal(float *x, float a, size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        x[i] *= a;
}
} // namespace

extern "C" void nn_cuda_fill(float *x, float v, size_t n)
{
    if (!n) return;
    k_fill<<<nn_grid(n), 256, 0, NN_STREAM>>>(x, v, n);
    NN_CUDA_LAUNCHED();
}
extern "C" void nn_cuda_axpy(float *y, const float *x, float a, size_t n)
{
    if (!n) return;
    k_axpy<<<nn_grid(n), 256, 0, NN_STREAM>>>(y, x, a, n);
    NN_CUDA_LAUNCHED();
}
extern "C" void nn_cuda_scal(float *x, float a, size_t n)
{
    if (!n) return;
    k_scal<<<nn_grid(n), 256, 0, NN_STREAM>>>(x, a, n);
    NN_CUDA_LAUNCHED();
}
