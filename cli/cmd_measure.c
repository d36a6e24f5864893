/* ncmi measure: not built yet (issue 3); the help says what it will do. */
#include "cli.h"

void ncmi_help_measure(FILE *f)
{
    fprintf(f,
            "usage: ncmi measure --run DIR [--split NAME]\n"
            "\n"
            "Measure the conditional mutual information (CMI), the separation (Gamma) and\n"
            "their ratio NCMI of a model's outputs on a set, with softmax or the normalized\n"
            "sigmoid (NSF).\n"
            "\n"
            "options (planned):\n"
            "  --run DIR          run folder (runs/<name>)\n"
            "  --split NAME       train|val|test (default test)\n"
            "\n"
            "status: not built yet (issue 3)\n");
}

int ncmi_cmd_measure(int argc, char **argv) { return cli_not_built(argc, argv, ncmi_help_measure, 3); }
