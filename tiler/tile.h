/* Tile one slide: open it, choose the read level for the target µm/px,
 * segment tissue on a low-resolution image, lay the patch grid and write
 * the outputs (each to a temporary name, then renamed into place):
 *
 *   <out>/patches/<slide_id>.h5        coords + CLAM/TRIDENT attributes
 *   <out>/contours/<slide_id>.geojson  tissue polygons (QuPath)
 *   <out>/previews/<slide_id>.png      low-res image, tissue outline, grid
 *
 * The orchestration of a cohort (manifest, resume, shards, jobs, status
 * file, progress) lives in cli/cmd_tile.c. Prefix tl_. */
#ifndef NCMI_TILER_TILE_H
#define NCMI_TILER_TILE_H

#include <stddef.h>
#include <stdint.h>

#include "grid.h"
#include "seg.h"

typedef struct tl_tile_params {
    char preset[32];        /* name of the segmentation preset (recorded only; seg holds the values) */
    double target_mpp;      /* µm/px of the patches (0.5 ~ "20x") */
    int patch_size;         /* patch side at the target resolution (256) */
    int overlap;            /* at the target resolution (0) */
    tl_seg_params seg;      /* from tl_seg_preset (+ --seg) */
    tl_grid_kind grid;
    tl_contour_check check;
    double min_tissue;      /* global grid */
    double seg_mpp;         /* resolution of the segmentation image (8 µm/px) */
    int seg_max_side;       /* its longest side at most (coarser for huge slides) */
    int preview_max_side;   /* longest side of the preview PNG (2000); 0: no preview written */
    int keep_mask;          /* 1: return the tissue mask in tl_tile_result.seg_mask */
} tl_tile_params;

/* ncmi's defaults: 0.5 µm/px, 256 px, no overlap, the "default" preset,
 * contour grid with four_pt, min_tissue 0.25, segmentation at 8 µm/px (at
 * most 4096 px a side), previews at most 2000 px a side. */
void tl_tile_params_default(tl_tile_params *p);

/* The parameters that decide a slide's patches, as one JSON object (the
 * coords file's attribute `tiling`, copied into the features files, so that
 * ncmi score can tile a new slide exactly as the training slides were):
 *   {"preset":"default","target_mpp":0.5,"patch_size":256,"overlap":0,
 *    "seg":{"use_otsu":2,"sthresh":8,"mthresh":7,"close":4,"a_t":0.25,
 *           "a_h":1,"max_n_holes":8},
 *    "seg_mpp":8,"seg_max_side":4096,"grid":"contour",
 *    "contour_check":"four_pt","min_tissue":0.25}
 * Numbers are written with 17 significant digits (they read back exactly).
 * tl_tile_params_json: 0, or -1 when buf (n bytes) is too small.
 * tl_tile_params_from_json: the defaults overwritten by every key (all are
 * required: -1 with "tiling parameters: key 'x' missing or not a number"). */
int tl_tile_params_json(const tl_tile_params *p, char *buf, size_t n);
int tl_tile_params_from_json(const char *json, tl_tile_params *p);

typedef struct tl_tile_result {
    size_t n_patches;
    int n_contours;
    double mpp;               /* level-0 µm/px used */
    char mpp_source[64];
    int level;                /* pyramid level that the patches are read from */
    double level_mpp;         /* its µm/px */
    int64_t patch_size_level0;
    int64_t width, height;    /* level 0 */
    double tissue_area;       /* level-0 px^2 inside the tissue contours, holes excluded */
    double seg_mpp;           /* µm/px of the segmentation image actually used */
    int seg_w, seg_h;         /* its size */
    double seg_dsx, seg_dsy;  /* level-0 px per segmentation px */
    uint8_t *seg_mask;        /* keep_mask: the tissue mask [seg_h*seg_w] 0/255 (malloc'd, the caller
                                 frees it); NULL otherwise and on failure */
    int n_read_errors;        /* corrupt regions met (handle reopened, region white) */
    char note[512];           /* warnings + regions that could not be read ("" if none) */
    /* seconds: open, low-res read, segmentation, grid, GeoJSON + preview, coords file */
    double t_open, t_lowres, t_seg, t_grid, t_preview, t_write;
} tl_tile_result;

/* Tile one slide into out_dir (its sub-folders must exist). mpp_override
 * > 0 replaces the slide's resolution. 0 on success (also when no tissue
 * is found: n_patches 0 and a note), -1 with ncmi_error() naming the slide
 * (missing, unreadable, no resolution, ...). A corrupt tile met while
 * reading the low-resolution image does not fail the slide: the handle is
 * reopened, the region is painted white, counted and listed in r->note.
 * Thread-safe (one OpenSlide handle per call); tl_tile_init() first. */
int tl_tile_slide(const char *path, const char *slide_id, double mpp_override, const char *out_dir,
                  const tl_tile_params *p, tl_tile_result *r);

/* Initialise libvips once per process (thread-safe, idempotent). -1 on failure. */
int tl_tile_init(void);

/* Output paths: kind "patches" | "contours" | "previews". */
void tl_tile_output_path(char *buf, size_t n, const char *out_dir, const char *kind,
                         const char *slide_id);

/* 1 when the three outputs exist and the coords file opens (it is renamed
 * into place when complete, so it is complete), else 0. */
int tl_tile_outputs_complete(const char *out_dir, const char *slide_id);

/* Remove temporary leftovers of an interrupted run for this slide
 * (<name>.tmp*, .<name>.tmp*); with all != 0 also the final outputs.
 * Returns the number of files removed. */
int tl_tile_remove_outputs(const char *out_dir, const char *slide_id, int all);

/* Draw a preview: rgb (w x h) is modified in place. Tissue outlines and
 * holes from t, patch squares from coords (level-0 units, side patch0),
 * scale = image px per level-0 px. Exposed for tests. */
void tl_preview_draw(uint8_t *rgb, int w, int h, double sx, double sy, const tl_tissue *t,
                     const int64_t *coords, size_t n, int64_t patch0);

#endif
