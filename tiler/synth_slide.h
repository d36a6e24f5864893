/* Synthetic whole-slide images for tests and benchmarks: a pyramidal tiled
 * JPEG TIFF (libvips tiffsave, tile 256, pyramid, Q 90) that OpenSlide
 * reads as "generic-tiff", with tissue-like pink/purple textured pieces on
 * a white background, holes in them, and a known resolution
 * (tiff.XResolution in pixels per centimetre, ResolutionUnit centimeter).
 *
 * Tissue geometry is analytic (unions of rotated ellipses minus hole
 * ellipses, seeded), so the ground truth is exact: a level-0 pixel (x, y)
 * is tissue iff its centre (x+0.5, y+0.5) lies in a piece and in no hole.
 * The image is produced row-span by row-span through a libvips generate
 * callback, so writing a 40000x30000 slide never holds the image in memory.
 * Prefix tl_synth_. */
#ifndef NCMI_TILER_SYNTH_SLIDE_H
#define NCMI_TILER_SYNTH_SLIDE_H

#include <stddef.h>
#include <stdint.h>

typedef struct tl_synth_params {
    int64_t width, height;  /* level-0 pixels (each <= 10,000,000, libvips' limit) */
    double mpp;             /* µm/px written as tiff.XResolution/YResolution (cm) */
    uint64_t seed;          /* geometry and texture */
    int n_pieces;           /* tissue pieces (default 3) */
    int n_holes;            /* holes per piece (default 2) */
    double tissue_scale;    /* size of the pieces relative to the default (1.0) */
    int quality;            /* JPEG quality (default 90) */
    int tile;               /* TIFF tile size (default 256) */
    int no_pyramid;         /* 1: level 0 only (a single-level tiled TIFF) */
    int no_resolution;      /* 1: strip XResolution/YResolution/ResolutionUnit from every IFD */
    int corrupt_tile;       /* 1: overwrite the JPEG header of one level-0 tile (decoding it fails) */
    int64_t corrupt_x, corrupt_y; /* level-0 point inside the tile to corrupt; < 0: the tile
                                     with the most tissue (nearest the centre on ties) */
    int mask_max_side;      /* longer side of the truth mask (default 1024) */
    double tumour_um;       /* > 0: a "tumour" disk of this radius (µm) with its own texture
                               (purpler, denser and larger nuclei) inside piece tumour_piece;
                               0: none (default) */
    int tumour_piece;       /* the piece holding the tumour (default 0) */
    int n_pen;              /* pen-mark strokes drawn over glass and tissue (default 0): smooth
                               curves of ink (green, blue, black or red) 40-120 µm wide, their
                               own random stream (the rest of the slide is unchanged); not tissue
                               in the truth */
    const struct tl_synth_texture *texture; /* NULL: the generated texture (default); else
                               tissue and tumour pixels are sampled from a real slide's
                               tissue (tl_synth_texture_load); the caller keeps it alive */
} tl_synth_params;

/* Texture taken from a real H&E slide: an RGB image at the synthetic
 * slide's µm/px and two square windows of it with the most tissue, one for
 * normal tissue and one (recoloured: darker, purpler) for the tumour. Tissue
 * pixels sample a window mirrored at its edges, with an offset per piece. */
typedef struct tl_synth_texture {
    int w, h;
    uint8_t *rgb;        /* [h*w*3] */
    int win;             /* window side (px) */
    int nx, ny;          /* normal tissue window, top-left */
    int tx, ty;          /* tumour window, top-left */
    double tissue[2];    /* tissue fraction of the two windows */
} tl_synth_texture;

/* Read an image that libvips opens (an .svs through OpenSlide, a TIFF, a
 * PNG/JPEG), flatten alpha onto white, resample from src_mpp (0: the file's
 * own resolution; an error when it has none) to dst_mpp, and choose the
 * windows. 0, or -1 with "<path>: ..." in ncmi_error() (also when the image
 * holds too little tissue for two windows). */
int tl_synth_texture_load(const char *path, double src_mpp, double dst_mpp, tl_synth_texture *t);
void tl_synth_texture_free(tl_synth_texture *t);

/* Defaults: 4000x3000 at 0.5 µm/px, seed 1, 3 pieces with 2 holes each,
 * scale 1, Q 90, tile 256, pyramid, resolution written, no corruption,
 * mask 1024. */
void tl_synth_params_default(tl_synth_params *p);

typedef struct tl_synth_truth {
    int64_t width, height;
    double mpp;                  /* as written (also when no_resolution: the intended value) */
    double tissue_area;          /* exact tissue area, level-0 px^2 (a pixel count) */
    double tissue_fraction;      /* tissue_area / (width*height) */
    int mask_w, mask_h;          /* ceil(width/mask_ds), ceil(height/mask_ds) */
    int mask_ds;                 /* level-0 px per mask px (integer) */
    float *coverage;             /* [mask_h*mask_w] exact tissue fraction of each mask cell (edge
                                    cells: fraction of the part inside the slide) */
    uint8_t *mask;               /* [mask_h*mask_w] 255 where coverage >= 0.5, else 0 */
    int corrupt;                 /* 1 when a tile was corrupted */
    int64_t corrupt_rect[4];     /* level-0 x, y, w, h of the corrupted tile (clipped to the slide) */
    double corrupt_tile_tissue;  /* tissue fraction of that tile */
    int n_pieces, n_holes_total;
    int has_tumour;              /* tumour_um > 0 */
    double tumour_cx, tumour_cy; /* its centre, level-0 px (tumour texture where the disk
                                    meets tissue) */
    double tumour_r;             /* its radius, level-0 px */
    double tumour_area;          /* tumour pixels (disk and tissue), level-0 px^2 */
    int n_pen;                   /* pen strokes drawn */
    int64_t pen_rect[4];         /* bounding box of all pen ink (x, y, w, h; zeros without) */
} tl_synth_truth;

/* 1 when level-0 point (x, y) lies in the tumour disk of t (0 without one). */
int tl_synth_in_tumour(const tl_synth_truth *t, double x, double y);

void tl_synth_truth_free(tl_synth_truth *t);

/* Write the slide to `path` (via a temporary name and a rename). truth may
 * be NULL; otherwise it is filled (caller frees with tl_synth_truth_free).
 * 0, or -1 with "<path>: ..." in ncmi_error(). Needs libvips (-1 without). */
int tl_synth_slide_write(const char *path, const tl_synth_params *p, tl_synth_truth *truth);

/* Ground truth only (no file): same geometry as tl_synth_slide_write for the
 * same params. 0 or -1. */
int tl_synth_truth_compute(const tl_synth_params *p, tl_synth_truth *truth);

/* The RGB colour of level-0 pixel (x, y) exactly as generated before JPEG
 * compression (rgb[3]); is_tissue receives the truth at that pixel. For
 * tests of the writer and readers. */
int tl_synth_pixel(const tl_synth_params *p, int64_t x, int64_t y, uint8_t rgb[3], int *is_tissue);

#endif
