/* ncmi cohort: the stages of a whole cohort, each incremental and
 * shardable, driven by a dataset config (configs/datasets/<name>.yaml).
 *
 *   ncmi cohort check|slides|tile|features|train|eval --dataset NAME [options]
 *
 * The Makefile's cohort targets (make tile / features / train / eval /
 * table3) call these; docs/cohorts.md describes the whole pipeline.
 *
 * check     reads the dataset's manifest and refuses duplicate slide ids,
 *           labels outside the class list and bad split values, naming
 *           every offending row; resolves each slide as DATA_ROOT/<path
 *           column> and lists the slides that are not there before any work
 *           starts (an error unless --allow-missing); writes the resolved
 *           manifest WORK/manifest.csv (slide_id,label,split,path[,mpp]).
 * slides    a dataset with a `generate` key (the synthetic cohort): runs
 *           tools/make_slides into DATA_ROOT when its manifest.csv is absent,
 *           checks that the generated cohort is the dataset's manifest, then
 *           check.
 * tile      check, then `ncmi tile` on WORK/manifest.csv into WORK/tiles with
 *           the dataset's tile.* parameters; coords files made with other
 *           parameters, or older than their slide, are redone.
 * features  check, then `ncmi features` into WORK/features with features.*;
 *           a features file older than its coords file is redone (ncmi
 *           features itself redoes files of another encoder/weights/precision).
 * train     every recipe of train.heads x train.losses x train.seeds (narrowed
 *           by --head/--loss/--seeds) into WORK/runs/<dataset>_<head>_<loss>
 *           [_seed<S>]: finished and up to date: skipped; interrupted: resumed
 *           (--resume, bit-identical); config or features changed since it
 *           started: started over.
 * eval      `ncmi eval --run` for every finished run whose metrics file of the
 *           split (each NCMI method) is missing or older than best.safetensors.
 *
 * Every stage takes --shard K/N: slides (tile, features) or runs (train,
 * eval) whose index i in list order has i mod N == K-1. Output is written by
 * the commands themselves, to temporary names renamed into place, so a
 * killed stage rerun finishes the work with the outputs of an uninterrupted
 * run. */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "config.h"
#include "train_config.h"

#include "../eval/csv.h"
#include "../nn/error.h"
#include "../tiler/coords_h5.h"
#include "../nn/tmpfile.h"

#define CMD "cohort"

extern char **environ;

void ncmi_help_cohort(FILE *f)
{
    fprintf(f,
            "usage: ncmi cohort STAGE --dataset NAME [--data-root DIR] [--work DIR] [options]\n"
            "\n"
            "The stages of a whole slide cohort, driven by a dataset config\n"
            "(configs/datasets/NAME.yaml, or a path to one): each stage redoes only what is\n"
            "missing or out of date, and takes --shard K/N. 'make tile|features|train|eval|\n"
            "table3 DATASET=NAME' call these (docs/cohorts.md).\n"
            "\n"
            "stages:\n"
            "  check      check the manifest (duplicate slide ids, labels outside the class\n"
            "             list, bad splits: every offending row named), list the slides\n"
            "             missing under DATA_ROOT before any work, write WORK/manifest.csv\n"
            "  slides     datasets with a 'generate' key (synthetic): make the cohort in\n"
            "             DATA_ROOT with tools/make_slides when absent, then check\n"
            "  tile       check, then ncmi tile into WORK/tiles (tile.* of the config)\n"
            "  features   check, then ncmi features into WORK/features (features.*)\n"
            "  train      train.heads x train.losses x train.seeds recipes into\n"
            "             WORK/runs/<dataset>_<head>_<loss>[_seed<S>]: finished runs are\n"
            "             kept, interrupted ones resumed, changed ones started over\n"
            "  eval       ncmi eval --run for finished runs whose metrics are missing or\n"
            "             older than their best.safetensors\n"
            "\n"
            "options:\n"
            "  --dataset NAME     configs/datasets/NAME.yaml, or a .yaml path\n"
            "  --data-root DIR    folder the manifest's slide paths are relative to\n"
            "                     (default: the config's data_root)\n"
            "  --work DIR         work folder (default work/<dataset>)\n"
            "  --shard K/N        only slides (tile, features) or runs (train, eval) whose\n"
            "                     index i has i mod N == K-1\n"
            "  --allow-missing    go on without the slides missing under DATA_ROOT (listed),\n"
            "                     and train without slides that have no features\n"
            "  --jobs J           tile: slides in parallel (default: tile.jobs)\n"
            "  --batch N, --readers R, --precision P   features: as ncmi features\n"
            "  --head H[,H...]    train/eval: these heads (default: train.heads)\n"
            "  --loss L[,L...]    train/eval: these losses (default: train.losses)\n"
            "  --seeds S[,S...]   train/eval: these seeds (default: train.seeds); runs of a\n"
            "                     seed other than the recipe's get the suffix _seed<S>\n"
            "  --set key=value    train: extra config overrides (repeatable)\n"
            "  --split S          eval: split to evaluate (default test)\n"
            "  --force            redo the stage's work even where it is up to date\n"
            "  --help-config[=md] every key of a dataset config (md: markdown)\n"
            "  -h, --help         this help\n"
            "\n"
            "The global --device applies (features default: auto).\n"
            "Exit codes: 0 ok, 1 usage error, 2 bad dataset config or manifest, missing\n"
            "slides (without --allow-missing) or a failed stage, 3 some slides failed.\n");
}

/* ------------------------------------------------------------------ */
/* dataset config                                                      */

typedef struct cohort_cfg {
    char *name, *manifest, *path_column, *split_column, *data_root, *generate;
    ncmi_cfg_strings classes;
    double tile_target_mpp, tile_seg_mpp, tile_min_tissue;
    int tile_patch_size, tile_overlap, tile_jobs;
    char *tile_preset, *tile_grid;
    char *feat_encoder, *feat_weights, *feat_precision;
    int feat_input_size, feat_batch, feat_readers;
    char *train_recipe;
    ncmi_cfg_strings train_heads, train_losses, train_set;
    ncmi_cfg_ints train_seeds;
    char *eval_split;
} cohort_cfg;

#define OFF(f) offsetof(cohort_cfg, f)
static const char *const grids[] = {"contour", "global", NULL};
static const char *const presets[] = {"default", "clam-default", "tcga", "biopsy", "resection", NULL};
static const ncmi_cfg_key cohort_keys[] = {
    {"name", NCMI_CFG_STRING, "", "dataset name: work/<name>, run names <name>_<head>_<loss> (empty: the file's base name)", OFF(name), NULL, 0, 0, 0, 0},
    {"manifest", NCMI_CFG_STRING, "", "manifest CSV (slide_id, label, split and the path column), relative to the current folder", OFF(manifest), NULL, 0, 0, 0, 0},
    {"path_column", NCMI_CFG_STRING, "rel_path", "manifest column with the slide file relative to DATA_ROOT", OFF(path_column), NULL, 0, 0, 0, 0},
    {"split_column", NCMI_CFG_STRING, "split", "manifest column with train / val / test", OFF(split_column), NULL, 0, 0, 0, 0},
    {"classes", NCMI_CFG_STRING_LIST, "[]", "class names in order; every label must be one of them", OFF(classes), NULL, 0, 0, 0, 0},
    {"data_root", NCMI_CFG_STRING, "", "default DATA_ROOT ({work} = the work folder; empty: it must be given)", OFF(data_root), NULL, 0, 0, 0, 0},
    {"generate", NCMI_CFG_STRING, "", "synthetic cohorts: the arguments of tools/make_slides that make DATA_ROOT (--out is added)", OFF(generate), NULL, 0, 0, 0, 0},
    {"tile.target_mpp", NCMI_CFG_FLOAT, "0.5", "patch resolution, um/px", OFF(tile_target_mpp), NULL, NCMI_CFG_MIN_EXCL, 0, 0, 0},
    {"tile.patch_size", NCMI_CFG_INT, "256", "patch side at the target resolution, px", OFF(tile_patch_size), NULL, NCMI_CFG_MIN, 8, 0, 0},
    {"tile.overlap", NCMI_CFG_INT, "0", "overlap of neighbouring patches, px", OFF(tile_overlap), NULL, NCMI_CFG_MIN, 0, 0, 0},
    {"tile.preset", NCMI_CFG_ENUM, "default", "segmentation preset (ncmi tile --preset)", OFF(tile_preset), presets, 0, 0, 0, 0},
    {"tile.grid", NCMI_CFG_ENUM, "contour", "patch grid (ncmi tile --grid)", OFF(tile_grid), grids, 0, 0, 0, 0},
    {"tile.seg_mpp", NCMI_CFG_FLOAT, "8", "segmentation resolution, um/px", OFF(tile_seg_mpp), NULL, NCMI_CFG_MIN_EXCL, 0, 0, 0},
    {"tile.min_tissue", NCMI_CFG_FLOAT, "0.25", "global grid: minimum tissue fraction of a patch", OFF(tile_min_tissue), NULL, NCMI_CFG_MIN | NCMI_CFG_MAX, 0, 1, 0},
    {"tile.jobs", NCMI_CFG_INT, "1", "slides tiled in parallel", OFF(tile_jobs), NULL, NCMI_CFG_MIN, 1, 0, 0},
    {"features.encoder", NCMI_CFG_STRING, "resnet50_trunc", "encoder (ncmi features --encoder)", OFF(feat_encoder), NULL, 0, 0, 0, 0},
    {"features.weights", NCMI_CFG_STRING, "", "weights file (safetensors, torchvision names) or random:SEED", OFF(feat_weights), NULL, 0, 0, 0, 0},
    {"features.input_size", NCMI_CFG_INT, "224", "encoder input side, px", OFF(feat_input_size), NULL, NCMI_CFG_MIN, 32, 0, 0},
    {"features.precision", NCMI_CFG_STRING, "fp32", "fp32, bf16 or fp16 (GPU)", OFF(feat_precision), NULL, 0, 0, 0, 0},
    {"features.batch", NCMI_CFG_INT, "0", "patches per encoder call (0: the command's default)", OFF(feat_batch), NULL, NCMI_CFG_MIN, 0, 0, 0},
    {"features.readers", NCMI_CFG_INT, "2", "reader threads", OFF(feat_readers), NULL, NCMI_CFG_MIN, 1, 0, 0},
    {"train.recipe", NCMI_CFG_STRING, "", "training config of a head and loss: {head} and {loss} are replaced (configs/<name>_{head}_{loss}.yaml)", OFF(train_recipe), NULL, 0, 0, 0, 0},
    {"train.heads", NCMI_CFG_STRING_LIST, "[abmil, transmil, aem, asmil]", "MIL heads of the table", OFF(train_heads), NULL, 0, 0, 0, 0},
    {"train.losses", NCMI_CFG_STRING_LIST, "[ce, ncmi]", "losses of the table ({loss} in train.recipe)", OFF(train_losses), NULL, 0, 0, 0, 0},
    {"train.seeds", NCMI_CFG_INT_LIST, "[0]", "seeds: several give mean +- std in the report", OFF(train_seeds), NULL, NCMI_CFG_MIN, 0, 0, 0},
    {"train.set", NCMI_CFG_STRING_LIST, "[]", "extra key=value overrides for every run", OFF(train_set), NULL, 0, 0, 0, 0},
    {"eval.split", NCMI_CFG_STRING, "test", "split that ncmi cohort eval evaluates (make eval / report SPLIT=...)", OFF(eval_split), NULL, 0, 0, 0, 0},
};
static const ncmi_cfg_schema cohort_schema = {"dataset config", cohort_keys,
                                              (int)(sizeof cohort_keys / sizeof *cohort_keys)};

const ncmi_cfg_schema *ncmi_cohort_schema(size_t *cfg_size)
{
    if (cfg_size) *cfg_size = sizeof(cohort_cfg);
    return &cohort_schema;
}

/* enum fields hold an int index: read them through the schema */
static const char *cfg_enum(const cohort_cfg *c, const char *key)
{
    return ncmi_cfg_enum_name(ncmi_cfg_find(&cohort_schema, key), c);
}

/* ------------------------------------------------------------------ */
/* options and state                                                   */

typedef struct opts {
    const char *stage, *dataset, *data_root, *work, *shard, *heads, *losses, *seeds, *split, *precision;
    const char **sets;
    int n_sets, shard_k, shard_n, allow_missing, jobs, batch, readers, force;
} opts;

typedef struct cohort {
    cohort_cfg c;
    char cfg_path[4096];
    char work[4096];
    char root[PATH_MAX]; /* absolute DATA_ROOT, "" when not needed */
} cohort;

/* one manifest row, as the stages need it */
typedef struct mrow {
    char *id, *label, *split, *rel, *mpp;
    char *path; /* resolved: DATA_ROOT/rel (absolute) */
    int line, present;
} mrow;

static void mrows_free(mrow *r, int n)
{
    for (int i = 0; i < n; i++) {
        free(r[i].id);
        free(r[i].label);
        free(r[i].split);
        free(r[i].rel);
        free(r[i].mpp);
        free(r[i].path);
    }
    free(r);
}

static int file_exists(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

/* modification time in ns, or -1 */
static long long mtime_ns(const char *p)
{
    struct stat st;
    if (stat(p, &st) != 0) return -1;
    return (long long)st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec;
}

/* a growing string */
typedef struct sbuf {
    char *s;
    size_t n, cap;
    int oom;
} sbuf;

static void sb_add(sbuf *b, const char *s, size_t k)
{
    if (b->oom) return;
    if (b->n + k + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->n + k + 1) cap *= 2;
        char *p = realloc(b->s, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->s = p;
        b->cap = cap;
    }
    memcpy(b->s + b->n, s, k);
    b->n += k;
    b->s[b->n] = 0;
}

static void sb_str(sbuf *b, const char *s) { sb_add(b, s, strlen(s)); }

/* a CSV field, quoted when needed */
static void sb_field(sbuf *b, const char *s)
{
    if (!strpbrk(s, ",\"\n\r")) {
        sb_str(b, s);
        return;
    }
    sb_add(b, "\"", 1);
    for (; *s; s++) sb_add(b, *s == '"' ? "\"\"" : s, *s == '"' ? 2 : 1);
    sb_add(b, "\"", 1);
}

/* ------------------------------------------------------------------ */
/* loading                                                             */

static int cohort_load(cohort *co, const opts *o, int need_root)
{
    memset(co, 0, sizeof *co);
    ncmi_cfg_defaults(&cohort_schema, &co->c);
    const char *d = o->dataset;
    size_t L = strlen(d);
    if (strchr(d, '/') || (L > 5 && !strcmp(d + L - 5, ".yaml")))
        snprintf(co->cfg_path, sizeof co->cfg_path, "%s", d);
    else
        snprintf(co->cfg_path, sizeof co->cfg_path, "configs/datasets/%s.yaml", d);
    if (!file_exists(co->cfg_path)) {
        cli_error(CMD, "--dataset %s: no dataset config %s (configs/datasets/ holds one per cohort)", d,
                  co->cfg_path);
        return NCMI_EXIT_INPUT;
    }
    if (ncmi_cfg_load_file(&cohort_schema, &co->c, co->cfg_path)) {
        cli_error(CMD, "%s", ncmi_error());
        return NCMI_EXIT_INPUT;
    }
    cohort_cfg *c = &co->c;
    if (!c->name[0]) {
        const char *b = strrchr(co->cfg_path, '/');
        b = b ? b + 1 : co->cfg_path;
        char nm[256];
        snprintf(nm, sizeof nm, "%.255s", b);
        char *dot = strrchr(nm, '.');
        if (dot && dot != nm) *dot = 0;
        free(c->name);
        c->name = strdup(nm);
        if (!c->name) return NCMI_EXIT_INTERNAL;
    }
    if (!c->manifest[0]) {
        cli_error(CMD, "%s: key 'manifest' is empty", co->cfg_path);
        return NCMI_EXIT_INPUT;
    }
    if (c->classes.n < 2) {
        cli_error(CMD, "%s: key 'classes' needs the class names in order (at least 2)", co->cfg_path);
        return NCMI_EXIT_INPUT;
    }
    if (o->work)
        snprintf(co->work, sizeof co->work, "%s", o->work);
    else
        snprintf(co->work, sizeof co->work, "work/%s", c->name);
    if (!o->data_root || !*o->data_root) {
        /* "{work}" in the config's data_root: the work folder */
        char r[4400];
        const char *w = strstr(c->data_root, "{work}");
        if (w) {
            snprintf(r, sizeof r, "%.*s%s%s", (int)(w - c->data_root), c->data_root, co->work, w + 6);
            free(c->data_root);
            c->data_root = strdup(r);
            if (!c->data_root) return NCMI_EXIT_INTERNAL;
        }
    }
    if (need_root) {
        const char *r = o->data_root && *o->data_root ? o->data_root : c->data_root;
        if (!r || !*r) {
            cli_error(CMD, "%s: no DATA_ROOT: give --data-root DIR (make ... DATA_ROOT=DIR), the folder the "
                           "manifest's %s paths start from",
                      c->name, c->path_column);
            return NCMI_EXIT_USAGE;
        }
        if (!realpath(r, co->root)) {
            cli_error(CMD, "DATA_ROOT %s: %s", r, strerror(errno));
            return NCMI_EXIT_INPUT;
        }
        /* the resolved config (WORK/dataset.yaml) records the DATA_ROOT used */
        free(c->data_root);
        c->data_root = strdup(co->root);
        if (!c->data_root) return NCMI_EXIT_INTERNAL;
    }
    return NCMI_EXIT_OK;
}

static void cohort_free(cohort *co) { ncmi_cfg_free(&cohort_schema, &co->c); }

/* the resolved dataset config beside the work it describes: WORK/dataset.yaml */
static int save_dataset_config(const cohort *co)
{
    char p[4400];
    snprintf(p, sizeof p, "%s/dataset.yaml", co->work);
    if (cli_mkdir_p(co->work) || ncmi_cfg_write_yaml(&cohort_schema, &co->c, p)) {
        cli_error(CMD, "%s", ncmi_error());
        return NCMI_EXIT_INPUT;
    }
    return NCMI_EXIT_OK;
}

/* The manifest's rows, checked. Every problem is listed (up to 40 lines) and
 * the manifest refused: duplicate slide ids (with all their rows), labels
 * outside the class list, split values other than train/val/test, empty ids,
 * labels or paths (when need_paths). With root: path = root/rel, present =
 * the file exists. Returns an exit code. */
static int read_manifest(const cohort *co, int need_paths, mrow **rows_out, int *n_out)
{
    const cohort_cfg *c = &co->c;
    *rows_out = NULL;
    *n_out = 0;
    eval_csv r;
    if (eval_csv_open(&r, c->manifest)) {
        cli_error(CMD, "%s", ncmi_error());
        return NCMI_EXIT_INPUT;
    }
    int rc = eval_csv_next(&r);
    if (rc <= 0) {
        cli_error(CMD, "%s: %s", c->manifest, rc == 0 ? "empty file" : ncmi_error());
        eval_csv_close(&r);
        return NCMI_EXIT_INPUT;
    }
    int ci = eval_csv_column(r.fields, r.nfields, "slide_id"), cl = eval_csv_column(r.fields, r.nfields, "label");
    int cs = eval_csv_column(r.fields, r.nfields, c->split_column);
    int cp = eval_csv_column(r.fields, r.nfields, c->path_column), cm = eval_csv_column(r.fields, r.nfields, "mpp");
    int ncols = r.nfields;
    if (ci < 0 || cl < 0 || cs < 0 || (need_paths && cp < 0)) {
        cli_error(CMD, "%s: missing column '%s' (the dataset config %s names slide_id, label, %s%s%s)", c->manifest,
                  ci < 0 ? "slide_id" : cl < 0 ? "label" : cs < 0 ? c->split_column : c->path_column, co->cfg_path,
                  c->split_column, need_paths ? " and " : "", need_paths ? c->path_column : "");
        eval_csv_close(&r);
        return NCMI_EXIT_INPUT;
    }
    mrow *v = NULL;
    int n = 0, cap = 0, oom = 0;
    while ((rc = eval_csv_next(&r)) == 1) {
        if (r.nfields != ncols) {
            cli_error(CMD, "%s: row %d (line %d): %d fields, the header has %d", c->manifest, r.row - 1, r.line,
                      r.nfields, ncols);
            mrows_free(v, n);
            eval_csv_close(&r);
            return NCMI_EXIT_INPUT;
        }
        if (n == cap) {
            cap = cap ? 2 * cap : 256;
            mrow *nv = realloc(v, (size_t)cap * sizeof *nv);
            if (!nv) {
                oom = 1;
                break;
            }
            v = nv;
        }
        mrow *w = &v[n++];
        memset(w, 0, sizeof *w);
        w->line = r.line;
        w->id = strdup(r.fields[ci]);
        w->label = strdup(r.fields[cl]);
        w->split = strdup(r.fields[cs]);
        w->rel = strdup(cp >= 0 ? r.fields[cp] : "");
        w->mpp = strdup(cm >= 0 ? r.fields[cm] : "");
        if (!w->id || !w->label || !w->split || !w->rel || !w->mpp) oom = 1;
    }
    eval_csv_close(&r);
    if (rc < 0 || oom) {
        cli_error(CMD, "%s", oom ? "out of memory" : ncmi_error());
        mrows_free(v, n);
        return oom ? NCMI_EXIT_INTERNAL : NCMI_EXIT_INPUT;
    }
    /* problems, all of them (the first 40 printed) */
    int n_bad = 0;
    char classes[512] = "";
    for (int k = 0, len = 0; k < c->classes.n && len < 480; k++)
        len += snprintf(classes + len, sizeof classes - (size_t)len, "%s%s", k ? ", " : "", c->classes.v[k]);
#define PROBLEM(...)                                                                                                \
    do {                                                                                                            \
        if (n_bad++ < 40) cli_error(CMD, __VA_ARGS__);                                                              \
    } while (0)
    /* duplicate ids: indices merge-sorted by (id, row), then each group reported once */
    int *ix = malloc((size_t)(n ? n : 1) * sizeof *ix), *tmp = malloc((size_t)(n ? n : 1) * sizeof *tmp);
    if (!ix || !tmp) {
        free(ix);
        free(tmp);
        mrows_free(v, n);
        return NCMI_EXIT_INTERNAL;
    }
    for (int i = 0; i < n; i++) ix[i] = i;
    for (int w = 1; w < n; w *= 2) {
        for (int lo = 0; lo < n; lo += 2 * w) {
            int mid = lo + w < n ? lo + w : n, hi = lo + 2 * w < n ? lo + 2 * w : n, a = lo, b = mid, k = lo;
            while (a < mid && b < hi) {
                int cmp = strcmp(v[ix[a]].id, v[ix[b]].id);
                tmp[k++] = cmp < 0 || (cmp == 0 && ix[a] < ix[b]) ? ix[a++] : ix[b++];
            }
            while (a < mid) tmp[k++] = ix[a++];
            while (b < hi) tmp[k++] = ix[b++];
        }
        memcpy(ix, tmp, (size_t)n * sizeof *ix);
    }
    free(tmp);
    int n_dup_ids = 0;
    for (int s = 0; s < n;) {
        int e = s + 1;
        while (e < n && !strcmp(v[ix[s]].id, v[ix[e]].id)) e++;
        if (e - s > 1 && v[ix[s]].id[0]) {
            char rows[512] = "";
            int len = 0;
            for (int k = s; k < e && len < 480; k++)
                len += snprintf(rows + len, sizeof rows - (size_t)len, "%s%d (line %d)", k > s ? ", " : "", ix[k] + 1,
                                v[ix[k]].line);
            PROBLEM("%s: slide_id '%s' on %d rows: %s", c->manifest, v[ix[s]].id, e - s, rows);
            n_dup_ids++;
        }
        s = e;
    }
    free(ix);
    for (int i = 0; i < n; i++) {
        const mrow *w = &v[i];
        if (!w->id[0]) PROBLEM("%s: row %d (line %d): empty slide_id", c->manifest, i + 1, w->line);
        else if (strchr(w->id, '/') || !strcmp(w->id, ".") || !strcmp(w->id, ".."))
            PROBLEM("%s: row %d (line %d): slide_id '%s' cannot be a file name", c->manifest, i + 1, w->line, w->id);
        int known = 0;
        for (int k = 0; k < c->classes.n; k++) known |= !strcmp(w->label, c->classes.v[k]);
        if (!known)
            PROBLEM("%s: row %d (line %d): label '%s' of slide '%s' is not a class of %s (%s)", c->manifest, i + 1,
                    w->line, w->label, w->id, c->name, classes);
        if (w->split[0] && strcmp(w->split, "train") && strcmp(w->split, "val") && strcmp(w->split, "test"))
            PROBLEM("%s: row %d (line %d): %s '%s' of slide '%s' is not train, val or test (or empty)", c->manifest,
                    i + 1, w->line, c->split_column, w->split, w->id);
        if (need_paths && !w->rel[0])
            PROBLEM("%s: row %d (line %d): slide '%s' has no %s", c->manifest, i + 1, w->line, w->id, c->path_column);
    }
#undef PROBLEM
    if (n_bad) {
        if (n_bad > 40) cli_error(CMD, "... and %d more", n_bad - 40);
        cli_error(CMD, "%s: refused: %d problem%s (%d duplicated slide id%s); nothing was done", c->manifest, n_bad,
                  n_bad == 1 ? "" : "s", n_dup_ids, n_dup_ids == 1 ? "" : "s");
        mrows_free(v, n);
        return NCMI_EXIT_INPUT;
    }
    if (!n) {
        cli_error(CMD, "%s: no slides", c->manifest);
        mrows_free(v, n);
        return NCMI_EXIT_INPUT;
    }
    if (co->root[0]) {
        for (int i = 0; i < n; i++) {
            mrow *w = &v[i];
            if (asprintf(&w->path, "%s%s%s", w->rel[0] == '/' ? "" : co->root, w->rel[0] == '/' ? "" : "/", w->rel) <
                0) {
                w->path = NULL;
                mrows_free(v, n);
                return NCMI_EXIT_INTERNAL;
            }
            w->present = file_exists(w->path);
        }
    }
    *rows_out = v;
    *n_out = n;
    return NCMI_EXIT_OK;
}

/* check: the manifest, the missing slides, WORK/manifest.csv of the present
 * ones. When rows_out != NULL: all rows, the present ones first in manifest
 * order ([0, *n_present): the list every shard indexes), *n_all of them (for
 * mrows_free). */
static int stage_check(const cohort *co, const opts *o, mrow **rows_out, int *n_all, int *n_present)
{
    mrow *v;
    int n;
    int rc = read_manifest(co, 1, &v, &n);
    if (rc) return rc;
    int n_missing = 0;
    for (int i = 0; i < n; i++) n_missing += !v[i].present;
    if (cli_mkdir_p(co->work)) {
        cli_error(CMD, "%s", ncmi_error());
        mrows_free(v, n);
        return NCMI_EXIT_INPUT;
    }
    char path[4400];
    snprintf(path, sizeof path, "%s/missing_slides.csv", co->work);
    if (n_missing) {
        sbuf ms = {0};
        sb_str(&ms, "slide_id,label,path\n");
        int shown = 0;
        cli_error(CMD, "%d of %d slides of %s are not under DATA_ROOT %s:", n_missing, n, co->c.name, co->root);
        for (int i = 0; i < n; i++) {
            if (v[i].present) continue;
            if (shown++ < 50) fprintf(stderr, "  %s  %s\n", v[i].id, v[i].path);
            sb_field(&ms, v[i].id);
            sb_str(&ms, ",");
            sb_field(&ms, v[i].label);
            sb_str(&ms, ",");
            sb_field(&ms, v[i].path);
            sb_str(&ms, "\n");
        }
        if (shown > 50) fprintf(stderr, "  ... and %d more\n", shown - 50);
        if (!ms.oom && ncmi_write_text_atomic(path, ms.s, ms.n, 1) == 0) fprintf(stderr, "  (all listed in %s)\n", path);
        free(ms.s);
        if (!o->allow_missing) {
            cli_error(CMD, "stopped before any work: put the slides under DATA_ROOT (the manifest's %s column "
                           "is relative to it), or go on without them with --allow-missing (make ... "
                           "ALLOW_MISSING=1)",
                      co->c.path_column);
            mrows_free(v, n);
            return NCMI_EXIT_INPUT;
        }
        cli_error(CMD, "--allow-missing: going on with the %d present slide%s", n - n_missing,
                  n - n_missing == 1 ? "" : "s");
    } else {
        unlink(path);
    }
    /* the resolved manifest of the present slides */
    int has_mpp = 0;
    for (int i = 0; i < n; i++) has_mpp |= v[i].mpp[0] != 0;
    sbuf b = {0};
    sb_str(&b, has_mpp ? "slide_id,label,split,path,mpp\n" : "slide_id,label,split,path\n");
    int k = 0;
    for (int i = 0; i < n; i++) {
        if (!v[i].present) continue;
        sb_field(&b, v[i].id);
        sb_str(&b, ",");
        sb_field(&b, v[i].label);
        sb_str(&b, ",");
        sb_field(&b, v[i].split);
        sb_str(&b, ",");
        sb_field(&b, v[i].path);
        if (has_mpp) {
            sb_str(&b, ",");
            sb_field(&b, v[i].mpp);
        }
        sb_str(&b, "\n");
        if (k != i) {
            mrow t = v[k];
            v[k] = v[i];
            v[i] = t;
        }
        k++;
    }
    snprintf(path, sizeof path, "%s/manifest.csv", co->work);
    if (b.oom || (k && ncmi_write_text_atomic(path, b.s, b.n, 1))) {
        cli_error(CMD, "%s", b.oom ? "out of memory" : ncmi_error());
        free(b.s);
        mrows_free(v, n);
        return NCMI_EXIT_INTERNAL;
    }
    free(b.s);
    if (!k) {
        cli_error(CMD, "no slide of %s is under DATA_ROOT %s", co->c.name, co->root);
        mrows_free(v, n);
        return NCMI_EXIT_INPUT;
    }
    if ((rc = save_dataset_config(co))) {
        mrows_free(v, n);
        return rc;
    }
    fprintf(stderr, "ncmi: cohort: %s: %d slide%s under %s%s; resolved manifest %s\n", co->c.name, k,
            k == 1 ? "" : "s", co->root, n_missing ? " (missing ones left out)" : "", path);
    if (rows_out) {
        *rows_out = v;
        *n_all = n;
        *n_present = k;
    } else {
        mrows_free(v, n);
    }
    return NCMI_EXIT_OK;
}

/* ------------------------------------------------------------------ */
/* running the other commands in this process                          */

typedef struct argvb {
    char *v[256];
    int n;
    char store[64][4400];
    int ns;
} argvb;

static void av_add(argvb *a, const char *s)
{
    if (a->n < 255) a->v[a->n++] = (char *)s;
    a->v[a->n] = NULL;
}

/* a formatted argument kept in the builder's own storage */
static void av_addf(argvb *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void av_addf(argvb *a, const char *fmt, ...)
{
    if (a->ns >= 64) return;
    va_list ap;
    va_start(ap, fmt);
    // NOLINTNEXTLINE(clang-analyzer-valist.Uninitialized): false positive, va_start is just above
    vsnprintf(a->store[a->ns], sizeof a->store[a->ns], fmt, ap);
    va_end(ap);
    av_add(a, a->store[a->ns++]);
}

/* the command line, quoted for a shell where needed */
static void av_print(const argvb *a)
{
    fflush(stdout);
    fprintf(stderr, "ncmi: cohort: ncmi");
    for (int i = 0; i < a->n; i++) {
        const char *s = a->v[i];
        if (s[strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-+=/.,:@%")]) {
            fputs(" '", stderr);
            for (; *s; s++) fputs(*s == '\'' ? "'\\''" : (char[2]){*s, 0}, stderr);
            fputc('\'', stderr);
        } else {
            fprintf(stderr, " %s", s);
        }
    }
    fputc('\n', stderr);
    fflush(stderr);
}

/* ------------------------------------------------------------------ */
/* slides: the synthetic generator                                     */

/* compare the generated manifest with the dataset's: slide_id, label,
 * split and path must agree row by row */
static int same_cohort(const cohort *co, const char *generated)
{
    eval_csv a, b;
    if (eval_csv_open(&a, co->c.manifest)) return ncmi_error_set("%s", ncmi_error());
    if (eval_csv_open(&b, generated)) {
        eval_csv_close(&a);
        return -1;
    }
    int ra = eval_csv_next(&a), rb = eval_csv_next(&b), rc = 0;
    const char *cols[4] = {"slide_id", "label", co->c.split_column, co->c.path_column};
    const char *colsb[4] = {"slide_id", "label", "split", "rel_path"};
    int ia[4], ib[4];
    for (int k = 0; k < 4 && ra == 1 && rb == 1; k++) {
        ia[k] = eval_csv_column(a.fields, a.nfields, cols[k]);
        ib[k] = eval_csv_column(b.fields, b.nfields, colsb[k]);
        if (ia[k] < 0 || ib[k] < 0) rc = ncmi_error_set("column '%s' missing", ia[k] < 0 ? cols[k] : colsb[k]);
    }
    if (ra != 1 || rb != 1) rc = ncmi_error_set("empty manifest");
    int row = 0;
    while (!rc) {
        ra = eval_csv_next(&a);
        rb = eval_csv_next(&b);
        row++;
        if (ra != rb) {
            rc = ncmi_error_set("row %d: %s has %s", row, ra == 1 ? generated : co->c.manifest,
                                "no such row (different slide counts)");
            break;
        }
        if (ra != 1) break;
        for (int k = 0; k < 4 && !rc; k++)
            if (ia[k] >= a.nfields || ib[k] >= b.nfields || strcmp(a.fields[ia[k]], b.fields[ib[k]]))
                rc = ncmi_error_set("row %d: %s '%s' in %s, '%s' generated", row, cols[k],
                                    ia[k] < a.nfields ? a.fields[ia[k]] : "", co->c.manifest,
                                    ib[k] < b.nfields ? b.fields[ib[k]] : "");
    }
    eval_csv_close(&a);
    eval_csv_close(&b);
    return rc;
}

/* tools/make_slides beside the ncmi binary (build/tools/make_slides), or $NCMI_MAKE_SLIDES */
static int make_slides_path(char *buf, size_t n)
{
    const char *env = getenv("NCMI_MAKE_SLIDES");
    if (env && *env) {
        snprintf(buf, n, "%s", env);
        return 0;
    }
    char exe[PATH_MAX];
    ssize_t k = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (k <= 0) return -1;
    exe[k] = 0;
    char *slash = strrchr(exe, '/');
    if (!slash) return -1;
    *slash = 0;
    snprintf(buf, n, "%s/tools/make_slides", exe);
    return 0;
}

static int stage_slides(const cohort *co, const opts *o)
{
    char man[4400];
    snprintf(man, sizeof man, "%s/manifest.csv", co->root);
    if (co->c.generate[0] && (!file_exists(man) || o->force)) {
        char tool[PATH_MAX + 32];
        if (make_slides_path(tool, sizeof tool) || access(tool, X_OK)) {
            cli_error(CMD, "%s: the cohort generator %s is not built (make %s, or set NCMI_MAKE_SLIDES)",
                      co->c.name, tool, "build/tools/make_slides");
            return NCMI_EXIT_INPUT;
        }
        char gen[2048];
        snprintf(gen, sizeof gen, "%s", co->c.generate);
        char *args[128];
        int na = 0;
        args[na++] = tool;
        for (char *t = strtok(gen, " \t"); t && na < 120; t = strtok(NULL, " \t")) args[na++] = t;
        args[na++] = "--out";
        args[na++] = (char *)co->root;
        args[na] = NULL;
        fprintf(stderr, "ncmi: cohort: %s:", co->c.name);
        for (int i = 0; i < na; i++) fprintf(stderr, " %s", args[i]);
        fputc('\n', stderr);
        fflush(stderr);
        pid_t pid;
        int st = 0;
        if (posix_spawn(&pid, tool, NULL, NULL, args, environ) || waitpid(pid, &st, 0) < 0 || !WIFEXITED(st) ||
            WEXITSTATUS(st)) {
            cli_error(CMD, "%s: the cohort generator failed (%s)", co->c.name, tool);
            return NCMI_EXIT_INPUT;
        }
    }
    if (co->c.generate[0]) {
        if (!file_exists(man)) {
            cli_error(CMD, "%s: no %s after generating", co->c.name, man);
            return NCMI_EXIT_INPUT;
        }
        if (same_cohort(co, man)) {
            cli_error(CMD, "%s: the generated cohort %s differs from %s: %s (the generator or its arguments "
                           "changed: regenerate the manifest, data-manifests/README.md)",
                      co->c.name, man, co->c.manifest, ncmi_error());
            return NCMI_EXIT_INPUT;
        }
    }
    return stage_check(co, o, NULL, NULL, NULL);
}

/* ------------------------------------------------------------------ */
/* tile and features                                                   */

static int in_shard(const opts *o, int i) { return !o->shard_n || i % o->shard_n == o->shard_k - 1; }

static int stage_tile(const cohort *co, const opts *o)
{
    mrow *v;
    int n_all, n;
    int rc = stage_check(co, o, &v, &n_all, &n);
    if (rc) return rc;
    const cohort_cfg *c = &co->c;
    /* coords files made with other parameters, or older than their slide: redone */
    int n_stale = 0;
    for (int i = 0; i < n && !o->force; i++) {
        if (!in_shard(o, i)) continue;
        char p[4400];
        snprintf(p, sizeof p, "%s/tiles/patches/%s.h5", co->work, v[i].id);
        long long tc = mtime_ns(p);
        if (tc < 0) continue;
        const char *why = NULL;
        if (mtime_ns(v[i].path) > tc) why = "the slide is newer";
        int64_t *xy = NULL;
        size_t nxy = 0;
        tl_coords_attrs a;
        char nm[256];
        if (!why) {
            if (tl_coords_h5_read(p, &xy, &nxy, &a, nm, sizeof nm)) {
                why = "unreadable";
                ncmi_error_clear();
            } else if (a.patch_size != c->tile_patch_size || a.overlap != c->tile_overlap ||
                       fabs(a.target_mpp - c->tile_target_mpp) > 1e-9 * c->tile_target_mpp) {
                why = "other tile parameters";
            }
            free(xy);
        }
        if (why) {
            if (n_stale++ < 10) fprintf(stderr, "ncmi: cohort: %s: out of date (%s): tiled again\n", v[i].id, why);
            unlink(p);
        }
    }
    if (n_stale > 10) fprintf(stderr, "ncmi: cohort: ... %d slides tiled again in all\n", n_stale);
    argvb a = {0};
    char man[4400], out[4400];
    snprintf(man, sizeof man, "%s/manifest.csv", co->work);
    snprintf(out, sizeof out, "%s/tiles", co->work);
    av_add(&a, "tile");
    av_add(&a, "--manifest");
    av_add(&a, man);
    av_add(&a, "--out");
    av_add(&a, out);
    av_add(&a, "--target-mpp");
    av_addf(&a, "%.17g", c->tile_target_mpp);
    av_add(&a, "--patch-size");
    av_addf(&a, "%d", c->tile_patch_size);
    av_add(&a, "--overlap");
    av_addf(&a, "%d", c->tile_overlap);
    av_add(&a, "--preset");
    av_add(&a, cfg_enum(c, "tile.preset"));
    av_add(&a, "--grid");
    av_add(&a, cfg_enum(c, "tile.grid"));
    av_add(&a, "--seg-mpp");
    av_addf(&a, "%.17g", c->tile_seg_mpp);
    if (!strcmp(cfg_enum(c, "tile.grid"), "global")) {
        av_add(&a, "--min-tissue");
        av_addf(&a, "%.17g", c->tile_min_tissue);
    }
    av_add(&a, "--jobs");
    av_addf(&a, "%d", o->jobs > 0 ? o->jobs : c->tile_jobs);
    if (o->shard) {
        av_add(&a, "--shard");
        av_add(&a, o->shard);
    }
    if (o->force) av_add(&a, "--force");
    av_print(&a);
    rc = ncmi_cmd_tile(a.n, a.v);
    fflush(stdout);
    mrows_free(v, n_all);
    return rc;
}

static int stage_features(const cohort *co, const opts *o)
{
    const cohort_cfg *c = &co->c;
    if (!c->feat_weights[0]) {
        cli_error(CMD, "%s: features.weights is empty: a safetensors file with torchvision's names (convert a .pth "
                       "with tools/pth_to_safetensors.py) or random:SEED",
                  co->cfg_path);
        return NCMI_EXIT_INPUT;
    }
    mrow *v;
    int n_all, n;
    int rc = stage_check(co, o, &v, &n_all, &n);
    if (rc) return rc;
    /* a features file older than its coords file: redone */
    int n_stale = 0;
    for (int i = 0; i < n && !o->force; i++) {
        if (!in_shard(o, i)) continue;
        char pc[4400], pf[4400];
        snprintf(pc, sizeof pc, "%s/tiles/patches/%s.h5", co->work, v[i].id);
        snprintf(pf, sizeof pf, "%s/features/%s.h5", co->work, v[i].id);
        long long tf = mtime_ns(pf), tc = mtime_ns(pc);
        if (tf >= 0 && tc > tf) {
            if (n_stale++ < 10)
                fprintf(stderr, "ncmi: cohort: %s: features older than the coords file: encoded again\n", v[i].id);
            unlink(pf);
        }
    }
    if (n_stale > 10) fprintf(stderr, "ncmi: cohort: ... %d slides encoded again in all\n", n_stale);
    argvb a = {0};
    char man[4400], tiles[4400];
    snprintf(man, sizeof man, "%s/manifest.csv", co->work);
    snprintf(tiles, sizeof tiles, "%s/tiles", co->work);
    av_add(&a, "features");
    av_add(&a, "--coords");
    av_add(&a, tiles);
    av_add(&a, "--manifest");
    av_add(&a, man);
    av_add(&a, "--out");
    av_add(&a, co->work);
    av_add(&a, "--encoder");
    av_add(&a, c->feat_encoder);
    av_add(&a, "--weights");
    av_add(&a, c->feat_weights);
    av_add(&a, "--input-size");
    av_addf(&a, "%d", c->feat_input_size);
    av_add(&a, "--precision");
    av_add(&a, o->precision ? o->precision : c->feat_precision);
    int batch = o->batch > 0 ? o->batch : c->feat_batch;
    if (batch > 0) {
        av_add(&a, "--batch");
        av_addf(&a, "%d", batch);
    }
    av_add(&a, "--readers");
    av_addf(&a, "%d", o->readers > 0 ? o->readers : c->feat_readers);
    if (o->shard) {
        av_add(&a, "--shard");
        av_add(&a, o->shard);
    }
    if (o->force) av_add(&a, "--force");
    av_print(&a);
    rc = ncmi_cmd_features(a.n, a.v);
    fflush(stdout);
    mrows_free(v, n_all);
    return rc;
}

/* ------------------------------------------------------------------ */
/* train and eval                                                      */

typedef struct run {
    char head[32], loss[32];
    int seed;
    char recipe[4096];
    char name[512];
    char dir[4400];
} run;

/* "a,b,c" or a config list into names[] (max 16) */
static int split_list(const char *s, char names[][32], int max)
{
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", s);
    int n = 0;
    for (char *t = strtok(buf, ", "); t && n < max; t = strtok(NULL, ", ")) snprintf(names[n++], 32, "%s", t);
    return n;
}

static void replace(const char *in, const char *key, const char *val, char *out, size_t n)
{
    size_t o = 0, kl = strlen(key);
    // NOLINTNEXTLINE(clang-analyzer-core.uninitialized.Branch): false positive, in is a string replace() NUL-terminated
    for (const char *p = in; *p && o + 1 < n;) {
        if (!strncmp(p, key, kl)) {
            o += (size_t)snprintf(out + o, n - o, "%s", val);
            if (o >= n) o = n - 1;
            p += kl;
        } else {
            out[o++] = *p++;
        }
    }
    out[o] = 0;
}

/* the runs of this invocation (grid order: head, loss, seed), all shards */
static int run_grid(const cohort *co, const opts *o, run **runs_out, int *n_out)
{
    const cohort_cfg *c = &co->c;
    char heads[16][32], losses[16][32], seeds_s[64][32];
    int nh = 0, nl = 0, ns = 0;
    int seeds[64];
    if (o->heads)
        nh = split_list(o->heads, heads, 16);
    else
        for (int i = 0; i < c->train_heads.n && i < 16; i++) snprintf(heads[nh++], 32, "%s", c->train_heads.v[i]);
    if (o->losses)
        nl = split_list(o->losses, losses, 16);
    else
        for (int i = 0; i < c->train_losses.n && i < 16; i++) snprintf(losses[nl++], 32, "%s", c->train_losses.v[i]);
    if (o->seeds) {
        ns = split_list(o->seeds, seeds_s, 64);
        for (int i = 0; i < ns; i++)
            if (!cli_parse_int(seeds_s[i], &seeds[i]) || seeds[i] < 0) {
                cli_error(CMD, "--seeds: '%s' is not a seed (a non-negative integer)", seeds_s[i]);
                return NCMI_EXIT_USAGE;
            }
    } else {
        for (int i = 0; i < c->train_seeds.n && i < 64; i++) seeds[ns++] = c->train_seeds.v[i];
    }
    if (!nh || !nl || !ns) {
        cli_error(CMD, "%s: no runs (heads %d, losses %d, seeds %d)", co->c.name, nh, nl, ns);
        return NCMI_EXIT_USAGE;
    }
    if (!c->train_recipe[0]) {
        cli_error(CMD, "%s: train.recipe is empty", co->cfg_path);
        return NCMI_EXIT_INPUT;
    }
    run *r = calloc((size_t)(nh * nl * ns), sizeof *r);
    if (!r) return NCMI_EXIT_INTERNAL;
    int n = 0;
    for (int h = 0; h < nh; h++)
        for (int l = 0; l < nl; l++)
            for (int s = 0; s < ns; s++) {
                run *x = &r[n++];
                snprintf(x->head, sizeof x->head, "%.31s", heads[h]);
                snprintf(x->loss, sizeof x->loss, "%.31s", losses[l]);
                x->seed = seeds[s];
                char tmp[4096];
                replace(c->train_recipe, "{head}", x->head, tmp, sizeof tmp);
                replace(tmp, "{loss}", x->loss, x->recipe, sizeof x->recipe);
            }
    *runs_out = r;
    *n_out = n;
    return NCMI_EXIT_OK;
}

/* The run's resolved training config (as ncmi train resolves it) and its
 * --set list; name and dir filled in. 0 or an exit code. */
static int run_config(const cohort *co, const opts *o, run *x, ncmi_train_config *tc, argvb *sets)
{
    const cohort_cfg *c = &co->c;
    const ncmi_cfg_schema *S = &ncmi_train_schema;
    ncmi_cfg_defaults(S, tc);
    if (!file_exists(x->recipe)) {
        cli_error(CMD, "%s: no recipe %s for head %s and loss %s (train.recipe of %s)", c->name, x->recipe, x->head,
                  x->loss, co->cfg_path);
        return NCMI_EXIT_INPUT;
    }
    if (ncmi_cfg_load_file(S, tc, x->recipe)) {
        cli_error(CMD, "%s", ncmi_error());
        return NCMI_EXIT_INPUT;
    }
    const int recipe_seed = tc->seed;
    if (x->seed == recipe_seed)
        snprintf(x->name, sizeof x->name, "%s_%s_%s", c->name, x->head, x->loss);
    else
        snprintf(x->name, sizeof x->name, "%s_%s_%s_seed%d", c->name, x->head, x->loss, x->seed);
    snprintf(x->dir, sizeof x->dir, "%.3800s/runs/%.500s", co->work, x->name);
    av_addf(sets, "name=%s", x->name);
    av_addf(sets, "seed=%d", x->seed);
    av_addf(sets, "data.features=%s/features", co->work);
    av_addf(sets, "data.manifest=%s", c->manifest);
    av_addf(sets, "data.split_column=%s", c->split_column);
    char cl[1024];
    int len = snprintf(cl, sizeof cl, "data.classes=[");
    for (int k = 0; k < c->classes.n && len < 1000; k++)
    {
        const char *nm = c->classes.v[k];
        int plain = nm[0] && !nm[strspn(nm, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-.")];
        len += snprintf(cl + len, sizeof cl - (size_t)len, plain ? "%s%s" : "%s'%s'", k ? ", " : "", nm);
    }
    snprintf(cl + len, sizeof cl - (size_t)len, "]");
    av_addf(sets, "%s", cl);
    for (int k = 0; k < c->train_set.n; k++) av_add(sets, c->train_set.v[k]);
    for (int k = 0; k < o->n_sets; k++) av_add(sets, o->sets[k]);
    for (int k = 0; k < sets->n; k++)
        if (ncmi_cfg_set(S, tc, sets->v[k])) {
            cli_error(CMD, "%s: %s", x->recipe, ncmi_error());
            return NCMI_EXIT_INPUT;
        }
    char out[4400];
    snprintf(out, sizeof out, "%s/runs", co->work);
    free(tc->out);
    tc->out = strdup(out);
    if (o->allow_missing) tc->skip_missing = 1;
    if (!tc->out) return NCMI_EXIT_INTERNAL;
    ncmi_train_config_resolve(tc);
    if (ncmi_train_config_check(tc)) {
        cli_error(CMD, "%s: %s", x->recipe, ncmi_error());
        return NCMI_EXIT_INPUT;
    }
    return NCMI_EXIT_OK;
}

/* the final metrics files of a run: all present and not older than last.safetensors */
static int run_finished(const run *x, const ncmi_train_config *tc)
{
    const char *split = tc->eval_split == NCMI_EVAL_SPLIT_VAL ? "val" : "test";
    char p[4600];
    snprintf(p, sizeof p, "%s/last.safetensors", x->dir);
    long long tl = mtime_ns(p), t;
    if (tl < 0) return 0;
    const char *sfx[4] = {"", "_cc", "_learned", "_lp"};
    for (int k = 0; k < (tc->head_kind == NCMI_HEAD_NCMI ? 4 : 1); k++) {
        snprintf(p, sizeof p, "%s/metrics_%s%s.json", x->dir, split, sfx[k]);
        t = mtime_ns(p);
        if (t < 0 || t < tl) return 0;
    }
    return 1;
}

/* newest features file of the manifest's slides (ns), or -1 */
static long long newest_features(const cohort *co)
{
    mrow *v;
    int n;
    cohort tmp = *co;
    tmp.root[0] = 0;
    if (read_manifest(&tmp, 0, &v, &n)) return -1;
    long long best = -1;
    for (int i = 0; i < n; i++) {
        char p[4400];
        snprintf(p, sizeof p, "%s/features/%s.h5", co->work, v[i].id);
        long long t = mtime_ns(p);
        if (t > best) best = t;
    }
    mrows_free(v, n);
    return best;
}

static int stage_train(const cohort *co, const opts *o)
{
    /* the manifest's labels and ids (no slide files needed) */
    mrow *v;
    int n;
    cohort tmp = *co;
    tmp.root[0] = 0;
    int rc = read_manifest(&tmp, 0, &v, &n);
    if (rc) return rc;
    mrows_free(v, n);
    if ((rc = save_dataset_config(co))) return rc;
    run *runs;
    int nr;
    if ((rc = run_grid(co, o, &runs, &nr))) return rc;
    const long long t_feat = newest_features(co);
    const char *const ignore[] = {"train.threads", "train.epochs", "out", "data.cache_mb", "data.prefetch",
                                  "data.skip_missing", NULL};
    int n_done = 0, n_skip = 0, n_fail = 0;
    for (int j = 0; j < nr; j++) {
        if (!in_shard(o, j)) continue;
        run *x = &runs[j];
        ncmi_train_config tc;
        argvb sets = {0};
        rc = run_config(co, o, x, &tc, &sets);
        if (rc) {
            ncmi_cfg_free(&ncmi_train_schema, &tc);
            n_fail++;
            break;
        }
        char p[4600];
        snprintf(p, sizeof p, "%s/last.safetensors", x->dir);
        const char *mode = "--force", *why = "new run";
        if (file_exists(p) && !o->force) {
            /* the config it was started with */
            char pc[4600];
            snprintf(pc, sizeof pc, "%s/config.yaml", x->dir);
            ncmi_train_config old;
            ncmi_cfg_defaults(&ncmi_train_schema, &old);
            char diff[1024] = "";
            int nd = ncmi_cfg_load_file(&ncmi_train_schema, &old, pc)
                         ? -1
                         : ncmi_cfg_diff(&ncmi_train_schema, &old, &tc, ignore, diff, sizeof diff);
            ncmi_cfg_free(&ncmi_train_schema, &old);
            long long t_cfg = mtime_ns(pc);
            static char why_buf[1200];
            if (nd < 0) {
                why = "its config.yaml is unreadable: started over";
            } else if (nd > 0) {
                snprintf(why_buf, sizeof why_buf, "config changed (%s): started over", diff);
                why = why_buf;
            } else if (t_feat > t_cfg) {
                why = "features changed since it started: started over";
            } else if (run_finished(x, &tc)) {
                mode = NULL;
            } else {
                mode = "--resume";
                why = "interrupted: resumed";
            }
        } else if (o->force) {
            why = "--force";
        }
        if (!mode) {
            fprintf(stderr, "ncmi: cohort: %s: up to date\n", x->name);
            n_skip++;
            ncmi_cfg_free(&ncmi_train_schema, &tc);
            continue;
        }
        fprintf(stderr, "ncmi: cohort: %s: %s\n", x->name, why);
        argvb a = {0};
        av_add(&a, "train");
        av_add(&a, "--config");
        av_add(&a, x->recipe);
        av_add(&a, "--out");
        av_add(&a, tc.out);
        for (int k = 0; k < sets.n; k++) {
            av_add(&a, "--set");
            av_add(&a, sets.v[k]);
        }
        if (o->allow_missing) av_add(&a, "--skip-missing");
        av_add(&a, mode);
        av_print(&a);
        int r = ncmi_cmd_train(a.n, a.v);
        fflush(stdout);
        ncmi_cfg_free(&ncmi_train_schema, &tc);
        if (r) {
            cli_error(CMD, "%s: ncmi train failed (exit %d)", x->name, r);
            n_fail++;
            rc = r;
            break;
        }
        n_done++;
    }
    fprintf(stderr, "ncmi: cohort: train: %d trained, %d up to date%s\n", n_done, n_skip,
            n_fail ? ", stopped at a failure" : "");
    free(runs);
    return n_fail ? (rc ? rc : NCMI_EXIT_INPUT) : NCMI_EXIT_OK;
}

static int stage_eval(const cohort *co, const opts *o)
{
    run *runs;
    int nr, rc;
    if ((rc = run_grid(co, o, &runs, &nr))) return rc;
    const char *split = o->split ? o->split : co->c.eval_split;
    int n_eval = 0, n_up = 0, n_missing = 0;
    for (int j = 0; j < nr && !rc; j++) {
        if (!in_shard(o, j)) continue;
        run *x = &runs[j];
        ncmi_train_config tc;
        argvb sets = {0};
        rc = run_config(co, o, x, &tc, &sets);
        const int ncmi = tc.head_kind == NCMI_HEAD_NCMI;
        ncmi_cfg_free(&ncmi_train_schema, &tc);
        if (rc) break;
        char best[4600];
        snprintf(best, sizeof best, "%s/best.safetensors", x->dir);
        long long tb = mtime_ns(best);
        if (tb < 0) {
            fprintf(stderr, "ncmi: cohort: %s: not trained (no %s)\n", x->name, best);
            n_missing++;
            continue;
        }
        const char *methods[3] = {"cc", "learned", "lp"};
        for (int k = 0; k < (ncmi ? 3 : 1) && !rc; k++) {
            char p[4600];
            if (ncmi)
                snprintf(p, sizeof p, "%s/metrics_%s_%s.json", x->dir, split, methods[k]);
            else
                snprintf(p, sizeof p, "%s/metrics_%s.json", x->dir, split);
            long long t = mtime_ns(p);
            if (t >= tb && !o->force) {
                n_up++;
                continue;
            }
            argvb a = {0};
            av_add(&a, "eval");
            av_add(&a, "--run");
            av_add(&a, x->dir);
            av_add(&a, "--split");
            av_add(&a, split);
            if (ncmi) {
                av_add(&a, "--method");
                av_add(&a, methods[k]);
            }
            av_print(&a);
            rc = ncmi_cmd_eval(a.n, a.v);
            fflush(stdout);
            n_eval++;
        }
    }
    free(runs);
    fprintf(stderr, "ncmi: cohort: eval (%s): %d metrics file%s written, %d up to date, %d run%s not trained\n",
            split, n_eval, n_eval == 1 ? "" : "s", n_up, n_missing, n_missing == 1 ? "" : "s");
    if (rc) return rc;
    return n_missing ? NCMI_EXIT_PARTIAL : NCMI_EXIT_OK;
}

/* ------------------------------------------------------------------ */
/* the command                                                         */

int ncmi_cmd_cohort(int argc, char **argv)
{
    opts o;
    memset(&o, 0, sizeof o);
    o.sets = calloc((size_t)argc + 1, sizeof *o.sets);
    if (!o.sets) return NCMI_EXIT_INTERNAL;
    int rc = NCMI_EXIT_USAGE;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        int m;
        if (cli_is_help(a)) {
            ncmi_help_cohort(stdout);
            free(o.sets);
            return NCMI_EXIT_OK;
        }
        if (!strcmp(a, "--help-config") || !strcmp(a, "--help-config=md")) {
            ncmi_cfg_print_schema(&cohort_schema, stdout, !strcmp(a, "--help-config=md"));
            free(o.sets);
            return NCMI_EXIT_OK;
        }
#define OPT(name) ((m = cli_opt_value(argc, argv, &i, CMD, name, &v)) != 0)
        if (OPT("--dataset")) {
            if (m < 0) goto out;
            o.dataset = v;
        } else if (OPT("--data-root")) {
            if (m < 0) goto out;
            o.data_root = v;
        } else if (OPT("--work")) {
            if (m < 0) goto out;
            o.work = v;
        } else if (OPT("--shard")) {
            if (m < 0) goto out;
            if (!cli_parse_shard(v, &o.shard_k, &o.shard_n)) {
                cli_usage_error(CMD, "--shard %s: K/N with 1 <= K <= N", v);
                goto out;
            }
            o.shard = v;
        } else if (OPT("--jobs")) {
            if (m < 0) goto out;
            if (!cli_parse_int(v, &o.jobs) || o.jobs < 1) {
                cli_usage_error(CMD, "--jobs %s: a positive integer", v);
                goto out;
            }
        } else if (OPT("--batch")) {
            if (m < 0) goto out;
            if (!cli_parse_int(v, &o.batch) || o.batch < 1) {
                cli_usage_error(CMD, "--batch %s: a positive integer", v);
                goto out;
            }
        } else if (OPT("--readers")) {
            if (m < 0) goto out;
            if (!cli_parse_int(v, &o.readers) || o.readers < 1) {
                cli_usage_error(CMD, "--readers %s: a positive integer", v);
                goto out;
            }
        } else if (OPT("--precision")) {
            if (m < 0) goto out;
            o.precision = v;
        } else if (OPT("--head")) {
            if (m < 0) goto out;
            o.heads = v;
        } else if (OPT("--loss")) {
            if (m < 0) goto out;
            o.losses = v;
        } else if (OPT("--seeds")) {
            if (m < 0) goto out;
            o.seeds = v;
        } else if (OPT("--set")) {
            if (m < 0) goto out;
            o.sets[o.n_sets++] = v;
        } else if (OPT("--split")) {
            if (m < 0) goto out;
            o.split = v;
        } else if (!strcmp(a, "--allow-missing")) {
            o.allow_missing = 1;
        } else if (!strcmp(a, "--force")) {
            o.force = 1;
        } else if (a[0] == '-') {
            cli_usage_error(CMD, "unknown option '%s'", a);
            goto out;
        } else if (!o.stage) {
            o.stage = a;
        } else {
            cli_usage_error(CMD, "unexpected argument '%s'", a);
            goto out;
        }
#undef OPT
    }
    static const char *const stages[] = {"check", "slides", "tile", "features", "train", "eval", NULL};
    int si = -1;
    for (int k = 0; o.stage && stages[k]; k++)
        if (!strcmp(o.stage, stages[k])) si = k;
    if (si < 0) {
        cli_usage_error(CMD, o.stage ? "unknown stage '%s' (check, slides, tile, features, train, eval)"
                                     : "which stage? (check, slides, tile, features, train, eval)%s",
                        o.stage ? o.stage : "");
        goto out;
    }
    if (!o.dataset) {
        cli_usage_error(CMD, "--dataset NAME is required");
        goto out;
    }
    if (o.split && strcmp(o.split, "test") && strcmp(o.split, "val") && strcmp(o.split, "train")) {
        cli_usage_error(CMD, "--split %s: test, val or train", o.split);
        goto out;
    }
    int need_root = si <= 3;
    cohort co;
    if (si == 1) {
        /* the generator creates DATA_ROOT; datasets without one have nothing to do here */
        cohort probe;
        int prc = cohort_load(&probe, &o, 0);
        int gen = !prc && probe.c.generate[0];
        if (gen) {
            const char *r = o.data_root && *o.data_root ? o.data_root : probe.c.data_root;
            if (r && *r && cli_mkdir_p(r)) cli_error(CMD, "%s", ncmi_error());
        } else if (!prc) {
            fprintf(stderr, "ncmi: cohort: %s: no generator (its slides are under DATA_ROOT): nothing to make\n",
                    probe.c.name);
        }
        cohort_free(&probe);
        if (prc || !gen) {
            rc = prc;
            goto out;
        }
    }
    rc = cohort_load(&co, &o, need_root);
    if (!rc) {
        switch (si) {
        case 0: rc = stage_check(&co, &o, NULL, NULL, NULL); break;
        case 1: rc = stage_slides(&co, &o); break;
        case 2: rc = stage_tile(&co, &o); break;
        case 3: rc = stage_features(&co, &o); break;
        case 4: rc = stage_train(&co, &o); break;
        default: rc = stage_eval(&co, &o); break;
        }
    }
    cohort_free(&co);
out:
    free(o.sets);
    return rc;
}
