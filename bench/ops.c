/* Times forward+backward of ncmi's CPU ops on ResNet-50 layer shapes
 * (batch 32) and a large linear layer; prints "name ms" per line (median of
 * a few runs, after one warm-up). bench/ops.sh runs it beside
 * bench/ops_torch.py (same shapes in PyTorch) and prints the ratios.
 *   build/bench_ops [runs]      (default 5; conv1 and big tensors use fewer) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../nn/ops.h"
#include "../nn/rng.h"

typedef struct {
    const char *name;
    int kind; /* 0 linear, 1 conv2d, 2 batchnorm2d, 3 maxpool2d */
    int x[4];
    int w[4];
    int stride, pad;
    int x_grad; /* input x requires a gradient */
    int runs;   /* 0: the default */
} bench_case;

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static nn_tensor *rand_tensor(nn_rng *r, int ndim, const int *shape, float scale, int rg)
{
    nn_tensor *t = nn_tensor_new(NULL, ndim, shape);
    nn_rng_fill_uniform(r, t->data, t->numel, -scale, scale);
    t->requires_grad = rg;
    return t;
}

static void run_case(const bench_case *bc, int default_runs)
{
    nn_rng r;
    nn_rng_seed(&r, 42);
    nn_tensor *x = NULL, *w = NULL, *b = NULL, *rm = NULL, *rv = NULL;
    if (bc->kind == 0) {
        x = rand_tensor(&r, 2, bc->x, 1.f, bc->x_grad);
        w = rand_tensor(&r, 2, bc->w, 0.03f, 1);
        b = rand_tensor(&r, 1, bc->w, 0.1f, 1);
    } else {
        x = rand_tensor(&r, 4, bc->x, 1.f, bc->x_grad);
        if (bc->kind == 1) w = rand_tensor(&r, 4, bc->w, 0.05f, 1);
        if (bc->kind == 2) {
            w = rand_tensor(&r, 1, &bc->x[1], 1.f, 1);
            b = rand_tensor(&r, 1, &bc->x[1], 1.f, 1);
            rm = nn_tensor_new1(NULL, bc->x[1]);
            rv = nn_tensor_new1(NULL, bc->x[1]);
            nn_tensor_fill(rv, 1.f);
        }
    }
    nn_graph *g = nn_graph_new();
    int runs = bc->runs ? bc->runs : default_runs;
    double *fwd = malloc((size_t)runs * sizeof(double)), *tot = malloc((size_t)runs * sizeof(double));
    float *up = NULL;
    for (int it = -1; it < runs; it++) {
        double t0 = now_ms();
        nn_tensor *y = NULL;
        switch (bc->kind) {
        case 0: y = nn_linear(g, x, w, b); break;
        case 1: y = nn_conv2d(g, x, w, NULL, bc->stride, bc->pad, 1, 1); break;
        case 2: y = nn_batchnorm2d(g, x, w, b, rm, rv, 1, 0.1f, 1e-5f); break;
        default: y = nn_maxpool2d(g, x, 3, 2, 1); break;
        }
        double t1 = now_ms();
        if (!up) {
            up = malloc(y->numel * sizeof(float));
            nn_rng_fill_uniform(&r, up, y->numel, -1.f, 1.f);
        }
        nn_backward_from(g, y, up);
        double t2 = now_ms();
        nn_graph_reset(g);
        if (it >= 0) {
            fwd[it] = t1 - t0;
            tot[it] = t2 - t0;
        }
    }
    qsort(fwd, (size_t)runs, sizeof(double), cmp_double);
    qsort(tot, (size_t)runs, sizeof(double), cmp_double);
    printf("%s_fwd %.2f\n", bc->name, fwd[runs / 2]);
    printf("%s_fwdbwd %.2f\n", bc->name, tot[runs / 2]);
    fflush(stdout);
    free(fwd);
    free(tot);
    free(up);
    nn_graph_free(g);
    nn_tensor_free(x);
    nn_tensor_free(w);
    nn_tensor_free(b);
    nn_tensor_free(rm);
    nn_tensor_free(rv);
}

int main(int argc, char **argv)
{
    int runs = argc > 1 ? atoi(argv[1]) : 5;
    if (runs < 1) runs = 1;
    const char *only = argc > 2 ? argv[2] : NULL;
    static const bench_case cases[] = {
        {"linear_8000x1024_512", 0, {8000, 1024}, {512, 1024}, 0, 0, 1, 0},
        {"conv1_7x7s2_3_64_224", 1, {32, 3, 224, 224}, {64, 3, 7, 7}, 2, 3, 0, 3},
        {"l1_3x3_64_64_56", 1, {32, 64, 56, 56}, {64, 64, 3, 3}, 1, 1, 1, 0},
        {"l1_1x1_64_256_56", 1, {32, 64, 56, 56}, {256, 64, 1, 1}, 1, 0, 1, 0},
        {"l2_3x3_128_128_28", 1, {32, 128, 28, 28}, {128, 128, 3, 3}, 1, 1, 1, 0},
        {"l2_3x3s2_128_128_56", 1, {32, 128, 56, 56}, {128, 128, 3, 3}, 2, 1, 1, 0},
        {"l3_1x1_1024_256_14", 1, {32, 1024, 14, 14}, {256, 1024, 1, 1}, 1, 0, 1, 0},
        {"bn_64_56", 2, {32, 64, 56, 56}, {0}, 0, 0, 1, 0},
        {"maxpool_3x3s2_64_112", 3, {32, 64, 112, 112}, {0}, 0, 0, 1, 3},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        if (!only || strstr(cases[i].name, only)) run_case(&cases[i], runs);
    return 0;
}
