/* The ncmi command line: one file per subcommand (cli/cmd_<name>.c), shared
 * helpers for options, messages and exit codes (cli/cli.c). */
#ifndef NCMI_CLI_H
#define NCMI_CLI_H

#include <stdio.h>

/* Exit codes (design.md). */
enum {
    NCMI_EXIT_OK = 0,
    NCMI_EXIT_USAGE = 1,    /* bad arguments, unknown command, not built yet */
    NCMI_EXIT_INPUT = 2,    /* bad file, bad config */
    NCMI_EXIT_PARTIAL = 3,  /* some items failed (listed) */
    NCMI_EXIT_INTERNAL = 4, /* anything else */
};

typedef struct ncmi_command {
    const char *name;
    const char *summary;            /* one line for `ncmi --help` */
    int (*run)(int argc, char **argv); /* argv[0] is the command name */
    void (*help)(FILE *f);
} ncmi_command;

/* every subcommand (cmd_<name>.c) */
int ncmi_cmd_tile(int argc, char **argv);
int ncmi_cmd_features(int argc, char **argv);
int ncmi_cmd_train(int argc, char **argv);
int ncmi_cmd_eval(int argc, char **argv);
int ncmi_cmd_score(int argc, char **argv);
int ncmi_cmd_measure(int argc, char **argv);
int ncmi_cmd_report(int argc, char **argv);
int ncmi_cmd_cohort(int argc, char **argv);
int ncmi_cmd_version(int argc, char **argv);
void ncmi_help_tile(FILE *f);
void ncmi_help_features(FILE *f);
void ncmi_help_train(FILE *f);
void ncmi_help_eval(FILE *f);
void ncmi_help_score(FILE *f);
void ncmi_help_measure(FILE *f);
void ncmi_help_report(FILE *f);
void ncmi_help_cohort(FILE *f);
void ncmi_help_version(FILE *f);
/* The dataset config schema of `ncmi cohort` and the size of the struct
 * it fills (the fuzz harnesses load dataset configs through it). */
struct ncmi_cfg_schema;
const struct ncmi_cfg_schema *ncmi_cohort_schema(size_t *cfg_size);

/* The command table (cli.c), NULL-name terminated, and lookup by name. */
extern const ncmi_command ncmi_commands[];
const ncmi_command *ncmi_command_find(const char *name);

/* "ncmi: <cmd>: <message>\n" on stderr. */
void cli_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Usage error: the message plus "see 'ncmi <cmd> --help'"; returns NCMI_EXIT_USAGE. */
int cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#ifdef __clang_analyzer__
/* as ncmi_error_set in nn/error.h: the analyzer sees one file at a time */
#define cli_usage_error(...) (cli_usage_error(__VA_ARGS__), NCMI_EXIT_USAGE)
#endif
/* "ncmi: <cmd>: not built yet (issue N)"; returns NCMI_EXIT_USAGE. Honours
 * --help / -h in argv first (help, exit 0). */
int cli_not_built(int argc, char **argv, void (*help)(FILE *), int issue);

/* Option matching for hand-written loops over argv[1..argc):
 * "--name VALUE" or "--name=VALUE". Returns 1 (matched, *val set, *i
 * advanced past the value), 0 (not this option) or -1 (matched but the
 * value is missing: a usage error was printed). */
int cli_opt_value(int argc, char **argv, int *i, const char *cmd, const char *name,
                  const char **val);
/* The device every command computes on: set by main.c from the global
 * option --device cpu|cuda|cuda:K|auto (default cpu; auto for features and
 * score; $NCMI_DEVICE overrides the default), which any command
 * accepts anywhere after its name. 1 = the GPU nn_cuda_init selected. */
extern int cli_device_cuda;
/* Removes "--device X" / "--device=X" from argv (argc updated), selects the
 * device; 0, or a usage error printed and NCMI_EXIT_USAGE. */
int cli_take_device(const char *cmd, int *argc, char **argv);

/* ---- helpers shared by the cohort commands (tile, features, train) ---- */
/* mkdir -p; 0 or -1 with ncmi_error() naming the folder. */
int cli_mkdir_p(const char *path);
/* One CSV field, quoted when needed (RFC 4180; newlines become spaces). */
void cli_csv_field(FILE *f, const char *s);
/* Monotonic seconds. */
double cli_now(void);

/* The slides of a cohort command: from a manifest (slide_id, path relative
 * to the manifest, mpp column; slide_mpp for rows without one) or from
 * files (slide_id = file name without its extension, mpp = slide_mpp),
 * checked (ids distinct and usable as file names), then this shard's part:
 * the slides whose index i (0-based, list order) has i mod shard_n ==
 * shard_k - 1, in list order. 0, or an exit code with the error printed. */
typedef struct cli_slide {
    char *id;
    char *path;  /* NULL: the manifest row has none */
    double mpp;  /* override, 0 = none */
} cli_slide;
int cli_slide_list(const char *cmd, const char *manifest, const char *const *files, int n_files, double slide_mpp,
                   int shard_k, int shard_n, cli_slide **slides, int *n);
void cli_slides_free(cli_slide *s, int n);
/* The status file of a cohort command: <dir>/<stem>.csv, or
 * <stem>.<K>of<N>.csv for shard K of N (so shards never share one). Rows are
 * appended to s->live as items finish (caller writes and flushes); at the
 * end the file is rewritten in list order, atomically. */
typedef struct cli_status {
    char path[4400];
    FILE *live;
    const char *header;
} cli_status;
/* 0, or NCMI_EXIT_INPUT with the error printed. */
int cli_status_open(cli_status *s, const char *cmd, const char *dir, const char *stem, int shard_k, int shard_n,
                    const char *header);
/* Closes the live file and rewrites it: header + row(f, i, ctx) for i < n. */
void cli_status_finish(cli_status *s, const char *cmd, int n, void (*row)(FILE *f, int i, void *ctx), void *ctx);

/* Whole-string numbers: 1 ok (finite; int within +-1e9), 0 not. */
int cli_parse_int(const char *s, int *v);
int cli_parse_double(const char *s, double *v);
/* "K/N" with 1 <= K <= N; 1 ok, 0 not. */
int cli_parse_shard(const char *s, int *k, int *n);

/* "-h" or "--help" */
int cli_is_help(const char *arg);

/* Version (cli/version.c): git describe of the build, and a multi-line
 * description of the build features (CUDA, cuDNN, ..., OpenBLAS config). */
const char *ncmi_version_string(void);
void ncmi_version_print(FILE *f);

#endif
