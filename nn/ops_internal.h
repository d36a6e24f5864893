/* Pieces shared between op files (not part of the public op API). */
#ifndef NCMI_OPS_INTERNAL_H
#define NCMI_OPS_INTERNAL_H

#include "tensor.h"

/* True when t lives on the GPU. Constant 0 in a CPU-only build, so the
 * compiler drops the GPU branches there and the CUDA twins (nn/cuda/ .cu files,
 * declared in nn/cuda/k_*.h) need no stubs. Ops branch on their output:
 *     if (NN_ON_GPU(out)) { nn_cuda_relu_fwd(...); return out; }
 */
#if NCMI_HAVE_CUDA
#define NN_ON_GPU(t) ((t)->device == NN_DEVICE_CUDA)
#else
#define NN_ON_GPU(t) 0
#endif

/* Function multiversioning for hot element-wise CPU loops (the build is
 * portable x86-64, SSE2): the marked function is compiled for AVX-512F, AVX2
 * and the baseline, and the loader picks the widest the CPU has. Vector
 * sqrt / div / mul / add are the scalar IEEE operations per lane and
 * -std=c11 turns contraction off, so every clone gives the same bits. Put it
 * on a plain loop over a range (restrict pointers), not on a function with an
 * OpenMP region: the region's outlined body would not be cloned. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(__CUDACC__)
#define NN_SIMD_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define NN_SIMD_CLONES
#endif

/* ops_linear.c: y = x W^T + b recorded as op `op` with `backward`
 * (iparam 0 rows, 1 in, 2 out), and the gradients of x, W, b from
 * dy = d/d(x W^T + b). Used by linear and linear_relu. */
nn_tensor *nn_linear_forward_as(nn_graph *g, const char *op, nn_backward_fn backward, nn_tensor *x,
                                nn_tensor *w, nn_tensor *b);
void nn_linear_backward_from(nn_tensor *out, const float *dy);

#endif
