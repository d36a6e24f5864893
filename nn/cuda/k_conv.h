/* CUDA twins of conv2d (nn/ops_conv.c), implemented in nn/cuda/conv.cu with
 * cuDNN. All pointers are device pointers; work goes to the one stream.
 *
 * fp32 (training and default inference): NCHW float tensors as the CPU
 * reference, cuDNN convolution with FMA math (results match the CPU to fp32
 * rounding) or, with nn_cuda_set_tf32(1), tensor-core TF32 math. cuDNN's
 * algorithm, workspace size and descriptors are chosen once per shape
 * (every dimension, stride, padding, dilation, groups, precision and the
 * TF32 switch) and cached.
 *
 * Half (no_grad inference at NN_PREC_BF16 / NN_PREC_FP16, groups == 1): the
 * input is transposed to channels-last bf16/fp16, cuDNN runs NHWC with fp32
 * accumulation on tensor cores, and the output is transposed back to NCHW
 * fp32 with the bias added. Channels are zero-padded to a multiple of 8 (the
 * tensor-core granularity; a 3-channel stem works too). The weights'
 * channels-last half copy is cached per weight buffer (device pointer and
 * element count): a weight tensor changed in place, or freed and replaced
 * by another of the same size at the same address, keeps its stale copy
 * until nn_cuda_conv_half_cache_clear(). fp16 overflows (inf) above 65504.
 *
 * A CUDA build without cuDNN (no cudnn.h) aborts on GPU convolutions with a
 * message saying so. */
#ifndef NCMI_CUDA_K_CONV_H
#define NCMI_CUDA_K_CONV_H

#ifdef __cplusplus
extern "C" {
#endif

/* x [N,C,H,W], w [Co, C/groups, kh, kw], y [N,Co,Ho,Wo] */
typedef struct nn_cuda_conv_shape {
    int N, C, H, W;
    int Co, kh, kw;
    int Ho, Wo;
    int stride, pad, dilation, groups;
} nn_cuda_conv_shape;

/* y = conv(x, w) + b (b may be NULL); y is overwritten. */
void nn_cuda_conv2d_fwd(const nn_cuda_conv_shape *s, const float *x, const float *w, const float *b,
                        float *y);
/* Gradients from dy into dx, dw, db (each may be NULL): dx = dx*beta_dx +
 * d/dx, dw likewise (beta 0: overwritten, its old contents never read);
 * db is added to. */
void nn_cuda_conv2d_bwd(const nn_cuda_conv_shape *s, const float *x, const float *w, const float *dy,
                        float *dx, float beta_dx, float *dw, float beta_dw, float *db);
/* Inference in half precision: bf16 != 0 for bfloat16, else float16.
 * groups must be 1. y (NCHW fp32) is overwritten. */
void nn_cuda_conv2d_fwd_half(const nn_cuda_conv_shape *s, int bf16, const float *x, const float *w,
                             const float *b, float *y);
/* Drop (and free) every cached half copy of weights. */
void nn_cuda_conv_half_cache_clear(void);

#ifdef __cplusplus
}
#endif

#endif
