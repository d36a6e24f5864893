/* ncmi train: train a model from a YAML config into a run folder.
 *
 * What exists now is the demo job: an MLP (nn_linear_m layers with ReLU)
 * trained with cross-entropy on seeded synthetic Gaussian blobs. The
 * pieces are kept apart so the generic trainer (NCMI loss, MIL heads,
 * ResNets) can replace them one by one:
 *   config (train_config.c) -> data (train_data) -> model (train_model)
 *   -> loop (epochs of steps, evaluation, checkpoints, log, resume).
 *
 * Run folder <out>/<name>/:
 *   config.yaml        the resolved config
 *   log.csv            epoch,lr,train_loss,train_acc,val_loss,val_acc,seconds
 *   last.safetensors   weights + optimizer state + metadata (epoch, rng), every epoch
 *   best.safetensors   weights of the best validation accuracy
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
#include <time.h>
#include <unistd.h>

#include "../nn/error.h"
#include "../nn/ops.h"
#include "../nn/optim.h"
#include "../nn/params.h"
#include "../nn/rng.h"
#include "../nn/safetensors.h"
#include "../nn/synth.h"
#include "cli.h"
#include "train_config.h"

#define CMD "train"
#define CKPT_FORMAT "ncmi-train/1"

void ncmi_help_train(FILE *f)
{
    fprintf(f,
            "usage: ncmi train [--config FILE] [--set key=value ...] [--out DIR] [--resume | --force]\n"
            "\n"
            "Train a model from a YAML config into the run folder <out>/<name>/:\n"
            "config.yaml (resolved), log.csv (one row per epoch), last.safetensors (weights,\n"
            "optimizer state, epoch and RNG state; written every epoch), best.safetensors\n"
            "(best validation accuracy). Now: an MLP on seeded synthetic Gaussian blobs\n"
            "(configs/demo_mlp.yaml); NCMI, MIL heads and ResNets come with issues 3, 5, 8.\n"
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
            "  --print-config      print the resolved config and exit\n"
            "  --help-config[=md]  print every config key (type, default, help); md: markdown\n"
            "  -h, --help          this help\n"
            "\n"
            "Progress: one updating line on a terminal, one line per epoch otherwise (stderr).\n"
            "Exit codes: 0 ok, 1 usage error, 2 bad config or input file, 4 internal error.\n");
}

/* ------------------------------------------------------------------ */
/* small file helpers                                                  */

static int mkdir_p(const char *path)
{
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", path);
    size_t n = strlen(buf);
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] == '/' || buf[i] == 0) {
            char c = buf[i];
            buf[i] = 0;
            if (mkdir(buf, 0777) != 0 && errno != EEXIST)
                return ncmi_error_set("%s: cannot create folder: %s", buf, strerror(errno));
            buf[i] = c;
        }
    }
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode))
        return ncmi_error_set("%s: not a folder", path);
    return 0;
}

static int file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ------------------------------------------------------------------ */
/* data                                                                */

typedef struct train_data {
    int n_train, n_val, dim, n_classes;
    float *X;   /* [n_train + n_val, dim]: training rows first */
    int *y;
} train_data;

static int data_load(train_data *d, const ncmi_train_config *c, nn_rng *rng)
{
    memset(d, 0, sizeof *d);
    switch (c->data_kind) {
    case NCMI_DATA_SYNTHETIC: {
        int n = c->n_train + c->n_val;
        d->n_train = c->n_train;
        d->n_val = c->n_val;
        d->dim = c->dim;
        d->n_classes = c->n_classes;
        d->X = malloc((size_t)n * (size_t)c->dim * sizeof(float));
        d->y = malloc((size_t)n * sizeof(int));
        if (!d->X || !d->y) return ncmi_error_set("out of memory for %d x %d samples", n, c->dim);
        nn_synth_blobs(rng, n, c->dim, c->n_classes, (float)c->separation, d->X, d->y);
        return 0;
    }
    }
    return ncmi_error_set("data.kind: not supported");
}

static void data_free(train_data *d)
{
    free(d->X);
    free(d->y);
}

/* ------------------------------------------------------------------ */
/* model                                                               */

typedef struct train_model {
    nn_params P;
    int n_layers;
    nn_linear_m *layers;
    char desc[256]; /* "mlp 16-64-64-3" */
} train_model;

static int model_init(train_model *m, const ncmi_train_config *c, int in, int n_classes,
                      nn_rng *rng)
{
    memset(m, 0, sizeof *m);
    nn_params_init(&m->P);
    if (c->model_kind != NCMI_MODEL_MLP) return ncmi_error_set("model.kind: not supported");
    m->n_layers = c->hidden.n + 1;
    m->layers = calloc((size_t)m->n_layers, sizeof *m->layers);
    if (!m->layers) return ncmi_error_set("out of memory");
    int len = snprintf(m->desc, sizeof m->desc, "mlp %d", in);
    for (int i = 0; i < m->n_layers; i++) {
        int out = i < c->hidden.n ? c->hidden.v[i] : n_classes;
        char prefix[32];
        snprintf(prefix, sizeof prefix, "layers.%d", i);
        nn_linear_m_init(&m->layers[i], &m->P, prefix, in, out, 1, rng);
        if (len < (int)sizeof m->desc)
            len += snprintf(m->desc + len, sizeof m->desc - (size_t)len, "-%d", out);
        in = out;
    }
    return 0;
}

static nn_tensor *model_forward(nn_graph *g, const train_model *m, nn_tensor *x)
{
    nn_tensor *h = x;
    for (int i = 0; i < m->n_layers; i++) {
        h = nn_linear_m_forward(g, &m->layers[i], h);
        if (i + 1 < m->n_layers) h = nn_relu(g, h);
    }
    return h; /* logits [N, n_classes] */
}

static void model_free(train_model *m)
{
    nn_params_free(&m->P);
    free(m->layers);
}

/* ------------------------------------------------------------------ */
/* one pass over a set                                                 */

typedef struct pass_stats { double loss, acc; } pass_stats;

static int argmax_row(const float *r, int n)
{
    int best = 0;
    for (int j = 1; j < n; j++)
        if (r[j] > r[best]) best = j;
    return best;
}

/* Mean cross-entropy (no smoothing) and accuracy of rows [first, first+n). */
static pass_stats evaluate(nn_graph *g, const train_model *m, const train_data *d, int first,
                           int n)
{
    int prev = nn_graph_set_no_grad(g, 1);
    double loss = 0;
    long correct = 0;
    const int chunk = 1024;
    for (int b0 = 0; b0 < n; b0 += chunk) {
        int nb = n - b0 < chunk ? n - b0 : chunk;
        int shape[2] = {nb, d->dim};
        nn_tensor *x = nn_tensor_from(g, 2, shape, d->X + (size_t)(first + b0) * d->dim);
        const int *y = d->y + first + b0;
        nn_tensor *logits = model_forward(g, m, x);
        nn_tensor *l = nn_cross_entropy(g, logits, y, 0.f);
        loss += (double)l->data[0] * nb;
        for (int i = 0; i < nb; i++)
            correct += argmax_row(logits->data + (size_t)i * d->n_classes, d->n_classes) == y[i];
        nn_graph_reset(g);
    }
    nn_graph_set_no_grad(g, prev);
    return (pass_stats){n ? loss / n : 0, n ? (double)correct / n : 0};
}

/* ------------------------------------------------------------------ */
/* log.csv                                                             */

typedef struct log_row { int epoch; double lr, train_loss, train_acc, val_loss, val_acc, seconds; } log_row;

static int log_write(const char *path, const log_row *rows, int n)
{
    char tmp[4200];
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof tmp)
        return ncmi_error_set("%s: path too long", path);
    FILE *f = fopen(tmp, "w");
    if (!f) return ncmi_error_set("%s: cannot write: %s", path, strerror(errno));
    fprintf(f, "epoch,lr,train_loss,train_acc,val_loss,val_acc,seconds\n");
    for (int i = 0; i < n; i++)
        fprintf(f, "%d,%.8g,%.6f,%.6f,%.6f,%.6f,%.3f\n", rows[i].epoch, rows[i].lr,
                rows[i].train_loss, rows[i].train_acc, rows[i].val_loss, rows[i].val_acc,
                rows[i].seconds);
    int bad = ferror(f);
    if (fclose(f) != 0 || bad || rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return ncmi_error_set("%s: cannot write: %s", path, strerror(e));
    }
    return 0;
}

/* Rows of an existing log with epoch <= max_epoch (resume). A missing file
 * gives no rows; a malformed line is an error. */
static int log_read(const char *path, log_row *rows, int cap, int max_epoch, int *n)
{
    *n = 0;
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    char line[512];
    int lineno = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        if (lineno == 1) continue; /* header */
        log_row r;
        if (sscanf(line, "%d,%lf,%lf,%lf,%lf,%lf,%lf", &r.epoch, &r.lr, &r.train_loss,
                   &r.train_acc, &r.val_loss, &r.val_acc, &r.seconds) != 7) {
            fclose(f);
            return ncmi_error_set("%s:%d: malformed log row", path, lineno);
        }
        if (r.epoch <= max_epoch && *n < cap) rows[(*n)++] = r;
    }
    fclose(f);
    return 0;
}

/* ------------------------------------------------------------------ */
/* checkpoint metadata                                                 */

static void rng_to_text(const nn_rng *r, char *buf, size_t n)
{
    snprintf(buf, n, "%016llx,%016llx,%016llx,%016llx,%d,%a", (unsigned long long)r->s[0],
             (unsigned long long)r->s[1], (unsigned long long)r->s[2], (unsigned long long)r->s[3],
             r->has_spare, r->spare);
}

static int rng_from_text(nn_rng *r, const char *t)
{
    unsigned long long s[4];
    int has;
    double spare;
    if (!t || sscanf(t, "%llx,%llx,%llx,%llx,%d,%la", &s[0], &s[1], &s[2], &s[3], &has, &spare) != 6)
        return -1;
    for (int i = 0; i < 4; i++) r->s[i] = s[i];
    r->has_spare = has;
    r->spare = spare;
    return 0;
}

typedef struct train_state {
    int epoch;          /* epochs completed */
    nn_rng shuffle;     /* shuffling stream, as at the start of epoch `epoch` */
    double best_val_acc;
    int best_epoch;
} train_state;

static int save_checkpoint(const char *path, const train_model *m, const nn_optim *o,
                           const train_state *s, const char *config_yaml, int weights_only,
                           double val_acc)
{
    char epoch[32], rng[256], best[64], best_ep[32], ncls[32], vacc[64];
    snprintf(epoch, sizeof epoch, "%d", s->epoch);
    rng_to_text(&s->shuffle, rng, sizeof rng);
    snprintf(best, sizeof best, "%.17g", s->best_val_acc);
    snprintf(best_ep, sizeof best_ep, "%d", s->best_epoch);
    snprintf(ncls, sizeof ncls, "%d", m->layers[m->n_layers - 1].out);
    snprintf(vacc, sizeof vacc, "%.17g", val_acc);
    const char *keys[] = {"format", "ncmi_version", "model", "n_classes", "epoch", "val_acc",
                          "best_val_acc", "best_epoch", "rng", "config"};
    const char *vals[] = {CKPT_FORMAT, ncmi_version_string(), m->desc, ncls, epoch, vacc,
                          best, best_ep, rng, config_yaml};
    int n = weights_only ? 6 : 10;
    return nn_checkpoint_save(path, &m->P, weights_only ? NULL : o, keys, vals, n);
}

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

static int load_checkpoint(const char *path, train_model *m, nn_optim *o, train_state *s,
                           const ncmi_train_config *c)
{
    nn_safetensors st;
    if (nn_st_open(&st, path)) return -1;
    warn_config_change(path, nn_st_meta(&st, "config"), c);
    const char *fmt = nn_st_meta(&st, "format");
    const char *ep = nn_st_meta(&st, "epoch");
    const char *rng = nn_st_meta(&st, "rng");
    const char *best = nn_st_meta(&st, "best_val_acc");
    const char *best_ep = nn_st_meta(&st, "best_epoch");
    int rc = 0;
    if (!fmt || strcmp(fmt, CKPT_FORMAT))
        rc = ncmi_error_set("%s: not an ncmi train checkpoint (metadata format '%s', expected '%s')",
                            path, fmt ? fmt : "", CKPT_FORMAT);
    else if (!ep || sscanf(ep, "%d", &s->epoch) != 1 || s->epoch < 0 || rng_from_text(&s->shuffle, rng) ||
             !best || sscanf(best, "%lf", &s->best_val_acc) != 1 || !best_ep ||
             sscanf(best_ep, "%d", &s->best_epoch) != 1)
        rc = ncmi_error_set("%s: checkpoint metadata lacks or garbles epoch/rng/best_val_acc", path);
    nn_st_close(&st);
    if (rc) return rc;
    return nn_checkpoint_load(path, &m->P, o);
}

/* ------------------------------------------------------------------ */
/* progress                                                            */

typedef struct progress {
    int tty;
    double t_start, t_last;
    int epochs, start_epoch;
} progress;

static void fmt_eta(double s, char *buf, size_t n)
{
    if (!(s >= 0) || s > 1e7) {
        snprintf(buf, n, "?");
        return;
    }
    int t = (int)(s + 0.5);
    if (t >= 3600)
        snprintf(buf, n, "%d:%02d:%02d", t / 3600, t / 60 % 60, t % 60);
    else
        snprintf(buf, n, "%d:%02d", t / 60, t % 60);
}

static void progress_step(progress *p, int epoch, int step, int steps, double loss, double acc,
                          const train_state *s)
{
    if (!p->tty) return;
    double t = now_s();
    if (t - p->t_last < 0.1 && step < steps) return;
    p->t_last = t;
    double done = (double)(epoch - p->start_epoch) + (double)step / steps;
    double total = (double)(p->epochs - p->start_epoch);
    double rate = done > 0 ? (t - p->t_start) / done : 0;
    char eta[32];
    fmt_eta(done > 0 ? rate * (total - done) : -1, eta, sizeof eta);
    char best[64] = "";
    if (s->best_epoch > 0) snprintf(best, sizeof best, "  best val %.1f%%", 100 * s->best_val_acc);
    fprintf(stderr, "\r\033[Kepoch %d/%d  step %d/%d  loss %.4f  acc %.1f%%%s  %.0f steps/s  ETA %s",
            epoch + 1, p->epochs, step, steps, loss, 100 * acc, best,
            rate > 0 ? (double)steps / rate : 0.0, eta);
    fflush(stderr);
}

static void progress_epoch(progress *p, const log_row *r)
{
    if (p->tty) return;
    fprintf(stderr,
            "epoch %d/%d  lr %.4g  train_loss %.4f  train_acc %.4f  val_loss %.4f  val_acc %.4f  %.2fs\n",
            r->epoch, p->epochs, r->lr, r->train_loss, r->train_acc, r->val_loss, r->val_acc,
            r->seconds);
}

static void progress_end(progress *p)
{
    if (p->tty) {
        fputc('\n', stderr);
        fflush(stderr);
    }
}

/* ------------------------------------------------------------------ */
/* the run                                                             */

typedef struct train_opts {
    int resume, force;
    const char *config_path;
} train_opts;

static void schedule_init(nn_lr_schedule *s, const ncmi_train_config *c)
{
    memset(s, 0, sizeof *s);
    s->kind = c->schedule_kind == NCMI_SCHED_MULTISTEP ? NN_LR_MULTISTEP
              : c->schedule_kind == NCMI_SCHED_COSINE  ? NN_LR_COSINE
                                                       : NN_LR_CONSTANT;
    s->base_lr = (float)c->lr;
    s->min_lr = (float)c->min_lr;
    s->warmup = c->warmup_epochs;
    s->total = (double)c->epochs - c->warmup_epochs;
    s->gamma = (float)c->gamma;
    s->n_milestones = c->milestones.n;
    for (int i = 0; i < c->milestones.n && i < 16; i++) s->milestones[i] = c->milestones.v[i];
}

/* The schedule's t for epoch e (from 0): e, except during a warm-up of w
 * epochs, where epoch e runs at (e+1)/w of the base rate (no epoch at 0). */
static double epoch_time(const ncmi_train_config *c, int e)
{
    double w = c->warmup_epochs;
    if (w > 0 && e < w) return e + 1 < w ? e + 1 : w;
    return e;
}

/* Returns an exit code. */
static int train_run(const ncmi_train_config *c, const train_opts *opt)
{
    int rc = NCMI_EXIT_INPUT;
    char dir[4096], path_cfg[4200], path_log[4200], path_last[4200], path_best[4200];
    if (snprintf(dir, sizeof dir, "%s/%s", c->out, c->name) >= (int)sizeof dir ||
        snprintf(path_cfg, sizeof path_cfg, "%s/config.yaml", dir) >= (int)sizeof path_cfg ||
        snprintf(path_log, sizeof path_log, "%s/log.csv", dir) >= (int)sizeof path_log ||
        snprintf(path_last, sizeof path_last, "%s/last.safetensors", dir) >= (int)sizeof path_last ||
        snprintf(path_best, sizeof path_best, "%s/best.safetensors", dir) >= (int)sizeof path_best) {
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
    if (mkdir_p(dir)) {
        cli_error(CMD, "%s", ncmi_error());
        return NCMI_EXIT_INPUT;
    }

    if (c->threads > 0) {
        omp_set_num_threads(c->threads);
        openblas_set_num_threads(c->threads);
    }

    /* every random stream derives from the seed, in a fixed order */
    nn_rng root;
    nn_rng_seed(&root, (uint64_t)c->seed);
    nn_rng data_rng = nn_rng_fork(&root, 1);
    nn_rng init_rng = nn_rng_fork(&root, 2);
    train_state st = {0, nn_rng_fork(&root, 3), 0.0, 0};

    train_data data;
    train_model model;
    nn_optim optim;
    memset(&optim, 0, sizeof optim);
    int have_optim = 0;
    nn_graph *g = NULL;
    int *perm = NULL, *yb = NULL;
    log_row *rows = NULL;
    int n_rows = 0;
    char *config_yaml = NULL;
    memset(&model, 0, sizeof model);
    nn_params_init(&model.P);

    if (data_load(&data, c, &data_rng)) {
        cli_error(CMD, "%s", ncmi_error());
        goto done;
    }
    if (model_init(&model, c, data.dim, data.n_classes, &init_rng)) {
        cli_error(CMD, "%s", ncmi_error());
        goto done;
    }
    if (c->optim_name == NCMI_OPTIM_NAME_ADAMW)
        nn_optim_adamw_init(&optim, &model.P, (float)c->lr, (float)c->betas.v[0],
                            (float)c->betas.v[1], (float)c->eps, (float)c->weight_decay);
    else
        nn_optim_sgd_init(&optim, &model.P, (float)c->lr, (float)c->momentum,
                          (float)c->weight_decay, c->nesterov);
    have_optim = 1;

    rows = calloc((size_t)c->epochs + 1, sizeof *rows);
    config_yaml = ncmi_cfg_to_yaml(&ncmi_train_schema, c);
    if (!rows || !config_yaml) {
        cli_error(CMD, "out of memory");
        rc = NCMI_EXIT_INTERNAL;
        goto done;
    }
    if (opt->resume) {
        if (load_checkpoint(path_last, &model, &optim, &st, c)) {
            cli_error(CMD, "cannot resume: %s", ncmi_error());
            goto done;
        }
        if (log_read(path_log, rows, c->epochs, st.epoch, &n_rows)) {
            cli_error(CMD, "cannot resume: %s", ncmi_error());
            goto done;
        }
    }
    if (st.epoch >= c->epochs) {
        printf("nothing to do: %s already trained %d of train.epochs = %d epochs\n", dir, st.epoch,
               c->epochs);
        rc = NCMI_EXIT_OK;
        goto done;
    }
    if (ncmi_cfg_write_yaml(&ncmi_train_schema, c, path_cfg)) {
        cli_error(CMD, "%s", ncmi_error());
        goto done;
    }

    printf("ncmi train: %s: %s (%zu parameters), %d train / %d val samples, %s lr %g, epochs %d..%d/%d, %d thread%s\n",
           c->name, model.desc, nn_params_numel(&model.P, 1), data.n_train, data.n_val,
           ncmi_cfg_enum_name(ncmi_cfg_find(&ncmi_train_schema, "optim.name"), c), c->lr,
           st.epoch + 1, c->epochs, c->epochs, omp_get_max_threads(),
           omp_get_max_threads() == 1 ? "" : "s");
    if (opt->resume) printf("resuming %s after epoch %d\n", path_last, st.epoch);
    fflush(stdout);

    nn_lr_schedule sched;
    schedule_init(&sched, c);
    g = nn_graph_new();
    perm = malloc((size_t)data.n_train * sizeof *perm);
    yb = malloc((size_t)c->batch_size * sizeof *yb);
    if (!g || !perm || !yb) {
        cli_error(CMD, "out of memory");
        rc = NCMI_EXIT_INTERNAL;
        goto done;
    }
    progress prog = {isatty(2), now_s(), 0, c->epochs, st.epoch};
    const int steps = (data.n_train + c->batch_size - 1) / c->batch_size;
    const float ls = c->loss_kind == NCMI_LOSS_CE ? (float)c->label_smoothing : 0.f;

    for (int epoch = st.epoch; epoch < c->epochs; epoch++) {
        double t0 = now_s();
        optim.lr = nn_lr_at(&sched, epoch_time(c, epoch));
        nn_rng_permutation(&st.shuffle, perm, data.n_train);
        double loss_sum = 0;
        long correct = 0;
        int seen = 0;
        for (int step = 0; step < steps; step++) {
            int b0 = step * c->batch_size;
            int nb = data.n_train - b0 < c->batch_size ? data.n_train - b0 : c->batch_size;
            nn_tensor *x = nn_tensor_new2(g, nb, data.dim);
            for (int i = 0; i < nb; i++) {
                int r = perm[b0 + i];
                memcpy(x->data + (size_t)i * data.dim, data.X + (size_t)r * data.dim,
                       (size_t)data.dim * sizeof(float));
                yb[i] = data.y[r];
            }
            nn_tensor *logits = model_forward(g, &model, x);
            nn_tensor *loss = nn_cross_entropy(g, logits, yb, ls);
            double lv = loss->data[0];
            if (!isfinite(lv)) {
                progress_end(&prog);
                cli_error(CMD, "training diverged at epoch %d step %d (loss %g); lower optim.lr "
                               "(%g) or set train.clip_grad_norm", epoch + 1, step + 1, lv, optim.lr);
                goto done;
            }
            if (nn_backward(g, loss)) {
                progress_end(&prog);
                cli_error(CMD, "%s", ncmi_error());
                rc = NCMI_EXIT_INTERNAL;
                goto done;
            }
            if (c->clip_grad_norm > 0) nn_clip_grad_norm(&model.P, (float)c->clip_grad_norm);
            nn_optim_step(&optim);
            nn_params_zero_grad(&model.P);
            loss_sum += lv * nb;
            for (int i = 0; i < nb; i++)
                correct += argmax_row(logits->data + (size_t)i * data.n_classes, data.n_classes) == yb[i];
            seen += nb;
            nn_graph_reset(g);
            progress_step(&prog, epoch, step + 1, steps, loss_sum / seen, (double)correct / seen, &st);
        }
        pass_stats val = evaluate(g, &model, &data, data.n_train, data.n_val);
        st.epoch = epoch + 1;
        log_row row = {epoch + 1, optim.lr, loss_sum / seen, (double)correct / seen, val.loss,
                       val.acc, now_s() - t0};
        rows[n_rows++] = row;
        int is_best = st.best_epoch == 0 || val.acc > st.best_val_acc;
        if (is_best) {
            st.best_val_acc = val.acc;
            st.best_epoch = epoch + 1;
        }
        /* best first, then the log, then last: a run interrupted in between
         * resumes from the previous last and rewrites the rest */
        if ((is_best && save_checkpoint(path_best, &model, &optim, &st, config_yaml, 1, val.acc)) ||
            log_write(path_log, rows, n_rows) ||
            save_checkpoint(path_last, &model, &optim, &st, config_yaml, 0, val.acc)) {
            progress_end(&prog);
            cli_error(CMD, "%s", ncmi_error());
            goto done;
        }
        progress_epoch(&prog, &row);
    }
    progress_end(&prog);

    const log_row *r = &rows[n_rows - 1];
    printf("final: epoch %d/%d  train_acc %.4f  val_loss %.4f  val_acc %.4f  (best val_acc %.4f at epoch %d)\n",
           r->epoch, c->epochs, r->train_acc, r->val_loss, r->val_acc, st.best_val_acc,
           st.best_epoch);
    printf("run folder: %s\n", dir);
    rc = NCMI_EXIT_OK;

done:
    if (g) nn_graph_free(g);
    free(perm);
    free(yb);
    free(rows);
    free(config_yaml);
    if (have_optim) nn_optim_free(&optim);
    model_free(&model);
    data_free(&data);
    return rc;
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
    train_opts opt = {0, 0, NULL};
    const char *out_dir = NULL;
    const char **sets = calloc((size_t)argc, sizeof *sets);
    int n_sets = 0, print_config = 0;
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
        cli_usage_error(CMD, a[0] == '-' ? "unknown option '%s'" : "unexpected argument '%s'", a);
        goto usage;
    }
    if (opt.resume && opt.force) {
        cli_usage_error(CMD, "--resume and --force exclude each other");
        goto usage;
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
    rc = train_run(&c, &opt);
out:
    ncmi_cfg_free(S, &c);
    free(sets);
    return rc;
usage:
    free(sets);
    return NCMI_EXIT_USAGE;
}
