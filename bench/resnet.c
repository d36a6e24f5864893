/* ResNet encoder forward on the CPU: images/s and peak RSS.
 *
 *   make CUDA=0 build/bench_resnet
 *   OMP_NUM_THREADS=2 build/bench_resnet [encoder] [batch] [size] [iters] [mode]
 *
 * encoder: resnet50_trunc (default), resnet50, resnet18; mode: "nograd"
 * (default: no_grad graph, intermediates freed as they die), "fold" (the
 * same after rn_fold_bn), "keep" (a graph that records nothing but frees
 * nothing until reset: what the forward costs without the early frees).
 * Random torchvision-init weights; run one mode per process so that the
 * peak RSS is that mode's. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "../natural/resnet.h"
#include "../nn/error.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static double rss_mb(const char *field)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    double v = -1;
    size_t n = strlen(field);
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, field, n) == 0) v = atof(line + n + 1) / 1024.0;
    if (f) fclose(f);
    return v;
}

int main(int argc, char **argv)
{
    const char *enc = argc > 1 ? argv[1] : "resnet50_trunc";
    int batch = argc > 2 ? atoi(argv[2]) : 32;
    int size = argc > 3 ? atoi(argv[3]) : 224;
    int iters = argc > 4 ? atoi(argv[4]) : 3;
    const char *mode = argc > 5 ? argv[5] : "nograd";
    rn_config c;
    if (rn_config_from_name(&c, enc) != 0) {
        fprintf(stderr, "bench_resnet: %s\n", ncmi_error());
        return 1;
    }
    nn_rng rng;
    nn_rng_seed(&rng, 1);
    rn_model m;
    if (rn_init(&m, &c, &rng) != 0) return 1;
    if (strcmp(mode, "fold") == 0) rn_fold_bn(&m);
    if (strcmp(mode, "keep") == 0)
        for (int i = 0; i < m.P.n; i++) m.P.t[i]->requires_grad = 0;
    nn_tensor *x = nn_tensor_new4(NULL, batch, 3, size, size);
    nn_rng_fill_normal(&rng, x->data, x->numel, 0.f, 1.f);
    nn_graph *g = nn_graph_new();
    nn_graph_set_no_grad(g, strcmp(mode, "keep") != 0);
    double rss0 = rss_mb("VmRSS:");

    double best = 1e30, total = 0;
    float check = 0;
    for (int it = 0; it <= iters; it++) { /* iteration 0 warms up */
        double t0 = now_s();
        nn_tensor *z = rn_forward(&m, g, x, 0);
        double dt = now_s() - t0;
        check = z->data[0];
        nn_graph_reset(g);
        if (it == 0) continue;
        total += dt;
        if (dt < best) best = dt;
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("%s %s batch %d %dx%d: %.2f images/s (mean of %d, best %.2f), %.0f ms/batch; "
           "RSS %.0f MB before the forward, peak %.0f MB (z[0] %.4g)\n",
           enc, mode, batch, size, size, batch * iters / total, iters, batch / best,
           1e3 * total / iters, rss0, ru.ru_maxrss / 1024.0, check);
    /* for bench/report.py (no peer in this binary) */
    printf("RESULT resnet_fwd %s_%s_b%d_%d %.2f - images/s\n", enc, mode, batch, size, batch * iters / total);
    nn_graph_free(g);
    nn_tensor_free(x);
    rn_free(&m);
    return 0;
}
