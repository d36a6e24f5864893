/* Patch preprocessing throughput on one thread (features/preprocess.h):
 * resize, normalisation and the two together, per input size, on noise
 * patches. Prints one line per case:
 *     CASE <name> <patches/s> <us/patch>
 * usage: build/bench_preprocess [seconds per case, default 1] */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../features/preprocess.h"
#include "../nn/error.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

#define NPATCH 8 /* distinct inputs cycled through (larger than L1, like real reads) */

static volatile float sink;

static int bench(const char *name, int in, int out, int do_resize, int do_norm, double secs)
{
    fx_resize_plan *p = fx_resize_plan_new(in, in, out, out);
    if (!p) {
        fprintf(stderr, "bench_preprocess: %s\n", ncmi_error());
        return -1;
    }
    size_t in_b = (size_t)in * in * 3, out_b = (size_t)out * out * 3;
    uint8_t *src = malloc(in_b * NPATCH), *dst = malloc(out_b);
    float *x = malloc(sizeof(float) * 3 * out * out);
    void *tmp = malloc(fx_resize_tmp_bytes(p) + 1);
    if (!src || !dst || !x || !tmp) {
        fprintf(stderr, "bench_preprocess: out of memory\n");
        free(src);
        free(dst);
        free(x);
        free(tmp);
        fx_resize_plan_free(p);
        return -1;
    }
    uint32_t s = 12345;
    for (size_t i = 0; i < in_b * NPATCH; i++) {
        s = s * 1664525u + 1013904223u;
        src[i] = (uint8_t)(s >> 24);
    }
    if (!do_resize) memcpy(dst, src, out_b);
    long n = 0;
    double t0 = now(), t;
    do {
        for (int k = 0; k < 16; k++, n++) {
            if (do_resize) fx_resize_rgb(p, src + (n % NPATCH) * in_b, dst, tmp);
            if (do_norm) fx_normalize_chw(dst, out, out, FX_IMAGENET_MEAN, FX_IMAGENET_STD, x);
        }
        t = now() - t0;
    } while (t < secs);
    sink = x[n % (3 * out * out)] + dst[0];
    printf("CASE %-26s %9.0f patches/s %8.1f us/patch\n", name, n / t, 1e6 * t / n);
    printf("RESULT preprocess %s %.0f - patches/s\n", name, n / t); /* bench/report.py; no peer */
    free(src);
    free(dst);
    free(x);
    free(tmp);
    fx_resize_plan_free(p);
    return 0;
}

int main(int argc, char **argv)
{
    double secs = argc > 1 ? atof(argv[1]) : 1.0;
    if (!(secs > 0)) secs = 1.0;
    int rc = 0;
    rc |= bench("resize_256_224", 256, 224, 1, 0, secs);
    rc |= bench("resize_512_224", 512, 224, 1, 0, secs);
    rc |= bench("resize_224_224(copy)", 224, 224, 1, 0, secs);
    rc |= bench("normalize_224", 224, 224, 0, 1, secs);
    rc |= bench("resize+normalize_256_224", 256, 224, 1, 1, secs);
    rc |= bench("resize+normalize_512_224", 512, 224, 1, 1, secs);
    return rc ? 1 : 0;
}
