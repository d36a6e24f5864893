/* ncmi score: what one scored slide reports (cli/cmd_score.c computes it,
 * cli/score_report.c writes it as the summary on stdout, the JSON file and
 * the HTML page). docs/score.md describes the outputs. */
#ifndef NCMI_CLI_SCORE_H
#define NCMI_CLI_SCORE_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define SC_MAX_FLAGS 24

typedef struct sc_patch {
    int64_t x, y;        /* level-0 top-left */
    int64_t size0;       /* side in level-0 pixels */
    float attn;          /* attention weight (the head's, see docs/score.md for heads with several maps) */
    float rank01;        /* rank-normalised in [0, 1] (the heatmap's value) */
    char file[400];      /* PNG, relative to the output folder */
    const uint8_t *jpg;  /* for the page */
    size_t jpg_len;
} sc_patch;

typedef struct sc_flag {
    int warn;            /* 0: a check that passed, 1: a warning */
    char text[600];
} sc_flag;

typedef struct sc_report {
    /* slide */
    const char *slide_id, *slide_path;
    int64_t width, height;
    double mpp;
    char mpp_source[64];
    int level;           /* pyramid level the patches were read from */
    /* prediction */
    int C;
    char **classes;
    int pred;
    const double *prob;  /* [C] */
    const char *rule;        /* "linear head", "NCMI-CC", "NCMI-LP", "NCMI-learned" */
    const char *rule_detail; /* one sentence for a person */
    /* quality */
    double tissue_mm2;
    int n_contours;
    int64_t n_patches;
    int read_errors;
    sc_flag flags[SC_MAX_FLAGS];
    int n_flags;
    /* attention */
    const char *attn_rule;
    sc_patch *top;
    int n_top;
    /* images for the page (JPEG) */
    const uint8_t *thumb_jpg, *heat_jpg;
    size_t thumb_len, heat_len;
    /* provenance (borrowed JSON objects) */
    json_t *model;       /* run, config and weights hashes, validation metrics */
    json_t *tiling;      /* tiling parameters used */
    json_t *features;    /* encoder, weights, precision, device */
    /* seconds */
    double t_load, t_tile, t_features, t_head, t_outputs, t_total;
    /* output names, relative to the output folder */
    char json_name[300], heatmap_name[300], html_name[300], topk_dir[300];
} sc_report;

/* The machine-readable report (<slide_id>.score.json). */
json_t *sc_report_json(const sc_report *r);
/* The page for a person (<slide_id>.html): one self-contained file, images
 * embedded; written to path (the caller renames it into place). 0 or -1. */
int sc_report_html(const sc_report *r, const char *path);
/* The readable summary (stdout). */
void sc_report_print(const sc_report *r, FILE *f);
/* Add a quality line (ok or warning), printf-style. */
void sc_report_flag(sc_report *r, int warn, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#endif
