/* Synthetic slide bags for the MIL tests (tests/test_mil_data.c,
 * tests/test_mil_train.c): feature files written with features_h5_write and a
 * manifest with splits. */
#ifndef NCMI_TESTS_MIL_SYNTH_H
#define NCMI_TESTS_MIL_SYNTH_H

#include <stdint.h>

/* Bags of random sizes in [n_min, n_max], D features: background instances
 * N(0, 1); "tumour" instances add a fixed direction of norm `signal`.
 * Classes by tumour amount: 0 "negative" none, 1 "micro" 1-2 tumour
 * instances, 2 "macro" 50-70 % of the instances (C = 2 uses the first two).
 * Bag i is class i % C; splits: n_train, n_val, n_test bags in that order.
 * Files <dir>/features/<prefix><i>.h5 and the manifest <dir>/manifest.csv
 * (slide_id,label,split). 0 or -1. */
typedef struct mil_synth {
    int C, D, n_min, n_max;
    int n_train, n_val, n_test;
    float signal;
    uint64_t seed;
} mil_synth;
int mil_synth_write(const char *dir, const mil_synth *s);

/* The training config of the MIL tests for that cohort in dir (its
 * features/ and manifest.csv): head abmil | aem | transmil | asmil, a linear
 * head + CE (ncmi 0: epochs) or the NCMI head (ncmi 1: 2 * epochs); written
 * to path. 0 or -1. */
int mil_synth_config(const char *path, const char *dir, const char *head, int ncmi, int epochs);

#endif
