/* One training step per bag of a MIL head (forward, linear head + CE (+ the
 * head's aux term), backward, AdamW) at D_feat 1024 / D_inner 512, as the
 * trainer runs it; bench/mil_step.sh runs it beside bench/mil_step_torch.py
 * (the same heads in PyTorch) and prints the ratios.
 *
 *   build/bench_mil_step HEAD N [seconds] [device]
 *
 * HEAD: abmil | aem | transmil | asmil; device cpu (default) | cuda[:K]
 * (also from MIL_DEVICE). Prints one line
 *   ncmi HEAD N bags_per_s step_ms base_rss_mb peak_rss_mb peak_dev_mb
 * (median step time over at least `seconds` of steps after two warm-up steps;
 * peak = getrusage max RSS of this process, base = RSS before the bag and the
 * model exist; peak_dev_mb = the CUDA allocator's high-water mark of bytes in
 * use (nn_cuda_mem_stats: model, optimizer state, bag, graph), "-" on the
 * CPU). On the GPU a step ends with the loss read back to the host, which
 * waits for everything queued: each timed step is complete on the device.
 * One configuration per process, so the peaks are its own.
 * Exit status 3 when the head is not built in (its init is missing), 4 when
 * the device cannot be used. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "../mil/mil.h"
#include "../nn/cuda.h"
#include "../nn/error.h"
#include "../nn/ops.h"
#include "../nn/optim.h"

/* TransMIL and ASMIL come from other branches: weak, so the bench links
 * (and skips them) where they are not there yet. The Makefile links every
 * mil/ object explicitly, so a head that exists is always found. */
int mil_transmil_init(tr_model *m, const mil_opts *o, nn_rng *rng) __attribute__((weak));
int mil_asmil_init(tr_model *m, const mil_opts *o, nn_rng *rng) __attribute__((weak));

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

static double rss_mb(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    long pages = 0, res = 0;
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &res) != 2) res = 0;
        fclose(f);
    }
    return (double)res * 4096.0 / (1024.0 * 1024.0);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s abmil|aem|transmil|asmil N [seconds] [cpu|cuda]\n", argv[0]);
        return 1;
    }
    mil_head_kind kind;
    if (mil_head_kind_parse(argv[1], &kind) != 0) {
        fprintf(stderr, "bench_mil_step: %s\n", ncmi_error());
        return 1;
    }
    const int N = atoi(argv[2]);
    const double seconds = argc > 3 ? atof(argv[3]) : 3.0;
    const char *dev_spec = argc > 4 ? argv[4] : getenv("MIL_DEVICE");
    int cuda = 0;
    if (dev_spec && dev_spec[0] && nn_device_select(dev_spec, &cuda) != 0) {
        fprintf(stderr, "bench_mil_step: %s\n", ncmi_error());
        return 4;
    }
    const nn_device dev = cuda ? NN_DEVICE_CUDA : NN_DEVICE_CPU;
    int (*init)(tr_model *, const mil_opts *, nn_rng *) = NULL;
    switch (kind) {
    case MIL_ABMIL:
    case MIL_AEM: init = mil_abmil_init; break;
    case MIL_TRANSMIL: init = mil_transmil_init; break;
    case MIL_ASMIL: init = mil_asmil_init; break;
    }
    if (!init) {
        fprintf(stderr, "bench_mil_step: %s is not built in (no mil_%s_init)\n", argv[1], argv[1]);
        return 3;
    }
    const double base = rss_mb();

    mil_opts o;
    mil_opts_default(&o, kind);
    o.d_feat = 1024;
    o.d_inner = 512;
    nn_rng rng;
    nn_rng_seed(&rng, 42);
    tr_model m;
    if (init(&m, &o, &rng) != 0) {
        fprintf(stderr, "bench_mil_step: %s\n", ncmi_error());
        return 2;
    }
    nn_params P_head;
    nn_params_init(&P_head);
    nn_linear_m fc;
    nn_linear_m_init(&fc, &P_head, m.classifier[0] ? m.classifier : "fc", m.dim, 2, 1, &rng);
    if (cuda) {
        if (!m.gpu_ok) {
            fprintf(stderr, "bench_mil_step: %s does not run on the GPU\n", argv[1]);
            return 4;
        }
        nn_params_to_device(m.params, dev);
        nn_params_to_device(&P_head, dev);
    }
    nn_optim opt, opt_head;
    nn_optim_adamw_init(&opt, m.params, 2e-4f, 0.9f, 0.999f, 1e-8f, 1e-5f);
    nn_optim_adamw_init(&opt_head, &P_head, 2e-4f, 0.9f, 0.999f, 1e-8f, 1e-5f);

    nn_tensor *x = nn_tensor_new2(NULL, N, o.d_feat);
    nn_rng_fill_normal(&rng, x->data, x->numel, 0.f, 1.f);
    if (cuda) {
        nn_tensor *xd = nn_tensor_to(x, dev);
        nn_tensor_free(x);
        x = xd;
    }
    int y[1] = {1};
    nn_graph *g = nn_graph_new();
    nn_graph_set_free_dead(g, 1); /* as the trainer's step (tr_step) */
    nn_rng drop;
    nn_rng_seed(&drop, 7);

    int cap = 1024, n = 0;
    double *ms = malloc((size_t)cap * sizeof *ms);
    double total = 0, loss_sum = 0;
    for (int it = -2; n < cap && (n < 5 || total < seconds * 1e3); it++) {
        double t0 = now_ms();
        nn_tensor *aux = NULL;
        nn_tensor *z = m.forward(&m, g, &x, 1, 1, &drop, &aux);
        nn_tensor *loss = nn_cross_entropy(g, nn_linear_m_forward(g, &fc, z), y, 0.f);
        if (aux) loss = nn_loss_add_aux(g, loss, aux, 1.f);
        if (nn_backward(g, loss) != 0) {
            fprintf(stderr, "bench_mil_step: %s\n", ncmi_error());
            free(ms);
            return 2;
        }
        nn_optim_step(&opt);
        nn_optim_step(&opt_head);
        if (m.after_step) m.after_step(&m);
        float lv;
        nn_tensor_to_host(loss, &lv); /* GPU: waits for the whole step (the timing's sync) */
        loss_sum += lv;
        nn_params_zero_grad(m.params);
        nn_params_zero_grad(&P_head);
        nn_graph_reset(g);
        double dt = now_ms() - t0;
        if (it >= 0) {
            ms[n++] = dt;
            total += dt;
        }
    }
    qsort(ms, (size_t)n, sizeof *ms, cmp_double);
    double med = ms[n / 2];
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    char devmb[32] = "-";
    if (cuda) {
        nn_cuda_mem_stats st;
        nn_cuda_mem_stats_get(&st);
        snprintf(devmb, sizeof devmb, "%.1f", (double)st.peak_in_use / (1024.0 * 1024.0));
    }
    printf("ncmi %s %d %.3f %.2f %.1f %.1f %s\n", argv[1], N, 1e3 / med, med, base,
           (double)ru.ru_maxrss / 1024.0, devmb);
    if (loss_sum != loss_sum) fprintf(stderr, "bench_mil_step: NaN loss\n");
    free(ms);
    nn_graph_free(g);
    nn_tensor_free(x);
    nn_optim_free(&opt);
    nn_optim_free(&opt_head);
    nn_params_free(&P_head);
    tr_model_free(&m);
    return 0;
}
