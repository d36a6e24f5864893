/* The training config schema of `ncmi train` (keys, types, defaults, help):
 * the loader, `ncmi train --help-config` and docs/config.md all come from
 * the one table in train_config.c. Later issues add keys (NCMI loss, MIL
 * heads, ResNets, datasets) to the same table. */
#ifndef NCMI_CLI_TRAIN_CONFIG_H
#define NCMI_CLI_TRAIN_CONFIG_H

#include "config.h"

typedef enum { NCMI_DATA_SYNTHETIC = 0 } ncmi_data_kind;
typedef enum { NCMI_MODEL_MLP = 0 } ncmi_model_kind;
typedef enum { NCMI_LOSS_CE = 0 } ncmi_loss_kind;
typedef enum { NCMI_OPTIM_NAME_SGD = 0, NCMI_OPTIM_NAME_ADAMW = 1 } ncmi_optim_name;
typedef enum { NCMI_SCHED_CONSTANT = 0, NCMI_SCHED_MULTISTEP, NCMI_SCHED_COSINE } ncmi_sched_kind;

typedef struct ncmi_train_config {
    char *name;             /* run name: runs/<name>/ ("" = the config file's base name) */
    int seed;
    /* data */
    int data_kind;
    int n_train, n_val, n_classes, dim;
    double separation;
    /* model */
    int model_kind;
    ncmi_cfg_ints hidden;
    /* loss */
    int loss_kind;
    double label_smoothing;
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
    int threads;
    char *out;              /* run folder root */
} ncmi_train_config;

extern const ncmi_cfg_schema ncmi_train_schema;

/* Checks across keys that the per-key bounds cannot express (milestones
 * increasing, warm-up shorter than the run, ...). -1 with ncmi_error(). */
int ncmi_train_config_check(const ncmi_train_config *c);

#endif
