/* ncmi score: not built yet (issue 9); the help says what it will do. */
#include "cli.h"

void ncmi_help_score(FILE *f)
{
    fprintf(f,
            "usage: ncmi score SLIDE --run DIR [--out DIR]\n"
            "\n"
            "Score one slide with a trained run, for a pathologist: predicted class with\n"
            "calibrated probabilities, a JSON file, an attention heatmap PNG and an HTML page.\n"
            "\n"
            "options (planned):\n"
            "  --run DIR          run folder (runs/<name>)\n"
            "  --out DIR          where to write the results (default: next to the slide)\n"
            "\n"
            "status: not built yet (issue 9)\n");
}

int ncmi_cmd_score(int argc, char **argv) { return cli_not_built(argc, argv, ncmi_help_score, 9); }
