/* ncmi features through the binary: the H&E fixture against a PyTorch
 * pipeline (openslide-python + torchvision) on the same weights, generated
 * slides (row i of features = row i of coords, checked by encoding single
 * patches in-process; reader/batch independence; resume; shards) and the
 * bad inputs of issue 7 (a coords file without its slide, a slide that
 * changed since tiling, weights of another architecture). */
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../features/encoder.h"
#include "../features/features_h5.h"
#include "../features/preprocess.h"
#include "../nn/error.h"
#include "../tiler/coords_h5.h"
#include "../tiler/slide.h"
#include "../tiler/synth_slide.h"
#include "../tiler/tile.h"
#include "test.h"

#if NCMI_HAVE_OPENSLIDE && NCMI_HAVE_VIPS && NCMI_HAVE_HDF5
#define FX_OK 1
#else
#define FX_OK 0
#endif

static char *slurp(const char *path)
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
    return b;
}

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (f) {
        fputs(text, f);
        fclose(f);
    }
}

/* max over elements of |a-b| / max(|b|, 1e-2 max|B|) */
static double rel_err(const float *a, const float *b, size_t n)
{
    double mx = 0, e = 0;
    for (size_t i = 0; i < n; i++) mx = fmax(mx, fabs(b[i]));
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]) / fmax(fabs(b[i]), 1e-2 * mx + 1e-30);
        if (!(d <= e)) e = isnan(d) ? INFINITY : d;
    }
    return e;
}

/* ------------------------------------------------------------------ */
/* the fixture against PyTorch                                         */

TEST(features_cmd_fixture_matches_torchvision)
{
    if (!FX_OK) SKIP("built without OpenSlide, libvips or HDF5");
    char slide[4096];
    snprintf(slide, sizeof slide, "%s/slides/cmu-1-small-region.svs", test_fixtures_dir());
    if (access(slide, R_OK) != 0) SKIP("fixture %s absent (set NCMI_FIXTURES)", slide);
    const char *dir = test_tmp_path("fx_fixture");
    char *o = NULL;
    int rc = test_ncmi(&o, "tile %s --out %s 2>&1", slide, dir);
    REQUIRE(rc == 0, "ncmi tile failed (%d): %s", rc, o);
    free(o);
    rc = test_ncmi(&o, "features --device cpu --coords %s --out %s --weights random:3 --batch 16 %s 2>&1", dir, dir,
                  slide);
    REQUIRE(rc == 0, "ncmi features failed (%d): %s", rc, o);
    free(o);
    char fpath[4300], cpath[4300], wpath[4300], ref[4300];
    snprintf(fpath, sizeof fpath, "%s/features/cmu-1-small-region.h5", dir);
    snprintf(cpath, sizeof cpath, "%s/patches/cmu-1-small-region.h5", dir);
    snprintf(wpath, sizeof wpath, "%s/encoder_random_3.safetensors", dir);
    features_h5 f;
    REQUIRE(features_h5_read(&f, fpath, 1) == 0, "%s", ncmi_error());
    int64_t *cc = NULL;
    size_t cn = 0;
    tl_coords_attrs ca;
    char nm[256];
    REQUIRE(tl_coords_h5_read(cpath, &cc, &cn, &ca, nm, sizeof nm) == 0, "%s", ncmi_error());
    EXPECT(f.n == (int64_t)cn && cn > 20, "features rows %lld, coords rows %zu", (long long)f.n, cn);
    EXPECT(f.d == 1024, "resnet50_trunc gives 1024-d features, got %d", f.d);
    EXPECT(f.coords && !memcmp(f.coords, cc, cn * 2 * sizeof *cc), "coords in the features file differ from the coords file");
    char enc[128], sha[128];
    EXPECT(features_h5_attr_string(fpath, "encoder", enc, sizeof enc) == 0 && !strcmp(enc, "resnet50_trunc"),
           "attribute encoder: %s", ncmi_error());
    EXPECT(features_h5_attr_string(fpath, "weights_sha256", sha, sizeof sha) == 0 && strlen(sha) == 64,
           "attribute weights_sha256: %s", ncmi_error());

    if (test_run("/usr/bin/python3 -c 'import torchvision, openslide, h5py' 2>&1", NULL) != 0) {
        free(cc);
        features_h5_free(&f);
        SKIP("python3-torchvision / python3-openslide / python3-h5py not installed: PyTorch comparison not run");
    }
    snprintf(ref, sizeof ref, "%s/ref.h5", dir);
    char cmd[20000];
    snprintf(cmd, sizeof cmd,
             "/usr/bin/python3 tests/reference/features_reference.py --slide %s --coords %s --weights %s "
             "--encoder resnet50_trunc --out %s 2>&1",
             slide, cpath, wpath, ref);
    rc = test_run(cmd, &o);
    REQUIRE(rc == 0, "features_reference.py failed (%d): %s", rc, o);
    free(o);
    features_h5 r;
    REQUIRE(features_h5_read(&r, ref, 0) == 0, "%s", ncmi_error());
    REQUIRE(r.n == f.n && r.d == f.d, "reference shape [%lld, %d]", (long long)r.n, r.d);
    double e = rel_err(f.features, r.features, (size_t)f.n * (size_t)f.d);
    printf("    cmu-1-small-region: %lld patches, ncmi vs openslide-python + torchvision: max rel err %.3g "
           "(tolerance 1e-3)\n",
           (long long)f.n, e);
    EXPECT(e <= 1e-3, "features differ from the PyTorch pipeline: max rel err %.3g", e);
    features_h5_free(&r);
    features_h5_free(&f);
    free(cc);
}

/* ------------------------------------------------------------------ */
/* generated slides                                                    */

#define N_GEN 3
static char gen_path[N_GEN][4096];
static int gen_ready;

static int gen_cohort(void)
{
    if (gen_ready) return gen_ready;
    gen_ready = -1;
    if (tl_tile_init() != 0) return -1;
    for (int i = 0; i < N_GEN; i++) {
        tl_synth_params p;
        tl_synth_params_default(&p);
        p.width = 2400 + 300 * i;
        p.height = 1800;
        p.mpp = 0.5;
        p.seed = 31 + (uint64_t)i;
        snprintf(gen_path[i], sizeof gen_path[i], "%s/fxgen%d.tiff", test_tmpdir(), i);
        if (tl_synth_slide_write(gen_path[i], &p, NULL) != 0) {
            fprintf(stderr, "gen_cohort: %s\n", ncmi_error());
            return -1;
        }
    }
    char man[4200], text[16384];
    snprintf(man, sizeof man, "%s/fxgen.csv", test_tmpdir());
    size_t k = (size_t)snprintf(text, sizeof text, "slide_id,label,path\n");
    for (int i = 0; i < N_GEN; i++) k += (size_t)snprintf(text + k, sizeof text - k, "fxgen%d,a,%s\n", i, gen_path[i]);
    write_text(man, text);
    char *o = NULL;
    int rc = test_ncmi(&o, "tile --manifest %s --out %s/fxgen_tiles --patch-size 128 2>&1", man, test_tmpdir());
    if (rc) fprintf(stderr, "gen_cohort: ncmi tile: %s\n", o);
    free(o);
    if (rc) return -1;
    gen_ready = 1;
    return 1;
}

#define NEED_GEN()                                                               \
    do {                                                                         \
        if (!FX_OK) SKIP("built without OpenSlide, libvips or HDF5");            \
        REQUIRE(gen_cohort() == 1, "could not generate and tile the test slides"); \
    } while (0)

static const char *gen_manifest(void) { return test_tmp_path("fxgen.csv"); }
static const char *gen_tiles(void) { return test_tmp_path("fxgen_tiles"); }

#define SMALL_ENC "--encoder resnet18 --input-size 64 --weights random:5 --device cpu"

/* Row i of the features file is the encoding of the patch at coords row i:
 * re-encode a few patches one by one in-process and compare. */
TEST(features_cmd_rows_follow_coords)
{
    NEED_GEN();
    const char *out = test_tmp_path("fx_rows");
    char *o = NULL;
    int rc = test_ncmi(&o, "features " SMALL_ENC " --coords %s --out %s --manifest %s --batch 7 --readers 3 2>&1",
                      gen_tiles(), out, gen_manifest());
    REQUIRE(rc == 0, "ncmi features failed (%d): %s", rc, o);
    EXPECT(strstr(o, "3 ok") != NULL, "summary: %s", o);
    free(o);
    fx_encoder e;
    char wpath[4300];
    snprintf(wpath, sizeof wpath, "%s/encoder_random_5.safetensors", out);
    REQUIRE(fx_encoder_open(&e, "resnet18", wpath, NN_DEVICE_CPU, NN_PREC_FP32, 64) == 0, "%s", ncmi_error());
    for (int s = 0; s < N_GEN; s++) {
        char fpath[4300];
        snprintf(fpath, sizeof fpath, "%s/features/fxgen%d.h5", out, s);
        features_h5 f;
        REQUIRE(features_h5_read(&f, fpath, 1) == 0, "%s", ncmi_error());
        EXPECT(f.d == 512 && f.n > 7, "fxgen%d: [%lld, %d]", s, (long long)f.n, f.d);
        tl_slide sl;
        REQUIRE(tl_slide_open(&sl, gen_path[s], 0) == 0, "%s", ncmi_error());
        fx_resize_plan *plan = fx_resize_plan_new(128, 128, 64, 64);
        uint8_t rgb[128 * 128 * 3], small[64 * 64 * 3];
        void *tmp = malloc(fx_resize_tmp_bytes(plan) + 1);
        float x[3 * 64 * 64], z[512];
        const int64_t rows[] = {0, 3, f.n / 2, f.n - 1};
        for (int k = 0; k < 4; k++) {
            int64_t i = rows[k];
            REQUIRE(tl_slide_read_rgb(&sl, f.coords[2 * i], f.coords[2 * i + 1], 0, 128, 128, rgb) == 0, "%s",
                    ncmi_error());
            fx_resize_rgb(plan, rgb, small, tmp);
            fx_normalize_chw(small, 64, 64, FX_IMAGENET_MEAN, FX_IMAGENET_STD, x);
            fx_encoder_run(&e, x, 1, z);
            /* batch composition changes the GEMM blocking: ~1e-5; another patch: O(1) */
            double err = rel_err(f.features + i * 512, z, 512);
            EXPECT(err <= 1e-4, "fxgen%d row %lld: features differ from the patch at coords row %lld (rel %.3g)", s,
                   (long long)i, (long long)i, err);
            int64_t other = i == 0 ? 1 : i - 1;
            double err_other = rel_err(f.features + other * 512, z, 512);
            EXPECT(err_other > 1e-2, "fxgen%d: rows %lld and %lld are indistinguishable (rel %.3g): the check is blind",
                   s, (long long)other, (long long)i, err_other);
        }
        free(tmp);
        fx_resize_plan_free(plan);
        tl_slide_close(&sl);
        features_h5_free(&f);
    }
    fx_encoder_close(&e);

    /* one reader, one big batch: the same numbers */
    const char *out2 = test_tmp_path("fx_rows_b");
    rc = test_ncmi(&o, "features " SMALL_ENC " --coords %s --out %s --manifest %s --batch 64 --readers 1 2>&1",
                  gen_tiles(), out2, gen_manifest());
    REQUIRE(rc == 0, "ncmi features (1 reader) failed (%d): %s", rc, o);
    free(o);
    for (int s = 0; s < N_GEN; s++) {
        char a[4300], b[4300];
        snprintf(a, sizeof a, "%s/features/fxgen%d.h5", out, s);
        snprintf(b, sizeof b, "%s/features/fxgen%d.h5", out2, s);
        features_h5 fa, fb;
        REQUIRE(features_h5_read(&fa, a, 0) == 0 && features_h5_read(&fb, b, 0) == 0, "%s", ncmi_error());
        REQUIRE(fa.n == fb.n, "row counts differ");
        double err = rel_err(fa.features, fb.features, (size_t)fa.n * 512);
        EXPECT(err <= 1e-4, "fxgen%d: 3 readers/batch 7 vs 1 reader/batch 64 differ (rel %.3g)", s, err);
        features_h5_free(&fa);
        features_h5_free(&fb);
    }
}

static int count_lines_with(const char *text, const char *needle)
{
    int n = 0;
    for (const char *p = text; p && (p = strstr(p, needle)); p += strlen(needle)) n++;
    return n;
}

TEST(features_cmd_resume_force_shards)
{
    NEED_GEN();
    const char *out = test_tmp_path("fx_resume");
    char *o = NULL;
    int rc = test_ncmi(&o, "features " SMALL_ENC " --coords %s --out %s --manifest %s 2>&1", gen_tiles(), out,
                      gen_manifest());
    REQUIRE(rc == 0, "first run failed (%d): %s", rc, o);
    free(o);
    char fpath[4300];
    snprintf(fpath, sizeof fpath, "%s/features/fxgen1.h5", out);
    struct stat st1, st2;
    REQUIRE(stat(fpath, &st1) == 0, "%s missing", fpath);
    rc = test_ncmi(&o, "features " SMALL_ENC " --coords %s --out %s --manifest %s 2>&1", gen_tiles(), out,
                  gen_manifest());
    EXPECT(rc == 0 && strstr(o, "3 skipped"), "rerun should skip the 3 slides (%d): %s", rc, o);
    free(o);
    REQUIRE(stat(fpath, &st2) == 0, "%s missing", fpath);
    EXPECT(st1.st_ino == st2.st_ino && st1.st_mtime == st2.st_mtime, "a finished file was rewritten on resume");
    char status[4300];
    snprintf(status, sizeof status, "%s/features_status.csv", out);
    char *s = slurp(status);
    EXPECT(s && count_lines_with(s, ",skipped,") == 3, "status after resume: %s", s ? s : "(none)");
    free(s);

    /* other weights: the files are not reused */
    rc = test_ncmi(&o, "features --encoder resnet18 --input-size 64 --weights random:6 --device cpu --coords %s "
                      "--out %s --manifest %s 2>&1",
                  gen_tiles(), out, gen_manifest());
    EXPECT(rc == 0 && strstr(o, "3 ok"), "new weights must redo every slide (%d): %s", rc, o);
    free(o);
    rc = test_ncmi(&o, "features " SMALL_ENC " --coords %s --out %s --manifest %s --force 2>&1", gen_tiles(), out,
                  gen_manifest());
    EXPECT(rc == 0 && strstr(o, "3 ok"), "--force must redo every slide (%d): %s", rc, o);
    free(o);
    /* a leftover temporary file from a killed run is not taken for a result */
    char junk[4400];
    snprintf(junk, sizeof junk, "%s/features/fxgen2.h5.tmp.99999", out);
    write_text(junk, "partial");
    snprintf(fpath, sizeof fpath, "%s/features/fxgen2.h5", out);
    unlink(fpath);
    rc = test_ncmi(&o, "features " SMALL_ENC " --coords %s --out %s --manifest %s 2>&1", gen_tiles(), out,
                  gen_manifest());
    EXPECT(rc == 0 && strstr(o, "1 ok, 2 skipped"), "resume after a lost file (%d): %s", rc, o);
    free(o);

    /* shards: disjoint, complete, one status file each */
    const char *sh = test_tmp_path("fx_shards");
    for (int k = 1; k <= 2; k++) {
        rc = test_ncmi(&o, "features " SMALL_ENC " --coords %s --out %s --manifest %s --shard %d/2 2>&1", gen_tiles(),
                      sh, gen_manifest(), k);
        EXPECT(rc == 0, "shard %d/2 failed (%d): %s", k, rc, o);
        free(o);
    }
    char s1[4300], s2[4300];
    snprintf(s1, sizeof s1, "%s/features_status.1of2.csv", sh);
    snprintf(s2, sizeof s2, "%s/features_status.2of2.csv", sh);
    char *a = slurp(s1), *b = slurp(s2);
    EXPECT(a && b && strstr(a, "fxgen0,ok") && strstr(a, "fxgen2,ok") && strstr(b, "fxgen1,ok") &&
               !strstr(a, "fxgen1") && !strstr(b, "fxgen0"),
           "shard status files: [%s] [%s]", a ? a : "", b ? b : "");
    free(a);
    free(b);
}

TEST(features_cmd_bad_inputs)
{
    NEED_GEN();
    char *o = NULL;
    /* a coords file without its slide, a slide without coords, and a good one */
    char man[4300], text[16384], moved[4300], tiles2[4096];
    snprintf(moved, sizeof moved, "%s/fx_changed.tiff", test_tmpdir());
    snprintf(tiles2, sizeof tiles2, "%s/fx_bad_tiles", test_tmpdir());
    /* tile a slide, then replace it by a different one under the same name */
    tl_synth_params p;
    tl_synth_params_default(&p);
    p.width = 2000;
    p.height = 1500;
    p.mpp = 0.5;
    p.seed = 77;
    REQUIRE(tl_synth_slide_write(moved, &p, NULL) == 0, "%s", ncmi_error());
    int rc = test_ncmi(&o, "tile %s --out %s --patch-size 128 2>&1", moved, tiles2);
    REQUIRE(rc == 0, "tile: %s", o);
    free(o);
    p.width = 2100;
    REQUIRE(tl_synth_slide_write(moved, &p, NULL) == 0, "%s", ncmi_error());
    /* the good slide's coords next to it */
    char src[4400], dst[4400];
    snprintf(src, sizeof src, "%s/patches/fxgen0.h5", gen_tiles());
    snprintf(dst, sizeof dst, "%s/patches/fxgen0.h5", tiles2);
    char cmd[9000];
    snprintf(cmd, sizeof cmd, "cp %s %s", src, dst);
    REQUIRE(test_run(cmd, NULL) == 0, "cp failed");
    snprintf(src, sizeof src, "%s/patches/fxgen1.h5", gen_tiles());
    snprintf(dst, sizeof dst, "%s/patches/gone.h5", tiles2);
    snprintf(cmd, sizeof cmd, "cp %s %s", src, dst);
    REQUIRE(test_run(cmd, NULL) == 0, "cp failed");
    snprintf(man, sizeof man, "%s/fx_bad.csv", test_tmpdir());
    snprintf(text, sizeof text,
             "slide_id,label,path\nfxgen0,a,%s\ngone,a,%s/no_such_slide.tiff\nfx_changed,a,%s\nnotiled,a,%s\n",
             gen_path[0], test_tmpdir(), moved, gen_path[1]);
    write_text(man, text);
    const char *out = test_tmp_path("fx_bad_out");
    rc = test_ncmi(&o, "features " SMALL_ENC " --coords %s --out %s --manifest %s 2>&1", tiles2, out, man);
    EXPECT(rc == 3, "some slides failed: exit 3 expected, got %d: %s", rc, o);
    EXPECT(strstr(o, "no_such_slide.tiff") != NULL, "missing slide not named: %s", o);
    EXPECT(strstr(o, "changed since tiling") && strstr(o, "fx_changed.tiff"), "changed slide not reported: %s", o);
    EXPECT(strstr(o, "notiled.h5: no coords file"), "slide without coords not reported: %s", o);
    EXPECT(strstr(o, "1 ok, 0 skipped, 3 failed"), "summary: %s", o);
    free(o);
    char f0[4300], fc[4300];
    snprintf(f0, sizeof f0, "%s/features/fxgen0.h5", out);
    snprintf(fc, sizeof fc, "%s/features/fx_changed.h5", out);
    EXPECT(access(f0, F_OK) == 0, "the good slide was not encoded");
    EXPECT(access(fc, F_OK) != 0, "a features file was written for the changed slide");

    /* weights of another architecture: a resnet18 file for resnet50_trunc */
    char w18[4300];
    snprintf(w18, sizeof w18, "%s/fx_resnet18.safetensors", test_tmpdir());
    fx_encoder e18;
    REQUIRE(fx_encoder_open_random(&e18, "resnet18", 9, w18, NN_DEVICE_CPU, NN_PREC_FP32, 64) == 0, "%s",
            ncmi_error());
    fx_encoder_close(&e18);
    const char *out3 = test_tmp_path("fx_arch");
    rc = test_ncmi(&o, "features --device cpu --encoder resnet50_trunc --weights %s --coords %s --out %s --manifest %s 2>&1",
                  w18, gen_tiles(), out3, gen_manifest());
    EXPECT(rc == 2, "weights of another architecture: exit 2 expected, got %d: %s", rc, o);
    EXPECT(strstr(o, w18) && strstr(o, "resnet50"), "the message must name the file and the architecture: %s", o);
    free(o);
    char any[4300];
    snprintf(any, sizeof any, "%s/features/fxgen0.h5", out3);
    EXPECT(access(any, F_OK) != 0, "features written with the wrong weights");
    /* not a safetensors file */
    char junk[4300];
    snprintf(junk, sizeof junk, "%s/fx_junk.safetensors", test_tmpdir());
    write_text(junk, "this is not a safetensors file");
    rc = test_ncmi(&o, "features --device cpu --weights %s --coords %s --out %s --manifest %s 2>&1", junk, gen_tiles(),
                  out3, gen_manifest());
    EXPECT(rc == 2 && strstr(o, junk), "a junk weights file: exit 2 naming it, got %d: %s", rc, o);
    free(o);
    /* usage errors */
    rc = test_ncmi(&o, "features --device cpu --precision bf16 --weights %s --coords %s --out %s --manifest %s 2>&1",
                  w18, gen_tiles(), out3, gen_manifest());
    EXPECT(rc == 1 && strstr(o, "bf16"), "bf16 on the CPU is a usage error, got %d: %s", rc, o);
    free(o);
    rc = test_ncmi(&o, "features --device cpu --coords %s --out %s --manifest %s 2>&1", gen_tiles(), out3, gen_manifest());
    EXPECT(rc == 1 && strstr(o, "--weights"), "missing --weights is a usage error, got %d: %s", rc, o);
    free(o);
    rc = test_ncmi(&o, "features --device cpu --encoder vgg16 --weights %s --coords %s --out %s --manifest %s 2>&1", w18,
                  gen_tiles(), out3, gen_manifest());
    EXPECT(rc == 2 && strstr(o, "resnet50_trunc"), "an unknown encoder lists the known ones, got %d: %s", rc, o);
    free(o);
}
