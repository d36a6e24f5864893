/* The generic training loop (see trainer.h and docs/training.md). */
#include "trainer.h"

#include <errno.h>
#include <jansson.h>
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../eval/json_io.h"
#include "../eval/metrics.h"
#include "../eval/predictions.h"
#include "../nn/error.h"
#include "../nn/ops.h"
#include "../nn/safetensors.h"
#include "../nn/tmpfile.h"

#define CKPT_FORMAT "ncmi-train/2"
#define LOG_HEADER                                                                                 \
    "epoch,lr,train_loss,train_acc,val_loss,val_acc,val_balanced_accuracy,val_f1_macro,"           \
    "val_auc_macro,val_score,seconds"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

/* ------------------------------------------------------------------ */
/* names and defaults                                                  */

static const char *const method_names[TR_METHOD_COUNT] = {"linear", "cc", "learned", "lp"};

const char *tr_method_name(tr_method m)
{
    return m >= 0 && m < TR_METHOD_COUNT ? method_names[m] : "?";
}

int tr_method_from_name(const char *s)
{
    for (int i = 0; s && i < TR_METHOD_COUNT; i++)
        if (!strcmp(s, method_names[i])) return i;
    return -1;
}

void tr_config_default(tr_config *c)
{
    memset(c, 0, sizeof *c);
    c->epochs = 20;
    c->batch_size = 32;
    c->eval_batch_size = 512;
    c->optim = NN_OPTIM_SGD;
    c->lr = 0.1f;
    c->momentum = 0.9f;
    c->weight_decay = 5e-4f;
    c->beta1 = 0.9f;
    c->beta2 = 0.999f;
    c->eps = 1e-8f;
    c->schedule.kind = NN_LR_CONSTANT;
    c->schedule.base_lr = c->lr;
    c->head = TR_HEAD_LINEAR;
    c->loss = nn_loss_cfg_default(NN_LOSS_CE);
    c->ncmi = nn_ncmi_cfg_default();
    c->centroid_lr = 0.1f;
    c->centroid_momentum = 0.9f;
    c->centroid_weight_decay = 0.f;
    c->center_init_samples = 0;
    c->ncmi_eval = TR_METHOD_CC;
    c->eval_every = 1;
    snprintf(c->select, sizeof c->select, "accuracy");
    c->lp_epochs = 20;
    c->lp_batch_size = 128;
    c->lp_lr = 0.1f;
    c->lp_momentum = 0.9f;
    c->progress = -1;
}

int tr_select_check(const char *s)
{
    if (!s) return -1;
    if (!strcmp(s, "accuracy") || !strcmp(s, "f1_auc") || !strcmp(s, "loss")) return 0;
    return eval_metric_from_name(s) >= 0 ? 0 : -1;
}

/* ------------------------------------------------------------------ */
/* parameter views (tensors borrowed from other sets)                  */

static void view_add(nn_params *V, const nn_params *P)
{
    for (int i = 0; i < P->n; i++) {
        if (V->n == V->cap) {
            V->cap = V->cap ? 2 * V->cap : 16;
            V->t = realloc(V->t, (size_t)V->cap * sizeof *V->t);
            V->kind = realloc(V->kind, (size_t)V->cap * sizeof *V->kind);
            V->save_dtype = realloc(V->save_dtype, (size_t)V->cap * sizeof *V->save_dtype);
            V->host_only = realloc(V->host_only, (size_t)V->cap * sizeof *V->host_only);
            NCMI_CHECK(V->t && V->kind && V->save_dtype && V->host_only, "out of memory");
        }
        V->t[V->n] = P->t[i];
        V->kind[V->n] = P->kind[i];
        V->save_dtype[V->n] = P->save_dtype[i];
        V->host_only[V->n] = P->host_only ? P->host_only[i] : 0;
        V->n++;
    }
}

static void view_free(nn_params *V)
{
    free(V->t);
    free(V->kind);
    free(V->save_dtype);
    free(V->host_only);
    memset(V, 0, sizeof *V);
}

/* the first value of t, read back from any device (a loss, a flag) */
static float host_first(const nn_tensor *t)
{
    float *h = nn_host_view(t);
    float v = h[0];
    nn_host_release(t, h);
    return v;
}

/* x on the trainer's device: itself, or a copy owned by g */
static nn_tensor *on_device(const tr_trainer *t, nn_graph *g, nn_tensor *x)
{
    if (!t->cfg.device_cuda || x->device == NN_DEVICE_CUDA) return x;
    nn_tensor *d = nn_tensor_new_on(g, NN_DEVICE_CUDA, x->ndim, x->shape);
    nn_tensor_from_host(d, x->data);
    return d;
}

/* ------------------------------------------------------------------ */
/* init / free                                                         */

int tr_init(tr_trainer *t, const tr_config *cfg, tr_model *model, const tr_dataset *train,
            const tr_dataset *val, const tr_dataset *test, nn_rng *head_rng)
{
    memset(t, 0, sizeof *t);
    t->cfg = *cfg;
    t->model = model;
    t->train = train;
    t->val = val;
    t->test = test;
    t->C = cfg->n_classes;
    t->D = model->dim;
    t->resumed_from = -1;
    nn_params_init(&t->P_head);
    if (t->C < 2) return ncmi_error_set("need at least 2 classes, got %d", t->C);
    if (cfg->epochs < 1 || cfg->batch_size < 1 || cfg->eval_every < 1)
        return ncmi_error_set("epochs, batch size and eval_every must be >= 1");
    const int W = nn_dist_world(cfg->dist);
    if (cfg->batch_size % W)
        return ncmi_error_set("train.batch_size %d is not divisible by the world size %d: the global batch is "
                              "split evenly across the ranks (batch_size / world each)",
                              cfg->batch_size, W);
    if (tr_select_check(cfg->select))
        return ncmi_error_set("selection metric '%s' is not accuracy, f1_auc, loss or a metric name",
                              cfg->select);
    if (!train || train->n < 1) return ncmi_error_set("the training set is empty");
    if (cfg->head == TR_HEAD_NCMI && (cfg->n_lp_grid_epochs || cfg->n_lp_grid_lr) && (!val || val->n < 1))
        return ncmi_error_set("lp.grid_epochs / lp.grid_lr: choosing the probe needs a validation set, and "
                              "this data has none");
    t->lp_val_score = NAN;
    const tr_dataset *sets[3] = {train, val, test};
    for (int k = 0; k < 3; k++)
        if (sets[k] && tr_dataset_check(sets[k], t->C)) return -1;
    if (t->cfg.eval_batch_size < 1) t->cfg.eval_batch_size = 512;

    nn_rng root;
    nn_rng_seed(&root, cfg->seed);
    nn_rng_fork(&root, 1);
    nn_rng_fork(&root, 2);
    t->st.shuffle = nn_rng_fork(&root, 3);
    nn_rng own_head = nn_rng_fork(&root, 5);
    nn_rng *hr = head_rng ? head_rng : &own_head;

    t->prior = calloc((size_t)t->C, sizeof *t->prior);
    if (!t->prior) return ncmi_error_set("out of memory");
    for (int i = 0; i < train->n; i++) t->prior[train->labels[i]] += 1.f;

    if (cfg->head == TR_HEAD_LINEAR) {
        if (nn_loss_cfg_check(&cfg->loss)) return -1;
        const char *name = model->classifier[0] ? model->classifier : "fc";
        nn_linear_m_init(&t->fc, &t->P_head, name, t->D, t->C, 1, hr);
    } else {
        if (nn_ncmi_init(&t->ncmi, &t->P_head, "ncmi", t->C, t->D, &cfg->ncmi, t->prior, hr))
            return -1;
        t->have_ncmi = 1;
        if (cfg->ncmi_eval != TR_METHOD_CC && cfg->ncmi_eval != TR_METHOD_LEARNED)
            return ncmi_error_set("NCMI validation method must be cc or learned");
    }
    view_add(&t->P_opt, model->params);
    if (cfg->head == TR_HEAD_LINEAR) view_add(&t->P_opt, &t->P_head);
    view_add(&t->P_all, model->params);
    view_add(&t->P_all, &t->P_head);
    for (int i = 0; i < t->P_all.n; i++)
        for (int j = 0; j < i; j++)
            if (!strcmp(t->P_all.t[i]->name, t->P_all.t[j]->name))
                return ncmi_error_set("tensor name '%s' used by the model and the head",
                                      t->P_all.t[i]->name);

    if (cfg->optim == NN_OPTIM_ADAMW || cfg->optim == NN_OPTIM_ADAM)
        (cfg->optim == NN_OPTIM_ADAM ? nn_optim_adam_init : nn_optim_adamw_init)(
            &t->opt, &t->P_opt, cfg->lr, cfg->beta1, cfg->beta2, cfg->eps, cfg->weight_decay);
    else
        nn_optim_sgd_init(&t->opt, &t->P_opt, cfg->lr, cfg->momentum, cfg->weight_decay,
                          cfg->nesterov);
    if (t->have_ncmi) {
        nn_optim_sgd_init(&t->opt_xi, &t->P_head, cfg->centroid_lr, cfg->centroid_momentum,
                          cfg->centroid_weight_decay, 0);
        t->opt_xi.prefix = "optim_xi."; /* the encoder's state is optim.* */
        t->have_opt_xi = 1;
    }
    if (cfg->device_cuda) {
        if (!model->gpu_ok)
            return ncmi_error_set("--device cuda: the model '%s' runs on the CPU only in this version "
                                  "(use --device cpu)", model->desc);
        nn_params_to_device(&t->P_all, NN_DEVICE_CUDA);
    }
    /* the gradients of everything trainable (encoder, linear head, NCMI xi) */
    if (W > 1 && nn_dist_reducer_new(&t->reducer, cfg->dist, &t->P_all, 0)) return -1;
    t->g = nn_graph_new();
    /* the step's backward frees activations once no backward reads them
       (tr_step keeps z and the logits, which step_accuracy reads after it) */
    nn_graph_set_free_dead(t->g, 1);
    if (!t->g) return ncmi_error_set("out of memory");
    return 0;
}

void tr_free(tr_trainer *t)
{
    if (!t) return;
    nn_dist_reducer_free(t->reducer);
    if (t->g) nn_graph_free(t->g);
    if (t->opt.params) nn_optim_free(&t->opt);
    if (t->have_opt_xi) nn_optim_free(&t->opt_xi);
    if (t->have_ncmi) nn_ncmi_free(&t->ncmi);
    view_free(&t->P_opt);
    view_free(&t->P_all);
    nn_params_free(&t->P_head);
    for (int i = 0; i < t->n_log; i++) free(t->log_lines[i]);
    free(t->log_lines);
    free(t->prior);
    tr_predictors_clear(t);
    memset(t, 0, sizeof *t);
}

/* ------------------------------------------------------------------ */
/* checkpoints                                                         */

static void rng_to_text(const nn_rng *r, char *buf, size_t n)
{
    snprintf(buf, n, "%016llx,%016llx,%016llx,%016llx,%d,%a", (unsigned long long)r->s[0],
             (unsigned long long)r->s[1], (unsigned long long)r->s[2], (unsigned long long)r->s[3],
             r->has_spare, r->spare);
}

static int rng_from_text(nn_rng *r, const char *t)
{
    unsigned long long s[4];
    int has;
    double spare;
    if (!t || sscanf(t, "%llx,%llx,%llx,%llx,%d,%la", &s[0], &s[1], &s[2], &s[3], &has, &spare) != 6)
        return -1;
    for (int i = 0; i < 4; i++) r->s[i] = s[i];
    r->has_spare = has;
    r->spare = spare;
    return 0;
}

/* JSON text of a float array / the class names (malloc'd). */
static char *json_floats(const float *v, int n)
{
    json_t *a = json_array();
    for (int i = 0; i < n; i++) json_array_append_new(a, json_real(v[i]));
    char *s = json_dumps(a, JSON_COMPACT | JSON_REAL_PRECISION(9));
    json_decref(a);
    return s;
}

static char *json_classes(const tr_trainer *t)
{
    json_t *a = json_array();
    for (int i = 0; i < t->C; i++)
        json_array_append_new(a, json_string(t->cfg.class_names ? t->cfg.class_names[i] : ""));
    char *s = json_dumps(a, JSON_COMPACT);
    json_decref(a);
    return s;
}

/* Weights (+ both optimizers when full) + metadata, one atomic safetensors file. */
static int save_checkpoint(tr_trainer *t, const char *path, int full, double val_acc, double score)
{
    const nn_params *P = &t->P_all;
    nn_st_tensor *os = NULL, *xs = NULL;
    int no = full ? nn_optim_state_tensors(&t->opt, &os) : 0;
    int nx = full && t->have_opt_xi ? nn_optim_state_tensors(&t->opt_xi, &xs) : 0;
    int n = P->n + no + nx;
    nn_st_tensor *ts = calloc((size_t)n, sizeof *ts);
    void **hold = calloc((size_t)P->n + 1, sizeof *hold);
    NCMI_CHECK(ts && hold, "out of memory");
    nn_params_st_tensors(P, ts, hold); /* host copies, counters as I64 */
    for (int i = 0; i < no; i++) ts[P->n + i] = os[i];
    for (int i = 0; i < nx; i++) ts[P->n + no + i] = xs[i];

    char epoch[32], rng[256], best[64], best_ep[32], bad[32], stopped[8], ncls[32], vacc[64],
        vscore[64], tau[64];
    snprintf(epoch, sizeof epoch, "%d", t->st.epoch);
    rng_to_text(&t->st.shuffle, rng, sizeof rng);
    snprintf(best, sizeof best, "%.17g", t->st.best_score);
    snprintf(best_ep, sizeof best_ep, "%d", t->st.best_epoch);
    snprintf(bad, sizeof bad, "%d", t->st.bad_evals);
    snprintf(stopped, sizeof stopped, "%d", t->st.stopped);
    snprintf(ncls, sizeof ncls, "%d", t->C);
    snprintf(vacc, sizeof vacc, "%.17g", val_acc);
    snprintf(vscore, sizeof vscore, "%.17g", score);
    snprintf(tau, sizeof tau, "%.9g", (double)t->cfg.ncmi.tau);
    char *classes = json_classes(t);
    float *center_h = t->have_ncmi ? nn_host_view(t->ncmi.center) : NULL;
    char *center = t->have_ncmi ? json_floats(center_h, t->D) : NULL;
    if (t->have_ncmi) nn_host_release(t->ncmi.center, center_h);
    const char *keys[24], *vals[24];
    int m = 0;
#define META(k, v) (keys[m] = (k), vals[m] = (v), m++)
    META("format", CKPT_FORMAT);
    META("ncmi_version", t->cfg.version ? t->cfg.version : "");
    META("model", t->model->desc);
    META("embedding_dim", NULL);
    char dim[32];
    snprintf(dim, sizeof dim, "%d", t->D);
    vals[m - 1] = dim;
    META("n_classes", ncls);
    META("classes", classes ? classes : "[]");
    META("head", t->cfg.head == TR_HEAD_NCMI ? "ncmi" : "linear");
    if (t->have_ncmi) {
        META("ncmi_tau", tau);
        META("ncmi_center", center ? center : "[]");
    } else {
        META("loss", nn_loss_kind_name(t->cfg.loss.kind));
    }
    META("epoch", epoch);
    META("val_acc", vacc);
    META("select", t->cfg.select);
    META("val_score", vscore);
    if (full) {
        META("best_score", best);
        META("best_epoch", best_ep);
        META("bad_evals", bad);
        META("stopped", stopped);
        META("rng", rng);
    }
    if (t->cfg.config_yaml) META("config", t->cfg.config_yaml);
#undef META
    int rc = nn_st_write(path, ts, n, keys, vals, m);
    free(classes);
    free(center);
    nn_params_st_release(P, hold);
    free(hold);
    free(ts);
    nn_optim_state_tensors_free(os, no);
    free(os);
    nn_optim_state_tensors_free(xs, nx);
    free(xs);
    return rc;
}

char *tr_checkpoint_meta(const char *path, const char *key)
{
    nn_safetensors st;
    if (nn_st_open(&st, path)) return NULL;
    const char *v = nn_st_meta(&st, key);
    char *r = v ? strdup(v) : NULL;
    nn_st_close(&st);
    return r;
}

static int check_format(const tr_trainer *t, const nn_safetensors *st)
{
    const char *fmt = nn_st_meta(st, "format");
    if (!fmt || strcmp(fmt, CKPT_FORMAT))
        return ncmi_error_set("%s: not an ncmi train checkpoint (metadata format '%s', expected '%s')",
                              st->path, fmt ? fmt : "", CKPT_FORMAT);
    const char *head = nn_st_meta(st, "head");
    const char *want = t->cfg.head == TR_HEAD_NCMI ? "ncmi" : "linear";
    if (!head || strcmp(head, want))
        return ncmi_error_set("%s: checkpoint of a '%s' head, the config has '%s'", st->path,
                              head ? head : "", want);
    return 0;
}

static int predictors_load(tr_trainer *t, const nn_safetensors *st);

int tr_load_weights(tr_trainer *t, const char *path)
{
    nn_safetensors st;
    if (nn_st_open(&st, path)) return -1;
    int rc = check_format(t, &st);
    if (!rc) rc = nn_params_load_st(&t->P_all, &st, 0);
    if (!rc) rc = predictors_load(t, &st);
    else tr_predictors_clear(t);
    nn_st_close(&st);
    return rc;
}

int tr_resume(tr_trainer *t, const char *path)
{
    nn_safetensors st;
    if (nn_st_open(&st, path)) return -1;
    int rc = check_format(t, &st);
    const char *ep = nn_st_meta(&st, "epoch"), *rng = nn_st_meta(&st, "rng");
    const char *best = nn_st_meta(&st, "best_score"), *best_ep = nn_st_meta(&st, "best_epoch");
    const char *bad = nn_st_meta(&st, "bad_evals"), *stopped = nn_st_meta(&st, "stopped");
    tr_state s = t->st;
    if (!rc && (!ep || sscanf(ep, "%d", &s.epoch) != 1 || s.epoch < 0 ||
                rng_from_text(&s.shuffle, rng) || !best || sscanf(best, "%lf", &s.best_score) != 1 ||
                !best_ep || sscanf(best_ep, "%d", &s.best_epoch) != 1 || !bad ||
                sscanf(bad, "%d", &s.bad_evals) != 1 || !stopped ||
                sscanf(stopped, "%d", &s.stopped) != 1))
        rc = ncmi_error_set("%s: checkpoint metadata lacks or garbles epoch/rng/best_score/"
                            "best_epoch/bad_evals/stopped (not a last.safetensors?)", path);
    /* encoder optimizer state and weights are validated before anything is copied */
    if (!rc) rc = nn_optim_state_load(&t->opt, &st);
    /* strict: every tensor but the optimizers' state must be one of ours */
    for (int e = 0; !rc && e < st.n; e++) {
        const char *nm = st.entries[e].name;
        if (strncmp(nm, "optim.", 6) && strncmp(nm, "optim_xi.", 9) && !nn_params_get(&t->P_all, nm))
            rc = ncmi_error_set("%s: unexpected tensor '%s' (a checkpoint of another model?)", path, nm);
    }
    if (!rc) rc = nn_params_load_st(&t->P_all, &st, 0);
    if (!rc && t->have_opt_xi) rc = nn_optim_state_load(&t->opt_xi, &st);
    nn_st_close(&st);
    if (rc) return rc;
    tr_predictors_clear(t);
    t->st = s;
    t->resumed_from = s.epoch;
    return 0;
}

/* ------------------------------------------------------------------ */
/* embeddings and predictions                                          */

/* Forward of samples idx[0..n) (a batch, or bags one at a time) -> z [n, D]
 * in t->g; *aux = mean aux term over bags (or the batch's), or NULL. */
static nn_tensor *forward_samples(tr_trainer *t, const tr_dataset *d, const int *idx, int n,
                                  int training, nn_rng *rng, nn_tensor **aux)
{
    nn_graph *g = t->g;
    tr_model *m = t->model;
    nn_tensor *in[TR_MAX_INPUTS];
    if (aux) *aux = NULL;
    if (!d->bags) {
        int k = d->inputs(d, g, idx, n, training, rng, in);
        if (k < 1) return NULL;
        for (int j = 0; j < k; j++) in[j] = on_device(t, g, in[j]);
        nn_tensor *a = NULL;
        nn_tensor *z = m->forward(m, g, in, k, training, training ? rng : NULL, &a);
        NCMI_CHECK(z->ndim == 2 && z->shape[0] == n && z->shape[1] == t->D,
                   "model forward: z must be [%d, %d]", n, t->D);
        if (aux) *aux = a;
        // cppcheck-suppress returnDanglingLifetime ; false positive: z is the model output; &a only receives the aux tensor
        return z;
    }
    nn_tensor **zs = calloc((size_t)(n > 0 ? n : 1), sizeof *zs);
    NCMI_CHECK(zs, "out of memory");
    nn_tensor *asum = NULL;
    for (int i = 0; i < n; i++) {
        int k = d->inputs(d, g, idx + i, 1, training, rng, in);
        if (k < 1) {
            free(zs);
            return NULL;
        }
        for (int j = 0; j < k; j++) in[j] = on_device(t, g, in[j]);
        nn_tensor *a = NULL;
        zs[i] = m->forward(m, g, in, k, training, training ? rng : NULL, &a);
        NCMI_CHECK(zs[i]->ndim == 2 && zs[i]->shape[0] == 1 && zs[i]->shape[1] == t->D,
                   "model forward of a bag: z must be [1, %d]", t->D);
        if (a) asum = asum ? nn_add(g, asum, a) : a;
    }
    nn_tensor *z = n == 1 ? zs[0] : nn_concat(g, zs, n, 0);
    free(zs);
    if (aux && asum) *aux = n > 1 ? nn_scale(g, asum, 1.f / (float)n) : asum;
    return z;
}

int tr_embed(tr_trainer *t, const tr_dataset *d, float **Zout)
{
    *Zout = NULL;
    const int D = t->D, n = d->n;
    float *Z = malloc((size_t)(n > 0 ? n : 1) * D * sizeof *Z);
    int *idx = malloc((size_t)(n > 0 ? n : 1) * sizeof *idx);
    if (!Z || !idx) {
        free(Z);
        free(idx);
        return ncmi_error_set("out of memory for %d x %d embeddings", n, D);
    }
    for (int i = 0; i < n; i++) idx[i] = i;
    if (d->order) d->order(d, NULL, 0); /* read-ahead in natural order */
    int prev = nn_graph_set_no_grad(t->g, 1);
    const int chunk = d->bags ? 64 : t->cfg.eval_batch_size;
    int rc = 0;
    for (int b0 = 0; b0 < n && !rc; b0 += chunk) {
        int nb = n - b0 < chunk ? n - b0 : chunk;
        nn_tensor *z = forward_samples(t, d, idx + b0, nb, 0, NULL, NULL);
        if (!z) rc = -1;
        else nn_tensor_to_host(z, Z + (size_t)b0 * D);
        nn_graph_reset(t->g);
    }
    nn_graph_set_no_grad(t->g, prev);
    free(idx);
    if (rc) {
        free(Z);
        return -1;
    }
    *Zout = Z;
    return 0;
}

static void softmax_row(const double *v, int C, double *p)
{
    double mx = v[0], s = 0;
    for (int c = 1; c < C; c++) mx = v[c] > mx ? v[c] : mx;
    for (int c = 0; c < C; c++) s += (p[c] = exp(v[c] - mx));
    for (int c = 0; c < C; c++) p[c] /= s;
}

static int argmax_d(const double *v, int C)
{
    int b = 0;
    for (int c = 1; c < C; c++)
        if (v[c] > v[b]) b = c;
    return b;
}

/* Linear classifier on features F [n, D]: prob = softmax(F W^T + b). */
static void linear_predict(const float *W, const float *b, const float *F, int n, int D, int C,
                           int *pred, double *prob)
{
    double *v = malloc((size_t)C * sizeof *v);
    NCMI_CHECK(v, "out of memory");
    for (int i = 0; i < n; i++) {
        const float *f = F + (size_t)i * D;
        for (int c = 0; c < C; c++) {
            double s = b ? b[c] : 0;
            const float *w = W + (size_t)c * D;
            // NOLINTNEXTLINE(clang-analyzer-core.UndefinedBinaryOperatorResult): false positive, W and F are the caller's filled [C,D] / [n,D] arrays
            for (int j = 0; j < D; j++) s += (double)w[j] * f[j];
            v[c] = s;
        }
        softmax_row(v, C, prob + (size_t)i * C);
        pred[i] = argmax_d(v, C);
    }
    free(v);
}

/* Centroid comparison: p = S(z') of Z [n, D]; q [C, D] on the simplex;
 * pred = argmin_c KL(p || q_c), prob = softmax(-KL). */
static void centroid_predict(const tr_trainer *t, const float *Z, int n, const double *q, int *pred,
                             double *prob)
{
    const int D = t->D, C = t->C;
    double *lq = malloc((size_t)C * D * sizeof *lq), *v = malloc((size_t)C * sizeof *v);
    float *p = malloc((size_t)D * sizeof *p);
    NCMI_CHECK(lq && v && p, "out of memory");
    for (size_t k = 0; k < (size_t)C * D; k++) lq[k] = log(q[k] > 1e-300 ? q[k] : 1e-300);
    for (int i = 0; i < n; i++) {
        nn_ncmi_project(&t->ncmi, Z + (size_t)i * D, 1, NULL, p);
        double h = 0;
        for (int j = 0; j < D; j++)
            if (p[j] > 0) h += p[j] * log((double)p[j]);
        for (int c = 0; c < C; c++) {
            double s = 0;
            const double *l = lq + (size_t)c * D;
            // NOLINTNEXTLINE(clang-analyzer-core.UndefinedBinaryOperatorResult): false positive, lq[C,D] is filled by the loop above
            for (int j = 0; j < D; j++) s += p[j] * l[j];
            v[c] = -(h - s); /* -KL */
        }
        softmax_row(v, C, prob + (size_t)i * C);
        pred[i] = argmax_d(v, C);
    }
    free(lq);
    free(v);
    free(p);
}

/* Class-mean centroids of the training set's eval-mode p from its
 * embeddings Z [train n, D] (classes without a sample: uniform). */
static void class_mean_centroids_z(tr_trainer *t, const float *Z, double *q)
{
    const int D = t->D, C = t->C;
    float *p = malloc((size_t)D * sizeof *p);
    int *cnt = calloc((size_t)C, sizeof *cnt);
    NCMI_CHECK(p && cnt, "out of memory");
    memset(q, 0, (size_t)C * D * sizeof *q);
    for (int i = 0; i < t->train->n; i++) {
        int y = t->train->labels[i];
        nn_ncmi_project(&t->ncmi, Z + (size_t)i * D, 1, NULL, p);
        for (int j = 0; j < D; j++) q[(size_t)y * D + j] += p[j];
        cnt[y]++;
    }
    for (int c = 0; c < C; c++)
        for (int j = 0; j < D; j++)
            q[(size_t)c * D + j] = cnt[c] ? q[(size_t)c * D + j] / cnt[c] : 1.0 / D;
    free(p);
    free(cnt);
}

static int class_mean_centroids(tr_trainer *t, double *q)
{
    float *Z;
    if (tr_embed(t, t->train, &Z)) return -1;
    class_mean_centroids_z(t, Z, q);
    free(Z);
    return 0;
}

/* One linear probe: a Linear(D, C) trained with CE and SGD (cosine lr over
 * `epochs`) on F = z' [n, D] of the training set, seeded (stream 4: every
 * probe of a grid starts from the same weights and order); its weights. */
static void linear_probe_fit(tr_trainer *t, const float *F, int epochs, float lr, float *W, float *b)
{
    const int D = t->D, C = t->C, n = t->train->n;
    int *perm = malloc((size_t)n * sizeof *perm);
    int *yb = malloc((size_t)t->cfg.lp_batch_size * sizeof *yb);
    NCMI_CHECK(perm && yb, "out of memory");
    nn_rng root;
    nn_rng_seed(&root, t->cfg.seed);
    for (int k = 1; k < 4; k++) nn_rng_fork(&root, (uint64_t)k);
    nn_rng rng = nn_rng_fork(&root, 4);
    nn_params P;
    nn_params_init(&P);
    nn_linear_m lp;
    nn_linear_m_init(&lp, &P, "lp", D, C, 1, &rng);
    nn_optim o;
    nn_optim_sgd_init(&o, &P, lr, t->cfg.lp_momentum, t->cfg.lp_weight_decay, 0);
    nn_lr_schedule s = {0};
    s.kind = NN_LR_COSINE;
    s.base_lr = lr;
    s.total = epochs;
    nn_graph *g = nn_graph_new();
    const int bs = t->cfg.lp_batch_size;
    for (int e = 0; e < epochs; e++) {
        o.lr = nn_lr_at(&s, e);
        nn_rng_permutation(&rng, perm, n);
        for (int b0 = 0; b0 < n; b0 += bs) {
            int nb = n - b0 < bs ? n - b0 : bs;
            nn_tensor *x = nn_tensor_new2(g, nb, D);
            for (int i = 0; i < nb; i++) {
                memcpy(x->data + (size_t)i * D, F + (size_t)perm[b0 + i] * D, (size_t)D * sizeof(float));
                yb[i] = t->train->labels[perm[b0 + i]];
            }
            nn_tensor *loss = nn_cross_entropy(g, nn_linear_m_forward(g, &lp, x), yb, 0.f);
            nn_backward(g, loss);
            nn_optim_step(&o);
            nn_params_zero_grad(&P);
            nn_graph_reset(g);
        }
    }
    memcpy(W, lp.weight->data, (size_t)C * D * sizeof *W);
    memcpy(b, lp.bias->data, (size_t)C * sizeof *b);
    nn_graph_free(g);
    nn_optim_free(&o);
    nn_params_free(&P);
    free(perm);
    free(yb);
}

static double select_score(const tr_trainer *t, const eval_report *r, double loss, const int *y,
                           const int *pred, const double *prob, int n);

/* The validation score (cfg.select) of the probe W, b on Fv = z' [n, D] of
 * the validation set; loss: its mean cross-entropy. */
static int probe_val_score(tr_trainer *t, const float *W, const float *b, const float *Fv, double *score)
{
    const tr_dataset *d = t->val;
    const int n = d->n, C = t->C;
    int *pred = malloc((size_t)n * sizeof *pred);
    double *prob = malloc((size_t)n * C * sizeof *prob);
    NCMI_CHECK(pred && prob, "out of memory");
    linear_predict(W, b, Fv, n, t->D, C, pred, prob);
    double loss = 0;
    for (int i = 0; i < n; i++) loss -= log(fmax(prob[(size_t)i * C + d->labels[i]], 1e-300));
    eval_report r = {0};
    int rc = eval_report_compute(&r, d->labels, pred, prob, n, C);
    if (!rc) {
        *score = select_score(t, &r, loss / n, d->labels, pred, prob, n);
        eval_report_free(&r);
    }
    free(pred);
    free(prob);
    return rc;
}

/* Linear probing on the training set's embeddings Z (encoder frozen): the
 * probe of lp.epochs / lp.lr, or with a grid (lp.grid_epochs, lp.grid_lr)
 * the probe of the pair with the best validation score. Its weights into W,
 * b; the settings and score into t->lp_*_used, t->lp_val_score. */
static int linear_probe_z(tr_trainer *t, const float *Z, float *W, float *b)
{
    const int D = t->D, C = t->C, n = t->train->n;
    const int ne = t->cfg.n_lp_grid_epochs, nl = t->cfg.n_lp_grid_lr;
    float *F = malloc((size_t)n * D * sizeof *F);
    NCMI_CHECK(F, "out of memory");
    nn_ncmi_project(&t->ncmi, Z, n, F, NULL);
    t->lp_val_score = NAN;
    if (!ne && !nl) {
        linear_probe_fit(t, F, t->cfg.lp_epochs, t->cfg.lp_lr, W, b);
        t->lp_epochs_used = t->cfg.lp_epochs;
        t->lp_lr_used = t->cfg.lp_lr;
        free(F);
        return 0;
    }
    if (!t->val || t->val->n == 0) {
        free(F);
        return ncmi_error_set("lp.grid_epochs / lp.grid_lr: choosing the probe needs a validation set, and "
                              "this data has none");
    }
    float *Zv, *Fv = malloc((size_t)t->val->n * D * sizeof *Fv);
    float *Wc = malloc((size_t)C * D * sizeof *Wc), *bc = malloc((size_t)C * sizeof *bc);
    NCMI_CHECK(Fv && Wc && bc, "out of memory");
    int rc = tr_embed(t, t->val, &Zv);
    if (!rc) {
        nn_ncmi_project(&t->ncmi, Zv, t->val->n, Fv, NULL);
        free(Zv);
    }
    for (int i = 0; i < (ne ? ne : 1) && !rc; i++)
        for (int k = 0; k < (nl ? nl : 1) && !rc; k++) {
            const int ep = ne ? t->cfg.lp_grid_epochs[i] : t->cfg.lp_epochs;
            const float lr = nl ? t->cfg.lp_grid_lr[k] : t->cfg.lp_lr;
            double sc = 0;
            linear_probe_fit(t, F, ep, lr, Wc, bc);
            rc = probe_val_score(t, Wc, bc, Fv, &sc);
            if (rc || !(isnan(t->lp_val_score) || sc > t->lp_val_score)) continue;
            t->lp_val_score = sc;
            t->lp_epochs_used = ep;
            t->lp_lr_used = lr;
            memcpy(W, Wc, (size_t)C * D * sizeof *W);
            memcpy(b, bc, (size_t)C * sizeof *b);
        }
    if (!rc && t->cfg.out && t->cfg.progress >= 0)
        fprintf(t->cfg.out, "linear probe: lp.epochs %d, lp.lr %g chosen on the validation set (%s %.4f), of %d x %d\n",
                t->lp_epochs_used, (double)t->lp_lr_used, t->cfg.select, t->lp_val_score, ne ? ne : 1, nl ? nl : 1);
    free(F);
    free(Fv);
    free(Wc);
    free(bc);
    return rc;
}

static int linear_probe(tr_trainer *t, float *W, float *b)
{
    float *Z;
    if (tr_embed(t, t->train, &Z)) return -1;
    int rc = linear_probe_z(t, Z, W, b);
    free(Z);
    return rc;
}

/* Predictions from embeddings Z of d with a method; q_cc: precomputed
 * class-mean centroids (NULL: the stored ones when use_stored and present,
 * else computed here); LP: the stored probe when use_stored and present,
 * else trained here. */
static int predict_from_z(tr_trainer *t, const float *Z, int n, tr_method method, const double *q_cc,
                          int use_stored, int *pred, double *prob)
{
    const int C = t->C, D = t->D;
    if (method == TR_METHOD_LINEAR) {
        if (t->have_ncmi) return ncmi_error_set("method 'linear' needs a linear head (this run has ncmi)");
        float *w = nn_host_view(t->fc.weight), *b = nn_host_view(t->fc.bias);
        linear_predict(w, b, Z, n, D, C, pred, prob);
        nn_host_release(t->fc.weight, w);
        nn_host_release(t->fc.bias, b);
        return 0;
    }
    if (!t->have_ncmi)
        return ncmi_error_set("method '%s' needs an NCMI head (this run has linear)", tr_method_name(method));
    if (method == TR_METHOD_LP) {
        float *W = malloc((size_t)C * D * sizeof *W), *b = malloc((size_t)C * sizeof *b);
        float *F = malloc((size_t)(n > 0 ? n : 1) * D * sizeof *F);
        NCMI_CHECK(W && b && F, "out of memory");
        int rc = 0;
        if (use_stored && t->stored_lp_w) {
            memcpy(W, t->stored_lp_w, (size_t)C * D * sizeof *W);
            memcpy(b, t->stored_lp_b, (size_t)C * sizeof *b);
        } else {
            rc = linear_probe(t, W, b);
        }
        if (!rc) {
            nn_ncmi_project(&t->ncmi, Z, n, F, NULL);
            linear_predict(W, b, F, n, D, C, pred, prob);
        }
        free(W);
        free(b);
        free(F);
        return rc;
    }
    double *q = malloc((size_t)C * D * sizeof *q);
    NCMI_CHECK(q, "out of memory");
    int rc = 0;
    if (method == TR_METHOD_LEARNED) {
        float *qf = malloc((size_t)C * D * sizeof *qf);
        NCMI_CHECK(qf, "out of memory");
        nn_ncmi_centroids(&t->ncmi, qf);
        for (size_t k = 0; k < (size_t)C * D; k++) q[k] = qf[k];
        free(qf);
    } else if (q_cc) {
        memcpy(q, q_cc, (size_t)C * D * sizeof *q);
    } else if (use_stored && t->stored_cc) {
        memcpy(q, t->stored_cc, (size_t)C * D * sizeof *q);
    } else {
        rc = class_mean_centroids(t, q);
    }
    if (!rc) centroid_predict(t, Z, n, q, pred, prob);
    free(q);
    return rc;
}

int tr_predict(tr_trainer *t, const tr_dataset *d, tr_method method, int *pred, double *prob)
{
    float *Z;
    if (tr_embed(t, d, &Z)) return -1;
    int rc = predict_from_z(t, Z, d->n, method, NULL, 1, pred, prob);
    free(Z);
    return rc;
}

int tr_predict_from_z(tr_trainer *t, const float *Z, int n, tr_method method, int *pred, double *prob)
{
    return predict_from_z(t, Z, n, method, NULL, 1, pred, prob);
}

/* ------------------------------------------------------------------ */
/* stored predictors (class-mean centroids, linear probe)              */

#define ST_CC "ncmi.cc_centroids"
#define ST_LP_W "ncmi.lp.weight"
#define ST_LP_B "ncmi.lp.bias"

void tr_predictors_clear(tr_trainer *t)
{
    free(t->stored_cc);
    free(t->stored_lp_w);
    free(t->stored_lp_b);
    t->stored_cc = NULL;
    t->stored_lp_w = t->stored_lp_b = NULL;
}

int tr_predictors_stored(const tr_trainer *t) { return !t->have_ncmi || (t->stored_cc && t->stored_lp_w); }

int tr_compute_predictors(tr_trainer *t)
{
    if (!t->have_ncmi) return 0;
    const int C = t->C, D = t->D;
    float *Z;
    if (tr_embed(t, t->train, &Z)) return -1;
    double *q = malloc((size_t)C * D * sizeof *q);
    float *W = malloc((size_t)C * D * sizeof *W), *b = malloc((size_t)C * sizeof *b);
    NCMI_CHECK(q && W && b, "out of memory");
    class_mean_centroids_z(t, Z, q);
    int rc = linear_probe_z(t, Z, W, b);
    free(Z);
    if (rc) {
        free(q);
        free(W);
        free(b);
        return -1;
    }
    tr_predictors_clear(t);
    t->stored_cc = q;
    t->stored_lp_w = W;
    t->stored_lp_b = b;
    return 0;
}

/* The stored predictors of an open checkpoint into t (absent: cleared). */
static int predictors_load(tr_trainer *t, const nn_safetensors *st)
{
    tr_predictors_clear(t);
    if (!t->have_ncmi || !nn_st_find(st, ST_CC) || !nn_st_find(st, ST_LP_W) || !nn_st_find(st, ST_LP_B)) return 0;
    const int C = t->C, D = t->D;
    double *q = malloc((size_t)C * D * sizeof *q);
    float *W = malloc((size_t)C * D * sizeof *W), *b = malloc((size_t)C * sizeof *b);
    NCMI_CHECK(q && W && b, "out of memory");
    const int s2[2] = {C, D}, s1[1] = {C};
    if (nn_st_read_f64(st, ST_CC, q, (size_t)C * D, 2, s2) || nn_st_read_f32(st, ST_LP_W, W, (size_t)C * D, 2, s2) ||
        nn_st_read_f32(st, ST_LP_B, b, (size_t)C, 1, s1)) {
        free(q);
        free(W);
        free(b);
        return -1;
    }
    t->stored_cc = q;
    t->stored_lp_w = W;
    t->stored_lp_b = b;
    return 0;
}

int tr_save_predictors(tr_trainer *t, const char *path)
{
    if (!t->have_ncmi) return 0;
    if (!t->stored_cc || !t->stored_lp_w) return ncmi_error_set("%s: no predictors computed to store", path);
    nn_safetensors st;
    if (nn_st_open(&st, path)) return -1;
    /* every tensor of the file (typed host copies; our three replaced), then ours */
    nn_st_tensor *ts = calloc((size_t)st.n + 3, sizeof *ts);
    void **bufs = calloc((size_t)st.n + 1, sizeof *bufs);
    const char **mk = calloc((size_t)st.n_meta + 2, sizeof *mk), **mv = calloc((size_t)st.n_meta + 2, sizeof *mv);
    NCMI_CHECK(ts && bufs && mk && mv, "out of memory");
    int n = 0, rc = 0;
    for (int i = 0; i < st.n && !rc; i++) {
        const nn_st_entry *e = &st.entries[i];
        if (!strcmp(e->name, ST_CC) || !strcmp(e->name, ST_LP_W) || !strcmp(e->name, ST_LP_B)) continue;
        nn_st_tensor *o = &ts[n];
        o->name = e->name;
        o->dtype = e->dtype;
        o->ndim = e->ndim;
        memcpy(o->shape, e->shape, sizeof o->shape);
        size_t k = e->numel ? e->numel : 1;
        if (e->dtype == NN_ST_I64 || e->dtype == NN_ST_I32) {
            int64_t *v = malloc(k * sizeof *v);
            NCMI_CHECK(v, "out of memory");
            rc = nn_st_read_i64(&st, e->name, v, e->numel);
            o->dtype = NN_ST_I64;
            bufs[n] = v;
        } else if (e->dtype == NN_ST_F64) {
            double *v = malloc(k * sizeof *v);
            NCMI_CHECK(v, "out of memory");
            rc = nn_st_read_f64(&st, e->name, v, e->numel, -1, NULL);
            bufs[n] = v;
        } else {
            float *v = malloc(k * sizeof *v);
            NCMI_CHECK(v, "out of memory");
            rc = nn_st_read_f32(&st, e->name, v, e->numel, -1, NULL);
            bufs[n] = v;
        }
        o->data = bufs[n];
        n++;
    }
    const int C = t->C, D = t->D;
    ts[n++] = (nn_st_tensor){ST_CC, NN_ST_F64, 2, {C, D}, t->stored_cc};
    ts[n++] = (nn_st_tensor){ST_LP_W, NN_ST_F32, 2, {C, D}, t->stored_lp_w};
    ts[n++] = (nn_st_tensor){ST_LP_B, NN_ST_F32, 1, {C}, t->stored_lp_b};
    int m = 0;
    /* the probe's settings when it was trained here (a loaded one keeps the file's) */
    char lps[160];
    const int have_lps = t->lp_epochs_used > 0;
    if (have_lps && isnan(t->lp_val_score))
        snprintf(lps, sizeof lps, "epochs %d, lr %g", t->lp_epochs_used, (double)t->lp_lr_used);
    else if (have_lps)
        snprintf(lps, sizeof lps, "epochs %d, lr %g, chosen on val (%s %.6g)", t->lp_epochs_used,
                 (double)t->lp_lr_used, t->cfg.select, t->lp_val_score);
    for (int i = 0; i < st.n_meta; i++)
        if (strcmp(st.meta_keys[i], "stored_predictors") && (!have_lps || strcmp(st.meta_keys[i], "lp_settings"))) {
            mk[m] = st.meta_keys[i];
            mv[m++] = st.meta_vals[i];
        }
    mk[m] = "stored_predictors";
    mv[m++] = "cc,lp";
    if (have_lps) {
        mk[m] = "lp_settings";
        mv[m++] = lps;
    }
    if (!rc) rc = nn_st_write(path, ts, n, mk, mv, m);
    for (int i = 0; i < st.n; i++) free(bufs[i]);
    free(bufs);
    free(ts);
    free(mk);
    free(mv);
    nn_st_close(&st);
    return rc;
}

/* The head's loss on embeddings Z [n, D] in eval mode (linear: the
 * configured loss, label smoothing off; NCMI: training == 0). */
static double loss_from_z(tr_trainer *t, const float *Z, const int *y, int n)
{
    if (n < 1) return NAN;
    nn_graph *g = t->g;
    int prev = nn_graph_set_no_grad(g, 1);
    int shape[2] = {n, t->D};
    nn_tensor *z = on_device(t, g, nn_tensor_from(g, 2, shape, Z));
    nn_tensor *l;
    if (t->have_ncmi) {
        l = nn_ncmi_loss(g, &t->ncmi, z, y, 0);
    } else {
        nn_loss_cfg lc = t->cfg.loss;
        if (lc.kind == NN_LOSS_LABEL_SMOOTHING) lc.kind = NN_LOSS_CE;
        l = nn_loss_forward(g, &lc, nn_linear_m_forward(g, &t->fc, z), y);
    }
    double v = host_first(l);
    nn_graph_reset(g);
    nn_graph_set_no_grad(g, prev);
    return v;
}

/* ------------------------------------------------------------------ */
/* validation and selection                                            */

static double select_score(const tr_trainer *t, const eval_report *r, double loss, const int *y,
                           const int *pred, const double *prob, int n)
{
    const char *s = t->cfg.select;
    if (!strcmp(s, "accuracy")) return r->accuracy;
    if (!strcmp(s, "loss")) return -loss;
    if (!strcmp(s, "f1_auc")) return r->macro.f1 + (isfinite(r->auc_macro) ? r->auc_macro : 0);
    int m = eval_metric_from_name(s);
    return eval_metric_compute((eval_metric)m, y, pred, prob, n, t->C);
}

static int validate(tr_trainer *t, tr_epoch_stats *es)
{
    const tr_dataset *d = t->val;
    const int n = d->n, C = t->C;
    float *Z;
    if (tr_embed(t, d, &Z)) return -1;
    int *pred = malloc((size_t)n * sizeof *pred);
    double *prob = malloc((size_t)n * C * sizeof *prob);
    NCMI_CHECK(pred && prob, "out of memory");
    tr_method m = t->have_ncmi ? t->cfg.ncmi_eval : TR_METHOD_LINEAR;
    int rc = predict_from_z(t, Z, n, m, NULL, 0, pred, prob); /* the weights of this epoch */
    eval_report r = {0}; /* eval_report_compute fills it; zeroed for cppcheck (uninitStructMember) */
    if (!rc) rc = eval_report_compute(&r, d->labels, pred, prob, n, C);
    if (!rc) {
        es->evaluated = 1;
        es->val_loss = loss_from_z(t, Z, d->labels, n);
        es->val_acc = r.accuracy;
        es->val_balanced_acc = r.balanced_accuracy;
        es->val_f1_macro = r.macro.f1;
        es->val_auc_macro = r.auc_macro;
        es->score = select_score(t, &r, es->val_loss, d->labels, pred, prob, n);
        eval_report_free(&r);
    }
    free(Z);
    free(pred);
    free(prob);
    return rc;
}

/* ------------------------------------------------------------------ */
/* log.csv                                                             */

static void fmt_num(char *b, size_t n, const char *fmt, double v, int on)
{
    if (!on || !isfinite(v)) snprintf(b, n, "nan");
    else snprintf(b, n, fmt, v);
}

static char *log_line(const tr_epoch_stats *e)
{
    char f[6][40];
    fmt_num(f[0], 40, "%.6f", e->val_loss, e->evaluated);
    fmt_num(f[1], 40, "%.6f", e->val_acc, e->evaluated);
    fmt_num(f[2], 40, "%.6f", e->val_balanced_acc, e->evaluated);
    fmt_num(f[3], 40, "%.6f", e->val_f1_macro, e->evaluated);
    fmt_num(f[4], 40, "%.6f", e->val_auc_macro, e->evaluated);
    fmt_num(f[5], 40, "%.6f", e->score, e->evaluated);
    char *s = NULL;
    NCMI_CHECK(asprintf(&s, "%d,%.8g,%.6f,%.6f,%s,%s,%s,%s,%s,%s,%.3f", e->epoch, e->lr, e->train_loss,
                        e->train_acc, f[0], f[1], f[2], f[3], f[4], f[5], e->seconds) >= 0,
               "out of memory");
    return s;
}

static int log_write(const tr_trainer *t, const char *path)
{
    char tmp[4200];
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof tmp)
        return ncmi_error_set("%s: path too long", path);
    FILE *f = fopen(tmp, "w");
    if (!f) return ncmi_error_set("%s: cannot write: %s", path, strerror(errno));
    fprintf(f, "%s\n", LOG_HEADER);
    for (int i = 0; i < t->n_log; i++) fprintf(f, "%s\n", t->log_lines[i]);
    int bad = ferror(f);
    if (fclose(f) != 0 || bad || rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return ncmi_error_set("%s: cannot write: %s", path, strerror(e));
    }
    ncmi_tmp_sweep(path);
    return 0;
}

static void log_push(tr_trainer *t, char *line)
{
    char **v = realloc(t->log_lines, (size_t)(t->n_log + 1) * sizeof *v);
    NCMI_CHECK(v, "out of memory");
    t->log_lines = v;
    t->log_lines[t->n_log++] = line;
}

/* The rows of an existing log with epoch <= max_epoch (resume). */
static int log_read(tr_trainer *t, const char *path, int max_epoch)
{
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    char line[2048];
    int lineno = 0, rc = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        line[strcspn(line, "\r\n")] = 0;
        if (lineno == 1) {
            if (strcmp(line, LOG_HEADER)) {
                rc = ncmi_error_set("%s:1: not the log header of this ncmi version", path);
                break;
            }
            continue;
        }
        int ep;
        if (sscanf(line, "%d,", &ep) != 1) {
            rc = ncmi_error_set("%s:%d: malformed log row", path, lineno);
            break;
        }
        if (ep <= max_epoch) log_push(t, strdup(line));
    }
    fclose(f);
    return rc;
}

/* ------------------------------------------------------------------ */
/* progress                                                            */

typedef struct progress {
    int mode;
    double t_start, t_last;
    int epochs, start_epoch;
} progress;

static void fmt_eta(double s, char *buf, size_t n)
{
    if (!(s >= 0) || s > 1e7) {
        snprintf(buf, n, "?");
        return;
    }
    int x = (int)(s + 0.5);
    if (x >= 3600) snprintf(buf, n, "%d:%02d:%02d", x / 3600, x / 60 % 60, x % 60);
    else snprintf(buf, n, "%d:%02d", x / 60, x % 60);
}

static void progress_step(progress *p, int epoch, int step, int steps, double loss, double acc,
                          const tr_state *s)
{
    if (p->mode != 1) return;
    double t = now_s();
    if (t - p->t_last < 0.1 && step < steps) return;
    p->t_last = t;
    double done = (double)(epoch - p->start_epoch) + (double)step / steps;
    double total = (double)(p->epochs - p->start_epoch);
    double rate = done > 0 ? (t - p->t_start) / done : 0;
    char eta[32];
    fmt_eta(done > 0 ? rate * (total - done) : -1, eta, sizeof eta);
    char best[64] = "";
    if (s->best_epoch > 0) snprintf(best, sizeof best, "  best %.4g (ep %d)", s->best_score, s->best_epoch);
    fprintf(stderr, "\r\033[Kepoch %d/%d  step %d/%d  loss %.4f  acc %.1f%%%s  %.0f steps/s  ETA %s",
            epoch + 1, p->epochs, step, steps, loss, 100 * acc, best,
            rate > 0 ? (double)steps / rate : 0.0, eta);
    fflush(stderr);
}

static void progress_epoch(progress *p, const tr_epoch_stats *r)
{
    if (p->mode != 0) return;
    if (r->evaluated)
        fprintf(stderr,
                "epoch %d/%d  lr %.4g  train_loss %.4f  train_acc %.4f  val_loss %.4f  val_acc %.4f  "
                "%.2fs\n",
                r->epoch, p->epochs, r->lr, r->train_loss, r->train_acc, r->val_loss, r->val_acc,
                r->seconds);
    else
        fprintf(stderr, "epoch %d/%d  lr %.4g  train_loss %.4f  train_acc %.4f  %.2fs\n", r->epoch,
                p->epochs, r->lr, r->train_loss, r->train_acc, r->seconds);
}

static void progress_end(progress *p)
{
    if (p->mode == 1) {
        fputc('\n', stderr);
        fflush(stderr);
    }
}

/* ------------------------------------------------------------------ */
/* the loop                                                            */

/* The schedule's t for epoch e (from 0): e, except during a warm-up of w
 * epochs, where epoch e runs at (e+1)/w of the base rate (no epoch at 0). */
static double epoch_time(const nn_lr_schedule *s, int e)
{
    double w = s->warmup;
    if (w > 0 && e < w) return e + 1 < w ? e + 1 : w;
    return e;
}

/* Centre from an eval-mode pass over the first center_init_samples training
 * samples (all when 0). */
static int init_center(tr_trainer *t)
{
    const tr_dataset *d = t->train;
    int n = t->cfg.center_init_samples > 0 && t->cfg.center_init_samples < d->n
                ? t->cfg.center_init_samples
                : d->n;
    float *Z;
    tr_dataset sub = *d;
    sub.n = n;
    if (tr_embed(t, &sub, &Z)) return -1;
    int rc = nn_ncmi_init_center(&t->ncmi, Z, n);
    free(Z);
    return rc;
}

static int step_accuracy(tr_trainer *t, const nn_tensor *z, const nn_tensor *logits, const int *y, int n)
{
    const int C = t->C, D = t->D;
    int hits = 0;
    if (logits) {
        float *lh = nn_host_view(logits);
        for (int i = 0; i < n; i++) {
            const float *r = lh + (size_t)i * C;
            int b = 0;
            for (int c = 1; c < C; c++)
                if (r[c] > r[b]) b = c;
            hits += b == y[i];
        }
        nn_host_release(logits, lh);
        return hits;
    }
    /* NCMI: nearest learned centroid in KL */
    /* argmin_c KL(p || q_c) = argmax_c sum_j p_j ln q_cj, and a positive factor per
     * sample does not change the argmax: p_j is replaced by the unnormalised
     * s(v_j) (NSF) or exp(v_j - max v) (softmax), in float (logging only) */
    const nn_ncmi_cfg *nc = &t->ncmi.cfg;
    float *lq = malloc((size_t)C * D * sizeof *lq);
    NCMI_CHECK(lq, "out of memory");
    nn_ncmi_centroids(&t->ncmi, lq);
    for (size_t k = 0; k < (size_t)C * D; k++) lq[k] = logf(lq[k] > 1e-30f ? lq[k] : 1e-30f);
    float *cen = nn_host_view(t->ncmi.center), *zh = nn_host_view(z);
    float *S = malloc((size_t)n * D * sizeof *S), *sc_ = malloc((size_t)n * C * sizeof *sc_);
    NCMI_CHECK(S && sc_, "out of memory");
    for (int i = 0; i < n; i++) {
        const float *zi = zh + (size_t)i * D;
        float *si = S + (size_t)i * D;
        float r2 = 0, mx = -INFINITY;
        for (int j = 0; j < D; j++) {
            si[j] = zi[j] - (nc->centering ? cen[j] : 0.f);
            r2 += si[j] * si[j];
        }
        float r = sqrtf(r2);
        float sc = 1.f / ((r > nc->norm_eps ? r : nc->norm_eps) * nc->tau);
        for (int j = 0; j < D; j++) {
            si[j] *= sc;
            mx = si[j] > mx ? si[j] : mx;
        }
        for (int j = 0; j < D; j++)
            si[j] = nc->simplex == NN_NCMI_SOFTMAX ? expf(si[j] - mx) : 1.f / (1.f + expf(-si[j]));
    }
    /* scores [n,C] = S [n,D] . lq^T */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, C, D, 1.f, S, D, lq, D, 0.f, sc_, C);
    for (int i = 0; i < n; i++) {
        const float *r = sc_ + (size_t)i * C;
        int b = 0;
        for (int c = 1; c < C; c++)
            if (r[c] > r[b]) b = c;
        hits += b == y[i];
    }
    nn_host_release(t->ncmi.center, cen);
    nn_host_release(z, zh);
    free(S);
    free(sc_);
    free(lq);
    return hits;
}

/* Data parallel: the NCMI centre's EMA step from the mean of z over every
 * rank's slice of the batch (z may be NULL when n == 0), the same on every
 * rank and the same as one process's step on the global batch. */
static int dist_center_update(tr_trainer *t, const nn_tensor *z, int n)
{
    const int D = t->D;
    double *s = calloc((size_t)D + 1, sizeof *s);
    NCMI_CHECK(s, "out of memory");
    if (n > 0) {
        float *zh = nn_host_view(z);
        for (int j = 0; j < D; j++) {
            double a = 0;
            for (int i = 0; i < n; i++) a += zh[(size_t)i * D + j];
            s[j] = a;
        }
        nn_host_release(z, zh);
        s[D] = n;
    }
    int rc = nn_dist_allreduce_f64(t->cfg.dist, s, (size_t)D + 1);
    if (!rc && s[D] > 0) {
        for (int j = 0; j < D; j++) s[j] /= s[D];
        nn_ncmi_update_center_mean(&t->ncmi, s);
    }
    free(s);
    return rc;
}

int tr_step(tr_trainer *t, const int *idx, int n, nn_rng *rng, double *loss_out, int *hits)
{
    const tr_config *c = &t->cfg;
    const tr_dataset *tr = t->train;
    nn_graph *g = t->g;
    const int W = nn_dist_world(c->dist), rank = nn_dist_rank(c->dist);
    int *y = malloc((size_t)(n > 0 ? n : 1) * sizeof *y);
    NCMI_CHECK(y, "out of memory");
    for (int i = 0; i < n; i++) y[i] = tr->labels[idx[i]];
    tr_predictors_clear(t); /* the weights change: stored predictors no longer hold */
    int rc = 0;
    *loss_out = NAN;
    *hits = 0;
    nn_tensor *aux = NULL, *z = NULL, *logits = NULL, *loss = NULL;
    if (n > 0) {
        z = forward_samples(t, tr, idx, n, 1, rng, &aux);
        if (!z) {
            rc = -1;
            goto out;
        }
    }
    int ncmi_training = 1;
    if (W > 1 && t->have_ncmi && t->ncmi.cfg.centering) {
        if (dist_center_update(t, z, n)) {
            rc = -1;
            goto out;
        }
        ncmi_training = 0; /* the centre has had this step's update */
    }
    if (n > 0) {
        if (t->have_ncmi) {
            loss = nn_ncmi_loss(g, &t->ncmi, z, y, ncmi_training);
        } else {
            logits = nn_linear_m_forward(g, &t->fc, z);
            loss = nn_loss_forward(g, &c->loss, logits, y);
        }
        if (aux) loss = nn_loss_add_aux(g, loss, aux, 1.f);
        *loss_out = host_first(loss);
    }
    const int skipped = n == 0 || (t->have_ncmi && t->ncmi.last_skipped);
    int all_skipped = skipped;
    double n_all = n;
    if (W > 1) {
        /* every rank learns whether any loss is non-finite, whether any rank
         * takes a step, and the batch's total size (the weights) */
        double *f = calloc((size_t)W + 2, sizeof *f);
        NCMI_CHECK(f, "out of memory");
        f[rank] = n > 0 && !isfinite(*loss_out);
        f[W] = !skipped;
        f[W + 1] = n;
        if (nn_dist_allreduce_f64(c->dist, f, (size_t)W + 2)) {
            free(f);
            rc = -1;
            goto out;
        }
        char bad[256] = "";
        size_t q = 0;
        for (int r = 0; r < W && q < sizeof bad - 16; r++)
            if (f[r] > 0) q += (size_t)snprintf(bad + q, sizeof bad - q, "%s%d", q ? ", " : "", r);
        all_skipped = !(f[W] > 0);
        n_all = f[W + 1];
        free(f);
        if (bad[0]) {
            if (isfinite(*loss_out)) *loss_out = NAN;
            rc = ncmi_error_set("loss not finite on rank %s", bad);
            goto out;
        }
    } else if (!isfinite(*loss_out)) {
        rc = ncmi_error_set("loss %g", *loss_out);
        goto out;
    }
    if (!all_skipped) {
        if (W > 1 && nn_dist_reducer_begin(t->reducer, g, n_all > 0 ? n / n_all : 0.0)) {
            rc = -1;
            goto out;
        }
        /* with W > 1 the buckets are all-reduced while this runs (nn/dist.h) */
        if (z) nn_tensor_keep(z);
        if (logits) nn_tensor_keep(logits);
        if (!skipped && nn_backward(g, loss)) rc = -1;
        if (W > 1 && nn_dist_reducer_finish(t->reducer)) rc = -1;
        if (rc) goto out;
        if (c->clip_grad_norm > 0) nn_clip_grad_norm(&t->P_opt, c->clip_grad_norm);
        nn_optim_step(&t->opt);
        if (t->have_opt_xi) nn_optim_step(&t->opt_xi);
        if (t->model->after_step) t->model->after_step(t->model);
    }
    nn_params_zero_grad(&t->P_opt);
    if (t->have_ncmi) nn_params_zero_grad(&t->P_head);
    if (n > 0) *hits = step_accuracy(t, z, logits, y, n);
out:
    nn_graph_reset(g);
    free(y);
    return rc;
}

/* ---- data parallel (cfg.dist, world size > 1) ---- */

static uint64_t fnv1a(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ULL;
    return h;
}

/* Every rank must start an epoch loop from the same config and state: a
 * rank launched with other options, or one that resumed from a different
 * last.safetensors (a run folder that is not shared), would silently train
 * something else. Hashes of the config text and of the state (epoch, RNG,
 * every tensor of P_all) are compared with rank 0's. */
static int dist_check_same(tr_trainer *t)
{
    nn_dist *d = t->cfg.dist;
    const int W = nn_dist_world(d), rank = nn_dist_rank(d);
    uint64_t h[2] = {0xcbf29ce484222325ULL, 0xcbf29ce484222325ULL}, h0[2];
    const char *y = t->cfg.config_yaml ? t->cfg.config_yaml : "";
    h[0] = fnv1a(h[0], y, strlen(y));
    char rng[256];
    rng_to_text(&t->st.shuffle, rng, sizeof rng);
    h[1] = fnv1a(h[1], &t->st.epoch, sizeof t->st.epoch);
    h[1] = fnv1a(h[1], rng, strlen(rng));
    for (int i = 0; i < t->P_all.n; i++) {
        const nn_tensor *x = t->P_all.t[i];
        float *v = nn_host_view(x);
        h[1] = fnv1a(h[1], x->name, strlen(x->name));
        h[1] = fnv1a(h[1], v, x->numel * sizeof(float));
        nn_host_release(x, v);
    }
    memcpy(h0, h, sizeof h);
    if (nn_dist_broadcast(d, h0, sizeof h0, 0)) return -1;
    double *f = calloc((size_t)2 * W, sizeof *f);
    NCMI_CHECK(f, "out of memory");
    f[rank] = h[0] != h0[0];
    f[W + rank] = h[1] != h0[1];
    int rc = nn_dist_allreduce_f64(d, f, (size_t)2 * W);
    char bad[2][256] = {"", ""};
    for (int k = 0; k < 2 && !rc; k++)
        for (int r = 0, q = 0; r < W && q < 200; r++)
            if (f[k * W + r] > 0) q += snprintf(bad[k] + q, sizeof bad[k] - (size_t)q, "%s%d", q ? ", " : "", r);
    free(f);
    if (rc) return -1;
    if (bad[0][0])
        return ncmi_error_set("rank %s runs another config than rank 0: every rank must get the same --config "
                              "and --set options",
                              bad[0]);
    if (bad[1][0])
        return ncmi_error_set("rank %s starts from other weights or training state than rank 0 (with --resume "
                              "every rank reads <run>/last.safetensors: the run folder must be on a filesystem "
                              "that every rank sees)",
                              bad[1]);
    return 0;
}

/* Buffers (batchnorm running statistics, the NCMI centre) from rank 0. */
static int dist_sync_buffers(tr_trainer *t)
{
    for (int i = 0; i < t->P_all.n; i++)
        if (t->P_all.kind[i] == NN_PARAM_BUFFER && !t->P_all.host_only[i] &&
            nn_dist_broadcast_tensor(t->cfg.dist, t->P_all.t[i], 0))
            return -1;
    return 0;
}

int tr_fit(tr_trainer *t)
{
    const tr_config *c = &t->cfg;
    const tr_dataset *tr = t->train;
    char path_log[4200] = "", path_last[4200] = "", path_best[4200] = "";
    if (c->run_dir) {
        snprintf(path_log, sizeof path_log, "%s/log.csv", c->run_dir);
        snprintf(path_last, sizeof path_last, "%s/last.safetensors", c->run_dir);
        snprintf(path_best, sizeof path_best, "%s/best.safetensors", c->run_dir);
    }
    /* data parallel: rank 0 alone evaluates, logs and writes the run folder */
    const int W = nn_dist_world(c->dist), rank = nn_dist_rank(c->dist), writer = rank == 0;
    const char *run_dir = writer ? c->run_dir : NULL;
    if (run_dir && t->resumed_from >= 0 && log_read(t, path_log, t->st.epoch)) return -1;
    if (t->st.epoch >= c->epochs || t->st.stopped) return 0;
    if (W > 1 && dist_check_same(t)) return -1;

    if (t->have_ncmi && c->ncmi.centering && !(host_first(t->ncmi.center_init) > 0.5f) &&
        init_center(t))
        return -1;
    if (W > 1 && dist_sync_buffers(t)) return -1;

    const int n = tr->n, bs = c->batch_size;
    const int steps = (n + bs - 1) / bs;
    int *perm = malloc((size_t)n * sizeof *perm), *mine = malloc((size_t)n * sizeof *mine);
    if (!perm || !mine) {
        free(perm);
        free(mine);
        return ncmi_error_set("out of memory");
    }
    progress prog = {writer ? c->progress : -1, now_s(), 0, c->epochs, t->st.epoch};
    int rc = 0;
    for (int epoch = t->st.epoch; epoch < c->epochs && !rc; epoch++) {
        double t0 = now_s();
        float lr = nn_lr_at(&c->schedule, epoch_time(&c->schedule, epoch));
        t->opt.lr = lr;
        if (t->have_opt_xi)
            t->opt_xi.lr = c->lr > 0 ? c->centroid_lr * (lr / c->lr) : c->centroid_lr;
        nn_rng_permutation(&t->st.shuffle, perm, n);
        if (tr->order && W == 1) tr->order(tr, perm, n); /* read-ahead hint (bags) */
        if (tr->order && W > 1) {
            /* this rank reads its slices only: the hint is their concatenation */
            int k = 0;
            for (int b0 = 0; b0 < n; b0 += bs) {
                const int nb = n - b0 < bs ? n - b0 : bs;
                for (int i = (int)((long)nb * rank / W); i < (int)((long)nb * (rank + 1) / W); i++)
                    mine[k++] = perm[b0 + i];
            }
            tr->order(tr, mine, k);
        }
        if (t->model->epoch_start) t->model->epoch_start(t->model, epoch, c->epochs);
        nn_rng aug = nn_rng_fork(&t->st.shuffle, (uint64_t)epoch);
        /* ranks augment and drop out with streams of their own */
        if (W > 1) aug = nn_rng_fork(&aug, (uint64_t)rank + 1);
        double loss_sum = 0;
        long correct = 0;
        long seen = 0;
        for (int step = 0; step < steps && !rc; step++) {
            int b0 = step * bs, nb = n - b0 < bs ? n - b0 : bs;
            /* this rank's slice of the global batch perm[b0 .. b0 + nb) */
            const int lo = (int)((long)nb * rank / W), hi = (int)((long)nb * (rank + 1) / W);
            const int *sl = perm + b0 + lo, ns = hi - lo;
            double lv;
            int hits;
            if (tr_step(t, sl, ns, &aug, &lv, &hits)) {
                if (!isfinite(lv)) {
                    /* name the samples of the step (the slides, for bags) and the last good checkpoint */
                    char who[512] = "", ck[4400] = "no checkpoint written yet";
                    if (tr->sample_id) {
                        size_t q = 0;
                        for (int i = 0; i < ns && i < 8 && q < sizeof who; i++)
                            q += (size_t)snprintf(who + q, sizeof who - q, "%s%s", i ? ", " : "",
                                                  tr->sample_id(tr, sl[i]));
                        if (ns > 8 && q < sizeof who) snprintf(who + q, sizeof who - q, ", ... (%d)", ns);
                    }
                    if (c->run_dir && epoch > 0)
                        snprintf(ck, sizeof ck, "last good checkpoint: %s (epoch %d)", path_last, epoch);
                    char on[300] = "";
                    if (W > 1) snprintf(on, sizeof on, " (%s; this rank's samples)", ncmi_error());
                    ncmi_error_set("training diverged at epoch %d step %d (loss %g%s%s%s)%s; %s; lower the "
                                   "learning rate (%g) or clip the gradient norm",
                                   epoch + 1, step + 1, lv, who[0] ? ", " : "",
                                   who[0] ? (tr->bags ? (ns > 1 ? "slides " : "slide ") : "samples ") : "",
                                   who, on, ck, (double)lr);
                }
                rc = -1;
                break;
            }
            if (ns > 0) loss_sum += lv * ns;
            correct += hits;
            seen += ns;
            progress_step(&prog, epoch, step + 1, steps, seen ? loss_sum / seen : 0, seen ? (double)correct / seen : 0,
                          &t->st);
        }
        if (rc) break;
        if (W > 1) {
            /* the epoch's training loss and accuracy over every rank; rank 0's buffers */
            double a[3] = {loss_sum, (double)correct, (double)seen};
            if (nn_dist_allreduce_f64(c->dist, a, 3) || dist_sync_buffers(t)) {
                rc = -1;
                break;
            }
            loss_sum = a[0];
            correct = (long)a[1];
            seen = (long)a[2];
        }
        tr_epoch_stats es = {0};
        es.epoch = epoch + 1;
        es.lr = lr;
        es.train_loss = loss_sum / seen;
        es.train_acc = (double)correct / seen;
        int last_epoch = epoch + 1 == c->epochs;
        int is_best = 0, bad = 0;
        if (t->val && t->val->n > 0 && ((epoch + 1) % c->eval_every == 0 || last_epoch)) {
            /* data parallel: rank 0 evaluates; its outcome reaches the others below */
            if (writer && validate(t, &es)) bad = 1;
            double sc = isfinite(es.score) ? es.score : -INFINITY;
            if (writer && !bad) {
                is_best = t->st.best_epoch == 0 || sc > t->st.best_score;
                if (is_best) {
                    t->st.best_score = sc;
                    t->st.best_epoch = epoch + 1;
                    t->st.bad_evals = 0;
                } else if (++t->st.bad_evals >= c->patience && c->patience > 0) {
                    t->st.stopped = 1;
                }
            }
        } else if (!t->val || t->val->n == 0) {
            /* no validation set: the last epoch is the selected one */
            is_best = 1;
            t->st.best_epoch = epoch + 1;
        }
        t->st.epoch = epoch + 1;
        es.seconds = now_s() - t0;
        log_push(t, log_line(&es));
        /* best first, then the log, then last: a run interrupted in between
         * resumes from the previous last and rewrites the rest */
        if (!bad && run_dir &&
            ((is_best && save_checkpoint(t, path_best, 0, es.val_acc, es.score)) ||
             log_write(t, path_log) || save_checkpoint(t, path_last, 1, es.val_acc, es.score)))
            bad = 1;
        if (W > 1) {
            /* the others wait (without a time limit: evaluation may be long) for
             * rank 0's evaluation and checkpoint, then take its outcome */
            double s[5] = {bad, t->st.best_score, t->st.best_epoch, t->st.bad_evals, t->st.stopped};
            if (nn_dist_barrier(c->dist, -1) || nn_dist_broadcast(c->dist, s, sizeof s, 0)) {
                rc = -1;
                break;
            }
            if (!writer) {
                if (s[0] > 0) {
                    rc = ncmi_error_set("rank 0 failed to evaluate or to write the run folder after epoch %d "
                                        "(see its message)",
                                        epoch + 1);
                    break;
                }
                t->st.best_score = s[1];
                t->st.best_epoch = (int)s[2];
                t->st.bad_evals = (int)s[3];
                t->st.stopped = (int)s[4];
            }
        }
        if (bad) {
            rc = -1;
            break;
        }
        progress_epoch(&prog, &es);
        if (t->st.stopped) {
            if (prog.mode == 1) progress_end(&prog);
            prog.mode = prog.mode == 1 ? -1 : prog.mode;
            if (c->out && writer)
                fprintf(c->out, "early stopping after epoch %d: no better %s on val for %d evaluations\n",
                        epoch + 1, c->select, c->patience);
            break;
        }
    }
    progress_end(&prog);
    free(perm);
    free(mine);
    return rc;
}

/* ------------------------------------------------------------------ */
/* final evaluation files                                              */


int tr_write_eval(tr_trainer *t, const tr_dataset *d, tr_method method, const char *dir, int suffix,
                  int primary, int epoch, double *acc)
{
    const int n = d->n, C = t->C;
    int *pred = malloc((size_t)(n > 0 ? n : 1) * sizeof *pred);
    double *prob = malloc((size_t)(n > 0 ? n : 1) * C * sizeof *prob);
    char **ids = malloc((size_t)(n > 0 ? n : 1) * sizeof *ids);
    NCMI_CHECK(pred && prob && ids, "out of memory");
    int rc = tr_predict(t, d, method, pred, prob);
    for (int i = 0; i < n; i++) ids[i] = strdup(d->sample_id(d, i));
    char sfx[32] = "";
    if (suffix) snprintf(sfx, sizeof sfx, "_%s", tr_method_name(method));
    char pp[4300], pm[4300];
    snprintf(pp, sizeof pp, "%s/predictions_%s%s.csv", dir, d->name, sfx);
    snprintf(pm, sizeof pm, "%s/metrics_%s%s.json", dir, d->name, sfx);
    eval_report r = {0}; /* as in validate() */
    int have_r = 0;
    if (!rc) rc = eval_predictions_write(pp, t->cfg.class_names, C, ids, d->labels, pred, prob, n);
    if (!rc) rc = eval_report_compute(&r, d->labels, pred, prob, n, C);
    if (!rc) {
        have_r = 1;
        json_t *j = json_object();
        json_object_set_new(j, "split", json_string(d->name));
        json_object_set_new(j, "method", json_string(tr_method_name(method)));
        json_object_set_new(j, "primary", json_boolean(primary));
        json_object_set_new(j, "epoch", json_integer(epoch));
        json_object_set_new(j, "predictions", json_string(pp));
        json_object_set_new(j, "n", json_integer(n));
        eval_report_json(j, &r, (const char *const *)t->cfg.class_names, C);
        rc = eval_json_write_atomic(pm, j);
        json_decref(j);
        if (acc) *acc = r.accuracy;
    }
    if (have_r) eval_report_free(&r);
    for (int i = 0; i < n; i++) free(ids[i]);
    free(ids);
    free(pred);
    free(prob);
    return rc;
}

int tr_final_eval(tr_trainer *t, const tr_dataset *d)
{
    const tr_config *c = &t->cfg;
    if (!c->run_dir) return ncmi_error_set("final evaluation: no run folder");
    char path_best[4200];
    snprintf(path_best, sizeof path_best, "%s/best.safetensors", c->run_dir);
    int epoch = t->st.epoch;
    if (file_exists(path_best)) {
        if (tr_load_weights(t, path_best)) return -1;
        char *e = tr_checkpoint_meta(path_best, "epoch");
        if (e) epoch = atoi(e);
        free(e);
    }
    if (!t->have_ncmi) {
        double acc;
        if (tr_write_eval(t, d, TR_METHOD_LINEAR, c->run_dir, 0, 1, epoch, &acc)) return -1;
        if (c->out)
            fprintf(c->out, "%s (epoch %d): accuracy %.4f  -> %s/predictions_%s.csv, metrics_%s.json\n",
                    d->name, epoch, acc, c->run_dir, d->name, d->name);
        return 0;
    }
    /* class-mean centroids and linear probe of the selected weights, stored
     * in best.safetensors: eval and score predict with them, without the
     * training set */
    if (tr_compute_predictors(t)) return -1;
    if (file_exists(path_best) && tr_save_predictors(t, path_best)) return -1;
    const tr_method ms[3] = {TR_METHOD_CC, TR_METHOD_LEARNED, TR_METHOD_LP};
    for (int k = 0; k < 3; k++) {
        double acc;
        int primary = ms[k] == c->ncmi_eval;
        if (tr_write_eval(t, d, ms[k], c->run_dir, 1, primary, epoch, &acc)) return -1;
        if (primary && tr_write_eval(t, d, ms[k], c->run_dir, 0, 1, epoch, NULL)) return -1;
        if (c->out)
            fprintf(c->out, "%s (epoch %d) NCMI-%-7s accuracy %.4f%s\n", d->name, epoch,
                    ms[k] == TR_METHOD_CC ? "CC" : ms[k] == TR_METHOD_LP ? "LP" : "learned", acc,
                    primary ? "  (primary: also predictions_<split>.csv)" : "");
    }
    return 0;
}
