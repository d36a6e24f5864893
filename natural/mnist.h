/* MNIST in its IDX format (gzip-compressed or plain): the
 * `*-images-idx3-ubyte[.gz]` / `*-labels-idx1-ubyte[.gz]` pairs that
 * torchvision and LeCun's site distribute. */
#ifndef NCMI_MNIST_H
#define NCMI_MNIST_H

#include <stdint.h>

typedef struct nat_mnist {
    int n;          /* images */
    int rows, cols; /* 28 x 28 */
    uint8_t *pixels; /* [n, rows*cols], row-major, 0..255 */
    int *labels;     /* [n], 0..9 */
} nat_mnist;

/* Read an image file and its label file. Checks the magic numbers
 * (0x00000803, 0x00000801), the sizes in the headers against the data
 * actually present, that the two counts agree and that labels are 0..9.
 * -1 with "<path>: <problem>" on error (m left empty). */
int nat_mnist_load(nat_mnist *m, const char *images_path, const char *labels_path);
/* The pair in a folder: t10k-* or train-* with or without .gz
 * (prefix "t10k" or "train"). */
int nat_mnist_load_dir(nat_mnist *m, const char *dir, const char *prefix);
void nat_mnist_free(nat_mnist *m);
/* Pixels of images idx[0..n) as floats: (p/255 - mean)/std, [n, rows*cols]. */
void nat_mnist_to_float(const nat_mnist *m, const int *idx, int n, float mean, float std,
                        float *out);

#endif
