/* Image sets held in memory as uint8 (CIFAR, MNIST): the pixels, labels and
 * class names, shared by reference between the handles that use them (a
 * train/val split makes two datasets over one set without a copy). */
#ifndef NCMI_NATURAL_IMGDATA_H
#define NCMI_NATURAL_IMGDATA_H

#include <stddef.h>
#include <stdint.h>

#include "mnist.h"

typedef struct nat_images_data nat_images_data;

typedef struct nat_images {
    int n;                /* images */
    int h, w, c;          /* each h x w x c, uint8 HWC (c = 3 RGB, 1 grey) */
    uint8_t *pixels;      /* [n][h][w][c] */
    int *labels;          /* [n] class indices in [0, n_classes) */
    int *coarse;          /* [n] CIFAR-100 superclass (coarse) labels, NULL otherwise */
    int n_classes;
    char **class_names;   /* [n_classes] */
    char tag[64];         /* sample ids are "<tag>/<i>": "cifar10-train", "mnist-t10k" */
    char source[512];     /* what was read (messages) */
    nat_images_data *data_; /* private: owner of the arrays, reference counted */
} nat_images;

/* A new set of n zeroed images with labels and n_classes class names
 * ("0", "1", ... until set; each name is malloc'd and may be replaced).
 * 0, or -1 with ncmi_error(). */
int nat_images_alloc(nat_images *im, int n, int h, int w, int c, int n_classes);
/* Adds zeroed coarse labels (owned by the set) to a set from nat_images_alloc. */
int nat_images_alloc_coarse(nat_images *im);
/* dst shares src's arrays (no copy); both must be freed. */
void nat_images_ref(nat_images *dst, const nat_images *src);
/* Release this handle (the arrays go with the last one); im is zeroed.
 * A zeroed handle is fine. */
void nat_images_free(nat_images *im);
/* Bytes of one image. */
static inline uint8_t *nat_images_at(const nat_images *im, int i)
{
    return im->pixels + (size_t)i * im->h * im->w * im->c;
}

/* MNIST (natural/mnist.h) as a grey nat_images (a copy; classes "0".."9"). */
int nat_images_from_mnist(nat_images *im, const nat_mnist *m, const char *tag);

#endif
