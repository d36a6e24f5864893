/* natural/: CIFAR readers (files written here in the real binary layout),
 * ImageNet-style folders (JPEGs / PNGs written here with libvips), the
 * transforms against torchvision / PIL (tests/golden/natdata.safetensors,
 * written by tests/reference/natdata_reference.py), properties of the random
 * transforms, and the tr_dataset: the same tensors for any number of workers,
 * read-ahead in use, bad files reported; speed of the two pipelines. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../natural/augment.h"
#include "../natural/cifar.h"
#include "../natural/imagefolder.h"
#include "../natural/imgdata.h"
#include "../natural/loader.h"
#include "../nn/error.h"
#include "../nn/safetensors.h"
#include "../nn/tensor.h"
#include "golden_io.h"
#include "test.h"

/* ------------------------------------------------------------------ */
/* helpers                                                             */

static const char *golden_file(void) { return test_golden_path("natdata.safetensors"); }
#define test_image test_pattern_image
#define mix32 test_mix32

/* uint8 bytes stored in an I32 tensor (+ "<name>.len" when not a multiple
 * of 4): malloc'd, length in *n; NULL if absent */
static uint8_t *golden_u8(const nn_safetensors *st, const char *name, size_t *n)
{
    const nn_st_entry *e = nn_st_find(st, name);
    if (!e || e->dtype != NN_ST_I32) return NULL;
    size_t len = e->nbytes;
    char ln[256];
    snprintf(ln, sizeof ln, "%s.len", name);
    if (nn_st_find(st, ln)) {
        int64_t v;
        if (nn_st_read_i64(st, ln, &v, 1) != 0) return NULL;
        len = (size_t)v;
    }
    uint8_t *b = malloc(e->nbytes + 1);
    if (!b) return NULL;
    memcpy(b, st->data + e->offset, e->nbytes);
    *n = len;
    return b;
}

static int golden_ints(const nn_safetensors *st, const char *name, int *out, int cap)
{
    const nn_st_entry *e = nn_st_find(st, name);
    if (!e || (int)e->numel > cap) return -1;
    int64_t buf[64];
    if (nn_st_read_i64(st, name, buf, e->numel) != 0) return -1;
    for (size_t i = 0; i < e->numel; i++) out[i] = (int)buf[i];
    return (int)e->numel;
}

/* max |a - b| over n bytes */
static int max_diff_u8(const uint8_t *a, const uint8_t *b, size_t n, size_t *where)
{
    int m = 0;
    for (size_t i = 0; i < n; i++) {
        int d = abs((int)a[i] - (int)b[i]);
        if (d > m) {
            m = d;
            if (where) *where = i;
        }
    }
    return m;
}

static void write_bytes(const char *path, const void *b, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f) return;
    fwrite(b, 1, n, f);
    fclose(f);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ------------------------------------------------------------------ */
/* CIFAR                                                               */

/* the pixel value of image i, channel c, pixel j of a generated file */
static uint8_t cifar_px(int file, int i, int c, int j) { return (uint8_t)(mix32((uint32_t)(file * 100003 + i * 3072 + c * 1024 + j)) >> 7); }

/* n records of a CIFAR-10 (rec 3073) or CIFAR-100 (rec 3074) file */
static void write_cifar(const char *path, int file, int n, int cifar100, int label0)
{
    size_t rec = cifar100 ? 3074 : 3073;
    uint8_t *b = malloc(rec * n);
    for (int i = 0; i < n; i++) {
        uint8_t *p = b + rec * i;
        if (cifar100) {
            p[0] = (uint8_t)((label0 + i) % 20);
            p[1] = (uint8_t)((label0 + 7 * i) % 100);
        } else {
            p[0] = (uint8_t)((label0 + i) % 10);
        }
        uint8_t *px = p + (cifar100 ? 2 : 1);
        for (int c = 0; c < 3; c++)
            for (int j = 0; j < 1024; j++) px[c * 1024 + j] = cifar_px(file, i, c, j);
    }
    write_bytes(path, b, rec * n);
    free(b);
}

TEST(natdata_cifar10_read)
{
    const char *root = test_tmp_path("cifar10");
    const char *dir = test_tmp_path("cifar10/cifar-10-batches-bin");
    mkdir(root, 0755);
    mkdir(dir, 0755);
    const int counts[5] = {7, 5, 3, 4, 6};
    for (int k = 0; k < 5; k++)
        write_cifar(test_tmp_path("cifar10/cifar-10-batches-bin/data_batch_%d.bin", k + 1), k, counts[k], 0, k);
    write_cifar(test_tmp_path("cifar10/cifar-10-batches-bin/test_batch.bin"), 9, 8, 0, 3);
    FILE *f = fopen(test_tmp_path("cifar10/cifar-10-batches-bin/batches.meta.txt"), "w");
    fprintf(f, "plane\ncar\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n\n");
    fclose(f);

    nat_images im;
    REQUIRE(nat_cifar_load(&im, root, 0, 1) == 0, "%s", ncmi_error());
    EXPECT(im.n == 25 && im.h == 32 && im.w == 32 && im.c == 3 && im.n_classes == 10, "%d images %dx%dx%d, %d classes",
           im.n, im.h, im.w, im.c, im.n_classes);
    EXPECT(strcmp(im.class_names[0], "plane") == 0 && strcmp(im.class_names[9], "truck") == 0, "names %s .. %s",
           im.class_names[0], im.class_names[9]);
    EXPECT(strcmp(im.tag, "cifar10-train") == 0, "tag %s", im.tag);
    /* every pixel and label, in file order, planes -> HWC */
    int i = 0, bad = 0;
    for (int k = 0; k < 5; k++)
        for (int r = 0; r < counts[k]; r++, i++) {
            if (im.labels[i] != (k + r) % 10) bad++;
            const uint8_t *p = nat_images_at(&im, i);
            for (int j = 0; j < 1024; j++)
                for (int c = 0; c < 3; c++)
                    if (p[3 * j + c] != cifar_px(k, r, c, j)) bad++;
        }
    EXPECT(bad == 0, "%d pixels/labels differ from the file", bad);
    nat_images_free(&im);

    /* root = the folder itself; the test file */
    REQUIRE(nat_cifar_load(&im, dir, 0, 0) == 0, "%s", ncmi_error());
    EXPECT(im.n == 8 && im.labels[0] == 3 && im.labels[7] == 0, "test: %d images, labels %d..%d", im.n,
           im.labels[0], im.labels[7]);
    EXPECT(nat_images_at(&im, 7)[3 * 1023 + 2] == cifar_px(9, 7, 2, 1023), "last pixel");
    nat_images_free(&im);

    /* no names file: the official names */
    remove(test_tmp_path("cifar10/cifar-10-batches-bin/batches.meta.txt"));
    REQUIRE(nat_cifar_load(&im, root, 0, 0) == 0, "%s", ncmi_error());
    EXPECT(strcmp(im.class_names[0], "airplane") == 0 && strcmp(im.class_names[1], "automobile") == 0,
           "built-in names %s %s", im.class_names[0], im.class_names[1]);
    nat_images_free(&im);

    /* truncated: record 4 of data_batch_3 incomplete */
    const char *b3 = test_tmp_path("cifar10/cifar-10-batches-bin/data_batch_3.bin");
    REQUIRE(truncate(b3, 3073 * 3 + 100) == 0, "truncate");
    EXPECT(nat_cifar_load(&im, root, 0, 1) == -1, "truncated file accepted");
    const char *e = ncmi_error();
    EXPECT(strstr(e, "data_batch_3.bin") && strstr(e, "truncated") && strstr(e, "record 4 is incomplete"),
           "message: %s", e);
    EXPECT(im.n == 0 && im.pixels == NULL, "left empty");
    /* a CIFAR-100 file where CIFAR-10 is expected */
    write_cifar(b3, 2, 6, 1, 0);
    EXPECT(nat_cifar_load(&im, root, 0, 1) == -1, "CIFAR-100 records accepted as CIFAR-10");
    e = ncmi_error();
    EXPECT(strstr(e, "data_batch_3.bin") && strstr(e, "CIFAR-100 file?"), "message: %s", e);
    /* a label out of range */
    write_cifar(b3, 2, 3, 0, 0);
    {
        FILE *g = fopen(b3, "r+b");
        fseek(g, 3073 * 2, SEEK_SET);
        fputc(10, g);
        fclose(g);
    }
    EXPECT(nat_cifar_load(&im, root, 0, 1) == -1, "label 10 accepted");
    e = ncmi_error();
    EXPECT(strstr(e, "data_batch_3.bin: record 3: label 10 is not in 0..9"), "message: %s", e);
    /* nothing there */
    EXPECT(nat_cifar_load(&im, test_tmp_path("cifar10/nothing"), 0, 1) == -1, "missing folder");
    EXPECT(strstr(ncmi_error(), "no CIFAR-10 binary files"), "message: %s", ncmi_error());
}

TEST(natdata_cifar100_read)
{
    const char *dir = test_tmp_path("cifar-100-binary");
    mkdir(dir, 0755);
    write_cifar(test_tmp_path("cifar-100-binary/train.bin"), 1, 9, 1, 5);
    write_cifar(test_tmp_path("cifar-100-binary/test.bin"), 2, 4, 1, 11);
    nat_images im;
    /* root = the parent (the temporary folder) */
    REQUIRE(nat_cifar_load(&im, test_tmpdir(), 1, 1) == 0, "%s", ncmi_error());
    EXPECT(im.n == 9 && im.n_classes == 100 && im.coarse, "%d images, %d classes", im.n, im.n_classes);
    int bad = 0;
    for (int r = 0; r < 9; r++) {
        if (im.labels[r] != (5 + 7 * r) % 100 || im.coarse[r] != (5 + r) % 20) bad++;
        for (int j = 0; j < 1024; j++)
            for (int c = 0; c < 3; c++)
                if (nat_images_at(&im, r)[3 * j + c] != cifar_px(1, r, c, j)) bad++;
    }
    EXPECT(bad == 0, "%d pixels/labels differ", bad);
    /* built-in fine names: alphabetical, 100 of them */
    EXPECT(strcmp(im.class_names[0], "apple") == 0 && strcmp(im.class_names[99], "worm") == 0 &&
               strcmp(im.class_names[58], "pickup_truck") == 0,
           "names %s %s %s", im.class_names[0], im.class_names[58], im.class_names[99]);
    for (int k = 1; k < 100; k++)
        EXPECT(strcmp(im.class_names[k - 1], im.class_names[k]) < 0, "names not sorted at %d", k);
    EXPECT(strcmp(im.tag, "cifar100-train") == 0, "tag %s", im.tag);
    /* two handles share the pixels */
    nat_images b;
    nat_images_ref(&b, &im);
    nat_images_free(&im);
    EXPECT(b.labels[1] == 12 && b.pixels[0] == cifar_px(1, 0, 0, 0), "shared data survive the first free");
    nat_images_free(&b);

    /* names file with the wrong count */
    FILE *f = fopen(test_tmp_path("cifar-100-binary/fine_label_names.txt"), "w");
    for (int k = 0; k < 99; k++) fprintf(f, "c%d\n", k);
    fclose(f);
    EXPECT(nat_cifar_load(&im, dir, 1, 0) == -1, "99 names accepted");
    EXPECT(strstr(ncmi_error(), "fine_label_names.txt: 99 class names, 100 expected"), "message: %s", ncmi_error());
    f = fopen(test_tmp_path("cifar-100-binary/fine_label_names.txt"), "a");
    fprintf(f, "last\n");
    fclose(f);
    REQUIRE(nat_cifar_load(&im, dir, 1, 0) == 0, "%s", ncmi_error());
    EXPECT(im.n == 4 && strcmp(im.class_names[99], "last") == 0, "test set: %d, name %s", im.n, im.class_names[99]);
    nat_images_free(&im);

    /* CIFAR-10 records in a CIFAR-100 file; a fine label out of range; truncation */
    const char *tb = test_tmp_path("cifar-100-binary/test.bin");
    write_cifar(tb, 2, 6, 0, 0);
    EXPECT(nat_cifar_load(&im, dir, 1, 0) == -1 && strstr(ncmi_error(), "a CIFAR-10 file?"), "message: %s", ncmi_error());
    write_cifar(tb, 2, 3, 1, 0);
    {
        FILE *g = fopen(tb, "r+b");
        fseek(g, 3074 * 1 + 1, SEEK_SET);
        fputc(100, g);
        fclose(g);
    }
    EXPECT(nat_cifar_load(&im, dir, 1, 0) == -1 && strstr(ncmi_error(), "test.bin: record 2: fine label 100 is not in 0..99"),
           "message: %s", ncmi_error());
    REQUIRE(truncate(tb, 10) == 0, "truncate");
    EXPECT(nat_cifar_load(&im, dir, 1, 0) == -1 && strstr(ncmi_error(), "record 1 is incomplete"), "message: %s",
           ncmi_error());
}

/* ------------------------------------------------------------------ */
/* the transforms against torchvision / PIL                            */

TEST(natdata_golden_eval)
{
    nn_safetensors st;
    REQUIRE(nn_st_open(&st, golden_file()) == 0, "golden file (tests/reference/natdata_reference.py): %s", ncmi_error());
    int cases = 0;
    for (int k = 0;; k++) {
        char name[64];
        int cfg[5];
        snprintf(name, sizeof name, "ev.%d.cfg", k);
        if (golden_ints(&st, name, cfg, 5) != 5) break;
        int w = cfg[0], h = cfg[1], r = cfg[3], c = cfg[4];
        uint8_t *img = test_image(w, h, (uint32_t)cfg[2]);
        nat_aug a;
        nat_aug_plain(&a, NAT_IMAGENET_MEAN, NAT_IMAGENET_STD, 3);
        a.eval_resize = r;
        a.eval_crop = c;
        uint8_t *out = NULL;
        int ow, oh;
        REQUIRE(nat_aug_run(&a, 0, NULL, img, w, h, 3, &out, &ow, &oh) == 0, "%s", ncmi_error());
        snprintf(name, sizeof name, "ev.%d.out", k);
        size_t n = 0;
        uint8_t *ref = golden_u8(&st, name, &n);
        REQUIRE(ref && n == (size_t)c * c * 3 && ow == c && oh == c, "case %d: %dx%d, golden %zu bytes", k, ow, oh, n);
        size_t at = 0;
        int md = max_diff_u8(out, ref, n, &at);
        EXPECT(md == 0, "eval case %d (%dx%d -> Resize(%d) -> CenterCrop(%d)): max diff %d at byte %zu", k, w, h, r,
               c, md, at);
        if (k == 0) { /* + ToTensor + Normalize: bitwise */
            float *x = malloc(n * sizeof(float)), *gx = malloc(n * sizeof(float));
            nat_normalize(out, c, c, 3, a.mean, a.std, x);
            REQUIRE(nn_st_read_f32(&st, "ev.0.x", gx, n, -1, NULL) == 0, "%s", ncmi_error());
            EXPECT(memcmp(x, gx, n * sizeof(float)) == 0, "normalised eval output differs from torchvision's");
            free(x);
            free(gx);
        }
        free(ref);
        free(out);
        free(img);
        cases++;
    }
    EXPECT(cases == 6, "%d eval cases in the golden file", cases);
    /* CIFAR normalisation of a 32x32 image */
    uint8_t *img = test_image(32, 32, 27);
    float x[3072], gx[3072];
    nat_aug a;
    nat_aug_cifar(&a);
    nat_normalize(img, 32, 32, 3, a.mean, a.std, x);
    REQUIRE(nn_st_read_f32(&st, "cifar.x", gx, 3072, -1, NULL) == 0, "%s", ncmi_error());
    EXPECT(memcmp(x, gx, sizeof x) == 0, "CIFAR ToTensor + Normalize differs from torchvision's");
    free(img);
    nn_st_close(&st);
}

TEST(natdata_golden_random_parts)
{
    nn_safetensors st;
    REQUIRE(nn_st_open(&st, golden_file()) == 0, "%s", ncmi_error());
    char name[64];
    int ncase = 0;
    /* rotation with a fixed angle: PIL's rotate, byte for byte */
    for (int k = 0;; k++) {
        int cfg[3];
        snprintf(name, sizeof name, "rot.%d.cfg", k);
        if (golden_ints(&st, name, cfg, 3) != 3) break;
        float ang;
        snprintf(name, sizeof name, "rot.%d.angle", k);
        REQUIRE(nn_st_read_f32(&st, name, &ang, 1, -1, NULL) == 0, "%s", ncmi_error());
        int w = cfg[0], h = cfg[1];
        uint8_t *img = test_image(w, h, (uint32_t)cfg[2]), *out = malloc((size_t)w * h * 3);
        nat_rotate(img, w, h, 3, ang, out);
        size_t n = 0, at = 0;
        snprintf(name, sizeof name, "rot.%d.out", k);
        uint8_t *ref = golden_u8(&st, name, &n);
        REQUIRE(ref && n == (size_t)w * h * 3, "golden %s", name);
        int md = max_diff_u8(out, ref, n, &at);
        int npx = 0;
        for (size_t i = 0; i < n; i++) npx += out[i] != ref[i];
        EXPECT(md == 0, "rotate %dx%d by %g: %d bytes differ (first max at pixel %zu, %zu)", w, h, ang, npx,
               at / 3 % w, at / 3 / w);
        free(ref);
        free(out);
        free(img);
        ncase++;
    }
    EXPECT(ncase == 11, "%d rotation cases", ncase);
    /* RandomCrop(size, padding) with fixed offsets */
    ncase = 0;
    uint8_t *src = test_image(32, 32, 11);
    for (int k = 0;; k++) {
        int cfg[4];
        snprintf(name, sizeof name, "pcrop.%d.cfg", k);
        if (golden_ints(&st, name, cfg, 4) != 4) break;
        nat_aug a;
        nat_aug_plain(&a, NAT_CIFAR_MEAN, NAT_CIFAR_STD, 3);
        a.crop_padding = cfg[2];
        a.crop_size = cfg[3];
        nat_aug_params p = {0};
        p.crop_top = cfg[0];
        p.crop_left = cfg[1];
        uint8_t *out;
        int ow, oh;
        REQUIRE(nat_aug_run(&a, 1, &p, src, 32, 32, 3, &out, &ow, &oh) == 0, "%s", ncmi_error());
        size_t n = 0;
        snprintf(name, sizeof name, "pcrop.%d.out", k);
        uint8_t *ref = golden_u8(&st, name, &n);
        REQUIRE(ref && n == (size_t)ow * oh * 3 && ow == cfg[3], "golden %s", name);
        EXPECT(memcmp(out, ref, n) == 0, "padded crop case %d differs", k);
        free(ref);
        free(out);
        ncase++;
    }
    free(src);
    EXPECT(ncase == 4, "%d crop cases", ncase);
    /* resized crop with a fixed box */
    ncase = 0;
    for (int k = 0;; k++) {
        int cfg[7];
        snprintf(name, sizeof name, "rrc.%d.cfg", k);
        if (golden_ints(&st, name, cfg, 7) != 7) break;
        nat_aug a;
        nat_aug_imagenet(&a, 24, 24, 0);
        a.flip_p = 0;
        nat_aug_params p = {0};
        p.rrc_top = cfg[3];
        p.rrc_left = cfg[4];
        p.rrc_h = cfg[5];
        p.rrc_w = cfg[6];
        uint8_t *img = test_image(cfg[0], cfg[1], (uint32_t)cfg[2]), *out;
        int ow, oh;
        REQUIRE(nat_aug_run(&a, 1, &p, img, cfg[0], cfg[1], 3, &out, &ow, &oh) == 0, "%s", ncmi_error());
        size_t n = 0, at = 0;
        snprintf(name, sizeof name, "rrc.%d.out", k);
        uint8_t *ref = golden_u8(&st, name, &n);
        REQUIRE(ref && n == 24 * 24 * 3 && ow == 24 && oh == 24, "golden %s", name);
        int md = max_diff_u8(out, ref, n, &at);
        EXPECT(md == 0, "resized crop case %d: max diff %d", k, md);
        free(ref);
        free(out);
        free(img);
        ncase++;
    }
    EXPECT(ncase == 4, "%d resized-crop cases", ncase);
    /* RandomResizedCrop's centre-crop fallback (scale > 1: every attempt fails) */
    const nn_st_entry *e = nn_st_find(&st, "fb.cfg");
    REQUIRE(e && e->ndim == 2 && e->shape[1] == 6, "fb.cfg");
    int fb[64];
    int nfb = golden_ints(&st, "fb.cfg", fb, 64);
    REQUIRE(nfb == (int)e->numel, "fb.cfg");
    for (int k = 0; k < nfb / 6; k++) {
        int *r = fb + 6 * k, top, left, ch, cw, fallback;
        nn_rng g;
        nn_rng_seed(&g, (uint64_t)k);
        const double scale[2] = {2.0, 2.5}, ratio[2] = {3.0 / 4.0, 4.0 / 3.0};
        nat_rrc_params(&g, r[0], r[1], scale, ratio, &top, &left, &ch, &cw, &fallback);
        EXPECT(fallback && top == r[2] && left == r[3] && ch == r[4] && cw == r[5],
               "fallback for %dx%d: (%d, %d, %d, %d), torchvision (%d, %d, %d, %d)", r[0], r[1], top, left, ch,
               cw, r[2], r[3], r[4], r[5]);
    }
    nn_st_close(&st);
}

#if NCMI_HAVE_VIPS
TEST(natdata_golden_decode)
{
    nn_safetensors st;
    REQUIRE(nn_st_open(&st, golden_file()) == 0, "%s", ncmi_error());
    const char *names[] = {"rgbjpg", "rgb444", "greyjpg", "cmykjpg", "rgbapng", "palpng", "greypng"};
    for (size_t k = 0; k < sizeof names / sizeof *names; k++) {
        char name[64];
        size_t nf = 0, nr = 0;
        snprintf(name, sizeof name, "dec.%s.file", names[k]);
        uint8_t *file = golden_u8(&st, name, &nf);
        snprintf(name, sizeof name, "dec.%s.rgb", names[k]);
        uint8_t *ref = golden_u8(&st, name, &nr);
        int sz[2];
        snprintf(name, sizeof name, "dec.%s.size", names[k]);
        REQUIRE(file && ref && golden_ints(&st, name, sz, 2) == 2, "golden dec.%s", names[k]);
        const char *path = test_tmp_path("dec_%s.%s", names[k], strstr(names[k], "png") ? "png" : "jpg");
        write_bytes(path, file, nf);
        uint8_t *rgb = NULL;
        int w, h;
        REQUIRE(nat_image_decode(path, &rgb, &w, &h) == 0, "%s", ncmi_error());
        REQUIRE(w == sz[0] && h == sz[1] && nr == (size_t)w * h * 3, "%s: %dx%d, PIL %dx%d", names[k], w, h, sz[0], sz[1]);
        size_t at = 0;
        int md = max_diff_u8(rgb, ref, nr, &at);
        EXPECT(md == 0, "%s: decoded pixels differ from PIL's convert('RGB') by up to %d (byte %zu)", names[k], md, at);
        if (strcmp(names[k], "rgbjpg") == 0) {
            /* the whole eval pipeline from the file: Resize(36) + CenterCrop(32) + Normalize */
            nat_aug a;
            nat_aug_imagenet(&a, 32, 32, 36);
            uint8_t *o;
            int ow, oh;
            REQUIRE(nat_aug_run(&a, 0, NULL, rgb, w, h, 3, &o, &ow, &oh) == 0, "%s", ncmi_error());
            float x[3 * 32 * 32], gx[3 * 32 * 32];
            nat_normalize(o, ow, oh, 3, a.mean, a.std, x);
            REQUIRE(nn_st_read_f32(&st, "dec.rgbjpg.x", gx, 3072, -1, NULL) == 0, "%s", ncmi_error());
            double mx = 0;
            for (int i = 0; i < 3072; i++) mx = fmax(mx, fabs(x[i] - gx[i]));
            EXPECT(mx == 0, "file -> tensor: max diff %g from torchvision's ImageFolder + transforms", mx);
            free(o);
        }
        free(rgb);
        free(file);
        free(ref);
    }
    nn_st_close(&st);
}
#endif

/* ------------------------------------------------------------------ */
/* properties of the random transforms                                 */

TEST(natdata_aug_properties)
{
    nn_safetensors st;
    REQUIRE(nn_st_open(&st, golden_file()) == 0, "%s", ncmi_error());
    const double scale[2] = {0.08, 1.0}, ratio[2] = {3.0 / 4.0, 4.0 / 3.0};
    /* RandomResizedCrop: boxes inside, area and ratio in range (up to the
     * rounding of the sides), statistics like torchvision's draws */
    for (int k = 0; k < 2; k++) {
        char name[64];
        float ref[8];
        snprintf(name, sizeof name, "rrcstats.%d", k);
        REQUIRE(nn_st_read_f32(&st, name, ref, 8, -1, NULL) == 0, "%s", ncmi_error());
        int w = (int)ref[0], h = (int)ref[1];
        nn_rng r;
        nn_rng_seed(&r, 1234 + k);
        const int N = 20000;
        double sa = 0, sa2 = 0, sl = 0, sl2 = 0, scx = 0, scy = 0;
        int outside = 0, badarea = 0, badratio = 0;
        for (int i = 0; i < N; i++) {
            int top, left, ch, cw, fb;
            nat_rrc_params(&r, w, h, scale, ratio, &top, &left, &ch, &cw, &fb);
            if (top < 0 || left < 0 || ch < 1 || cw < 1 || top + ch > h || left + cw > w) outside++;
            // cppcheck-suppress invalidFunctionArg ; false positive: cw < 1 is counted as outside above; log(0) = -inf is defined
            double area = (double)ch * cw / ((double)w * h), lr = log((double)cw / ch);
            /* one pixel of rounding on each side */
            double amin = (sqrt(0.08 * w * h * 0.75) - 0.5) * (sqrt(0.08 * w * h / (4.0 / 3.0)) - 0.5) / ((double)w * h);
            if (!fb && (area < amin * 0.9 || area > 1.0)) badarea++;
            if (!fb && ((cw - 0.5) / (ch + 0.5) > 4.0 / 3.0 || (cw + 0.5) / (ch - 0.5) < 0.75)) badratio++;
            sa += area;
            sa2 += area * area;
            sl += lr;
            sl2 += lr * lr;
            scx += (left + cw / 2.0) / w;
            scy += (top + ch / 2.0) / h;
        }
        EXPECT(outside == 0 && badarea == 0 && badratio == 0, "%dx%d: %d boxes outside, %d areas and %d ratios out of range",
               w, h, outside, badarea, badratio);
        double ma = sa / N, sda = sqrt(sa2 / N - ma * ma), ml = sl / N, sdl = sqrt(sl2 / N - ml * ml);
        EXPECT(fabs(ma - ref[2]) < 0.01, "%dx%d: mean area fraction %.4f, torchvision %.4f", w, h, ma, ref[2]);
        EXPECT(fabs(sda - ref[3]) < 0.01, "%dx%d: std area fraction %.4f, torchvision %.4f", w, h, sda, ref[3]);
        EXPECT(fabs(ml - ref[4]) < 0.01, "%dx%d: mean log ratio %.4f, torchvision %.4f", w, h, ml, ref[4]);
        EXPECT(fabs(sdl - ref[5]) < 0.01, "%dx%d: std log ratio %.4f, torchvision %.4f", w, h, sdl, ref[5]);
        EXPECT(fabs(scx / N - ref[6]) < 0.01 && fabs(scy / N - ref[7]) < 0.01,
               "%dx%d: mean centre (%.4f, %.4f), torchvision (%.4f, %.4f)", w, h, scx / N, scy / N, ref[6], ref[7]);
    }
    nn_st_close(&st);

    /* the CIFAR recipe's draws: offsets in [0, 8], every one of the 81 seen;
     * flips about half; angles in [-15, 15) */
    nat_aug a;
    nat_aug_cifar(&a);
    nn_rng r;
    nn_rng_seed(&r, 99);
    int seen[9][9] = {{0}}, flips = 0, bad = 0;
    double amin = 1e9, amax = -1e9, asum = 0;
    const int N = 20000;
    for (int i = 0; i < N; i++) {
        nat_aug_params p;
        nat_aug_draw(&a, &r, 32, 32, &p);
        if (p.crop_top < 0 || p.crop_top > 8 || p.crop_left < 0 || p.crop_left > 8) bad++;
        else seen[p.crop_top][p.crop_left]++;
        flips += p.flip;
        amin = fmin(amin, p.angle);
        amax = fmax(amax, p.angle);
        asum += p.angle;
    }
    int zero = 0;
    for (int y = 0; y < 9; y++)
        for (int x = 0; x < 9; x++) zero += seen[y][x] < N / 81 / 2;
    EXPECT(bad == 0 && zero == 0, "%d offsets out of range, %d of 81 rarely drawn", bad, zero);
    EXPECT(fabs(flips / (double)N - 0.5) < 0.02, "flip rate %.3f", flips / (double)N);
    EXPECT(amin >= -15 && amax < 15 && amin < -14.9 && amax > 14.9 && fabs(asum / N) < 0.3,
           "angles in [%g, %g], mean %g", amin, amax, asum / N);

    /* flip is a mirror; rotation by 0 and by 360 is the identity; the
     * same parameters give the same pixels */
    uint8_t *img = test_image(37, 23, 5), *m = malloc(37 * 23 * 3), *o = malloc(37 * 23 * 3);
    memcpy(m, img, 37 * 23 * 3);
    nat_hflip(m, 37, 23, 3);
    int mirror_bad = 0;
    for (int y = 0; y < 23; y++)
        for (int x = 0; x < 37; x++)
            for (int c = 0; c < 3; c++) mirror_bad += m[(y * 37 + x) * 3 + c] != img[(y * 37 + 36 - x) * 3 + c];
    EXPECT(mirror_bad == 0, "hflip is not a mirror (%d bytes)", mirror_bad);
    nat_rotate(img, 37, 23, 3, 0.0, o);
    EXPECT(memcmp(o, img, 37 * 23 * 3) == 0, "rotation by 0 changed the image");
    nat_rotate(img, 37, 23, 3, 360.0, o);
    EXPECT(memcmp(o, img, 37 * 23 * 3) == 0, "rotation by 360 changed the image");
    nat_rotate(img, 37, 23, 1, 1e-9, o); /* grey view: tiny angle, nearest: identity */
    EXPECT(memcmp(o, img, 37 * 23) == 0, "rotation by 1e-9 degrees changed the image");
    /* whole recipe: p with flip = mirror of p without (no rotation) */
    a.rotate_deg = 0;
    nat_aug_params p = {.crop_top = 4, .crop_left = 4, .flip = 0};
    uint8_t *o1, *o2;
    int ow, oh;
    REQUIRE(nat_aug_run(&a, 1, &p, img, 37, 23, 3, &o1, &ow, &oh) == 0, "%s", ncmi_error());
    EXPECT(memcmp(o1, img, 37 * 23 * 3) == 0, "centred crop of the padded image is not the image");
    p.flip = 1;
    REQUIRE(nat_aug_run(&a, 1, &p, img, 37, 23, 3, &o2, &ow, &oh) == 0, "%s", ncmi_error());
    EXPECT(memcmp(o2, m, 37 * 23 * 3) == 0, "flip in the recipe is not hflip");
    free(o1);
    free(o2);
    /* fixed seed: same draws and pixels; another seed: different */
    nat_aug_cifar(&a);
    nat_aug_params p1, p2, p3;
    nn_rng r1, r2, r3;
    nn_rng_seed(&r1, 7);
    nn_rng_seed(&r2, 7);
    nn_rng_seed(&r3, 8);
    nat_aug_draw(&a, &r1, 37, 23, &p1);
    nat_aug_draw(&a, &r2, 37, 23, &p2);
    nat_aug_draw(&a, &r3, 37, 23, &p3);
    EXPECT(memcmp(&p1, &p2, sizeof p1) == 0 && memcmp(&p1, &p3, sizeof p1) != 0, "seeded draws");
    /* errors: crop larger than the padded image; resize of a grey image */
    a.crop_size = 50;
    EXPECT(nat_aug_out_size(&a, 1, 32, 32, 3, &ow, &oh) == -1 && strstr(ncmi_error(), "larger than"), "%s", ncmi_error());
    nat_aug_imagenet(&a, 224, 224, 0);
    EXPECT(a.eval_resize == 256, "eval resize %d for 224", a.eval_resize);
    nat_aug_imagenet(&a, 224, 280, 0);
    EXPECT(a.eval_resize == 320 && a.eval_crop == 280 && a.rrc_size == 224, "eval %d/%d", a.eval_resize, a.eval_crop);
    EXPECT(nat_aug_out_size(&a, 0, 28, 28, 1, &ow, &oh) == -1 && strstr(ncmi_error(), "RGB"), "%s", ncmi_error());
    free(img);
    free(m);
    free(o);
}

/* ------------------------------------------------------------------ */
/* datasets                                                            */

/* What the trainer does: epochs of order(perm) + batches with a forked
 * rng, then an evaluation pass in natural order. All tensors concatenated
 * (malloc'd, floats in *len); the trainer's rng state at the end in *tail. */
static float *run_like_trainer(tr_dataset *d, int epochs, int bs, uint64_t seed, int pause_us, size_t *len,
                               uint64_t *tail)
{
    nn_graph *g = nn_graph_new();
    nn_rng root;
    nn_rng_seed(&root, seed);
    const int n = d->n;
    int *perm = malloc((size_t)n * sizeof *perm), *nat = malloc((size_t)n * sizeof *nat);
    for (int i = 0; i < n; i++) nat[i] = i;
    size_t cap = 1 << 20, used = 0;
    float *all = malloc(cap * sizeof *all);
    int ok = 1;
    for (int e = 0; e <= epochs && ok; e++) {
        const int training = e < epochs;
        nn_rng aug;
        if (training) {
            nn_rng_permutation(&root, perm, n);
            d->order(d, perm, n);
            aug = nn_rng_fork(&root, (uint64_t)e);
        } else {
            d->order(d, NULL, 0);
        }
        for (int b0 = 0; b0 < n && ok; b0 += bs) {
            int nb = n - b0 < bs ? n - b0 : bs;
            nn_tensor *x[TR_MAX_INPUTS];
            if (d->inputs(d, g, (training ? perm : nat) + b0, nb, training, training ? &aug : NULL, x) != 1) {
                ok = 0;
                break;
            }
            size_t m = nn_shape_numel(x[0]->ndim, x[0]->shape);
            while (used + m > cap) {
                cap *= 2;
                float *na = realloc(all, cap * sizeof *all);
                if (!na) abort();
                all = na;
            }
            memcpy(all + used, x[0]->data, m * sizeof *all);
            used += m;
            nn_graph_reset(g);
            if (pause_us) usleep((useconds_t)pause_us);
        }
        if (training) *tail = nn_rng_u64(&aug);
    }
    nn_graph_free(g);
    free(perm);
    free(nat);
    if (!ok) {
        free(all);
        return NULL;
    }
    *len = used;
    return all;
}

static int make_random_set(nat_images *im, int n, int h, int w, int c, uint32_t seed)
{
    if (nat_images_alloc(im, n, h, w, c, 10)) return -1;
    for (size_t i = 0; i < (size_t)n * h * w * c; i++) im->pixels[i] = (uint8_t)(mix32((uint32_t)i + seed) >> 5);
    for (int i = 0; i < n; i++) im->labels[i] = i % 10;
    snprintf(im->tag, sizeof im->tag, "rand");
    return 0;
}

TEST(natdata_dataset_workers)
{
    nat_images im;
    REQUIRE(make_random_set(&im, 203, 32, 32, 3, 1) == 0, "%s", ncmi_error());
    nat_aug a;
    nat_aug_cifar(&a);
    float *ref = NULL;
    size_t nref = 0;
    uint64_t tail_ref = 0;
    const int W[4] = {0, 1, 3, 2};
    for (int k = 0; k < 4; k++) {
        tr_dataset d;
        nat_loader_opts o;
        nat_loader_opts_default(&o);
        o.workers = W[k];
        if (k == 3) o.prefetch = 5; /* a shallow ring: the consumer overtakes the workers */
        /* a subset: every image but the first three */
        int idx[200];
        for (int i = 0; i < 200; i++) idx[i] = i + 3;
        REQUIRE(nat_image_dataset_init(&d, "train", "test", &im, idx, 200, &a, &o) == 0, "%s", ncmi_error());
        EXPECT(d.n == 200 && d.labels[0] == 3 && strcmp(d.sample_id(&d, 0), "rand/3") == 0, "n %d, label %d, id %s",
               d.n, d.labels[0], d.sample_id(&d, 0));
        size_t n = 0;
        uint64_t tail = 0;
        float *x = run_like_trainer(&d, 2, 32, 42, 0, &n, &tail);
        REQUIRE(x, "%s", ncmi_error());
        EXPECT(n == (size_t)3 * 200 * 3072, "%zu floats", n);
        nat_loader_stats s;
        REQUIRE(nat_dataset_stats(&d, &s) == 0, "stats");
        EXPECT(s.workers == W[k] && s.computed >= 600, "workers %d, computed %ld", s.workers, s.computed);
        if (k == 0) {
            ref = x;
            nref = n;
            tail_ref = tail;
            /* eval is the plain image */
            float plain[3072];
            nat_normalize(nat_images_at(&im, 3), 32, 32, 3, a.mean, a.std, plain);
            EXPECT(memcmp(x + (size_t)400 * 3072, plain, sizeof plain) == 0, "eval sample 0 is not the normalised image");
        } else {
            EXPECT(n == nref && memcmp(x, ref, n * sizeof(float)) == 0,
                   "workers %d (prefetch %d): tensors differ from the single-threaded run", W[k], o.prefetch);
            EXPECT(tail == tail_ref, "workers %d: the trainer's rng advanced differently", W[k]);
            free(x);
        }
        tr_dataset_free(&d);
    }
    /* augmentation changes the training images: a sample's two epochs differ */
    int differ = 0;
    for (int i = 0; i < 200 && !differ; i++)
        differ = memcmp(ref + (size_t)i * 3072, ref + (size_t)(200 + i) * 3072, 3072 * sizeof(float)) != 0;
    EXPECT(differ, "training batches look unaugmented");
    free(ref);
    nat_images_free(&im);
}

TEST(natdata_dataset_readahead)
{
    nat_images im;
    REQUIRE(make_random_set(&im, 256, 32, 32, 3, 2) == 0, "%s", ncmi_error());
    nat_aug a;
    nat_aug_cifar(&a);
    tr_dataset d;
    nat_loader_opts o;
    nat_loader_opts_default(&o);
    o.workers = 2;
    o.prefetch = 64;
    REQUIRE(nat_image_dataset_init(&d, "train", NULL, &im, NULL, 0, &a, &o) == 0, "%s", ncmi_error());
    nat_images_free(&im); /* the dataset holds its own reference */
    size_t n;
    uint64_t tail;
    /* a slow "GPU": 3 ms per batch of 32; the workers keep up */
    float *x = run_like_trainer(&d, 1, 32, 5, 3000, &n, &tail);
    REQUIRE(x, "%s", ncmi_error());
    nat_loader_stats s;
    REQUIRE(nat_dataset_stats(&d, &s) == 0, "stats");
    EXPECT(s.slots == 64 && s.slot_bytes == 64 * 3072 * sizeof(float), "%d slots, %zu bytes", s.slots, s.slot_bytes);
    EXPECT(s.ready > s.waited && s.ready >= 256, "read-ahead: %ld ready, %ld waited, %ld direct", s.ready, s.waited,
           s.direct);
    EXPECT(s.by_workers >= s.computed * 3 / 4, "workers made %ld of %ld", s.by_workers, s.computed);
    EXPECT(s.direct == 0, "%ld samples made on demand", s.direct);
    free(x);
    /* a call outside the announced order: made on demand, deterministic */
    nn_graph *g = nn_graph_new();
    int idx[3] = {5, 5, 200};
    nn_tensor *t1[4], *t2[4];
    nn_rng r1, r2;
    nn_rng_seed(&r1, 3);
    nn_rng_seed(&r2, 3);
    REQUIRE(d.inputs(&d, g, idx, 3, 1, &r1, t1) == 1 && d.inputs(&d, g, idx, 3, 1, &r2, t2) == 1, "%s", ncmi_error());
    EXPECT(memcmp(t1[0]->data, t2[0]->data, 3 * 3072 * sizeof(float)) == 0, "on-demand samples differ between runs");
    EXPECT(memcmp(t1[0]->data, t1[0]->data + 3072, 3072 * sizeof(float)) != 0, "a sample twice in a batch: same augmentation");
    EXPECT(d.inputs(&d, g, (int[]){256}, 1, 0, NULL, t1) == -1 && strstr(ncmi_error(), "not one of its 256"), "%s",
           ncmi_error());
    nn_graph_free(g);
    tr_dataset_free(&d);
}

TEST(natdata_dataset_mnist_like)
{
    /* grey images, normalisation only, workers 0 */
    nat_images im;
    REQUIRE(make_random_set(&im, 10, 28, 28, 1, 3) == 0, "%s", ncmi_error());
    nat_aug a;
    nat_aug_plain(&a, NAT_MNIST_MEAN, NAT_MNIST_STD, 1);
    tr_dataset d;
    nat_loader_opts o;
    nat_loader_opts_default(&o);
    o.workers = 0;
    REQUIRE(nat_image_dataset_init(&d, "test", NULL, &im, NULL, 0, &a, &o) == 0, "%s", ncmi_error());
    nn_graph *g = nn_graph_new();
    nn_tensor *x[4];
    REQUIRE(d.inputs(&d, g, (int[]){9, 0}, 2, 0, NULL, x) == 1, "%s", ncmi_error());
    EXPECT(x[0]->ndim == 4 && x[0]->shape[1] == 1 && x[0]->shape[2] == 28, "shape");
    float v = ((float)nat_images_at(&im, 9)[5] / 255.0f - NAT_MNIST_MEAN[0]) / NAT_MNIST_STD[0];
    EXPECT(x[0]->data[5] == v, "value %g, expected %g", x[0]->data[5], v);
    nn_graph_free(g);
    tr_dataset_free(&d);
    /* a recipe that does not apply: RandomResizedCrop on grey images */
    nat_aug_imagenet(&a, 24, 24, 0);
    EXPECT(nat_image_dataset_init(&d, "test", NULL, &im, NULL, 0, &a, &o) == -1 && strstr(ncmi_error(), "RGB"),
           "%s", ncmi_error());
    nat_images_free(&im);
}

/* ------------------------------------------------------------------ */
/* folders                                                             */

#if NCMI_HAVE_VIPS
#include <vips/vips.h>

/* libvips logs a warning per libjpeg warning of a truncated file: the
 * decoder's error is what the tests check, the log is noise here */
static void no_log(const gchar *domain, GLogLevelFlags level, const gchar *msg, gpointer user)
{
    (void)domain, (void)level, (void)msg, (void)user;
}

static guint quiet_vips(void) { return g_log_set_handler("VIPS", G_LOG_LEVEL_WARNING, no_log, NULL); }

/* a smooth image with some texture (closer to a photo than noise) */
static uint8_t *photo_like(int w, int h, uint32_t seed)
{
    uint8_t *p = malloc((size_t)w * h * 3);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int c = 0; c < 3; c++) {
                double v = 128 + 60 * sin((x + 13.0 * c + seed) / 23.0) * cos((y - 7.0 * c) / 17.0) +
                           (double)(mix32(seed + (uint32_t)(y * w + x) * 3 + (uint32_t)c) & 31) - 16;
                p[((size_t)y * w + x) * 3 + c] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
            }
    return p;
}

static int write_img(const char *path, int w, int h, int c, uint32_t seed)
{
    uint8_t *rgb = photo_like(w, h, seed);
    uint8_t *px = rgb;
    uint8_t *tmp = NULL;
    if (c != 3) {
        tmp = malloc((size_t)w * h * c);
        for (size_t i = 0; i < (size_t)w * h; i++)
            for (int k = 0; k < c; k++) tmp[i * c + k] = rgb[i * 3 + (k % 3)];
        px = tmp;
    }
    int rc = nat_image_write(path, px, w, h, c, 90);
    free(rgb);
    free(tmp);
    return rc;
}

/* root/{a_cat, b_dog, c_eel}: 11 image files (2 bad) + a text file */
static const char *make_folder(const char *name)
{
    static char rootbuf[2][1024];
    static int which;
    char *root = rootbuf[which++ % 2];
    snprintf(root, 1024, "%s", test_tmp_path("%s", name));
    mkdir(root, 0755);
    const char *sub[] = {"a_cat", "b_dog", "b_dog/sub", "c_eel"};
    for (int i = 0; i < 4; i++) mkdir(test_tmp_path("%s/%s", name, sub[i]), 0755);
    int rc = 0;
    rc |= write_img(test_tmp_path("%s/a_cat/c1.jpeg", name), 61, 47, 4, 1); /* CMYK */
    write_bytes(test_tmp_path("%s/a_cat/c2.JPEG", name), "this is not a JPEG at all", 25);
    rc |= write_img(test_tmp_path("%s/a_cat/c3.jpg", name), 80, 60, 3, 3);
    rc |= write_img(test_tmp_path("%s/a_cat/c4.jpg", name), 50, 70, 3, 4);
    rc |= write_img(test_tmp_path("%s/b_dog/d1.JPEG", name), 64, 48, 3, 5);
    rc |= write_img(test_tmp_path("%s/b_dog/d2.jpg", name), 40, 40, 1, 6); /* greyscale */
    rc |= write_img(test_tmp_path("%s/b_dog/Zebra.jpg", name), 45, 30, 3, 7);
    rc |= write_img(test_tmp_path("%s/b_dog/sub/d3.png", name), 30, 45, 3, 8);
    write_bytes(test_tmp_path("%s/b_dog/notes.txt", name), "hello", 5);
    rc |= write_img(test_tmp_path("%s/c_eel/e1.jpg", name), 33, 33, 3, 9);
    rc |= write_img(test_tmp_path("%s/c_eel/e2.PNG", name), 35, 36, 3, 10);
    if (rc) return NULL;
    /* c3.jpg truncated */
    struct stat st;
    if (stat(test_tmp_path("%s/a_cat/c3.jpg", name), &st) || truncate(test_tmp_path("%s/a_cat/c3.jpg", name), st.st_size / 2))
        return NULL;
    return root;
}

TEST(natdata_folder_scan)
{
    const char *root = make_folder("inet");
    REQUIRE(root, "cannot write the folder: %s", ncmi_error());
    guint quiet = quiet_vips();
    nat_folder f;
    REQUIRE(nat_folder_scan(&f, root, NULL, 0) == 0, "%s", ncmi_error());
    /* torchvision's ImageFolder order */
    const char *expect[] = {"a_cat/c1.jpeg", "a_cat/c2.JPEG", "a_cat/c3.jpg",  "a_cat/c4.jpg",    "b_dog/Zebra.jpg",
                            "b_dog/d1.JPEG", "b_dog/d2.jpg",  "b_dog/sub/d3.png", "c_eel/e1.jpg", "c_eel/e2.PNG"};
    const int labels[] = {0, 0, 0, 0, 1, 1, 1, 1, 2, 2};
    REQUIRE(f.n == 10 && f.n_classes == 3, "%d images, %d classes", f.n, f.n_classes);
    EXPECT(strcmp(f.classes[0], "a_cat") == 0 && strcmp(f.classes[2], "c_eel") == 0, "classes");
    for (int i = 0; i < 10; i++)
        EXPECT(strcmp(f.rel[i], expect[i]) == 0 && f.labels[i] == labels[i], "image %d: %s (%d), expected %s (%d)", i,
               f.rel[i], f.labels[i], expect[i], labels[i]);
    EXPECT(f.class_start[1] == 4 && f.class_start[3] == 10, "class starts");

    /* decoding: CMYK and grey give RGB; the corrupt and the truncated files fail clearly */
    char path[4096];
    uint8_t *rgb;
    int w, h;
    EXPECT(nat_image_decode(nat_folder_path(&f, 0, path, sizeof path), &rgb, &w, &h) == 0 && w == 61 && h == 47,
           "CMYK: %s", ncmi_error());
    free(rgb);
    REQUIRE(nat_image_decode(nat_folder_path(&f, 6, path, sizeof path), &rgb, &w, &h) == 0, "grey: %s", ncmi_error());
    int grey = 1;
    for (int i = 0; i < w * h; i++) grey &= rgb[3 * i] == rgb[3 * i + 1] && rgb[3 * i] == rgb[3 * i + 2];
    EXPECT(w == 40 && grey, "grey JPEG: %dx%d, replicated %d", w, h, grey);
    free(rgb);
    EXPECT(nat_image_decode(nat_folder_path(&f, 1, path, sizeof path), &rgb, &w, &h) == -1 && !rgb &&
               strstr(ncmi_error(), "a_cat/c2.JPEG: cannot decode"),
           "corrupt: %s", ncmi_error());
    EXPECT(nat_image_decode(nat_folder_path(&f, 2, path, sizeof path), &rgb, &w, &h) == -1 &&
               strstr(ncmi_error(), "a_cat/c3.jpg: cannot decode"),
           "truncated: %s", ncmi_error());
    nat_folder_free(&f);

    /* checking: headers find the corrupt file, decoding also the truncated one */
    for (int decode = 0; decode < 2; decode++) {
        REQUIRE(nat_folder_scan(&f, root, NULL, 0) == 0, "%s", ncmi_error());
        FILE *rep = fopen(test_tmp_path("check%d.txt", decode), "w+");
        int nbad = -1;
        REQUIRE(nat_folder_check(&f, decode, 2, rep, &nbad) == 0, "%s", ncmi_error());
        EXPECT(nbad == 1 + decode && f.n == 9 - decode, "decode %d: %d bad, %d left", decode, nbad, f.n);
        EXPECT(strcmp(f.rel[1], decode ? "a_cat/c4.jpg" : "a_cat/c3.jpg") == 0 && f.class_start[1] == 3 - decode &&
                   f.labels[f.n - 1] == 2,
               "compacted: %s, start %d", f.rel[1], f.class_start[1]);
        char buf[2048] = "";
        rewind(rep);
        size_t got = fread(buf, 1, sizeof buf - 1, rep);
        buf[got] = 0;
        fclose(rep);
        EXPECT(strstr(buf, "c2.JPEG") && (!decode || strstr(buf, "c3.jpg")), "report: %s", buf);
        nat_folder_free(&f);
    }

    /* a validation folder against the training classes */
    char *cls[3] = {"a_cat", "b_dog", "c_eel"};
    REQUIRE(nat_folder_scan(&f, root, cls, 3) == 0, "%s", ncmi_error());
    nat_folder_free(&f);
    char *cls4[4] = {"a_cat", "b_dog", "bb_owl", "c_eel"};
    EXPECT(nat_folder_scan(&f, root, cls4, 4) == -1 && strstr(ncmi_error(), "no folder for class 'bb_owl' (class 3 of the 4"),
           "%s", ncmi_error());
    EXPECT(nat_folder_scan(&f, root, cls, 2) == -1 && strstr(ncmi_error(), "c_eel: folder is not one of the 2 classes"),
           "%s", ncmi_error());
    mkdir(test_tmp_path("inet/d_empty"), 0755);
    EXPECT(nat_folder_scan(&f, root, NULL, 0) == -1 && strstr(ncmi_error(), "d_empty: no images"), "%s", ncmi_error());
    rmdir(test_tmp_path("inet/d_empty"));
    EXPECT(nat_folder_scan(&f, test_tmp_path("inet/nope"), NULL, 0) == -1 && strstr(ncmi_error(), "inet/nope"), "%s",
           ncmi_error());
    g_log_remove_handler("VIPS", quiet);
}

TEST(natdata_folder_dataset)
{
    const char *root = make_folder("inet2");
    REQUIRE(root, "cannot write the folder: %s", ncmi_error());
    guint quiet = quiet_vips();
    nat_folder f;
    REQUIRE(nat_folder_scan(&f, root, NULL, 0) == 0, "%s", ncmi_error());
    nat_aug a;
    nat_aug_imagenet(&a, 24, 20, 0);
    float *ref = NULL;
    size_t nref = 0;
    uint64_t tref = 0;
    for (int k = 0; k < 2; k++) {
        tr_dataset d;
        nat_loader_opts o;
        nat_loader_opts_default(&o);
        o.workers = k ? 3 : 1;
        o.warn = fopen(test_tmp_path("warn%d.txt", k), "w+");
        REQUIRE(nat_folder_dataset_init(&d, "train", root, &f, NULL, 0, &a, &o) == 0, "%s", ncmi_error());
        EXPECT(strcmp(d.sample_id(&d, 4), "b_dog/Zebra.jpg") == 0 && d.labels[4] == 1, "id %s", d.sample_id(&d, 4));
        size_t n;
        uint64_t tail;
        float *x = run_like_trainer(&d, 2, 4, 77, 0, &n, &tail);
        REQUIRE(x, "%s", ncmi_error());
        EXPECT(n == (size_t)2 * 10 * 3 * 24 * 24 + 10 * 3 * 20 * 20, "%zu floats", n);
        nat_loader_stats s;
        nat_dataset_stats(&d, &s);
        EXPECT(s.unreadable == 2 && s.substituted >= 6, "%ld unreadable, %ld substituted", s.unreadable, s.substituted);
        /* eval: the corrupt c2 and the truncated c3 are replaced by c4 */
        const float *ev = x + (size_t)2 * 10 * 3 * 24 * 24;
        const size_t m = 3 * 20 * 20;
        EXPECT(memcmp(ev + 1 * m, ev + 3 * m, m * sizeof(float)) == 0 && memcmp(ev + 2 * m, ev + 3 * m, m * sizeof(float)) == 0,
               "eval of the unreadable files is not their substitute's");
        char buf[4096] = "";
        rewind(o.warn);
        size_t got = fread(buf, 1, sizeof buf - 1, o.warn);
        buf[got] = 0;
        fclose(o.warn);
        EXPECT(strstr(buf, "a_cat/c2.JPEG") && strstr(buf, "a_cat/c3.jpg") && strstr(buf, "replaced"), "warnings: %s", buf);
        if (!k) {
            ref = x;
            nref = n;
            tref = tail;
            /* eval of an image equals decode + Resize + CenterCrop + Normalize */
            char path[4096];
            uint8_t *rgb, *o8;
            int w, h, ow, oh;
            REQUIRE(nat_image_decode(nat_folder_path(&f, 5, path, sizeof path), &rgb, &w, &h) == 0, "%s", ncmi_error());
            REQUIRE(nat_aug_run(&a, 0, NULL, rgb, w, h, 3, &o8, &ow, &oh) == 0, "%s", ncmi_error());
            float *v = malloc(m * sizeof(float));
            nat_normalize(o8, ow, oh, 3, a.mean, a.std, v);
            EXPECT(memcmp(v, ev + 5 * m, m * sizeof(float)) == 0, "eval tensor of d1.JPEG");
            free(v);
            free(rgb);
            free(o8);
        } else {
            EXPECT(n == nref && memcmp(x, ref, n * sizeof(float)) == 0 && tail == tref, "1 vs 3 workers differ");
            free(x);
        }
        tr_dataset_free(&d);
    }
    free(ref);
    /* strict: the corrupt file is an error of inputs() */
    tr_dataset d;
    nat_loader_opts o;
    nat_loader_opts_default(&o);
    o.workers = 2;
    o.strict = 1;
    REQUIRE(nat_folder_dataset_init(&d, "val", root, &f, (int[]){0, 1, 3}, 3, &a, &o) == 0, "%s", ncmi_error());
    nn_graph *g = nn_graph_new();
    nn_tensor *x[4];
    d.order(&d, NULL, 0);
    EXPECT(d.inputs(&d, g, (int[]){0, 1, 2}, 3, 0, NULL, x) == -1, "strict: corrupt file accepted");
    EXPECT(strstr(ncmi_error(), "dataset val") && strstr(ncmi_error(), "a_cat/c2.JPEG: cannot decode"), "%s", ncmi_error());
    EXPECT(d.inputs(&d, g, (int[]){0, 2}, 2, 0, NULL, x) == 1, "strict, good files: %s", ncmi_error());
    nn_graph_free(g);
    tr_dataset_free(&d);
    /* a recipe without one output size */
    nat_aug_imagenet(&a, 24, 20, 0);
    a.eval_crop = 0;
    EXPECT(nat_folder_dataset_init(&d, "val", root, &f, NULL, 0, &a, NULL) == -1 && strstr(ncmi_error(), "eval_crop"),
           "%s", ncmi_error());
    nat_folder_free(&f);
    g_log_remove_handler("VIPS", quiet);
}

#endif

/* images/s of the two training pipelines (printed; checked loosely) */
TEST(natdata_speed)
{
    /* CIFAR: 32x32, crop + flip + rotation + normalise */
    nat_images im;
    REQUIRE(make_random_set(&im, 4096, 32, 32, 3, 9) == 0, "%s", ncmi_error());
    nat_aug a;
    nat_aug_cifar(&a);
    double cifar_rate[3] = {0};
    for (int w = 1; w <= 2; w++) {
        tr_dataset d;
        nat_loader_opts o;
        nat_loader_opts_default(&o);
        o.workers = w;
        REQUIRE(nat_image_dataset_init(&d, "train", NULL, &im, NULL, 0, &a, &o) == 0, "%s", ncmi_error());
        double t0 = now_s();
        size_t n;
        uint64_t tail;
        float *x = run_like_trainer(&d, 1, 128, 1, 0, &n, &tail); /* + an eval pass */
        double dt = now_s() - t0;
        free(x);
        cifar_rate[w] = 2 * 4096 / dt;
        tr_dataset_free(&d);
    }
    nat_images_free(&im);
    printf("    CIFAR pipeline (train epoch + eval pass): %.0f images/s with 1 worker, %.0f with 2\n", cifar_rate[1],
           cifar_rate[2]);
    EXPECT(cifar_rate[1] > 2000, "CIFAR pipeline %.0f images/s", cifar_rate[1]);
#if NCMI_HAVE_VIPS
    /* ImageNet: 500x375 JPEGs, decode + RandomResizedCrop(224) + flip + normalise */
    char root[1024];
    snprintf(root, sizeof root, "%s", test_tmp_path("speed"));
    mkdir(root, 0755);
    const int N = 48;
    for (int c = 0; c < 2; c++) {
        mkdir(test_tmp_path("speed/c%d", c), 0755);
        for (int i = 0; i < N / 2; i++)
            REQUIRE(write_img(test_tmp_path("speed/c%d/%03d.JPEG", c, i), 500, 375, 3, (uint32_t)(c * 100 + i)) == 0,
                    "%s", ncmi_error());
    }
    nat_folder f;
    REQUIRE(nat_folder_scan(&f, root, NULL, 0) == 0, "%s", ncmi_error());
    nat_aug_imagenet(&a, 224, 224, 0);
    double inet_rate[3] = {0}, eval_rate[3] = {0};
    for (int w = 1; w <= 2; w++) {
        tr_dataset d;
        nat_loader_opts o;
        nat_loader_opts_default(&o);
        o.workers = w;
        REQUIRE(nat_folder_dataset_init(&d, "train", root, &f, NULL, 0, &a, &o) == 0, "%s", ncmi_error());
        nn_graph *g = nn_graph_new();
        nn_rng r;
        nn_rng_seed(&r, 1);
        int perm[48];
        nn_tensor *x[4];
        double t0 = now_s();
        for (int e = 0; e < 2; e++) {
            nn_rng_permutation(&r, perm, N);
            d.order(&d, perm, N);
            for (int b = 0; b < N; b += 16) {
                REQUIRE(d.inputs(&d, g, perm + b, 16, 1, &r, x) == 1, "%s", ncmi_error());
                nn_graph_reset(g);
            }
        }
        inet_rate[w] = 2 * N / (now_s() - t0);
        t0 = now_s();
        d.order(&d, NULL, 0);
        for (int b = 0; b < N; b += 16) {
            int idx[16];
            for (int i = 0; i < 16; i++) idx[i] = b + i;
            REQUIRE(d.inputs(&d, g, idx, 16, 0, NULL, x) == 1, "%s", ncmi_error());
            nn_graph_reset(g);
        }
        eval_rate[w] = N / (now_s() - t0);
        nn_graph_free(g);
        tr_dataset_free(&d);
    }
    nat_folder_free(&f);
    printf("    ImageNet pipeline, 500x375 JPEGs -> 224: train %.0f images/s with 1 worker, %.0f with 2; "
           "eval (Resize 256 + CenterCrop 224) %.0f / %.0f\n",
           inet_rate[1], inet_rate[2], eval_rate[1], eval_rate[2]);
    EXPECT(inet_rate[1] > 20, "ImageNet pipeline %.0f images/s", inet_rate[1]);
#endif
}
