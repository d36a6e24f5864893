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
 * Both are checked by GRAD_TESTs and against the composed ops (tests/test_grad_fused.c):
 * linear_relu bit for bit, the gate within a few ulp (its own tanh / exp).
 *
 * On the GPU the linear part is linear's own (cuBLAS, nn/ops_linear.c) and
 * the relu, its mask and the gate run in nn/cuda/elementwise.cu (the gate
 * with the same polynomial tanh / exp as here). */
#include <cblas.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "ops.h"
#include "ops_internal.h"
#include "cuda.h"
#include "cuda/k_elementwise.h"

#define FUSED_PAR_MIN 32768

/* ---- linear + relu (iparam: 0 rows, 1 in, 2 out) ---- */

static void linear_relu_backward(nn_tensor *out)
{
    float *dy = out->grad; /* [rows, out]: masked in place */
    const float *y = out->data;
    const size_t n = out->numel;
    if (NN_ON_GPU(out)) {
        nn_cuda_relu_mask(dy, y, n);
        nn_linear_backward_from(out, dy);
        return;
    }
#pragma omp parallel for if (n >= FUSED_PAR_MIN)
    for (size_t k = 0; k < n; k++) dy[k] = y[k] > 0.f ? dy[k] : 0.f;
    nn_linear_backward_from(out, dy);
}

nn_tensor *nn_linear_relu(nn_graph *g, nn_tensor *x, nn_tensor *w, nn_tensor *b)
{
    nn_tensor *out = nn_linear_forward_as(g, "linear_relu", linear_relu_backward, x, w, b);
    out->bwd_reads |= NN_BWD_OUT; /* the ReLU mask */
    float *y = out->data;
    const size_t n = out->numel;
    if (NN_ON_GPU(out)) {
        nn_cuda_unary_fwd(NN_CU_UN_relu, y, y, n, 0.f, 0.f); /* in place */
        return out;
    }
#pragma omp parallel for if (n >= FUSED_PAR_MIN)
    for (size_t k = 0; k < n; k++) y[k] = y[k] < 0.f ? 0.f : y[k]; /* NaN passes, as relu */
    return out;
}

/* ---- tanh(a) * sigmoid(b) (aux: tanh(a) then sigmoid(b), 2 x numel floats) ----
 *
 * glibc's tanhf / expf are scalar calls (~12 ns per tanh here, a few % of an
 * ABMIL step); these branch-free versions vectorise (Cephes' expf and tanhf
 * polynomials, round-to-nearest by the 1.5 * 2^23 trick, 2^n from the
 * exponent bits). Accuracy: within 2 ulp of the correctly rounded value
 * over the float range (tests/test_grad_fused.c sweeps it); tanh(+-inf) = +-1,
 * exp(x) = 0 below -87.3, NaN passes through. */
static inline float fused_expf(float x)
{
    const float hi = 88.f, lo = -87.3365447504f; /* 2^n stays finite and normal */
    const float xc = x > hi ? hi : (x < lo ? lo : x); /* NaN stays NaN */
    const float magic = 12582912.f;                   /* 1.5 * 2^23 */
    const float fn = (xc * 1.44269504088896341f + magic) - magic; /* round(x / ln 2) */
    float r = xc - fn * 0.693359375f;
    r = r - fn * -2.12194440e-4f;
    const float z = r * r;
    float y = 1.9875691500E-4f;
    y = y * r + 1.3981999507E-3f;
    y = y * r + 8.3334519073E-3f;
    y = y * r + 4.1665795894E-2f;
    y = y * r + 1.6666665459E-1f;
    y = y * r + 5.0000001201E-1f;
    y = y * z + r + 1.f;
    /* 2^n, n in [-126, 127]; a NaN x converts 0 instead (y is NaN already):
     * float -> int of NaN is undefined */
    const float fs = fn == fn ? fn : 0.f;
    union { uint32_t i; float f; } p;
    p.i = (uint32_t)((int32_t)fs + 127) << 23;
    const float e = y * p.f;
    return x < lo ? 0.f : e;
}

static inline float fused_tanhf(float x)
{
    const float ax = fabsf(x);
    /* |x| < 0.625: odd polynomial (Cephes tanhf) */
    const float z = x * x;
    float p = -5.70498872745E-3f;
    p = p * z + 2.06390887954E-2f;
    p = p * z - 5.37397155531E-2f;
    p = p * z + 1.33314422036E-1f;
    p = p * z - 3.33332819422E-1f;
    const float small = p * z * x + x;
    /* else 1 - 2 / (e^{2|x|} + 1) with the sign of x; 1 beyond |x| = 9 */
    const float e = fused_expf(2.f * (ax > 9.f ? 9.f : ax));
    const float q = 1.f - 2.f / (e + 1.f); /* unconditional: the loop stays branch-free */
    const float big = copysignf(ax > 9.f ? 1.f : q, x);
    return ax < 0.625f ? small : (x != x ? x : big);
}

static inline float fused_sigmoidf(float x)
{
    const float e = fused_expf(-fabsf(x));
    const float s = (x >= 0.f ? 1.f : e) / (1.f + e);
    return x != x ? x : s;
}

/* For the accuracy test (tests/test_grad_fused.c). */
float nn_fused_expf(float x);
float nn_fused_tanhf(float x);
float nn_fused_expf(float x) { return fused_expf(x); }
float nn_fused_tanhf(float x) { return fused_tanhf(x); }

static void gate_backward(nn_tensor *out)
{
    nn_tensor *a = out->src[0], *b = out->src[1];
    const size_t n = out->numel;
    const float *t = out->aux, *s = t + n, *dy = out->grad;
    if (NN_ON_GPU(out)) {
        if (nn_op_needs_grad(out, 0)) nn_cuda_gate_bwd_a(nn_tensor_grad(a), dy, t, s, n);
        if (nn_op_needs_grad(out, 1)) nn_cuda_gate_bwd_b(nn_tensor_grad(b), dy, t, s, n);
        return;
    }
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
    out->bwd_reads = NN_BWD_NONE; /* aux: tanh(a), sigmoid(b) */
    const size_t n = out->numel;
    float *t = NULL, *s = NULL;
    if (NN_ON_GPU(out)) {
        if (out->backward) {
            t = nn_cuda_alloc((n ? 2 * n : 1) * sizeof *t);
            s = t + n;
            out->aux = t;
            out->aux_cuda = 1;
        }
        nn_cuda_gate_fwd(out->data, t, s, a->data, b->data, n);
        return out;
    }
    if (out->backward) {
        t = malloc((n ? 2 * n : 1) * sizeof *t);
        NCMI_CHECK(t != NULL, "out of memory (%zu floats)", 2 * n);
        s = t + n;
        out->aux = t;
    }
    const float *pa = a->data, *pb = b->data;
    float *y = out->data;
    if (t) {
#pragma omp parallel for if (n >= FUSED_PAR_MIN)
        for (size_t k = 0; k < n; k++) {
            const float tk = fused_tanhf(pa[k]), sk = fused_sigmoidf(pb[k]);
            t[k] = tk;
            s[k] = sk;
            y[k] = tk * sk;
        }
    } else {
#pragma omp parallel for if (n >= FUSED_PAR_MIN)
        for (size_t k = 0; k < n; k++) y[k] = fused_tanhf(pa[k]) * fused_sigmoidf(pb[k]);
    }
    return out;
}
