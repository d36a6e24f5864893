/* ncmi score: score whole slides with a trained slide model (issue 9).
 *
 * One go per slide: tile it exactly as the run's training slides were tiled
 * (the tiling parameters recorded in runs/<name>/data_params.json), encode
 * the patches with the same encoder and weights (checked by hash), run the
 * trained MIL head with the run's decision rule, and write for a person and
 * for programs:
 *
 *   <out>/<slide_id>.score.json   prediction, probabilities, rule, quality,
 *                                 top-k patches, tiling, model identity, times
 *   <out>/<slide_id>.heatmap.png  attention over the tissue on the thumbnail
 *   <out>/<slide_id>.topk/        the k most attended patches (level 0, PNG)
 *   <out>/<slide_id>.html         one self-contained page
 *   <out>/score_predictions.csv   with --manifest: one row per slide
 *
 * The model is loaded once (--manifest scores many slides with it). Every
 * output is made in a temporary folder inside <out> and renamed into place
 * at the end: a slide that fails leaves nothing behind. The head runs on the
 * CPU, as `ncmi eval --run` does, so both give the same probabilities for the
 * same slide. docs/score.md. */
#include <errno.h>
#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../eval/manifest.h"
#include "../features/encoder.h"
#include "../features/extract.h"
#include "../features/features_h5.h"
#include "../mil/mil.h"
#include "../nn/cuda.h"
#include "../nn/error.h"
#include "../nn/safetensors.h"
#include "../nn/sha256.h"
#include "../tiler/heatmap.h"
#include "../tiler/seg.h"
#include "../tiler/slide.h"
#include "../tiler/tile.h"
#include "cli.h"
#include "data_params.h"
#include "score.h"
#include "train_config.h"
#include "train_job.h"

#define CMD "score"
#define THUMB_SIDE 1200   /* longest side of the thumbnail and heatmap */
#define MPP_TOLERANCE 1.10 /* a slide up to 10 % coarser than the training resolution is scored (warning) */

void ncmi_help_score(FILE *f)
{
    fprintf(f,
            "usage: ncmi score SLIDE --run DIR [--out DIR] [options]\n"
            "       ncmi score --manifest CSV --run DIR [--out DIR] [options]\n"
            "\n"
            "Score a whole slide with a trained slide model, for a person: tile it, encode its\n"
            "patches and run the model in one go, with exactly the tiling and feature\n"
            "parameters the run's training slides had (read from DIR/data_params.json).\n"
            "Writes into --out:\n"
            "  <slide_id>.score.json   prediction, probability of each class, decision rule,\n"
            "                          quality flags, top-k patches (coordinates, attention),\n"
            "                          tiling used, model identity (run, config and weights\n"
            "                          hashes, validation metrics), times\n"
            "  <slide_id>.heatmap.png  attention over the tissue on the slide thumbnail\n"
            "                          (rank-normalised, overlapping patches averaged)\n"
            "  <slide_id>.topk/        the k most attended patches, full resolution PNG,\n"
            "                          named rankNN_x<X>_y<Y>.png (level-0 top-left)\n"
            "  <slide_id>.html         one self-contained page: thumbnail, heatmap,\n"
            "                          probabilities, top-k patches, quality flags, model card\n"
            "  score_predictions.csv   with --manifest: slide_id,label,pred,p_<class>...,\n"
            "                          n_patches,status,error (one model load for all slides)\n"
            "and prints a summary per slide (prediction, probabilities, rule, tissue area,\n"
            "patches, resolution, time taken, warnings).\n"
            "\n"
            "options:\n"
            "  --run DIR          run folder of 'ncmi train' on slide features (data.kind bags)\n"
            "  --out DIR          output folder (default: the current folder)\n"
            "  --manifest CSV     slides to score: slide_id,label + path (relative to the\n"
            "                     manifest) [+ mpp]; label may be anything (copied to the CSV)\n"
            "  --weights FILE     encoder weights (safetensors); default: the file recorded at\n"
            "                     training (random:SEED weights are redrawn); checked against the\n"
            "                     hash the training features recorded\n"
            "  --method M         decision rule: linear (a linear head), cc, lp or learned\n"
            "                     (NCMI); default: the run's own (linear, or ncmi.eval)\n"
            "  --top-k K          most attended patches to show and save (default 8)\n"
            "  --slide-mpp X      level-0 um/px for slides that do not record it (or record it\n"
            "                     wrongly); a manifest's mpp column does the same per slide\n"
            "  --device D         auto (default: the GPU for the encoder when there is one) |\n"
            "                     cpu | cuda[:K]; the head always runs on the CPU, as ncmi eval\n"
            "  --batch N          patches per encoder call (default 256 GPU, 8 CPU)\n"
            "  --readers R        patch reader threads (default 2)\n"
            "  -h, --help         this help\n"
            "\n"
            "A slide that cannot be processed the way the training slides were is refused\n"
            "with the reason: unreadable file, unknown resolution (give --slide-mpp), a\n"
            "resolution coarser than the training one, no tissue. So is a run folder without\n"
            "a model or without the record of how its features were made.\n"
            "Exit codes: 0 ok, 1 usage error, 2 input error (nothing written for the slide),\n"
            "3 some slides of a manifest failed (listed in the CSV).\n");
}

/* ------------------------------------------------------------------ */
/* small helpers                                                       */

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    remove(p);
    return 0;
}

static void rm_rf(const char *path)
{
    if (path && path[0]) nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static int is_dir(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static int is_file(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

static int sha256_file(const char *path, char hex[NN_SHA256_HEX])
{
    hex[0] = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    nn_sha256 s;
    nn_sha256_init(&s);
    unsigned char buf[65536];
    size_t k;
    while ((k = fread(buf, 1, sizeof buf, f)) > 0) nn_sha256_update(&s, buf, k);
    fclose(f);
    uint8_t d[NN_SHA256_BYTES];
    nn_sha256_final(&s, d);
    nn_sha256_hex(d, hex);
    return 0;
}

/* ------------------------------------------------------------------ */
/* the model                                                           */

typedef struct sc_bag {
    const float *x;
    int64_t n;
    int d;
} sc_bag;

static const char *bag_id(const tr_dataset *d, int i)
{
    (void)d, (void)i;
    return "slide";
}

static int bag_inputs(const tr_dataset *d, nn_graph *g, const int *idx, int n, int training, nn_rng *rng,
                      nn_tensor **out)
{
    (void)idx, (void)training, (void)rng;
    const sc_bag *b = d->ctx;
    if (n != 1 || !b->x) return ncmi_error_set("score: one bag at a time");
    int shape[2] = {(int)b->n, b->d};
    out[0] = nn_tensor_from(g, 2, shape, b->x); /* as mil/bags.c builds a bag */
    return 1;
}

typedef struct sc_model {
    const char *run;
    ncmi_train_config cfg;
    int have_cfg;
    tr_model model;
    int have_model;
    char **classes;
    int C;
    tr_trainer tr;
    int have_tr;
    tr_dataset bag;
    sc_bag bagc;
    int bag_label;
    tr_method method;
    const char *rule, *rule_detail;
    mil_head_kind kind;
    cli_data_params dp;
    tl_tile_params tiling;
    json_t *tiling_j, *features_j, *model_j;
    fx_encoder enc;
    int have_enc;
    fx_extract_params xp;
    char warn_precision[300]; /* a warning that applies to every slide ("" = none) */
    double t_load;
    float *std_mean, *std_inv; /* data.standardize: the training statistics (NULL: off) */
    int std_dim;
} sc_model;

static void model_free(sc_model *m)
{
    if (m->have_enc) fx_encoder_close(&m->enc);
    if (m->have_tr) tr_free(&m->tr);
    if (m->have_model) tr_model_free(&m->model);
    if (m->classes) {
        for (int i = 0; i < m->C; i++) free(m->classes[i]);
        free(m->classes);
    }
    if (m->have_cfg) ncmi_cfg_free(&ncmi_train_schema, &m->cfg);
    json_decref(m->tiling_j);
    json_decref(m->features_j);
    json_decref(m->model_j);
    free(m->std_mean);
    free(m->std_inv);
    memset(m, 0, sizeof *m);
}

/* The validation metrics of the selected epoch (log.csv) and the held-out
 * evaluation (metrics_<split>.json) for the model card. */
static void card_metrics(sc_model *m, json_t *card, int best_epoch)
{
    char path[4300];
    snprintf(path, sizeof path, "%s/log.csv", m->run);
    FILE *f = fopen(path, "r");
    if (f) {
        char line[2048];
        while (fgets(line, sizeof line, f)) {
            int ep;
            double lr, tl, ta, vl, va, vb, vf, vu;
            if (sscanf(line, "%d,%lf,%lf,%lf,%lf,%lf,%lf,%lf,%lf", &ep, &lr, &tl, &ta, &vl, &va, &vb, &vf, &vu) == 9 &&
                ep == best_epoch) {
                json_t *v = json_object();
                json_object_set_new(v, "epoch", json_integer(ep));
                json_object_set_new(v, "loss", isfinite(vl) ? json_real(vl) : json_null());
                json_object_set_new(v, "accuracy", isfinite(va) ? json_real(va) : json_null());
                json_object_set_new(v, "balanced_accuracy", isfinite(vb) ? json_real(vb) : json_null());
                json_object_set_new(v, "f1_macro", isfinite(vf) ? json_real(vf) : json_null());
                json_object_set_new(v, "auc_macro", isfinite(vu) ? json_real(vu) : json_null());
                json_object_set_new(card, "validation", v);
            }
        }
        fclose(f);
    }
    const char *split = m->cfg.eval_split == NCMI_EVAL_SPLIT_VAL ? "val" : "test";
    snprintf(path, sizeof path, "%s/metrics_%s.json", m->run, split);
    json_t *mj = json_load_file(path, 0, NULL);
    if (!json_is_object(mj) && !strcmp(split, "test")) { /* a run without a test set evaluated val */
        json_decref(mj);
        snprintf(path, sizeof path, "%s/metrics_val.json", m->run);
        mj = json_load_file(path, 0, NULL);
    }
    if (json_is_object(mj)) {
        json_t *e = json_object();
        static const char *keys[] = {"split", "method", "n", "accuracy", "balanced_accuracy", "f1_macro", "auc_macro"};
        for (size_t k = 0; k < sizeof keys / sizeof *keys; k++) {
            json_t *v = json_object_get(mj, keys[k]);
            if (v) json_object_set(e, keys[k], v);
        }
        json_object_set_new(card, "evaluation", e);
    }
    json_decref(mj);
}

/* Classes from the checkpoint's metadata (a JSON array of names). */
static int classes_from_ckpt(sc_model *m, const char *ckpt)
{
    char *cls = tr_checkpoint_meta(ckpt, "classes");
    json_t *a = cls ? json_loads(cls, 0, NULL) : NULL;
    free(cls);
    if (!json_is_array(a) || json_array_size(a) < 2) {
        json_decref(a);
        return ncmi_error_set("%s: the checkpoint does not list its classes (not a model of ncmi train?)", ckpt);
    }
    m->C = (int)json_array_size(a);
    m->classes = calloc((size_t)m->C, sizeof *m->classes);
    for (int i = 0; m->classes && i < m->C; i++) {
        const char *s = json_string_value(json_array_get(a, (size_t)i));
        m->classes[i] = strdup(s ? s : "?");
    }
    json_decref(a);
    return m->classes ? 0 : ncmi_error_set("out of memory");
}

/* Loads everything once. 0, or an exit code with the message printed. */
static int model_load(sc_model *m, const char *run, const char *weights, const char *method_s, int batch,
                      int readers, const char *tmp_dir)
{
    const double t0 = cli_now();
    m->run = run;
    char cfg_path[4300], ckpt[4300];
    snprintf(cfg_path, sizeof cfg_path, "%s/config.yaml", run);
    snprintf(ckpt, sizeof ckpt, "%s/best.safetensors", run);
    if (!is_dir(run)) {
        cli_error(CMD, "%s: no such run folder. Give --run the folder that 'ncmi train' made (it holds "
                       "config.yaml and best.safetensors), e.g. runs/<name>.", run);
        return NCMI_EXIT_INPUT;
    }
    if (!is_file(cfg_path)) {
        cli_error(CMD, "%s is not a run folder of 'ncmi train' (no config.yaml in it). Give --run the folder "
                       "that training made, e.g. runs/<name>.", run);
        return NCMI_EXIT_INPUT;
    }
    if (!is_file(ckpt)) {
        cli_error(CMD, "%s has no trained model: best.safetensors is missing (training did not finish, or the "
                       "file was moved). Train the model first ('ncmi train --config ...'), or give --run the "
                       "folder that holds best.safetensors.", run);
        return NCMI_EXIT_INPUT;
    }
    ncmi_cfg_defaults(&ncmi_train_schema, &m->cfg);
    m->have_cfg = 1;
    if (ncmi_cfg_load_file(&ncmi_train_schema, &m->cfg, cfg_path)) {
        cli_error(CMD, "%s", ncmi_error());
        return NCMI_EXIT_INPUT;
    }
    ncmi_train_config_resolve(&m->cfg);
    if (ncmi_train_config_check(&m->cfg)) {
        cli_error(CMD, "%s: %s", cfg_path, ncmi_error());
        return NCMI_EXIT_INPUT;
    }
    const ncmi_train_config *c = &m->cfg;
    if (c->data_kind != NCMI_DATA_BAGS) {
        cli_error(CMD, "%s is not a slide model (it was trained on data.kind %s, not on slide features): ncmi "
                       "score needs a run trained on slide feature bags (data.kind: bags).",
                  run, ncmi_cfg_enum_name(ncmi_cfg_find(&ncmi_train_schema, "data.kind"), c));
        return NCMI_EXIT_INPUT;
    }
    if (c->standardize) {
        /* features z-scored with the training set's statistics, which ncmi train keeps */
        char sp[4600];
        snprintf(sp, sizeof sp, "%s/standardize.safetensors", run);
        nn_safetensors st;
        const nn_st_entry *e;
        if (nn_st_open(&st, sp) != 0) {
            cli_error(CMD, "%s was trained with data.standardize: true, but the training statistics the features "
                           "must be z-scored with (standardize.safetensors) are not in the run folder (a run made "
                           "before ncmi kept them, or the file was moved): retrain the model. (%s)",
                      run, ncmi_error());
            return NCMI_EXIT_INPUT;
        }
        int ok = (e = nn_st_find(&st, "mean")) != NULL && e->ndim == 1 && e->shape[0] > 0;
        if (ok) {
            m->std_dim = (int)e->shape[0];
            m->std_mean = malloc((size_t)m->std_dim * sizeof(float));
            m->std_inv = malloc((size_t)m->std_dim * sizeof(float));
            int shape[1] = {m->std_dim};
            ok = m->std_mean && m->std_inv &&
                 nn_st_read_f32(&st, "mean", m->std_mean, (size_t)m->std_dim, 1, shape) == 0 &&
                 nn_st_read_f32(&st, "inv_sd", m->std_inv, (size_t)m->std_dim, 1, shape) == 0;
        }
        nn_st_close(&st);
        if (!ok) {
            cli_error(CMD, "%s: not a standardization file of ncmi train (tensors mean and inv_sd [D]): retrain "
                           "the model. (%s)", sp, ncmi_error());
            return NCMI_EXIT_INPUT;
        }
    }

    /* how the training features were made */
    if (!cli_data_params_missing(run)) {
        if (cli_data_params_read(run, &m->dp)) {
            cli_error(CMD, "%s", ncmi_error());
            return NCMI_EXIT_INPUT;
        }
    } else {
        /* a run from before data_params.json: read its training features, if they are still there */
        cli_train_job job;
        if (cli_train_job_init(&job, c)) {
            cli_error(CMD, "%s does not record how its training slides were tiled and encoded (no %s: trained "
                           "with an older ncmi), and its training features cannot be read to find out (%s). "
                           "Retrain the model with this version of ncmi.",
                      run, CLI_DATA_PARAMS_FILE, ncmi_error());
            return NCMI_EXIT_INPUT;
        }
        int rc = cli_data_params_collect(c->features, &job.train, &m->dp);
        cli_train_job_free(&job);
        if (rc) {
            cli_error(CMD, "%s: %s", run, ncmi_error());
            return NCMI_EXIT_INPUT;
        }
    }
    cli_data_params *dp = &m->dp;
    if (dp->problems[0]) {
        cli_error(CMD, "the training slides of %s were not all processed the same way, so there is no single "
                       "way to process a new slide like them: %s",
                  run, dp->problems);
        return NCMI_EXIT_INPUT;
    }
    if (!dp->tiling[0] || !dp->encoder[0] || !dp->weights_sha256[0]) {
        cli_error(CMD, "the training features of %s do not record how they were made (%s%s%s; features from "
                       "CLAM, TRIDENT or an older ncmi), so a new slide cannot be processed the same way. Tile "
                       "and encode the training slides with this version of ncmi ('ncmi tile', 'ncmi "
                       "features') and retrain.",
                  run, !dp->tiling[0] ? "tiling parameters" : "", !dp->tiling[0] && !dp->encoder[0] ? ", " : "",
                  !dp->encoder[0] ? "encoder" : !dp->weights_sha256[0] ? "weights hash" : "");
        return NCMI_EXIT_INPUT;
    }
    if (tl_tile_params_from_json(dp->tiling, &m->tiling)) {
        cli_error(CMD, "%s: %s", run, ncmi_error());
        return NCMI_EXIT_INPUT;
    }
    m->tiling.preview_max_side = 0; /* score draws its own thumbnail */
    m->tiling.keep_mask = 1;        /* the tissue mask, for the heatmap */

    /* the head, as eval --run builds it, on the CPU */
    if (classes_from_ckpt(m, ckpt)) {
        cli_error(CMD, "%s", ncmi_error());
        return NCMI_EXIT_INPUT;
    }
    if (c->classes.n && c->classes.n != m->C) {
        cli_error(CMD, "%s: the checkpoint has %d classes, config.yaml %d: the run folder is inconsistent", run,
                  m->C, c->classes.n);
        return NCMI_EXIT_INPUT;
    }
    nn_rng root;
    nn_rng_seed(&root, (uint64_t)c->seed);
    nn_rng_fork(&root, 1);
    nn_rng init_rng = nn_rng_fork(&root, 2);
    mil_opts o;
    cli_train_job_mil_opts(c, dp->dim, &o);
    m->kind = o.kind;
    if (mil_head_init(&m->model, &o, &init_rng)) {
        cli_error(CMD, "%s: %s", run, ncmi_error());
        return NCMI_EXIT_INPUT;
    }
    m->have_model = 1;
    cli_train_job jj;
    memset(&jj, 0, sizeof jj);
    jj.C = m->C;
    jj.classes = m->classes;
    tr_config tc;
    cli_train_job_tr_config(c, &jj, &tc);
    tc.device_cuda = 0; /* the head on the CPU, as ncmi eval by default */
    tc.progress = -1;
    tc.out = NULL;
    memset(&m->bag, 0, sizeof m->bag);
    snprintf(m->bag.name, sizeof m->bag.name, "slide");
    m->bag.n = 1;
    m->bag.labels = &m->bag_label;
    m->bag.bags = 1;
    m->bag.sample_id = bag_id;
    m->bag.inputs = bag_inputs;
    m->bag.ctx = &m->bagc;
    if (tr_init(&m->tr, &tc, &m->model, &m->bag, NULL, NULL, &init_rng)) {
        cli_error(CMD, "%s: %s", run, ncmi_error());
        return NCMI_EXIT_INPUT;
    }
    m->have_tr = 1;
    if (tr_load_weights(&m->tr, ckpt)) {
        cli_error(CMD, "%s: the model does not match the run's config.yaml: %s", run, ncmi_error());
        return NCMI_EXIT_INPUT;
    }
    const int ncmi = tc.head == TR_HEAD_NCMI;
    int method = ncmi ? (int)tc.ncmi_eval : TR_METHOD_LINEAR;
    if (method_s && (method = tr_method_from_name(method_s)) < 0)
        return cli_usage_error(CMD, "--method '%s': linear, cc, lp or learned", method_s);
    if (ncmi != (method != TR_METHOD_LINEAR))
        return cli_usage_error(CMD, "--method %s: the run has a%s head (rules: %s)", method_s,
                               ncmi ? "n NCMI" : " linear", ncmi ? "cc, lp, learned" : "linear");
    m->method = (tr_method)method;
    if ((m->method == TR_METHOD_CC || m->method == TR_METHOD_LP) && !tr_predictors_stored(&m->tr)) {
        cli_error(CMD, "%s was trained before ncmi kept the class centroids and the linear probe with the model "
                       "(they are computed from the training features). Run 'ncmi eval --run %s' once (it "
                       "stores them in best.safetensors), or retrain; or score with --method learned.",
                  run, run);
        return NCMI_EXIT_INPUT;
    }
    switch (m->method) {
    case TR_METHOD_LINEAR:
        m->rule = "linear head";
        m->rule_detail = "softmax of the trained linear classifier on the slide embedding";
        break;
    case TR_METHOD_CC:
        m->rule = "NCMI-CC";
        m->rule_detail = "nearest class-mean centroid of the training slides (KL divergence of the slide's "
                         "embedding distribution to each class mean); probabilities are softmax(-KL)";
        break;
    case TR_METHOD_LEARNED:
        m->rule = "NCMI-learned";
        m->rule_detail = "nearest learned NCMI centroid (KL divergence); probabilities are softmax(-KL)";
        break;
    default:
        m->rule = "NCMI-LP";
        m->rule_detail = "linear probe on the normalised slide embedding, trained on the training slides; "
                         "softmax probabilities";
        break;
    }

    /* the encoder, with the weights the training features were made with */
    const int gpu = cli_device_cuda;
    nn_precision prec = NN_PREC_FP32;
    if (dp->precision[0] && strcmp(dp->precision, "fp32")) {
        if (gpu)
            fx_precision_parse(dp->precision, &prec);
        else
            snprintf(m->warn_precision, sizeof m->warn_precision,
                     "the training features were computed in %s on a GPU; this CPU computes fp32, so the "
                     "features differ slightly from training's",
                     dp->precision);
    }
    const int input = dp->input_size > 0 ? dp->input_size : 224;
    int erc;
    char src[1100];
    if (weights) {
        snprintf(src, sizeof src, "%s", weights);
    } else if (!strncmp(dp->weights_source, "random:", 7)) {
        snprintf(src, sizeof src, "%s", dp->weights_source);
    } else if (dp->weights_source[0] && is_file(dp->weights_source)) {
        snprintf(src, sizeof src, "%s", dp->weights_source);
    } else {
        cli_error(CMD, "the encoder weights %s was trained with are not found%s%s. Give the weights file with "
                       "--weights FILE.safetensors (sha256 %.16s...).",
                  run, dp->weights_source[0] ? " at " : "", dp->weights_source, dp->weights_sha256);
        return NCMI_EXIT_INPUT;
    }
    const nn_device dev = gpu ? NN_DEVICE_CUDA : NN_DEVICE_CPU;
    if (!strncmp(src, "random:", 7)) {
        char *e;
        unsigned long long seed = strtoull(src + 7, &e, 10);
        if (e == src + 7 || *e) return cli_usage_error(CMD, "--weights '%s': random:SEED with an integer seed", src);
        char wpath[4300];
        snprintf(wpath, sizeof wpath, "%s/encoder_random_%llu.safetensors", tmp_dir, seed);
        erc = fx_encoder_open_random(&m->enc, dp->encoder, seed, wpath, dev, prec, input);
        unlink(wpath);
    } else {
        erc = fx_encoder_open(&m->enc, dp->encoder, src, dev, prec, input);
    }
    if (erc) {
        cli_error(CMD, "%s", ncmi_error());
        return NCMI_EXIT_INPUT;
    }
    m->have_enc = 1;
    const char *sha = rn_weights_sha256(&m->enc.m);
    if (strcmp(sha, dp->weights_sha256)) {
        cli_error(CMD, "the encoder weights %s (sha256 %.16s...) are not the ones the training features of %s "
                       "were computed with (sha256 %.16s..., %s): the model would see different features. Give "
                       "the right file with --weights.",
                  src, sha, run, dp->weights_sha256, dp->weights_source[0] ? dp->weights_source : "source unknown");
        return NCMI_EXIT_INPUT;
    }
    if (m->enc.dim != dp->dim) {
        cli_error(CMD, "the encoder gives %d-d features, the model takes %d-d", m->enc.dim, dp->dim);
        return NCMI_EXIT_INPUT;
    }
    m->xp.batch = batch > 0 ? batch : gpu ? 256 : 8; /* as ncmi features */
    m->xp.readers = readers > 0 ? readers : 2;

    /* provenance for the reports */
    m->tiling_j = json_loads(dp->tiling, 0, NULL);
    m->features_j = json_object();
    json_object_set_new(m->features_j, "encoder", json_string(dp->encoder));
    json_object_set_new(m->features_j, "dim", json_integer(dp->dim));
    json_object_set_new(m->features_j, "input_size", json_integer(input));
    json_object_set_new(m->features_j, "precision", json_string(fx_precision_name(prec)));
    json_object_set_new(m->features_j, "weights_sha256", json_string(sha));
    json_object_set_new(m->features_j, "weights_source", json_string(m->enc.weights_source));
    json_object_set_new(m->features_j, "device", json_string(nn_device_name(gpu)));
    json_object_set_new(m->features_j, "batch", json_integer(m->xp.batch));
    json_t *card = m->model_j = json_object();
    json_object_set_new(card, "run", json_string(run));
    json_object_set_new(card, "name", json_string(c->name ? c->name : ""));
    json_object_set_new(card, "model", json_string(m->model.desc));
    json_object_set_new(card, "head", json_string(ncmi ? "ncmi" : "linear"));
    if (!ncmi) json_object_set_new(card, "loss", json_string(nn_loss_kind_name(tc.loss.kind)));
    json_object_set_new(card, "decision_rule", json_string(m->rule));
    json_t *cl = json_array();
    for (int i = 0; i < m->C; i++) json_array_append_new(cl, json_string(m->classes[i]));
    json_object_set_new(card, "classes", cl);
    char *ep = tr_checkpoint_meta(ckpt, "epoch"), *ver = tr_checkpoint_meta(ckpt, "ncmi_version");
    char *sel = tr_checkpoint_meta(ckpt, "select");
    int best_epoch = ep ? atoi(ep) : 0;
    json_object_set_new(card, "epoch", json_integer(best_epoch));
    json_object_set_new(card, "select", json_string(sel ? sel : ""));
    json_object_set_new(card, "ncmi_version", json_string(ver ? ver : ""));
    free(ep);
    free(ver);
    free(sel);
    char hex[NN_SHA256_HEX];
    sha256_file(cfg_path, hex);
    json_object_set_new(card, "config_sha256", json_string(hex));
    sha256_file(ckpt, hex);
    json_object_set_new(card, "checkpoint_sha256", json_string(hex));
    json_object_set_new(card, "encoder_weights_sha256", json_string(sha));
    json_t *trn = json_object();
    json_object_set_new(trn, "slides", json_integer(dp->n_files));
    json_object_set_new(trn, "patches_min", json_integer(dp->bag_min));
    json_object_set_new(trn, "patches_median", json_integer(dp->bag_median));
    json_object_set_new(trn, "patches_max", json_integer(dp->bag_max));
    json_object_set_new(trn, "level0_mpp_min", json_real(dp->mpp_min));
    json_object_set_new(trn, "level0_mpp_max", json_real(dp->mpp_max));
    json_object_set_new(card, "training_data", trn);
    card_metrics(m, card, best_epoch);
    m->t_load = cli_now() - t0;
    return 0;
}

/* ------------------------------------------------------------------ */
/* one slide                                                           */

typedef struct sc_out {
    int ok;
    char error[12000];
    int pred;
    double *prob; /* [C] */
    int64_t n_patches;
} sc_out;

typedef struct sc_order {
    float a;
    int64_t i;
} sc_order;

static int cmp_attn_desc(const void *x, const void *y)
{
    const sc_order *a = x, *b = y;
    if (a->a != b->a) return a->a > b->a ? -1 : 1;
    return a->i < b->i ? -1 : a->i > b->i;
}

/* A message for a person when the slide cannot be opened. */
static void slide_open_message(char *buf, size_t n, const char *path, const sc_model *m)
{
    const char *e = ncmi_error();
    if (strstr(e, "--slide-mpp")) {
        snprintf(buf, n,
                 "the slide %s does not say its resolution (micrometres per pixel) usably, so it cannot be cut "
                 "into patches of the size the model was trained on (%.4g um/px). If you know the scanner's "
                 "resolution, give it with --slide-mpp (e.g. 0.25 for a 40x scan, 0.5 for 20x), or in the "
                 "manifest's mpp column. (%s)",
                 path, m->tiling.target_mpp, e);
    } else if (access(path, F_OK) != 0) {
        snprintf(buf, n, "the slide file %s does not exist: check the path (%s)", path, e);
    } else {
        snprintf(buf, n,
                 "cannot read the slide %s: check that it is a complete whole-slide image file (.svs, .tif, "
                 ".ndpi, .mrxs, ...) that OpenSlide reads, and that it was copied completely. (%s)",
                 path, e);
    }
}

static int score_slide(sc_model *m, const cli_slide *sl, const char *out_dir, int top_k, sc_out *res)
{
    const double t0 = cli_now();
    memset(res, 0, sizeof *res);
    res->pred = -1;
    res->prob = calloc((size_t)m->C, sizeof *res->prob);
    const char *id = sl->id, *path = sl->path;
    char work[4400] = "", p[4600];
    tl_slide s;
    memset(&s, 0, sizeof s);
    int have_slide = 0, rc = -1;
    features_h5 f;
    memset(&f, 0, sizeof f);
    float *Z = NULL, *attn = NULL, *rank = NULL;
    uint8_t *thumb = NULL, *heat = NULL, *segmask = NULL, *thumb_jpg = NULL, *heat_jpg = NULL;
    size_t thumb_len = 0, heat_len = 0;
    sc_patch *top = NULL;
    int n_top = 0;
    sc_order *ord = NULL;
    json_t *jr = NULL;
    tl_tile_result tr;
    memset(&tr, 0, sizeof tr);
    sc_report r;
    memset(&r, 0, sizeof r);
#define FAIL(...)                                                 \
    do {                                                          \
        snprintf(res->error, sizeof res->error, __VA_ARGS__); \
        goto out;                                                 \
    } while (0)
    if (!res->prob) FAIL("out of memory");
    if (!path) FAIL("slide %s has no path (give the manifest a path column)", id);

    /* 1. the slide: readable, resolution known and fine enough */
    if (tl_slide_open(&s, path, sl->mpp) != 0) {
        slide_open_message(res->error, sizeof res->error, path, m);
        goto out;
    }
    have_slide = 1;
    const double tgt = m->tiling.target_mpp, mpp = s.mpp_x;
    if (mpp > tgt * MPP_TOLERANCE)
        FAIL("the slide %s was scanned at %.4g um/px (about %.3gx), coarser than the %.4g um/px (%.3gx) the model "
             "%s was trained on: its patches would have to be enlarged %.1f times, and the model would see "
             "blurred tissue it never saw in training. Scan the slide at %.3gx or finer, or use a model trained "
             "at this resolution. (If the recorded resolution is wrong, give the right one with --slide-mpp.)",
             path, mpp, 10.0 / mpp, tgt, 10.0 / tgt, m->run, mpp / tgt, 10.0 / tgt);
    snprintf(r.mpp_source, sizeof r.mpp_source, "%s",
             !strcmp(s.mpp_source, "override") ? "given with --slide-mpp or the manifest" : s.mpp_source);
    sc_report_flag(&r, 0, "resolution %.4g um/px (%s), patches taken at the training resolution %.4g um/px", mpp,
                   r.mpp_source, tgt);
    if (mpp > tgt * 1.001)
        sc_report_flag(&r, 1,
                       "the slide is slightly coarser (%.4g um/px) than the training resolution (%.4g um/px): "
                       "patches are enlarged %.1f%%",
                       mpp, tgt, 100.0 * (mpp / tgt - 1));
    if (m->dp.mpp_max > 0 && (mpp < m->dp.mpp_min / 1.25 || mpp > m->dp.mpp_max * 1.25))
        sc_report_flag(&r, 1,
                       "scanned at %.4g um/px, unlike the training slides (%.4g to %.4g um/px): a different "
                       "scanner or magnification may change what the model sees",
                       mpp, m->dp.mpp_min, m->dp.mpp_max);
    if (fabs(s.mpp_x - s.mpp_y) > 0.01 * s.mpp_x)
        sc_report_flag(&r, 1, "non-square pixels (%.4g x %.4g um/px)", s.mpp_x, s.mpp_y);
    if (m->warn_precision[0]) sc_report_flag(&r, 1, "%s", m->warn_precision);

    /* 2. tile, as the training slides were (into a temporary folder) */
    snprintf(work, sizeof work, "%s/.%s.score.tmp.%ld", out_dir, id, (long)getpid());
    rm_rf(work);
    static const char *subs[] = {"patches", "contours", "previews", "topk"};
    for (int k = 0; k < 4; k++) {
        snprintf(p, sizeof p, "%s/%s", work, subs[k]);
        if (cli_mkdir_p(p)) FAIL("%s", ncmi_error());
    }
    if (tl_tile_slide(path, id, sl->mpp, work, &m->tiling, &tr) != 0)
        FAIL("cannot read the image of the slide %s: the file opens but its image data cannot be decoded "
             "(a damaged or incompletely copied file?). Copy or export the slide again. (%s)",
             path, ncmi_error());
    const double t_tile = cli_now() - t0;
    const double mm2 = tr.tissue_area * mpp * mpp * 1e-6;
    if (tr.n_patches == 0)
        FAIL("no tissue found on the slide %s (segmentation preset '%s' of the training slides, %.2f mm2 of tissue "
             "found, no %d px patch at %.4g um/px fits): there is nothing to score. Check that this is the right "
             "slide and that it is not blank.",
             path, m->tiling.preset, mm2, m->tiling.patch_size, tgt);
    if (tr.n_read_errors)
        sc_report_flag(&r, 1, "unreadable regions of the slide were treated as background: %s", tr.note);
    r.tissue_mm2 = mm2;
    r.n_contours = tr.n_contours;

    /* 3. read and encode the patches */
    const double t1 = cli_now();
    char cpath[4600], fpath[4600];
    snprintf(cpath, sizeof cpath, "%s/patches/%s.h5", work, id);
    snprintf(fpath, sizeof fpath, "%s/features.h5", work);
    fx_slide_job job = {.slide_id = id, .slide_path = path, .coords_path = cpath, .out_path = fpath,
                        .mpp_override = sl->mpp};
    fx_extract_result fr;
    if (fx_extract_slide(&m->enc, &job, &m->xp, NULL, NULL, &fr) != 0)
        FAIL("cannot read the patches of %s: %s", path, ncmi_error());
    if (features_h5_read(&f, fpath, 1) != 0 || !f.coords) FAIL("%s", ncmi_error());
    const double t_feat = cli_now() - t1;
    r.read_errors = fr.n_read_errors;
    if (fr.n_read_errors)
        sc_report_flag(&r, 1, "%d patch(es) could not be read (corrupt image data) and were encoded as white",
                       fr.n_read_errors);

    /* 4. the head */
    const double t2 = cli_now();
    const int64_t n = f.n;
    if (m->std_mean) {
        if (f.d != m->std_dim)
            FAIL("the features of %s have %d dimensions, the run's standardization %d", path, (int)f.d, m->std_dim);
        for (int64_t r0 = 0; r0 < n; r0++) /* as mil/bags.c does for the training bags */
            for (int j = 0; j < m->std_dim; j++)
                f.features[r0 * m->std_dim + j] = (f.features[r0 * m->std_dim + j] - m->std_mean[j]) * m->std_inv[j];
    }
    m->bagc.x = f.features;
    m->bagc.n = n;
    m->bagc.d = f.d;
    if (tr_embed(&m->tr, &m->bag, &Z) != 0) FAIL("%s", ncmi_error());
    int an = 0, ak = 0;
    const float *a = mil_last_attention(&m->model, &an, &ak);
    attn = malloc((size_t)n * sizeof *attn);
    rank = malloc((size_t)n * sizeof *rank);
    if (!attn || !rank) FAIL("out of memory");
    const char *attn_rule;
    if (a && an == n && ak >= 1) {
        for (int64_t i = 0; i < n; i++) {
            double v = 0;
            for (int k = 0; k < ak; k++) v += a[i * ak + k];
            attn[i] = (float)(v / ak);
        }
        attn_rule = m->kind == MIL_TRANSMIL ? "TransMIL: the class token's attention to each patch in the last "
                                              "layer, averaged over the heads"
                    : m->kind == MIL_ASMIL  ? "ASMIL: each patch's attention averaged over the tokens and heads"
                    : m->kind == MIL_AEM    ? "AEM: the gated attention pooling weight of each patch"
                                            : "ABMIL: the gated attention pooling weight of each patch";
    } else {
        for (int64_t i = 0; i < n; i++) attn[i] = 1.f / (float)n;
        attn_rule = "none (the head gave no attention weights for this slide)";
        sc_report_flag(&r, 1, "the model gave no attention weights: the heatmap and top patches are not meaningful");
    }
    if (tr_predict_from_z(&m->tr, Z, 1, m->method, &res->pred, res->prob) != 0) FAIL("%s", ncmi_error());
    const double t_head = cli_now() - t2;
    res->n_patches = n;

    /* 5. outputs, in the temporary folder */
    const double t3 = cli_now();
    tl_heatmap_rank(attn, (size_t)n, rank);
    int tw = 0, th = 0;
    double dsx = 1, dsy = 1;
    const int64_t longest = s.w[0] > s.h[0] ? s.w[0] : s.h[0];
    const double thumb_mpp = mpp * (double)longest / THUMB_SIDE;
    if (tl_slide_lowres(&s, thumb_mpp > mpp ? thumb_mpp : mpp, THUMB_SIDE, &thumb, &tw, &th, &dsx, &dsy) != 0)
        FAIL("cannot read a thumbnail of %s: %s", path, ncmi_error());
    /* the tissue mask of the tiling: colour only on tissue */
    const int sw = tr.seg_w, sh = tr.seg_h;
    const double sdx = tr.seg_dsx, sdy = tr.seg_dsy;
    segmask = tr.seg_mask;
    tr.seg_mask = NULL;
    if (!segmask || sw < 1 || sh < 1) FAIL("%s: the tiling kept no tissue mask", path);
    const int margin = th >= 60 ? 44 : 0, hw = tw + margin;
    heat = malloc((size_t)hw * (size_t)th * 3);
    uint8_t *drawn = malloc((size_t)tw * (size_t)th * 3);
    if (!heat || !drawn) {
        free(drawn);
        FAIL("out of memory");
    }
    memcpy(drawn, thumb, (size_t)tw * (size_t)th * 3);
    const int64_t patch0 = tr.patch_size_level0;
    if (tl_heatmap_draw(drawn, tw, th, 1.0 / dsx, 1.0 / dsy, f.coords, (size_t)n, patch0, rank, 0.5f) != 0) {
        free(drawn);
        FAIL("%s", ncmi_error());
    }
    for (int y = 0; y < th; y++)
        for (int x = 0; x < tw; x++) {
            uint8_t *o = heat + 3 * ((size_t)y * hw + x);
            const size_t q = (size_t)y * tw + x;
            int mx = (int)(((x + 0.5) * dsx) / sdx), my = (int)(((y + 0.5) * dsy) / sdy);
            if (mx >= sw) mx = sw - 1;
            if (my >= sh) my = sh - 1;
            const uint8_t *src = segmask[(size_t)my * sw + mx] ? drawn + 3 * q : thumb + 3 * q;
            memcpy(o, src, 3);
        }
    free(drawn);
    if (margin) {
        for (int y = 0; y < th; y++) memset(heat + 3 * ((size_t)y * hw + tw), 255, (size_t)margin * 3);
        const int bh = th - 20 < 300 ? th - 20 : 300;
        tl_heatmap_colorbar(heat, hw, th, tw + 14, 10, 16, bh);
    }
    char name_json[300], name_heat[300], name_html[300], name_topk[300];
    snprintf(name_json, sizeof name_json, "%s.score.json", id);
    snprintf(name_heat, sizeof name_heat, "%s.heatmap.png", id);
    snprintf(name_html, sizeof name_html, "%s.html", id);
    snprintf(name_topk, sizeof name_topk, "%s.topk", id);
    snprintf(p, sizeof p, "%s/%s", work, name_heat);
    if (tl_png_write(p, heat, hw, th) != 0) FAIL("%s", ncmi_error());
    if (tl_jpeg_encode(thumb, tw, th, 85, &thumb_jpg, &thumb_len) != 0 ||
        tl_jpeg_encode(heat, hw, th, 85, &heat_jpg, &heat_len) != 0)
        FAIL("%s", ncmi_error());

    /* top-k patches at level 0 */
    ord = malloc((size_t)n * sizeof *ord);
    if (!ord) FAIL("out of memory");
    for (int64_t i = 0; i < n; i++) ord[i] = (sc_order){attn[i], i};
    qsort(ord, (size_t)n, sizeof *ord, cmp_attn_desc);
    n_top = top_k < n ? top_k : (int)n;
    top = calloc((size_t)(n_top ? n_top : 1), sizeof *top);
    uint8_t *pix = malloc((size_t)patch0 * (size_t)patch0 * 3);
    if (!top || !pix) {
        free(pix);
        FAIL("out of memory");
    }
    for (int k = 0; k < n_top; k++) {
        sc_patch *t = &top[k];
        const int64_t i = ord[k].i;
        t->x = f.coords[2 * i];
        t->y = f.coords[2 * i + 1];
        t->size0 = patch0;
        t->attn = attn[i];
        t->rank01 = rank[i];
        snprintf(t->file, sizeof t->file, "%s/rank%02d_x%lld_y%lld.png", name_topk, k + 1, (long long)t->x,
                 (long long)t->y);
        if (tl_slide_read_rgb(&s, t->x, t->y, 0, (int)patch0, (int)patch0, pix) != 0) {
            sc_report_flag(&r, 1, "top patch %d could not be read: %s", k + 1, ncmi_error());
            memset(pix, 255, (size_t)patch0 * (size_t)patch0 * 3);
        }
        snprintf(p, sizeof p, "%s/topk/rank%02d_x%lld_y%lld.png", work, k + 1, (long long)t->x, (long long)t->y);
        uint8_t *jb = NULL;
        size_t jl = 0;
        if (tl_png_write(p, pix, (int)patch0, (int)patch0) != 0 ||
            tl_jpeg_encode(pix, (int)patch0, (int)patch0, 85, &jb, &jl) != 0) {
            free(pix);
            FAIL("%s", ncmi_error());
        }
        t->jpg = jb;
        t->jpg_len = jl;
    }
    free(pix);

    /* quality lines */
    sc_report_flag(&r, 0, "tissue found: %.2f mm2 in %d piece%s", mm2, tr.n_contours, tr.n_contours == 1 ? "" : "s");
    sc_report_flag(&r, 0, "%lld patches of %d px at %.4g um/px (%lld level-0 px, read at level %d)", (long long)n,
                   m->tiling.patch_size, tgt, (long long)patch0, fr.level);
    if (n < 8)
        sc_report_flag(&r, 1, "only %lld patch%s of tissue: the prediction rests on very little tissue", (long long)n,
                       n == 1 ? "" : "es");
    if (m->dp.bag_min > 0 && (n < m->dp.bag_min / 2 || n > m->dp.bag_max * 2))
        sc_report_flag(&r, 1,
                       "%lld patches, far outside the training slides' range (%lld to %lld): an unusually "
                       "small or large slide for this model",
                       (long long)n, (long long)m->dp.bag_min, (long long)m->dp.bag_max);

    /* the reports */
    r.slide_id = id;
    r.slide_path = path;
    r.width = s.w[0];
    r.height = s.h[0];
    r.mpp = mpp;
    r.level = fr.level;
    r.C = m->C;
    r.classes = m->classes;
    r.pred = res->pred;
    r.prob = res->prob;
    r.rule = m->rule;
    r.rule_detail = m->rule_detail;
    r.n_patches = n;
    r.attn_rule = attn_rule;
    r.top = top;
    r.n_top = n_top;
    r.thumb_jpg = thumb_jpg;
    r.thumb_len = thumb_len;
    r.heat_jpg = heat_jpg;
    r.heat_len = heat_len;
    r.model = m->model_j;
    r.tiling = m->tiling_j;
    r.features = m->features_j;
    r.t_load = m->t_load;
    r.t_tile = t_tile;
    r.t_features = t_feat;
    r.t_head = t_head;
    snprintf(r.json_name, sizeof r.json_name, "%s", name_json);
    snprintf(r.heatmap_name, sizeof r.heatmap_name, "%s", name_heat);
    snprintf(r.html_name, sizeof r.html_name, "%s", name_html);
    snprintf(r.topk_dir, sizeof r.topk_dir, "%s", name_topk);
    /* the HTML and JSON carry the time up to here; outputs are then only renamed */
    r.t_outputs = cli_now() - t3;
    r.t_total = cli_now() - t0;
    snprintf(p, sizeof p, "%s/%s", work, name_html);
    if (sc_report_html(&r, p) != 0) FAIL("%s", ncmi_error());
    r.t_outputs = cli_now() - t3;
    r.t_total = cli_now() - t0;
    jr = sc_report_json(&r);
    snprintf(p, sizeof p, "%s/%s", work, name_json);
    errno = 0;
    if (json_dump_file(jr, p, JSON_INDENT(2) | JSON_REAL_PRECISION(17)) != 0)
        FAIL("%s: cannot write: %s", p, errno ? strerror(errno) : "write error");

    /* 6. into place: the top-k folder, then the files (an old top-k folder is
     * moved into the temporary folder and removed with it) */
    char dst[4600], old[4600];
    snprintf(dst, sizeof dst, "%s/%s", out_dir, name_topk);
    snprintf(old, sizeof old, "%s/old_topk", work);
    if (is_dir(dst) && rename(dst, old) != 0) FAIL("%s: cannot replace: %s", dst, strerror(errno));
    snprintf(p, sizeof p, "%s/topk", work);
    if (rename(p, dst) != 0) FAIL("%s: cannot move into place: %s", dst, strerror(errno));
    const char *names[] = {name_heat, name_json, name_html};
    for (int k = 0; k < 3; k++) {
        snprintf(p, sizeof p, "%s/%s", work, names[k]);
        snprintf(dst, sizeof dst, "%s/%s", out_dir, names[k]);
        if (rename(p, dst) != 0) {
            int e = errno;
            for (int j = 0; j < k; j++) { /* no partial set of outputs */
                snprintf(dst, sizeof dst, "%s/%s", out_dir, names[j]);
                unlink(dst);
            }
            snprintf(dst, sizeof dst, "%s/%s", out_dir, name_topk);
            rm_rf(dst);
            FAIL("%s/%s: cannot move into place: %s", out_dir, names[k], strerror(e));
        }
    }
    sc_report_print(&r, stdout);
    fflush(stdout);
    res->ok = 1;
    rc = 0;
#undef FAIL
out:
    if (work[0]) rm_rf(work);
    if (have_slide) tl_slide_close(&s);
    features_h5_free(&f);
    m->bagc.x = NULL;
    free(tr.seg_mask);
    json_decref(jr);
    for (int k = 0; top && k < n_top; k++) free((void *)top[k].jpg);
    free(top);
    free(ord);
    free(Z);
    free(attn);
    free(rank);
    free(thumb);
    free(heat);
    free(segmask);
    free(thumb_jpg);
    free(heat_jpg);
    return rc;
}

/* ------------------------------------------------------------------ */
/* the command                                                         */

static int write_csv(const char *path, const sc_model *m, const cli_slide *sl, const sc_out *res, int n,
                     const eval_manifest *man)
{
    char tmp[4400];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "w");
    if (!f) return ncmi_error_set("%s: cannot write: %s", path, strerror(errno));
    fputs("slide_id,label,pred", f);
    for (int c = 0; c < m->C; c++) {
        fputs(",", f);
        char col[300];
        snprintf(col, sizeof col, "p_%s", m->classes[c]);
        cli_csv_field(f, col);
    }
    fputs(",n_patches,status,error\n", f);
    for (int i = 0; i < n; i++) {
        cli_csv_field(f, sl[i].id);
        fputc(',', f);
        int row = man ? eval_manifest_find(man, sl[i].id) : -1;
        if (row >= 0) cli_csv_field(f, man->rows[row].label);
        fputc(',', f);
        if (res[i].ok) cli_csv_field(f, m->classes[res[i].pred]);
        for (int c = 0; c < m->C; c++) {
            if (res[i].ok) fprintf(f, ",%.9g", res[i].prob[c]);
            else fputc(',', f);
        }
        fprintf(f, ",%lld,%s,", (long long)res[i].n_patches, res[i].ok ? "ok" : "failed");
        cli_csv_field(f, res[i].ok ? "" : res[i].error);
        fputc('\n', f);
    }
    int bad = ferror(f);
    if (fclose(f) != 0 || bad || rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return ncmi_error_set("%s: cannot write: %s", path, strerror(e));
    }
    return 0;
}

int ncmi_cmd_score(int argc, char **argv)
{
    const char *run = NULL, *out = ".", *manifest = NULL, *weights = NULL, *method = NULL;
    const char *slide = NULL;
    int top_k = 8, batch = 0, readers = 0;
    double slide_mpp = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = NULL;
        int k;
        if (cli_is_help(a)) {
            ncmi_help_score(stdout);
            return NCMI_EXIT_OK;
        }
#define OPT(name) ((k = cli_opt_value(argc, argv, &i, CMD, name, &v)) != 0)
        if (OPT("--run")) {
            if (k < 0) return NCMI_EXIT_USAGE;
            run = v;
        } else if (OPT("--out")) {
            if (k < 0) return NCMI_EXIT_USAGE;
            out = v;
        } else if (OPT("--manifest")) {
            if (k < 0) return NCMI_EXIT_USAGE;
            manifest = v;
        } else if (OPT("--weights")) {
            if (k < 0) return NCMI_EXIT_USAGE;
            weights = v;
        } else if (OPT("--method")) {
            if (k < 0) return NCMI_EXIT_USAGE;
            method = v;
        } else if (OPT("--top-k")) {
            if (k < 0) return NCMI_EXIT_USAGE;
            if (!cli_parse_int(v, &top_k) || top_k < 1 || top_k > 1000)
                return cli_usage_error(CMD, "--top-k '%s': 1 to 1000 patches", v);
        } else if (OPT("--batch")) {
            if (k < 0) return NCMI_EXIT_USAGE;
            if (!cli_parse_int(v, &batch) || batch < 1 || batch > 65536)
                return cli_usage_error(CMD, "--batch '%s': 1 to 65536 patches", v);
        } else if (OPT("--readers")) {
            if (k < 0) return NCMI_EXIT_USAGE;
            if (!cli_parse_int(v, &readers) || readers < 1 || readers > 64)
                return cli_usage_error(CMD, "--readers '%s': 1 to 64 threads", v);
        } else if (OPT("--slide-mpp")) {
            if (k < 0) return NCMI_EXIT_USAGE;
            if (!cli_parse_double(v, &slide_mpp) || slide_mpp <= 0 || slide_mpp > 100)
                return cli_usage_error(CMD, "--slide-mpp '%s': the slide's level-0 um/px, e.g. 0.25", v);
        } else if (a[0] == '-' && a[1]) {
            return cli_usage_error(CMD, "unknown option '%s'", a);
        } else {
            if (slide)
                return cli_usage_error(CMD, "one slide at a time ('%s', '%s'); use --manifest for several", slide, a);
            slide = a;
        }
#undef OPT
    }
    if (!run) return cli_usage_error(CMD, "--run DIR is required (the run folder of the trained model)");
    if (!slide && !manifest) return cli_usage_error(CMD, "no slide: give a slide file or --manifest CSV");
    if (slide && manifest) return cli_usage_error(CMD, "give a slide or --manifest, not both");
    if (strlen(out) > 3000 || strlen(run) > 3000) return cli_usage_error(CMD, "path too long");
    if (!features_h5_available() || tl_tile_init() != 0) {
        cli_error(CMD, "ncmi was built without HDF5, OpenSlide or libvips: it cannot score slides");
        return NCMI_EXIT_INTERNAL;
    }

    /* the slides (checked before anything is written) */
    cli_slide *sl = NULL;
    int n = 0, rc;
    const char *files[1] = {slide};
    rc = cli_slide_list(CMD, manifest, files, slide ? 1 : 0, slide_mpp, 1, 1, &sl, &n);
    if (rc) return rc;
    eval_manifest man;
    int have_man = 0;
    if (manifest && eval_manifest_read(&man, manifest) == 0) have_man = 1;
    ncmi_error_clear();

    /* a folder for the model's temporary files */
    char tmpl[] = "/tmp/ncmi-score-XXXXXX";
    const char *tmp_dir = mkdtemp(tmpl);
    if (!tmp_dir) {
        cli_error(CMD, "cannot create a temporary folder: %s", strerror(errno));
        cli_slides_free(sl, n);
        if (have_man) eval_manifest_free(&man);
        return NCMI_EXIT_INTERNAL;
    }
    sc_model m;
    memset(&m, 0, sizeof m);
    rc = model_load(&m, run, weights, method, batch, readers, tmp_dir);
    rm_rf(tmp_dir);
    int created_out = 0;
    if (!rc) {
        created_out = !is_dir(out);
        if (cli_mkdir_p(out) != 0) {
            cli_error(CMD, "%s", ncmi_error());
            rc = NCMI_EXIT_INPUT;
        }
    }
    if (rc) {
        model_free(&m);
        cli_slides_free(sl, n);
        if (have_man) eval_manifest_free(&man);
        return rc;
    }
    fprintf(stderr, "ncmi: score: model %s (%s, %s) loaded in %.2f s; encoder %s on %s; %d slide(s) -> %s\n", run,
            m.model.desc, m.rule, m.t_load, m.dp.encoder, nn_device_name(cli_device_cuda), n, out);

    sc_out *res = calloc((size_t)(n ? n : 1), sizeof *res);
    int n_ok = 0;
    for (int i = 0; i < n; i++) {
        if (score_slide(&m, &sl[i], out, top_k, &res[i]) == 0) {
            n_ok++;
        } else {
            cli_error(CMD, "%s%s%s", n > 1 ? sl[i].id : "", n > 1 ? ": " : "", res[i].error);
        }
    }
    if (manifest) {
        char csv[4200];
        snprintf(csv, sizeof csv, "%s/score_predictions.csv", out);
        if (write_csv(csv, &m, sl, res, n, have_man ? &man : NULL) != 0) {
            cli_error(CMD, "%s", ncmi_error());
            n_ok = -1;
        } else {
            fprintf(stderr, "ncmi: score: %d of %d slide(s) scored; predictions: %s\n", n_ok, n, csv);
        }
    }
    rc = n_ok == n ? NCMI_EXIT_OK : n_ok <= 0 ? NCMI_EXIT_INPUT : NCMI_EXIT_PARTIAL;
    if (n_ok < 0) rc = NCMI_EXIT_INPUT;
    if (rc == NCMI_EXIT_INPUT && created_out && !manifest) rmdir(out); /* only when empty */
    for (int i = 0; i < n; i++) free(res[i].prob);
    free(res);
    model_free(&m);
    cli_slides_free(sl, n);
    if (have_man) eval_manifest_free(&man);
    return rc;
}
