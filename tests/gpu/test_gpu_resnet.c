/* natural/resnet on the GPU against the CPU (make test-gpu).
 *
 * The CPU side is checked against torchvision (tests/test_resnet.c); here the
 * same models run on both devices from the same weights and inputs and the
 * results are compared as the relative L2 error ||gpu - cpu|| / ||cpu||:
 *   fp32 (cuDNN, TF32 off): <= 1e-4, eval (resnet50_trunc, plain and with
 *     batchnorm folded on the device) and one training step of a CIFAR
 *     ResNet-18 (logits, every parameter gradient, the input gradient, the
 *     running statistics). Each fp32 dot product rounds differently on the
 *     two devices (~1e-7 sqrt(K) relative per layer); through ~50 layers that
 *     stays near 1e-5.
 *   bf16 no_grad inference (folded resnet50_trunc): <= 5e-2: each
 *     convolution rounds its input, weights and output once to bf16 (about
 *     2.7e-3 relative per layer, see test_gpu_conv_half.c), over 36 layers.
 * The no_grad forward must also leave one node (z) in the graph: the early
 * frees work on device tensors. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../natural/resnet.h"
#include "../../nn/error.h"
#include "gpu_check.h"


static double rel_l2_t(const nn_tensor *gpu, const float *cpu)
{
    float *h = nn_host_view(gpu);
    double e = gpu_rel_l2(h, cpu, gpu->numel);
    nn_host_release(gpu, h);
    return e;
}

/* random weights with non-trivial batchnorm statistics and affine */
static void model_make(rn_model *m, rn_arch arch, int cifar, int stages, int classes)
{
    rn_config c = {.arch = arch, .cifar_stem = cifar, .n_stages = stages, .num_classes = classes};
    nn_rng rng;
    nn_rng_seed(&rng, 7);
    NCMI_CHECK(rn_init(m, &c, &rng) == 0, "%s", ncmi_error());
    for (int i = 0; i < m->P.n; i++) {
        nn_tensor *t = m->P.t[i];
        size_t n = strlen(t->name);
        if (t->ndim != 1) continue;
        if (n > 12 && strcmp(t->name + n - 12, "running_mean") == 0)
            nn_rng_fill_uniform(&rng, t->data, t->numel, -0.1f, 0.1f);
        else if (n > 11 && strcmp(t->name + n - 11, "running_var") == 0)
            nn_rng_fill_uniform(&rng, t->data, t->numel, 0.5f, 1.5f);
        else if (strncmp(t->name, "fc.", 3) != 0 && n > 7 && strcmp(t->name + n - 7, ".weight") == 0)
            nn_rng_fill_uniform(&rng, t->data, t->numel, 0.75f, 1.25f);
        else if (strncmp(t->name, "fc.", 3) != 0)
            nn_rng_fill_uniform(&rng, t->data, t->numel, -0.1f, 0.1f);
    }
}

static nn_tensor *input(int n, int h, int w, uint64_t seed)
{
    nn_rng rng;
    nn_rng_seed(&rng, seed);
    nn_tensor *x = nn_tensor_new4(NULL, n, 3, h, w);
    nn_rng_fill_normal(&rng, x->data, x->numel, 0.f, 1.f);
    return x;
}

GPU_WORKER_TEST(gpu_resnet50_trunc_eval)
{
    rn_model m;
    model_make(&m, RN_ARCH_50, 0, 3, 0);
    nn_tensor *x = input(2, 64, 72, 3);
    nn_graph *g = nn_graph_new();
    nn_graph_set_no_grad(g, 1);
    nn_tensor *z = rn_forward(&m, g, x, 0);
    float *zc = malloc(z->numel * sizeof(float));
    memcpy(zc, z->data, z->numel * sizeof(float));
    size_t nz = z->numel;
    nn_graph_reset(g);

    nn_params_to_device(&m.P, NN_DEVICE_CUDA);
    nn_tensor_move(x, NN_DEVICE_CUDA);
    z = rn_forward(&m, g, x, 0);
    EXPECT(nn_graph_size(g) == 1, "no_grad forward on the GPU left %zu nodes", nn_graph_size(g));
    double e = rel_l2_t(z, zc);
    EXPECT(z->numel == nz && e <= 1e-4, "fp32 eval: rel L2 %.3g > 1e-4", e);
    nn_graph_reset(g);
    rn_fold_bn(&m); /* on the device */
    z = rn_forward(&m, g, x, 0);
    double ef = rel_l2_t(z, zc);
    EXPECT(ef <= 1e-4, "fp32 eval, folded on the GPU: rel L2 %.3g > 1e-4", ef);
    nn_graph_reset(g);
    nn_graph_set_precision(g, NN_PREC_BF16);
    z = rn_forward(&m, g, x, 0);
    double eb = rel_l2_t(z, zc);
    EXPECT(eb <= 5e-2, "bf16 eval, folded: rel L2 %.3g > 5e-2", eb);
    printf("    resnet50_trunc GPU vs CPU: fp32 %.2g, folded %.2g, bf16 folded %.2g\n", e, ef, eb);
    nn_graph_free(g);
    nn_tensor_free(x);
    free(zc);
    rn_free(&m);
}

GPU_WORKER_TEST(gpu_resnet18_cifar_train_step)
{
    rn_model mc, mg;
    model_make(&mc, RN_ARCH_18, 1, 4, 10);
    model_make(&mg, RN_ARCH_18, 1, 4, 10);
    nn_params_to_device(&mg.P, NN_DEVICE_CUDA);
    nn_tensor *xc = input(4, 32, 32, 5), *xg = input(4, 32, 32, 5);
    nn_tensor_move(xg, NN_DEVICE_CUDA);
    xc->requires_grad = xg->requires_grad = 1;
    const int y[4] = {1, 7, 7, 0};
    nn_graph *gc = nn_graph_new(), *gg = nn_graph_new();
    nn_tensor *lc = rn_logits(&mc, gc, rn_forward(&mc, gc, xc, 1));
    nn_tensor *lg = rn_logits(&mg, gg, rn_forward(&mg, gg, xg, 1));
    REQUIRE(nn_backward(gc, nn_cross_entropy(gc, lc, y, 0.f)) == 0, "%s", ncmi_error());
    REQUIRE(nn_backward(gg, nn_cross_entropy(gg, lg, y, 0.f)) == 0, "%s", ncmi_error());
    double worst = rel_l2_t(lg, lc->data);
    const char *wname = "logits";
    float *gh = malloc(xg->numel * sizeof(float));
    nn_tensor_grad_to_host(xg, gh);
    double e = gpu_rel_l2(gh, xc->grad, xc->numel);
    free(gh);
    if (e > worst) worst = e, wname = "grad x";
    for (int i = 0; i < mc.P.n; i++) {
        const nn_tensor *tc = mc.P.t[i], *tg = mg.P.t[i];
        if (mc.P.kind[i] == NN_PARAM_WEIGHT) {
            float *h = malloc(tg->numel * sizeof(float));
            nn_tensor_grad_to_host(tg, h);
            e = tc->grad ? gpu_rel_l2(h, tc->grad, tc->numel) : INFINITY;
            free(h);
        } else {
            e = rel_l2_t(tg, tc->data); /* running statistics after the step, counters */
        }
        if (e > worst) worst = e, wname = tc->name;
    }
    EXPECT(worst <= 1e-4, "training step GPU vs CPU: worst rel L2 %.3g (%s) > 1e-4", worst, wname);
    printf("    resnet18 CIFAR train step GPU vs CPU: worst rel L2 %.2g (%s)\n", worst, wname);
    nn_graph_free(gc);
    nn_graph_free(gg);
    nn_tensor_free(xc);
    nn_tensor_free(xg);
    rn_free(&mc);
    rn_free(&mg);
}
