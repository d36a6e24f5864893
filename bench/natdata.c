/* Throughput of the natural-image input pipelines (natural/loader.h), as
 * the trainer drives them (order() + batches), per worker count:
 *
 *   cifar_train   50,000 random 32x32 images, RandomCrop(32, 4) + flip +
 *                 RandomRotation(15) + Normalize, batches of 128
 *   cifar_eval    the same set, Normalize only, batches of 128 (batches of
 *                 4 MB or more are zeroed by nn_tensor_new on OpenMP threads,
 *                 whose spinning afterwards takes the CPU from the workers on
 *                 a small machine: OMP_WAIT_POLICY=passive, docs/natural.md)
 *   inet_decode   decoding alone (one thread), 500x375 JPEGs
 *   inet_train    500x375 JPEGs (generated, quality 90): decode +
 *                 RandomResizedCrop(224) + flip + Normalize, batches of 64
 *   inet_eval     decode + Resize(256) + CenterCrop(224) + Normalize
 *
 * Prints one line per case: CASE <name> workers <W> <images/s> <CPU us per
 * image> (all threads: on a busy machine the CPU time is the steadier figure;
 * 1e6 / it is the rate one core gives).
 * usage: build/bench_natdata [jpegs (default 256)] [workers... (default 1 2)]
 * NCMI_BENCH_NATDATA_DIR=<dir>: write the JPEGs there and keep them (for
 * bench/natdata_torch.py <dir>: the peer on the same files). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../natural/loader.h"
#include "../nn/error.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static double cpu(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static uint32_t mix32(uint32_t x)
{
    x ^= x >> 16;
    x *= 0x7FEB352Du;
    x ^= x >> 15;
    x *= 0x846CA68Bu;
    x ^= x >> 16;
    return x;
}

static void report(const char *name, int workers, int n, double wall, double cpu_s)
{
    printf("CASE %-12s workers %2d %9.0f images/s %9.0f us CPU/image\n", name, workers, n / wall,
           1e6 * cpu_s / n);
}

/* one pass over d: training (a permutation, batches) or eval (natural order) */
static void pass(const char *name, int workers, tr_dataset *d, int training, int bs, nn_rng *r)
{
    nn_graph *g = nn_graph_new();
    int n = d->n, *idx = malloc((size_t)n * sizeof *idx);
    if (training) {
        nn_rng_permutation(r, idx, n);
        d->order(d, idx, n);
    } else {
        for (int i = 0; i < n; i++) idx[i] = i;
        d->order(d, NULL, 0);
    }
    double t0 = now(), c0 = cpu();
    for (int b = 0; b < n; b += bs) {
        nn_tensor *x[TR_MAX_INPUTS];
        if (d->inputs(d, g, idx + b, n - b < bs ? n - b : bs, training, r, x) != 1) {
            fprintf(stderr, "bench_natdata: %s\n", ncmi_error());
            exit(1);
        }
        nn_graph_reset(g);
    }
    report(name, workers, n, now() - t0, cpu() - c0);
    nn_graph_free(g);
    free(idx);
}

int main(int argc, char **argv)
{
    int njpeg = argc > 1 ? atoi(argv[1]) : 256;
    int W[16], nw = 0;
    for (int i = 2; i < argc && nw < 16; i++) W[nw++] = atoi(argv[i]);
    if (!nw) {
        W[nw++] = 1;
        W[nw++] = 2;
    }
    if (njpeg < 16) njpeg = 16;
    nn_rng r;
    nn_rng_seed(&r, 1);

    /* CIFAR */
    nat_images im;
    if (nat_images_alloc(&im, 50000, 32, 32, 3, 100)) return 1;
    for (size_t i = 0; i < (size_t)50000 * 3072; i++) im.pixels[i] = (uint8_t)(mix32((uint32_t)i) >> 3);
    nat_aug a;
    nat_aug_cifar(&a);
    for (int k = 0; k < nw; k++) {
        tr_dataset d;
        nat_loader_opts o;
        nat_loader_opts_default(&o);
        o.workers = W[k];
        if (nat_image_dataset_init(&d, "train", NULL, &im, NULL, 0, &a, &o)) return 1;
        pass("cifar_train", W[k], &d, 1, 128, &r);
        pass("cifar_eval", W[k], &d, 0, 128, &r);
        tr_dataset_free(&d);
    }
    nat_images_free(&im);

    /* ImageNet-style folder of generated 500x375 JPEGs */
    char root[256];
    const char *keep = getenv("NCMI_BENCH_NATDATA_DIR");
    if (keep && *keep) snprintf(root, sizeof root, "%s", keep);
    else snprintf(root, sizeof root, "/tmp/ncmi-bench-natdata-%d", (int)getpid());
    mkdir(root, 0755);
    uint8_t *px = malloc(500 * 375 * 3);
    for (int c = 0; c < 4; c++) {
        char dir[512];
        snprintf(dir, sizeof dir, "%s/class%d", root, c);
        mkdir(dir, 0755);
        for (int i = c; i < njpeg; i += 4) {
            /* smooth shapes and mild noise: a photo's JPEG size, not noise's */
            for (int y = 0; y < 375; y++)
                for (int x = 0; x < 500; x++)
                    for (int ch = 0; ch < 3; ch++) {
                        double v = 128 + 70 * sin((x + 31.0 * ch + 7 * i) / (19.0 + i % 11)) * cos((y - 9.0 * ch) / 23.0) +
                                   (double)(mix32((uint32_t)(i * 562500 + (y * 500 + x) * 3 + ch)) & 15) - 8;
                        px[((size_t)y * 500 + x) * 3 + ch] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
                    }
            char path[600];
            snprintf(path, sizeof path, "%s/%05d.JPEG", dir, i);
            if (nat_image_write(path, px, 500, 375, 3, 90)) {
                fprintf(stderr, "bench_natdata: %s\n", ncmi_error());
                return 1;
            }
        }
    }
    free(px);
    nat_folder f;
    if (nat_folder_scan(&f, root, NULL, 0)) {
        fprintf(stderr, "bench_natdata: %s\n", ncmi_error());
        return 1;
    }
    double t0 = now(), c0 = cpu();
    for (int i = 0; i < f.n; i++) {
        char path[600];
        uint8_t *rgb;
        int w, h;
        if (nat_image_decode(nat_folder_path(&f, i, path, sizeof path), &rgb, &w, &h)) return 1;
        free(rgb);
    }
    report("inet_decode", 0, f.n, now() - t0, cpu() - c0);
    nat_aug_imagenet(&a, 224, 224, 0);
    for (int k = 0; k < nw; k++) {
        tr_dataset d;
        nat_loader_opts o;
        nat_loader_opts_default(&o);
        o.workers = W[k];
        if (nat_folder_dataset_init(&d, "train", root, &f, NULL, 0, &a, &o)) return 1;
        pass("inet_train", W[k], &d, 1, 64, &r);
        pass("inet_eval", W[k], &d, 0, 64, &r);
        tr_dataset_free(&d);
    }
    for (int i = 0; i < f.n && !(keep && *keep); i++) {
        char path[600];
        remove(nat_folder_path(&f, i, path, sizeof path));
    }
    for (int c = 0; c < 4 && !(keep && *keep); c++) {
        char dir[512];
        snprintf(dir, sizeof dir, "%s/class%d", root, c);
        rmdir(dir);
    }
    if (!(keep && *keep)) rmdir(root);
    nat_folder_free(&f);
    return 0;
}
