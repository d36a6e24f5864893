/* Exact dataset-level CMI, Γ and NCMI of a set of vectors with labels
 * (paper Eq. 5-8; docs: ../shared/docs/ncmi.md "Measuring a model or a
 * feature set"), and nearest-centroid (KL) accuracy.
 *
 * Every vector v ∈ R^D is mapped onto the simplex:
 *   nsf:     p_j = s(v_j) / (Σ_i s(v_i) + 1e-8), s the logistic sigmoid
 *   softmax: p_j = exp(v_j) / Σ_i exp(v_i)
 * (computed in double, in log space: ln p is always finite).
 * With n_c samples in class c and N = Σ n_c:
 *   s^c   = (1/n_c) Σ_{x: y_x = c} p_x                       (class centroids)
 *   CMI   = (1/N) Σ_x KL(p_x ‖ s^{y_x})
 *   Γ     = (1/N²) Σ_z Σ_{c ≠ y_z} n_c KL(s^c ‖ p_z)
 *         = (1/N²) Σ_z Σ_{x: y_x ≠ y_z} KL(s^{y_x} ‖ p_z)     (Eq. 7, O(N·C·D))
 *   NCMI  = CMI / Γ   (NaN when Γ = 0, e.g. fewer than two classes present)
 *   cc_accuracy = fraction of x with argmin_c KL(p_x ‖ s^c) = y_x, the argmin
 *         over the classes present (ties: lowest class index).
 * KL(p‖q) = Σ_j p_j ln(p_j/q_j) with 0·ln 0 = 0. Classes with no sample take
 * no part (their centroid is undefined).
 *
 * Two passes over the data, in as many chunks as the caller likes (files,
 * batches): pass 1 accumulates the centroids, pass 2 the terms.
 *
 *   eval_cmi m;
 *   eval_cmi_init(&m, C, D, EVAL_SIMPLEX_NSF);
 *   for each chunk: eval_cmi_add_centroids(&m, x, y, n);      // pass 1
 *   eval_cmi_finish_centroids(&m);
 *   for each chunk: eval_cmi_add_terms(&m, x, y, n);          // pass 2, same data
 *   eval_cmi_result r; eval_cmi_get(&m, &r);
 *   eval_cmi_free(&m);
 *
 * Results do not depend on the thread count or on how the data is chunked
 * (up to the order of the final sums over chunks).
 */
#ifndef NCMI_EVAL_CMI_H
#define NCMI_EVAL_CMI_H

#include <stdint.h>

typedef enum eval_simplex {
    EVAL_SIMPLEX_NSF,     /* normalized sigmoid, +1e-8 in the denominator (ncmi.md) */
    EVAL_SIMPLEX_SOFTMAX, /* softmax (the paper's Fig. 2 on pretrained features) */
} eval_simplex;

/* "nsf" / "softmax"; -1 when unknown */
int eval_simplex_from_name(const char *name);
const char *eval_simplex_name(eval_simplex s);

/* ln p of one vector v[D] (double out[D]). */
void eval_simplex_log(eval_simplex s, const float *v, int D, double *logp);

typedef struct eval_cmi_result {
    double cmi, gamma, ncmi, cc_accuracy;
    int64_t n;             /* samples */
    int C;                 /* classes asked for */
    int n_classes_present; /* classes with at least one sample */
} eval_cmi_result;

typedef struct eval_cmi {
    int C, D;
    eval_simplex simplex;
    int phase;       /* 1: centroids, 2: terms */
    int64_t *count;  /* [C] samples per class (pass 1) */
    int64_t *count2; /* [C] (pass 2, must match) */
    double *s;       /* [C*D] sums of p, then centroids s^c */
    double *log_s;   /* [C*D] ln s^c */
    double *negent;  /* [C] Σ_j s^c_j ln s^c_j */
    double cmi_sum, gamma_sum;
    int64_t cc_hits;
} eval_cmi;

/* 0, or -1 (C < 1, D < 1, out of memory). */
int eval_cmi_init(eval_cmi *m, int C, int D, eval_simplex s);
void eval_cmi_free(eval_cmi *m);
/* x[n*D] row-major, y[n] in [0, C) (checked: programming error). */
void eval_cmi_add_centroids(eval_cmi *m, const float *x, const int *y, int64_t n);
/* 0, or -1 when no sample was added. */
int eval_cmi_finish_centroids(eval_cmi *m);
void eval_cmi_add_terms(eval_cmi *m, const float *x, const int *y, int64_t n);
/* 0, or -1 when pass 2 did not see the same class counts as pass 1. */
int eval_cmi_get(const eval_cmi *m, eval_cmi_result *out);
/* centroids s^c [C*D] (valid after eval_cmi_finish_centroids; rows of absent classes are 0) */
const double *eval_cmi_centroids(const eval_cmi *m);

/* Both passes over one in-memory array. 0 or -1. */
int eval_cmi_measure(const float *x, const int *y, int64_t n, int D, int C, eval_simplex s,
                     eval_cmi_result *out);

#endif
