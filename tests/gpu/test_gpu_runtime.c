/* The CUDA runtime: device selection, caching allocator, copies, the core
 * kernels, device tensors and the autograd seed on the GPU. */
#include <stdlib.h>
#include <string.h>

#include "../../nn/error.h"
#include "gpu_check.h"

TEST(gpu_runtime_select_and_copy)
{
    GPU_REQUIRE();
    int is_cuda = 0;
    REQUIRE(nn_device_select("cuda", &is_cuda) == 0 && is_cuda, "%s", ncmi_error());
    REQUIRE(nn_device_select("auto", &is_cuda) == 0 && is_cuda, "%s", ncmi_error());
    EXPECT(nn_device_select("cuda:99", &is_cuda) != 0 && strstr(ncmi_error(), "99"), "%s", ncmi_error());
    printf("    device: %s\n", nn_device_name(1));
    float h[1000], back[1000];
    for (int i = 0; i < 1000; i++) h[i] = (float)i * 0.5f - 3.f;
    float *d = nn_cuda_alloc(sizeof h);
    nn_cuda_h2d(d, h, sizeof h);
    nn_cuda_scal(d, 2.f, 1000);
    nn_cuda_axpy(d, d, 1.f, 1000); /* 4x */
    nn_cuda_d2h(back, d, sizeof back);
    for (int i = 0; i < 1000; i++) EXPECT(back[i] == 4.f * h[i], "element %d: %g", i, back[i]);
    nn_cuda_fill(d, 7.f, 1000);
    nn_cuda_d2h(back, d, sizeof back);
    EXPECT(back[0] == 7.f && back[999] == 7.f, "fill");
    nn_cuda_free(d);
}

TEST(gpu_runtime_allocator_reuses)
{
    GPU_REQUIRE();
    nn_cuda_mem_stats s0, s1;
    /* warm-up: one of each size */
    void *a = nn_cuda_alloc(1000), *b = nn_cuda_alloc(3u << 20), *c = nn_cuda_alloc(100u << 20);
    nn_cuda_free(a);
    nn_cuda_free(b);
    nn_cuda_free(c);
    nn_cuda_mem_stats_get(&s0);
    for (int it = 0; it < 50; it++) {
        a = nn_cuda_alloc(1000);
        b = nn_cuda_alloc(3u << 20);
        c = nn_cuda_alloc(99u << 20); /* same size class as 100 MiB */
        nn_cuda_free(c);
        nn_cuda_free(b);
        nn_cuda_free(a);
    }
    nn_cuda_mem_stats_get(&s1);
    EXPECT(s1.n_cudamalloc == s0.n_cudamalloc, "cudaMalloc called %ld times after warm-up",
           s1.n_cudamalloc - s0.n_cudamalloc);
    EXPECT(s1.in_use == s0.in_use, "in_use %zu -> %zu", s0.in_use, s1.in_use);
}

TEST(gpu_runtime_tensor_roundtrip_and_seed)
{
    GPU_REQUIRE();
    nn_tensor *h = nn_tensor_new2(NULL, 3, 5);
    for (size_t i = 0; i < h->numel; i++) h->data[i] = (float)i;
    nn_tensor *d = nn_tensor_to(h, NN_DEVICE_CUDA);
    EXPECT(d->device == NN_DEVICE_CUDA, "device");
    float back[15];
    nn_tensor_to_host(d, back);
    EXPECT(memcmp(back, h->data, sizeof back) == 0, "roundtrip");
    nn_tensor_move(h, NN_DEVICE_CUDA);
    EXPECT(h->device == NN_DEVICE_CUDA, "moved");
    nn_tensor_move(h, NN_DEVICE_CPU);
    EXPECT(h->data[14] == 14.f, "moved back: %g", h->data[14]);
    /* the backward seed on the GPU (no op needed: a leaf of the graph) */
    nn_graph *g = nn_graph_new();
    nn_tensor *s = nn_tensor_new_on(g, NN_DEVICE_CUDA, 1, (int[]){1});
    s->requires_grad = 1;
    REQUIRE(nn_backward(g, s) == 0, "%s", ncmi_error());
    float one = 0;
    nn_tensor_grad_to_host(s, &one);
    EXPECT(one == 1.f, "seed %g", one);
    nn_graph_free(g);
    nn_tensor_free(h);
    nn_tensor_free(d);
}
