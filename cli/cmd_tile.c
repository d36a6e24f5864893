/* ncmi tile: cut a cohort of slides into tissue patch grids at an exact
 * physical resolution (tiler/tile.c does one slide).
 *
 * Cohort orchestration:
 *   - slides from --manifest (slide_id, path relative to the manifest, mpp
 *     override) or from the command line (id = file name without extension);
 *   - --shard K/N keeps the slides whose 0-based index i in that list has
 *     i mod N == K-1 (deterministic, balanced, no coordination);
 *   - resume: a slide whose three outputs exist and whose coords file opens
 *     is skipped (outputs are renamed into place, so existing = complete);
 *     otherwise its leftovers are removed and it is redone; --force redoes all;
 *   - --jobs J slides in parallel (pthreads, one OpenSlide handle each);
 *   - status file: tile_status.csv (N = 1) or tile_status.<K>of<N>.csv, one
 *     per shard so several processes never write the same file; rows are
 *     appended as slides finish, and the file is rewritten in slide order
 *     (temporary name + rename) at the end;
 *   - exit 0 when every slide is ok or skipped, 3 when some failed, 2 when
 *     all failed (input error), 1 on usage errors. */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../eval/manifest.h"
#include "../nn/error.h"
#include "../tiler/coords_h5.h"
#include "../tiler/tile.h"
#include "cli.h"

#define CMD "tile"

void ncmi_help_tile(FILE *f)
{
    fprintf(f,
            "usage: ncmi tile (--manifest CSV | SLIDE...) --out DIR [options]\n"
            "\n"
            "Cut slides into grids of tissue patches at an exact physical resolution: tissue\n"
            "segmentation on a low-resolution image, a patch grid in level-0 pixels, and per\n"
            "slide (each written to a temporary name, then renamed):\n"
            "  DIR/patches/<slide_id>.h5        coords int64 [N,2] + CLAM/TRIDENT attributes\n"
            "  DIR/contours/<slide_id>.geojson  tissue polygons with holes (QuPath)\n"
            "  DIR/previews/<slide_id>.png      thumbnail, tissue outline and patch grid\n"
            "  DIR/tile_status.csv              slide_id,status,n_patches,mpp,level,\n"
            "                                   patch_size_level0,seconds,error\n"
            "\n"
            "slides:\n"
            "  --manifest CSV       slide_id + path (relative to the manifest) [+ mpp override]\n"
            "  SLIDE...             slide files; slide_id = file name without its extension\n"
            "  --slide-mpp X        level-0 um/px for slides without their own (manifest mpp\n"
            "                       column wins; with SLIDE... it replaces the slides' own)\n"
            "\n"
            "resolution and grid:\n"
            "  --target-mpp X       patch resolution in um/px (default 0.5)\n"
            "  --mag M              same as --target-mpp 10/M (20x = 0.5 um/px, 40x = 0.25)\n"
            "  --patch-size N       patch side at the target resolution (default 256)\n"
            "  --overlap N          overlap between neighbours, same units (default 0)\n"
            "  --grid KIND          contour (CLAM: a grid per tissue contour, default) or\n"
            "                       global (TRIDENT: one grid from (0,0), --min-tissue)\n"
            "  --contour-check C    four_pt (default) | four_pt_hard | center (contour grid)\n"
            "  --min-tissue F       global grid: minimum tissue fraction of a patch (0.25)\n"
            "\n"
            "segmentation:\n"
            "  --preset NAME        default (Otsu, keeps small biopsies) | clam-default |\n"
            "                       tcga | biopsy | resection (CLAM's presets)\n"
            "  --seg otsu|saturation  Otsu or the preset's fixed saturation threshold\n"
            "  --seg-mpp X          resolution of the segmentation image (default 8 um/px;\n"
            "                       coarser for slides over 4096 px at that resolution)\n"
            "\n"
            "run:\n"
            "  --shard K/N          only slides whose index i (0-based, list order) has\n"
            "                       i mod N == K-1; status in tile_status.<K>of<N>.csv\n"
            "  --jobs J             slides in parallel (default 1)\n"
            "  --force              redo slides whose outputs exist (default: skip them)\n"
            "  -h, --help           this help\n"
            "\n"
            "Progress on a terminal: slides done/total, patches, rate, ETA (stderr); one line\n"
            "per slide otherwise. docs/tiling.md explains the choices.\n"
            "Exit codes: 0 all slides ok or skipped, 1 usage error, 2 every slide failed or\n"
            "bad manifest, 3 some slides failed (listed in the status file).\n");
}

/* ------------------------------------------------------------------ */

typedef enum { ST_PENDING = 0, ST_OK, ST_FAILED, ST_SKIPPED } slide_status;
static const char *status_name[] = {"pending", "ok", "failed", "skipped"};

typedef struct item {
    char *id, *path;  /* path NULL: the manifest row has none */
    double mpp;       /* override, 0 = none */
    slide_status st;
    size_t n_patches;
    double mpp_used;
    int level;
    int64_t patch0;
    double seconds;
    char msg[1024];
} item;

typedef struct run_ctx {
    const char *out;
    tl_tile_params params;
    int force;
    item *items;   /* this shard's slides */
    int n;
    int next;      /* next index to take */
    int done, n_ok, n_failed, n_skipped;
    size_t patches;
    double t0;
    int tty;
    int profile;   /* NCMI_TILE_PROFILE=1: per-slide phase times on stderr */
    FILE *status;  /* live status file (rows as slides finish) */
    pthread_mutex_t mu;
} run_ctx;

static void status_row(FILE *f, const item *it)
{
    cli_csv_field(f, it->id);
    fprintf(f, ",%s,", status_name[it->st]);
    if (it->st == ST_FAILED)
        fputs(",,,,", f);
    else
        fprintf(f, "%zu,%.6g,%d,%lld,", it->n_patches, it->mpp_used, it->level, (long long)it->patch0);
    fprintf(f, "%.3f,", it->seconds);
    cli_csv_field(f, it->msg);
    fputc('\n', f);
}

static void status_row_i(FILE *f, int i, void *items) { status_row(f, &((const item *)items)[i]); }

static const char *status_header = "slide_id,status,n_patches,mpp,level,patch_size_level0,seconds,error\n";

static void fmt_eta(char *buf, size_t n, double s)
{
    if (!isfinite(s) || s < 0) {
        snprintf(buf, n, "?");
        return;
    }
    long t = (long)(s + 0.5);
    if (t >= 3600)
        snprintf(buf, n, "%ldh%02ldm", t / 3600, (t / 60) % 60);
    else if (t >= 60)
        snprintf(buf, n, "%ldm%02lds", t / 60, t % 60);
    else
        snprintf(buf, n, "%lds", t);
}

/* under ctx->mu */
static void report(run_ctx *c, const item *it)
{
    if (c->status) {
        status_row(c->status, it);
        fflush(c->status);
    }
    double el = cli_now() - c->t0;
    if (c->tty) {
        if (it->st == ST_FAILED)
            fprintf(stderr, "\r\033[Kncmi: tile: %s: failed: %s\n", it->id, it->msg);
        double rate = el > 0 ? c->done / el : 0;
        char eta[32];
        fmt_eta(eta, sizeof eta, rate > 0 ? (c->n - c->done) / rate : NAN);
        fprintf(stderr, "\r\033[Ktile: %d/%d slides (%d failed), %zu patches, %.2f slides/s, ETA %s",
                c->done, c->n, c->n_failed, c->patches, rate, eta);
        if (c->done == c->n) fputc('\n', stderr);
        fflush(stderr);
    } else {
        if (it->st == ST_FAILED)
            fprintf(stderr, "ncmi: tile: [%d/%d] %s: failed: %s\n", c->done, c->n, it->id, it->msg);
        else
            fprintf(stderr, "ncmi: tile: [%d/%d] %s: %s, %zu patches (level %d, %lld px at level 0), %.2f s%s%s\n",
                    c->done, c->n, it->id, status_name[it->st], it->n_patches, it->level,
                    (long long)it->patch0, it->seconds, it->msg[0] ? ": " : "", it->msg);
    }
}

static void do_slide(run_ctx *c, item *it)
{
    double t = cli_now();
    it->level = -1;
    if (!it->path) {
        it->st = ST_FAILED;
        snprintf(it->msg, sizeof it->msg, "no slide path in the manifest row (column 'path')");
        goto out;
    }
    if (!c->force && tl_tile_outputs_complete(c->out, it->id)) {
        char h5[4096], name[256];
        tl_tile_output_path(h5, sizeof h5, c->out, "patches", it->id);
        int64_t *coords = NULL;
        size_t n = 0;
        tl_coords_attrs a;
        memset(&a, 0, sizeof a);
        if (tl_coords_h5_read(h5, &coords, &n, &a, name, sizeof name) == 0) {
            free(coords);
            tl_tile_remove_outputs(c->out, it->id, 0); /* temporary leftovers only */
            it->st = ST_SKIPPED;
            it->n_patches = n;
            it->mpp_used = a.level0_mpp;
            it->level = a.patch_level;
            it->patch0 = a.patch_size_level0;
            snprintf(it->msg, sizeof it->msg, "outputs exist (--force redoes them)");
            goto out;
        }
        ncmi_error_clear();
    }
    int removed = tl_tile_remove_outputs(c->out, it->id, 1);
    tl_tile_result r;
    ncmi_error_clear();
    if (tl_tile_slide(it->path, it->id, it->mpp, c->out, &c->params, &r) != 0) {
        it->st = ST_FAILED;
        snprintf(it->msg, sizeof it->msg, "%s", ncmi_error());
        tl_tile_remove_outputs(c->out, it->id, 1); /* no half set of outputs */
        goto out;
    }
    it->st = ST_OK;
    it->n_patches = r.n_patches;
    it->mpp_used = r.mpp;
    it->level = r.level;
    it->patch0 = r.patch_size_level0;
    snprintf(it->msg, sizeof it->msg, "%s", r.note);
    if (c->profile)
        fprintf(stderr, "ncmi: tile: %s: open %.3f s, low-res %.3f s (%.2f um/px), segmentation %.3f s, grid %.3f s, "
                "contours + preview %.3f s, coords %.3f s\n",
                it->id, r.t_open, r.t_lowres, r.seg_mpp, r.t_seg, r.t_grid, r.t_preview, r.t_write);
    (void)removed;
out:
    it->seconds = cli_now() - t;
}

static void *worker(void *arg)
{
    run_ctx *c = arg;
    for (;;) {
        pthread_mutex_lock(&c->mu);
        int i = c->next < c->n ? c->next++ : -1;
        pthread_mutex_unlock(&c->mu);
        if (i < 0) break;
        item *it = &c->items[i];
        do_slide(c, it);
        pthread_mutex_lock(&c->mu);
        c->done++;
        if (it->st == ST_OK) c->n_ok++;
        if (it->st == ST_FAILED) c->n_failed++;
        if (it->st == ST_SKIPPED) c->n_skipped++;
        c->patches += it->n_patches;
        report(c, it);
        pthread_mutex_unlock(&c->mu);
    }
    return NULL;
}

static void items_free(item *items, int n)
{
    for (int i = 0; i < n; i++) {
        free(items[i].id);
        free(items[i].path);
    }
    free(items);
}

int ncmi_cmd_tile(int argc, char **argv)
{
    const char *manifest = NULL, *out = NULL, *preset = "default", *seg = NULL, *grid = NULL,
               *check = NULL, *shard = NULL;
    double target_mpp = 0, mag = 0, slide_mpp = 0, min_tissue = -1, seg_mpp = 0;
    int patch_size = 256, overlap = 0, jobs = 1, force = 0;
    const char **slides = (const char **)calloc((size_t)argc, sizeof *slides);
    int n_slides = 0;
    if (!slides) return NCMI_EXIT_INTERNAL;
    int rc = NCMI_EXIT_USAGE;

#define BAD(...)                                  \
    do {                                          \
        rc = cli_usage_error(CMD, __VA_ARGS__);   \
        goto end_args;                            \
    } while (0)
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = NULL;
        int m;
        if (cli_is_help(a)) {
            ncmi_help_tile(stdout);
            free(slides);
            return NCMI_EXIT_OK;
        }
#define OPT(name) ((m = cli_opt_value(argc, argv, &i, CMD, name, &v)) != 0)
        if (OPT("--manifest")) {
            if (m < 0) goto end_args;
            manifest = v;
        } else if (OPT("--out")) {
            if (m < 0) goto end_args;
            out = v;
        } else if (OPT("--target-mpp")) {
            if (m < 0) goto end_args;
            if (!cli_parse_double(v, &target_mpp) || target_mpp <= 0 || target_mpp > 100)
                BAD("--target-mpp '%s': a resolution in um/px, e.g. 0.5", v);
        } else if (OPT("--mag")) {
            if (m < 0) goto end_args;
            if (!cli_parse_double(v, &mag) || mag <= 0 || mag > 1000) BAD("--mag '%s': a magnification, e.g. 20", v);
        } else if (OPT("--patch-size")) {
            if (m < 0) goto end_args;
            if (!cli_parse_int(v, &patch_size) || patch_size < 8 || patch_size > 65536)
                BAD("--patch-size '%s': pixels, 8 to 65536", v);
        } else if (OPT("--overlap")) {
            if (m < 0) goto end_args;
            if (!cli_parse_int(v, &overlap) || overlap < 0) BAD("--overlap '%s': pixels, >= 0", v);
        } else if (OPT("--preset")) {
            if (m < 0) goto end_args;
            preset = v;
        } else if (OPT("--seg")) {
            if (m < 0) goto end_args;
            if (strcmp(v, "otsu") && strcmp(v, "saturation")) BAD("--seg '%s': otsu or saturation", v);
            seg = v;
        } else if (OPT("--seg-mpp")) {
            if (m < 0) goto end_args;
            if (!cli_parse_double(v, &seg_mpp) || seg_mpp <= 0 || seg_mpp > 1000)
                BAD("--seg-mpp '%s': a resolution in um/px, e.g. 8", v);
        } else if (OPT("--grid")) {
            if (m < 0) goto end_args;
            if (strcmp(v, "contour") && strcmp(v, "global")) BAD("--grid '%s': contour or global", v);
            grid = v;
        } else if (OPT("--contour-check")) {
            if (m < 0) goto end_args;
            if (strcmp(v, "four_pt") && strcmp(v, "four_pt_hard") && strcmp(v, "center"))
                BAD("--contour-check '%s': four_pt, four_pt_hard or center", v);
            check = v;
        } else if (OPT("--min-tissue")) {
            if (m < 0) goto end_args;
            if (!cli_parse_double(v, &min_tissue) || min_tissue < 0 || min_tissue > 1)
                BAD("--min-tissue '%s': a fraction in [0, 1]", v);
        } else if (OPT("--slide-mpp")) {
            if (m < 0) goto end_args;
            if (!cli_parse_double(v, &slide_mpp) || slide_mpp <= 0 || slide_mpp > 100)
                BAD("--slide-mpp '%s': the slides' level-0 um/px, e.g. 0.25", v);
        } else if (OPT("--shard")) {
            if (m < 0) goto end_args;
            shard = v;
        } else if (OPT("--jobs")) {
            if (m < 0) goto end_args;
            if (!cli_parse_int(v, &jobs) || jobs < 1 || jobs > 1024) BAD("--jobs '%s': 1 to 1024", v);
        } else if (!strcmp(a, "--force")) {
            force = 1;
        } else if (a[0] == '-' && a[1]) {
            BAD("unknown option '%s'", a);
        } else {
            slides[n_slides++] = a;
        }
#undef OPT
    }
    if (!out) BAD("--out DIR is required");
    if (strlen(out) > 3000) BAD("--out: path too long");
    if (!manifest && n_slides == 0) BAD("no slides: give --manifest CSV or slide files");
    if (manifest && n_slides) BAD("give either --manifest or slide files, not both ('%s')", slides[0]);
    if (target_mpp > 0 && mag > 0) BAD("give either --target-mpp or --mag, not both");
    if (overlap >= patch_size) BAD("--overlap %d must be smaller than --patch-size %d", overlap, patch_size);
    int shard_k = 1, shard_n = 1;
    if (shard) {
        if (!cli_parse_shard(shard, &shard_k, &shard_n))
            BAD("--shard '%s': K/N with 1 <= K <= N (e.g. 2/8)", shard);
    }
    rc = 0;
end_args:
    if (rc) {
        free(slides);
        return rc;
    }
#undef BAD

    run_ctx c;
    memset(&c, 0, sizeof c);
    c.out = out;
    c.force = force;
    tl_tile_params_default(&c.params);
    if (tl_seg_preset(preset, &c.params.seg) != 0) {
        rc = cli_usage_error(CMD, "--preset: %s", ncmi_error());
        free(slides);
        return rc;
    }
    snprintf(c.params.preset, sizeof c.params.preset, "%s", preset);
    /* otsu keeps a preset's Otsu variant (the default floors Otsu at sthresh) */
    if (seg) c.params.seg.use_otsu = strcmp(seg, "otsu") ? 0 : c.params.seg.use_otsu ? c.params.seg.use_otsu : 1;
    c.params.target_mpp = target_mpp > 0 ? target_mpp : mag > 0 ? 10.0 / mag : 0.5;
    c.params.patch_size = patch_size;
    c.params.overlap = overlap;
    if (grid) c.params.grid = !strcmp(grid, "global") ? TL_GRID_GLOBAL : TL_GRID_CONTOUR;
    if (check)
        c.params.check = !strcmp(check, "four_pt") ? TL_CHECK_FOUR_PT
                         : !strcmp(check, "center") ? TL_CHECK_CENTER
                                                    : TL_CHECK_FOUR_PT_HARD;
    if (min_tissue >= 0) c.params.min_tissue = min_tissue;
    if (seg_mpp > 0) c.params.seg_mpp = seg_mpp;

    /* the slide list, then this shard's part of it */
    cli_slide *sl = NULL;
    int n = 0;
    rc = cli_slide_list(CMD, manifest, slides, n_slides, slide_mpp, shard_k, shard_n, &sl, &n);
    free(slides);
    if (rc) return rc;
    int n_all = n;
    item *all = calloc((size_t)(n ? n : 1), sizeof *all);
    if (!all) {
        cli_slides_free(sl, n);
        return NCMI_EXIT_INTERNAL;
    }
    for (int i = 0; i < n; i++) { /* the items take over the strings */
        all[i].id = sl[i].id;
        all[i].path = sl[i].path;
        all[i].mpp = sl[i].mpp;
    }
    free(sl);
    c.items = all;
    c.n = n;

    char sub[4200];
    const char *subs[] = {"", "/patches", "/contours", "/previews"};
    for (int k = 0; k < 4; k++) {
        snprintf(sub, sizeof sub, "%s%s", out, subs[k]);
        if (cli_mkdir_p(sub) != 0) {
            cli_error(CMD, "%s", ncmi_error());
            items_free(all, n_all);
            return NCMI_EXIT_INPUT;
        }
    }
    if (tl_tile_init() != 0) {
        cli_error(CMD, "%s", ncmi_error());
        items_free(all, n_all);
        return NCMI_EXIT_INTERNAL;
    }
    cli_status status;
    if ((rc = cli_status_open(&status, CMD, out, "tile_status", shard_k, shard_n, status_header)) != 0) {
        items_free(all, n_all);
        return rc;
    }
    c.status = status.live;

    c.tty = isatty(2);
    c.profile = getenv("NCMI_TILE_PROFILE") && atoi(getenv("NCMI_TILE_PROFILE")) > 0;
    c.t0 = cli_now();
    pthread_mutex_init(&c.mu, NULL);
    if (!c.tty)
        fprintf(stderr, "ncmi: tile: %d slide(s)%s%s, %.4g um/px, %d px patches -> %s\n", n,
                shard ? " in shard " : "", shard ? shard : "", c.params.target_mpp, patch_size, out);
    if (jobs > n) jobs = n > 0 ? n : 1;
    if (jobs <= 1) {
        worker(&c);
    } else {
        pthread_t *th = calloc((size_t)jobs, sizeof *th);
        int started = 0;
        for (int j = 0; j < jobs; j++)
            if (pthread_create(&th[j], NULL, worker, &c) == 0) started++;
            else break;
        if (started == 0) worker(&c);
        for (int j = 0; j < started; j++) pthread_join(th[j], NULL);
        free(th);
    }
    pthread_mutex_destroy(&c.mu);
    cli_status_finish(&status, CMD, n, status_row_i, all); /* in slide order */

    double el = cli_now() - c.t0;
    fprintf(stderr, "ncmi: tile: %d slide(s): %d ok, %d skipped, %d failed; %zu patches; %.1f s; status: %s\n",
            n, c.n_ok, c.n_skipped, c.n_failed, c.patches, el, status.path);
    if (c.n_failed) {
        fprintf(stderr, "ncmi: tile: failed:");
        int shown = 0;
        for (int i = 0; i < n && shown < 10; i++)
            if (all[i].st == ST_FAILED) fprintf(stderr, "%s %s", shown++ ? "," : "", all[i].id);
        fprintf(stderr, "%s\n", c.n_failed > 10 ? ", ..." : "");
    }
    rc = c.n_failed == 0 ? NCMI_EXIT_OK : c.n_failed == n ? NCMI_EXIT_INPUT : NCMI_EXIT_PARTIAL;
    items_free(all, n_all);
    return rc;
}
