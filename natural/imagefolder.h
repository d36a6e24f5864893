/* ImageNet-style folders (torchvision's ImageFolder layout) and image
 * decoding with libvips.
 *
 *   <dir>/<class>/[sub/folders/]<name>.{jpg,jpeg,png,ppm,bmp,pgm,tif,tiff,webp} (any case)
 *
 * Classes are the sub-folders of dir, sorted by name (byte order, as Python
 * sorts them); the images of a class are found recursively (symbolic links
 * followed) in torchvision's order: folders sorted by path, then file names
 * sorted within each. So class k and image i are torchvision's
 * ImageFolder's.
 *
 * Decoding gives 3-band sRGB uint8 as PIL's Image.convert("RGB") does (the
 * conversion torchvision's default loader makes): greyscale is replicated,
 * alpha is dropped (not composited), CMYK JPEGs (Adobe, inverted or not)
 * use PIL's formula R = (255 - K) - C (255 - K) / 255 (no ICC transform),
 * 16-bit images keep their high byte. No EXIF rotation, no ICC transform
 * (PIL does neither). A truncated file is an error (as in PIL); libjpeg's
 * warnings ("corrupt JPEG data: extraneous bytes") are not. */
#ifndef NCMI_NATURAL_IMAGEFOLDER_H
#define NCMI_NATURAL_IMAGEFOLDER_H

#include <stdint.h>
#include <stdio.h>

typedef struct nat_folder_data nat_folder_data;

typedef struct nat_folder {
    char *dir;             /* the folder scanned */
    int n;                 /* images */
    int *labels;           /* [n] class indices */
    int n_classes;
    char **classes;        /* [n_classes] class (sub-folder) names */
    int *class_start;      /* [n_classes + 1]: class k's images are [class_start[k], class_start[k+1]) */
    char **rel;            /* [n] paths relative to dir: "n01440764/n01440764_10026.JPEG" */
    nat_folder_data *data_; /* private: owner of the arrays, reference counted */
} nat_folder;

/* Scan dir. classes NULL: the sub-folders of dir are the classes. Otherwise
 * (a validation folder against the training classes) the classes are
 * classes[0..n_classes) in that order, and dir must hold exactly a folder
 * for each: a missing class folder or a folder that is not a class is an
 * error naming it. A class folder without images is an error (as in
 * torchvision). 0, or -1 with ncmi_error() (f left empty). */
int nat_folder_scan(nat_folder *f, const char *dir, char *const *classes, int n_classes);
/* dst shares src's arrays; both must be freed. */
void nat_folder_ref(nat_folder *dst, const nat_folder *src);
void nat_folder_free(nat_folder *f);
/* "<dir>/<rel[i]>" into buf (truncated to n bytes); returns buf. */
char *nat_folder_path(const nat_folder *f, int i, char *buf, size_t n);

/* Open every image (header only, or decode == 1: the whole image) on
 * `workers` threads and drop those that fail from f (f must not be shared
 * yet). Each failure is a line "<path>: <reason>" on report (may be NULL);
 * *n_bad (may be NULL) counts them. A class left without images is an
 * error. 0, or -1 with ncmi_error(). */
int nat_folder_check(nat_folder *f, int decode, int workers, FILE *report, int *n_bad);

/* Decode an image file to RGB uint8 (see above): *rgb malloc'd w*h*3.
 * 0, or -1 with "<path>: cannot decode: <libvips' reason>". Thread-safe. */
int nat_image_decode(const char *path, uint8_t **rgb, int *w, int *h);
/* Width and height from the header only. */
int nat_image_size(const char *path, int *w, int *h);
/* Write uint8 pixels (c = 1 grey, 3 RGB, 4 CMYK) as a JPEG (quality q,
 * 4:2:0 chroma) or, for a path ending in .png, a PNG (tests, tools). */
int nat_image_write(const char *path, const uint8_t *px, int w, int h, int c, int q);

#endif
