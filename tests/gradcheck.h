/* The gradient harness: one function that checks any op's backward against
 * central finite differences, in the manner of ggml's test-backend-ops.
 *
 * For a case with inputs x_1..x_n (seeded random, uniform in [lo,hi] unless
 * the case's init sets them), output y = fn(x) and a fixed random upstream
 * R, the scalar L = sum(R * y) is accumulated in double. The analytic
 * gradient (one backward with upstream R) must match
 *     (L(x + eps e_j) - L(x - eps e_j)) / (2 eps)
 * for every element j of every differentiated input, within
 *     |analytic - numeric| <= atol + rtol * |numeric|.
 * Defaults: eps 1e-2, atol 1e-3, rtol 1e-2 (float32 forward; the central
 * difference's error is O(eps^2) plus float rounding ~1e-7*|L|/eps).
 * Ops with kinks (relu, clamp, max, max-pool) use an init that keeps inputs
 * at least 2*eps away from the kink or from ties, so the difference never
 * straddles one. */
#ifndef NCMI_GRADCHECK_H
#define NCMI_GRADCHECK_H

#include "../nn/ops.h"
#include "test.h"

#define GC_MAX_IN 4

typedef struct gc_case gc_case;
struct gc_case {
    const char *name;
    int nin;
    int ndim[GC_MAX_IN];
    int shape[GC_MAX_IN][NN_MAX_DIMS];
    nn_tensor *(*fn)(nn_graph *g, nn_tensor **in, const gc_case *c);
    /* optional: set input values (after the uniform fill) */
    void (*init)(nn_tensor **in, nn_rng *rng, const gc_case *c);
    float lo, hi;           /* uniform range; both 0 -> [-1, 1] */
    float eps, atol, rtol;  /* 0 -> defaults */
    unsigned no_grad_mask;  /* bit i set: input i is not differentiated */
    float gpu_tol;          /* make test-gpu: GPU vs CPU bound (0 -> 1e-5, tests/gpu/) */
    int iparam[8];
    float fparam[8];
};

/* Runs the check; failures go to the current test (test_fail_at). */
void gradcheck(const gc_case *c);

/* The case's inputs, exactly as gradcheck makes them (persistent host
 * tensors, seeded from the case name, init applied); rng is left where the
 * upstream gradient is drawn from (nR uniform floats in [-1, 1]). The GPU
 * tests (tests/gpu/) run every registered case on both devices from these. */
void gc_inputs(const gc_case *c, nn_tensor **in, nn_rng *rng);
/* Every GRAD_TEST case registers itself; gc_cases lists them. */
void gc_register(const gc_case *c);
int gc_cases(const gc_case *const **cases);

/* A case's fn runs on whatever device its inputs are on: tensors it makes
 * itself (running statistics, masks) go on in[0]->device. */
#define GRAD_TEST(tname, ...)                                                   \
    static const gc_case gc_case_##tname = {.name = #tname, __VA_ARGS__};       \
    __attribute__((constructor)) static void gc_reg_##tname(void)               \
    {                                                                           \
        gc_register(&gc_case_##tname);                                          \
    }                                                                           \
    TEST(grad_##tname) { gradcheck(&gc_case_##tname); }

#endif
