/* Fused ops for the hot paths of the MIL heads (one bag = [N, D] with N up
 * to ~100k): fewer [N, D] buffers (each one a page-faulted allocation per
 * step) and fewer passes over them than the composed ops.
 *
 *   linear_relu: y = relu(x W^T + b). Saves the pre-activation and its
 *     gradient. Backward turns y's gradient into the pre-activation's IN
 *     PLACE (dy * [y > 0]: the gradient at 0 is 0, as nn_relu / PyTorch), then
 *     does what linear does; y->grad holds that masked gradient afterwards.
 *   tanh_sigmoid_gate: y = tanh(a) * sigmoid(b) (gated attention, Ilse et
 *     al. 2018). Saves the two activations and their gradients, and the mul.
 *
 * Both are checked against the composed ops by GRAD_TESTs (tests/test_grad_fused.c)
 * and give the same values as the composed ops up to rounding. */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "ops.h"

#define FUSED_PAR_MIN 32768

/* ---- linear + relu (iparam: 0 rows, 1 in, 2 out) ---- */

static void linear_relu_backward(nn_tensor *out)
{
    nn_tensor *x = out->src[0], *w = out->src[1], *b = out->nsrc > 2 ? out->src[2] : NULL;
    const int rows = out->iparam[0], in = out->iparam[1], nout = out->iparam[2];
    float *dy = out->grad; /* [rows, out]: masked in place */
    const float *y = out->data;
    const size_t n = out->numel;
    if (rows == 0) return;
#pragma omp parallel for if (n >= FUSED_PAR_MIN)
    for (size_t k = 0; k < n; k++) dy[k] = y[k] > 0.f ? dy[k] : 0.f;
    if (nn_op_needs_grad(out, 0) && nout > 0)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, in, nout, 1.f, dy, nout,
                    w->data, in, 1.f, nn_tensor_grad(x), in);
    if (nn_op_needs_grad(out, 1) && in > 0)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, nout, in, rows, 1.f, dy, nout,
                    x->data, in, 1.f, nn_tensor_grad(w), in);
    if (b && nn_op_needs_grad(out, 2)) {
        float *db = nn_tensor_grad(b);
        for (int r = 0; r < rows; r++) {
            const float *d = dy + (size_t)r * nout;
            for (int o = 0; o < nout; o++) db[o] += d[o];
        }
    }
}

nn_tensor *nn_linear_relu(nn_graph *g, nn_tensor *x, nn_tensor *w, nn_tensor *b)
{
    char sx[64], sw[64];
    nn_shape_str(x->ndim, x->shape, sx, sizeof sx);
    nn_shape_str(w->ndim, w->shape, sw, sizeof sw);
    NCMI_CHECK(x->ndim >= 1 && w->ndim == 2, "linear_relu: x %s, W %s", sx, sw);
    const int in = x->shape[x->ndim - 1], nout = w->shape[0];
    NCMI_CHECK(w->shape[1] == in, "linear_relu: x %s, W %s: in features differ", sx, sw);
    NCMI_CHECK(b == NULL || (b->ndim == 1 && b->shape[0] == nout),
               "linear_relu: W %s, bias of %zu elements", sw, b ? b->numel : 0);
    int rows = 1;
    for (int i = 0; i < x->ndim - 1; i++) rows *= x->shape[i];
    int shape[NN_MAX_DIMS];
    memcpy(shape, x->shape, sizeof shape);
    shape[x->ndim - 1] = nout;
    nn_tensor *src[3] = {x, w, b};
    nn_tensor *out =
        nn_op_output(g, "linear_relu", x->ndim, shape, linear_relu_backward, b ? 3 : 2, src);
    out->iparam[0] = rows;
    out->iparam[1] = in;
    out->iparam[2] = nout;
    if (out->numel == 0) return out;
    float beta = 0.f;
    if (b) {
        for (int r = 0; r < rows; r++)
            memcpy(out->data + (size_t)r * nout, b->data, (size_t)nout * sizeof(float));
        beta = 1.f;
    }
    if (in > 0)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, nout, in, 1.f, x->data, in,
                    w->data, in, beta, out->data, nout);
    float *y = out->data;
    const size_t n = out->numel;
#pragma omp parallel for if (n >= FUSED_PAR_MIN)
    for (size_t k = 0; k < n; k++) y[k] = y[k] < 0.f ? 0.f : y[k]; /* NaN passes, as relu */
    return out;
}

/* ---- tanh(a) * sigmoid(b) (aux: tanh(a) then sigmoid(b), 2 x numel floats) ---- */

static void gate_backward(nn_tensor *out)
{
    nn_tensor *a = out->src[0], *b = out->src[1];
    const size_t n = out->numel;
    const float *t = out->aux, *s = t + n, *dy = out->grad;
    if (nn_op_needs_grad(out, 0)) {
        float *da = nn_tensor_grad(a);
#pragma omp parallel for if (n >= FUSED_PAR_MIN)
        for (size_t k = 0; k < n; k++) da[k] += (dy[k] * s[k]) * (1.f - t[k] * t[k]); /* as mul + tanh backward */
    }
    if (nn_op_needs_grad(out, 1)) {
        float *db = nn_tensor_grad(b);
#pragma omp parallel for if (n >= FUSED_PAR_MIN)
        for (size_t k = 0; k < n; k++) db[k] += (dy[k] * t[k]) * (s[k] * (1.f - s[k]));
    }
}

nn_tensor *nn_tanh_sigmoid_gate(nn_graph *g, nn_tensor *a, nn_tensor *b)
{
    char sa[64], sb[64];
    NCMI_CHECK(nn_tensor_same_shape(a, b), "tanh_sigmoid_gate: a %s, b %s: shapes differ",
               nn_shape_str(a->ndim, a->shape, sa, sizeof sa),
               nn_shape_str(b->ndim, b->shape, sb, sizeof sb));
    nn_tensor *src[2] = {a, b};
    nn_tensor *out = nn_op_output(g, "tanh_sigmoid_gate", a->ndim, a->shape, gate_backward, 2, src);
    const size_t n = out->numel;
    float *t = NULL, *s = NULL;
    if (out->backward) {
        t = malloc((n ? 2 * n : 1) * sizeof *t);
        NCMI_CHECK(t != NULL, "out of memory (%zu floats)", 2 * n);
        s = t + n;
        out->aux = t;
    }
    const float *pa = a->data, *pb = b->data;
    float *y = out->data;
#pragma omp parallel for if (n >= FUSED_PAR_MIN)
    for (size_t k = 0; k < n; k++) {
        /* sigmoid as nn_sigmoid: 1/(1+e^-x), e^x/(1+e^x) for x < 0 */
        const float x = pb[k];
        float sk;
        if (x >= 0.f) {
            sk = 1.f / (1.f + expf(-x));
        } else {
            const float e = expf(x);
            sk = e / (1.f + e);
        }
        const float tk = tanhf(pa[k]);
        y[k] = tk * sk;
        if (t) {
            t[k] = tk;
            s[k] = sk;
        }
    }
    return out;
}
