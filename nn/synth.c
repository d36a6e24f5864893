#include "synth.h"

#include <math.h>
#include <stdlib.h>

#include "error.h"

void nn_synth_blobs(nn_rng *rng, int n, int dim, int n_classes, float sep, float *X, int *y)
{
    NCMI_CHECK(n > 0 && dim > 0 && n_classes > 0, "synth_blobs: bad sizes");
    float *means = malloc((size_t)n_classes * (size_t)dim * sizeof(float));
    int *perm = malloc((size_t)n * sizeof(int));
    NCMI_CHECK(means && perm, "out of memory");
    for (int k = 0; k < n_classes; k++) {
        float *m = means + (size_t)k * dim;
        double nrm = 0;
        for (int d = 0; d < dim; d++) {
            m[d] = (float)nn_rng_normal(rng);
            nrm += (double)m[d] * m[d];
        }
        float s = (float)(sep / (sqrt(nrm) + 1e-12));
        for (int d = 0; d < dim; d++) m[d] *= s;
    }
    nn_rng_permutation(rng, perm, n);
    for (int i = 0; i < n; i++) {
        int k = perm[i] % n_classes;
        y[i] = k;
        for (int d = 0; d < dim; d++)
            X[(size_t)i * dim + d] = means[(size_t)k * dim + d] + (float)nn_rng_normal(rng);
    }
    free(means);
    free(perm);
}
