/* The bodies of the libFuzzer harnesses (tests/fuzz/fuzz_<name>.c), shared
 * with the regression test (tests/test_fuzz_regress.c) that replays
 * tests/fuzz/corpus/<name>/ and tests/fuzz/regress/<name>/ in the default
 * suite. Each target feeds the bytes to one of ncmi's readers of outside
 * input and returns its result: 0 (read) or -1 (rejected). A rejection must
 * leave a message in ncmi_error(); fuzz_check() aborts otherwise, so a
 * silent failure is a finding like a crash. */
#ifndef NCMI_FUZZ_TARGETS_H
#define NCMI_FUZZ_TARGETS_H

#include <stddef.h>
#include <stdint.h>

typedef int (*fuzz_target_fn)(const uint8_t *data, size_t size);

typedef struct fuzz_target {
    const char *name; /* harness name: tests/fuzz/fuzz_<name>.c, corpus/<name>/ */
    fuzz_target_fn fn;
} fuzz_target;

int fuzz_manifest(const uint8_t *data, size_t size);     /* manifest + predictions CSV */
int fuzz_config(const uint8_t *data, size_t size);       /* YAML training and dataset configs */
int fuzz_set(const uint8_t *data, size_t size);          /* --set key=value lines */
int fuzz_safetensors(const uint8_t *data, size_t size);  /* safetensors header + data */
int fuzz_h5(const uint8_t *data, size_t size);           /* structure-aware features / coords HDF5 */
int fuzz_natural(const uint8_t *data, size_t size);      /* CIFAR binary, MNIST IDX */
int fuzz_json(const uint8_t *data, size_t size);         /* data_params.json, tiling JSON */

extern const fuzz_target fuzz_targets[];
extern const int fuzz_n_targets;

/* A per-process scratch folder (created once, removed at exit). */
const char *fuzz_tmpdir(void);
/* Remove it now (the next fuzz_tmpdir() makes a new one). */
void fuzz_tmp_cleanup(void);
/* rc of a target: aborts when rc is -1 without a message or not 0/-1. */
void fuzz_check(const char *target, int rc);

#endif
