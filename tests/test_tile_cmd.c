/* ncmi tile through the binary: the real H&E fixture at 0.5 and 1.0 um/px,
 * generated slides with a known tissue area, resume, shards, jobs, every bad
 * input of issue 4, a corrupt tile, and CLAM's algorithm on the fixture. */
#include <jansson.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../eval/csv.h"
#include "../nn/error.h"
#include "../tiler/coords_h5.h"
#include "../tiler/synth_slide.h"
#include "../tiler/tile.h"
#include "test.h"

#if NCMI_HAVE_OPENSLIDE && NCMI_HAVE_VIPS && NCMI_HAVE_HDF5
#define TILE_OK 1
#else
#define TILE_OK 0
#endif

/* ------------------------------------------------------------------ */
/* helpers                                                             */

static int file_exists(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0;
}

static char *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)len + 1);
    size_t r = fread(b, 1, (size_t)len, f);
    b[r] = 0;
    fclose(f);
    if (n) *n = r;
    return b;
}

static int same_file(const char *a, const char *b)
{
    size_t na, nb;
    char *x = slurp(a, &na), *y = slurp(b, &nb);
    int same = x && y && na == nb && !memcmp(x, y, na);
    free(x);
    free(y);
    return same;
}

/* `ncmi tile <args>`; output (stdout+stderr) in *out (caller frees). */
static int tile(char **out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int tile(char **out, const char *fmt, ...)
{
    char args[8192], cmd[9000];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    snprintf(cmd, sizeof cmd, "%s tile %s", test_ncmi_bin(), args);
    char *o = NULL;
    int rc = test_run(cmd, &o);
    if (out)
        *out = o;
    else
        free(o);
    return rc;
}

typedef struct srow {
    char id[128], status[16], error[1024];
    long n_patches, level, patch0;
    double mpp;
} srow;

/* Reads a status file; returns the number of rows (-1 when unreadable). */
static int read_status(const char *path, srow *rows, int max)
{
    eval_csv r;
    if (eval_csv_open(&r, path) != 0) return -1;
    int n = 0, rc;
    int c_id = -1, c_st = -1, c_n = -1, c_mpp = -1, c_lv = -1, c_p0 = -1, c_err = -1;
    while ((rc = eval_csv_next(&r)) == 1) {
        if (r.row == 1) {
            c_id = eval_csv_column(r.fields, r.nfields, "slide_id");
            c_st = eval_csv_column(r.fields, r.nfields, "status");
            c_n = eval_csv_column(r.fields, r.nfields, "n_patches");
            c_mpp = eval_csv_column(r.fields, r.nfields, "mpp");
            c_lv = eval_csv_column(r.fields, r.nfields, "level");
            c_p0 = eval_csv_column(r.fields, r.nfields, "patch_size_level0");
            c_err = eval_csv_column(r.fields, r.nfields, "error");
            if (c_id < 0 || c_st < 0 || c_n < 0 || c_mpp < 0 || c_lv < 0 || c_p0 < 0 || c_err < 0 ||
                eval_csv_column(r.fields, r.nfields, "seconds") < 0) {
                eval_csv_close(&r);
                return -1;
            }
            continue;
        }
        if (n >= max || r.nfields < 8) continue;
        srow *s = &rows[n++];
        memset(s, 0, sizeof *s);
        snprintf(s->id, sizeof s->id, "%s", r.fields[c_id]);
        snprintf(s->status, sizeof s->status, "%s", r.fields[c_st]);
        snprintf(s->error, sizeof s->error, "%s", r.fields[c_err]);
        s->n_patches = atol(r.fields[c_n]);
        s->mpp = atof(r.fields[c_mpp]);
        s->level = atol(r.fields[c_lv]);
        s->patch0 = atol(r.fields[c_p0]);
    }
    eval_csv_close(&r);
    return rc < 0 ? -1 : n;
}

static const srow *find_row(const srow *rows, int n, const char *id)
{
    for (int i = 0; i < n; i++)
        if (!strcmp(rows[i].id, id)) return &rows[i];
    return NULL;
}

typedef struct coords {
    int64_t *xy;
    size_t n;
    tl_coords_attrs a;
    char name[256];
} coords;

static int read_coords(const char *out_dir, const char *id, coords *c)
{
    char p[4096];
    tl_tile_output_path(p, sizeof p, out_dir, "patches", id);
    memset(c, 0, sizeof *c);
    return tl_coords_h5_read(p, &c->xy, &c->n, &c->a, c->name, sizeof c->name);
}

static int coords_equal(const coords *a, const coords *b)
{
    return a->n == b->n && (a->n == 0 || !memcmp(a->xy, b->xy, a->n * 2 * sizeof(int64_t)));
}

static const char *fixture(const char *name)
{
    static char buf[4][4096];
    static int k = 0;
    char *b = buf[k++ % 4];
    snprintf(b, 4096, "%s/slides/%s", test_fixtures_dir(), name);
    return b;
}

static int have_python_h5py(void)
{
    return test_run("/usr/bin/python3 -c 'import h5py, numpy'", NULL) == 0;
}

/* ------------------------------------------------------------------ */
/* the generated cohort (written once per test run)                    */

#define N_SYNTH 4
static char synth_path[N_SYNTH][512];
static tl_synth_truth synth_truth[N_SYNTH];
static int synth_ready = 0; /* 1 ok, -1 failed */

static void synth_free(void)
{
    for (int i = 0; i < N_SYNTH; i++) tl_synth_truth_free(&synth_truth[i]);
}

static int cohort(void)
{
    if (synth_ready) return synth_ready;
    synth_ready = -1;
    if (tl_tile_init() != 0) return -1;
    for (int i = 0; i < N_SYNTH; i++) {
        tl_synth_params p;
        tl_synth_params_default(&p);
        p.width = 4000 + 400 * i;
        p.height = 3000;
        p.mpp = 0.5;
        p.seed = 11 + (uint64_t)i;
        snprintf(synth_path[i], sizeof synth_path[i], "%s/synth%d.tiff", test_tmpdir(), i);
        if (tl_synth_slide_write(synth_path[i], &p, &synth_truth[i]) != 0) {
            fprintf(stderr, "cohort: %s\n", ncmi_error());
            return -1;
        }
    }
    atexit(synth_free);
    synth_ready = 1;
    return 1;
}

#define NEED_COHORT()                                                       \
    do {                                                                    \
        if (!TILE_OK) SKIP("built without OpenSlide, libvips or HDF5");     \
        REQUIRE(cohort() == 1, "cannot write the synthetic slides");        \
    } while (0)

/* ------------------------------------------------------------------ */
/* usage                                                               */

TEST(tile_cmd_usage)
{
    char *o = NULL;
    EXPECT(tile(&o, "--help") == 0 && strstr(o, "--target-mpp") && strstr(o, "--shard"), "help: %s", o);
    free(o);
    EXPECT(tile(&o, "a.svs") == 1 && strstr(o, "--out"), "no --out: %s", o);
    free(o);
    EXPECT(tile(&o, "--out %s", test_tmp_path("u")) == 1 && strstr(o, "no slides"), "no slides: %s", o);
    free(o);
    EXPECT(tile(&o, "a.svs --out x --shard 3/2") == 1 && strstr(o, "--shard"), "bad shard: %s", o);
    free(o);
    EXPECT(tile(&o, "a.svs --out x --target-mpp 0.5 --mag 20") == 1, "mpp and mag: %s", o);
    free(o);
    EXPECT(tile(&o, "a.svs --out x --preset nope") == 1 && strstr(o, "preset"), "bad preset: %s", o);
    free(o);
    EXPECT(tile(&o, "a.svs --out x --overlap 256") == 1, "overlap >= patch: %s", o);
    free(o);
    EXPECT(tile(&o, "a.svs --out x --bogus") == 1 && strstr(o, "--bogus"), "unknown option: %s", o);
    free(o);
}

/* ------------------------------------------------------------------ */
/* the real H&E fixture                                                */

TEST(tile_cmd_cmu_small_region)
{
    if (!TILE_OK) SKIP("built without OpenSlide, libvips or HDF5");
    const char *svs = fixture("cmu-1-small-region.svs");
    if (!file_exists(svs)) SKIP("fixture %s absent", svs);
    const char *d05 = test_tmp_path("cmu05"), *d10 = test_tmp_path("cmu10");
    char *o = NULL;
    int rc = tile(&o, "%s --out %s --target-mpp 0.5", svs, d05);
    REQUIRE(rc == 0, "0.5 um/px: rc %d: %s", rc, o);
    free(o);
    rc = tile(&o, "%s --out %s --mag 10", svs, d10);
    REQUIRE(rc == 0, "1.0 um/px (--mag 10): rc %d: %s", rc, o);
    free(o);

    coords a, b;
    REQUIRE(read_coords(d05, "cmu-1-small-region", &a) == 0, "%s", ncmi_error());
    REQUIRE(read_coords(d10, "cmu-1-small-region", &b) == 0, "%s", ncmi_error());
    /* 256 px at 0.5 um/px on a 0.499 um/px slide: 256 * 0.5 / 0.499 = 256.5 -> 257 */
    EXPECT(a.a.patch_size_level0 == 257, "patch_size_level0 %lld", (long long)a.a.patch_size_level0);
    EXPECT(b.a.patch_size_level0 == 513, "patch_size_level0 %lld", (long long)b.a.patch_size_level0);
    EXPECT_NEAR(a.a.level0_mpp, 0.499, 1e-6);
    EXPECT_NEAR(a.a.target_mpp, 0.5, 1e-9);
    EXPECT_NEAR(b.a.target_mpp, 1.0, 1e-9);
    EXPECT(a.a.patch_size == 256 && a.a.patch_level == 0, "patch_size %d level %d", a.a.patch_size,
           a.a.patch_level);
    EXPECT(a.a.level0_width == 2220 && a.a.level0_height == 2967, "level0 %lld x %lld",
           (long long)a.a.level0_width, (long long)a.a.level0_height);
    EXPECT(!strcmp(a.name, "cmu-1-small-region"), "name '%s'", a.name);
    /* tissue found: the section covers most of this region */
    EXPECT(a.n >= 40, "only %zu patches at 0.5 um/px", a.n);
    EXPECT(b.n >= 10, "only %zu patches at 1.0 um/px", b.n);
    for (size_t i = 0; i < a.n; i++)
        if (a.xy[2 * i] < 0 || a.xy[2 * i + 1] < 0 || a.xy[2 * i] + 257 > 2220 || a.xy[2 * i + 1] + 257 > 2967) {
            EXPECT(0, "0.5 patch %zu at (%lld, %lld) outside the slide", i, (long long)a.xy[2 * i],
                   (long long)a.xy[2 * i + 1]);
            break;
        }
    for (size_t i = 0; i < b.n; i++)
        if (b.xy[2 * i] < 0 || b.xy[2 * i + 1] < 0 || b.xy[2 * i] + 513 > 2220 || b.xy[2 * i + 1] + 513 > 2967) {
            EXPECT(0, "1.0 patch %zu outside the slide", i);
            break;
        }
    /* consistency: a 1.0 um/px patch covers about four 0.5 um/px patches.
     * Count the 0.5 patch centres inside each 1.0 patch, and the 0.5 patches
     * whose centre is in no 1.0 patch. */
    size_t hist[5] = {0}, orphan = 0;
    for (size_t j = 0; j < b.n; j++) {
        int k = 0;
        for (size_t i = 0; i < a.n; i++) {
            double cx = a.xy[2 * i] + 128.5, cy = a.xy[2 * i + 1] + 128.5;
            if (cx >= b.xy[2 * j] && cx < b.xy[2 * j] + 513 && cy >= b.xy[2 * j + 1] && cy < b.xy[2 * j + 1] + 513)
                k++;
        }
        hist[k > 4 ? 4 : k]++;
        EXPECT(k <= 4, "a 1.0 patch holds %d 0.5 patch centres", k);
    }
    for (size_t i = 0; i < a.n; i++) {
        double cx = a.xy[2 * i] + 128.5, cy = a.xy[2 * i + 1] + 128.5;
        int in = 0;
        for (size_t j = 0; j < b.n && !in; j++)
            in = cx >= b.xy[2 * j] && cx < b.xy[2 * j] + 513 && cy >= b.xy[2 * j + 1] && cy < b.xy[2 * j + 1] + 513;
        if (!in) orphan++;
    }
    double ratio = (double)a.n / (double)b.n;
    double area05 = (double)a.n * 257 * 257, area10 = (double)b.n * 513 * 513;
    printf("    cmu-1-small-region: %zu patches at 0.5 um/px, %zu at 1.0 (count ratio %.2f, area ratio %.2f); "
           "1.0 patches holding 0/1/2/3/4 0.5-patch centres: %zu/%zu/%zu/%zu/%zu; %zu 0.5 patches outside the "
           "1.0 grid\n",
           a.n, b.n, ratio, area05 / area10, hist[0], hist[1], hist[2], hist[3], hist[4], orphan);
    /* both grids are anchored at the same contour corners with strides 257 and
     * 513 = 2 x 257 - 1, so a 1.0 patch is (to 1 px) a 2 x 2 block of 0.5 cells;
     * they differ only at the tissue border, where the four_pt check decides
     * on different points. Tolerances for this small (1.1 x 1.5 mm) region,
     * where most patches touch the border: */
    EXPECT(ratio > 2.5 && ratio < 4.5, "count ratio %.2f not about 4", ratio);
    EXPECT(area05 / area10 > 0.75 && area05 / area10 < 1.25, "patch areas differ: %.0f vs %.0f", area05, area10);
    EXPECT(hist[0] <= b.n / 10, "%zu of %zu 1.0 patches hold no 0.5 patch", hist[0], b.n);
    EXPECT(hist[4] + hist[3] >= b.n / 3, "only %zu of %zu 1.0 patches hold 3-4 0.5 patches", hist[4] + hist[3], b.n);
    EXPECT(orphan <= a.n / 4, "%zu of %zu 0.5 patches lie outside the 1.0 grid", orphan, a.n);

    /* the other outputs */
    char p[4096];
    tl_tile_output_path(p, sizeof p, d05, "previews", "cmu-1-small-region");
    size_t n = 0;
    char *png = slurp(p, &n);
    EXPECT(png && n > 1000 && !memcmp(png, "\x89PNG", 4), "%s is not a PNG", p);
    free(png);
    tl_tile_output_path(p, sizeof p, d05, "contours", "cmu-1-small-region");
    json_error_t je;
    json_t *gj = json_load_file(p, 0, &je);
    EXPECT(gj && !strcmp(json_string_value(json_object_get(gj, "type")), "FeatureCollection") &&
               json_array_size(json_object_get(gj, "features")) >= 1,
           "%s: not a FeatureCollection with tissue: %s", p, gj ? "" : je.text);
    json_decref(gj);
    srow rows[4];
    char sp[4096];
    snprintf(sp, sizeof sp, "%s/tile_status.csv", d05);
    EXPECT(read_status(sp, rows, 4) == 1 && !strcmp(rows[0].status, "ok") && rows[0].n_patches == (long)a.n &&
               rows[0].patch0 == 257 && fabs(rows[0].mpp - 0.499) < 1e-6 && rows[0].level == 0,
           "status row wrong");

    /* h5py reads the file with CLAM's attributes */
    if (!have_python_h5py()) {
        printf("    (h5py check skipped: /usr/bin/python3 with h5py absent)\n");
    } else {
        char cmd[8192];
        tl_tile_output_path(p, sizeof p, d05, "patches", "cmu-1-small-region");
        snprintf(cmd, sizeof cmd,
                 "/usr/bin/python3 -c \"import h5py, sys\n"
                 "f = h5py.File('%s', 'r')\n"
                 "c = f['coords']\n"
                 "assert c.dtype == 'int64' and c.ndim == 2 and c.shape[1] == 2, (c.dtype, c.shape)\n"
                 "for k in ['patch_size', 'patch_level', 'downsample', 'downsampled_level_dim', "
                 "'level_dim', 'name', 'save_path', 'patch_size_level0', 'target_mpp', 'level0_mpp', "
                 "'overlap']:\n"
                 "    assert k in c.attrs, k\n"
                 "assert int(c.attrs['patch_size']) == 256 and int(c.attrs['patch_level']) == 0\n"
                 "print('h5py', c.shape[0], int(c.attrs['patch_size_level0']))\"",
                 p);
        rc = test_run(cmd, &o);
        char expect[64];
        snprintf(expect, sizeof expect, "h5py %zu 257", a.n);
        EXPECT(rc == 0 && strstr(o, expect), "h5py: rc %d: %s", rc, o);
        free(o);
    }
    free(a.xy);
    free(b.xy);
}

/* ------------------------------------------------------------------ */
/* generated slides: counts and coverage against the known tissue      */

/* Tissue fraction of the patch [x, x+s) x [y, y+s) from the truth's coverage mask. */
static double patch_tissue(const tl_synth_truth *t, int64_t x, int64_t y, int64_t s)
{
    double sum = 0, area = 0;
    int ds = t->mask_ds;
    for (int64_t my = y / ds; my <= (y + s - 1) / ds && my < t->mask_h; my++)
        for (int64_t mx = x / ds; mx <= (x + s - 1) / ds && mx < t->mask_w; mx++) {
            double x0 = (double)(mx * ds), y0 = (double)(my * ds);
            double ox = fmin(x0 + ds, (double)(x + s)) - fmax(x0, (double)x);
            double oy = fmin(y0 + ds, (double)(y + s)) - fmax(y0, (double)y);
            if (ox <= 0 || oy <= 0) continue;
            sum += ox * oy * t->coverage[my * t->mask_w + mx];
            area += ox * oy;
        }
    return area > 0 ? sum / area : 0;
}

TEST(tile_cmd_synthetic_area)
{
    NEED_COHORT();
    const char *d1 = test_tmp_path("area1"), *d2 = test_tmp_path("area2"), *d3 = test_tmp_path("area3");
    char *o = NULL;
    /* global grid, a patch kept when >= half of it is tissue: patch area ~ tissue area */
    int rc = tile(&o, "%s %s %s --out %s --target-mpp 1 --patch-size 64 --grid global --min-tissue 0.5",
                  synth_path[0], synth_path[1], synth_path[2], d1);
    REQUIRE(rc == 0, "rc %d: %s", rc, o);
    free(o);
    rc = tile(&o, "%s %s %s --out %s --target-mpp 2 --patch-size 64 --grid global --min-tissue 0.5",
              synth_path[0], synth_path[1], synth_path[2], d2);
    REQUIRE(rc == 0, "rc %d: %s", rc, o);
    free(o);
    /* CLAM-style contour grid (four_pt): covers the tissue, with a margin */
    rc = tile(&o, "%s %s %s --out %s --target-mpp 1 --patch-size 64", synth_path[0], synth_path[1],
              synth_path[2], d3);
    REQUIRE(rc == 0, "rc %d: %s", rc, o);
    free(o);
    for (int i = 0; i < 3; i++) {
        char id[32];
        snprintf(id, sizeof id, "synth%d", i);
        const tl_synth_truth *t = &synth_truth[i];
        coords g1, g2, c1;
        REQUIRE(read_coords(d1, id, &g1) == 0 && read_coords(d2, id, &g2) == 0 && read_coords(d3, id, &c1) == 0,
                "%s", ncmi_error());
        EXPECT(g1.a.patch_size_level0 == 128 && g2.a.patch_size_level0 == 256 && c1.a.patch_size_level0 == 128,
               "patch_size_level0 %lld %lld", (long long)g1.a.patch_size_level0, (long long)g2.a.patch_size_level0);
        double area1 = (double)g1.n * 128 * 128, area2 = (double)g2.n * 256 * 256;
        double err1 = area1 / t->tissue_area - 1, err2 = area2 / t->tissue_area - 1;
        /* precision and recall of the contour grid against the truth */
        double tissue_in = 0;
        size_t mostly_bg = 0;
        for (size_t k = 0; k < c1.n; k++) {
            double f = patch_tissue(t, c1.xy[2 * k], c1.xy[2 * k + 1], 128);
            tissue_in += f * 128 * 128;
            if (f < 0.05) mostly_bg++;
        }
        double recall = tissue_in / t->tissue_area;
        double ratio = (double)g1.n / (double)(g2.n ? g2.n : 1);
        printf("    %s: tissue %.0f px^2 (%.1f%%); global grid 1 um/px %zu patches (area %+.1f%%), 2 um/px "
               "%zu (%+.1f%%), ratio %.2f; contour grid %zu patches, tissue covered %.1f%%, %zu background\n",
               id, t->tissue_area, 100 * t->tissue_fraction, g1.n, 100 * err1, g2.n, 100 * err2, ratio, c1.n,
               100 * recall, mostly_bg);
        EXPECT(fabs(err1) < 0.10, "%s: global grid area off by %.1f%% (tolerance 10%%)", id, 100 * err1);
        EXPECT(fabs(err2) < 0.15, "%s: 2 um/px global grid area off by %.1f%% (tolerance 15%%)", id, 100 * err2);
        EXPECT(ratio > 3.4 && ratio < 4.6, "%s: halving the resolution: count ratio %.2f, not about 4", id, ratio);
        EXPECT(recall > 0.97, "%s: contour grid covers %.1f%% of the tissue", id, 100 * recall);
        EXPECT(mostly_bg <= c1.n / 20, "%s: %zu of %zu contour-grid patches are background", id, mostly_bg, c1.n);
        free(g1.xy);
        free(g2.xy);
        free(c1.xy);
    }
}

/* ------------------------------------------------------------------ */
/* resume, shards, jobs                                                */

TEST(tile_cmd_resume)
{
    NEED_COHORT();
    const char *d = test_tmp_path("resume");
    char *o = NULL;
    int rc = tile(&o, "%s %s --out %s --target-mpp 1", synth_path[0], synth_path[1], d);
    REQUIRE(rc == 0, "first run: rc %d: %s", rc, o);
    free(o);
    char h5_0[4096], png_0[4096], gj_1[4096], h5_1[4096], st[4096];
    tl_tile_output_path(h5_0, sizeof h5_0, d, "patches", "synth0");
    tl_tile_output_path(png_0, sizeof png_0, d, "previews", "synth0");
    tl_tile_output_path(gj_1, sizeof gj_1, d, "contours", "synth1");
    tl_tile_output_path(h5_1, sizeof h5_1, d, "patches", "synth1");
    snprintf(st, sizeof st, "%s/tile_status.csv", d);
    struct stat st0;
    REQUIRE(stat(h5_0, &st0) == 0, "no %s", h5_0);
    srow rows[8];
    long n0 = -1;
    REQUIRE(read_status(st, rows, 8) == 2, "status rows");
    n0 = find_row(rows, 2, "synth0")->n_patches;

    /* second run: both skipped, nothing rewritten */
    rc = tile(&o, "%s %s --out %s --target-mpp 1", synth_path[0], synth_path[1], d);
    EXPECT(rc == 0, "second run: rc %d: %s", rc, o);
    free(o);
    EXPECT(read_status(st, rows, 8) == 2 && !strcmp(rows[0].status, "skipped") && !strcmp(rows[1].status, "skipped") &&
               rows[0].n_patches == n0,
           "second run not skipped: %s %s", rows[0].status, rows[1].status);
    struct stat st1;
    EXPECT(stat(h5_0, &st1) == 0 && st1.st_mtim.tv_sec == st0.st_mtim.tv_sec && st1.st_mtim.tv_nsec == st0.st_mtim.tv_nsec &&
               st1.st_ino == st0.st_ino,
           "a skipped slide was rewritten");

    /* a deleted output is redone; a leftover temporary file is cleaned;
     * a truncated (partial) h5 under the final name is redone */
    unlink(png_0);
    char left[4200];
    snprintf(left, sizeof left, "%s.tmp.999", h5_1);
    FILE *f = fopen(left, "w");
    fputs("partial", f);
    fclose(f);
    unlink(gj_1);
    rc = tile(&o, "%s %s --out %s --target-mpp 1", synth_path[0], synth_path[1], d);
    EXPECT(rc == 0, "third run: rc %d: %s", rc, o);
    free(o);
    // NOLINTBEGIN(clang-analyzer-core.NonNullParamChecker): read_status found both rows when it
    // returns 2 (a missing row would crash this already failing test, not pass it)
    EXPECT(read_status(st, rows, 8) == 2 && !strcmp(find_row(rows, 2, "synth0")->status, "ok") &&
               !strcmp(find_row(rows, 2, "synth1")->status, "ok") && find_row(rows, 2, "synth0")->n_patches == n0,
           "deleted outputs not redone");
    // NOLINTEND(clang-analyzer-core.NonNullParamChecker)
    EXPECT(file_exists(png_0) && file_exists(gj_1), "outputs not rewritten");
    EXPECT(!file_exists(left), "leftover %s not removed", left);

    f = fopen(h5_1, "w"); /* a broken h5 under the final name */
    fputs("not hdf5", f);
    fclose(f);
    snprintf(left, sizeof left, "%s.tmp.998", png_0); /* leftover beside complete outputs */
    f = fopen(left, "w");
    fclose(f);
    rc = tile(&o, "%s %s --out %s --target-mpp 1", synth_path[0], synth_path[1], d);
    EXPECT(rc == 0, "fourth run: rc %d: %s", rc, o);
    free(o);
    // NOLINTBEGIN(clang-analyzer-core.NonNullParamChecker): read_status found both rows when it
    // returns 2 (a missing row would crash this already failing test, not pass it)
    EXPECT(read_status(st, rows, 8) == 2 && !strcmp(find_row(rows, 2, "synth0")->status, "skipped") &&
               !strcmp(find_row(rows, 2, "synth1")->status, "ok"),
           "broken h5 not redone");
    // NOLINTEND(clang-analyzer-core.NonNullParamChecker)
    EXPECT(!file_exists(left), "leftover %s beside a complete slide not removed", left);
    coords c;
    EXPECT(read_coords(d, "synth1", &c) == 0, "synth1 h5 after redo: %s", ncmi_error());
    free(c.xy);

    /* --force redoes everything */
    rc = tile(&o, "%s %s --out %s --target-mpp 1 --force", synth_path[0], synth_path[1], d);
    EXPECT(rc == 0 && read_status(st, rows, 8) == 2 && !strcmp(rows[0].status, "ok") && !strcmp(rows[1].status, "ok"),
           "--force: rc %d", rc);
    free(o);
}

TEST(tile_cmd_shards_and_jobs)
{
    NEED_COHORT();
    /* a manifest in another folder: paths relative to it */
    const char *mdir = test_tmp_path("mf");
    mkdir(mdir, 0777);
    char man[4096];
    snprintf(man, sizeof man, "%s/cohort.csv", mdir);
    FILE *f = fopen(man, "w");
    REQUIRE(f, "cannot write %s", man);
    fprintf(f, "slide_id,label,path\n");
    for (int i = 0; i < N_SYNTH; i++) fprintf(f, "s%d,a,../synth%d.tiff\n", i, i);
    fclose(f);

    const char *ds = test_tmp_path("shards"), *d1 = test_tmp_path("jobs1"), *d2 = test_tmp_path("jobs2");
    char *o = NULL;
    int rc = tile(&o, "--manifest %s --out %s --shard 1/2 --target-mpp 1", man, ds);
    REQUIRE(rc == 0, "shard 1/2: rc %d: %s", rc, o);
    free(o);
    rc = tile(&o, "--manifest %s --out %s --shard 2/2 --target-mpp 1", man, ds);
    REQUIRE(rc == 0, "shard 2/2: rc %d: %s", rc, o);
    free(o);
    srow r1[8], r2[8];
    char p1[4096], p2[4096];
    snprintf(p1, sizeof p1, "%s/tile_status.1of2.csv", ds);
    snprintf(p2, sizeof p2, "%s/tile_status.2of2.csv", ds);
    int n1 = read_status(p1, r1, 8), n2 = read_status(p2, r2, 8);
    EXPECT(n1 == 2 && n2 == 2, "shard rows %d + %d", n1, n2);
    int seen[N_SYNTH] = {0};
    for (int i = 0; i < n1; i++) seen[atoi(r1[i].id + 1) % N_SYNTH]++;
    for (int i = 0; i < n2; i++) seen[atoi(r2[i].id + 1) % N_SYNTH]++;
    for (int i = 0; i < N_SYNTH; i++) {
        EXPECT(seen[i] == 1, "slide s%d processed %d times", i, seen[i]);
        char id[16];
        snprintf(id, sizeof id, "s%d", i);
        EXPECT(tl_tile_outputs_complete(ds, id), "s%d outputs missing", i);
    }
    EXPECT(n1 == 2 && !strcmp(r1[0].id, "s0") && !strcmp(r1[1].id, "s2"), "shard 1/2 is i mod 2 == 0");

    /* --jobs 2 gives the same outputs as --jobs 1 */
    rc = tile(&o, "--manifest %s --out %s --jobs 1 --target-mpp 1", man, d1);
    REQUIRE(rc == 0, "jobs 1: rc %d: %s", rc, o);
    free(o);
    rc = tile(&o, "--manifest %s --out %s --jobs 2 --target-mpp 1", man, d2);
    REQUIRE(rc == 0, "jobs 2: rc %d: %s", rc, o);
    free(o);
    for (int i = 0; i < N_SYNTH; i++) {
        char id[16], a[4096], b[4096];
        snprintf(id, sizeof id, "s%d", i);
        coords x, y;
        REQUIRE(read_coords(d1, id, &x) == 0 && read_coords(d2, id, &y) == 0, "%s", ncmi_error());
        EXPECT(coords_equal(&x, &y) && x.n > 0, "%s: coords differ with --jobs 2 (%zu vs %zu)", id, x.n, y.n);
        free(x.xy);
        free(y.xy);
        tl_tile_output_path(a, sizeof a, d1, "contours", id);
        tl_tile_output_path(b, sizeof b, d2, "contours", id);
        EXPECT(same_file(a, b), "%s: GeoJSON differs with --jobs 2", id);
        tl_tile_output_path(a, sizeof a, d1, "previews", id);
        tl_tile_output_path(b, sizeof b, d2, "previews", id);
        EXPECT(same_file(a, b), "%s: preview differs with --jobs 2", id);
    }
    snprintf(p1, sizeof p1, "%s/tile_status.csv", d1);
    snprintf(p2, sizeof p2, "%s/tile_status.csv", d2);
    n1 = read_status(p1, r1, 8);
    n2 = read_status(p2, r2, 8);
    EXPECT(n1 == N_SYNTH && n2 == N_SYNTH, "status rows %d %d", n1, n2);
    for (int i = 0; i < n1 && i < n2; i++)
        EXPECT(!strcmp(r1[i].id, r2[i].id) && r1[i].n_patches == r2[i].n_patches, "status row %d differs", i);
}

/* ------------------------------------------------------------------ */
/* bad input                                                           */

TEST(tile_cmd_bad_input)
{
    NEED_COHORT();
    const char *dir = test_tmp_path("bad");
    mkdir(dir, 0777);
    char zero[4096], dcm[4096], nores[4096], man[4096];
    snprintf(zero, sizeof zero, "%s/zero.svs", dir);
    FILE *f = fopen(zero, "w");
    fclose(f);
    /* a DICOM file (preamble + DICM magic): OpenSlide 3.4 does not read DICOM */
    snprintf(dcm, sizeof dcm, "%s/slide.dcm", dir);
    f = fopen(dcm, "wb");
    for (int i = 0; i < 128; i++) fputc(0, f);
    fputs("DICM", f);
    for (int i = 0; i < 256; i++) fputc(i, f);
    fclose(f);
    tl_synth_params p;
    tl_synth_params_default(&p);
    p.width = 2000;
    p.height = 1500;
    p.no_resolution = 1;
    snprintf(nores, sizeof nores, "%s/nores.tiff", dir);
    REQUIRE(tl_synth_slide_write(nores, &p, NULL) == 0, "%s", ncmi_error());

    const char *fx = test_fixtures_dir();
    int have_fx = file_exists(fixture("unreadable.svs")) && file_exists(fixture("broken.svs"));
    if (!have_fx) printf("    (fixtures unreadable.svs/broken.svs/boxes.tiff absent in %s: not in this run)\n", fx);
    snprintf(man, sizeof man, "%s/m.csv", dir);
    f = fopen(man, "w");
    fprintf(f, "slide_id,label,path,mpp\n");
    fprintf(f, "good0,a,%s,\n", synth_path[0]);
    fprintf(f, "zero,a,zero.svs,\n");
    fprintf(f, "missing,a,missing.svs,\n");
    fprintf(f, "nores,a,nores.tiff,\n");
    fprintf(f, "nores_override,a,nores.tiff,0.5\n");
    fprintf(f, "dicom,a,slide.dcm,\n");
    fprintf(f, "nopath,a,,\n");
    if (have_fx) {
        fprintf(f, "unreadable,a,%s,\n", fixture("unreadable.svs"));
        fprintf(f, "broken,a,%s,\n", fixture("broken.svs"));
        fprintf(f, "boxes,a,%s,\n", fixture("boxes.tiff"));
    }
    fprintf(f, "good1,a,%s,\n", synth_path[1]);
    fclose(f);
    const char *out = test_tmp_path("bad_out");
    char *o = NULL;
    int rc = tile(&o, "--manifest %s --out %s --target-mpp 1 --jobs 2", man, out);
    EXPECT(rc == 3, "exit %d, expected 3 (partial success): %s", rc, o);
    free(o);
    char st[4096];
    snprintf(st, sizeof st, "%s/tile_status.csv", out);
    srow rows[16];
    int n = read_status(st, rows, 16);
    REQUIRE(n == (have_fx ? 11 : 8), "status rows %d", n);
    static const struct {
        const char *id, *status, *needle;
    } want[] = {
        {"good0", "ok", NULL},
        {"good1", "ok", NULL},
        {"nores_override", "ok", NULL},
        {"zero", "failed", "zero.svs"},
        {"missing", "failed", "missing.svs"},
        {"nores", "failed", "mpp"},
        {"dicom", "failed", "slide.dcm"},
        {"nopath", "failed", "path"},
        {"unreadable", "failed", "unreadable.svs"},
        {"broken", "failed", "broken.svs"},
        {"boxes", "failed", "boxes.tiff"},
    };
    for (size_t k = 0; k < sizeof want / sizeof want[0]; k++) {
        const srow *r = find_row(rows, n, want[k].id);
        if (!r && !have_fx && k >= 8) continue;
        REQUIRE(r, "no status row for %s", want[k].id);
        EXPECT(!strcmp(r->status, want[k].status), "%s: status %s, expected %s (%s)", want[k].id, r->status,
               want[k].status, r->error);
        if (want[k].needle)
            EXPECT(strstr(r->error, want[k].needle) != NULL, "%s: reason '%s' does not mention '%s'", want[k].id,
                   r->error, want[k].needle);
        if (!strcmp(r->status, "failed")) printf("    %-14s failed: %s\n", want[k].id, r->error);
        char id_h5[4096];
        tl_tile_output_path(id_h5, sizeof id_h5, out, "patches", want[k].id);
        EXPECT(file_exists(id_h5) == !strcmp(want[k].status, "ok"), "%s: h5 %s", want[k].id,
               file_exists(id_h5) ? "written for a failed slide" : "missing");
    }
    const srow *nr = find_row(rows, n, "nores");
    EXPECT(nr && (strstr(nr->error, "resolution") || strstr(nr->error, "mpp")) && strstr(nr->error, "--slide-mpp"),
           "no-resolution reason should say how to fix it: %s", nr ? nr->error : "");
    if (have_fx) {
        const srow *bx = find_row(rows, n, "boxes");
        EXPECT(bx && strstr(bx->error, "tiff.XResolution"), "implausible resolution should name its source: %s",
               bx ? bx->error : "");
    }

    /* every slide failed: exit 2 */
    rc = tile(&o, "%s %s --out %s", zero, dcm, test_tmp_path("bad_all"));
    EXPECT(rc == 2, "all failed: exit %d, expected 2: %s", rc, o);
    free(o);
    /* --slide-mpp rescues a slide without resolution given on the command line */
    rc = tile(&o, "%s --slide-mpp 0.5 --out %s --target-mpp 1", nores, test_tmp_path("bad_override"));
    EXPECT(rc == 0, "--slide-mpp: exit %d: %s", rc, o);
    free(o);
}

TEST(tile_cmd_corrupt_tile)
{
    NEED_COHORT();
    tl_synth_params p;
    tl_synth_params_default(&p);
    p.width = 3000;
    p.height = 2000;
    p.corrupt_tile = 1;
    p.corrupt_x = p.corrupt_y = -1;
    char path[4096];
    snprintf(path, sizeof path, "%s/corrupt.tiff", test_tmpdir());
    tl_synth_truth t;
    REQUIRE(tl_synth_slide_write(path, &p, &t) == 0, "%s", ncmi_error());
    REQUIRE(t.corrupt, "no tile was corrupted");
    /* segmentation at 0.5 um/px reads level 0, where the corrupt tile is */
    const char *out = test_tmp_path("corrupt_out");
    char *o = NULL;
    int rc = tile(&o, "%s --out %s --target-mpp 1 --seg-mpp 0.5", path, out);
    EXPECT(rc == 0, "exit %d: %s", rc, o);
    free(o);
    char st[4096];
    snprintf(st, sizeof st, "%s/tile_status.csv", out);
    srow rows[2];
    REQUIRE(read_status(st, rows, 2) == 1, "status");
    printf("    corrupt tile at x=%lld y=%lld w=%lld h=%lld: %s, %ld patches; recorded: %s\n",
           (long long)t.corrupt_rect[0], (long long)t.corrupt_rect[1], (long long)t.corrupt_rect[2],
           (long long)t.corrupt_rect[3], rows[0].status, rows[0].n_patches, rows[0].error);
    EXPECT(!strcmp(rows[0].status, "ok") && rows[0].n_patches > 0, "slide not finished: %s", rows[0].status);
    EXPECT(strstr(rows[0].error, "unreadable region") || strstr(rows[0].error, "read error"),
           "corrupt region not recorded: '%s'", rows[0].error);
    /* the recorded region lies on the corrupt tile */
    const char *xs = strstr(rows[0].error, "x=");
    if (xs) {
        long long x = 0, y = 0, w = 0, h = 0;
        if (sscanf(xs, "x=%lld y=%lld w=%lld h=%lld", &x, &y, &w, &h) == 4) {
            EXPECT(x < t.corrupt_rect[0] + t.corrupt_rect[2] && x + w > t.corrupt_rect[0] &&
                       y < t.corrupt_rect[1] + t.corrupt_rect[3] && y + h > t.corrupt_rect[1],
                   "recorded region (%lld,%lld %lldx%lld) misses the corrupt tile", x, y, w, h);
            EXPECT(w <= 2 * t.corrupt_rect[2] + 64 && h <= 2 * t.corrupt_rect[3] + 64,
                   "recorded region %lldx%lld much larger than the tile", w, h);
        }
    }
    tl_synth_truth_free(&t);
}

/* ------------------------------------------------------------------ */
/* CLAM's algorithm (tests/reference/clam_reference.py, OpenCV) on the  */
/* fixture with the biopsy preset                                       */

static size_t overlap_count(const int64_t *a, size_t na, const int64_t *b, size_t nb)
{
    size_t k = 0;
    for (size_t i = 0; i < na; i++)
        for (size_t j = 0; j < nb; j++)
            if (a[2 * i] == b[2 * j] && a[2 * i + 1] == b[2 * j + 1]) {
                k++;
                break;
            }
    return k;
}

TEST(tile_cmd_vs_clam_reference)
{
    if (!TILE_OK) SKIP("built without OpenSlide, libvips or HDF5");
    const char *svs = fixture("cmu-1-small-region.svs");
    if (!file_exists(svs)) SKIP("fixture %s absent", svs);
    if (test_run("/usr/bin/python3 -c 'import cv2, openslide, numpy'", NULL) != 0)
        SKIP("/usr/bin/python3 with cv2, openslide and numpy absent (the CLAM reference needs them)");
    if (!file_exists("tests/reference/clam_reference.py")) SKIP("run from the repository root");
    /* CLAM as it runs (its quirks on): segmentation on the level nearest 64x,
     * i.e. level 0 of this single-level slide; 257 px patches = 256 at 0.5 um/px */
    const char *json = test_tmp_path("clam_ref.json");
    char cmd[8192], *o = NULL;
    snprintf(cmd, sizeof cmd,
             "/usr/bin/python3 tests/reference/clam_reference.py --slide %s --preset biopsy --patch-level0 257 "
             "--no-padding --out %s",
             svs, json);
    int rc = test_run(cmd, &o);
    REQUIRE(rc == 0, "reference: rc %d: %s", rc, o);
    free(o);
    json_error_t je;
    json_t *j = json_load_file(json, 0, &je);
    REQUIRE(j, "%s: %s", json, je.text);
    json_t *jc = json_object_get(j, "coords");
    size_t nr = json_array_size(jc);
    int64_t *ref = malloc((nr ? nr : 1) * 2 * sizeof *ref);
    for (size_t i = 0; i < nr; i++) {
        ref[2 * i] = json_integer_value(json_array_get(json_array_get(jc, i), 0));
        ref[2 * i + 1] = json_integer_value(json_array_get(json_array_get(jc, i), 1));
    }
    json_decref(j);

    /* ncmi at CLAM's segmentation resolution (0.499 um/px, level 0), and at its default 8 um/px */
    const char *d_eq = test_tmp_path("clam_eq"), *d_def = test_tmp_path("clam_def");
    rc = tile(&o, "%s --out %s --preset biopsy --seg-mpp 0.499", svs, d_eq);
    REQUIRE(rc == 0, "rc %d: %s", rc, o);
    free(o);
    rc = tile(&o, "%s --out %s --preset biopsy", svs, d_def);
    REQUIRE(rc == 0, "rc %d: %s", rc, o);
    free(o);
    coords eq, def;
    REQUIRE(read_coords(d_eq, "cmu-1-small-region", &eq) == 0 && read_coords(d_def, "cmu-1-small-region", &def) == 0,
            "%s", ncmi_error());
    size_t both_eq = overlap_count(eq.xy, eq.n, ref, nr), both_def = overlap_count(def.xy, def.n, ref, nr);
    double agree_eq = nr ? (double)eq.n / (double)nr : 0, agree_def = nr ? (double)def.n / (double)nr : 0;
    printf("    CLAM reference (bwh_biopsy, seg at level 0): %zu patches; ncmi --preset biopsy: %zu at the same "
           "segmentation resolution (count ratio %.3f, %zu identical coordinates), %zu at the default 8 um/px "
           "segmentation (ratio %.3f, %zu identical)\n",
           nr, eq.n, agree_eq, both_eq, def.n, agree_def, both_def);
    EXPECT(nr >= 20, "the reference found only %zu patches", nr);
    /* same algorithm, same pixels: counts within 5%, >= 90% identical coordinates */
    EXPECT(fabs(agree_eq - 1) <= 0.05, "count ratio %.3f at equal segmentation resolution (tolerance 5%%)", agree_eq);
    EXPECT(both_eq >= 0.9 * (double)nr, "only %zu of %zu coordinates identical", both_eq, nr);
    /* 16x coarser segmentation image: counts within 20% */
    EXPECT(fabs(agree_def - 1) <= 0.20, "count ratio %.3f with 8 um/px segmentation (tolerance 20%%)", agree_def);
    free(ref);
    free(eq.xy);
    free(def.xy);
}
