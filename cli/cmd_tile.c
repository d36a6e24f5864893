/* ncmi tile: not built yet (issue 4); the help says what it will do. */
#include "cli.h"

void ncmi_help_tile(FILE *f)
{
    fprintf(f,
            "usage: ncmi tile --manifest CSV --out DIR [--config FILE] [--set key=value ...]\n"
            "\n"
            "Cut each slide of a manifest into a grid of tissue patches at an exact physical\n"
            "resolution (microns per pixel): tissue segmentation, patch grid, preview images.\n"
            "Writes DIR/patches/<slide_id>.h5 (CLAM-compatible coords + attributes).\n"
            "\n"
            "options (planned):\n"
            "  --manifest CSV     slide list (slide_id,label[,path,split,...])\n"
            "  --out DIR          output folder\n"
            "  --config FILE      tiling config (YAML)\n"
            "  --set key=value    override one config key (repeatable)\n"
            "\n"
            "status: not built yet (issue 4)\n");
}

int ncmi_cmd_tile(int argc, char **argv) { return cli_not_built(argc, argv, ncmi_help_tile, 4); }
