/* Seeded synthetic data for demos and tests (no files needed). */
#ifndef NCMI_SYNTH_H
#define NCMI_SYNTH_H

#include "rng.h"

/* n samples of dim features in n_classes Gaussian blobs: class k has a random
 * mean of norm `sep` and unit-variance isotropic noise; y[i] = i % n_classes
 * before a seeded shuffle. X is [n, dim] row-major. */
void nn_synth_blobs(nn_rng *rng, int n, int dim, int n_classes, float sep, float *X, int *y);

#endif
