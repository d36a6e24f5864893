/* Tile one slide into its three outputs (see tile.h). */
#include "tile.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "../nn/error.h"
#include "coords_h5.h"
#include "heatmap.h"
#include "slide.h"

#if NCMI_HAVE_VIPS
#include <vips/vips.h>
#endif

void tl_tile_params_default(tl_tile_params *p)
{
    memset(p, 0, sizeof *p);
    snprintf(p->preset, sizeof p->preset, "default");
    p->target_mpp = 0.5;
    p->patch_size = 256;
    p->overlap = 0;
    tl_seg_preset("default", &p->seg);
    p->grid = TL_GRID_CONTOUR;
    p->check = TL_CHECK_FOUR_PT;
    p->min_tissue = 0.25;
    p->seg_mpp = 8.0;
    p->seg_max_side = 4096;
    p->preview_max_side = 2000;
}

/* ------------------------------------------------------------------ */
/* the tiling parameters as JSON (coords file attribute `tiling`)      */

static const char *const grid_names[] = {"contour", "global"};
static const char *const check_names[] = {"four_pt", "four_pt_hard", "center"};

int tl_tile_params_json(const tl_tile_params *p, char *buf, size_t n)
{
    const tl_seg_params *s = &p->seg;
    int k = snprintf(buf, n,
                     "{\"preset\":\"%s\",\"target_mpp\":%.17g,\"patch_size\":%d,\"overlap\":%d,"
                     "\"seg\":{\"use_otsu\":%d,\"sthresh\":%d,\"mthresh\":%d,\"close\":%d,\"a_t\":%.17g,"
                     "\"a_h\":%.17g,\"max_n_holes\":%d},\"seg_mpp\":%.17g,\"seg_max_side\":%d,"
                     "\"grid\":\"%s\",\"contour_check\":\"%s\",\"min_tissue\":%.17g}",
                     p->preset[0] ? p->preset : "custom", p->target_mpp, p->patch_size, p->overlap, s->use_otsu,
                     s->sthresh, s->mthresh, s->close, s->a_t, s->a_h, s->max_n_holes, p->seg_mpp, p->seg_max_side,
                     (unsigned)p->grid < 2 ? grid_names[p->grid] : "contour",
                     (unsigned)p->check < 3 ? check_names[p->check] : "four_pt", p->min_tissue);
    return k < 0 || (size_t)k >= n ? -1 : 0;
}

static int json_num(json_t *o, const char *key, double *v)
{
    json_t *x = json_object_get(o, key);
    if (!json_is_number(x)) return ncmi_error_set("tiling parameters: key '%s' missing or not a number", key);
    *v = json_number_value(x);
    return 0;
}

static int json_int(json_t *o, const char *key, int *v)
{
    double d = 0;
    if (json_num(o, key, &d)) return -1;
    if (d != floor(d) || fabs(d) > 1e9) return ncmi_error_set("tiling parameters: key '%s' is not an integer", key);
    *v = (int)d;
    return 0;
}

static int json_choice(json_t *o, const char *key, const char *const *names, int nn, int *v)
{
    const char *s = json_string_value(json_object_get(o, key));
    for (int i = 0; s && i < nn; i++)
        if (!strcmp(s, names[i])) {
            *v = i;
            return 0;
        }
    return ncmi_error_set("tiling parameters: key '%s' missing or not one of the known values", key);
}

int tl_tile_params_from_json(const char *text, tl_tile_params *p)
{
    tl_tile_params_default(p);
    json_error_t err;
    json_t *j = json_loads(text ? text : "", 0, &err);
    if (!json_is_object(j)) {
        json_decref(j);
        return ncmi_error_set("tiling parameters: not a JSON object (%s)", err.text);
    }
    json_t *s = json_object_get(j, "seg");
    const char *pre = json_string_value(json_object_get(j, "preset"));
    snprintf(p->preset, sizeof p->preset, "%s", pre ? pre : "custom");
    int g = 0, c = 0;
    int rc = json_num(j, "target_mpp", &p->target_mpp) || json_int(j, "patch_size", &p->patch_size) ||
             json_int(j, "overlap", &p->overlap) || json_num(j, "seg_mpp", &p->seg_mpp) ||
             json_int(j, "seg_max_side", &p->seg_max_side) || json_choice(j, "grid", grid_names, 2, &g) ||
             json_choice(j, "contour_check", check_names, 3, &c) || json_num(j, "min_tissue", &p->min_tissue);
    if (!rc && !json_is_object(s)) rc = ncmi_error_set("tiling parameters: key 'seg' missing or not an object");
    if (!rc)
        rc = json_int(s, "use_otsu", &p->seg.use_otsu) || json_int(s, "sthresh", &p->seg.sthresh) ||
             json_int(s, "mthresh", &p->seg.mthresh) || json_int(s, "close", &p->seg.close) ||
             json_num(s, "a_t", &p->seg.a_t) || json_num(s, "a_h", &p->seg.a_h) ||
             json_int(s, "max_n_holes", &p->seg.max_n_holes);
    p->grid = (tl_grid_kind)g;
    p->check = (tl_contour_check)c;
    json_decref(j);
    if (!rc && (p->target_mpp <= 0 || p->patch_size <= 0 || p->overlap < 0 || p->overlap >= p->patch_size ||
                p->seg_mpp <= 0 || p->seg_max_side < 16))
        rc = ncmi_error_set("tiling parameters out of range (target_mpp %g, patch_size %d, overlap %d, seg_mpp %g)",
                            p->target_mpp, p->patch_size, p->overlap, p->seg_mpp);
    return rc ? -1 : 0;
}

/* ------------------------------------------------------------------ */
/* libvips, once per process                                           */

static pthread_once_t vips_once = PTHREAD_ONCE_INIT;
#if NCMI_HAVE_VIPS
static int vips_ok = 0;
#endif

static void vips_init_once(void)
{
#if NCMI_HAVE_VIPS
    if (VIPS_INIT("ncmi") == 0) {
        vips_ok = 1;
        /* the operation cache would keep preview images alive between slides */
        vips_cache_set_max(0);
    }
#endif
}

int tl_tile_init(void)
{
    pthread_once(&vips_once, vips_init_once);
#if NCMI_HAVE_VIPS
    if (!vips_ok) return ncmi_error_set("libvips: cannot initialise");
    return 0;
#else
    return ncmi_error_set("ncmi was built without libvips: no previews (install libvips-dev)");
#endif
}

/* ------------------------------------------------------------------ */
/* output paths, completeness, leftovers                               */

static const char *kind_ext(const char *kind)
{
    if (!strcmp(kind, "patches")) return ".h5";
    if (!strcmp(kind, "contours")) return ".geojson";
    return ".png";
}

void tl_tile_output_path(char *buf, size_t n, const char *out_dir, const char *kind,
                         const char *slide_id)
{
    snprintf(buf, n, "%s/%s/%s%s", out_dir, kind, slide_id, kind_ext(kind));
}

static int is_file(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

int tl_tile_outputs_complete(const char *out_dir, const char *slide_id)
{
    static const char *kinds[] = {"patches", "contours", "previews"};
    char path[4096];
    for (int k = 0; k < 3; k++) {
        tl_tile_output_path(path, sizeof path, out_dir, kinds[k], slide_id);
        if (!is_file(path)) return 0;
    }
    tl_tile_output_path(path, sizeof path, out_dir, "patches", slide_id);
    int64_t *coords = NULL;
    size_t n = 0;
    tl_coords_attrs a;
    char name[256];
    int rc = tl_coords_h5_read(path, &coords, &n, &a, name, sizeof name);
    free(coords);
    ncmi_error_clear();
    return rc == 0;
}

/* A temporary leftover of `final` (a file name, no folder): "<final>.tmp*",
 * "<final>.<anything>tmp*" or ".<final>.tmp*". */
static int is_leftover(const char *name, const char *final)
{
    size_t n = strlen(final);
    const char *rest = NULL;
    if (!strncmp(name, final, n) && name[n] == '.')
        rest = name + n;
    else if (name[0] == '.' && !strncmp(name + 1, final, n) && name[n + 1] == '.')
        rest = name + n + 1;
    return rest && strstr(rest, "tmp") != NULL;
}

int tl_tile_remove_outputs(const char *out_dir, const char *slide_id, int all)
{
    static const char *kinds[] = {"patches", "contours", "previews"};
    int removed = 0;
    for (int k = 0; k < 3; k++) {
        char dir[4096], final[1024], path[8192];
        snprintf(dir, sizeof dir, "%s/%s", out_dir, kinds[k]);
        snprintf(final, sizeof final, "%s%s", slide_id, kind_ext(kinds[k]));
        DIR *d = opendir(dir);
        if (!d) continue;
        struct dirent *e;
        while ((e = readdir(d))) {
            if (is_leftover(e->d_name, final) || (all && !strcmp(e->d_name, final))) {
                snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
                if (unlink(path) == 0) removed++;
            }
        }
        closedir(d);
    }
    return removed;
}

/* ------------------------------------------------------------------ */
/* notes                                                               */

static void note_add(tl_tile_result *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void note_add(tl_tile_result *r, const char *fmt, ...)
{
    size_t len = strlen(r->note);
    if (len + 8 >= sizeof r->note) return;
    if (len) {
        snprintf(r->note + len, sizeof r->note - len, "; ");
        len += 2;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->note + len, sizeof r->note - len, fmt, ap);
    va_end(ap);
}

/* ------------------------------------------------------------------ */
/* low-resolution image that survives corrupt tiles                    */

typedef struct bbox {
    int64_t x0, y0, x1, y1; /* level-0, x1/y1 exclusive; x0 > x1 when empty */
} bbox;

static void bbox_add(bbox *b, int64_t x0, int64_t y0, int64_t x1, int64_t y1)
{
    if (b->x0 > b->x1) {
        *b = (bbox){x0, y0, x1, y1};
        return;
    }
    if (x0 < b->x0) b->x0 = x0;
    if (y0 < b->y0) b->y0 = y0;
    if (x1 > b->x1) b->x1 = x1;
    if (y1 > b->y1) b->y1 = y1;
}

/* Reads a w x h block at `level`, level coordinates (lx, ly), into buf
 * (row stride `stride` pixels). A block that fails is split in four until
 * 32 px; what still fails is painted white and added to *bad. -1 only when
 * the handle could not be reopened. */
static int read_block_robust(tl_slide *s, int level, int64_t lx, int64_t ly, int w, int h,
                             uint8_t *buf, int stride, bbox *bad, double *bad_px, char *first_err,
                             size_t fe_n)
{
    double ds = s->ds[level];
    int64_t x0 = (int64_t)llround((double)lx * ds), y0 = (int64_t)llround((double)ly * ds);
    uint8_t *tmp = malloc((size_t)w * (size_t)h * 3);
    if (!tmp) return ncmi_error_set("%s: out of memory", s->path);
    int rc = tl_slide_read_rgb(s, x0, y0, level, w, h, tmp);
    if (rc == 0) {
        for (int r = 0; r < h; r++)
            memcpy(buf + ((size_t)r * (size_t)stride) * 3, tmp + (size_t)r * (size_t)w * 3, (size_t)w * 3);
        free(tmp);
        return 0;
    }
    free(tmp);
    if (!s->osr) return -1; /* reopen failed: the message says why */
    if (!first_err[0]) {
        const char *e = ncmi_error();
        size_t pl = strlen(s->path);
        if (!strncmp(e, s->path, pl) && !strncmp(e + pl, ": ", 2)) e += pl + 2; /* the path is said once */
        snprintf(first_err, fe_n, "%s", e);
    }
    ncmi_error_clear();
    if (w <= 32 && h <= 32) {
        for (int r = 0; r < h; r++) memset(buf + ((size_t)r * (size_t)stride) * 3, 255, (size_t)w * 3);
        *bad_px += (double)w * (double)h;
        bbox_add(bad, x0, y0, x0 + (int64_t)ceil(w * ds), y0 + (int64_t)ceil(h * ds));
        return 0;
    }
    int w1 = w > 32 ? w / 2 : w, h1 = h > 32 ? h / 2 : h;
    for (int qy = 0; qy < (h1 < h ? 2 : 1); qy++)
        for (int qx = 0; qx < (w1 < w ? 2 : 1); qx++) {
            int bx = qx ? w1 : 0, by = qy ? h1 : 0;
            int bw = qx ? w - w1 : w1, bh = qy ? h - h1 : h1;
            if (read_block_robust(s, level, lx + bx, ly + by, bw, bh,
                                  buf + ((size_t)by * (size_t)stride + (size_t)bx) * 3, stride, bad,
                                  bad_px, first_err, fe_n) != 0)
                return -1;
        }
    return 0;
}

/* Box-averaged low-res image read block by block (bounded memory): used when
 * tl_slide_lowres stops at a corrupt tile. */
static int lowres_robust(tl_slide *s, double target_mpp, int max_side, uint8_t **out, int *ow,
                         int *oh, double *dsx, double *dsy, tl_tile_result *r)
{
    double m0 = s->mpp_x;
    double f = target_mpp / m0;
    int64_t W = s->w[0], H = s->h[0];
    double fmax = (double)(W > H ? W : H) / (double)max_side;
    if (fmax > f) f = fmax;
    if (f < 1) f = 1;
    int level = tl_slide_best_level(s, m0 * f);
    int kk = (int)ceil(f / s->ds[level] - 1e-6);
    if (kk < 1) kk = 1;
    int64_t wl = s->w[level], hl = s->h[level];
    int w = (int)((wl + kk - 1) / kk), h = (int)((hl + kk - 1) / kk);
    uint8_t *img = malloc((size_t)w * (size_t)h * 3);
    int bw_out = 2048 / kk > 0 ? 2048 / kk : 1, bh_out = 512 / kk > 0 ? 512 / kk : 1;
    int blk_w = bw_out * kk, blk_h = bh_out * kk;
    uint8_t *blk = malloc((size_t)blk_w * (size_t)blk_h * 3);
    if (!img || !blk) {
        free(img);
        free(blk);
        return ncmi_error_set("%s: out of memory for a %dx%d low-res image", s->path, w, h);
    }
    char first_err[256] = "";
    double bad_px = 0;
    for (int oy = 0; oy < h; oy += bh_out) {
        for (int ox = 0; ox < w; ox += bw_out) {
            int64_t lx = (int64_t)ox * kk, ly = (int64_t)oy * kk;
            int rw = (int)(lx + blk_w <= wl ? blk_w : wl - lx);
            int rh = (int)(ly + blk_h <= hl ? blk_h : hl - ly);
            bbox bad = {1, 1, 0, 0};
            if (read_block_robust(s, level, lx, ly, rw, rh, blk, blk_w, &bad, &bad_px, first_err,
                                  sizeof first_err) != 0) {
                free(img);
                free(blk);
                return -1;
            }
            if (bad.x0 <= bad.x1) {
                r->n_read_errors++;
                if (r->n_read_errors <= 4)
                    note_add(r, "unreadable region x=%lld y=%lld w=%lld h=%lld (level-0 px) painted white",
                             (long long)bad.x0, (long long)bad.y0, (long long)(bad.x1 - bad.x0),
                             (long long)(bad.y1 - bad.y0));
            }
            /* box average into the output */
            for (int y = 0; y < (rh + kk - 1) / kk; y++)
                for (int x = 0; x < (rw + kk - 1) / kk; x++) {
                    unsigned sum[3] = {0, 0, 0}, cnt = 0;
                    for (int yy = y * kk; yy < y * kk + kk && yy < rh; yy++)
                        for (int xx = x * kk; xx < x * kk + kk && xx < rw; xx++) {
                            const uint8_t *px = blk + ((size_t)yy * (size_t)blk_w + (size_t)xx) * 3;
                            sum[0] += px[0];
                            sum[1] += px[1];
                            sum[2] += px[2];
                            cnt++;
                        }
                    uint8_t *o = img + ((size_t)(oy + y) * (size_t)w + (size_t)(ox + x)) * 3;
                    // NOLINTNEXTLINE(clang-analyzer-core.DivideZero): false positive, x < ceil(rw / kk) leaves at least one pixel in the box, so cnt >= 1
                    for (int c = 0; c < 3; c++) o[c] = (uint8_t)((sum[c] + cnt / 2) / cnt);
                }
        }
    }
    free(blk);
    if (bad_px >= (double)wl * (double)hl) {
        free(img);
        return ncmi_error_set("%s: unreadable: no region of level %d could be read (%s)", s->path, level,
                              first_err[0] ? first_err : "every read failed");
    }
    if (r->n_read_errors > 4) note_add(r, "... %d unreadable regions in all", r->n_read_errors);
    if (first_err[0]) note_add(r, "first read error: %s", first_err);
    *out = img;
    *ow = w;
    *oh = h;
    *dsx = (double)W / ((double)wl / kk);
    *dsy = (double)H / ((double)hl / kk);
    return 0;
}

/* ------------------------------------------------------------------ */
/* preview                                                             */

static void blend_px(uint8_t *rgb, int w, int h, int x, int y, const uint8_t col[3], int alpha)
{
    if (x < 0 || y < 0 || x >= w || y >= h) return;
    uint8_t *p = rgb + ((size_t)y * (size_t)w + (size_t)x) * 3;
    for (int c = 0; c < 3; c++) p[c] = (uint8_t)((p[c] * (256 - alpha) + col[c] * alpha) >> 8);
}

static void draw_line(uint8_t *rgb, int w, int h, double x0, double y0, double x1, double y1,
                      const uint8_t col[3], int thick)
{
    double dx = x1 - x0, dy = y1 - y0;
    double len = fabs(dx) > fabs(dy) ? fabs(dx) : fabs(dy);
    int steps = (int)ceil(len);
    if (steps < 1) steps = 1;
    if (steps > 100000) steps = 100000;
    int lo = -(thick - 1) / 2, hi = thick / 2;
    for (int i = 0; i <= steps; i++) {
        double t = (double)i / steps;
        int x = (int)floor(x0 + t * dx), y = (int)floor(y0 + t * dy);
        for (int oy = lo; oy <= hi; oy++)
            for (int ox = lo; ox <= hi; ox++) blend_px(rgb, w, h, x + ox, y + oy, col, 256);
    }
}

static void draw_polygon(uint8_t *rgb, int w, int h, double sx, double sy, const tl_polygon *p,
                         const uint8_t col[3], int thick)
{
    for (int i = 0; i < p->n; i++) {
        int j = (i + 1) % p->n;
        draw_line(rgb, w, h, p->xy[2 * i] * sx, p->xy[2 * i + 1] * sy, p->xy[2 * j] * sx,
                  p->xy[2 * j + 1] * sy, col, thick);
    }
}

void tl_preview_draw(uint8_t *rgb, int w, int h, double sx, double sy, const tl_tissue *t,
                     const int64_t *coords, size_t n, int64_t patch0)
{
    static const uint8_t grid_col[3] = {30, 60, 220}, tissue_col[3] = {0, 170, 0},
                         hole_col[3] = {230, 120, 0};
    double side_x = (double)patch0 * sx, side_y = (double)patch0 * sy;
    /* patches: a light blue tint, plus their outline when they are big enough to see */
    for (size_t i = 0; i < n; i++) {
        int x0 = (int)floor((double)coords[2 * i] * sx), y0 = (int)floor((double)coords[2 * i + 1] * sy);
        int x1 = (int)floor(((double)coords[2 * i] + (double)patch0) * sx);
        int y1 = (int)floor(((double)coords[2 * i + 1] + (double)patch0) * sy);
        if (x1 <= x0) x1 = x0 + 1;
        if (y1 <= y0) y1 = y0 + 1;
        for (int y = y0; y < y1; y++)
            for (int x = x0; x < x1; x++) blend_px(rgb, w, h, x, y, grid_col, 40);
    }
    if (side_x >= 6 && side_y >= 6)
        for (size_t i = 0; i < n; i++) {
            double x0 = (double)coords[2 * i] * sx, y0 = (double)coords[2 * i + 1] * sy;
            double x1 = x0 + side_x - 1, y1 = y0 + side_y - 1;
            for (double x = x0; x <= x1; x += 1) {
                blend_px(rgb, w, h, (int)x, (int)y0, grid_col, 110);
                blend_px(rgb, w, h, (int)x, (int)y1, grid_col, 110);
            }
            for (double y = y0 + 1; y < y1; y += 1) {
                blend_px(rgb, w, h, (int)x0, (int)y, grid_col, 110);
                blend_px(rgb, w, h, (int)x1, (int)y, grid_col, 110);
            }
        }
    int thick = (w > 1000 || h > 1000) ? 3 : 2;
    for (int c = 0; t && c < t->n; c++) {
        draw_polygon(rgb, w, h, sx, sy, &t->c[c].outer, tissue_col, thick);
        for (int k = 0; k < t->c[c].n_holes; k++)
            draw_polygon(rgb, w, h, sx, sy, &t->c[c].holes[k], hole_col, thick);
    }
}

static int write_preview(const char *path, const uint8_t *img, int w, int h, double dsx, double dsy,
                         int max_side, const tl_tissue *t, const int64_t *coords, size_t n,
                         int64_t patch0)
{
#if NCMI_HAVE_VIPS
    uint8_t *buf = NULL;
    int pw = w, ph = h;
    if (w > max_side || h > max_side) {
        double scale = (double)max_side / (double)(w > h ? w : h);
        VipsImage *in = vips_image_new_from_memory(img, (size_t)w * (size_t)h * 3, w, h, 3,
                                                   VIPS_FORMAT_UCHAR);
        VipsImage *small = NULL;
        if (!in || vips_resize(in, &small, scale, "kernel", VIPS_KERNEL_LINEAR, NULL) != 0) {
            if (in) g_object_unref(in);
            ncmi_error_set("%s: cannot resize the preview: %s", path, vips_error_buffer());
            vips_error_clear();
            return -1;
        }
        g_object_unref(in);
        size_t sz = 0;
        buf = vips_image_write_to_memory(small, &sz);
        pw = vips_image_get_width(small);
        ph = vips_image_get_height(small);
        g_object_unref(small);
        if (!buf || sz != (size_t)pw * (size_t)ph * 3) {
            g_free(buf);
            return ncmi_error_set("%s: cannot resize the preview", path);
        }
    } else {
        buf = g_malloc((size_t)w * (size_t)h * 3);
        memcpy(buf, img, (size_t)w * (size_t)h * 3);
    }
    double sx = (double)pw / (w * dsx), sy = (double)ph / (h * dsy);
    tl_preview_draw(buf, pw, ph, sx, sy, t, coords, n, patch0);
    int rc = tl_png_write(path, buf, pw, ph);
    g_free(buf);
    if (rc != 0) return ncmi_error_prefix("preview");
    return 0;
#else
    (void)img, (void)w, (void)h, (void)dsx, (void)dsy, (void)max_side, (void)t, (void)coords, (void)n,
        (void)patch0;
    return ncmi_error_set("%s: built without libvips: no preview", path);
#endif
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ------------------------------------------------------------------ */
/* one slide                                                           */

int tl_tile_slide(const char *path, const char *slide_id, double mpp_override, const char *out_dir,
                  const tl_tile_params *p, tl_tile_result *r)
{
    memset(r, 0, sizeof *r);
    r->level = -1;
    if (p->target_mpp <= 0 || p->patch_size <= 0 || p->overlap < 0 || p->overlap >= p->patch_size)
        return ncmi_error_set("%s: bad tiling parameters (target mpp %g, patch %d, overlap %d)", path,
                              p->target_mpp, p->patch_size, p->overlap);
    tl_slide s;
    memset(&s, 0, sizeof s);
    double t0 = now_s();
    if (tl_slide_open(&s, path, mpp_override) != 0) return -1;
    r->t_open = now_s() - t0;
    int rc = -1;
    uint8_t *img = NULL;
    int64_t *coords = NULL;
    size_t n = 0;
    tl_tissue tissue = {0};

    r->mpp = s.mpp_x;
    snprintf(r->mpp_source, sizeof r->mpp_source, "%s", s.mpp_source);
    r->width = s.w[0];
    r->height = s.h[0];
    if (fabs(s.mpp_x - s.mpp_y) > 0.01 * s.mpp_x)
        note_add(r, "non-square pixels (%.4g x %.4g um/px): x used", s.mpp_x, s.mpp_y);
    r->level = tl_slide_best_level(&s, p->target_mpp);
    r->level_mpp = s.mpp_x * s.ds[r->level];
    r->patch_size_level0 = (int64_t)llround(p->patch_size * p->target_mpp / s.mpp_x);
    if (r->patch_size_level0 < 1) r->patch_size_level0 = 1;
    int64_t step0 = (int64_t)llround((p->patch_size - p->overlap) * p->target_mpp / s.mpp_x);
    if (step0 < 1) step0 = 1;
    if (r->level_mpp > p->target_mpp * 1.001)
        note_add(r, "target %.4g um/px is finer than the slide (%.4g um/px): patches will be upsampled",
                 p->target_mpp, s.mpp_x);

    /* low-resolution image for segmentation. tl_slide_lowres paints blocks it
     * cannot read white; when that happened, read again block by block to
     * record where (and to fail a slide where nothing at all can be read). */
    int w = 0, h = 0;
    double dsx = 1, dsy = 1;
    int reopen0 = s.reopen_count;
    if (tl_slide_lowres(&s, p->seg_mpp, p->seg_max_side, &img, &w, &h, &dsx, &dsy) != 0) {
        if (!s.osr) goto done;
        reopen0 = -1; /* an error latched on the handle: try block by block */
    }
    if (s.reopen_count != reopen0) {
        ncmi_error_clear();
        free(img);
        img = NULL;
        if (lowres_robust(&s, p->seg_mpp, p->seg_max_side, &img, &w, &h, &dsx, &dsy, r) != 0) goto done;
    }
    r->seg_mpp = s.mpp_x * dsx;
    r->seg_w = w;
    r->seg_h = h;
    r->seg_dsx = dsx;
    r->seg_dsy = dsy;
    double t1 = now_s();
    r->t_lowres = t1 - t0 - r->t_open;

    if (tl_segment(img, w, h, dsx, dsy, &p->seg, &tissue, p->keep_mask ? &r->seg_mask : NULL) != 0) {
        ncmi_error_prefix("%s: segmentation", path);
        goto done;
    }
    r->n_contours = tissue.n;
    for (int k = 0; k < tissue.n; k++) r->tissue_area += tissue.c[k].area;
    tl_grid_params gp = {
        .kind = p->grid,
        .check = p->check,
        .patch_level0 = r->patch_size_level0,
        .step_level0 = step0,
        .slide_w = s.w[0],
        .slide_h = s.h[0],
        .use_padding = 0,
        .min_tissue = p->min_tissue,
    };
    double t2 = now_s();
    r->t_seg = t2 - t1;
    if (tl_grid(&tissue, &gp, &coords, &n) != 0) {
        ncmi_error_prefix("%s: grid", path);
        goto done;
    }
    r->n_patches = n;
    if (tissue.n == 0)
        note_add(r, "no tissue found");
    else if (n == 0)
        note_add(r, "tissue found but no patch fits");

    char out[4096];
    tl_tile_output_path(out, sizeof out, out_dir, "contours", slide_id);
    double t3 = now_s();
    r->t_grid = t3 - t2;
    if (tl_geojson_write(out, &tissue) != 0) goto done;
    /* the preview: the segmentation image when it has 1000 px a side or more
     * (or the whole slide is smaller), else a finer one for small slides and
     * biopsies (up to preview_max_side a side, never finer than level 0);
     * none when preview_max_side is 0 */
    if (p->preview_max_side > 0) {
        uint8_t *pimg = img;
        int pw = w, ph = h;
        double pdsx = dsx, pdsy = dsy;
        int64_t longest = s.w[0] > s.h[0] ? s.w[0] : s.h[0];
        int want = longest < p->preview_max_side ? (int)longest : p->preview_max_side;
        if ((w > h ? w : h) < 1000 && (w > h ? w : h) < 0.9 * want) {
            int r0 = s.reopen_count;
            uint8_t *fine = NULL;
            if (tl_slide_lowres(&s, s.mpp_x * (double)longest / want, p->preview_max_side, &fine, &pw, &ph,
                                &pdsx, &pdsy) == 0) {
                pimg = fine;
                if (s.reopen_count > r0)
                    note_add(r, "preview: %d unreadable block(s) painted white", s.reopen_count - r0);
            } else {
                if (!s.osr) goto done;
                note_add(r, "preview from the segmentation image (%s)", ncmi_error());
                ncmi_error_clear();
                pw = w, ph = h, pdsx = dsx, pdsy = dsy;
            }
        }
        tl_tile_output_path(out, sizeof out, out_dir, "previews", slide_id);
        int prc = write_preview(out, pimg, pw, ph, pdsx, pdsy, p->preview_max_side, &tissue, coords, n,
                                r->patch_size_level0);
        if (pimg != img) free(pimg);
        if (prc != 0) goto done;
    }
    double t4 = now_s();
    r->t_preview = t4 - t3;

    int L = r->level;
    char save_path[4096];
    snprintf(save_path, sizeof save_path, "%s/patches", out_dir);
    tl_coords_attrs a = {
        .name = slide_id,
        .save_path = save_path,
        .patch_size = p->patch_size,
        .patch_level = L,
        .downsample = {(double)s.w[0] / (double)s.w[L], (double)s.h[0] / (double)s.h[L]},
        .level_dim = {s.w[L], s.h[L]},
        .downsampled_level_dim = {s.w[L], s.h[L]},
        .patch_size_level0 = r->patch_size_level0,
        .target_mpp = p->target_mpp,
        .target_magnification = 10.0 / p->target_mpp,
        .level0_mpp = s.mpp_x,
        .level0_magnification = 10.0 / s.mpp_x,
        .overlap = p->overlap,
        .level0_width = s.w[0],
        .level0_height = s.h[0],
    };
    if (tl_tile_params_json(p, a.tiling, sizeof a.tiling) != 0) {
        ncmi_error_set("%s: tiling parameters too long to record", path);
        goto done;
    }
    tl_tile_output_path(out, sizeof out, out_dir, "patches", slide_id);
    if (tl_coords_h5_write(out, coords, n, &a) != 0) goto done;
    r->t_write = now_s() - t4;
    rc = 0;
done:
    if (rc != 0) {
        free(r->seg_mask);
        r->seg_mask = NULL;
    }
    free(img);
    free(coords);
    tl_tissue_free(&tissue);
    tl_slide_close(&s);
    return rc;
}
