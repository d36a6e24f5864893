/* The training config schema of `ncmi train` (keys, types, defaults, help):
 * the loader, `ncmi train --help-config` and docs/config.md all come from
 * the one table in train_config.c. Later issues add keys (NCMI loss, MIL
 * heads, ResNets, datasets) to the same table. */
#ifndef NCMI_CLI_TRAIN_CONFIG_H
#define NCMI_CLI_TRAIN_CONFIG_H

#include "config.h"

typedef enum { NCMI_DATA_SYNTHETIC = 0, NCMI_DATA_MNIST = 1 } ncmi_data_kind;
typedef enum { NCMI_MODEL_MLP = 0 } ncmi_model_kind;
typedef enum { NCMI_HEAD_LINEAR = 0, NCMI_HEAD_NCMI = 1 } ncmi_head_kind;
/* same order as nn_loss_kind (nn/loss.h) */
typedef enum {
    NCMI_LOSS_CE = 0,
    NCMI_LOSS_LABEL_SMOOTHING,
    NCMI_LOSS_FOCAL,
    NCMI_LOSS_POLY1,
    NCMI_LOSS_SQUARE,
    NCMI_LOSS_SQUENTROPY,
    NCMI_LOSS_ANTICLASS
} ncmi_loss_kind;
typedef enum { NCMI_EVAL_SPLIT_TEST = 0, NCMI_EVAL_SPLIT_VAL = 1 } ncmi_eval_split;
typedef enum { NCMI_OPTIM_NAME_SGD = 0, NCMI_OPTIM_NAME_ADAMW = 1 } ncmi_optim_name;
typedef enum { NCMI_SCHED_CONSTANT = 0, NCMI_SCHED_MULTISTEP, NCMI_SCHED_COSINE } ncmi_sched_kind;

typedef struct ncmi_train_config {
    char *name;             /* run name: runs/<name>/ ("" = the config file's base name) */
    int seed;
    /* data */
    int data_kind;
    char *data_root;        /* mnist: folder of t10k-images/labels */
    int n_train, n_val, n_test; /* 0: the kind's default (ncmi_train_config_resolve) */
    int split_seed;         /* mnist: seed of the fixed train/val/test split */
    ncmi_cfg_strings classes; /* class names ([]: the dataset's own) */
    int augment_shift;      /* mnist: random translation in pixels when training */
    int n_classes, dim;
    double separation;
    /* model */
    int model_kind;
    ncmi_cfg_ints hidden;
    /* head and loss */
    int head_kind;
    int loss_kind;
    double label_smoothing, focal_gamma, poly_eps, square_k, square_M, anticlass_weight;
    /* NCMI head */
    double ncmi_tau, ncmi_momentum;
    int ncmi_simplex, ncmi_centering, ncmi_gamma, ncmi_ratio, ncmi_centroids;
    double ncmi_gamma_floor;
    double centroid_lr, centroid_momentum, centroid_weight_decay;
    int center_init_samples;
    int ncmi_eval;          /* 0 cc, 1 learned */
    /* linear probing */
    int lp_epochs, lp_batch_size;
    double lp_lr, lp_momentum, lp_weight_decay;
    /* evaluation */
    int eval_split;
    /* optimizer */
    int optim_name;
    double lr, momentum;
    int nesterov;
    double weight_decay;
    ncmi_cfg_floats betas;
    double eps;
    /* LR schedule (per epoch) */
    int schedule_kind;
    ncmi_cfg_ints milestones;
    double gamma, min_lr, warmup_epochs;
    /* loop */
    int epochs, batch_size;
    double clip_grad_norm;
    int eval_every;
    char *select;           /* accuracy | f1_auc | loss | an eval metric name */
    int patience;
    int threads;
    char *out;              /* run folder root */
} ncmi_train_config;

extern const ncmi_cfg_schema ncmi_train_schema;

/* Checks across keys that the per-key bounds cannot express (milestones
 * increasing, warm-up shorter than the run, ...). -1 with ncmi_error(). */
int ncmi_train_config_check(const ncmi_train_config *c);
/* Replace the "0 = the kind's default" sizes (data.n_train, n_val, n_test)
 * by their values: synthetic 600 / 300 / 0, mnist 7000 / 1000 / 2000. */
void ncmi_train_config_resolve(ncmi_train_config *c);

#endif
