/* The MIL heads' own ops (mil/mil_ops.c): plain CPU references, each with a
 * CUDA twin (nn/cuda/mil.cu, declared in nn/cuda/k_mil.h) that runs when the
 * inputs are on the GPU. Internal to mil/ and the tests (tests/test_mil_ops.c
 * checks the gradients, tests/gpu/test_gpu_mil.c the GPU against the CPU). */
#ifndef NCMI_MIL_OPS_H
#define NCMI_MIL_OPS_H

#include "../nn/tensor.h"

/* ---- ASMIL ---- */
/* Normalised sigmoid over the last axis of x [rows, D], no gradient (the
 * anchor's target): y = s / (sum_row s + eps), s = sigmoid(x * inv_t). */
nn_tensor *mil_sigmax(nn_graph *g, nn_tensor *x, float inv_t, float eps);
/* dst = decay * dst + (1 - decay) * src, in place on dst's device (same
 * shape and device; persistent tensors). */
void mil_ema_update(nn_tensor *dst, const nn_tensor *src, float decay);

/* ---- TransMIL (mil/transmil.c documents each) ---- */
/* S [h, n, m] = softmax over the last axis of scale * a b^T, a [h, n, k], b [h, m, k]. */
/* Constant [m, m] tensor with v on the diagonal (zeros elsewhere), on device
 * dev; on the GPU made there (a fill and a strided copy: no host array, no
 * upload). TransMIL's pinv iterations use it. */
nn_tensor *mil_diag_const(nn_graph *g, nn_device dev, int m, float v);
nn_tensor *mil_softmax_abt(nn_graph *g, nn_tensor *a, nn_tensor *b, float scale);
/* Part `part` (0 q, 1 k, 2 v) of qkv [np, 3 h dh] as [h, np, dh]. */
nn_tensor *mil_qkv_heads(nn_graph *g, nn_tensor *qkv, int part, int h, int dh);
/* Depthwise conv of v [h, np, dh] over the sequence with w [h, 1, K, 1]
 * (K odd, zero padding K/2, no bias). */
nn_tensor *mil_seq_conv(nn_graph *g, nn_tensor *v, nn_tensor *w);
/* a + b for a, b [h, np, dh], heads merged: [np, h dh]. */
nn_tensor *mil_add_merge_heads(nn_graph *g, nn_tensor *a, nn_tensor *b);
/* acc + dwconv_K(x) on the S x S token grid of x [1 + S*S, d] (row 0 is
 * acc's), kernel w [d, 1, K, K] (K odd, K*K <= 64), bias b [d]. */
nn_tensor *mil_ppeg_conv_add(nn_graph *g, nn_tensor *acc, nn_tensor *x, nn_tensor *w, nn_tensor *b,
                             int S);

#endif
