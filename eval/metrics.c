/* Classification metrics, scikit-learn 1.2 semantics (see metrics.h). */
#include "metrics.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../nn/error.h"
#include "../nn/rng.h"

static void check_labels(const int *y, int n, int C, const char *what)
{
    for (int i = 0; i < n; i++)
        NCMI_CHECK(y[i] >= 0 && y[i] < C, "eval: %s[%d] = %d outside [0, %d)", what, i, y[i], C);
}

void eval_confusion_matrix(const int *y_true, const int *y_pred, int n, int C, int64_t *cm)
{
    check_labels(y_true, n, C, "y_true");
    check_labels(y_pred, n, C, "y_pred");
    memset(cm, 0, (size_t)C * C * sizeof *cm);
    for (int i = 0; i < n; i++) cm[(size_t)y_true[i] * C + y_pred[i]]++;
}

double eval_accuracy(const int *y_true, const int *y_pred, int n)
{
    if (n < 1) return NAN;
    int64_t hit = 0;
    for (int i = 0; i < n; i++) hit += y_true[i] == y_pred[i];
    return (double)hit / n;
}

double eval_top_k_accuracy(const int *y_true, const double *scores, int n, int C, int k)
{
    if (n < 1 || !scores || k < 1) return NAN;
    check_labels(y_true, n, C, "y_true");
    if (k >= C) return 1.0;
    int64_t hit = 0;
    for (int i = 0; i < n; i++) {
        const double *s = scores + (size_t)i * C;
        int y = y_true[i], ahead = 0;
        /* classes ranked before y: higher score, or equal score and higher index
         * (sklearn: stable argsort ascending, reversed) */
        // cppcheck-suppress arrayIndexThenCheck ; false positive: y is a class index in [0, C), not bounded by j
        for (int j = 0; j < C; j++) ahead += s[j] > s[y] || (s[j] == s[y] && j > y);
        hit += ahead < k;
    }
    return (double)hit / n;
}

/* tp, predicted and true counts per class */
static void prf_counts(const int *y_true, const int *y_pred, int n, int C, int64_t *tp, int64_t *np_,
                       int64_t *nt)
{
    check_labels(y_true, n, C, "y_true");
    check_labels(y_pred, n, C, "y_pred");
    memset(tp, 0, (size_t)C * sizeof *tp);
    memset(np_, 0, (size_t)C * sizeof *np_);
    memset(nt, 0, (size_t)C * sizeof *nt);
    for (int i = 0; i < n; i++) {
        nt[y_true[i]]++;
        np_[y_pred[i]]++;
        tp[y_true[i]] += y_true[i] == y_pred[i];
    }
}

/* sklearn's _prf_divide with zero_division="warn" (0) and its F formula */
static eval_prf prf_from_counts(int64_t tp, int64_t np_, int64_t nt, unsigned *warn)
{
    eval_prf r;
    r.precision = np_ ? (double)tp / (double)np_ : 0.0;
    r.recall = nt ? (double)tp / (double)nt : 0.0;
    if (!np_) *warn |= EVAL_WARN_PRECISION;
    if (!nt) *warn |= EVAL_WARN_RECALL;
    if (!np_ && !nt) *warn |= EVAL_WARN_FSCORE;
    double denom = r.precision + r.recall;
    if (denom == 0.0) denom = 1.0;
    r.f1 = 2.0 * r.precision * r.recall / denom;
    return r;
}

double eval_balanced_accuracy(const int *y_true, const int *y_pred, int n, int C, unsigned *warn)
{
    if (n < 1) return NAN;
    int64_t *cnt = malloc((size_t)3 * C * sizeof *cnt);
    NCMI_CHECK(cnt, "eval_balanced_accuracy: out of memory");
    int64_t *tp = cnt, *np_ = cnt + C, *nt = cnt + 2 * C;
    prf_counts(y_true, y_pred, n, C, tp, np_, nt);
    double sum = 0;
    int m = 0;
    unsigned w = 0;
    for (int c = 0; c < C; c++) {
        if (nt[c]) {
            sum += (double)tp[c] / (double)nt[c];
            m++;
        } else if (np_[c]) {
            w |= EVAL_WARN_BALANCED;
        }
    }
    free(cnt);
    if (warn) *warn |= w;
    return sum / m;
}

void eval_prf_per_class(const int *y_true, const int *y_pred, int n, int C, double *precision,
                        double *recall, double *f1, int64_t *support, unsigned *warn)
{
    int64_t *cnt = malloc((size_t)3 * C * sizeof *cnt);
    NCMI_CHECK(cnt, "eval_prf_per_class: out of memory");
    int64_t *tp = cnt, *np_ = cnt + C, *nt = cnt + 2 * C;
    prf_counts(y_true, y_pred, n, C, tp, np_, nt);
    unsigned w = 0;
    for (int c = 0; c < C; c++) {
        eval_prf r = prf_from_counts(tp[c], np_[c], nt[c], &w);
        if (precision) precision[c] = r.precision;
        if (recall) recall[c] = r.recall;
        if (f1) f1[c] = r.f1;
        if (support) support[c] = nt[c];
    }
    free(cnt);
    if (warn) *warn |= w;
}

eval_prf eval_prf_average(const int *y_true, const int *y_pred, int n, int C, eval_average avg,
                          unsigned *warn)
{
    eval_prf out = {NAN, NAN, NAN};
    if (n < 1) return out;
    int64_t *cnt = malloc((size_t)3 * C * sizeof *cnt);
    NCMI_CHECK(cnt, "eval_prf_average: out of memory");
    int64_t *tp = cnt, *np_ = cnt + C, *nt = cnt + 2 * C;
    prf_counts(y_true, y_pred, n, C, tp, np_, nt);
    unsigned w = 0;
    if (avg == EVAL_AVG_MICRO) {
        int64_t t = 0, p = 0, s = 0;
        for (int c = 0; c < C; c++) {
            t += tp[c];
            p += np_[c];
            s += nt[c];
        }
        out = prf_from_counts(t, p, s, &w);
    } else {
        double sp = 0, sr = 0, sf = 0, sw = 0;
        int m = 0;
        for (int c = 0; c < C; c++) {
            if (!nt[c] && !np_[c]) continue; /* labels=None: only classes present */
            eval_prf r = prf_from_counts(tp[c], np_[c], nt[c], &w);
            double wt = avg == EVAL_AVG_WEIGHTED ? (double)nt[c] : 1.0;
            sp += r.precision * wt;
            sr += r.recall * wt;
            sf += r.f1 * wt;
            sw += wt;
            m++;
        }
        (void)m;
        /* n >= 1 so at least one class is present and, weighted, sw = n > 0 */
        out.precision = sp / sw;
        out.recall = sr / sw;
        out.f1 = sf / sw;
    }
    free(cnt);
    if (warn) *warn |= w & (EVAL_WARN_PRECISION | EVAL_WARN_RECALL);
    return out;
}

/* ---- ROC-AUC ---- */

typedef struct {
    double s;
    int pos;
} scored;

static int cmp_desc(const void *a, const void *b)
{
    double x = ((const scored *)a)->s, y = ((const scored *)b)->s;
    return (x < y) - (x > y);
}

/* Area under the ROC curve of the sorted (descending) list: trapezoids between
 * consecutive distinct thresholds. With counts in integers, the doubled area
 * Σ Δfp·(tp_before + tp_after) is exact; one division at the end. */
static double auc_sorted(const scored *v, int n)
{
    int64_t P = 0;
    for (int i = 0; i < n; i++) P += v[i].pos != 0;
    int64_t N = n - P;
    if (P == 0 || N == 0) return NAN;
    double area2 = 0; /* exact while < 2^53 */
    int64_t tp = 0, fp = 0;
    for (int i = 0; i < n;) {
        int64_t dtp = 0, dfp = 0;
        int j = i;
        for (; j < n && v[j].s == v[i].s; j++) {
            if (v[j].pos)
                dtp++;
            else
                dfp++;
        }
        area2 += (double)dfp * (double)(2 * tp + dtp);
        tp += dtp;
        fp += dfp;
        i = j;
    }
    return area2 / (2.0 * (double)P * (double)N);
}

double eval_auc_binary(const int *is_pos, const double *score, int n)
{
    if (n < 1) return NAN;
    scored *v = malloc((size_t)n * sizeof *v);
    NCMI_CHECK(v, "eval_auc_binary: out of memory");
    for (int i = 0; i < n; i++) v[i] = (scored){score[i], is_pos[i] != 0};
    qsort(v, (size_t)n, sizeof *v, cmp_desc);
    double a = auc_sorted(v, n);
    free(v);
    return a;
}

int eval_auc_ovr(const int *y_true, const double *scores, int n, int C, double *auc, double *macro,
                 double *weighted, unsigned *warn)
{
    check_labels(y_true, n, C, "y_true");
    scored *v = malloc((size_t)(n > 0 ? n : 1) * sizeof *v);
    int64_t *nt = calloc((size_t)C, sizeof *nt);
    NCMI_CHECK(v && nt, "eval_auc_ovr: out of memory");
    for (int i = 0; i < n; i++) nt[y_true[i]]++;
    double sum = 0, wsum = 0, wtot = 0;
    int defined = 0;
    for (int c = 0; c < C; c++) {
        for (int i = 0; i < n; i++) v[i] = (scored){scores[(size_t)i * C + c], y_true[i] == c};
        qsort(v, (size_t)n, sizeof *v, cmp_desc);
        double a = n > 0 ? auc_sorted(v, n) : NAN;
        if (auc) auc[c] = a;
        if (isnan(a)) {
            if (warn) *warn |= EVAL_WARN_AUC;
            continue;
        }
        defined++;
        sum += a;
        wsum += a * (double)nt[c];
        wtot += (double)nt[c];
    }
    if (macro) *macro = defined ? sum / defined : NAN;
    if (weighted) *weighted = wtot > 0 ? wsum / wtot : NAN;
    free(v);
    free(nt);
    return defined;
}

/* ---- metrics by name ---- */

static const char *metric_names[EVAL_M_COUNT] = {
    [EVAL_M_ACCURACY] = "accuracy",
    [EVAL_M_BALANCED_ACCURACY] = "balanced_accuracy",
    [EVAL_M_PRECISION_MACRO] = "precision_macro",
    [EVAL_M_RECALL_MACRO] = "recall_macro",
    [EVAL_M_F1_MACRO] = "f1_macro",
    [EVAL_M_PRECISION_MICRO] = "precision_micro",
    [EVAL_M_RECALL_MICRO] = "recall_micro",
    [EVAL_M_F1_MICRO] = "f1_micro",
    [EVAL_M_PRECISION_WEIGHTED] = "precision_weighted",
    [EVAL_M_RECALL_WEIGHTED] = "recall_weighted",
    [EVAL_M_F1_WEIGHTED] = "f1_weighted",
    [EVAL_M_AUC_MACRO] = "auc_macro",
    [EVAL_M_AUC_WEIGHTED] = "auc_weighted",
    [EVAL_M_AUC_BINARY] = "auc",
    [EVAL_M_TOP2] = "top_2_accuracy",
    [EVAL_M_TOP3] = "top_3_accuracy",
    [EVAL_M_TOP5] = "top_5_accuracy",
};

const char *eval_metric_name(eval_metric m)
{
    return (int)m >= 0 && m < EVAL_M_COUNT ? metric_names[m] : "?";
}

int eval_metric_from_name(const char *name)
{
    for (int m = 0; m < EVAL_M_COUNT; m++)
        if (strcmp(metric_names[m], name) == 0) return m;
    return -1;
}

double eval_metric_compute(eval_metric m, const int *y_true, const int *y_pred, const double *scores,
                           int n, int C)
{
    if (n < 1) return NAN;
    double macro, weighted;
    switch (m) {
    case EVAL_M_ACCURACY: return eval_accuracy(y_true, y_pred, n);
    case EVAL_M_BALANCED_ACCURACY: return eval_balanced_accuracy(y_true, y_pred, n, C, NULL);
    case EVAL_M_PRECISION_MACRO: return eval_prf_average(y_true, y_pred, n, C, EVAL_AVG_MACRO, NULL).precision;
    case EVAL_M_RECALL_MACRO: return eval_prf_average(y_true, y_pred, n, C, EVAL_AVG_MACRO, NULL).recall;
    case EVAL_M_F1_MACRO: return eval_prf_average(y_true, y_pred, n, C, EVAL_AVG_MACRO, NULL).f1;
    case EVAL_M_PRECISION_MICRO: return eval_prf_average(y_true, y_pred, n, C, EVAL_AVG_MICRO, NULL).precision;
    case EVAL_M_RECALL_MICRO: return eval_prf_average(y_true, y_pred, n, C, EVAL_AVG_MICRO, NULL).recall;
    case EVAL_M_F1_MICRO: return eval_prf_average(y_true, y_pred, n, C, EVAL_AVG_MICRO, NULL).f1;
    case EVAL_M_PRECISION_WEIGHTED:
        return eval_prf_average(y_true, y_pred, n, C, EVAL_AVG_WEIGHTED, NULL).precision;
    case EVAL_M_RECALL_WEIGHTED: return eval_prf_average(y_true, y_pred, n, C, EVAL_AVG_WEIGHTED, NULL).recall;
    case EVAL_M_F1_WEIGHTED: return eval_prf_average(y_true, y_pred, n, C, EVAL_AVG_WEIGHTED, NULL).f1;
    case EVAL_M_AUC_MACRO:
        if (!scores) return NAN;
        eval_auc_ovr(y_true, scores, n, C, NULL, &macro, NULL, NULL);
        return macro;
    case EVAL_M_AUC_WEIGHTED:
        if (!scores) return NAN;
        eval_auc_ovr(y_true, scores, n, C, NULL, NULL, &weighted, NULL);
        return weighted;
    case EVAL_M_AUC_BINARY: {
        if (!scores || C != 2) return NAN;
        int *pos = malloc((size_t)n * sizeof *pos);
        double *s = malloc((size_t)n * sizeof *s);
        NCMI_CHECK(pos && s, "eval_metric_compute: out of memory");
        for (int i = 0; i < n; i++) {
            pos[i] = y_true[i] == 1;
            s[i] = scores[(size_t)i * 2 + 1];
        }
        double a = eval_auc_binary(pos, s, n);
        free(pos);
        free(s);
        return a;
    }
    case EVAL_M_TOP2: return C > 2 ? eval_top_k_accuracy(y_true, scores, n, C, 2) : NAN;
    case EVAL_M_TOP3: return C > 3 ? eval_top_k_accuracy(y_true, scores, n, C, 3) : NAN;
    case EVAL_M_TOP5: return C > 5 ? eval_top_k_accuracy(y_true, scores, n, C, 5) : NAN;
    case EVAL_M_COUNT: break;
    }
    NCMI_CHECK(0, "eval_metric_compute: unknown metric %d", (int)m);
    return NAN;
}

/* ---- bootstrap ---- */

typedef struct {
    eval_metric m;
} named_ctx;

static double named_fn(const int *y_true, const int *y_pred, const double *scores, int n, int C, void *ctx)
{
    return eval_metric_compute(((named_ctx *)ctx)->m, y_true, y_pred, scores, n, C);
}

int eval_bootstrap_ci(eval_metric m, const int *y_true, const int *y_pred, const double *scores, int n,
                      int C, int B, uint64_t seed, double level, eval_ci *out)
{
    named_ctx ctx = {m};
    return eval_bootstrap_ci_fn(named_fn, &ctx, y_true, y_pred, scores, n, C, B, seed, level, out);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* numpy.percentile(v, 100 q), method 'linear', v sorted, m >= 1 */
static double quantile_sorted(const double *v, int m, double q)
{
    double pos = q * (m - 1);
    int lo = (int)floor(pos);
    if (lo >= m - 1) return v[m - 1];
    double t = pos - lo;
    double a = v[lo], b = v[lo + 1];
    return t >= 0.5 ? b - (b - a) * (1 - t) : a + (b - a) * t;
}

int eval_bootstrap_ci_fn(eval_metric_fn fn, void *ctx, const int *y_true, const int *y_pred,
                         const double *scores, int n, int C, int B, uint64_t seed, double level,
                         eval_ci *out)
{
    if (n < 1) return ncmi_error_set("bootstrap: no samples");
    if (B < 1) return ncmi_error_set("bootstrap: number of resamples %d < 1", B);
    if (!(level > 0 && level < 1)) return ncmi_error_set("bootstrap: level %g outside (0, 1)", level);
    nn_rng *streams = malloc((size_t)B * sizeof *streams);
    double *vals = malloc((size_t)B * sizeof *vals);
    if (!streams || !vals) {
        free(streams);
        free(vals);
        return ncmi_error_set("bootstrap: out of memory (B = %d)", B);
    }
    nn_rng master;
    nn_rng_seed(&master, seed);
    for (int b = 0; b < B; b++) streams[b] = nn_rng_fork(&master, (uint64_t)b);
    int oom = 0;
#pragma omp parallel
    {
        int *yt = malloc((size_t)n * sizeof *yt);
        int *yp = y_pred ? malloc((size_t)n * sizeof *yp) : NULL;
        double *sc = scores ? malloc((size_t)n * C * sizeof *sc) : NULL;
        int ok = yt && (!y_pred || yp) && (!scores || sc);
        if (!ok) {
#pragma omp atomic write
            oom = 1;
        }
#pragma omp for schedule(static)
        for (int b = 0; b < B; b++) {
            if (!ok) continue;
            nn_rng r = streams[b];
            for (int i = 0; i < n; i++) {
                int k = (int)nn_rng_below(&r, (uint64_t)n);
                yt[i] = y_true[k];
                if (yp) yp[i] = y_pred[k];
                if (sc) memcpy(sc + (size_t)i * C, scores + (size_t)k * C, (size_t)C * sizeof *sc);
            }
            vals[b] = fn(yt, yp, sc, n, C, ctx);
        }
        free(yt);
        free(yp);
        free(sc);
    }
    free(streams);
    if (oom) {
        free(vals);
        return ncmi_error_set("bootstrap: out of memory (n = %d)", n);
    }
    int m = 0;
    for (int b = 0; b < B; b++)
        if (!isnan(vals[b])) vals[m++] = vals[b];
    qsort(vals, (size_t)m, sizeof *vals, cmp_double);
    out->point = fn(y_true, y_pred, scores, n, C, ctx);
    out->B = B;
    out->n_valid = m;
    out->lo = m ? quantile_sorted(vals, m, (1 - level) / 2) : NAN;
    out->hi = m ? quantile_sorted(vals, m, (1 + level) / 2) : NAN;
    free(vals);
    return 0;
}

/* ---- report ---- */

void eval_report_free(eval_report *r)
{
    free(r->present);
    free(r->precision);
    free(r->recall);
    free(r->f1);
    free(r->support);
    free(r->predicted);
    free(r->confusion);
    free(r->auc);
    memset(r, 0, sizeof *r);
}

int eval_report_compute(eval_report *r, const int *y_true, const int *y_pred, const double *scores,
                        int n, int C)
{
    memset(r, 0, sizeof *r);
    if (n < 1) return ncmi_error_set("metrics: no samples");
    if (C < 1) return ncmi_error_set("metrics: no classes");
    r->n = n;
    r->C = C;
    r->present = calloc((size_t)C, 1);
    r->precision = malloc((size_t)C * sizeof(double));
    r->recall = malloc((size_t)C * sizeof(double));
    r->f1 = malloc((size_t)C * sizeof(double));
    r->support = malloc((size_t)C * sizeof(int64_t));
    r->predicted = calloc((size_t)C, sizeof(int64_t));
    r->confusion = malloc((size_t)C * C * sizeof(int64_t));
    r->auc = malloc((size_t)C * sizeof(double));
    if (!r->present || !r->precision || !r->recall || !r->f1 || !r->support || !r->predicted ||
        !r->confusion || !r->auc) {
        eval_report_free(r);
        return ncmi_error_set("metrics: out of memory (C = %d)", C);
    }
    eval_confusion_matrix(y_true, y_pred, n, C, r->confusion);
    for (int i = 0; i < n; i++) {
        r->present[y_true[i]] = r->present[y_pred[i]] = 1;
        r->predicted[y_pred[i]]++;
    }
    for (int c = 0; c < C; c++) r->n_present += r->present[c];
    r->accuracy = eval_accuracy(y_true, y_pred, n);
    r->balanced_accuracy = eval_balanced_accuracy(y_true, y_pred, n, C, &r->warnings);
    unsigned per_class_warn = 0;
    eval_prf_per_class(y_true, y_pred, n, C, r->precision, r->recall, r->f1, r->support, &per_class_warn);
    r->macro = eval_prf_average(y_true, y_pred, n, C, EVAL_AVG_MACRO, &r->warnings);
    r->micro = eval_prf_average(y_true, y_pred, n, C, EVAL_AVG_MICRO, &r->warnings);
    r->weighted = eval_prf_average(y_true, y_pred, n, C, EVAL_AVG_WEIGHTED, &r->warnings);
    static const int ks[3] = {2, 3, 5};
    for (int i = 0; i < 3; i++) {
        r->top_k_k[i] = ks[i];
        r->top_k[i] = scores && ks[i] < C ? eval_top_k_accuracy(y_true, scores, n, C, ks[i]) : NAN;
    }
    r->auc_macro = r->auc_weighted = r->auc_binary = NAN;
    if (scores) {
        r->n_auc_defined = eval_auc_ovr(y_true, scores, n, C, r->auc, &r->auc_macro, &r->auc_weighted,
                                        &r->warnings);
        if (C == 2) r->auc_binary = eval_metric_compute(EVAL_M_AUC_BINARY, y_true, y_pred, scores, n, C);
    } else {
        for (int c = 0; c < C; c++) r->auc[c] = NAN;
    }
    return 0;
}
