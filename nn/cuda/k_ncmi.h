/* CUDA twin of the fused NCMI loss (nn/ncmi.c, nn/cuda/ncmi.cu): the same
 * formulas, computed in double on the device. Device pointers unless a
 * parameter says host. */
#ifndef NCMI_K_NCMI_H
#define NCMI_K_NCMI_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct nn_cuda_ncmi_args {
    int N, C, D;
    int softmax;     /* 0: NSF, 1: softmax */
    int of_means;    /* 0: ratio per_sample, 1: ratio of_means */
    double tau, norm_eps, gamma_floor;
} nn_cuda_ncmi_args;

/* The EMA centre update from the detached batch z [N,D] (nn/ncmi.c's
 * update_center): center[j] = first ? mean_j : m center[j] + (1-m) mean_j. */
void nn_cuda_ncmi_center_update(const float *z, int N, int D, float *center, int first,
                                double momentum);

/* The loss of z [N,D] against xi [C,D] with centre `center` [D] (NULL:
 * no centring); labels (host, [N]) and w (host, [C], the Gamma weights) are
 * copied up. stats (host, 4 doubles) = {loss, sum_i CMI_i, sum_i Gamma_i,
 * 1 if every ||z_i - c|| <= norm_eps else 0}: reading them back is the
 * call's one host synchronisation. gz [N,D] / gxi [C,D] (device, may be
 * NULL) receive dL/dz and dL/dxi. */
void nn_cuda_ncmi_loss(const nn_cuda_ncmi_args *a, const float *z, const float *center,
                       const float *xi, const int *labels, const double *w, float *gz, float *gxi,
                       double *stats);

/* g[k] += gs[0] * s[k], gs a device scalar (the upstream gradient of the loss). */
void nn_cuda_ncmi_accum(float *g, const float *s, const float *gs, size_t n);

#ifdef __cplusplus
}
#endif

#endif
