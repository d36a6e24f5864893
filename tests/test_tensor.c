#include <string.h>

#include "../nn/error.h"
#include "../nn/ops.h"
#include "../nn/rng.h"
#include "test.h"

TEST(tensor_graph_lifetime)
{
    nn_graph *g = nn_graph_new();
    nn_tensor *a = nn_tensor_new2(g, 3, 4);
    EXPECT(a->numel == 12, "numel %zu", a->numel);
    EXPECT(nn_graph_size(g) == 1, "graph size %zu", nn_graph_size(g));
    nn_graph_reset(g);
    EXPECT(nn_graph_size(g) == 0, "graph not reset");
    nn_graph_free(g);
}

TEST(tensor_backward_rejects_non_scalar)
{
    nn_graph *g = nn_graph_new();
    nn_tensor *a = nn_tensor_new2(g, 3, 4);
    EXPECT(nn_backward(g, a) != 0, "non-scalar backward accepted");
    EXPECT(strstr(ncmi_error(), "scalar") != NULL, "message: %s", ncmi_error());
    nn_graph_free(g);
}

/* One small graph: W [4, 3] (leaf), x [5, 4]; h = x W; a = h + h (add: reads
 * nothing backward); r = reshape(a); m = matmul(r, W^T-like v [3, 2]); loss =
 * sum(m * m). Returns the loss; the intermediates through the pointers. */
static nn_tensor *fd_graph(nn_graph *g, nn_tensor *W, nn_tensor *V, nn_tensor **h, nn_tensor **a,
                           nn_tensor **m, int release_h)
{
    nn_tensor *x = nn_tensor_new2(g, 5, 4);
    for (size_t i = 0; i < x->numel; i++) x->data[i] = (float)((int)(i * 7 % 11) - 5) / 4.f;
    *h = nn_matmul(g, x, W);
    *a = nn_add(g, *h, *h);
    if (release_h) nn_release(g, *h); /* its matmul reads its inputs, the add nothing: h can go */
    int s2[2] = {5, 3};
    nn_tensor *r = nn_reshape(g, *a, 2, s2);
    *m = nn_matmul(g, r, V);
    return nn_sum_all(g, nn_mul(g, *m, *m));
}

TEST(tensor_free_dead_and_release)
{
    nn_tensor *W = nn_tensor_new2(NULL, 4, 3), *V = nn_tensor_new2(NULL, 3, 2);
    for (size_t i = 0; i < W->numel; i++) W->data[i] = 0.1f * (float)i - 0.4f;
    for (size_t i = 0; i < V->numel; i++) V->data[i] = 0.2f * (float)i - 0.3f;
    W->requires_grad = V->requires_grad = 1;
    float gw[12], gv[6];
    /* reference: nothing freed */
    nn_graph *g = nn_graph_new();
    nn_tensor *h, *a, *m;
    nn_tensor *loss = fd_graph(g, W, V, &h, &a, &m, 0);
    REQUIRE(nn_backward(g, loss) == 0, "%s", ncmi_error());
    memcpy(gw, W->grad, sizeof gw);
    memcpy(gv, V->grad, sizeof gv);
    const float lv = loss->data[0];
    EXPECT(h->data && a->data && m->data, "a graph without free_dead freed data");
    nn_tensor_zero_grad(W);
    nn_tensor_zero_grad(V);
    nn_graph_reset(g);
    /* free_dead, h released after its last use, m kept */
    nn_graph_set_free_dead(g, 1);
    loss = fd_graph(g, W, V, &h, &a, &m, 1);
    EXPECT(h->data == NULL, "h: only an add (reading nothing backward) took it, yet it was not released");
    EXPECT(a->data != NULL, "a: a view of it (reshape) is read by a matmul's backward, yet it was released");
    nn_release(g, a);
    EXPECT(a->data != NULL, "a: released while a view of it lives");
    nn_release(g, m);
    EXPECT(m->data != NULL, "m: released while mul's backward reads it");
    nn_tensor_keep(m);
    REQUIRE(nn_backward(g, loss) == 0, "%s", ncmi_error());
    EXPECT(memcmp(gw, W->grad, sizeof gw) == 0 && memcmp(gv, V->grad, sizeof gv) == 0,
           "gradients differ with free_dead");
    EXPECT(loss->data && loss->data[0] == lv, "the loss node lost its value");
    EXPECT(m->data != NULL, "a kept tensor was freed");
    EXPECT(a->data == NULL, "a: passed by the backward walk, not freed");
    nn_graph_free(g);
    nn_tensor_free(W);
    nn_tensor_free(V);
}

TEST(rng_reproducible)
{
    nn_rng a, b;
    nn_rng_seed(&a, 42);
    nn_rng_seed(&b, 42);
    for (int i = 0; i < 100; i++) EXPECT(nn_rng_u64(&a) == nn_rng_u64(&b), "stream differs at %d", i);
    nn_rng_seed(&b, 43);
    EXPECT(nn_rng_u64(&a) != nn_rng_u64(&b), "different seeds, same stream");
    int perm[50], seen[50] = {0};
    nn_rng_permutation(&a, perm, 50);
    for (int i = 0; i < 50; i++) seen[perm[i]]++;
    for (int i = 0; i < 50; i++) EXPECT(seen[i] == 1, "not a permutation at %d", i);
    double s = 0, s2 = 0;
    for (int i = 0; i < 20000; i++) {
        double x = nn_rng_normal(&a);
        s += x;
        s2 += x * x;
    }
    EXPECT_NEAR(s / 20000, 0.0, 0.03);
    EXPECT_NEAR(s2 / 20000, 1.0, 0.05);
}

/* Programming errors (shapes that cannot combine, labels out of range)
 * abort with the op's name and the offending values. */
static void bad_broadcast(void *ctx)
{
    (void)ctx;
    nn_graph *g = nn_graph_new();
    nn_add(g, nn_tensor_new2(g, 3, 4), nn_tensor_new2(g, 2, 4));
}

static void bad_label(void *ctx)
{
    (void)ctx;
    nn_graph *g = nn_graph_new();
    int y[2] = {0, 7};
    nn_cross_entropy(g, nn_tensor_new2(g, 2, 5), y, 0.f);
}

static void bad_linear(void *ctx)
{
    (void)ctx;
    nn_graph *g = nn_graph_new();
    nn_linear(g, nn_tensor_new2(g, 3, 4), nn_tensor_new2(g, 5, 6), NULL);
}

TEST(ops_abort_on_programming_errors)
{
    char msg[1024];
    EXPECT(test_aborts(bad_broadcast, NULL, "[3,4]", msg, sizeof msg),
           "broadcast [3,4]+[2,4] did not abort with the shapes: %s", msg);
    EXPECT(test_aborts(bad_label, NULL, "7", msg, sizeof msg),
           "label 7 of 5 classes did not abort naming it: %s", msg);
    EXPECT(test_aborts(bad_linear, NULL, "linear", msg, sizeof msg),
           "linear [3,4] x [5,6] did not abort naming the op: %s", msg);
}
