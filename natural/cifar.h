/* CIFAR-10 and CIFAR-100 in their binary ("for C programs") format, as
 * https://www.cs.toronto.edu/~kriz/cifar.html distributes them:
 *
 *   cifar-10-batches-bin/  data_batch_1.bin .. data_batch_5.bin, test_batch.bin:
 *                          records of 1 label byte (0..9) + 3072 pixel bytes;
 *                          batches.meta.txt: the 10 class names, one a line
 *   cifar-100-binary/      train.bin, test.bin: records of 1 coarse label byte
 *                          (0..19), 1 fine label byte (0..99) + 3072 pixel bytes;
 *                          fine_label_names.txt, coarse_label_names.txt
 *
 * Pixels: the 1024 red values of the 32x32 image row by row, then the green,
 * then the blue (CHW); they are stored here as HWC.
 *
 * Checks (errors name the file): the size is a whole number of records (a
 * truncated file names the incomplete record; a size that is a whole number
 * of the other CIFAR's records says so), every label is in range (the record
 * is named), a names file present has the right number of names. Without
 * the names file the classes get the official names, built in. */
#ifndef NCMI_NATURAL_CIFAR_H
#define NCMI_NATURAL_CIFAR_H

#include "imgdata.h"

/* root: the folder holding the .bin files, or its parent holding
 * cifar-10-batches-bin/ (cifar-100-binary/ when cifar100). train: the five
 * data batches in order (CIFAR-10) / train.bin (CIFAR-100); else the test
 * file. Labels: the fine labels for CIFAR-100 (coarse ones in im->coarse).
 * tag "cifar10-train" etc. 0, or -1 with ncmi_error() (im left empty). */
int nat_cifar_load(nat_images *im, const char *root, int cifar100, int train);

/* The folder that holds the files for root (as nat_cifar_load resolves it),
 * malloc'd; NULL with ncmi_error() when neither root nor its sub-folder has
 * them. */
char *nat_cifar_dir(const char *root, int cifar100);

#endif
