/* Patch grids over segmented tissue (level-0 coordinates).
 *
 * Contour grid = CLAM's WholeSlideImage.process_contour: per tissue contour,
 * candidates on a grid anchored at cv2.boundingRect of the contour (x, y,
 * w = max - min + 1, ...), x-major (np.meshgrid indexing='ij'), stop at
 * x0 + w (use_padding) or min(x0 + w, slide_w - patch + 1); a candidate is
 * kept when the contour check passes (cv2.pointPolygonTest >= 0 on
 * centre = pt + patch//2 and, for four_pt / four_pt_hard, the points
 * centre +- shift, shift = int(patch//2 * 0.5)) and its centre pt + patch/2
 * is not strictly inside (> 0) one of the contour's kept holes (isInHoles).
 * Two deliberate differences from CLAM, both documented in grid.h/README:
 * a contour that yields a single patch is kept (CLAM's `if len(results) > 1`
 * drops it) and a coordinate produced by two contours is written once.
 *
 * Global grid = TRIDENT's WSIPatcher: one grid from (0,0), here with a
 * uniform step = patch - overlap (TRIDENT's _colrow_to_xy places column c at
 * c*patch - overlap*max(c-1, 0), i.e. its first step is a full patch), in
 * row-major order (TRIDENT lists columns first); a patch is kept when the
 * fraction of its area inside tissue (outer contours minus kept holes) is at
 * least min_tissue (TRIDENT: shapely intersection area >= threshold * area;
 * with threshold 0, any intersection). The fraction is estimated on a
 * 16 x 16 sub-grid of sample points (cell centres) per patch, computed with
 * horizontal scanlines through the polygons: cost O(rows * 16 * edges), no
 * raster of the slide. */
#include "grid.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../nn/error.h"

#define SUB 16 /* sub-grid samples per patch side for the tissue fraction */

typedef struct {
    int64_t *xy;
    size_t n, cap;
} coord_buf;

static int push(coord_buf *b, int64_t x, int64_t y)
{
    if (b->n == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 256;
        int64_t *p = realloc(b->xy, cap * 2 * sizeof *p);
        if (!p) return -1;
        b->xy = p;
        b->cap = cap;
    }
    b->xy[2 * b->n] = x;
    b->xy[2 * b->n + 1] = y;
    b->n++;
    return 0;
}

/* ------------------------------------------------------------ dedup (x,y) */

typedef struct {
    int64_t *k; /* pairs; empty slot = INT64_MIN */
    size_t cap, n;
} pt_set;

static uint64_t hash2(int64_t x, int64_t y)
{
    uint64_t h = (uint64_t)x * 0x9E3779B97F4A7C15ull ^ ((uint64_t)y + 0x632BE59BD9B4E019ull) * 0xC2B2AE3D27D4EB4Full;
    h ^= h >> 31;
    return h * 0x94D049BB133111EBull;
}

static int set_grow(pt_set *s)
{
    size_t cap = s->cap ? s->cap * 2 : 1024;
    int64_t *k = malloc(cap * 2 * sizeof *k);
    if (!k) return -1;
    for (size_t i = 0; i < cap; i++) k[2 * i] = INT64_MIN;
    for (size_t i = 0; i < s->cap; i++) {
        if (s->k[2 * i] == INT64_MIN) continue;
        size_t j = hash2(s->k[2 * i], s->k[2 * i + 1]) & (cap - 1);
        while (k[2 * j] != INT64_MIN) j = (j + 1) & (cap - 1);
        k[2 * j] = s->k[2 * i];
        k[2 * j + 1] = s->k[2 * i + 1];
    }
    free(s->k);
    s->k = k;
    s->cap = cap;
    return 0;
}

/* 1 when newly inserted, 0 when present, -1 out of memory */
static int set_insert(pt_set *s, int64_t x, int64_t y)
{
    if ((s->n + 1) * 2 > s->cap && set_grow(s)) return -1;
    size_t j = hash2(x, y) & (s->cap - 1);
    while (s->k[2 * j] != INT64_MIN) {
        if (s->k[2 * j] == x && s->k[2 * j + 1] == y) return 0;
        j = (j + 1) & (s->cap - 1);
    }
    s->k[2 * j] = x;
    s->k[2 * j + 1] = y;
    s->n++;
    return 1;
}

/* ------------------------------------------------------------ contour grid */

static void bounding_rect(const tl_polygon *p, int64_t *x, int64_t *y, int64_t *w, int64_t *h)
{
    double x0 = p->xy[0], x1 = p->xy[0], y0 = p->xy[1], y1 = p->xy[1];
    for (int i = 1; i < p->n; i++) {
        x0 = fmin(x0, p->xy[2 * i]);
        x1 = fmax(x1, p->xy[2 * i]);
        y0 = fmin(y0, p->xy[2 * i + 1]);
        y1 = fmax(y1, p->xy[2 * i + 1]);
    }
    *x = (int64_t)floor(x0);
    *y = (int64_t)floor(y0);
    *w = (int64_t)floor(x1) - *x + 1;
    *h = (int64_t)floor(y1) - *y + 1;
}

/* One horizontal line through a polygon, prepared so that
 * cv2.pointPolygonTest for any point on it costs O(log n): the x of every
 * edge crossing the line (one endpoint <= y, the other > y: OpenCV's
 * straddle test), sorted, and the boundary intervals on the line (vertices
 * and horizontal edges at y), merged. A point is on the boundary (0) when
 * it lies in an interval or on a crossing, else inside when an odd number
 * of crossings lie to its right (OpenCV's counter). Points within 1e-6 of a
 * crossing are settled by the exact OpenCV loop. */
typedef struct {
    double y;
    double *xs;
    size_t nx, cap_x;
    double *iv; /* [a, b] pairs */
    size_t ni, cap_i;
} pline;

static int grow(double **v, size_t *cap, size_t need)
{
    if (need <= *cap) return 0;
    size_t c = *cap ? *cap : 32;
    while (c < need) c *= 2;
    double *p = realloc(*v, c * sizeof *p);
    if (!p) return -1;
    *v = p;
    *cap = c;
    return 0;
}

static int cmp_pair(const void *a, const void *b)
{
    const double *x = a, *y = b;
    return (x[0] > y[0]) - (x[0] < y[0]);
}

static int cmp_dbl(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int pline_build(const tl_polygon *p, double y, pline *L)
{
    L->y = y;
    L->nx = L->ni = 0;
    int n = p->n;
    for (int i = 0; i < n; i++) {
        const double *v0 = p->xy + 2 * (i == 0 ? n - 1 : i - 1), *v = p->xy + 2 * i;
        if (v[1] == y) {
            double a = v[0], b = v[0];
            if (v0[1] == y) {
                a = fmin(v0[0], v[0]);
                b = fmax(v0[0], v[0]);
            }
            if (grow(&L->iv, &L->cap_i, 2 * (L->ni + 1))) return -1;
            L->iv[2 * L->ni] = a;
            L->iv[2 * L->ni + 1] = b;
            L->ni++;
        }
        if ((v0[1] <= y) == (v[1] <= y)) continue;
        if (grow(&L->xs, &L->cap_x, L->nx + 1)) return -1;
        L->xs[L->nx++] = v0[0] + (y - v0[1]) * (v[0] - v0[0]) / (v[1] - v0[1]);
    }
    if (L->nx > 1) qsort(L->xs, L->nx, sizeof *L->xs, cmp_dbl);
    if (L->ni > 1) {
        qsort(L->iv, L->ni, 2 * sizeof *L->iv, cmp_pair);
        size_t k = 0;
        for (size_t i = 1; i < L->ni; i++) {
            if (L->iv[2 * i] <= L->iv[2 * k + 1]) {
                if (L->iv[2 * i + 1] > L->iv[2 * k + 1]) L->iv[2 * k + 1] = L->iv[2 * i + 1];
            } else {
                k++;
                L->iv[2 * k] = L->iv[2 * i];
                L->iv[2 * k + 1] = L->iv[2 * i + 1];
            }
        }
        L->ni = k + 1;
    }
    return 0;
}

static int pline_test(const pline *L, const tl_polygon *p, double px)
{
    /* boundary intervals: last one starting at or before px */
    size_t lo = 0, hi = L->ni;
    while (lo < hi) {
        size_t m = (lo + hi) / 2;
        if (L->iv[2 * m] <= px) lo = m + 1;
        else hi = m;
    }
    if (lo > 0 && px <= L->iv[2 * (lo - 1) + 1]) return 0;
    /* crossings: first strictly right of px */
    lo = 0;
    hi = L->nx;
    while (lo < hi) {
        size_t m = (lo + hi) / 2;
        if (L->xs[m] <= px) lo = m + 1;
        else hi = m;
    }
    if ((lo > 0 && px - L->xs[lo - 1] < 1e-6) || (lo < L->nx && L->xs[lo] - px < 1e-6)) return tl_polygon_test(p, px, L->y);
    return ((L->nx - lo) & 1) ? 1 : -1;
}

static void pline_free(pline *L)
{
    free(L->xs);
    free(L->iv);
}

/* CLAM's candidates for one contour, evaluated row by row (one prepared
 * line per distinct test y), emitted x-major. */
static int grid_one_contour(const tl_contour *c, const tl_grid_params *p, pt_set *seen, int dedup, coord_buf *out)
{
    int64_t ps = p->patch_level0, step = p->step_level0;
    int64_t x0, y0, w, h;
    bounding_rect(&c->outer, &x0, &y0, &w, &h);
    int64_t stop_x = x0 + w, stop_y = y0 + h;
    if (!p->use_padding) {
        if (stop_x > p->slide_w - ps + 1) stop_x = p->slide_w - ps + 1;
        if (stop_y > p->slide_h - ps + 1) stop_y = p->slide_h - ps + 1;
    }
    if (stop_x <= x0 || stop_y <= y0) return 0;
    int64_t nx = (stop_x - x0 + step - 1) / step, ny = (stop_y - y0 + step - 1) / step;
    uint8_t *keep = calloc((size_t)(nx * ny), 1);
    pline lines[2] = {{0}}, *hl = calloc((size_t)(c->n_holes > 0 ? c->n_holes : 1), sizeof *hl);
    int rc = -1;
    if (!keep || !hl) goto done;
    int64_t half = ps / 2, s = (ps / 2) / 2; /* centre = pt + patch//2, shift = int(patch//2 * 0.5) */
    int four = p->check != TL_CHECK_CENTER && s > 0;
    for (int64_t j = 0; j < ny; j++) {
        int64_t y = y0 + j * step;
        double cy = (double)(y + half);
        if (four) {
            if (pline_build(&c->outer, cy - (double)s, &lines[0]) || pline_build(&c->outer, cy + (double)s, &lines[1]))
                goto done;
        } else if (pline_build(&c->outer, cy, &lines[0]))
            goto done;
        double hy = (double)y + (double)ps / 2;
        for (int k = 0; k < c->n_holes; k++)
            if (pline_build(&c->holes[k], hy, &hl[k])) goto done;
        for (int64_t i = 0; i < nx; i++) {
            int64_t x = x0 + i * step;
            double cx = (double)(x + half);
            int ok;
            if (!four)
                ok = pline_test(&lines[0], &c->outer, cx) >= 0;
            else {
                /* CLAM's order: (-,-), (+,+), (+,-), (-,+) */
                int a = pline_test(&lines[0], &c->outer, cx - (double)s) >= 0;
                int b = pline_test(&lines[1], &c->outer, cx + (double)s) >= 0;
                int d = pline_test(&lines[0], &c->outer, cx + (double)s) >= 0;
                int e = pline_test(&lines[1], &c->outer, cx - (double)s) >= 0;
                ok = p->check == TL_CHECK_FOUR_PT_HARD ? a && b && d && e : a || b || d || e;
            }
            if (!ok) continue;
            double hx = (double)x + (double)ps / 2;
            for (int k = 0; k < c->n_holes && ok; k++) ok = pline_test(&hl[k], &c->holes[k], hx) <= 0;
            keep[i * ny + j] = (uint8_t)ok;
        }
    }
    for (int64_t i = 0; i < nx; i++)
        for (int64_t j = 0; j < ny; j++) {
            if (!keep[i * ny + j]) continue;
            int64_t x = x0 + i * step, y = y0 + j * step;
            if (dedup) {
                int r = set_insert(seen, x, y);
                if (r < 0) goto done;
                if (r == 0) continue;
            }
            if (push(out, x, y)) goto done;
        }
    rc = 0;
done:
    free(keep);
    pline_free(&lines[0]);
    pline_free(&lines[1]);
    if (hl)
        for (int k = 0; k < c->n_holes; k++) pline_free(&hl[k]);
    free(hl);
    return rc;
}

static int grid_contours(const tl_tissue *t, const tl_grid_params *p, coord_buf *out)
{
    pt_set seen = {0};
    for (int ci = 0; ci < t->n; ci++) {
        if (t->c[ci].outer.n <= 0) continue;
        if (grid_one_contour(&t->c[ci], p, &seen, t->n > 1, out)) {
            free(seen.k);
            return ncmi_error_set("patch grid: out of memory");
        }
    }
    free(seen.k);
    return 0;
}

/* ------------------------------------------------------------- global grid */

typedef struct {
    double a, b;
} ival;

typedef struct {
    ival *v;
    size_t n, cap;
} ivals;

static int ival_push(ivals *s, double a, double b)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 64;
        ival *v = realloc(s->v, cap * sizeof *v);
        if (!v) return -1;
        s->v = v;
        s->cap = cap;
    }
    s->v[s->n].a = a;
    s->v[s->n].b = b;
    s->n++;
    return 0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int cmp_ival(const void *a, const void *b)
{
    const ival *x = a, *y = b;
    return (x->a > y->a) - (x->a < y->a);
}

/* crossings of the horizontal line at y with polygon p, sorted, appended to
 * xs (n in *nx); even-odd pairs are the inside intervals */
static int crossings(const tl_polygon *p, double y, double **xs, size_t *nx, size_t *cap)
{
    size_t n0 = *nx;
    for (int i = 0; i < p->n; i++) {
        int j = i + 1 == p->n ? 0 : i + 1;
        double y0 = p->xy[2 * i + 1], y1 = p->xy[2 * j + 1];
        if ((y0 <= y) == (y1 <= y)) continue;
        double x0 = p->xy[2 * i], x1 = p->xy[2 * j];
        if (*nx == *cap) {
            size_t c = *cap ? *cap * 2 : 64;
            double *v = realloc(*xs, c * sizeof *v);
            if (!v) return -1;
            *xs = v;
            *cap = c;
        }
        (*xs)[(*nx)++] = x0 + (y - y0) * (x1 - x0) / (y1 - y0);
    }
    if (*nx - n0 > 1) qsort(*xs + n0, *nx - n0, sizeof **xs, cmp_double);
    return 0;
}

/* merge sorted-by-start intervals in place */
static void merge(ivals *s)
{
    if (s->n == 0) return;
    qsort(s->v, s->n, sizeof *s->v, cmp_ival);
    size_t k = 0;
    for (size_t i = 1; i < s->n; i++) {
        if (s->v[i].a <= s->v[k].b) {
            if (s->v[i].b > s->v[k].b) s->v[k].b = s->v[i].b;
        } else
            s->v[++k] = s->v[i];
    }
    s->n = k + 1;
}

/* tissue along the line y: union over contours of (outer minus its holes) */
static int scanline(const tl_tissue *t, const double *bb, double y, ivals *u, ivals *oi, ivals *hi, double **xs,
                    size_t *xcap)
{
    u->n = 0;
    for (int ci = 0; ci < t->n; ci++) {
        if (y < bb[4 * ci + 1] || y > bb[4 * ci + 3]) continue;
        const tl_contour *c = &t->c[ci];
        size_t nx = 0;
        oi->n = hi->n = 0;
        if (crossings(&c->outer, y, xs, &nx, xcap)) return -1;
        for (size_t k = 0; k + 1 < nx; k += 2)
            if (ival_push(oi, (*xs)[k], (*xs)[k + 1])) return -1;
        for (int h = 0; h < c->n_holes; h++) {
            nx = 0;
            if (crossings(&c->holes[h], y, xs, &nx, xcap)) return -1;
            for (size_t k = 0; k + 1 < nx; k += 2)
                if (ival_push(hi, (*xs)[k], (*xs)[k + 1])) return -1;
        }
        merge(hi);
        /* oi minus hi (both sorted, disjoint) */
        size_t hk = 0;
        for (size_t k = 0; k < oi->n; k++) {
            double a = oi->v[k].a, b = oi->v[k].b;
            while (hk < hi->n && hi->v[hk].b < a) hk++;
            for (size_t j = hk; j < hi->n && hi->v[j].a <= b; j++) {
                if (hi->v[j].a > a && ival_push(u, a, hi->v[j].a)) return -1;
                if (hi->v[j].b > a) a = hi->v[j].b;
            }
            if (a < b && ival_push(u, a, b)) return -1;
        }
    }
    merge(u);
    return 0;
}

/* samples x0 + (i + 0.5) d, i in [0, SUB), inside the union u */
static int count_row(const ivals *u, double x0, double d)
{
    /* first interval ending at or after x0 */
    size_t lo = 0, hi = u->n;
    while (lo < hi) {
        size_t m = (lo + hi) / 2;
        if (u->v[m].b < x0) lo = m + 1;
        else hi = m;
    }
    int cnt = 0;
    double x1 = x0 + d * SUB;
    for (size_t k = lo; k < u->n && u->v[k].a <= x1; k++) {
        double ia = ceil((u->v[k].a - x0) / d - 0.5), ib = floor((u->v[k].b - x0) / d - 0.5);
        if (ia < 0) ia = 0;
        if (ib > SUB - 1) ib = SUB - 1;
        if (ib >= ia) cnt += (int)(ib - ia) + 1;
    }
    return cnt;
}

static int grid_global(const tl_tissue *t, const tl_grid_params *p, coord_buf *out)
{
    int64_t ps = p->patch_level0, step = p->step_level0;
    if (t->n == 0) return 0;
    double *bb = malloc((size_t)t->n * 4 * sizeof *bb);
    int *cnt = NULL;
    ivals u = {0}, oi = {0}, hi = {0};
    double *xs = NULL;
    size_t xcap = 0;
    if (!bb) goto oom;
    double tx0 = INFINITY, ty0 = INFINITY, tx1 = -INFINITY, ty1 = -INFINITY;
    for (int ci = 0; ci < t->n; ci++) {
        const tl_polygon *o = &t->c[ci].outer;
        double *b = bb + 4 * ci;
        b[0] = b[1] = INFINITY;
        b[2] = b[3] = -INFINITY;
        for (int i = 0; i < o->n; i++) {
            b[0] = fmin(b[0], o->xy[2 * i]);
            b[1] = fmin(b[1], o->xy[2 * i + 1]);
            b[2] = fmax(b[2], o->xy[2 * i]);
            b[3] = fmax(b[3], o->xy[2 * i + 1]);
        }
        tx0 = fmin(tx0, b[0]);
        ty0 = fmin(ty0, b[1]);
        tx1 = fmax(tx1, b[2]);
        ty1 = fmax(ty1, b[3]);
    }
    int64_t ncol = 0;
    for (int64_t x = 0; x < p->slide_w && (p->use_padding || x + ps <= p->slide_w); x += step) ncol++;
    cnt = malloc((size_t)(ncol > 0 ? ncol : 1) * sizeof *cnt);
    if (!cnt) goto oom;
    double d = (double)ps / SUB;
    int need = (int)ceil(p->min_tissue * SUB * SUB - 1e-9);
    if (need < 1) need = 1;
    for (int64_t y = 0; y < p->slide_h && (p->use_padding || y + ps <= p->slide_h); y += step) {
        if ((double)(y + ps) < ty0 || (double)y > ty1) continue;
        memset(cnt, 0, (size_t)(ncol > 0 ? ncol : 1) * sizeof *cnt);
        for (int i = 0; i < SUB; i++) {
            double sy = (double)y + (i + 0.5) * d;
            if (scanline(t, bb, sy, &u, &oi, &hi, &xs, &xcap)) goto oom;
            if (u.n == 0) continue;
            for (int64_t c = 0; c < ncol; c++) {
                double x0 = (double)(c * step);
                if (x0 + (double)ps < tx0 || x0 > tx1) continue;
                cnt[c] += count_row(&u, x0, d);
            }
        }
        for (int64_t c = 0; c < ncol; c++)
            if (cnt[c] >= need && push(out, c * step, y)) goto oom;
    }
    free(bb);
    free(cnt);
    free(u.v);
    free(oi.v);
    free(hi.v);
    free(xs);
    return 0;
oom:
    free(bb);
    free(cnt);
    free(u.v);
    free(oi.v);
    free(hi.v);
    free(xs);
    return ncmi_error_set("patch grid: out of memory");
}

int tl_grid(const tl_tissue *t, const tl_grid_params *p, int64_t **coords, size_t *n)
{
    *coords = NULL;
    *n = 0;
    if (p->patch_level0 <= 0 || p->step_level0 <= 0)
        return ncmi_error_set("patch grid: patch size %lld and step %lld must be positive",
                              (long long)p->patch_level0, (long long)p->step_level0);
    if (p->slide_w <= 0 || p->slide_h <= 0)
        return ncmi_error_set("patch grid: slide size %lldx%lld must be positive", (long long)p->slide_w,
                              (long long)p->slide_h);
    coord_buf b = {0};
    int rc = p->kind == TL_GRID_GLOBAL ? grid_global(t, p, &b) : grid_contours(t, p, &b);
    if (rc) {
        free(b.xy);
        return -1;
    }
    *coords = b.xy;
    *n = b.n;
    return 0;
}
