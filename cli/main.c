/* ncmi: one program for the whole pipeline. `ncmi <command> [options]`. */
#include <stdio.h>
#include <string.h>

#include "cli.h"

#if NCMI_HAVE_HDF5
#include <hdf5.h>
#endif

static void usage(FILE *f)
{
    fprintf(f,
            "ncmi: whole-slide-image pathology and natural-image classifiers trained with the\n"
            "normalized conditional mutual information (NCMI) loss, in C.\n"
            "\n"
            "usage: ncmi <command> [options]\n"
            "       ncmi <command> --help      help for one command\n"
            "\n"
            "commands:\n");
    for (const ncmi_command *c = ncmi_commands; c->name; c++)
        fprintf(f, "  %-9s %s\n", c->name, c->summary);
    fprintf(f,
            "\n"
            "global options:\n"
            "  -h, --help       this help\n"
            "  -V, --version    same as 'ncmi version'\n"
            "  --device D       where to compute, given after the command: cpu, cuda,\n"
            "                   cuda:K (GPU K) or auto (the GPU when there is one); default\n"
            "                   auto for features and score, cpu for the others;\n"
            "                   commands with no GPU stage (tile, eval) accept it and use the CPU\n"
            "\n"
            "environment:\n"
            "  OMP_NUM_THREADS  CPU threads (a config's train.threads overrides it)\n"
            "  NCMI_DEVICE      default for --device\n"
            "  NCMI_CUDA_SYNC=1 synchronise after every GPU kernel (debugging: errors are\n"
            "                   reported at the launch that caused them)\n"
            "\n"
            "exit codes: 0 ok, 1 usage error, 2 input error (bad file or config), 3 partial success\n"
            "\n"
            "docs: README.md and docs/ in the source tree (docs/config.md: config keys;\n"
            "      'ncmi train --help-config' prints them too)\n");
}

int main(int argc, char **argv)
{
#if NCMI_HAVE_HDF5
    /* no HDF5 shutdown at exit: after an H5Fclose that failed (disk full) the
     * library's exit handler closes that file again and crashes (SIGSEGV in
     * H5F__close_cb), turning a reported write error into a segfault; every
     * file we write is closed (and checked) before exit anyway */
    H5dont_atexit();
#endif
    if (argc < 2) {
        usage(stderr);
        return NCMI_EXIT_USAGE;
    }
    const char *a = argv[1];
    if (cli_is_help(a)) {
        usage(stdout);
        return NCMI_EXIT_OK;
    }
    if (!strcmp(a, "-V") || !strcmp(a, "--version")) return ncmi_cmd_version(1, argv + 1);
    if (!strcmp(a, "help")) {
        if (argc < 3) {
            usage(stdout);
            return NCMI_EXIT_OK;
        }
        const ncmi_command *c = ncmi_command_find(argv[2]);
        if (!c) return cli_usage_error("", "unknown command '%s'", argv[2]);
        c->help(stdout);
        return NCMI_EXIT_OK;
    }
    if (a[0] == '-') return cli_usage_error("", "unknown option '%s'", a);
    const ncmi_command *c = ncmi_command_find(a);
    if (!c) return cli_usage_error("", "unknown command '%s'", a);
    int cargc = argc - 1;
    int rc = cli_take_device(c->name, &cargc, argv + 1);
    if (rc) return rc;
    return c->run(cargc, argv + 1);
}
