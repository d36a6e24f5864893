/* The generic trainer: ONE training loop for every model (MLPs here, the MIL
 * heads of mil/ and the ResNets of natural/ later).
 *
 *   model   (tr_model):   parameters + forward(inputs) -> embedding z [n, D]
 *                         (+ optional auxiliary loss term, after-step hook)
 *   dataset (tr_dataset): count, labels, sample ids, and the input tensors of
 *                         a list of samples (augmented when training); either
 *                         batches of same-shape samples, or bags of different
 *                         sizes forwarded one at a time (their z rows are
 *                         concatenated before the loss)
 *   head:                 linear: a Linear(D, C) (tensors "<classifier>.weight"
 *                           / ".bias", the model names its classifier; "fc"
 *                           by default) + a CE-family loss (nn/loss.h)
 *                         ncmi:   nn/ncmi.h on z; the centroids xi are stepped
 *                           by their own SGD; the EMA centre is a buffer
 *
 * Loop: epochs of seeded shuffled batches; per step forward, loss (+ aux),
 * backward, gradient clipping, the encoder's optimizer (SGD/AdamW, weight
 * decay, lr from the schedule at the epoch) and, for NCMI, the centroid SGD;
 * evaluation on the validation set every eval_every epochs; model selection
 * on a configurable validation metric; early stopping; checkpoints every
 * epoch (atomic); bit-identical resume; log.csv; a progress line on a TTY.
 * At the end: predictions and metrics of the evaluation split at the selected
 * epoch (docs/training.md describes every file and choice).
 *
 * Data parallel (cfg.dist with world size W > 1, docs/distributed.md): every
 * rank runs this loop on the same shuffled order and takes its slice of each
 * global batch (batch_size / W samples; the last, short batch split as
 * evenly as possible); the gradients are averaged over the ranks (weighted
 * by the samples each rank had) before clipping and the optimizers, so the
 * step equals one process's step on the global batch up to float summation
 * order (batchnorm statistics stay per rank, as in PyTorch DDP). The NCMI
 * centre's EMA step uses the mean over the global batch. Rank 0 alone
 * evaluates, logs and writes checkpoints; the others wait for it. Buffers
 * (batchnorm running statistics) are rank 0's, broadcast every epoch.
 *
 * Everything fallible returns 0 / -1 with ncmi_error() set. */
#ifndef NCMI_TRAIN_TRAINER_H
#define NCMI_TRAIN_TRAINER_H

#include <stdint.h>
#include <stdio.h>

#include "../nn/dist.h"
#include "../nn/loss.h"
#include "../nn/ncmi.h"
#include "../nn/optim.h"
#include "../nn/params.h"
#include "../nn/rng.h"
#include "../nn/tensor.h"

/* ---- datasets ---- */

#define TR_MAX_INPUTS 4

typedef struct tr_dataset tr_dataset;
struct tr_dataset {
    char name[64];          /* "train", "val", "test": messages and file names */
    char source[512];       /* where the labels came from ("" if nowhere): messages */
    int n;                  /* samples (or bags) */
    int *labels;            /* [n] class indices in [0, C) */
    int bags;               /* 0: batches of same-shape samples; 1: one bag per sample,
                               forwarded alone (inputs called with n == 1) */
    /* id of sample i ("slide_id" column of the predictions) */
    const char *(*sample_id)(const tr_dataset *d, int i);
    /* The model's input tensors for samples idx[0..n), created in g.
     * training != 0: augment, drawing from rng (the only random source).
     * Returns the number of tensors written to out (1..TR_MAX_INPUTS) or -1. */
    int (*inputs)(const tr_dataset *d, nn_graph *g, const int *idx, int n, int training,
                  nn_rng *rng, nn_tensor **out);
    void (*free)(tr_dataset *d); /* frees what the implementation owns (may be NULL) */
    void *ctx;
    /* Optional (may be NULL): the order in which the trainer will ask for
     * samples next: an epoch's permutation idx[0..n), or natural order when
     * idx is NULL (evaluation). A read-ahead hint only (mil/bags.h); it must
     * not change what inputs returns. */
    void (*order)(const tr_dataset *d, const int *idx, int n);
};

/* Labels must lie in [0, C): -1 with "<source>: row i+1 (sample <id>): label L is not
 * one of the C classes" otherwise. */
int tr_dataset_check(const tr_dataset *d, int C);
void tr_dataset_free(tr_dataset *d);

/* A dataset held in memory: X [n, sample_numel] floats, each sample of shape
 * sample_shape (1-3 dims: [F] for MLPs, [C,H,W] for images). The dataset takes
 * ownership of X, y and ids (ids may be NULL: "<name>_<i>").
 * shift > 0 (images [C,H,W], or flat samples with img_hw set): training
 * batches are translated by a random integer offset in [-shift, shift] on
 * each axis, zero fill. */
typedef struct tr_dense_opts {
    int shift;         /* max translation in pixels when training (0 = no augmentation) */
    int img_h, img_w;  /* for flat samples: the image they are (shift needs it) */
} tr_dense_opts;
int tr_dense_dataset_init(tr_dataset *d, const char *name, const char *source, int n, int ndim,
                          const int *sample_shape, float *X, int *y, char **ids,
                          const tr_dense_opts *opts);

/* ---- models ---- */

typedef struct tr_model tr_model;
struct tr_model {
    nn_params *params;      /* the encoder's weights and buffers (owned by the model) */
    int dim;                /* embedding dimension D */
    char classifier[64];    /* prefix of the linear head's tensors ("fc" if empty) */
    char desc[256];         /* "mlp 784-256-128" */
    /* z [n, D] for the n samples whose inputs are in[0..n_in) (one bag: n = 1).
     * training: batchnorm statistics, dropout drawn from rng (NULL in eval).
     * *aux (may be left NULL): a scalar auxiliary loss term, weight included,
     * added to the head's loss (bags: averaged over the bags of the step). */
    nn_tensor *(*forward)(tr_model *m, nn_graph *g, nn_tensor *const *in, int n_in, int training,
                          nn_rng *rng, nn_tensor **aux);
    void (*after_step)(tr_model *m); /* optional: after each optimizer step (EMA anchors) */
    /* optional: before each training epoch (0-based) of `epochs` (AEM's cosine lambda) */
    void (*epoch_start)(tr_model *m, int epoch, int epochs);
    void (*free)(tr_model *m);       /* frees params and ctx */
    /* 1 when forward/after_step/epoch_start only use nn/ ops and device-aware
     * calls, so the model can train on the GPU (--device cuda) */
    int gpu_ok;
    void *ctx;
};

/* An MLP: hidden layers "layers.i" (Linear + ReLU); embedding = the last
 * hidden layer's output (after ReLU), or the input when hidden is empty. Its
 * classifier (linear head) is "layers.<n_hidden>", so an MLP with a linear head
 * is nn.ModuleList([Linear, ..., Linear]) with ReLU between. */
int tr_mlp_init(tr_model *m, int in, const int *hidden, int n_hidden, nn_rng *rng);

void tr_model_free(tr_model *m);

/* ---- configuration ---- */

typedef enum tr_head_kind { TR_HEAD_LINEAR = 0, TR_HEAD_NCMI = 1 } tr_head_kind;

/* Prediction methods: linear head; NCMI centroid comparison with class-mean
 * centroids (cc), with the learned centroids sigma(xi) (learned), linear
 * probing (lp). */
typedef enum tr_method {
    TR_METHOD_LINEAR = 0,
    TR_METHOD_CC,
    TR_METHOD_LEARNED,
    TR_METHOD_LP,
    TR_METHOD_COUNT
} tr_method;
const char *tr_method_name(tr_method m); /* "linear", "cc", "learned", "lp" */
int tr_method_from_name(const char *s);  /* -1 if unknown */

/* Most values of each axis of the linear-probe grid (lp.grid_epochs, lp.grid_lr). */
#define TR_LP_GRID_MAX 8

typedef struct tr_config {
    /* loop */
    int epochs, batch_size;
    int eval_batch_size;     /* samples per eval forward (non-bag sets), default 512 */
    float clip_grad_norm;    /* 0 = off */
    uint64_t seed;
    /* encoder optimizer */
    nn_optim_kind optim;
    float lr, momentum, weight_decay, beta1, beta2, eps;
    int nesterov;
    nn_lr_schedule schedule; /* in epochs; base_lr = lr */
    /* head */
    tr_head_kind head;
    nn_loss_cfg loss;        /* linear head */
    nn_ncmi_cfg ncmi;
    float centroid_lr, centroid_momentum, centroid_weight_decay;
    int center_init_samples; /* centre init from the first n training samples (0 = all) */
    tr_method ncmi_eval;     /* method for validation/selection: TR_METHOD_CC or _LEARNED */
    /* evaluation, selection */
    int eval_every;          /* evaluate on val every k epochs (and at the last epoch) */
    char select[64];         /* accuracy | f1_auc | loss | any eval metric name */
    int patience;            /* stop after this many evaluations without improvement (0 = off) */
    /* linear probing */
    int lp_epochs, lp_batch_size;
    float lp_lr, lp_momentum, lp_weight_decay;
    /* a grid of probes (either list non-empty; an empty list is the scalar
     * above): every (epochs, lr) pair is trained and the one with the best
     * validation score (select, on the val set; ties: the first in the order
     * epochs-major) is kept. Needs a validation set. */
    int lp_grid_epochs[TR_LP_GRID_MAX], n_lp_grid_epochs;
    float lp_grid_lr[TR_LP_GRID_MAX];
    int n_lp_grid_lr;
    /* classes */
    int n_classes;
    char **class_names;      /* [n_classes], borrowed */
    /* device: 0 CPU, 1 the GPU chosen by nn_cuda_init (--device). The model's
     * and the head's tensors are moved there by tr_init; inputs are copied
     * there per step; predictions, metrics and linear probing stay on the host. */
    int device_cuda;
    /* data-parallel process group (nn/dist.h; borrowed): NULL or world size 1
     * trains in this process alone; train.batch_size is the GLOBAL batch and
     * must be divisible by the world size */
    nn_dist *dist;
    /* run folder (NULL: no files) */
    const char *run_dir;
    const char *config_yaml; /* saved in checkpoints (borrowed; may be NULL) */
    const char *version;     /* saved in checkpoints (may be NULL) */
    /* output: progress 1 = one updating line (TTY), 0 = a line per epoch, -1 = silent */
    int progress;
    FILE *out;               /* summary lines (NULL: none) */
} tr_config;

/* Defaults: SGD lr 0.1 momentum 0.9 wd 5e-4, constant lr, linear head + CE,
 * NCMI defaults, centroid SGD lr 0.1 momentum 0.9, eval every epoch, select
 * on accuracy, no patience, LP 20 epochs lr 0.1 batch 128. */
void tr_config_default(tr_config *c);
/* The selection rule for a name: 0 ok, -1 unknown. */
int tr_select_check(const char *select);

/* ---- the trainer ---- */

typedef struct tr_state {
    int epoch;            /* epochs completed */
    nn_rng shuffle;       /* stream at the start of epoch `epoch` */
    double best_score;    /* higher is better (loss is negated) */
    int best_epoch;       /* 0: none yet */
    int bad_evals;        /* evaluations since the best */
    int stopped;          /* early stopping fired */
} tr_state;

typedef struct tr_epoch_stats {
    int epoch;
    double lr, train_loss, train_acc;
    int evaluated;
    double val_loss, val_acc, val_balanced_acc, val_f1_macro, val_auc_macro, score;
    double seconds;
} tr_epoch_stats;

typedef struct tr_trainer {
    tr_config cfg;
    tr_model *model;
    const tr_dataset *train, *val, *test;
    int C, D;
    /* head */
    nn_params P_head;     /* linear: classifier weight/bias; ncmi: xi, center, flag */
    nn_linear_m fc;
    nn_ncmi ncmi;
    int have_ncmi;
    /* views (tensors borrowed) */
    nn_params P_opt;      /* what the encoder optimizer steps: model (+ linear head) */
    nn_params P_all;      /* everything saved: model + head */
    nn_optim opt, opt_xi;
    int have_opt_xi;
    tr_state st;
    nn_graph *g;
    float *prior;         /* [C] class frequencies of the training set */
    /* log rows (resume keeps the earlier ones) */
    char **log_lines;
    int n_log;
    int resumed_from;     /* epoch resumed after (-1: fresh) */
    nn_dist_reducer *reducer; /* gradient all-reduce (world size > 1) */
    /* NCMI predictors that depend on the training set, for the weights
     * loaded (tr_compute_predictors, or stored in the checkpoint that
     * tr_load_weights read): class-mean centroids [C, D] and the linear probe
     * W [C, D], b [C]. NULL: none (tr_predict computes them from the training
     * set). Cleared by a training step and by tr_resume. */
    double *stored_cc;
    float *stored_lp_w, *stored_lp_b;
    /* the probe's settings (the grid's choice, else lp_epochs / lp_lr) and
     * its validation score (NAN: no grid, none computed) */
    int lp_epochs_used;
    float lp_lr_used;
    double lp_val_score;
} tr_trainer;

/* Set up the head, optimizers and state. val and test may be NULL. The
 * datasets' labels are checked against cfg->n_classes. The trainer borrows
 * model and datasets. Random streams: nn_rng_seed(root, cfg->seed) and its
 * forks 1 (the caller's data), 2 (the caller's model init), 3 (shuffling and
 * augmentation: tr_state.shuffle), 4 (linear probing). head_rng initialises
 * the head (xi when D < C, the linear classifier): pass the model's init
 * stream after the model was built (NULL: fork 5 of root). */
int tr_init(tr_trainer *t, const tr_config *cfg, tr_model *model, const tr_dataset *train,
            const tr_dataset *val, const tr_dataset *test, nn_rng *head_rng);
void tr_free(tr_trainer *t);

/* Load <run_dir>/last.safetensors (weights, both optimizers, centre, epoch,
 * RNG, best-so-far) to continue from it. */
int tr_resume(tr_trainer *t, const char *path);
/* Load weights (and the NCMI state) only, e.g. best.safetensors for eval;
 * also the stored NCMI predictors when the file has them (tensors
 * ncmi.cc_centroids F64 [C, D], ncmi.lp.weight [C, D], ncmi.lp.bias [C]). */
int tr_load_weights(tr_trainer *t, const char *path);

/* Train from t->st.epoch to cfg.epochs (or early stop). Writes log.csv,
 * last/best.safetensors into run_dir when set. */
int tr_fit(tr_trainer *t);

/* One training step on training samples idx[0..n) (augmented with rng):
 * forward, head loss (+ aux), backward, clipping, the encoder's optimizer and
 * (NCMI) the centroid SGD at their current lr, the model's after-step hook.
 * *loss = the batch loss, *hits = correct training predictions (linear:
 * argmax; NCMI: nearest learned centroid). An NCMI step whose samples all
 * sit on the centre is skipped (nn/ncmi.h). -1 on a non-finite loss.
 * Data parallel: every rank calls it at the same time with its own samples
 * (n may be 0); the gradients are averaged with weights n_rank / sum n, the
 * loss and hits returned are this rank's, and a non-finite loss on any rank
 * fails the step on every rank (*loss = NaN where it was finite). */
int tr_step(tr_trainer *t, const int *idx, int n, nn_rng *rng, double *loss, int *hits);

/* Embeddings of every sample of d in eval mode: *Z malloc'd [d->n, D]. */
int tr_embed(tr_trainer *t, const tr_dataset *d, float **Z);

/* Predictions of d with a method (linear head: TR_METHOD_LINEAR; NCMI: CC,
 * LEARNED, LP): pred[n], prob[n*C] (class probabilities / softmax scores).
 * CC and LP use the stored predictors when t has them (tr_load_weights of a
 * checkpoint that holds them, tr_compute_predictors), else the training
 * set's eval-mode embeddings. */
int tr_predict(tr_trainer *t, const tr_dataset *d, tr_method method, int *pred, double *prob);
/* The same from embeddings Z [n, D] already computed (tr_embed). */
int tr_predict_from_z(tr_trainer *t, const float *Z, int n, tr_method method, int *pred, double *prob);

/* NCMI predictors (no-ops for a linear head): tr_compute_predictors computes
 * the class-mean centroids and the linear probe (cfg.lp_*, seeded: the same
 * as tr_predict would) from the training set with the current weights and
 * keeps them in t; tr_save_predictors rewrites checkpoint `path` (atomically)
 * with them added (tensors ncmi.cc_centroids, ncmi.lp.weight, ncmi.lp.bias;
 * metadata stored_predictors "cc,lp"), so that predictions need no training
 * data (ncmi score). tr_predictors_stored: 1 when t has them (or needs none). */
int tr_compute_predictors(tr_trainer *t);
int tr_save_predictors(tr_trainer *t, const char *path);
int tr_predictors_stored(const tr_trainer *t);
void tr_predictors_clear(tr_trainer *t);

/* The final evaluation: predictions + metrics of d ("test" or "val") with
 * method written to <dir>/predictions_<split>[_<method>].csv and
 * metrics_<split>[_<method>].json (suffix omitted when suffix == 0). accuracy
 * returned in *acc (may be NULL). extra JSON fields: epoch, method, primary. */
int tr_write_eval(tr_trainer *t, const tr_dataset *d, tr_method method, const char *dir,
                  int suffix, int primary, int epoch, double *acc);

/* Everything the end of a run does: load best.safetensors (when run_dir is
 * set and it exists), for NCMI compute the predictors and store them in it
 * (tr_save_predictors), then write the evaluation files of d for every
 * method of the head (NCMI: cc, learned, lp; primary = cfg.ncmi_eval, also
 * written without suffix). Prints a line per method to cfg.out. */
int tr_final_eval(tr_trainer *t, const tr_dataset *d);

/* Metadata value of a checkpoint (malloc'd, NULL if absent/unreadable). */
char *tr_checkpoint_meta(const char *path, const char *key);

#endif
