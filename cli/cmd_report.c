/* ncmi report: not built yet (issue 10); the help says what it will do. */
#include "cli.h"

void ncmi_help_report(FILE *f)
{
    fprintf(f,
            "usage: ncmi report RUN_DIR... [--out FILE]\n"
            "\n"
            "Collect the metrics of several runs into tables (markdown/CSV), e.g. the\n"
            "paper's Table III, and an HTML report.\n"
            "\n"
            "options (planned):\n"
            "  --out FILE         where to write the report (default: stdout)\n"
            "\n"
            "status: not built yet (issue 10)\n");
}

int ncmi_cmd_report(int argc, char **argv) { return cli_not_built(argc, argv, ncmi_help_report, 10); }
