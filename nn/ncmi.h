/* The NCMI loss (normalized conditional mutual information surrogate; Ye,
 * Chi, Plataniotis, Yang, arXiv 2601.02543), as the shared spec
 * ../shared/docs/ncmi.md specifies. The encoder produces z [N,D];
 * there is no classifier layer.
 *
 * Per mini-batch (training):
 *   1. EMA centre c [D] (buffer): the first training batch sets c = mean_i z_i,
 *      later batches c <- m c + (1-m) mean_i z_i, from the detached batch
 *      features BEFORE they are used. Not updated when training == 0.
 *      `centering = 0` (ablation) skips c entirely (u_i = z_i).
 *   2. u_i = z_i - c;  v_i = u_i / max(||u_i||, norm_eps) / tau   (F.normalize)
 *   3. p_i = S(v_i), S the simplex map: NSF ("sigmax", default)
 *        S(v)_j = s(v_j) / (sum_k s(v_k) + 1e-8), s the logistic sigmoid,
 *      or softmax (ablation; then the centroids use softmax too, as the
 *      authors' commented alternative does).
 *   4. centroids q_c = S(xi_c), xi [C,D] a parameter (`centroids = learned`,
 *      default) or a constant (`centroids = fixed`: xi gets no gradient; the
 *      authors' code, which reads xi through .data).
 *   5. CMI_i = KL(p_i || q_{y_i}) + 1e-10
 *   6. Gamma_i = sum_{c != y_i} w_c KL(q_c || p_i), w_c = 1/C (`gamma =
 *      classes`, the authors' code) or w_c = pi_c (`gamma = prior`, paper
 *      Eq. 7/10: pi the class frequencies of the TRAINING SET, passed to
 *      nn_ncmi_init and normalised to sum 1).
 *   7. L = mean_i CMI_i / G_i (`ratio = per_sample`, the code) or
 *      L = mean_i CMI_i / G (`ratio = of_means`, paper Eq. 9/10), with the
 *      Gamma FLOOR: G_i = max(Gamma_i, gamma_floor) resp.
 *      G = max(mean_i Gamma_i, gamma_floor) (default 1e-4): Gamma -> 0 when
 *      all centroids coincide (and p_i equals them) would give 0/0; with the
 *      floor the loss is CMI/floor, finite. Below the floor Gamma passes no
 *      gradient (d max/d Gamma = 0; at Gamma == floor it does, as nn_clamp).
 *
 * Numerics: log space throughout: ln S(v)_j = ln s(v_j) - ln(sum_k s(v_k) +
 * 1e-8) with ln s(v) = -softplus(-v) (softmax: v_j - logsumexp(v)); KL terms
 * from the logs; the fused op computes in double. Sum_{c != y} w_c KL(q_c||p_i)
 * is expanded as sum_{c != y} w_c h_c - sum_j ln p_ij (Q_j - w_y q_yj) with
 * h_c = sum_j q_cj ln q_cj and Q_j = sum_c w_c q_cj, so forward and backward
 * cost O((N + C) D), not O(N C D).
 *
 * The MIL pitfall (one bag per step): on the first training step the centre
 * is set from that single bag, so z - c = 0 exactly and F.normalize's
 * gradient is ~1/norm_eps (1e12). ncmi handles it in two ways:
 *   - recommended: before training, the trainer calls nn_ncmi_init_center()
 *     with the (eval-mode) embeddings of (part of) the training set, so the
 *     first step already has a centre from many bags; the flag
 *     <prefix>.center_initialized is then set and training batches only do
 *     the EMA update;
 *   - safety net: a sample with ||z_i - c|| <= norm_eps has no direction; it
 *     enters the loss value (p_i uniform-ish) but passes NO gradient to z_i,
 *     and when every sample of the batch is such (the first single-bag step
 *     without init_center), the step is SKIPPED: the loss is returned as a
 *     constant (no backward recorded: neither z nor xi gets a gradient) and
 *     m->last_skipped is set.
 * For MIL, choose m so that c tracks the data over about an epoch, e.g.
 * m = 1 - 1/(bags per epoch) (documented by the trainer's config).
 *
 * State, in the nn_params set P given to nn_ncmi_init (so it is saved in
 * checkpoints by nn_params_save / nn_checkpoint_save):
 *   <prefix>.xi                  [C,D] NN_PARAM_WEIGHT (trainable)
 *   <prefix>.center              [D]   NN_PARAM_BUFFER
 *   <prefix>.center_initialized  [1]   NN_PARAM_BUFFER (0 or 1)
 * The centroid optimizer (SGD on xi) is the trainer's: give nn_ncmi_init
 * its OWN nn_params set (P_ncmi); its only trainable tensor is xi, so
 *     nn_optim_sgd_init(&opt_xi, &P_ncmi, lr_xi, momentum, 0, 0)
 * steps xi alone (buffers are never stepped), while the encoder's optimizer
 * runs on the model's set. Checkpoint both sets (or copy the three tensors
 * into the model checkpoint). With centroids = fixed, xi is still registered
 * (saved) but never receives a gradient, so that optimizer does nothing.
 *
 * Initialisation of xi (the authors' code): D >= C: xi = [I_C | 0] * 10 + 1e-6.
 * D < C (no identity fits): xi_c = 10 u_c + 1e-6 with u_c independent random
 * unit vectors (normalised Gaussians drawn from rng): distinct, equally
 * scaled, nearly orthogonal when D is large; documented alternative.
 */
#ifndef NCMI_NCMI_H
#define NCMI_NCMI_H

#include "params.h"
#include "rng.h"
#include "tensor.h"

typedef enum nn_ncmi_simplex { NN_NCMI_NSF = 0, NN_NCMI_SOFTMAX = 1 } nn_ncmi_simplex;
typedef enum nn_ncmi_gamma { NN_NCMI_GAMMA_CLASSES = 0, NN_NCMI_GAMMA_PRIOR = 1 } nn_ncmi_gamma;
typedef enum nn_ncmi_ratio { NN_NCMI_RATIO_PER_SAMPLE = 0, NN_NCMI_RATIO_OF_MEANS = 1 } nn_ncmi_ratio;
typedef enum nn_ncmi_centroid_mode {
    NN_NCMI_CENTROIDS_LEARNED = 0,
    NN_NCMI_CENTROIDS_FIXED = 1
} nn_ncmi_centroid_mode;

typedef struct nn_ncmi_cfg {
    float tau;             /* temperature, default 0.2 (authors' CIFAR-100 scripts) */
    float momentum;        /* EMA m in [0,1], default 0.99999 */
    int centering;         /* 1 (default) or 0 (ablation: no centre) */
    nn_ncmi_simplex simplex;     /* nsf (default) | softmax */
    nn_ncmi_gamma gamma;         /* classes (default) | prior */
    nn_ncmi_ratio ratio;         /* per_sample (default) | of_means */
    nn_ncmi_centroid_mode centroids; /* learned (default) | fixed */
    float gamma_floor;     /* floor on Gamma, default 1e-4 (> 0) */
    float norm_eps;        /* eps of the L2 normalisation, default 1e-12 (F.normalize) */
} nn_ncmi_cfg;

nn_ncmi_cfg nn_ncmi_cfg_default(void);
/* Set one option from config text: key "tau", "momentum", "centering"
 * (true|false|on|off|1|0), "simplex" (nsf|softmax), "gamma" (classes|prior),
 * "ratio" (per_sample|of_means), "centroids" (learned|fixed), "gamma_floor",
 * "norm_eps". 0, or -1 with ncmi_error() naming the key and the value. */
int nn_ncmi_cfg_set(nn_ncmi_cfg *cfg, const char *key, const char *value);
/* 0, or -1 with ncmi_error() naming the bad field. */
int nn_ncmi_cfg_check(const nn_ncmi_cfg *cfg);

typedef struct nn_ncmi {
    nn_ncmi_cfg cfg;
    int C, D;
    nn_tensor *xi;          /* [C,D] "<prefix>.xi", in P */
    nn_tensor *center;      /* [D] "<prefix>.center", in P */
    nn_tensor *center_init; /* [1] "<prefix>.center_initialized", in P (0/1) */
    double *w;              /* [C] Gamma weights: 1/C or the normalised prior (owned) */
    /* statistics of the last nn_ncmi_loss / _composed call, for logs */
    float last_cmi;         /* mean_i CMI_i */
    float last_gamma;       /* mean_i Gamma_i (before the floor) */
    int last_skipped;       /* 1: the step was skipped (all ||z_i - c|| <= norm_eps) */
} nn_ncmi;

/* Register xi, center, center_initialized in P under prefix (e.g. "ncmi")
 * and initialise xi (see above; rng is used only when D < C, may be NULL:
 * then a fixed seed). C >= 2, D >= 2. prior: [C] class frequencies of the
 * training set (counts or fractions, >= 0, sum > 0), required for gamma =
 * prior, ignored otherwise. 0, or -1 with ncmi_error() (bad config, sizes or
 * prior); nothing is registered then. Free with nn_ncmi_free (the tensors
 * belong to P). */
int nn_ncmi_init(nn_ncmi *m, nn_params *P, const char *prefix, int C, int D,
                 const nn_ncmi_cfg *cfg, const float *prior, nn_rng *rng);
void nn_ncmi_free(nn_ncmi *m);

/* The loss, shape [1], as ONE fused node with a hand-written backward w.r.t.
 * z [N,D] (any N >= 1) and, with centroids = learned, xi. labels[N] in
 * [0,C) (NCMI_CHECK). training != 0: the centre is updated first (step 1);
 * training == 0: c is used as it is. */
nn_tensor *nn_ncmi_loss(nn_graph *g, nn_ncmi *m, nn_tensor *z, const int *labels, int training);
/* The same loss built from engine ops (sub, l2_normalize, softplus, sigmoid,
 * log, exp, matmul, index_select, clamp, ...), autograd for the gradient;
 * for tests. Same centre update and skip rule. (A sample with
 * ||z_i - c|| <= norm_eps gets nn_l2_normalize's gradient here, not 0.) */
nn_tensor *nn_ncmi_loss_composed(nn_graph *g, nn_ncmi *m, nn_tensor *z, const int *labels,
                                 int training);

/* Centre from a pass over data: c = mean of the n rows of Z [n,D] (e.g. the
 * eval-mode embeddings of part of the training set, or n = 1 with a mean the
 * trainer accumulated itself), and mark it initialised. 0, or -1 with
 * ncmi_error() when n < 1 or Z holds a non-finite value (c unchanged). */
int nn_ncmi_init_center(nn_ncmi *m, const float *Z, int n);

/* Step 1 with a batch mean computed elsewhere: c = mean (first batch) or
 * c <- m c + (1-m) mean, rounded as the update inside nn_ncmi_loss, and the
 * centre marked initialised. Data-parallel training (train/trainer.c) sums
 * z over every rank's slice of the global batch, calls this with the mean
 * on every rank and then nn_ncmi_loss with training = 0, so the centre is
 * the one single-process training on the global batch would have. */
void nn_ncmi_update_center_mean(nn_ncmi *m, const double *mean);

/* Eval mode (c not updated), for centroid comparison and linear probing:
 * zprime [n,D] = (z - c) / max(||z - c||, norm_eps) / tau (without c when
 * centering = 0) and p [n,D] = S(zprime). Either output may be NULL. */
void nn_ncmi_project(const nn_ncmi *m, const float *z, int n, float *zprime, float *p);
/* The learned centroids q [C,D] = S(xi_c). */
void nn_ncmi_centroids(const nn_ncmi *m, float *q);

#endif
