/* Synthetic slides (see synth_slide.h).
 *
 * Geometry: each tissue piece is a union of rotated ellipses (a main one and
 * a few lobes); its holes are smaller ellipses strictly inside the main
 * ellipse. For one level-0 row every ellipse gives an analytic x-interval,
 * so both the renderer and the ground truth work on integer pixel spans
 * (tissue = union(piece spans) minus union(hole spans)): the truth is exact
 * and costs O(rows x ellipses).
 *
 * Writing: a libvips "partial" image whose generate callback renders the
 * requested rectangle row by row from the spans (pure function of x, y and
 * the seed, so libvips may call it from any thread, in any order); tiffsave
 * streams it into a tiled pyramidal JPEG TIFF. Memory: libvips' strip
 * buffers (a few tile rows per pyramid level), never the image. The file
 * is then patched in place when asked (resolution tags removed, one tile's
 * JPEG header destroyed) by walking the TIFF IFDs (classic or BigTIFF). */
#include "synth_slide.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>

#include "../nn/error.h"

void tl_synth_params_default(tl_synth_params *p)
{
    memset(p, 0, sizeof *p);
    p->width = 4000;
    p->height = 3000;
    p->mpp = 0.5;
    p->seed = 1;
    p->n_pieces = 3;
    p->n_holes = 2;
    p->tissue_scale = 1.0;
    p->quality = 90;
    p->tile = 256;
    p->corrupt_x = p->corrupt_y = -1;
    p->mask_max_side = 1024;
}

void tl_synth_truth_free(tl_synth_truth *t)
{
    free(t->coverage);
    free(t->mask);
    memset(t, 0, sizeof *t);
}

/* ---------------------------------------------------------------- model */

typedef struct ell {
    double cx, cy;
    double qa, qb, qc; /* inside: qa dx^2 + qb dx dy + qc dy^2 <= 1 */
    double hy;         /* half height of the bounding box */
} ell;

#define SYN_MAX_PIECES 64
#define SYN_MAX_HOLES 16
#define SYN_LOBES 4
#define SYN_MAX_ELL (SYN_MAX_PIECES * (1 + SYN_LOBES))
#define SYN_MAX_HELL (SYN_MAX_PIECES * SYN_MAX_HOLES)
#define SYN_MAX_PEN 8
#define SYN_PEN_DOTS 512

/* a pen stroke: a chain of overlapping ink disks along a smooth curve */
typedef struct pen {
    int n;
    double x[SYN_PEN_DOTS], y[SYN_PEN_DOTS];
    double r;               /* disk radius (px) */
    double ymin, ymax;      /* bounding rows */
    double xmin, xmax;
    uint8_t ink[3];
    double alpha;
} pen;

typedef struct model {
    int64_t W, H;
    uint64_t seed;
    int n_ell, n_hell;
    ell e[SYN_MAX_ELL];      /* tissue ellipses */
    int e_piece[SYN_MAX_ELL];
    ell h[SYN_MAX_HELL];     /* hole ellipses */
    uint8_t base[SYN_MAX_PIECES][3];
    int n_pieces;
    int cell;                /* nucleus grid cell (px) */
    double rn2;              /* nucleus radius^2 */
    int has_tumour;
    double tum_cx, tum_cy, tum_r2;
    int tcell;               /* tumour nucleus grid cell */
    double trn2;             /* tumour nucleus radius^2 */
    int n_pen;
    pen pens[SYN_MAX_PEN];
    const tl_synth_texture *tex;
    int tex_off[SYN_MAX_PIECES][2]; /* texture offset per piece */
} model;

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static double unif(uint64_t *s, double lo, double hi)
{
    return lo + (hi - lo) * (double)(splitmix(s) >> 11) * (1.0 / 9007199254740992.0);
}

static uint64_t hash3(uint64_t a, uint64_t b, uint64_t c)
{
    uint64_t s = a * 0x9E3779B97F4A7C15ull ^ (b + 0x632BE59BD9B4E019ull) * 0xC2B2AE3D27D4EB4Full ^ c;
    return splitmix(&s);
}

static ell make_ell(double cx, double cy, double a, double b, double th)
{
    ell e;
    double c = cos(th), s = sin(th);
    e.cx = cx;
    e.cy = cy;
    e.qa = c * c / (a * a) + s * s / (b * b);
    e.qb = 2 * c * s * (1 / (a * a) - 1 / (b * b));
    e.qc = s * s / (a * a) + c * c / (b * b);
    e.hy = sqrt(a * a * s * s + b * b * c * c);
    return e;
}

static int check_params(const tl_synth_params *p, const char *path)
{
    const char *w = path ? path : "synthetic slide";
    if (p->width < 16 || p->height < 16 || p->width > 10000000 || p->height > 10000000)
        return ncmi_error_set("%s: size %lldx%lld out of range [16, 10000000]", w, (long long)p->width,
                              (long long)p->height);
    if (!(p->mpp > 0) || !isfinite(p->mpp)) return ncmi_error_set("%s: mpp %g must be > 0", w, p->mpp);
    if (p->n_pieces < 1 || p->n_pieces > SYN_MAX_PIECES)
        return ncmi_error_set("%s: n_pieces %d out of range [1, %d]", w, p->n_pieces, SYN_MAX_PIECES);
    if (p->n_holes < 0 || p->n_holes > SYN_MAX_HOLES)
        return ncmi_error_set("%s: n_holes %d out of range [0, %d]", w, p->n_holes, SYN_MAX_HOLES);
    if (!(p->tissue_scale > 0) || p->tissue_scale > 3)
        return ncmi_error_set("%s: tissue_scale %g out of range (0, 3]", w, p->tissue_scale);
    if (p->quality < 1 || p->quality > 100) return ncmi_error_set("%s: quality %d out of range [1, 100]", w, p->quality);
    if (p->tile < 16 || p->tile % 16) return ncmi_error_set("%s: tile %d must be a multiple of 16", w, p->tile);
    if (p->mask_max_side < 1) return ncmi_error_set("%s: mask_max_side %d must be >= 1", w, p->mask_max_side);
    if (!(p->tumour_um >= 0) || !isfinite(p->tumour_um))
        return ncmi_error_set("%s: tumour_um %g must be >= 0", w, p->tumour_um);
    if (p->tumour_um > 0 && (p->tumour_piece < 0 || p->tumour_piece >= p->n_pieces))
        return ncmi_error_set("%s: tumour_piece %d out of range [0, %d)", w, p->tumour_piece, p->n_pieces);
    if (p->n_pen < 0 || p->n_pen > SYN_MAX_PEN)
        return ncmi_error_set("%s: n_pen %d out of range [0, %d]", w, p->n_pen, SYN_MAX_PEN);
    if (p->texture && (!p->texture->rgb || p->texture->win < 8))
        return ncmi_error_set("%s: texture not loaded", w);
    return 0;
}

static void build_model(model *m, const tl_synth_params *p)
{
    memset(m, 0, sizeof *m);
    m->W = p->width;
    m->H = p->height;
    m->seed = p->seed;
    m->n_pieces = p->n_pieces;
    uint64_t rs = p->seed * 0xD1B54A32D192ED03ull + 12345;
    double W = (double)p->width, H = (double)p->height;
    int n = p->n_pieces;
    /* pieces side by side in columns (rows of columns when many) */
    int cols = n, rows = 1;
    while (cols > 1 && W / cols < 0.5 * H / rows) {
        rows++;
        cols = (n + rows - 1) / rows;
    }
    double cw = W / cols, ch = H / rows;
    double main_cx = 0, main_cy = 0, main_b = 0;
    for (int i = 0; i < n; i++) {
        int ci = i % cols, ri = i / cols;
        double cx = cw * (ci + 0.5 + unif(&rs, -0.08, 0.08));
        double cy = ch * (ri + 0.5 + unif(&rs, -0.08, 0.08));
        double a = p->tissue_scale * 0.45 * fmin(cw, ch) * unif(&rs, 0.75, 1.0);
        double b = a * unif(&rs, 0.55, 0.85);
        double th = unif(&rs, 0, M_PI);
        if (i == p->tumour_piece) {
            main_cx = cx;
            main_cy = cy;
            main_b = b;
        }
        m->e_piece[m->n_ell] = i;
        m->e[m->n_ell++] = make_ell(cx, cy, a, b, th);
        for (int k = 0; k < SYN_LOBES; k++) {
            double phi = unif(&rs, 0, 2 * M_PI), d = unif(&rs, 0.35, 0.7) * a;
            double la = a * unif(&rs, 0.3, 0.5), lb = la * unif(&rs, 0.5, 0.9);
            m->e_piece[m->n_ell] = i;
            m->e[m->n_ell++] = make_ell(cx + d * cos(phi), cy + d * sin(phi), la, lb, unif(&rs, 0, M_PI));
        }
        /* holes strictly inside the main ellipse: |centre offset| + radius <= 0.68 b < b */
        for (int k = 0; k < p->n_holes; k++) {
            double phi = unif(&rs, 0, 2 * M_PI), d = unif(&rs, 0.1, 0.4) * b;
            double ha = b * unif(&rs, 0.15, 0.28), hb = ha * unif(&rs, 0.6, 1.0);
            m->h[m->n_hell++] = make_ell(cx + d * cos(phi), cy + d * sin(phi), ha, hb, unif(&rs, 0, M_PI));
        }
        /* eosin pink, a little different per piece */
        m->base[i][0] = (uint8_t)(226 + (int)unif(&rs, -8, 8));
        m->base[i][1] = (uint8_t)(150 + (int)unif(&rs, -14, 14));
        m->base[i][2] = (uint8_t)(196 + (int)unif(&rs, -10, 10));
    }
    int cell = (int)lround(10.0 / p->mpp); /* nuclei on a ~10 µm grid, radius ~3 µm */
    m->cell = cell < 4 ? 4 : cell;
    double rn = 0.3 * m->cell;
    m->rn2 = rn * rn;
    if (p->tumour_um > 0) {
        /* its own random stream, so slides without a tumour are unchanged */
        uint64_t ts = p->seed * 0x9E3779B97F4A7C15ull + 777;
        double phi = unif(&ts, 0, 2 * M_PI), d = unif(&ts, 0, 0.3) * main_b;
        m->has_tumour = 1;
        m->tum_cx = main_cx + d * cos(phi);
        m->tum_cy = main_cy + d * sin(phi);
        double r = p->tumour_um / p->mpp;
        m->tum_r2 = r * r;
        int tc = (int)lround(7.5 / p->mpp); /* denser nuclei, radius ~3.2 µm */
        m->tcell = tc < 4 ? 4 : tc;
        double trn = 0.42 * m->tcell;
        m->trn2 = trn * trn;
    }
    if (p->n_pen > 0) {
        /* pen strokes: their own stream, so the rest of the slide is unchanged */
        static const uint8_t inks[4][3] = {{34, 120, 70}, {40, 60, 150}, {45, 42, 52}, {170, 40, 60}};
        uint64_t ps = p->seed * 0xA24BAED4963EE407ull + 4242;
        m->n_pen = p->n_pen;
        for (int k = 0; k < p->n_pen; k++) {
            pen *q = &m->pens[k];
            q->r = unif(&ps, 20, 60) / p->mpp;
            if (q->r < 1.5) q->r = 1.5;
            const uint8_t *ink = inks[(int)unif(&ps, 0, 4) & 3];
            for (int c = 0; c < 3; c++) q->ink[c] = ink[c];
            q->alpha = unif(&ps, 0.6, 0.85);
            double len = unif(&ps, 0.3, 0.8) * fmin(W, H), step = 0.5 * q->r;
            int n = (int)(len / step) + 1;
            if (n > SYN_PEN_DOTS) {
                n = SYN_PEN_DOTS;
                step = len / (n - 1);
            }
            double x = unif(&ps, 0.1, 0.9) * W, y = unif(&ps, 0.1, 0.9) * H, th = unif(&ps, 0, 2 * M_PI);
            double turn = unif(&ps, -1, 1) * 2.5 / len; /* radians per px: a gentle arc */
            q->n = n;
            q->xmin = q->ymin = INFINITY;
            q->xmax = q->ymax = -INFINITY;
            for (int i = 0; i < n; i++) {
                q->x[i] = x;
                q->y[i] = y;
                q->xmin = fmin(q->xmin, x - q->r);
                q->xmax = fmax(q->xmax, x + q->r);
                q->ymin = fmin(q->ymin, y - q->r);
                q->ymax = fmax(q->ymax, y + q->r);
                th += turn * step + unif(&ps, -0.15, 0.15) * step / q->r * 0.2;
                x += step * cos(th);
                y += step * sin(th);
            }
        }
    }
    if (p->texture) {
        uint64_t xs = p->seed * 0x94D049BB133111EBull + 99;
        m->tex = p->texture;
        for (int i = 0; i < n; i++) {
            m->tex_off[i][0] = (int)unif(&xs, 0, 2.0 * p->texture->win);
            m->tex_off[i][1] = (int)unif(&xs, 0, 2.0 * p->texture->win);
        }
    }
}

/* Integer pixel span [x0, x1) of ellipse e on row y (pixel centres), or 0. */
static int ell_span(const ell *e, int64_t y, int64_t W, int64_t *x0, int64_t *x1)
{
    double dy = (double)y + 0.5 - e->cy;
    if (fabs(dy) > e->hy) return 0;
    double A = e->qa, B = e->qb * dy, C = e->qc * dy * dy - 1;
    double disc = B * B - 4 * A * C;
    if (disc < 0) return 0;
    double sq = sqrt(disc);
    double lo = e->cx + (-B - sq) / (2 * A), hi = e->cx + (-B + sq) / (2 * A);
    double a = ceil(lo - 0.5), b = floor(hi - 0.5) + 1;
    if (a < 0) a = 0;
    if (b > (double)W) b = (double)W;
    if (!(b > a)) return 0;
    *x0 = (int64_t)a;
    *x1 = (int64_t)b;
    return 1;
}

typedef struct span {
    int64_t a, b;
    int piece;
} span;

static int span_cmp(const void *x, const void *y)
{
    const span *p = x, *q = y;
    if (p->a != q->a) return p->a < q->a ? -1 : 1;
    return (p->piece > q->piece) - (p->piece < q->piece);
}

/* sort + merge in place (a merged run keeps the piece of its leftmost
 * span); returns the new count */
static int span_union(span *s, int n)
{
    if (n <= 1) return n;
    qsort(s, (size_t)n, sizeof *s, span_cmp);
    int k = 0;
    for (int i = 1; i < n; i++) {
        if (s[i].a <= s[k].b) {
            if (s[i].b > s[k].b) s[k].b = s[i].b;
        } else {
            s[++k] = s[i];
        }
    }
    return k + 1;
}

#define SYN_MAX_SPANS (SYN_MAX_ELL + SYN_MAX_HELL)

/* Tissue spans of row y (sorted, disjoint, clipped to [0, W)) into out[]
 * (capacity SYN_MAX_SPANS), each with the piece that colours it. */
static int row_spans(const model *m, int64_t y, span *out)
{
    span t[SYN_MAX_ELL], h[SYN_MAX_HELL];
    int nt = 0, nh = 0;
    for (int i = 0; i < m->n_ell; i++) {
        int64_t a, b;
        if (ell_span(&m->e[i], y, m->W, &a, &b)) t[nt++] = (span){a, b, m->e_piece[i]};
    }
    if (!nt) return 0;
    nt = span_union(t, nt);
    for (int i = 0; i < m->n_hell; i++) {
        int64_t a, b;
        if (ell_span(&m->h[i], y, m->W, &a, &b)) h[nh++] = (span){a, b, 0};
    }
    nh = span_union(h, nh);
    /* difference t - h */
    int n = 0, j = 0;
    for (int i = 0; i < nt; i++) {
        int64_t a = t[i].a, b = t[i].b;
        while (j < nh && h[j].b <= a) j++;
        for (int k = j; a < b;) {
            if (k < nh && h[k].a < b) {
                if (h[k].a > a) out[n++] = (span){a, h[k].a, t[i].piece};
                if (h[k].b > a) a = h[k].b;
                k++;
            } else {
                out[n++] = (span){a, b, t[i].piece};
                break;
            }
        }
    }
    return n;
}

/* u mirrored into [0, n) (period 2n) */
static inline int mirror(int64_t u, int n)
{
    int64_t p = u % (2 * (int64_t)n);
    if (p < 0) p += 2 * (int64_t)n;
    return (int)(p < n ? p : 2 * (int64_t)n - 1 - p);
}

/* texture pixels: normal tissue from the first window (offset per piece);
 * tumour from the second, transposed and recoloured darker and purpler */
static inline void tex_rgb(const model *m, int piece, int tumour, int64_t x, int64_t y, uint8_t *o)
{
    const tl_synth_texture *t = m->tex;
    const uint8_t *px;
    if (!tumour) {
        int u = mirror(x + m->tex_off[piece][0], t->win), v = mirror(y + m->tex_off[piece][1], t->win);
        px = t->rgb + ((size_t)(t->ny + v) * t->w + (size_t)(t->nx + u)) * 3;
        o[0] = px[0];
        o[1] = px[1];
        o[2] = px[2];
        return;
    }
    int u = mirror(y, t->win), v = mirror(x, t->win);
    px = t->rgb + ((size_t)(t->ty + v) * t->w + (size_t)(t->tx + u)) * 3;
    int r = (int)(px[0] * 0.72), g = (int)(px[1] * 0.58), b = (int)(px[2] * 0.86 + 12);
    o[0] = (uint8_t)r;
    o[1] = (uint8_t)g;
    o[2] = (uint8_t)(b > 255 ? 255 : b);
}

static inline void tumour_rgb(const model *m, int64_t x, int64_t y, uint8_t *o)
{
    if (m->tex) {
        tex_rgb(m, 0, 1, x, y, o);
        return;
    }
    uint64_t hp = hash3((uint64_t)x, (uint64_t)y, m->seed ^ 0x7777ull);
    int noise = (int)(hp & 31) - 16;
    int64_t cx = x / m->tcell, cy = y / m->tcell;
    uint64_t hc = hash3((uint64_t)cx ^ 0x3C3C3C3Cull, (uint64_t)cy, m->seed ^ 0x1b873593ull);
    int r = 196, g = 118, b = 192; /* purpler stroma */
    if ((hc & 127) < 104) {        /* most cells hold a (large, dark) nucleus */
        double rn = sqrt(m->trn2), span_c = m->tcell - 2 * rn;
        double nx = (double)(cx * m->tcell) + rn + span_c * (double)((hc >> 8) & 1023) / 1023.0;
        double ny = (double)(cy * m->tcell) + rn + span_c * (double)((hc >> 18) & 1023) / 1023.0;
        double dx = (double)x + 0.5 - nx, dy = (double)y + 0.5 - ny;
        if (dx * dx + dy * dy <= m->trn2) {
            int shade = (int)((hc >> 28) & 31) - 16;
            r = 84 + shade;
            g = 40 + shade;
            b = 128 + shade / 2;
        }
    }
    r += noise;
    g += noise;
    b += noise;
    o[0] = (uint8_t)(r < 0 ? 0 : r > 255 ? 255 : r);
    o[1] = (uint8_t)(g < 0 ? 0 : g > 255 ? 255 : g);
    o[2] = (uint8_t)(b < 0 ? 0 : b > 255 ? 255 : b);
}

static inline void tissue_rgb(const model *m, int piece, int64_t x, int64_t y, uint8_t *o)
{
    if (m->has_tumour) {
        double dx = (double)x + 0.5 - m->tum_cx, dy = (double)y + 0.5 - m->tum_cy;
        if (dx * dx + dy * dy <= m->tum_r2) {
            tumour_rgb(m, x, y, o);
            return;
        }
    }
    if (m->tex) {
        tex_rgb(m, piece, 0, x, y, o);
        return;
    }
    uint64_t hp = hash3((uint64_t)x, (uint64_t)y, m->seed);
    int noise = (int)(hp & 31) - 16; /* same on all channels: keeps the hue */
    int64_t cx = x / m->cell, cy = y / m->cell;
    uint64_t hc = hash3((uint64_t)cx ^ 0xA5A5A5A5ull, (uint64_t)cy, m->seed ^ 0x5bd1e995ull);
    int r, g, b;
    r = m->base[piece][0];
    g = m->base[piece][1];
    b = m->base[piece][2];
    if ((hc & 127) < 58) { /* this cell holds a nucleus */
        double rn = sqrt(m->rn2), span_c = m->cell - 2 * rn;
        double nx = (double)(cx * m->cell) + rn + span_c * (double)((hc >> 8) & 1023) / 1023.0;
        double ny = (double)(cy * m->cell) + rn + span_c * (double)((hc >> 18) & 1023) / 1023.0;
        double dx = (double)x + 0.5 - nx, dy = (double)y + 0.5 - ny;
        if (dx * dx + dy * dy <= m->rn2) {
            int shade = (int)((hc >> 28) & 31) - 16;
            r = 112 + shade;
            g = 64 + shade;
            b = 152 + shade / 2;
        }
    }
    r += noise;
    g += noise;
    b += noise;
    o[0] = (uint8_t)(r < 0 ? 0 : r > 255 ? 255 : r);
    o[1] = (uint8_t)(g < 0 ? 0 : g > 255 ? 255 : g);
    o[2] = (uint8_t)(b < 0 ? 0 : b > 255 ? 255 : b);
}

#define SYN_BG 243

/* Render row y, columns [x0, x0+w), into o (w*3 bytes). */
static void render_row(const model *m, int64_t y, int64_t x0, int64_t w, uint8_t *o)
{
    memset(o, SYN_BG, (size_t)w * 3);
    span s[SYN_MAX_SPANS];
    int n = row_spans(m, y, s);
    for (int i = 0; i < n; i++) {
        int64_t a = s[i].a > x0 ? s[i].a : x0, b = s[i].b < x0 + w ? s[i].b : x0 + w;
        for (int64_t x = a; x < b; x++) tissue_rgb(m, s[i].piece, x, y, o + (x - x0) * 3);
    }
    /* pen ink over glass and tissue: the union of the row spans of each stroke's disks */
    for (int k = 0; k < m->n_pen; k++) {
        const pen *q = &m->pens[k];
        double yc = (double)y + 0.5;
        if (yc < q->ymin || yc > q->ymax || q->xmax < (double)x0 || q->xmin > (double)(x0 + w)) continue;
        span sp[SYN_PEN_DOTS];
        int ns = 0;
        for (int i = 0; i < q->n; i++) {
            double dy = yc - q->y[i];
            if (fabs(dy) > q->r) continue;
            double hw = sqrt(q->r * q->r - dy * dy);
            double lo = ceil(q->x[i] - hw - 0.5), hi = floor(q->x[i] + hw - 0.5) + 1;
            if (lo < (double)x0) lo = (double)x0;
            if (hi > (double)(x0 + w)) hi = (double)(x0 + w);
            if (hi > lo) sp[ns++] = (span){(int64_t)lo, (int64_t)hi, 0};
        }
        ns = span_union(sp, ns);
        for (int i = 0; i < ns; i++)
            for (int64_t x = sp[i].a; x < sp[i].b; x++) {
                uint8_t *px = o + (x - x0) * 3;
                uint64_t h = hash3((uint64_t)x, (uint64_t)y, m->seed ^ 0x9e11ull);
                double a = q->alpha + 0.08 * ((double)(h & 255) / 255.0 - 0.5);
                for (int c = 0; c < 3; c++) px[c] = (uint8_t)lround(px[c] * (1 - a) + q->ink[c] * a);
            }
    }
}

int tl_synth_pixel(const tl_synth_params *p, int64_t x, int64_t y, uint8_t rgb[3], int *is_tissue)
{
    if (check_params(p, NULL)) return -1;
    if (x < 0 || y < 0 || x >= p->width || y >= p->height)
        return ncmi_error_set("synthetic slide: pixel (%lld, %lld) outside %lldx%lld", (long long)x, (long long)y,
                              (long long)p->width, (long long)p->height);
    model *m = malloc(sizeof *m);
    if (!m) return ncmi_error_set("synthetic slide: out of memory");
    build_model(m, p);
    span s[SYN_MAX_SPANS];
    int n = row_spans(m, y, s), t = 0;
    for (int i = 0; i < n; i++)
        if (x >= s[i].a && x < s[i].b) t = 1;
    render_row(m, y, x, 1, rgb);
    if (is_tissue) *is_tissue = t;
    free(m);
    return 0;
}

/* ---------------------------------------------------------------- truth */

static void add_span_cells(double *acc, int64_t a, int64_t b, int64_t ds)
{
    while (a < b) {
        int64_t c = a / ds, end = (c + 1) * ds;
        if (end > b) end = b;
        acc[c] += (double)(end - a);
        a = end;
    }
}

/* truth (may be NULL) and, when tile_cnt != NULL, tissue pixels per
 * level-0 tile ([tiles_y * tiles_x]). */
static int compute_truth(const model *m, const tl_synth_params *p, tl_synth_truth *t, double *tile_cnt)
{
    int64_t W = m->W, H = m->H;
    int ds = (int)((((W > H ? W : H) + p->mask_max_side - 1) / p->mask_max_side));
    if (ds < 1) ds = 1;
    int mw = (int)((W + ds - 1) / ds), mh = (int)((H + ds - 1) / ds);
    double *acc = calloc((size_t)mw * mh, sizeof *acc);
    int64_t tx = (W + p->tile - 1) / p->tile;
    if (!acc) return ncmi_error_set("synthetic slide: out of memory (truth mask %dx%d)", mw, mh);
    double total = 0, tum = 0;
    span s[SYN_MAX_SPANS];
    for (int64_t y = 0; y < H; y++) {
        int n = row_spans(m, y, s);
        double *row = acc + (size_t)(y / ds) * mw;
        /* the tumour disk's pixel span on this row (pixel centres, as tissue_rgb) */
        int64_t ta = 0, tb = 0;
        if (m->has_tumour) {
            double dy = (double)y + 0.5 - m->tum_cy;
            if (dy * dy <= m->tum_r2) {
                double hw = sqrt(m->tum_r2 - dy * dy);
                ta = (int64_t)ceil(m->tum_cx - hw - 0.5);
                tb = (int64_t)floor(m->tum_cx + hw - 0.5) + 1;
            }
        }
        for (int i = 0; i < n; i++) {
            if (tb > ta) {
                int64_t a = s[i].a > ta ? s[i].a : ta, b = s[i].b < tb ? s[i].b : tb;
                if (b > a) tum += (double)(b - a);
            }
            total += (double)(s[i].b - s[i].a);
            add_span_cells(row, s[i].a, s[i].b, ds);
            if (tile_cnt) add_span_cells(tile_cnt + (size_t)(y / p->tile) * tx, s[i].a, s[i].b, p->tile);
        }
    }
    if (t) {
        memset(t, 0, sizeof *t);
        t->width = W;
        t->height = H;
        t->mpp = p->mpp;
        t->tissue_area = total;
        t->tissue_fraction = total / ((double)W * (double)H);
        t->mask_w = mw;
        t->mask_h = mh;
        t->mask_ds = ds;
        t->coverage = malloc((size_t)mw * mh * sizeof *t->coverage);
        t->mask = malloc((size_t)mw * mh);
        if (!t->coverage || !t->mask) {
            free(acc);
            tl_synth_truth_free(t);
            return ncmi_error_set("synthetic slide: out of memory (truth mask %dx%d)", mw, mh);
        }
        for (int cy = 0; cy < mh; cy++)
            for (int cx = 0; cx < mw; cx++) {
                int64_t cwid = (cx + 1) * (int64_t)ds > W ? W - cx * (int64_t)ds : ds;
                int64_t chei = (cy + 1) * (int64_t)ds > H ? H - cy * (int64_t)ds : ds;
                float f = (float)(acc[(size_t)cy * mw + cx] / ((double)cwid * (double)chei));
                t->coverage[(size_t)cy * mw + cx] = f;
                t->mask[(size_t)cy * mw + cx] = f >= 0.5f ? 255 : 0;
            }
        t->n_pieces = m->n_pieces;
        t->n_holes_total = m->n_hell;
        t->has_tumour = m->has_tumour;
        t->tumour_cx = m->tum_cx;
        t->tumour_cy = m->tum_cy;
        t->tumour_r = m->has_tumour ? sqrt(m->tum_r2) : 0;
        t->tumour_area = tum;
        t->n_pen = m->n_pen;
        if (m->n_pen) {
            double x0 = INFINITY, y0 = INFINITY, x1 = -INFINITY, y1 = -INFINITY;
            for (int k = 0; k < m->n_pen; k++) {
                x0 = fmin(x0, m->pens[k].xmin);
                y0 = fmin(y0, m->pens[k].ymin);
                x1 = fmax(x1, m->pens[k].xmax);
                y1 = fmax(y1, m->pens[k].ymax);
            }
            x0 = fmax(0, floor(x0));
            y0 = fmax(0, floor(y0));
            x1 = fmin((double)W, ceil(x1));
            y1 = fmin((double)H, ceil(y1));
            if (x1 > x0 && y1 > y0) {
                t->pen_rect[0] = (int64_t)x0;
                t->pen_rect[1] = (int64_t)y0;
                t->pen_rect[2] = (int64_t)(x1 - x0);
                t->pen_rect[3] = (int64_t)(y1 - y0);
            }
        }
    }
    free(acc);
    return 0;
}

int tl_synth_in_tumour(const tl_synth_truth *t, double x, double y)
{
    if (!t->has_tumour) return 0;
    double dx = x - t->tumour_cx, dy = y - t->tumour_cy;
    return dx * dx + dy * dy <= t->tumour_r * t->tumour_r;
}

int tl_synth_truth_compute(const tl_synth_params *p, tl_synth_truth *truth)
{
    if (check_params(p, NULL)) return -1;
    model *m = malloc(sizeof *m);
    if (!m) return ncmi_error_set("synthetic slide: out of memory");
    build_model(m, p);
    int rc = compute_truth(m, p, truth, NULL);
    free(m);
    return rc;
}

/* ---------------------------------------------------------------- TIFF patching */

#if NCMI_HAVE_VIPS

typedef struct tiff_io {
    int fd;
    int le, big;
} tiff_io;

static int rd(const tiff_io *t, uint64_t off, void *buf, size_t n)
{
    return pread(t->fd, buf, n, (off_t)off) == (ssize_t)n ? 0 : -1;
}

static int wr(const tiff_io *t, uint64_t off, const void *buf, size_t n)
{
    return pwrite(t->fd, buf, n, (off_t)off) == (ssize_t)n ? 0 : -1;
}

static uint64_t get_u(const tiff_io *t, const uint8_t *b, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++) v |= (uint64_t)b[i] << (8 * (t->le ? i : n - 1 - i));
    return v;
}

static void put_u(const tiff_io *t, uint8_t *b, uint64_t v, int n)
{
    for (int i = 0; i < n; i++) b[t->le ? i : n - 1 - i] = (uint8_t)(v >> (8 * i));
}

static int type_size(int type)
{
    switch (type) {
    case 1: case 2: case 6: case 7: return 1;
    case 3: case 8: return 2;
    case 4: case 9: case 11: case 13: return 4;
    case 5: case 10: case 12: case 16: case 17: case 18: return 8;
    default: return 0;
    }
}

typedef struct tiff_ifd {
    uint64_t off;       /* IFD offset */
    uint64_t n;         /* entries */
    uint8_t *e;         /* raw entries */
    uint64_t next;
} tiff_ifd;

static int esz(const tiff_io *t) { return t->big ? 20 : 12; }

static int read_ifd(const tiff_io *t, uint64_t off, tiff_ifd *d)
{
    uint8_t b[8];
    int cn = t->big ? 8 : 2, on = t->big ? 8 : 4;
    memset(d, 0, sizeof *d);
    d->off = off;
    if (rd(t, off, b, (size_t)cn)) return -1;
    d->n = get_u(t, b, cn);
    if (d->n == 0 || d->n > 4096) return -1;
    d->e = malloc((size_t)d->n * esz(t));
    if (!d->e || rd(t, off + cn, d->e, (size_t)d->n * esz(t))) return free(d->e), d->e = NULL, -1;
    if (rd(t, off + cn + d->n * esz(t), b, (size_t)on)) return free(d->e), d->e = NULL, -1;
    d->next = get_u(t, b, on);
    return 0;
}

/* value i of the entry with `tag` (integer types), or -1 */
static int ifd_value(const tiff_io *t, const tiff_ifd *d, int tag, uint64_t i, uint64_t *v)
{
    for (uint64_t k = 0; k < d->n; k++) {
        const uint8_t *e = d->e + k * esz(t);
        if ((int)get_u(t, e, 2) != tag) continue;
        int type = (int)get_u(t, e + 2, 2), ts = type_size(type);
        uint64_t cnt = get_u(t, e + 4, t->big ? 8 : 4);
        if (!ts || i >= cnt) return -1;
        int inl = t->big ? 8 : 4;
        const uint8_t *vp = e + (t->big ? 12 : 8);
        uint8_t b[8];
        if (cnt * (uint64_t)ts <= (uint64_t)inl) {
            *v = get_u(t, vp + i * ts, ts);
            return 0;
        }
        uint64_t off = get_u(t, vp, inl);
        if (rd(t, off + i * ts, b, (size_t)ts)) return -1;
        *v = get_u(t, b, ts);
        return 0;
    }
    return -1;
}

static int tiff_open_io(tiff_io *t, const char *path)
{
    uint8_t h[16];
    t->fd = open(path, O_RDWR);
    if (t->fd < 0) return -1;
    if (rd(t, 0, h, 16)) return -1;
    if (h[0] == 'I' && h[1] == 'I') t->le = 1;
    else if (h[0] == 'M' && h[1] == 'M') t->le = 0;
    else return -1;
    uint64_t magic = get_u(t, h + 2, 2);
    t->big = magic == 43;
    if (magic != 42 && magic != 43) return -1;
    return 0;
}

static uint64_t first_ifd(const tiff_io *t)
{
    uint8_t h[16];
    if (rd(t, 0, h, 16)) return 0;
    return t->big ? get_u(t, h + 8, 8) : get_u(t, h + 4, 4);
}

/* remove XResolution (282), YResolution (283), ResolutionUnit (296) from every IFD */
static int strip_resolution(const tiff_io *t)
{
    uint64_t off = first_ifd(t);
    for (int guard = 0; off && guard < 256; guard++) {
        tiff_ifd d;
        if (read_ifd(t, off, &d)) return -1;
        uint64_t k = 0;
        for (uint64_t i = 0; i < d.n; i++) {
            int tag = (int)get_u(t, d.e + i * esz(t), 2);
            if (tag == 282 || tag == 283 || tag == 296) continue;
            memmove(d.e + k * esz(t), d.e + i * esz(t), (size_t)esz(t));
            k++;
        }
        int cn = t->big ? 8 : 2, on = t->big ? 8 : 4;
        uint8_t b[8];
        int bad = 0;
        if (k != d.n) {
            put_u(t, b, k, cn);
            bad |= wr(t, off, b, (size_t)cn);
            bad |= wr(t, off + cn, d.e, (size_t)k * esz(t));
            put_u(t, b, d.next, on);
            bad |= wr(t, off + cn + k * esz(t), b, (size_t)on);
        }
        off = d.next;
        free(d.e);
        if (bad) return -1;
    }
    return 0;
}

/* destroy the JPEG header of level-0 tile (tx, ty): after SOI, a SOF0 marker
 * with an impossible length (libjpeg: "Bogus marker length") */
static int corrupt_tile(const tiff_io *t, int64_t tx, int64_t ty)
{
    tiff_ifd d;
    if (read_ifd(t, first_ifd(t), &d)) return -1;
    uint64_t W, tw, off, cnt;
    int rc = -1;
    if (ifd_value(t, &d, 256, 0, &W) == 0 && ifd_value(t, &d, 322, 0, &tw) == 0 && tw > 0) {
        uint64_t across = (W + tw - 1) / tw, idx = (uint64_t)ty * across + (uint64_t)tx;
        if (ifd_value(t, &d, 324, idx, &off) == 0 && ifd_value(t, &d, 325, idx, &cnt) == 0 && cnt >= 16) {
            uint8_t bad[14] = {0xFF, 0xC0, 0x00, 0x01, 0xFF, 0xC0, 0x00, 0x01, 0xFF, 0xC0, 0x00, 0x01, 0xFF, 0xC0};
            rc = wr(t, off + 2, bad, sizeof bad);
        }
    }
    free(d.e);
    return rc;
}

/* ---------------------------------------------------------------- writing */

#include <pthread.h>
#include <vips/vips.h>

static pthread_once_t vips_once = PTHREAD_ONCE_INIT;
static int vips_ok;

static void vips_start(void)
{
    vips_ok = vips_init("ncmi") == 0;
}

static int gen_region(VipsRegion *out, void *seq, void *a, void *b, gboolean *stop)
{
    (void)seq;
    (void)b;
    (void)stop;
    const model *m = a;
    VipsRect *r = &out->valid;
    for (int y = 0; y < r->height; y++)
        render_row(m, r->top + y, r->left, r->width, (uint8_t *)VIPS_REGION_ADDR(out, r->left, r->top + y));
    return 0;
}

static int vips_fail(const char *path, const char *what)
{
    char msg[512];
    snprintf(msg, sizeof msg, "%s", vips_error_buffer());
    vips_error_clear();
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == ' ')) msg[--n] = 0;
    return ncmi_error_set("%s: %s: %s", path, what, msg[0] ? msg : "libvips error");
}

int tl_synth_slide_write(const char *path, const tl_synth_params *p, tl_synth_truth *truth)
{
    if (truth) memset(truth, 0, sizeof *truth);
    if (check_params(p, path)) return -1;
    pthread_once(&vips_once, vips_start);
    if (!vips_ok) return ncmi_error_set("%s: libvips failed to start", path);
    model *m = malloc(sizeof *m);
    if (!m) return ncmi_error_set("%s: out of memory", path);
    build_model(m, p);

    int64_t ttx = (p->width + p->tile - 1) / p->tile, tty = (p->height + p->tile - 1) / p->tile;
    double *tile_cnt = NULL;
    if (p->corrupt_tile && p->corrupt_x < 0) {
        tile_cnt = calloc((size_t)(ttx * tty), sizeof *tile_cnt);
        if (!tile_cnt) {
            free(m);
            return ncmi_error_set("%s: out of memory", path);
        }
    }
    if ((truth || tile_cnt) && compute_truth(m, p, truth, tile_cnt)) {
        free(m);
        free(tile_cnt);
        return ncmi_error_prefix("%s", path);
    }
    int64_t ctx = 0, cty = 0;
    if (p->corrupt_tile) {
        if (p->corrupt_x >= 0) {
            if (p->corrupt_x >= p->width || p->corrupt_y < 0 || p->corrupt_y >= p->height) {
                free(m);
                free(tile_cnt);
                if (truth) tl_synth_truth_free(truth);
                return ncmi_error_set("%s: corrupt point (%lld, %lld) outside the slide", path,
                                      (long long)p->corrupt_x, (long long)p->corrupt_y);
            }
            ctx = p->corrupt_x / p->tile;
            cty = p->corrupt_y / p->tile;
        } else {
            double best = -1, bestd = 0;
            for (int64_t y = 0; y < tty; y++)
                for (int64_t x = 0; x < ttx; x++) {
                    double c = tile_cnt[y * ttx + x];
                    double dx = (x + 0.5) * p->tile - p->width / 2.0, dy = (y + 0.5) * p->tile - p->height / 2.0;
                    double d = dx * dx + dy * dy;
                    if (c > best || (c == best && d < bestd)) {
                        best = c;
                        bestd = d;
                        ctx = x;
                        cty = y;
                    }
                }
        }
    }
    free(tile_cnt);

    char *tmp = NULL;
    if (asprintf(&tmp, "%s.tmp.%ld.tif", path, (long)getpid()) < 0) {
        free(m);
        if (truth) tl_synth_truth_free(truth);
        return ncmi_error_set("%s: out of memory", path);
    }
    VipsImage *im = vips_image_new();
    double ppmm = 1000.0 / p->mpp; /* libvips resolution: pixels per millimetre */
    vips_image_init_fields(im, (int)p->width, (int)p->height, 3, VIPS_FORMAT_UCHAR, VIPS_CODING_NONE,
                           VIPS_INTERPRETATION_sRGB, ppmm, ppmm);
    int rc = 0;
    if (vips_image_pipelinev(im, VIPS_DEMAND_STYLE_THINSTRIP, NULL) ||
        vips_image_generate(im, NULL, gen_region, NULL, m, NULL)) {
        rc = vips_fail(path, "cannot set up the image");
    } else if (vips_tiffsave(im, tmp, "tile", TRUE, "tile_width", p->tile, "tile_height", p->tile, "pyramid",
                             p->no_pyramid ? FALSE : TRUE, "compression", VIPS_FOREIGN_TIFF_COMPRESSION_JPEG, "Q", p->quality, "resunit",
                             VIPS_FOREIGN_TIFF_RESUNIT_CM, "xres", ppmm, "yres", ppmm, "bigtiff",
                             p->width * p->height > ((int64_t)1 << 31) ? TRUE : FALSE, NULL)) {
        rc = vips_fail(path, "tiffsave");
    }
    g_object_unref(im);
    free(m);
    if (rc == 0 && (p->no_resolution || p->corrupt_tile)) {
        tiff_io t;
        int bad = tiff_open_io(&t, tmp);
        if (!bad && p->no_resolution) bad = strip_resolution(&t);
        if (!bad && p->corrupt_tile) bad = corrupt_tile(&t, ctx, cty);
        if (t.fd >= 0 && close(t.fd)) bad = 1;
        if (bad) rc = ncmi_error_set("%s: cannot patch the written TIFF %s", path, tmp);
    }
    if (rc == 0 && rename(tmp, path) != 0) rc = ncmi_error_set("%s: cannot rename %s: %s", path, tmp, strerror(errno));
    if (rc) unlink(tmp);
    free(tmp);
    if (rc == 0 && truth && p->corrupt_tile) {
        int64_t x = ctx * p->tile, y = cty * p->tile;
        int64_t w = x + p->tile > p->width ? p->width - x : p->tile;
        int64_t h = y + p->tile > p->height ? p->height - y : p->tile;
        truth->corrupt = 1;
        truth->corrupt_rect[0] = x;
        truth->corrupt_rect[1] = y;
        truth->corrupt_rect[2] = w;
        truth->corrupt_rect[3] = h;
        /* exact tissue fraction of the tile */
        model *m2 = malloc(sizeof *m2);
        if (m2) {
            build_model(m2, p);
            span s[SYN_MAX_SPANS];
            double c = 0;
            for (int64_t yy = y; yy < y + h; yy++) {
                int n = row_spans(m2, yy, s);
                for (int i = 0; i < n; i++) {
                    int64_t a = s[i].a > x ? s[i].a : x, b = s[i].b < x + w ? s[i].b : x + w;
                    if (b > a) c += (double)(b - a);
                }
            }
            truth->corrupt_tile_tissue = c / ((double)w * (double)h);
            free(m2);
        }
    }
    if (rc && truth) tl_synth_truth_free(truth);
    return rc;
}

/* ---------------------------------------------------------------- texture source */

void tl_synth_texture_free(tl_synth_texture *t)
{
    free(t->rgb);
    memset(t, 0, sizeof *t);
}

/* tissue fraction of every win x win window at stride `st` from an integral
 * image of the tissue map; the best window (optionally not overlapping
 * `avoid`) into *bx, *by. Returns its fraction. */
static double best_window(const double *I, int w, int h, int win, int st, const int *avoid, int *bx, int *by)
{
    double best = -1;
    for (int y = 0; y + win <= h; y += st)
        for (int x = 0; x + win <= w; x += st) {
            if (avoid && x < avoid[0] + win && avoid[0] < x + win && y < avoid[1] + win && avoid[1] < y + win)
                continue;
            size_t W1 = (size_t)w + 1;
            double sum = I[(size_t)(y + win) * W1 + x + win] - I[(size_t)y * W1 + x + win] -
                         I[(size_t)(y + win) * W1 + x] + I[(size_t)y * W1 + x];
            double f = sum / ((double)win * win);
            if (f > best) {
                best = f;
                *bx = x;
                *by = y;
            }
        }
    return best;
}

int tl_synth_texture_load(const char *path, double src_mpp, double dst_mpp, tl_synth_texture *t)
{
    memset(t, 0, sizeof *t);
    if (!(dst_mpp > 0)) return ncmi_error_set("%s: texture: target mpp %g must be > 0", path, dst_mpp);
    pthread_once(&vips_once, vips_start);
    if (!vips_ok) return ncmi_error_set("%s: libvips failed to start", path);
    VipsImage *im = vips_image_new_from_file(path, NULL);
    if (!im) return vips_fail(path, "cannot open the texture source");
    if (!(src_mpp > 0)) {
        double xres = vips_image_get_xres(im); /* pixels per mm; libvips says 1 when unknown */
        src_mpp = xres > 1.001 ? 1000.0 / xres : 0;
        if (!(src_mpp >= 0.05 && src_mpp <= 20)) {
            g_object_unref(im);
            return ncmi_error_set("%s: texture source has no usable resolution (give its um/px)", path);
        }
    }
    VipsImage *a = NULL, *b = NULL, *c = NULL, *d = NULL;
    int rc = 0;
    if (vips_image_hasalpha(im)) {
        double white[3] = {255, 255, 255};
        VipsArrayDouble *bg = vips_array_double_new(white, 3);
        rc = vips_flatten(im, &a, "background", bg, NULL);
        vips_area_unref(VIPS_AREA(bg));
    } else {
        rc = vips_copy(im, &a, NULL);
    }
    if (!rc) rc = vips_colourspace(a, &b, VIPS_INTERPRETATION_sRGB, NULL);
    if (!rc) rc = vips_resize(b, &c, src_mpp / dst_mpp, NULL);
    if (!rc) rc = vips_cast(c, &d, VIPS_FORMAT_UCHAR, NULL);
    size_t sz = 0;
    void *mem = NULL;
    if (!rc && d->Bands < 3) {
        ncmi_error_set("%s: texture source is not RGB", path);
        rc = -2;
    }
    if (!rc) {
        VipsImage *e = NULL;
        if (vips_extract_band(d, &e, 0, "n", 3, NULL)) {
            rc = -1;
        } else {
            mem = vips_image_write_to_memory(e, &sz);
            if (!mem) rc = -1;
            t->w = vips_image_get_width(e);
            t->h = vips_image_get_height(e);
            g_object_unref(e);
        }
    }
    VipsImage *all[5] = {im, a, b, c, d};
    for (int i = 0; i < 5; i++)
        if (all[i]) g_object_unref(all[i]);
    if (rc == -2) return -1;
    if (rc) {
        g_free(mem);
        return vips_fail(path, "cannot read the texture source");
    }
    t->rgb = malloc(sz);
    if (!t->rgb) {
        g_free(mem);
        return ncmi_error_set("%s: out of memory", path);
    }
    memcpy(t->rgb, mem, sz);
    g_free(mem);
    /* tissue map: saturation (max - min) / max >= 0.08 and not glass-bright */
    int w = t->w, h = t->h;
    double *I = calloc((size_t)(w + 1) * (h + 1), sizeof *I);
    if (!I) {
        tl_synth_texture_free(t);
        return ncmi_error_set("%s: out of memory", path);
    }
    for (int y = 0; y < h; y++) {
        double rs = 0;
        for (int x = 0; x < w; x++) {
            const uint8_t *px = t->rgb + ((size_t)y * w + x) * 3;
            int mx = px[0], mn = px[0];
            for (int k = 1; k < 3; k++) {
                if (px[k] > mx) mx = px[k];
                if (px[k] < mn) mn = px[k];
            }
            rs += mx > 0 && (double)(mx - mn) / mx >= 0.08 && mn < 235;
            I[(size_t)(y + 1) * (w + 1) + x + 1] = I[(size_t)y * (w + 1) + x + 1] + rs;
        }
    }
    int win = (w < h ? w : h) / 2;
    if (win > 384) win = 384;
    int st = win / 16 > 1 ? win / 16 : 1;
    double f0 = -1, f1 = -1;
    if (win >= 16) {
        f0 = best_window(I, w, h, win, st, NULL, &t->nx, &t->ny);
        int avoid[2] = {t->nx, t->ny};
        f1 = best_window(I, w, h, win, st, avoid, &t->tx, &t->ty);
    }
    free(I);
    if (win < 16 || f0 < 0.6 || f1 < 0.6) {
        tl_synth_texture_free(t);
        return ncmi_error_set("%s: texture source too small or with too little tissue for two %d px windows at "
                              "%g um/px (tissue fractions %.2f, %.2f; need 0.6)",
                              path, win, dst_mpp, f0, f1);
    }
    t->win = win;
    t->tissue[0] = f0;
    t->tissue[1] = f1;
    return 0;
}

#else /* no libvips */

void tl_synth_texture_free(tl_synth_texture *t) { memset(t, 0, sizeof *t); }

int tl_synth_texture_load(const char *path, double src_mpp, double dst_mpp, tl_synth_texture *t)
{
    (void)src_mpp;
    (void)dst_mpp;
    memset(t, 0, sizeof *t);
    return ncmi_error_set("%s: texture sources need libvips (not found at build time)", path);
}

int tl_synth_slide_write(const char *path, const tl_synth_params *p, tl_synth_truth *truth)
{
    (void)p;
    if (truth) memset(truth, 0, sizeof *truth);
    return ncmi_error_set("%s: synthetic slides need libvips (not found at build time)", path);
}

#endif
