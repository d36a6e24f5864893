/* ncmi ops: each op builds its output in graph g and records its backward.
 * Every op has a plain CPU reference forward and backward (nn/ops_*.c); a
 * CUDA twin (nn/cuda/) will have the same signature plus a stream.
 *
 * Shape errors are programming errors: ops check their arguments with
 * NCMI_CHECK and abort with the op name and the shapes. Data read from files
 * is validated where it is loaded, never here.
 *
 * Conventions: "rows" are the second-to-last axis, "last axis" the last.
 * Negative axes count from the end. Integer class labels are int32.
 */
#ifndef NCMI_OPS_H
#define NCMI_OPS_H

#include "rng.h"
#include "tensor.h"

/* ---- elementwise binary with numpy broadcasting (<= 4-D; covers row and
 * column broadcasting: [N,D] op [D], [N,D] op [N,1], [B,N,D] op [B,1,D]...).
 * Backward reduces the gradient over the broadcast axes. (ops_elementwise.c) */
nn_tensor *nn_add(nn_graph *g, nn_tensor *a, nn_tensor *b);
nn_tensor *nn_sub(nn_graph *g, nn_tensor *a, nn_tensor *b);
nn_tensor *nn_mul(nn_graph *g, nn_tensor *a, nn_tensor *b);
nn_tensor *nn_div(nn_graph *g, nn_tensor *a, nn_tensor *b);

/* ---- elementwise unary (ops_elementwise.c) ---- */
nn_tensor *nn_scale(nn_graph *g, nn_tensor *x, float s);        /* s*x */
nn_tensor *nn_add_scalar(nn_graph *g, nn_tensor *x, float s);   /* x+s */
nn_tensor *nn_relu(nn_graph *g, nn_tensor *x);    /* grad 0 at x == 0, as PyTorch */
nn_tensor *nn_gelu(nn_graph *g, nn_tensor *x);    /* exact: x*Phi(x) with erf */
nn_tensor *nn_tanh(nn_graph *g, nn_tensor *x);
nn_tensor *nn_sigmoid(nn_graph *g, nn_tensor *x);
nn_tensor *nn_softplus(nn_graph *g, nn_tensor *x); /* log(1+e^x), stable */
nn_tensor *nn_exp(nn_graph *g, nn_tensor *x);
nn_tensor *nn_log(nn_graph *g, nn_tensor *x);
nn_tensor *nn_sqrt(nn_graph *g, nn_tensor *x);
nn_tensor *nn_pow(nn_graph *g, nn_tensor *x, float p);
/* clamp to [lo, hi]; grad passes where lo <= x <= hi (PyTorch convention) */
nn_tensor *nn_clamp(nn_graph *g, nn_tensor *x, float lo, float hi);

/* ---- reductions (ops_reduce.c) ---- */
/* Over one axis; keepdim keeps it with size 1. */
nn_tensor *nn_sum(nn_graph *g, nn_tensor *x, int axis, int keepdim);
nn_tensor *nn_mean(nn_graph *g, nn_tensor *x, int axis, int keepdim);
/* max: the gradient goes to the first maximal element (PyTorch's max(dim)). */
nn_tensor *nn_max(nn_graph *g, nn_tensor *x, int axis, int keepdim);
/* Over all elements: scalar of shape [1]. */
nn_tensor *nn_sum_all(nn_graph *g, nn_tensor *x);
nn_tensor *nn_mean_all(nn_graph *g, nn_tensor *x);
/* Over the last axis (stable). */
nn_tensor *nn_logsumexp(nn_graph *g, nn_tensor *x, int keepdim);
nn_tensor *nn_softmax(nn_graph *g, nn_tensor *x);
nn_tensor *nn_log_softmax(nn_graph *g, nn_tensor *x);
/* Rows of the last axis divided by max(||x||_2, eps), as F.normalize. */
nn_tensor *nn_l2_normalize(nn_graph *g, nn_tensor *x, float eps);

/* ---- linear algebra (ops_linear.c, OpenBLAS) ---- */
/* a [...,M,K] @ b [...,K,N]; batch dims must match, or b is 2-D and is
 * shared by every batch (a 2-D/3-D/4-D). */
nn_tensor *nn_matmul(nn_graph *g, nn_tensor *a, nn_tensor *b);
/* x [...,in] @ W[out,in]^T + b[out]; bias may be NULL. */
nn_tensor *nn_linear(nn_graph *g, nn_tensor *x, nn_tensor *w, nn_tensor *b);

/* ---- shape ops (ops_shape.c) ---- */
nn_tensor *nn_transpose(nn_graph *g, nn_tensor *x, int d0, int d1);
/* View with a new shape (same numel; one dimension may be -1). Shares data. */
nn_tensor *nn_reshape(nn_graph *g, nn_tensor *x, int ndim, const int *shape);
nn_tensor *nn_concat(nn_graph *g, nn_tensor *const *xs, int n, int axis);
/* x[..., start:end, ...] along axis. */
nn_tensor *nn_slice(nn_graph *g, nn_tensor *x, int axis, int start, int end);
/* Rows of x along axis 0: out[i] = x[idx[i]]; repeats allowed (grads add). */
nn_tensor *nn_index_select(nn_graph *g, nn_tensor *x, const int *idx, int n);
/* Along the rows axis (ndim-2): `before` rows of `value` in front, `after` behind
 * (Nystrom attention's front zero padding). */
nn_tensor *nn_pad_rows(nn_graph *g, nn_tensor *x, int before, int after, float value);
/* Along the rows axis: extend to n_total rows by repeating rows from the
 * start cyclically (TransMIL's square padding: cat([h, h[:, :add]])). */
nn_tensor *nn_repeat_rows(nn_graph *g, nn_tensor *x, int n_total);

/* ---- convolution and pooling, NCHW (ops_conv.c, ops_pool.c) ---- */
/* x [N,Cin,H,W], w [Cout,Cin/groups,kh,kw], b [Cout] or NULL. Square stride,
 * padding (zeros) and dilation; groups == Cin == Cout is depthwise. */
nn_tensor *nn_conv2d(nn_graph *g, nn_tensor *x, nn_tensor *w, nn_tensor *b, int stride,
                     int padding, int dilation, int groups);
/* Padding with -inf; gradient to the first maximal element of each window. */
nn_tensor *nn_maxpool2d(nn_graph *g, nn_tensor *x, int kernel, int stride, int padding);
/* count_include_pad = True (PyTorch's default). */
nn_tensor *nn_avgpool2d(nn_graph *g, nn_tensor *x, int kernel, int stride, int padding);
/* [N,C,H,W] -> [N,C] */
nn_tensor *nn_global_avgpool(nn_graph *g, nn_tensor *x);

/* ---- normalisation and regularisation (ops_norm.c) ---- */
/* x [N,C,H,W]; gamma, beta, running_mean, running_var [C] (persistent).
 * training: batch statistics (biased variance for normalising) and running
 * statistics updated in place with momentum (unbiased variance), as
 * PyTorch; eval: running statistics, no update. */
nn_tensor *nn_batchnorm2d(nn_graph *g, nn_tensor *x, nn_tensor *gamma, nn_tensor *beta,
                          nn_tensor *running_mean, nn_tensor *running_var, int training,
                          float momentum, float eps);
/* Over the last axis; gamma/beta [D] or NULL. */
nn_tensor *nn_layernorm(nn_graph *g, nn_tensor *x, nn_tensor *gamma, nn_tensor *beta, float eps);
/* Inverted dropout: zero with probability p, scale the rest by 1/(1-p).
 * Identity when !training or p == 0. Mask drawn from rng. */
nn_tensor *nn_dropout(nn_graph *g, nn_tensor *x, float p, int training, nn_rng *rng);

/* ---- losses (ops_loss.c) ---- */
/* Mean over N of cross-entropy of logits [N,C] against labels[N] in [0,C),
 * with label smoothing eps (PyTorch: target (1-eps)*onehot + eps/C). */
nn_tensor *nn_cross_entropy(nn_graph *g, nn_tensor *logits, const int *labels,
                            float label_smoothing);

/* ---- fused ops for the MIL heads' hot paths (ops_fused.c) ---- */
/* relu(x W^T + b), b may be NULL: one [.., out] buffer instead of two (and
 * their gradients). Its backward overwrites the output's gradient with the
 * pre-activation gradient (dy * [y > 0]). Same values as nn_relu(nn_linear). */
nn_tensor *nn_linear_relu(nn_graph *g, nn_tensor *x, nn_tensor *w, nn_tensor *b);
/* tanh(a) * sigmoid(b), a and b of the same shape (gated attention). The
 * values of nn_mul(nn_tanh(a), nn_sigmoid(b)) within a few ulp (vectorised
 * tanh / exp, each within 2 ulp). */
nn_tensor *nn_tanh_sigmoid_gate(nn_graph *g, nn_tensor *a, nn_tensor *b);

#endif
