/* Reductions: sum / mean / max over one axis, sum / mean over everything,
 * and the last-axis row ops logsumexp, softmax, log_softmax, l2_normalize.
 * CPU reference forward and backward.
 *
 * An axis reduction views x as [outer, n, inner] (n = x.shape[axis]) and
 * produces [outer, inner]; a row op views x as [rows, D] (D = last dim).
 * Reducing the only axis of a 1-D tensor without keepdim gives shape [1]
 * (ncmi has no 0-D tensors; PyTorch would give shape []).
 *
 * On the GPU each op runs its CUDA twin (nn/cuda/reduce.cu): the same
 * formulas, double accumulation where these use double, argmax and norms
 * kept in device buffers (aux_cuda). */
#include <math.h>
#include <stdlib.h>

#include "cuda.h"
#include "cuda/k_reduce.h"
#include "error.h"
#include "ops.h"
#include "ops_internal.h"

#define RED_PAR_MIN 32768

static int norm_axis(const nn_tensor *x, int axis, const char *op)
{
    int a = axis < 0 ? axis + x->ndim : axis;
    NCMI_CHECK(a >= 0 && a < x->ndim, "%s: axis %d of a %d-D tensor", op, axis, x->ndim);
    return a;
}

/* [outer, n, inner] split of x around axis a, and the reduced shape. */
static void axis_split(const nn_tensor *x, int a, int keepdim, size_t *outer, int *n,
                       size_t *inner, int *ondim, int *oshape)
{
    *outer = 1;
    *inner = 1;
    for (int i = 0; i < a; i++) *outer *= (size_t)x->shape[i];
    for (int i = a + 1; i < x->ndim; i++) *inner *= (size_t)x->shape[i];
    *n = x->shape[a];
    int k = 0;
    for (int i = 0; i < x->ndim; i++) {
        if (i != a) oshape[k++] = x->shape[i];
        else if (keepdim) oshape[k++] = 1;
    }
    if (k == 0) oshape[k++] = 1;
    *ondim = k;
}

/* ---- sum / mean over one axis (iparam: axis, n; fparam[0]: 1 or 1/n) ---- */

static void sum_backward(nn_tensor *out)
{
    nn_tensor *x = out->src[0];
    size_t outer, inner;
    int n, ond, osh[NN_MAX_DIMS];
    axis_split(x, out->iparam[0], 1, &outer, &n, &inner, &ond, osh);
    const float s = out->fparam[0];
    float *gx = nn_tensor_grad(x);
    const float *gy = out->grad;
    if (NN_ON_GPU(out)) {
        nn_cuda_sum_axis_bwd(gx, gy, outer, n, inner, s);
        return;
    }
    /* gx[o,k,i] += s * gy[o,i] */
#pragma omp parallel for if (x->numel >= RED_PAR_MIN)
    for (size_t o = 0; o < outer; o++)
        for (int k = 0; k < n; k++) {
            float *px = gx + (o * (size_t)n + (size_t)k) * inner;
            const float *pg = gy + o * inner;
            for (size_t i = 0; i < inner; i++) px[i] += s * pg[i];
        }
}

static nn_tensor *sum_mean(nn_graph *g, nn_tensor *x, int axis, int keepdim, int mean)
{
    const char *op = mean ? "mean" : "sum";
    NCMI_CHECK(x != NULL, "%s: NULL input", op);
    int a = norm_axis(x, axis, op);
    size_t outer, inner;
    int n, ond, osh[NN_MAX_DIMS];
    axis_split(x, a, keepdim, &outer, &n, &inner, &ond, osh);
    nn_tensor *out = nn_op_output(g, op, ond, osh, sum_backward, 1, &x);
    out->iparam[0] = a;
    out->fparam[0] = mean ? 1.f / (float)n : 1.f;
    /* y[o,i] = s * sum_k x[o,k,i], accumulated in double */
    const float s = out->fparam[0];
    if (NN_ON_GPU(out)) {
        nn_cuda_sum_axis(out->data, x->data, outer, n, inner, s);
        return out;
    }
#pragma omp parallel for if (x->numel >= RED_PAR_MIN)
    for (size_t o = 0; o < outer; o++)
        for (size_t i = 0; i < inner; i++) {
            double acc = 0;
            const float *px = x->data + o * (size_t)n * inner + i;
            for (int k = 0; k < n; k++) acc += px[(size_t)k * inner];
            out->data[o * inner + i] = (float)(acc * s);
        }
    return out;
}

nn_tensor *nn_sum(nn_graph *g, nn_tensor *x, int axis, int keepdim)
{
    return sum_mean(g, x, axis, keepdim, 0);
}
nn_tensor *nn_mean(nn_graph *g, nn_tensor *x, int axis, int keepdim)
{
    return sum_mean(g, x, axis, keepdim, 1);
}

/* ---- max over one axis (aux: int argmax [outer*inner]) ---- */

static void max_backward(nn_tensor *out)
{
    nn_tensor *x = out->src[0];
    size_t outer, inner;
    int n, ond, osh[NN_MAX_DIMS];
    axis_split(x, out->iparam[0], 1, &outer, &n, &inner, &ond, osh);
    const int *arg = out->aux;
    float *gx = nn_tensor_grad(x);
    if (NN_ON_GPU(out)) {
        nn_cuda_max_axis_bwd(gx, out->grad, arg, outer, n, inner);
        return;
    }
    for (size_t o = 0; o < outer; o++)
        for (size_t i = 0; i < inner; i++)
            gx[(o * (size_t)n + (size_t)arg[o * inner + i]) * inner + i] +=
                out->grad[o * inner + i];
}

nn_tensor *nn_max(nn_graph *g, nn_tensor *x, int axis, int keepdim)
{
    NCMI_CHECK(x != NULL, "max: NULL input");
    int a = norm_axis(x, axis, "max");
    size_t outer, inner;
    int n, ond, osh[NN_MAX_DIMS];
    axis_split(x, a, keepdim, &outer, &n, &inner, &ond, osh);
    NCMI_CHECK(n > 0, "max: reducing an empty axis %d", axis);
    nn_tensor *out = nn_op_output(g, "max", ond, osh, max_backward, 1, &x);
    out->iparam[0] = a;
    if (NN_ON_GPU(out)) {
        int *darg = nn_cuda_alloc((outer * inner > 0 ? outer * inner : 1) * sizeof(int));
        out->aux = darg;
        out->aux_cuda = 1;
        nn_cuda_max_axis(out->data, darg, x->data, outer, n, inner);
        return out;
    }
    int *arg = malloc((outer * inner > 0 ? outer * inner : 1) * sizeof(int));
    NCMI_CHECK(arg != NULL, "max: out of memory");
    out->aux = arg;
    /* first maximal element wins; NaN propagates (the first NaN is taken) */
#pragma omp parallel for if (x->numel >= RED_PAR_MIN)
    for (size_t o = 0; o < outer; o++)
        for (size_t i = 0; i < inner; i++) {
            const float *px = x->data + o * (size_t)n * inner + i;
            float m = px[0];
            int am = 0;
            for (int k = 1; k < n && m == m; k++) {
                float v = px[(size_t)k * inner];
                if (v > m || v != v) {
                    m = v;
                    am = k;
                }
            }
            out->data[o * inner + i] = m;
            arg[o * inner + i] = am;
        }
    return out;
}

/* ---- sum / mean over all elements: shape [1] (fparam[0]: 1 or 1/numel) ---- */

static void sum_all_backward(nn_tensor *out)
{
    nn_tensor *x = out->src[0];
    float *gx = nn_tensor_grad(x);
    if (NN_ON_GPU(out)) {
        nn_cuda_sum_all_bwd(gx, out->grad, out->fparam[0], x->numel);
        return;
    }
    const float gs = out->grad[0] * out->fparam[0];
    for (size_t i = 0; i < x->numel; i++) gx[i] += gs;
}

static nn_tensor *sum_mean_all(nn_graph *g, nn_tensor *x, int mean)
{
    const char *op = mean ? "mean_all" : "sum_all";
    NCMI_CHECK(x != NULL, "%s: NULL input", op);
    nn_tensor *out = nn_op_output(g, op, 1, (int[]){1}, sum_all_backward, 1, &x);
    out->fparam[0] = mean ? (float)(1.0 / (double)x->numel) : 1.f;
    if (NN_ON_GPU(out)) {
        nn_cuda_sum_all(out->data, x->data, x->numel, mean);
        return out;
    }
    double acc = 0;
    for (size_t i = 0; i < x->numel; i++) acc += x->data[i];
    out->data[0] = (float)(mean ? acc / (double)x->numel : acc);
    return out;
}

nn_tensor *nn_sum_all(nn_graph *g, nn_tensor *x) { return sum_mean_all(g, x, 0); }
nn_tensor *nn_mean_all(nn_graph *g, nn_tensor *x) { return sum_mean_all(g, x, 1); }

/* ---- last-axis row ops ---- */

static void rows_split(const nn_tensor *x, const char *op, size_t *rows, int *D)
{
    NCMI_CHECK(x != NULL, "%s: NULL input", op);
    NCMI_CHECK(x->ndim >= 1, "%s: 0-D input", op);
    *D = x->shape[x->ndim - 1];
    *rows = *D ? x->numel / (size_t)*D : 0;
}

/* max of a row, with infinities mapped to 0 so that x - m stays finite
 * (an all -inf row gives logsumexp -inf, a +inf entry gives +inf). */
static float row_shift(const float *x, int D)
{
    float m = -INFINITY;
    for (int j = 0; j < D; j++)
        if (x[j] > m) m = x[j];
    return isfinite(m) ? m : 0.f;
}

/* log sum_j exp(x_j), in double after the max shift */
static float row_lse(const float *x, int D)
{
    float m = row_shift(x, D);
    double s = 0;
    for (int j = 0; j < D; j++) s += exp((double)(x[j] - m));
    // cppcheck-suppress invalidFunctionArg ; false positive: s >= 1: the max term is exp(0)
    return (float)((double)m + log(s));
}

/* logsumexp: y[r] = lse(x[r,:]); dx = gy * exp(x - y) */
static void logsumexp_backward(nn_tensor *out)
{
    nn_tensor *x = out->src[0];
    size_t rows;
    int D;
    rows_split(x, "logsumexp", &rows, &D);
    float *gx = nn_tensor_grad(x);
    if (NN_ON_GPU(out)) {
        nn_cuda_logsumexp_bwd(gx, x->data, out->data, out->grad, rows, D);
        return;
    }
#pragma omp parallel for if (x->numel >= RED_PAR_MIN)
    for (size_t r = 0; r < rows; r++) {
        const float *px = x->data + r * D;
        float *pg = gx + r * D;
        const float y = out->data[r], gy = out->grad[r];
        for (int j = 0; j < D; j++) pg[j] += gy * expf(px[j] - y);
    }
}

nn_tensor *nn_logsumexp(nn_graph *g, nn_tensor *x, int keepdim)
{
    size_t rows;
    int D;
    rows_split(x, "logsumexp", &rows, &D);
    size_t outer, inner;
    int n, ond, osh[NN_MAX_DIMS];
    axis_split(x, x->ndim - 1, keepdim, &outer, &n, &inner, &ond, osh);
    nn_tensor *out = nn_op_output(g, "logsumexp", ond, osh, logsumexp_backward, 1, &x);
    if (NN_ON_GPU(out)) {
        nn_cuda_logsumexp(out->data, x->data, rows, D);
        return out;
    }
#pragma omp parallel for if (x->numel >= RED_PAR_MIN)
    for (size_t r = 0; r < rows; r++) out->data[r] = row_lse(x->data + r * D, D);
    return out;
}

/* softmax: y = exp(x - lse); dx = y * (gy - sum_j gy_j y_j) */
static void softmax_backward(nn_tensor *out)
{
    nn_tensor *x = out->src[0];
    size_t rows;
    int D;
    rows_split(x, "softmax", &rows, &D);
    float *gx = nn_tensor_grad(x);
    if (NN_ON_GPU(out)) {
        nn_cuda_softmax_bwd(gx, out->data, out->grad, rows, D);
        return;
    }
#pragma omp parallel for if (x->numel >= RED_PAR_MIN)
    for (size_t r = 0; r < rows; r++) {
        const float *y = out->data + r * D, *gy = out->grad + r * D;
        float *pg = gx + r * D;
        double dot = 0;
        for (int j = 0; j < D; j++) dot += (double)gy[j] * y[j];
        for (int j = 0; j < D; j++) pg[j] += y[j] * (gy[j] - (float)dot);
    }
}

nn_tensor *nn_softmax(nn_graph *g, nn_tensor *x)
{
    size_t rows;
    int D;
    rows_split(x, "softmax", &rows, &D);
    nn_tensor *out = nn_op_output(g, "softmax", x->ndim, x->shape, softmax_backward, 1, &x);
    out->bwd_reads = NN_BWD_OUT;
    if (NN_ON_GPU(out)) {
        nn_cuda_softmax(out->data, x->data, rows, D);
        return out;
    }
#pragma omp parallel for if (x->numel >= RED_PAR_MIN)
    for (size_t r = 0; r < rows; r++) {
        const float *px = x->data + r * D;
        float *py = out->data + r * D;
        float m = row_shift(px, D);
        double s = 0;
        for (int j = 0; j < D; j++) {
            py[j] = expf(px[j] - m);
            s += py[j];
        }
        const float inv = (float)(1.0 / s);
        for (int j = 0; j < D; j++) py[j] *= inv;
    }
    return out;
}

/* log_softmax: y = x - lse; dx = gy - exp(y) * sum_j gy_j */
static void log_softmax_backward(nn_tensor *out)
{
    nn_tensor *x = out->src[0];
    size_t rows;
    int D;
    rows_split(x, "log_softmax", &rows, &D);
    float *gx = nn_tensor_grad(x);
    if (NN_ON_GPU(out)) {
        nn_cuda_log_softmax_bwd(gx, out->data, out->grad, rows, D);
        return;
    }
#pragma omp parallel for if (x->numel >= RED_PAR_MIN)
    for (size_t r = 0; r < rows; r++) {
        const float *y = out->data + r * D, *gy = out->grad + r * D;
        float *pg = gx + r * D;
        double s = 0;
        for (int j = 0; j < D; j++) s += gy[j];
        for (int j = 0; j < D; j++) pg[j] += gy[j] - expf(y[j]) * (float)s;
    }
}

nn_tensor *nn_log_softmax(nn_graph *g, nn_tensor *x)
{
    size_t rows;
    int D;
    rows_split(x, "log_softmax", &rows, &D);
    nn_tensor *out =
        nn_op_output(g, "log_softmax", x->ndim, x->shape, log_softmax_backward, 1, &x);
    if (NN_ON_GPU(out)) {
        nn_cuda_log_softmax(out->data, x->data, rows, D);
        return out;
    }
#pragma omp parallel for if (x->numel >= RED_PAR_MIN)
    for (size_t r = 0; r < rows; r++) {
        const float *px = x->data + r * D;
        float *py = out->data + r * D;
        const float lse = row_lse(px, D);
        for (int j = 0; j < D; j++) py[j] = px[j] - lse;
    }
    return out;
}

/* l2_normalize (F.normalize(x, dim=-1, eps)): y = x / max(||x||, eps).
 * aux: float norms [rows]. Backward, per row with n = ||x||:
 *   n >= eps (and n > 0): y = x/n,   dx = (gy - y (y . gy)) / n
 *   n <  eps:             y = x/eps, dx = gy / eps
 * (PyTorch's clamp_min passes the gradient at n == eps, and the norm's
 * gradient at n == 0 is 0.) */
static void l2_normalize_backward(nn_tensor *out)
{
    nn_tensor *x = out->src[0];
    size_t rows;
    int D;
    rows_split(x, "l2_normalize", &rows, &D);
    const float eps = out->fparam[0];
    const float *norms = out->aux;
    float *gx = nn_tensor_grad(x);
    if (NN_ON_GPU(out)) {
        nn_cuda_l2_normalize_bwd(gx, out->data, out->grad, norms, rows, D, eps);
        return;
    }
#pragma omp parallel for if (x->numel >= RED_PAR_MIN)
    for (size_t r = 0; r < rows; r++) {
        const float *y = out->data + r * D, *gy = out->grad + r * D;
        float *pg = gx + r * D;
        const float n = norms[r];
        if (n >= eps && n > 0) {
            double dot = 0;
            for (int j = 0; j < D; j++) dot += (double)y[j] * gy[j];
            const float inv = 1.f / n;
            for (int j = 0; j < D; j++) pg[j] += (gy[j] - y[j] * (float)dot) * inv;
        } else {
            for (int j = 0; j < D; j++) pg[j] += gy[j] / eps;
        }
    }
}

nn_tensor *nn_l2_normalize(nn_graph *g, nn_tensor *x, float eps)
{
    size_t rows;
    int D;
    rows_split(x, "l2_normalize", &rows, &D);
    NCMI_CHECK(eps >= 0, "l2_normalize: eps %g < 0", (double)eps);
    nn_tensor *out =
        nn_op_output(g, "l2_normalize", x->ndim, x->shape, l2_normalize_backward, 1, &x);
    out->fparam[0] = eps;
    if (NN_ON_GPU(out)) {
        float *dn = nn_cuda_alloc((rows ? rows : 1) * sizeof(float));
        out->aux = dn;
        out->aux_cuda = 1;
        nn_cuda_l2_normalize(out->data, dn, x->data, rows, D, eps);
        return out;
    }
    float *norms = malloc((rows ? rows : 1) * sizeof(float));
    NCMI_CHECK(norms != NULL, "l2_normalize: out of memory");
    out->aux = norms;
#pragma omp parallel for if (x->numel >= RED_PAR_MIN)
    for (size_t r = 0; r < rows; r++) {
        const float *px = x->data + r * D;
        float *py = out->data + r * D;
        double ss = 0;
        for (int j = 0; j < D; j++) ss += (double)px[j] * px[j];
        const float n = (float)sqrt(ss);
        norms[r] = n;
        const float den = n > eps ? n : eps;
        for (int j = 0; j < D; j++) py[j] = px[j] / den;
    }
    return out;
}
