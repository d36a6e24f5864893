/* Helpers for tests that compare against golden safetensors files. */
#ifndef NCMI_TEST_GOLDEN_IO_H
#define NCMI_TEST_GOLDEN_IO_H

#include <stddef.h>

#include "../nn/safetensors.h"

/* Tensor `name` of st as a malloc'd float array (numel in *n), NULL if absent
 * or unreadable. */
float *test_st_read_all(const nn_safetensors *st, const char *name, size_t *n);
/* |a - b| <= atol + rtol |b| for every element; the first misses are
 * reported as test failures naming `what`. Returns 1 when all are close. */
int test_close_all(const float *a, const float *b, size_t n, double atol, double rtol,
                   const char *what);

#endif
