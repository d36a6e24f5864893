/* The coords file patches/<slide_id>.h5 (CLAM/TRIDENT compatible, design.md):
 * dataset `coords` int64 [N,2] (level-0 top-left x,y) with attributes
 * patch_size, patch_level, downsample [2], level_dim [2],
 * downsampled_level_dim [2], name, save_path, patch_size_level0,
 * target_mpp, target_magnification, level0_mpp, level0_magnification,
 * overlap, level0_width, level0_height, and `tiling` (the JSON of the
 * tiling parameters, tl_tile_params_json; absent in CLAM/TRIDENT files and
 * older ncmi ones). Written to a temporary name and renamed. */
#ifndef NCMI_TILER_COORDS_H5_H
#define NCMI_TILER_COORDS_H5_H

#include <stddef.h>
#include <stdint.h>

typedef struct tl_coords_attrs {
    const char *name;          /* slide id */
    const char *save_path;     /* the output folder */
    int patch_size;            /* at the target resolution */
    int patch_level;           /* pyramid level read */
    double downsample[2];      /* that level's downsample (x, y) */
    int64_t level_dim[2];      /* that level's width, height */
    int64_t downsampled_level_dim[2];
    int64_t patch_size_level0;
    double target_mpp;
    double target_magnification; /* 10 / target_mpp (documented convention) */
    double level0_mpp;
    double level0_magnification;
    int overlap;
    int64_t level0_width, level0_height;
    char tiling[1024];         /* JSON of the tiling parameters; "" = none (not written / absent) */
} tl_coords_attrs;

int tl_coords_h5_write(const char *path, const int64_t *coords, size_t n, const tl_coords_attrs *a);
/* Reads coords (malloc'd [n,2]) and the attributes ncmi needs; name is
 * copied into name_buf. Accepts CLAM and TRIDENT files (missing ncmi-only
 * attributes are left 0). -1 with "<path>: ..." on error. */
int tl_coords_h5_read(const char *path, int64_t **coords, size_t *n, tl_coords_attrs *a,
                      char *name_buf, size_t name_n);

#endif
