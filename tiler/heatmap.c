/* Attention heatmaps (see heatmap.h). */
#include "heatmap.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../nn/error.h"
#include "../nn/tmpfile.h"

#if NCMI_HAVE_VIPS
#include <vips/vips.h>
#endif

typedef struct rank_item {
    float v;
    size_t i;
} rank_item;

static int cmp_rank(const void *a, const void *b)
{
    const rank_item *x = a, *y = b;
    if (x->v != y->v) return x->v < y->v ? -1 : 1;
    return x->i < y->i ? -1 : x->i > y->i;
}

void tl_heatmap_rank(const float *scores, size_t n, float *out)
{
    if (n == 0) return;
    if (n == 1) {
        out[0] = 0.5f;
        return;
    }
    rank_item *it = malloc(n * sizeof *it);
    NCMI_CHECK(it != NULL, "out of memory ranking %zu scores", n);
    for (size_t i = 0; i < n; i++) {
        it[i].v = isnan(scores[i]) ? -INFINITY : scores[i];
        it[i].i = i;
    }
    qsort(it, n, sizeof *it, cmp_rank);
    for (size_t a = 0; a < n;) {
        size_t b = a + 1;
        while (b < n && it[b].v == it[a].v) b++;
        const double r = 0.5 * (double)(a + b - 1) / (double)(n - 1); /* mean rank of the tie / (n-1) */
        for (size_t k = a; k < b; k++) out[it[k].i] = (float)r;
        a = b;
    }
    free(it);
}

void tl_heatmap_color(float v, uint8_t rgb[3])
{
    /* stops: blue (0), cyan (0.25), green (0.5), yellow (0.75), red (1) */
    static const float stop[5][3] = {{49, 54, 149}, {69, 190, 207}, {102, 189, 99}, {253, 219, 90}, {215, 48, 39}};
    if (!(v > 0)) v = 0;
    if (v > 1) v = 1;
    float t = v * 4.f;
    int k = (int)t;
    if (k > 3) k = 3;
    float f = t - (float)k;
    for (int c = 0; c < 3; c++) rgb[c] = (uint8_t)lrintf(stop[k][c] + f * (stop[k + 1][c] - stop[k][c]));
}

int tl_heatmap_draw(uint8_t *rgb, int w, int h, double sx, double sy, const int64_t *coords, size_t n,
                    int64_t patch0, const float *value01, float alpha)
{
    if (w <= 0 || h <= 0) return ncmi_error_set("heatmap: empty image %dx%d", w, h);
    float *sum = calloc((size_t)w * (size_t)h, sizeof *sum);
    float *cnt = calloc((size_t)w * (size_t)h, sizeof *cnt);
    if (!sum || !cnt) {
        free(sum);
        free(cnt);
        return ncmi_error_set("heatmap: out of memory for %dx%d", w, h);
    }
    for (size_t i = 0; i < n; i++) {
        /* image pixels whose centre lies in the patch */
        double x0 = (double)coords[2 * i] * sx, y0 = (double)coords[2 * i + 1] * sy;
        double x1 = (double)(coords[2 * i] + patch0) * sx, y1 = (double)(coords[2 * i + 1] + patch0) * sy;
        int ia = (int)ceil(x0 - 0.5), ib = (int)ceil(x1 - 0.5), ja = (int)ceil(y0 - 0.5), jb = (int)ceil(y1 - 0.5);
        if (ib == ia) ib = ia + 1; /* a patch smaller than a pixel still shows */
        if (jb == ja) jb = ja + 1;
        if (ia < 0) ia = 0;
        if (ja < 0) ja = 0;
        if (ib > w) ib = w;
        if (jb > h) jb = h;
        float v = value01[i];
        if (!(v >= 0)) v = 0;
        if (v > 1) v = 1;
        for (int y = ja; y < jb; y++)
            for (int x = ia; x < ib; x++) {
                sum[(size_t)y * w + x] += v;
                cnt[(size_t)y * w + x] += 1.f;
            }
    }
    for (size_t p = 0; p < (size_t)w * (size_t)h; p++) {
        if (cnt[p] == 0) continue;
        uint8_t c[3];
        tl_heatmap_color(sum[p] / cnt[p], c);
        for (int k = 0; k < 3; k++)
            rgb[3 * p + k] = (uint8_t)lrintf((1.f - alpha) * (float)rgb[3 * p + k] + alpha * (float)c[k]);
    }
    free(sum);
    free(cnt);
    return 0;
}

void tl_heatmap_colorbar(uint8_t *rgb, int w, int h, int x0, int y0, int bw, int bh)
{
    for (int y = 0; y < bh; y++)
        for (int x = 0; x < bw; x++) {
            int X = x0 + x, Y = y0 + y;
            if (X < 0 || Y < 0 || X >= w || Y >= h) continue;
            uint8_t c[3] = {40, 40, 40};
            if (x > 0 && y > 0 && x < bw - 1 && y < bh - 1)
                tl_heatmap_color(bh > 3 ? (float)(bh - 2 - y) / (float)(bh - 3) : 0.5f, c);
            memcpy(rgb + 3 * ((size_t)Y * w + X), c, 3);
        }
}

int tl_png_write(const char *path, const uint8_t *rgb, int w, int h)
{
#if NCMI_HAVE_VIPS
    VipsImage *im = vips_image_new_from_memory(rgb, (size_t)w * (size_t)h * 3, w, h, 3, VIPS_FORMAT_UCHAR);
    char tmp[4400];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld.png", path, (long)getpid());
    int rc = -1;
    if (im && vips_pngsave(im, tmp, "compression", 2, "strip", TRUE, NULL) == 0) rc = 0;
    if (im) g_object_unref(im);
    if (rc != 0) {
        ncmi_error_set("%s: cannot write PNG: %s", tmp, vips_error_buffer());
        vips_error_clear();
        unlink(tmp);
        return -1;
    }
    if (rename(tmp, path) != 0) {
        ncmi_error_set("%s: cannot rename into place: %s", path, strerror(errno));
        unlink(tmp);
        return -1;
    }
    ncmi_tmp_sweep(path);
    return 0;
#else
    (void)rgb, (void)w, (void)h;
    return ncmi_error_set("%s: built without libvips: no PNG", path);
#endif
}

int tl_jpeg_encode(const uint8_t *rgb, int w, int h, int q, uint8_t **buf, size_t *len)
{
    *buf = NULL;
    *len = 0;
#if NCMI_HAVE_VIPS
    VipsImage *im = vips_image_new_from_memory(rgb, (size_t)w * (size_t)h * 3, w, h, 3, VIPS_FORMAT_UCHAR);
    void *vb = NULL;
    size_t vn = 0;
    int rc = -1;
    if (im && vips_jpegsave_buffer(im, &vb, &vn, "Q", q, "strip", TRUE, NULL) == 0) rc = 0;
    if (im) g_object_unref(im);
    if (rc != 0) {
        ncmi_error_set("cannot encode a %dx%d JPEG: %s", w, h, vips_error_buffer());
        vips_error_clear();
        return -1;
    }
    *buf = malloc(vn ? vn : 1);
    if (!*buf) {
        g_free(vb);
        return ncmi_error_set("out of memory for a %zu-byte JPEG", vn);
    }
    memcpy(*buf, vb, vn);
    *len = vn;
    g_free(vb);
    return 0;
#else
    (void)rgb, (void)w, (void)h, (void)q;
    return ncmi_error_set("built without libvips: no JPEG");
#endif
}
