#include "golden_io.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "test.h"

float *test_st_read_all(const nn_safetensors *st, const char *name, size_t *n)
{
    const nn_st_entry *e = nn_st_find(st, name);
    if (!e) return NULL;
    float *x = malloc((e->numel ? e->numel : 1) * sizeof *x);
    if (!x) return NULL;
    if (nn_st_read_f32(st, name, x, e->numel, -1, NULL) != 0) {
        free(x);
        return NULL;
    }
    if (n) *n = e->numel;
    return x;
}

int test_close_all(const float *a, const float *b, size_t n, double atol, double rtol,
                   const char *what)
{
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (!(d <= atol + rtol * fabs((double)b[i]))) {
            if (bad < 3)
                test_fail_at(__FILE__, __LINE__, "%s[%zu]: ours %.9g, reference %.9g", what, i,
                             a[i], b[i]);
            bad++;
        }
    }
    return bad == 0;
}

nn_tensor *test_st_tensor(const nn_safetensors *st, const char *name)
{
    const nn_st_entry *e = nn_st_find(st, name);
    if (!e || e->ndim > NN_MAX_DIMS) return NULL;
    int shape[NN_MAX_DIMS] = {1}, nd = e->ndim ? e->ndim : 1;
    for (int d = 0; d < e->ndim; d++) shape[d] = (int)e->shape[d];
    nn_tensor *t = nn_tensor_new(NULL, nd, shape);
    if (nn_st_read_f32(st, name, t->data, t->numel, -1, NULL) != 0) {
        nn_tensor_free(t);
        return NULL;
    }
    return t;
}

int test_st_labels(const nn_safetensors *st, const char *name, int *y, size_t n)
{
    const nn_st_entry *e = nn_st_find(st, name);
    if (!e || e->numel != n) return -1;
    int64_t *buf = malloc((n ? n : 1) * sizeof *buf);
    if (!buf) return -1;
    int rc = nn_st_read_i64(st, name, buf, n);
    for (size_t i = 0; rc == 0 && i < n; i++) y[i] = (int)buf[i];
    free(buf);
    return rc;
}

const char *test_golden_path(const char *name)
{
    static char path[4][1024];
    static int k;
    char *b = path[k++ & 3];
    const char *d = getenv("NCMI_GOLDEN");
    snprintf(b, sizeof path[0], "%s/%s", d && *d ? d : "tests/golden", name);
    return b;
}

uint32_t test_mix32(uint32_t x)
{
    x ^= x >> 16;
    x *= 0x7FEB352Du;
    x ^= x >> 15;
    x *= 0x846CA68Bu;
    x ^= x >> 16;
    return x;
}

uint8_t *test_pattern_image(int w, int h, uint32_t seed)
{
    uint8_t *img = malloc((size_t)w * h * 3);
    if (!img) return NULL;
    for (uint32_t y = 0; y < (uint32_t)h; y++)
        for (uint32_t x = 0; x < (uint32_t)w; x++)
            for (uint32_t c = 0; c < 3; c++) {
                uint32_t n = test_mix32(seed * 0x9E3779B9u + (y * (uint32_t)w + x) * 3u + c);
                uint32_t block = (x / 16 + y / 16 + seed) % 3, v;
                if (block == 0) v = n & 255;
                else if (block == 1) v = (x * 3 + y * 5 + c * 40 + seed) & 255;
                else v = ((n >> 8) & 1) * 255;
                img[((size_t)y * w + x) * 3 + c] = (uint8_t)v;
            }
    return img;
}
