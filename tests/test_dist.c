/* Data-parallel training on the CPU (nn/dist.h, docs/distributed.md): the
 * environment, the TCP rendezvous and ring collectives with 2 and 3
 * processes (results bit-identical on every rank), the gradient reducer
 * (buckets launched during backward, weights, tensors unused on some or all
 * ranks), failures (a dead peer, a stalled peer, a wrong port, a port in
 * use, mismatched world sizes) reported with the rank and the address
 * within the timeout, and `ncmi train` with 2 and 3 processes against one
 * process on the same global batch (weights within 1e-5, same validation
 * accuracy), resume of a 2-process run by 1 process and of a 1-process run
 * by 2.
 *
 * Processes are this test binary (TEST(worker_...) through
 * NCMI_TEST_WORKER) or the ncmi binary, started as torchrun would
 * (tests/dist_spawn.h). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "../features/features_h5.h"
#include "../nn/dist.h"
#include "../nn/error.h"
#include "../nn/ops.h"
#include "../nn/params.h"
#include "dist_spawn.h"
#include "mil_synth.h"
#include "test.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ------------------------------------------------------------------ */
/* the environment                                                     */

static const char *const ENV_VARS[] = {
    "RANK", "WORLD_SIZE", "LOCAL_RANK", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE",
    "OMPI_COMM_WORLD_LOCAL_RANK", "PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID", "SLURM_PROCID",
    "SLURM_NTASKS", "SLURM_STEP_NUM_TASKS", "SLURM_LOCALID", "MASTER_ADDR", "MASTER_PORT",
    "NCMI_DIST_TIMEOUT", "NCMI_DIST_PORT", "TORCHELASTIC_USE_AGENT_STORE", NULL};

TEST(dist_env)
{
    char *saved[32];
    for (int i = 0; ENV_VARS[i]; i++) {
        const char *v = getenv(ENV_VARS[i]);
        saved[i] = v ? strdup(v) : NULL;
        unsetenv(ENV_VARS[i]);
    }
    nn_dist_env e;
    EXPECT(nn_dist_env_read(&e) == 0 && e.world == 1 && e.rank == 0 && !strcmp(e.source, "none") &&
               !strcmp(e.addr, "127.0.0.1") && e.port == 29500 && e.timeout == 300,
           "no launcher: world 1 at 127.0.0.1:29500, timeout 300 (got %d/%d %s %s:%d %g)", e.rank, e.world,
           e.source, e.addr, e.port, e.timeout);
    EXPECT(nn_dist_env_device(4) == 0, "one process: GPU 0");

    /* Slurm, then Open MPI over it, then torchrun over both */
    setenv("SLURM_PROCID", "3", 1);
    setenv("SLURM_NTASKS", "8", 1);
    setenv("SLURM_LOCALID", "1", 1);
    EXPECT(nn_dist_env_read(&e) == 0 && e.rank == 3 && e.world == 8 && e.local_rank == 1 &&
               !strcmp(e.source, "slurm"),
           "slurm: %d/%d local %d %s", e.rank, e.world, e.local_rank, e.source);
    setenv("SLURM_STEP_NUM_TASKS", "4", 1);
    EXPECT(nn_dist_env_read(&e) == 0 && e.world == 4, "SLURM_STEP_NUM_TASKS wins over SLURM_NTASKS: %d", e.world);
    EXPECT(nn_dist_env_device(2) == 1, "slurm local id 1 of 2 GPUs: %d", nn_dist_env_device(2));
    setenv("OMPI_COMM_WORLD_RANK", "2", 1);
    setenv("OMPI_COMM_WORLD_SIZE", "5", 1);
    EXPECT(nn_dist_env_read(&e) == 0 && e.rank == 2 && e.world == 5 && e.local_rank == -1 &&
               !strcmp(e.source, "openmpi"),
           "openmpi over slurm: %d/%d %s", e.rank, e.world, e.source);
    EXPECT(nn_dist_env_device(4) == 2, "no local rank: rank %% GPUs (%d)", nn_dist_env_device(4));
    setenv("RANK", "1", 1);
    setenv("WORLD_SIZE", "2", 1);
    setenv("MASTER_ADDR", "node17", 1);
    setenv("MASTER_PORT", "1234", 1);
    setenv("NCMI_DIST_TIMEOUT", "2.5", 1);
    EXPECT(nn_dist_env_read(&e) == 0 && e.rank == 1 && e.world == 2 && !strcmp(e.source, "torchrun") &&
               !strcmp(e.addr, "node17") && e.port == 1234 && e.timeout == 2.5,
           "torchrun: %d/%d %s %s:%d %g", e.rank, e.world, e.source, e.addr, e.port, e.timeout);

    /* torchrun's agent holds MASTER_PORT: the next one; NCMI_DIST_PORT wins */
    setenv("TORCHELASTIC_USE_AGENT_STORE", "True", 1);
    EXPECT(nn_dist_env_read(&e) == 0 && e.port == 1235, "agent store: port %d", e.port);
    setenv("NCMI_DIST_PORT", "4000", 1);
    EXPECT(nn_dist_env_read(&e) == 0 && e.port == 4000, "NCMI_DIST_PORT: port %d", e.port);
    unsetenv("NCMI_DIST_PORT");
    unsetenv("TORCHELASTIC_USE_AGENT_STORE");

    /* malformed values name the variable */
    setenv("RANK", "one", 1);
    EXPECT(nn_dist_env_read(&e) < 0 && strstr(ncmi_error(), "RANK='one'"), "bad RANK: %s", ncmi_error());
    setenv("RANK", "2", 1);
    EXPECT(nn_dist_env_read(&e) < 0 && strstr(ncmi_error(), "RANK=2") && strstr(ncmi_error(), "WORLD_SIZE=2"),
           "rank >= world: %s", ncmi_error());
    unsetenv("RANK");
    EXPECT(nn_dist_env_read(&e) < 0 && strstr(ncmi_error(), "RANK"), "WORLD_SIZE without RANK: %s", ncmi_error());
    setenv("RANK", "0", 1);
    setenv("MASTER_PORT", "70000", 1);
    EXPECT(nn_dist_env_read(&e) < 0 && strstr(ncmi_error(), "MASTER_PORT"), "port: %s", ncmi_error());
    setenv("MASTER_PORT", "1234", 1);
    setenv("NCMI_DIST_TIMEOUT", "-1", 1);
    EXPECT(nn_dist_env_read(&e) < 0 && strstr(ncmi_error(), "NCMI_DIST_TIMEOUT"), "timeout: %s", ncmi_error());

    for (int i = 0; ENV_VARS[i]; i++) {
        if (saved[i]) setenv(ENV_VARS[i], saved[i], 1);
        else unsetenv(ENV_VARS[i]);
        free(saved[i]);
    }
}

/* ------------------------------------------------------------------ */
/* workers (run as ranks by the tests below)                           */

static nn_dist *worker_group(void)
{
    nn_dist_env e;
    if (nn_dist_env_read(&e)) {
        printf("ENV-ERROR: %s\n", ncmi_error());
        return NULL;
    }
    nn_dist *d = NULL;
    if (nn_dist_init(&d, &e, NN_DIST_TCP)) {
        printf("INIT-ERROR: %s\n", ncmi_error());
        return NULL;
    }
    return d;
}

static FILE *worker_out(int rank)
{
    const char *o = getenv("NCMI_DIST_TEST_OUT");
    if (!o) return NULL;
    char p[4200];
    snprintf(p, sizeof p, "%s.%d", o, rank);
    return fopen(p, "wb");
}

/* values of mixed magnitude, different per rank: float sums depend on the order */
static float val(int rank, size_t i)
{
    uint64_t x = (uint64_t)rank * 1000003u + i + 1;
    x ^= x >> 31;
    x *= 0x9e3779b97f4a7c15ULL;
    x ^= x >> 29;
    float u = (float)((x >> 40) & 0xffffff) / 16777216.f * 2.f - 1.f;
    return u * (1.f + (float)(i % 7) * 1000.f);
}

TEST(worker_dist_collectives)
{
    nn_dist *d = worker_group();
    REQUIRE(d, "no group");
    const int W = nn_dist_world(d), r = nn_dist_rank(d);
    FILE *f = worker_out(r);
    REQUIRE(f, "NCMI_DIST_TEST_OUT");
    static const size_t sizes[] = {0, 1, 2, 3, 7, 1000, ((size_t)1 << 20) + 3};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        const size_t n = sizes[k];
        float *x = malloc((n ? n : 1) * sizeof *x);
        for (size_t i = 0; i < n; i++) x[i] = val(r, i);
        REQUIRE(nn_dist_allreduce_f32(d, x, n) == 0, "all-reduce of %zu: %s", n, ncmi_error());
        size_t bad = 0;
        for (size_t i = 0; i < n; i++) {
            double ref = 0, mag = 0;
            for (int q = 0; q < W; q++) {
                ref += val(q, i);
                mag += fabs(val(q, i));
            }
            if (!(fabs(x[i] - ref) <= 1e-6 * mag)) bad++;
        }
        EXPECT(bad == 0, "f32 all-reduce of %zu: %zu sums off", n, bad);
        fwrite(x, sizeof *x, n, f);
        free(x);
    }
    double y[1001];
    for (int i = 0; i < 1001; i++) y[i] = (double)val(r, (size_t)i) / 3.0;
    REQUIRE(nn_dist_allreduce_f64(d, y, 1001) == 0, "f64: %s", ncmi_error());
    for (int i = 0; i < 1001; i++) {
        double ref = 0;
        for (int q = 0; q < W; q++) ref += (double)val(q, (size_t)i) / 3.0;
        if (fabs(y[i] - ref) > 1e-12 * (fabs(ref) + 1)) {
            test_fail_at(__FILE__, __LINE__, "f64 sum %d: %g vs %g", i, y[i], ref);
            break;
        }
    }
    fwrite(y, sizeof *y, 1001, f);
    /* 3 MiB + 5 from the last rank: several pipelined pieces */
    const size_t nb = (3u << 20) + 5;
    unsigned char *b = malloc(nb);
    for (size_t i = 0; i < nb; i++) b[i] = r == W - 1 ? (unsigned char)(i * 7 + 3) : 0;
    REQUIRE(nn_dist_broadcast(d, b, nb, W - 1) == 0, "broadcast: %s", ncmi_error());
    size_t wrong = 0;
    for (size_t i = 0; i < nb; i++) wrong += b[i] != (unsigned char)(i * 7 + 3);
    EXPECT(wrong == 0, "broadcast: %zu bytes differ", wrong);
    free(b);
    nn_tensor *t = nn_tensor_new1(NULL, 33);
    for (int i = 0; i < 33; i++) t->data[i] = r == 0 ? (float)i : -1.f;
    REQUIRE(nn_dist_broadcast_tensor(d, t, 0) == 0, "broadcast_tensor: %s", ncmi_error());
    for (int i = 0; i < 33; i++) EXPECT(t->data[i] == (float)i, "tensor[%d] = %g", i, t->data[i]);
    nn_tensor_free(t);
    EXPECT(nn_dist_barrier(d, 0) == 0, "barrier: %s", ncmi_error());
    fclose(f);
    nn_dist_free(d);
}

/* A over every rank's samples, B on rank 0 only, C nowhere. P = [C, A, B]:
 * the reducer's reverse order is B, A, C; 1 KiB buckets give {B}, {A}, {C}. */
typedef struct red_model {
    nn_params P;
    nn_tensor *A, *B, *C;
} red_model;

static void red_model_init(red_model *m)
{
    nn_params_init(&m->P);
    m->C = nn_params_add(&m->P, "c", NN_PARAM_WEIGHT, 1, (int[]){10});
    m->A = nn_params_add(&m->P, "a", NN_PARAM_WEIGHT, 2, (int[]){300, 50});
    m->B = nn_params_add(&m->P, "b", NN_PARAM_WEIGHT, 1, (int[]){40});
    nn_rng rng;
    nn_rng_seed(&rng, 5);
    nn_rng_fill_normal(&rng, m->A->data, m->A->numel, 0.f, 0.1f);
    nn_rng_fill_normal(&rng, m->B->data, m->B->numel, 0.f, 1.f);
    nn_rng_fill_normal(&rng, m->C->data, m->C->numel, 0.f, 1.f);
}

static int red_count(int W, int rank) { return W == 3 ? (int[]){3, 0, 5}[rank] : (int[]){3, 5}[rank % 2]; }

/* rank q's loss: mean((X_q A)^2) (+ mean(B^2) on rank 0); NULL without samples */
static nn_tensor *red_loss(nn_graph *g, red_model *m, int W, int q)
{
    const int n = red_count(W, q);
    if (n == 0) return NULL;
    nn_rng rng;
    nn_rng_seed(&rng, 100 + (uint64_t)q);
    nn_tensor *x = nn_tensor_new2(g, n, 300);
    nn_rng_fill_normal(&rng, x->data, x->numel, 0.f, 1.f);
    nn_tensor *h = nn_matmul(g, x, m->A);
    nn_tensor *l = nn_mean_all(g, nn_mul(g, h, h));
    if (q == 0) l = nn_add(g, l, nn_mean_all(g, nn_mul(g, m->B, m->B)));
    return l;
}

TEST(worker_dist_reducer)
{
    nn_dist *d = worker_group();
    REQUIRE(d, "no group");
    const int W = nn_dist_world(d), r = nn_dist_rank(d);
    red_model m;
    red_model_init(&m);
    int total = 0;
    for (int q = 0; q < W; q++) total += red_count(W, q);
    /* the expected weighted sums, from every rank's gradient computed here */
    double *eA = calloc(m.A->numel, sizeof *eA), *eB = calloc(m.B->numel, sizeof *eB);
    nn_graph *g = nn_graph_new();
    for (int q = 0; q < W; q++) {
        nn_tensor *l = red_loss(g, &m, W, q);
        if (l) {
            REQUIRE(nn_backward(g, l) == 0, "%s", ncmi_error());
            const double w = (double)red_count(W, q) / total;
            for (size_t i = 0; i < m.A->numel; i++) eA[i] += w * m.A->grad[i];
            if (m.B->grad)
                for (size_t i = 0; i < m.B->numel; i++) eB[i] += w * m.B->grad[i];
        }
        nn_graph_reset(g);
        nn_tensor_drop_grad(m.A);
        nn_tensor_drop_grad(m.B);
    }
    REQUIRE(!m.C->grad, "C has a gradient");

    nn_dist_reducer *red;
    REQUIRE(nn_dist_reducer_new(&red, d, &m.P, 1024) == 0, "%s", ncmi_error());
    nn_dist_reducer_stats st;
    nn_dist_reducer_stats_get(red, &st);
    EXPECT(st.n_buckets == 3 && st.n_tensors == 3, "layout: %d buckets, %d tensors", st.n_buckets, st.n_tensors);
    REQUIRE(nn_dist_reducer_begin(red, g, (double)red_count(W, r) / total) == 0, "%s", ncmi_error());
    EXPECT(nn_dist_barrier(d, 0) < 0 && strstr(ncmi_error(), "reducer_begin"),
           "a collective inside begin/finish is refused: %s", ncmi_error());
    nn_tensor *l = red_loss(g, &m, W, r);
    if (l) REQUIRE(nn_backward(g, l) == 0, "%s", ncmi_error());
    REQUIRE(nn_dist_reducer_finish(red) == 0, "finish: %s", ncmi_error());
    nn_dist_reducer_stats_get(red, &st);
    if (r == 0)
        EXPECT(st.buckets_in_backward == 2 && st.buckets_at_finish == 1,
               "rank 0: B and A go out during backward, C at finish (%ld, %ld)", st.buckets_in_backward,
               st.buckets_at_finish);
    else
        EXPECT(st.buckets_in_backward == 0 && st.buckets_at_finish == 3,
               "rank %d: bucket {B} is never complete here, so all go at finish (%ld, %ld)", r,
               st.buckets_in_backward, st.buckets_at_finish);
    REQUIRE(m.A->grad && m.B->grad, "A and B have gradients on every rank");
    EXPECT(!m.C->grad, "C, unused on every rank, has no gradient");
    size_t bad = 0;
    for (size_t i = 0; i < m.A->numel; i++) bad += !(fabs(m.A->grad[i] - eA[i]) <= 1e-5 * (fabs(eA[i]) + 1e-3));
    for (size_t i = 0; i < m.B->numel; i++) bad += !(fabs(m.B->grad[i] - eB[i]) <= 1e-5 * (fabs(eB[i]) + 1e-3));
    EXPECT(bad == 0, "%zu gradient values differ from the weighted sum", bad);
    FILE *f = worker_out(r);
    REQUIRE(f, "NCMI_DIST_TEST_OUT");
    fwrite(m.A->grad, sizeof(float), m.A->numel, f);
    fwrite(m.B->grad, sizeof(float), m.B->numel, f);
    fclose(f);

    /* a second step: every rank now has buffers for A and B */
    nn_params_zero_grad(&m.P);
    REQUIRE(nn_dist_reducer_begin(red, g, (double)red_count(W, r) / total) == 0, "%s", ncmi_error());
    nn_graph_reset(g);
    l = red_loss(g, &m, W, r);
    if (l) REQUIRE(nn_backward(g, l) == 0, "%s", ncmi_error());
    REQUIRE(nn_dist_reducer_finish(red) == 0, "finish 2: %s", ncmi_error());
    bad = 0;
    for (size_t i = 0; i < m.A->numel; i++) bad += !(fabs(m.A->grad[i] - eA[i]) <= 1e-5 * (fabs(eA[i]) + 1e-3));
    EXPECT(bad == 0 && !m.C->grad, "second step: %zu values differ", bad);
    nn_dist_reducer_free(red);
    nn_graph_free(g);
    nn_params_free(&m.P);
    free(eA);
    free(eB);
    nn_dist_free(d);
}

/* NCMI_DIST_TEST_MODE: init (report), die (rank 1 leaves), stall (rank 1 sleeps) */
TEST(worker_dist_fail)
{
    const char *mode = getenv("NCMI_DIST_TEST_MODE");
    double t0 = now_s();
    nn_dist *d = worker_group();
    if (!d) {
        printf("after %.2f s\n", now_s() - t0);
        return;
    }
    printf("INIT-OK\n");
    fflush(stdout);
    const int r = nn_dist_rank(d);
    if (r == 1 && mode && !strcmp(mode, "die")) _exit(0);
    if (r == 1 && mode && !strcmp(mode, "stall")) {
        usleep(2500 * 1000);
        _exit(0);
    }
    usleep(200 * 1000);
    float x[100] = {0};
    t0 = now_s();
    int rc = nn_dist_allreduce_f32(d, x, 100);
    printf("%s: %s\nafter %.2f s\n", rc ? "COLL-ERROR" : "COLL-OK", rc ? ncmi_error() : "", now_s() - t0);
    /* the group stays failed */
    if (rc) EXPECT(nn_dist_barrier(d, 0) < 0 && strstr(ncmi_error(), "dist rank"), "failed group: %s", ncmi_error());
    nn_dist_free(d);
}

/* ------------------------------------------------------------------ */
/* the tests                                                           */

static int files_equal(const char *a, const char *b, long *size)
{
    FILE *fa = fopen(a, "rb"), *fb = fopen(b, "rb");
    int same = fa && fb;
    long n = 0;
    while (same) {
        int ca = fgetc(fa), cb = fgetc(fb);
        if (ca != cb) same = 0;
        if (ca == EOF || cb == EOF) break;
        n++;
    }
    if (fa) fclose(fa);
    if (fb) fclose(fb);
    *size = n;
    return same;
}

static void report(const dist_proc *p, int W)
{
    for (int r = 0; r < W; r++)
        printf("    --- rank %d (status %d, %.2f s):\n%s\n", r, p[r].status, p[r].seconds, p[r].out);
}

static void run_workers(const char *worker, int W)
{
    const char *out = test_tmp_path("%s_%d", worker, W);
    char envout[4300];
    snprintf(envout, sizeof envout, "NCMI_DIST_TEST_OUT=%s", out);
    const char *env[] = {envout, "NCMI_DIST_TIMEOUT=20", "NCMI_DIST_BUCKET_MB=1", NULL};
    dist_proc p[3];
    dist_spawn_worker(W, dist_free_port(), worker, env, 40, p);
    int ok = 1;
    for (int r = 0; r < W; r++) ok &= p[r].status == 0;
    if (!ok) {
        test_fail_at(__FILE__, __LINE__, "%s with %d ranks failed", worker, W);
        report(p, W);
    }
    /* the same bits on every rank */
    for (int r = 1; r < W && ok; r++) {
        char a[4300], b[4300];
        snprintf(a, sizeof a, "%s.0", out);
        snprintf(b, sizeof b, "%s.%d", out, r);
        long n;
        EXPECT(files_equal(a, b, &n) && n > 0, "%s: rank %d's results differ from rank 0's (after %ld bytes)", worker,
               r, n);
    }
    dist_procs_free(p, W);
}

TEST(dist_allreduce_2_ranks) { run_workers("worker_dist_collectives", 2); }
TEST(dist_allreduce_3_ranks) { run_workers("worker_dist_collectives", 3); }
TEST(dist_reducer_2_ranks) { run_workers("worker_dist_reducer", 2); }
TEST(dist_reducer_3_ranks) { run_workers("worker_dist_reducer", 3); }

/* One failure scenario: rank 0's output must contain n0 and n0b, rank 1's
 * n1 (NULL: anything), and every rank must be done within max_s. */
static void fail_case(const char *what, const char *const *env, int port, const char *n0, const char *n0b,
                      const char *n1, double max_s)
{
    dist_proc p[2];
    dist_spawn_worker(2, port, "worker_dist_fail", env, max_s + 10, p);
    int ok = 1;
    for (int k = 0; k < 3; k++) {
        const int r = k == 2;
        const char *needle = k == 0 ? n0 : k == 1 ? n0b : n1;
        if (needle && !strstr(p[r].out, needle)) {
            test_fail_at(__FILE__, __LINE__, "%s: rank %d's message lacks '%s'", what, r, needle);
            ok = 0;
        }
    }
    for (int r = 0; r < 2; r++) {
        if (p[r].seconds > max_s || p[r].status == -2) {
            test_fail_at(__FILE__, __LINE__, "%s: rank %d took %.1f s (limit %.0f s)", what, r, p[r].seconds, max_s);
            ok = 0;
        }
    }
    if (!ok) report(p, 2);
    dist_procs_free(p, 2);
}

TEST(dist_dead_peer)
{
    const char *env[] = {"NCMI_DIST_TIMEOUT=30", "NCMI_DIST_TEST_MODE=die", NULL};
    /* no timeout needed: the closed connection is seen at once */
    fail_case("dead peer", env, dist_free_port(), "dist rank 0 of 2: rank 1 (127.0.0.1:",
              "closed the connection during all-reduce: the process died", "INIT-OK", 5);
}

TEST(dist_stalled_peer)
{
    /* rank 1 sleeps 2.5 s; rank 0 gives up after 1 s */
    const char *env[] = {"NCMI_DIST_TIMEOUT=1", "NCMI_DIST_TEST_MODE=stall", NULL};
    fail_case("stalled peer", env, dist_free_port(), "dist rank 0 of 2: rank 1 (127.0.0.1:",
              "sent nothing for 1 s during all-reduce (NCMI_DIST_TIMEOUT)", "INIT-OK", 6);
}

TEST(dist_wrong_port)
{
    int port = dist_free_port(), other = dist_free_port();
    if (other == port) other = port + 1;
    char wrong[64], n1[128], n0[128];
    snprintf(wrong, sizeof wrong, "R1:MASTER_PORT=%d", other);
    snprintf(n1, sizeof n1, "dist rank 1 of 2: cannot reach rank 0 at 127.0.0.1:%d within 1 s", other);
    snprintf(n0, sizeof n0, "dist rank 0 of 2: waited 1 s on port %d for 1 of 2 ranks (missing: 1)", port);
    const char *env[] = {"NCMI_DIST_TIMEOUT=1", wrong, NULL};
    fail_case("wrong port", env, port, n0, "were they started, with MASTER_ADDR=127.0.0.1", n1, 6);
}

TEST(dist_port_in_use)
{
    /* this process holds the port */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    REQUIRE(fd >= 0, "socket");
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_ANY);
    a.sin_port = 0;
    socklen_t len = sizeof a;
    REQUIRE(bind(fd, (struct sockaddr *)&a, sizeof a) == 0 && listen(fd, 4) == 0 &&
                getsockname(fd, (struct sockaddr *)&a, &len) == 0,
            "cannot hold a port");
    int port = ntohs(a.sin_port);
    char n0[160];
    snprintf(n0, sizeof n0, "dist rank 0 of 2: cannot listen on port %d (rendezvous port; MASTER_ADDR 127.0.0.1): "
                            "Address already in use",
             port);
    const char *env[] = {"NCMI_DIST_TIMEOUT=1", NULL};
    /* rank 1 reaches the port (held here) and waits for an answer that never comes */
    fail_case("port in use", env, port, n0, "choose a free MASTER_PORT", "did not complete the rendezvous within 1 s",
              6);
    close(fd);
}

TEST(dist_world_mismatch)
{
    const char *env[] = {"NCMI_DIST_TIMEOUT=5", "R1:WORLD_SIZE=3", NULL};
    fail_case("world sizes", env, dist_free_port(), "has world size 3, rank 0 has 2", "different WORLD_SIZE",
              "rejected the rendezvous: rank 1 (127.0.0.1", 8);
}

/* ------------------------------------------------------------------ */
/* ncmi train with several processes                                   */

#define DEMO "train --config configs/demo_mlp.yaml --set data.n_train=2000 --set data.n_val=500 --set train.threads=1"

/* `ncmi train` in one process (W == 1: no launcher variables) or W. */
static int train_run(int W, const char *out, const char *extra, dist_proc *p)
{
    char cmd[2000];
    snprintf(cmd, sizeof cmd, "%s " DEMO " --out %s %s", test_ncmi_bin(), out, extra);
    if (W == 1) {
        char *o = NULL;
        char full[2100];
        snprintf(full, sizeof full, "env -u RANK -u WORLD_SIZE -u OMPI_COMM_WORLD_RANK -u PMI_RANK -u SLURM_PROCID "
                                    "OMP_NUM_THREADS=1 %s",
                 cmd);
        int rc = test_run(full, &o);
        p[0] = (dist_proc){rc, o ? o : strdup(""), 0};
        return rc;
    }
    const char *env[] = {"NCMI_DIST_TIMEOUT=30", NULL};
    dist_spawn_sh(W, dist_free_port(), cmd, env, 60, p);
    int bad = 0;
    for (int r = 0; r < W; r++) bad |= p[r].status != 0;
    return bad;
}

/* column col (0-based) of every data row of a log.csv, as text */
static int log_column(const char *path, int col, char vals[][32], int max)
{
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    char line[1024];
    int n = 0;
    for (int ln = 0; fgets(line, sizeof line, f) && n < max; ln++) {
        if (ln == 0) continue;
        char *s = line;
        for (int c = 0; c < col && s; c++) s = strchr(s, ',') ? strchr(s, ',') + 1 : NULL;
        if (!s) break;
        snprintf(vals[n], 32, "%.*s", (int)strcspn(s, ",\n"), s);
        n++;
    }
    fclose(f);
    return n;
}

/* The W-process run equals the one-process run: weights within 1e-5
 * (relative L2 per tensor), the same val accuracy every epoch. */
static void compare_runs(const char *one, const char *many, int epochs)
{
    char a[4300], b[4300], worst[512];
    snprintf(a, sizeof a, "%s/demo_mlp/last.safetensors", many);
    snprintf(b, sizeof b, "%s/demo_mlp/last.safetensors", one);
    double d = dist_ckpt_rel_diff(a, b, 0, worst, sizeof worst);
    EXPECT(d >= 0 && d <= 1e-5, "weights and optimizer state: worst relative difference %.3g (%s)", d, worst);
    char va[16][32], vb[16][32];
    snprintf(a, sizeof a, "%s/demo_mlp/log.csv", many);
    snprintf(b, sizeof b, "%s/demo_mlp/log.csv", one);
    int na = log_column(a, 5, va, 16), nb = log_column(b, 5, vb, 16);
    EXPECT(na == epochs && nb == epochs, "log rows: %d and %d, expected %d", na, nb, epochs);
    for (int i = 0; i < na && i < nb; i++)
        EXPECT(!strcmp(va[i], vb[i]), "epoch %d: val_acc %s with several processes, %s with one", i + 1, va[i], vb[i]);
}

static void train_vs_single(int W, const char *extra, const char *tag)
{
    char one[300], many[300];
    snprintf(one, sizeof one, "%s", test_tmp_path("%s_one", tag));
    snprintf(many, sizeof many, "%s", test_tmp_path("%s_w%d", tag, W));
    dist_proc p1, p[3];
    int rc = train_run(1, one, extra, &p1);
    EXPECT(rc == 0, "one process: %s", p1.out);
    rc = train_run(W, many, extra, p);
    if (rc) {
        test_fail_at(__FILE__, __LINE__, "%d processes failed", W);
        report(p, W);
    } else {
        char hdr[64];
        snprintf(hdr, sizeof hdr, "world size %d (tcp backend", W);
        EXPECT(strstr(p[0].out, hdr) && strstr(p1.out, "world size 1"), "the header names the world size: %s",
               p[0].out);
        for (int r = 1; r < W; r++)
            EXPECT(!strstr(p[r].out, "ncmi train:") && !strstr(p[r].out, "epoch"), "rank %d is quiet: %s", r,
                   p[r].out);
        compare_runs(one, many, 3);
    }
    free(p1.out);
    dist_procs_free(p, W);
}

TEST(dist_train_2_ranks_matches_one)
{
    train_vs_single(2, "--set train.epochs=3", "mlp");
}

/* batch 60 over 3 ranks; the last batch (2000 = 33 * 60 + 20) is split 6/7/7 */
TEST(dist_train_3_ranks_uneven_last_batch)
{
    train_vs_single(3, "--set train.epochs=3 --set train.batch_size=60", "mlp3");
}

/* NCMI head: xi's gradient averaged, the centre's EMA from the global batch mean */
TEST(dist_train_ncmi_2_ranks_matches_one)
{
    train_vs_single(2, "--set train.epochs=3 --set head.kind=ncmi --set ncmi.momentum=0.9 --set lp.epochs=2",
                    "ncmi");
}

/* a constant schedule (after the warm-up), so that train.epochs may grow on resume */
#define CONST_LR "--set schedule.kind=constant "

TEST(dist_train_resume_2_ranks_with_1)
{
    char one[300], many[300];
    snprintf(one, sizeof one, "%s", test_tmp_path("resume_one"));
    snprintf(many, sizeof many, "%s", test_tmp_path("resume_w2"));
    dist_proc p1, p[2];
    REQUIRE(train_run(1, one, CONST_LR "--set train.epochs=4", &p1) == 0, "one process: %s", p1.out);
    free(p1.out);
    int rc = train_run(2, many, CONST_LR "--set train.epochs=2", p);
    if (rc) report(p, 2);
    dist_procs_free(p, 2);
    REQUIRE(rc == 0, "2 processes, 2 epochs");
    rc = train_run(1, many, CONST_LR "--set train.epochs=4 --resume", &p1);
    EXPECT(rc == 0 && strstr(p1.out, "resuming") && strstr(p1.out, "after epoch 2"), "resume with 1 process: %s",
           p1.out);
    free(p1.out);
    compare_runs(one, many, 4);
}

/* and the other way: 2 epochs in one process, resumed to 4 by 2 processes */
TEST(dist_train_resume_1_rank_with_2)
{
    char one[300], mixed[300];
    snprintf(one, sizeof one, "%s", test_tmp_path("resume12_one"));
    snprintf(mixed, sizeof mixed, "%s", test_tmp_path("resume12_mixed"));
    dist_proc p1, p[2];
    REQUIRE(train_run(1, one, CONST_LR "--set train.epochs=4", &p1) == 0, "one process: %s", p1.out);
    free(p1.out);
    REQUIRE(train_run(1, mixed, CONST_LR "--set train.epochs=2", &p1) == 0, "one process, 2 epochs: %s", p1.out);
    free(p1.out);
    int rc = train_run(2, mixed, CONST_LR "--set train.epochs=4 --resume", p);
    if (rc) report(p, 2);
    EXPECT(rc == 0 && strstr(p[0].out, "resuming") && strstr(p[0].out, "world size 2"), "resume with 2 processes");
    dist_procs_free(p, 2);
    compare_runs(one, mixed, 4);
}

TEST(dist_train_batch_not_divisible)
{
    dist_proc p[2];
    train_run(2, test_tmp_path("odd"), "--set train.epochs=3 --set train.batch_size=63", p);
    for (int r = 0; r < 2; r++)
        EXPECT(p[r].status == 2 && strstr(p[r].out, "train.batch_size 63 is not divisible by the world size 2"),
               "rank %d: status %d: %s", r, p[r].status, p[r].out);
    dist_procs_free(p, 2);
}

/* rank 0 cannot create the run folder and exits: rank 1 must stop at once
 * with a message naming rank 0, not wait for it */
TEST(dist_train_rank0_fails)
{
    const char *file = test_tmp_path("not_a_folder");
    FILE *f = fopen(file, "w");
    REQUIRE(f, "cannot write %s", file);
    fclose(f);
    dist_proc p[2];
    train_run(2, file, "--set train.epochs=3", p);
    EXPECT(p[0].status == 2, "rank 0: status %d: %s", p[0].status, p[0].out);
    EXPECT(p[1].status != 0 && strstr(p[1].out, "dist rank 1 of 2: rank 0 (127.0.0.1:") &&
               strstr(p[1].out, "closed the connection"),
           "rank 1: status %d: %s", p[1].status, p[1].out);
    for (int r = 0; r < 2; r++) EXPECT(p[r].seconds < 10, "rank %d took %.1f s", r, p[r].seconds);
    dist_procs_free(p, 2);
}

/* MIL bags (one forward per bag, read ahead on a thread): ABMIL, 4 bags per
 * global batch = 2 per rank, against one process. The weights only, and
 * SGD: the bias of ABMIL's last attention layer has a gradient that is 0 in
 * exact arithmetic (softmax ignores a shift), so its optimizer state is
 * float noise, and AdamW would turn that noise into steps of size lr. */
TEST(dist_train_mil_bags_2_ranks_matches_one)
{
    if (!features_h5_available()) SKIP("built without libhdf5");
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", test_tmp_path("dist_mil"));
    mil_synth syn = {3, 24, 24, 64, 40, 12, 0, 6.f, 21};
    REQUIRE(mil_synth_write(dir, &syn) == 0, "cannot write the cohort");
    char cfg[4300];
    snprintf(cfg, sizeof cfg, "%s/abmil.yaml", dir);
    FILE *f = fopen(cfg, "w");
    REQUIRE(f, "cannot write %s", cfg);
    fprintf(f,
            "name: abmil\nseed: 1\n"
            "data:\n  kind: bags\n  features: %s/features\n  manifest: %s/manifest.csv\n"
            "  classes: [negative, micro, macro]\n  cache_mb: 16\n"
            "model:\n  kind: abmil\nmil:\n  d_inner: 32\n  attn_hidden: 16\n  dropout: 0.0\n"
            "optim:\n  name: sgd\n  lr: 0.01\n  momentum: 0.9\n  weight_decay: 1.0e-5\n"
            "schedule:\n  kind: cosine\n"
            "train:\n  epochs: 3\n  batch_size: 4\n  threads: 1\n",
            dir, dir);
    fclose(f);
    char one[4300], two[4300], cmd[9000], *o = NULL;
    snprintf(one, sizeof one, "%s/one", dir);
    snprintf(two, sizeof two, "%s/two", dir);
    snprintf(cmd, sizeof cmd, "env -u RANK -u WORLD_SIZE OMP_NUM_THREADS=1 %s train --config %s --out %s",
             test_ncmi_bin(), cfg, one);
    int rc = test_run(cmd, &o);
    EXPECT(rc == 0, "one process: %s", o ? o : "");
    free(o);
    snprintf(cmd, sizeof cmd, "%s train --config %s --out %s", test_ncmi_bin(), cfg, two);
    const char *env[] = {"NCMI_DIST_TIMEOUT=30", NULL};
    dist_proc p[2];
    dist_spawn_sh(2, dist_free_port(), cmd, env, 60, p);
    if (p[0].status || p[1].status) {
        test_fail_at(__FILE__, __LINE__, "2 processes failed");
        report(p, 2);
    } else {
        char a[4400], b[4400], worst[512];
        snprintf(a, sizeof a, "%s/abmil/last.safetensors", two);
        snprintf(b, sizeof b, "%s/abmil/last.safetensors", one);
        double d = dist_ckpt_rel_diff(a, b, 1, worst, sizeof worst);
        EXPECT(d >= 0 && d <= 1e-5, "weights: worst relative difference %.3g (%s)", d, worst);
    }
    dist_procs_free(p, 2);
}
