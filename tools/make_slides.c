/* make_slides: write a cohort of synthetic slides (tiler/synth_slide.h) and
 * a manifest for benchmarks and end-to-end tests.
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
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../nn/error.h"
#include "../tiler/synth_slide.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: make_slides --out DIR [--n N] [--width W] [--height H] [--mpp M] [--seed S]\n"
               "                   [--labels a,b,...] [--pieces K] [--holes K] [--quality Q]\n"
               "                   [--no-resolution] [--empty-mpp] [--corrupt-first] [--tumour-um R]\n"
               "                   [--quiet]\n");
}

static int atomic_write(const char *path, const char *text)
{
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "w");
    if (!f) return ncmi_error_set("%s: cannot create: %s", tmp, strerror(errno));
    int bad = fputs(text, f) < 0;
    if (fclose(f)) bad = 1;
    if (bad || rename(tmp, path)) {
        unlink(tmp);
        return ncmi_error_set("%s: cannot write", path);
    }
    return 0;
}

static int parse_i64(const char *s, long long *v)
{
    char *e;
    errno = 0;
    *v = strtoll(s, &e, 10);
    return errno || e == s || *e;
}

int main(int argc, char **argv)
{
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
    int rc = atomic_write(mp, man) || atomic_write(tp, tru);
    if (rc) fprintf(stderr, "make_slides: %s\n", ncmi_error());
    free(man);
    free(tru);
    free(lab);
    return rc ? 2 : 0;
}
