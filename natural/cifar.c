/* CIFAR-10 / CIFAR-100 binary readers; see cifar.h. */
#include "cifar.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../nn/error.h"

#define CIFAR_PIX 3072 /* 3 x 32 x 32 */

static const char *const CIFAR10_NAMES[10] = {"airplane", "automobile", "bird",  "cat",  "deer",
                                               "dog",      "frog",       "horse", "ship", "truck"};

static const char *const CIFAR100_NAMES[100] = {
    "apple",       "aquarium_fish", "baby",         "bear",       "beaver",       "bed",
    "bee",         "beetle",        "bicycle",      "bottle",     "bowl",         "boy",
    "bridge",      "bus",           "butterfly",    "camel",      "can",          "castle",
    "caterpillar", "cattle",        "chair",        "chimpanzee", "clock",        "cloud",
    "cockroach",   "couch",         "crab",         "crocodile",  "cup",          "dinosaur",
    "dolphin",     "elephant",      "flatfish",     "forest",     "fox",          "girl",
    "hamster",     "house",         "kangaroo",     "keyboard",   "lamp",         "lawn_mower",
    "leopard",     "lion",          "lizard",       "lobster",    "man",          "maple_tree",
    "motorcycle",  "mountain",      "mouse",        "mushroom",   "oak_tree",     "orange",
    "orchid",      "otter",         "palm_tree",    "pear",       "pickup_truck", "pine_tree",
    "plain",       "plate",         "poppy",        "porcupine",  "possum",       "rabbit",
    "raccoon",     "ray",           "road",         "rocket",     "rose",         "sea",
    "seal",        "shark",         "shrew",        "skunk",      "skyscraper",   "snail",
    "snake",       "spider",        "squirrel",     "streetcar",  "sunflower",    "sweet_pepper",
    "table",       "tank",          "telephone",    "television", "tiger",        "tractor",
    "train",       "trout",         "tulip",        "turtle",     "wardrobe",     "whale",
    "willow_tree", "wolf",          "woman",        "worm"};

static int is_file(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

char *nat_cifar_dir(const char *root, int cifar100)
{
    const char *probe = cifar100 ? "train.bin" : "data_batch_1.bin";
    const char *sub = cifar100 ? "cifar-100-binary" : "cifar-10-batches-bin";
    const char *probe2 = cifar100 ? "test.bin" : "test_batch.bin";
    size_t n = strlen(root) + strlen(sub) + 32;
    char *p = malloc(n);
    if (!p) {
        ncmi_error_set("out of memory");
        return NULL;
    }
    const char *cands[2] = {"", sub};
    for (int k = 0; k < 2; k++) {
        char f[4096];
        snprintf(p, n, "%s%s%s", root, k ? "/" : "", cands[k]);
        snprintf(f, sizeof f, "%s/%s", p, probe);
        if (is_file(f)) return p;
        snprintf(f, sizeof f, "%s/%s", p, probe2);
        if (is_file(f)) return p;
    }
    free(p);
    ncmi_error_set("%s: no CIFAR-%s binary files here (%s, %s) nor in %s/%s/", root,
                   cifar100 ? "100" : "10", probe, probe2, root, sub);
    return NULL;
}

/* Whole file into memory (rec: record size for the messages). */
static int read_file(const char *path, uint8_t **buf, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return ncmi_error_set("%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(f);
        return ncmi_error_set("%s: not a regular file", path);
    }
    size_t n = (size_t)st.st_size;
    uint8_t *b = malloc(n ? n : 1);
    if (!b) {
        fclose(f);
        return ncmi_error_set("%s: out of memory for %zu bytes", path, n);
    }
    size_t got = fread(b, 1, n, f);
    int err = ferror(f);
    fclose(f);
    if (err || got != n) {
        free(b);
        return ncmi_error_set("%s: read error (%zu of %zu bytes)", path, got, n);
    }
    *buf = b;
    *len = n;
    return 0;
}

/* Record count of a file of len bytes, checked: -1 with the message. */
static long check_records(const char *path, size_t len, int cifar100)
{
    const size_t rec = cifar100 ? CIFAR_PIX + 2 : CIFAR_PIX + 1;
    const size_t other = cifar100 ? CIFAR_PIX + 1 : CIFAR_PIX + 2;
    if (len == 0) return ncmi_error_set("%s: empty file", path);
    if (len % rec == 0) return (long)(len / rec);
    if (len % other == 0 && len / other >= 1)
        return ncmi_error_set("%s: %zu bytes is not a whole number of %zu-byte CIFAR-%s records "
                              "but %zu records of %zu bytes: a CIFAR-%s file?",
                              path, len, rec, cifar100 ? "100" : "10", len / other, other,
                              cifar100 ? "10" : "100");
    if (len < rec)
        return ncmi_error_set("%s: truncated: %zu bytes, shorter than one %zu-byte record (record 1 is "
                              "incomplete)", path, len, rec);
    return ncmi_error_set("%s: truncated: %zu bytes = %zu whole %zu-byte records + %zu bytes "
                          "(record %zu is incomplete: %zu of %zu bytes)",
                          path, len, len / rec, rec, len % rec, len / rec + 1, len % rec, rec);
}

/* Class names from a names file (one a line, blank lines ignored): NULL
 * names means the file is absent. */
static int read_names(const char *path, int n, char **names, int *found)
{
    *found = 0;
    FILE *f = fopen(path, "r");
    if (!f) {
        if (errno == ENOENT) return 0;
        return ncmi_error_set("%s: cannot open: %s", path, strerror(errno));
    }
    char line[1024];
    int k = 0, lineno = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        size_t l = strlen(line);
        while (l > 0 && (line[l - 1] == '\n' || line[l - 1] == '\r' || line[l - 1] == ' ' ||
                         line[l - 1] == '\t'))
            line[--l] = 0;
        if (l == 0) continue;
        if (k >= n) {
            fclose(f);
            return ncmi_error_set("%s: line %d: more than %d class names", path, lineno, n);
        }
        char *s = strdup(line);
        if (!s) {
            fclose(f);
            return ncmi_error_set("out of memory");
        }
        free(names[k]);
        names[k++] = s;
    }
    fclose(f);
    if (k != n) return ncmi_error_set("%s: %d class names, %d expected", path, k, n);
    *found = 1;
    return 0;
}

int nat_cifar_load(nat_images *im, const char *root, int cifar100, int train)
{
    memset(im, 0, sizeof *im);
    char *dir = nat_cifar_dir(root, cifar100);
    if (!dir) return -1;
    const char *files10[5] = {"data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin",
                              "data_batch_4.bin", "data_batch_5.bin"};
    const char *test10 = "test_batch.bin";
    const char *list[5];
    int nf = 0;
    if (cifar100) list[nf++] = train ? "train.bin" : "test.bin";
    else if (train)
        for (int k = 0; k < 5; k++) list[nf++] = files10[k];
    else
        list[nf++] = test10;

    const int C = cifar100 ? 100 : 10;
    const size_t rec = cifar100 ? CIFAR_PIX + 2 : CIFAR_PIX + 1;
    uint8_t *bufs[5] = {0};
    size_t lens[5] = {0};
    long counts[5] = {0}, total = 0;
    char path[4096];
    int rc = -1;
    for (int k = 0; k < nf; k++) {
        snprintf(path, sizeof path, "%s/%s", dir, list[k]);
        if (read_file(path, &bufs[k], &lens[k])) goto out;
        counts[k] = check_records(path, lens[k], cifar100);
        if (counts[k] < 0) goto out;
        /* labels */
        for (long r = 0; r < counts[k]; r++) {
            const uint8_t *p = bufs[k] + (size_t)r * rec;
            if (cifar100 && p[0] >= 20) {
                ncmi_error_set("%s: record %ld: coarse label %d is not in 0..19", path, r + 1, p[0]);
                goto out;
            }
            int lab = cifar100 ? p[1] : p[0];
            if (lab >= C) {
                ncmi_error_set("%s: record %ld: %slabel %d is not in 0..%d", path, r + 1,
                               cifar100 ? "fine " : "", lab, C - 1);
                goto out;
            }
        }
        total += counts[k];
    }
    if (total > (1L << 30)) {
        ncmi_error_set("%s: %ld images: too many", dir, total);
        goto out;
    }
    if (nat_images_alloc(im, (int)total, 32, 32, 3, C)) goto out;
    if (cifar100) {
        if (nat_images_alloc_coarse(im)) goto out;
    }
    long i = 0;
    for (int k = 0; k < nf; k++)
        for (long r = 0; r < counts[k]; r++, i++) {
            const uint8_t *p = bufs[k] + (size_t)r * rec;
            if (cifar100) im->coarse[i] = p[0];
            im->labels[i] = cifar100 ? p[1] : p[0];
            const uint8_t *px = p + (cifar100 ? 2 : 1);
            uint8_t *o = nat_images_at(im, (int)i);
            for (int j = 0; j < 1024; j++) { /* planes -> interleaved */
                o[3 * j] = px[j];
                o[3 * j + 1] = px[1024 + j];
                o[3 * j + 2] = px[2048 + j];
            }
        }
    /* class names */
    int found = 0;
    snprintf(path, sizeof path, "%s/%s", dir, cifar100 ? "fine_label_names.txt" : "batches.meta.txt");
    if (read_names(path, C, im->class_names, &found)) goto out;
    if (!found)
        for (int k = 0; k < C; k++) {
            char *s = strdup(cifar100 ? CIFAR100_NAMES[k] : CIFAR10_NAMES[k]);
            if (!s) {
                ncmi_error_set("out of memory");
                goto out;
            }
            free(im->class_names[k]);
            im->class_names[k] = s;
        }
    snprintf(im->tag, sizeof im->tag, "cifar%s-%s", cifar100 ? "100" : "10", train ? "train" : "test");
    if (nf == 1) snprintf(im->source, sizeof im->source, "%s/%s", dir, list[0]);
    else snprintf(im->source, sizeof im->source, "%s/data_batch_{1..5}.bin", dir);
    rc = 0;
out:
    for (int k = 0; k < nf; k++) free(bufs[k]);
    free(dir);
    if (rc) nat_images_free(im);
    return rc;
}
