/* GPU op benchmark, ncmi side (bench/gpu_ops.sh runs PyTorch on the same
 * shapes in the same run and prints ratios). For each case: forward +
 * backward of conv2d / linear / matmul at ResNet-50 (batch 256) and ABMIL
 * shapes, loss = sum of the output, every input requiring a gradient, in
 * fp32 (TF32 off) and with TF32 allowed; and the conv forward in channels-
 * last bf16 under no_grad (feature extraction). Prints one line per case:
 *     CASE <name> <kind> <dims...> <ms fp32> <ms tf32> <ms bf16-inference or ->
 * and a last line with the host synchronisations counted inside the timed
 * steps (must be 0). usage: bench_gpu_ops [iters] [name-filter] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../nn/cuda.h"
#include "../nn/error.h"
#include "../nn/ops.h"

typedef struct {
    const char *name, *kind; /* conv | linear | matmul */
    int a[8];                /* conv: N Cin H W Cout k stride pad; linear: M in out; matmul: M K N */
} bcase;

static const bcase cases[] = {
    /* ResNet-50 at 224x224, batch 256: the stem and one conv of each kind per stage */
    {"r50_conv1_7x7s2", "conv", {256, 3, 224, 224, 64, 7, 2, 3}},
    {"r50_l1_1x1_64_64", "conv", {256, 64, 56, 56, 64, 1, 1, 0}},
    {"r50_l1_3x3_64", "conv", {256, 64, 56, 56, 64, 3, 1, 1}},
    {"r50_l1_1x1_64_256", "conv", {256, 64, 56, 56, 256, 1, 1, 0}},
    {"r50_l2_3x3s2_128", "conv", {256, 128, 56, 56, 128, 3, 2, 1}},
    {"r50_l2_3x3_128", "conv", {256, 128, 28, 28, 128, 3, 1, 1}},
    {"r50_l2_1x1_128_512", "conv", {256, 128, 28, 28, 512, 1, 1, 0}},
    {"r50_l3_3x3_256", "conv", {256, 256, 14, 14, 256, 3, 1, 1}},
    {"r50_l3_1x1_1024_256", "conv", {256, 1024, 14, 14, 256, 1, 1, 0}},
    {"r50_l4_3x3_512", "conv", {256, 512, 7, 7, 512, 3, 1, 1}},
    {"r50_l4_1x1_512_2048", "conv", {256, 512, 7, 7, 2048, 1, 1, 0}},
    {"r50_fc_2048_1000", "linear", {256, 2048, 1000}},
    /* ABMIL (D_feat 1024, D_inner 512, attention 256) on a 16,000-patch bag */
    {"abmil_fc_16k_1024_512", "linear", {16000, 1024, 512}},
    {"abmil_attn_16k_512_256", "linear", {16000, 512, 256}},
    {"abmil_attn_c_16k_256_1", "linear", {16000, 256, 1}},
    {"abmil_pool_1x16k_512", "matmul", {1, 16000, 512}},
};

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static nn_tensor *dev_rand(nn_rng *r, int ndim, const int *shape, int rg)
{
    nn_tensor *h = nn_tensor_new(NULL, ndim, shape);
    nn_rng_fill_uniform(r, h->data, h->numel, -1.f, 1.f);
    nn_tensor *d = nn_tensor_to(h, NN_DEVICE_CUDA);
    d->requires_grad = rg;
    nn_tensor_free(h);
    return d;
}

/* in[0..2]: x, w, b (b may be NULL) */
static nn_tensor *build(nn_graph *g, const bcase *c, nn_tensor **in)
{
    if (!strcmp(c->kind, "conv")) return nn_conv2d(g, in[0], in[1], in[2], c->a[6], c->a[7], 1, 1);
    if (!strcmp(c->kind, "linear")) return nn_linear(g, in[0], in[1], in[2]);
    return nn_matmul(g, in[0], in[1]);
}

static long syncs_in_steps;

static double time_case(const bcase *c, nn_tensor **in, int iters, int train, nn_precision prec)
{
    nn_graph *g = nn_graph_new();
    nn_graph_set_no_grad(g, !train);
    nn_graph_set_precision(g, prec);
    double t0 = 0;
    for (int it = -3; it < iters; it++) {
        if (it == 0) {
            nn_cuda_synchronize();
            t0 = now();
        }
        long s0 = nn_cuda_host_syncs();
        for (int i = 0; i < 3; i++)
            if (in[i]) nn_tensor_drop_grad(in[i]); /* as PyTorch's t.grad = None */
        nn_tensor *y = build(g, c, in);
        if (train) {
            nn_tensor *l = nn_sum_all(g, y);
            NCMI_CHECK(nn_backward(g, l) == 0, "%s", ncmi_error());
        }
        nn_graph_reset(g);
        if (it >= 0) syncs_in_steps += nn_cuda_host_syncs() - s0;
    }
    nn_cuda_synchronize();
    double ms = (now() - t0) * 1e3 / iters;
    nn_graph_free(g);
    return ms;
}

int main(int argc, char **argv)
{
    int iters = argc > 1 ? atoi(argv[1]) : 10;
    const char *filter = argc > 2 ? argv[2] : NULL;
    int is_cuda = 0;
    if (nn_device_select("cuda", &is_cuda) != 0) {
        fprintf(stderr, "bench_gpu_ops: %s\n", ncmi_error());
        return 2;
    }
    printf("DEVICE %s\n", nn_device_name(1));
    nn_rng r;
    nn_rng_seed(&r, 1);
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        const bcase *c = &cases[k];
        if (filter && !strstr(c->name, filter)) continue;
        nn_tensor *in[3] = {0};
        const int *a = c->a;
        if (!strcmp(c->kind, "conv")) {
            in[0] = dev_rand(&r, 4, (int[]){a[0], a[1], a[2], a[3]}, 1);
            in[1] = dev_rand(&r, 4, (int[]){a[4], a[1], a[5], a[5]}, 1);
        } else if (!strcmp(c->kind, "linear")) {
            in[0] = dev_rand(&r, 2, (int[]){a[0], a[1]}, 1);
            in[1] = dev_rand(&r, 2, (int[]){a[2], a[1]}, 1);
            in[2] = dev_rand(&r, 1, (int[]){a[2]}, 1);
        } else {
            in[0] = dev_rand(&r, 2, (int[]){a[0], a[1]}, 1);
            in[1] = dev_rand(&r, 2, (int[]){a[1], a[2]}, 1);
        }
        nn_cuda_set_tf32(0);
        double f32 = time_case(c, in, iters, 1, NN_PREC_FP32);
        nn_cuda_set_tf32(1);
        double tf32 = time_case(c, in, iters, 1, NN_PREC_FP32);
        nn_cuda_set_tf32(0);
        double bf16 = !strcmp(c->kind, "conv") ? time_case(c, in, iters, 0, NN_PREC_BF16) : -1;
        printf("CASE %s %s", c->name, c->kind);
        for (int i = 0; i < 8; i++) printf(" %d", a[i]);
        printf(" %.3f %.3f %.3f\n", f32, tf32, bf16);
        fflush(stdout);
        for (int i = 0; i < 3; i++) nn_tensor_free(in[i]);
    }
    nn_cuda_mem_stats st;
    nn_cuda_mem_stats_get(&st);
    printf("SYNCS %ld\nPEAK_MIB %.1f\n", syncs_in_steps, st.peak_in_use / 1048576.0);
    return 0;
}
