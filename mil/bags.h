/* Bag datasets for the MIL heads: one bag (slide) per sample, read lazily
 * from a features folder.
 *
 *   features folder   <dir>/<slide_id>.h5, `features` [N, D] (+ `coords`):
 *                     ncmi features' files, CLAM `h5_files`, TRIDENT feature
 *                     files (features/features_h5.h reads all three)
 *   manifest CSV      slide_id, label and a split column (train | val | test;
 *                     rows with an empty split are left out) - eval/manifest.h
 *
 * mil_bags_open builds the three splits as tr_datasets with bags = 1: the
 * input tensor of sample i is its bag [N_i, D]. All three share one store:
 *
 *   - LRU cache bounded in bytes (cache_mb): the bytes of the cached bags
 *     plus those being read never exceed the bound; a bag larger than the
 *     bound is read for each use and not kept.
 *   - read-ahead on one thread: when the trainer asks for a bag, the next
 *     `prefetch` bags of the order it announced (tr_dataset.order: the
 *     epoch's permutation; natural order otherwise) are read in the
 *     background. The data are the same either way, so results do not
 *     depend on prefetch or the cache size (tests compare them bit for bit).
 *
 * Checks when opening (errors name the manifest row and the slide):
 * a label outside the class list, a split value other than train/val/test,
 * missing or unreadable feature files (one error listing all of them, or
 * with skip_missing a warning and the rows left out), a bag with N = 0, a
 * feature dimension different from the first bag's. Reading a bag checks
 * again and rejects NaN/Inf ("slide <id>: <file>: row R column C is nan").
 *
 * standardize: features are z-scored with the training set's per-feature
 * mean and std (small raw benchmarks such as Musk; slide features from a
 * pretrained encoder are used as they are). */
#ifndef NCMI_MIL_BAGS_H
#define NCMI_MIL_BAGS_H

#include <stdint.h>
#include <stdio.h>

#include "../train/trainer.h"

typedef struct mil_bags_opts {
    const char *features_dir;    /* folder of <slide_id>.h5 */
    const char *manifest;        /* CSV: slide_id, label, split column */
    const char *split_column;    /* NULL or "": "split" */
    char *const *classes;        /* class names in order; NULL / 0: sorted distinct labels */
    int n_classes;
    double cache_mb;             /* cache bound in MiB (0: no cache, every use reads) */
    int prefetch;                /* bags read ahead on a thread (0: no thread) */
    int skip_missing;            /* leave out rows whose file is missing/unreadable (warning) */
    int standardize;             /* z-score each feature with the mean / std of every instance of
                                    the training bags (read once when opening; std < 1e-6: 1) */
    FILE *warn;                  /* warnings (NULL: stderr) */
} mil_bags_opts;

void mil_bags_opts_default(mil_bags_opts *o); /* cache 2048 MiB, prefetch 2, split column "split" */

typedef struct mil_bags_info {
    int d_feat;           /* feature dimension of the bags */
    int C;
    char **classes;       /* [C] malloc'd: mil_bags_info_free */
    int n_skipped;        /* rows left out by skip_missing */
    int n_unsplit;        /* rows with an empty split (left out) */
    int64_t max_rows;     /* largest bag */
} mil_bags_info;
void mil_bags_info_free(mil_bags_info *info);

/* Opens the manifest and checks every file's shape (no features read).
 * train/val/test are set up (n may be 0 for val and test; train must have
 * rows); their free releases the shared store (the last one frees it).
 * 0, or -1 with ncmi_error(). */
int mil_bags_open(const mil_bags_opts *o, tr_dataset *train, tr_dataset *val, tr_dataset *test,
                  mil_bags_info *info);

/* Counters of the store shared by a dataset opened by mil_bags_open. */
typedef struct mil_bags_stats {
    long loads;           /* file reads (main thread + read-ahead) */
    long prefetched;      /* of which by the read-ahead thread */
    long hits;            /* bags served from the cache */
    long waits;           /* bags the trainer waited for while the thread read them */
    size_t bytes;         /* cached now (including bags being read) */
    size_t peak_bytes;    /* highest value of bytes */
    size_t cap_bytes;     /* the bound */
} mil_bags_stats;
int mil_bags_get_stats(const tr_dataset *d, mil_bags_stats *s); /* -1 when d is not a bag set */
/* data.standardize: the training mean and 1/std of each feature ([*dim]
 * floats each, owned by the set) that every bag of d is z-scored with:
 * x' = (x - mean) * inv_sd. 1 when on, 0 when off, -1 when d is not a bag set. */
int mil_bags_standardization(const tr_dataset *d, const float **mean, const float **inv_sd, int *dim);

#endif
