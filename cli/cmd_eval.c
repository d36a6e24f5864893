/* ncmi eval: not built yet (issue 3); the help says what it will do. */
#include "cli.h"

void ncmi_help_eval(FILE *f)
{
    fprintf(f,
            "usage: ncmi eval --run DIR [--split test] [--checkpoint best|last]\n"
            "\n"
            "Evaluate a trained run on a split: writes predictions_<split>.csv and\n"
            "metrics_<split>.json (accuracy, macro-F1, macro-AUC, top-1/top-5) in the run folder.\n"
            "\n"
            "options (planned):\n"
            "  --run DIR          run folder (runs/<name>)\n"
            "  --split NAME       train|val|test (default test)\n"
            "  --checkpoint WHICH best or last (default best)\n"
            "\n"
            "status: not built yet (issue 3)\n");
}

int ncmi_cmd_eval(int argc, char **argv) { return cli_not_built(argc, argv, ncmi_help_eval, 3); }
