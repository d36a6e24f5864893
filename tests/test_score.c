/* ncmi score (issue 9), end to end through the binary:
 *
 *  - a synthetic cohort (tiler/synth_slide.h: "tumor" slides hold a tumour
 *    disk of their own texture) -> ncmi tile -> ncmi features (ResNet-18,
 *    random weights, 32 px: fast) -> ncmi train (ABMIL, CE) -> ncmi score of
 *    the test slides: the right class, the top-k patches inside the tumour
 *    disk (tl_synth_in_tumour), the same probabilities as ncmi eval --run on
 *    the same slides, every output in place and nothing temporary left;
 *  - the page renders in headless Chromium (screenshot, no console error, no
 *    broken image; skipped, visibly, without chromium);
 *  - bad inputs: unreadable slides, unknown or too coarse resolution, run
 *    folders without a model: exit 2, a message for a person, nothing written;
 *  - NCMI: the class centroids and the linear probe stored with the model
 *    (score = eval), and a run without them (refused, then stored by eval);
 *  - the time on cmu-1-small-region.svs with resnet50_trunc (goal < 10 s: printed with its
 *    breakdown, not asserted).
 * Unit: the tiling parameters' JSON round trip. */
#include <dirent.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../features/encoder.h"
#include "../features/features_h5.h"
#include "../nn/error.h"
#include "../nn/rng.h"
#include "../nn/safetensors.h"
#include "../tiler/coords_h5.h"
#include "../tiler/synth_slide.h"
#include "../tiler/tile.h"
#include "../cli/data_params.h"
#include "test.h"

#if NCMI_HAVE_OPENSLIDE && NCMI_HAVE_VIPS && NCMI_HAVE_HDF5
#define SC_OK 1
#include <vips/vips.h>
#else
#define SC_OK 0
#endif

#define NEED_SLIDES() \
    if (!SC_OK) SKIP("built without OpenSlide, libvips or HDF5")

/* ------------------------------------------------------------------ */
/* helpers                                                             */

static void write_text(const char *path, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void write_text(const char *path, const char *fmt, ...)
{
    FILE *f = fopen(path, "w");
    if (!f) return;
    va_list ap;
    va_start(ap, fmt);
    vfprintf(f, fmt, ap);
    va_end(ap);
    fclose(f);
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    size_t r = b ? fread(b, 1, (size_t)n, f) : 0;
    if (b) b[r] = 0;
    fclose(f);
    return b;
}

static int exists(const char *p) { return access(p, F_OK) == 0; }

static double test_now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* "OMP_WAIT_POLICY=passive <ncmi> <args>": spinning OpenMP threads are
 * several times slower on a shared 2-core machine (docs/training.md) */
static int ncmi_run(char **out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int ncmi_run(char **out, const char *fmt, ...)
{
    char args[16384], cmd[17000];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    snprintf(cmd, sizeof cmd, "OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive} %s %s", test_ncmi_bin(), args);
    return test_run(cmd, out);
}

/* entries of a folder whose name starts with prefix */
static int count_entries(const char *dir, const char *prefix)
{
    DIR *d = opendir(dir);
    if (!d) return -1;
    int k = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..") && !strncmp(e->d_name, prefix, strlen(prefix))) k++;
    closedir(d);
    return k;
}

/* the p_<class> probabilities of slide_id in a predictions CSV (eval's or
 * score's); columns named in the header. 0 when found. */
static int csv_probs(const char *path, const char *slide_id, const char *const *classes, int C, double *p,
                     char *pred, size_t pred_n)
{
    char *t = slurp(path);
    if (!t) return -1;
    char *save = NULL, *line = strtok_r(t, "\n", &save);
    char *hdr[64];
    int nh = 0;
    char *hcopy = line ? strdup(line) : NULL;
    for (char *s2 = NULL, *c = hcopy ? strtok_r(hcopy, ",", &s2) : NULL; c && nh < 64; c = strtok_r(NULL, ",", &s2))
        hdr[nh++] = c;
    int rc = -1;
    while ((line = strtok_r(NULL, "\n", &save))) {
        char *cells[64];
        int nc = 0;
        for (char *s2 = NULL, *c = strtok_r(line, ",", &s2); c && nc < 64; c = strtok_r(NULL, ",", &s2))
            cells[nc++] = c;
        if (nc < 3 || strcmp(cells[0], slide_id)) continue;
        rc = 0;
        for (int k = 0; k < C; k++) {
            p[k] = NAN;
            char want[128];
            snprintf(want, sizeof want, "p_%s", classes[k]);
            for (int h = 0; h < nh && h < nc; h++)
                if (!strcmp(hdr[h], want)) p[k] = atof(cells[h]);
        }
        for (int h = 0; h < nh && h < nc; h++)
            if (!strcmp(hdr[h], "pred")) snprintf(pred, pred_n, "%s", cells[h]);
    }
    free(hcopy);
    free(t);
    return rc;
}

/* ------------------------------------------------------------------ */
/* the tiling parameters' JSON                                         */

TEST(score_tiling_params_json_roundtrip)
{
    tl_tile_params p, q;
    tl_tile_params_default(&p);
    snprintf(p.preset, sizeof p.preset, "biopsy");
    tl_seg_preset("biopsy", &p.seg);
    p.target_mpp = 0.2527;
    p.patch_size = 224;
    p.overlap = 32;
    p.grid = TL_GRID_GLOBAL;
    p.check = TL_CHECK_CENTER;
    p.min_tissue = 0.4;
    p.seg_mpp = 4.0 / 3.0;
    char js[1024];
    REQUIRE(tl_tile_params_json(&p, js, sizeof js) == 0, "json too long");
    REQUIRE(tl_tile_params_from_json(js, &q) == 0, "%s", ncmi_error());
    EXPECT(!strcmp(q.preset, "biopsy") && q.target_mpp == p.target_mpp && q.patch_size == 224 && q.overlap == 32 &&
               q.grid == TL_GRID_GLOBAL && q.check == TL_CHECK_CENTER && q.min_tissue == 0.4 &&
               q.seg_mpp == p.seg_mpp && !memcmp(&q.seg, &p.seg, sizeof q.seg),
           "round trip differs: %s", js);
    EXPECT(tl_tile_params_json(&p, js, 40) != 0, "a short buffer must be refused");
    EXPECT(tl_tile_params_from_json("{\"target_mpp\": 0.5}", &q) != 0 && strstr(ncmi_error(), "patch_size"),
           "missing key: %s", ncmi_error());
    EXPECT(tl_tile_params_from_json("not json", &q) != 0, "not JSON accepted");
}

/* data_params.json: collected from the training files' attributes, written,
 * read back; files made another way are named */
static const char *dp_id(const tr_dataset *d, int i)
{
    (void)d;
    static const char *ids[3] = {"a", "b", "c"};
    return ids[i];
}

TEST(score_data_params_collect_write_read_and_disagreement)
{
    if (!features_h5_available()) SKIP("built without HDF5");
    const char *dir = test_tmp_path("dp");
    char p[1200];
    snprintf(p, sizeof p, "mkdir -p %s/f %s/run", dir, dir);
    test_run(p, NULL);
    tl_tile_params tp;
    tl_tile_params_default(&tp);
    char t1[1024], t2[1024];
    tl_tile_params_json(&tp, t1, sizeof t1);
    tp.patch_size = 512;
    tl_tile_params_json(&tp, t2, sizeof t2);
    float x[4 * 3] = {0};
    for (int i = 0; i < 3; i++) {
        features_h5_attrs at = {.encoder = "resnet50_trunc", .weights_sha256 = "ab12", .precision = "fp32",
                                .patch_size = 256, .input_size = 224, .target_mpp = 0.5, .weights_source = "random:7",
                                .tiling = i == 2 ? t2 : t1, .level0_mpp = 0.25 + 0.25 * i};
        snprintf(p, sizeof p, "%s/f/%s.h5", dir, dp_id(NULL, i));
        REQUIRE(features_h5_write_attrs(p, x, 2 + i, 3, NULL, &at) == 0, "%s", ncmi_error());
    }
    tr_dataset d = {0};
    d.n = 2;
    d.sample_id = dp_id;
    cli_data_params a, b;
    snprintf(p, sizeof p, "%s/f", dir);
    REQUIRE(cli_data_params_collect(p, &d, &a) == 0, "%s", ncmi_error());
    EXPECT(!a.problems[0] && a.dim == 3 && a.n_files == 2 && !strcmp(a.encoder, "resnet50_trunc") &&
               !strcmp(a.weights_source, "random:7") && !strcmp(a.tiling, t1) && a.bag_min == 2 && a.bag_max == 3 &&
               a.mpp_min == 0.25 && a.mpp_max == 0.5,
           "collected: problems '%s' dim %d files %d tiling %s", a.problems, a.dim, a.n_files, a.tiling);
    snprintf(p, sizeof p, "%s/run", dir);
    EXPECT(cli_data_params_missing(p), "data_params.json before it was written");
    REQUIRE(cli_data_params_write(p, &a) == 0, "%s", ncmi_error());
    REQUIRE(cli_data_params_read(p, &b) == 0, "%s", ncmi_error());
    tl_tile_params q;
    EXPECT(b.dim == 3 && !strcmp(b.weights_sha256, "ab12") && b.input_size == 224 && b.bag_median == a.bag_median &&
               tl_tile_params_from_json(b.tiling, &q) == 0 && q.patch_size == 256 && q.target_mpp == 0.5,
           "read back: dim %d tiling %s", b.dim, b.tiling);
    d.n = 3;
    snprintf(p, sizeof p, "%s/f", dir);
    REQUIRE(cli_data_params_collect(p, &d, &a) == 0, "%s", ncmi_error());
    EXPECT(strstr(a.problems, "c.h5") && strstr(a.problems, "tiling parameters"), "disagreement: '%s'", a.problems);
}

/* ------------------------------------------------------------------ */
/* the synthetic cohort and its model (built once per test process)    */

#define CO_N 12
#define CO_TRAIN 8
typedef struct cohort {
    int state; /* 0 not built, 1 ready, -1 failed */
    char dir[1024], slides[1100], run[1100], test_csv[1100];
    tl_synth_truth truth[CO_N];
    char why[8192];
} cohort;
static cohort CO;

static const char *co_label(int i) { return i % 2 ? "normal" : "tumor"; }

static const cohort *cohort_get(void)
{
    if (CO.state) return CO.state > 0 ? &CO : NULL;
    CO.state = -1;
    double t0 = test_now_s();
    snprintf(CO.dir, sizeof CO.dir, "%s", test_tmp_path("score_cohort"));
    snprintf(CO.slides, sizeof CO.slides, "%s/slides", CO.dir);
    char p[2048], *out = NULL;
    snprintf(p, sizeof p, "mkdir -p %s", CO.slides);
    test_run(p, NULL);
    /* 3000 x 2000 px at 0.5 um/px; the tumour slides a 200 um disk in piece 0 */
    char man[1200], tman[1200];
    snprintf(man, sizeof man, "%s/manifest.csv", CO.dir);
    snprintf(CO.test_csv, sizeof CO.test_csv, "%s/test.csv", CO.dir);
    snprintf(tman, sizeof tman, "%s", CO.test_csv);
    FILE *fm = fopen(man, "w"), *ft = fopen(tman, "w");
    if (!fm || !ft) {
        snprintf(CO.why, sizeof CO.why, "cannot write the manifests in %s", CO.dir);
        if (fm) fclose(fm);
        if (ft) fclose(ft);
        return NULL;
    }
    fprintf(fm, "slide_id,label,path,split\n");
    fprintf(ft, "slide_id,label,path\n");
    for (int i = 0; i < CO_N; i++) {
        tl_synth_params sp;
        tl_synth_params_default(&sp);
        sp.width = 3000;
        sp.height = 2000;
        sp.mpp = 0.5;
        sp.seed = 1 + (uint64_t)i;
        if (!strcmp(co_label(i), "tumor")) sp.tumour_um = 200;
        snprintf(p, sizeof p, "%s/slide_%03d.tif", CO.slides, i);
        if (tl_synth_slide_write(p, &sp, &CO.truth[i]) != 0) {
            snprintf(CO.why, sizeof CO.why, "synthetic slide: %s", ncmi_error());
            fclose(fm);
            fclose(ft);
            return NULL;
        }
        const char *split = i < CO_TRAIN ? "train" : i < CO_TRAIN + 2 ? "val" : "test";
        fprintf(fm, "slide_%03d,%s,slides/slide_%03d.tif,%s\n", i, co_label(i), i, split);
        if (!strcmp(split, "test")) fprintf(ft, "slide_%03d,%s,slides/slide_%03d.tif\n", i, co_label(i), i);
    }
    fclose(fm);
    fclose(ft);
    double t1 = test_now_s();
    /* tile at 2 um/px, 32 px patches (128 level-0 px); encode with ResNet-18 at 32 px */
    int rc = ncmi_run(&out, "tile --manifest %s --out %s/tiles --target-mpp 2.0 --patch-size 32 --jobs 2", man, CO.dir);
    if (rc) {
        snprintf(CO.why, sizeof CO.why, "ncmi tile failed (%d): %.6000s", rc, out ? out : "");
        free(out);
        return NULL;
    }
    free(out);
    double t2 = test_now_s();
    rc = ncmi_run(&out,
                  "features --device cpu --manifest %s --coords %s/tiles --out %s/tiles --encoder resnet18 "
                  "--input-size 32 --weights random:1 --batch 64",
                  man, CO.dir, CO.dir);
    if (rc) {
        snprintf(CO.why, sizeof CO.why, "ncmi features failed (%d): %.6000s", rc, out ? out : "");
        free(out);
        return NULL;
    }
    free(out);
    double t3 = test_now_s();
    snprintf(p, sizeof p, "%s/abmil.yaml", CO.dir);
    write_text(p,
               "name: synth_abmil\nout: %s/runs\nseed: 1\n"
               "data:\n  kind: bags\n  features: %s/tiles/features\n  manifest: %s\n  classes: [normal, tumor]\n"
               "model:\n  kind: abmil\nmil:\n  d_inner: 32\n  attn_hidden: 16\n  dropout: 0.0\n"
               "head:\n  kind: linear\n"
               "optim:\n  name: adamw\n  lr: 1.0e-3\n  weight_decay: 1.0e-5\n"
               "schedule:\n  kind: cosine\n"
               "train:\n  epochs: 200\n  select: loss\n  threads: 1\n",
               CO.dir, CO.dir, man);
    rc = ncmi_run(&out, "train --config %s", p);
    if (rc) {
        snprintf(CO.why, sizeof CO.why, "ncmi train failed (%d): %.6000s", rc, out ? out : "");
        free(out);
        return NULL;
    }
    free(out);
    snprintf(CO.run, sizeof CO.run, "%s/runs/synth_abmil", CO.dir);
    printf("    cohort: %d slides %.1f s, tile %.1f s, features %.1f s, train %.1f s\n", CO_N, t1 - t0, t2 - t1,
           t3 - t2, test_now_s() - t3);
    CO.state = 1;
    return &CO;
}

// NOLINTBEGIN(bugprone-macro-parentheses): c is the name of the variable declared
#define NEED_COHORT(c)                                                                \
    const cohort *c = cohort_get();                                                   \
    REQUIRE(c != NULL, "the synthetic cohort could not be built: %s", CO.why)
// NOLINTEND(bugprone-macro-parentheses)

/* the test slides scored once with --manifest (several tests look at them) */
static char scored_dir[1200];
static int scored_state;
static char scored_log[16384];

static const char *scored_get(const cohort *c)
{
    if (scored_state) return scored_state > 0 ? scored_dir : NULL;
    scored_state = -1;
    snprintf(scored_dir, sizeof scored_dir, "%s/scored", c->dir);
    char *out = NULL;
    /* k = 5: the trained ABMIL puts nearly all its attention on a handful of tumour patches */
    int rc = ncmi_run(&out, "score --device cpu --manifest %s --run %s --out %s --top-k 5", c->test_csv, c->run,
                      scored_dir);
    snprintf(scored_log, sizeof scored_log, "exit %d: %.16000s", rc, out ? out : "");
    free(out);
    if (rc != 0) return NULL;
    scored_state = 1;
    return scored_dir;
}

/* ------------------------------------------------------------------ */
/* the acceptance test                                                 */

TEST(score_synthetic_tumour_right_class_topk_in_tumour_same_as_eval)
{
    NEED_SLIDES();
    NEED_COHORT(c);
    /* what the run recorded of its data */
    char p[2400], *out = NULL;
    snprintf(p, sizeof p, "%s/data_params.json", c->run);
    json_t *dp = json_load_file(p, 0, NULL);
    REQUIRE(json_is_object(dp), "%s missing or not JSON", p);
    EXPECT(!strcmp(json_string_value(json_object_get(dp, "encoder")), "resnet18") &&
               !strcmp(json_string_value(json_object_get(dp, "weights_source")), "random:1") &&
               json_integer_value(json_object_get(dp, "input_size")) == 32 &&
               json_number_value(json_object_get(json_object_get(dp, "tiling"), "target_mpp")) == 2.0 &&
               !strcmp(json_string_value(json_object_get(dp, "problems")), ""),
           "data_params.json: %s", json_dumps(dp, 0));
    json_decref(dp);

    /* ncmi eval --run on the test split: the reference probabilities */
    int rc = ncmi_run(&out, "eval --run %s --split test", c->run);
    REQUIRE(rc == 0, "eval --run: exit %d\n%s", rc, out ? out : "");
    free(out);

    const char *sd = scored_get(c);
    REQUIRE(sd != NULL, "ncmi score --manifest failed: %s", scored_log);
    EXPECT(strstr(scored_log, "predicted class") && strstr(scored_log, "decision rule     linear head") &&
               strstr(scored_log, "tissue ") && strstr(scored_log, "patches used") && strstr(scored_log, "um/px") &&
               strstr(scored_log, "time ") && strstr(scored_log, "warnings"),
           "summary lacks a line:\n%s", scored_log);
    const char *classes[2] = {"normal", "tumor"};
    int inside_all = 0, top_all = 0;
    for (int i = CO_TRAIN + 2; i < CO_N; i++) {
        char id[32];
        snprintf(id, sizeof id, "slide_%03d", i);
        snprintf(p, sizeof p, "%s/%s.score.json", sd, id);
        json_error_t err;
        json_t *j = json_load_file(p, 0, &err);
        REQUIRE(json_is_object(j), "%s: %s", p, err.text);
        json_t *pr = json_object_get(j, "prediction");
        const char *cls = json_string_value(json_object_get(pr, "class"));
        EXPECT(cls && !strcmp(cls, co_label(i)), "%s: predicted %s, truth %s", id, cls ? cls : "?", co_label(i));
        EXPECT(!strcmp(json_string_value(json_object_get(pr, "decision_rule")), "linear head"), "rule");
        /* the same probabilities as ncmi eval (its CSV holds 9 significant digits) */
        double pe[2], ps[2];
        char pred[64] = "";
        snprintf(p, sizeof p, "%s/predictions_test.csv", c->run);
        REQUIRE(csv_probs(p, id, classes, 2, pe, pred, sizeof pred) == 0, "%s not in %s", id, p);
        for (int k = 0; k < 2; k++) {
            ps[k] = json_number_value(json_object_get(json_object_get(pr, "probabilities"), classes[k]));
            EXPECT(fabs(ps[k] - pe[k]) <= 1e-8, "%s p_%s: score %.12g, eval %.12g", id, classes[k], ps[k], pe[k]);
        }
        printf("    %s (%s): score p(tumor) %.9f, eval %.9f\n", id, co_label(i), ps[1], pe[1]);
        /* quality and provenance */
        json_t *q = json_object_get(j, "quality");
        EXPECT(json_number_value(json_object_get(q, "tissue_area_mm2")) > 0.05 &&
                   json_integer_value(json_object_get(q, "patches")) > 20,
               "%s: quality %s", id, json_dumps(q, 0));
        json_t *m = json_object_get(j, "model");
        const char *cs = json_string_value(json_object_get(m, "config_sha256"));
        EXPECT(cs && strlen(cs) == 64 && json_is_object(json_object_get(m, "validation")) &&
                   json_is_object(json_object_get(m, "evaluation")),
               "%s: model card %s", id, json_dumps(m, 0));
        EXPECT(json_number_value(json_object_get(json_object_get(j, "slide"), "mpp")) == 0.5, "slide mpp");
        /* top-k: files in place; for the tumour slide every one inside the tumour disk */
        json_t *tk = json_object_get(json_object_get(j, "attention"), "top_k");
        EXPECT(json_array_size(tk) == 5, "%s: %zu top patches", id, json_array_size(tk));
        int inside = 0;
        for (size_t k = 0; k < json_array_size(tk); k++) {
            json_t *t = json_array_get(tk, k);
            double x = (double)json_integer_value(json_object_get(t, "x")),
                   y = (double)json_integer_value(json_object_get(t, "y")),
                   s = (double)json_integer_value(json_object_get(t, "size_level0"));
            inside += tl_synth_in_tumour(&c->truth[i], x + s / 2, y + s / 2);
            snprintf(p, sizeof p, "%s/%s", sd, json_string_value(json_object_get(t, "file")));
            EXPECT(test_file_nonempty(p), "%s missing", p);
        }
        if (c->truth[i].has_tumour) {
            printf("    %s: %d of %zu top patches inside the tumour (centre %.0f,%.0f r %.0f px)\n", id, inside,
                   json_array_size(tk), c->truth[i].tumour_cx, c->truth[i].tumour_cy, c->truth[i].tumour_r);
            inside_all += inside;
            top_all += (int)json_array_size(tk);
        }
        snprintf(p, sizeof p, "%s/%s.topk", sd, id);
        EXPECT(count_entries(p, "rank") == 5, "%s: %d files", p, count_entries(p, "rank"));
        /* the heatmap: a PNG at thumbnail scale (never the full slide) */
        snprintf(p, sizeof p, "%s/%s.heatmap.png", sd, id);
#if SC_OK
        VipsImage *im = vips_image_new_from_file(p, NULL);
        EXPECT(im && vips_image_get_width(im) <= 1200 + 44 && vips_image_get_height(im) <= 1200 &&
                   vips_image_get_width(im) > 500,
               "%s: %dx%d", p, im ? vips_image_get_width(im) : 0, im ? vips_image_get_height(im) : 0);
        if (im) g_object_unref(im);
#endif
        snprintf(p, sizeof p, "%s/%s.html", sd, id);
        char *html = slurp(p);
        EXPECT(html && strstr(html, "data:image/jpeg;base64,") && !strstr(html, "src=\"http") &&
                   strstr(html, co_label(i)),
               "%s: not a self-contained page", p);
        free(html);
        json_decref(j);
    }
    EXPECT(top_all > 0 && inside_all == top_all, "top patches inside the tumour: %d of %d", inside_all, top_all);
    /* the batch CSV, and nothing temporary left behind */
    snprintf(p, sizeof p, "%s/score_predictions.csv", sd);
    char *csv = slurp(p);
    EXPECT(csv && strstr(csv, "slide_id,label,pred,p_normal,p_tumor,n_patches,status,error") &&
               strstr(csv, "slide_010,tumor,tumor,") && strstr(csv, "slide_011,normal,normal,"),
           "%s:\n%s", p, csv ? csv : "(missing)");
    free(csv);
    EXPECT(count_entries(sd, ".") == 0, "temporary files left in %s", sd);
}

/* ------------------------------------------------------------------ */
/* the page in a headless browser                                      */

static int find_chromium(char *path, size_t n)
{
    char *o = NULL;
    int rc = test_run("command -v chromium || command -v chromium-browser || command -v google-chrome", &o);
    if (rc == 0 && o) {
        o[strcspn(o, "\n")] = 0;
        snprintf(path, n, "%s", o);
    }
    free(o);
    return rc == 0 && path[0];
}

TEST(score_html_renders_in_headless_chromium)
{
    NEED_SLIDES();
    char chrome[512] = "";
    if (!find_chromium(chrome, sizeof chrome))
        SKIP("chromium not installed (Debian: apt-get install chromium): the page was not rendered");
    NEED_COHORT(c);
    const char *sd = scored_get(c);
    REQUIRE(sd != NULL, "ncmi score --manifest failed: %s", scored_log);
    char html[1400], shot[1400], prof[1400], cmd[8000], *out = NULL;
    snprintf(html, sizeof html, "%s/slide_010.html", sd);
    snprintf(shot, sizeof shot, "%s/slide_010.screenshot.png", c->dir);
    snprintf(prof, sizeof prof, "%s/chromium-profile", c->dir);
    const char *flags = "--headless --no-sandbox --disable-gpu --hide-scrollbars --no-first-run "
                        "--disable-extensions --disable-background-networking";
    /* 1. every image decodes (the page's own check, read from the DOM) */
    snprintf(cmd, sizeof cmd, "timeout 90 %s %s --user-data-dir=%s --dump-dom 'file://%s' 2>/dev/null", chrome,
             flags, prof, html);
    int rc = test_run(cmd, &out);
    REQUIRE(rc == 0 && out, "chromium --dump-dom: exit %d", rc);
    EXPECT(strstr(out, "data-images=\"7 images, 0 broken\""), "images: %.200s",
           strstr(out, "data-images") ? strstr(out, "data-images") : "(no data-images attribute: the page's script "
                                                                      "did not run)");
    free(out);
    /* 2. a screenshot, with the console on stderr: no message at all */
    snprintf(cmd, sizeof cmd,
             "timeout 90 %s %s --user-data-dir=%s --enable-logging=stderr --v=0 --window-size=1280,2600 "
             "--screenshot='%s' 'file://%s' 2>&1",
             chrome, flags, prof, shot, html);
    rc = test_run(cmd, &out);
    EXPECT(rc == 0, "chromium --screenshot: exit %d", rc);
    EXPECT(out && !strstr(out, ":CONSOLE"), "console messages:\n%s", out ? out : "");
    free(out);
    struct stat st;
    EXPECT(stat(shot, &st) == 0 && st.st_size > 50000, "screenshot %s missing or blank (%lld bytes)", shot,
           (long long)(stat(shot, &st) == 0 ? st.st_size : 0));
#if SC_OK
    VipsImage *im = vips_image_new_from_file(shot, NULL);
    EXPECT(im && vips_image_get_width(im) == 1280, "screenshot size");
    if (im) g_object_unref(im);
#endif
    const char *keep = getenv("NCMI_SCORE_SCREENSHOT");
    if (keep && *keep) {
        snprintf(cmd, sizeof cmd, "cp '%s' '%s'", shot, keep);
        test_run(cmd, NULL);
    }
    printf("    screenshot: %s%s%s\n", shot, keep ? " -> " : "", keep ? keep : "");
    /* 3. the checks catch a broken image (a corrupted copy of the page) */
    char *page = slurp(html);
    REQUIRE(page != NULL, "cannot read %s", html);
    char *b = strstr(page, "base64,");
    REQUIRE(b != NULL, "no embedded image");
    // NOLINTNEXTLINE(bugprone-not-null-terminated-result): overwrites 4 bytes inside the page string on purpose
    memcpy(b + 7, "!!!!", 4);
    char bad[1400];
    snprintf(bad, sizeof bad, "%s/broken.html", c->dir);
    write_text(bad, "%s", page);
    free(page);
    snprintf(cmd, sizeof cmd,
             "timeout 90 %s %s --user-data-dir=%s --enable-logging=stderr --v=0 --dump-dom 'file://%s' 2>&1", chrome,
             flags, prof, bad);
    test_run(cmd, &out); /* the page's console output is the result, not chrome's status */
    EXPECT(out && strstr(out, "7 images, 1 broken") && strstr(out, ":CONSOLE"), "a broken image went unnoticed:\n%.2000s",
           out ? strstr(out, "data-images") ? strstr(out, "data-images") : out : "");
    free(out);
}

/* ------------------------------------------------------------------ */
/* bad inputs                                                          */

/* runs score; expects exit 2, every needle in the message, and no out folder */
static void expect_refusal(const char *what, const char *args, const char *out_dir, const char *n1, const char *n2)
{
    char *o = NULL;
    int rc = ncmi_run(&o, "score --device cpu %s --out %s", args, out_dir);
    EXPECT(rc == 2, "%s: exit %d (expected 2)\n%s", what, rc, o ? o : "");
    EXPECT(o && strstr(o, "ncmi: score: ") && (!n1 || strstr(o, n1)) && (!n2 || strstr(o, n2)),
           "%s: message lacks '%s' / '%s':\n%s", what, n1 ? n1 : "", n2 ? n2 : "", o ? o : "");
    EXPECT(!exists(out_dir), "%s: %s was left behind", what, out_dir);
    const char *msg = o ? strstr(o, "ncmi: score: ") : NULL;
    if (msg && !strstr(msg, "loaded in")) printf("    %s: %.*s\n", what, (int)strcspn(msg, "\n"), msg);
    else if (msg) {
        const char *m2 = strstr(msg + 1, "ncmi: score: ");
        if (m2) printf("    %s: %.*s\n", what, (int)strcspn(m2, "\n"), m2);
    }
    free(o);
}

TEST(score_refuses_bad_inputs_exit_2_nothing_left)
{
    NEED_SLIDES();
    NEED_COHORT(c);
    char d[1200], a[8192], p[1400];
    snprintf(d, sizeof d, "%s/bad", c->dir);
    snprintf(a, sizeof a, "mkdir -p %s", d);
    test_run(a, NULL);
    /* slides that cannot be read */
    snprintf(p, sizeof p, "%s/empty.svs", d);
    write_text(p, "%s", "");
    snprintf(a, sizeof a, "%s --run %s", p, c->run);
    expect_refusal("zero-byte slide", a, test_tmp_path("sc_out1"), "cannot read the slide", "empty file");
    snprintf(p, sizeof p, "%s/text.svs", d);
    write_text(p, "%s", "this is not a slide\n");
    snprintf(a, sizeof a, "%s --run %s", p, c->run);
    expect_refusal("not a slide", a, test_tmp_path("sc_out2"), "cannot read the slide", "whole-slide image");
    snprintf(a, sizeof a, "%s/nothing.svs --run %s", d, c->run);
    expect_refusal("missing slide", a, test_tmp_path("sc_out3"), "does not exist", NULL);
    snprintf(p, sizeof p, "%s/slides/unreadable.svs", test_fixtures_dir());
    if (exists(p)) {
        snprintf(a, sizeof a, "%s --run %s", p, c->run);
        expect_refusal("corrupt image data (fixture unreadable.svs)", a, test_tmp_path("sc_out4"),
                       "cannot read the image", "Copy or export the slide again");
    }
    /* resolution: unknown (then given with --slide-mpp), and coarser than training */
    tl_synth_params sp;
    tl_synth_params_default(&sp);
    sp.width = 1600;
    sp.height = 1200;
    sp.no_resolution = 1;
    snprintf(p, sizeof p, "%s/nores.tif", d);
    REQUIRE(tl_synth_slide_write(p, &sp, NULL) == 0, "%s", ncmi_error());
    snprintf(a, sizeof a, "%s --run %s", p, c->run);
    expect_refusal("no resolution", a, test_tmp_path("sc_out5"), "does not say its resolution", "--slide-mpp");
    char *o = NULL;
    int rc = ncmi_run(&o, "score --device cpu %s --run %s --out %s --slide-mpp 0.5 --top-k 3", p, c->run,
                      test_tmp_path("sc_out5b"));
    EXPECT(rc == 0 && o && strstr(o, "given with --slide-mpp"), "the same slide with --slide-mpp 0.5: exit %d\n%s", rc,
           o ? o : "");
    free(o);
    snprintf(a, sizeof a, "%s/slide_000.tif --slide-mpp 4 --run %s", c->slides, c->run);
    expect_refusal("coarser than training", a, test_tmp_path("sc_out6"), "coarser than the 2 um/px",
                   "Scan the slide at 5x or finer");
    /* run folders */
    snprintf(a, sizeof a, "%s/slide_000.tif --run %s/no_such_run", c->slides, d);
    expect_refusal("no run folder", a, test_tmp_path("sc_out7"), "no such run folder", NULL);
    snprintf(p, sizeof p, "%s/run_without_model", d);
    snprintf(a, sizeof a, "mkdir -p %s && cp %s/config.yaml %s/data_params.json %s/", p, c->run, c->run, p);
    test_run(a, NULL);
    snprintf(a, sizeof a, "%s/slide_000.tif --run %s", c->slides, p);
    expect_refusal("run without a model", a, test_tmp_path("sc_out8"), "has no trained model",
                   "best.safetensors is missing");
    snprintf(p, sizeof p, "%s/mlp_run", d);
    snprintf(a, sizeof a, "mkdir -p %s && cp configs/demo_mlp.yaml %s/config.yaml && touch %s/best.safetensors", p, p,
             p);
    if (test_run(a, NULL) == 0) {
        snprintf(a, sizeof a, "%s/slide_000.tif --run %s", c->slides, p);
        expect_refusal("not a slide model", a, test_tmp_path("sc_out9"), "is not a slide model", "data.kind");
    }
    /* a manifest with one unreadable slide: the others are scored, exit 3, the CSV says which failed */
    snprintf(p, sizeof p, "%s/mixed.csv", d);
    write_text(p, "slide_id,label,path\nslide_011,normal,%s/slide_011.tif\nempty,normal,%s/empty.svs\n", c->slides, d);
    const char *mo = test_tmp_path("sc_out_mixed");
    rc = ncmi_run(&o, "score --device cpu --manifest %s --run %s --out %s --top-k 2", p, c->run, mo);
    EXPECT(rc == 3 && o && strstr(o, "empty: cannot read the slide"), "mixed manifest: exit %d\n%s", rc, o ? o : "");
    free(o);
    snprintf(p, sizeof p, "%s/score_predictions.csv", mo);
    char *csv = slurp(p);
    EXPECT(csv && strstr(csv, "slide_011,normal,normal,") && strstr(csv, ",0,failed,") &&
               strstr(csv, "empty,normal,,,,0,failed,"),
           "%s:\n%s", p, csv ? csv : "(missing)");
    free(csv);
    snprintf(p, sizeof p, "%s/empty.score.json", mo);
    EXPECT(!exists(p), "outputs of the failed slide were left");
    /* usage */
    rc = ncmi_run(&o, "score %s/slide_000.tif", c->slides);
    EXPECT(rc == 1 && o && strstr(o, "--run DIR is required"), "no --run: exit %d\n%s", rc, o ? o : "");
    free(o);
    rc = ncmi_run(&o, "score --help");
    EXPECT(rc == 0 && o && strstr(o, "--manifest CSV") && strstr(o, "heatmap.png") && !strstr(o, "not built"),
           "--help: exit %d\n%s", rc, o ? o : "");
    free(o);
}

/* ------------------------------------------------------------------ */
/* NCMI: stored predictors                                             */

/* best.safetensors without the stored predictors (a run from before them) */
static int strip_predictors(const char *path)
{
    nn_safetensors st;
    if (nn_st_open(&st, path)) return -1;
    nn_st_tensor *ts = calloc((size_t)st.n, sizeof *ts);
    float **bufs = calloc((size_t)st.n, sizeof *bufs);
    int n = 0, rc = 0;
    for (int i = 0; i < st.n && !rc; i++) {
        const nn_st_entry *e = &st.entries[i];
        if (!strncmp(e->name, "ncmi.cc_", 8) || !strncmp(e->name, "ncmi.lp.", 8)) continue;
        if (e->dtype != NN_ST_F32) {
            rc = -1;
            break;
        }
        bufs[n] = malloc((e->numel ? e->numel : 1) * sizeof(float));
        rc = nn_st_read_f32(&st, e->name, bufs[n], e->numel, -1, NULL);
        ts[n] = (nn_st_tensor){e->name, NN_ST_F32, e->ndim, {0}, bufs[n]};
        memcpy(ts[n].shape, e->shape, sizeof ts[n].shape);
        n++;
    }
    const char *mk[64], *mv[64];
    int m = 0;
    for (int i = 0; i < st.n_meta && m < 64; i++)
        if (strcmp(st.meta_keys[i], "stored_predictors")) {
            mk[m] = st.meta_keys[i];
            mv[m++] = st.meta_vals[i];
        }
    if (!rc) rc = nn_st_write(path, ts, n, mk, mv, m);
    for (int i = 0; i < n; i++) free(bufs[i]);
    free(bufs);
    free(ts);
    nn_st_close(&st);
    return rc;
}

TEST(score_ncmi_uses_stored_centroids_and_old_runs_are_refused)
{
    NEED_SLIDES();
    NEED_COHORT(c);
    char p[2400], run[1400], *o = NULL;
    snprintf(p, sizeof p, "%s/ncmi.yaml", c->dir);
    write_text(p,
               "name: synth_abmil_ncmi\nout: %s/runs\nseed: 1\n"
               "data:\n  kind: bags\n  features: %s/tiles/features\n  manifest: %s/manifest.csv\n"
               "  classes: [normal, tumor]\n"
               "model:\n  kind: abmil\nmil:\n  d_inner: 32\n  attn_hidden: 16\n  dropout: 0.0\n"
               "head:\n  kind: ncmi\nncmi:\n  tau: 1.0\n  momentum: 0.9995\nlp:\n  epochs: 20\n  batch_size: 8\n"
               "optim:\n  name: adamw\n  lr: 1.0e-3\n  weight_decay: 1.0e-5\n"
               "schedule:\n  kind: cosine\ntrain:\n  epochs: 60\n  select: loss\n  threads: 1\n",
               c->dir, c->dir, c->dir);
    int rc = ncmi_run(&o, "train --config %s", p);
    REQUIRE(rc == 0, "ncmi train (ncmi head): exit %d\n%s", rc, o ? o : "");
    free(o);
    snprintf(run, sizeof run, "%s/runs/synth_abmil_ncmi", c->dir);
    snprintf(p, sizeof p, "%s/best.safetensors", run);
    nn_safetensors st;
    REQUIRE(nn_st_open(&st, p) == 0, "%s", ncmi_error());
    const nn_st_entry *q = nn_st_find(&st, "ncmi.cc_centroids"), *w = nn_st_find(&st, "ncmi.lp.weight");
    EXPECT(q && q->dtype == NN_ST_F64 && q->shape[0] == 2 && q->shape[1] == 32 && w && w->shape[1] == 32 &&
               nn_st_find(&st, "ncmi.lp.bias") && nn_st_meta(&st, "stored_predictors"),
           "%s lacks the stored predictors", p);
    nn_st_close(&st);
    /* score (cc, the run's rule; lp) = eval on a test slide */
    const char *classes[2] = {"normal", "tumor"};
    const char *methods[2] = {"cc", "lp"};
    double first[2][2];
    for (int k = 0; k < 2; k++) {
        rc = ncmi_run(&o, "eval --run %s --split test --method %s", run, methods[k]);
        REQUIRE(rc == 0, "eval --method %s: exit %d\n%s", methods[k], rc, o ? o : "");
        free(o);
        char od[1400];
        snprintf(od, sizeof od, "%s/scored_%s", c->dir, methods[k]);
        rc = ncmi_run(&o, "score --device cpu %s/slide_010.tif --run %s --out %s --top-k 2%s", c->slides, run, od,
                      k ? " --method lp" : "");
        REQUIRE(rc == 0, "score (%s): exit %d\n%s", methods[k], rc, o ? o : "");
        EXPECT(strstr(o, k ? "NCMI-LP" : "NCMI-CC"), "rule in the summary:\n%s", o);
        free(o);
        double pe[2];
        char pred[64];
        snprintf(p, sizeof p, "%s/predictions_test_%s.csv", run, methods[k]);
        REQUIRE(csv_probs(p, "slide_010", classes, 2, pe, pred, sizeof pred) == 0, "slide_010 not in %s", p);
        snprintf(p, sizeof p, "%s/slide_010.score.json", od);
        json_t *j = json_load_file(p, 0, NULL);
        json_t *pr = json_object_get(json_object_get(j, "prediction"), "probabilities");
        for (int c2 = 0; c2 < 2; c2++) {
            first[k][c2] = json_number_value(json_object_get(pr, classes[c2]));
            EXPECT(fabs(first[k][c2] - pe[c2]) <= 1e-8, "%s p_%s: score %.12g, eval %.12g", methods[k], classes[c2],
                   first[k][c2], pe[c2]);
        }
        printf("    NCMI-%s slide_010: score p(tumor) %.9f, eval %.9f\n", methods[k], first[k][1], pe[1]);
        json_decref(j);
    }
    /* a run from before the predictors were stored: score refuses, eval stores them */
    snprintf(p, sizeof p, "%s/best.safetensors", run);
    REQUIRE(strip_predictors(p) == 0, "cannot strip %s", p);
    char a[4096];
    snprintf(a, sizeof a, "%s/slide_010.tif --run %s", c->slides, run);
    expect_refusal("NCMI run without stored centroids", a, test_tmp_path("sc_out_old"), "ncmi eval --run",
                   "stores them");
    rc = ncmi_run(&o, "eval --run %s --split test --method cc", run);
    EXPECT(rc == 0 && o && strstr(o, "stored the class-mean centroids"), "eval on the old run: exit %d\n%s", rc,
           o ? o : "");
    free(o);
    char od[1400];
    snprintf(od, sizeof od, "%s/scored_again", c->dir);
    rc = ncmi_run(&o, "score --device cpu %s/slide_010.tif --run %s --out %s --top-k 2", c->slides, run, od);
    EXPECT(rc == 0, "score after eval stored them: exit %d\n%s", rc, o ? o : "");
    free(o);
    snprintf(p, sizeof p, "%s/slide_010.score.json", od);
    json_t *j = json_load_file(p, 0, NULL);
    json_t *pr = json_object_get(json_object_get(j, "prediction"), "probabilities");
    /* eval recomputed them from the training features (with this process's thread count; training
     * used train.threads): the same up to float summation order */
    EXPECT(j && fabs(json_number_value(json_object_get(pr, "tumor")) - first[0][1]) < 1e-6,
           "recomputed centroids give p(tumor) %.17g, stored ones gave %.17g",
           json_number_value(json_object_get(pr, "tumor")), first[0][1]);
    json_decref(j);
}

/* ------------------------------------------------------------------ */
/* time on the H&E fixture with resnet50_trunc                         */

TEST(score_cmu1_resnet50_trunc_under_10s)
{
    NEED_SLIDES();
    char slide[4096];
    snprintf(slide, sizeof slide, "%s/slides/cmu-1-small-region.svs", test_fixtures_dir());
    if (access(slide, R_OK) != 0) SKIP("fixture %s absent (set NCMI_FIXTURES)", slide);
    /* a run trained on (random) bags that record resnet50_trunc random:1 features
     * tiled with the defaults, as ncmi features would write them */
    const char *dir = test_tmp_path("score_cmu");
    char p[2400], *o = NULL;
    snprintf(p, sizeof p, "mkdir -p %s/features", dir);
    test_run(p, NULL);
    fx_encoder e;
    snprintf(p, sizeof p, "%s/w.safetensors", dir);
    REQUIRE(fx_encoder_open_random(&e, "resnet50_trunc", 1, p, NN_DEVICE_CPU, NN_PREC_FP32, 224) == 0, "%s",
            ncmi_error());
    char sha[80];
    snprintf(sha, sizeof sha, "%s", rn_weights_sha256(&e.m));
    fx_encoder_close(&e);
    unlink(p);
    tl_tile_params tp;
    tl_tile_params_default(&tp);
    char tiling[1024];
    REQUIRE(tl_tile_params_json(&tp, tiling, sizeof tiling) == 0, "tiling json");
    snprintf(p, sizeof p, "%s/manifest.csv", dir);
    FILE *fm = fopen(p, "w");
    REQUIRE(fm, "cannot write %s", p);
    fprintf(fm, "slide_id,label,split\n");
    nn_rng r;
    nn_rng_seed(&r, 3);
    for (int i = 0; i < 8; i++) {
        const int n = 12, d = 1024;
        float *x = malloc((size_t)n * d * sizeof *x);
        int64_t xy[24];
        nn_rng_fill_normal(&r, x, (size_t)n * d, i % 2 ? 0.2f : 0.f, 1.f);
        for (int k = 0; k < n; k++) xy[2 * k] = 257 * k, xy[2 * k + 1] = 0;
        features_h5_attrs at = {.encoder = "resnet50_trunc", .weights_sha256 = sha, .precision = "fp32",
                                .slide_id = "s", .patch_size = 256, .input_size = 224, .target_mpp = 0.5,
                                .patch_size_level0 = 257, .weights_source = "random:1", .tiling = tiling,
                                .level0_mpp = 0.499};
        char fp[2400];
        snprintf(fp, sizeof fp, "%s/features/s%d.h5", dir, i);
        REQUIRE(features_h5_write_attrs(fp, x, n, d, xy, &at) == 0, "%s", ncmi_error());
        free(x);
        fprintf(fm, "s%d,%s,%s\n", i, i % 2 ? "b" : "a", i < 6 ? "train" : "val");
    }
    fclose(fm);
    snprintf(p, sizeof p, "%s/run.yaml", dir);
    write_text(p,
               "name: cmu\nout: %s/runs\ndata:\n  kind: bags\n  features: %s/features\n  manifest: %s/manifest.csv\n"
               "  classes: [a, b]\nmodel:\n  kind: abmil\ntrain:\n  epochs: 2\n  threads: 1\n",
               dir, dir, dir);
    int rc = ncmi_run(&o, "train --config %s", p);
    REQUIRE(rc == 0, "train: exit %d\n%s", rc, o ? o : "");
    free(o);
    double t0 = test_now_s();
    rc = ncmi_run(&o, "score --device cpu %s --run %s/runs/cmu --out %s/out", slide, dir, dir);
    double wall = test_now_s() - t0;
    REQUIRE(rc == 0, "score: exit %d\n%s", rc, o ? o : "");
    free(o);
    snprintf(p, sizeof p, "%s/out/cmu-1-small-region.score.json", dir);
    json_t *j = json_load_file(p, 0, NULL);
    json_t *s = json_object_get(j, "seconds");
#define SEC(k) json_number_value(json_object_get(s, k))
    printf("    cmu-1-small-region.svs (2220x2967, %lld patches), resnet50_trunc on the CPU: %.2f s wall = load model "
           "%.2f + tile %.2f + read+features %.2f + head %.3f + outputs %.2f (+ process start/exit)\n",
           (long long)json_integer_value(json_object_get(json_object_get(j, "quality"), "patches")), wall,
           SEC("load_model"), SEC("tile"), SEC("read_and_features"), SEC("head"), SEC("outputs"));
#undef SEC
    EXPECT(json_integer_value(json_object_get(json_object_get(j, "quality"), "patches")) == 41, "41 patches");
    /* the goal is < 10 s on a 2-core CPU: reported, not asserted (timings are not test
     * assertions: a loaded CI machine would fail it; docs/score.md has the measurements) */
    printf("    goal < 10 s: %s (%.1f s)\n", wall < 10.0 ? "met" : "NOT met on this run", wall);
    json_decref(j);
}

/* data.standardize: true (features z-scored with the training statistics):
 * ncmi train keeps the statistics (standardize.safetensors), score applies
 * them and gives eval's probabilities; without the file score refuses. */
TEST(score_standardized_run_same_as_eval)
{
    NEED_SLIDES();
    NEED_COHORT(c);
    char p[2400], run[1400], od[1400], *o = NULL;
    snprintf(p, sizeof p, "%s/std.yaml", c->dir);
    write_text(p,
               "name: synth_abmil_std\nout: %s/runs\nseed: 1\n"
               "data:\n  kind: bags\n  features: %s/tiles/features\n  manifest: %s/manifest.csv\n"
               "  classes: [normal, tumor]\n  standardize: true\n"
               "model:\n  kind: abmil\nmil:\n  d_inner: 32\n  attn_hidden: 16\n  dropout: 0.0\n"
               "head:\n  kind: linear\n"
               "optim:\n  name: adamw\n  lr: 1.0e-3\n  weight_decay: 1.0e-5\n"
               "schedule:\n  kind: cosine\ntrain:\n  epochs: 40\n  select: loss\n  threads: 1\n",
               c->dir, c->dir, c->dir);
    int rc = ncmi_run(&o, "train --config %s", p);
    REQUIRE(rc == 0, "ncmi train (standardize): exit %d\n%s", rc, o ? o : "");
    free(o);
    snprintf(run, sizeof run, "%s/runs/synth_abmil_std", c->dir);
    snprintf(p, sizeof p, "%s/standardize.safetensors", run);
    REQUIRE(access(p, R_OK) == 0, "%s not written", p);
    rc = ncmi_run(&o, "eval --run %s --split test", run);
    REQUIRE(rc == 0, "eval: exit %d\n%s", rc, o ? o : "");
    free(o);
    snprintf(od, sizeof od, "%s/scored_std", c->dir);
    rc = ncmi_run(&o, "score --device cpu %s/slide_010.tif --run %s --out %s --top-k 2", c->slides, run, od);
    REQUIRE(rc == 0, "score: exit %d\n%s", rc, o ? o : "");
    free(o);
    const char *classes[2] = {"normal", "tumor"};
    double pe[2];
    char pred[64];
    snprintf(p, sizeof p, "%s/predictions_test.csv", run);
    REQUIRE(csv_probs(p, "slide_010", classes, 2, pe, pred, sizeof pred) == 0, "slide_010 not in %s", p);
    snprintf(p, sizeof p, "%s/slide_010.score.json", od);
    json_t *j = json_load_file(p, 0, NULL);
    json_t *pr = json_object_get(json_object_get(j, "prediction"), "probabilities");
    for (int k = 0; k < 2; k++) {
        double ps = json_number_value(json_object_get(pr, classes[k]));
        EXPECT(fabs(ps - pe[k]) <= 1e-8, "p_%s: score %.12g, eval %.12g", classes[k], ps, pe[k]);
    }
    printf("    standardized run, slide_010: score p(tumor) %.9f, eval %.9f\n",
           json_number_value(json_object_get(pr, "tumor")), pe[1]);
    json_decref(j);
    /* the statistics gone: a clear refusal, exit 2, nothing written */
    char sp[1500], moved[1600];
    snprintf(sp, sizeof sp, "%s/standardize.safetensors", run);
    snprintf(moved, sizeof moved, "%s.moved", sp);
    REQUIRE(rename(sp, moved) == 0, "rename %s", sp);
    snprintf(od, sizeof od, "%s/scored_std_missing", c->dir);
    rc = ncmi_run(&o, "score --device cpu %s/slide_010.tif --run %s --out %s", c->slides, run, od);
    EXPECT(rc == 2 && o && strstr(o, "standardize.safetensors"), "exit %d:\n%s", rc, o ? o : "");
    EXPECT(access(od, F_OK) != 0 || rmdir(od) == 0, "%s left behind", od);
    free(o);
    rename(moved, sp);
}
