/* Tissue segmentation and patch grids (tiler/seg.c, tiler/grid.c) against
 * OpenCV 4.6 and the CLAM reference (tests/reference/seg_reference.py wrote
 * tests/golden/tiler_seg.json; tests/reference/clam_reference.py is run live
 * on the cmu-1-small-region fixture when it and python3-opencv are present). */
#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../nn/error.h"
#include "../tiler/grid.h"
#include "../tiler/seg.h"
#include "test.h"

#define GOLDEN "tests/golden/tiler_seg.json"

static json_t *golden(void)
{
    json_error_t e;
    json_t *g = json_load_file(GOLDEN, 0, &e);
    if (!g) test_fail_at(__FILE__, __LINE__, "%s: %s (line %d)", GOLDEN, e.text, e.line);
    return g;
}

/* json array of integers -> malloc'd int array */
static int *ints(json_t *a, size_t *n)
{
    size_t k = json_array_size(a);
    int *v = malloc((k ? k : 1) * sizeof *v);
    for (size_t i = 0; i < k; i++) v[i] = (int)json_integer_value(json_array_get(a, i));
    if (n) *n = k;
    return v;
}

static uint8_t *bytes(json_t *a, size_t *n)
{
    size_t k = json_array_size(a);
    uint8_t *v = malloc(k ? k : 1);
    for (size_t i = 0; i < k; i++) v[i] = (uint8_t)json_integer_value(json_array_get(a, i));
    if (n) *n = k;
    return v;
}

static int geti(json_t *o, const char *k) { return (int)json_integer_value(json_object_get(o, k)); }

/* ------------------------------------------------------------ blocks */

TEST(tiler_seg_saturation_matches_opencv)
{
    json_t *g = golden();
    REQUIRE(g, "no golden");
    json_t *c = json_object_get(g, "saturation");
    size_t n3, n;
    uint8_t *rgb = bytes(json_object_get(c, "rgb"), &n3), *s = bytes(json_object_get(c, "s"), &n);
    REQUIRE(n3 == 3 * n && n > 3000, "%zu pixels", n);
    uint8_t *got = malloc(n);
    tl_rgb_saturation(rgb, (int)n, 1, got);
    int bad = 0;
    for (size_t i = 0; i < n; i++)
        if (got[i] != s[i] && bad++ < 5)
            EXPECT(0, "pixel (%d,%d,%d): s %d, OpenCV %d", rgb[3 * i], rgb[3 * i + 1], rgb[3 * i + 2], got[i], s[i]);
    EXPECT(bad == 0, "%d of %zu saturations differ", bad, n);
    free(rgb);
    free(s);
    free(got);
    json_decref(g);
}

TEST(tiler_seg_median_blur_matches_opencv)
{
    json_t *g = golden();
    REQUIRE(g, "no golden");
    size_t i;
    json_t *c;
    int cases = 0;
    json_array_foreach(json_object_get(g, "median"), i, c)
    {
        int w = geti(c, "w"), h = geti(c, "h");
        uint8_t *in = bytes(json_object_get(c, "in"), NULL), *out = malloc((size_t)w * h);
        const char *k;
        json_t *exp;
        json_object_foreach(json_object_get(c, "out"), k, exp)
        {
            uint8_t *e = bytes(exp, NULL);
            tl_median_blur(in, w, h, atoi(k), out);
            int bad = 0;
            for (int p = 0; p < w * h; p++) bad += out[p] != e[p];
            EXPECT(bad == 0, "median %dx%d k=%s: %d pixels differ", w, h, k, bad);
            cases++;
            free(e);
        }
        /* in place gives the same */
        uint8_t *e = bytes(json_object_get(json_object_get(c, "out"), "5"), NULL);
        tl_median_blur(in, w, h, 5, in);
        EXPECT(memcmp(in, e, (size_t)w * h) == 0, "in-place median differs");
        free(e);
        free(in);
        free(out);
    }
    EXPECT(cases == 16, "%d median cases", cases);
    json_decref(g);
}

TEST(tiler_seg_otsu_matches_opencv)
{
    json_t *g = golden();
    REQUIRE(g, "no golden");
    size_t i;
    json_t *c;
    json_array_foreach(json_object_get(g, "otsu"), i, c)
    {
        size_t nb;
        int *hist = ints(json_object_get(c, "hist"), &nb);
        size_t n = 0;
        for (size_t b = 0; b < nb; b++) n += (size_t)hist[b];
        uint8_t *img = malloc(n);
        size_t k = 0;
        /* any pixel order gives the same histogram; interleave to be sure */
        for (size_t b = nb; b-- > 0;)
            for (int j = 0; j < hist[b]; j++) img[k++] = (uint8_t)b;
        int t = tl_otsu_threshold(img, n);
        EXPECT(t == geti(c, "t"), "case %zu (%zu px): Otsu %d, OpenCV %d", i, n, t, geti(c, "t"));
        free(img);
        free(hist);
    }
    json_decref(g);
}

TEST(tiler_seg_close_matches_opencv)
{
    json_t *g = golden();
    REQUIRE(g, "no golden");
    size_t i;
    json_t *c;
    json_array_foreach(json_object_get(g, "close"), i, c)
    {
        int w = geti(c, "w"), h = geti(c, "h");
        uint8_t *in = bytes(json_object_get(c, "in"), NULL), *out = malloc((size_t)w * h);
        const char *k;
        json_t *exp;
        json_object_foreach(json_object_get(c, "out"), k, exp)
        {
            uint8_t *e = bytes(exp, NULL);
            tl_morph_close(in, w, h, atoi(k), out);
            int bad = 0;
            for (int p = 0; p < w * h; p++) bad += out[p] != e[p];
            EXPECT(bad == 0, "close %dx%d k=%s: %d pixels differ", w, h, k, bad);
            free(e);
        }
        free(in);
        free(out);
    }
    json_decref(g);
}

TEST(tiler_seg_find_contours_matches_opencv)
{
    json_t *g = golden();
    REQUIRE(g, "no golden");
    size_t i;
    json_t *c;
    int total = 0;
    json_array_foreach(json_object_get(g, "contours"), i, c)
    {
        const char *name = json_string_value(json_object_get(c, "name"));
        int w = geti(c, "w"), h = geti(c, "h");
        uint8_t *m = bytes(json_object_get(c, "in"), NULL);
        tl_contour_set s;
        REQUIRE(tl_find_contours(m, w, h, &s) == 0, "%s", ncmi_error());
        json_t *ec = json_object_get(c, "contours"), *eh = json_object_get(c, "hierarchy");
        EXPECT((size_t)s.n == json_array_size(ec), "%s: %d contours, OpenCV %zu", name, s.n, json_array_size(ec));
        for (int k = 0; k < s.n && (size_t)k < json_array_size(ec); k++) {
            size_t np;
            int *pts = ints(json_array_get(ec, (size_t)k), &np);
            int same = (size_t)s.npts[k] * 2 == np && memcmp(pts, s.pts[k], np * sizeof(int)) == 0;
            EXPECT(same, "%s: contour %d: %d points, OpenCV %zu%s", name, k, s.npts[k], np / 2,
                   (size_t)s.npts[k] * 2 == np ? " (same count, different points)" : "");
            int *hr = ints(json_array_get(eh, (size_t)k), NULL);
            // NOLINTNEXTLINE(clang-analyzer-core.CallAndMessage): false positive, EXPECT's format arguments are the filled contour set
            EXPECT(memcmp(hr, s.hier + 4 * k, 4 * sizeof(int)) == 0,
                   "%s: contour %d hierarchy (%d %d %d %d), OpenCV (%d %d %d %d)", name, k, s.hier[4 * k],
                   s.hier[4 * k + 1], s.hier[4 * k + 2], s.hier[4 * k + 3], hr[0], hr[1], hr[2], hr[3]);
            /* cv2.contourArea */
            tl_polygon poly = {s.npts[k], malloc((size_t)(s.npts[k] > 0 ? s.npts[k] : 1) * 2 * sizeof(double))};
            for (int j = 0; j < 2 * s.npts[k]; j++) poly.xy[j] = s.pts[k][j];
            EXPECT_NEAR(tl_polygon_area(&poly), json_real_value(json_array_get(json_object_get(c, "areas"), (size_t)k)),
                        0);
            free(poly.xy);
            free(pts);
            free(hr);
            total++;
        }
        tl_contour_set_free(&s);
        free(m);
    }
    EXPECT(total > 100, "only %d contours compared", total);
    json_decref(g);
}

TEST(tiler_seg_polygon_contains_and_area)
{
    double sq[] = {0, 0, 10, 0, 10, 10, 0, 10};
    tl_polygon p = {4, sq};
    EXPECT(tl_polygon_contains(&p, 5, 5), "centre");
    EXPECT(tl_polygon_contains(&p, 0, 5) && tl_polygon_contains(&p, 10, 10), "boundary counts as inside");
    EXPECT(!tl_polygon_contains(&p, 10.5, 5) && !tl_polygon_contains(&p, -1, -1), "outside");
    EXPECT_NEAR(tl_polygon_area(&p), 100, 0);
    /* concave U: the notch is outside */
    double u[] = {0, 0, 9, 0, 9, 9, 6, 9, 6, 3, 3, 3, 3, 9, 0, 9};
    tl_polygon q = {8, u};
    EXPECT(!tl_polygon_contains(&q, 4.5, 6), "inside the notch");
    EXPECT(tl_polygon_contains(&q, 1.5, 6) && tl_polygon_contains(&q, 7.5, 6), "the arms");
    EXPECT_NEAR(tl_polygon_area(&q), 81 - 18, 0);
    /* orientation does not matter */
    double r[] = {0, 10, 10, 10, 10, 0, 0, 0};
    tl_polygon pr = {4, r};
    EXPECT_NEAR(tl_polygon_area(&pr), 100, 0);
}

TEST(tiler_seg_presets)
{
    tl_seg_params p;
    REQUIRE(tl_seg_preset("clam-default", &p) == 0, "clam-default");
    EXPECT(!p.use_otsu && p.sthresh == 8 && p.mthresh == 7 && p.close == 4 && p.a_t == 100 && p.a_h == 16 &&
               p.max_n_holes == 8,
           "clam-default values");
    REQUIRE(tl_seg_preset("biopsy", &p) == 0, "biopsy");
    EXPECT(p.sthresh == 15 && p.mthresh == 11 && p.close == 2 && p.a_t == 1 && p.a_h == 1 && p.max_n_holes == 2,
           "bwh_biopsy values");
    REQUIRE(tl_seg_preset("resection", &p) == 0 && p.a_t == 100 && p.close == 4 && p.sthresh == 15, "resection");
    REQUIRE(tl_seg_preset("tcga", &p) == 0 && p.a_t == 16 && p.a_h == 4 && p.sthresh == 8, "tcga");
    REQUIRE(tl_seg_preset("default", &p) == 0 && p.use_otsu && p.a_t < 1, "ncmi default");
    EXPECT(tl_seg_preset("clam", &p) == -1 && strstr(ncmi_error(), "biopsy") != NULL, "unknown preset: %s",
           ncmi_error());
}

/* ------------------------------------------------------------ synthetic slides */

/* the recipe of seg_reference.py render() */
static uint8_t *render(json_t *r, int *w_out, int *h_out)
{
    int w = geti(r, "w"), h = geti(r, "h");
    int *lab = calloc((size_t)w * h, sizeof *lab);
    size_t i;
    json_t *s;
    json_array_foreach(json_object_get(r, "shapes"), i, s)
    {
        int disk = strcmp(json_string_value(json_object_get(s, "type")), "disk") == 0, fg = geti(s, "fg");
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++) {
                int in;
                if (disk) {
                    long dx = x - geti(s, "cx"), dy = y - geti(s, "cy"), rr = geti(s, "r");
                    in = dx * dx + dy * dy <= rr * rr;
                } else
                    in = x >= geti(s, "x0") && x < geti(s, "x1") && y >= geti(s, "y0") && y < geti(s, "y1");
                if (in) lab[(size_t)y * w + x] = fg;
            }
    }
    int bg[3], fgc[3];
    for (int k = 0; k < 3; k++) {
        bg[k] = (int)json_integer_value(json_array_get(json_object_get(r, "bg"), (size_t)k));
        fgc[k] = (int)json_integer_value(json_array_get(json_object_get(r, "fg"), (size_t)k));
    }
    uint8_t *rgb = malloc((size_t)w * h * 3);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            uint64_t v = ((uint64_t)x * 374761393u + (uint64_t)y * 668265263u) & 0xFFFFFFFFu;
            v = ((v ^ (v >> 13)) * 1274126177u) & 0xFFFFFFFFu;
            int nz = (int)((v >> 16) % 9) - 4;
            for (int k = 0; k < 3; k++) {
                int c = (lab[(size_t)y * w + x] == 1 ? fgc[k] : bg[k]) + nz;
                rgb[((size_t)y * w + x) * 3 + k] = (uint8_t)(c < 0 ? 0 : c > 255 ? 255 : c);
            }
        }
    free(lab);
    *w_out = w;
    *h_out = h;
    return rgb;
}

static int poly_equals(const tl_polygon *p, json_t *pts)
{
    if ((size_t)p->n * 2 != json_array_size(pts)) return 0;
    for (int i = 0; i < 2 * p->n; i++)
        if (p->xy[i] != (double)json_integer_value(json_array_get(pts, (size_t)i))) return 0;
    return 1;
}

static tl_contour_check check_of(const char *k)
{
    return strcmp(k, "four_pt") == 0 ? TL_CHECK_FOUR_PT : strcmp(k, "four_pt_hard") == 0 ? TL_CHECK_FOUR_PT_HARD
                                                                                          : TL_CHECK_CENTER;
}

static int coords_equal(const int64_t *c, size_t n, json_t *exp, size_t *n_exp)
{
    *n_exp = json_array_size(exp) / 2;
    if (*n_exp != n) return 0;
    for (size_t i = 0; i < 2 * n; i++)
        if (c[i] != json_integer_value(json_array_get(exp, i))) return 0;
    return 1;
}

TEST(tiler_seg_synthetic_matches_clam_reference)
{
    json_t *g = golden();
    REQUIRE(g, "no golden");
    size_t i;
    json_t *c;
    int n_cases = 0, n_grids = 0;
    json_array_foreach(json_object_get(g, "segment"), i, c)
    {
        json_t *r = json_object_get(c, "recipe");
        const char *preset = json_string_value(json_object_get(c, "preset"));
        const char *name = json_string_value(json_object_get(r, "name"));
        int w, h;
        uint8_t *rgb = render(r, &w, &h);
        tl_seg_params p;
        REQUIRE(tl_seg_preset(preset, &p) == 0, "%s", ncmi_error());
        double dsx = json_real_value(json_array_get(json_object_get(r, "ds"), 0));
        double dsy = json_real_value(json_array_get(json_object_get(r, "ds"), 1));
        tl_tissue t;
        uint8_t *mask;
        REQUIRE(tl_segment(rgb, w, h, dsx, dsy, &p, &t, &mask) == 0, "%s", ncmi_error());
        int msum = 0;
        for (int k = 0; k < w * h; k++) msum += mask[k] != 0;
        EXPECT(msum == geti(c, "mask_sum"), "%s/%s: mask has %d pixels, reference %d", name, preset, msum,
               geti(c, "mask_sum"));
        json_t *ec = json_object_get(c, "contours");
        EXPECT((size_t)t.n == json_array_size(ec), "%s/%s: %d contours, reference %zu", name, preset, t.n,
               json_array_size(ec));
        for (int k = 0; k < t.n && (size_t)k < json_array_size(ec); k++) {
            json_t *e = json_array_get(ec, (size_t)k);
            EXPECT(poly_equals(&t.c[k].outer, json_object_get(e, "outer")), "%s/%s: contour %d outer differs", name,
                   preset, k);
            json_t *eh = json_object_get(e, "holes");
            EXPECT((size_t)t.c[k].n_holes == json_array_size(eh), "%s/%s: contour %d: %d holes, reference %zu", name,
                   preset, k, t.c[k].n_holes, json_array_size(eh));
            for (int j = 0; j < t.c[k].n_holes && (size_t)j < json_array_size(eh); j++)
                EXPECT(poly_equals(&t.c[k].holes[j], json_array_get(eh, (size_t)j)), "%s/%s: contour %d hole %d",
                       name, preset, k, j);
            EXPECT_NEAR(t.c[k].area, json_real_value(json_object_get(e, "area_level0")), 1e-6);
        }
        int64_t sw = json_integer_value(json_array_get(json_object_get(c, "slide_wh"), 0));
        int64_t sh = json_integer_value(json_array_get(json_object_get(c, "slide_wh"), 1));
        size_t gi;
        json_t *gc;
        json_array_foreach(json_object_get(c, "grids"), gi, gc)
        {
            tl_grid_params gp = {TL_GRID_CONTOUR, check_of(json_string_value(json_object_get(gc, "kind"))),
                                 geti(gc, "ps"), geti(gc, "ps"), sw, sh,
                                 json_is_true(json_object_get(gc, "padding")), 0};
            int64_t *co;
            size_t n, ne;
            REQUIRE(tl_grid(&t, &gp, &co, &n) == 0, "%s", ncmi_error());
            EXPECT(coords_equal(co, n, json_object_get(gc, "coords"), &ne), "%s/%s grid %zu: %zu coords, reference %zu",
                   name, preset, gi, n, ne);
            free(co);
            n_grids++;
        }
        tl_tissue_free(&t);
        free(mask);
        free(rgb);
        n_cases++;
    }
    EXPECT(n_cases == 10 && n_grids == 50, "%d cases, %d grids", n_cases, n_grids);
    json_decref(g);
}

/* Known geometry: what each filter keeps, and areas against the drawn shapes. */
TEST(tiler_seg_synthetic_filters_and_areas)
{
    json_t *g = golden();
    REQUIRE(g, "no golden");
    json_t *r = json_object_get(json_array_get(json_object_get(g, "segment"), 0), "recipe");
    REQUIRE(strcmp(json_string_value(json_object_get(r, "name")), "disks_holes") == 0, "recipe order");
    int w, h;
    uint8_t *rgb = render(r, &w, &h);
    const double ds = 32, unit = 512.0 * 512.0;
    /* drawn areas in level-0 px^2 (pixel counts x ds^2) */
    double disk = 0, hole = 0;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            long d2 = (long)(x - 80) * (x - 80) + (long)(y - 90) * (y - 90);
            disk += d2 <= 60 * 60;
            hole += d2 <= 20 * 20;
        }
    double rect_a = 90.0 * 220, rect_b = 147.0 * 230;
    struct {
        const char *preset;
        int n;
        int holes_a; /* holes kept in rect A (-1: A absent) */
        int has_blob;
    } exp[] = {{"clam-default", 1, -1, 0}, {"tcga", 3, 0, 0}, {"biopsy", 3, 2, 0}, {"resection", 1, -1, 0},
               {"default", 4, 3, 1}};
    for (size_t e = 0; e < sizeof exp / sizeof exp[0]; e++) {
        tl_seg_params p;
        tl_seg_preset(exp[e].preset, &p);
        tl_tissue t;
        REQUIRE(tl_segment(rgb, w, h, ds, ds, &p, &t, NULL) == 0, "%s", ncmi_error());
        EXPECT(t.n == exp[e].n, "%s: %d contours, expected %d", exp[e].preset, t.n, exp[e].n);
        int blob = 0, holes_a = -1;
        for (int k = 0; k < t.n; k++) {
            double a = t.c[k].area / (ds * ds);
            double x0 = INFINITY; /* left edge of the shape */
            for (int q = 0; q < t.c[k].outer.n; q++) x0 = fmin(x0, t.c[k].outer.xy[2 * q] / ds);
            if (a < 300) blob = 1;
            if (x0 >= 159 && x0 <= 161) {
                holes_a = t.c[k].n_holes;
                /* contour through boundary pixel centres: 1 px less per side;
                 * drawn area within (perimeter/2 + holes' perimeter/2) */
                double drawn = rect_a;
                EXPECT(a < drawn && a > drawn * 0.85, "%s: rect A area %.0f vs drawn %.0f", exp[e].preset, a, drawn);
            }
            if (x0 >= 264 && x0 <= 266) {
                double drawn = rect_b - (t.c[k].n_holes ? 3600 : 0);
                EXPECT(fabs(a - drawn) < 0.03 * drawn, "%s: rect B area %.0f vs drawn %.0f", exp[e].preset, a,
                       drawn);
                EXPECT(t.c[k].n_holes == (p.a_h * unit / (ds * ds) < 3481 ? 1 : 0), "%s: rect B holes %d",
                       exp[e].preset, t.c[k].n_holes);
            }
            if (fabs(a - (disk - hole)) < 0.05 * (disk - hole))
                EXPECT(t.c[k].n_holes == 1, "%s: the disk keeps its hole", exp[e].preset);
        }
        EXPECT(holes_a == exp[e].holes_a, "%s: rect A has %d holes, expected %d", exp[e].preset, holes_a,
               exp[e].holes_a);
        EXPECT(blob == exp[e].has_blob, "%s: small blob %s", exp[e].preset, blob ? "kept" : "dropped");
        /* patch coverage ~ tissue area */
        if (strcmp(exp[e].preset, "tcga") == 0) {
            double tissue = 0;
            for (int k = 0; k < t.n; k++) tissue += t.c[k].area;
            tl_grid_params gp = {TL_GRID_CONTOUR, TL_CHECK_CENTER, 128, 128, (int64_t)(w * ds), (int64_t)(h * ds), 1, 0};
            int64_t *co;
            size_t n;
            REQUIRE(tl_grid(&t, &gp, &co, &n) == 0, "%s", ncmi_error());
            EXPECT(fabs(n * 128.0 * 128 - tissue) < 0.05 * tissue, "centre grid covers %.0f px^2 for %.0f of tissue",
                   n * 128.0 * 128, tissue);
            free(co);
        }
        tl_tissue_free(&t);
    }
    /* a_t above everything, max_n_holes 0 */
    tl_seg_params p;
    tl_seg_preset("tcga", &p);
    p.a_t = 1000;
    tl_tissue t;
    REQUIRE(tl_segment(rgb, w, h, ds, ds, &p, &t, NULL) == 0 && t.n == 0, "a_t 1000 keeps %d", t.n);
    tl_tissue_free(&t);
    p.a_t = 16;
    p.max_n_holes = 0;
    REQUIRE(tl_segment(rgb, w, h, ds, ds, &p, &t, NULL) == 0 && t.n == 3, "max_n_holes 0: %d contours", t.n);
    for (int k = 0; k < t.n; k++) EXPECT(t.c[k].n_holes == 0, "contour %d has %d holes", k, t.c[k].n_holes);
    tl_tissue_free(&t);
    /* a blank slide: no tissue, not an error */
    memset(rgb, 240, (size_t)w * h * 3);
    tl_seg_preset("clam-default", &p);
    REQUIRE(tl_segment(rgb, w, h, ds, ds, &p, &t, NULL) == 0 && t.n == 0, "blank: %d contours", t.n);
    tl_tissue_free(&t);
    /* blank glass with sensor noise: pure Otsu (CLAM use_otsu) splits the
     * noise and finds "tissue" everywhere; ncmi's default floors Otsu at
     * sthresh and finds none */
    uint32_t st = 12345;
    for (size_t q = 0; q < (size_t)w * h * 3; q++) {
        st = st * 1664525u + 1013904223u;
        rgb[q] = (uint8_t)(236 + (st >> 24) % 9);
    }
    tl_seg_preset("default", &p);
    uint8_t *mask;
    REQUIRE(tl_segment(rgb, w, h, ds, ds, &p, &t, &mask) == 0, "%s", ncmi_error());
    EXPECT(t.n == 0, "default on blank glass: %d contours", t.n);
    tl_tissue_free(&t);
    free(mask);
    p.use_otsu = 1;
    REQUIRE(tl_segment(rgb, w, h, ds, ds, &p, &t, &mask) == 0, "%s", ncmi_error());
    int on = 0;
    for (int q = 0; q < w * h; q++) on += mask[q] != 0;
    EXPECT(on > w * h / 4 && t.n > 0, "pure Otsu on blank glass: %d of %d pixels, %d contours (expected the failure "
           "the floor prevents)", on, w * h, t.n);
    tl_tissue_free(&t);
    free(mask);
    free(rgb);
    json_decref(g);
}

/* ------------------------------------------------------------ grids */

static void tissue_from_json(json_t *arr, tl_tissue *t)
{
    t->n = (int)json_array_size(arr);
    t->c = calloc((size_t)t->n, sizeof *t->c);
    for (int k = 0; k < t->n; k++) {
        json_t *c = json_array_get(arr, (size_t)k), *o = json_object_get(c, "outer"), *hs = json_object_get(c, "holes");
        tl_contour *tc = &t->c[k];
        tc->outer.n = (int)json_array_size(o);
        tc->outer.xy = malloc((size_t)tc->outer.n * 2 * sizeof(double));
        for (int i = 0; i < tc->outer.n; i++)
            for (int d = 0; d < 2; d++)
                tc->outer.xy[2 * i + d] = (double)json_integer_value(json_array_get(json_array_get(o, (size_t)i), (size_t)d));
        tc->n_holes = (int)json_array_size(hs);
        tc->holes = calloc((size_t)(tc->n_holes ? tc->n_holes : 1), sizeof *tc->holes);
        for (int j = 0; j < tc->n_holes; j++) {
            json_t *hh = json_array_get(hs, (size_t)j);
            tc->holes[j].n = (int)json_array_size(hh);
            tc->holes[j].xy = malloc((size_t)tc->holes[j].n * 2 * sizeof(double));
            for (int i = 0; i < tc->holes[j].n; i++)
                for (int d = 0; d < 2; d++)
                    tc->holes[j].xy[2 * i + d] =
                        (double)json_integer_value(json_array_get(json_array_get(hh, (size_t)i), (size_t)d));
        }
        tc->area = tl_polygon_area(&tc->outer);
        for (int j = 0; j < tc->n_holes; j++) tc->area -= tl_polygon_area(&tc->holes[j]);
    }
}

TEST(tiler_grid_contour_matches_clam_reference)
{
    json_t *g = golden();
    REQUIRE(g, "no golden");
    json_t *gr = json_object_get(g, "grid");
    tl_tissue t;
    tissue_from_json(json_object_get(gr, "tissue"), &t);
    int64_t sw = json_integer_value(json_array_get(json_object_get(gr, "slide_wh"), 0));
    int64_t sh = json_integer_value(json_array_get(json_object_get(gr, "slide_wh"), 1));
    size_t i;
    json_t *c;
    int n_cases = 0;
    json_array_foreach(json_object_get(gr, "cases"), i, c)
    {
        const char *kind = json_string_value(json_object_get(c, "kind"));
        int pad = json_is_true(json_object_get(c, "padding"));
        tl_grid_params gp = {TL_GRID_CONTOUR, check_of(kind), geti(c, "ps"), geti(c, "step"), sw, sh, pad, 0};
        int64_t *co;
        size_t n, ne;
        REQUIRE(tl_grid(&t, &gp, &co, &n) == 0, "%s", ncmi_error());
        EXPECT(coords_equal(co, n, json_object_get(c, "coords"), &ne), "ps %d step %d %s padding %d: %zu coords, reference %zu",
               geti(c, "ps"), geti(c, "step"), kind, pad, n, ne);
        /* holes excluded: no centre strictly inside the rectangle's hole */
        for (size_t k = 0; k < n; k++) {
            double cx = co[2 * k] + gp.patch_level0 / 2.0, cy = co[2 * k + 1] + gp.patch_level0 / 2.0;
            EXPECT(!(cx > 2000 && cx < 3000 && cy > 2000 && cy < 3000), "centre (%g,%g) in the hole", cx, cy);
            if (!pad)
                EXPECT(co[2 * k] + gp.patch_level0 <= sw && co[2 * k + 1] + gp.patch_level0 <= sh,
                       "patch (%lld,%lld) past the slide", (long long)co[2 * k], (long long)co[2 * k + 1]);
        }
        free(co);
        n_cases++;
    }
    EXPECT(n_cases == 30, "%d cases", n_cases);
    tl_tissue_free(&t);
    json_decref(g);
}

static void rect_poly(tl_polygon *p, double x0, double y0, double x1, double y1)
{
    p->n = 4;
    p->xy = malloc(8 * sizeof(double));
    double v[8] = {x0, y0, x1, y0, x1, y1, x0, y1};
    memcpy(p->xy, v, sizeof v);
}

static size_t global_count(const tl_tissue *t, int64_t ps, int64_t step, int64_t sw, int64_t sh, int pad, double mt,
                           int64_t **co_out)
{
    tl_grid_params gp = {TL_GRID_GLOBAL, TL_CHECK_FOUR_PT, ps, step, sw, sh, pad, mt};
    int64_t *co;
    size_t n;
    if (tl_grid(t, &gp, &co, &n) != 0) {
        test_fail_at(__FILE__, __LINE__, "%s", ncmi_error());
        return 0;
    }
    if (co_out)
        *co_out = co;
    else
        free(co);
    return n;
}

TEST(tiler_grid_global_tissue_fraction)
{
    tl_tissue t = {calloc(2, sizeof(tl_contour)), 1};
    rect_poly(&t.c[0].outer, 0, 0, 1100, 800);
    /* x: columns 0..3 full, 1024 has 76/256 = 0.30; y: rows 0..2 full, 768 has 32/256 = 0.125 */
    int64_t *co;
    size_t n = global_count(&t, 256, 256, 2048, 2048, 0, 0.25, &co);
    EXPECT(n == 15, "min 0.25: %zu patches, expected 5x3", n);
    /* row-major: y outer, x inner */
    int ordered = 1;
    for (size_t k = 1; k < n; k++)
        ordered &= co[2 * k + 1] > co[2 * k - 1] || (co[2 * k + 1] == co[2 * k - 1] && co[2 * k] > co[2 * k - 2]);
    EXPECT(ordered && n > 5 && co[0] == 0 && co[1] == 0 && co[2] == 256 && co[3] == 0, "row-major order");
    // NOLINTNEXTLINE(clang-analyzer-core.CallAndMessage): false positive, co holds n >= 15 pairs (checked by EXPECT above)
    free(co);
    EXPECT(global_count(&t, 256, 256, 2048, 2048, 0, 0.5, NULL) == 12, "min 0.5");
    /* min 0.1: the row at 768 joins (0.125) except its corner patch (0.30 x 0.125) */
    EXPECT(global_count(&t, 256, 256, 2048, 2048, 0, 0.1, NULL) == 19, "min 0.1");
    EXPECT(global_count(&t, 256, 256, 2048, 2048, 0, 0.0, NULL) == 20, "min 0: any tissue");
    /* overlap: step 128, patch 256: x0 in {0..896 step 128} + 1024 partially */
    size_t no = global_count(&t, 256, 128, 2048, 2048, 0, 0.5, NULL);
    EXPECT(no == 8 * 6, "overlap: %zu patches", no); /* x0 <= 972 -> 0..896 (8), y0 <= 672 -> 0..640 (6) */
    /* a hole covering patch (256,256) exactly removes it */
    t.c[0].n_holes = 1;
    t.c[0].holes = calloc(1, sizeof(tl_polygon));
    rect_poly(&t.c[0].holes[0], 256, 256, 512, 512);
    EXPECT(global_count(&t, 256, 256, 2048, 2048, 0, 0.25, NULL) == 14, "hole removes one patch");
    /* slide edge: 1000 px wide, tissue everywhere */
    tl_tissue_free(&t);
    t.c = calloc(1, sizeof(tl_contour));
    t.n = 1;
    rect_poly(&t.c[0].outer, 0, 0, 999, 999);
    EXPECT(global_count(&t, 256, 256, 1000, 1000, 0, 0.25, NULL) == 9, "no padding: 3x3");
    EXPECT(global_count(&t, 256, 256, 1000, 1000, 1, 0.25, NULL) == 16, "padding: 4x4 (last 232/256 tissue)");
    EXPECT(global_count(&t, 256, 256, 1000, 1000, 1, 0.95, NULL) == 9, "padding, min 0.95");
    tl_tissue_free(&t);
    /* a disk: sum of kept patches ~ area for min 0.5 */
    t.c = calloc(1, sizeof(tl_contour));
    t.n = 1;
    t.c[0].outer.n = 720;
    t.c[0].outer.xy = malloc(720 * 2 * sizeof(double));
    for (int i = 0; i < 720; i++) {
        t.c[0].outer.xy[2 * i] = 5000 + 3000 * cos(i * M_PI / 360);
        t.c[0].outer.xy[2 * i + 1] = 5000 + 3000 * sin(i * M_PI / 360);
    }
    size_t nd = global_count(&t, 256, 256, 10000, 10000, 0, 0.5, NULL);
    double area = M_PI * 3000 * 3000;
    EXPECT(fabs(nd * 65536.0 - area) < 0.03 * area, "disk: %zu patches = %.0f px^2 for %.0f", nd, nd * 65536.0, area);
    tl_tissue_free(&t);
    /* bad parameters */
    tl_tissue e = {0};
    tl_grid_params gp = {TL_GRID_GLOBAL, TL_CHECK_FOUR_PT, 0, 256, 100, 100, 0, 0};
    int64_t *c2;
    size_t n2;
    EXPECT(tl_grid(&e, &gp, &c2, &n2) == -1 && strstr(ncmi_error(), "patch") != NULL, "zero patch: %s", ncmi_error());
}

TEST(tiler_grid_contour_duplicates_and_single_patch)
{
    /* two contours whose grids coincide produce the coordinate once; a
     * contour with one patch keeps it (CLAM would drop it) */
    tl_tissue t = {calloc(2, sizeof(tl_contour)), 2};
    rect_poly(&t.c[0].outer, 0, 0, 511, 255);
    rect_poly(&t.c[1].outer, 0, 0, 255, 511);
    tl_grid_params gp = {TL_GRID_CONTOUR, TL_CHECK_FOUR_PT, 256, 256, 4096, 4096, 1, 0};
    int64_t *co;
    size_t n;
    REQUIRE(tl_grid(&t, &gp, &co, &n) == 0, "%s", ncmi_error());
    EXPECT(n == 3, "%zu coords (expected (0,0) (256,0) (0,256))", n);
    if (n == 3)
        EXPECT(co[0] == 0 && co[1] == 0 && co[2] == 256 && co[3] == 0 && co[4] == 0 && co[5] == 256, "order");
    free(co);
    tl_tissue_free(&t);
    tl_tissue s = {calloc(1, sizeof(tl_contour)), 1};
    rect_poly(&s.c[0].outer, 100, 100, 300, 300);
    REQUIRE(tl_grid(&s, &gp, &co, &n) == 0 && n == 1 && co[0] == 100 && co[1] == 100, "single patch: %zu", n);
    free(co);
    tl_tissue_free(&s);
}

/* ------------------------------------------------------------ GeoJSON */

TEST(tiler_seg_geojson_roundtrip)
{
    tl_tissue t = {calloc(2, sizeof(tl_contour)), 2};
    rect_poly(&t.c[0].outer, 0, 0, 1000, 800);
    t.c[0].n_holes = 2;
    t.c[0].holes = calloc(2, sizeof(tl_polygon));
    rect_poly(&t.c[0].holes[0], 100, 100, 200, 200);
    rect_poly(&t.c[0].holes[1], 300, 300, 400, 450);
    t.c[0].area = 800000 - 10000 - 15000;
    /* second contour clockwise in y-up terms (reversed order) */
    t.c[1].outer.n = 3;
    t.c[1].outer.xy = malloc(6 * sizeof(double));
    double tri[6] = {2000, 0, 2000, 500, 2500, 0};
    memcpy(t.c[1].outer.xy, tri, sizeof tri);
    t.c[1].holes = calloc(1, sizeof(tl_polygon));
    char *path = test_tmp_path("tissue.geojson");
    REQUIRE(tl_geojson_write(path, &t) == 0, "%s", ncmi_error());
    json_error_t e;
    json_t *j = json_load_file(path, 0, &e);
    REQUIRE(j, "%s: %s", path, e.text);
    EXPECT(strcmp(json_string_value(json_object_get(j, "type")), "FeatureCollection") == 0, "type");
    json_t *fs = json_object_get(j, "features");
    REQUIRE(json_array_size(fs) == 2, "%zu features", json_array_size(fs));
    for (size_t k = 0; k < 2; k++) {
        json_t *f = json_array_get(fs, k), *gm = json_object_get(f, "geometry"), *pr = json_object_get(f, "properties");
        EXPECT(strcmp(json_string_value(json_object_get(f, "type")), "Feature") == 0, "feature type");
        EXPECT(strcmp(json_string_value(json_object_get(gm, "type")), "Polygon") == 0, "Polygon");
        EXPECT(strcmp(json_string_value(json_object_get(pr, "objectType")), "annotation") == 0, "objectType");
        EXPECT(strcmp(json_string_value(json_object_get(json_object_get(pr, "classification"), "name")), "Tissue") == 0,
               "classification");
        json_t *rings = json_object_get(gm, "coordinates");
        EXPECT(json_array_size(rings) == (k == 0 ? 3u : 1u), "feature %zu: %zu rings", k, json_array_size(rings));
        for (size_t r = 0; r < json_array_size(rings); r++) {
            json_t *ring = json_array_get(rings, r);
            size_t m = json_array_size(ring);
            REQUIRE(m >= 4, "ring of %zu positions", m);
            json_t *a = json_array_get(ring, 0), *b = json_array_get(ring, m - 1);
            EXPECT(json_integer_value(json_array_get(a, 0)) == json_integer_value(json_array_get(b, 0)) &&
                       json_integer_value(json_array_get(a, 1)) == json_integer_value(json_array_get(b, 1)),
                   "ring closed");
            /* RFC 7946: exterior counter-clockwise (positive shoelace), holes clockwise */
            double s = 0;
            for (size_t q = 0; q + 1 < m; q++) {
                json_t *p0 = json_array_get(ring, q), *p1 = json_array_get(ring, q + 1);
                s += (double)json_integer_value(json_array_get(p0, 0)) * (double)json_integer_value(json_array_get(p1, 1)) -
                     (double)json_integer_value(json_array_get(p1, 0)) * (double)json_integer_value(json_array_get(p0, 1));
            }
            EXPECT(r == 0 ? s > 0 : s < 0, "feature %zu ring %zu orientation %g", k, r, s);
        }
    }
    EXPECT(json_array_size(json_array_get(json_object_get(json_object_get(json_array_get(fs, 0), "geometry"), "coordinates"), 1)) == 5,
           "hole ring of 4 vertices + closing");
    json_decref(j);
    /* no temporary left behind; an unwritable path fails with the path named */
    char *ls = NULL;
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "ls -a '%s'", test_tmpdir());
    test_run(cmd, &ls);
    EXPECT(ls && strstr(ls, "tissue.geojson") && !strstr(ls, ".tmp."), "directory after write: %s", ls ? ls : "");
    free(ls);
    EXPECT(tl_geojson_write("/nonexistent-dir/x.geojson", &t) == -1 && strstr(ncmi_error(), "/nonexistent-dir/x.geojson"),
           "error names the path: %s", ncmi_error());
    tl_tissue_free(&t);
}

/* ------------------------------------------------------------ real slide */

static uint8_t *read_ppm(const char *path, int *w, int *h)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    int maxv;
    if (fscanf(f, "P6 %d %d %d", w, h, &maxv) != 3 || maxv != 255 || fgetc(f) == EOF) {
        fclose(f);
        return NULL;
    }
    size_t n = (size_t)*w * *h * 3;
    uint8_t *p = malloc(n);
    if (fread(p, 1, n, f) != n) {
        free(p);
        p = NULL;
    }
    fclose(f);
    return p;
}

TEST(tiler_seg_cmu_small_region_vs_clam_reference)
{
    char slide[1024];
    snprintf(slide, sizeof slide, "%s/slides/cmu-1-small-region.svs", test_fixtures_dir());
    if (access(slide, R_OK) != 0) SKIP("no fixture %s (set NCMI_FIXTURES)", slide);
    char *out = NULL;
    if (test_run("/usr/bin/python3 -c 'import cv2, openslide, numpy'", &out) != 0) {
        free(out);
        SKIP("/usr/bin/python3 lacks cv2/openslide/numpy: no live CLAM reference");
    }
    free(out);
    /* the low-resolution image (~8 um/px), written by openslide-python + cv2 */
    char *ppm = test_tmp_path("cmu-small.ppm");
    char cmd[4096];
    snprintf(cmd, sizeof cmd,
             "/usr/bin/python3 tests/reference/clam_reference.py --slide '%s' --dump-image '%s' --dump-mpp 8", slide,
             ppm);
    REQUIRE(test_run(cmd, &out) == 0, "%s", out ? out : "");
    json_error_t e;
    json_t *info = json_loads(out, 0, &e);
    free(out);
    REQUIRE(info, "dump output: %s", e.text);
    double dsx = json_real_value(json_array_get(json_object_get(info, "ds"), 0));
    double dsy = json_real_value(json_array_get(json_object_get(info, "ds"), 1));
    int64_t sw = json_integer_value(json_array_get(json_object_get(info, "level0"), 0));
    int64_t sh = json_integer_value(json_array_get(json_object_get(info, "level0"), 1));
    json_decref(info);
    int w, h;
    uint8_t *rgb = read_ppm(ppm, &w, &h);
    REQUIRE(rgb, "cannot read %s", ppm);
    const char *presets[] = {"clam-default", "biopsy", "default"};
    for (int pi = 0; pi < 3; pi++) {
        tl_seg_params p;
        tl_seg_preset(presets[pi], &p);
        tl_tissue t;
        REQUIRE(tl_segment(rgb, w, h, dsx, dsy, &p, &t, NULL) == 0, "%s", ncmi_error());
        double area = 0;
        for (int k = 0; k < t.n; k++) area += t.c[k].area;
        if (pi == 0)
            EXPECT(t.n == 0, "clam-default finds %d contours (CLAM drops this biopsy)", t.n);
        else
            EXPECT(t.n >= 1 && area > 0.1 * (double)sw * sh, "%s: %d contours, %.0f px^2 of %lld", presets[pi], t.n,
                   area, (long long)(sw * sh));
        char *js = test_tmp_path("ref-%s.json", presets[pi]);
        snprintf(cmd, sizeof cmd,
                 "/usr/bin/python3 tests/reference/clam_reference.py --image '%s' --ds %.17g %.17g --slide-wh %lld "
                 "%lld --preset %s --patch-level0 256 512 --no-clam-quirks --out '%s'",
                 ppm, dsx, dsy, (long long)sw, (long long)sh, presets[pi], js);
        REQUIRE(test_run(cmd, &out) == 0, "%s", out ? out : "");
        free(out);
        json_t *ref = json_load_file(js, 0, &e);
        REQUIRE(ref, "%s: %s", js, e.text);
        size_t nrc = json_array_size(json_object_get(ref, "contours"));
        EXPECT((size_t)t.n == nrc, "%s: %d contours vs reference %zu", presets[pi], t.n, nrc);
        for (int gi = 0; gi < 2; gi++) {
            json_t *rg = json_array_get(json_object_get(ref, "grids"), (size_t)gi);
            int ps = geti(rg, "patch_level0");
            REQUIRE(ps == 256 << gi, "reference grid %d: patch %d", gi, ps);
            tl_grid_params gp = {TL_GRID_CONTOUR, TL_CHECK_FOUR_PT, ps, ps, sw, sh, 1, 0};
            int64_t *co;
            size_t n;
            REQUIRE(tl_grid(&t, &gp, &co, &n) == 0, "%s", ncmi_error());
            json_t *rc = json_object_get(rg, "coords");
            size_t nr = json_array_size(rc), common = 0;
            for (size_t a = 0; a < nr; a++) {
                json_t *xy = json_array_get(rc, a);
                int64_t x = json_integer_value(json_array_get(xy, 0)), y = json_integer_value(json_array_get(xy, 1));
                for (size_t b = 0; b < n; b++)
                    if (co[2 * b] == x && co[2 * b + 1] == y) {
                        common++;
                        break;
                    }
            }
            printf("    cmu-1-small-region %-12s patch %3d: C %d contours %zu coords, CLAM reference %zu contours %zu "
                   "coords, %zu in common\n",
                   presets[pi], ps, t.n, n, nrc, nr, common);
            EXPECT(n == nr && common == nr, "%s patch %d: C %zu, reference %zu, common %zu", presets[pi], ps, n, nr,
                   common);
            if (pi > 0) EXPECT(n > 0, "%s patch %d: no patches", presets[pi], ps);
            free(co);
        }
        json_decref(ref);
        tl_tissue_free(&t);
    }
    free(rgb);
}
