/* Cross-validation of `ncmi train --folds DIR` (cmd_train.c runs the folds):
 * the fold manifests of a folder, the test metrics of each finished fold run
 * (metrics_<split>[_<method>].json), cv_summary.json and the printed table
 * with mean +- std over the folds. */
#ifndef NCMI_CLI_TRAIN_CV_H
#define NCMI_CLI_TRAIN_CV_H

#include <stdio.h>

/* The *.csv files of dir, sorted by the number at the end of their stem
 * (fold2.csv before fold10.csv; names without a number after those, by
 * name). paths[i] = "<dir>/<file>" and ks[i] = that number (or the position
 * when the name has none), both malloc'd. Returns the count (>= 1) or -1
 * with ncmi_error() set (no folder, no CSV file, the same number twice). */
int cli_cv_list_folds(const char *dir, char ***paths, int **ks);
void cli_cv_free_folds(char **paths, int n);

#define CLI_CV_METHODS 4 /* linear, cc, learned, lp (tr_method order) */
#define CLI_CV_METRICS 3 /* accuracy, f1_macro, auc_macro */

typedef struct cli_cv {
    int n, cap;
    int *k;                  /* [n] fold numbers */
    char **manifest, **run;  /* [n] */
    double (*m)[CLI_CV_METHODS][CLI_CV_METRICS]; /* [n]: NAN where absent or undefined */
    int have[CLI_CV_METHODS];                     /* a method seen in some fold */
    char split[8];                                /* "test" or "val" */
} cli_cv;

void cli_cv_init(cli_cv *cv);
void cli_cv_free(cli_cv *cv);
/* Reads the metrics files of a finished fold run (run_dir): the linear
 * head's metrics_<split>.json, or NCMI's metrics_<split>_{cc,learned,lp}.json;
 * split is "test" when run_dir has its files, else "val". 0 or -1. */
int cli_cv_add(cli_cv *cv, int k, const char *manifest, const char *run_dir);
/* <path> (atomic): config, folds folder, split, per fold {fold, manifest,
 * run, <method>: {accuracy, f1_macro, auc_macro}}, and per method and metric
 * {mean, std, n} (std: sample standard deviation over the folds, n - 1). */
int cli_cv_write_json(const cli_cv *cv, const char *path, const char *name, const char *config,
                      const char *folds_dir);
/* The table: one row per fold, a column per method and metric, mean and std
 * rows, then "method: accuracy m +- s, macro-F1 ..., macro-AUC ..." lines. */
void cli_cv_print(const cli_cv *cv, FILE *f, const char *name, const char *folds_dir);
/* Repeated cross-validation (ncmi train --folds DIR --seeds LIST): one row
 * per seed (k = the seed, manifest = folds_dir, run = the seed's folder)
 * holding the mean over the folds of cv for every method and metric. */
int cli_cv_add_means(cli_cv *seeds, int seed, const cli_cv *cv, const char *folds_dir, const char *cv_dir);
/* <path> (atomic): config, folds folder, per seed {seed, cv, <method>: fold means},
 * per method and metric {mean, std, n} over the seeds. */
int cli_cv_write_seeds_json(const cli_cv *seeds, const char *path, const char *name, const char *config,
                            const char *folds_dir, int n_folds);
/* The table: one row per seed (its fold means), mean and std rows over the seeds. */
void cli_cv_print_seeds(const cli_cv *seeds, FILE *f, const char *name, const char *folds_dir, int n_folds);
/* mean and sample std (n - 1; 0 for one value) of the finite values; *n_out
 * their count (mean NAN when none). */
void cli_cv_mean_std(const double *v, int n, double *mean, double *std, int *n_out);

#endif
