// Shape ops on the GPU: transpose, block copies (concat, slice, pad_rows)
// and row gathers (index_select, repeat_rows). Contracts in k_shape.h.
#include "check.cuh"
#include "k_shape.h"

namespace {

struct tr_map {
    int os[4];
    size_t ost[4];
};

tr_map make_map(const int os[4], const size_t ost[4])
{
    tr_map m;
    for (int d = 0; d < 4; d++) {
        m.os[d] = os[d];
        m.ost[d] = ost[d];
    }
    return m;
}

#define GRID_STRIDE(i, n) \
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < (n); i += (size_t)gridDim.x * blockDim.x)

__global__ void k_transpose_fwd(const float *x, float *y, tr_map m, size_t n)
{
    GRID_STRIDE(o, n) y[o] = x[nn_transpose_src(o, m.os, m.ost)];
}

// A transpose is a permutation: each gx element has exactly one o.
__global__ void k_transpose_bwd(const float *gy, float *gx, tr_map m, size_t n)
{
    GRID_STRIDE(o, n) gx[nn_transpose_src(o, m.os, m.ost)] += gy[o];
}

__global__ void k_block_copy(float *dst, size_t dst_row, size_t dst_off, const float *src, size_t src_row,
                             size_t src_off, size_t blk, size_t n, int add)
{
    GRID_STRIDE(k, n)
    {
        const size_t o = k / blk, j = k % blk;
        const float v = src[o * src_row + src_off + j];
        float *d = dst + o * dst_row + dst_off + j;
        if (add)
            *d += v;
        else
            *d = v;
    }
}

__global__ void k_gather_fwd(const float *x, float *y, const int *map, int nin, int nout, size_t inner, size_t n)
{
    GRID_STRIDE(k, n)
    {
        const size_t c = k % inner, t = k / inner;
        const size_t i = t % (size_t)nout, o = t / (size_t)nout;
        y[k] = x[(o * (size_t)nin + (size_t)map[i]) * inner + c];
    }
}

// One thread per gx element (o, r, c): the output rows of input row r, in
// ascending order, added onto it.
__global__ void k_gather_bwd(const float *gy, float *gx, const int *start, const int *list, int nin,
                             int nout, size_t inner, size_t n)
{
    GRID_STRIDE(k, n)
    {
        const size_t c = k % inner, t = k / inner;
        const size_t r = t % (size_t)nin, o = t / (size_t)nin;
        const int j0 = start[r], j1 = start[r + 1];
        if (j0 == j1) continue;
        float acc = gx[k];
        for (int j = j0; j < j1; j++) acc += gy[(o * (size_t)nout + (size_t)list[j]) * inner + c];
        gx[k] = acc;
    }
}

} // namespace

extern "C" void nn_cuda_transpose_fwd(const float *x, float *y, const int os[4], const size_t ost[4], size_t n)
{
    if (!n) return;
    k_transpose_fwd<<<nn_grid(n), 256, 0, NN_STREAM>>>(x, y, make_map(os, ost), n);
    NN_CUDA_LAUNCHED();
}

extern "C" void nn_cuda_transpose_bwd(const float *gy, float *gx, const int os[4], const size_t ost[4], size_t n)
{
    if (!n) return;
    k_transpose_bwd<<<nn_grid(n), 256, 0, NN_STREAM>>>(gy, gx, make_map(os, ost), n);
    NN_CUDA_LAUNCHED();
}

extern "C" void nn_cuda_block_copy(float *dst, size_t dst_row, size_t dst_off, const float *src, size_t src_row,
                                   size_t src_off, size_t outer, size_t blk, int add)
{
    const size_t n = outer * blk;
    if (!n) return;
    k_block_copy<<<nn_grid(n), 256, 0, NN_STREAM>>>(dst, dst_row, dst_off, src, src_row, src_off, blk, n, add);
    NN_CUDA_LAUNCHED();
}

extern "C" void nn_cuda_gather_rows_fwd(const float *x, float *y, const int *rows, size_t outer, int nin,
                                        int nout, size_t inner)
{
    const size_t n = outer * (size_t)nout * inner;
    if (!n) return;
    k_gather_fwd<<<nn_grid(n), 256, 0, NN_STREAM>>>(x, y, rows, nin, nout, inner, n);
    NN_CUDA_LAUNCHED();
}

extern "C" void nn_cuda_gather_rows_bwd(const float *gy, float *gx, const int *rows, size_t outer, int nin,
                                        int nout, size_t inner)
{
    const size_t n = outer * (size_t)nin * inner;
    if (!n || !nout) return;
    const int *start = rows + nout, *list = start + nin + 1;
    k_gather_bwd<<<nn_grid(n), 256, 0, NN_STREAM>>>(gy, gx, start, list, nin, nout, inner, n);
    NN_CUDA_LAUNCHED();
}
