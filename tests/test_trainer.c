/* The generic trainer (train/trainer.h) end to end, through `ncmi train` and
 * `ncmi eval --run`, and issue 3's acceptance:
 *  - MNIST (the fixture's 10,000 test images split 7,000 train / 1,000 val /
 *    2,000 test): an MLP with the NCMI head (CC and LP) and with linear + CE
 *    each reach >= 95% test accuracy on CPU in under a minute, from the
 *    command line with configs/mnist_mlp_{ncmi,ce}.yaml, writing the run folder;
 *  - ablation (paper Table V's direction): the same NCMI run with softmax in
 *    place of NSF, or without centring, ends with a lower test accuracy
 *    (inside the NCMI test, which it compares with);
 *  - --resume of an NCMI run is bit-identical (both optimizers, centre, RNG);
 *  - a label outside the class list is an error naming the file and row;
 *  - selection, eval_every, early stopping, ncmi eval --run.
 * The MNIST tests skip (visibly) without the fixture. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "../nn/error.h"
#include "../nn/ops.h"
#include "../nn/safetensors.h"
#include "../train/trainer.h"
#include "test.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int json_has(const char *path, const char *text)
{
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    static char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    return strstr(buf, text) != NULL;
}

static int mnist_dir(char *buf, size_t n)
{
    snprintf(buf, n, "%s/mnist", test_fixtures_dir());
    char p[1200];
    snprintf(p, sizeof p, "%s/t10k-labels-idx1-ubyte.gz", buf);
    return test_file_nonempty(p);
}

#define NEED_BINARY()                                                                              \
    do {                                                                                           \
        struct stat st_;                                                                           \
        if (stat(test_ncmi_bin(), &st_) != 0) SKIP("%s not built", test_ncmi_bin());              \
    } while (0)

/* Train a config on MNIST; returns the exit code; the run folder in dir. */
static int train_mnist(const char *config, const char *name, const char *extra, char *dir, size_t n,
                       double *seconds, char **out)
{
    char mn[1024];
    mnist_dir(mn, sizeof mn);
    snprintf(dir, n, "%s/runs_trainer/%s", test_tmpdir(), name);
    double t0 = now_s();
    int rc = test_ncmi(out, "train --config %s --out %s/runs_trainer --set name=%s --set data.root=%s %s", config,
                  test_tmpdir(), name, mn, extra ? extra : "");
    if (seconds) *seconds = now_s() - t0;
    return rc;
}

TEST(trainer_mnist_ncmi_cc_lp_95)
{
    NEED_BINARY();
    char mn[1024], dir[1024], p[1200], *out = NULL;
    if (!mnist_dir(mn, sizeof mn)) SKIP("no MNIST fixture in %s", mn);
    double sec;
    int rc = train_mnist("configs/mnist_mlp_ncmi.yaml", "mnist_ncmi", NULL, dir, sizeof dir, &sec, &out);
    REQUIRE(rc == 0, "exit %d\n%s", rc, out ? out : "");
    EXPECT(out && strstr(out, "head ncmi") && strstr(out, "7000 train / 1000 val / test 2000"),
           "banner:\n%s", out);
    free(out);
    const char *files[] = {"config.yaml", "log.csv", "last.safetensors", "best.safetensors",
                           "predictions_test.csv", "metrics_test.json", "predictions_test_cc.csv",
                           "metrics_test_cc.json", "predictions_test_learned.csv",
                           "metrics_test_learned.json", "predictions_test_lp.csv", "metrics_test_lp.json"};
    for (int i = 0; i < 12; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, files[i]);
        EXPECT(test_file_nonempty(p), "%s missing", p);
    }
    snprintf(p, sizeof p, "%s/metrics_test_cc.json", dir);
    double cc = test_json_number(p, "accuracy");
    EXPECT(json_has(p, "\"primary\": true") && json_has(p, "\"method\": \"cc\""), "%s: primary/method", p);
    snprintf(p, sizeof p, "%s/metrics_test_lp.json", dir);
    double lp = test_json_number(p, "accuracy");
    EXPECT(json_has(p, "\"primary\": false"), "%s: lp is not primary", p);
    snprintf(p, sizeof p, "%s/metrics_test_learned.json", dir);
    double learned = test_json_number(p, "accuracy");
    snprintf(p, sizeof p, "%s/metrics_test.json", dir);
    EXPECT(test_json_number(p, "accuracy") == cc, "metrics_test.json is not the primary (cc) one");
    printf("    MNIST MLP + NCMI: test accuracy CC %.4f, LP %.4f, learned centroids %.4f; %.1f s\n", cc,
           lp, learned, sec);
    EXPECT(cc >= 0.95, "NCMI-CC test accuracy %.4f < 0.95", cc);
    EXPECT(lp >= 0.95, "NCMI-LP test accuracy %.4f < 0.95", lp);
    printf("    goal < 60 s on 2 free cores: %s (printed, not asserted)\n", sec < 60 ? "met" : "NOT met");

    /* the checkpoint carries the NCMI state and the class names */
    snprintf(p, sizeof p, "%s/best.safetensors", dir);
    nn_safetensors st;
    REQUIRE(nn_st_open(&st, p) == 0, "%s", ncmi_error());
    const nn_st_entry *xi = nn_st_find(&st, "ncmi.xi"), *c = nn_st_find(&st, "ncmi.center");
    EXPECT(xi && xi->ndim == 2 && xi->shape[0] == 10 && xi->shape[1] == 128, "ncmi.xi");
    EXPECT(c && c->ndim == 1 && c->shape[0] == 128, "ncmi.center");
    EXPECT(nn_st_find(&st, "layers.1.weight") && !nn_st_find(&st, "layers.2.weight"), "MLP tensors");
    const char *tau = nn_st_meta(&st, "ncmi_tau"), *cls = nn_st_meta(&st, "classes");
    EXPECT(tau && atof(tau) == 0.5, "ncmi_tau '%s'", tau ? tau : "");
    EXPECT(cls && !strcmp(cls, "[\"0\",\"1\",\"2\",\"3\",\"4\",\"5\",\"6\",\"7\",\"8\",\"9\"]"), "classes '%s'",
           cls ? cls : "");
    EXPECT(nn_st_meta(&st, "ncmi_center") && nn_st_meta(&st, "config"), "metadata");
    nn_st_close(&st);

    /* ncmi eval --run rebuilds the model and predicts the same (LP retrained, seeded) */
    rc = test_ncmi(&out, "eval --run %s --method lp", dir);
    EXPECT(rc == 0 && out && strstr(out, "predictions_test_lp.csv: 2000 samples"), "eval --run: exit %d\n%s",
           rc, out ? out : "");
    free(out);
    snprintf(p, sizeof p, "%s/metrics_test_lp.json", dir);
    EXPECT(test_json_number(p, "accuracy") == lp, "eval --run lp accuracy %.4f vs %.4f at training",
           test_json_number(p, "accuracy"), lp);
    rc = test_ncmi(&out, "eval --run %s --method linear", dir);
    EXPECT(rc == 1 && out && strstr(out, "ncmi head"), "linear on an ncmi run: exit %d\n%s", rc, out ? out : "");
    free(out);

    /* ablation, paper Table V's direction: the same run with softmax in place of
     * NSF, or without centring, ends lower (test accuracy of CC at the last
     * epoch; LP shortened: not compared) */
    const char *names[2] = {"abl_softmax", "abl_nocenter"};
    const char *extra[2] = {"--set ncmi.simplex=softmax", "--set ncmi.centering=false"};
    double abl[2];
    for (int k = 0; k < 2; k++) {
        char ex[256], d2[1024];
        snprintf(ex, sizeof ex, "--set train.eval_every=100 --set lp.epochs=1 %s", extra[k]);
        rc = train_mnist("configs/mnist_mlp_ncmi.yaml", names[k], ex, d2, sizeof d2, NULL, &out);
        REQUIRE(rc == 0, "%s: exit %d\n%s", names[k], rc, out ? out : "");
        free(out);
        snprintf(p, sizeof p, "%s/metrics_test_cc.json", d2);
        abl[k] = test_json_number(p, "accuracy");
    }
    printf("    ablation, NCMI-CC test accuracy: NSF + centring %.4f, softmax %.4f, NSF without centring %.4f\n",
           cc, abl[0], abl[1]);
    EXPECT(abl[0] < cc - 0.2, "softmax %.4f is not far below NSF %.4f", abl[0], cc);
    EXPECT(abl[1] < cc - 0.005, "no centring %.4f is not below centring %.4f", abl[1], cc);
}

TEST(trainer_mnist_ce_95)
{
    NEED_BINARY();
    char mn[1024], dir[1024], p[1200], *out = NULL;
    if (!mnist_dir(mn, sizeof mn)) SKIP("no MNIST fixture in %s", mn);
    double sec;
    int rc = train_mnist("configs/mnist_mlp_ce.yaml", "mnist_ce", NULL, dir, sizeof dir, &sec, &out);
    REQUIRE(rc == 0, "exit %d\n%s", rc, out ? out : "");
    free(out);
    snprintf(p, sizeof p, "%s/metrics_test.json", dir);
    double acc = test_json_number(p, "accuracy");
    printf("    MNIST MLP + linear/CE: test accuracy %.4f; %.1f s\n", acc, sec);
    EXPECT(acc >= 0.95, "CE test accuracy %.4f < 0.95", acc);
    printf("    goal < 60 s on 2 free cores: %s (printed, not asserted)\n", sec < 60 ? "met" : "NOT met");
    snprintf(p, sizeof p, "%s/predictions_test.csv", dir);
    FILE *f = fopen(p, "r");
    char line[512] = "";
    if (f) {
        if (!fgets(line, sizeof line, f)) line[0] = 0;
        fclose(f);
    }
    EXPECT(!strcmp(line, "slide_id,label,pred,p_0,p_1,p_2,p_3,p_4,p_5,p_6,p_7,p_8,p_9\n"), "header '%s'", line);
    /* the classifier is the MLP's last layer, layers.2 */
    snprintf(p, sizeof p, "%s/best.safetensors", dir);
    nn_safetensors st;
    REQUIRE(nn_st_open(&st, p) == 0, "%s", ncmi_error());
    const nn_st_entry *w = nn_st_find(&st, "layers.2.weight");
    EXPECT(w && w->shape[0] == 10 && w->shape[1] == 128, "layers.2.weight");
    nn_st_close(&st);
}

static const char *synth_ncmi =
    "seed: 3\n"
    "data: {kind: synthetic, n_train: 240, n_val: 120, n_test: 120, n_classes: 3, dim: 8, separation: 4.0}\n"
    "model: {kind: mlp, hidden: [32, 16]}\n"
    "head: {kind: ncmi}\n"
    "ncmi: {tau: 0.5, momentum: 0.99, centroid_lr: 0.05}\n"
    "optim: {name: sgd, lr: 0.05, momentum: 0.9}\n"
    "schedule: {kind: multistep, milestones: [3], gamma: 0.5}\n"
    "lp: {epochs: 3}\n"
    "train: {epochs: 4, batch_size: 16, clip_grad_norm: 2.0, threads: 1}\n";

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (!f) return;
    fputs(text, f);
    fclose(f);
}

/* Every tensor of a is in b with the same bytes; counts optimizer tensors. */
static void same_tensors(const char *pa, const char *pb, int *n_optim, int *n_optim_xi)
{
    nn_safetensors a, b;
    *n_optim = *n_optim_xi = 0;
    if (nn_st_open(&a, pa)) {
        test_fail_at(__FILE__, __LINE__, "%s", ncmi_error());
        return;
    }
    if (nn_st_open(&b, pb)) {
        test_fail_at(__FILE__, __LINE__, "%s", ncmi_error());
        nn_st_close(&a);
        return;
    }
    EXPECT(a.n == b.n, "%d vs %d tensors", a.n, b.n);
    for (int i = 0; i < a.n; i++) {
        const nn_st_entry *ea = &a.entries[i], *eb = nn_st_find(&b, ea->name);
        if (!strncmp(ea->name, "optim.", 6)) (*n_optim)++;
        if (!strncmp(ea->name, "optim_xi.", 9)) (*n_optim_xi)++;
        EXPECT(eb && ea->nbytes == eb->nbytes && !memcmp(a.data + ea->offset, b.data + eb->offset, ea->nbytes),
               "tensor %s differs", ea->name);
    }
    const char *keys[] = {"rng", "best_score", "best_epoch", "epoch"};
    for (int k = 0; k < 4; k++) {
        const char *x = nn_st_meta(&a, keys[k]), *y = nn_st_meta(&b, keys[k]);
        EXPECT(x && y && !strcmp(x, y), "metadata %s: '%s' vs '%s'", keys[k], x ? x : "", y ? y : "");
    }
    nn_st_close(&a);
    nn_st_close(&b);
}

TEST(trainer_ncmi_resume_bit_identical)
{
    NEED_BINARY();
    char cfg[1024], runs[1024], pa[1200], pb[1200], *out = NULL;
    snprintf(cfg, sizeof cfg, "%s/synth_ncmi.yaml", test_tmpdir());
    snprintf(runs, sizeof runs, "%s/runs_ncmi_resume", test_tmpdir());
    write_text(cfg, synth_ncmi);
    int rc = test_ncmi(&out, "train --config %s --out %s --set name=straight", cfg, runs);
    REQUIRE(rc == 0, "straight: exit %d\n%s", rc, out ? out : "");
    free(out);
    rc = test_ncmi(&out, "train --config %s --out %s --set name=split --set train.epochs=2", cfg, runs);
    REQUIRE(rc == 0, "first half: exit %d\n%s", rc, out ? out : "");
    free(out);
    rc = test_ncmi(&out, "train --config %s --out %s --set name=split --resume", cfg, runs);
    REQUIRE(rc == 0, "resume: exit %d\n%s", rc, out ? out : "");
    EXPECT(out && strstr(out, "after epoch 2") && strstr(out, "differs from the checkpoint's in: train.epochs") == NULL,
           "resume:\n%s", out);
    free(out);
    snprintf(pa, sizeof pa, "%s/straight/last.safetensors", runs);
    snprintf(pb, sizeof pb, "%s/split/last.safetensors", runs);
    int no, nx;
    same_tensors(pa, pb, &no, &nx);
    EXPECT(no == 5 && nx == 2, "optimizer tensors: %d optim.* (want 4 momentum buffers + step), %d optim_xi.* (xi momentum + step)", no, nx);
    /* same log values (but the seconds) and the same final predictions */
    snprintf(pa, sizeof pa, "%s/straight/metrics_test_cc.json", runs);
    snprintf(pb, sizeof pb, "%s/split/metrics_test_cc.json", runs);
    EXPECT(test_json_number(pa, "accuracy") == test_json_number(pb, "accuracy") && test_json_number(pa, "auc_macro") == test_json_number(pb, "auc_macro"),
           "final metrics differ");
    printf("    synthetic NCMI run: test CC accuracy %.4f (straight and resumed)\n", test_json_number(pa, "accuracy"));

    /* ncmi eval --run: every method, both checkpoints */
    const char *methods[] = {"cc", "learned", "lp"};
    for (int k = 0; k < 3; k++) {
        rc = test_ncmi(&out, "eval --run %s/straight --method %s --checkpoint last --split val", runs, methods[k]);
        EXPECT(rc == 0 && out && strstr(out, "accuracy"), "eval --run %s: exit %d\n%s", methods[k], rc, out ? out : "");
        free(out);
        snprintf(pa, sizeof pa, "%s/straight/metrics_val_%s_last.json", runs, methods[k]);
        EXPECT(test_json_number(pa, "accuracy") >= 0.8, "%s: val accuracy %.3f", methods[k], test_json_number(pa, "accuracy"));
    }
    rc = test_ncmi(&out, "eval --run %s/straight --method bogus", runs);
    EXPECT(rc == 1 && out && strstr(out, "--method 'bogus'"), "bad method: exit %d\n%s", rc, out ? out : "");
    free(out);
    rc = test_ncmi(&out, "eval --run %s/nothing", runs);
    EXPECT(rc == 2 && out && strstr(out, "nothing/config.yaml"), "missing run: exit %d\n%s", rc, out ? out : "");
    free(out);
}

TEST(trainer_selection_eval_every_patience)
{
    NEED_BINARY();
    char cfg[1024], runs[1024], p[1200], *out = NULL;
    snprintf(cfg, sizeof cfg, "%s/synth_sel.yaml", test_tmpdir());
    snprintf(runs, sizeof runs, "%s/runs_sel", test_tmpdir());
    write_text(cfg, synth_ncmi);
    /* linear head, focal loss, select on f1_auc, evaluate every 2 epochs */
    int rc = test_ncmi(&out, "train --config %s --out %s --set name=f1auc --set head.kind=linear --set loss.kind=focal "
                  "--set train.select=f1_auc --set train.eval_every=2 --set train.epochs=5", cfg, runs);
    REQUIRE(rc == 0, "exit %d\n%s", rc, out ? out : "");
    EXPECT(out && strstr(out, "best val f1_auc"), "output:\n%s", out);
    free(out);
    snprintf(p, sizeof p, "%s/f1auc/log.csv", runs);
    FILE *f = fopen(p, "r");
    char line[1024];
    int rows = 0, nan_rows = 0;
    while (f && fgets(line, sizeof line, f))
        if (rows++ > 0 && strstr(line, ",nan,")) nan_rows++;
    if (f) fclose(f);
    EXPECT(rows == 6 && nan_rows == 2, "log.csv: %d lines, %d without evaluation (want 6, 2)", rows, nan_rows);
    snprintf(p, sizeof p, "%s/f1auc/metrics_test.json", runs);
    EXPECT(test_json_number(p, "accuracy") >= 0.8, "accuracy %.3f", test_json_number(p, "accuracy"));
    EXPECT(json_has(p, "\"method\": \"linear\""), "method");

    /* early stopping: an lr so small that nothing improves */
    rc = test_ncmi(&out, "train --config %s --out %s --set name=patience --set optim.lr=1e-9 --set head.kind=linear "
              "--set train.patience=2 --set train.epochs=10", cfg, runs);
    REQUIRE(rc == 0, "exit %d\n%s", rc, out ? out : "");
    EXPECT(out && strstr(out, "early stopping after epoch 3"), "output:\n%s", out);
    free(out);
    rc = test_ncmi(&out, "train --config %s --out %s --set name=patience --set optim.lr=1e-9 --set head.kind=linear "
              "--set train.patience=2 --set train.epochs=10 --resume", cfg, runs);
    EXPECT(rc == 0 && out && strstr(out, "nothing to do") && strstr(out, "stopped early"), "resume: exit %d\n%s",
           rc, out ? out : "");
    free(out);

    rc = test_ncmi(&out, "train --config %s --out %s --set train.select=bogus", cfg, runs);
    EXPECT(rc == 2 && out && strstr(out, "'train.select': 'bogus'"), "bad select: exit %d\n%s", rc, out ? out : "");
    free(out);
}

TEST(trainer_label_outside_class_list)
{
    NEED_BINARY();
    char mn[1024], dir[1024], *out = NULL;
    if (mnist_dir(mn, sizeof mn)) {
        int rc = train_mnist("configs/mnist_mlp_ce.yaml", "badlabel", "--set data.classes=[0,1,2,3,4,5,6,7,8]",
                             dir, sizeof dir, NULL, &out);
        EXPECT(rc == 2 && out && strstr(out, "t10k-labels-idx1-ubyte") && strstr(out, ": row ") &&
                   strstr(out, "label '9' is not in the class list (0, 1, 2, 3, 4, 5, 6, 7, 8)"),
               "exit %d\n%s", rc, out ? out : "");
        free(out);
    } else {
        printf("    (no MNIST fixture: the CLI half is skipped)\n");
    }
    /* the trainer itself checks every dataset against the class count */
    float *X = calloc(6, sizeof *X);
    int *y = malloc(3 * sizeof *y);
    y[0] = 0, y[1] = 4, y[2] = 1;
    char **ids = malloc(3 * sizeof *ids);
    ids[0] = strdup("a"), ids[1] = strdup("b"), ids[2] = strdup("c");
    int shape[1] = {2};
    tr_dataset d;
    REQUIRE(tr_dense_dataset_init(&d, "train", "cohort.csv", 3, 1, shape, X, y, ids, NULL) == 0, "%s", ncmi_error());
    tr_model m;
    int hidden[1] = {4};
    nn_rng r;
    nn_rng_seed(&r, 1);
    REQUIRE(tr_mlp_init(&m, 2, hidden, 1, &r) == 0, "%s", ncmi_error());
    tr_config c;
    tr_config_default(&c);
    char *names[3] = {"x", "y", "z"};
    c.n_classes = 3;
    c.class_names = names;
    tr_trainer t;
    int rc = tr_init(&t, &c, &m, &d, NULL, NULL, NULL);
    EXPECT(rc == -1 && !strcmp(ncmi_error(), "cohort.csv: row 2 (sample b): label 4 is not one of the 3 classes"),
           "got '%s'", ncmi_error());
    tr_free(&t);
    tr_model_free(&m);
    tr_dataset_free(&d);
}

/* ---- bags (the MIL path): one bag per sample, of different sizes, forwarded
 * one at a time; an aux term and an after-step hook ---- */

enum { BAG_N = 120, BAG_F = 6, BAG_C = 3 };

typedef struct bagset {
    int size[BAG_N];
    float *X[BAG_N]; /* [size, F] */
    char id[BAG_N][16];
} bagset;

static const char *bag_id(const tr_dataset *d, int i) { return ((bagset *)d->ctx)->id[i]; }

static int bag_inputs(const tr_dataset *d, nn_graph *g, const int *idx, int n, int training, nn_rng *rng,
                      nn_tensor **out)
{
    (void)training, (void)rng;
    if (n != 1) return ncmi_error_set("bags come one at a time");
    bagset *b = d->ctx;
    int shape[2] = {b->size[idx[0]], BAG_F};
    out[0] = nn_tensor_from(g, 2, shape, b->X[idx[0]]);
    return 1;
}

typedef struct bagmodel {
    nn_params P;
    nn_linear_m fc;
    int after_steps, aux_calls;
} bagmodel;

/* mean over the bag's instances, then Linear(F, 8) + ReLU -> z [1, 8]; aux = 0 * sum(z) */
static nn_tensor *bag_forward(tr_model *m, nn_graph *g, nn_tensor *const *in, int n_in, int training,
                              nn_rng *rng, nn_tensor **aux)
{
    (void)n_in, (void)rng;
    bagmodel *s = m->ctx;
    nn_tensor *z = nn_relu(g, nn_linear_m_forward(g, &s->fc, nn_mean(g, in[0], 0, 1)));
    if (training) {
        *aux = nn_scale(g, nn_sum_all(g, z), 0.f);
        s->aux_calls++;
    }
    return z;
}

static void bag_after_step(tr_model *m) { ((bagmodel *)m->ctx)->after_steps++; }

/* BAG_N bags of 1-9 instances, class i % BAG_C: N(class mean, I) with the
 * class means drawn from the cohort seed (the same for every bag_set_make
 * with that seed) and the bags from the stream seeded with bag_seed. */
static void bag_set_make(bagset *b, int *labels, tr_dataset *d, const char *name, uint64_t cohort_seed,
                         uint64_t bag_seed)
{
    nn_rng r;
    nn_rng_seed(&r, cohort_seed);
    float means[BAG_C][BAG_F];
    nn_rng_fill_normal(&r, &means[0][0], BAG_C * BAG_F, 0.f, 2.f);
    if (bag_seed != cohort_seed) nn_rng_seed(&r, bag_seed);
    for (int i = 0; i < BAG_N; i++) {
        labels[i] = i % BAG_C;
        b->size[i] = 1 + (int)nn_rng_below(&r, 9);
        b->X[i] = malloc((size_t)b->size[i] * BAG_F * sizeof(float));
        nn_rng_fill_normal(&r, b->X[i], (size_t)b->size[i] * BAG_F, 0.f, 1.f);
        for (int k = 0; k < b->size[i]; k++)
            for (int j = 0; j < BAG_F; j++) b->X[i][k * BAG_F + j] += means[labels[i]][j];
        snprintf(b->id[i], sizeof b->id[i], "bag%d", i);
    }
    memset(d, 0, sizeof *d);
    snprintf(d->name, sizeof d->name, "%s", name);
    d->n = BAG_N;
    d->labels = labels;
    d->bags = 1;
    d->sample_id = bag_id;
    d->inputs = bag_inputs;
    d->ctx = b;
}

static void bag_set_free(bagset *b)
{
    for (int i = 0; i < BAG_N; i++) free(b->X[i]);
}

/* The bag model (mean, Linear(F, 8), ReLU), its weights seeded. */
static void bag_model_make(bagmodel *bm, tr_model *m)
{
    memset(bm, 0, sizeof *bm);
    nn_params_init(&bm->P);
    nn_rng ir;
    nn_rng_seed(&ir, 9);
    nn_linear_m_init(&bm->fc, &bm->P, "fc1", BAG_F, 8, 1, &ir);
    memset(m, 0, sizeof *m);
    m->params = &bm->P;
    m->dim = 8;
    m->forward = bag_forward;
    m->after_step = bag_after_step;
    m->ctx = bm;
}

TEST(trainer_bags_ncmi_and_linear)
{
    bagset b;
    int labels[BAG_N];
    tr_dataset d;
    bag_set_make(&b, labels, &d, "train", 5, 5);
    char *names[BAG_C] = {"a", "b", "c"};
    for (int head = 0; head < 2; head++) {
        bagmodel bm;
        tr_model m;
        bag_model_make(&bm, &m);
        tr_config c;
        tr_config_default(&c);
        c.head = head ? TR_HEAD_NCMI : TR_HEAD_LINEAR;
        c.ncmi.tau = 0.5f;
        c.ncmi.momentum = 1.f - 1.f / BAG_N; /* about an epoch of bags */
        c.epochs = 30;
        c.batch_size = 4; /* 4 bags per step, z rows concatenated */
        c.lr = 0.05f;
        c.schedule.base_lr = c.lr;
        c.n_classes = BAG_C;
        c.class_names = names;
        c.lp_epochs = 5;
        tr_trainer t;
        REQUIRE(tr_init(&t, &c, &m, &d, &d, NULL, NULL) == 0, "%s", ncmi_error());
        REQUIRE(tr_fit(&t) == 0, "%s", ncmi_error());
        const int steps = c.epochs * (BAG_N / c.batch_size);
        EXPECT(bm.after_steps == steps && bm.aux_calls == steps * c.batch_size, "hooks: %d after-steps, %d aux",
               bm.after_steps, bm.aux_calls);
        EXPECT(t.st.epoch == c.epochs && t.n_log == c.epochs, "epochs %d, log rows %d", t.st.epoch, t.n_log);
        int pred[BAG_N];
        double prob[BAG_N * BAG_C];
        tr_method ms[3] = {TR_METHOD_LINEAR, TR_METHOD_CC, TR_METHOD_LP};
        for (int k = head ? 1 : 0; k < (head ? 3 : 1); k++) {
            REQUIRE(tr_predict(&t, &d, ms[k], pred, prob) == 0, "%s", ncmi_error());
            int hit = 0;
            for (int i = 0; i < BAG_N; i++) hit += pred[i] == labels[i];
            printf("    bags, %s head, %s: training accuracy %.3f\n", head ? "ncmi" : "linear",
                   tr_method_name(ms[k]), (double)hit / BAG_N);
            EXPECT(hit >= 0.9 * BAG_N, "%s: %d of %d", tr_method_name(ms[k]), hit, BAG_N);
        }
        tr_free(&t);
        nn_params_free(&bm.P);
    }
    bag_set_free(&b);
}

/* lp.grid_epochs x lp.grid_lr: every pair is a probe trained as the single
 * setting would train it, and the one kept has the best validation score
 * (select: loss, so that ties are unlikely); without a validation set the
 * grid is refused at tr_init. */
TEST(trainer_lp_grid_chosen_on_val)
{
    bagset b, bv;
    int labels[BAG_N], lv[BAG_N];
    tr_dataset d, dv;
    bag_set_make(&b, labels, &d, "train", 5, 5);
    bag_set_make(&bv, lv, &dv, "val", 5, 77);
    char *names[BAG_C] = {"a", "b", "c"};
    bagmodel bm;
    tr_model m;
    bag_model_make(&bm, &m);
    tr_config c;
    tr_config_default(&c);
    c.head = TR_HEAD_NCMI;
    c.ncmi.tau = 1.f;
    c.ncmi.momentum = 1.f - 1.f / BAG_N;
    c.epochs = 4;
    c.batch_size = 4;
    c.lr = 0.05f;
    c.schedule.base_lr = c.lr;
    c.n_classes = BAG_C;
    c.class_names = names;
    snprintf(c.select, sizeof c.select, "loss");
    c.progress = -1;
    const int eps[2] = {2, 12};
    const float lrs[3] = {0.3f, 3.f, 0.01f}; /* the best pair neither first nor last */
    c.n_lp_grid_epochs = 2;
    c.n_lp_grid_lr = 3;
    memcpy(c.lp_grid_epochs, eps, sizeof eps);
    memcpy(c.lp_grid_lr, lrs, sizeof lrs);
    tr_trainer t;
    int rc = tr_init(&t, &c, &m, &d, NULL, NULL, NULL);
    EXPECT(rc == -1 && strstr(ncmi_error(), "lp.grid_epochs / lp.grid_lr") && strstr(ncmi_error(), "validation set"),
           "grid without a validation set: rc %d, '%s'", rc, ncmi_error());
    tr_free(&t);
    REQUIRE(tr_init(&t, &c, &m, &d, &dv, NULL, NULL) == 0, "%s", ncmi_error());
    REQUIRE(tr_fit(&t) == 0, "%s", ncmi_error());
    REQUIRE(tr_compute_predictors(&t) == 0, "%s", ncmi_error());
    const int W_n = BAG_C * 8;
    float Wg[BAG_C * 8];
    memcpy(Wg, t.stored_lp_w, sizeof Wg);
    const int ge = t.lp_epochs_used;
    const float gl = t.lp_lr_used;
    const double gs = t.lp_val_score;
    /* each pair alone: its probe and its validation loss */
    double best = -1e300, lo = 1e300;
    int be = 0, match = 0;
    float bl = 0;
    t.cfg.n_lp_grid_epochs = t.cfg.n_lp_grid_lr = 0;
    for (int i = 0; i < 2; i++)
        for (int k = 0; k < 3; k++) {
            t.cfg.lp_epochs = eps[i];
            t.cfg.lp_lr = lrs[k];
            REQUIRE(tr_compute_predictors(&t) == 0, "%s", ncmi_error());
            int pred[BAG_N];
            double prob[BAG_N * BAG_C], loss = 0;
            REQUIRE(tr_predict(&t, &dv, TR_METHOD_LP, pred, prob) == 0, "%s", ncmi_error());
            for (int j = 0; j < BAG_N; j++) loss -= log(prob[j * BAG_C + lv[j]]);
            const double score = -loss / BAG_N;
            printf("    probe epochs %2d lr %-4g: validation loss %.5f\n", eps[i], (double)lrs[k], -score);
            if (score > best) best = score, be = eps[i], bl = lrs[k];
            if (score < lo) lo = score;
            if (eps[i] == ge && lrs[k] == gl) match = !memcmp(Wg, t.stored_lp_w, (size_t)W_n * sizeof *Wg);
        }
    printf("    grid chose epochs %d lr %g (validation loss %.5f)\n", ge, (double)gl, -gs);
    EXPECT(ge == be && gl == bl, "grid chose epochs %d lr %g, best alone: epochs %d lr %g", ge, (double)gl, be,
           (double)bl);
    EXPECT(fabs(gs - best) <= 1e-9 * fabs(best), "grid score %.9f, alone %.9f", gs, best);
    EXPECT(match, "the grid's probe differs from the same setting trained alone");
    EXPECT(best - lo > 1e-3, "the grid points do not differ (validation loss %.5f to %.5f)", -best, -lo);
    tr_free(&t);
    nn_params_free(&bm.P);
    bag_set_free(&b);
    bag_set_free(&bv);
}
