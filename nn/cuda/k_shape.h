/* CUDA twins of nn/ops_shape.c (implemented in nn/cuda/shape.cu). All
 * pointers are device pointers; reshape needs no kernel (a view, and its
 * backward is nn_cuda_axpy). No kernel here uses atomics: every backward
 * writes each gradient element from one thread, in the CPU's order. */
#ifndef NCMI_CUDA_K_SHAPE_H
#define NCMI_CUDA_K_SHAPE_H

#include <stddef.h>

#ifdef __CUDACC__
#define NN_HOST_DEVICE __host__ __device__
#else
#define NN_HOST_DEVICE
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* Transpose: element o (row-major) of the output, whose shape padded to 4-D
 * with leading 1s is os, is element nn_transpose_src(o, ...) of x, where
 * ost[d] is the stride in x of the axis that output axis d came from
 * (ops_shape.c's transpose_map). The kernels and the host test
 * (tests/test_grad_shape.c) share this function. */
static inline NN_HOST_DEVICE size_t nn_transpose_src(size_t o, const int os[4], const size_t ost[4])
{
    size_t off = 0;
    for (int d = 3; d >= 0; d--) {
        off += (o % (size_t)os[d]) * ost[d];
        o /= (size_t)os[d];
    }
    return off;
}
/* y[o] = x[src(o)] and gx[src(o)] += gy[o] for o < n (n = numel). */
void nn_cuda_transpose_fwd(const float *x, float *y, const int os[4], const size_t ost[4], size_t n);
void nn_cuda_transpose_bwd(const float *gy, float *gx, const int os[4], const size_t ost[4], size_t n);

/* For o < outer and j < blk:
 *     dst[o*dst_row + dst_off + j] (+)= src[o*src_row + src_off + j]
 * (= when add is 0, += when 1). concat, slice and pad_rows forward and
 * backward are such copies of one block per outer index. */
void nn_cuda_block_copy(float *dst, size_t dst_row, size_t dst_off, const float *src, size_t src_row,
                        size_t src_off, size_t outer, size_t blk, int add);

/* Row gathers over x viewed as [outer, nin, inner] (index_select,
 * repeat_rows). rows: a device int array of nout + nin + 1 + nout entries:
 *     map[nout]      output row i is input row map[i]
 *     start[nin+1]   the inverse map as CSR: input row r feeds output rows
 *     list[nout]     list[start[r] .. start[r+1]), ascending
 * Forward y[o,i,:] = x[o,map[i],:]; backward gx[o,r,:] += gy[o,i,:] over the
 * i of r in ascending order (the CPU's order, so repeats add up alike). */
void nn_cuda_gather_rows_fwd(const float *x, float *y, const int *rows, size_t outer, int nin,
                             int nout, size_t inner);
void nn_cuda_gather_rows_bwd(const float *gy, float *gx, const int *rows, size_t outer, int nin,
                             int nout, size_t inner);

#ifdef __cplusplus
}
#endif

#endif
