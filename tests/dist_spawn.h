/* Data-parallel test helpers: start W processes as torchrun would (RANK,
 * WORLD_SIZE, LOCAL_RANK, MASTER_ADDR=127.0.0.1, MASTER_PORT), collect each
 * one's exit status and output, kill what outlives a time limit. Used by
 * tests/test_dist.c and tests/gpu/test_gpu_dist.c. */
#ifndef NCMI_TESTS_DIST_SPAWN_H
#define NCMI_TESTS_DIST_SPAWN_H

#include <stddef.h>

typedef struct dist_proc {
    int status;     /* exit code; -1 killed by a signal; -2 killed at the time limit */
    char *out;      /* stdout + stderr (malloc'd, "" when none) */
    double seconds; /* from the start to the exit (or the kill) */
} dist_proc;

/* A TCP port that was free on 127.0.0.1 a moment ago. */
int dist_free_port(void);

/* Runs the shell command cmd as W ranks. env: NULL-terminated "KEY=VALUE"
 * entries set in every rank after the launcher variables ("R<k>:KEY=VALUE"
 * in rank k only, overriding), may be NULL. Ranks still running after
 * limit_s are killed. res[W]; free with dist_procs_free. */
void dist_spawn_sh(int W, int port, const char *cmd, const char *const *env, double limit_s, dist_proc *res);
/* The same with this test binary running TEST(worker) (NCMI_TEST_WORKER). */
void dist_spawn_worker(int W, int port, const char *worker, const char *const *env, double limit_s,
                       dist_proc *res);
void dist_procs_free(dist_proc *res, int W);

/* The largest ||a - b|| / ||b|| over the F32 tensors of two safetensors
 * files (every tensor of b must be in a with the same size); its name goes
 * to worst (n bytes). weights_only: leave out the optimizer state
 * ("optim*" tensors). -1 when a file cannot be read or the sets differ
 * (the reason in worst). */
double dist_ckpt_rel_diff(const char *path_a, const char *path_b, int weights_only, char *worst, size_t n);

#endif
