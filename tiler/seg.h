/* Tissue segmentation: CLAM's algorithm (create_patches_fp.py /
 * WholeSlideImage.segmentTissue) reproduced so results are comparable, plus
 * ncmi's robust default. Pure functions on an RGB image: no slide access. */
#ifndef NCMI_TILER_SEG_H
#define NCMI_TILER_SEG_H

#include <stddef.h>
#include <stdint.h>

typedef struct tl_seg_params {
    int use_otsu;      /* 1: Otsu threshold on the blurred saturation instead of sthresh (CLAM);
                        * 2: Otsu, but never below sthresh (ncmi `default`: on a blank
                        * slide Otsu would split the glass noise and call most of it tissue) */
    int sthresh;       /* fixed saturation threshold (CLAM default 8) */
    int mthresh;       /* median blur kernel, odd (CLAM default 7) */
    int close;         /* morphological close kernel size, 0 = none (CLAM default 4) */
    double a_t;        /* min tissue area, in 512x512 level-0 patches (CLAM default 100) */
    double a_h;        /* min hole area, same units (CLAM default 16) */
    int max_n_holes;   /* holes kept per contour, largest first (CLAM default 8) */
} tl_seg_params;

/* Presets by name: "clam-default" (CLAM's defaults), "tcga", "biopsy"
 * (CLAM bwh_biopsy), "resection" (bwh_resection), "default" (ncmi's robust
 * default: Otsu, small a_t, which keeps small biopsies). -1 and a message
 * listing the names when unknown. */
int tl_seg_preset(const char *name, tl_seg_params *p);

/* A polygon in level-0 coordinates, closed implicitly (n vertices, xy[2n]). */
typedef struct tl_polygon {
    int n;
    double *xy;
} tl_polygon;

typedef struct tl_contour {
    tl_polygon outer;
    tl_polygon *holes;
    int n_holes;
    double area;       /* level-0 px^2: outer area minus kept holes */
} tl_contour;

typedef struct tl_tissue {
    tl_contour *c;
    int n;
} tl_tissue;

/* Segment rgb (w x h, 3 bytes per pixel; ds_x/ds_y level-0 px per image px)
 * and return tissue contours with their holes in level-0 coordinates, in
 * CLAM's order. 0, or -1 on a programming/memory error (no tissue is not
 * an error: n = 0). If mask_out is not NULL it receives the final binary
 * mask (w*h bytes, 0/255, malloc'd) for previews and tests. */
int tl_segment(const uint8_t *rgb, int w, int h, double ds_x, double ds_y, const tl_seg_params *p,
               tl_tissue *out, uint8_t **mask_out);
void tl_tissue_free(tl_tissue *t);

/* Building blocks (exposed for tests): saturation channel of HSV as
 * OpenCV computes it for 8-bit images; median blur with OpenCV's border
 * (replicate); Otsu threshold of an 8-bit image; binary close with an
 * all-ones k x k kernel (OpenCV anchor, border handling as cv2.morphologyEx). */
void tl_rgb_saturation(const uint8_t *rgb, int w, int h, uint8_t *sat);
void tl_median_blur(const uint8_t *in, int w, int h, int k, uint8_t *out);
int tl_otsu_threshold(const uint8_t *img, size_t n);
void tl_morph_close(const uint8_t *in, int w, int h, int k, uint8_t *out);

/* cv2.findContours(mask != 0, RETR_CCOMP, CHAIN_APPROX_NONE) (Suzuki-Abe
 * border following as OpenCV does it): contours in OpenCV's order, points
 * in image coordinates, hierarchy as OpenCV's (next, previous, first child,
 * parent; -1 = none). Exposed for tests and previews. 0, or -1 (memory). */
typedef struct tl_contour_set {
    int n;
    int *npts;   /* points per contour */
    int **pts;   /* npts[i] (x,y) pairs each */
    int *hier;   /* [4n] */
} tl_contour_set;
int tl_find_contours(const uint8_t *mask, int w, int h, tl_contour_set *out);
void tl_contour_set_free(tl_contour_set *s);

/* Point-in-polygon (even-odd; points on the boundary count as inside, as
 * cv2.pointPolygonTest >= 0). */
int tl_polygon_contains(const tl_polygon *p, double x, double y);
/* cv2.pointPolygonTest(contour, pt, measureDist=False): +1 inside, 0 on an
 * edge or vertex, -1 outside (OpenCV's crossing loop). */
int tl_polygon_test(const tl_polygon *p, double x, double y);
double tl_polygon_area(const tl_polygon *p);

/* Tissue as GeoJSON (FeatureCollection of Polygons with holes, level-0
 * pixel coordinates, QuPath-readable: "objectType": "annotation",
 * classification Tissue), written atomically. */
int tl_geojson_write(const char *path, const tl_tissue *t);

#endif
