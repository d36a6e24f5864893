/* A small conv net (conv-bn-relu-maxpool, two convs, global average pool,
 * linear, cross-entropy) trained 10 steps with SGD (momentum, weight decay)
 * on the CPU and on the GPU from the same initial weights and batches: the
 * losses must agree step by step within 1e-4 relative (both fp32; the
 * difference is summation order, amplified a little by 10 updates), and on
 * the GPU the steps after the first must call cudaMalloc zero times and
 * never wait for the device inside forward + backward + optimizer step. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../../nn/error.h"
#include "../../nn/optim.h"
#include "../../nn/params.h"
#include "gpu_check.h"

typedef struct {
    nn_params P;
    nn_conv2d_m c1, c2, c3;
    nn_batchnorm2d_m bn1, bn2;
    nn_linear_m fc;
} tinynet;

static void tinynet_init(tinynet *m)
{
    nn_rng rng;
    nn_rng_seed(&rng, 7);
    nn_params_init(&m->P);
    nn_conv2d_m_init(&m->c1, &m->P, "c1", 3, 16, 3, 1, 1, 1, 1, 0, &rng);
    nn_batchnorm2d_m_init(&m->bn1, &m->P, "bn1", 16);
    nn_conv2d_m_init(&m->c2, &m->P, "c2", 16, 32, 3, 2, 1, 1, 1, 0, &rng);
    nn_batchnorm2d_m_init(&m->bn2, &m->P, "bn2", 32);
    nn_conv2d_m_init(&m->c3, &m->P, "c3", 32, 32, 1, 1, 0, 1, 1, 1, &rng);
    nn_linear_m_init(&m->fc, &m->P, "fc", 32, 10, 1, &rng);
}

static nn_tensor *tinynet_loss(nn_graph *g, tinynet *m, nn_tensor *x, const int *y)
{
    nn_tensor *h = nn_relu(g, nn_batchnorm2d_m_forward(g, &m->bn1, nn_conv2d_m_forward(g, &m->c1, x), 1));
    h = nn_maxpool2d(g, h, 2, 2, 0);
    h = nn_relu(g, nn_batchnorm2d_m_forward(g, &m->bn2, nn_conv2d_m_forward(g, &m->c2, h), 1));
    h = nn_relu(g, nn_conv2d_m_forward(g, &m->c3, h));
    nn_tensor *logits = nn_linear_m_forward(g, &m->fc, nn_global_avgpool(g, h));
    return nn_cross_entropy(g, logits, y, 0.f);
}

#define B 16
#define STEPS 10

static void run(nn_device dev, float *losses, long *mallocs_after_1, long *syncs_in_steps)
{
    tinynet m;
    tinynet_init(&m);
    nn_params_to_device(&m.P, dev);
    nn_optim o;
    nn_optim_sgd_init(&o, &m.P, 0.05f, 0.9f, 5e-4f, 0);
    nn_rng rng;
    nn_rng_seed(&rng, 11);
    nn_graph *g = nn_graph_new();
    nn_tensor *xh = nn_tensor_new4(NULL, B, 3, 16, 16);
    int y[B];
    nn_cuda_mem_stats s1 = {0}, s2 = {0};
    *syncs_in_steps = 0;
    for (int step = 0; step < STEPS; step++) {
        nn_rng_fill_normal(&rng, xh->data, xh->numel, 0.f, 1.f);
        for (int i = 0; i < B; i++) {
            y[i] = (int)nn_rng_below(&rng, 10);
            /* a learnable signal: class shifts channel 0 */
            for (int p = 0; p < 256; p++) xh->data[(size_t)i * 768 + p] += 0.3f * (float)y[i];
        }
        nn_tensor *x = nn_tensor_to(xh, dev);
        long sync0 = nn_cuda_host_syncs();
        nn_params_zero_grad(&m.P);
        nn_tensor *loss = tinynet_loss(g, &m, x, y);
        NCMI_CHECK(nn_backward(g, loss) == 0, "%s", ncmi_error());
        nn_optim_step(&o);
        *syncs_in_steps += nn_cuda_host_syncs() - sync0;
        nn_tensor_to_host(loss, &losses[step]);
        nn_graph_reset(g);
        nn_tensor_free(x);
        if (step == 0) nn_cuda_mem_stats_get(&s1);
    }
    nn_cuda_mem_stats_get(&s2);
    *mallocs_after_1 = s2.n_cudamalloc - s1.n_cudamalloc;
    nn_tensor_free(xh);
    nn_graph_free(g);
    nn_optim_free(&o);
    nn_params_free(&m.P);
}

TEST(gpu_train_convnet_10_steps)
{
    GPU_REQUIRE();
    float lc[STEPS], lg[STEPS];
    long mc, mg, sc, sg;
    run(NN_DEVICE_CPU, lc, &mc, &sc);
    run(NN_DEVICE_CUDA, lg, &mg, &sg);
    double worst = 0;
    for (int s = 0; s < STEPS; s++) {
        double e = fabs((double)lg[s] - lc[s]) / fmax(1.0, fabs(lc[s]));
        if (e > worst) worst = e;
        printf("    step %2d  loss cpu %.6f  gpu %.6f\n", s, lc[s], lg[s]);
    }
    EXPECT(worst <= 1e-4, "losses differ: worst relative %.3g > 1e-4", worst);
    EXPECT(lc[STEPS - 1] < lc[0], "the net did not learn (%.4f -> %.4f)", lc[0], lc[STEPS - 1]);
    EXPECT(mg == 0, "cudaMalloc called %ld times after the first step", mg);
    EXPECT(sg == 0, "%ld host synchronisations inside %d training steps", sg, STEPS);
    printf("    worst relative loss difference %.2e; cudaMalloc after step 1: %ld; host syncs in steps: %ld\n",
           worst, mg, sg);
}
