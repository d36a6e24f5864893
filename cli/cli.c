/* Shared CLI helpers: the command table, messages, option matching. */
#include "cli.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../eval/manifest.h"
#include "../nn/cuda.h"
#include "../nn/error.h"

int cli_device_cuda = 0;

int cli_take_device(const char *cmd, int *argc, char **argv)
{
    const char *spec = NULL;
    int out = 1;
    for (int i = 1; i < *argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--")) { /* operands follow: keep them as they are */
            while (i < *argc) argv[out++] = argv[i++];
            break;
        }
        if (!strncmp(a, "--device=", 9)) {
            spec = a + 9;
            continue;
        }
        if (!strcmp(a, "--device")) {
            if (i + 1 >= *argc) return cli_usage_error(cmd, "option --device needs a value (cpu, cuda, cuda:K, auto)");
            spec = argv[++i];
            continue;
        }
        argv[out++] = argv[i];
    }
    *argc = out;
    argv[out] = NULL;
    for (int i = 1; i < out; i++)
        if (cli_is_help(argv[i])) return 0; /* help needs no device */
    if (!spec) {
        /* feature extraction and scoring use the GPU when there is one */
        const char *env = getenv("NCMI_DEVICE");
        int gpu_first = !strcmp(cmd, "features") || !strcmp(cmd, "score") ||
                        (!strcmp(cmd, "cohort") && out > 1 && !strcmp(argv[1], "features"));
        spec = env && *env ? env : gpu_first ? "auto" : "cpu";
    }
    if (nn_device_select(spec, &cli_device_cuda) != 0) {
        cli_error(cmd, "%s", ncmi_error());
        return NCMI_EXIT_USAGE;
    }
    return 0;
}

const ncmi_command ncmi_commands[] = {
    {"tile", "cut slides into tissue patch grids at a physical resolution (patches/<slide>.h5)",
     ncmi_cmd_tile, ncmi_help_tile},
    {"features", "encode patches into feature bags (features/<slide>.h5), GPU or CPU",
     ncmi_cmd_features, ncmi_help_features},
    {"train", "train a model from a YAML config into runs/<name>/ (checkpoints, log, resume)",
     ncmi_cmd_train, ncmi_help_train},
    {"eval", "metrics of a predictions file: accuracy, macro-F1, macro-AUC, top-k, CIs", ncmi_cmd_eval,
     ncmi_help_eval},
    {"score", "score slides with a trained model: summary, JSON, heatmap, HTML page", ncmi_cmd_score,
     ncmi_help_score},
    {"measure", "CMI, separation (Gamma), NCMI and centroid accuracy of a feature set", ncmi_cmd_measure,
     ncmi_help_measure},
    {"cohort", "the stages of a whole slide cohort: check, tile, features, train, eval", ncmi_cmd_cohort,
     ncmi_help_cohort},
    {"report", "tables across runs: the paper's Table III (report table3 --runs DIR)", ncmi_cmd_report,
     ncmi_help_report},
    {"version", "print the version and the build features", ncmi_cmd_version, ncmi_help_version},
    {NULL, NULL, NULL, NULL},
};

const ncmi_command *ncmi_command_find(const char *name)
{
    for (const ncmi_command *c = ncmi_commands; c->name; c++)
        if (!strcmp(c->name, name)) return c;
    return NULL;
}

static void vmsg(const char *cmd, const char *fmt, va_list ap)
{
    fflush(stdout);
    if (cmd && *cmd)
        fprintf(stderr, "ncmi: %s: ", cmd);
    else
        fprintf(stderr, "ncmi: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
}

void cli_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vmsg(cmd, fmt, ap);
    va_end(ap);
}

#undef cli_usage_error /* the analyzer-only macro of cli.h */
int cli_usage_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vmsg(cmd, fmt, ap);
    va_end(ap);
    if (cmd && *cmd)
        fprintf(stderr, "see 'ncmi %s --help'\n", cmd);
    else
        fprintf(stderr, "see 'ncmi --help'\n");
    return NCMI_EXIT_USAGE;
}

int cli_is_help(const char *arg) { return !strcmp(arg, "-h") || !strcmp(arg, "--help"); }

int cli_not_built(int argc, char **argv, void (*help)(FILE *), int issue)
{
    for (int i = 1; i < argc; i++)
        if (cli_is_help(argv[i])) {
            help(stdout);
            return NCMI_EXIT_OK;
        }
    cli_error(argv[0], "not built yet (issue %d)", issue);
    return NCMI_EXIT_USAGE;
}

int cli_opt_value(int argc, char **argv, int *i, const char *cmd, const char *name,
                  const char **val)
{
    const char *a = argv[*i];
    size_t n = strlen(name);
    if (strncmp(a, name, n)) return 0;
    if (a[n] == '=') {
        *val = a + n + 1;
        return 1;
    }
    if (a[n] != 0) return 0;
    if (*i + 1 >= argc) {
        cli_usage_error(cmd, "option %s needs a value", name);
        return -1;
    }
    *val = argv[++*i];
    return 1;
}

/* ------------------------------------------------------------------ */
/* helpers shared by the cohort commands                               */

int cli_mkdir_p(const char *path)
{
    char buf[8192];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf) return ncmi_error_set("%s: path too long", path);
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
    if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode)) return ncmi_error_set("%s: not a folder", path);
    return 0;
}

void cli_csv_field(FILE *f, const char *s)
{
    if (!strpbrk(s, ",\"\n\r")) {
        fputs(s, f);
        return;
    }
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"') fputc('"', f);
        fputc(*s == '\n' || *s == '\r' ? ' ' : *s, f);
    }
    fputc('"', f);
}

double cli_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int cli_status_open(cli_status *s, const char *cmd, const char *dir, const char *stem, int shard_k, int shard_n,
                    const char *header)
{
    if (shard_n == 1)
        snprintf(s->path, sizeof s->path, "%s/%s.csv", dir, stem);
    else
        snprintf(s->path, sizeof s->path, "%s/%s.%dof%d.csv", dir, stem, shard_k, shard_n);
    s->header = header;
    s->live = fopen(s->path, "w");
    if (!s->live) {
        cli_error(cmd, "%s: cannot write: %s", s->path, strerror(errno));
        return NCMI_EXIT_INPUT;
    }
    fputs(header, s->live);
    fflush(s->live);
    return 0;
}

void cli_status_finish(cli_status *s, const char *cmd, int n, void (*row)(FILE *f, int i, void *ctx), void *ctx)
{
    if (s->live) fclose(s->live);
    s->live = NULL;
    char tmp[4500];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", s->path, (long)getpid());
    FILE *f = fopen(tmp, "w");
    int ok = f != NULL;
    if (f) {
        fputs(s->header, f);
        for (int i = 0; i < n; i++) row(f, i, ctx);
        ok = fflush(f) == 0 && !ferror(f);
        ok = (fclose(f) == 0) && ok;
    }
    if (!ok || rename(tmp, s->path) != 0) {
        cli_error(cmd, "%s: cannot write: %s", s->path, strerror(errno));
        unlink(tmp);
    }
}

int cli_parse_int(const char *s, int *v)
{
    char *e;
    errno = 0;
    long x = strtol(s, &e, 10);
    if (e == s || *e || errno || x < -1000000000L || x > 1000000000L) return 0;
    *v = (int)x;
    return 1;
}

int cli_parse_double(const char *s, double *v)
{
    char *e;
    errno = 0;
    *v = strtod(s, &e);
    return e != s && *e == 0 && errno == 0 && isfinite(*v);
}

int cli_parse_shard(const char *s, int *k, int *n)
{
    /* k and n are written only on success (a failed parse leaves them as they were) */
    int a = 0, b = 0;
    char tail;
    if (sscanf(s, "%d/%d%c", &a, &b, &tail) != 2 || b < 1 || a < 1 || a > b) return 0;
    *k = a;
    *n = b;
    return 1;
}

void cli_slides_free(cli_slide *s, int n)
{
    for (int i = 0; i < n; i++) {
        free(s[i].id);
        free(s[i].path);
    }
    free(s);
}

/* slide id from a file name: the base name without its last extension */
static char *id_from_path(const char *path)
{
    const char *b = strrchr(path, '/');
    b = b ? b + 1 : path;
    char *id = strdup(b);
    char *dot = id ? strrchr(id, '.') : NULL;
    if (dot && dot != id) *dot = 0;
    return id;
}

int cli_slide_list(const char *cmd, const char *manifest, const char *const *files, int n_files, double slide_mpp,
                   int shard_k, int shard_n, cli_slide **slides, int *n)
{
    *slides = NULL;
    *n = 0;
    int n_all = 0;
    cli_slide *all = NULL;
    if (manifest) {
        eval_manifest m;
        if (eval_manifest_read(&m, manifest) != 0) {
            cli_error(cmd, "%s", ncmi_error());
            return NCMI_EXIT_INPUT;
        }
        n_all = m.n;
        all = calloc((size_t)(n_all ? n_all : 1), sizeof *all);
        if (!all) return NCMI_EXIT_INTERNAL;
        for (int i = 0; i < m.n; i++) {
            all[i].id = strdup(m.rows[i].slide_id);
            all[i].path = m.rows[i].path ? eval_manifest_slide_path(&m, i) : NULL;
            all[i].mpp = !isnan(m.rows[i].mpp) ? m.rows[i].mpp : slide_mpp;
        }
        ncmi_error_clear();
        eval_manifest_free(&m);
    } else {
        n_all = n_files;
        all = calloc((size_t)(n_all ? n_all : 1), sizeof *all);
        if (!all) return NCMI_EXIT_INTERNAL;
        for (int i = 0; i < n_files; i++) {
            all[i].id = id_from_path(files[i]);
            all[i].path = strdup(files[i]);
            all[i].mpp = slide_mpp;
        }
        for (int i = 0; i < n_all; i++)
            for (int j = 0; j < i; j++)
                if (!strcmp(all[i].id, all[j].id)) {
                    cli_error(cmd, "two slides have the id '%s' (%s, %s): use a manifest with distinct slide_id",
                              all[i].id, all[j].path, all[i].path);
                    cli_slides_free(all, n_all);
                    return NCMI_EXIT_INPUT;
                }
    }
    for (int i = 0; i < n_all; i++)
        if (!all[i].id[0] || strchr(all[i].id, '/') || !strcmp(all[i].id, ".") || !strcmp(all[i].id, "..")) {
            cli_error(cmd, "slide_id '%s' cannot be a file name", all[i].id);
            cli_slides_free(all, n_all);
            return NCMI_EXIT_INPUT;
        }
    int k = 0;
    for (int i = 0; i < n_all; i++) {
        if (i % shard_n == shard_k - 1) {
            cli_slide t = all[i];
            all[i] = all[k];
            all[k++] = t;
        } else {
            free(all[i].id);
            free(all[i].path);
            all[i].id = all[i].path = NULL;
        }
    }
    *slides = all;
    *n = k;
    return 0;
}
