/* Losses. CPU reference forward and backward.
 *
 * cross_entropy, as torch.nn.functional.cross_entropy(logits, labels,
 * label_smoothing=eps) with mean reduction: per row n, with
 * logp = log_softmax(logits[n]) and target q = (1-eps) onehot(y_n) + eps/C,
 *     loss_n = -sum_c q_c logp_c = (1-eps) (-logp_y) + eps/C sum_c (-logp_c)
 *     loss   = mean_n loss_n                                   -> shape [1]
 *     dloss/dlogits[n,c] = (softmax[n,c] - q_c) / N
 * aux: softmax probabilities [N,C]; aux2: the labels [N]. On the GPU
 * (nn/cuda/loss.cu) both are device buffers, the labels copied from the
 * host here, and the probabilities kept only when a backward is recorded. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cuda.h"
#include "cuda/k_loss.h"
#include "error.h"
#include "ops.h"
#include "ops_internal.h"

static void cross_entropy_backward(nn_tensor *out)
{
    nn_tensor *x = out->src[0];
    const int N = x->shape[0], C = x->shape[1];
    const float eps = out->fparam[0];
    if (NN_ON_GPU(out)) {
        nn_cuda_cross_entropy_bwd(out->aux, out->aux2, out->grad, N, C, eps, nn_tensor_grad(x));
        return;
    }
    const float *p = out->aux;
    const int *y = out->aux2;
    const float gs = out->grad[0] / (float)N;
    const float off = eps / (float)C, on = 1.f - eps + eps / (float)C;
    float *gx = nn_tensor_grad(x);
    for (int n = 0; n < N; n++) {
        const float *pn = p + (size_t)n * C;
        float *gn = gx + (size_t)n * C;
        for (int c = 0; c < C; c++) gn[c] += gs * (pn[c] - (c == y[n] ? on : off));
    }
}

nn_tensor *nn_cross_entropy(nn_graph *g, nn_tensor *logits, const int *labels,
                            float label_smoothing)
{
    NCMI_CHECK(logits != NULL && logits->ndim == 2, "cross_entropy: logits must be [N,C]");
    const int N = logits->shape[0], C = logits->shape[1];
    NCMI_CHECK(N > 0 && C > 0, "cross_entropy: empty logits [%d,%d]", N, C);
    NCMI_CHECK(labels != NULL, "cross_entropy: NULL labels");
    NCMI_CHECK(label_smoothing >= 0.f && label_smoothing <= 1.f,
               "cross_entropy: label_smoothing %g outside [0,1]", (double)label_smoothing);
    for (int n = 0; n < N; n++)
        NCMI_CHECK(labels[n] >= 0 && labels[n] < C,
                   "cross_entropy: label %d of row %d outside [0,%d)", labels[n], n, C);

    nn_tensor *out =
        nn_op_output(g, "cross_entropy", 1, (int[]){1}, cross_entropy_backward, 1, &logits);
    const float eps = label_smoothing;
    out->fparam[0] = eps;
    if (NN_ON_GPU(out)) {
        int *y = nn_cuda_alloc((size_t)N * sizeof(int));
        nn_cuda_h2d(y, labels, (size_t)N * sizeof(int));
        float *p = out->backward ? nn_cuda_alloc((size_t)N * C * sizeof(float)) : NULL;
        nn_cuda_cross_entropy_fwd(logits->data, y, N, C, eps, p, out->data);
        if (p) {
            out->aux = p;
            out->aux2 = y;
            out->aux_cuda = 1;
        } else {
            nn_cuda_free(y); /* after the queued kernels: stream-ordered reuse */
        }
        return out;
    }
    float *p = malloc((size_t)N * C * sizeof(float));
    int *y = malloc((size_t)N * sizeof(int));
    NCMI_CHECK(p && y, "cross_entropy: out of memory");
    memcpy(y, labels, (size_t)N * sizeof(int));
    out->aux = p;
    out->aux2 = y;

    double total = 0;
    for (int n = 0; n < N; n++) {
        const float *xn = logits->data + (size_t)n * C;
        float *pn = p + (size_t)n * C;
        float m = -INFINITY;
        for (int c = 0; c < C; c++)
            if (xn[c] > m) m = xn[c];
        if (!isfinite(m)) m = 0.f;
        double s = 0;
        for (int c = 0; c < C; c++) {
            pn[c] = expf(xn[c] - m);
            s += pn[c];
        }
        // cppcheck-suppress invalidFunctionArg ; false positive: s >= 1 (max term exp(0)); all -inf gives log(0) = -inf, defined
        const double lse = (double)m + log(s);
        const float inv = (float)(1.0 / s);
        double nll = lse - (double)xn[labels[n]], smooth = 0;
        for (int c = 0; c < C; c++) pn[c] *= inv;
        /* the smoothing term only when used: a -inf logit would make it inf */
        if (eps > 0.f)
            for (int c = 0; c < C; c++) smooth += lse - (double)xn[c];
        total += (1.0 - (double)eps) * nll + (eps > 0.f ? (double)eps / C * smooth : 0.0);
    }
    out->data[0] = (float)(total / N);
    return out;
}
