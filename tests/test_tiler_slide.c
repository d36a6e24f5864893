/* tiler/slide.c, tiler/coords_h5.c, tiler/synth_slide.c: the fixture slides,
 * bad files, resolution from properties, level choice, RGB reads over white,
 * corrupt tiles, the bounded low-resolution image, synthetic slides against
 * their exact truth and OpenSlide's own view (openslide-python), and coords
 * files against h5py. */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../nn/error.h"
#include "../tiler/coords_h5.h"
#include "../tiler/slide.h"
#include "../tiler/synth_slide.h"
#include "test.h"

#if NCMI_HAVE_VIPS
#include <vips/vips.h>
#endif

#define PEER "tests/reference/tiler_slide_peer.py"

/* fixture path, or NULL when absent (caller SKIPs) */
__attribute__((unused)) static const char *fixture(const char *name)
{
    static char buf[4][1024];
    static int k;
    char *p = buf[k++ & 3];
    snprintf(p, 1024, "%s/slides/%s", test_fixtures_dir(), name);
    return access(p, R_OK) == 0 ? p : NULL;
}

/* Run the Python peer; returns its parsed JSON output (or an empty object
 * when it prints nothing), NULL when Python/module/script is unavailable
 * (printed) or it failed (recorded as a failure). */
__attribute__((unused)) static json_t *peer(const char *args, int *available)
{
    *available = 0;
    if (access(PEER, R_OK) != 0) {
        printf("    (%s not found: run from the repo root; peer check skipped)\n", PEER);
        return NULL;
    }
    char cmd[4096], *out = NULL;
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 %s %s", PEER, args);
    int rc = test_run(cmd, &out);
    if (rc != 0 && out && (strstr(out, "No module named") || strstr(out, "not found"))) {
        printf("    (python peer unavailable: %.200s)\n", out);
        free(out);
        return NULL;
    }
    *available = 1;
    if (rc != 0) {
        test_fail_at(__FILE__, __LINE__, "peer '%s' failed (%d): %s", args, rc, out ? out : "");
        free(out);
        return NULL;
    }
    json_error_t je;
    json_t *j = out && out[0] ? json_loads(out, 0, &je) : json_object();
    if (!j) test_fail_at(__FILE__, __LINE__, "peer '%s': not JSON: %s", args, out);
    free(out);
    return j;
}

/* ------------------------------------------------------------ properties */

typedef struct kv {
    const char *k[8], *v[8];
} kv;

static const char *kv_get(void *ctx, const char *name)
{
    const kv *p = ctx;
    for (int i = 0; i < 8 && p->k[i]; i++)
        if (!strcmp(p->k[i], name)) return p->v[i];
    return NULL;
}

TEST(tiler_mpp_from_properties)
{
    struct {
        kv props;
        int ok;
        double x, y;
        const char *source; /* on success; on failure: substrings of why, '|'-free */
        const char *why2;
    } cases[] = {
        {{{"aperio.MPP"}, {"0.2520"}}, 1, 0.252, 0.252, "aperio.MPP", NULL},
        {{{"openslide.mpp-x", "openslide.mpp-y"}, {"0.25", "0.26"}}, 1, 0.25, 0.26, "openslide.mpp-x", NULL},
        {{{"openslide.mpp-x"}, {"0.5"}}, 1, 0.5, 0.5, "openslide.mpp-x", NULL},
        /* order: openslide.mpp-x before aperio.MPP before tiff.* */
        {{{"tiff.XResolution", "tiff.ResolutionUnit", "aperio.MPP", "openslide.mpp-x"},
          {"40000", "centimeter", "0.3", "0.5"}}, 1, 0.5, 0.5, "openslide.mpp-x", NULL},
        {{{"tiff.XResolution", "tiff.ResolutionUnit", "aperio.MPP"}, {"40000", "centimeter", "0.3"}}, 1, 0.3, 0.3,
         "aperio.MPP", NULL},
        {{{"openslide.mirax.MPP"}, {"0.243"}}, 1, 0.243, 0.243, "openslide.mirax.MPP", NULL},
        /* NDPI stores pixels per centimetre */
        {{{"hamamatsu.XResolution", "hamamatsu.YResolution"}, {"43478.26", "43478.26"}}, 1, 0.23, 0.23,
         "hamamatsu.XResolution", NULL},
        {{{"tiff.XResolution", "tiff.YResolution", "tiff.ResolutionUnit"}, {"40000", "20000", "centimeter"}}, 1,
         0.25, 0.5, "tiff.XResolution", NULL},
        {{{"tiff.XResolution", "tiff.ResolutionUnit"}, {"101600", "inch"}}, 1, 0.25, 0.25, "tiff.XResolution", NULL},
        /* plausibility bounds are inclusive */
        {{{"aperio.MPP"}, {"20"}}, 1, 20, 20, "aperio.MPP", NULL},
        {{{"aperio.MPP"}, {"0.05"}}, 1, 0.05, 0.05, "aperio.MPP", NULL},
        /* failures */
        {{{"tiff.XResolution", "tiff.ResolutionUnit"}, {"72", "inch"}}, 0, 0, 0, "implausible resolution 352.8",
         "dpi"},
        {{{"tiff.XResolution", "tiff.ResolutionUnit"}, {"28.346456527709961", "centimeter"}}, 0, 0, 0,
         "352.8", "tiff.XResolution=28.346"},
        {{{"tiff.XResolution", "tiff.ResolutionUnit"}, {"40000", "none"}}, 0, 0, 0, "no physical unit", "none"},
        {{{"tiff.XResolution"}, {"40000"}}, 0, 0, 0, "no physical unit", "absent"},
        {{{"openslide.objective-power"}, {"20"}}, 0, 0, 0, "no resolution metadata", "aperio.MPP"},
        {{{NULL}, {NULL}}, 0, 0, 0, "no resolution metadata", "tiff.XResolution"},
        {{{"aperio.MPP"}, {"abc"}}, 0, 0, 0, "aperio.MPP='abc' is not a positive number", NULL},
        {{{"aperio.MPP"}, {"-0.5"}}, 0, 0, 0, "not a positive number", NULL},
        {{{"aperio.MPP"}, {"0.01"}}, 0, 0, 0, "implausible", "[0.05, 20]"},
        {{{"openslide.mpp-x", "openslide.mpp-y"}, {"0.25", "40"}}, 0, 0, 0, "implausible", "openslide.mpp-x"},
        /* an implausible first source is not silently replaced by a later one */
        {{{"aperio.MPP", "tiff.XResolution", "tiff.ResolutionUnit"}, {"0.001", "40000", "centimeter"}}, 0, 0, 0,
         "implausible", "aperio.MPP"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        double x = -1, y = -1;
        char src[64], why[512];
        int rc = tl_mpp_from_properties(kv_get, &cases[i].props, &x, &y, src, sizeof src, why, sizeof why);
        if (cases[i].ok) {
            EXPECT(rc == 0, "case %zu: rejected: %s", i, why);
            EXPECT(fabs(x - cases[i].x) < 1e-4 * cases[i].x && fabs(y - cases[i].y) < 1e-4 * cases[i].y,
                   "case %zu: %g x %g, expected %g x %g", i, x, y, cases[i].x, cases[i].y);
            EXPECT(!strcmp(src, cases[i].source), "case %zu: source '%s', expected '%s'", i, src, cases[i].source);
        } else {
            EXPECT(rc == -1, "case %zu: accepted %g x %g from %s", i, x, y, src);
            EXPECT(x == 0 && y == 0, "case %zu: values %g %g left on failure", i, x, y);
            EXPECT(strstr(why, cases[i].source) != NULL, "case %zu: why '%s' lacks '%s'", i, why, cases[i].source);
            if (cases[i].why2)
                EXPECT(strstr(why, cases[i].why2) != NULL, "case %zu: why '%s' lacks '%s'", i, why, cases[i].why2);
        }
    }
}

TEST(tiler_best_level)
{
    tl_slide s;
    memset(&s, 0, sizeof s);
    s.n_levels = 4;
    double ds[4] = {1, 4, 16, 32.0625};
    for (int l = 0; l < 4; l++) s.ds[l] = ds[l];
    s.mpp_x = s.mpp_y = 0.25;
    struct {
        double target;
        int level;
    } c[] = {{0.25, 0}, {0.5, 0}, {0.999, 0}, {1.0, 1}, {1.0009, 1}, {3.9, 1}, {4.0, 2},
             {8.0, 2}, {100, 3}, {0.1, 0}, {8.01, 3}, {8.0156, 3}};
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
        int l = tl_slide_best_level(&s, c[i].target);
        EXPECT(l == c[i].level, "target %g µm/px: level %d, expected %d", c[i].target, l, c[i].level);
    }
    /* (level 3 is 32.0625 x 0.25 = 8.0156 µm/px: 8.0 x 1.001 = 8.008 is below it, hence level 2 for 8.0) */
    /* anisotropic: the coarser axis decides (never upsample either axis) */
    s.mpp_x = 0.25;
    s.mpp_y = 0.5;
    EXPECT(tl_slide_best_level(&s, 1.0) == 0, "anisotropic 0.25x0.5 for 1.0: %d", tl_slide_best_level(&s, 1.0));
    EXPECT(tl_slide_best_level(&s, 2.0) == 1, "anisotropic 0.25x0.5 for 2.0: %d", tl_slide_best_level(&s, 2.0));
}

#if NCMI_HAVE_OPENSLIDE

/* ------------------------------------------------------------ fixtures */

TEST(tiler_slide_cmu_small_region)
{
    const char *p = fixture("cmu-1-small-region.svs");
    if (!p) SKIP("no slides fixtures under %s (set NCMI_FIXTURES)", test_fixtures_dir());
    tl_slide s;
    REQUIRE(tl_slide_open(&s, p, 0) == 0, "%s", ncmi_error());
    EXPECT(s.n_levels == 1, "levels %d", s.n_levels);
    EXPECT(s.w[0] == 2220 && s.h[0] == 2967, "size %lldx%lld", (long long)s.w[0], (long long)s.h[0]);
    EXPECT(s.ds[0] == 1.0, "ds %g", s.ds[0]);
    EXPECT_NEAR(s.mpp_x, 0.499, 1e-9);
    EXPECT_NEAR(s.mpp_y, 0.499, 1e-9);
    EXPECT(!strcmp(s.mpp_source, "openslide.mpp-x"), "source %s", s.mpp_source);
    EXPECT(!strcmp(s.vendor, "aperio"), "vendor %s", s.vendor);
    EXPECT(s.reopen_count == 0, "reopens %d", s.reopen_count);
    EXPECT(tl_slide_best_level(&s, 0.5) == 0 && tl_slide_best_level(&s, 0.25) == 0, "best level");

    /* pixels equal openslide-python's composited onto white; the second region runs past the edge */
    int64_t rx[2] = {1000, 2180}, ry[2] = {1200, 2950};
    for (int k = 0; k < 2; k++) {
        uint8_t rgb[64 * 48 * 3], ref[64 * 48 * 3];
        REQUIRE(tl_slide_read_rgb(&s, rx[k], ry[k], 0, 64, 48, rgb) == 0, "%s", ncmi_error());
        char *rp = test_tmp_path("cmu_region_%d.rgb", k), args[2048];
        snprintf(args, sizeof args, "region '%s' %lld %lld 0 64 48 '%s'", p, (long long)rx[k], (long long)ry[k], rp);
        int avail;
        json_t *j = peer(args, &avail);
        if (j) {
            FILE *f = fopen(rp, "rb");
            size_t n = f ? fread(ref, 1, sizeof ref, f) : 0;
            if (f) fclose(f);
            REQUIRE(n == sizeof ref, "peer region file %s: %zu bytes", rp, n);
            int maxd = 0;
            for (size_t i = 0; i < sizeof ref; i++) {
                int d = abs((int)rgb[i] - (int)ref[i]);
                if (d > maxd) maxd = d;
            }
            EXPECT(maxd <= 1, "region %d differs from openslide-python by up to %d", k, maxd);
            json_decref(j);
        }
        if (k == 1) {
            /* x >= 2220 or y >= 2967 is outside: transparent -> white */
            int white = 1;
            for (int yy = 0; yy < 48; yy++)
                for (int xx = 0; xx < 64; xx++)
                    if ((rx[k] + xx >= 2220 || ry[k] + yy >= 2967) &&
                        (rgb[(yy * 64 + xx) * 3] != 255 || rgb[(yy * 64 + xx) * 3 + 1] != 255 ||
                         rgb[(yy * 64 + xx) * 3 + 2] != 255))
                        white = 0;
            EXPECT(white, "outside the slide is not white");
        } else {
            double mean = 0;
            for (size_t i = 0; i < sizeof rgb; i++) mean += rgb[i];
            mean /= sizeof rgb;
            EXPECT(mean < 235, "region in tissue is almost white (mean %.1f)", mean);
        }
    }
    /* override replaces the slide's resolution */
    tl_slide_close(&s);
    REQUIRE(tl_slide_open(&s, p, 0.25) == 0, "%s", ncmi_error());
    EXPECT(s.mpp_x == 0.25 && s.mpp_y == 0.25 && !strcmp(s.mpp_source, "override"), "override: %g %s", s.mpp_x,
           s.mpp_source);
    /* lowres of a single-level slide: strips of level 0, box-averaged */
    uint8_t *img = NULL;
    int w, h;
    double dx, dy;
    tl_slide_close(&s);
    REQUIRE(tl_slide_open(&s, p, 0) == 0, "%s", ncmi_error());
    REQUIRE(tl_slide_lowres(&s, 8.0, 4096, &img, &w, &h, &dx, &dy) == 0, "%s", ncmi_error());
    /* 8 / 0.499 = 16.03 level-0 px per image px */
    EXPECT(w == (int)ceil(2220 / (8.0 / 0.499)) && h == (int)ceil(2967 / (8.0 / 0.499)), "lowres %dx%d", w, h);
    EXPECT_NEAR(dx, 8.0 / 0.499, 1e-9);
    EXPECT_NEAR(dy, 8.0 / 0.499, 1e-9);
    /* the box average of the full-resolution pixels of one output pixel */
    {
        int ox = w / 2, oy = h / 2;
        double f = 8.0 / 0.499;
        int x0 = (int)ceil(ox * f), x1 = (int)ceil((ox + 1) * f), y0 = (int)ceil(oy * f), y1 = (int)ceil((oy + 1) * f);
        uint8_t *blk = malloc((size_t)(x1 - x0) * (y1 - y0) * 3);
        REQUIRE(tl_slide_read_rgb(&s, x0, y0, 0, x1 - x0, y1 - y0, blk) == 0, "%s", ncmi_error());
        for (int c = 0; c < 3; c++) {
            double sum = 0;
            for (int i = 0; i < (x1 - x0) * (y1 - y0); i++) sum += blk[i * 3 + c];
            EXPECT(fabs(sum / ((x1 - x0) * (y1 - y0)) - img[((size_t)oy * w + ox) * 3 + c]) <= 0.51,
                   "channel %d: box mean %.2f, lowres %d", c, sum / ((x1 - x0) * (y1 - y0)),
                   img[((size_t)oy * w + ox) * 3 + c]);
        }
        free(blk);
    }
    free(img);
    /* max_side bounds the longer side */
    REQUIRE(tl_slide_lowres(&s, 1.0, 200, &img, &w, &h, &dx, &dy) == 0, "%s", ncmi_error());
    EXPECT(h == 200 && w <= 200 && w >= 149, "lowres capped at 200: %dx%d", w, h);
    EXPECT_NEAR(dy, 2967.0 / 200, 1e-6);
    free(img);
    tl_slide_close(&s);
    EXPECT(s.osr == NULL && s.path == NULL, "close leaves the struct cleared");
}

TEST(tiler_slide_small_and_boxes)
{
    const char *small = fixture("small.svs"), *boxes = fixture("boxes.tiff");
    if (!small || !boxes) SKIP("no slides fixtures under %s (set NCMI_FIXTURES)", test_fixtures_dir());
    tl_slide s;
    REQUIRE(tl_slide_open(&s, small, 0) == 0, "%s", ncmi_error());
    EXPECT(s.n_levels == 1 && s.w[0] == 16 && s.h[0] == 16, "small.svs %d levels %lldx%lld", s.n_levels,
           (long long)s.w[0], (long long)s.h[0]);
    EXPECT_NEAR(s.mpp_x, 0.499, 1e-9);
    uint8_t rgb[16 * 16 * 3];
    EXPECT(tl_slide_read_rgb(&s, 0, 0, 0, 16, 16, rgb) == 0, "%s", ncmi_error());
    tl_slide_close(&s);

    /* boxes.tiff: generic TIFF with tiff.XResolution 28.35 px/cm (72 dpi): 352.8 µm/px is rejected */
    EXPECT(tl_slide_open(&s, boxes, 0) == -1, "boxes.tiff accepted at %g µm/px", s.mpp_x);
    const char *e = ncmi_error();
    EXPECT(strstr(e, boxes) && strstr(e, "implausible") && strstr(e, "352.8") && strstr(e, "tiff.XResolution") &&
               strstr(e, "--slide-mpp"),
           "message: %s", e);
    EXPECT(s.osr == NULL && s.path == NULL, "failed open leaves a handle");
    REQUIRE(tl_slide_open(&s, boxes, 0.5) == 0, "%s", ncmi_error());
    EXPECT(!strcmp(s.vendor, "generic-tiff"), "vendor %s", s.vendor);
    REQUIRE(s.n_levels == 4, "levels %d", s.n_levels);
    const int64_t W[4] = {300, 150, 75, 37}, H[4] = {250, 125, 62, 31};
    for (int l = 0; l < 4; l++)
        EXPECT(s.w[l] == W[l] && s.h[l] == H[l], "level %d: %lldx%lld", l, (long long)s.w[l], (long long)s.h[l]);
    EXPECT_NEAR(s.ds[1], 2.0, 1e-9);
    EXPECT_NEAR(s.ds[2], 4.016129032258064, 1e-9);
    EXPECT_NEAR(s.ds[3], 8.086312118570184, 1e-9);
    /* best level at 0.5 µm/px level 0 */
    EXPECT(tl_slide_best_level(&s, 1.0) == 1, "1.0 -> %d", tl_slide_best_level(&s, 1.0));
    EXPECT(tl_slide_best_level(&s, 2.0) == 1, "2.0 -> %d (level 2 is 2.008)", tl_slide_best_level(&s, 2.0));
    EXPECT(tl_slide_best_level(&s, 2.01) == 2, "2.01 -> %d", tl_slide_best_level(&s, 2.01));
    EXPECT(tl_slide_best_level(&s, 0.25) == 0, "0.25 -> %d", tl_slide_best_level(&s, 0.25));
    EXPECT(tl_slide_best_level(&s, 50) == 3, "50 -> %d", tl_slide_best_level(&s, 50));
    /* lowres from level 2 (4.016 <= 4.02 * 1.001) */
    uint8_t *img;
    int w, h;
    double dx, dy;
    REQUIRE(tl_slide_lowres(&s, 2.01, 1000, &img, &w, &h, &dx, &dy) == 0, "%s", ncmi_error());
    /* level 2 is 75x62; f = 4.02 / 4.016129 = 1.00096 level px per image px */
    double f = 4.02 / 4.016129032258064;
    EXPECT(w == 75 && h == 62, "lowres %dx%d", w, h);
    EXPECT(fabs(dx - f * 300 / 75) < 1e-9 && fabs(dy - f * 250 / 62) < 1e-9, "ds %.9g %.9g", dx, dy);
    free(img);
    tl_slide_close(&s);
}

TEST(tiler_slide_bad_files)
{
    tl_slide s;
    /* missing */
    const char *missing = test_tmp_path("no_such_slide.svs");
    EXPECT(tl_slide_open(&s, missing, 0) == -1, "missing file opened");
    EXPECT(strstr(ncmi_error(), missing) && strstr(ncmi_error(), "No such file"), "%s", ncmi_error());
    /* zero bytes */
    const char *zero = test_tmp_path("zero.svs");
    FILE *f = fopen(zero, "wb");
    REQUIRE(f, "cannot create %s", zero);
    fclose(f);
    EXPECT(tl_slide_open(&s, zero, 0.5) == -1, "zero-byte file opened");
    EXPECT(strstr(ncmi_error(), zero) && strstr(ncmi_error(), "empty file (0 bytes)"), "%s", ncmi_error());
    /* a directory */
    EXPECT(tl_slide_open(&s, test_tmpdir(), 0.5) == -1, "directory opened");
    EXPECT(strstr(ncmi_error(), "is a directory"), "%s", ncmi_error());
    /* DICOM: OpenSlide 3.4 does not read it */
    const char *dcm = test_tmp_path("slide.dcm");
    f = fopen(dcm, "wb");
    REQUIRE(f, "cannot create %s", dcm);
    char pre[128] = {0};
    fwrite(pre, 1, 128, f);
    fwrite("DICM\x02\x00\x00\x00", 1, 8, f);
    fclose(f);
    EXPECT(tl_slide_open(&s, dcm, 0.5) == -1, "DICOM opened");
    EXPECT(strstr(ncmi_error(), dcm) && strstr(ncmi_error(), "unsupported") && strstr(ncmi_error(), "DICOM"), "%s",
           ncmi_error());
    /* not a slide */
    const char *broken = fixture("broken.svs");
    if (!broken) SKIP("no slides fixtures under %s (set NCMI_FIXTURES)", test_fixtures_dir());
    EXPECT(tl_slide_open(&s, broken, 0.5) == -1, "broken.svs opened");
    EXPECT(strstr(ncmi_error(), broken) && strstr(ncmi_error(), "unsupported or unrecognised format"), "%s",
           ncmi_error());
    EXPECT(s.osr == NULL && s.path == NULL, "failed open leaves state");
}

TEST(tiler_slide_unreadable_reopens)
{
    const char *p = fixture("unreadable.svs");
    if (!p) SKIP("no slides fixtures under %s (set NCMI_FIXTURES)", test_fixtures_dir());
    tl_slide s;
    /* it opens: the header is fine, the tile data is not */
    REQUIRE(tl_slide_open(&s, p, 0) == 0, "%s", ncmi_error());
    EXPECT(s.w[0] == 16 && s.h[0] == 16, "size %lldx%lld", (long long)s.w[0], (long long)s.h[0]);
    uint8_t rgb[16 * 16 * 3];
    EXPECT(tl_slide_read_rgb(&s, 0, 0, 0, 16, 16, rgb) == -1, "corrupt tile read succeeded");
    const char *e = ncmi_error();
    EXPECT(strstr(e, p) && strstr(e, "x=0 y=0 level 0 16x16") && strstr(e, "Bogus marker length") &&
               strstr(e, "handle reopened"),
           "message: %s", e);
    EXPECT(s.reopen_count == 1 && s.osr != NULL, "reopen_count %d, handle %p", s.reopen_count, s.osr);
    /* the only tile is bad; the handle still serves regions that need no tile data */
    memset(rgb, 0, sizeof rgb);
    EXPECT(tl_slide_read_rgb(&s, 64, 64, 0, 16, 16, rgb) == 0, "read after reopen: %s", ncmi_error());
    EXPECT(rgb[0] == 255 && rgb[sizeof rgb - 1] == 255, "outside is not white");
    EXPECT(tl_slide_read_rgb(&s, 0, 0, 0, 8, 8, rgb) == -1, "bad tile read twice");
    EXPECT(s.reopen_count == 2, "reopen_count %d", s.reopen_count);
    /* arguments */
    EXPECT(tl_slide_read_rgb(&s, 0, 0, 3, 8, 8, rgb) == -1 && strstr(ncmi_error(), "level 3 not in [0, 1)"), "%s",
           ncmi_error());
    EXPECT(tl_slide_read_rgb(&s, 0, 0, 0, 0, 8, rgb) == -1, "empty region accepted");
    tl_slide_close(&s);
}

#if NCMI_HAVE_VIPS
/* A 64x64 tiled RGBA TIFF (deflate, unassociated alpha) with known
 * colour and alpha per quadrant. */
static int write_rgba_tiff(const char *path, const uint8_t *px)
{
    if (VIPS_INIT("test_ncmi")) return -1;
    VipsImage *im = vips_image_new_from_memory(px, 64 * 64 * 4, 64, 64, 4, VIPS_FORMAT_UCHAR), *c = NULL;
    int rc = !im || vips_copy(im, &c, "interpretation", VIPS_INTERPRETATION_sRGB, NULL) ||
             vips_tiffsave(c, path, "tile", TRUE, "tile_width", 64, "tile_height", 64, "compression",
                           VIPS_FOREIGN_TIFF_COMPRESSION_DEFLATE, NULL);
    if (c) g_object_unref(c);
    if (im) g_object_unref(im);
    if (rc) vips_error_clear();
    return rc ? -1 : 0;
}
#endif

TEST(tiler_slide_alpha_onto_white)
{
#if !NCMI_HAVE_VIPS
    SKIP("built without libvips");
#else
    /* quadrants: opaque red, half-transparent (128) blue-green, alpha 1, fully transparent */
    const uint8_t col[4][4] = {{200, 30, 10, 255}, {20, 120, 220, 128}, {0, 0, 0, 1}, {90, 90, 90, 0}};
    uint8_t px[64 * 64 * 4];
    for (int y = 0; y < 64; y++)
        for (int x = 0; x < 64; x++) memcpy(px + (y * 64 + x) * 4, col[(y >= 32) * 2 + (x >= 32)], 4);
    const char *p = test_tmp_path("rgba.tif");
    REQUIRE(write_rgba_tiff(p, px) == 0, "cannot write %s", p);
    tl_slide s;
    REQUIRE(tl_slide_open(&s, p, 1.0) == 0, "%s", ncmi_error());
    uint8_t rgb[64 * 64 * 3];
    REQUIRE(tl_slide_read_rgb(&s, 0, 0, 0, 64, 64, rgb) == 0, "%s", ncmi_error());
    for (int q = 0; q < 4; q++) {
        int x = (q & 1) * 32 + 16, y = (q >> 1) * 32 + 16;
        for (int c = 0; c < 3; c++) {
            double a = col[q][3] / 255.0, expect = col[q][c] * a + 255 * (1 - a);
            int got = rgb[(y * 64 + x) * 3 + c];
            EXPECT(fabs(got - expect) <= 1.0, "quadrant %d channel %d: %d, expected %.2f (alpha %d over white)", q,
                   c, got, expect, col[q][3]);
        }
    }
    tl_slide_close(&s);
#endif
}

/* ------------------------------------------------------------ synthetic slides */

TEST(tiler_synth_truth_exact)
{
    tl_synth_params p;
    tl_synth_params_default(&p);
    p.width = 400;
    p.height = 300;
    p.seed = 7;
    p.mask_max_side = 100;
    tl_synth_truth t;
    REQUIRE(tl_synth_truth_compute(&p, &t) == 0, "%s", ncmi_error());
    EXPECT(t.mask_ds == 4 && t.mask_w == 100 && t.mask_h == 75, "mask %dx%d ds %d", t.mask_w, t.mask_h, t.mask_ds);
    /* brute force: every pixel through tl_synth_pixel */
    long cnt = 0, cell_bad = 0;
    double cov_sum = 0;
    for (int64_t y = 0; y < p.height; y++)
        for (int64_t x = 0; x < p.width; x++) {
            uint8_t rgb[3];
            int tis;
            REQUIRE(tl_synth_pixel(&p, x, y, rgb, &tis) == 0, "%s", ncmi_error());
            cnt += tis;
            /* colour: background exactly 243 grey, tissue not grey */
            if (!tis && !(rgb[0] == 243 && rgb[1] == 243 && rgb[2] == 243)) cell_bad++;
            if (tis && rgb[0] == rgb[1] && rgb[1] == rgb[2]) cell_bad++;
        }
    for (int i = 0; i < t.mask_w * t.mask_h; i++) cov_sum += t.coverage[i] * 16;
    EXPECT(cnt == (long)t.tissue_area, "brute-force tissue %ld px, truth %.0f", cnt, t.tissue_area);
    EXPECT(fabs(cov_sum - t.tissue_area) < 0.5, "coverage sums to %.2f, area %.0f", cov_sum, t.tissue_area);
    EXPECT(cell_bad == 0, "%ld pixels with the wrong colour class", cell_bad);
    EXPECT(t.tissue_fraction > 0.1 && t.tissue_fraction < 0.6, "tissue fraction %.3f", t.tissue_fraction);
    EXPECT(t.n_pieces == 3 && t.n_holes_total == 6, "%d pieces, %d holes", t.n_pieces, t.n_holes_total);
    /* holes are real: some mask cell strictly inside a piece is empty, surrounded by tissue */
    int hole_cells = 0;
    for (int y = 1; y < t.mask_h - 1; y++)
        for (int x = 1; x < t.mask_w - 1; x++) {
            int i = y * t.mask_w + x;
            if (t.coverage[i] == 0) {
                /* tissue on all four sides along the row and column */
                int l = 0, r = 0, u = 0, d = 0;
                for (int k = x - 1; k >= 0; k--) if (t.mask[y * t.mask_w + k]) { l = 1; break; }
                for (int k = x + 1; k < t.mask_w; k++) if (t.mask[y * t.mask_w + k]) { r = 1; break; }
                for (int k = y - 1; k >= 0; k--) if (t.mask[k * t.mask_w + x]) { u = 1; break; }
                for (int k = y + 1; k < t.mask_h; k++) if (t.mask[k * t.mask_w + x]) { d = 1; break; }
                hole_cells += l && r && u && d;
            }
        }
    EXPECT(hole_cells > 10, "%d enclosed empty cells: no holes?", hole_cells);
    /* determinism, and the seed matters */
    tl_synth_truth t2;
    REQUIRE(tl_synth_truth_compute(&p, &t2) == 0, "%s", ncmi_error());
    EXPECT(t2.tissue_area == t.tissue_area && !memcmp(t.coverage, t2.coverage, sizeof(float) * 7500), "not deterministic");
    tl_synth_truth_free(&t2);
    p.seed = 8;
    REQUIRE(tl_synth_truth_compute(&p, &t2) == 0, "%s", ncmi_error());
    EXPECT(t2.tissue_area != t.tissue_area, "seed ignored");
    tl_synth_truth_free(&t2);
    tl_synth_truth_free(&t);
    EXPECT(t.mask == NULL && t.coverage == NULL, "free leaves pointers");
    /* parameter checks */
    p.width = 8;
    EXPECT(tl_synth_truth_compute(&p, &t) == -1 && strstr(ncmi_error(), "out of range"), "%s", ncmi_error());
}

#if NCMI_HAVE_VIPS

static double peer_num(json_t *j, const char *k)
{
    json_t *v = json_object_get(j, k);
    if (json_is_string(v)) return atof(json_string_value(v));
    return json_is_number(v) ? json_number_value(v) : NAN;
}

TEST(tiler_synth_slide_opens)
{
    tl_synth_params p;
    tl_synth_params_default(&p); /* 4000x3000 at 0.5 µm/px */
    p.seed = 3;
    tl_synth_truth t;
    const char *path = test_tmp_path("synth.tif");
    REQUIRE(tl_synth_slide_write(path, &p, &t) == 0, "%s", ncmi_error());
    EXPECT(t.width == 4000 && t.height == 3000 && t.mpp == 0.5 && !t.corrupt, "truth header");
    tl_slide s;
    REQUIRE(tl_slide_open(&s, path, 0) == 0, "%s", ncmi_error());
    EXPECT(!strcmp(s.vendor, "generic-tiff"), "vendor %s", s.vendor);
    EXPECT(!strcmp(s.mpp_source, "tiff.XResolution"), "source %s", s.mpp_source);
    EXPECT(fabs(s.mpp_x - 0.5) < 1e-6 && fabs(s.mpp_y - 0.5) < 1e-6, "mpp %.9g %.9g", s.mpp_x, s.mpp_y);
    /* pyramid down to one tile: 4000, 2000, 1000, 500, 250 */
    EXPECT(s.n_levels == 5, "levels %d", s.n_levels);
    for (int l = 0; l < s.n_levels && l < 5; l++)
        EXPECT(s.w[l] == 4000 >> l && s.h[l] == 3000 >> l, "level %d: %lldx%lld", l, (long long)s.w[l],
               (long long)s.h[l]);
    /* OpenSlide's own view through openslide-python */
    char args[1200];
    snprintf(args, sizeof args, "slide '%s'", path);
    int avail;
    json_t *j = peer(args, &avail);
    if (j) {
        EXPECT(!strcmp(json_string_value(json_object_get(j, "unit")) ?: "", "centimeter"), "unit");
        EXPECT(fabs(peer_num(j, "xres") - 20000) < 1e-3, "tiff.XResolution %g", peer_num(j, "xres"));
        EXPECT(peer_num(j, "levels") == s.n_levels, "openslide-python levels %g", peer_num(j, "levels"));
        EXPECT(json_is_null(json_object_get(j, "mpp_x")), "OpenSlide 3.4 derived openslide.mpp-x itself?");
        json_decref(j);
    }
    /* pixels against the generator (JPEG Q90): per-region mean abs error small */
    int64_t rx[3] = {0, 1700, 2900}, ry[3] = {0, 1300, 700};
    for (int k = 0; k < 3; k++) {
        uint8_t rgb[64 * 64 * 3];
        REQUIRE(tl_slide_read_rgb(&s, rx[k], ry[k], 0, 64, 64, rgb) == 0, "%s", ncmi_error());
        double err = 0;
        for (int y = 0; y < 64; y++)
            for (int x = 0; x < 64; x++) {
                uint8_t ref[3];
                tl_synth_pixel(&p, rx[k] + x, ry[k] + y, ref, NULL);
                for (int c = 0; c < 3; c++) err += fabs((double)rgb[(y * 64 + x) * 3 + c] - ref[c]);
            }
        err /= 64 * 64 * 3;
        EXPECT(err < 6, "region %d: mean abs error %.2f against the generator", k, err);
    }
    /* lowres at 8 µm/px: level 3 (ds 8), 2x box average -> 250x188, 16 level-0 px per pixel */
    uint8_t *img;
    int w, h;
    double dx, dy;
    REQUIRE(tl_slide_lowres(&s, 8.0, 4096, &img, &w, &h, &dx, &dy) == 0, "%s", ncmi_error());
    EXPECT(w == 250 && h == 188, "lowres %dx%d", w, h);
    EXPECT_NEAR(dx, 16, 1e-9);
    EXPECT_NEAR(dy, 16, 1e-9);
    /* tissue (not near-white) agrees with the truth mask; area within 3% */
    long agree = 0, n = 0;
    double area = 0;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            const uint8_t *q = img + ((size_t)y * w + x) * 3;
            int mx = q[0] > q[1] ? q[0] : q[1], mn = q[0] < q[1] ? q[0] : q[1];
            mx = q[2] > mx ? q[2] : mx;
            mn = q[2] < mn ? q[2] : mn;
            int tis = mx - mn > 20;
            int64_t cx = (int64_t)((x + 0.5) * dx) / t.mask_ds, cy = (int64_t)((y + 0.5) * dy) / t.mask_ds;
            if (cx >= t.mask_w || cy >= t.mask_h) continue;
            n++;
            agree += tis == (t.mask[cy * t.mask_w + cx] != 0);
            area += tis * dx * dy;
        }
    EXPECT(agree > 0.98 * n, "lowres tissue agrees with the truth on %ld of %ld pixels", agree, n);
    EXPECT(fabs(area - t.tissue_area) < 0.03 * t.tissue_area, "lowres tissue area %.0f, truth %.0f", area,
           t.tissue_area);
    free(img);
    /* max_side: 300 -> 13.33 level-0 px per pixel from level 3 */
    REQUIRE(tl_slide_lowres(&s, 0.5, 300, &img, &w, &h, &dx, &dy) == 0, "%s", ncmi_error());
    EXPECT(w == 300 && h <= 300 && h >= 224, "capped lowres %dx%d", w, h);
    EXPECT_NEAR(dx, 4000.0 / 300, 1e-9);
    free(img);
    tl_slide_close(&s);
    tl_synth_truth_free(&t);
}

TEST(tiler_synth_slide_no_resolution)
{
    tl_synth_params p;
    tl_synth_params_default(&p);
    p.width = 1024;
    p.height = 768;
    p.no_resolution = 1;
    const char *path = test_tmp_path("nores.tif");
    REQUIRE(tl_synth_slide_write(path, &p, NULL) == 0, "%s", ncmi_error());
    tl_slide s;
    EXPECT(tl_slide_open(&s, path, 0) == -1, "opened without resolution: %g µm/px from %s", s.mpp_x, s.mpp_source);
    const char *e = ncmi_error();
    EXPECT(strstr(e, path) && strstr(e, "no resolution metadata") && strstr(e, "manifest's mpp column") &&
               strstr(e, "--slide-mpp"),
           "message: %s", e);
    char args[1200];
    snprintf(args, sizeof args, "slide '%s'", path);
    int avail;
    json_t *j = peer(args, &avail);
    if (j) {
        /* (tiff.ResolutionUnit then shows libtiff's default, inch: harmless without XResolution) */
        EXPECT(json_is_null(json_object_get(j, "xres")), "openslide-python still sees tiff.XResolution");
        EXPECT(peer_num(j, "levels") == 3, "levels %g", peer_num(j, "levels"));
        json_decref(j);
    }
    REQUIRE(tl_slide_open(&s, path, 0.5) == 0, "override: %s", ncmi_error());
    EXPECT(s.n_levels == 3 && !strcmp(s.mpp_source, "override"), "levels %d source %s", s.n_levels, s.mpp_source);
    uint8_t rgb[32 * 32 * 3];
    EXPECT(tl_slide_read_rgb(&s, 500, 380, 0, 32, 32, rgb) == 0, "%s", ncmi_error());
    tl_slide_close(&s);
    /* single-level */
    p.no_resolution = 0;
    p.no_pyramid = 1;
    REQUIRE(tl_synth_slide_write(path, &p, NULL) == 0, "%s", ncmi_error());
    REQUIRE(tl_slide_open(&s, path, 0) == 0, "%s", ncmi_error());
    EXPECT(s.n_levels == 1 && fabs(s.mpp_x - 0.5) < 1e-6, "no_pyramid: %d levels, %g µm/px", s.n_levels, s.mpp_x);
    tl_slide_close(&s);
}

TEST(tiler_synth_slide_corrupt_tile)
{
    tl_synth_params p;
    tl_synth_params_default(&p);
    p.seed = 5;
    p.corrupt_tile = 1;
    tl_synth_truth t;
    const char *path = test_tmp_path("corrupt.tif");
    REQUIRE(tl_synth_slide_write(path, &p, &t) == 0, "%s", ncmi_error());
    REQUIRE(t.corrupt, "no tile corrupted");
    int64_t cx = t.corrupt_rect[0], cy = t.corrupt_rect[1];
    EXPECT(cx % 256 == 0 && cy % 256 == 0 && t.corrupt_rect[2] == 256 && t.corrupt_rect[3] == 256,
           "corrupt rect %lld %lld %lld %lld", (long long)cx, (long long)cy, (long long)t.corrupt_rect[2],
           (long long)t.corrupt_rect[3]);
    EXPECT(t.corrupt_tile_tissue == 1.0, "corrupt tile tissue fraction %g (the most tissue: a full tile)",
           t.corrupt_tile_tissue);
    tl_slide s;
    REQUIRE(tl_slide_open(&s, path, 0) == 0, "%s", ncmi_error());
    uint8_t rgb[256 * 256 * 3];
    EXPECT(tl_slide_read_rgb(&s, cx + 10, cy + 10, 0, 64, 64, rgb) == -1, "corrupt tile read");
    char region[96];
    snprintf(region, sizeof region, "x=%lld y=%lld level 0 64x64", (long long)cx + 10, (long long)cy + 10);
    EXPECT(strstr(ncmi_error(), path) && strstr(ncmi_error(), region) && strstr(ncmi_error(), "handle reopened"),
           "message: %s", ncmi_error());
    EXPECT(s.reopen_count == 1 && s.osr, "reopen_count %d", s.reopen_count);
    /* neighbours (same level) and the same place at level 1 still read */
    EXPECT(tl_slide_read_rgb(&s, cx + 256, cy, 0, 256, 256, rgb) == 0, "after reopen: %s", ncmi_error());
    EXPECT(tl_slide_read_rgb(&s, cx, cy, 1, 128, 128, rgb) == 0, "level 1: %s", ncmi_error());
    EXPECT(s.reopen_count == 1, "reopen_count %d", s.reopen_count);
    EXPECT(tl_slide_read_rgb(&s, cx, cy, 0, 256, 256, rgb) == -1, "corrupt tile read twice");
    EXPECT(s.reopen_count == 2, "reopen_count %d", s.reopen_count);
    /* the lowres image from a lower level does not touch the bad tile */
    uint8_t *img;
    int w, h;
    double dx, dy;
    REQUIRE(tl_slide_lowres(&s, 8.0, 4096, &img, &w, &h, &dx, &dy) == 0, "%s", ncmi_error());
    EXPECT(s.reopen_count == 2, "lowres at level 3 reopened");
    free(img);
    /* from level 0 it does: the strip is retried in blocks, the bad block is white, the rest is read */
    REQUIRE(tl_slide_lowres(&s, 0.5, 4000, &img, &w, &h, &dx, &dy) == 0, "%s", ncmi_error());
    EXPECT(w == 4000 && h == 3000 && dx == 1 && dy == 1, "level-0 lowres %dx%d ds %g", w, h, dx);
    EXPECT(s.reopen_count > 2, "reopen_count %d after a level-0 lowres across the bad tile", s.reopen_count);
    int white = 1, tissue_next = 0;
    for (int y = 0; y < 256; y++)
        for (int x = 0; x < 256; x++) {
            const uint8_t *q = img + ((size_t)(cy + y) * w + (size_t)(cx + x)) * 3;
            if (q[0] != 255 || q[1] != 255 || q[2] != 255) white = 0;
        }
    for (int x = 0; x < 256; x++) {
        const uint8_t *q = img + ((size_t)(cy + 100) * w + (size_t)(cx + 256 + x)) * 3;
        tissue_next += q[0] != q[2];
    }
    EXPECT(white, "the unreadable block is not painted white");
    EXPECT(tissue_next > 0 || t.corrupt_tile_tissue < 1, "the neighbouring block was not read");
    free(img);
    tl_slide_close(&s);
    tl_synth_truth_free(&t);
}

static long vm_hwm_kb(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kb = -1;
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "VmHWM:", 6)) kb = atol(line + 6);
    if (f) fclose(f);
    return kb;
}

TEST(tiler_lowres_memory_bounded)
{
    /* single-level 12000x9000 slide: the lowres image must stream level 0
     * (432 MB as ARGB) through bounded strips */
    tl_synth_params p;
    tl_synth_params_default(&p);
    p.width = 12000;
    p.height = 9000;
    p.no_pyramid = 1;
    p.quality = 75;
    const char *path = test_tmp_path("single_level.tif");
    REQUIRE(tl_synth_slide_write(path, &p, NULL) == 0, "%s", ncmi_error());
    tl_slide s;
    REQUIRE(tl_slide_open(&s, path, 0) == 0, "%s", ncmi_error());
    REQUIRE(s.n_levels == 1, "levels %d", s.n_levels);
    int fd = open("/proc/self/clear_refs", O_WRONLY);
    int reset = fd >= 0 && write(fd, "5", 1) == 1;
    if (fd >= 0) close(fd);
    long before = vm_hwm_kb();
    uint8_t *img;
    int w, h;
    double dx, dy;
    REQUIRE(tl_slide_lowres(&s, 16.0, 1024, &img, &w, &h, &dx, &dy) == 0, "%s", ncmi_error());
    long after = vm_hwm_kb();
    /* 16 / 0.5 = 32 px per pixel: 375 x 282 */
    EXPECT(w == 375 && h == 282 && dx == 32 && dy == 32, "lowres %dx%d ds %g %g", w, h, dx, dy);
#if defined(__SANITIZE_ADDRESS__)
    reset = 0; /* ASan's quarantine keeps freed strips resident: the bound is measured in the plain build */
#endif
    if (reset && before > 0 && after > 0)
        EXPECT(after - before < 120 * 1024, "peak RSS grew by %ld MB while reading a 432 MB level", (after - before) / 1024);
    else
        printf("    (VmHWM reset unavailable or ASan build: memory bound not measured)\n");
    free(img);
    tl_slide_close(&s);
}

#endif /* NCMI_HAVE_VIPS */
#endif /* NCMI_HAVE_OPENSLIDE */

/* ------------------------------------------------------------ coords HDF5 */

#if NCMI_HAVE_HDF5

static json_t *jattr(json_t *j, const char *k) { return json_object_get(json_object_get(j, "attrs"), k); }

TEST(tiler_coords_h5_roundtrip_h5py)
{
    const int64_t coords[] = {0, 0, 512, 0, 1024, 512, 5000000000LL, 7};
    tl_coords_attrs a = {.name = "slide-01 é", .save_path = "/out/patches", .patch_size = 256, .patch_level = 1,
                         .downsample = {2.0, 2.0}, .level_dim = {20000, 15000}, .downsampled_level_dim = {20000, 15000},
                         .patch_size_level0 = 512, .target_mpp = 0.5, .target_magnification = 20,
                         .level0_mpp = 0.25, .level0_magnification = 40, .overlap = 0, .level0_width = 40000,
                         .level0_height = 30000};
    const char *path = test_tmp_path("slide-01.h5");
    REQUIRE(tl_coords_h5_write(path, coords, 4, &a) == 0, "%s", ncmi_error());
    /* no temporary left behind */
    char tmp[1100];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    EXPECT(access(tmp, F_OK) != 0, "temporary %s left", tmp);
    int64_t *c;
    size_t n;
    tl_coords_attrs b;
    char name[64];
    REQUIRE(tl_coords_h5_read(path, &c, &n, &b, name, sizeof name) == 0, "%s", ncmi_error());
    EXPECT(n == 4 && !memcmp(c, coords, sizeof coords), "coords differ");
    EXPECT(!strcmp(name, "slide-01 é") && b.name == name, "name '%s'", name);
    EXPECT(b.patch_size == 256 && b.patch_level == 1 && b.downsample[0] == 2 && b.downsample[1] == 2 &&
               b.level_dim[0] == 20000 && b.level_dim[1] == 15000 && b.downsampled_level_dim[1] == 15000 &&
               b.patch_size_level0 == 512 && b.target_mpp == 0.5 && b.target_magnification == 20 &&
               b.level0_mpp == 0.25 && b.level0_magnification == 40 && b.overlap == 0 && b.level0_width == 40000 &&
               b.level0_height == 30000,
           "attributes differ");
    free(c);

    char args[1200];
    snprintf(args, sizeof args, "h5check '%s'", path);
    int avail;
    json_t *j = peer(args, &avail);
    if (j) {
        EXPECT(!strcmp(json_string_value(json_object_get(j, "dtype")) ?: "", "int64"), "coords dtype");
        json_t *sh = json_object_get(j, "shape");
        EXPECT(json_integer_value(json_array_get(sh, 0)) == 4 && json_integer_value(json_array_get(sh, 1)) == 2,
               "shape");
        EXPECT(json_integer_value(json_array_get(json_array_get(json_object_get(j, "coords"), 3), 0)) == 5000000000LL,
               "coords[3][0]");
        static const char *ints[] = {"patch_size", "patch_level", "patch_size_level0", "overlap", "level0_width",
                                     "level0_height"};
        for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++)
            EXPECT(!strcmp(json_string_value(json_object_get(jattr(j, ints[i]), "type")) ?: "", "int64"),
                   "%s is not an int64 scalar", ints[i]);
        static const char *reals[] = {"target_mpp", "target_magnification", "level0_mpp", "level0_magnification"};
        for (size_t i = 0; i < sizeof reals / sizeof reals[0]; i++)
            EXPECT(!strcmp(json_string_value(json_object_get(jattr(j, reals[i]), "type")) ?: "", "float64"),
                   "%s is not a float64 scalar", reals[i]);
        json_t *ds = jattr(j, "downsample");
        EXPECT(!strcmp(json_string_value(json_object_get(ds, "dtype")) ?: "", "float64") &&
                   json_array_size(json_object_get(ds, "shape")) == 1 &&
                   json_integer_value(json_array_get(json_object_get(ds, "shape"), 0)) == 2,
               "downsample is not float64 [2]");
        static const char *dims[] = {"level_dim", "downsampled_level_dim"};
        for (int i = 0; i < 2; i++) {
            json_t *d = jattr(j, dims[i]);
            EXPECT(!strcmp(json_string_value(json_object_get(d, "dtype")) ?: "", "int64") &&
                       json_integer_value(json_array_get(json_object_get(d, "value"), 0)) == 20000,
                   "%s is not int64 [2]", dims[i]);
        }
        EXPECT(!strcmp(json_string_value(json_object_get(jattr(j, "name"), "type")) ?: "", "str") &&
                   !strcmp(json_string_value(json_object_get(jattr(j, "name"), "value")) ?: "", "slide-01 é"),
               "name is not str 'slide-01 é'");
        EXPECT(!strcmp(json_string_value(json_object_get(jattr(j, "save_path"), "type")) ?: "", "str"),
               "save_path is not str");
        json_decref(j);
    }
    /* zero patches: a [0, 2] dataset */
    const char *empty = test_tmp_path("empty.h5");
    REQUIRE(tl_coords_h5_write(empty, NULL, 0, &a) == 0, "%s", ncmi_error());
    REQUIRE(tl_coords_h5_read(empty, &c, &n, &b, name, sizeof name) == 0, "%s", ncmi_error());
    EXPECT(n == 0 && b.patch_size == 256, "empty: n %zu", n);
    free(c);
    /* atomic: an unwritable target leaves nothing behind */
    const char *bad = test_tmp_path("no_dir/x.h5");
    EXPECT(tl_coords_h5_write(bad, coords, 4, &a) == -1 && strstr(ncmi_error(), bad), "%s", ncmi_error());
}

TEST(tiler_coords_h5_reads_clam_trident)
{
    int64_t *c;
    size_t n;
    tl_coords_attrs b;
    char name[64], args[1200];
    int avail;
    for (int k = 0; k < 2; k++) {
        const char *path = test_tmp_path("clam_%d.h5", k);
        snprintf(args, sizeof args, "clam '%s' %s", path, k ? "int64" : "int32");
        json_t *j = peer(args, &avail);
        if (!j) {
            if (!avail) SKIP("h5py not available");
            return;
        }
        json_decref(j);
        REQUIRE(tl_coords_h5_read(path, &c, &n, &b, name, sizeof name) == 0, "%s", ncmi_error());
        const int64_t expect[] = {0, 0, 512, 0, 1024, 512, 2048, 1536};
        EXPECT(n == 4 && !memcmp(c, expect, sizeof expect), "CLAM %s coords differ", k ? "int64" : "int32");
        EXPECT(!strcmp(name, "cmu-1") && b.patch_size == 256 && b.patch_level == 1 && b.downsample[0] == 2.0 &&
                   b.level_dim[0] == 1110 && b.downsampled_level_dim[1] == 1484,
               "CLAM attributes: name %s ps %d", name, b.patch_size);
        /* CLAM has no patch_size_level0: derived from patch_size x downsample */
        EXPECT(b.patch_size_level0 == 512 && b.target_mpp == 0, "derived patch_size_level0 %lld",
               (long long)b.patch_size_level0);
        free(c);
    }
    const char *tp = test_tmp_path("TCGA-XX_patches.h5");
    snprintf(args, sizeof args, "trident '%s'", tp);
    json_t *j = peer(args, &avail);
    if (!j) return;
    json_decref(j);
    REQUIRE(tl_coords_h5_read(tp, &c, &n, &b, name, sizeof name) == 0, "%s", ncmi_error());
    EXPECT(n == 3 && c[2] == 896 && c[5] == 896, "TRIDENT coords");
    EXPECT(!strcmp(name, "TCGA-XX") && b.patch_size == 224 && b.patch_size_level0 == 896 &&
               b.level0_magnification == 40 && b.target_magnification == 10 && b.level0_width == 40000 &&
               b.level0_height == 30000 && b.patch_level == 0,
           "TRIDENT attributes: name '%s'", name);
    free(c);
}

TEST(tiler_coords_h5_bad_files)
{
    int64_t *c;
    size_t n;
    tl_coords_attrs b;
    char name[64];
    const char *missing = test_tmp_path("missing.h5");
    EXPECT(tl_coords_h5_read(missing, &c, &n, &b, name, sizeof name) == -1 && strstr(ncmi_error(), missing) &&
               strstr(ncmi_error(), "No such file"),
           "%s", ncmi_error());
    EXPECT(c == NULL && n == 0, "outputs set on error");
    const char *txt = test_tmp_path("text.h5");
    FILE *f = fopen(txt, "w");
    REQUIRE(f, "create");
    fputs("not hdf5\n", f);
    fclose(f);
    EXPECT(tl_coords_h5_read(txt, &c, &n, &b, name, sizeof name) == -1 && strstr(ncmi_error(), "not an HDF5 file"),
           "%s", ncmi_error());
    /* an HDF5 file without coords (a features file) */
    char args[1200];
    const char *nc = test_tmp_path("nocoords.h5");
    snprintf(args, sizeof args, "-c \"import h5py,numpy; h5py.File('%s','w').create_dataset('features', "
                                "data=numpy.zeros((2,3),'f4'))\"", nc);
    char cmd[1400], *out = NULL;
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 %s", args);
    if (test_run(cmd, &out) == 0) {
        EXPECT(tl_coords_h5_read(nc, &c, &n, &b, name, sizeof name) == -1 && strstr(ncmi_error(), nc) &&
                   strstr(ncmi_error(), "no dataset 'coords'"),
               "%s", ncmi_error());
    } else {
        printf("    (h5py unavailable: %s)\n", out ? out : "");
    }
    free(out);
}

#endif /* NCMI_HAVE_HDF5 */
