/* ncmi features: not built yet (issue 7); the help says what it will do. */
#include "cli.h"

void ncmi_help_features(FILE *f)
{
    fprintf(f,
            "usage: ncmi features --manifest CSV --patches DIR --out DIR [--config FILE] [--set key=value ...]\n"
            "\n"
            "Read the patches of each slide and encode them (ResNet-50 truncated, ...) into\n"
            "a feature bag: DIR/features/<slide_id>.h5 with features [N,D] and coords [N,2].\n"
            "Runs on the GPU when built with CUDA, else on the CPU.\n"
            "\n"
            "options (planned):\n"
            "  --manifest CSV     slide list\n"
            "  --patches DIR      coords files from 'ncmi tile'\n"
            "  --out DIR          output folder\n"
            "  --config FILE      encoder config (YAML)\n"
            "  --set key=value    override one config key (repeatable)\n"
            "\n"
            "status: not built yet (issue 7)\n");
}

int ncmi_cmd_features(int argc, char **argv) { return cli_not_built(argc, argv, ncmi_help_features, 7); }
