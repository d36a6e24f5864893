/* What `ncmi train` and `ncmi eval --run` share: the datasets and the model
 * a training config describes, and the trainer's settings derived from it. */
#ifndef NCMI_CLI_TRAIN_JOB_H
#define NCMI_CLI_TRAIN_JOB_H

#include "../mil/mil.h"
#include "../nn/rng.h"
#include "../train/trainer.h"
#include "train_config.h"

typedef struct cli_train_job {
    tr_dataset train, val, test;
    int have_test;
    tr_model model;
    int have_model;
    char **classes; /* [C] */
    int C;
    nn_rng init_rng; /* the model init stream, after the model: initialises the head */
    int d_feat;      /* bags: feature dimension of the files */
} cli_train_job;

/* Build data (synthetic blobs, the MNIST split, or bags: features folder +
 * manifest, mil/bags.h) and the model (MLP or a MIL head, mil/mil.h) of a
 * resolved, checked config. 0, or -1 with ncmi_error() naming the file and
 * row of a bad label. */
int cli_train_job_init(cli_train_job *j, const ncmi_train_config *c);
void cli_train_job_free(cli_train_job *j);
/* The trainer's settings (run_dir, config_yaml, out, progress left to the caller). */
void cli_train_job_tr_config(const ncmi_train_config *c, const cli_train_job *j, tr_config *tc);
/* The MIL head options of a config (d_feat from the bags). */
void cli_train_job_mil_opts(const ncmi_train_config *c, int d_feat, mil_opts *o);

#endif
