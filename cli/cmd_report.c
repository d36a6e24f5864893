/* ncmi report: tables across run folders.
 *
 *   ncmi report table3 --runs DIR [--dataset NAME] [--split test] [--out PREFIX]
 *
 * Table III of the NCMI paper for one cohort: for every MIL head (ABMIL,
 * TransMIL, AEM, ASMIL) the linear head + cross-entropy ("CE") and the NCMI
 * head, macro-F1 and macro-AUC on the evaluation split, beside the paper's
 * numbers and the difference. NCMI rows use the paper's rule for Table III,
 * linear probing (metrics_<split>_lp.json, "NCMI-LP"), and also give
 * centroid comparison ("NCMI-CC", metrics_<split>_cc.json; the paper has no
 * Table III number for it). Several runs of one head and loss (seeds) give
 * mean ± sample std.
 *
 * Runs are the folders under DIR (DIR itself, and down to 3 levels) that
 * hold config.yaml; the head and loss come from it (model.kind, head.kind,
 * loss.kind), the seed too. Writes PREFIX.md and PREFIX.csv (default
 * reports/table3_<dataset>), each through a temporary name and a rename,
 * and prints the markdown. Exit 0 complete, 3 when a head or loss of the 4 x
 * {CE, NCMI} grid has no finished run (the table is written, the gaps are
 * '-' and listed), 2 when DIR holds no run, 1 usage. */
#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"

#include "../nn/error.h"
#include "train_config.h"
#include "../nn/tmpfile.h"

#define CMD "report"

void ncmi_help_report(FILE *f)
{
    fprintf(f,
            "usage: ncmi report table3 --runs DIR [--dataset NAME] [--split test|val] [--out PREFIX]\n"
            "\n"
            "Tables across run folders.\n"
            "\n"
            "table3: the NCMI paper's Table III for one cohort: for each MIL head (ABMIL,\n"
            "TransMIL, AEM, ASMIL) and loss, macro-F1 and macro-AUC of the evaluation split,\n"
            "with the paper's numbers and the difference side by side. Rows: CE (linear\n"
            "head + cross-entropy: metrics_<split>.json), NCMI-LP (the paper's rule for\n"
            "Table III: linear probing, metrics_<split>_lp.json) and NCMI-CC (centroid\n"
            "comparison, metrics_<split>_cc.json; no paper number). Several runs of one\n"
            "head and loss (seeds) give mean +- sample std.\n"
            "\n"
            "options:\n"
            "  --runs DIR         folder of run folders: DIR and its subfolders (3 levels)\n"
            "                     that hold config.yaml; head, loss and seed from it\n"
            "  --dataset NAME     camelyon17 or bracs: the paper's columns (compiled in);\n"
            "                     other names: '-'. Default: the run names' common prefix\n"
            "                     before _<head>_ (camelyon17_abmil_ce -> camelyon17)\n"
            "  --split S          evaluation split of the metrics files (default test)\n"
            "  --out PREFIX       write PREFIX.md and PREFIX.csv (default\n"
            "                     reports/table3_<dataset>), via temporary names\n"
            "  -h, --help         this help\n"
            "\n"
            "Prints the markdown table. Exit codes: 0 complete, 1 usage error, 2 no run\n"
            "under DIR (or unwritable output), 3 written but some head x {CE, NCMI} has no\n"
            "finished run (listed; '-' in the table).\n");
}

/* ------------------------------------------------------------------ */
/* the paper's Table III (../shared/docs/ncmi.md)                      */

enum { N_HEADS = 4 };
static const char *const head_keys[N_HEADS] = {"abmil", "transmil", "aem", "asmil"};
static const char *const head_titles[N_HEADS] = {"ABMIL", "TransMIL", "AEM", "ASMIL"};

typedef struct paper_cohort {
    const char *name;
    double ce[N_HEADS][2], lp[N_HEADS][2]; /* macro-F1, macro-AUC */
} paper_cohort;

static const paper_cohort paper[] = {
    {"camelyon17",
     {{0.522, 0.853}, {0.554, 0.792}, {0.647, 0.887}, {0.689, 0.898}},
     {{0.567, 0.892}, {0.582, 0.853}, {0.663, 0.907}, {0.710, 0.914}}},
    {"bracs",
     {{0.680, 0.866}, {0.631, 0.841}, {0.742, 0.905}, {0.781, 0.914}},
     {{0.701, 0.872}, {0.662, 0.878}, {0.779, 0.918}, {0.824, 0.936}}},
};

/* ------------------------------------------------------------------ */
/* runs                                                                */

/* rows of the table: per head, loss (CE family by name, or NCMI) and method */
typedef struct row {
    int head;            /* 0..3, or -1: another model */
    char loss[32];       /* "ce", "focal", ..., or "ncmi" */
    char method[16];     /* "", "lp", "cc" */
    int n;               /* runs with metrics */
    double f1[64], auc[64];
    int seeds[64];
    char *dirs;          /* ';'-joined run folders */
} row;

typedef struct table {
    row *rows;
    int n, cap;
    int runs_seen, runs_unfinished;
    char **names;        /* run names (dataset inference) */
    int n_names;
} table;

static row *table_row(table *t, int head, const char *loss, const char *method)
{
    for (int i = 0; i < t->n; i++)
        if (t->rows[i].head == head && !strcmp(t->rows[i].loss, loss) && !strcmp(t->rows[i].method, method))
            return &t->rows[i];
    if (t->n == t->cap) {
        int cap = t->cap ? 2 * t->cap : 16;
        row *r = realloc(t->rows, (size_t)cap * sizeof *r);
        if (!r) return NULL;
        t->rows = r;
        t->cap = cap;
    }
    row *r = &t->rows[t->n++];
    memset(r, 0, sizeof *r);
    r->head = head;
    snprintf(r->loss, sizeof r->loss, "%s", loss);
    snprintf(r->method, sizeof r->method, "%s", method);
    return r;
}

/* macro-F1 and macro-AUC of a metrics file; 0, or -1 (absent / unreadable) */
static int read_metrics(const char *path, double *f1, double *auc)
{
    json_error_t err;
    json_t *j = json_load_file(path, 0, &err);
    if (!j) return -1;
    json_t *a = json_object_get(j, "f1_macro"), *b = json_object_get(j, "auc_macro");
    *f1 = json_is_number(a) ? json_number_value(a) : NAN;
    *auc = json_is_number(b) ? json_number_value(b) : NAN;
    /* binary tasks name it auc */
    if (!json_is_number(b) && json_is_number(json_object_get(j, "auc")))
        *auc = json_number_value(json_object_get(j, "auc"));
    int ok = json_is_number(a) || isfinite(*auc);
    json_decref(j);
    return ok ? 0 : -1;
}

static int add_run(table *t, const char *dir, const char *split)
{
    char path[4400];
    snprintf(path, sizeof path, "%s/config.yaml", dir);
    ncmi_train_config c;
    ncmi_cfg_defaults(&ncmi_train_schema, &c);
    if (ncmi_cfg_load_file(&ncmi_train_schema, &c, path)) {
        cli_error(CMD, "warning: %s: skipped: %s", dir, ncmi_error());
        ncmi_cfg_free(&ncmi_train_schema, &c);
        return 0;
    }
    t->runs_seen++;
    int head = NCMI_MODEL_IS_MIL(c.model_kind) ? c.model_kind - NCMI_MODEL_ABMIL : -1;
    const int ncmi = c.head_kind == NCMI_HEAD_NCMI;
    const char *loss = ncmi ? "ncmi" : ncmi_cfg_enum_name(ncmi_cfg_find(&ncmi_train_schema, "loss.kind"), &c);
    const char *methods[2] = {ncmi ? "lp" : "", ncmi ? "cc" : NULL};
    int any = 0;
    for (int k = 0; k < 2 && methods[k]; k++) {
        double f1, auc;
        if (methods[k][0])
            snprintf(path, sizeof path, "%s/metrics_%s_%s.json", dir, split, methods[k]);
        else
            snprintf(path, sizeof path, "%s/metrics_%s.json", dir, split);
        if (read_metrics(path, &f1, &auc)) continue;
        row *r = table_row(t, head, loss, methods[k]);
        if (!r) return ncmi_error_set("out of memory");
        if (r->n < 64) {
            r->f1[r->n] = f1;
            r->auc[r->n] = auc;
            r->seeds[r->n] = c.seed;
            r->n++;
        }
        size_t old = r->dirs ? strlen(r->dirs) : 0;
        char *nd = realloc(r->dirs, old + strlen(dir) + 2);
        if (!nd) return ncmi_error_set("out of memory");
        if (old) nd[old++] = ';';
        memcpy(nd + old, dir, strlen(dir) + 1);
        r->dirs = nd;
        any = 1;
    }
    if (!any) t->runs_unfinished++;
    if (c.name && *c.name) {
        char **nn = realloc(t->names, (size_t)(t->n_names + 1) * sizeof *nn);
        if (nn) {
            t->names = nn;
            t->names[t->n_names] = strdup(c.name);
            if (t->names[t->n_names]) t->n_names++;
        }
    }
    ncmi_cfg_free(&ncmi_train_schema, &c);
    return 0;
}

static int is_dir(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* DIR and its subfolders (depth levels) holding config.yaml, in name order */
static int scan(table *t, const char *dir, int depth, const char *split)
{
    char p[4400];
    snprintf(p, sizeof p, "%s/config.yaml", dir);
    if (access(p, R_OK) == 0) return add_run(t, dir, split);
    if (depth <= 0) return 0;
    DIR *d = opendir(dir);
    if (!d) return 0;
    char **subs = NULL;
    int n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        if (!is_dir(p)) continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 16;
            char **s = realloc(subs, (size_t)cap * sizeof *s);
            if (!s) break;
            subs = s;
        }
        subs[n] = strdup(p);
        if (subs[n]) n++;
    }
    closedir(d);
    if (n > 1) qsort(subs, (size_t)n, sizeof *subs, cmp_str); /* subs is NULL when n == 0 */
    int rc = 0;
    for (int i = 0; i < n; i++) {
        if (!rc) rc = scan(t, subs[i], depth - 1, split);
        free(subs[i]);
    }
    free(subs);
    return rc;
}

/* dataset from run names: the part before "_<head>_" when all runs agree */
static void infer_dataset(const table *t, char *out, size_t n)
{
    out[0] = 0;
    for (int i = 0; i < t->n_names; i++) {
        const char *nm = t->names[i], *cut = NULL;
        for (int h = 0; h < N_HEADS && !cut; h++) {
            char pat[40];
            snprintf(pat, sizeof pat, "_%s_", head_keys[h]);
            cut = strstr(nm, pat);
            if (!cut) {
                size_t L = strlen(nm), hl = strlen(head_keys[h]);
                if (L > hl + 1 && nm[L - hl - 1] == '_' && !strcmp(nm + L - hl, head_keys[h])) cut = nm + L - hl - 1;
            }
        }
        if (!cut || cut == nm) {
            out[0] = 0;
            return;
        }
        char cand[256];
        snprintf(cand, sizeof cand, "%.*s", (int)(cut - nm), nm);
        if (!out[0])
            snprintf(out, n, "%s", cand);
        else if (strcmp(out, cand)) {
            out[0] = 0;
            return;
        }
    }
}

/* ------------------------------------------------------------------ */
/* output                                                              */

typedef struct stat2 {
    double mean, std;
    int n;
} stat2;

static stat2 stats(const double *v, int n)
{
    stat2 s = {NAN, NAN, 0};
    double sum = 0;
    int k = 0;
    for (int i = 0; i < n; i++)
        if (isfinite(v[i])) sum += v[i], k++;
    s.n = k;
    if (!k) return s;
    s.mean = sum / k;
    if (k > 1) {
        double q = 0;
        for (int i = 0; i < n; i++)
            if (isfinite(v[i])) q += (v[i] - s.mean) * (v[i] - s.mean);
        s.std = sqrt(q / (k - 1));
    }
    return s;
}

/* a growing string */
typedef struct sbuf {
    char *s;
    size_t n, cap;
    int oom;
} sbuf;

static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *b, const char *fmt, ...)
{
    if (b->oom) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int w = vsnprintf(b->s ? b->s + b->n : NULL, b->s ? b->cap - b->n : 0, fmt, ap);
        va_end(ap);
        if (w < 0) {
            b->oom = 1;
            return;
        }
        if (b->s && b->n + (size_t)w < b->cap) {
            b->n += (size_t)w;
            return;
        }
        size_t cap = b->cap ? b->cap : 1024;
        while (cap <= b->n + (size_t)w) cap *= 2;
        char *s = realloc(b->s, cap);
        if (!s) {
            b->oom = 1;
            return;
        }
        b->s = s;
        b->cap = cap;
    }
}

static void fmt_stat(char *buf, size_t n, stat2 s)
{
    if (!s.n)
        snprintf(buf, n, "-");
    else if (s.n > 1)
        snprintf(buf, n, "%.3f ± %.3f", s.mean, s.std);
    else
        snprintf(buf, n, "%.3f", s.mean);
}

static void fmt_num(char *buf, size_t n, double v, int sign)
{
    if (!isfinite(v))
        snprintf(buf, n, "-");
    else
        snprintf(buf, n, sign ? "%+.3f" : "%.3f", v);
}


static const char *loss_title(const char *loss, const char *method, char *buf, size_t n)
{
    if (!strcmp(loss, "ncmi")) snprintf(buf, n, "NCMI-%s", !strcmp(method, "lp") ? "LP" : "CC");
    else if (!strcmp(loss, "ce")) snprintf(buf, n, "CE");
    else snprintf(buf, n, "%s", loss);
    return buf;
}

/* the order of the rows: heads in table order, then CE, NCMI-LP, NCMI-CC,
 * then other losses by name; other models last */
static int row_rank(const row *r)
{
    int h = r->head < 0 ? N_HEADS : r->head;
    int l = !strcmp(r->loss, "ce") ? 0 : !strcmp(r->loss, "ncmi") ? (!strcmp(r->method, "lp") ? 1 : 2) : 3;
    return h * 4 + l;
}

static int row_cmp(const void *a, const void *b)
{
    const row *x = a, *y = b;
    int rx = row_rank(x), ry = row_rank(y);
    if (rx != ry) return rx < ry ? -1 : 1;
    return strcmp(x->loss, y->loss);
}

static int table3(const char *runs, const char *dataset_opt, const char *split, const char *out_opt)
{
    if (!is_dir(runs)) {
        cli_error(CMD, "--runs %s: not a folder", runs);
        return NCMI_EXIT_INPUT;
    }
    table t;
    memset(&t, 0, sizeof t);
    int rc = NCMI_EXIT_OK;
    if (scan(&t, runs, 3, split)) {
        cli_error(CMD, "%s", ncmi_error());
        rc = NCMI_EXIT_INTERNAL;
        goto done;
    }
    if (!t.runs_seen) {
        cli_error(CMD, "--runs %s: no run folder (a folder with config.yaml) in it or below", runs);
        rc = NCMI_EXIT_INPUT;
        goto done;
    }
    char dataset[256];
    if (dataset_opt)
        snprintf(dataset, sizeof dataset, "%s", dataset_opt);
    else
        infer_dataset(&t, dataset, sizeof dataset);
    const paper_cohort *pc = NULL;
    for (size_t i = 0; i < sizeof paper / sizeof *paper; i++)
        if (!strcmp(paper[i].name, dataset)) pc = &paper[i];
    /* the 4 x {CE, NCMI-LP, NCMI-CC} grid is always shown */
    for (int h = 0; h < N_HEADS; h++) {
        if (!table_row(&t, h, "ce", "") || !table_row(&t, h, "ncmi", "lp") || !table_row(&t, h, "ncmi", "cc")) {
            cli_error(CMD, "out of memory");
            rc = NCMI_EXIT_INTERNAL;
            goto done;
        }
    }
    qsort(t.rows, (size_t)t.n, sizeof *t.rows, row_cmp);

    sbuf md = {0}, csv = {0}, missing = {0};
    int n_missing = 0;
    sb_printf(&md, "# Table III: %s (%s split, macro-F1 / macro-AUC)\n\n", dataset[0] ? dataset : "(cohort)", split);
    sb_printf(&md, "Runs under `%s` (%d run folder%s%s). Paper: NCMI paper Table III, %s; NCMI rows there are "
                   "NCMI-LP (linear probing). Δ = this run − paper. Several runs (seeds): mean ± sample std.\n\n",
              runs, t.runs_seen, t.runs_seen == 1 ? "" : "s", t.runs_unfinished ? ", some unfinished" : "",
              pc ? pc->name : "no columns for this cohort ('-')");
    sb_printf(&md, "| head | loss | macro-F1 | macro-AUC | paper macro-F1 | paper macro-AUC | Δ macro-F1 | Δ macro-AUC "
                   "| runs | seeds |\n");
    sb_printf(&md, "|---|---|---|---|---|---|---|---|---|---|\n");
    sb_printf(&csv, "head,loss,n_runs,seeds,f1_macro,f1_macro_std,auc_macro,auc_macro_std,paper_f1_macro,"
                    "paper_auc_macro,diff_f1_macro,diff_auc_macro,runs\n");
    for (int i = 0; i < t.n; i++) {
        const row *r = &t.rows[i];
        char lt[48], hb[64];
        loss_title(r->loss, r->method, lt, sizeof lt);
        const char *ht = r->head >= 0 ? head_titles[r->head] : "other";
        snprintf(hb, sizeof hb, "%s", ht);
        stat2 f = stats(r->f1, r->n), a = stats(r->auc, r->n);
        double pf = NAN, pa = NAN;
        if (pc && r->head >= 0) {
            if (!strcmp(r->loss, "ce")) pf = pc->ce[r->head][0], pa = pc->ce[r->head][1];
            if (!strcmp(r->loss, "ncmi") && !strcmp(r->method, "lp")) pf = pc->lp[r->head][0], pa = pc->lp[r->head][1];
        }
        double df = f.n ? f.mean - pf : NAN, da = a.n ? a.mean - pa : NAN;
        char sf[48], sa[48], spf[16], spa[16], sdf[16], sda[16], seeds[256] = "";
        fmt_stat(sf, sizeof sf, f);
        fmt_stat(sa, sizeof sa, a);
        fmt_num(spf, sizeof spf, pf, 0);
        fmt_num(spa, sizeof spa, pa, 0);
        fmt_num(sdf, sizeof sdf, df, 1);
        fmt_num(sda, sizeof sda, da, 1);
        size_t sl = 0;
        for (int k = 0; k < r->n && sl < sizeof seeds - 16; k++)
            sl += (size_t)snprintf(seeds + sl, sizeof seeds - sl, "%s%d", k ? " " : "", r->seeds[k]);
        sb_printf(&md, "| %s | %s | %s | %s | %s | %s | %s | %s | %d | %s |\n", hb, lt, sf, sa, spf, spa, sdf, sda, r->n,
                  r->n ? seeds : "-");
        char cf[32] = "", cfs[32] = "", ca[32] = "", cas[32] = "", cpf[32] = "", cpa[32] = "", cdf[32] = "",
             cda[32] = "";
        if (f.n) snprintf(cf, sizeof cf, "%.6g", f.mean);
        if (f.n > 1) snprintf(cfs, sizeof cfs, "%.6g", f.std);
        if (a.n) snprintf(ca, sizeof ca, "%.6g", a.mean);
        if (a.n > 1) snprintf(cas, sizeof cas, "%.6g", a.std);
        if (isfinite(pf)) snprintf(cpf, sizeof cpf, "%.3f", pf);
        if (isfinite(pa)) snprintf(cpa, sizeof cpa, "%.3f", pa);
        if (isfinite(df)) snprintf(cdf, sizeof cdf, "%.6g", df);
        if (isfinite(da)) snprintf(cda, sizeof cda, "%.6g", da);
        sb_printf(&csv, "%s,%s,%d,%s,%s,%s,%s,%s,%s,%s,%s,%s,", ht, lt, r->n, seeds, cf, cfs, ca, cas, cpf, cpa, cdf, cda);
        /* run folders: quoted (paths may hold commas) */
        sb_printf(&csv, "\"");
        for (const char *p = r->dirs ? r->dirs : ""; *p; p++) sb_printf(&csv, *p == '"' ? "\"\"" : "%c", *p);
        sb_printf(&csv, "\"\n");
        if (!r->n && r->head >= 0 && strcmp(r->method, "cc")) {
            sb_printf(&missing, "%s%s %s", n_missing ? ", " : "", ht, lt);
            n_missing++;
        }
    }
    if (n_missing) {
        sb_printf(&md, "\nMissing (no finished run): %s.\n", missing.s);
        rc = NCMI_EXIT_PARTIAL;
    }
    if (md.oom || csv.oom || missing.oom) {
        cli_error(CMD, "out of memory");
        rc = NCMI_EXIT_INTERNAL;
    } else {
        char prefix[4096], pmd[4200], pcsv[4200];
        if (out_opt)
            snprintf(prefix, sizeof prefix, "%s", out_opt);
        else
            snprintf(prefix, sizeof prefix, "reports/table3_%s", dataset[0] ? dataset : "cohort");
        snprintf(pmd, sizeof pmd, "%s.md", prefix);
        snprintf(pcsv, sizeof pcsv, "%s.csv", prefix);
        char *slash = strrchr(prefix, '/');
        if (slash) {
            *slash = 0;
            if (prefix[0] && cli_mkdir_p(prefix)) {
                cli_error(CMD, "%s", ncmi_error());
                rc = NCMI_EXIT_INPUT;
            }
        }
        if (rc != NCMI_EXIT_INPUT && rc != NCMI_EXIT_INTERNAL) {
            if (ncmi_write_text_atomic(pmd, md.s, strlen(md.s), 0) || ncmi_write_text_atomic(pcsv, csv.s, strlen(csv.s), 0)) {
                cli_error(CMD, "%s", ncmi_error());
                rc = NCMI_EXIT_INPUT;
            } else {
                fputs(md.s, stdout);
                printf("\nwritten: %s, %s\n", pmd, pcsv);
                if (n_missing) cli_error(CMD, "incomplete table: missing %s", missing.s);
            }
        }
    }
    free(md.s);
    free(csv.s);
    free(missing.s);
done:
    for (int i = 0; i < t.n; i++) free(t.rows[i].dirs);
    free(t.rows);
    for (int i = 0; i < t.n_names; i++) free(t.names[i]);
    free(t.names);
    return rc;
}

int ncmi_cmd_report(int argc, char **argv)
{
    const char *runs = NULL, *dataset = NULL, *split = "test", *out = NULL, *what = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        int r;
        if (cli_is_help(a)) {
            ncmi_help_report(stdout);
            return NCMI_EXIT_OK;
        }
        if ((r = cli_opt_value(argc, argv, &i, CMD, "--runs", &v)) != 0) {
            if (r < 0) return NCMI_EXIT_USAGE;
            runs = v;
        } else if ((r = cli_opt_value(argc, argv, &i, CMD, "--dataset", &v)) != 0) {
            if (r < 0) return NCMI_EXIT_USAGE;
            dataset = v;
        } else if ((r = cli_opt_value(argc, argv, &i, CMD, "--split", &v)) != 0) {
            if (r < 0) return NCMI_EXIT_USAGE;
            split = v;
        } else if ((r = cli_opt_value(argc, argv, &i, CMD, "--out", &v)) != 0) {
            if (r < 0) return NCMI_EXIT_USAGE;
            out = v;
        } else if (a[0] == '-') {
            return cli_usage_error(CMD, "unknown option '%s'", a);
        } else if (!what) {
            what = a;
        } else {
            return cli_usage_error(CMD, "unexpected argument '%s'", a);
        }
    }
    if (!what) return cli_usage_error(CMD, "which table? (table3)");
    if (strcmp(what, "table3")) return cli_usage_error(CMD, "unknown table '%s' (table3)", what);
    if (!runs) return cli_usage_error(CMD, "table3 needs --runs DIR");
    if (strcmp(split, "test") && strcmp(split, "val") && strcmp(split, "train"))
        return cli_usage_error(CMD, "--split %s: test, val or train", split);
    if (dataset && (!*dataset || strchr(dataset, '/')))
        return cli_usage_error(CMD, "--dataset '%s': a name without '/'", dataset);
    return table3(runs, dataset, split, out);
}
