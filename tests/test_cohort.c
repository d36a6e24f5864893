/* Whole cohorts: the synthetic cohort generator (make_slides --cohort, pen
 * marks, texture source), the manifest checks of `ncmi cohort` (duplicate
 * ids, unknown labels, missing slides before any work), `ncmi report
 * table3`, and the stages killed with SIGKILL at seeded random moments and
 * rerun: the outputs must be byte for byte those of an uninterrupted run. */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../nn/error.h"
#include "../tiler/synth_slide.h"
#include "fault_util.h"
#include "test.h"

/* ------------------------------------------------------------------ */
/* helpers                                                             */

/* ------------------------------------------------------------------ */
/* generator                                                           */

TEST(cohort_generator_deterministic)
{
    const char *ms = fu_make_slides_bin();
    if (!ms) SKIP("build/tools/make_slides not built (make test builds it)");
    char *out = NULL;
    const char *args = "--cohort --n 8 --width 1200 --height 900 --pen-fraction 0.5 --quiet";
    int st = 0;
    char cmd[8192];
    for (int k = 0; k < 3; k++) {
        snprintf(cmd, sizeof cmd, "%s %s --seed %d --out %s", ms, args, k < 2 ? 3 : 4, test_tmp_path("gen%d", k));
        st |= test_run(cmd, &out);
        REQUIRE(st == 0, "make_slides: %s", out ? out : "");
        free(out);
        out = NULL;
    }
    /* same seed: identical manifest, truth and slide files; another seed: other slides */
    const char *files[] = {"manifest.csv", "truth.csv", "synth_000.tif", "synth_005.tif"};
    for (int i = 0; i < 4; i++) {
        size_t na, nb, nc;
        char *a = fu_slurp(test_tmp_path("gen0/%s", files[i]), &na), *b = fu_slurp(test_tmp_path("gen1/%s", files[i]), &nb);
        char *c = fu_slurp(test_tmp_path("gen2/%s", files[i]), &nc);
        REQUIRE(a && b && c, "%s missing", files[i]);
        EXPECT(na == nb && !memcmp(a, b, na), "%s differs between two runs with the same seed", files[i]);
        if (i >= 1) EXPECT(na != nc || memcmp(a, c, na), "%s is the same with another seed", files[i]);
        free(a);
        free(b);
        free(c);
    }
    /* manifest: classes cycle, splits per class in slide order */
    char *m = fu_slurp(test_tmp_path("gen0/manifest.csv"), NULL);
    REQUIRE(m, "no manifest");
    EXPECT(strstr(m, "slide_id,case_id,label,split,rel_path,path\n") == m, "header: %.60s", m);
    EXPECT(strstr(m, "synth_000,synth_000,negative,train,synth_000.tif,synth_000.tif\n") &&
               strstr(m, "synth_003,synth_003,macro,train,") && strstr(m, "synth_005,synth_005,itc,val,"),
           "rows: %s", m);
    free(m);
    /* truth: the tumour area orders the classes (itc < micro < macro, none for negative) */
    FILE *f = fopen(test_tmp_path("gen0/truth.csv"), "r");
    REQUIRE(f, "no truth.csv");
    char line[1024];
    double lo[4] = {1e300, 1e300, 1e300, 1e300}, hi[4] = {-1, -1, -1, -1};
    int pens = 0, rows = 0;
    const char *cls[4] = {"negative", "itc", "micro", "macro"};
    EXPECT(fgets(line, sizeof line, f) && strstr(line, "tumour_area_um2,pen"), "truth header: %s", line);
    while (fgets(line, sizeof line, f)) {
        char *fld[20];
        int nf = 0;
        for (char *p = line, *t; nf < 20 && (t = strsep(&p, ",")); ) fld[nf++] = t;
        if (nf < 12) continue;
        rows++;
        double area = atof(fld[10]);
        pens += atoi(fld[11]) > 0;
        for (int c = 0; c < 4; c++)
            if (!strcmp(fld[1], cls[c])) {
                lo[c] = fmin(lo[c], area);
                hi[c] = fmax(hi[c], area);
            }
    }
    fclose(f);
    printf("    tumour area (um2) itc %.0f-%.0f, micro %.0f-%.0f, macro %.0f-%.0f; %d of %d slides with pen marks\n",
           lo[1], hi[1], lo[2], hi[2], lo[3], hi[3], pens, rows);
    EXPECT(rows == 8, "%d truth rows", rows);
    EXPECT(hi[0] == 0 && lo[1] > 0 && hi[1] < lo[2] && hi[2] < lo[3], "tumour areas do not order the classes");
    EXPECT(pens >= 1 && pens < 8, "%d slides with pen marks (fraction 0.5)", pens);
    /* bad arguments */
    snprintf(cmd, sizeof cmd, "%s --cohort --out %s --class-um 0,5 --quiet", ms, test_tmp_path("gen_bad"));
    st = test_run(cmd, &out);
    EXPECT(st == 1 && out && strstr(out, "2 ranges for 4 classes"), "exit %d: %s", st, out ? out : "");
    free(out);
}

/* pen strokes change only the pixels under the ink (their own random
 * stream); texture sources fill tissue from a real slide */
TEST(cohort_generator_pen_and_texture)
{
    tl_synth_params p, q;
    tl_synth_params_default(&p);
    p.width = 900;
    p.height = 700;
    p.mpp = 1.0;
    p.seed = 11;
    q = p;
    q.n_pen = 2;
    tl_synth_truth t, tq;
    REQUIRE(tl_synth_truth_compute(&p, &t) == 0 && tl_synth_truth_compute(&q, &tq) == 0, "%s", ncmi_error());
    EXPECT(tq.n_pen == 2 && tq.pen_rect[2] > 0 && tq.pen_rect[3] > 0, "pen truth: %d strokes, box %lldx%lld",
           tq.n_pen, (long long)tq.pen_rect[2], (long long)tq.pen_rect[3]);
    EXPECT(t.tissue_area == tq.tissue_area, "pen marks are not tissue");
    int changed = 0, outside = 0, inky = 0;
    for (int64_t y = 0; y < p.height; y += 5)
        for (int64_t x = 0; x < p.width; x += 5) {
            uint8_t a[3], b[3];
            tl_synth_pixel(&p, x, y, a, NULL);
            tl_synth_pixel(&q, x, y, b, NULL);
            if (memcmp(a, b, 3)) {
                changed++;
                if (x < tq.pen_rect[0] || y < tq.pen_rect[1] || x >= tq.pen_rect[0] + tq.pen_rect[2] ||
                    y >= tq.pen_rect[1] + tq.pen_rect[3])
                    outside++;
                /* ink is darker or more saturated than glass and tissue around it */
                int mx = b[0] > b[1] ? b[0] : b[1], mn = b[0] < b[1] ? b[0] : b[1];
                mx = b[2] > mx ? b[2] : mx;
                mn = b[2] < mn ? b[2] : mn;
                inky += mx < 200 || mx - mn > 60;
            }
        }
    printf("    pen: %d sampled pixels changed (%d outside the pen box), %d ink-coloured\n", changed, outside, inky);
    EXPECT(changed > 50 && outside == 0 && inky == changed, "pen pixels: %d changed, %d outside, %d inky", changed,
           outside, inky);
    tl_synth_truth_free(&t);
    tl_synth_truth_free(&tq);

    char fx[4200];
    snprintf(fx, sizeof fx, "%s/slides/cmu-1-small-region.svs", test_fixtures_dir());
    if (!fu_exists(fx)) SKIP("fixture %s absent (texture source part)", fx);
    tl_synth_texture tex;
    REQUIRE(tl_synth_texture_load(fx, 0, 1.0, &tex) == 0, "%s", ncmi_error());
    printf("    texture %dx%d px at 1 um/px, windows %d px, tissue %.2f / %.2f\n", tex.w, tex.h, tex.win, tex.tissue[0],
           tex.tissue[1]);
    EXPECT(abs(tex.w - 1108) <= 2 && abs(tex.h - 1481) <= 2, "0.499 um/px 2220x2967 resampled to 1 um/px: %dx%d",
           tex.w, tex.h);
    EXPECT(tex.win >= 256 && tex.tissue[0] >= 0.6 && tex.tissue[1] >= 0.6, "windows");
    tl_synth_params r = p;
    r.texture = &tex;
    r.tumour_um = 120;
    REQUIRE(tl_synth_truth_compute(&r, &t) == 0, "%s", ncmi_error());
    /* tissue pixels come from the texture's normal window; the tumour is darker */
    double sum_n = 0, sum_t = 0;
    int nn = 0, nt = 0, from_tex = 0;
    for (int64_t y = 0; y < r.height; y += 7)
        for (int64_t x = 0; x < r.width; x += 7) {
            uint8_t c[3];
            int tissue = 0;
            tl_synth_pixel(&r, x, y, c, &tissue);
            if (!tissue) continue;
            if (tl_synth_in_tumour(&t, x + 0.5, y + 0.5)) {
                sum_t += c[0] + c[1] + c[2];
                nt++;
                continue;
            }
            sum_n += c[0] + c[1] + c[2];
            nn++;
            /* the colour occurs in the normal window */
            for (int v = 0; v < tex.win && !from_tex; v += 1) {
                const uint8_t *row = tex.rgb + ((size_t)(tex.ny + v) * tex.w + tex.nx) * 3;
                for (int u = 0; u < tex.win; u++)
                    if (!memcmp(row + 3 * u, c, 3)) {
                        from_tex++;
                        break;
                    }
                if (from_tex) break;
            }
        }
    EXPECT(nn > 100 && nt > 20 && sum_t / nt < sum_n / nn - 60, "tumour mean %.0f vs normal %.0f (%d, %d px)",
           nt ? sum_t / nt : 0, nn ? sum_n / nn : 0, nt, nn);
    EXPECT(from_tex, "a tissue pixel's colour is not in the texture window");
    tl_synth_truth_free(&t);
    tl_synth_texture_free(&tex);
}

/* ------------------------------------------------------------------ */
/* manifest checks                                                     */

TEST(cohort_manifest_refused_with_rows)
{
    const char *dir = test_tmp_path("badman");
    mkdir(dir, 0777);
    fu_write_text(test_tmp_path("badman/m.csv"), "slide_id,label,split,rel_path\n"
                                               "a,negative,train,a.tif\n"
                                               "b,macro,train,b.tif\n"
                                               "a,itc,val,a2.tif\n"
                                               "c,tumor,test,c.tif\n"
                                               "d,micro,tset,d.tif\n"
                                               "b,macro,test,b.tif\n");
    char yaml[8192];
    snprintf(yaml, sizeof yaml, "name: bad\nmanifest: %s/m.csv\nclasses: [negative, itc, micro, macro]\n"
                                "data_root: %s\n", dir, dir);
    fu_write_text(test_tmp_path("badman/ds.yaml"), yaml);
    char *out = NULL;
    int st = test_ncmi(&out, "cohort tile --dataset %s/ds.yaml --work %s/w", dir, dir);
    EXPECT(st == 2, "exit %d", st);
    EXPECT(out && strstr(out, "slide_id 'a' on 2 rows: 1 (line 2), 3 (line 4)") &&
               strstr(out, "slide_id 'b' on 2 rows: 2 (line 3), 6 (line 7)"),
           "duplicates not named with their rows: %s", out ? out : "");
    EXPECT(out && strstr(out, "row 4 (line 5): label 'tumor' of slide 'c' is not a class of bad (negative, itc, "
                              "micro, macro)"),
           "unknown label not named: %s", out ? out : "");
    EXPECT(out && strstr(out, "row 5 (line 6): split 'tset'"), "bad split not named: %s", out ? out : "");
    EXPECT(out && strstr(out, "refused: 4 problems (2 duplicated slide ids)"), "summary: %s", out ? out : "");
    EXPECT(!fu_exists(test_tmp_path("badman/w/tiles")) && !fu_exists(test_tmp_path("badman/w/manifest.csv")),
           "work was started on a refused manifest");
    free(out);
    /* the training stage refuses it too (no slides needed) */
    st = test_ncmi(&out, "cohort train --dataset %s/ds.yaml --work %s/w", dir, dir);
    EXPECT(st == 2 && out && strstr(out, "slide_id 'a' on 2 rows"), "train: exit %d: %s", st, out ? out : "");
    free(out);
}

TEST(cohort_missing_slides_listed_before_work)
{
    const char *dir = test_tmp_path("miss");
    mkdir(dir, 0777);
    mkdir(test_tmp_path("miss/root"), 0777);
    mkdir(test_tmp_path("miss/root/sub"), 0777);
    tl_synth_params p;
    tl_synth_params_default(&p);
    p.width = 600;
    p.height = 400;
    for (int i = 0; i < 2; i++) {
        p.seed = 40 + (uint64_t)i;
        if (tl_synth_slide_write(test_tmp_path("miss/root/sub/s%d.tif", i), &p, NULL)) SKIP("%s", ncmi_error());
    }
    fu_write_text(test_tmp_path("miss/m.csv"), "slide_id,label,split,rel_path\n"
                                            "s0,negative,train,sub/s0.tif\n"
                                            "gone1,itc,train,sub/gone1.tif\n"
                                            "s1,macro,val,sub/s1.tif\n"
                                            "gone2,micro,test,elsewhere/gone2.tif\n");
    char yaml[8192];
    snprintf(yaml, sizeof yaml, "name: miss\nmanifest: %s/m.csv\nclasses: [negative, itc, micro, macro]\n"
                                "tile:\n  target_mpp: 2.0\n  patch_size: 64\n", dir);
    fu_write_text(test_tmp_path("miss/ds.yaml"), yaml);
    char *out = NULL;
    int st = test_ncmi(&out, "cohort tile --dataset %s/ds.yaml --data-root %s/root --work %s/w", dir, dir, dir);
    EXPECT(st == 2, "exit %d", st);
    EXPECT(out && strstr(out, "2 of 4 slides of miss are not under DATA_ROOT") && strstr(out, "gone1 ") &&
               strstr(out, "gone2 ") && strstr(out, "/elsewhere/gone2.tif") && strstr(out, "--allow-missing") &&
               !strstr(out, "  s0 "),
           "missing slides not listed: %s", out ? out : "");
    EXPECT(!fu_exists(test_tmp_path("miss/w/tiles")), "tiling started despite missing slides");
    char *csv = fu_slurp(test_tmp_path("miss/w/missing_slides.csv"), NULL);
    EXPECT(csv && strstr(csv, "gone1,itc,") && strstr(csv, "gone2,micro,"), "missing_slides.csv: %s",
           csv ? csv : "(none)");
    free(csv);
    free(out);
    /* --allow-missing: the present ones are tiled */
    st = test_ncmi(&out, "cohort tile --dataset %s/ds.yaml --data-root %s/root --work %s/w --allow-missing", dir, dir,
                   dir);
    EXPECT(st == 0, "exit %d: %s", st, out ? out : "");
    char *man = fu_slurp(test_tmp_path("miss/w/manifest.csv"), NULL);
    EXPECT(man && strstr(man, "slide_id,label,split,path\ns0,negative,train,/") && strstr(man, "\ns1,macro,val,/") &&
               !strstr(man, "gone"),
           "resolved manifest: %s", man ? man : "(none)");
    free(man);
    EXPECT(fu_exists(test_tmp_path("miss/w/tiles/patches/s0.h5")) && fu_exists(test_tmp_path("miss/w/tiles/patches/s1.h5")),
           "present slides not tiled");
    free(out);
    /* no DATA_ROOT at all: a usage error naming it */
    st = test_ncmi(&out, "cohort check --dataset %s/ds.yaml --work %s/w", dir, dir);
    EXPECT(st == 1 && out && strstr(out, "no DATA_ROOT"), "exit %d: %s", st, out ? out : "");
    free(out);
}

/* ------------------------------------------------------------------ */
/* ncmi report table3                                                  */

static void fake_run(const char *runs, const char *name, const char *recipe, int seed, const char *files[][2], int n)
{
    char dir[4400], cmd[9000];
    snprintf(dir, sizeof dir, "%s/%s", runs, name);
    snprintf(cmd, sizeof cmd, "mkdir -p %s && %s train --config %s --set name=%s --set seed=%d --print-config > %s/config.yaml",
             dir, test_ncmi_bin(), recipe, name, seed, dir);
    test_run(cmd, NULL);
    for (int i = 0; i < n; i++) {
        char p[4600];
        snprintf(p, sizeof p, "%s/%s", dir, files[i][0]);
        fu_write_text(p, files[i][1]);
    }
}

TEST(report_table3)
{
    const char *runs = test_tmp_path("t3runs");
    mkdir(runs, 0777);
    const char *ce[][2] = {{"metrics_test.json", "{\"f1_macro\": 0.60, \"auc_macro\": 0.90}"}};
    const char *ce1[][2] = {{"metrics_test.json", "{\"f1_macro\": 0.70, \"auc_macro\": 0.80}"}};
    const char *nc[][2] = {{"metrics_test.json", "{\"f1_macro\": 0.50, \"auc_macro\": 0.70}"},
                           {"metrics_test_cc.json", "{\"f1_macro\": 0.50, \"auc_macro\": 0.70}"},
                           {"metrics_test_lp.json", "{\"f1_macro\": 0.567, \"auc_macro\": 0.892}"}};
    fake_run(runs, "camelyon17_abmil_ce", "configs/camelyon17_abmil_ce.yaml", 0, ce, 1);
    fake_run(runs, "camelyon17_abmil_ce_seed1", "configs/camelyon17_abmil_ce.yaml", 1, ce1, 1);
    fake_run(runs, "camelyon17_abmil_ncmi", "configs/camelyon17_abmil_ncmi.yaml", 0, nc, 3);
    fake_run(runs, "camelyon17_aem_ce", "configs/camelyon17_aem_ce.yaml", 0, ce, 1);
    fake_run(runs, "camelyon17_asmil_ncmi", "configs/camelyon17_asmil_ncmi.yaml", 0, NULL, 0); /* unfinished */
    char *out = NULL;
    const char *prefix = test_tmp_path("t3out/table3");
    int st = test_ncmi(&out, "report table3 --runs %s --out %s", runs, prefix);
    EXPECT(st == 3, "incomplete table: exit %d: %s", st, out ? out : "");
    char *md = fu_slurp(test_tmp_path("t3out/table3.md"), NULL), *csv = fu_slurp(test_tmp_path("t3out/table3.csv"), NULL);
    REQUIRE(md && csv, "no table written: %s", out ? out : "");
    /* dataset from the run names; paper columns; mean +- std of the two CE seeds (0.65 +- 0.0707) */
    EXPECT(strstr(md, "# Table III: camelyon17"), "title: %.80s", md);
    EXPECT(strstr(md, "| ABMIL | CE | 0.650 ± 0.071 | 0.850 ± 0.071 | 0.522 | 0.853 | +0.128 | -0.003 | 2 | 0 1 |"),
           "ABMIL CE row:\n%s", md);
    EXPECT(strstr(md, "| ABMIL | NCMI-LP | 0.567 | 0.892 | 0.567 | 0.892 | +0.000 | +0.000 | 1 | 0 |"),
           "ABMIL NCMI-LP row:\n%s", md);
    EXPECT(strstr(md, "| ABMIL | NCMI-CC | 0.500 | 0.700 | - | - | - | - | 1 | 0 |"), "ABMIL NCMI-CC row:\n%s", md);
    EXPECT(strstr(md, "| AEM | CE | 0.600 | 0.900 | 0.647 | 0.887 | -0.047 | +0.013 | 1 | 0 |"), "AEM CE row:\n%s",
           md);
    EXPECT(strstr(md, "| TransMIL | CE | - | - | 0.554 | 0.792 | - | - | 0 | - |"), "missing TransMIL row:\n%s", md);
    EXPECT(strstr(md, "Missing (no finished run): ABMIL") == NULL &&
               strstr(md, "Missing (no finished run): TransMIL CE, TransMIL NCMI-LP, AEM NCMI-LP, ASMIL CE, ASMIL "
                          "NCMI-LP."),
           "missing list:\n%s", md);
    EXPECT(strstr(csv, "head,loss,n_runs,seeds,f1_macro,f1_macro_std,auc_macro,auc_macro_std,paper_f1_macro,") &&
               strstr(csv, "ABMIL,CE,2,0 1,0.65,0.0707107,0.85,0.0707107,0.522,0.853,0.128,-0.003,\""),
           "csv:\n%s", csv);
    free(md);
    free(csv);
    free(out);
    /* another dataset name: no paper columns; complete grid: exit 0 */
    const char *runs2 = test_tmp_path("t3runs2");
    mkdir(runs2, 0777);
    const char *heads[4] = {"abmil", "transmil", "aem", "asmil"};
    for (int h = 0; h < 4; h++) {
        char nm[64], rc[128];
        snprintf(nm, sizeof nm, "synthetic_%s_ce", heads[h]);
        snprintf(rc, sizeof rc, "configs/synthetic_%s_ce.yaml", heads[h]);
        fake_run(runs2, nm, rc, 0, ce, 1);
        snprintf(nm, sizeof nm, "synthetic_%s_ncmi", heads[h]);
        snprintf(rc, sizeof rc, "configs/synthetic_%s_ncmi.yaml", heads[h]);
        fake_run(runs2, nm, rc, 0, nc, 3);
    }
    st = test_ncmi(&out, "report table3 --runs %s --out %s", runs2, test_tmp_path("t3out/syn"));
    EXPECT(st == 0 && out && strstr(out, "# Table III: synthetic") &&
               strstr(out, "| ASMIL | NCMI-LP | 0.567 | 0.892 | - | - | - | - | 1 | 0 |"),
           "exit %d:\n%s", st, out ? out : "");
    free(out);
    st = test_ncmi(&out, "report table3");
    EXPECT(st == 1 && out && strstr(out, "--runs"), "usage: exit %d: %s", st, out ? out : "");
    free(out);
    st = test_ncmi(&out, "report table3 --runs %s", test_tmp_path("t3out"));
    EXPECT(st == 2 && out && strstr(out, "no run folder"), "empty: exit %d: %s", st, out ? out : "");
    free(out);
}

/* ------------------------------------------------------------------ */
/* kill -9 and rerun                                                   */

/* The kill tests' cohort: 16 slides of 1600 x 1200 px (8 train / 4 val / 4
 * test) generated, tiled, encoded and trained (abmil and transmil, CE and
 * NCMI) without interruption in <tmp>/<name>/w, timed, then moved aside to
 * <name>/ref (and the slides to <name>/slides_ref). The cohort command line
 * of a stage is printf(k->base, stage). 0 when ready (a failure or skip has
 * been recorded otherwise). */
typedef struct {
    char dir[1024], base[8192];
    double took[4]; /* slides, tile, features, train */
} kill_cohort;

static const char *const kill_stages[4] = {"slides", "tile", "features", "train"};

static int kill_cohort_prepare(kill_cohort *k, const char *name)
{
    const char *ms = fu_make_slides_bin();
    if (!ms) {
        test_skip("build/tools/make_slides not built (make test builds it)");
        return -1;
    }
    char cwd[1024];
    if (!getcwd(cwd, sizeof cwd) || !fu_exists("configs/synthetic_abmil_ce.yaml")) {
        test_skip("run from the repository root (configs/ needed)");
        return -1;
    }
    snprintf(k->dir, sizeof k->dir, "%s", test_tmp_path("%s", name));
    const char *dir = k->dir;
    mkdir(dir, 0777);
    const char *gen = "--cohort --n 16 --width 1600 --height 1200 --seed 5 --quiet";
    char cmd[16384], yaml[16384];
    snprintf(cmd, sizeof cmd, "%s %s --out %s/gen && cp %s/gen/manifest.csv %s/tiny.csv", ms, gen, dir, dir, dir);
    if (test_run(cmd, NULL) != 0) {
        test_fail_at(__FILE__, __LINE__, "make_slides failed");
        return -1;
    }
    snprintf(yaml, sizeof yaml,
             "name: tiny\nmanifest: %s/tiny.csv\nclasses: [negative, itc, micro, macro]\ndata_root: %s/slides\n"
             "generate: %s\n"
             "tile:\n  target_mpp: 2.0\n  patch_size: 64\n  jobs: 2\n"
             "features:\n  encoder: resnet18\n  weights: random:1\n  input_size: 32\n  batch: 16\n"
             "train:\n  recipe: %s/configs/synthetic_{head}_{loss}.yaml\n  heads: [abmil, transmil]\n"
             "  losses: [ce, ncmi]\n  set: [lp.epochs=10]\n",
             dir, dir, gen, cwd);
    snprintf(cmd, sizeof cmd, "%s/tiny.yaml", dir);
    fu_write_text(cmd, yaml);
    snprintf(k->base, sizeof k->base,
             "OMP_NUM_THREADS=2 OMP_WAIT_POLICY=passive %s cohort %%s --dataset %s/tiny.yaml --work %s/w",
             test_ncmi_bin(), dir, dir);
    char *out = NULL;
    /* uninterrupted, timed; then moved aside as the reference */
    for (int s = 0; s < 4; s++) {
        char c1[9000];
        snprintf(c1, sizeof c1, k->base, kill_stages[s]);
        double t0 = fu_now_s();
        int st = test_run(c1, &out);
        k->took[s] = fu_now_s() - t0;
        if (st != 0) {
            test_fail_at(__FILE__, __LINE__, "%s: exit %d: %s", kill_stages[s], st, out ? out : "");
            free(out);
            return -1;
        }
        free(out);
        out = NULL;
    }
    printf("    uninterrupted: slides %.1f s, tile %.1f s, features %.1f s, train %.1f s\n", k->took[0], k->took[1],
           k->took[2], k->took[3]);
    snprintf(cmd, sizeof cmd, "mv %s/w %s/ref && mv %s/slides %s/slides_ref", dir, dir, dir, dir);
    if (test_run(cmd, NULL) != 0) {
        test_fail_at(__FILE__, __LINE__, "mv");
        return -1;
    }
    return 0;
}

/* Stage s of the cohort killed twice at seeded moments (one in the first
 * half of the uninterrupted time, one in the second), then rerun to
 * completion. Returns the number of runs the kill interrupted. */
static int kill_stage_twice(const kill_cohort *k, int s, uint64_t *seed)
{
    char c1[9000];
    snprintf(c1, sizeof c1, k->base, kill_stages[s]);
    int kills = 0;
    for (int t = 0; t < 2; t++) {
        double at = (0.1 + 0.4 * t + 0.4 * fu_splitmix01(seed)) * k->took[s];
        int st;
        int killed = fu_run_and_kill(c1, at, &st);
        EXPECT(killed >= 0, "fork failed");
        kills += killed == 1;
        printf("    %s: %s at %.2f s\n", kill_stages[s], killed ? "killed" : "finished before the kill", at);
        if (!killed) EXPECT(st == 0, "%s exit %d", kill_stages[s], st);
    }
    char *out = NULL;
    int st = test_run(c1, &out);
    EXPECT(st == 0, "%s rerun: exit %d: %s", kill_stages[s], st, out ? out : "");
    free(out);
    return kills;
}

/* every file of the reference (or of its subfolder sub) the same in w; no
 * temporary file left; returns the number compared */
static int kill_compare(const kill_cohort *k, const char *sub)
{
    char ref[8192], w[8192], first[512];
    snprintf(ref, sizeof ref, "%s/ref%s%s", k->dir, sub ? "/" : "", sub ? sub : "");
    snprintf(w, sizeof w, "%s/w%s%s", k->dir, sub ? "/" : "", sub ? sub : "");
    int n = 0, bad = fu_tree_compare(ref, w, NULL, &n, first, sizeof first);
    EXPECT(n > 0 && bad == 0, "%s: %d of %d files differ from the uninterrupted run (first: %s)", sub ? sub : "w", bad,
           n, first);
    int tmp = fu_tree_count_tmp(w, first, sizeof first);
    EXPECT(tmp == 0, "%d temporary files left in %s (first: %s)", tmp, w, first);
    return n;
}

TEST(cohort_kill9_and_rerun_identical)
{
    kill_cohort k;
    if (kill_cohort_prepare(&k, "kill") != 0) return;
    const char *dir = k.dir;
    /* killed at seeded moments, twice per stage, rerun until done */
    uint64_t seed = 20240611;
    int kills = 0;
    for (int s = 0; s < 4; s++) kills += kill_stage_twice(&k, s, &seed);
    EXPECT(kills >= 4, "only %d of 8 kills interrupted a stage", kills);
    /* byte for byte */
    char first[512];
    int n = kill_compare(&k, NULL);
    printf("    %d files compared with the uninterrupted run\n", n);
    EXPECT(n > 16 * 4 + 4 * 6, "only %d files compared", n);
    char a[8192], b[8192];
    snprintf(a, sizeof a, "%s/slides_ref", dir);
    snprintf(b, sizeof b, "%s/slides", dir);
    int bad = fu_tree_compare(a, b, NULL, &n, first, sizeof first);
    EXPECT(n == 18 && bad == 0, "generated slides: %d of %d differ (first: %s)", bad, n, first);

    /* incremental: nothing to redo; a newer features file restarts the runs that read it */
    char c2[9000], cmd[16384], *out = NULL;
    snprintf(c2, sizeof c2, k.base, "tile");
    int st = test_run(c2, &out);
    EXPECT(st == 0 && out && strstr(out, "0 ok, 16 skipped"), "tile rerun: %s", out ? out : "");
    free(out);
    snprintf(c2, sizeof c2, k.base, "train");
    st = test_run(c2, &out);
    EXPECT(st == 0 && out && strstr(out, "0 trained, 4 up to date"), "train rerun: %s", out ? out : "");
    free(out);
    snprintf(cmd, sizeof cmd, "%s --head abmil --loss ce --set optim.lr=1.0e-3", c2);
    st = test_run(cmd, &out);
    EXPECT(st == 0 && out && strstr(out, "tiny_abmil_ce: config changed (optim.lr): started over"), "config change: %s",
           out ? out : "");
    free(out);
    snprintf(cmd, sizeof cmd, "sleep 0.02; touch %s/w/features/synth_000.h5 && %s --head transmil --loss ce", dir, c2);
    st = test_run(cmd, &out);
    EXPECT(st == 0 && out && strstr(out, "tiny_transmil_ce: features changed since it started: started over"),
           "features change: %s", out ? out : "");
    free(out);
    /* eval: everything up to date */
    snprintf(c2, sizeof c2, k.base, "eval");
    st = test_run(c2, &out);
    EXPECT(st == 0 && out && strstr(out, "0 metrics files written, 8 up to date"), "eval: %s", out ? out : "");
    free(out);
}

/* The long version: tile, features and train each killed at 10 seeded
 * moments spread over the uninterrupted run time, one trial at a time (the
 * stage's outputs removed, killed, rerun to completion, its outputs compared
 * byte for byte with the uninterrupted run: coords, contours, previews,
 * feature bags, and for training log.csv, last/best.safetensors,
 * predictions and metrics: a resumed run ends where an uninterrupted one
 * does). */
TEST(long_cohort_kill9_ten_trials_per_stage)
{
    kill_cohort k;
    if (kill_cohort_prepare(&k, "kill10") != 0) return;
    char cmd[16384];
    /* the later stages' inputs are the reference's */
    snprintf(cmd, sizeof cmd, "cp -a %s/ref %s/w && cp -a %s/slides_ref %s/slides", k.dir, k.dir, k.dir, k.dir);
    REQUIRE(test_run(cmd, NULL) == 0, "%s", cmd);
    uint64_t seed = 20261127;
    const char *clear[4] = {NULL, "rm -rf tiles", "rm -rf features features_status.csv encoder_random_*.safetensors",
                            "rm -rf runs"};
    const char *sub[4] = {NULL, "tiles", "features", "runs"};
    int total_kills = 0, total_cmp = 0;
    for (int s = 1; s < 4; s++) {
        int kills = 0;
        for (int t = 0; t < 10; t++) {
            /* one trial at a time: trial t's moment in the t-th tenth */
            uint64_t sd = seed + (uint64_t)(100 * s + t);
            char c1[9000], c0[9000];
            snprintf(c1, sizeof c1, k.base, kill_stages[s]);
            snprintf(c0, sizeof c0, "cd %s/w && %s", k.dir, clear[s]);
            const double frac = 0.05 + 0.9 * ((double)t + fu_splitmix01(&sd)) / 10.0;
            /* the stage's length was measured once, maybe on a busier machine:
             * a run that finishes before its kill gives a new (shorter) length
             * and the trial is redone from scratch at the same fraction of it,
             * up to three times, so that each trial is a real interruption */
            int st = 0, killed = 0;
            double at = frac * k.took[s];
            for (int attempt = 0; attempt < 3; attempt++) {
                EXPECT(test_run(c0, NULL) == 0, "%s", c0);
                at = frac * k.took[s];
                const double t0 = fu_now_s();
                killed = fu_run_and_kill(c1, at, &st);
                REQUIRE(killed >= 0, "fork failed");
                if (killed) break;
                EXPECT(st == 0, "%s exit %d", kill_stages[s], st);
                const double ran = fu_now_s() - t0;
                if (ran < k.took[s]) k.took[s] = ran;
            }
            kills += killed == 1;
            char *out = NULL;
            st = test_run(c1, &out);
            EXPECT(st == 0, "%s rerun: exit %d: %s", kill_stages[s], st, out ? out : "");
            free(out);
            int n = kill_compare(&k, sub[s]);
            total_cmp += n;
            printf("    %s trial %d: %s at %.2f s; rerun: %d files compared\n", kill_stages[s], t + 1,
                   killed ? "killed" : "finished before the kill", at, n);
        }
        EXPECT(kills >= 7, "%s: only %d of 10 kills interrupted the stage", kill_stages[s], kills);
        total_kills += kills;
    }
    printf("    %d of 30 kills interrupted a stage; %d file comparisons, all identical: %s\n", total_kills, total_cmp,
           test_failed() ? "no" : "yes");
}

/* ------------------------------------------------------------------ */
/* make table3 DATASET=synthetic, reduced, as CI runs it (tools/ci_table3.sh):
 * slides generated, tiled, encoded, 4 heads x {CE, NCMI} trained, the table
 * written, and every head's CE, NCMI-LP and NCMI-CC macro-F1 >= 0.4 (chance
 * 0.25). Uses the binaries under test (BUILD = the folder of NCMI_BIN). */
TEST(cohort_table3_synthetic_make_target)
{
    if (system("command -v make >/dev/null 2>&1") != 0) SKIP("make absent");
    char build[1024], cmd[4096], *out = NULL;
    snprintf(build, sizeof build, "%s", test_ncmi_bin());
    char *slash = strrchr(build, '/');
    if (slash)
        *slash = 0;
    else
        snprintf(build, sizeof build, ".");
    snprintf(cmd, sizeof cmd,
             "BUILD='%s' NO_BUILD=1 WORK='%s/table3_work' REPORTS='%s/table3_reports' bash tools/ci_table3.sh",
             build, test_tmpdir(), test_tmpdir());
    int rc = test_run(cmd, &out);
    const char *ok = out ? strstr(out, "test-cohort: ok") : NULL;
    if (ok) printf("    %.*s\n", (int)strcspn(ok, "\n"), ok);
    EXPECT(rc == 0 && ok, "tools/ci_table3.sh: exit %d\n%s", rc, out ? out : "");
    char md[2048];
    snprintf(md, sizeof md, "%s/table3_reports/table3_synthetic.md", test_tmpdir());
    EXPECT(access(md, R_OK) == 0, "%s not written", md);
    free(out);
}
