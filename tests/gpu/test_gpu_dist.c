/* Data parallel on the GPU (nn/dist.h, docs/distributed.md):
 *   - NCCL with world size 1: the bucketed reducer on GPU gradients (packed,
 *     all-reduced and unpacked on the communication stream, buckets
 *     launched during backward) equals weight x the CPU gradient, with no
 *     host synchronisation between begin and finish;
 *   - two processes on one GPU with NCCL: NCCL normally refuses two ranks
 *     on one device ("Duplicate GPU detected"); then the test SKIPS with
 *     NCCL's message, otherwise it checks the sums;
 *   - two processes on one GPU with the TCP backend (GPU gradients staged
 *     through the host): the sums;
 *   - ncmi train --device cuda with two processes (TCP backend, and NCCL
 *     when NCCL accepts one GPU twice) against one process: weights within
 *     1e-5.
 * The machine the tests were written on had no GPU: every test here skips
 * there (GPU_REQUIRE); the first real run is on a GPU machine. */
#include <stdlib.h>
#include <string.h>

#include "../../nn/dist.h"
#include "../../nn/error.h"
#include "../dist_spawn.h"
#include "gpu_check.h"

/* grad[i] of a [300,50] matrix A used as mean((X A)^2) with seeded X of n rows */
static nn_tensor *pair_loss(nn_graph *g, nn_tensor *A, int n, uint64_t seed, nn_device dev)
{
    nn_rng rng;
    nn_rng_seed(&rng, seed);
    nn_tensor *xh = nn_tensor_new2(NULL, n, 300);
    nn_rng_fill_normal(&rng, xh->data, xh->numel, 0.f, 1.f);
    nn_tensor *x = nn_tensor_new_on(g, dev, 2, xh->shape);
    nn_tensor_from_host(x, xh->data);
    nn_tensor_free(xh);
    nn_tensor *h = nn_matmul(g, x, A);
    return nn_mean_all(g, nn_mul(g, h, h));
}

static void init_params(nn_params *P, nn_tensor **A, nn_tensor **B)
{
    nn_params_init(P);
    *A = nn_params_add(P, "a", NN_PARAM_WEIGHT, 2, (int[]){300, 50});
    *B = nn_params_add(P, "b", NN_PARAM_WEIGHT, 1, (int[]){4000});
    nn_rng rng;
    nn_rng_seed(&rng, 5);
    nn_rng_fill_normal(&rng, (*A)->data, (*A)->numel, 0.f, 0.1f);
    nn_rng_fill_normal(&rng, (*B)->data, (*B)->numel, 0.f, 1.f);
}

/* loss of rank q (seeded by q): A on every rank, B (mean(B^2)) too */
static nn_tensor *rank_loss(nn_graph *g, nn_tensor *A, nn_tensor *B, int q, nn_device dev)
{
    nn_tensor *l = pair_loss(g, A, 4 + q, 100 + (uint64_t)q, dev);
    return nn_add(g, l, nn_mean_all(g, nn_mul(g, B, B)));
}

TEST(gpu_dist_nccl_one_rank)
{
    GPU_REQUIRE();
    if (!nn_dist_nccl_built()) SKIP("this build has no NCCL (nccl.h not found at build time)");
    gpu_run_worker("worker_gpu_dist_nccl_one_rank");
}

TEST(worker_gpu_dist_nccl_one_rank)
{
    REQUIRE(gpu_ready(), "no GPU: %s", gpu_why());
    nn_dist_env e;
    memset(&e, 0, sizeof e);
    e.world = 1;
    e.local_rank = 0;
    e.port = 29500;
    e.timeout = 60;
    snprintf(e.addr, sizeof e.addr, "127.0.0.1");
    snprintf(e.source, sizeof e.source, "test");
    nn_dist *d;
    REQUIRE(nn_dist_init(&d, &e, NN_DIST_NCCL) == 0, "NCCL with one rank: %s", ncmi_error());
    nn_params P;
    nn_tensor *A, *B;
    init_params(&P, &A, &B);
    /* the CPU reference: 0.5 x the gradient */
    nn_graph *g = nn_graph_new();
    REQUIRE(nn_backward(g, rank_loss(g, A, B, 0, NN_DEVICE_CPU)) == 0, "%s", ncmi_error());
    float *refA = malloc(A->numel * sizeof *refA), *refB = malloc(B->numel * sizeof *refB);
    for (size_t i = 0; i < A->numel; i++) refA[i] = 0.5f * A->grad[i];
    for (size_t i = 0; i < B->numel; i++) refB[i] = 0.5f * B->grad[i];
    nn_graph_reset(g);
    nn_params_zero_grad(&P);
    nn_params_to_device(&P, NN_DEVICE_CUDA);
    nn_dist_reducer *red;
    REQUIRE(nn_dist_reducer_new(&red, d, &P, 4096) == 0, "%s", ncmi_error()); /* {B}, {A} */
    nn_tensor *loss = rank_loss(g, A, B, 0, NN_DEVICE_CUDA);
    long s0 = nn_cuda_host_syncs();
    REQUIRE(nn_dist_reducer_begin(red, g, 0.5) == 0, "%s", ncmi_error());
    REQUIRE(nn_backward(g, loss) == 0, "%s", ncmi_error());
    REQUIRE(nn_dist_reducer_finish(red) == 0, "%s", ncmi_error());
    EXPECT(nn_cuda_host_syncs() == s0, "begin .. finish waited for the device %ld times", nn_cuda_host_syncs() - s0);
    nn_dist_reducer_stats st;
    nn_dist_reducer_stats_get(red, &st);
    EXPECT(st.n_buckets == 2 && st.buckets_in_backward >= 1, "buckets: %d, %ld launched during backward",
           st.n_buckets, st.buckets_in_backward);
    float *gA = malloc(A->numel * sizeof *gA), *gB = malloc(B->numel * sizeof *gB);
    nn_tensor_grad_to_host(A, gA);
    nn_tensor_grad_to_host(B, gB);
    double eA = gpu_rel_l2(gA, refA, A->numel), eB = gpu_rel_l2(gB, refB, B->numel);
    printf("    NCCL (1 rank) reducer vs CPU: A %.2e, B %.2e\n", eA, eB);
    EXPECT(eA < 1e-5 && eB < 1e-5, "reduced gradients differ from 0.5 x the CPU's: %.3g %.3g", eA, eB);
    nn_dist_reducer_free(red);
    nn_graph_free(g);
    nn_params_free(&P);
    free(refA);
    free(refB);
    free(gA);
    free(gB);
    nn_dist_free(d);
}

/* Rank r of 2 on GPU 0 with the backend of NCMI_DIST_BACKEND: the reducer
 * with weights 1/2 must give the mean of both ranks' gradients. */
TEST(worker_gpu_dist_pair)
{
    REQUIRE(gpu_ready(), "no GPU: %s", gpu_why());
    const char *b = getenv("NCMI_DIST_BACKEND");
    const nn_dist_backend be = b && !strcmp(b, "nccl") ? NN_DIST_NCCL : NN_DIST_TCP;
    nn_dist_env e;
    REQUIRE(nn_dist_env_read(&e) == 0, "%s", ncmi_error());
    nn_dist *d;
    if (nn_dist_init(&d, &e, be)) {
        printf("INIT-REFUSED: %s\n", ncmi_error());
        return;
    }
    const int r = nn_dist_rank(d);
    nn_params P;
    nn_tensor *A, *B;
    init_params(&P, &A, &B);
    nn_graph *g = nn_graph_new();
    double *ref = calloc(A->numel, sizeof *ref);
    for (int q = 0; q < 2; q++) {
        REQUIRE(nn_backward(g, rank_loss(g, A, B, q, NN_DEVICE_CPU)) == 0, "%s", ncmi_error());
        for (size_t i = 0; i < A->numel; i++) ref[i] += 0.5 * A->grad[i];
        nn_graph_reset(g);
        nn_params_zero_grad(&P);
    }
    nn_params_to_device(&P, NN_DEVICE_CUDA);
    nn_dist_reducer *red;
    REQUIRE(nn_dist_reducer_new(&red, d, &P, 4096) == 0, "%s", ncmi_error());
    nn_tensor *loss = rank_loss(g, A, B, r, NN_DEVICE_CUDA);
    REQUIRE(nn_dist_reducer_begin(red, g, 0.5) == 0, "%s", ncmi_error());
    REQUIRE(nn_backward(g, loss) == 0, "%s", ncmi_error());
    REQUIRE(nn_dist_reducer_finish(red) == 0, "%s", ncmi_error());
    float *gA = malloc(A->numel * sizeof *gA), *rf = malloc(A->numel * sizeof *rf);
    nn_tensor_grad_to_host(A, gA);
    for (size_t i = 0; i < A->numel; i++) rf[i] = (float)ref[i];
    double err = gpu_rel_l2(gA, rf, A->numel);
    printf("PAIR-OK %s rank %d: relative difference %.2e\n", nn_dist_backend_name(be), r, err);
    EXPECT(err < 1e-5, "rank %d: the mean gradient differs by %.3g", r, err);
    nn_dist_reducer_free(red);
    nn_graph_free(g);
    nn_params_free(&P);
    free(ref);
    free(gA);
    free(rf);
    nn_dist_free(d);
}

/* 2 ranks on the one GPU; returns 1 when the test should skip (why in why) */
static int run_pair(const char *backend, char *why, size_t n)
{
    char be[64];
    snprintf(be, sizeof be, "NCMI_DIST_BACKEND=%s", backend);
    const char *env[] = {be, "NCMI_DIST_TIMEOUT=60", NULL};
    dist_proc p[2];
    dist_spawn_worker(2, dist_free_port(), "worker_gpu_dist_pair", env, 120, p);
    int skip = 0;
    for (int r = 0; r < 2; r++) {
        const char *ref = strstr(p[r].out, "INIT-REFUSED: ");
        if (ref && !skip) {
            skip = 1;
            snprintf(why, n, "%.*s", (int)strcspn(ref + 14, "\n"), ref + 14);
        }
    }
    if (!skip)
        for (int r = 0; r < 2; r++)
            EXPECT(p[r].status == 0 && strstr(p[r].out, "PAIR-OK"), "%s rank %d (status %d): %s", backend, r,
                   p[r].status, p[r].out);
    for (int r = 0; r < 2 && !skip; r++) printf("    %s", strstr(p[r].out, "PAIR-OK") ? strstr(p[r].out, "PAIR-OK") : "\n");
    dist_procs_free(p, 2);
    return skip;
}

TEST(gpu_dist_nccl_two_ranks_one_gpu)
{
    GPU_REQUIRE();
    if (!nn_dist_nccl_built()) SKIP("this build has no NCCL (nccl.h not found at build time)");
    char why[600];
    if (run_pair("nccl", why, sizeof why)) SKIP("NCCL does not run two ranks on one GPU here: %s", why);
}

TEST(gpu_dist_tcp_two_ranks_one_gpu)
{
    GPU_REQUIRE();
    char why[600];
    if (run_pair("tcp", why, sizeof why)) test_fail_at(__FILE__, __LINE__, "the TCP backend refused: %s", why);
}

/* ncmi train --device cuda: 2 processes on the one GPU vs 1 process */
static void train_pair(const char *backend)
{
    char one[300], two[300], cmd[1600], *o = NULL;
    snprintf(one, sizeof one, "%s", test_tmp_path("gpu_dist_one_%s", backend));
    snprintf(two, sizeof two, "%s", test_tmp_path("gpu_dist_two_%s", backend));
    const char *args = "train --device cuda --config configs/demo_mlp.yaml --set data.n_train=2000 "
                       "--set data.n_val=500 --set train.epochs=3 --set train.threads=1";
    snprintf(cmd, sizeof cmd, "env -u RANK -u WORLD_SIZE %s %s --out %s", test_ncmi_bin(), args, one);
    int rc = test_run(cmd, &o);
    EXPECT(rc == 0, "one process: %s", o ? o : "");
    free(o);
    char be[64];
    snprintf(be, sizeof be, "NCMI_DIST_BACKEND=%s", backend);
    const char *env[] = {be, "NCMI_DIST_TIMEOUT=60", NULL};
    snprintf(cmd, sizeof cmd, "%s %s --out %s", test_ncmi_bin(), args, two);
    dist_proc p[2];
    dist_spawn_sh(2, dist_free_port(), cmd, env, 180, p);
    if (!strcmp(backend, "nccl") && p[0].status != 0 && (strstr(p[0].out, "NCCL") || strstr(p[1].out, "NCCL"))) {
        char why[400];
        const char *m = strstr(p[0].out, "NCCL") ? p[0].out : p[1].out;
        snprintf(why, sizeof why, "%.*s", (int)strcspn(m, "\n"), m);
        dist_procs_free(p, 2);
        SKIP("NCCL does not run two ranks on one GPU here: %s", why);
    }
    for (int r = 0; r < 2; r++) EXPECT(p[r].status == 0, "%s rank %d: %s", backend, r, p[r].out);
    EXPECT(strstr(p[0].out, "world size 2 (") && strstr(p[0].out, backend), "header: %s", p[0].out);
    char a[4300], b[4300], worst[512];
    snprintf(a, sizeof a, "%s/demo_mlp/last.safetensors", two);
    snprintf(b, sizeof b, "%s/demo_mlp/last.safetensors", one);
    double dd = dist_ckpt_rel_diff(a, b, 0, worst, sizeof worst);
    printf("    %s, 2 processes vs 1 on the GPU: worst relative difference %.2e (%s)\n", backend, dd, worst);
    EXPECT(dd >= 0 && dd <= 1e-5, "weights differ: %.3g (%s)", dd, worst);
    dist_procs_free(p, 2);
}

TEST(gpu_dist_train_two_ranks_tcp)
{
    GPU_REQUIRE();
    train_pair("tcp");
}

TEST(gpu_dist_train_two_ranks_nccl)
{
    GPU_REQUIRE();
    if (!nn_dist_nccl_built()) SKIP("this build has no NCCL (nccl.h not found at build time)");
    train_pair("nccl");
}
