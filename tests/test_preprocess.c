/* features/preprocess.h: the resize against Pillow's Image.resize(BILINEAR),
 * the normalisation against torchvision's ToTensor + Normalize, and alpha
 * compositing against Image.alpha_composite, from the golden file written by
 * tests/reference/preprocess_reference.py; then properties (constant images,
 * bad sizes, alpha 0 / 255, shared plans across threads). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../features/preprocess.h"
#include "../nn/error.h"
#include "../nn/safetensors.h"
#include "golden_io.h"
#include "test.h"

static const char *golden_file(void) { return test_golden_path("preprocess.safetensors"); }
#define test_image test_pattern_image

/* uint8 bytes stored in an I32 tensor (see the script): n bytes into out */
static int read_u8(const nn_safetensors *st, const char *name, uint8_t *out, size_t n)
{
    const nn_st_entry *e = nn_st_find(st, name);
    if (!e || e->dtype != NN_ST_I32 || e->nbytes != n) return -1;
    memcpy(out, st->data + e->offset, n);
    return 0;
}

/* a small I64 tensor as ints (at most cap) -> count, or -1 */
static int read_ints(const nn_safetensors *st, const char *name, int *out, int cap)
{
    const nn_st_entry *e = nn_st_find(st, name);
    if (!e || (int)e->numel > cap) return -1;
    int64_t buf[256];
    if (nn_st_read_i64(st, name, buf, e->numel) != 0) return -1;
    for (size_t i = 0; i < e->numel; i++) out[i] = (int)buf[i];
    return (int)e->numel;
}

static uint8_t *resize_alloc(const uint8_t *in, int iw, int ih, int ow, int oh)
{
    fx_resize_plan *p = fx_resize_plan_new(iw, ih, ow, oh);
    if (!p) return NULL;
    uint8_t *out = malloc((size_t)ow * oh * 3);
    size_t tb = fx_resize_tmp_bytes(p);
    void *tmp = tb ? malloc(tb) : NULL;
    if (out && (tmp || !tb)) fx_resize_rgb(p, in, out, tmp);
    else {
        free(out);
        out = NULL;
    }
    free(tmp);
    fx_resize_plan_free(p);
    return out;
}

/* Every case, with the kernels the machine picks (AVX2 where there is
 * one) and then with the baseline ones (NCMI_NO_AVX2=1 when the plans are
 * made). */
TEST(preprocess_resize_matches_pil)
{
    static const char *cases[] = {"r256", "r512", "r300x200", "r100", "r224", "r256x224", "r224x300"};
    nn_safetensors st;
    if (nn_st_open(&st, golden_file()) != 0)
        REQUIRE(0, "cannot open golden file (committed; regenerate with `make golden`): %s",
                ncmi_error());
    const char *saved = getenv("NCMI_NO_AVX2");
    char *keep = saved ? strdup(saved) : NULL;
    for (size_t ci = 0; ci < 2 * sizeof cases / sizeof *cases; ci++) {
        const size_t nc = sizeof cases / sizeof *cases;
        if (ci == 0) unsetenv("NCMI_NO_AVX2");
        if (ci == nc) {
            setenv("NCMI_NO_AVX2", "1", 1);
            printf("    baseline kernels (NCMI_NO_AVX2=1):\n");
        }
        const char *cname = cases[ci % nc];
        char name[64];
        int sz[5], rows[256];
        snprintf(name, sizeof name, "%s.size", cname);
        if (read_ints(&st, name, sz, 5) != 5) {
            test_fail_at(__FILE__, __LINE__, "%s: missing or bad", name);
            continue;
        }
        snprintf(name, sizeof name, "%s.rows", cname);
        int nr = read_ints(&st, name, rows, 256);
        int iw = sz[0], ih = sz[1], ow = sz[2], oh = sz[3];
        size_t row_bytes = (size_t)ow * 3;
        uint8_t *in = test_image(iw, ih, (uint32_t)sz[4]);
        uint8_t *ref = nr > 0 ? malloc((size_t)nr * row_bytes) : NULL;
        snprintf(name, sizeof name, "%s.out", cname);
        if (!in || !ref || read_u8(&st, name, ref, (size_t)nr * row_bytes) != 0) {
            test_fail_at(__FILE__, __LINE__, "%s: missing or bad golden data", cname);
            free(in);
            free(ref);
            continue;
        }
        uint8_t *out = resize_alloc(in, iw, ih, ow, oh);
        if (!out) {
            test_fail_at(__FILE__, __LINE__, "%s: resize failed: %s", cname, ncmi_error());
            free(in);
            free(ref);
            continue;
        }
        int maxd = 0;
        size_t ndiff = 0, first = (size_t)-1;
        for (int r = 0; r < nr; r++)
            for (size_t j = 0; j < row_bytes; j++) {
                int d = abs((int)out[(size_t)rows[r] * row_bytes + j] - (int)ref[(size_t)r * row_bytes + j]);
                if (d) {
                    if (first == (size_t)-1) first = (size_t)r * row_bytes + j;
                    ndiff++;
                    if (d > maxd) maxd = d;
                }
            }
        printf("    %-9s %dx%d -> %dx%d: %zu values (%d rows) vs Pillow, max |diff| %d, %zu differ\n",
               cname, iw, ih, ow, oh, (size_t)nr * row_bytes, nr, maxd, ndiff);
        /* the arithmetic is Pillow's: anything but equality is a bug */
        if (ndiff) {
            size_t r = first / row_bytes, j = first % row_bytes;
            test_fail_at(__FILE__, __LINE__,
                         "%s: %zu values differ from Pillow (max %d); first at row %d x %zu c %zu: "
                         "ours %d, Pillow %d",
                         cname, ndiff, maxd, rows[r], j / 3, j % 3,
                         out[(size_t)rows[r] * row_bytes + j], ref[first]);
        }
        free(in);
        free(ref);
        free(out);
    }
    if (keep) setenv("NCMI_NO_AVX2", keep, 1);
    else unsetenv("NCMI_NO_AVX2");
    free(keep);
    nn_st_close(&st);
}

TEST(preprocess_normalize_matches_torchvision)
{
    nn_safetensors st;
    if (nn_st_open(&st, golden_file()) != 0)
        REQUIRE(0, "cannot open golden file: %s", ncmi_error());
    int rows[64];
    int nr = read_ints(&st, "tv256.rows", rows, 64);
    const int S = 224;
    size_t n = (size_t)S * S;
    uint8_t *pil = malloc(n * 3);
    float *tv = nr > 0 ? malloc(sizeof(float) * 3 * nr * S) : NULL;
    float *x = malloc(sizeof(float) * 3 * n);
    int shape[3] = {3, nr, S};
    int ok = pil && tv && x && read_u8(&st, "r256.out", pil, n * 3) == 0 &&
             nn_st_read_f32(&st, "tv256.x", tv, (size_t)3 * nr * S, 3, shape) == 0;
    nn_st_close(&st);
    if (!ok) {
        free(pil);
        free(tv);
        free(x);
        REQUIRE(0, "golden tensors tv256.* / r256.out missing or bad: %s", ncmi_error());
    }
    /* twice: from Pillow's own resized bytes, and from ours end to end */
    uint8_t *in = test_image(256, 256, 1);
    uint8_t *ours = in ? resize_alloc(in, 256, 256, S, S) : NULL;
    const uint8_t *src[2] = {pil, ours};
    const char *what[2] = {"Pillow's uint8", "fx_resize_rgb"};
    for (int k = 0; k < 2; k++) {
        if (!src[k]) {
            test_fail_at(__FILE__, __LINE__, "resize failed");
            continue;
        }
        fx_normalize_chw(src[k], S, S, FX_IMAGENET_MEAN, FX_IMAGENET_STD, x);
        double maxd = 0;
        size_t nbits = 0;
        for (int c = 0; c < 3; c++)
            for (int r = 0; r < nr; r++)
                for (int j = 0; j < S; j++) {
                    float a = x[(size_t)c * n + (size_t)rows[r] * S + j];
                    float b = tv[((size_t)c * nr + r) * S + j];
                    double d = fabs((double)a - b);
                    if (!(d <= maxd)) maxd = d;
                    if (memcmp(&a, &b, sizeof a)) nbits++;
                }
        printf("    normalize (%s) vs torchvision Resize+ToTensor+Normalize: %d values, "
               "max |diff| %.3g, %zu not bitwise equal\n",
               what[k], 3 * nr * S, maxd, nbits);
        EXPECT(maxd <= 1e-6, "%s: max |diff| %.3g > 1e-6", what[k], maxd);
    }
    free(in);
    free(ours);
    free(pil);
    free(tv);
    free(x);
}

TEST(preprocess_alpha_matches_pil)
{
    nn_safetensors st;
    if (nn_st_open(&st, golden_file()) != 0)
        REQUIRE(0, "cannot open golden file: %s", ncmi_error());
    static uint8_t ref[256 * 256], rgba[256 * 256 * 4], rgb[256 * 256 * 3];
    int ok = read_u8(&st, "alpha.pil", ref, sizeof ref) == 0;
    nn_st_close(&st);
    REQUIRE(ok, "golden tensor alpha.pil missing or bad");
    for (int a = 0; a < 256; a++)
        for (int c = 0; c < 256; c++) {
            uint8_t *q = rgba + 4 * (a * 256 + c);
            q[0] = (uint8_t)c;
            q[1] = (uint8_t)(255 - c);
            q[2] = (uint8_t)c;
            q[3] = (uint8_t)a;
        }
    fx_rgba_over_white(rgba, 256, 256, rgb);
    int bad = 0;
    for (int i = 0; i < 256 * 256; i++) {
        int c = i % 256, a = i / 256;
        int want_g = ((255 - c) * a + 255 * (255 - a) + 127) / 255;
        if (rgb[3 * i] != ref[i] || rgb[3 * i + 2] != ref[i] || rgb[3 * i + 1] != want_g) {
            if (bad++ < 5)
                test_fail_at(__FILE__, __LINE__, "c %d a %d: ours (%d,%d,%d), Pillow red %d", c, a,
                             rgb[3 * i], rgb[3 * i + 1], rgb[3 * i + 2], ref[i]);
        }
    }
    printf("    alpha over white: 65536 (c, a) pairs vs Pillow alpha_composite, %d differ\n", bad);
    /* in place gives the same */
    static uint8_t inplace[256 * 256 * 4];
    memcpy(inplace, rgba, sizeof rgba);
    fx_rgba_over_white(inplace, 256, 256, inplace);
    EXPECT(memcmp(inplace, rgb, sizeof rgb) == 0, "in-place result differs");
}

TEST(preprocess_alpha_extremes)
{
    uint8_t rgba[256 * 4], rgb[256 * 3];
    for (int a = 0; a < 256; a += 255) {
        for (int c = 0; c < 256; c++) {
            rgba[4 * c] = (uint8_t)c;
            rgba[4 * c + 1] = (uint8_t)(c * 7);
            rgba[4 * c + 2] = (uint8_t)(255 - c);
            rgba[4 * c + 3] = (uint8_t)a;
        }
        fx_rgba_over_white(rgba, 16, 16, rgb);
        for (int i = 0; i < 256 * 3; i++) {
            int want = a == 0 ? 255 : rgba[4 * (i / 3) + i % 3];
            EXPECT(rgb[i] == want, "straight a=%d: pixel %d channel %d = %d, want %d", a, i / 3,
                   i % 3, rgb[i], want);
        }
        /* premultiplied: a=0 means colour 0 (transparent black) -> white;
         * a=255 the colour itself */
        for (int c = 0; c < 256; c++)
            if (a == 0) rgba[4 * c] = rgba[4 * c + 1] = rgba[4 * c + 2] = 0;
        fx_rgba_premul_over_white(rgba, 256, 1, rgb);
        for (int i = 0; i < 256 * 3; i++) {
            int want = a == 0 ? 255 : rgba[4 * (i / 3) + i % 3];
            EXPECT(rgb[i] == want, "premultiplied a=%d: pixel %d channel %d = %d, want %d", a,
                   i / 3, i % 3, rgb[i], want);
        }
    }
    /* premultiplied vs straight: equal up to the premultiplication's rounding */
    int maxd = 0;
    for (int a = 0; a < 256; a++)
        for (int c = 0; c < 256; c++) {
            uint8_t s[4] = {(uint8_t)c, (uint8_t)c, (uint8_t)c, (uint8_t)a}, o1[3], o2[3];
            uint8_t pm[4] = {(uint8_t)((c * a + 127) / 255), 0, 0, (uint8_t)a};
            pm[1] = pm[2] = pm[0];
            fx_rgba_over_white(s, 1, 1, o1);
            fx_rgba_premul_over_white(pm, 1, 1, o2);
            int d = abs(o1[0] - o2[0]);
            if (d > maxd) maxd = d;
        }
    EXPECT(maxd <= 1, "premultiplied and straight rules differ by %d", maxd);
}

TEST(preprocess_resize_constant)
{
    const char *saved = getenv("NCMI_NO_AVX2");
    char *keep = saved ? strdup(saved) : NULL;
    for (int mode = 0; mode < 2; mode++) {
        if (mode) setenv("NCMI_NO_AVX2", "1", 1);
        else unsetenv("NCMI_NO_AVX2");
        static const int sz[][4] = {{256, 256, 224, 224}, {512, 512, 224, 224}, {300, 200, 224, 224},
                                    {100, 100, 224, 224}, {224, 224, 224, 224}, {7, 5, 3, 11},
                                    {1, 1, 5, 5},         {5, 5, 1, 1},         {1000, 3, 224, 224},
                                    {256, 224, 224, 224}, {224, 300, 224, 224}};
        static const uint8_t colours[][3] = {{0, 0, 0}, {255, 255, 255}, {1, 128, 254}, {37, 200, 99}};
        for (size_t s = 0; s < sizeof sz / sizeof *sz; s++) {
            int iw = sz[s][0], ih = sz[s][1], ow = sz[s][2], oh = sz[s][3];
            uint8_t *in = malloc((size_t)iw * ih * 3);
            if (!in) break;
            for (size_t k = 0; k < sizeof colours / sizeof *colours; k++) {
                for (size_t i = 0; i < (size_t)iw * ih; i++) memcpy(in + 3 * i, colours[k], 3);
                uint8_t *out = resize_alloc(in, iw, ih, ow, oh);
                if (!out) {
                    test_fail_at(__FILE__, __LINE__, "%dx%d -> %dx%d: %s", iw, ih, ow, oh, ncmi_error());
                    continue;
                }
                size_t bad = 0;
                for (size_t i = 0; i < (size_t)ow * oh * 3; i++) bad += out[i] != colours[k][i % 3];
                EXPECT(bad == 0, "%dx%d -> %dx%d colour (%d,%d,%d): %zu values changed", iw, ih, ow,
                       oh, colours[k][0], colours[k][1], colours[k][2], bad);
                free(out);
            }
            free(in);
        }
    }
    if (keep) setenv("NCMI_NO_AVX2", keep, 1);
    else unsetenv("NCMI_NO_AVX2");
    free(keep);
}

TEST(preprocess_plan_errors)
{
    static const int bad[][4] = {{0, 256, 224, 224}, {256, 0, 224, 224},  {256, 256, 0, 224},
                                 {256, 256, 224, 0}, {-1, 256, 224, 224}, {256, 256, -224, 224},
                                 {256, 256, 224, -5}, {FX_RESIZE_MAX_SIDE + 1, 4, 4, 4},
                                 {4, 4, 4, FX_RESIZE_MAX_SIDE + 1}};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        ncmi_error_clear();
        fx_resize_plan *p = fx_resize_plan_new(bad[i][0], bad[i][1], bad[i][2], bad[i][3]);
        EXPECT(p == NULL, "plan %dx%d -> %dx%d accepted", bad[i][0], bad[i][1], bad[i][2], bad[i][3]);
        EXPECT(strstr(ncmi_error(), "bad size") != NULL, "message: '%s'", ncmi_error());
        fx_resize_plan_free(p);
    }
    fx_resize_plan_free(NULL);
    /* equal sizes: a copy that needs no scratch */
    fx_resize_plan *p = fx_resize_plan_new(224, 224, 224, 224);
    REQUIRE(p, "%s", ncmi_error());
    EXPECT(fx_resize_tmp_bytes(p) == 0, "copy plan wants %zu scratch bytes", fx_resize_tmp_bytes(p));
    int a, b, c, d;
    fx_resize_plan_sizes(p, &a, &b, &c, &d);
    EXPECT(a == 224 && b == 224 && c == 224 && d == 224, "sizes %d %d %d %d", a, b, c, d);
    fx_resize_plan_free(p);
}

/* one plan shared by several threads, each with its own scratch: same bytes */
TEST(preprocess_plan_shared_across_threads)
{
    const int iw = 256, ow = 224, npatch = 16;
    fx_resize_plan *p = fx_resize_plan_new(iw, iw, ow, ow);
    REQUIRE(p, "%s", ncmi_error());
    size_t in_b = (size_t)iw * iw * 3, out_b = (size_t)ow * ow * 3;
    uint8_t *in = malloc(in_b * npatch), *out = malloc(out_b * npatch), *ser = malloc(out_b * npatch);
    void *tmp = malloc(fx_resize_tmp_bytes(p));
    REQUIRE(in && out && ser && tmp, "oom");
    for (int k = 0; k < npatch; k++) {
        uint8_t *img = test_image(iw, iw, 100u + (uint32_t)k);
        REQUIRE(img, "oom");
        memcpy(in + k * in_b, img, in_b);
        free(img);
        fx_resize_rgb(p, in + k * in_b, ser + k * out_b, tmp);
    }
#pragma omp parallel num_threads(4)
    {
        void *t = malloc(fx_resize_tmp_bytes(p));
#pragma omp for schedule(dynamic, 1)
        for (int k = 0; k < npatch; k++)
            if (t) fx_resize_rgb(p, in + k * in_b, out + k * out_b, t);
        free(t);
    }
    EXPECT(memcmp(out, ser, out_b * npatch) == 0, "threaded results differ from serial ones");
    free(in);
    free(out);
    free(ser);
    free(tmp);
    fx_resize_plan_free(p);
}
