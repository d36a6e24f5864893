/* ncmi features: encode the patches of every slide (features/extract.c does
 * one slide) into DIR/features/<slide_id>.h5.
 *
 * Cohort orchestration as in ncmi tile: slides from --manifest or the
 * command line, --shard K/N (index mod N), resume (a slide whose features
 * file is complete for this encoder, these weights and this precision is
 * skipped), --force, a status file written as slides finish and rewritten in
 * slide order at the end, exit 0 / 2 / 3. One encoder for the whole run;
 * the slides go one after another, each with R reader threads. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../eval/manifest.h"
#include "../features/encoder.h"
#include "../features/extract.h"
#include "../features/features_h5.h"
#include "../nn/cuda.h"
#include "../nn/error.h"
#include "../tiler/coords_h5.h"
#include "../tiler/tile.h"
#include "cli.h"

#define CMD "features"

void ncmi_help_features(FILE *f)
{
    fprintf(f,
            "usage: ncmi features --coords DIR (--manifest CSV | SLIDE...) --out DIR\n"
            "                     --weights FILE.safetensors [options]\n"
            "\n"
            "Encode the patches that 'ncmi tile' laid on each slide into a feature bag:\n"
            "  DIR/features/<slide_id>.h5   features float32 [N,D], coords int64 [N,2] (row i\n"
            "                               = row i of the coords file), attributes encoder,\n"
            "                               weights_sha256, weights_source, precision, patch_size,\n"
            "                               input_size, target_mpp, patch_level, patch_size_level0,\n"
            "                               level0_mpp, tiling (the coords file's), name\n"
            "  DIR/features_status.csv      slide_id,status,n_patches,dim,read_size,level,\n"
            "                               seconds,patches_per_s,read_errors,error\n"
            "Each patch is read at the coords file's pyramid level (level-0 size\n"
            "patch_size_level0), composited onto white, resized to the encoder input with\n"
            "Pillow's antialiased bilinear filter (as torchvision's Resize on a PIL image),\n"
            "scaled to [0,1] and normalised with the ImageNet mean and std.\n"
            "\n"
            "inputs:\n"
            "  --coords DIR         the --out folder of 'ncmi tile' (or its patches/ folder)\n"
            "  --manifest CSV       slide_id + path (relative to the manifest) [+ mpp]\n"
            "  SLIDE...             slide files; slide_id = file name without its extension\n"
            "  --slide-mpp X        level-0 um/px for slides without their own (as in tile)\n"
            "\n"
            "encoder:\n"
            "  --encoder NAME       resnet50_trunc (default: torchvision ResNet-50 up to\n"
            "                       layer3 + average pool, 1024-d), resnet50 (2048-d),\n"
            "                       resnet18 (512-d)\n"
            "  --weights FILE       safetensors with torchvision's state_dict names (convert a\n"
            "                       .pth with tools/pth_to_safetensors.py; a full resnet50 file\n"
            "                       serves resnet50_trunc); random:SEED draws torchvision's\n"
            "                       init (untrained: for tests) and saves it to\n"
            "                       DIR/encoder_random_SEED.safetensors\n"
            "  --input-size N       encoder input side in pixels (default 224)\n"
            "  --precision P        fp32 (default) | bf16 | fp16: GPU convolutions in\n"
            "                       channels-last half precision, fp32 accumulation\n"
            "  --device D           auto (default: the GPU when there is one) | cpu | cuda[:K]\n"
            "\n"
            "run:\n"
            "  --batch N            patches per encoder call (default 256 on the GPU, 8 on\n"
            "                       the CPU)\n"
            "  --readers R          reader threads, each with its own OpenSlide handle\n"
            "                       (default 2)\n"
            "  --shard K/N          only slides whose index i (0-based) has i mod N == K-1;\n"
            "                       status in features_status.<K>of<N>.csv\n"
            "  --force              redo slides whose features exist (default: a complete\n"
            "                       file from the same encoder, weights and precision is kept)\n"
            "  -h, --help           this help\n"
            "\n"
            "Progress on a terminal: patches done/total, patches/s, ETA (stderr); one line\n"
            "per slide otherwise, with where the time went (read, resize, encode, waiting).\n"
            "Errors that stop one slide (coords file without its slide, a slide that changed\n"
            "since tiling, unreadable files) are listed and the other slides go on; a\n"
            "weights file of another architecture stops the run before any slide.\n"
            "Exit codes: 0 all slides ok or skipped, 1 usage error, 2 every slide failed or\n"
            "bad weights/manifest, 3 some slides failed (listed in the status file).\n");
}

typedef enum { ST_PENDING = 0, ST_OK, ST_FAILED, ST_SKIPPED } slide_status;
static const char *status_name[] = {"pending", "ok", "failed", "skipped"};

typedef struct item {
    const char *id, *path; /* borrowed from the slide list */
    slide_status st;
    int64_t n_patches;
    int read_size, level, read_errors;
    double seconds;
    char msg[1024];
} item;

typedef struct prog {
    int tty;
    int slide, n_slides;
    const char *id;
    double t0;
    int64_t base_done; /* patches of earlier slides in this run */
    int64_t total_known;
} prog;

static void on_progress(void *ctx, int64_t done, int64_t total)
{
    prog *p = ctx;
    if (!p->tty) return;
    double el = cli_now() - p->t0;
    double rate = el > 0 ? (double)(p->base_done + done) / el : 0;
    double left = rate > 0 ? (double)(total - done) / rate : NAN;
    fprintf(stderr, "\r\033[Kfeatures: slide %d/%d %s: %lld/%lld patches, %.1f patches/s, slide ETA %s%.0fs",
            p->slide, p->n_slides, p->id, (long long)done, (long long)total, rate, isfinite(left) ? "" : "?",
            isfinite(left) ? left : 0.0);
    fflush(stderr);
}

static const char *status_header =
    "slide_id,status,n_patches,dim,read_size,level,seconds,patches_per_s,read_errors,error\n";

static void status_row(FILE *f, const item *it, int dim)
{
    cli_csv_field(f, it->id);
    fprintf(f, ",%s,", status_name[it->st]);
    if (it->st == ST_FAILED)
        fputs(",,,,", f);
    else if (it->st == ST_SKIPPED)
        fprintf(f, "%lld,%d,,,", (long long)it->n_patches, dim);
    else
        fprintf(f, "%lld,%d,%d,%d,", (long long)it->n_patches, dim, it->read_size, it->level);
    fprintf(f, "%.3f,", it->seconds);
    if (it->st == ST_OK && it->seconds > 0)
        fprintf(f, "%.2f,%d,", (double)it->n_patches / it->seconds, it->read_errors);
    else
        fputs(",,", f);
    cli_csv_field(f, it->msg);
    fputc('\n', f);
}

typedef struct status_ctx {
    const item *items;
    int dim;
} status_ctx;

static void status_row_i(FILE *f, int i, void *ctx)
{
    const status_ctx *c = ctx;
    status_row(f, &c->items[i], c->dim);
}

int ncmi_cmd_features(int argc, char **argv)
{
    const char *manifest = NULL, *out = NULL, *coords_dir = NULL, *encoder = "resnet50_trunc", *weights = NULL,
               *precision = "fp32", *shard = NULL;
    double slide_mpp = 0;
    int batch = 0, readers = 2, input_size = 224, force = 0;
    const char **slides = (const char **)calloc((size_t)argc + 1, sizeof *slides);
    int n_slides = 0;
    if (!slides) return NCMI_EXIT_INTERNAL;
    int rc = NCMI_EXIT_USAGE;
#define BAD(...)                                \
    do {                                        \
        rc = cli_usage_error(CMD, __VA_ARGS__); \
        goto end_args;                          \
    } while (0)
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = NULL;
        int m;
        if (cli_is_help(a)) {
            ncmi_help_features(stdout);
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
        } else if (OPT("--coords")) {
            if (m < 0) goto end_args;
            coords_dir = v;
        } else if (OPT("--encoder")) {
            if (m < 0) goto end_args;
            encoder = v;
        } else if (OPT("--weights")) {
            if (m < 0) goto end_args;
            weights = v;
        } else if (OPT("--precision")) {
            if (m < 0) goto end_args;
            precision = v;
        } else if (OPT("--batch")) {
            if (m < 0) goto end_args;
            if (!cli_parse_int(v, &batch) || batch < 1 || batch > 65536) BAD("--batch '%s': 1 to 65536 patches", v);
        } else if (OPT("--readers")) {
            if (m < 0) goto end_args;
            if (!cli_parse_int(v, &readers) || readers < 1 || readers > 64) BAD("--readers '%s': 1 to 64 threads", v);
        } else if (OPT("--input-size")) {
            if (m < 0) goto end_args;
            if (!cli_parse_int(v, &input_size) || input_size < 32 || input_size > 4096)
                BAD("--input-size '%s': 32 to 4096 pixels", v);
        } else if (OPT("--slide-mpp")) {
            if (m < 0) goto end_args;
            if (!cli_parse_double(v, &slide_mpp) || slide_mpp <= 0 || slide_mpp > 100)
                BAD("--slide-mpp '%s': the slides' level-0 um/px, e.g. 0.25", v);
        } else if (OPT("--shard")) {
            if (m < 0) goto end_args;
            shard = v;
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
    if (!coords_dir) BAD("--coords DIR is required (the --out folder of ncmi tile)");
    if (strlen(coords_dir) > 3000) BAD("--coords: path too long");
    if (!weights) BAD("--weights FILE.safetensors is required (or random:SEED for untrained weights)");
    if (!manifest && n_slides == 0) BAD("no slides: give --manifest CSV or slide files");
    if (manifest && n_slides) BAD("give either --manifest or slide files, not both ('%s')", slides[0]);
    nn_precision prec;
    if (fx_precision_parse(precision, &prec) != 0) BAD("--precision '%s': fp32, bf16 or fp16", precision);
    if (prec != NN_PREC_FP32 && !cli_device_cuda)
        BAD("--precision %s needs the GPU (--device cuda); the CPU encoder computes in fp32", precision);
    int shard_k = 1, shard_n = 1;
    if (shard) {
        if (!cli_parse_shard(shard, &shard_k, &shard_n))
            BAD("--shard '%s': K/N with 1 <= K <= N (e.g. 2/8)", shard);
    }
    if (!batch) batch = cli_device_cuda ? 256 : 8; /* CPU: 8 is as fast as 32 (bench/features.sh) in half the memory */
    rc = 0;
end_args:
    if (rc) {
        free(slides);
        return rc;
    }
#undef BAD
    if (!features_h5_available()) {
        cli_error(CMD, "ncmi was built without HDF5 (install libhdf5-dev and rebuild)");
        free(slides);
        return NCMI_EXIT_INTERNAL;
    }

    /* the slide list, then this shard's part */
    cli_slide *sl = NULL;
    int n = 0;
    rc = cli_slide_list(CMD, manifest, slides, n_slides, slide_mpp, shard_k, shard_n, &sl, &n);
    free(slides);
    if (rc) return rc;
    item *all = calloc((size_t)(n ? n : 1), sizeof *all);
    if (!all) {
        cli_slides_free(sl, n);
        return NCMI_EXIT_INTERNAL;
    }
    for (int i = 0; i < n; i++) {
        all[i].id = sl[i].id;
        all[i].path = sl[i].path;
    }
#define FREE_ALL() (free(all), cli_slides_free(sl, n))

    char feat_dir[4200], patches_dir[4200];
    snprintf(feat_dir, sizeof feat_dir, "%s/features", out);
    snprintf(patches_dir, sizeof patches_dir, "%s/patches", coords_dir);
    struct stat sst;
    if (stat(patches_dir, &sst) != 0 || !S_ISDIR(sst.st_mode)) snprintf(patches_dir, sizeof patches_dir, "%s", coords_dir);
    if (stat(patches_dir, &sst) != 0 || !S_ISDIR(sst.st_mode)) {
        cli_error(CMD, "%s: no such folder (give the --out folder of ncmi tile)", coords_dir);
        FREE_ALL();
        return NCMI_EXIT_INPUT;
    }
    if (cli_mkdir_p(out) != 0 || cli_mkdir_p(feat_dir) != 0) {
        cli_error(CMD, "%s", ncmi_error());
        FREE_ALL();
        return NCMI_EXIT_INPUT;
    }

    /* the encoder, once */
    fx_encoder enc;
    const nn_device dev = cli_device_cuda ? NN_DEVICE_CUDA : NN_DEVICE_CPU;
    double t_load = cli_now();
    int erc;
    if (!strncmp(weights, "random:", 7)) {
        char *e;
        unsigned long long seed = strtoull(weights + 7, &e, 10);
        if (e == weights + 7 || *e) {
            FREE_ALL();
            return cli_usage_error(CMD, "--weights '%s': random:SEED with a non-negative integer seed", weights);
        }
        char wpath[4300];
        snprintf(wpath, sizeof wpath, "%s/encoder_random_%llu.safetensors", out, seed);
        erc = fx_encoder_open_random(&enc, encoder, seed, wpath, dev, prec, input_size);
    } else {
        erc = fx_encoder_open(&enc, encoder, weights, dev, prec, input_size);
    }
    if (erc != 0) {
        cli_error(CMD, "%s", ncmi_error());
        FREE_ALL();
        return NCMI_EXIT_INPUT;
    }
    t_load = cli_now() - t_load;

    cli_status status;
    if ((rc = cli_status_open(&status, CMD, out, "features_status", shard_k, shard_n, status_header)) != 0) {
        fx_encoder_close(&enc);
        FREE_ALL();
        return rc;
    }
    FILE *live = status.live;

    prog pg;
    memset(&pg, 0, sizeof pg);
    pg.tty = isatty(2);
    pg.n_slides = n;
    pg.t0 = cli_now();
    fx_extract_params xp = {.batch = batch, .readers = readers};
    fprintf(stderr, "ncmi: features: %d slide(s)%s%s, encoder %s (%d-d, weights sha256 %.12s..., loaded in %.2f s), "
            "%s, %s, batch %d, %d reader(s) -> %s\n",
            n, shard ? " in shard " : "", shard ? shard : "", enc.name, enc.dim, rn_weights_sha256(&enc.m), t_load,
            nn_device_name(cli_device_cuda), fx_precision_name(prec), batch, readers, feat_dir);
    int n_ok = 0, n_failed = 0, n_skipped = 0;
    int64_t patches = 0;
    for (int i = 0; i < n; i++) {
        item *it = &all[i];
        char cpath[8600], fpath[8600];
        snprintf(cpath, sizeof cpath, "%s/%s.h5", patches_dir, it->id);
        snprintf(fpath, sizeof fpath, "%s/%s.h5", feat_dir, it->id);
        double t = cli_now();
        ncmi_error_clear();
        if (!force) {
            int64_t *cc = NULL;
            size_t cn = 0;
            tl_coords_attrs ca;
            char nm[256];
            memset(&ca, 0, sizeof ca);
            if (access(fpath, F_OK) == 0 && tl_coords_h5_read(cpath, &cc, &cn, &ca, nm, sizeof nm) == 0 &&
                fx_features_complete(fpath, &enc, (int64_t)cn)) {
                it->st = ST_SKIPPED;
                it->n_patches = (int64_t)cn;
                snprintf(it->msg, sizeof it->msg, "features exist for this encoder and weights (--force redoes them)");
            }
            free(cc);
            ncmi_error_clear();
        }
        if (it->st != ST_SKIPPED) {
            if (access(cpath, F_OK) != 0) {
                it->st = ST_FAILED;
                snprintf(it->msg, sizeof it->msg, "%.900s: no coords file (run ncmi tile for this slide first)", cpath);
            } else {
                fx_slide_job job = {.slide_id = it->id, .slide_path = it->path, .coords_path = cpath,
                                    .out_path = fpath, .mpp_override = sl[i].mpp};
                fx_extract_result r;
                pg.slide = i + 1;
                pg.id = it->id;
                if (fx_extract_slide(&enc, &job, &xp, on_progress, &pg, &r) != 0) {
                    it->st = ST_FAILED;
                    snprintf(it->msg, sizeof it->msg, "%s", ncmi_error());
                } else {
                    it->st = ST_OK;
                    it->n_patches = r.n_patches;
                    it->read_size = r.read_size;
                    it->level = r.level;
                    it->read_errors = r.n_read_errors;
                    snprintf(it->msg, sizeof it->msg, "%s", r.note);
                    pg.base_done += r.n_patches;
                    if (!pg.tty || getenv("NCMI_FEATURES_PROFILE"))
                        fprintf(stderr,
                                "ncmi: features: %s: read %.2f s, resize+normalise %.2f s (reader threads, summed), "
                                "encode %.2f s, encoder waiting %.2f s, write %.3f s\n",
                                it->id, r.t_read, r.t_prep, r.t_encode, r.t_wait, r.t_write);
                }
            }
        }
        it->seconds = cli_now() - t;
        if (it->st == ST_OK) n_ok++;
        if (it->st == ST_FAILED) n_failed++;
        if (it->st == ST_SKIPPED) n_skipped++;
        patches += it->n_patches;
        status_row(live, it, enc.dim);
        fflush(live);
        if (pg.tty) fputs("\r\033[K", stderr);
        if (it->st == ST_FAILED)
            fprintf(stderr, "ncmi: features: [%d/%d] %s: failed: %s\n", i + 1, n, it->id, it->msg);
        else
            fprintf(stderr, "ncmi: features: [%d/%d] %s: %s, %lld patches, %.2f s (%.1f patches/s)%s%s\n", i + 1, n,
                    it->id, status_name[it->st], (long long)it->n_patches, it->seconds,
                    it->seconds > 0 && it->st == ST_OK ? (double)it->n_patches / it->seconds : 0.0,
                    it->msg[0] ? ": " : "", it->msg);
    }
    status_ctx sc = {all, enc.dim};
    cli_status_finish(&status, CMD, n, status_row_i, &sc); /* in slide order */
    double el = cli_now() - pg.t0;
    fprintf(stderr, "ncmi: features: %d slide(s): %d ok, %d skipped, %d failed; %lld patches; %.1f s; status: %s\n", n,
            n_ok, n_skipped, n_failed, (long long)patches, el, status.path);
    if (n_failed) {
        fprintf(stderr, "ncmi: features: failed:");
        int shown = 0;
        for (int i = 0; i < n && shown < 10; i++)
            if (all[i].st == ST_FAILED) fprintf(stderr, "%s %s", shown++ ? "," : "", all[i].id);
        fprintf(stderr, "%s\n", n_failed > 10 ? ", ..." : "");
    }
    fx_encoder_close(&enc);
    rc = n_failed == 0 ? NCMI_EXIT_OK : n_failed == n ? NCMI_EXIT_INPUT : NCMI_EXIT_PARTIAL;
    FREE_ALL();
    return rc;
}
