/* make_slides: write a cohort of synthetic slides (tiler/synth_slide.h) and
 * a manifest for benchmarks and end-to-end tests.
 *
 * Cohort mode (--cohort): a CAMELYON-like labelled cohort, deterministic by
 * --seed: classes by the radius of an inserted tumour region of its own
 * texture (default negative: none, itc: 45-65 um, micro: 100-150 um, macro:
 * 220-320 um, as --class-um 0,45:65,100:150,220:320: CAMELYON's classes
 * scaled to 2.4 x 1.8 mm slides), slide i of class i mod C; a split per class (--splits train,val,test fractions, default
 * 0.5,0.25,0.25, in slide order); pen-mark strokes on a seeded share of the
 * slides whatever their class (--pen-fraction, default 0.3; 1-3 strokes);
 * optionally the texture of a real H&E slide (--texture SLIDE
 * [--texture-mpp X]). The manifest is then slide_id,case_id,label,split,
 * rel_path,path (rel_path = path = the file name: DIR is the DATA_ROOT) and
 * truth.csv adds tumour_area_um2, pen, pen_x,pen_y,pen_w,pen_h.
 *
 *   build/tools/make_slides --out DIR [--n 4] [--width 40000] [--height 30000]
 *       [--mpp 0.25] [--seed 1] [--labels tumor,normal] [--pieces 3] [--holes 2]
 *       [--quality 90] [--no-resolution] [--empty-mpp] [--corrupt-first]
 *       [--tumour-um R] [--quiet]
 *
 * Writes DIR/slide_000.tif ... , DIR/manifest.csv (slide_id,label,path,mpp;
 * path relative to DIR; mpp empty with --empty-mpp, so the slide's own
 * resolution is used) and DIR/truth.csv (slide_id,width,height,mpp,
 * tissue_area_px2,tissue_fraction,corrupt_x,corrupt_y,corrupt_w,corrupt_h,
 * tumour_cx,tumour_cy,tumour_r). Labels cycle through --labels. With
 * --tumour-um R the slides labelled "tumor" or "tumour" get a tumour disk of
 * radius R µm (its own texture) in their first tissue piece; its centre and
 * radius (level-0 px) are in truth.csv (empty for the others). Slide i uses seed + i. Exit 0, 1 usage, 2 error. */
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../nn/error.h"
#include "../tiler/synth_slide.h"
#include "../nn/tmpfile.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: make_slides --out DIR [--n N] [--width W] [--height H] [--mpp M] [--seed S]\n"
               "                   [--labels a,b,...] [--pieces K] [--holes K] [--quality Q]\n"
               "                   [--no-resolution] [--empty-mpp] [--corrupt-first] [--tumour-um R]\n"
               "                   [--quiet]\n"
               "       make_slides --cohort --out DIR [--n 96] [--seed 1] [--width 2400] [--height 1800]\n"
               "                   [--mpp 1] [--pieces 3] [--holes 1] [--classes negative,itc,micro,macro]\n"
               "                   [--class-um 0,45:65,100:150,220:320]\n"
               "                   [--splits 0.5,0.25,0.25] [--pen-fraction 0.3] [--texture SLIDE\n"
               "                   [--texture-mpp X]] [--prefix synth_] [--quiet]\n");
}


static int parse_i64(const char *s, long long *v)
{
    char *e;
    errno = 0;
    *v = strtoll(s, &e, 10);
    return errno || e == s || *e;
}

static int mkdir_p(const char *path)
{
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *q = buf + 1; *q; q++)
        if (*q == '/') {
            *q = 0;
            if (mkdir(buf, 0777) && errno != EEXIST) return -1;
            *q = '/';
        }
    return mkdir(buf, 0777) && errno != EEXIST ? -1 : 0;
}

static double elapsed(const struct timespec *t0)
{
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (double)(t1.tv_sec - t0->tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0->tv_nsec);
}

/* uniform in [0, 1) (splitmix64) */
static double draw(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return (double)((z ^ (z >> 31)) >> 11) * (1.0 / 9007199254740992.0);
}

/* --cohort: see the header comment. */
#define MAX_CLASSES 16
static int cohort_main(int argc, char **argv)
{
    const char *out = NULL, *classes = "negative,itc,micro,macro", *class_um = "0,45:65,100:150,220:320";
    const char *splits = "0.5,0.25,0.25", *texture = NULL, *prefix = "synth_";
    double pen_fraction = 0.3, texture_mpp = 0;
    long long n = 96;
    int quiet = 0;
    tl_synth_params p;
    tl_synth_params_default(&p);
    p.width = 2400;
    p.height = 1800;
    p.mpp = 1.0;
    p.n_holes = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        long long x;
        int need = 1, bad = 0;
        char *e = NULL;
        if (!strcmp(a, "--out") && v) out = v;
        else if (!strcmp(a, "--classes") && v) classes = v;
        else if (!strcmp(a, "--class-um") && v) class_um = v;
        else if (!strcmp(a, "--splits") && v) splits = v;
        else if (!strcmp(a, "--texture") && v) texture = v;
        else if (!strcmp(a, "--prefix") && v) prefix = v;
        else if (!strcmp(a, "--n") && v) bad = parse_i64(v, &n) || n < 1 || n > 100000;
        else if (!strcmp(a, "--width") && v) bad = parse_i64(v, &x) || (p.width = x) < 16;
        else if (!strcmp(a, "--height") && v) bad = parse_i64(v, &x) || (p.height = x) < 16;
        else if (!strcmp(a, "--seed") && v) bad = parse_i64(v, &x) || (p.seed = (uint64_t)x, 0);
        else if (!strcmp(a, "--pieces") && v) bad = parse_i64(v, &x) || (p.n_pieces = (int)x) < 1;
        else if (!strcmp(a, "--holes") && v) bad = parse_i64(v, &x) || (p.n_holes = (int)x) < 0;
        else if (!strcmp(a, "--quality") && v) bad = parse_i64(v, &x) || (p.quality = (int)x) < 1;
        else if (!strcmp(a, "--mpp") && v) bad = (p.mpp = strtod(v, &e), e == v || *e || !(p.mpp > 0));
        else if (!strcmp(a, "--pen-fraction") && v)
            bad = (pen_fraction = strtod(v, &e), e == v || *e || !(pen_fraction >= 0 && pen_fraction <= 1));
        else if (!strcmp(a, "--texture-mpp") && v)
            bad = (texture_mpp = strtod(v, &e), e == v || *e || !(texture_mpp > 0));
        else {
            need = 0;
            if (!strcmp(a, "--cohort")) continue;
            if (!strcmp(a, "--quiet")) quiet = 1;
            else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
                usage(stdout);
                return 0;
            } else {
                fprintf(stderr, "make_slides: --cohort: unknown or incomplete option '%s'\n", a);
                usage(stderr);
                return 1;
            }
        }
        if (bad) {
            fprintf(stderr, "make_slides: bad value '%s' for %s\n", v, a);
            return 1;
        }
        i += need;
    }
    if (!out) {
        usage(stderr);
        return 1;
    }
    /* classes and their tumour radius ranges (um) */
    char cbuf[1024], ubuf[1024], sbuf[256];
    snprintf(cbuf, sizeof cbuf, "%s", classes);
    snprintf(ubuf, sizeof ubuf, "%s", class_um);
    snprintf(sbuf, sizeof sbuf, "%s", splits);
    char *cv[MAX_CLASSES];
    double rlo[MAX_CLASSES], rhi[MAX_CLASSES], frac[3] = {0, 0, 0};
    int nc = 0, nu = 0, nf = 0;
    for (char *t = strtok(cbuf, ","); t; t = strtok(NULL, ",")) {
        if (nc == MAX_CLASSES || !*t) {
            fprintf(stderr, "make_slides: --classes: 1 to %d non-empty names\n", MAX_CLASSES);
            return 1;
        }
        cv[nc++] = t;
    }
    for (char *t = strtok(ubuf, ","); t; t = strtok(NULL, ",")) {
        char *e;
        if (nu == MAX_CLASSES) break;
        rlo[nu] = strtod(t, &e);
        rhi[nu] = rlo[nu];
        if (*e == ':') rhi[nu] = strtod(e + 1, &e);
        if (*e || !(rlo[nu] >= 0) || rhi[nu] < rlo[nu]) {
            fprintf(stderr, "make_slides: --class-um: bad range '%s' (R or LO:HI, um, >= 0)\n", t);
            return 1;
        }
        nu++;
    }
    for (char *t = strtok(sbuf, ","); t; t = strtok(NULL, ",")) {
        char *e;
        if (nf == 3) {
            nf = 4;
            break;
        }
        frac[nf] = strtod(t, &e);
        if (*e || !(frac[nf] >= 0)) nf = 5;
        nf++;
    }
    if (!nc || nu != nc) {
        fprintf(stderr, "make_slides: --class-um gives %d ranges for %d classes\n", nu, nc);
        return 1;
    }
    if (nf != 3 || fabs(frac[0] + frac[1] + frac[2] - 1) > 1e-6) {
        fprintf(stderr, "make_slides: --splits: three fractions train,val,test summing to 1\n");
        return 1;
    }
    if (mkdir_p(out)) {
        fprintf(stderr, "make_slides: %s: cannot create: %s\n", out, strerror(errno));
        return 2;
    }
    /* temporary files of an interrupted run (slides and tables are written
       under <name>.tmp.<pid> and renamed) */
    DIR *dd = opendir(out);
    for (struct dirent *e; dd && (e = readdir(dd)) != NULL;) {
        if (strncmp(e->d_name, prefix, strlen(prefix)) && strncmp(e->d_name, "manifest.csv", 12) &&
            strncmp(e->d_name, "truth.csv", 9))
            continue;
        if (!strstr(e->d_name, ".tmp.")) continue;
        char tp[4400];
        snprintf(tp, sizeof tp, "%s/%s", out, e->d_name);
        unlink(tp);
    }
    if (dd) closedir(dd);
    tl_synth_texture tex;
    memset(&tex, 0, sizeof tex);
    if (texture) {
        if (tl_synth_texture_load(texture, texture_mpp, p.mpp, &tex)) {
            fprintf(stderr, "make_slides: %s\n", ncmi_error());
            return 2;
        }
        if (!quiet)
            fprintf(stderr, "make_slides: texture %s: %dx%d px at %g um/px, windows of %d px (tissue %.0f%%, %.0f%%)\n",
                    texture, tex.w, tex.h, p.mpp, tex.win, 100 * tex.tissue[0], 100 * tex.tissue[1]);
        p.texture = &tex;
    }
    /* per class: how many slides, and the split of the j-th slide of a class */
    long long per[MAX_CLASSES] = {0};
    for (long long i = 0; i < n; i++) per[i % nc]++;
    size_t cap = 256 + (size_t)n * 160, cap2 = 512 + (size_t)n * 260;
    char *man = malloc(cap), *tru = malloc(cap2);
    if (!man || !tru) {
        fprintf(stderr, "make_slides: out of memory\n");
        return 2;
    }
    size_t ml = (size_t)snprintf(man, cap, "slide_id,case_id,label,split,rel_path,path\n");
    size_t tl = (size_t)snprintf(tru, cap2, "slide_id,label,width,height,mpp,tissue_area_px2,tissue_fraction,"
                                            "tumour_cx,tumour_cy,tumour_r,tumour_area_um2,pen,pen_x,pen_y,pen_w,pen_h\n");
    uint64_t seed0 = p.seed;
    int rc = 0;
    struct timespec t_all;
    clock_gettime(CLOCK_MONOTONIC, &t_all);
    for (long long i = 0; i < n && !rc; i++) {
        int c = (int)(i % nc);
        long long j = i / nc, nt = llround(frac[0] * per[c]), nv = llround(frac[1] * per[c]);
        const char *split = j < nt ? "train" : j < nt + nv ? "val" : "test";
        char id[256], path[4400];
        snprintf(id, sizeof id, "%s%03lld", prefix, i);
        snprintf(path, sizeof path, "%s/%s.tif", out, id);
        tl_synth_params q = p;
        q.seed = seed0 * 1000003ull + (uint64_t)i;
        /* the slide's own draws: tumour radius and piece, pen marks */
        uint64_t st = q.seed * 0x9E3779B97F4A7C15ull + 31;
        double u1 = draw(&st), u2 = draw(&st), u3 = draw(&st), u4 = draw(&st);
        q.tumour_um = rhi[c] > 0 ? rlo[c] + (rhi[c] - rlo[c]) * u1 : 0;
        q.tumour_piece = (int)(u2 * q.n_pieces) % q.n_pieces;
        q.n_pen = u3 < pen_fraction ? 1 + (int)(u4 * 3) % 3 : 0;
        tl_synth_truth t;
        struct timespec t0;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        /* at least half of the tumour disk on tissue (not in a hole, not off the edge of a
           piece): other pieces, then other geometry seeds, deterministically */
        for (int attempt = 1; q.tumour_um > 0 && attempt < 32; attempt++) {
            if (tl_synth_truth_compute(&q, &t)) {
                fprintf(stderr, "make_slides: %s\n", ncmi_error());
                rc = 2;
                break;
            }
            double r = q.tumour_um / q.mpp, need = 0.5 * M_PI * r * r;
            int ok = t.tumour_area >= need;
            tl_synth_truth_free(&t);
            if (ok) break;
            q.tumour_piece = (q.tumour_piece + 1) % q.n_pieces;
            if (attempt % q.n_pieces == 0) q.seed += 7919;
        }
        if (rc) break;
        if (tl_synth_slide_write(path, &q, &t)) {
            fprintf(stderr, "make_slides: %s\n", ncmi_error());
            rc = 2;
            break;
        }
        if (!quiet)
            fprintf(stderr, "make_slides: %s %s (%s), tumour r %.0f um, %d pen stroke(s), %.1f s\n", path, cv[c], split,
                    q.tumour_um, q.n_pen, elapsed(&t0));
        ml += (size_t)snprintf(man + ml, cap - ml, "%s,%s,%s,%s,%s.tif,%s.tif\n", id, id, cv[c], split, id, id);
        char tum[160] = ",,,0";
        if (t.has_tumour)
            snprintf(tum, sizeof tum, "%.1f,%.1f,%.1f,%.0f", t.tumour_cx, t.tumour_cy, t.tumour_r,
                     t.tumour_area * q.mpp * q.mpp);
        tl += (size_t)snprintf(tru + tl, cap2 - tl, "%s,%s,%lld,%lld,%.6g,%.0f,%.6f,%s,%d,%lld,%lld,%lld,%lld\n", id,
                               cv[c], (long long)q.width, (long long)q.height, q.mpp, t.tissue_area,
                               t.tissue_fraction, tum, t.n_pen, (long long)t.pen_rect[0], (long long)t.pen_rect[1],
                               (long long)t.pen_rect[2], (long long)t.pen_rect[3]);
        tl_synth_truth_free(&t);
    }
    if (!rc) {
        char mp[4200], tp[4200];
        snprintf(mp, sizeof mp, "%s/manifest.csv", out);
        snprintf(tp, sizeof tp, "%s/truth.csv", out);
        /* truth first: the manifest, written last, says the cohort is complete */
        if (ncmi_write_text_atomic(tp, tru, strlen(tru), 0) || ncmi_write_text_atomic(mp, man, strlen(man), 0)) {
            fprintf(stderr, "make_slides: %s\n", ncmi_error());
            rc = 2;
        } else if (!quiet) {
            fprintf(stderr, "make_slides: %lld slides in %s (%.1f s): %s\n", n, out, elapsed(&t_all), mp);
        }
    }
    free(man);
    free(tru);
    tl_synth_texture_free(&tex);
    return rc;
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--cohort")) return cohort_main(argc, argv);
    const char *out = NULL, *labels = "tumor,normal";
    long long n = 4;
    int empty_mpp = 0, corrupt_first = 0, quiet = 0;
    double tumour_um = 0;
    tl_synth_params p;
    tl_synth_params_default(&p);
    p.width = 40000;
    p.height = 30000;
    p.mpp = 0.25;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        long long x;
        int need = 1, bad = 0;
        if (!strcmp(a, "--out") && v) out = v;
        else if (!strcmp(a, "--labels") && v) labels = v;
        else if (!strcmp(a, "--n") && v) bad = parse_i64(v, &n) || n < 1 || n > 100000;
        else if (!strcmp(a, "--width") && v) bad = parse_i64(v, &x) || (p.width = x) < 16;
        else if (!strcmp(a, "--height") && v) bad = parse_i64(v, &x) || (p.height = x) < 16;
        else if (!strcmp(a, "--seed") && v) bad = parse_i64(v, &x) || (p.seed = (uint64_t)x, 0);
        else if (!strcmp(a, "--pieces") && v) bad = parse_i64(v, &x) || (p.n_pieces = (int)x) < 1;
        else if (!strcmp(a, "--holes") && v) bad = parse_i64(v, &x) || (p.n_holes = (int)x) < 0;
        else if (!strcmp(a, "--quality") && v) bad = parse_i64(v, &x) || (p.quality = (int)x) < 1;
        else if (!strcmp(a, "--mpp") && v) {
            char *e;
            p.mpp = strtod(v, &e);
            bad = e == v || *e || !(p.mpp > 0);
        } else if (!strcmp(a, "--tumour-um") && v) {
            char *e;
            tumour_um = strtod(v, &e);
            bad = e == v || *e || !(tumour_um >= 0);
        } else {
            need = 0;
            if (!strcmp(a, "--no-resolution")) p.no_resolution = 1;
            else if (!strcmp(a, "--empty-mpp")) empty_mpp = 1;
            else if (!strcmp(a, "--corrupt-first")) corrupt_first = 1;
            else if (!strcmp(a, "--quiet")) quiet = 1;
            else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
                usage(stdout);
                return 0;
            } else {
                fprintf(stderr, "make_slides: unknown or incomplete option '%s'\n", a);
                usage(stderr);
                return 1;
            }
        }
        if (bad) {
            fprintf(stderr, "make_slides: bad value '%s' for %s\n", v, a);
            return 1;
        }
        i += need;
    }
    if (!out) {
        usage(stderr);
        return 1;
    }
    if (mkdir(out, 0777) && errno != EEXIST) {
        fprintf(stderr, "make_slides: %s: cannot create: %s\n", out, strerror(errno));
        return 2;
    }
    /* labels */
    char *lab = strdup(labels);
    char *lv[64];
    int nl = 0;
    for (char *t = strtok(lab, ","); t && nl < 64; t = strtok(NULL, ",")) lv[nl++] = t;
    if (!nl) {
        fprintf(stderr, "make_slides: --labels is empty\n");
        free(lab);
        return 1;
    }
    size_t cap = 256 + (size_t)n * 128, cap2 = 256 + (size_t)n * 200;
    char *man = malloc(cap), *tru = malloc(cap2);
    size_t ml = (size_t)snprintf(man, cap, "slide_id,label,path,mpp\n");
    size_t tl = (size_t)snprintf(tru, cap2, "slide_id,width,height,mpp,tissue_area_px2,tissue_fraction,"
                                            "corrupt_x,corrupt_y,corrupt_w,corrupt_h,tumour_cx,tumour_cy,tumour_r\n");
    uint64_t seed0 = p.seed;
    for (long long i = 0; i < n; i++) {
        char id[64], path[4096];
        snprintf(id, sizeof id, "slide_%03lld", i);
        snprintf(path, sizeof path, "%s/%s.tif", out, id);
        tl_synth_params q = p;
        q.seed = seed0 + (uint64_t)i;
        q.corrupt_tile = corrupt_first && i == 0;
        const char *label = lv[i % nl];
        if (tumour_um > 0 && (!strcmp(label, "tumor") || !strcmp(label, "tumour"))) q.tumour_um = tumour_um;
        tl_synth_truth t;
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        if (tl_synth_slide_write(path, &q, &t)) {
            fprintf(stderr, "make_slides: %s\n", ncmi_error());
            free(man);
            free(tru);
            free(lab);
            return 2;
        }
        clock_gettime(CLOCK_MONOTONIC, &t1);
        if (!quiet)
            fprintf(stderr, "make_slides: %s %lldx%lld at %g µm/px, tissue %.1f%%, %.1f s\n", path,
                    (long long)q.width, (long long)q.height, q.mpp, 100 * t.tissue_fraction,
                    (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec));
        char mpp[32] = "";
        if (!empty_mpp) snprintf(mpp, sizeof mpp, "%.6g", q.mpp);
        ml += (size_t)snprintf(man + ml, cap - ml, "%s,%s,%s.tif,%s\n", id, label, id, mpp);
        char tum[128] = ",,";
        if (t.has_tumour) snprintf(tum, sizeof tum, "%.1f,%.1f,%.1f", t.tumour_cx, t.tumour_cy, t.tumour_r);
        tl += (size_t)snprintf(tru + tl, cap2 - tl, "%s,%lld,%lld,%.6g,%.0f,%.6f,%lld,%lld,%lld,%lld,%s\n", id,
                               (long long)q.width, (long long)q.height, q.mpp, t.tissue_area, t.tissue_fraction,
                               (long long)t.corrupt_rect[0], (long long)t.corrupt_rect[1],
                               (long long)t.corrupt_rect[2], (long long)t.corrupt_rect[3], tum);
        tl_synth_truth_free(&t);
    }
    char mp[4200], tp[4200];
    snprintf(mp, sizeof mp, "%s/manifest.csv", out);
    snprintf(tp, sizeof tp, "%s/truth.csv", out);
    int rc = ncmi_write_text_atomic(mp, man, strlen(man), 0) || ncmi_write_text_atomic(tp, tru, strlen(tru), 0);
    if (rc) fprintf(stderr, "make_slides: %s\n", ncmi_error());
    free(man);
    free(tru);
    free(lab);
    return rc ? 2 : 0;
}
