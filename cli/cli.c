/* Shared CLI helpers: the command table, messages, option matching. */
#include "cli.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

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
        const char *env = getenv("NCMI_DEVICE");
        spec = env && *env ? env : "cpu";
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
    {"score", "score one slide for a pathologist: JSON, heatmap PNG, HTML page", ncmi_cmd_score,
     ncmi_help_score},
    {"measure", "CMI, separation (Gamma), NCMI and centroid accuracy of a feature set", ncmi_cmd_measure,
     ncmi_help_measure},
    {"report", "tables and reports across runs", ncmi_cmd_report, ncmi_help_report},
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
