/* End-to-end training on the CPU engine: an MLP learns a seeded synthetic
 * 3-class problem with SGD (momentum) and with AdamW; a run interrupted by a
 * checkpoint (parameters + optimizer state), a full teardown and a reload
 * ends bit-identical to an uninterrupted run; no_grad forwards record no
 * backward.
 *
 * Data: nn_synth_blobs, 900 points in 8 dims, 3 classes with means of norm
 * 4 and unit noise (nearest class mean gets 99% on the test split, 97% with
 * norm 3.5); the first 600 train, the last 300 test. The network must find the
 * boundaries from 600 noisy points: at initialisation it is at chance. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../nn/error.h"
#include "../nn/ops.h"
#include "../nn/optim.h"
#include "../nn/params.h"
#include "../nn/synth.h"
#include "test.h"

enum { N_ALL = 900, N_TRAIN = 600, N_TEST = 300, DIM = 8, N_CLASSES = 3, HIDDEN = 32,
       BATCH = 32, EPOCHS = 30, RESUME_AT = 11 };
#define SEP 4.0f

typedef struct {
    float X[N_ALL * DIM];
    int y[N_ALL];
} blobs;

static const blobs *data(void)
{
    static blobs d;
    static int ready;
    if (!ready) {
        nn_rng r;
        nn_rng_seed(&r, 2024);
        nn_synth_blobs(&r, N_ALL, DIM, N_CLASSES, SEP, d.X, d.y);
        ready = 1;
    }
    return &d;
}

typedef struct {
    nn_params P;
    nn_linear_m fc1, fc2, fc3;
} mlp;

static void mlp_init(mlp *m, uint64_t seed)
{
    nn_rng r;
    nn_rng_seed(&r, seed);
    nn_params_init(&m->P);
    nn_linear_m_init(&m->fc1, &m->P, "fc1", DIM, HIDDEN, 1, &r);
    nn_linear_m_init(&m->fc2, &m->P, "fc2", HIDDEN, HIDDEN, 1, &r);
    nn_linear_m_init(&m->fc3, &m->P, "fc3", HIDDEN, N_CLASSES, 1, &r);
}

/* x [B,8] -> logits [B,3]; h1, h2 optional outputs. */
static nn_tensor *mlp_forward(nn_graph *g, const mlp *m, nn_tensor *x, nn_tensor **h1,
                              nn_tensor **h2)
{
    nn_tensor *a = nn_relu(g, nn_linear_m_forward(g, &m->fc1, x)); /* [B,32] */
    nn_tensor *b = nn_relu(g, nn_linear_m_forward(g, &m->fc2, a)); /* [B,32] */
    if (h1) *h1 = a;
    if (h2) *h2 = b;
    return nn_linear_m_forward(g, &m->fc3, b); /* [B,3] */
}

static void optim_make(nn_optim *o, nn_params *P, nn_optim_kind kind)
{
    if (kind == NN_OPTIM_SGD)
        nn_optim_sgd_init(o, P, 0.05f, 0.9f, 1e-4f, 0);
    else
        nn_optim_adamw_init(o, P, 3e-3f, 0.9f, 0.999f, 1e-8f, 1e-2f);
}

static nn_lr_schedule schedule(const nn_optim *o)
{
    nn_lr_schedule s;
    memset(&s, 0, sizeof s);
    s.kind = NN_LR_COSINE;
    s.base_lr = o->lr;
    s.min_lr = 0.02f * o->lr;
    s.warmup = 1.0;
    s.total = EPOCHS - 1.0;
    return s;
}

/* Epochs [e0, e1): minibatches in an order drawn from a per-epoch seed, so a
 * resumed run needs no RNG state; lr from the schedule at fractional epochs. */
static void train_epochs(mlp *m, nn_optim *o, const nn_lr_schedule *s, int e0, int e1)
{
    const blobs *d = data();
    nn_graph *g = nn_graph_new();
    int perm[N_TRAIN], yb[BATCH];
    float xb[BATCH * DIM];
    int nb = (N_TRAIN + BATCH - 1) / BATCH;
    for (int e = e0; e < e1; e++) {
        nn_rng r;
        nn_rng_seed(&r, 1000 + (uint64_t)e);
        nn_rng_permutation(&r, perm, N_TRAIN);
        for (int b = 0; b < nb; b++) {
            int n = N_TRAIN - b * BATCH < BATCH ? N_TRAIN - b * BATCH : BATCH;
            for (int i = 0; i < n; i++) {
                int k = perm[b * BATCH + i];
                memcpy(xb + i * DIM, d->X + k * DIM, DIM * sizeof(float));
                yb[i] = d->y[k];
            }
            int shape[2] = {n, DIM};
            nn_tensor *x = nn_tensor_from(g, 2, shape, xb);
            nn_tensor *loss = nn_cross_entropy(g, mlp_forward(g, m, x, NULL, NULL), yb, 0.f);
            o->lr = nn_lr_at(s, e + (double)b / nb);
            nn_params_zero_grad(&m->P);
            NCMI_CHECK(nn_backward(g, loss) == 0, "backward: %s", ncmi_error());
            nn_optim_step(o);
            nn_graph_reset(g);
        }
    }
    nn_graph_free(g);
}

/* Accuracy on rows [from, from+n) under no_grad. */
static double accuracy(const mlp *m, int from, int n)
{
    const blobs *d = data();
    nn_graph *g = nn_graph_new();
    nn_graph_set_no_grad(g, 1);
    int shape[2] = {n, DIM};
    nn_tensor *x = nn_tensor_from(g, 2, shape, d->X + (size_t)from * DIM);
    nn_tensor *lg = mlp_forward(g, m, x, NULL, NULL);
    int correct = 0;
    for (int i = 0; i < n; i++) {
        const float *r = lg->data + i * N_CLASSES;
        int best = 0;
        for (int c = 1; c < N_CLASSES; c++)
            if (r[c] > r[best]) best = c;
        correct += best == d->y[from + i];
    }
    nn_graph_free(g);
    return (double)correct / n;
}

static double seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

/* The parameters of a and b are bit-identical (same names, same bytes). */
static int params_identical(const nn_params *a, const nn_params *b, const char **which)
{
    if (a->n != b->n) return 0;
    for (int i = 0; i < a->n; i++) {
        *which = a->t[i]->name;
        if (strcmp(a->t[i]->name, b->t[i]->name) != 0 || a->t[i]->numel != b->t[i]->numel ||
            memcmp(a->t[i]->data, b->t[i]->data, a->t[i]->numel * sizeof(float)) != 0)
            return 0;
    }
    return 1;
}

static void train_and_resume(nn_optim_kind kind, const char *tag)
{
    /* uninterrupted run: learns the problem */
    mlp full;
    nn_optim of;
    mlp_init(&full, 7);
    double acc0 = accuracy(&full, N_TRAIN, N_TEST);
    optim_make(&of, &full.P, kind);
    nn_lr_schedule s = schedule(&of);
    double t0 = seconds();
    train_epochs(&full, &of, &s, 0, EPOCHS);
    double dt = seconds() - t0;
    double acc = accuracy(&full, N_TRAIN, N_TEST), acc_tr = accuracy(&full, 0, N_TRAIN);
    printf("    %s: %d epochs in %.2f s, test accuracy %.1f%% (train %.1f%%, at init %.1f%%)\n",
           tag, EPOCHS, dt, 100 * acc, 100 * acc_tr, 100 * acc0);
    EXPECT(acc0 < 0.7, "%s: the problem is trivial: %.1f%% before training", tag, 100 * acc0);
    EXPECT(acc >= 0.95, "%s: test accuracy %.1f%% < 95%%", tag, 100 * acc);

    /* interrupted run: RESUME_AT epochs, checkpoint, teardown */
    char path[512];
    snprintf(path, sizeof path, "%s/train_%s.safetensors", test_tmpdir(), tag);
    {
        mlp m;
        nn_optim o;
        mlp_init(&m, 7);
        optim_make(&o, &m.P, kind);
        train_epochs(&m, &o, &s, 0, RESUME_AT);
        const char *k[1] = {"epoch"}, *v[1] = {"11"};
        EXPECT(nn_checkpoint_save(path, &m.P, &o, k, v, 1) == 0, "save: %s", ncmi_error());
        nn_optim_free(&o);
        nn_params_free(&m.P);
    }
    /* rebuilt from a different init: everything must come from the file */
    mlp m;
    nn_optim o;
    mlp_init(&m, 99);
    optim_make(&o, &m.P, kind);
    if (nn_checkpoint_load(path, &m.P, &o) != 0) {
        test_fail_at(__FILE__, __LINE__, "%s: load: %s", tag, ncmi_error());
    } else {
        EXPECT(o.step == (long)RESUME_AT * ((N_TRAIN + BATCH - 1) / BATCH),
               "%s: optimizer step %ld after reload", tag, o.step);
        train_epochs(&m, &o, &s, RESUME_AT, EPOCHS);
        const char *which = "";
        EXPECT(params_identical(&full.P, &m.P, &which),
               "%s: resumed run differs from the uninterrupted one (first at %s)", tag, which);
        EXPECT(o.step == of.step, "%s: steps %ld vs %ld", tag, o.step, of.step);
    }
    nn_optim_free(&o);
    nn_params_free(&m.P);

    /* control: the same resume without the optimizer state must NOT match,
     * otherwise the comparison above proves nothing about that state */
    nn_safetensors st;
    mlp c;
    nn_optim oc;
    mlp_init(&c, 99);
    optim_make(&oc, &c.P, kind);
    if (nn_st_open(&st, path) != 0) {
        test_fail_at(__FILE__, __LINE__, "%s", ncmi_error());
    } else {
        EXPECT(nn_params_load_st(&c.P, &st, 0) == 0, "%s", ncmi_error());
        nn_st_close(&st);
        train_epochs(&c, &oc, &s, RESUME_AT, EPOCHS);
        const char *which = "";
        EXPECT(!params_identical(&full.P, &c.P, &which),
               "%s: resuming without optimizer state gave the same parameters", tag);
    }
    nn_optim_free(&oc);
    nn_params_free(&c.P);
    nn_optim_free(&of);
    nn_params_free(&full.P);
}

TEST(train_mlp_sgd_momentum) { train_and_resume(NN_OPTIM_SGD, "sgd"); }

TEST(train_mlp_adamw) { train_and_resume(NN_OPTIM_ADAMW, "adamw"); }

/* Under no_grad the same forward gives the same values and records nothing
 * to differentiate; the mode switch returns the previous mode. */
TEST(train_no_grad_forward)
{
    const blobs *d = data();
    mlp m;
    mlp_init(&m, 3);
    nn_graph *g = nn_graph_new();
    int shape[2] = {16, DIM};
    nn_tensor *x = nn_tensor_from(g, 2, shape, d->X);
    nn_tensor *h1, *h2;
    nn_tensor *ref = mlp_forward(g, &m, x, &h1, &h2);
    EXPECT(ref->requires_grad && ref->backward && h1->backward && h2->backward,
           "the grad-mode forward recorded no backward");

    EXPECT(nn_graph_no_grad(g) == 0, "graph starts in no_grad mode");
    EXPECT(nn_graph_set_no_grad(g, 1) == 0, "previous mode not returned");
    EXPECT(nn_graph_no_grad(g) == 1, "no_grad mode not set");
    nn_tensor *out = mlp_forward(g, &m, x, &h1, &h2);
    nn_tensor *loss = nn_cross_entropy(g, out, d->y, 0.f);
    EXPECT(nn_graph_set_no_grad(g, 0) == 1, "previous mode not returned");
    nn_tensor *const ts[4] = {h1, h2, out, loss};
    for (int i = 0; i < 4; i++)
        EXPECT(!ts[i]->requires_grad && ts[i]->backward == NULL,
               "no_grad output %d (%s) requires_grad %d, backward %p", i,
               ts[i]->op ? ts[i]->op : "?", ts[i]->requires_grad, (void *)ts[i]->backward);
    EXPECT(nn_tensor_same_shape(out, ref) &&
               memcmp(out->data, ref->data, ref->numel * sizeof(float)) == 0,
           "no_grad forward gives different values");
    /* nothing flows into the parameters from a no_grad loss */
    nn_params_zero_grad(&m.P);
    nn_backward(g, loss);
    for (int i = 0; i < m.P.n; i++) {
        const nn_tensor *p = m.P.t[i];
        int zero = 1;
        for (size_t j = 0; p->grad && j < p->numel; j++) zero &= p->grad[j] == 0.f;
        EXPECT(zero, "%s got a gradient from a no_grad forward", p->name);
    }
    nn_graph_free(g);
    nn_params_free(&m.P);
}
