/* ncmi version */
#include "cli.h"

void ncmi_help_version(FILE *f)
{
    fprintf(f,
            "usage: ncmi version\n"
            "\n"
            "Print the version (git describe of the source tree the binary was built from),\n"
            "the build features (CUDA, cuDNN, NCCL, MPI, OpenSlide, libvips, HDF5) and the\n"
            "OpenBLAS configuration.\n");
}

int ncmi_cmd_version(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (cli_is_help(argv[i])) {
            ncmi_help_version(stdout);
            return NCMI_EXIT_OK;
        }
        return cli_usage_error("version", "unexpected argument '%s'", argv[i]);
    }
    ncmi_version_print(stdout);
    return NCMI_EXIT_OK;
}
