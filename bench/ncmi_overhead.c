/* One training step (forward + backward + optimizer step(s), through the
 * trainer's tr_step) with the NCMI head vs the linear + cross-entropy head,
 * on the same encoder, weights and batch. Issue 3's goal: NCMI overhead
 * <= 3% (paper Table IV: about 1-2% per epoch).
 *
 *   make NO_SETUP=1 build/bench_ncmi_overhead && build/bench_ncmi_overhead [steps [encoder]]
 *
 * Encoders (input: random MNIST-shaped batches, 10 classes, batch 128):
 *   mlp       784-256-128 (the MNIST recipe's MLP; the head is a large
 *             fraction of this tiny encoder)
 *   mlp-wide  784-1024-1024-512
 *   convnet   conv3x3(1->32)+ReLU+maxpool, conv3x3(32->64)+ReLU+maxpool,
 *             Linear(3136->128)+ReLU
 * The two heads' steps are interleaved (which goes first alternates) so that
 * load from other processes hits both alike; medians are reported. The
 * learning rates are 0 (see run()). */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../nn/error.h"
#include "../nn/ops.h"
#include "../train/trainer.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* ---- a small conv net as a tr_model ---- */
typedef struct convnet {
    nn_params P;
    nn_conv2d_m c1, c2;
    nn_linear_m fc;
} convnet;

static nn_tensor *conv_forward(tr_model *m, nn_graph *g, nn_tensor *const *in, int n_in, int training,
                               nn_rng *rng, nn_tensor **aux)
{
    (void)n_in, (void)training, (void)rng, (void)aux;
    convnet *s = m->ctx;
    nn_tensor *x = in[0];
    int shape[4] = {x->shape[0], 1, 28, 28};
    x = nn_reshape(g, x, 4, shape);
    x = nn_maxpool2d(g, nn_relu(g, nn_conv2d_m_forward(g, &s->c1, x)), 2, 2, 0); /* [n,32,14,14] */
    x = nn_maxpool2d(g, nn_relu(g, nn_conv2d_m_forward(g, &s->c2, x)), 2, 2, 0); /* [n,64,7,7] */
    int flat[2] = {x->shape[0], -1};
    x = nn_reshape(g, x, 2, flat);
    return nn_relu(g, nn_linear_m_forward(g, &s->fc, x)); /* [n,128] */
}

static void conv_free(tr_model *m)
{
    convnet *s = m->ctx;
    nn_params_free(&s->P);
    free(s);
}

static void conv_init(tr_model *m, nn_rng *rng)
{
    memset(m, 0, sizeof *m);
    convnet *s = calloc(1, sizeof *s);
    nn_params_init(&s->P);
    nn_conv2d_m_init(&s->c1, &s->P, "conv1", 1, 32, 3, 1, 1, 1, 1, 1, rng);
    nn_conv2d_m_init(&s->c2, &s->P, "conv2", 32, 64, 3, 1, 1, 1, 1, 1, rng);
    nn_linear_m_init(&s->fc, &s->P, "proj", 64 * 7 * 7, 128, 1, rng);
    m->params = &s->P;
    m->dim = 128;
    snprintf(m->desc, sizeof m->desc, "convnet 1x28x28-32-64-128");
    m->forward = conv_forward;
    m->free = conv_free;
    m->ctx = s;
}

enum { N = 512, B = 128, C = 10, DIM = 784 };

static void make_data(tr_dataset *d)
{
    nn_rng r;
    nn_rng_seed(&r, 7);
    float *X = malloc((size_t)N * DIM * sizeof *X);
    int *y = malloc((size_t)N * sizeof *y);
    nn_rng_fill_normal(&r, X, (size_t)N * DIM, 0.f, 1.f);
    for (int i = 0; i < N; i++) y[i] = i % C;
    int shape[1] = {DIM};
    if (tr_dense_dataset_init(d, "train", "random", N, 1, shape, X, y, NULL, NULL)) {
        fprintf(stderr, "%s\n", ncmi_error());
        exit(1);
    }
}

static void make_model(tr_model *m, const char *kind)
{
    nn_rng r;
    nn_rng_seed(&r, 11);
    if (!strcmp(kind, "convnet")) {
        conv_init(m, &r);
        return;
    }
    int small[2] = {256, 128}, wide[3] = {1024, 1024, 512};
    int rc = !strcmp(kind, "mlp") ? tr_mlp_init(m, DIM, small, 2, &r) : tr_mlp_init(m, DIM, wide, 3, &r);
    if (rc) {
        fprintf(stderr, "%s\n", ncmi_error());
        exit(1);
    }
}

static char *names[C] = {"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"};

static void run(const char *kind, int steps, const tr_dataset *data)
{
    tr_model m[2];
    tr_trainer t[2];
    for (int h = 0; h < 2; h++) {
        make_model(&m[h], kind);
        tr_config c;
        tr_config_default(&c);
        c.batch_size = B;
        c.lr = 0.01f;
        c.schedule.base_lr = c.lr;
        c.head = h ? TR_HEAD_NCMI : TR_HEAD_LINEAR;
        c.ncmi.tau = 0.5f;
        c.n_classes = C;
        c.class_names = names;
        if (tr_init(&t[h], &c, &m[h], data, NULL, NULL, NULL)) {
            fprintf(stderr, "%s\n", ncmi_error());
            exit(1);
        }
        /* lr 0: every step does the same arithmetic (update included) while the
         * weights stay put; training on one repeated batch would drive the CE
         * gradients into denormals and time those instead */
        t[h].opt.lr = 0.f;
        if (t[h].have_opt_xi) {
            t[h].opt_xi.lr = 0.f;
            float *Z;
            tr_dataset sub = *data;
            if (tr_embed(&t[h], &sub, &Z) == 0) {
                nn_ncmi_init_center(&t[h].ncmi, Z, data->n);
                free(Z);
            }
        }
    }
    int idx[B];
    for (int i = 0; i < B; i++) idx[i] = i;
    nn_rng rng;
    nn_rng_seed(&rng, 3);
    double *ts[2] = {malloc((size_t)steps * sizeof(double)), malloc((size_t)steps * sizeof(double))};
    const int warm = 5;
    for (int s = 0; s < steps + warm; s++)
        for (int k = 0; k < 2; k++) {
            const int h = (s + k) & 1; /* alternate which head goes first */
            double loss, t0 = now_s();
            int hits;
            if (tr_step(&t[h], idx, B, &rng, &loss, &hits)) {
                fprintf(stderr, "%s step: %s\n", h ? "ncmi" : "linear", ncmi_error());
                exit(1);
            }
            if (s >= warm) ts[h][s - warm] = now_s() - t0;
        }
    double med[2];
    for (int h = 0; h < 2; h++) {
        qsort(ts[h], (size_t)steps, sizeof(double), cmp_d);
        med[h] = ts[h][steps / 2];
    }
    printf("%-9s %-28s D %4d  linear+CE %8.3f ms  NCMI %8.3f ms  overhead %+6.2f%%\n", kind, m[0].desc,
           m[0].dim, 1e3 * med[0], 1e3 * med[1], 100.0 * (med[1] / med[0] - 1.0));
    /* for bench/report.py: ncmi = the NCMI head's step, peer = the linear + CE head's */
    printf("RESULT ncmi_overhead %s %.3f %.3f ms\n", kind, 1e3 * med[1], 1e3 * med[0]);
    for (int h = 0; h < 2; h++) {
        free(ts[h]);
        tr_free(&t[h]);
        tr_model_free(&m[h]);
    }
}

int main(int argc, char **argv)
{
    int steps = argc > 1 ? atoi(argv[1]) : 60;
    if (steps < 3) steps = 3;
    tr_dataset d;
    make_data(&d);
    printf("one training step (forward + backward + optimizer steps), batch %d, %d classes, median of %d "
           "interleaved steps, %d thread%s\n",
           B, C, steps, omp_get_max_threads(), omp_get_max_threads() == 1 ? "" : "s");
    const char *only = argc > 2 ? argv[2] : NULL; /* run one encoder only */
    if (!only || !strcmp(only, "mlp")) run("mlp", steps, &d);
    if (!only || !strcmp(only, "mlp-wide")) run("mlp-wide", steps, &d);
    if (!only || !strcmp(only, "convnet")) run("convnet", steps > 30 ? steps / 2 : steps, &d);
    tr_dataset_free(&d);
    return 0;
}
