/* Dataset-level CMI, Γ, NCMI (paper Eq. 5-8), see cmi.h. */
#include "cmi.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../nn/error.h"

#define NSF_EPS 1e-8

int eval_simplex_from_name(const char *name)
{
    if (strcmp(name, "nsf") == 0) return EVAL_SIMPLEX_NSF;
    if (strcmp(name, "softmax") == 0) return EVAL_SIMPLEX_SOFTMAX;
    return -1;
}

const char *eval_simplex_name(eval_simplex s) { return s == EVAL_SIMPLEX_NSF ? "nsf" : "softmax"; }

/* ln s(v) = -softplus(-v), stable for any finite v */
static inline double log_sigmoid(double v) { return -(log1p(exp(-fabs(v))) + (v < 0 ? -v : 0.0)); }

/* ln p_j = elem(v_j) - norm: the per-vector normalizer */
static double simplex_norm(eval_simplex s, const float *v, int D)
{
    if (s == EVAL_SIMPLEX_NSF) {
        double sum = 0;
        for (int j = 0; j < D; j++) sum += exp(log_sigmoid(v[j]));
        return log(sum + NSF_EPS);
    }
    double mx = -INFINITY;
    for (int j = 0; j < D; j++) mx = v[j] > mx ? v[j] : mx;
    double sum = 0;
    for (int j = 0; j < D; j++) sum += exp((double)v[j] - mx);
    // cppcheck-suppress invalidFunctionArg ; false positive: sum >= 1: the max term is exp(0)
    return mx + log(sum);
}

static inline double simplex_elem(eval_simplex s, float v)
{
    return s == EVAL_SIMPLEX_NSF ? log_sigmoid(v) : (double)v;
}

void eval_simplex_log(eval_simplex s, const float *v, int D, double *logp)
{
    double norm = simplex_norm(s, v, D);
    for (int j = 0; j < D; j++) logp[j] = simplex_elem(s, v[j]) - norm;
}

int eval_cmi_init(eval_cmi *m, int C, int D, eval_simplex s)
{
    memset(m, 0, sizeof *m);
    if (C < 1 || D < 1) return ncmi_error_set("cmi: need C >= 1 and D >= 1 (got C = %d, D = %d)", C, D);
    m->C = C;
    m->D = D;
    m->simplex = s;
    m->phase = 1;
    m->count = calloc((size_t)C, sizeof *m->count);
    m->count2 = calloc((size_t)C, sizeof *m->count2);
    m->s = calloc((size_t)C * D, sizeof *m->s);
    m->log_s = calloc((size_t)C * D, sizeof *m->log_s);
    m->negent = calloc((size_t)C, sizeof *m->negent);
    if (!m->count || !m->count2 || !m->s || !m->log_s || !m->negent) {
        eval_cmi_free(m);
        return ncmi_error_set("cmi: out of memory (C = %d, D = %d)", C, D);
    }
    return 0;
}

void eval_cmi_free(eval_cmi *m)
{
    free(m->count);
    free(m->count2);
    free(m->s);
    free(m->log_s);
    free(m->negent);
    memset(m, 0, sizeof *m);
}

static void check_y(const eval_cmi *m, const int *y, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        NCMI_CHECK(y[i] >= 0 && y[i] < m->C, "cmi: label y[%lld] = %d outside [0, %d)", (long long)i, y[i],
                   m->C);
}

void eval_cmi_add_centroids(eval_cmi *m, const float *x, const int *y, int64_t n)
{
    NCMI_CHECK(m->phase == 1, "eval_cmi_add_centroids after eval_cmi_finish_centroids");
    check_y(m, y, n);
    if (n <= 0) return;
    const int D = m->D;
    double *norm = malloc((size_t)n * sizeof *norm);
    NCMI_CHECK(norm, "cmi: out of memory (n = %lld)", (long long)n);
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) norm[i] = simplex_norm(m->simplex, x + i * D, D);
    /* columns in parallel, samples in order: the sums do not depend on threads */
#pragma omp parallel for schedule(static)
    for (int j = 0; j < D; j++)
        for (int64_t i = 0; i < n; i++)
            m->s[(size_t)y[i] * D + j] += exp(simplex_elem(m->simplex, x[i * D + j]) - norm[i]);
    for (int64_t i = 0; i < n; i++) m->count[y[i]]++;
    free(norm);
}

int eval_cmi_finish_centroids(eval_cmi *m)
{
    NCMI_CHECK(m->phase == 1, "eval_cmi_finish_centroids called twice");
    int64_t total = 0;
    for (int c = 0; c < m->C; c++) total += m->count[c];
    if (total == 0) return ncmi_error_set("cmi: no samples");
    const int D = m->D;
    for (int c = 0; c < m->C; c++) {
        double *s = m->s + (size_t)c * D, *ls = m->log_s + (size_t)c * D;
        double ne = 0;
        for (int j = 0; j < D; j++) {
            if (m->count[c]) s[j] /= (double)m->count[c];
            ls[j] = log(s[j]); /* -inf where s_j = 0 (only with underflow or absent class) */
            if (s[j] > 0) ne += s[j] * ls[j];
        }
        m->negent[c] = ne;
    }
    m->phase = 2;
    return 0;
}

const double *eval_cmi_centroids(const eval_cmi *m) { return m->s; }

void eval_cmi_add_terms(eval_cmi *m, const float *x, const int *y, int64_t n)
{
    NCMI_CHECK(m->phase == 2, "eval_cmi_add_terms before eval_cmi_finish_centroids");
    check_y(m, y, n);
    if (n <= 0) return;
    const int C = m->C, D = m->D;
    double *cmi_i = malloc((size_t)n * sizeof *cmi_i);
    double *gam_i = malloc((size_t)n * sizeof *gam_i);
    unsigned char *hit = malloc((size_t)n);
    NCMI_CHECK(cmi_i && gam_i && hit, "cmi: out of memory (n = %lld)", (long long)n);
#pragma omp parallel
    {
        double *logp = malloc((size_t)D * sizeof *logp);
        double *p = malloc((size_t)D * sizeof *p);
        NCMI_CHECK(logp && p, "cmi: out of memory (D = %d)", D);
#pragma omp for schedule(static)
        for (int64_t i = 0; i < n; i++) {
            eval_simplex_log(m->simplex, x + i * D, D, logp);
            double h = 0; /* Σ p ln p */
            for (int j = 0; j < D; j++) {
                p[j] = exp(logp[j]);
                if (p[j] > 0) h += p[j] * logp[j];
            }
            int yi = y[i], best = -1;
            double best_kl = INFINITY, gsum = 0, kl_own = 0;
            for (int c = 0; c < C; c++) {
                if (!m->count[c]) continue;
                const double *s = m->s + (size_t)c * D, *ls = m->log_s + (size_t)c * D;
                /* KL(p ‖ s^c) = Σ p ln p - Σ p ln s^c ;  KL(s^c ‖ p) = Σ s ln s - Σ s ln p */
                double cross_p = 0, cross_s = 0;
                for (int j = 0; j < D; j++) {
                    if (p[j] > 0) cross_p += p[j] * ls[j];
                    cross_s += s[j] * logp[j];
                }
                double kl_ps = h - cross_p;
                if (c == yi)
                    kl_own = kl_ps;
                else
                    gsum += (double)m->count[c] * (m->negent[c] - cross_s);
                if (best < 0 || kl_ps < best_kl) {
                    best = c;
                    best_kl = kl_ps;
                }
            }
            cmi_i[i] = kl_own;
            gam_i[i] = gsum;
            hit[i] = best == yi;
        }
        free(logp);
        free(p);
    }
    double cs = 0, gs = 0;
    int64_t hits = 0;
    for (int64_t i = 0; i < n; i++) {
        cs += cmi_i[i];
        gs += gam_i[i];
        hits += hit[i];
        m->count2[y[i]]++;
    }
    m->cmi_sum += cs;
    m->gamma_sum += gs;
    m->cc_hits += hits;
    free(cmi_i);
    free(gam_i);
    free(hit);
}

int eval_cmi_get(const eval_cmi *m, eval_cmi_result *out)
{
    NCMI_CHECK(m->phase == 2, "eval_cmi_get before eval_cmi_finish_centroids");
    memset(out, 0, sizeof *out);
    int64_t N = 0;
    for (int c = 0; c < m->C; c++) {
        if (m->count[c] != m->count2[c])
            return ncmi_error_set("cmi: class %d has %lld samples in pass 1 but %lld in pass 2", c,
                                  (long long)m->count[c], (long long)m->count2[c]);
        N += m->count[c];
        out->n_classes_present += m->count[c] > 0;
    }
    out->n = N;
    out->C = m->C;
    out->cmi = m->cmi_sum / (double)N;
    out->gamma = m->gamma_sum / ((double)N * (double)N);
    out->ncmi = out->gamma > 0 ? out->cmi / out->gamma : NAN;
    out->cc_accuracy = (double)m->cc_hits / (double)N;
    return 0;
}

int eval_cmi_measure(const float *x, const int *y, int64_t n, int D, int C, eval_simplex s,
                     eval_cmi_result *out)
{
    eval_cmi m;
    if (eval_cmi_init(&m, C, D, s) != 0) return -1;
    eval_cmi_add_centroids(&m, x, y, n);
    int rc = eval_cmi_finish_centroids(&m);
    if (rc == 0) {
        eval_cmi_add_terms(&m, x, y, n);
        rc = eval_cmi_get(&m, out);
    }
    eval_cmi_free(&m);
    return rc;
}
