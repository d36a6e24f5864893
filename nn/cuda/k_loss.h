/* CUDA twins of the losses on logits [N,C] (nn/ops_loss.c cross_entropy,
 * nn/loss.c fused row losses), implemented in nn/cuda/loss.cu. Pointers are
 * device pointers (labels: device int [N]) unless said otherwise. One warp
 * per row computes what the CPU computes per row, in the same precision
 * (double where the CPU uses double); the mean over rows is a one-block
 * double reduction, so no atomics and the same result on every run. */
#ifndef NCMI_CUDA_K_LOSS_H
#define NCMI_CUDA_K_LOSS_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* out[0] = mean over rows of the label-smoothed cross-entropy; p [N,C]
 * receives the softmax unless p is NULL. */
void nn_cuda_cross_entropy_fwd(const float *logits, const int *labels, int N, int C, float eps,
                               float *p, float *out);
/* gx[n,c] += grad[0] / N * (p[n,c] - q_c), q = (1-eps) onehot(labels[n]) + eps/C;
 * grad: the device scalar d/d out. */
void nn_cuda_cross_entropy_bwd(const float *p, const int *labels, const float *grad, int N, int C,
                               float eps, float *gx);

/* The fused row losses of nn/loss.c. */
typedef enum nn_cuda_row_loss {
    NN_CUDA_ROW_FOCAL = 0,   /* p0 = gamma */
    NN_CUDA_ROW_POLY1,       /* p0 = eps */
    NN_CUDA_ROW_SQUARE,      /* p0 = k, p1 = M */
    NN_CUDA_ROW_SQUENTROPY,
    NN_CUDA_ROW_ANTICLASS,   /* p0 = lambda */
} nn_cuda_row_loss;
/* out[0] = mean over rows of the row loss; saved [N,C] receives
 * d row / d logits unless saved is NULL. */
void nn_cuda_row_loss_fwd(nn_cuda_row_loss kind, const float *logits, const int *labels, int N, int C,
                          float p0, float p1, float *saved, float *out);
/* gx[i] += grad[0] / N * saved[i] for i < N*C. */
void nn_cuda_row_loss_bwd(const float *saved, const float *grad, int N, int C, float *gx);

#ifdef __cplusplus
}
#endif

#endif
