#include "mnist.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "../nn/error.h"

/* Whole (decompressed) file into memory; gzread reads plain files too. */
static int read_all(const char *path, uint8_t **buf, size_t *len)
{
    gzFile f = gzopen(path, "rb");
    if (!f) return ncmi_error_set("%s: cannot open: %s", path, strerror(errno ? errno : ENOENT));
    size_t cap = 1 << 20, n = 0;
    uint8_t *b = malloc(cap);
    for (;;) {
        if (!b) {
            gzclose(f);
            return ncmi_error_set("%s: out of memory", path);
        }
        if (n == cap) {
            uint8_t *nb = realloc(b, cap * 2);
            if (!nb) free(b);
            b = nb;
            cap *= 2;
            continue;
        }
        int r = gzread(f, b + n, (unsigned)(cap - n > (1u << 30) ? (1u << 30) : cap - n));
        if (r < 0) {
            int e;
            const char *msg = gzerror(f, &e);
            ncmi_error_set("%s: cannot read: %s", path, msg);
            free(b);
            gzclose(f);
            return -1;
        }
        if (r == 0) break;
        n += (size_t)r;
    }
    gzclose(f);
    *buf = b;
    *len = n;
    return 0;
}

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

int nat_mnist_load(nat_mnist *m, const char *images_path, const char *labels_path)
{
    memset(m, 0, sizeof *m);
    uint8_t *ib = NULL, *lb = NULL;
    size_t il = 0, ll = 0;
    if (read_all(images_path, &ib, &il) != 0) return -1;
    if (read_all(labels_path, &lb, &ll) != 0) {
        free(ib);
        return -1;
    }
    int rc = -1;
    if (il < 16 || be32(ib) != 0x00000803) {
        ncmi_error_set("%s: not an IDX image file (magic 0x%08x, expected 0x00000803)",
                       images_path, il >= 4 ? be32(ib) : 0);
        goto out;
    }
    if (ll < 8 || be32(lb) != 0x00000801) {
        ncmi_error_set("%s: not an IDX label file (magic 0x%08x, expected 0x00000801)",
                       labels_path, ll >= 4 ? be32(lb) : 0);
        goto out;
    }
    uint32_t n = be32(ib + 4), rows = be32(ib + 8), cols = be32(ib + 12);
    uint32_t nl = be32(lb + 4);
    if (rows == 0 || cols == 0 || rows > 4096 || cols > 4096 || n > (1u << 28)) {
        ncmi_error_set("%s: implausible header: %u images of %ux%u", images_path, n, rows, cols);
        goto out;
    }
    if ((uint64_t)il - 16 != (uint64_t)n * rows * cols) {
        ncmi_error_set("%s: header says %u images of %ux%u (%llu bytes), file holds %zu bytes of "
                       "pixels: truncated or corrupt",
                       images_path, n, rows, cols, (unsigned long long)n * rows * cols, il - 16);
        goto out;
    }
    if ((uint64_t)ll - 8 != nl) {
        ncmi_error_set("%s: header says %u labels, file holds %zu: truncated or corrupt",
                       labels_path, nl, ll - 8);
        goto out;
    }
    if (nl != n) {
        ncmi_error_set("%s: %u labels for %u images in %s", labels_path, nl, n, images_path);
        goto out;
    }
    m->pixels = malloc((size_t)il - 16 + 1);
    m->labels = malloc(((size_t)n + 1) * sizeof(int));
    if (!m->pixels || !m->labels) {
        ncmi_error_set("%s: out of memory", images_path);
        goto out;
    }
    for (uint32_t i = 0; i < n; i++) {
        if (lb[8 + i] > 9) {
            ncmi_error_set("%s: label %u of image %u is not a digit 0-9", labels_path, lb[8 + i], i);
            goto out;
        }
        m->labels[i] = lb[8 + i];
    }
    memcpy(m->pixels, ib + 16, il - 16);
    m->n = (int)n;
    m->rows = (int)rows;
    m->cols = (int)cols;
    rc = 0;
out:
    free(ib);
    free(lb);
    if (rc != 0) nat_mnist_free(m);
    return rc;
}

static int find_file(const char *dir, const char *prefix, const char *kind, char *out, size_t n)
{
    const char *suffixes[] = {".gz", ""};
    for (int i = 0; i < 2; i++) {
        snprintf(out, n, "%s/%s-%s%s", dir, prefix, kind, suffixes[i]);
        if (access(out, R_OK) == 0) return 0;
    }
    return ncmi_error_set("%s: no %s-%s[.gz] in this folder", dir, prefix, kind);
}

int nat_mnist_load_dir(nat_mnist *m, const char *dir, const char *prefix)
{
    char ip[4096], lp[4096];
    memset(m, 0, sizeof *m);
    if (find_file(dir, prefix, "images-idx3-ubyte", ip, sizeof ip) != 0) return -1;
    if (find_file(dir, prefix, "labels-idx1-ubyte", lp, sizeof lp) != 0) return -1;
    return nat_mnist_load(m, ip, lp);
}

void nat_mnist_free(nat_mnist *m)
{
    free(m->pixels);
    free(m->labels);
    memset(m, 0, sizeof *m);
}

void nat_mnist_to_float(const nat_mnist *m, const int *idx, int n, float mean, float std,
                        float *out)
{
    size_t d = (size_t)m->rows * (size_t)m->cols;
    for (int i = 0; i < n; i++) {
        const uint8_t *p = m->pixels + (size_t)idx[i] * d;
        float *o = out + (size_t)i * d;
        for (size_t j = 0; j < d; j++) o[j] = ((float)p[j] / 255.0f - mean) / std;
    }
}
