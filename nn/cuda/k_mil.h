/* CUDA twins of the MIL heads' own ops (mil/mil_ops.c, the CPU references),
 * implemented in nn/cuda/mil.cu. Device pointers, the runtime's stream,
 * nothing waits. Backward entry points ADD into their gradient (+=). */
#ifndef NCMI_CUDA_K_MIL_H
#define NCMI_CUDA_K_MIL_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ASMIL's normalised sigmoid of the rows of x [rows, D]:
 * y = sigmoid(x * inv_t) / (sum_row sigmoid(x * inv_t) + eps), sum in double. */
void nn_cuda_mil_sigmax(float *y, const float *x, size_t rows, int D, float inv_t, float eps);
/* ASMIL's anchor update: a = decay * a + (1 - decay) * x (each product rounded, as the CPU). */
void nn_cuda_mil_ema(float *a, const float *x, float decay, size_t n);

/* TransMIL's residual conv over the sequence: v [h, np, dh], w [h, K] (K odd,
 * zero padding K/2): out[c,i,j] = sum_t w[c,t] v[c,i+t-K/2,j] (overwrites out);
 * gv[c,i,j] += sum_t w[c,t] go[c,i-t+K/2,j]; gw[c,t] += sum_ij go[c,i,j] v[c,i+t-K/2,j]
 * (double sums). */
void nn_cuda_mil_seq_conv_fwd(float *out, const float *v, const float *w, int h, int np, int dh, int K);
void nn_cuda_mil_seq_conv_bwd_v(float *gv, const float *go, const float *w, int h, int np, int dh, int K);
void nn_cuda_mil_seq_conv_bwd_w(float *gw, const float *go, const float *v, int h, int np, int dh, int K);

/* TransMIL's PPEG conv on the token grid: tokens [1 + S*S, d], row 0 the
 * class token, rows 1.. the S x S grid (channels last); depthwise kernel w
 * [d, K, K], bias b [d], zero padding K/2:
 *   out[0] = acc[0]; out[p] = acc[p] + b + sum_uv w[., u, v] x[p shifted by (u-K/2, v-K/2)]
 * (overwrites out); gx[grid] += the transposed conv of go; gw[c,u,v] +=
 * sum_grid go x shifted, gb[c] += sum_grid go (double sums; gw or gb may be NULL). */
void nn_cuda_mil_ppeg_fwd(float *out, const float *acc, const float *x, const float *w, const float *b, int S,
                          int d, int K);
void nn_cuda_mil_ppeg_bwd_x(float *gx, const float *go, const float *w, int S, int d, int K);
void nn_cuda_mil_ppeg_bwd_wb(float *gw, float *gb, const float *go, const float *x, int S, int d, int K);

#ifdef __cplusplus
}
#endif

#endif
