/* Elementwise ops: binary with numpy broadcasting (add, sub, mul, div) and
 * unary (scale, add_scalar, relu, gelu, tanh, sigmoid, softplus, exp, log,
 * sqrt, pow, clamp). CPU reference forward and backward.
 *
 * Broadcasting: both shapes are right-aligned and padded to 4-D with leading
 * ones; an input dimension of size 1 against a larger output dimension gets
 * stride 0. One strided loop (bcast_forward / bcast_backward) serves all four
 * binary ops; the backward accumulates over the broadcast axes, which reduces
 * the gradient to the input's shape.
 *
 * Unary ops are generated from one table (UNARY_OPS): each entry gives the
 * forward value y(x) and the local derivative dy/dx(x, y).
 *
 * On the GPU every op runs its CUDA twin (nn/cuda/elementwise.cu, same
 * formulas); the broadcast backward there sums each input element's output
 * elements itself (no atomics), planned by nn_bcast_plan. */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "error.h"
#include "ops.h"
#include "ops_internal.h"
#include "cuda/k_elementwise.h"

/* below this many elements the OpenMP fork costs more than it saves */
#define EW_PAR_MIN 32768

/* ------------------------------------------------------------------------ */
/* binary ops with broadcasting                                             */
/* ------------------------------------------------------------------------ */

typedef enum {
    BIN_ADD = NN_CU_ADD,
    BIN_SUB = NN_CU_SUB,
    BIN_MUL = NN_CU_MUL,
    BIN_DIV = NN_CU_DIV
} bin_kind;
static const char *const bin_names[] = {"add", "sub", "mul", "div"};

/* Output shape padded to 4-D and the strides (in elements) of a and b in the
 * output's index space (0 along broadcast axes). */
typedef struct {
    int nd;                 /* output ndim = max(a->ndim, b->ndim) */
    int shape[NN_MAX_DIMS]; /* output shape, right-aligned (unpadded) */
    int s[4];               /* output shape padded to 4-D */
    int a4[4], b4[4];       /* a's and b's shapes padded to 4-D */
    size_t sa[4], sb[4];
} bcast;

static void pad4(const nn_tensor *t, int *s4)
{
    int off = 4 - t->ndim;
    for (int i = 0; i < 4; i++) s4[i] = i < off ? 1 : t->shape[i - off];
}

static void strides4(const int *in4, const int *out4, size_t *st)
{
    size_t s = 1;
    for (int i = 3; i >= 0; i--) {
        st[i] = (in4[i] == 1 && out4[i] != 1) ? 0 : s;
        s *= (size_t)in4[i];
    }
}

static void bcast_init(bcast *bc, const nn_tensor *a, const nn_tensor *b, const char *op)
{
    int *a4 = bc->a4, *b4 = bc->b4;
    pad4(a, a4);
    pad4(b, b4);
    bc->nd = a->ndim > b->ndim ? a->ndim : b->ndim;
    for (int i = 0; i < 4; i++) {
        if (a4[i] != b4[i] && a4[i] != 1 && b4[i] != 1) {
            char sa[64], sb[64];
            NCMI_CHECK(0, "%s: shapes %s and %s cannot be broadcast", op,
                       nn_shape_str(a->ndim, a->shape, sa, sizeof sa),
                       nn_shape_str(b->ndim, b->shape, sb, sizeof sb));
        }
        bc->s[i] = a4[i] == 1 ? b4[i] : a4[i];
    }
    for (int i = 0; i < bc->nd; i++) bc->shape[i] = bc->s[4 - bc->nd + i];
    strides4(a4, bc->s, bc->sa);
    strides4(b4, bc->s, bc->sb);
}

/* True when distinct outer rows (dims 0..2) of the output map to distinct
 * input elements, so the backward may split outer rows across threads. */
static int outer_private(const size_t *st, const int *s)
{
    for (int i = 0; i < 3; i++)
        if (st[i] == 0 && s[i] > 1) return 0;
    return 1;
}

/* out[i0,i1,i2,i3] = a[...] (op) b[...] over the padded 4-D output. */
static void bcast_forward(bin_kind k, float *out, const float *a, const float *b,
                          const bcast *bc)
{
    const int s1 = bc->s[1], s2 = bc->s[2], n3 = bc->s[3];
    const long nouter = (long)bc->s[0] * s1 * s2;
    const size_t a3 = bc->sa[3], b3 = bc->sb[3];
#pragma omp parallel for if (nouter * n3 >= EW_PAR_MIN)
    for (long r = 0; r < nouter; r++) {
        long i0 = r / ((long)s1 * s2), i1 = (r / s2) % s1, i2 = r % s2;
        const float *pa = a + i0 * bc->sa[0] + i1 * bc->sa[1] + i2 * bc->sa[2];
        const float *pb = b + i0 * bc->sb[0] + i1 * bc->sb[1] + i2 * bc->sb[2];
        float *po = out + r * n3;
        switch (k) {
        case BIN_ADD: for (int j = 0; j < n3; j++) po[j] = pa[j * a3] + pb[j * b3]; break;
        case BIN_SUB: for (int j = 0; j < n3; j++) po[j] = pa[j * a3] - pb[j * b3]; break;
        case BIN_MUL: for (int j = 0; j < n3; j++) po[j] = pa[j * a3] * pb[j * b3]; break;
        case BIN_DIV: for (int j = 0; j < n3; j++) po[j] = pa[j * a3] / pb[j * b3]; break;
        }
    }
}

/* ga/gb (either may be NULL) += d out / d a, d out / d b, reduced over the
 * broadcast axes by accumulation. */
static void bcast_backward(bin_kind k, const float *gout, const float *a, const float *b,
                           float *ga, float *gb, const bcast *bc)
{
    const int s1 = bc->s[1], s2 = bc->s[2], n3 = bc->s[3];
    const long nouter = (long)bc->s[0] * s1 * s2;
    const size_t a3 = bc->sa[3], b3 = bc->sb[3];
    int par = nouter * n3 >= EW_PAR_MIN && (!ga || outer_private(bc->sa, bc->s)) &&
              (!gb || outer_private(bc->sb, bc->s));
    /* a and b may be the same tensor (x*x): then ga == gb and both updates
     * of one element happen in the same iteration, hence the same thread. */
#pragma omp parallel for if (par)
    for (long r = 0; r < nouter; r++) {
        long i0 = r / ((long)s1 * s2), i1 = (r / s2) % s1, i2 = r % s2;
        size_t oa = i0 * bc->sa[0] + i1 * bc->sa[1] + i2 * bc->sa[2];
        size_t ob = i0 * bc->sb[0] + i1 * bc->sb[1] + i2 * bc->sb[2];
        const float *g = gout + r * n3;
        float *qa = ga ? ga + oa : NULL, *qb = gb ? gb + ob : NULL;
        if (k == BIN_ADD || k == BIN_SUB) {
            /* no input read (a and b may be NULL: nn_backward's free_dead) */
            for (int j = 0; j < n3; j++) {
                const float gj = g[j];
                if (qa) qa[j * a3] += gj;
                if (qb) qb[j * b3] += k == BIN_SUB ? -gj : gj;
            }
            continue;
        }
        const float *pa = a + oa, *pb = b + ob;
        for (int j = 0; j < n3; j++) {
            float gj = g[j], da, db;
            if (k == BIN_MUL) {
                da = gj * pb[j * b3];
                db = gj * pa[j * a3];
            } else { /* BIN_DIV */
                float bj = pb[j * b3];
                da = gj / bj;
                db = -gj * pa[j * a3] / (bj * bj);
            }
            if (qa) qa[j * a3] += da;
            if (qb) qb[j * b3] += db;
        }
    }
}

static void binary_backward(nn_tensor *out)
{
    nn_tensor *a = out->src[0], *b = out->src[1];
    bcast bc;
    bcast_init(&bc, a, b, out->op);
    float *ga = nn_op_needs_grad(out, 0) ? nn_tensor_grad(a) : NULL;
    float *gb = nn_op_needs_grad(out, 1) ? nn_tensor_grad(b) : NULL;
    if (NN_ON_GPU(out)) {
        /* one pass per input; for x * x (ga == gb) the second adds after the
         * first, as the CPU adds da then db to each element */
        const int k = out->iparam[0];
        nn_bcast_plan p;
        if (ga) {
            nn_bcast_plan_init(&p, bc.a4, bc.s, bc.sb);
            nn_cuda_binary_bwd(k, 0, ga, out->grad, a->data, b->data, &p, a->numel);
        }
        if (gb) {
            nn_bcast_plan_init(&p, bc.b4, bc.s, bc.sa);
            nn_cuda_binary_bwd(k, 1, gb, out->grad, a->data, b->data, &p, b->numel);
        }
        return;
    }
    bcast_backward((bin_kind)out->iparam[0], out->grad, a->data, b->data, ga, gb, &bc);
}

static nn_tensor *binary(nn_graph *g, bin_kind k, nn_tensor *a, nn_tensor *b)
{
    const char *name = bin_names[k];
    NCMI_CHECK(a && b, "%s: NULL input", name);
    bcast bc;
    bcast_init(&bc, a, b, name);
    nn_tensor *src[2] = {a, b};
    nn_tensor *out = nn_op_output(g, name, bc.nd, bc.shape, binary_backward, 2, src);
    out->iparam[0] = (int)k;
    out->bwd_reads = k == BIN_ADD || k == BIN_SUB ? NN_BWD_NONE : NN_BWD_SRC(0) | NN_BWD_SRC(1);
    if (NN_ON_GPU(out)) {
        nn_cuda_binary_fwd(k, out->data, a->data, b->data, bc.s, bc.sa, bc.sb);
        return out;
    }
    bcast_forward(k, out->data, a->data, b->data, &bc);
    return out;
}

nn_tensor *nn_add(nn_graph *g, nn_tensor *a, nn_tensor *b) { return binary(g, BIN_ADD, a, b); }
nn_tensor *nn_sub(nn_graph *g, nn_tensor *a, nn_tensor *b) { return binary(g, BIN_SUB, a, b); }
nn_tensor *nn_mul(nn_graph *g, nn_tensor *a, nn_tensor *b) { return binary(g, BIN_MUL, a, b); }
nn_tensor *nn_div(nn_graph *g, nn_tensor *a, nn_tensor *b) { return binary(g, BIN_DIV, a, b); }

/* ------------------------------------------------------------------------ */
/* unary ops                                                                */
/* ------------------------------------------------------------------------ */

static inline float sigmoidf_stable(float x)
{
    if (x >= 0) return 1.f / (1.f + expf(-x));
    float e = expf(x);
    return e / (1.f + e);
}

/* GELU, exact: x * Phi(x), Phi(x) = (1 + erf(x / sqrt 2)) / 2;
 * d/dx = Phi(x) + x * phi(x), phi(x) = exp(-x^2/2) / sqrt(2 pi). */
#define GELU_PHI(x) (0.5f * (1.f + erff((x) * 0.70710678118654752f)))
#define GELU_PDF(x) (0.39894228040143268f * expf(-0.5f * (x) * (x)))

/* softplus with PyTorch's defaults beta = 1, threshold = 20: x above the
 * threshold is returned as is (log1p(e^x) == x in float there). */
#define SOFTPLUS_THRESHOLD 20.f

/* 1.0f where x > 0, else 0.0f, built from bits so that the compiler keeps
 * the multiply (a branch on the sign mispredicts half the time on
 * activations and costs several times the arithmetic). */
static inline float step01(float x)
{
    uint32_t b = (uint32_t)(-(int32_t)(x > 0.f)) & 0x3f800000u;
    float r;
    memcpy(&r, &b, sizeof r);
    return r;
}

/* X(name, forward y(x, p0, p1), derivative dy/dx(x, y, p0, p1), what the
 * derivative reads: RD_NONE, RD_X (the input) or RD_Y (the output))
 *   scale: p0 = s;  add_scalar: p0 = s;  pow: p0 = exponent;  clamp: [p0, p1].
 * relu and clamp write NaN through (x < 0 is false for NaN), as PyTorch.
 * relu's derivative reads its output: y > 0 exactly when x > 0 (-0 and NaN
 * included), so the backward frees the input (nn_backward's free_dead). */
#define RD_NONE 0
#define RD_X 1
#define RD_Y 2
#define UNARY_OPS(X)                                                                  \
    X(scale, p0 * x, p0, RD_NONE)                                                     \
    X(add_scalar, x + p0, 1.f, RD_NONE)                                               \
    X(relu, x < 0.f ? 0.f : x, step01(y), RD_Y)                                       \
    X(gelu, x * GELU_PHI(x), GELU_PHI(x) + x * GELU_PDF(x), RD_X)                     \
    X(tanh, tanhf(x), 1.f - y * y, RD_Y)                                              \
    X(sigmoid, sigmoidf_stable(x), y * (1.f - y), RD_Y)                               \
    X(softplus, x > SOFTPLUS_THRESHOLD ? x : log1pf(expf(x)),                         \
      x > SOFTPLUS_THRESHOLD ? 1.f : sigmoidf_stable(x), RD_X)                        \
    X(exp, expf(x), y, RD_Y)                                                          \
    X(log, logf(x), 1.f / x, RD_X)                                                    \
    X(sqrt, sqrtf(x), 0.5f / y, RD_Y)                                                 \
    X(pow, powf(x, p0), p0 == 0.f ? 0.f : p0 * powf(x, p0 - 1.f), RD_X)              \
    X(clamp, x < p0 ? p0 : (x > p1 ? p1 : x), (x >= p0 && x <= p1) ? 1.f : 0.f, RD_X)

typedef void (*unary_fwd_fn)(float *y, const float *x, size_t n, float p0, float p1);
typedef void (*unary_bwd_fn)(float *gx, const float *gy, const float *x, const float *y,
                             size_t n, float p0, float p1);

/* One forward and one backward kernel per table entry. Unused parameters are
 * voided so every entry can ignore p0/p1 freely; the backward loads only the
 * array its derivative reads (RD): the other may be freed (NULL). */
#define UNARY_KERNELS(name, FWD, DER, RD)                                             \
    static void name##_fwd(float *restrict y_, const float *restrict x_, size_t n,    \
                           float p0, float p1)                                       \
    {                                                                                 \
        (void)p0;                                                                     \
        (void)p1;                                                                     \
        _Pragma("omp parallel for simd if (n >= EW_PAR_MIN)")                         \
        for (size_t i = 0; i < n; i++) {                                              \
            float x = x_[i];                                                          \
            y_[i] = (FWD);                                                            \
        }                                                                             \
    }                                                                                 \
    static void name##_bwd(float *restrict gx, const float *restrict gy,              \
                           const float *restrict x_, const float *restrict y_, size_t n, \
                           float p0, float p1)                                       \
    {                                                                                 \
        (void)p0;                                                                     \
        (void)p1;                                                                     \
        _Pragma("omp parallel for simd if (n >= EW_PAR_MIN)")                         \
        for (size_t i = 0; i < n; i++) {                                              \
            float x = (RD) == RD_X ? x_[i] : 0.f, y = (RD) == RD_Y ? y_[i] : 0.f;     \
            (void)x;                                                                  \
            (void)y;                                                                  \
            gx[i] += gy[i] * (DER);                                                   \
        }                                                                             \
    }
UNARY_OPS(UNARY_KERNELS)

#define UNARY_ENUM(name, FWD, DER, RD) UN_##name,
typedef enum { UNARY_OPS(UNARY_ENUM) UN_COUNT } unary_kind;

/* the GPU twin (nn/cuda/elementwise.cu) numbers the ops the same way */
#define UNARY_SAME_KIND(name, FWD, DER, RD)                                           \
    _Static_assert((int)UN_##name == (int)NN_CU_UN_##name, "k_elementwise.h: " #name);
UNARY_OPS(UNARY_SAME_KIND)

#define UNARY_ENTRY(name, FWD, DER, RD)                                               \
    {#name, name##_fwd, name##_bwd, (RD) == RD_X ? NN_BWD_SRC(0) : (RD) == RD_Y ? NN_BWD_OUT : NN_BWD_NONE},
static const struct {
    const char *name;
    unary_fwd_fn fwd;
    unary_bwd_fn bwd;
    unsigned reads; /* bwd_reads */
} unary_table[UN_COUNT] = {UNARY_OPS(UNARY_ENTRY)};

static void unary_backward(nn_tensor *out)
{
    nn_tensor *x = out->src[0];
    if (NN_ON_GPU(out)) {
        nn_cuda_unary_bwd(out->iparam[0], nn_tensor_grad(x), out->grad, x->data, out->data,
                          out->numel, out->fparam[0], out->fparam[1]);
        return;
    }
    unary_table[out->iparam[0]].bwd(nn_tensor_grad(x), out->grad, x->data, out->data,
                                    out->numel, out->fparam[0], out->fparam[1]);
}

static nn_tensor *unary(nn_graph *g, unary_kind k, nn_tensor *x, float p0, float p1)
{
    NCMI_CHECK(x != NULL, "%s: NULL input", unary_table[k].name);
    nn_tensor *out =
        nn_op_output(g, unary_table[k].name, x->ndim, x->shape, unary_backward, 1, &x);
    out->iparam[0] = (int)k;
    out->fparam[0] = p0;
    out->fparam[1] = p1;
    out->bwd_reads = unary_table[k].reads;
    if (NN_ON_GPU(out)) {
        nn_cuda_unary_fwd(k, out->data, x->data, x->numel, p0, p1);
        return out;
    }
    unary_table[k].fwd(out->data, x->data, x->numel, p0, p1);
    return out;
}

nn_tensor *nn_scale(nn_graph *g, nn_tensor *x, float s) { return unary(g, UN_scale, x, s, 0); }
nn_tensor *nn_add_scalar(nn_graph *g, nn_tensor *x, float s)
{
    return unary(g, UN_add_scalar, x, s, 0);
}
nn_tensor *nn_relu(nn_graph *g, nn_tensor *x) { return unary(g, UN_relu, x, 0, 0); }
nn_tensor *nn_gelu(nn_graph *g, nn_tensor *x) { return unary(g, UN_gelu, x, 0, 0); }
nn_tensor *nn_tanh(nn_graph *g, nn_tensor *x) { return unary(g, UN_tanh, x, 0, 0); }
nn_tensor *nn_sigmoid(nn_graph *g, nn_tensor *x) { return unary(g, UN_sigmoid, x, 0, 0); }
nn_tensor *nn_softplus(nn_graph *g, nn_tensor *x) { return unary(g, UN_softplus, x, 0, 0); }
nn_tensor *nn_exp(nn_graph *g, nn_tensor *x) { return unary(g, UN_exp, x, 0, 0); }
nn_tensor *nn_log(nn_graph *g, nn_tensor *x) { return unary(g, UN_log, x, 0, 0); }
nn_tensor *nn_sqrt(nn_graph *g, nn_tensor *x) { return unary(g, UN_sqrt, x, 0, 0); }
nn_tensor *nn_pow(nn_graph *g, nn_tensor *x, float p) { return unary(g, UN_pow, x, p, 0); }
nn_tensor *nn_clamp(nn_graph *g, nn_tensor *x, float lo, float hi)
{
    NCMI_CHECK(lo <= hi, "clamp: lo %g > hi %g", (double)lo, (double)hi);
    return unary(g, UN_clamp, x, lo, hi);
}
