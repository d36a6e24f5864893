/* Patch grids over segmented tissue, in level-0 coordinates. */
#ifndef NCMI_TILER_GRID_H
#define NCMI_TILER_GRID_H

#include <stddef.h>
#include <stdint.h>

#include "seg.h"

typedef enum tl_grid_kind {
    TL_GRID_CONTOUR = 0, /* CLAM: a grid per contour anchored at its bounding box */
    TL_GRID_GLOBAL = 1,  /* TRIDENT: one grid from (0,0); keep by tissue fraction */
} tl_grid_kind;

typedef enum tl_contour_check {
    TL_CHECK_FOUR_PT = 0,      /* any of centre +- patch/4 inside (CLAM default) */
    TL_CHECK_FOUR_PT_HARD = 1, /* all four inside */
    TL_CHECK_CENTER = 2,       /* centre inside */
} tl_contour_check;

typedef struct tl_grid_params {
    tl_grid_kind kind;
    tl_contour_check check;
    int64_t patch_level0;   /* patch side in level-0 px (patch_size * target_mpp / level0_mpp, rounded) */
    int64_t step_level0;    /* stride in level-0 px (patch minus overlap) */
    int64_t slide_w, slide_h; /* level-0 size */
    int use_padding;        /* CLAM use_padding: patches may run past the slide edge */
    double min_tissue;      /* global grid: minimum tissue fraction of a patch (e.g. 0.25) */
} tl_grid_params;

/* Coordinates (top-left x,y in level-0 px), [n,2] malloc'd in *coords.
 * Contour grid: CLAM's order (contour by contour, x-major within a
 * contour), patches whose check point(s) fall in a kept hole rejected,
 * duplicates across contours removed. Global grid: row-major, a patch kept
 * when the fraction of its area inside tissue (minus holes), estimated on
 * a fine sub-grid, is >= min_tissue. Patches never extend past the slide
 * unless use_padding. */
int tl_grid(const tl_tissue *t, const tl_grid_params *p, int64_t **coords, size_t *n);

#endif
