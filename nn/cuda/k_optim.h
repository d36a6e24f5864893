/* CUDA twins of nn/optim.c's element-wise updates and of the global
 * gradient norm (nn/cuda/optim.cu). Device pointers; launched on the
 * runtime's stream; nothing here waits for the device. */
#ifndef NCMI_K_OPTIM_H
#define NCMI_K_OPTIM_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* torch.optim.SGD on one tensor of n floats, as nn/optim.c's sgd_param:
 * d = g + wd p (wd != 0); with buf (momentum != 0): b = first ? d :
 * buf momentum + damp1 d, buf = b, d = nesterov ? d + momentum b : b;
 * p += -lr d. buf NULL: plain SGD. damp1 = 1 - dampening. */
void nn_cuda_sgd_step(float *p, const float *g, float *buf, size_t n, float lr, float momentum,
                      float damp1, float wd, int nesterov, int first);

/* torch.optim.AdamW / Adam on one tensor, as nn/optim.c's adamw_param:
 * g' = l2 != 0 ? g + l2 p : g (Adam's L2 weight decay, with the p before the
 * step; 0 for AdamW); p *= decay (AdamW: 1 - lr wd; Adam: 1);
 * m = m b1 + c1 g'; v = v b2 + c2 g' g'; p += -step_size m / (sqrt(v) / bc2_sqrt + eps).
 * The factors come from the host (bias corrections of the step count). */
void nn_cuda_adamw_step(float *p, const float *g, float *m, float *v, size_t n, float decay,
                        float l2, float b1, float c1, float b2, float c2, float step_size,
                        float bc2_sqrt, float eps);

/* clip_grad_norm_ over k gradient tensors (grads[t] of numel[t] floats):
 * out (device, 2 doubles) = {norm, max_norm / (norm + 1e-6)}, and every
 * gradient is scaled by (float)out[1] unless out[1] >= 1 (NaN scales).
 * Sums of squares in double, in a fixed order (deterministic). */
void nn_cuda_clip_grad_norm(float *const *grads, const size_t *numel, int k, float max_norm,
                            double *out);

#ifdef __cplusplus
}
#endif

#endif
