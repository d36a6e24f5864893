/* Feature extraction of one slide: the patches of a coords file (ncmi tile)
 * read from the slide by R reader threads, each with its own OpenSlide
 * handle, in tile order (sorted by y, then x: OpenSlide's tile cache is per
 * handle), composited onto white, resized to the encoder's input with
 * Pillow's antialiased bilinear filter, normalised with ImageNet mean/std
 * into a ring of batch buffers; the encoder takes the batches in order while
 * the readers fill the next ones. Row i of the output `features` belongs to
 * row i of the coords file, whatever order the patches were read in.
 * Prefix fx_. */
#ifndef NCMI_FEATURES_EXTRACT_H
#define NCMI_FEATURES_EXTRACT_H

#include <stddef.h>
#include <stdint.h>

#include "encoder.h"

typedef struct fx_extract_params {
    int batch;   /* patches per encoder call */
    int readers; /* reader threads (>= 1) */
} fx_extract_params;

typedef struct fx_slide_job {
    const char *slide_id;
    const char *slide_path;   /* may be NULL: an error naming the coords file */
    const char *coords_path;  /* patches/<slide_id>.h5 */
    const char *out_path;     /* features/<slide_id>.h5 (temporary name + rename) */
    double mpp_override;      /* > 0: the manifest's mpp column */
} fx_slide_job;

typedef struct fx_extract_result {
    int64_t n_patches;
    int read_size;            /* patch side read at the pyramid level (before resizing) */
    int level;
    double target_mpp;
    int n_read_errors;        /* patches that could not be read (white, listed in note) */
    double seconds;           /* wall time of the slide */
    double t_read;            /* reader threads: reading + decoding (sum over threads) */
    double t_prep;            /* reader threads: resize + normalise (sum) */
    double t_encode;          /* encoder (wall) */
    double t_wait;            /* encoder waiting for patches (wall): > 0 means reading is the bottleneck */
    double t_write;           /* HDF5 output */
    char note[512];
} fx_extract_result;

/* Progress: called by the encoder thread after every batch. */
typedef void (*fx_progress_fn)(void *ctx, int64_t done, int64_t total);

/* Extract one slide. Checks before reading anything: the coords file opens;
 * the slide exists and is the one that was tiled (level-0 size and um/px
 * equal to those recorded in the coords file; else "the slide changed since
 * tiling"); the pyramid level recorded exists. A patch that cannot be read
 * (corrupt tile) is encoded as white and counted; the slide still succeeds
 * with a note. 0, or -1 with ncmi_error() naming the slide or file. */
int fx_extract_slide(fx_encoder *e, const fx_slide_job *j, const fx_extract_params *p, fx_progress_fn cb,
                     void *cb_ctx, fx_extract_result *r);

/* 1 when out_path is a complete features file made by this encoder with
 * these weights (attributes encoder and weights_sha256) for n_patches rows. */
int fx_features_complete(const char *out_path, const fx_encoder *e, int64_t n_patches);

#endif
