/* How a slide model's training data were made, so that `ncmi score` can
 * process a new slide exactly the same way: runs/<name>/data_params.json,
 * written by `ncmi train` for data.kind bags from the attributes of the
 * training feature files (ncmi features copies the coords file's tiling
 * parameters into them, with the encoder, its weights' hash and source,
 * the precision and the input size). docs/score.md describes the file. */
#ifndef NCMI_CLI_DATA_PARAMS_H
#define NCMI_CLI_DATA_PARAMS_H

#include <stdint.h>

#include "../train/trainer.h"

#define CLI_DATA_PARAMS_FILE "data_params.json"

typedef struct cli_data_params {
    char features_dir[4096]; /* the run's data.features */
    char source[4300];       /* the first training file read (messages) */
    int n_files;             /* training feature files read */
    int dim;                 /* feature dimension */
    char encoder[64], weights_sha256[80], weights_source[1024], precision[16];
    int input_size, patch_size;
    double target_mpp;
    char tiling[1024];       /* tl_tile_params_json of the training slides; "" = not recorded */
    int64_t bag_min, bag_median, bag_max; /* patches per training slide */
    double mpp_min, mpp_max;              /* level-0 um/px of the training slides (0: unknown) */
    char problems[1024];     /* training files that disagree on how they were made ("" = none) */
} cli_data_params;

/* Read the attributes of every training bag's file (<features_dir>/<id>.h5
 * for the sample ids of train). Files that disagree with the first on
 * encoder, weights, precision, input size or tiling are named in
 * p->problems (not an error). 0, or -1 with ncmi_error() (unreadable file). */
int cli_data_params_collect(const char *features_dir, const tr_dataset *train, cli_data_params *p);
/* <run_dir>/data_params.json, atomically. 0 or -1. */
int cli_data_params_write(const char *run_dir, const cli_data_params *p);
/* 0, or -1 with ncmi_error() naming the file. */
int cli_data_params_read(const char *run_dir, cli_data_params *p);
/* 1 when <run_dir>/data_params.json does not exist. */
int cli_data_params_missing(const char *run_dir);

#endif
