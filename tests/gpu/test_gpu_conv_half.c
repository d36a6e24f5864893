/* Convolutions on the GPU at ResNet sizes (make test-gpu).
 *
 * fp32: cuDNN (FMA math, TF32 off) against the CPU reference, the output and
 * all three gradients, as the relative L2 error ||gpu - cpu|| / ||cpu||.
 * Both sides round each fp32 dot product differently; over K terms that is
 * about 1e-7 * sqrt(K) relative (K = 576 for the output and the input
 * gradient, N*Ho*Wo = 6272 for the weight and bias gradients), so the
 * bounds are 1e-5 and 3e-5: ten times that, and far below the O(1) error of
 * a wrong layout or a missed term.
 *
 * bf16 / fp16 (no_grad inference, channels-last, fp32 accumulation) against
 * the fp32 GPU result: relative L2 error of the output <= 1e-2 (bf16) and
 * <= 2e-3 (fp16). Why: the input, the weights and the output are each
 * rounded once to the half type (unit roundoff u = 2^-8 for bf16, 2^-11 for
 * fp16, an rms relative error of about 0.4u per rounding); the sums are
 * accumulated in fp32 and their terms have random signs, so the three
 * independent roundings give about sqrt(3) * 0.4u: ~2.7e-3 (bf16) and
 * ~3.4e-4 (fp16). The bounds leave a margin of 4-6x.
 *
 * Each test runs in a worker process of this binary, so that a failure
 * inside cuDNN (an abort) is reported by name and the other tests still run. */
#include <math.h>
#include <stdlib.h>
#include <unistd.h>

#include "../../nn/cuda/k_conv.h"
#include "../../nn/error.h"
#include "gpu_check.h"

/* ||a - b|| / ||b|| over two tensors on any devices */
static double rel_l2(const nn_tensor *a, const nn_tensor *b)
{
    if (a->numel != b->numel) return INFINITY;
    float *x = nn_host_view(a), *y = nn_host_view(b);
    double e = gpu_rel_l2(x, y, a->numel);
    nn_host_release(a, x);
    nn_host_release(b, y);
    return e;
}

static double rel_l2_grad(const nn_tensor *a, const nn_tensor *b)
{
    float *x = malloc(a->numel * sizeof(float)), *y = malloc(b->numel * sizeof(float));
    nn_tensor_grad_to_host(a, x);
    nn_tensor_grad_to_host(b, y);
    double num = 0, den = 0;
    for (size_t i = 0; i < a->numel; i++) {
        double d = (double)x[i] - (double)y[i];
        num += d * d;
        den += (double)y[i] * (double)y[i];
    }
    free(x);
    free(y);
    return den > 0 ? sqrt(num / den) : (num > 0 ? INFINITY : 0);
}

typedef struct {
    const char *name;
    int N, C, H, Co, k, stride, pad, dilation, bias;
} conv_cfg;

/* x uniform [-1,1], w uniform [-1,1]/sqrt(fan_in), b uniform [-0.1,0.1]: host tensors */
static void make_inputs(const conv_cfg *c, int groups, uint64_t seed, nn_tensor **x, nn_tensor **w,
                        nn_tensor **b)
{
    nn_rng rng;
    nn_rng_seed(&rng, seed);
    *x = nn_tensor_new4(NULL, c->N, c->C, c->H, c->H);
    *w = nn_tensor_new4(NULL, c->Co, c->C / groups, c->k, c->k);
    float s = 1.f / sqrtf((float)(c->C / groups * c->k * c->k));
    nn_rng_fill_uniform(&rng, (*x)->data, (*x)->numel, -1.f, 1.f);
    nn_rng_fill_uniform(&rng, (*w)->data, (*w)->numel, -s, s);
    *b = NULL;
    if (c->bias) {
        *b = nn_tensor_new1(NULL, c->Co);
        nn_rng_fill_uniform(&rng, (*b)->data, (*b)->numel, -0.1f, 0.1f);
    }
}

static nn_tensor *to_gpu(const nn_tensor *t) { return t ? nn_tensor_to(t, NN_DEVICE_CUDA) : NULL; }

/* one convolution of device tensors in a no_grad graph at precision p */
static nn_tensor *conv_at(nn_graph *g, nn_precision p, const conv_cfg *c, nn_tensor *x, nn_tensor *w,
                          nn_tensor *b, int groups)
{
    nn_graph_set_no_grad(g, 1);
    nn_graph_set_precision(g, p);
    return nn_conv2d(g, x, w, b, c->stride, c->pad, c->dilation, groups);
}

static const conv_cfg half_cfgs[] = {
    {"3x3 s1 64->64 56x56", 8, 64, 56, 64, 3, 1, 1, 1, 0},
    {"1x1 256->64 56x56", 8, 256, 56, 64, 1, 1, 0, 1, 0},
    {"1x1 s2 256->512 28x28", 8, 256, 28, 512, 1, 2, 0, 1, 1},
    {"7x7 s2 3->64 56x56 (stem)", 8, 3, 56, 64, 7, 2, 3, 1, 0},
    {"7x7 s2 64->64 56x56", 8, 64, 56, 64, 7, 2, 3, 1, 1},
    {"3x3 s2 128->128 56x56", 8, 128, 56, 128, 3, 2, 1, 1, 0},
    {"3x3 s1 256->256 14x14", 8, 256, 14, 256, 3, 1, 1, 1, 1},
    {"3x3 64->10 28x28 (padded Co)", 8, 64, 28, 10, 3, 1, 1, 1, 1},
};

GPU_WORKER_TEST(gpu_conv_half_vs_fp32)
{
    GPU_REQUIRE();
    nn_cuda_set_tf32(0);
    int n = (int)(sizeof half_cfgs / sizeof half_cfgs[0]);
    for (int i = 0; i < n; i++) {
        const conv_cfg *c = &half_cfgs[i];
        nn_tensor *hx, *hw, *hb;
        make_inputs(c, 1, 1000 + (uint64_t)i, &hx, &hw, &hb);
        nn_tensor *x = to_gpu(hx), *w = to_gpu(hw), *b = to_gpu(hb);
        nn_graph *g = nn_graph_new();
        nn_tensor *ref = conv_at(g, NN_PREC_FP32, c, x, w, b, 1);
        nn_tensor *ybf = conv_at(g, NN_PREC_BF16, c, x, w, b, 1);
        nn_tensor *yfp = conv_at(g, NN_PREC_FP16, c, x, w, b, 1);
        nn_tensor *ybf2 = conv_at(g, NN_PREC_BF16, c, x, w, b, 1); /* cached weights */
        double ebf = rel_l2(ybf, ref), efp = rel_l2(yfp, ref), ebf2 = rel_l2(ybf2, ref);
        printf("    %-36s bf16 %.2e  fp16 %.2e\n", c->name, ebf, efp);
        EXPECT(ebf <= 1e-2, "%s: bf16 relative L2 error %.3g > 1e-2", c->name, ebf);
        EXPECT(efp <= 2e-3, "%s: fp16 relative L2 error %.3g > 2e-3", c->name, efp);
        EXPECT(ebf2 <= 1e-2, "%s: bf16 (cached weights) relative L2 error %.3g", c->name, ebf2);
        nn_graph_free(g);
        nn_tensor *all[] = {x, w, b, hx, hw, hb};
        for (size_t k = 0; k < sizeof all / sizeof all[0]; k++) nn_tensor_free(all[k]);
    }
}

/* The weight cache: new values in the same buffer after a clear, and another
 * weight tensor, each give the result of their own weights; a graph that
 * records gradients, and a grouped convolution, stay fp32. */
GPU_WORKER_TEST(gpu_conv_half_weight_cache_and_fallbacks)
{
    GPU_REQUIRE();
    nn_cuda_set_tf32(0);
    const conv_cfg *c = &half_cfgs[0];
    nn_tensor *hx, *hw, *hb, *hx2, *hw2, *hb2;
    make_inputs(c, 1, 77, &hx, &hw, &hb);
    make_inputs(c, 1, 78, &hx2, &hw2, &hb2);
    nn_tensor *x = to_gpu(hx), *w = to_gpu(hw);
    nn_graph *g = nn_graph_new();
    double e0 = rel_l2(conv_at(g, NN_PREC_BF16, c, x, w, NULL, 1), conv_at(g, NN_PREC_FP32, c, x, w, NULL, 1));
    nn_tensor_from_host(w, hw2->data); /* new values, same device buffer */
    nn_cuda_conv_half_cache_clear();
    double e1 = rel_l2(conv_at(g, NN_PREC_BF16, c, x, w, NULL, 1), conv_at(g, NN_PREC_FP32, c, x, w, NULL, 1));
    nn_tensor *w3 = to_gpu(hw); /* another buffer */
    double e2 = rel_l2(conv_at(g, NN_PREC_BF16, c, x, w3, NULL, 1), conv_at(g, NN_PREC_FP32, c, x, w3, NULL, 1));
    EXPECT(e0 <= 1e-2 && e1 <= 1e-2 && e2 <= 1e-2, "bf16 errors %.3g, after clear %.3g, other weights %.3g",
           e0, e1, e2);

    /* precision is ignored when the graph records gradients */
    nn_graph *gg = nn_graph_new();
    nn_graph_set_precision(gg, NN_PREC_BF16);
    nn_tensor *yg = nn_conv2d(gg, x, w, NULL, c->stride, c->pad, c->dilation, 1);
    double eg = rel_l2(yg, conv_at(g, NN_PREC_FP32, c, x, w, NULL, 1));
    EXPECT(eg <= 1e-6, "bf16 precision in a gradient graph changed the result: %.3g", eg);

    /* grouped (depthwise) convolutions stay fp32 */
    conv_cfg dc = {"depthwise", 8, 64, 28, 64, 3, 1, 1, 1, 0};
    nn_tensor *hdx, *hdw, *hdb;
    make_inputs(&dc, 64, 79, &hdx, &hdw, &hdb);
    nn_tensor *dx = to_gpu(hdx), *dw = to_gpu(hdw);
    double ed = rel_l2(conv_at(g, NN_PREC_BF16, &dc, dx, dw, NULL, 64),
                       conv_at(g, NN_PREC_FP32, &dc, dx, dw, NULL, 64));
    EXPECT(ed <= 1e-6, "a depthwise conv at bf16 differs from fp32 by %.3g", ed);

    nn_graph_free(g);
    nn_graph_free(gg);
    nn_tensor *all[] = {hx, hw, hb, hx2, hw2, hb2, x, w, w3, hdx, hdw, hdb, dx, dw};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) nn_tensor_free(all[i]);
}

/* fp32 forward and backward against the CPU at ResNet-like sizes. */
GPU_WORKER_TEST(gpu_conv_fp32_resnet_sizes_vs_cpu)
{
    GPU_REQUIRE();
    nn_cuda_set_tf32(0);
    static const struct {
        conv_cfg c;
        int groups;
    } cfgs[] = {
        {{"3x3 s1 64->64 28x28", 8, 64, 28, 64, 3, 1, 1, 1, 1}, 1},
        {{"3x3 s2 64->128 28x28", 8, 64, 28, 128, 3, 2, 1, 1, 0}, 1},
        {{"1x1 128->64 28x28", 8, 128, 28, 64, 1, 1, 0, 1, 1}, 1},
        {{"3x3 depthwise 64 28x28", 8, 64, 28, 64, 3, 1, 1, 1, 1}, 64},
    };
    for (size_t i = 0; i < sizeof cfgs / sizeof cfgs[0]; i++) {
        const conv_cfg *c = &cfgs[i].c;
        int groups = cfgs[i].groups;
        nn_tensor *hx, *hw, *hb;
        make_inputs(c, groups, 2000 + i, &hx, &hw, &hb);
        hx->requires_grad = hw->requires_grad = 1;
        if (hb) hb->requires_grad = 1;
        nn_tensor *x = to_gpu(hx), *w = to_gpu(hw), *b = to_gpu(hb);
        nn_graph *g = nn_graph_new(), *dg = nn_graph_new();
        nn_tensor *y = nn_conv2d(g, hx, hw, hb, c->stride, c->pad, c->dilation, groups);
        nn_tensor *dy = nn_conv2d(dg, x, w, b, c->stride, c->pad, c->dilation, groups);
        float *up = malloc(y->numel * sizeof(float));
        nn_rng rng;
        nn_rng_seed(&rng, 3000 + i);
        nn_rng_fill_uniform(&rng, up, y->numel, -1.f, 1.f);
        REQUIRE(nn_backward_from(g, y, up) == 0 && nn_backward_from(dg, dy, up) == 0, "%s", ncmi_error());
        double ey = rel_l2(dy, y), ex = rel_l2_grad(x, hx), ew = rel_l2_grad(w, hw);
        double eb = b ? rel_l2_grad(b, hb) : 0;
        printf("    %-28s y %.2e  dx %.2e  dw %.2e  db %.2e\n", c->name, ey, ex, ew, eb);
        EXPECT(ey <= 1e-5 && ex <= 1e-5, "%s: output %.3g, dx %.3g (bound 1e-5)", c->name, ey, ex);
        EXPECT(ew <= 3e-5 && eb <= 3e-5, "%s: dw %.3g, db %.3g (bound 3e-5)", c->name, ew, eb);
        free(up);
        nn_graph_free(g);
        nn_graph_free(dg);
        nn_tensor *all[] = {x, w, b, hx, hw, hb};
        for (size_t k = 0; k < sizeof all / sizeof all[0]; k++) nn_tensor_free(all[k]);
    }
}

/* A conv / batchnorm / pool / dropout / layernorm step, forward and
 * backward, queues everything without waiting on the device. */
GPU_WORKER_TEST(gpu_conv_pool_norm_no_host_sync)
{
    GPU_REQUIRE();
    conv_cfg c = {"block", 4, 16, 16, 32, 3, 1, 1, 1, 1};
    nn_tensor *hx, *hw, *hb;
    make_inputs(&c, 1, 5, &hx, &hw, &hb);
    nn_tensor *x = to_gpu(hx), *w = to_gpu(hw), *b = to_gpu(hb);
    w->requires_grad = b->requires_grad = 1;
    nn_tensor *gm = nn_tensor_new_on(NULL, NN_DEVICE_CUDA, 1, (int[]){32});
    nn_tensor *bt = nn_tensor_new_on(NULL, NN_DEVICE_CUDA, 1, (int[]){32});
    nn_tensor *rm = nn_tensor_new_on(NULL, NN_DEVICE_CUDA, 1, (int[]){32});
    nn_tensor *rv = nn_tensor_new_on(NULL, NN_DEVICE_CUDA, 1, (int[]){32});
    nn_tensor_fill(gm, 1.f);
    nn_tensor_fill(rv, 1.f);
    gm->requires_grad = bt->requires_grad = 1;
    nn_rng rng;
    nn_rng_seed(&rng, 9);
    nn_graph *g = nn_graph_new();
    float *up = calloc(4 * 32, sizeof(float));
    for (int i = 0; i < 4 * 32; i++) up[i] = (float)(i % 7) - 3.f;
    for (int step = 0; step < 2; step++) { /* the second step reuses plans and cached blocks */
        long s0 = nn_cuda_host_syncs();
        nn_tensor *h = nn_conv2d(g, x, w, b, 1, 1, 1, 1);
        h = nn_batchnorm2d(g, h, gm, bt, rm, rv, 1, 0.1f, 1e-5f);
        h = nn_maxpool2d(g, h, 3, 2, 1);
        h = nn_avgpool2d(g, h, 2, 2, 0);
        h = nn_dropout(g, h, 0.2f, 1, &rng);
        h = nn_global_avgpool(g, h);
        h = nn_layernorm(g, h, NULL, NULL, 1e-5f);
        REQUIRE(nn_backward_from(g, h, up) == 0, "%s", ncmi_error());
        long s1 = nn_cuda_host_syncs();
        EXPECT(s1 == s0, "step %d: %ld host synchronisations in forward+backward", step, s1 - s0);
        nn_graph_reset(g);
    }
    free(up);
    nn_graph_free(g);
    nn_tensor *all[] = {hx, hw, hb, x, w, b, gm, bt, rm, rv};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) nn_tensor_free(all[i]);
}
