/* Slides through OpenSlide 3.4 (see slide.h). */
#include "slide.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../nn/error.h"

#define TL_MPP_MIN 0.05
#define TL_MPP_MAX 20.0

/* ------------------------------------------------------------ resolution */

static int parse_pos(const char *v, double *out)
{
    if (!v) return -1;
    char *e;
    errno = 0;
    double x = strtod(v, &e);
    while (*e == ' ' || *e == '\t') e++; /* strtod always sets e */
    if (e == v || *e || errno || !isfinite(x) || x <= 0) return -1;
    *out = x;
    return 0;
}

static int plausible(double m) { return m >= TL_MPP_MIN && m <= TL_MPP_MAX; }

/* hint for resolutions that are software defaults rather than scans */
static const char *dpi_hint(double dpi)
{
    static const double defaults[] = {72, 96, 150, 300, 600};
    for (size_t i = 0; i < sizeof defaults / sizeof defaults[0]; i++)
        if (fabs(dpi - defaults[i]) < 0.01 * defaults[i]) return "; a software default dpi, not a scan resolution";
    return "";
}

int tl_mpp_from_properties(tl_prop_fn get, void *ctx, double *mpp_x, double *mpp_y, char *source, size_t source_n,
                           char *why, size_t why_n)
{
    double x = 0, y = 0;
    const char *src = NULL;
    char detail[160] = "";
    if (source && source_n) source[0] = 0;
    if (why && why_n) why[0] = 0;
    *mpp_x = *mpp_y = 0;

    /* direct µm/px properties, in order */
    static const char *const direct[][2] = {
        {"openslide.mpp-x", "openslide.mpp-y"},
        {"aperio.MPP", NULL},
        {"openslide.mirax.MPP", NULL},
    };
    for (size_t i = 0; i < sizeof direct / sizeof direct[0] && !src; i++) {
        const char *vx = get(ctx, direct[i][0]);
        if (!vx) continue;
        src = direct[i][0];
        if (parse_pos(vx, &x)) {
            snprintf(why, why_n, "%s='%s' is not a positive number", src, vx);
            return -1;
        }
        const char *vy = direct[i][1] ? get(ctx, direct[i][1]) : NULL;
        if (vy && parse_pos(vy, &y)) {
            snprintf(why, why_n, "%s='%s' is not a positive number", direct[i][1], vy);
            return -1;
        }
        if (!vy) y = x;
        // cppcheck-suppress nullPointerRedundantCheck ; false positive: src was set just above; !src only ends the loop
        snprintf(detail, sizeof detail, "%s=%s", src, vx);
    }
    /* resolutions in pixels per unit: hamamatsu.* (NDPI convention: per
     * centimetre unless hamamatsu.ResolutionUnit says otherwise), then tiff.* */
    static const char *const res[][4] = {
        {"hamamatsu.XResolution", "hamamatsu.YResolution", "hamamatsu.ResolutionUnit", "centimeter"},
        {"tiff.XResolution", "tiff.YResolution", "tiff.ResolutionUnit", NULL},
    };
    for (size_t i = 0; i < sizeof res / sizeof res[0] && !src; i++) {
        const char *vx = get(ctx, res[i][0]);
        if (!vx) continue;
        src = res[i][0];
        double rx, ry;
        if (parse_pos(vx, &rx)) {
            snprintf(why, why_n, "%s='%s' is not a positive number", src, vx);
            return -1;
        }
        const char *vy = get(ctx, res[i][1]);
        if (!vy || parse_pos(vy, &ry)) ry = rx;
        const char *unit = get(ctx, res[i][2]);
        if (!unit) unit = res[i][3];
        double per_um;
        if (unit && !strcasecmp(unit, "centimeter")) per_um = 1e4;
        else if (unit && !strcasecmp(unit, "inch")) per_um = 25400;
        else {
            snprintf(why, why_n, "%s=%s has no physical unit (%s %s)", src, vx, res[i][2], unit ? unit : "absent");
            return -1;
        }
        x = per_um / rx;
        y = per_um / ry;
        // cppcheck-suppress nullPointerRedundantCheck ; false positive: src was set just above; !src only ends the loop
        snprintf(detail, sizeof detail, "%s=%s px/%s%s", src, vx, unit,
                 per_um == 25400 ? dpi_hint(rx) : dpi_hint(rx * 2.54));
    }
    if (!src) {
        snprintf(why, why_n, "no resolution metadata (openslide.mpp-x, aperio.MPP, openslide.mirax.MPP, "
                             "hamamatsu.XResolution, tiff.XResolution with a unit)");
        return -1;
    }
    if (!plausible(x) || !plausible(y)) {
        snprintf(why, why_n, "implausible resolution %.4g x %.4g µm/px from %s (outside [%g, %g] µm/px)", x, y,
                 detail, TL_MPP_MIN, TL_MPP_MAX);
        return -1;
    }
    *mpp_x = x;
    *mpp_y = y;
    if (source && source_n) snprintf(source, source_n, "%s", src);
    return 0;
}

int tl_slide_best_level(const tl_slide *s, double target_mpp)
{
    double m0 = s->mpp_x > s->mpp_y ? s->mpp_x : s->mpp_y;
    int best = 0;
    for (int l = 0; l < s->n_levels; l++)
        if (m0 * s->ds[l] <= target_mpp * 1.001) best = l; /* levels are ordered by increasing downsample */
    return best;
}

#if NCMI_HAVE_OPENSLIDE

#include <openslide.h>

static const char *osr_prop(void *ctx, const char *name)
{
    return openslide_get_property_value((openslide_t *)ctx, name);
}

/* a hint for files OpenSlide does not recognise */
static const char *format_hint(const char *path)
{
    unsigned char b[132];
    FILE *f = fopen(path, "rb");
    if (!f) return "";
    size_t n = fread(b, 1, sizeof b, f);
    fclose(f);
    if (n >= 132 && !memcmp(b + 128, "DICM", 4)) return " (DICOM, which OpenSlide 3.4 does not read)";
    if (n >= 4 && (!memcmp(b, "II*\0", 4) || !memcmp(b, "MM\0*", 4) || !memcmp(b, "II+\0", 4) ||
                   !memcmp(b, "MM\0+", 4)))
        return " (a TIFF, but not one OpenSlide reads: generic TIFF must be tiled)";
    if (n >= 2 && b[0] == 0xFF && b[1] == 0xD8) return " (a plain JPEG image, not a slide)";
    if (n >= 8 && !memcmp(b, "\x89PNG", 4)) return " (a PNG image, not a slide)";
    return "";
}

void tl_slide_close(tl_slide *s)
{
    if (s->osr) openslide_close((openslide_t *)s->osr);
    free(s->path);
    memset(s, 0, sizeof *s);
}

int tl_slide_open(tl_slide *s, const char *path, double mpp_override)
{
    memset(s, 0, sizeof *s);
    struct stat st;
    if (stat(path, &st) != 0) return ncmi_error_set("%s: cannot open: %s", path, strerror(errno));
    if (S_ISDIR(st.st_mode)) return ncmi_error_set("%s: is a directory, not a slide file", path);
    if (access(path, R_OK) != 0) return ncmi_error_set("%s: cannot read: %s", path, strerror(errno));
    if (st.st_size == 0 && S_ISREG(st.st_mode)) return ncmi_error_set("%s: empty file (0 bytes)", path);
    const char *vendor = openslide_detect_vendor(path);
    if (!vendor)
        return ncmi_error_set("%s: unsupported or unrecognised format: not a slide OpenSlide %s reads%s", path,
                              openslide_get_version(), format_hint(path));
    openslide_t *o = openslide_open(path);
    if (!o)
        return ncmi_error_set("%s: unsupported format (OpenSlide %s cannot open it as %s)", path,
                              openslide_get_version(), vendor);
    const char *err = openslide_get_error(o);
    if (err) {
        ncmi_error_set("%s: OpenSlide error: %s", path, err);
        openslide_close(o);
        return -1;
    }
    s->path = strdup(path);
    if (!s->path) {
        openslide_close(o);
        return ncmi_error_set("%s: out of memory", path);
    }
    s->osr = o;
    snprintf(s->vendor, sizeof s->vendor, "%s", vendor);
    int32_t n = openslide_get_level_count(o);
    if (n < 1) {
        tl_slide_close(s);
        return ncmi_error_set("%s: OpenSlide reports %d levels", path, (int)n);
    }
    s->n_levels = n > TL_MAX_LEVELS ? TL_MAX_LEVELS : n;
    for (int l = 0; l < s->n_levels; l++) {
        int64_t w = -1, h = -1;
        openslide_get_level_dimensions(o, l, &w, &h);
        s->w[l] = w;
        s->h[l] = h;
        s->ds[l] = openslide_get_level_downsample(o, l);
        if (w <= 0 || h <= 0 || !(s->ds[l] >= 1 - 1e-9)) {
            const char *e2 = openslide_get_error(o);
            ncmi_error_set("%s: level %d has size %lldx%lld, downsample %g%s%s", path, l, (long long)w,
                           (long long)h, s->ds[l], e2 ? ": " : "", e2 ? e2 : "");
            tl_slide_close(s);
            return -1;
        }
    }
    if (mpp_override > 0) {
        if (!isfinite(mpp_override)) {
            tl_slide_close(s);
            return ncmi_error_set("%s: mpp override %g is not finite", path, mpp_override);
        }
        s->mpp_x = s->mpp_y = mpp_override;
        snprintf(s->mpp_source, sizeof s->mpp_source, "override");
        return 0;
    }
    char why[512];
    if (tl_mpp_from_properties(osr_prop, o, &s->mpp_x, &s->mpp_y, s->mpp_source, sizeof s->mpp_source, why,
                               sizeof why)) {
        char claim[128] = "";
        const char *op = openslide_get_property_value(o, "openslide.objective-power");
        if (op)
            snprintf(claim, sizeof claim, " (the slide claims objective power %.20s, which ncmi does not turn into "
                     "µm/px)", op);
        ncmi_error_set("%s: %s%s: give the manifest's mpp column or --slide-mpp", path, why, claim);
        tl_slide_close(s);
        return -1;
    }
    return 0;
}

/* Close and reopen the handle (OpenSlide errors latch). 0, or -1 with the
 * reason in buf and s->osr NULL. */
static int slide_reopen(tl_slide *s, char *buf, size_t n)
{
    if (s->osr) openslide_close((openslide_t *)s->osr);
    s->osr = NULL;
    openslide_t *o = openslide_open(s->path);
    if (!o) {
        snprintf(buf, n, "reopen failed: no longer a readable slide");
        return -1;
    }
    const char *err = openslide_get_error(o);
    if (err || openslide_get_level_count(o) < s->n_levels) {
        snprintf(buf, n, "reopen failed: %s", err ? err : "level count changed");
        openslide_close(o);
        return -1;
    }
    s->osr = o;
    s->reopen_count++;
    return 0;
}

/* premultiplied ARGB -> RGB over white: c*a/255 + 255*(1 - a/255) is the
 * premultiplied value plus (255 - a); no division needed. */
static void argb_to_rgb(const uint32_t *src, size_t n, uint8_t *dst)
{
    for (size_t i = 0; i < n; i++) {
        uint32_t p = src[i];
        unsigned a = p >> 24, bg = 255 - a;
        unsigned r = ((p >> 16) & 255) + bg, g = ((p >> 8) & 255) + bg, b = (p & 255) + bg;
        dst[3 * i] = (uint8_t)(r > 255 ? 255 : r);
        dst[3 * i + 1] = (uint8_t)(g > 255 ? 255 : g);
        dst[3 * i + 2] = (uint8_t)(b > 255 ? 255 : b);
    }
}

/* one openslide_read_region into argb (w*h) and convert; 0 or -1 (handle reopened) */
static int read_once(tl_slide *s, int64_t x, int64_t y, int level, int64_t w, int64_t h, uint32_t *argb,
                     uint8_t *rgb, const char *region)
{
    char rb[256] = "";
    if (!s->osr || openslide_get_error((openslide_t *)s->osr)) {
        if (slide_reopen(s, rb, sizeof rb))
            return ncmi_error_set("%s: cannot read region %s: handle unusable (%s)", s->path, region, rb);
    }
    openslide_read_region((openslide_t *)s->osr, argb, x, y, level, w, h);
    const char *err = openslide_get_error((openslide_t *)s->osr);
    if (err) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", err);
        int r = slide_reopen(s, rb, sizeof rb);
        return ncmi_error_set("%s: cannot read region %s: %s (%s)", s->path, region, msg,
                              r ? rb : "handle reopened");
    }
    argb_to_rgb(argb, (size_t)w * (size_t)h, rgb);
    return 0;
}

#define TL_READ_CHUNK_PX ((int64_t)4 << 20) /* ARGB scratch per OpenSlide call: 16 MiB */

int tl_slide_read_rgb(tl_slide *s, int64_t x, int64_t y, int level, int w, int h, uint8_t *rgb)
{
    char region[160];
    snprintf(region, sizeof region, "x=%lld y=%lld level %d %dx%d", (long long)x, (long long)y, level, w, h);
    if (!s->path) return ncmi_error_set("(closed slide): cannot read region %s", region);
    if (level < 0 || level >= s->n_levels)
        return ncmi_error_set("%s: cannot read region %s: level %d not in [0, %d)", s->path, region, level,
                              s->n_levels);
    if (w <= 0 || h <= 0 || !rgb)
        return ncmi_error_set("%s: cannot read region %s: empty region or no buffer", s->path, region);
    /* rows per OpenSlide call: all when small; level rows map to level-0 rows by the level's downsample */
    int64_t rows = TL_READ_CHUNK_PX / w;
    if (rows < 1) rows = 1;
    if (rows > h) rows = h;
    uint32_t *argb = malloc((size_t)rows * (size_t)w * sizeof *argb);
    if (!argb) return ncmi_error_set("%s: cannot read region %s: out of memory", s->path, region);
    int rc = 0;
    for (int64_t r = 0; r < h && rc == 0; r += rows) {
        int64_t n = h - r < rows ? h - r : rows;
        int64_t y0 = y + (r ? llround((double)r * s->ds[level]) : 0);
        rc = read_once(s, x, y0, level, w, n, argb, rgb + (size_t)r * (size_t)w * 3, region);
    }
    free(argb);
    return rc;
}

int tl_slide_lowres(tl_slide *s, double target_mpp, int max_side, uint8_t **rgb, int *w, int *h, double *ds_x,
                    double *ds_y)
{
    *rgb = NULL;
    *w = *h = 0;
    if (!s->path) return ncmi_error_set("(closed slide): low-resolution image requested");
    if (max_side < 1 || max_side > 65500)
        return ncmi_error_set("%s: low-resolution image: max_side %d not in [1, 65500]", s->path, max_side);
    if (!(target_mpp > 0)) return ncmi_error_set("%s: low-resolution image: target %g µm/px", s->path, target_mpp);
    double W0 = (double)s->w[0], H0 = (double)s->h[0];
    double D = target_mpp / s->mpp_x; /* level-0 px per output px */
    if (D < 1) D = 1;
    double Dmax = (W0 > H0 ? W0 : H0) / max_side;
    if (D < Dmax) D = Dmax;
    int l = 0;
    for (int k = 0; k < s->n_levels; k++)
        if (s->ds[k] <= D * 1.001) l = k;
    int64_t wl = s->w[l], hl = s->h[l];
    double f = D / s->ds[l]; /* level px per output px, >= ~1 */
    if (f < 1) f = 1;
    if ((double)wl / f > max_side) f = (double)wl / max_side;
    if ((double)hl / f > max_side) f = (double)hl / max_side;
    int ow = (int)ceil((double)wl / f - 1e-9), oh = (int)ceil((double)hl / f - 1e-9);
    if (ow < 1) ow = 1;
    if (oh < 1) oh = 1;
    if (ow > max_side) ow = max_side;
    if (oh > max_side) oh = max_side;

    int64_t rows = TL_READ_CHUNK_PX / wl;
    if (rows < 1) rows = 1;
    if (rows > hl) rows = hl;
    uint8_t *out = malloc((size_t)ow * oh * 3);
    uint8_t *strip = malloc((size_t)rows * (size_t)wl * 3);
    uint32_t *argb = malloc((size_t)rows * (size_t)wl * sizeof *argb);
    uint64_t *acc = calloc((size_t)ow * 3, sizeof *acc);
    uint32_t *cnt = calloc((size_t)ow, sizeof *cnt);
    int *colmap = malloc((size_t)wl * sizeof *colmap);
    if (!out || !strip || !argb || !acc || !cnt || !colmap) {
        free(out), free(strip), free(argb), free(acc), free(cnt), free(colmap);
        return ncmi_error_set("%s: low-resolution image %dx%d: out of memory", s->path, ow, oh);
    }
    for (int64_t x = 0; x < wl; x++) {
        int64_t c = (int64_t)floor((double)x / f);
        colmap[x] = (int)(c < ow ? c : ow - 1);
    }
    memset(out, 255, (size_t)ow * oh * 3);
    double lds_y = H0 / (double)hl; /* this level's exact vertical downsample */
    int cur = 0, rc = 0;
    uint32_t *blk_argb = NULL;
    uint8_t *blk_rgb = NULL;
    for (int64_t r0 = 0; r0 < hl && rc == 0; r0 += rows) {
        int64_t n = hl - r0 < rows ? hl - r0 : rows;
        int64_t y0 = llround((double)r0 * lds_y);
        char region[160];
        snprintf(region, sizeof region, "x=0 y=%lld level %d %lldx%lld", (long long)y0, l, (long long)wl,
                 (long long)n);
        if (read_once(s, 0, y0, l, wl, n, argb, strip, region)) {
            if (!s->osr) {
                rc = -1;
                break;
            }
            /* a bad tile: retry in tile-sized blocks, paint the unreadable ones white */
            if (!blk_argb) blk_argb = malloc(256 * 256 * sizeof *blk_argb);
            if (!blk_rgb) blk_rgb = malloc(256 * 256 * 3);
            if (!blk_argb || !blk_rgb) {
                rc = ncmi_error_set("%s: out of memory", s->path);
                break;
            }
            for (int64_t bx = 0; bx < wl && rc == 0; bx += 256) {
                int64_t bw = wl - bx < 256 ? wl - bx : 256;
                int64_t x0 = llround((double)bx * (W0 / (double)wl));
                for (int64_t by = 0; by < n; by += 256) {
                    int64_t bh = n - by < 256 ? n - by : 256;
                    int64_t yb = llround((double)(r0 + by) * lds_y);
                    if (read_once(s, x0, yb, l, bw, bh, blk_argb, blk_rgb, region)) {
                        if (!s->osr) {
                            rc = -1;
                            break;
                        }
                        for (int64_t yy = 0; yy < bh; yy++) memset(strip + ((by + yy) * wl + bx) * 3, 255, (size_t)bw * 3);
                    } else {
                        for (int64_t yy = 0; yy < bh; yy++)
                            memcpy(strip + ((by + yy) * wl + bx) * 3, blk_rgb + yy * bw * 3, (size_t)bw * 3);
                    }
                }
            }
            if (rc) break;
        }
        for (int64_t r = 0; r < n; r++) {
            int64_t oy64 = (int64_t)floor((double)(r0 + r) / f);
            int oy = (int)(oy64 < oh ? oy64 : oh - 1);
            if (oy != cur) {
                for (int i = 0; i < ow; i++)
                    if (cnt[i])
                        for (int c = 0; c < 3; c++)
                            out[((size_t)cur * ow + i) * 3 + c] = (uint8_t)((acc[i * 3 + c] + cnt[i] / 2) / cnt[i]);
                memset(acc, 0, (size_t)ow * 3 * sizeof *acc);
                memset(cnt, 0, (size_t)ow * sizeof *cnt);
                cur = oy;
            }
            const uint8_t *p = strip + (size_t)r * wl * 3;
            for (int64_t x = 0; x < wl; x++) {
                int i = colmap[x];
                acc[i * 3] += p[3 * x];
                acc[i * 3 + 1] += p[3 * x + 1];
                acc[i * 3 + 2] += p[3 * x + 2];
                cnt[i]++;
            }
        }
    }
    if (rc == 0)
        for (int i = 0; i < ow; i++)
            if (cnt[i])
                for (int c = 0; c < 3; c++)
                    out[((size_t)cur * ow + i) * 3 + c] = (uint8_t)((acc[i * 3 + c] + cnt[i] / 2) / cnt[i]);
    free(strip), free(argb), free(acc), free(cnt), free(colmap), free(blk_argb), free(blk_rgb);
    if (rc) {
        free(out);
        return -1; /* the message names the slide and the region */
    }
    *rgb = out;
    *w = ow;
    *h = oh;
    *ds_x = f * W0 / (double)wl;
    *ds_y = f * H0 / (double)hl;
    return 0;
}

#else /* no OpenSlide */

void tl_slide_close(tl_slide *s)
{
    free(s->path);
    memset(s, 0, sizeof *s);
}

int tl_slide_open(tl_slide *s, const char *path, double mpp_override)
{
    (void)mpp_override;
    memset(s, 0, sizeof *s);
    return ncmi_error_set("%s: ncmi was built without OpenSlide (install libopenslide-dev and rebuild)", path);
}

int tl_slide_read_rgb(tl_slide *s, int64_t x, int64_t y, int level, int w, int h, uint8_t *rgb)
{
    (void)s, (void)x, (void)y, (void)level, (void)w, (void)h, (void)rgb;
    return ncmi_error_set("ncmi was built without OpenSlide");
}

int tl_slide_lowres(tl_slide *s, double target_mpp, int max_side, uint8_t **rgb, int *w, int *h, double *ds_x,
                    double *ds_y)
{
    (void)s, (void)target_mpp, (void)max_side, (void)ds_x, (void)ds_y;
    *rgb = NULL;
    *w = *h = 0;
    return ncmi_error_set("ncmi was built without OpenSlide");
}

#endif
