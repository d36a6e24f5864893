/* The cross-entropy family (definitions in loss.h).
 *
 * Fused row losses: forward, per row n of logits [N,C], computes the row's
 * value and d row / d logits[n] in double and saves the gradient [N,C] (aux)
 * when a backward is recorded; backward adds upstream / N * saved. On the
 * GPU (nn/cuda/loss.cu) a warp per row does the same in double and saved is
 * a device buffer.
 * ce and label_smoothing are nn_cross_entropy. */
#include "loss.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cuda.h"
#include "cuda/k_loss.h"
#include "error.h"
#include "ops.h"
#include "ops_internal.h"

static const char *const kind_names[NN_LOSS_COUNT] = {
    "ce", "label_smoothing", "focal", "poly1", "square", "squentropy", "anticlass",
};

int nn_loss_kind_parse(const char *name, nn_loss_kind *kind)
{
    static const struct { const char *alias; nn_loss_kind k; } aliases[] = {
        {"cross_entropy", NN_LOSS_CE}, {"poly", NN_LOSS_POLY1}, {"occe", NN_LOSS_ANTICLASS},
        {"one_cold", NN_LOSS_ANTICLASS},
    };
    if (name) {
        for (int k = 0; k < NN_LOSS_COUNT; k++)
            if (strcmp(name, kind_names[k]) == 0) {
                *kind = (nn_loss_kind)k;
                return 0;
            }
        for (size_t i = 0; i < sizeof aliases / sizeof aliases[0]; i++)
            if (strcmp(name, aliases[i].alias) == 0) {
                *kind = aliases[i].k;
                return 0;
            }
    }
    return ncmi_error_set("loss: unknown loss '%s' (expected ce, label_smoothing, focal, poly1, "
                          "square, squentropy or anticlass)",
                          name ? name : "(null)");
}

const char *nn_loss_kind_name(nn_loss_kind kind)
{
    return (kind >= 0 && kind < NN_LOSS_COUNT) ? kind_names[kind] : "?";
}

nn_loss_cfg nn_loss_cfg_default(nn_loss_kind kind)
{
    nn_loss_cfg c;
    memset(&c, 0, sizeof c);
    c.kind = kind;
    c.smoothing = 0.1f;
    c.focal_gamma = 2.f;
    c.poly_eps = 1.f;
    c.square_k = 1.f;
    c.square_M = 1.f;
    c.anticlass_weight = 1.f;
    return c;
}

int nn_loss_cfg_check(const nn_loss_cfg *c)
{
    if (!(c->kind >= 0 && c->kind < NN_LOSS_COUNT))
        return ncmi_error_set("loss: unknown loss kind %d", (int)c->kind);
    if (c->kind == NN_LOSS_LABEL_SMOOTHING && !(c->smoothing >= 0.f && c->smoothing <= 1.f))
        return ncmi_error_set("loss: label_smoothing: smoothing %g outside [0,1]",
                              (double)c->smoothing);
    if (c->kind == NN_LOSS_FOCAL && !(c->focal_gamma >= 0.f && isfinite(c->focal_gamma)))
        return ncmi_error_set("loss: focal: gamma %g must be >= 0", (double)c->focal_gamma);
    if (c->kind == NN_LOSS_POLY1 && !isfinite(c->poly_eps))
        return ncmi_error_set("loss: poly1: epsilon %g is not finite", (double)c->poly_eps);
    if (c->kind == NN_LOSS_SQUARE &&
        !(c->square_k > 0.f && isfinite(c->square_k) && isfinite(c->square_M)))
        return ncmi_error_set("loss: square: k %g must be > 0 and M %g finite",
                              (double)c->square_k, (double)c->square_M);
    if (c->kind == NN_LOSS_ANTICLASS &&
        !(c->anticlass_weight >= 0.f && isfinite(c->anticlass_weight)))
        return ncmi_error_set("loss: anticlass: weight %g must be >= 0",
                              (double)c->anticlass_weight);
    return 0;
}

/* ---- fused row losses ---- */

/* One row: f[C] logits, label y, params; writes d row/d f into gr[C] when gr
 * is not NULL (work: C doubles of scratch) and returns the row's value. */
typedef double (*row_fn)(const float *f, int y, int C, const float *prm, double *gr, double *work);

/* lp[C] = log_softmax(f) in double; returns nothing. */
static void log_softmax_row(const float *f, int C, double *lp)
{
    double m = -INFINITY;
    for (int c = 0; c < C; c++)
        if (f[c] > m) m = f[c];
    if (!isfinite(m)) m = 0;
    double s = 0;
    for (int c = 0; c < C; c++) s += exp((double)f[c] - m);
    // cppcheck-suppress invalidFunctionArg ; false positive: s >= 1 (max term exp(0)); all -inf gives log(0) = -inf, defined
    const double lse = m + log(s);
    for (int c = 0; c < C; c++) lp[c] = (double)f[c] - lse;
}

/* gr = dL/dlp_y * (onehot_y - softmax) : the gradient of a function of lp_y only */
static void grad_through_lpy(const double *lp, int y, int C, double dlpy, double *gr)
{
    for (int c = 0; c < C; c++) gr[c] = dlpy * ((c == y ? 1.0 : 0.0) - exp(lp[c]));
}

/* focal: L = -(1-p_t)^gamma lp_y, 1 - p_t = -expm1(lp_y);
 * dL/dlp_y = -(1-p_t)^gamma + gamma p_t lp_y (1-p_t)^(gamma-1)
 * (the second term is 0 when 1-p_t == 0: lp_y ~ -(1-p_t) makes it -> 0). */
static double row_focal(const float *f, int y, int C, const float *prm, double *gr, double *lp)
{
    const double gamma = prm[0];
    log_softmax_row(f, C, lp);
    const double lpy = lp[y], pt = exp(lpy), om = -expm1(lpy);
    const double w = (gamma == 0) ? 1.0 : pow(om, gamma);
    if (gr) {
        double t2 = 0;
        if (gamma != 0 && om > 0) t2 = gamma * pt * lpy * pow(om, gamma - 1.0);
        grad_through_lpy(lp, y, C, -w + t2, gr);
    }
    return -w * lpy;
}

/* poly1: L = -lp_y + eps (1 - p_t); dL/dlp_y = -1 - eps p_t */
static double row_poly1(const float *f, int y, int C, const float *prm, double *gr, double *lp)
{
    const double eps = prm[0];
    log_softmax_row(f, C, lp);
    const double pt = exp(lp[y]);
    if (gr) grad_through_lpy(lp, y, C, -1.0 - eps * pt, gr);
    return -lp[y] + eps * (1.0 - pt);
}

/* square: L = (1/C)[k (f_y - M)^2 + sum_{j != y} f_j^2] */
static double row_square(const float *f, int y, int C, const float *prm, double *gr, double *work)
{
    (void)work;
    const double k = prm[0], M = prm[1];
    double s = 0;
    for (int c = 0; c < C; c++) {
        const double fc = f[c];
        if (c == y) {
            s += k * (fc - M) * (fc - M);
            if (gr) gr[c] = 2.0 * k * (fc - M) / C;
        } else {
            s += fc * fc;
            if (gr) gr[c] = 2.0 * fc / C;
        }
    }
    return s / C;
}

/* squentropy: L = -lp_y + 1/(C-1) sum_{j != y} f_j^2 */
static double row_squentropy(const float *f, int y, int C, const float *prm, double *gr,
                             double *lp)
{
    (void)prm;
    log_softmax_row(f, C, lp);
    double s = 0;
    for (int c = 0; c < C; c++)
        if (c != y) s += (double)f[c] * f[c];
    if (gr) {
        grad_through_lpy(lp, y, C, -1.0, gr);
        for (int c = 0; c < C; c++)
            if (c != y) gr[c] += 2.0 * f[c] / (C - 1);
    }
    return -lp[y] + s / (C - 1);
}

/* anticlass: L = -lp_y + lambda OCCE, r = softmax(-f),
 * OCCE = -1/(C-1) sum_{j != y} ln((C-1) r_j + 1e-7).
 * dOCCE/dr_j = -1/((C-1) r_j + 1e-7) (j != y), 0 (j == y);
 * through r = softmax(u), u = -f: dOCCE/du_k = r_k (gr_k - sum_j r_j gr_j), df = -du. */
#define OCCE_DELTA 1e-7
static double row_anticlass(const float *f, int y, int C, const float *prm, double *gr,
                            double *lp)
{
    const double lambda = prm[0];
    const double cm1 = C - 1;
    /* r = softmax(-f) into lp first (as log), then the CE part's lp */
    double m = -INFINITY;
    for (int c = 0; c < C; c++)
        if (-f[c] > m) m = -f[c];
    if (!isfinite(m)) m = 0;
    double s = 0;
    for (int c = 0; c < C; c++) s += exp(-(double)f[c] - m);
    double occe = 0, rg = 0;
    for (int c = 0; c < C; c++) {
        if (c == y) continue;
        const double r = exp(-(double)f[c] - m) / s;
        occe -= log(cm1 * r + OCCE_DELTA);
        rg += r * (-1.0 / (cm1 * r + OCCE_DELTA));
    }
    occe /= cm1;
    if (gr) {
        /* occe part first (uses r), then add the CE part */
        for (int c = 0; c < C; c++) {
            const double r = exp(-(double)f[c] - m) / s;
            const double grc = (c == y) ? 0.0 : -1.0 / (cm1 * r + OCCE_DELTA);
            gr[c] = -lambda * r * (grc - rg); /* d/df = -d/du */
        }
    }
    log_softmax_row(f, C, lp);
    if (gr)
        for (int c = 0; c < C; c++) gr[c] += exp(lp[c]) - (c == y ? 1.0 : 0.0);
    return -lp[y] + lambda * occe;
}

static void row_loss_backward(nn_tensor *out)
{
    nn_tensor *x = out->src[0];
    const float *saved = out->aux;
    float *gx = nn_tensor_grad(x);
    if (NN_ON_GPU(out)) {
        nn_cuda_row_loss_bwd(saved, out->grad, x->shape[0], x->shape[1], gx);
        return;
    }
    const float gs = out->grad[0] / (float)x->shape[0];
    for (size_t i = 0; i < x->numel; i++) gx[i] += gs * saved[i];
}

/* fn on the CPU, the kernel's row loss `kind` on the GPU */
static nn_tensor *row_loss(nn_graph *g, const char *op, row_fn fn, nn_cuda_row_loss kind,
                           nn_tensor *logits, const int *labels, const float *prm)
{
    NCMI_CHECK(logits != NULL && logits->ndim == 2, "%s: logits must be [N,C]", op);
    const int N = logits->shape[0], C = logits->shape[1];
    NCMI_CHECK(N > 0 && C >= 2, "%s: logits [%d,%d] (need N >= 1, C >= 2)", op, N, C);
    NCMI_CHECK(labels != NULL, "%s: NULL labels", op);
    for (int n = 0; n < N; n++)
        NCMI_CHECK(labels[n] >= 0 && labels[n] < C, "%s: label %d of row %d outside [0,%d)", op,
                   labels[n], n, C);
    nn_tensor *out = nn_op_output(g, op, 1, (int[]){1}, row_loss_backward, 1, &logits);
    for (int i = 0; i < 8; i++) out->fparam[i] = prm[i];
    const int want = out->backward != NULL;
    if (NN_ON_GPU(out)) {
        int *y = nn_cuda_alloc((size_t)N * sizeof(int));
        nn_cuda_h2d(y, labels, (size_t)N * sizeof(int));
        float *saved = want ? nn_cuda_alloc((size_t)N * C * sizeof(float)) : NULL;
        nn_cuda_row_loss_fwd(kind, logits->data, y, N, C, prm[0], prm[1], saved, out->data);
        nn_cuda_free(y); /* after the queued kernels: stream-ordered reuse */
        out->aux = saved;
        out->aux_cuda = 1;
        return out;
    }
    float *saved = NULL;
    if (want) {
        saved = malloc((size_t)N * C * sizeof(float));
        NCMI_CHECK(saved, "%s: out of memory", op);
        out->aux = saved;
    }
    double total = 0;
    double *work = malloc((size_t)2 * C * sizeof(double));
    NCMI_CHECK(work, "%s: out of memory", op);
    for (int n = 0; n < N; n++) {
        const float *f = logits->data + (size_t)n * C;
        double *gr = want ? work + C : NULL;
        total += fn(f, labels[n], C, prm, gr, work);
        if (want)
            for (int c = 0; c < C; c++) saved[(size_t)n * C + c] = (float)gr[c];
    }
    free(work);
    out->data[0] = (float)(total / N);
    return out;
}

nn_tensor *nn_loss_focal(nn_graph *g, nn_tensor *logits, const int *labels, float gamma)
{
    NCMI_CHECK(gamma >= 0.f, "focal: gamma %g < 0", (double)gamma);
    const float prm[8] = {gamma};
    return row_loss(g, "focal", row_focal, NN_CUDA_ROW_FOCAL, logits, labels, prm);
}

nn_tensor *nn_loss_poly1(nn_graph *g, nn_tensor *logits, const int *labels, float eps)
{
    const float prm[8] = {eps};
    return row_loss(g, "poly1", row_poly1, NN_CUDA_ROW_POLY1, logits, labels, prm);
}

nn_tensor *nn_loss_square(nn_graph *g, nn_tensor *logits, const int *labels, float k, float M)
{
    NCMI_CHECK(k > 0.f, "square: k %g <= 0", (double)k);
    const float prm[8] = {k, M};
    return row_loss(g, "square", row_square, NN_CUDA_ROW_SQUARE, logits, labels, prm);
}

nn_tensor *nn_loss_squentropy(nn_graph *g, nn_tensor *logits, const int *labels)
{
    const float prm[8] = {0};
    return row_loss(g, "squentropy", row_squentropy, NN_CUDA_ROW_SQUENTROPY, logits, labels, prm);
}

nn_tensor *nn_loss_anticlass(nn_graph *g, nn_tensor *logits, const int *labels, float weight)
{
    NCMI_CHECK(weight >= 0.f, "anticlass: weight %g < 0", (double)weight);
    const float prm[8] = {weight};
    return row_loss(g, "anticlass", row_anticlass, NN_CUDA_ROW_ANTICLASS, logits, labels, prm);
}

nn_tensor *nn_loss_forward(nn_graph *g, const nn_loss_cfg *cfg, nn_tensor *logits,
                           const int *labels)
{
    NCMI_CHECK(cfg != NULL, "loss: NULL config");
    NCMI_CHECK(nn_loss_cfg_check(cfg) == 0, "%s", ncmi_error());
    switch (cfg->kind) {
    case NN_LOSS_CE: return nn_cross_entropy(g, logits, labels, 0.f);
    case NN_LOSS_LABEL_SMOOTHING: return nn_cross_entropy(g, logits, labels, cfg->smoothing);
    case NN_LOSS_FOCAL: return nn_loss_focal(g, logits, labels, cfg->focal_gamma);
    case NN_LOSS_POLY1: return nn_loss_poly1(g, logits, labels, cfg->poly_eps);
    case NN_LOSS_SQUARE: return nn_loss_square(g, logits, labels, cfg->square_k, cfg->square_M);
    case NN_LOSS_SQUENTROPY: return nn_loss_squentropy(g, logits, labels);
    case NN_LOSS_ANTICLASS: return nn_loss_anticlass(g, logits, labels, cfg->anticlass_weight);
    default: break;
    }
    NCMI_CHECK(0, "loss: unknown kind %d", (int)cfg->kind);
    return NULL;
}

nn_tensor *nn_loss_add_aux(nn_graph *g, nn_tensor *loss, nn_tensor *term, float weight)
{
    NCMI_CHECK(loss != NULL && term != NULL, "loss_add_aux: NULL tensor");
    NCMI_CHECK(loss->numel == 1 && term->numel == 1,
               "loss_add_aux: loss (numel %zu) and term (numel %zu) must be scalars", loss->numel,
               term->numel);
    const int one[1] = {1};
    nn_tensor *l = loss->ndim == 1 ? loss : nn_reshape(g, loss, 1, one);
    nn_tensor *t = term->ndim == 1 ? term : nn_reshape(g, term, 1, one);
    return nn_add(g, l, nn_scale(g, t, weight));
}
