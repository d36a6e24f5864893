/* The training config schema of `ncmi train` (keys, types, defaults, help):
 * the loader, `ncmi train --help-config` and docs/config.md all come from
 * the one table in train_config.c. Later issues add keys (NCMI loss, MIL
 * heads, ResNets, datasets) to the same table. */
#ifndef NCMI_CLI_TRAIN_CONFIG_H
#define NCMI_CLI_TRAIN_CONFIG_H

#include "config.h"

typedef enum {
    NCMI_DATA_SYNTHETIC = 0,
    NCMI_DATA_MNIST = 1,
    NCMI_DATA_BAGS = 2,
    NCMI_DATA_CIFAR10 = 3,
    NCMI_DATA_CIFAR100 = 4,
    NCMI_DATA_IMAGENET = 5
} ncmi_data_kind;
/* data.augment */
typedef enum { NCMI_AUGMENT_NONE = 0, NCMI_AUGMENT_CIFAR, NCMI_AUGMENT_IMAGENET } ncmi_augment_kind;
/* MIL heads: model.kind - 1 is the mil_head_kind (mil/mil.h); ResNets:
 * model.kind - NCMI_MODEL_RESNET18 is the rn_arch (natural/resnet.h) */
typedef enum {
    NCMI_MODEL_MLP = 0,
    NCMI_MODEL_ABMIL,
    NCMI_MODEL_TRANSMIL,
    NCMI_MODEL_AEM,
    NCMI_MODEL_ASMIL,
    NCMI_MODEL_RESNET18,
    NCMI_MODEL_RESNET34,
    NCMI_MODEL_RESNET50,
    NCMI_MODEL_RESNET101
} ncmi_model_kind;
#define NCMI_MODEL_IS_MIL(k) ((k) >= NCMI_MODEL_ABMIL && (k) <= NCMI_MODEL_ASMIL)
#define NCMI_MODEL_IS_RESNET(k) ((k) >= NCMI_MODEL_RESNET18 && (k) <= NCMI_MODEL_RESNET101)
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
typedef enum { NCMI_OPTIM_NAME_SGD = 0, NCMI_OPTIM_NAME_ADAMW = 1, NCMI_OPTIM_NAME_ADAM = 2 } ncmi_optim_name;
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
    /* natural images (cifar10, cifar100, imagenet): natural/ loaders */
    int augment;            /* ncmi_augment_kind */
    int workers;            /* loader threads */
    int train_size;         /* imagenet: training crop side */
    int eval_size;          /* imagenet: evaluation centre-crop side */
    int eval_resize;        /* imagenet: shorter side before the centre crop (0: eval_size*256/224) */
    double val_fraction;    /* share of the training set held out for validation */
    int n_classes, dim;
    double separation;
    /* bags (data.kind bags): features folder + manifest */
    char *features;         /* folder of <slide_id>.h5 */
    char *manifest;         /* CSV: slide_id, label, split column */
    char *split_column;     /* column holding train/val/test ("split") */
    int fold;               /* -1, or k: "{fold}" in manifest / split_column becomes k */
    double cache_mb;
    int prefetch;
    int skip_missing;
    int standardize;
    /* model */
    int model_kind;
    ncmi_cfg_ints hidden;
    /* ResNets (natural/resnet.h) */
    int cifar_stem;         /* 3x3 stride-1 conv1, no max-pool */
    int width;              /* base channels (64: torchvision) */
    int in_channels;        /* conv1's input channels */
    /* MIL heads (mil/mil.h mil_opts) */
    int mil_d_inner, mil_attn_hidden;
    ncmi_cfg_ints mil_instance_layers; /* abmil/aem: Ilse et al.'s instance network ([]: off) */
    double mil_instance_dropout;
    int mil_gated;
    double mil_dropout;
    double aem_lambda;
    int aem_topk, aem_cosine;
    int transmil_landmarks, transmil_pinv_iters, transmil_legacy_slice;
    int asmil_tokens, asmil_heads, asmil_drop;
    double asmil_kd_T, asmil_kd_weight, asmil_ema;
    int asmil_anchor;       /* 0 ema, 1 frozen */
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
    ncmi_cfg_ints lp_grid_epochs;
    ncmi_cfg_floats lp_grid_lr;
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
/* "{fold}" in s replaced by fold (malloc'd); a copy when absent. */
char *ncmi_train_config_fold_path(const char *s, int fold);
/* Replace the "0 = the kind's default" sizes (data.n_train, n_val, n_test)
 * by their values: synthetic 600 / 300 / 0, mnist 7000 / 1000 / 2000
 * (cifar10, cifar100, imagenet: left at 0, the whole split); and
 * train.batch_size 0 by 32 (bags: 1 bag per step). */
void ncmi_train_config_resolve(ncmi_train_config *c);

#endif
