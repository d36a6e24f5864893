/* Tissue segmentation: CLAM's WholeSlideImage.segmentTissue reproduced
 * step by step on an RGB image, with the OpenCV 4.x operations it relies on
 * re-implemented to give the same numbers:
 *
 *   cv2.cvtColor(RGB2HSV)[..., 1]   tl_rgb_saturation   (8-bit fixed-point formula)
 *   cv2.medianBlur(k)               tl_median_blur      (exact median, replicated border)
 *   cv2.threshold(BINARY[+OTSU])    tl_otsu_threshold   (OpenCV's Otsu loop, quirks included)
 *   cv2.morphologyEx(MORPH_CLOSE)   tl_morph_close      (all-ones kernel, anchor k/2, no reflection)
 *   cv2.findContours(RETR_CCOMP, CHAIN_APPROX_NONE)     (Suzuki-Abe border following as
 *                                                        OpenCV implements it: same points,
 *                                                        same start pixel, same order)
 *   cv2.contourArea                 shoelace on the point sequence
 *
 * then CLAM's _filter_contours (area minus holes > a_t, holes sorted by area,
 * max_n_holes largest kept if > a_h, thresholds in 512x512 level-0 patch
 * units scaled by int(512^2 / (ds_x ds_y))) and scaleContourDim (int32
 * truncation of x*ds_x, y*ds_y). tests/reference/clam_reference.py is the
 * Python/OpenCV peer these are tested against. */
#include "seg.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <float.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../nn/error.h"
#include "../nn/tmpfile.h"

/* ---------------------------------------------------------------- presets */

typedef struct {
    const char *name;
    tl_seg_params p;
} seg_preset;

/* CLAM presets (presets/<name>.csv and create_patches_fp.py defaults) and ncmi's
 * `default`.
 *
 * ncmi `default`: CLAM thresholds areas in units of a 512x512 level-0 patch
 * (262,144 level-0 px^2). With a_t = 100 (CLAM's default) a piece of tissue
 * must exceed 26.2 Mpx^2, i.e. 6.6 mm^2 at 0.5 um/px or 1.6 mm^2 at 0.25 um/px:
 * the whole 2220x2967 px cmu-1-small-region (1.1 x 1.5 mm at 0.5 um/px,
 * 6.6 Mpx^2 in all) is below it, so CLAM keeps nothing (CLAM #27). A needle
 * biopsy fragment can be a fraction of a mm^2. ncmi's default keeps any
 * fragment larger than a quarter of a 512x512 patch (a_t = 0.25, i.e. a
 * 256x256 level-0 area: 0.016 mm^2 at 0.5 um/px, one patch at the usual
 * 256-px size) and drops specks and dust below that. Holes matter only when a
 * patch centre falls in them, so holes smaller than one 512x512 patch (a_h = 1)
 * are ignored. The saturation threshold is Otsu's (adapts to faint or
 * strongly stained slides instead of CLAM's fixed 8) but never below 8
 * (use_otsu = 2): on a blank or nearly blank slide pure Otsu splits the
 * glass noise and calls most of the slide tissue. 7x7 median and 4x4 close
 * as in CLAM. */
static const seg_preset presets[] = {
    {"default", {2, 8, 7, 4, 0.25, 1.0, 8}},
    {"clam-default", {0, 8, 7, 4, 100.0, 16.0, 8}},
    {"tcga", {0, 8, 7, 4, 16.0, 4.0, 8}},
    {"biopsy", {0, 15, 11, 2, 1.0, 1.0, 2}},
    {"resection", {0, 15, 11, 4, 100.0, 16.0, 8}},
    {"bwh_biopsy", {0, 15, 11, 2, 1.0, 1.0, 2}},
    {"bwh_resection", {0, 15, 11, 4, 100.0, 16.0, 8}},
};

int tl_seg_preset(const char *name, tl_seg_params *p)
{
    for (size_t i = 0; i < sizeof presets / sizeof presets[0]; i++)
        if (name && strcmp(name, presets[i].name) == 0) {
            *p = presets[i].p;
            return 0;
        }
    return ncmi_error_set("unknown segmentation preset '%s' (known: default, clam-default, tcga, "
                          "biopsy, resection)",
                          name ? name : "(null)");
}

/* --------------------------------------------------------- building blocks */

void tl_rgb_saturation(const uint8_t *rgb, int w, int h, uint8_t *sat)
{
    /* OpenCV RGB2HSV_b: s = (diff * sdiv[v] + 2^11) >> 12, sdiv[v] = round(255 * 2^12 / v) */
    int sdiv[256];
    sdiv[0] = 0;
    for (int i = 1; i < 256; i++) sdiv[i] = (int)lrint((double)(255 << 12) / i);
    size_t n = (size_t)w * (size_t)h;
    for (size_t i = 0; i < n; i++) {
        int r = rgb[3 * i], g = rgb[3 * i + 1], b = rgb[3 * i + 2];
        int v = r > g ? r : g;
        v = v > b ? v : b;
        int m = r < g ? r : g;
        m = m < b ? m : b;
        sat[i] = (uint8_t)(((v - m) * sdiv[v] + (1 << 11)) >> 12);
    }
}

static inline int clampi(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

void tl_median_blur(const uint8_t *in, int w, int h, int k, uint8_t *out)
{
    if (k <= 1 || w <= 0 || h <= 0) {
        memmove(out, in, (size_t)w * (size_t)h);
        return;
    }
    /* exact median of the k x k window, border replicated (BORDER_REPLICATE);
     * a sliding histogram per row with a tracked median */
    int r = k / 2, half = (k * k - 1) / 2;
    uint8_t *dst = out;
    uint8_t *tmp = NULL;
    if (in == out) {
        tmp = malloc((size_t)w * (size_t)h);
        NCMI_CHECK(tmp != NULL, "tl_median_blur: out of memory");
        dst = tmp;
    }
    for (int y = 0; y < h; y++) {
        int hist[256] = {0};
        for (int dy = -r; dy <= r; dy++) {
            const uint8_t *row = in + (size_t)clampi(y + dy, 0, h - 1) * w;
            for (int dx = -r; dx <= r; dx++) hist[row[clampi(dx, 0, w - 1)]]++;
        }
        int med = 0, lt = 0;
        while (lt + hist[med] <= half) lt += hist[med++];
        dst[(size_t)y * w] = (uint8_t)med;
        for (int x = 1; x < w; x++) {
            int xo = clampi(x - r - 1, 0, w - 1), xi = clampi(x + r, 0, w - 1);
            for (int dy = -r; dy <= r; dy++) {
                const uint8_t *row = in + (size_t)clampi(y + dy, 0, h - 1) * w;
                int vo = row[xo], vi = row[xi];
                hist[vo]--;
                if (vo < med) lt--;
                hist[vi]++;
                if (vi < med) lt++;
            }
            while (lt > half) lt -= hist[--med];
            while (lt + hist[med] <= half) lt += hist[med++];
            dst[(size_t)y * w + x] = (uint8_t)med;
        }
    }
    if (tmp) {
        memcpy(out, tmp, (size_t)w * (size_t)h);
        free(tmp);
    }
}

int tl_otsu_threshold(const uint8_t *img, size_t n)
{
    /* OpenCV getThreshVal_Otsu_8u, the same loop (including its handling of
     * bins skipped by the FLT_EPSILON test) so ties and edge cases agree */
    size_t hist[256] = {0};
    for (size_t i = 0; i < n; i++) hist[img[i]]++;
    if (n == 0) return 0;
    double mu = 0, scale = 1. / (double)n;
    for (int i = 0; i < 256; i++) mu += i * (double)hist[i];
    mu *= scale;
    double mu1 = 0, q1 = 0, max_sigma = 0, max_val = 0;
    for (int i = 0; i < 256; i++) {
        double p_i = (double)hist[i] * scale;
        mu1 *= q1;
        q1 += p_i;
        double q2 = 1. - q1;
        if (fmin(q1, q2) < FLT_EPSILON || fmax(q1, q2) > 1. - FLT_EPSILON) continue;
        mu1 = (mu1 + i * p_i) / q1;
        double mu2 = (mu - q1 * mu1) / q2;
        double sigma = q1 * q2 * (mu1 - mu2) * (mu1 - mu2);
        if (sigma > max_sigma) {
            max_sigma = sigma;
            max_val = i;
        }
    }
    return (int)max_val;
}

/* dst(x) = max/min over src(x + j - a), j in [0, k), a = k/2: OpenCV's
 * rectangular kernel with its default anchor, not reflected for dilation;
 * pixels outside the image are ignored (morphologyDefaultBorderValue). */
static void morph_1d(const uint8_t *in, uint8_t *out, int w, int h, int k, int vertical, int is_max)
{
    int a = k / 2;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            int best = is_max ? 0 : 255;
            int c = vertical ? y : x, len = vertical ? h : w;
            int lo = c - a < 0 ? 0 : c - a, hi = c - a + k - 1 >= len ? len - 1 : c - a + k - 1;
            for (int j = lo; j <= hi; j++) {
                int v = vertical ? in[(size_t)j * w + x] : in[(size_t)y * w + j];
                if (is_max ? v > best : v < best) best = v;
            }
            out[(size_t)y * w + x] = (uint8_t)best;
        }
}

void tl_morph_close(const uint8_t *in, int w, int h, int k, uint8_t *out)
{
    size_t n = (size_t)w * (size_t)h;
    if (k <= 1 || n == 0) {
        memmove(out, in, n);
        return;
    }
    uint8_t *t = malloc(n);
    NCMI_CHECK(t != NULL, "tl_morph_close: out of memory");
    morph_1d(in, t, w, h, k, 0, 1);
    morph_1d(t, out, w, h, k, 1, 1); /* dilated */
    morph_1d(out, t, w, h, k, 0, 0);
    morph_1d(t, out, w, h, k, 1, 0); /* eroded */
    free(t);
}

int tl_polygon_test(const tl_polygon *p, double px, double py)
{
    int n = p->n, counter = 0;
    if (n <= 0) return -1;
    double vx = p->xy[2 * (n - 1)], vy = p->xy[2 * (n - 1) + 1];
    for (int i = 0; i < n; i++) {
        double v0x = vx, v0y = vy;
        vx = p->xy[2 * i];
        vy = p->xy[2 * i + 1];
        if ((v0y <= py && vy <= py) || (v0y > py && vy > py) || (v0x < px && vx < px)) {
            if (py == vy &&
                (px == vx || (py == v0y && ((v0x <= px && px <= vx) || (vx <= px && px <= v0x)))))
                return 0;
            continue;
        }
        double dist = (py - v0y) * (vx - v0x) - (px - v0x) * (vy - v0y);
        if (dist == 0) return 0;
        if (vy < v0y) dist = -dist;
        counter += dist > 0;
    }
    return counter % 2 == 0 ? -1 : 1;
}

int tl_polygon_contains(const tl_polygon *p, double x, double y) { return tl_polygon_test(p, x, y) >= 0; }

double tl_polygon_area(const tl_polygon *p)
{
    if (p->n <= 0) return 0;
    double a = 0, px = p->xy[2 * (p->n - 1)], py = p->xy[2 * (p->n - 1) + 1];
    for (int i = 0; i < p->n; i++) {
        double x = p->xy[2 * i], y = p->xy[2 * i + 1];
        a += px * y - py * x;
        px = x;
        py = y;
    }
    return fabs(a * 0.5);
}

/* ------------------------------------------------------ border following */

typedef struct {
    int *pts; /* x,y pairs in image coordinates */
    int n, cap;
    int is_hole;
    int parent; /* discovery index of the parent, -1 = the frame */
} raw_contour;

typedef struct {
    raw_contour *c;
    int n, cap;
} raw_list;

static int push_pt(raw_contour *c, int x, int y)
{
    if (c->n == c->cap) {
        int cap = c->cap ? c->cap * 2 : 64;
        int *p = realloc(c->pts, (size_t)cap * 2 * sizeof(int));
        if (!p) return -1;
        c->pts = p;
        c->cap = cap;
    }
    c->pts[2 * c->n] = x;
    c->pts[2 * c->n + 1] = y;
    c->n++;
    return 0;
}

static void raw_list_free(raw_list *l)
{
    for (int i = 0; i < l->n; i++) free(l->c[i].pts);
    free(l->c);
    l->c = NULL;
    l->n = l->cap = 0;
}

/* icvFetchContourEx with CHAIN_APPROX_NONE on an int label image (labels are
 * unique ints instead of OpenCV's 7-bit cycling values, which only matters
 * to OpenCV's disambiguation of reused labels). i0: start pixel index, (x,y)
 * its coordinates in the padded image. */
static int trace_border(int *img, int W, int i0, int x, int y, int is_hole, int label, raw_contour *c)
{
    static const int cdx[8] = {1, 1, 0, -1, -1, -1, 0, 1};
    static const int cdy[8] = {0, -1, -1, -1, 0, 1, 1, 1};
    int deltas[16];
    for (int s = 0; s < 16; s++) deltas[s] = cdx[s & 7] + cdy[s & 7] * W;
    int s, s_end, i1, i3, i4 = 0;
    s_end = s = is_hole ? 0 : 4;
    do {
        s = (s - 1) & 7;
        i1 = i0 + deltas[s];
    } while (img[i1] == 0 && s != s_end);
    if (s == s_end) { /* single pixel */
        img[i0] = -label;
        return push_pt(c, x - 1, y - 1);
    }
    i3 = i0;
    for (;;) {
        s_end = s;
        while (s < 15) {
            i4 = i3 + deltas[++s];
            if (img[i4] != 0) break;
        }
        s &= 7;
        if ((unsigned)(s - 1) < (unsigned)s_end)
            img[i3] = -label; /* the east neighbour was examined and is 0 */
        else if (img[i3] == 1)
            img[i3] = label;
        if (push_pt(c, x - 1, y - 1)) return -1;
        x += cdx[s];
        y += cdy[s];
        if (i4 == i0 && i3 == i1) break;
        i3 = i4;
        s = (s + 4) & 7;
    }
    return 0;
}

/* cv2.findContours(mask != 0, RETR_CCOMP, CHAIN_APPROX_NONE): contours in
 * discovery (raster) order with parents; the caller orders them as OpenCV
 * outputs them. */
static int find_contours_ccomp(const uint8_t *mask, int w, int h, raw_list *out)
{
    memset(out, 0, sizeof *out);
    int W = w + 2, H = h + 2;
    if ((size_t)W * (size_t)H > (size_t)INT32_MAX / 2)
        return ncmi_error_set("segmentation: a %dx%d image is too large for contour tracing", w, h);
    int *img = calloc((size_t)W * (size_t)H, sizeof(int));
    int *owner = NULL; /* label -> discovery index */
    int n_owner = 0, cap_owner = 0;
    if (!img) return ncmi_error_set("segmentation: out of memory for a %dx%d contour image", w, h);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) img[(size_t)(y + 1) * W + x + 1] = mask[(size_t)y * w + x] != 0;
    int nbd = 2;
    for (int y = 1; y < H - 1; y++) {
        int *row = img + (size_t)y * W;
        int prev = 0, lnbd_x = 0;
        for (int x = 1; x < W - 1; x++) {
            int p = row[x];
            if (p == prev) continue;
            int is_hole = 0;
            if (!(prev == 0 && p == 1)) {
                if (p != 0 || prev < 1) goto resume;
                if (prev & -2) lnbd_x = x - 1;
                is_hole = 1;
            }
            {
                int parent = -1;
                if (is_hole && lnbd_x > 0) {
                    int lv = row[lnbd_x];
                    lv = lv < 0 ? -lv : lv;
                    int pi = (lv >= 2 && lv - 2 < n_owner) ? owner[lv - 2] : -1;
                    if (pi >= 0 && out->c[pi].is_hole == is_hole) pi = out->c[pi].parent;
                    parent = pi;
                }
                lnbd_x = x - is_hole;
                if (out->n == out->cap) {
                    int cap = out->cap ? out->cap * 2 : 32;
                    raw_contour *nc = realloc(out->c, (size_t)cap * sizeof *nc);
                    if (!nc) goto oom;
                    out->c = nc;
                    out->cap = cap;
                }
                if (n_owner == cap_owner) {
                    int cap = cap_owner ? cap_owner * 2 : 32;
                    int *no = realloc(owner, (size_t)cap * sizeof *no);
                    if (!no) goto oom;
                    owner = no;
                    cap_owner = cap;
                }
                raw_contour *c = &out->c[out->n++];
                memset(c, 0, sizeof *c);
                c->is_hole = is_hole;
                c->parent = parent;
                owner[n_owner++] = out->n - 1;
                int label = nbd++;
                if (trace_border(img, W, y * W + x - is_hole, x - is_hole, y, is_hole, label, c)) goto oom;
                prev = row[x];
                continue;
            }
        resume:
            prev = p;
            if (prev & -2) lnbd_x = x;
        }
    }
    free(img);
    free(owner);
    return 0;
oom:
    free(img);
    free(owner);
    raw_list_free(out);
    return ncmi_error_set("segmentation: out of memory while tracing contours");
}

/* OpenCV's output order: a pre-order walk of the contour tree where every
 * child list is in reverse discovery order. With RETR_CCOMP the tree has two
 * levels (outer borders, their holes). order[] receives discovery indices. */
static void opencv_order(const raw_list *l, int *order)
{
    int k = 0;
    for (int i = l->n - 1; i >= 0; i--) {
        if (l->c[i].parent != -1 || l->c[i].is_hole) continue;
        order[k++] = i;
        for (int j = l->n - 1; j > i; j--)
            if (l->c[j].parent == i) order[k++] = j;
    }
    /* holes whose parent lookup failed (cannot happen with unique labels)
     * would be top-level in OpenCV; keep them so every contour appears */
    for (int i = l->n - 1; i >= 0; i--)
        if (l->c[i].parent == -1 && l->c[i].is_hole) order[k++] = i;
}

static double raw_area(const raw_contour *c)
{
    if (c->n <= 0) return 0;
    double a = 0, px = c->pts[2 * (c->n - 1)], py = c->pts[2 * (c->n - 1) + 1];
    for (int i = 0; i < c->n; i++) {
        double x = c->pts[2 * i], y = c->pts[2 * i + 1];
        a += px * y - py * x;
        px = x;
        py = y;
    }
    return fabs(a * 0.5);
}

/* ------------------------------------------------------------ segmentation */

static int scale_polygon(const raw_contour *c, double ds_x, double ds_y, tl_polygon *p)
{
    p->n = c->n;
    p->xy = malloc((size_t)(c->n > 0 ? c->n : 1) * 2 * sizeof(double));
    if (!p->xy) return -1;
    for (int i = 0; i < c->n; i++) {
        /* CLAM scaleContourDim: np.array(cont * scale, dtype='int32') truncates */
        p->xy[2 * i] = (double)(int32_t)(c->pts[2 * i] * ds_x);
        p->xy[2 * i + 1] = (double)(int32_t)(c->pts[2 * i + 1] * ds_y);
    }
    return 0;
}

typedef struct {
    int idx;
    double area;
} hole_ref;

int tl_segment(const uint8_t *rgb, int w, int h, double ds_x, double ds_y, const tl_seg_params *p,
               tl_tissue *out, uint8_t **mask_out)
{
    memset(out, 0, sizeof *out);
    if (mask_out) *mask_out = NULL;
    if (w <= 0 || h <= 0 || !(ds_x > 0) || !(ds_y > 0))
        return ncmi_error_set("segmentation: bad image %dx%d or downsample %g x %g", w, h, ds_x, ds_y);
    size_t n = (size_t)w * (size_t)h;
    uint8_t *a = malloc(n), *b = malloc(n);
    raw_list l = {0};
    int *order = NULL;
    hole_ref *hr = NULL;
    if (!a || !b) goto oom;

    tl_rgb_saturation(rgb, w, h, a);
    tl_median_blur(a, w, h, p->mthresh, b);
    int thr = p->use_otsu ? tl_otsu_threshold(b, n) : p->sthresh;
    if (p->use_otsu == 2 && thr < p->sthresh) thr = p->sthresh;
    for (size_t i = 0; i < n; i++) b[i] = b[i] > thr ? 255 : 0;
    if (p->close > 0) tl_morph_close(b, w, h, p->close, b);
    free(a);
    a = NULL;

    if (find_contours_ccomp(b, w, h, &l)) goto fail;
    order = malloc((size_t)(l.n > 0 ? l.n : 1) * sizeof *order);
    hr = malloc((size_t)(l.n > 0 ? l.n : 1) * sizeof *hr);
    if (!order || !hr) goto oom;
    opencv_order(&l, order);

    /* CLAM: scaled_ref_patch_area = int(512**2 / (ds_x * ds_y)) */
    double ref_area = (double)(int64_t)(512.0 * 512.0 / (ds_x * ds_y));
    double a_t = p->a_t * ref_area, a_h = p->a_h * ref_area;

    int cap = 0;
    for (int k = 0; k < l.n; k++) {
        int ci = order[k];
        if (l.c[ci].is_hole || l.c[ci].parent != -1) continue;
        /* holes of this contour in OpenCV's order (they follow it) */
        int nh = 0;
        for (int j = k + 1; j < l.n && l.c[order[j]].is_hole && l.c[order[j]].parent == ci; j++) {
            hr[nh].idx = order[j];
            hr[nh].area = raw_area(&l.c[order[j]]);
            nh++;
        }
        double area = raw_area(&l.c[ci]);
        for (int j = 0; j < nh; j++) area -= hr[j].area;
        if (area == 0) continue;
        if (!(a_t < area)) continue;
        /* holes by area, largest first, stable (Python's sorted(reverse=True)) */
        for (int i = 1; i < nh; i++) {
            hole_ref t = hr[i];
            int j = i - 1;
            while (j >= 0 && hr[j].area < t.area) {
                hr[j + 1] = hr[j];
                j--;
            }
            hr[j + 1] = t;
        }
        int keep = nh < p->max_n_holes ? nh : (p->max_n_holes > 0 ? p->max_n_holes : 0);
        if (out->n == cap) {
            cap = cap ? cap * 2 : 8;
            tl_contour *nc = realloc(out->c, (size_t)cap * sizeof *nc);
            if (!nc) goto oom;
            out->c = nc;
        }
        tl_contour *tc = &out->c[out->n++];
        memset(tc, 0, sizeof *tc);
        if (scale_polygon(&l.c[ci], ds_x, ds_y, &tc->outer)) goto oom;
        tc->holes = calloc((size_t)(keep > 0 ? keep : 1), sizeof *tc->holes);
        if (!tc->holes) goto oom;
        for (int j = 0; j < keep; j++) {
            if (!(hr[j].area > a_h)) continue;
            if (scale_polygon(&l.c[hr[j].idx], ds_x, ds_y, &tc->holes[tc->n_holes])) goto oom;
            tc->n_holes++;
        }
        tc->area = tl_polygon_area(&tc->outer);
        for (int j = 0; j < tc->n_holes; j++) tc->area -= tl_polygon_area(&tc->holes[j]);
    }
    raw_list_free(&l);
    free(order);
    free(hr);
    if (mask_out)
        *mask_out = b;
    else
        free(b);
    return 0;
oom:
    ncmi_error_set("segmentation: out of memory (%dx%d image)", w, h);
fail:
    free(a);
    free(b);
    free(order);
    free(hr);
    raw_list_free(&l);
    tl_tissue_free(out);
    return -1;
}

void tl_tissue_free(tl_tissue *t)
{
    if (!t) return;
    for (int i = 0; i < t->n; i++) {
        free(t->c[i].outer.xy);
        for (int j = 0; j < t->c[i].n_holes; j++) free(t->c[i].holes[j].xy);
        free(t->c[i].holes);
    }
    free(t->c);
    t->c = NULL;
    t->n = 0;
}

/* ----------------------------------------------------------------- GeoJSON */

static json_t *num(double v)
{
    if (v == floor(v) && fabs(v) < 9e15) return json_integer((json_int_t)v);
    return json_real(v);
}

static double signed_area(const tl_polygon *p)
{
    double a = 0;
    for (int i = 0; i < p->n; i++) {
        int j = (i + 1) % p->n;
        a += p->xy[2 * i] * p->xy[2 * j + 1] - p->xy[2 * j] * p->xy[2 * i + 1];
    }
    return a * 0.5;
}

/* A closed linear ring (first position repeated), oriented as RFC 7946 asks
 * (exterior counter-clockwise, holes clockwise, by the sign of the shoelace
 * sum in the coordinates as written). NULL for a degenerate ring. */
static json_t *ring(const tl_polygon *p, int exterior)
{
    if (p->n < 3) return NULL;
    double sa = signed_area(p);
    if (sa == 0) return NULL;
    int reverse = exterior ? sa < 0 : sa > 0;
    json_t *r = json_array();
    for (int k = 0; k <= p->n; k++) {
        int i = k % p->n;
        if (reverse) i = (p->n - i) % p->n;
        json_t *pt = json_array();
        json_array_append_new(pt, num(p->xy[2 * i]));
        json_array_append_new(pt, num(p->xy[2 * i + 1]));
        json_array_append_new(r, pt);
    }
    return r;
}

int tl_geojson_write(const char *path, const tl_tissue *t)
{
    json_t *fc = json_object();
    json_t *features = json_array();
    json_object_set_new(fc, "type", json_string("FeatureCollection"));
    for (int i = 0; i < t->n; i++) {
        const tl_contour *c = &t->c[i];
        json_t *outer = ring(&c->outer, 1);
        if (!outer) continue;
        json_t *coords = json_array();
        json_array_append_new(coords, outer);
        int nh = 0;
        for (int j = 0; j < c->n_holes; j++) {
            json_t *hr = ring(&c->holes[j], 0);
            if (hr) {
                json_array_append_new(coords, hr);
                nh++;
            }
        }
        json_t *geom = json_object();
        json_object_set_new(geom, "type", json_string("Polygon"));
        json_object_set_new(geom, "coordinates", coords);
        json_t *cls = json_object();
        json_object_set_new(cls, "name", json_string("Tissue"));
        json_t *color = json_array();
        json_array_append_new(color, json_integer(0));
        json_array_append_new(color, json_integer(160));
        json_array_append_new(color, json_integer(0));
        json_object_set_new(cls, "color", color);
        json_t *props = json_object();
        json_object_set_new(props, "objectType", json_string("annotation"));
        json_object_set_new(props, "classification", cls);
        json_object_set_new(props, "isLocked", json_false());
        json_object_set_new(props, "contour_index", json_integer(i));
        json_object_set_new(props, "n_holes", json_integer(nh));
        json_object_set_new(props, "area_level0_px2", json_real(c->area));
        json_t *f = json_object();
        json_object_set_new(f, "type", json_string("Feature"));
        json_object_set_new(f, "geometry", geom);
        json_object_set_new(f, "properties", props);
        json_array_append_new(features, f);
    }
    json_object_set_new(fc, "features", features);

    size_t len = strlen(path);
    char *tmp = malloc(len + 32);
    if (!tmp) {
        json_decref(fc);
        return ncmi_error_set("%s: out of memory", path);
    }
    snprintf(tmp, len + 32, "%s.tmp.%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "w");
    if (!f) {
        int e = errno;
        json_decref(fc);
        free(tmp);
        return ncmi_error_set("%s: cannot write: %s", path, strerror(e));
    }
    int rc = json_dumpf(fc, f, JSON_COMPACT | JSON_REAL_PRECISION(12));
    rc |= fputc('\n', f) == EOF;
    rc |= fflush(f) != 0;
    rc |= fclose(f) != 0;
    json_decref(fc);
    if (rc != 0 || rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        free(tmp);
        return ncmi_error_set("%s: cannot write: %s", path, strerror(e ? e : EIO));
    }
    free(tmp);
    ncmi_tmp_sweep(path);
    return 0;
}

/* -------------------------------------------------------- tl_find_contours */

int tl_find_contours(const uint8_t *mask, int w, int h, tl_contour_set *out)
{
    memset(out, 0, sizeof *out);
    if (w <= 0 || h <= 0) return 0;
    raw_list l;
    if (find_contours_ccomp(mask, w, h, &l)) return -1;
    int n = l.n, m = n > 0 ? n : 1;
    int *order = malloc((size_t)m * sizeof *order), *pos = malloc((size_t)m * sizeof *pos);
    out->npts = calloc((size_t)m, sizeof *out->npts);
    out->pts = calloc((size_t)m, sizeof *out->pts);
    out->hier = malloc((size_t)m * 4 * sizeof *out->hier);
    if (!order || !pos || !out->npts || !out->pts || !out->hier) {
        free(order);
        free(pos);
        raw_list_free(&l);
        tl_contour_set_free(out);
        return ncmi_error_set("contours: out of memory");
    }
    opencv_order(&l, order);
    // NOLINTNEXTLINE(clang-analyzer-core.uninitialized.ArraySubscript): false positive, opencv_order fills order[0..n)
    for (int k = 0; k < n; k++) pos[order[k]] = k;
    out->n = n;
    for (int k = 0; k < n; k++) {
        raw_contour *c = &l.c[order[k]];
        out->npts[k] = c->n;
        out->pts[k] = c->pts; /* ownership moves */
        c->pts = NULL;
        int *hr = out->hier + 4 * k;
        hr[0] = hr[1] = hr[2] = -1;
        hr[3] = c->parent >= 0 ? pos[c->parent] : -1;
    }
    /* siblings: consecutive entries with the same parent and level; first child */
    for (int k = 0; k < n; k++) {
        int par = out->hier[4 * k + 3];
        for (int j = k + 1; j < n; j++)
            if (out->hier[4 * j + 3] == par) {
                out->hier[4 * k] = j;
                out->hier[4 * j + 1] = k;
                break;
            }
        if (par >= 0 && out->hier[4 * par + 2] < 0) out->hier[4 * par + 2] = k;
    }
    free(order);
    free(pos);
    raw_list_free(&l);
    return 0;
}

void tl_contour_set_free(tl_contour_set *s)
{
    if (!s) return;
    // NOLINTNEXTLINE(clang-analyzer-core.NullDereference): false positive, pts has n entries whenever n > 0
    for (int i = 0; i < s->n; i++) free(s->pts[i]);
    free(s->pts);
    free(s->npts);
    free(s->hier);
    memset(s, 0, sizeof *s);
}
