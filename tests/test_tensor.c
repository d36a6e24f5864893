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
