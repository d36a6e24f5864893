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

/* ops_linear.c: y = x W^T + b recorded as op `op` with `backward`
 * (iparam 0 rows, 1 in, 2 out), and the gradients of x, W, b from
 * dy = d/d(x W^T + b). Used by linear and linear_relu. */
nn_tensor *nn_linear_forward_as(nn_graph *g, const char *op, nn_backward_fn backward, nn_tensor *x,
                                nn_tensor *w, nn_tensor *b);
void nn_linear_backward_from(nn_tensor *out, const float *dy);

#endif
