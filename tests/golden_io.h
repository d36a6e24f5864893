/* Helpers for tests that compare against golden safetensors files. */
#ifndef NCMI_TEST_GOLDEN_IO_H
#define NCMI_TEST_GOLDEN_IO_H

#include <stdint.h>
#include <stddef.h>

#include "../nn/safetensors.h"
#include "../nn/tensor.h"

/* Tensor `name` of st as a malloc'd float array (numel in *n), NULL if absent
 * or unreadable. */
float *test_st_read_all(const nn_safetensors *st, const char *name, size_t *n);
/* Tensor `name` as a new persistent nn_tensor of the file's shape (1-4
 * dims; 0-d tensors come back as [1]); NULL if absent or unreadable. */
nn_tensor *test_st_tensor(const nn_safetensors *st, const char *name);
/* Integer labels (I64/I32 tensor of exactly n elements) into y; -1 if not. */
int test_st_labels(const nn_safetensors *st, const char *name, int *y, size_t n);
/* |a - b| <= atol + rtol |b| for every element; the first misses are
 * reported as test failures naming `what`. Returns 1 when all are close. */
int test_close_all(const float *a, const float *b, size_t n, double atol, double rtol,
                   const char *what);

/* "$NCMI_GOLDEN/<name>" (default tests/golden/<name>); rotating static buffers. */
const char *test_golden_path(const char *name);
/* The generated test image of tests/reference/preprocess_reference.py
 * (test_image: 16x16 blocks cycling through uniform noise, a wrapping ramp
 * and black/white noise), w x h RGB uint8, malloc'd (NULL if out of memory). */
uint8_t *test_pattern_image(int w, int h, uint32_t seed);
/* The 32-bit integer hash both use (and the Python scripts). */
uint32_t test_mix32(uint32_t x);

#endif
