/* GPU test helpers (make test-gpu). Every test here first calls GPU_REQUIRE():
 * without a usable GPU it skips with the reason.
 *
 * gpu_check_case runs a gradcheck case (tests/gradcheck.h) on the CPU and on
 * the GPU from the same seeded inputs and upstream gradient and compares the
 * output and every input gradient. The error of one element is
 *     |gpu - cpu| / max(|cpu|, floor),  floor = 1e-3 * max_j |cpu_j|
 * (max over the tensor compared; the floor is for elements that are small
 * only by cancellation) and the worst element must be <= the case's
 * tolerance: gpu_tolerance(name) (tests/gpu/test_gpu_ops.c documents the
 * table; 1e-5 for fp32 kernels by default). */
#ifndef NCMI_GPU_CHECK_H
#define NCMI_GPU_CHECK_H

#include "../../nn/cuda.h"
#include "../../nn/ops.h"
#include "../gradcheck.h"
#include "../test.h"

/* 1 when a GPU is usable (device 0 initialised once); else 0 and
 * gpu_why() says why. */
int gpu_ready(void);
const char *gpu_why(void);
#define GPU_REQUIRE()                                                           \
    do {                                                                        \
        if (!gpu_ready()) SKIP("no CUDA GPU: %s", gpu_why());                   \
    } while (0)

/* Worst scaled error (formula above) of got against ref, n floats. */
double gpu_rel_err(const float *got, const float *ref, size_t n);
/* Same, for a tensor on any device against a host reference tensor. */
double gpu_tensor_err(const nn_tensor *got, const nn_tensor *ref);

/* Runs TEST(name) of this binary in a fresh process (NCMI_TEST_WORKER=name)
 * and fails when it does not exit 0: a crash or an abort inside a GPU
 * library is reported by name and the other tests go on. */
void gpu_run_worker(const char *name);
/* TEST(name) runs TEST(worker_name), whose body follows, in a fresh process */
#define GPU_WORKER_TEST(name)                                                   \
    static void worker_body_##name(void);                                       \
    TEST(name)                                                                  \
    {                                                                           \
        GPU_REQUIRE();                                                          \
        gpu_run_worker("worker_" #name);                                        \
    }                                                                           \
    TEST(worker_##name)                                                         \
    {                                                                           \
        GPU_REQUIRE(); /* the worker is a new process: initialise CUDA there */ \
        worker_body_##name();                                                   \
    }                                                                           \
    static void worker_body_##name(void)

/* ||a - b|| / ||b|| of two host arrays (double sums). */
double gpu_rel_l2(const float *a, const float *b, size_t n);

/* Runs case c on both devices; returns the worst error over the output and
 * the gradients (and reports a failure above tol, naming what differed). */
double gpu_check_case(const gc_case *c, double tol);

#endif
