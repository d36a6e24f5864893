/* Cross-validation summary of `ncmi train --folds DIR` (train_cv.h). */
#include "train_cv.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../eval/json_io.h"
#include "../nn/error.h"
#include "../train/trainer.h"

static const char *const metric_keys[CLI_CV_METRICS] = {"accuracy", "f1_macro", "auc_macro"};
static const char *const metric_titles[CLI_CV_METRICS] = {"accuracy", "macro-F1", "macro-AUC"};
static const char *const method_titles[CLI_CV_METHODS] = {"linear", "NCMI-CC", "NCMI-learned", "NCMI-LP"};

/* ------------------------------------------------------------------ */
/* fold manifests                                                      */

typedef struct fold_file {
    char *name;
    long num; /* -1: no number */
} fold_file;

/* The number at the end of a file name's stem ("fold10.csv" -> 10), or -1. */
static long trailing_number(const char *name)
{
    const char *dot = strrchr(name, '.');
    const char *e = dot ? dot : name + strlen(name), *b = e;
    while (b > name && isdigit((unsigned char)b[-1])) b--;
    if (b == e || e - b > 9) return -1;
    return strtol(b, NULL, 10);
}

static int fold_cmp(const void *a, const void *b)
{
    const fold_file *x = a, *y = b;
    if ((x->num < 0) != (y->num < 0)) return x->num < 0 ? 1 : -1;
    if (x->num != y->num) return x->num < y->num ? -1 : 1;
    return strcmp(x->name, y->name);
}

void cli_cv_free_folds(char **paths, int n)
{
    if (!paths) return;
    for (int i = 0; i < n; i++) free(paths[i]);
    free(paths);
}

int cli_cv_list_folds(const char *dir, char ***paths_out, int **ks_out)
{
    *paths_out = NULL;
    *ks_out = NULL;
    DIR *d = opendir(dir);
    if (!d) return ncmi_error_set("--folds %s: cannot open the folder: %s", dir, strerror(errno));
    fold_file *v = NULL;
    int n = 0, cap = 0, rc = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL && !rc) {
        size_t len = strlen(e->d_name);
        if (len < 5 || strcmp(e->d_name + len - 4, ".csv") || e->d_name[0] == '.') continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 16;
            fold_file *nv = realloc(v, (size_t)cap * sizeof *nv);
            if (!nv) {
                rc = ncmi_error_set("out of memory");
                break;
            }
            v = nv;
        }
        v[n].name = strdup(e->d_name);
        v[n].num = trailing_number(e->d_name);
        if (!v[n].name) rc = ncmi_error_set("out of memory");
        n++;
    }
    closedir(d);
    if (!rc && n == 0) rc = ncmi_error_set("--folds %s: no fold manifests (*.csv) in the folder", dir);
    if (!rc) qsort(v, (size_t)n, sizeof *v, fold_cmp);
    for (int i = 1; i < n && !rc; i++)
        if (v[i].num >= 0 && v[i].num == v[i - 1].num)
            rc = ncmi_error_set("--folds %s: %s and %s both name fold %ld", dir, v[i - 1].name, v[i].name,
                                v[i].num);
    char **paths = NULL;
    int *ks = NULL;
    if (!rc) {
        paths = calloc((size_t)n, sizeof *paths);
        ks = calloc((size_t)n, sizeof *ks);
        if (!paths || !ks) rc = ncmi_error_set("out of memory");
        /* a name without a number gets the first number no other fold uses */
        int next = 0;
        for (int i = 0; i < n && !rc; i++) {
            if (v[i].num >= 0) {
                ks[i] = (int)v[i].num;
            } else {
                for (int used = 1; used;) {
                    used = 0;
                    for (int j = 0; j < n; j++)
                        if (v[j].num == next) used = 1;
                    if (used) next++;
                }
                ks[i] = next++;
            }
            if (asprintf(&paths[i], "%s/%s", dir, v[i].name) < 0) {
                paths[i] = NULL;
                rc = ncmi_error_set("out of memory");
            }
        }
    }
    for (int i = 0; i < n; i++) free(v[i].name);
    free(v);
    if (rc) {
        cli_cv_free_folds(paths, n);
        free(ks);
        return -1;
    }
    *paths_out = paths;
    *ks_out = ks;
    return n;
}

/* ------------------------------------------------------------------ */
/* metrics of the fold runs                                            */

void cli_cv_init(cli_cv *cv)
{
    memset(cv, 0, sizeof *cv);
    snprintf(cv->split, sizeof cv->split, "test");
}

void cli_cv_free(cli_cv *cv)
{
    for (int i = 0; i < cv->n; i++) {
        free(cv->manifest[i]);
        free(cv->run[i]);
    }
    free(cv->k);
    free(cv->manifest);
    free(cv->run);
    free(cv->m);
    memset(cv, 0, sizeof *cv);
}

static int file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

/* The three metrics of one metrics file into m (NAN where null). */
static int read_metrics(const char *path, double m[CLI_CV_METRICS])
{
    json_error_t err;
    json_t *j = json_load_file(path, 0, &err);
    if (!j || !json_is_object(j)) {
        json_decref(j);
        return ncmi_error_set("%s: cannot read the metrics: %s", path, err.text);
    }
    for (int q = 0; q < CLI_CV_METRICS; q++) {
        json_t *v = json_object_get(j, metric_keys[q]);
        m[q] = json_is_number(v) ? json_number_value(v) : NAN;
    }
    json_decref(j);
    return 0;
}

int cli_cv_add(cli_cv *cv, int k, const char *manifest, const char *run_dir)
{
    if (cv->n == cv->cap) {
        int cap = cv->cap ? 2 * cv->cap : 16;
        int *nk = realloc(cv->k, (size_t)cap * sizeof *nk);
        if (nk) cv->k = nk;
        char **nm = realloc(cv->manifest, (size_t)cap * sizeof *nm);
        if (nm) cv->manifest = nm;
        char **nr = realloc(cv->run, (size_t)cap * sizeof *nr);
        if (nr) cv->run = nr;
        double(*mm)[CLI_CV_METHODS][CLI_CV_METRICS] = realloc(cv->m, (size_t)cap * sizeof *mm);
        if (mm) cv->m = mm;
        if (!nk || !nm || !nr || !mm) return ncmi_error_set("out of memory");
        cv->cap = cap;
    }
    char path[4400];
    /* the split the run evaluated: test, or val when the data had no test set */
    snprintf(path, sizeof path, "%s/metrics_test.json", run_dir);
    const char *split = file_exists(path) ? "test" : "val";
    const int i = cv->n;
    for (int t = 0; t < CLI_CV_METHODS; t++)
        for (int q = 0; q < CLI_CV_METRICS; q++) cv->m[i][t][q] = NAN;
    int found = 0;
    for (int t = TR_METHOD_CC; t < TR_METHOD_COUNT; t++) {
        snprintf(path, sizeof path, "%s/metrics_%s_%s.json", run_dir, split, tr_method_name((tr_method)t));
        if (!file_exists(path)) continue;
        if (read_metrics(path, cv->m[i][t])) return -1;
        cv->have[t] = found = 1;
    }
    if (!found) { /* a linear head */
        snprintf(path, sizeof path, "%s/metrics_%s.json", run_dir, split);
        if (!file_exists(path)) return ncmi_error_set("%s: no metrics_test.json or metrics_val.json", run_dir);
        if (read_metrics(path, cv->m[i][TR_METHOD_LINEAR])) return -1;
        cv->have[TR_METHOD_LINEAR] = 1;
    }
    cv->k[i] = k;
    cv->manifest[i] = strdup(manifest);
    cv->run[i] = strdup(run_dir);
    if (!cv->manifest[i] || !cv->run[i]) {
        free(cv->manifest[i]);
        free(cv->run[i]);
        return ncmi_error_set("out of memory");
    }
    snprintf(cv->split, sizeof cv->split, "%s", split);
    cv->n++;
    return 0;
}

void cli_cv_mean_std(const double *v, int n, double *mean, double *std, int *n_out)
{
    double s = 0;
    int c = 0;
    for (int i = 0; i < n; i++)
        if (isfinite(v[i])) {
            s += v[i];
            c++;
        }
    *n_out = c;
    *mean = c ? s / c : NAN;
    double q = 0;
    for (int i = 0; i < n; i++)
        if (isfinite(v[i])) q += (v[i] - *mean) * (v[i] - *mean);
    *std = c > 1 ? sqrt(q / (c - 1)) : c == 1 ? 0 : NAN;
}

/* mean, std, count of method t metric q over the folds */
static void column_stats(const cli_cv *cv, int t, int q, double *mean, double *std, int *n)
{
    double *v = malloc((size_t)(cv->n > 0 ? cv->n : 1) * sizeof *v);
    if (!v) {
        *mean = *std = NAN;
        *n = 0;
        return;
    }
    for (int i = 0; i < cv->n; i++) v[i] = cv->m[i][t][q];
    cli_cv_mean_std(v, cv->n, mean, std, n);
    free(v);
}

/* {"<method>": {"<metric>": {"mean", "std", "n"}}} over the rows of cv */
static json_t *summary_json(const cli_cv *cv)
{
    json_t *mean = json_object();
    for (int t = 0; t < CLI_CV_METHODS; t++) {
        if (!cv->have[t]) continue;
        json_t *mo = json_object();
        for (int q = 0; q < CLI_CV_METRICS; q++) {
            double mu, sd;
            int n;
            column_stats(cv, t, q, &mu, &sd, &n);
            json_t *st = json_object();
            json_object_set_new(st, "mean", eval_json_num(mu));
            json_object_set_new(st, "std", eval_json_num(sd));
            json_object_set_new(st, "n", json_integer(n));
            json_object_set_new(mo, metric_keys[q], st);
        }
        json_object_set_new(mean, tr_method_name((tr_method)t), mo);
    }
    return mean;
}

/* f["<method>"] = {"<metric>": value} of row i */
static void add_row_metrics(const cli_cv *cv, int i, json_t *f)
{
    for (int t = 0; t < CLI_CV_METHODS; t++) {
        if (!cv->have[t]) continue;
        json_t *mo = json_object();
        for (int q = 0; q < CLI_CV_METRICS; q++) json_object_set_new(mo, metric_keys[q], eval_json_num(cv->m[i][t][q]));
        json_object_set_new(f, tr_method_name((tr_method)t), mo);
    }
}

int cli_cv_write_json(const cli_cv *cv, const char *path, const char *name, const char *config,
                      const char *folds_dir)
{
    json_t *j = json_object();
    json_object_set_new(j, "name", json_string(name));
    json_object_set_new(j, "config", config ? json_string(config) : json_null());
    json_object_set_new(j, "folds_dir", json_string(folds_dir));
    json_object_set_new(j, "split", json_string(cv->split));
    json_object_set_new(j, "n_folds", json_integer(cv->n));
    json_t *methods = json_array();
    for (int t = 0; t < CLI_CV_METHODS; t++)
        if (cv->have[t]) json_array_append_new(methods, json_string(tr_method_name((tr_method)t)));
    json_object_set_new(j, "methods", methods);
    json_object_set_new(j, "std_note", json_string("std: sample standard deviation over the folds (n - 1)"));
    json_object_set_new(j, "summary", summary_json(cv));
    json_t *folds = json_array();
    for (int i = 0; i < cv->n; i++) {
        json_t *f = json_object();
        json_object_set_new(f, "fold", json_integer(cv->k[i]));
        json_object_set_new(f, "manifest", json_string(cv->manifest[i]));
        json_object_set_new(f, "run", json_string(cv->run[i]));
        add_row_metrics(cv, i, f);
        json_array_append_new(folds, f);
    }
    json_object_set_new(j, "folds", folds);
    int rc = eval_json_write_atomic(path, j);
    json_decref(j);
    return rc;
}

static void print_cell(FILE *f, double v)
{
    if (isfinite(v))
        fprintf(f, " %6.4f", v);
    else
        fprintf(f, " %6s", "-");
}

/* The rows of cv (label: "fold" or "seed"), the mean and std rows and the
 * "method: accuracy m +- s, ..." lines; `unit` names what the std is over. */
static void print_table(const cli_cv *cv, FILE *f, const char *label, const char *unit)
{
    /* header: method names over their three columns (acc, F1, AUC: 7 characters each) */
    fprintf(f, "%-5s", "");
    for (int t = 0; t < CLI_CV_METHODS; t++)
        if (cv->have[t]) fprintf(f, "  %-21s", method_titles[t]);
    fprintf(f, "\n%-5s", label);
    for (int t = 0; t < CLI_CV_METHODS; t++)
        if (cv->have[t]) fprintf(f, "  %6s %6s %6s", "acc", "F1", "AUC");
    fprintf(f, "\n");
    for (int i = 0; i < cv->n; i++) {
        fprintf(f, "%5d", cv->k[i]);
        for (int t = 0; t < CLI_CV_METHODS; t++) {
            if (!cv->have[t]) continue;
            fprintf(f, " ");
            for (int q = 0; q < CLI_CV_METRICS; q++) print_cell(f, cv->m[i][t][q]);
        }
        fprintf(f, "\n");
    }
    for (int row = 0; row < 2; row++) {
        fprintf(f, "%5s", row ? "std" : "mean");
        for (int t = 0; t < CLI_CV_METHODS; t++) {
            if (!cv->have[t]) continue;
            fprintf(f, " ");
            for (int q = 0; q < CLI_CV_METRICS; q++) {
                double mu, sd;
                int n;
                column_stats(cv, t, q, &mu, &sd, &n);
                print_cell(f, row ? sd : mu);
            }
        }
        fprintf(f, "\n");
    }
    for (int t = 0; t < CLI_CV_METHODS; t++) {
        if (!cv->have[t]) continue;
        fprintf(f, "%s:", method_titles[t]);
        for (int q = 0; q < CLI_CV_METRICS; q++) {
            double mu, sd;
            int n;
            column_stats(cv, t, q, &mu, &sd, &n);
            fprintf(f, "%s %s %.4f +- %.4f", q ? "," : "", metric_titles[q], mu, sd);
            if (n < cv->n) fprintf(f, " (%d %s)", n, unit);
        }
        fprintf(f, "\n");
    }
    fprintf(f, "(std: sample standard deviation over the %s)\n", unit);
}

void cli_cv_print(const cli_cv *cv, FILE *f, const char *name, const char *folds_dir)
{
    fprintf(f, "\n%s: %d-fold cross-validation (%s), %s metrics at each fold's selected epoch\n", name, cv->n,
            folds_dir, cv->split);
    print_table(cv, f, "fold", "folds");
}

/* ------------------------------------------------------------------ */
/* repeated cross-validation (--seeds)                                  */

int cli_cv_add_means(cli_cv *seeds, int seed, const cli_cv *cv, const char *folds_dir, const char *cv_dir)
{
    if (seeds->n == seeds->cap) {
        int cap = seeds->cap ? 2 * seeds->cap : 16;
        int *nk = realloc(seeds->k, (size_t)cap * sizeof *nk);
        if (nk) seeds->k = nk;
        char **nm = realloc(seeds->manifest, (size_t)cap * sizeof *nm);
        if (nm) seeds->manifest = nm;
        char **nr = realloc(seeds->run, (size_t)cap * sizeof *nr);
        if (nr) seeds->run = nr;
        double(*mm)[CLI_CV_METHODS][CLI_CV_METRICS] = realloc(seeds->m, (size_t)cap * sizeof *mm);
        if (mm) seeds->m = mm;
        if (!nk || !nm || !nr || !mm) return ncmi_error_set("out of memory");
        seeds->cap = cap;
    }
    const int i = seeds->n;
    for (int t = 0; t < CLI_CV_METHODS; t++) {
        for (int q = 0; q < CLI_CV_METRICS; q++) {
            double sd;
            int n;
            seeds->m[i][t][q] = NAN;
            if (cv->have[t]) column_stats(cv, t, q, &seeds->m[i][t][q], &sd, &n);
        }
        if (cv->have[t]) seeds->have[t] = 1;
    }
    seeds->k[i] = seed;
    seeds->manifest[i] = strdup(folds_dir);
    seeds->run[i] = strdup(cv_dir);
    if (!seeds->manifest[i] || !seeds->run[i]) {
        free(seeds->manifest[i]);
        free(seeds->run[i]);
        return ncmi_error_set("out of memory");
    }
    snprintf(seeds->split, sizeof seeds->split, "%s", cv->split);
    seeds->n++;
    return 0;
}

int cli_cv_write_seeds_json(const cli_cv *seeds, const char *path, const char *name, const char *config,
                            const char *folds_dir, int n_folds)
{
    json_t *j = json_object();
    json_object_set_new(j, "name", json_string(name));
    json_object_set_new(j, "config", config ? json_string(config) : json_null());
    json_object_set_new(j, "folds_dir", json_string(folds_dir));
    json_object_set_new(j, "split", json_string(seeds->split));
    json_object_set_new(j, "n_folds", json_integer(n_folds));
    json_object_set_new(j, "n_seeds", json_integer(seeds->n));
    json_t *methods = json_array();
    for (int t = 0; t < CLI_CV_METHODS; t++)
        if (seeds->have[t]) json_array_append_new(methods, json_string(tr_method_name((tr_method)t)));
    json_object_set_new(j, "methods", methods);
    json_object_set_new(j, "std_note", json_string("per seed: the mean over its folds; summary: mean and sample "
                                                   "standard deviation (n - 1) of those means over the seeds"));
    json_object_set_new(j, "summary", summary_json(seeds));
    json_t *arr = json_array();
    for (int i = 0; i < seeds->n; i++) {
        json_t *f = json_object();
        json_object_set_new(f, "seed", json_integer(seeds->k[i]));
        json_object_set_new(f, "cv", json_string(seeds->run[i]));
        add_row_metrics(seeds, i, f);
        json_array_append_new(arr, f);
    }
    json_object_set_new(j, "seeds", arr);
    int rc = eval_json_write_atomic(path, j);
    json_decref(j);
    return rc;
}

void cli_cv_print_seeds(const cli_cv *seeds, FILE *f, const char *name, const char *folds_dir, int n_folds)
{
    fprintf(f, "\n%s: %d x %d-fold cross-validation (%s), seeds", name, seeds->n, n_folds, folds_dir);
    for (int i = 0; i < seeds->n; i++) fprintf(f, "%s%d", i ? "," : " ", seeds->k[i]);
    fprintf(f, "; per seed the mean %s metrics of its folds\n", seeds->split);
    print_table(seeds, f, "seed", "seeds");
}
