/* Datasets, model and trainer settings from a training config (train_job.h). */
#include "train_job.h"

#include "cli.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../mil/bags.h"
#include "../mil/mil.h"
#include "../natural/augment.h"
#include "../natural/cifar.h"
#include "../natural/imagefolder.h"
#include "../natural/loader.h"
#include "../natural/mnist.h"
#include "../natural/resnet_model.h"
#include "../nn/error.h"
#include "../nn/synth.h"

static char **class_list(const ncmi_train_config *c, int C)
{
    char **v = calloc((size_t)C, sizeof *v);
    if (!v) return NULL;
    for (int i = 0; i < C; i++) {
        char buf[32];
        snprintf(buf, sizeof buf, "%d", i);
        v[i] = strdup(c->classes.n ? c->classes.v[i] : buf);
        if (!v[i]) {
            for (int j = 0; j < i; j++) free(v[j]);
            free(v);
            return NULL;
        }
    }
    return v;
}

/* Rows of X/y/ids given by idx into a new dense dataset. */
static int make_split(tr_dataset *d, const char *name, const char *source, const float *X,
                      const int *y, const int *idx, int n, int dim, int ndim, const int *shape,
                      const char *id_prefix, const tr_dense_opts *opts)
{
    float *Xs = malloc((size_t)(n > 0 ? n : 1) * dim * sizeof *Xs);
    int *ys = malloc((size_t)(n > 0 ? n : 1) * sizeof *ys);
    char **ids = id_prefix ? calloc((size_t)(n > 0 ? n : 1), sizeof *ids) : NULL;
    if (!Xs || !ys || (id_prefix && !ids)) {
        free(Xs);
        free(ys);
        free(ids);
        return ncmi_error_set("out of memory");
    }
    for (int i = 0; i < n; i++) {
        // NOLINTNEXTLINE(clang-analyzer-core.UndefinedBinaryOperatorResult): false positive, idx[0..n) is set by the caller (n_train + n_val + n_test rows)
        memcpy(Xs + (size_t)i * dim, X + (size_t)idx[i] * dim, (size_t)dim * sizeof *Xs);
        ys[i] = y[idx[i]];
        if (ids) {
            char b[64];
            snprintf(b, sizeof b, "%s%d", id_prefix, idx[i]);
            ids[i] = strdup(b);
        }
    }
    return tr_dense_dataset_init(d, name, source, n, ndim, shape, Xs, ys, ids, opts);
}

static int load_synthetic(cli_train_job *j, const ncmi_train_config *c, nn_rng *data_rng)
{
    const int n = c->n_train + c->n_val + c->n_test, dim = c->dim;
    float *X = malloc((size_t)n * dim * sizeof *X);
    int *y = malloc((size_t)n * sizeof *y), *idx = malloc((size_t)n * sizeof *idx);
    if (!X || !y || !idx) {
        free(X);
        free(y);
        free(idx);
        return ncmi_error_set("out of memory for %d x %d samples", n, dim);
    }
    nn_synth_blobs(data_rng, n, dim, c->n_classes, (float)c->separation, X, y);
    for (int i = 0; i < n; i++) idx[i] = i;
    int rc = make_split(&j->train, "train", "synthetic", X, y, idx, c->n_train, dim, 1, &dim, NULL, NULL) ||
             make_split(&j->val, "val", "synthetic", X, y, idx + c->n_train, c->n_val, dim, 1, &dim, NULL,
                        NULL);
    if (!rc && c->n_test > 0) {
        rc = make_split(&j->test, "test", "synthetic", X, y, idx + c->n_train + c->n_val, c->n_test, dim,
                        1, &dim, NULL, NULL);
        j->have_test = !rc;
    }
    free(X);
    free(y);
    free(idx);
    j->C = c->n_classes;
    return rc ? -1 : 0;
}

static int load_mnist(cli_train_job *j, const ncmi_train_config *c)
{
    nat_mnist m;
    if (nat_mnist_load_dir(&m, c->data_root, "t10k")) return -1;
    char labels_path[4200];
    struct stat sb;
    snprintf(labels_path, sizeof labels_path, "%s/t10k-labels-idx1-ubyte.gz", c->data_root);
    if (stat(labels_path, &sb) != 0)
        snprintf(labels_path, sizeof labels_path, "%s/t10k-labels-idx1-ubyte", c->data_root);
    int rc = 0;
    const int need = c->n_train + c->n_val + c->n_test;
    if (need > m.n) {
        rc = ncmi_error_set("%s: %d images, the split needs %d", c->data_root, m.n, need);
        goto out;
    }
    /* labels are the digit names; the config's class list maps them */
    int C = c->classes.n ? c->classes.n : 10;
    int map[10];
    for (int d = 0; d < 10; d++) {
        map[d] = -1;
        char name[4];
        snprintf(name, sizeof name, "%d", d);
        if (!c->classes.n) map[d] = d;
        for (int k = 0; k < c->classes.n; k++)
            if (!strcmp(c->classes.v[k], name)) map[d] = k;
    }
    int *y = malloc((size_t)m.n * sizeof *y), *perm = malloc((size_t)m.n * sizeof *perm);
    float *X = malloc((size_t)m.n * m.rows * m.cols * sizeof *X);
    if (!y || !perm || !X) {
        free(y);
        free(perm);
        free(X);
        rc = ncmi_error_set("out of memory");
        goto out;
    }
    nn_rng sr;
    nn_rng_seed(&sr, (uint64_t)c->split_seed);
    nn_rng_permutation(&sr, perm, m.n);
    for (int i = 0; i < need && !rc; i++) {
        int r = perm[i];
        y[r] = map[m.labels[r]];
        if (y[r] < 0) {
            char list[1024] = "";
            size_t q = 0;
            for (int k = 0; k < c->classes.n && q < sizeof list; k++)
                q += (size_t)snprintf(list + q, sizeof list - q, k ? ", %s" : "%s", c->classes.v[k]);
            rc = ncmi_error_set("%s: row %d: label '%d' is not in the class list (%s) of data.classes",
                                labels_path, r + 1, m.labels[r], list);
        }
    }
    if (!rc) {
        int *idx_all = malloc((size_t)m.n * sizeof *idx_all);
        for (int i = 0; i < m.n; i++) idx_all[i] = i;
        nat_mnist_to_float(&m, idx_all, m.n, 0.1307f, 0.3081f, X);
        free(idx_all);
        /* samples are images [1, 28, 28]: the ResNets take them as they are, the MLP flattens */
        const int dim = m.rows * m.cols, shape[3] = {1, m.rows, m.cols};
        tr_dense_opts o = {c->augment_shift, m.rows, m.cols};
        rc = make_split(&j->test, "test", labels_path, X, y, perm, c->n_test, dim, 3, shape, "t10k_", &o) ||
             make_split(&j->train, "train", labels_path, X, y, perm + c->n_test, c->n_train, dim, 3, shape,
                        "t10k_", &o) ||
             make_split(&j->val, "val", labels_path, X, y, perm + c->n_test + c->n_train, c->n_val, dim, 3,
                        shape, "t10k_", &o);
        rc = rc ? -1 : 0;
        j->have_test = !rc && c->n_test > 0;
        j->C = C;
    }
    free(y);
    free(perm);
    free(X);
out:
    nat_mnist_free(&m);
    return rc;
}

/* The held-out validation part of n training samples and the rest, from a
 * permutation seeded by data.split_seed: val = the first n_val of it. */
static int natural_split(const ncmi_train_config *c, int n, int **perm, int *n_val, int *n_train)
{
    *perm = malloc((size_t)(n ? n : 1) * sizeof **perm);
    if (!*perm) return ncmi_error_set("out of memory");
    nn_rng sr;
    nn_rng_seed(&sr, (uint64_t)c->split_seed);
    nn_rng_permutation(&sr, *perm, n);
    int v = c->n_val > 0 ? c->n_val : (int)lround(c->val_fraction * n);
    if (v >= n) return ncmi_error_set("data.n_val / data.val_fraction: %d validation samples of %d", v, n);
    int t = n - v;
    if (c->n_train > 0 && c->n_train < t) t = c->n_train;
    *n_val = v;
    *n_train = t;
    return 0;
}

static char **copy_names(char *const *names, int C)
{
    char **v = calloc((size_t)C, sizeof *v);
    for (int i = 0; v && i < C; i++) v[i] = strdup(names[i]);
    return v;
}

/* cifar10 / cifar100 (binary files in data.root) and imagenet (data.root/train/<class>/ and
 * data.root/val/<class>/), served by the natural/ loaders on data.workers threads. */
static int load_natural(cli_train_job *j, const ncmi_train_config *c)
{
    nat_loader_opts o;
    nat_loader_opts_default(&o);
    o.workers = c->workers;
    nat_aug aug;
    const int cifar = c->data_kind != NCMI_DATA_IMAGENET;
    if (c->augment == NCMI_AUGMENT_CIFAR)
        nat_aug_cifar(&aug);
    else if (c->augment == NCMI_AUGMENT_IMAGENET)
        nat_aug_imagenet(&aug, c->train_size, c->eval_size, c->eval_resize);
    else if (cifar)
        nat_aug_plain(&aug, NAT_CIFAR_MEAN, NAT_CIFAR_STD, 3);
    else
        return ncmi_error_set("data.kind imagenet needs data.augment imagenet (images of many sizes are "
                              "resized and cropped to data.train_size / data.eval_size)");
    int rc = -1, *perm = NULL, nv = 0, nt = 0;
    if (cifar) {
        const int c100 = c->data_kind == NCMI_DATA_CIFAR100;
        nat_images tr, te;
        memset(&tr, 0, sizeof tr);
        memset(&te, 0, sizeof te);
        if (nat_cifar_load(&tr, c->data_root, c100, 1) || nat_cifar_load(&te, c->data_root, c100, 0)) goto cifar_out;
        if (natural_split(c, tr.n, &perm, &nv, &nt)) goto cifar_out;
        int ntest = c->n_test > 0 && c->n_test < te.n ? c->n_test : te.n;
        if (nat_image_dataset_init(&j->train, "train", tr.source, &tr, perm + nv, nt, &aug, &o)) goto cifar_out;
        if (nv > 0 ? nat_image_dataset_init(&j->val, "val", tr.source, &tr, perm, nv, &aug, &o)
                   : nat_image_dataset_init(&j->val, "val", te.source, &te, NULL, ntest, &aug, &o))
            goto cifar_out;
        if (nat_image_dataset_init(&j->test, "test", te.source, &te, NULL, ntest, &aug, &o)) goto cifar_out;
        j->have_test = 1;
        j->C = tr.n_classes;
        if (!c->classes.n) j->classes = copy_names(tr.class_names, tr.n_classes);
        rc = 0;
    cifar_out:
        nat_images_free(&tr);
        nat_images_free(&te);
    } else {
        nat_folder tr, va;
        memset(&tr, 0, sizeof tr);
        memset(&va, 0, sizeof va);
        char dt[4200], dv[4200];
        snprintf(dt, sizeof dt, "%s/train", c->data_root);
        snprintf(dv, sizeof dv, "%s/val", c->data_root);
        if (nat_folder_scan(&tr, dt, NULL, 0) || nat_folder_scan(&va, dv, tr.classes, tr.n_classes)) goto in_out;
        if (natural_split(c, tr.n, &perm, &nv, &nt)) goto in_out;
        int ntest = c->n_test > 0 && c->n_test < va.n ? c->n_test : va.n;
        if (nat_folder_dataset_init(&j->train, "train", dt, &tr, perm + nv, nt, &aug, &o)) goto in_out;
        if (nv > 0 ? nat_folder_dataset_init(&j->val, "val", dt, &tr, perm, nv, &aug, &o)
                   : nat_folder_dataset_init(&j->val, "val", dv, &va, NULL, ntest, &aug, &o))
            goto in_out;
        if (nat_folder_dataset_init(&j->test, "test", dv, &va, NULL, ntest, &aug, &o)) goto in_out;
        j->have_test = 1;
        j->C = tr.n_classes;
        if (!c->classes.n) j->classes = copy_names(tr.classes, tr.n_classes);
        rc = 0;
    in_out:
        nat_folder_free(&tr);
        nat_folder_free(&va);
    }
    free(perm);
    return rc;
}

static int load_bags(cli_train_job *j, const ncmi_train_config *c)
{
    char *man = ncmi_train_config_fold_path(c->manifest, c->fold);
    char *col = ncmi_train_config_fold_path(c->split_column, c->fold);
    if (!man || !col) {
        free(man);
        free(col);
        return ncmi_error_set("out of memory");
    }
    mil_bags_opts o;
    mil_bags_opts_default(&o);
    o.features_dir = c->features;
    o.manifest = man;
    o.split_column = col;
    o.classes = c->classes.v;
    o.n_classes = c->classes.n;
    o.cache_mb = c->cache_mb;
    o.prefetch = c->prefetch;
    o.skip_missing = c->skip_missing;
    o.standardize = c->standardize;
    mil_bags_info info;
    int rc = mil_bags_open(&o, &j->train, &j->val, &j->test, &info);
    free(man);
    free(col);
    if (rc) return -1;
    j->have_test = j->test.n > 0;
    j->C = info.C;
    j->classes = info.classes; /* the job frees them */
    j->d_feat = info.d_feat;
    info.classes = NULL;
    return 0;
}

void cli_train_job_mil_opts(const ncmi_train_config *c, int d_feat, mil_opts *o)
{
    mil_opts_default(o, (mil_head_kind)(c->model_kind - NCMI_MODEL_ABMIL));
    o->d_feat = d_feat;
    o->d_inner = c->mil_d_inner;
    o->attn_hidden = c->mil_attn_hidden;
    o->n_instance_layers = c->mil_instance_layers.n <= MIL_MAX_INSTANCE_LAYERS ? c->mil_instance_layers.n : 0;
    for (int i = 0; i < o->n_instance_layers; i++) o->instance_layers[i] = c->mil_instance_layers.v[i];
    o->instance_dropout = (float)c->mil_instance_dropout;
    o->gated = c->mil_gated;
    o->dropout = (float)c->mil_dropout;
    o->aem_lambda = (float)c->aem_lambda;
    o->aem_topk = c->aem_topk;
    o->aem_cosine = c->aem_cosine;
    o->transmil_landmarks = c->transmil_landmarks;
    o->transmil_pinv_iters = c->transmil_pinv_iters;
    o->transmil_legacy_slice = c->transmil_legacy_slice;
    o->asmil_tokens = c->asmil_tokens;
    o->asmil_heads = c->asmil_heads;
    o->asmil_drop = c->asmil_drop;
    o->asmil_kd_T = (float)c->asmil_kd_T;
    o->asmil_kd_weight = (float)c->asmil_kd_weight;
    o->asmil_ema = (float)c->asmil_ema;
    o->asmil_anchor_frozen = c->asmil_anchor == 1;
}

/* AEM with mil.aem.cosine: lambda * 0.5 (1 + cos(pi e / epochs)) in epoch e */
static void aem_cosine_epoch(tr_model *m, int epoch, int epochs)
{
    mil_aem_set_lambda_scale(m, (float)(0.5 * (1.0 + cos(M_PI * epoch / (epochs > 0 ? epochs : 1)))));
}

static int init_mil(cli_train_job *j, const ncmi_train_config *c)
{
    mil_opts o;
    cli_train_job_mil_opts(c, j->d_feat, &o);
    if (mil_head_init(&j->model, &o, &j->init_rng)) return -1;
    if (o.kind == MIL_AEM && o.aem_cosine) j->model.epoch_start = aem_cosine_epoch;
    return 0;
}

int cli_train_job_init(cli_train_job *j, const ncmi_train_config *c)
{
    memset(j, 0, sizeof *j);
    /* every random stream derives from the seed, in a fixed order (trainer.h) */
    nn_rng root;
    nn_rng_seed(&root, (uint64_t)c->seed);
    nn_rng data_rng = nn_rng_fork(&root, 1);
    j->init_rng = nn_rng_fork(&root, 2);
    int rc = c->data_kind == NCMI_DATA_MNIST       ? load_mnist(j, c)
             : c->data_kind == NCMI_DATA_BAGS      ? load_bags(j, c)
             : c->data_kind == NCMI_DATA_SYNTHETIC ? load_synthetic(j, c, &data_rng)
                                                   : load_natural(j, c);
    if (rc) {
        cli_train_job_free(j);
        return -1;
    }
    if (!j->classes) j->classes = class_list(c, j->C);
    if (!j->classes) {
        cli_train_job_free(j);
        return ncmi_error_set("out of memory");
    }
    if (c->data_kind == NCMI_DATA_BAGS) {
        if (init_mil(j, c)) {
            cli_train_job_free(j);
            return -1;
        }
        j->have_model = 1;
        return 0;
    }
    if (NCMI_MODEL_IS_RESNET(c->model_kind)) {
        rn_config rc_ = {.arch = (rn_arch)(c->model_kind - NCMI_MODEL_RESNET18),
                         .cifar_stem = c->cifar_stem,
                         .n_stages = 4,
                         .num_classes = 0, /* the trainer's linear head is fc */
                         .width = c->width,
                         .in_channels = c->in_channels};
        if (rn_tr_model_init(&j->model, &rc_, &j->init_rng)) {
            cli_train_job_free(j);
            return -1;
        }
        j->have_model = 1;
        return 0;
    }
    int in = c->data_kind == NCMI_DATA_MNIST ? 28 * 28 : c->dim;
    if (tr_mlp_init(&j->model, in, c->hidden.v, c->hidden.n, &j->init_rng)) {
        cli_train_job_free(j);
        return -1;
    }
    j->have_model = 1;
    return 0;
}

void cli_train_job_free(cli_train_job *j)
{
    tr_dataset_free(&j->train);
    tr_dataset_free(&j->val);
    tr_dataset_free(&j->test);
    if (j->have_model) tr_model_free(&j->model);
    if (j->classes) {
        for (int i = 0; i < j->C; i++) free(j->classes[i]);
        free(j->classes);
    }
    memset(j, 0, sizeof *j);
}

void cli_train_job_tr_config(const ncmi_train_config *c, const cli_train_job *j, tr_config *t)
{
    tr_config_default(t);
    t->device_cuda = cli_device_cuda;
    t->epochs = c->epochs;
    t->batch_size = c->batch_size;
    t->clip_grad_norm = (float)c->clip_grad_norm;
    t->seed = (uint64_t)c->seed;
    t->optim = c->optim_name == NCMI_OPTIM_NAME_ADAMW  ? NN_OPTIM_ADAMW
               : c->optim_name == NCMI_OPTIM_NAME_ADAM ? NN_OPTIM_ADAM
                                                       : NN_OPTIM_SGD;
    t->lr = (float)c->lr;
    t->momentum = (float)c->momentum;
    t->nesterov = c->nesterov;
    t->weight_decay = (float)c->weight_decay;
    t->beta1 = (float)c->betas.v[0];
    t->beta2 = (float)c->betas.v[1];
    t->eps = (float)c->eps;
    nn_lr_schedule *s = &t->schedule;
    memset(s, 0, sizeof *s);
    s->kind = c->schedule_kind == NCMI_SCHED_MULTISTEP ? NN_LR_MULTISTEP
              : c->schedule_kind == NCMI_SCHED_COSINE  ? NN_LR_COSINE
                                                       : NN_LR_CONSTANT;
    s->base_lr = (float)c->lr;
    s->min_lr = (float)c->min_lr;
    s->warmup = c->warmup_epochs;
    s->total = (double)c->epochs - c->warmup_epochs;
    s->gamma = (float)c->gamma;
    s->n_milestones = c->milestones.n;
    for (int i = 0; i < c->milestones.n && i < 16; i++) s->milestones[i] = c->milestones.v[i];

    t->head = c->head_kind == NCMI_HEAD_NCMI ? TR_HEAD_NCMI : TR_HEAD_LINEAR;
    nn_loss_kind lk = (nn_loss_kind)c->loss_kind;
    if (lk == NN_LOSS_CE && c->label_smoothing > 0) lk = NN_LOSS_LABEL_SMOOTHING;
    t->loss = nn_loss_cfg_default(lk);
    if (lk == NN_LOSS_LABEL_SMOOTHING && c->label_smoothing > 0) t->loss.smoothing = (float)c->label_smoothing;
    t->loss.focal_gamma = (float)c->focal_gamma;
    t->loss.poly_eps = (float)c->poly_eps;
    t->loss.square_k = (float)c->square_k;
    t->loss.square_M = (float)c->square_M;
    t->loss.anticlass_weight = (float)c->anticlass_weight;
    t->ncmi = nn_ncmi_cfg_default();
    t->ncmi.tau = (float)c->ncmi_tau;
    t->ncmi.momentum = (float)c->ncmi_momentum;
    t->ncmi.simplex = c->ncmi_simplex ? NN_NCMI_SOFTMAX : NN_NCMI_NSF;
    t->ncmi.centering = c->ncmi_centering;
    t->ncmi.gamma = c->ncmi_gamma ? NN_NCMI_GAMMA_PRIOR : NN_NCMI_GAMMA_CLASSES;
    t->ncmi.ratio = c->ncmi_ratio ? NN_NCMI_RATIO_OF_MEANS : NN_NCMI_RATIO_PER_SAMPLE;
    t->ncmi.centroids = c->ncmi_centroids ? NN_NCMI_CENTROIDS_FIXED : NN_NCMI_CENTROIDS_LEARNED;
    t->ncmi.gamma_floor = (float)c->ncmi_gamma_floor;
    t->centroid_lr = (float)c->centroid_lr;
    t->centroid_momentum = (float)c->centroid_momentum;
    t->centroid_weight_decay = (float)c->centroid_weight_decay;
    t->center_init_samples = c->center_init_samples;
    t->ncmi_eval = c->ncmi_eval ? TR_METHOD_LEARNED : TR_METHOD_CC;
    t->eval_every = c->eval_every;
    snprintf(t->select, sizeof t->select, "%s", c->select ? c->select : "accuracy");
    t->patience = c->patience;
    t->lp_epochs = c->lp_epochs;
    t->lp_batch_size = c->lp_batch_size;
    t->lp_lr = (float)c->lp_lr;
    t->lp_momentum = (float)c->lp_momentum;
    t->lp_weight_decay = (float)c->lp_weight_decay;
    t->n_lp_grid_epochs = c->lp_grid_epochs.n < TR_LP_GRID_MAX ? c->lp_grid_epochs.n : TR_LP_GRID_MAX;
    for (int i = 0; i < t->n_lp_grid_epochs; i++) t->lp_grid_epochs[i] = c->lp_grid_epochs.v[i];
    t->n_lp_grid_lr = c->lp_grid_lr.n < TR_LP_GRID_MAX ? c->lp_grid_lr.n : TR_LP_GRID_MAX;
    for (int i = 0; i < t->n_lp_grid_lr; i++) t->lp_grid_lr[i] = (float)c->lp_grid_lr.v[i];
    t->n_classes = j->C;
    t->class_names = j->classes;
}
