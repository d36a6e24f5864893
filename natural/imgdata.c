/* In-memory image sets shared by reference; see imgdata.h. */
#include "imgdata.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../nn/error.h"

struct nat_images_data {
    atomic_int refs;
    uint8_t *pixels;
    int *labels, *coarse;
    char **names;
    int n_names;
};

static void data_free(nat_images_data *d)
{
    if (!d) return;
    free(d->pixels);
    free(d->labels);
    free(d->coarse);
    if (d->names)
        for (int k = 0; k < d->n_names; k++) free(d->names[k]);
    free(d->names);
    free(d);
}

int nat_images_alloc(nat_images *im, int n, int h, int w, int c, int n_classes)
{
    memset(im, 0, sizeof *im);
    NCMI_CHECK(n >= 0 && h > 0 && w > 0 && c > 0 && n_classes > 0, "nat_images_alloc: %d x %dx%dx%d, %d classes",
               n, h, w, c, n_classes);
    nat_images_data *d = calloc(1, sizeof *d);
    if (!d) return ncmi_error_set("out of memory");
    atomic_init(&d->refs, 1);
    size_t bytes = (size_t)n * h * w * c;
    d->pixels = malloc(bytes ? bytes : 1);
    d->labels = calloc((size_t)(n ? n : 1), sizeof *d->labels);
    d->names = calloc((size_t)n_classes, sizeof *d->names);
    d->n_names = n_classes;
    int ok = d->pixels && d->labels && d->names;
    for (int k = 0; ok && k < n_classes; k++) {
        char b[16];
        snprintf(b, sizeof b, "%d", k);
        ok = (d->names[k] = strdup(b)) != NULL;
    }
    if (!ok) {
        data_free(d);
        return ncmi_error_set("out of memory for %d images of %dx%dx%d", n, h, w, c);
    }
    memset(d->pixels, 0, bytes);
    im->n = n;
    im->h = h;
    im->w = w;
    im->c = c;
    im->pixels = d->pixels;
    im->labels = d->labels;
    im->n_classes = n_classes;
    im->class_names = d->names;
    im->data_ = d;
    return 0;
}

int nat_images_alloc_coarse(nat_images *im)
{
    NCMI_CHECK(im->data_ && !im->data_->coarse, "nat_images_alloc_coarse: no set, or coarse labels already there");
    im->data_->coarse = calloc((size_t)(im->n ? im->n : 1), sizeof *im->coarse);
    if (!im->data_->coarse) return ncmi_error_set("out of memory");
    im->coarse = im->data_->coarse;
    return 0;
}

void nat_images_ref(nat_images *dst, const nat_images *src)
{
    *dst = *src;
    if (src->data_) atomic_fetch_add(&src->data_->refs, 1);
}

void nat_images_free(nat_images *im)
{
    if (!im) return;
    nat_images_data *d = im->data_;
    if (d) {
        if (atomic_fetch_sub(&d->refs, 1) == 1) data_free(d);
    }
    memset(im, 0, sizeof *im);
}

int nat_images_from_mnist(nat_images *im, const nat_mnist *m, const char *tag)
{
    if (nat_images_alloc(im, m->n, m->rows, m->cols, 1, 10)) return -1;
    memcpy(im->pixels, m->pixels, (size_t)m->n * m->rows * m->cols);
    memcpy(im->labels, m->labels, (size_t)m->n * sizeof *im->labels);
    snprintf(im->tag, sizeof im->tag, "%s", tag ? tag : "mnist");
    snprintf(im->source, sizeof im->source, "MNIST (%s)", im->tag);
    return 0;
}
