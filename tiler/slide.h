/* Slides through OpenSlide: physical resolution, pyramid levels, region
 * reads that survive a corrupt tile, and a bounded-memory low-resolution
 * image for tissue segmentation. Prefix tl_. */
#ifndef NCMI_TILER_SLIDE_H
#define NCMI_TILER_SLIDE_H

#include <stddef.h>
#include <stdint.h>

#define TL_MAX_LEVELS 32

typedef struct tl_slide {
    char *path;
    void *osr;                 /* openslide_t * (NULL after a failed reopen) */
    int n_levels;
    int64_t w[TL_MAX_LEVELS], h[TL_MAX_LEVELS]; /* level dimensions */
    double ds[TL_MAX_LEVELS];  /* level downsample (OpenSlide's) */
    double mpp_x, mpp_y;       /* level-0 µm/px */
    char mpp_source[64];       /* property used ("openslide.mpp-x", "tiff.XResolution", "override") */
    char vendor[64];
    int reopen_count;          /* times the handle was reopened after a read error */
} tl_slide;

/* Open a slide. mpp_override > 0 replaces the slide's own resolution (the
 * manifest's `mpp` column or --slide-mpp). Errors (-1, ncmi_error()):
 * missing file, zero-byte file, a format OpenSlide does not read, an
 * OpenSlide error, no usable resolution ("<path>: no resolution metadata
 * (openslide.mpp-x, aperio.MPP, tiff.XResolution ...): give the manifest's
 * mpp column or --slide-mpp"), an implausible one (outside [0.05, 20]
 * µm/px, e.g. a 72-dpi default, with the value and its source). */
int tl_slide_open(tl_slide *s, const char *path, double mpp_override);
void tl_slide_close(tl_slide *s);

/* µm/px from a property lookup function (testable without a slide), in the
 * order of tiling.md: openslide.mpp-x/-y, aperio.MPP, openslide.mirax.MPP,
 * hamamatsu.XResolution, then tiff.XResolution + tiff.ResolutionUnit
 * (centimeter: 1e4/x, inch: 25400/x; no unit: not used). 0 when found and
 * plausible; -1 with the reason in why otherwise. */
typedef const char *(*tl_prop_fn)(void *ctx, const char *name);
int tl_mpp_from_properties(tl_prop_fn get, void *ctx, double *mpp_x, double *mpp_y,
                           char *source, size_t source_n, char *why, size_t why_n);

/* The pyramid level to read for a target resolution: the lowest-resolution
 * level whose µm/px is <= target (x 1.001 for rounding), i.e. never
 * upsample; level 0 when even level 0 is coarser than the target (the
 * caller then upsamples and says so). */
int tl_slide_best_level(const tl_slide *s, double target_mpp);

/* Read a region as RGB (alpha composited onto white), x/y in level-0
 * pixels, w/h at `level`. On an OpenSlide error the handle is closed and
 * reopened (errors latch on a handle) and -1 is returned with the region
 * in the message; later reads work again. rgb: w*h*3 bytes. */
int tl_slide_read_rgb(tl_slide *s, int64_t x, int64_t y, int level, int w, int h, uint8_t *rgb);

/* A low-resolution RGB image of the whole slide for segmentation, at about
 * `target_mpp` µm/px (e.g. 8-16) but never more than max_side pixels on
 * its longer side: read from the closest level at or below that
 * resolution in strips and box-averaged down, so memory stays bounded
 * whatever the slide size. *rgb is malloc'd (w*h*3); *ds_x, *ds_y = level-0
 * pixels per image pixel. */
int tl_slide_lowres(tl_slide *s, double target_mpp, int max_side, uint8_t **rgb, int *w, int *h,
                    double *ds_x, double *ds_y);

#endif
