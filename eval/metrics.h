/* Classification metrics with scikit-learn 1.2 semantics.
 *
 * Inputs: y_true[n] and y_pred[n], class indices in [0, C); scores[n*C]
 * (row-major [n, C]: probabilities or any finite scores, higher = more
 * likely). Results are doubles; a value that is undefined is NaN.
 *
 *  - Averages over classes (macro, weighted) follow sklearn with labels=None:
 *    they run over the classes present in y_true ∪ y_pred, not over all C.
 *  - Division by zero follows sklearn's default zero_division="warn": the
 *    value is 0 and a warning bit (EVAL_WARN_*) is set.
 *  - Per-class arrays cover all C classes (sklearn with labels=range(C)):
 *    a class absent from both y_true and y_pred has precision = recall =
 *    F1 = 0 and support 0 (and is left out of the macro averages).
 *  - One-vs-rest ROC-AUC: AUC of class c = area under the ROC curve of
 *    (y_true == c) scored by scores[:, c], trapezoids over distinct
 *    thresholds (tied scores form one step), as sklearn's roc_auc_score.
 *    A class with no positive or no negative sample has an undefined AUC
 *    (NaN, EVAL_WARN_AUC) where sklearn raises. auc_macro is the mean over
 *    the classes whose AUC is defined; auc_weighted weights them by their
 *    support (classes absent from y_true have weight 0 anyway). Both equal
 *    roc_auc_score(multi_class='ovr', labels=range(C)) whenever that is
 *    defined (every class present in y_true).
 *  - Top-k accuracy: a sample is a hit when its true class is among the k
 *    highest scores; ties broken as sklearn's stable argsort reversed (of
 *    equal scores, the higher class index ranks first). The same rule is
 *    used for C = 2 (sklearn thresholds binary scores at 0.5 instead).
 *  - Scores must be finite (the readers reject NaN/inf).
 */
#ifndef NCMI_EVAL_METRICS_H
#define NCMI_EVAL_METRICS_H

#include <stdint.h>

/* warning bits: what sklearn would have warned about */
enum {
    EVAL_WARN_PRECISION = 1, /* a class has no predicted sample: precision set to 0 */
    EVAL_WARN_RECALL = 2,    /* a class has no true sample: recall set to 0 */
    EVAL_WARN_FSCORE = 4,    /* a class has neither (only possible per class): F1 set to 0 */
    EVAL_WARN_BALANCED = 8,  /* y_pred has classes absent from y_true (ignored by balanced accuracy) */
    EVAL_WARN_AUC = 16,      /* some class's one-vs-rest AUC is undefined */
};

/* cm[i*C + j] = number of samples with true class i predicted as j. */
void eval_confusion_matrix(const int *y_true, const int *y_pred, int n, int C, int64_t *cm);

double eval_accuracy(const int *y_true, const int *y_pred, int n);
/* k >= C gives 1. */
double eval_top_k_accuracy(const int *y_true, const double *scores, int n, int C, int k);
/* Mean recall over the classes present in y_true. warn may be NULL. */
double eval_balanced_accuracy(const int *y_true, const int *y_pred, int n, int C, unsigned *warn);

/* Per class, all C classes (sklearn with labels=range(C)): arrays [C] (any
 * may be NULL). warn gets PRECISION/RECALL/FSCORE bits over all C classes. */
void eval_prf_per_class(const int *y_true, const int *y_pred, int n, int C, double *precision,
                        double *recall, double *f1, int64_t *support, unsigned *warn);

typedef enum eval_average {
    EVAL_AVG_MACRO,    /* unweighted mean over the classes in y_true ∪ y_pred */
    EVAL_AVG_MICRO,    /* from the summed counts (= accuracy for single-label data) */
    EVAL_AVG_WEIGHTED, /* weighted by support */
} eval_average;

typedef struct eval_prf {
    double precision, recall, f1;
} eval_prf;

/* labels=None semantics; warn gets PRECISION/RECALL bits for the classes
 * that take part (those in y_true ∪ y_pred). */
eval_prf eval_prf_average(const int *y_true, const int *y_pred, int n, int C, eval_average avg,
                          unsigned *warn);

/* Binary ROC-AUC: positives are the samples with is_pos[i] != 0. NaN when
 * all samples are positive or all negative. */
double eval_auc_binary(const int *is_pos, const double *score, int n);

/* One-vs-rest AUC (see the top). auc[C] may be NULL; macro/weighted may be
 * NULL. Returns the number of classes whose AUC is defined. */
int eval_auc_ovr(const int *y_true, const double *scores, int n, int C, double *auc, double *macro,
                 double *weighted, unsigned *warn);

/* ---- every metric by name (bootstrap, model selection, reports) ---- */
typedef enum eval_metric {
    EVAL_M_ACCURACY,
    EVAL_M_BALANCED_ACCURACY,
    EVAL_M_PRECISION_MACRO,
    EVAL_M_RECALL_MACRO,
    EVAL_M_F1_MACRO,
    EVAL_M_PRECISION_MICRO,
    EVAL_M_RECALL_MICRO,
    EVAL_M_F1_MICRO,
    EVAL_M_PRECISION_WEIGHTED,
    EVAL_M_RECALL_WEIGHTED,
    EVAL_M_F1_WEIGHTED,
    EVAL_M_AUC_MACRO,    /* one-vs-rest, over the classes with a defined AUC */
    EVAL_M_AUC_WEIGHTED, /* one-vs-rest, support-weighted */
    EVAL_M_AUC_BINARY,   /* C == 2: AUC of scores[:, 1] for class 1 (NaN for C != 2) */
    EVAL_M_TOP2,
    EVAL_M_TOP3,
    EVAL_M_TOP5,
    EVAL_M_COUNT
} eval_metric;

/* "accuracy", "balanced_accuracy", "precision_macro", ..., "f1_weighted", "auc_macro",
 * "auc_weighted", "auc", "top_2_accuracy", "top_3_accuracy", "top_5_accuracy". */
const char *eval_metric_name(eval_metric m);
/* -1 when unknown */
int eval_metric_from_name(const char *name);
/* scores may be NULL for the metrics that do not use them (then AUC/top-k give NaN). */
double eval_metric_compute(eval_metric m, const int *y_true, const int *y_pred, const double *scores,
                           int n, int C);

/* ---- bootstrap confidence intervals (percentile method) ----
 * Resample b (b = 0..B-1) draws n indices with replacement from its own
 * stream nn_rng_fork(&master, b), master = nn_rng_seed(seed) (forks taken in
 * order b = 0, 1, ...), so the result does not depend on the thread count.
 * Resamples where the metric is undefined (NaN: e.g. an AUC with one class
 * drawn) are dropped and counted. lo/hi are the (1-level)/2 and (1+level)/2
 * quantiles of the remaining values with linear interpolation (numpy's
 * default percentile). point is the metric on the full data. */
typedef struct eval_ci {
    double point, lo, hi;
    int n_valid; /* resamples with a defined value */
    int B;
} eval_ci;

typedef double (*eval_metric_fn)(const int *y_true, const int *y_pred, const double *scores, int n,
                                 int C, void *ctx);

/* 0, or -1 (B < 1, n < 1, level outside (0,1), out of memory). */
int eval_bootstrap_ci(eval_metric m, const int *y_true, const int *y_pred, const double *scores, int n,
                      int C, int B, uint64_t seed, double level, eval_ci *out);
int eval_bootstrap_ci_fn(eval_metric_fn fn, void *ctx, const int *y_true, const int *y_pred,
                         const double *scores, int n, int C, int B, uint64_t seed, double level,
                         eval_ci *out);

/* ---- everything at once (ncmi eval, per-epoch validation) ---- */
typedef struct eval_report {
    int n, C;
    int n_present;          /* classes in y_true ∪ y_pred: the macro set */
    unsigned char *present; /* [C] */
    double accuracy, balanced_accuracy;
    double top_k[3]; /* k = top_k_k[i]; NaN when k >= C or no scores */
    int top_k_k[3];  /* 2, 3, 5 */
    eval_prf macro, micro, weighted;
    double *precision, *recall, *f1; /* [C] per class */
    int64_t *support;                /* [C] true samples per class */
    int64_t *predicted;              /* [C] predicted samples per class */
    int64_t *confusion;              /* [C*C] rows = true, columns = predicted */
    double *auc;                     /* [C] one-vs-rest, NaN = undefined */
    double auc_macro, auc_weighted;
    int n_auc_defined;
    double auc_binary; /* C == 2 only, else NaN */
    unsigned warnings; /* EVAL_WARN_* */
} eval_report;

/* scores may be NULL (no AUC / top-k: NaN). 0, or -1 (n < 1, out of memory). */
int eval_report_compute(eval_report *r, const int *y_true, const int *y_pred, const double *scores,
                        int n, int C);
void eval_report_free(eval_report *r);

#endif
