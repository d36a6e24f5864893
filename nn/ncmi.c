/* The NCMI loss: fused forward/backward (double inside), the same loss
 * composed from engine ops, centre handling, eval-mode projection.
 * Definitions and choices in ncmi.h.
 *
 * Fused op, notation (i sample, c class, j coordinate, w_c Gamma weights):
 *   lp_ij = ln p_ij, p = exp(lp); lq_cj = ln q_cj, q = exp(lq)
 *   h_c = sum_j q_cj lq_cj,  Q_j = sum_c w_c q_cj,  Hw = sum_c w_c h_c
 *   CMI_i   = sum_j p_ij (lp_ij - lq_{y_i j}) + 1e-10
 *   Gamma_i = (Hw - w_y h_y) - sum_j lp_ij (Q_j - w_y q_yj)          (y = y_i)
 * Backward, with a_i = dL/dCMI_i, b_i = dL/dGamma_i:
 *   dL/dlp_ij = a_i p_ij (lp_ij - lq_yj + 1) - b_i (Q_j - w_y q_yj)
 *   dL/dlq_cj = -sum_{i:y_i=c} a_i p_ij
 *               + w_c q_cj [(lq_cj + 1) B_c - sum_{i:y_i!=c} b_i lp_ij],
 *               B_c = sum_{i:y_i!=c} b_i
 * then through ln S (NSF: d ln S_j/dv_k = [j==k] s(-v_k) - s_k s(-v_k)/(sum s + 1e-8);
 * softmax: [j==k] - p_k) and through v = u / ||u|| / tau:
 *   du = (dv - (dv.uhat) uhat) / (||u|| tau).
 *
 * GPU (z and the state on the device, after nn_params_to_device): the fused
 * op runs nn/cuda/ncmi.cu (the same formulas in double) and reads back four
 * numbers per call (the loss, the CMI and Gamma sums, the skip rule), since
 * last_cmi, last_gamma and last_skipped are host values the trainer reads
 * right away: one host synchronisation per call. The flag
 * center_initialized is host_only (nn/params.h): it never leaves the CPU.
 * The composed version and the eval helpers also accept device state. */
#include "ncmi.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cuda.h"
#include "cuda/k_ncmi.h"
#include "error.h"
#include "ops.h"
#include "ops_internal.h"

#define NSF_EPS 1e-8   /* sigmax's eps in the denominator (authors' code) */
#define CMI_EPS 1e-10  /* added to each CMI_i (authors' code) */

/* ---- configuration ---- */

nn_ncmi_cfg nn_ncmi_cfg_default(void)
{
    nn_ncmi_cfg c;
    memset(&c, 0, sizeof c);
    c.tau = 0.2f;
    c.momentum = 0.99999f;
    c.centering = 1;
    c.simplex = NN_NCMI_NSF;
    c.gamma = NN_NCMI_GAMMA_CLASSES;
    c.ratio = NN_NCMI_RATIO_PER_SAMPLE;
    c.centroids = NN_NCMI_CENTROIDS_LEARNED;
    c.gamma_floor = 1e-4f;
    c.norm_eps = 1e-12f;
    return c;
}

int nn_ncmi_cfg_check(const nn_ncmi_cfg *c)
{
    if (!(c->tau > 0.f && isfinite(c->tau)))
        return ncmi_error_set("ncmi: tau %g must be > 0", (double)c->tau);
    if (!(c->momentum >= 0.f && c->momentum <= 1.f))
        return ncmi_error_set("ncmi: momentum %g outside [0,1]", (double)c->momentum);
    if (!(c->gamma_floor > 0.f && isfinite(c->gamma_floor)))
        return ncmi_error_set("ncmi: gamma_floor %g must be > 0", (double)c->gamma_floor);
    if (!(c->norm_eps > 0.f && isfinite(c->norm_eps)))
        return ncmi_error_set("ncmi: norm_eps %g must be > 0", (double)c->norm_eps);
    if ((unsigned)c->simplex > 1 || (unsigned)c->gamma > 1 || (unsigned)c->ratio > 1 ||
        (unsigned)c->centroids > 1)
        return ncmi_error_set("ncmi: bad enum value in the configuration");
    return 0;
}

static int parse_choice(const char *key, const char *v, const char *a, const char *b, int *out)
{
    if (strcmp(v, a) == 0) *out = 0;
    else if (strcmp(v, b) == 0) *out = 1;
    else return ncmi_error_set("ncmi: %s: '%s' is not %s or %s", key, v, a, b);
    return 0;
}

static int parse_float(const char *key, const char *v, float *out)
{
    char *end;
    double d = strtod(v, &end);
    if (end == v || *end != '\0' || !isfinite(d))
        return ncmi_error_set("ncmi: %s: '%s' is not a number", key, v);
    *out = (float)d;
    return 0;
}

int nn_ncmi_cfg_set(nn_ncmi_cfg *c, const char *key, const char *v)
{
    if (!key || !v) return ncmi_error_set("ncmi: NULL option");
    nn_ncmi_cfg t = *c;
    int k = 0, rc;
    if (strcmp(key, "tau") == 0) rc = parse_float(key, v, &t.tau);
    else if (strcmp(key, "momentum") == 0) rc = parse_float(key, v, &t.momentum);
    else if (strcmp(key, "gamma_floor") == 0) rc = parse_float(key, v, &t.gamma_floor);
    else if (strcmp(key, "norm_eps") == 0) rc = parse_float(key, v, &t.norm_eps);
    else if (strcmp(key, "centering") == 0) {
        if (!strcasecmp(v, "true") || !strcasecmp(v, "on") || !strcmp(v, "1") || !strcasecmp(v, "yes"))
            t.centering = 1, rc = 0;
        else if (!strcasecmp(v, "false") || !strcasecmp(v, "off") || !strcmp(v, "0") ||
                 !strcasecmp(v, "no"))
            t.centering = 0, rc = 0;
        else rc = ncmi_error_set("ncmi: centering: '%s' is not true or false", v);
    } else if (strcmp(key, "simplex") == 0) {
        rc = parse_choice(key, v, "nsf", "softmax", &k);
        t.simplex = (nn_ncmi_simplex)k;
    } else if (strcmp(key, "gamma") == 0) {
        rc = parse_choice(key, v, "classes", "prior", &k);
        t.gamma = (nn_ncmi_gamma)k;
    } else if (strcmp(key, "ratio") == 0) {
        rc = parse_choice(key, v, "per_sample", "of_means", &k);
        t.ratio = (nn_ncmi_ratio)k;
    } else if (strcmp(key, "centroids") == 0) {
        rc = parse_choice(key, v, "learned", "fixed", &k);
        t.centroids = (nn_ncmi_centroid_mode)k;
    } else
        return ncmi_error_set("ncmi: unknown option '%s'", key);
    if (rc != 0) return rc;
    if (nn_ncmi_cfg_check(&t) != 0) return -1;
    *c = t;
    return 0;
}

/* ---- init ---- */

int nn_ncmi_init(nn_ncmi *m, nn_params *P, const char *prefix, int C, int D,
                 const nn_ncmi_cfg *cfg, const float *prior, nn_rng *rng)
{
    memset(m, 0, sizeof *m);
    nn_ncmi_cfg c = cfg ? *cfg : nn_ncmi_cfg_default();
    if (nn_ncmi_cfg_check(&c) != 0) return -1;
    if (C < 2 || D < 2)
        return ncmi_error_set("ncmi: need at least 2 classes and 2 embedding dimensions (C %d, D %d)",
                              C, D);
    double *w = malloc((size_t)C * sizeof *w);
    NCMI_CHECK(w, "ncmi: out of memory");
    if (c.gamma == NN_NCMI_GAMMA_PRIOR) {
        if (!prior) {
            free(w);
            return ncmi_error_set("ncmi: gamma = prior needs the class frequencies of the training set");
        }
        double s = 0;
        for (int k = 0; k < C; k++) {
            if (!(prior[k] >= 0.f && isfinite(prior[k]))) {
                free(w);
                return ncmi_error_set("ncmi: prior of class %d is %g (must be >= 0)", k,
                                      (double)prior[k]);
            }
            s += prior[k];
        }
        if (!(s > 0)) {
            free(w);
            return ncmi_error_set("ncmi: the class prior sums to 0");
        }
        for (int k = 0; k < C; k++) w[k] = prior[k] / s;
    } else {
        for (int k = 0; k < C; k++) w[k] = 1.0 / C;
    }
    m->cfg = c;
    m->C = C;
    m->D = D;
    m->w = w;
    m->xi = nn_params_addf(P, prefix, "xi", NN_PARAM_WEIGHT, 2, (int[]){C, D});
    m->center = nn_params_addf(P, prefix, "center", NN_PARAM_BUFFER, 1, (int[]){D});
    m->center_init = nn_params_addf(P, prefix, "center_initialized", NN_PARAM_BUFFER, 1, (int[]){1});
    P->host_only[P->n - 1] = 1; /* read and set by host code every training step */
    float *xi = m->xi->data;
    if (D >= C) {
        for (int k = 0; k < C; k++)
            for (int j = 0; j < D; j++) xi[(size_t)k * D + j] = (j == k ? 10.f : 0.f) + 1e-6f;
    } else {
        nn_rng own;
        if (!rng) {
            nn_rng_seed(&own, 0x6e636d69ull);
            rng = &own;
        }
        for (int k = 0; k < C; k++) {
            float *r = xi + (size_t)k * D;
            double nrm = 0;
            do {
                nrm = 0;
                for (int j = 0; j < D; j++) {
                    r[j] = (float)nn_rng_normal(rng);
                    nrm += (double)r[j] * r[j];
                }
            } while (nrm < 1e-12);
            const double s = 10.0 / sqrt(nrm);
            for (int j = 0; j < D; j++) r[j] = (float)(r[j] * s) + 1e-6f;
        }
    }
    return 0;
}

void nn_ncmi_free(nn_ncmi *m)
{
    if (!m) return;
    free(m->w);
    m->w = NULL;
}

/* ---- centre ---- */

int nn_ncmi_init_center(nn_ncmi *m, const float *Z, int n)
{
    if (n < 1 || !Z) return ncmi_error_set("ncmi: init_center needs at least one row (n = %d)", n);
    const int D = m->D;
    double *acc = calloc((size_t)D, sizeof *acc);
    NCMI_CHECK(acc, "ncmi: out of memory");
    for (int i = 0; i < n; i++)
        for (int j = 0; j < D; j++) {
            const float x = Z[(size_t)i * D + j];
            if (!isfinite(x)) {
                free(acc);
                return ncmi_error_set("ncmi: init_center: row %d column %d is %g", i, j, (double)x);
            }
            acc[j] += x;
        }
    /* a centre on the GPU is computed here and copied up */
    float *c = NN_ON_GPU(m->center) ? malloc((size_t)D * sizeof *c) : m->center->data;
    NCMI_CHECK(c, "ncmi: out of memory");
    for (int j = 0; j < D; j++) c[j] = (float)(acc[j] / n);
    if (c != m->center->data) {
        nn_tensor_from_host(m->center, c);
        free(c);
    }
    m->center_init->data[0] = 1.f;
    free(acc);
    return 0;
}

/* Step 1 of the forward: EMA update from the detached batch (training only). */
static void update_center(nn_ncmi *m, const nn_tensor *z)
{
    const int N = z->shape[0], D = m->D;
    float *c = m->center->data;
    const double mom = m->cfg.momentum;
    const int first = !(m->center_init->data[0] > 0.5f);
    for (int j = 0; j < D; j++) {
        double s = 0;
        for (int i = 0; i < N; i++) s += z->data[(size_t)i * D + j];
        const double mean = s / N;
        c[j] = first ? (float)mean : (float)(mom * c[j] + (1.0 - mom) * mean);
    }
    m->center_init->data[0] = 1.f;
}

void nn_ncmi_update_center_mean(nn_ncmi *m, const double *mean)
{
    const int D = m->D;
    const double mom = m->cfg.momentum;
    const int first = !(m->center_init->data[0] > 0.5f);
    float *c = nn_host_view(m->center);
    for (int j = 0; j < D; j++) c[j] = first ? (float)mean[j] : (float)(mom * c[j] + (1.0 - mom) * mean[j]);
    if (NN_ON_GPU(m->center)) nn_tensor_from_host(m->center, c);
    nn_host_release(m->center, c);
    m->center_init->data[0] = 1.f;
}

static void check_args(const nn_ncmi *m, const nn_tensor *z, const int *labels, const char *op)
{
    NCMI_CHECK(m && m->xi && m->w, "%s: ncmi not initialised", op);
    NCMI_CHECK(z && m->xi->device == z->device && m->center->device == z->device,
               "%s: z and the ncmi state (xi, center) are on different devices; move the ncmi "
               "parameter set with nn_params_to_device", op);
    NCMI_CHECK(m->center_init->device == NN_DEVICE_CPU,
               "%s: %s must stay on the CPU (host_only in nn_params)", op, m->center_init->name);
    NCMI_CHECK(z && z->ndim == 2 && z->shape[1] == m->D && z->shape[0] >= 1,
               "%s: z must be [N,%d] with N >= 1", op, m->D);
    NCMI_CHECK(labels != NULL, "%s: NULL labels", op);
    for (int i = 0; i < z->shape[0]; i++)
        NCMI_CHECK(labels[i] >= 0 && labels[i] < m->C, "%s: label %d of row %d outside [0,%d)", op,
                   labels[i], i, m->C);
}

/* u = z_i - c (or z_i) into u[D]; returns ||u||. */
static double centred_row(const nn_ncmi *m, const float *z, double *u)
{
    double r2 = 0;
    for (int j = 0; j < m->D; j++) {
        u[j] = (double)z[j] - (m->cfg.centering ? (double)m->center->data[j] : 0.0);
        r2 += u[j] * u[j];
    }
    return sqrt(r2);
}

/* Centre update (training) and the skip rule: 1 when every sample has
 * ||z_i - c|| <= norm_eps. */
static int prepare_gpu(nn_ncmi *m, const nn_tensor *z, int training);

static int prepare(nn_ncmi *m, const nn_tensor *z, int training)
{
    if (NN_ON_GPU(z)) return prepare_gpu(m, z, training);
    if (training && m->cfg.centering) update_center(m, z);
    double *u = malloc((size_t)m->D * sizeof *u);
    NCMI_CHECK(u, "ncmi: out of memory");
    int all = 1;
    for (int i = 0; i < z->shape[0] && all; i++)
        if (centred_row(m, z->data + (size_t)i * m->D, u) > m->cfg.norm_eps) all = 0;
    free(u);
    m->last_skipped = all;
    return all;
}

/* The GPU centre update (update_center's twin; the flag is on the host). */
static void update_center_gpu(nn_ncmi *m, const nn_tensor *z)
{
    const int first = !(m->center_init->data[0] > 0.5f);
    nn_cuda_ncmi_center_update(z->data, z->shape[0], m->D, m->center->data, first,
                               (double)m->cfg.momentum);
    m->center_init->data[0] = 1.f;
}

/* prepare() for device z and state, for the composed version: the skip
 * rule reads z and c back (waits). */
static int prepare_gpu(nn_ncmi *m, const nn_tensor *z, int training)
{
    if (training && m->cfg.centering) update_center_gpu(m, z);
    const int D = m->D;
    float *zh = nn_host_view(z), *ch = nn_host_view(m->center);
    int all = 1;
    for (int i = 0; i < z->shape[0] && all; i++) {
        double r2 = 0;
        for (int j = 0; j < D; j++) {
            const double u = (double)zh[(size_t)i * D + j] - (m->cfg.centering ? (double)ch[j] : 0.0);
            r2 += u * u;
        }
        if (sqrt(r2) > m->cfg.norm_eps) all = 0;
    }
    nn_host_release(z, zh);
    nn_host_release(m->center, ch);
    m->last_skipped = all;
    return all;
}

/* ln S(v) into lp[D] and S(v) into p[D] (double; p may be NULL); for NSF
 * also s(-v) into sm[D] (may be NULL). Returns the NSF denominator
 * sum s + 1e-8; softmax returns 0. One exp and one log1p per element: with
 * e = exp(-|v|), s(v) = 1/(1+e) (v >= 0) or e/(1+e), ln s(v) = -log1p(e)
 * (v >= 0) or v - log1p(e), s(-v) = 1 - s(v) taken from the same e. */
static double log_simplex(nn_ncmi_simplex simplex, const double *v, int D, double *lp, double *p,
                          double *sm)
{
    if (simplex == NN_NCMI_SOFTMAX) {
        double mx = -INFINITY;
        for (int j = 0; j < D; j++)
            if (v[j] > mx) mx = v[j];
        double s = 0;
        for (int j = 0; j < D; j++) {
            const double e = exp(v[j] - mx);
            if (p) p[j] = e;
            s += e;
        }
        // cppcheck-suppress invalidFunctionArg ; false positive: s >= 1: the max term is exp(0)
        const double lse = mx + log(s), inv = 1.0 / s;
        for (int j = 0; j < D; j++) {
            lp[j] = v[j] - lse;
            if (p) p[j] *= inv;
        }
        return 0;
    }
    double S = 0;
    for (int j = 0; j < D; j++) {
        const double x = v[j];
        const double e = exp(-fabs(x)), l1 = log1p(e), r = 1.0 / (1.0 + e);
        const double s = x >= 0 ? r : e * r;
        lp[j] = x >= 0 ? -l1 : x - l1;
        if (p) p[j] = s;
        if (sm) sm[j] = x >= 0 ? e * r : r;
        S += s;
    }
    const double den = S + NSF_EPS;
    const double lden = log(den), inv = 1.0 / den;
    for (int j = 0; j < D; j++) {
        lp[j] -= lden;
        if (p) p[j] *= inv;
    }
    return den;
}

/* Back through ln S: gv[k] = d/dv_k given glp[j] = d/d lnS_j. p = S(v)
 * (softmax); for NSF, s_k = 1 - sm_k. */
static void log_simplex_back(nn_ncmi_simplex simplex, const double *p, const double *sm,
                             double den, const double *glp, int D, double *gv)
{
    double tot = 0;
    for (int j = 0; j < D; j++) tot += glp[j];
    if (simplex == NN_NCMI_SOFTMAX) {
        for (int k = 0; k < D; k++) gv[k] = glp[k] - p[k] * tot;
        return;
    }
    for (int k = 0; k < D; k++) {
        const double s = 1.0 - sm[k];
        gv[k] = glp[k] * sm[k] - tot * s * sm[k] / den;
    }
}

/* ---- fused op ---- */

static void ncmi_backward(nn_tensor *out)
{
    if (NN_ON_GPU(out)) { /* aux, aux2: device gradients of the loss; out->grad on the device */
        if (out->aux && nn_op_needs_grad(out, 0)) {
            nn_tensor *z = out->src[0];
            nn_cuda_ncmi_accum(nn_tensor_grad(z), out->aux, out->grad, z->numel);
        }
        if (out->aux2 && nn_op_needs_grad(out, 1)) {
            nn_tensor *xi = out->src[1];
            nn_cuda_ncmi_accum(nn_tensor_grad(xi), out->aux2, out->grad, xi->numel);
        }
        return;
    }
    const float gs = out->grad[0];
    if (out->aux && nn_op_needs_grad(out, 0)) {
        nn_tensor *z = out->src[0];
        float *gz = nn_tensor_grad(z);
        const float *s = out->aux;
        for (size_t k = 0; k < z->numel; k++) gz[k] += gs * s[k];
    }
    if (out->aux2 && nn_op_needs_grad(out, 1)) {
        nn_tensor *xi = out->src[1];
        float *gx = nn_tensor_grad(xi);
        const float *s = out->aux2;
        for (size_t k = 0; k < xi->numel; k++) gx[k] += gs * s[k];
    }
}

/* nn_ncmi_loss for z and the state on the GPU: the same steps, the
 * gradients computed in the forward as the CPU code does (before the skip
 * rule is known: discarded when the step is skipped). */
static nn_tensor *ncmi_loss_gpu(nn_graph *g, nn_ncmi *m, nn_tensor *z, const int *labels, int training)
{
    const int N = z->shape[0], C = m->C, D = m->D;
    const nn_ncmi_cfg *cf = &m->cfg;
    const int learned = cf->centroids == NN_NCMI_CENTROIDS_LEARNED;
    if (training && cf->centering) update_center_gpu(m, z);
    /* would nn_op_output record a backward (inputs z and, learned, xi)? */
    const int record = !nn_graph_no_grad(g) && (z->requires_grad || (learned && m->xi->requires_grad));
    const int want_z = record && z->requires_grad;
    const int want_xi = record && learned && m->xi->requires_grad;
    float *gz = want_z ? nn_cuda_alloc((size_t)N * D * sizeof(float)) : NULL;
    float *gxi = want_xi ? nn_cuda_alloc((size_t)C * D * sizeof(float)) : NULL;
    const nn_cuda_ncmi_args a = {
        .N = N, .C = C, .D = D,
        .softmax = cf->simplex == NN_NCMI_SOFTMAX,
        .of_means = cf->ratio == NN_NCMI_RATIO_OF_MEANS,
        .tau = cf->tau, .norm_eps = cf->norm_eps, .gamma_floor = cf->gamma_floor,
    };
    double stats[4];
    nn_cuda_ncmi_loss(&a, z->data, cf->centering ? m->center->data : NULL, m->xi->data, labels, m->w, gz,
                      gxi, stats);
    const int skip = stats[3] != 0;
    m->last_skipped = skip;
    nn_tensor *out;
    if (skip) {
        /* a constant on z's device (nn_op_output without inputs would put it on the CPU) */
        out = nn_tensor_new_on(g, z->device, 1, (int[]){1});
        out->op = "ncmi";
    } else {
        nn_tensor *src[2] = {z, m->xi};
        out = nn_op_output(g, "ncmi", 1, (int[]){1}, ncmi_backward, learned ? 2 : 1, src);
    }
    nn_cuda_fill(out->data, (float)stats[0], 1);
    m->last_cmi = (float)(stats[1] / N);
    m->last_gamma = (float)(stats[2] / N);
    if (out->backward) {
        out->aux = gz;
        out->aux2 = gxi;
        out->aux_cuda = 1;
    } else {
        nn_cuda_free(gz);
        nn_cuda_free(gxi);
    }
    return out;
}

nn_tensor *nn_ncmi_loss(nn_graph *g, nn_ncmi *m, nn_tensor *z, const int *labels, int training)
{
    check_args(m, z, labels, "ncmi_loss");
    if (NN_ON_GPU(z)) return ncmi_loss_gpu(g, m, z, labels, training);
    const int N = z->shape[0], C = m->C, D = m->D;
    const nn_ncmi_cfg *cf = &m->cfg;
    const int skip = prepare(m, z, training);
    const int learned = cf->centroids == NN_NCMI_CENTROIDS_LEARNED;

    nn_tensor *src[2] = {z, m->xi};
    nn_tensor *out = skip ? nn_op_output(g, "ncmi", 1, (int[]){1}, NULL, 0, NULL)
                          : nn_op_output(g, "ncmi", 1, (int[]){1}, ncmi_backward, learned ? 2 : 1, src);
    const int want = out->backward != NULL;
    const int want_z = want && z->requires_grad;
    const int want_xi = want && learned && m->xi->requires_grad;

    /* work: lp, sm, v [N,D]; lq, smq [C,D]; den [N], denq [C]; ... */
    double *lp = malloc((size_t)N * D * sizeof(double));
    double *pz = malloc((size_t)N * D * sizeof(double)); /* p = exp(lp) */
    double *pq = malloc((size_t)C * D * sizeof(double)); /* q = exp(lq) */
    double *smz = malloc((size_t)N * D * sizeof(double));
    double *rn = malloc((size_t)N * sizeof(double));   /* ||u_i|| */
    double *denz = malloc((size_t)N * sizeof(double));
    double *lq = malloc((size_t)C * D * sizeof(double));
    double *smq = malloc((size_t)C * D * sizeof(double));
    double *denq = malloc((size_t)C * sizeof(double));
    double *h = malloc((size_t)C * sizeof(double));
    double *Q = calloc((size_t)D, sizeof(double));
    double *cmi = malloc((size_t)N * sizeof(double));
    double *gam = malloc((size_t)N * sizeof(double));
    double *u = malloc((size_t)D * sizeof(double)), *v = malloc((size_t)D * sizeof(double));
    NCMI_CHECK(lp && pz && pq && smz && rn && denz && lq && smq && denq && h && Q && cmi && gam && u && v,
               "ncmi_loss: out of memory");
    const double tau = cf->tau, eps = cf->norm_eps;
    const double *w = m->w;

    /* centroids: lq = ln S(xi_c), h_c, Q_j, Hw */
    for (int c = 0; c < C; c++) {
        for (int j = 0; j < D; j++) v[j] = m->xi->data[(size_t)c * D + j];
        denq[c] = log_simplex(cf->simplex, v, D, lq + (size_t)c * D, pq + (size_t)c * D,
                              smq + (size_t)c * D);
        double hc = 0;
        for (int j = 0; j < D; j++) {
            const double l = lq[(size_t)c * D + j], q = pq[(size_t)c * D + j];
            hc += q * l;
            Q[j] += w[c] * q;
        }
        h[c] = hc;
    }
    double Hw = 0;
    for (int c = 0; c < C; c++) Hw += w[c] * h[c];

    /* samples: lp, CMI_i, Gamma_i (rows independent: parallel over samples) */
    double sum_cmi = 0, sum_gam = 0;
#pragma omp parallel if ((size_t)N * D >= 16384) reduction(+ : sum_cmi, sum_gam)
    {
        double *ut = malloc((size_t)D * sizeof(double)), *vt = malloc((size_t)D * sizeof(double));
        NCMI_CHECK(ut && vt, "ncmi_loss: out of memory");
#pragma omp for schedule(static)
        for (int i = 0; i < N; i++) {
            const double r = centred_row(m, z->data + (size_t)i * D, ut);
            rn[i] = r;
            const double sc = 1.0 / ((r > eps ? r : eps) * tau);
            for (int j = 0; j < D; j++) vt[j] = ut[j] * sc;
            double *lpi = lp + (size_t)i * D, *pi = pz + (size_t)i * D;
            denz[i] = log_simplex(cf->simplex, vt, D, lpi, pi, smz + (size_t)i * D);
            const int y = labels[i];
            const double *lqy = lq + (size_t)y * D, *qy = pq + (size_t)y * D;
            double ci = 0, cross = 0;
            for (int j = 0; j < D; j++) {
                ci += pi[j] * (lpi[j] - lqy[j]);
                cross += lpi[j] * (Q[j] - w[y] * qy[j]);
            }
            cmi[i] = ci + CMI_EPS;
            gam[i] = (Hw - w[y] * h[y]) - cross;
            sum_cmi += cmi[i];
            sum_gam += gam[i];
        }
        free(ut);
        free(vt);
    }
    const double floor_ = cf->gamma_floor;
    double loss;
    double *alpha = malloc((size_t)N * sizeof(double)), *beta = malloc((size_t)N * sizeof(double));
    NCMI_CHECK(alpha && beta, "ncmi_loss: out of memory");
    if (cf->ratio == NN_NCMI_RATIO_PER_SAMPLE) {
        loss = 0;
        for (int i = 0; i < N; i++) {
            const double G = gam[i] >= floor_ ? gam[i] : floor_;
            loss += cmi[i] / G;
            alpha[i] = 1.0 / (N * G);
            beta[i] = gam[i] >= floor_ ? -cmi[i] / (N * G * G) : 0.0;
        }
        loss /= N;
    } else {
        const double A = sum_cmi / N, Gm = sum_gam / N;
        const double B = Gm >= floor_ ? Gm : floor_;
        loss = A / B;
        for (int i = 0; i < N; i++) {
            alpha[i] = 1.0 / (N * B);
            beta[i] = Gm >= floor_ ? -A / (N * B * B) : 0.0;
        }
    }
    out->data[0] = (float)loss;
    m->last_cmi = (float)(sum_cmi / N);
    m->last_gamma = (float)(sum_gam / N);

    if (want_z || want_xi) {
        float *gz = want_z ? malloc((size_t)N * D * sizeof(float)) : NULL;
        float *gxi = want_xi ? malloc((size_t)C * D * sizeof(float)) : NULL;
        /* per-class accumulators for dL/dlq: Pa[c][j] = sum_{y_i=c} a_i p_ij,
         * Tb[c][j] = sum_{y_i=c} b_i lp_ij, Bc[c] = sum_{y_i=c} b_i; T = sum_i b_i lp_i */
        double *Pa = want_xi ? calloc((size_t)C * D, sizeof(double)) : NULL;
        double *Tb = want_xi ? calloc((size_t)C * D, sizeof(double)) : NULL;
        double *Bc = want_xi ? calloc((size_t)C, sizeof(double)) : NULL;
        double *T = want_xi ? calloc((size_t)D, sizeof(double)) : NULL;
        double *glp = malloc((size_t)D * sizeof(double)), *gv = malloc((size_t)D * sizeof(double));
        NCMI_CHECK((!want_z || gz) && (!want_xi || (gxi && Pa && Tb && Bc && T)) && glp && gv,
                   "ncmi_loss: out of memory");
        double Bsum = 0;
        if (want_xi)
            for (int i = 0; i < N; i++) {
                const int y = labels[i];
                const double *lpi = lp + (size_t)i * D, *pi = pz + (size_t)i * D;
                for (int j = 0; j < D; j++) {
                    Pa[(size_t)y * D + j] += alpha[i] * pi[j];
                    Tb[(size_t)y * D + j] += beta[i] * lpi[j];
                    T[j] += beta[i] * lpi[j];
                }
                Bc[y] += beta[i];
                Bsum += beta[i];
            }
        if (want_z) {
#pragma omp parallel if ((size_t)N * D >= 16384)
            {
                double *gl = malloc((size_t)D * sizeof(double)), *gw = malloc((size_t)D * sizeof(double));
                double *ut = malloc((size_t)D * sizeof(double));
                NCMI_CHECK(gl && gw && ut, "ncmi_loss: out of memory");
#pragma omp for schedule(static)
                for (int i = 0; i < N; i++) {
                    const int y = labels[i];
                    const double *lpi = lp + (size_t)i * D, *pi = pz + (size_t)i * D;
                    const double *lqy = lq + (size_t)y * D, *qy = pq + (size_t)y * D;
                    float *gzi = gz + (size_t)i * D;
                    const double r = rn[i];
                    if (!(r > eps)) { /* no direction: no gradient (see ncmi.h) */
                        for (int j = 0; j < D; j++) gzi[j] = 0.f;
                        continue;
                    }
                    for (int j = 0; j < D; j++)
                        gl[j] = alpha[i] * pi[j] * (lpi[j] - lqy[j] + 1.0) -
                                beta[i] * (Q[j] - w[y] * qy[j]);
                    log_simplex_back(cf->simplex, pi, smz + (size_t)i * D, denz[i], gl, D, gw);
                    /* through v = u / (r tau): du = (gv - (gv.uh) uh) / (r tau) */
                    centred_row(m, z->data + (size_t)i * D, ut);
                    double dot = 0;
                    for (int j = 0; j < D; j++) dot += gw[j] * ut[j];
                    dot /= r;
                    for (int j = 0; j < D; j++)
                        gzi[j] = (float)((gw[j] - dot * ut[j] / r) / (r * tau));
                }
                free(gl);
                free(gw);
                free(ut);
            }
        }
        if (want_xi) {
            for (int c = 0; c < C; c++) {
                const double *lqc = lq + (size_t)c * D;
                const double Bnot = Bsum - Bc[c];
                for (int j = 0; j < D; j++) {
                    const double q = pq[(size_t)c * D + j];
                    glp[j] = -Pa[(size_t)c * D + j] +
                             w[c] * q * ((lqc[j] + 1.0) * Bnot - (T[j] - Tb[(size_t)c * D + j]));
                }
                log_simplex_back(cf->simplex, pq + (size_t)c * D, smq + (size_t)c * D, denq[c], glp,
                                 D, gv);
                for (int j = 0; j < D; j++) gxi[(size_t)c * D + j] = (float)gv[j];
            }
        }
        out->aux = gz;
        out->aux2 = gxi;
        free(Pa);
        free(Tb);
        free(Bc);
        free(T);
        free(glp);
        free(gv);
    }
    free(alpha);
    free(beta);
    free(lp);
    free(pz);
    free(pq);
    free(smz);
    free(rn);
    free(denz);
    free(lq);
    free(smq);
    free(denq);
    free(h);
    free(Q);
    free(cmi);
    free(gam);
    free(u);
    free(v);
    return out;
}

/* ---- composed from engine ops ---- */

/* A constant copy of t in g on t's device (no gradient flows into t). */
static nn_tensor *graph_const(nn_graph *g, const nn_tensor *t)
{
    if (!NN_ON_GPU(t)) return nn_tensor_from(g, t->ndim, t->shape, t->data);
    nn_tensor *c = nn_tensor_new_on(g, t->device, t->ndim, t->shape);
    nn_cuda_d2d(c->data, t->data, t->numel * sizeof(float));
    return c;
}

static nn_tensor *log_simplex_op(nn_graph *g, nn_ncmi_simplex simplex, nn_tensor *v)
{
    if (simplex == NN_NCMI_SOFTMAX) return nn_log_softmax(g, v);
    nn_tensor *a = nn_scale(g, nn_softplus(g, nn_scale(g, v, -1.f)), -1.f); /* ln s(v) */
    nn_tensor *S = nn_sum(g, nn_sigmoid(g, v), -1, 1);                     /* [N,1] */
    return nn_sub(g, a, nn_log(g, nn_add_scalar(g, S, (float)NSF_EPS)));
}

nn_tensor *nn_ncmi_loss_composed(nn_graph *g, nn_ncmi *m, nn_tensor *z, const int *labels,
                                 int training)
{
    check_args(m, z, labels, "ncmi_loss_composed");
    const int N = z->shape[0], C = m->C;
    const nn_ncmi_cfg *cf = &m->cfg;
    const int skip = prepare(m, z, training);
    nn_tensor *zz = z, *xi = m->xi;
    if (skip) zz = graph_const(g, z); /* a constant: no gradient */
    if (skip || cf->centroids == NN_NCMI_CENTROIDS_FIXED) xi = graph_const(g, m->xi);

    nn_tensor *u = zz;
    if (cf->centering) u = nn_sub(g, zz, graph_const(g, m->center));
    nn_tensor *v = nn_scale(g, nn_l2_normalize(g, u, cf->norm_eps), 1.f / cf->tau);
    nn_tensor *lp = log_simplex_op(g, cf->simplex, v); /* [N,D] */
    nn_tensor *lq = log_simplex_op(g, cf->simplex, xi); /* [C,D] */
    nn_tensor *p = nn_exp(g, lp), *q = nn_exp(g, lq);
    nn_tensor *lqy = nn_index_select(g, lq, labels, N);
    nn_tensor *cmi = nn_add_scalar(g, nn_sum(g, nn_mul(g, p, nn_sub(g, lp, lqy)), 1, 0), (float)CMI_EPS);
    /* K[i,c] = KL(q_c || p_i) = h_c - sum_j lp_ij q_cj */
    nn_tensor *hq = nn_sum(g, nn_mul(g, q, lq), 1, 0);                   /* [C] */
    nn_tensor *K = nn_sub(g, hq, nn_matmul(g, lp, nn_transpose(g, q, 0, 1))); /* [N,C] */
    nn_tensor *W = nn_tensor_new_on(g, z->device, 2, (int[]){N, C});
    float *Wh = NN_ON_GPU(W) ? malloc((size_t)N * C * sizeof *Wh) : W->data;
    NCMI_CHECK(Wh, "ncmi_loss_composed: out of memory");
    for (int i = 0; i < N; i++)
        for (int c = 0; c < C; c++) Wh[(size_t)i * C + c] = c == labels[i] ? 0.f : (float)m->w[c];
    if (Wh != W->data) {
        nn_tensor_from_host(W, Wh);
        free(Wh);
    }
    nn_tensor *gam = nn_sum(g, nn_mul(g, K, W), 1, 0); /* [N] */
    nn_tensor *loss;
    if (cf->ratio == NN_NCMI_RATIO_PER_SAMPLE)
        loss = nn_mean_all(g, nn_div(g, cmi, nn_clamp(g, gam, cf->gamma_floor, FLT_MAX)));
    else
        loss = nn_div(g, nn_mean_all(g, cmi),
                      nn_clamp(g, nn_mean_all(g, gam), cf->gamma_floor, FLT_MAX));
    double sc = 0, sg = 0;
    float *cmih = nn_host_view(cmi), *gamh = nn_host_view(gam);
    for (int i = 0; i < N; i++) {
        sc += cmih[i];
        sg += gamh[i];
    }
    nn_host_release(cmi, cmih);
    nn_host_release(gam, gamh);
    m->last_cmi = (float)(sc / N);
    m->last_gamma = (float)(sg / N);
    return loss;
}

/* ---- eval helpers ---- */

/* The eval helpers read xi and c on the host: for device state, a shallow
 * copy of m whose xi and center are host copies (waits). */
typedef struct host_state {
    nn_ncmi m;
    nn_tensor xi, center;
} host_state;

static const nn_ncmi *host_state_get(const nn_ncmi *m, host_state *h)
{
    if (!NN_ON_GPU(m->xi) && !NN_ON_GPU(m->center)) return m;
    h->m = *m;
    h->xi = *m->xi;
    h->xi.data = nn_host_view(m->xi);
    h->xi.device = NN_DEVICE_CPU;
    h->center = *m->center;
    h->center.data = nn_host_view(m->center);
    h->center.device = NN_DEVICE_CPU;
    h->m.xi = &h->xi;
    h->m.center = &h->center;
    return &h->m;
}

static void host_state_release(const nn_ncmi *m, const nn_ncmi *hm)
{
    if (hm == m) return;
    nn_host_release(m->xi, hm->xi->data);
    nn_host_release(m->center, hm->center->data);
}

static void project_host(const nn_ncmi *m, const float *z, int n, float *zprime, float *p);
static void centroids_host(const nn_ncmi *m, float *q);

void nn_ncmi_project(const nn_ncmi *m, const float *z, int n, float *zprime, float *p)
{
    host_state h;
    const nn_ncmi *hm = host_state_get(m, &h);
    project_host(hm, z, n, zprime, p);
    host_state_release(m, hm);
}

void nn_ncmi_centroids(const nn_ncmi *m, float *q)
{
    host_state h;
    const nn_ncmi *hm = host_state_get(m, &h);
    centroids_host(hm, q);
    host_state_release(m, hm);
}

static void project_host(const nn_ncmi *m, const float *z, int n, float *zprime, float *p)
{
    const int D = m->D;
    double *u = malloc((size_t)D * sizeof *u), *lp = malloc((size_t)D * sizeof *lp);
    double *pp = malloc((size_t)D * sizeof *pp);
    NCMI_CHECK(u && lp && pp, "ncmi_project: out of memory");
    const double eps = m->cfg.norm_eps, tau = m->cfg.tau;
    for (int i = 0; i < n; i++) {
        const double r = centred_row(m, z + (size_t)i * D, u);
        const double sc = 1.0 / ((r > eps ? r : eps) * tau);
        for (int j = 0; j < D; j++) u[j] *= sc;
        if (zprime)
            for (int j = 0; j < D; j++) zprime[(size_t)i * D + j] = (float)u[j];
        if (p) {
            log_simplex(m->cfg.simplex, u, D, lp, pp, NULL);
            for (int j = 0; j < D; j++) p[(size_t)i * D + j] = (float)pp[j];
        }
    }
    free(u);
    free(lp);
    free(pp);
}

static void centroids_host(const nn_ncmi *m, float *q)
{
    const int C = m->C, D = m->D;
    double *v = malloc((size_t)D * sizeof *v), *lq = malloc((size_t)D * sizeof *lq);
    double *pq = malloc((size_t)D * sizeof *pq);
    NCMI_CHECK(v && lq && pq, "ncmi_centroids: out of memory");
    for (int c = 0; c < C; c++) {
        for (int j = 0; j < D; j++) v[j] = m->xi->data[(size_t)c * D + j];
        log_simplex(m->cfg.simplex, v, D, lq, pq, NULL);
        for (int j = 0; j < D; j++) q[(size_t)c * D + j] = (float)pq[j];
    }
    free(v);
    free(lq);
    free(pq);
}
