/* Features HDF5 files (design.md "Features file"):
 *
 *   features   [N, D] float32 (float16 / float64 accepted and converted)
 *   coords     [N, 2] int64 (int32 and float accepted, converted), optional
 *
 * Layouts accepted by the reader:
 *   - ncmi's own (features float32, coords int64, attributes encoder, ...);
 *   - CLAM `h5_files` (features float32 [N, D], coords int32 or int64 [N, 2],
 *     no attributes);
 *   - TRIDENT patch feature files (features [N, D], coords [N, 2] with
 *     attributes on the datasets), including a leading axis of 1
 *     ([1, N, D] / [1, N, 2]); a 1-D `features` [D] (a slide embedding) is
 *     read as one row.
 * Features must be finite (NaN/inf are an error naming the file and row).
 * Errors name the file and the dataset: "<path>: dataset 'features': ...".
 * Without libhdf5 at build time every function fails with a message saying so.
 */
#ifndef NCMI_FEATURES_H5_H
#define NCMI_FEATURES_H5_H

#include <stddef.h>
#include <stdint.h>

typedef struct features_h5 {
    int64_t n;       /* rows */
    int d;           /* feature dimension */
    float *features; /* [n*d] */
    int64_t *coords; /* [n*2] or NULL (absent, or not asked for) */
} features_h5;

/* Reads the whole file; coords are read when want_coords and present. 0 or -1. */
int features_h5_read(features_h5 *f, const char *path, int want_coords);
void features_h5_free(features_h5 *f);
/* Shape of `features` only (no data read). 0 or -1. */
int features_h5_shape(const char *path, int64_t *n, int *d);

/* Writes ncmi's layout (features float32 [n, d], coords int64 [n, 2] when
 * coords != NULL, string attribute `encoder` when encoder != NULL) to a
 * temporary name and renames it into place. 0 or -1. */
int features_h5_write(const char *path, const float *features, int64_t n, int d, const int64_t *coords,
                      const char *encoder);

/* The attributes ncmi's extractor writes on the file (design.md): NULL
 * strings and values <= 0 are left out. */
typedef struct features_h5_attrs {
    const char *encoder;        /* "resnet50_trunc" */
    const char *weights_sha256; /* of the encoder weights as loaded */
    const char *precision;      /* "fp32" | "bf16" | "fp16" */
    const char *slide_id;
    int patch_size;             /* patch side at the target resolution (coords file) */
    int input_size;             /* encoder input side after resizing (224) */
    double target_mpp;          /* um/px of the patches */
    int patch_level;            /* pyramid level the patches were read from */
    int64_t patch_size_level0;
    const char *weights_source; /* the weights file (absolute path) or "random:SEED" */
    const char *tiling;         /* JSON of the tiling parameters (the coords file's `tiling`) */
    double level0_mpp;          /* the slide's level-0 um/px */
} features_h5_attrs;

/* features_h5_write with all of features_h5_attrs as root attributes. */
int features_h5_write_attrs(const char *path, const float *features, int64_t n, int d, const int64_t *coords,
                            const features_h5_attrs *a);

/* A string attribute of the file's root group into buf (n bytes). 0, or -1
 * (no such attribute, not a string, unreadable file). */
int features_h5_attr_string(const char *path, const char *name, char *buf, size_t n);

/* Shape and every attribute ncmi writes, in one open (absent attributes:
 * "" / 0; CLAM and TRIDENT files have none of them). 0 or -1. */
typedef struct features_h5_info {
    int64_t n;
    int d;
    char encoder[64], weights_sha256[80], precision[16], name[256];
    char weights_source[1024], tiling[1024];
    int patch_size, input_size, patch_level;
    int64_t patch_size_level0;
    double target_mpp, level0_mpp;
} features_h5_info;
int features_h5_info_read(const char *path, features_h5_info *info);

/* 1 when ncmi was built with libhdf5. */
int features_h5_available(void);

#endif
