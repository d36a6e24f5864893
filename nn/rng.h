/* Seeded random numbers: xoshiro256** seeded through splitmix64. The same
 * seed gives the same stream on every machine. Ops that draw in parallel
 * take one number from the stream and derive the rest from it and the
 * element index (dropout: nn_dropout_keep in nn/cuda/k_norm.h), or derive
 * per-chunk streams with nn_rng_fork, so results do not depend on thread
 * scheduling or on the device. */
#ifndef NCMI_RNG_H
#define NCMI_RNG_H

#include <stddef.h>
#include <stdint.h>

typedef struct nn_rng {
    uint64_t s[4];
    int has_spare;   /* Box-Muller keeps its second value */
    double spare;
} nn_rng;

void nn_rng_seed(nn_rng *r, uint64_t seed);
/* A new independent stream derived from r's state and a key (r advances). */
nn_rng nn_rng_fork(nn_rng *r, uint64_t key);
uint64_t nn_rng_u64(nn_rng *r);
/* Uniform in [0,1) with 24 random bits (float) or 53 bits (double). */
float nn_rng_uniformf(nn_rng *r);
double nn_rng_uniform(nn_rng *r);
/* Uniform integer in [0, n). */
uint64_t nn_rng_below(nn_rng *r, uint64_t n);
/* Standard normal (Box-Muller, double precision). */
double nn_rng_normal(nn_rng *r);
/* Fill arrays. */
void nn_rng_fill_uniform(nn_rng *r, float *x, size_t n, float lo, float hi);
void nn_rng_fill_normal(nn_rng *r, float *x, size_t n, float mean, float std);
/* perm[i] = a uniformly random permutation of 0..n-1 (Fisher-Yates). */
void nn_rng_permutation(nn_rng *r, int *perm, int n);

#endif
