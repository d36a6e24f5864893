/* Natural-image datasets for the trainer (train/trainer.h tr_dataset) over
 * in-memory uint8 sets (CIFAR, MNIST: imgdata.h) or ImageNet-style folders
 * decoded on demand (imagefolder.h), with the transforms of augment.h.
 * docs/natural.md describes the pipeline; in short:
 *
 *   - inputs() returns one float tensor [n, c, H, W] (ToTensor + Normalize),
 *     augmented when training (the training and eval shapes may differ:
 *     224 / 280 for ImageNet).
 *   - W worker threads decode, augment and normalise samples ahead of the
 *     trainer, in the order it announced with order() (the epoch's
 *     permutation; natural order for evaluation), into a ring of `prefetch`
 *     sample buffers (the memory bound). The calling thread takes finished
 *     samples, or makes the next one itself when the workers are behind.
 *   - Determinism: the first inputs() call after order() draws one u64 from
 *     the trainer's rng: the pass seed S (every training call draws exactly
 *     one u64, so the rng advances the same way whatever happens). The
 *     training sample at position p of the announced order is augmented
 *     from nn_rng seeded with mix(S, p); a training sample outside the
 *     order uses mix(call seed, its index in the call). Evaluation is
 *     deterministic. So the tensors are the same for any number of workers,
 *     any prefetch depth and any timing (tests check 1 vs 3 workers).
 *   - Folders: a file that cannot be decoded is reported (a warning per
 *     file, counted in the stats) and replaced by the next readable image of
 *     the same class, in folder order (deterministic); strict makes it an
 *     error that inputs() returns ("<path>: cannot decode: ...").
 *
 * order() and inputs() are called from one thread at a time (the trainer's). */
#ifndef NCMI_NATURAL_LOADER_H
#define NCMI_NATURAL_LOADER_H

#include <stddef.h>
#include <stdio.h>

#include "../train/trainer.h"
#include "augment.h"
#include "imagefolder.h"
#include "imgdata.h"

typedef struct nat_loader_opts {
    int workers;   /* threads that decode / augment (0: everything on the calling thread) */
    int prefetch;  /* samples prepared ahead (0: 256; the buffers are also kept under 512 MiB) */
    int strict;    /* folders: an undecodable image fails inputs() instead of being replaced */
    FILE *warn;    /* warnings (NULL: stderr) */
} nat_loader_opts;

/* workers 4, prefetch 0 (default depth), not strict, warnings on stderr */
void nat_loader_opts_default(nat_loader_opts *o);

/* A dataset over the images idx[0..n) of im (idx NULL: all of im, n
 * ignored). The dataset keeps a reference to im's arrays (no copy): the
 * caller frees its own im whenever it likes. Labels are im's; sample ids
 * "<im->tag>/<index in im>". aug: the recipe (copied); o: NULL for the
 * defaults. Checks that the recipe applies to im's images (sizes, channels).
 * 0, or -1 with ncmi_error(). */
int nat_image_dataset_init(tr_dataset *d, const char *name, const char *source,
                           const nat_images *im, const int *idx, int n, const nat_aug *aug,
                           const nat_loader_opts *o);

/* The same over the images idx[0..n) of a scanned folder (idx NULL: all).
 * Keeps a reference to f's arrays; sample ids are the paths relative to the
 * folder ("n01440764/n01440764_10026.JPEG"). The recipe must give one size
 * for every image: training needs rrc_size or crop_size, evaluation
 * eval_crop. */
int nat_folder_dataset_init(tr_dataset *d, const char *name, const char *source,
                            const nat_folder *f, const int *idx, int n, const nat_aug *aug,
                            const nat_loader_opts *o);

typedef struct nat_loader_stats {
    long computed;     /* samples decoded / augmented / normalised (by any thread) */
    long by_workers;   /* of which by the worker threads */
    long ready;        /* samples inputs() found already prepared (read-ahead hits) */
    long waited;       /* read-ahead samples inputs() waited for or made itself */
    long direct;       /* samples outside the announced order (made on demand) */
    long unreadable;   /* image files that failed to decode (each counted once) */
    long substituted;  /* samples served with another image of their class */
    int workers;       /* threads */
    int slots;         /* read-ahead depth in samples */
    size_t slot_bytes; /* read-ahead buffer memory */
    int train_shape[3], eval_shape[3]; /* [c, H, W] of a sample */
} nat_loader_stats;

/* Counters of a dataset made here: 0, or -1 when d is not one. */
int nat_dataset_stats(const tr_dataset *d, nat_loader_stats *s);

#endif
