/* ncmi train: train a model from a YAML config into a run folder.
 *
 * This file keeps the command line: arguments, the config (train_config.c),
 * the run-folder policy (refuse to overwrite, --resume, --force) and the
 * messages. Data and model come from the config (train_job.c); the loop,
 * checkpoints, log.csv, resume and the final evaluation are the generic
 * trainer's (train/trainer.h).
 *
 * Run folder <out>/<name>/ (docs/training.md):
 *   config.yaml        the resolved config
 *   log.csv            one row per epoch (train loss/acc, val loss and metrics, lr, seconds)
 *   last.safetensors   weights + both optimizers' state + metadata (epoch, rng, best), every epoch
 *   best.safetensors   weights of the best validation score (train.select)
 *   predictions_<split>[_<method>].csv, metrics_<split>[_<method>].json  at the best epoch
 *   data_params.json   slide models: how the training features were made (data_params.h)
 * Every file is written to a temporary name and renamed into place.
 * --resume continues from last.safetensors; the result is bit-identical to
 * an uninterrupted run with the same config and thread count. */
#include <cblas.h>
#include <errno.h>
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../nn/dist.h"
#include "../nn/error.h"
#include "../nn/safetensors.h"
#include "../mil/bags.h"
#include "../train/trainer.h"
#include "cli.h"

#include "../nn/cuda.h"
#include "data_params.h"
#include "train_config.h"
#include "train_cv.h"
#include "train_job.h"

#define CMD "train"

void ncmi_help_train(FILE *f)
{
    fprintf(f,
            "usage: ncmi train [--config FILE] [--set key=value ...] [--out DIR] [--resume | --force]\n"
            "                  [--folds DIR [--seeds LIST]]\n"
            "\n"
            "Train a model from a YAML config into the run folder <out>/<name>/:\n"
            "config.yaml (resolved), log.csv (one row per epoch), last.safetensors (weights,\n"
            "both optimizers' state, epoch, RNG state, best so far; written every epoch),\n"
            "best.safetensors (best validation score, train.select), and at the end the\n"
            "predictions and metrics of eval.split at the best epoch (predictions_test.csv,\n"
            "metrics_test.json; NCMI: one set per method, _cc, _learned, _lp).\n"
            "Data: synthetic blobs, MNIST, MIL bags of slide features, CIFAR-10/100 and\n"
            "ImageNet (data.kind, natural/ loaders on worker threads); model: MLP, a\n"
            "MIL head (abmil, transmil, aem, asmil) or a ResNet (resnet18/34/50/101);\n"
            "head: linear + a CE-family loss, or NCMI (head.kind). Recipes: configs/*.yaml;\n"
            "docs/training.md.\n"
            "\n"
            "options:\n"
            "  --config FILE       YAML config (keys: 'ncmi train --help-config', docs/config.md);\n"
            "                      without it the defaults are used\n"
            "  --set key=value     override one key after the file, value as YAML\n"
            "                      (--set optim.lr=0.05 --set model.hidden=[128,64]); repeatable\n"
            "  --out DIR           root of the run folder (the config's 'out', default runs)\n"
            "  --resume            continue the run from <out>/<name>/last.safetensors up to\n"
            "                      train.epochs (same final weights as an uninterrupted run)\n"
            "  --force             start over even if the run folder holds a run\n"
            "  --folds DIR         cross-validation: one run per fold manifest DIR/*.csv\n"
            "                      (data.manifest = that file; fold k from its name, fold3.csv)\n"
            "                      in <out>/<name>/fold_<k>/, then <out>/<name>/cv_summary.json\n"
            "                      and a table of every fold's test accuracy, macro-F1 and\n"
            "                      macro-AUC (NCMI: CC, learned, LP) with mean +- std\n"
            "  --seeds LIST        with --folds: repeat the cross-validation once per seed\n"
            "                      (0-4, or 0,1,7; replaces the config's seed) in\n"
            "                      <out>/<name>/seed_<s>/fold_<k>/, then\n"
            "                      <out>/<name>/cv_seeds_summary.json and a table of each\n"
            "                      seed's fold means with mean +- std over the seeds\n"
            "  --skip-missing      bags: leave out slides whose feature file is missing or\n"
            "                      unreadable, with a warning (data.skip_missing: true)\n"
            "  --print-config      print the resolved config and exit\n"
            "  --device D          cpu (default), cuda, cuda:K or auto: where the model trains\n"
            "                      (MLPs and the conv nets; MIL heads: CPU in this version)\n"
            "  --help-config[=md]  print every config key (type, default, help); md: markdown\n"
            "  -h, --help          this help\n"
            "\n"
            "Data parallel: start N processes with RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT set\n"
            "(torchrun style), or under srun or mpirun; train.batch_size is the global batch;\n"
            "rank 0 logs and writes the run folder (docs/distributed.md).\n"
            "\n"
            "Progress: one updating line on a terminal, one line per epoch otherwise (stderr).\n"
            "Exit codes: 0 ok, 1 usage error, 2 bad config or input file, 4 internal error.\n");
}

/* ------------------------------------------------------------------ */
/* small file helpers                                                  */

static int file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}


/* ------------------------------------------------------------------ */
/* checkpoint metadata                                                 */

/* Warn when the run is resumed with a config that differs from the one the
 * checkpoint was written with (other than the keys that may change). */
static void warn_config_change(const char *path, const char *saved_yaml, const ncmi_train_config *c)
{
    ncmi_train_config old;
    ncmi_cfg_defaults(&ncmi_train_schema, &old);
    char diff[1024];
    static const char *const may_change[] = {"train.epochs", "train.threads", "out", "name", NULL};
    if (!saved_yaml ||
        ncmi_cfg_load_string(&ncmi_train_schema, &old, saved_yaml, strlen(saved_yaml), path))
        cli_error(CMD, "warning: %s: cannot read the config it was trained with", path);
    else if (ncmi_cfg_diff(&ncmi_train_schema, &old, c, may_change, diff, sizeof diff) > 0)
        cli_error(CMD, "warning: resuming with a config that differs from the checkpoint's in: %s "
                       "(the result will not match an uninterrupted run)", diff);
    ncmi_cfg_free(&ncmi_train_schema, &old);
}

/* ------------------------------------------------------------------ */
/* the run                                                             */

typedef struct train_opts {
    int resume, force;
    const char *config_path;
    nn_dist *dist; /* data parallel (NULL: one process) */
} train_opts;

/* Returns an exit code. */
static int train_run(const ncmi_train_config *c, const train_opts *opt)
{
    int rc = NCMI_EXIT_INPUT;
    char dir[4096], path_cfg[4200], path_last[4200];
    if (snprintf(dir, sizeof dir, "%s/%s", c->out, c->name) >= (int)sizeof dir ||
        snprintf(path_cfg, sizeof path_cfg, "%s/config.yaml", dir) >= (int)sizeof path_cfg ||
        snprintf(path_last, sizeof path_last, "%s/last.safetensors", dir) >= (int)sizeof path_last) {
        cli_error(CMD, "run folder path too long");
        return NCMI_EXIT_INPUT;
    }

    if (opt->resume && !file_exists(path_last)) {
        cli_error(CMD, "%s: no checkpoint to resume from", path_last);
        return NCMI_EXIT_INPUT;
    }
    if (!opt->resume && !opt->force && file_exists(path_last)) {
        cli_error(CMD, "%s already holds a run; use --resume to continue it, --force to start "
                       "over, or another name (--set name=...)", dir);
        return NCMI_EXIT_INPUT;
    }

    if (c->threads > 0) {
        omp_set_num_threads(c->threads);
        openblas_set_num_threads(c->threads);
    }

    cli_train_job job;
    tr_trainer tr;
    int have_tr = 0;
    char *config_yaml = NULL;
    memset(&tr, 0, sizeof tr);
    if (cli_train_job_init(&job, c)) {
        cli_error(CMD, "%s", ncmi_error());
        return NCMI_EXIT_INPUT;
    }
    config_yaml = ncmi_cfg_to_yaml(&ncmi_train_schema, c);
    if (!config_yaml) {
        cli_error(CMD, "%s", ncmi_error());
        rc = NCMI_EXIT_INTERNAL;
        goto done;
    }
    tr_config tc;
    cli_train_job_tr_config(c, &job, &tc);
    tc.run_dir = dir;
    tc.config_yaml = config_yaml;
    tc.version = ncmi_version_string();
    tc.progress = isatty(2) ? 1 : 0;
    tc.out = stdout;
    /* data parallel: rank 0 alone shows progress, logs and writes the run folder */
    const int rank = nn_dist_rank(opt->dist), world = nn_dist_world(opt->dist);
    tc.dist = opt->dist;
    if (rank != 0) {
        tc.progress = -1;
        tc.out = NULL;
    }
    if (tr_init(&tr, &tc, &job.model, &job.train, &job.val, job.have_test ? &job.test : NULL,
                &job.init_rng)) {
        cli_error(CMD, "%s", ncmi_error());
        goto done;
    }
    have_tr = 1;
    if (opt->resume) {
        char *saved = tr_checkpoint_meta(path_last, "config");
        warn_config_change(path_last, saved, c);
        free(saved);
        if (tr_resume(&tr, path_last)) {
            cli_error(CMD, "cannot resume: %s", ncmi_error());
            goto done;
        }
    }
    if (tr.st.epoch >= c->epochs || tr.st.stopped) {
        if (tr.st.stopped)
            printf("nothing to do: %s stopped early after epoch %d (train.patience)\n", dir, tr.st.epoch);
        else
            printf("nothing to do: %s already trained %d of train.epochs = %d epochs\n", dir, tr.st.epoch,
                   c->epochs);
        /* stopped after its last checkpoint but before the end of its final
           evaluation (killed, out of time): do the evaluation now */
        const tr_dataset *fe = c->eval_split == NCMI_EVAL_SPLIT_TEST && job.have_test ? &job.test : &job.val;
        char last_file[4400];
        snprintf(last_file, sizeof last_file, "%s/metrics_%s%s.json", dir, fe->name,
                 c->head_kind == NCMI_HEAD_NCMI ? "_lp" : "");
        if (rank == 0 && !file_exists(last_file)) {
            printf("the final evaluation is missing (%s): evaluating\n", last_file);
            fflush(stdout);
            if (tr_final_eval(&tr, fe)) {
                cli_error(CMD, "%s", ncmi_error());
                goto done;
            }
        }
        rc = NCMI_EXIT_OK;
        goto done;
    }
    if (rank == 0 && (cli_mkdir_p(dir) || ncmi_cfg_write_yaml(&ncmi_train_schema, c, path_cfg))) {
        cli_error(CMD, "%s", ncmi_error());
        goto done;
    }
    /* slide models: how their features were made, for ncmi score */
    if (rank == 0 && c->data_kind == NCMI_DATA_BAGS) {
        cli_data_params dp;
        if (cli_data_params_collect(c->features, &job.train, &dp) || cli_data_params_write(dir, &dp))
            cli_error(CMD, "warning: cannot record how the training features were made (ncmi score will "
                           "need them): %s", ncmi_error());
        else if (dp.problems[0])
            cli_error(CMD, "warning: the training features were not all made the same way (ncmi score will "
                           "refuse this run): %s", dp.problems);
        /* data.standardize: the training statistics, so that score z-scores a new slide the same way */
        const float *mean, *inv_sd;
        int dim;
        if (mil_bags_standardization(&job.train, &mean, &inv_sd, &dim) == 1) {
            char sp[4600];
            snprintf(sp, sizeof sp, "%s/standardize.safetensors", dir);
            nn_st_tensor ts[2] = {{.name = "mean", .dtype = NN_ST_F32, .ndim = 1, .shape = {dim}, .data = mean},
                                  {.name = "inv_sd", .dtype = NN_ST_F32, .ndim = 1, .shape = {dim}, .data = inv_sd}};
            if (nn_st_write(sp, ts, 2, NULL, NULL, 0))
                cli_error(CMD, "warning: cannot record the feature standardization (ncmi score will refuse this "
                               "run): %s", ncmi_error());
        }
    }

    const char *head = c->head_kind == NCMI_HEAD_NCMI
                           ? "ncmi"
                           : ncmi_cfg_enum_name(ncmi_cfg_find(&ncmi_train_schema, "loss.kind"), c);
    char par[600];
    if (world > 1)
        snprintf(par, sizeof par, "world size %d (%s backend; global batch %d = %d per rank; rank 0 logs)", world,
                 nn_dist_backend_name(nn_dist_backend_of(opt->dist)), c->batch_size, c->batch_size / world);
    else
        snprintf(par, sizeof par, "world size 1");
    printf("ncmi train: %s: %s (%zu parameters), head %s, %d train / %d val%s%.0d samples, %s lr %g, "
           "epochs %d..%d/%d, %d thread%s, device %s, %s\n",
           c->name, job.model.desc, nn_params_numel(&tr.P_all, 1), head, job.train.n, job.val.n,
           job.have_test ? " / test " : "", job.have_test ? job.test.n : 0,
           ncmi_cfg_enum_name(ncmi_cfg_find(&ncmi_train_schema, "optim.name"), c), c->lr,
           tr.st.epoch + 1, c->epochs, c->epochs, omp_get_max_threads(),
           omp_get_max_threads() == 1 ? "" : "s", nn_device_name(cli_device_cuda), par);
    if (opt->resume) printf("resuming %s after epoch %d\n", path_last, tr.st.epoch);
    fflush(stdout);

    if (tr_fit(&tr)) {
        cli_error(CMD, "%s", ncmi_error());
        goto done;
    }
    if (rank != 0) { /* rank 0 writes the evaluation files */
        rc = NCMI_EXIT_OK;
        goto done_sync;
    }
    /* the last log row */
    if (tr.n_log > 0) {
        int ep;
        double lr, tl, ta, vl, va;
        if (sscanf(tr.log_lines[tr.n_log - 1], "%d,%lf,%lf,%lf,%lf,%lf", &ep, &lr, &tl, &ta, &vl, &va) == 6)
            printf("final: epoch %d/%d  train_acc %.4f  val_loss %.4f  val_acc %.4f  (best val %s %.4f at "
                   "epoch %d)\n",
                   ep, c->epochs, ta, vl, va, c->select,
                   !strcmp(c->select, "loss") ? -tr.st.best_score : tr.st.best_score, tr.st.best_epoch);
    }
    const tr_dataset *ev = c->eval_split == NCMI_EVAL_SPLIT_TEST && job.have_test ? &job.test : &job.val;
    if (c->eval_split == NCMI_EVAL_SPLIT_TEST && !job.have_test)
        printf("no test set (data.n_test = 0): evaluating on val\n");
    if (tr_final_eval(&tr, ev)) {
        cli_error(CMD, "%s", ncmi_error());
        goto done;
    }
    printf("run folder: %s\n", dir);
    rc = NCMI_EXIT_OK;
done_sync:
    /* the ranks leave together, after rank 0's final evaluation (no time
     * limit: it may be long; the next fold of --folds starts after it) */
    if (world > 1 && nn_dist_barrier(opt->dist, -1)) {
        cli_error(CMD, "%s", ncmi_error());
        rc = NCMI_EXIT_INTERNAL;
    }
done:
    if (have_tr) tr_free(&tr);
    free(config_yaml);
    cli_train_job_free(&job);
    return rc;
}

/* ------------------------------------------------------------------ */
/* cross-validation: --folds DIR                                       */

/* Every fold manifest of folds_dir in turn as data.manifest, the run in
 * <out>/<name>/fold_<k>/ (seeds != NULL: <out>/<name>/seed_<c->seed>/fold_<k>/);
 * then cv_summary.json and the table in that folder; with seeds, a row of
 * fold means added to *seeds and *n_folds set. c is restored before
 * returning. Returns an exit code. */
static int train_folds(ncmi_train_config *c, const train_opts *opt, const char *folds_dir, cli_cv *seeds,
                       int *n_folds)
{
    char **paths = NULL;
    int *ks = NULL;
    int n = cli_cv_list_folds(folds_dir, &paths, &ks);
    if (n < 0) {
        cli_error(CMD, "%s", ncmi_error());
        return NCMI_EXIT_INPUT;
    }
    char cv_dir[4096], path_sum[4200], sub[32] = "";
    if (seeds) snprintf(sub, sizeof sub, "/seed_%d", c->seed);
    if (n_folds) *n_folds = n;
    if (snprintf(cv_dir, sizeof cv_dir, "%s/%s%s", c->out, c->name, sub) >= (int)sizeof cv_dir ||
        snprintf(path_sum, sizeof path_sum, "%s/cv_summary.json", cv_dir) >= (int)sizeof path_sum) {
        cli_error(CMD, "run folder path too long");
        cli_cv_free_folds(paths, n);
        free(ks);
        return NCMI_EXIT_INPUT;
    }
    char *base_out = c->out, *base_name = c->name, *base_manifest = c->manifest;
    const int base_fold = c->fold;
    /* a split column with '{fold}' (split_{fold}) still gets the fold number */
    const int split_fold = c->split_column && strstr(c->split_column, "{fold}") != NULL;
    cli_cv cv;
    cli_cv_init(&cv);
    int rc = NCMI_EXIT_OK;
    for (int i = 0; i < n && rc == NCMI_EXIT_OK; i++) {
        char name[32], run_dir[4300], last[4400];
        snprintf(name, sizeof name, "fold_%d", ks[i]);
        snprintf(run_dir, sizeof run_dir, "%s/%s", cv_dir, name);
        snprintf(last, sizeof last, "%s/last.safetensors", run_dir);
        c->out = cv_dir;
        c->name = name;
        c->manifest = paths[i];
        c->fold = split_fold ? ks[i] : -1;
        if (ncmi_train_config_check(c)) {
            cli_error(CMD, "fold %d (%s): %s", ks[i], paths[i], ncmi_error());
            rc = NCMI_EXIT_INPUT;
            break;
        }
        /* --resume: folds without a checkpoint yet start from scratch */
        train_opts fo = *opt;
        if (fo.resume && !file_exists(last)) fo.resume = 0;
        printf("== fold %d (%d of %d): %s -> %s\n", ks[i], i + 1, n, paths[i], run_dir);
        fflush(stdout);
        rc = train_run(c, &fo);
        if (rc != NCMI_EXIT_OK) {
            cli_error(CMD, "fold %d (%s) failed%s%s", ks[i], paths[i], i ? "; the folds before it are in " : "",
                      i ? cv_dir : "");
            break;
        }
        if (nn_dist_rank(opt->dist) == 0 && cli_cv_add(&cv, ks[i], paths[i], run_dir)) {
            cli_error(CMD, "fold %d: %s", ks[i], ncmi_error());
            rc = NCMI_EXIT_INTERNAL;
        }
    }
    c->out = base_out;
    c->name = base_name;
    c->manifest = base_manifest;
    c->fold = base_fold;
    if (rc == NCMI_EXIT_OK && nn_dist_rank(opt->dist) == 0) { /* rank 0 writes the summary */
        if (cli_cv_write_json(&cv, path_sum, c->name, opt->config_path, folds_dir)) {
            cli_error(CMD, "%s", ncmi_error());
            rc = NCMI_EXIT_INTERNAL;
        } else {
            cli_cv_print(&cv, stdout, c->name, folds_dir);
            printf("summary: %s\n", path_sum);
            if (seeds && cli_cv_add_means(seeds, c->seed, &cv, folds_dir, cv_dir)) {
                cli_error(CMD, "%s", ncmi_error());
                rc = NCMI_EXIT_INTERNAL;
            }
        }
    }
    cli_cv_free(&cv);
    cli_cv_free_folds(paths, n);
    free(ks);
    return rc;
}

/* Repeated cross-validation (--seeds): train_folds once per seed (the
 * config's seed replaced) into <out>/<name>/seed_<s>/, then
 * <out>/<name>/cv_seeds_summary.json and a table of the fold means per seed
 * with their mean +- std over the seeds. Returns an exit code. */
static int train_folds_seeds(ncmi_train_config *c, const train_opts *opt, const char *folds_dir,
                             const int *seed_list, int n_seeds)
{
    const int base_seed = c->seed;
    cli_cv seeds;
    cli_cv_init(&seeds);
    int rc = NCMI_EXIT_OK, n_folds = 0;
    for (int i = 0; i < n_seeds && rc == NCMI_EXIT_OK; i++) {
        c->seed = seed_list[i];
        printf("=== seed %d (%d of %d)\n", seed_list[i], i + 1, n_seeds);
        fflush(stdout);
        rc = train_folds(c, opt, folds_dir, &seeds, &n_folds);
    }
    c->seed = base_seed;
    if (rc == NCMI_EXIT_OK && nn_dist_rank(opt->dist) == 0) {
        char path[4400];
        if (snprintf(path, sizeof path, "%s/%s/cv_seeds_summary.json", c->out, c->name) >= (int)sizeof path) {
            cli_error(CMD, "run folder path too long");
            rc = NCMI_EXIT_INPUT;
        } else if (cli_cv_write_seeds_json(&seeds, path, c->name, opt->config_path, folds_dir, n_folds)) {
            cli_error(CMD, "%s", ncmi_error());
            rc = NCMI_EXIT_INTERNAL;
        } else {
            cli_cv_print_seeds(&seeds, stdout, c->name, folds_dir, n_folds);
            printf("summary: %s\n", path);
        }
    }
    cli_cv_free(&seeds);
    return rc;
}

/* --seeds LIST: comma-separated seeds or ranges a-b ("0-4", "0,2,7-9"), at
 * most 1000, each >= 0 and at most once. *out malloc'd. Count or -1. */
static int parse_seeds(const char *s, int **out)
{
    int *v = malloc(1000 * sizeof *v), n = 0;
    if (!v) return -1;
    const char *p = s;
    while (*p) {
        char *e;
        long a = strtol(p, &e, 10), b = a;
        if (e == p || a < 0 || a > 2147483647L) goto bad;
        p = e;
        if (*p == '-') {
            b = strtol(p + 1, &e, 10);
            if (e == p + 1 || b < a || b > 2147483647L) goto bad;
            p = e;
        }
        for (long x = a; x <= b; x++) {
            if (n == 1000) goto bad;
            for (int i = 0; i < n; i++)
                if (v[i] == (int)x) goto bad;
            v[n++] = (int)x;
        }
        if (*p == ',') p++;
        else if (*p) goto bad;
    }
    if (n == 0) goto bad;
    *out = v;
    return n;
bad:
    free(v);
    return -1;
}

/* ------------------------------------------------------------------ */
/* data parallel: ranks from the environment                            */

/* The process group when the environment has a world size > 1 (torchrun,
 * srun, mpirun: docs/distributed.md); *d stays NULL otherwise. Backend:
 * NCMI_DIST_BACKEND (tcp | nccl), else NCCL on the GPU when built with it,
 * else TCP. Ranks other than 0 print errors and warnings only. Returns an
 * exit code. */
static int dist_open(const ncmi_train_config *c, nn_dist **d)
{
    *d = NULL;
    nn_dist_env env;
    if (nn_dist_env_read(&env)) {
        cli_error(CMD, "%s", ncmi_error());
        return NCMI_EXIT_INPUT;
    }
    if (env.world <= 1) return NCMI_EXIT_OK;
    if (c->batch_size % env.world) {
        cli_error(CMD, "rank %d: train.batch_size %d is not divisible by the world size %d (%s environment): the "
                       "global batch is split evenly across the ranks",
                  env.rank, c->batch_size, env.world, env.source);
        return NCMI_EXIT_INPUT;
    }
    nn_dist_backend be = cli_device_cuda && nn_dist_nccl_built() ? NN_DIST_NCCL : NN_DIST_TCP;
    const char *b = getenv("NCMI_DIST_BACKEND");
    if (b && *b) {
        if (!strcmp(b, "tcp")) {
            be = NN_DIST_TCP;
        } else if (!strcmp(b, "nccl")) {
            if (!cli_device_cuda) {
                cli_error(CMD, "NCMI_DIST_BACKEND=nccl needs --device cuda");
                return NCMI_EXIT_USAGE;
            }
            be = NN_DIST_NCCL;
        } else {
            cli_error(CMD, "NCMI_DIST_BACKEND='%s': expected tcp or nccl", b);
            return NCMI_EXIT_USAGE;
        }
    }
    if (nn_dist_init(d, &env, be)) {
        cli_error(CMD, "%s", ncmi_error());
        return NCMI_EXIT_INTERNAL;
    }
    if (env.rank != 0 && !freopen("/dev/null", "w", stdout)) {
        cli_error(CMD, "rank %d: cannot silence stdout: %s", env.rank, strerror(errno));
        nn_dist_free(*d);
        *d = NULL;
        return NCMI_EXIT_INTERNAL;
    }
    return NCMI_EXIT_OK;
}

/* ------------------------------------------------------------------ */
/* argument parsing                                                    */

/* Base name of a path without its extension ("configs/demo_mlp.yaml" -> "demo_mlp"). */
static void stem(const char *path, char *buf, size_t n)
{
    const char *b = strrchr(path, '/');
    b = b ? b + 1 : path;
    snprintf(buf, n, "%s", b);
    char *dot = strrchr(buf, '.');
    if (dot && dot != buf) *dot = 0;
}

int ncmi_cmd_train(int argc, char **argv)
{
    const ncmi_cfg_schema *S = &ncmi_train_schema;
    train_opts opt = {0, 0, NULL, NULL};
    const char *out_dir = NULL, *folds_dir = NULL, *seeds_arg = NULL;
    const char **sets = calloc((size_t)argc, sizeof *sets);
    int n_sets = 0, print_config = 0, skip_missing = 0;
    if (!sets) return NCMI_EXIT_INTERNAL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        int m;
        if (cli_is_help(a)) {
            ncmi_help_train(stdout);
            free(sets);
            return NCMI_EXIT_OK;
        }
        if (!strcmp(a, "--help-config") || !strcmp(a, "--help-config=md") ||
            !strcmp(a, "--help-config=text")) {
            ncmi_cfg_print_schema(S, stdout, !strcmp(a, "--help-config=md"));
            free(sets);
            return NCMI_EXIT_OK;
        }
        if (!strcmp(a, "--resume")) { opt.resume = 1; continue; }
        if (!strcmp(a, "--force")) { opt.force = 1; continue; }
        if (!strcmp(a, "--print-config")) { print_config = 1; continue; }
        if (!strcmp(a, "--skip-missing")) { skip_missing = 1; continue; }
        if ((m = cli_opt_value(argc, argv, &i, CMD, "--config", &v)) != 0) {
            if (m < 0) goto usage;
            opt.config_path = v;
            continue;
        }
        if ((m = cli_opt_value(argc, argv, &i, CMD, "--set", &v)) != 0) {
            if (m < 0) goto usage;
            sets[n_sets++] = v;
            continue;
        }
        if ((m = cli_opt_value(argc, argv, &i, CMD, "--out", &v)) != 0) {
            if (m < 0) goto usage;
            out_dir = v;
            continue;
        }
        if ((m = cli_opt_value(argc, argv, &i, CMD, "--folds", &v)) != 0) {
            if (m < 0) goto usage;
            folds_dir = v;
            continue;
        }
        if ((m = cli_opt_value(argc, argv, &i, CMD, "--seeds", &v)) != 0) {
            if (m < 0) goto usage;
            seeds_arg = v;
            continue;
        }
        cli_usage_error(CMD, a[0] == '-' ? "unknown option '%s'" : "unexpected argument '%s'", a);
        goto usage;
    }
    if (opt.resume && opt.force) {
        cli_usage_error(CMD, "--resume and --force exclude each other");
        goto usage;
    }
    int *seed_list = NULL, n_seeds = 0;
    if (seeds_arg) {
        if (!folds_dir) {
            cli_usage_error(CMD, "--seeds repeats a cross-validation: it needs --folds");
            goto usage;
        }
        if ((n_seeds = parse_seeds(seeds_arg, &seed_list)) < 0) {
            cli_usage_error(CMD, "--seeds '%s': expected seeds >= 0 or ranges a-b separated by commas "
                                 "(0-4, 0,2,7), each at most once, at most 1000", seeds_arg);
            goto usage;
        }
    }

    ncmi_train_config c;
    ncmi_cfg_defaults(S, &c);
    int rc = NCMI_EXIT_INPUT;
    if (opt.config_path && ncmi_cfg_load_file(S, &c, opt.config_path)) {
        cli_error(CMD, "%s", ncmi_error());
        goto out;
    }
    for (int i = 0; i < n_sets; i++)
        if (ncmi_cfg_set(S, &c, sets[i])) {
            cli_error(CMD, "%s", ncmi_error());
            goto out;
        }
    if (skip_missing) c.skip_missing = 1;
    if (out_dir) {
        free(c.out);
        c.out = strdup(out_dir);
    }
    if (!c.name[0]) {
        char nm[256];
        if (opt.config_path)
            stem(opt.config_path, nm, sizeof nm);
        else
            snprintf(nm, sizeof nm, "run");
        free(c.name);
        c.name = strdup(nm);
    }
    if (!c.name || !c.out) {
        rc = NCMI_EXIT_INTERNAL;
        goto out;
    }
    ncmi_train_config_resolve(&c);
    if (ncmi_train_config_check(&c)) {
        cli_error(CMD, "%s: %s", opt.config_path ? opt.config_path : "config", ncmi_error());
        goto out;
    }
    if (print_config) {
        char *y = ncmi_cfg_to_yaml(S, &c);
        if (!y) {
            cli_error(CMD, "%s", ncmi_error());
            rc = NCMI_EXIT_INTERNAL;
            goto out;
        }
        fputs(y, stdout);
        free(y);
        rc = NCMI_EXIT_OK;
        goto out;
    }
    if (folds_dir && c.data_kind != NCMI_DATA_BAGS) {
        cli_error(CMD, "--folds: fold manifests need data.kind bags");
        goto out;
    }
    if ((rc = dist_open(&c, &opt.dist)) != NCMI_EXIT_OK) goto out;
    rc = seed_list ? train_folds_seeds(&c, &opt, folds_dir, seed_list, n_seeds)
         : folds_dir ? train_folds(&c, &opt, folds_dir, NULL, NULL)
                     : train_run(&c, &opt);
    nn_dist_free(opt.dist);
out:
    ncmi_cfg_free(S, &c);
    free(sets);
    free(seed_list);
    return rc;
usage:
    free(sets);
    return NCMI_EXIT_USAGE;
}
