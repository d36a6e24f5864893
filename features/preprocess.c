/* Patch preprocessing: Pillow-exact antialiased bilinear resize, ImageNet
 * normalisation, alpha compositing onto white. See preprocess.h and
 * docs/features.md "Preprocessing".
 *
 * The resize follows Pillow's ImagingResample (libImaging/Resample.c) step
 * by step, because agreement to the byte depends on every detail:
 *   - per axis, scale = in/out, filterscale = max(scale, 1), support =
 *     1.0 * filterscale (the triangle filter's support grows when shrinking:
 *     that is the antialiasing);
 *   - output pixel i has centre (i + 0.5) * scale and taps
 *     xmin = (int)(centre - support + 0.5) .. (int)(centre + support + 0.5)
 *     clipped to the image, weights tri((x - centre + 0.5) / filterscale)
 *     normalised to sum 1, in double;
 *   - weights become int32 (w * 2^22 rounded half away from zero); a pass
 *     sums v * w from 2^21 (for rounding), shifts right by 22 and clips to
 *     0..255, giving uint8 after each pass;
 *   - horizontal pass first, over the input rows the vertical pass uses, then
 *     the vertical pass; an axis whose size does not change is not
 *     resampled.
 * The code is ours; only the arithmetic is Pillow's. */
#include "preprocess.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../nn/error.h"

#define FX_PREC 22 /* Pillow's PRECISION_BITS = 32 - 8 - 2 */

/* four lanes: one RGB pixel (+ an unused lane) in the horizontal pass
 * (GCC / clang vector extensions) */
typedef int32_t fx_v4i __attribute__((vector_size(16)));

/* x86-64 with GCC or clang: the kernels are also built for AVX2 and chosen
 * at run time (__builtin_cpu_supports); NCMI_NO_AVX2=1 in the environment
 * when a plan is made keeps that plan on the baseline build. */
#if defined(__x86_64__) && defined(__GNUC__)
#define FX_X86_DISPATCH 1
#include <immintrin.h>
#else
#define FX_X86_DISPATCH 0
#endif

const float FX_IMAGENET_MEAN[3] = {(float)0.485, (float)0.456, (float)0.406};
const float FX_IMAGENET_STD[3] = {(float)0.229, (float)0.224, (float)0.225};

/* One axis: out output pixels, each with taps weights starting at input
 * index start[i]. Every pixel uses exactly `taps` weights (the largest count
 * any pixel needs); pixels that need fewer are padded with zero weights and
 * their start moved so that start + taps stays inside the input. A zero
 * weight adds nothing to the integer sum, so the result is Pillow's, and
 * the inner loops get a fixed trip count. */
typedef struct fx_axis {
    int in, out, taps;
    int *start;     /* [out] */
    int32_t *w;     /* [out * taps] */
    fx_v4i *wv;     /* [out * taps], w broadcast to 4 lanes (horizontal axis only) */
} fx_axis;

struct fx_resize_plan {
    int in_w, in_h, out_w, out_h;
    int need_h, need_v;
    int avx2; /* run the AVX2 build of the kernels */
    int row0, nrows; /* input rows the horizontal pass produces */
    fx_axis ax, ay;
};

static double tri(double x)
{
    if (x < 0.0) x = -x;
    return x < 1.0 ? 1.0 - x : 0.0;
}

static void axis_free(fx_axis *a)
{
    free(a->start);
    free(a->w);
    free(a->wv);
    a->start = NULL;
    a->w = NULL;
    a->wv = NULL;
}

/* Pillow's precompute_coeffs + normalize_coeffs_8bpc for box [0, in). */
static int axis_init(fx_axis *a, int in, int out)
{
    memset(a, 0, sizeof *a);
    a->in = in;
    a->out = out;
    /* Pillow: scale = (double)(in1 - in0) / outSize with float in0 = 0 */
    double scale = (double)(float)in / out;
    double filterscale = scale < 1.0 ? 1.0 : scale;
    double support = 1.0 * filterscale;
    int ksize = (int)ceil(support) * 2 + 1;
    double ss = 1.0 / filterscale;

    int *lo = malloc((size_t)out * 2 * sizeof *lo);
    double *kk = malloc((size_t)out * ksize * sizeof *kk);
    if (!lo || !kk) {
        free(lo);
        free(kk);
        return ncmi_error_set("resize plan: out of memory");
    }
    int maxn = 1;
    for (int i = 0; i < out; i++) {
        double center = 0.0f + (i + 0.5) * scale;
        int xmin = (int)(center - support + 0.5);
        if (xmin < 0) xmin = 0;
        int xmax = (int)(center + support + 0.5);
        if (xmax > in) xmax = in;
        xmax -= xmin;
        double *k = kk + (size_t)i * ksize, ww = 0.0;
        for (int x = 0; x < xmax; x++) {
            double w = tri((x + xmin - center + 0.5) * ss);
            k[x] = w;
            ww += w;
        }
        for (int x = 0; x < xmax; x++)
            if (ww != 0.0) k[x] /= ww;
        lo[2 * i] = xmin;
        lo[2 * i + 1] = xmax;
        if (xmax > maxn) maxn = xmax;
    }
    if (maxn > in) maxn = in;

    a->taps = maxn;
    a->start = malloc((size_t)out * sizeof *a->start);
    a->w = calloc((size_t)out * maxn, sizeof *a->w);
    if (!a->start || !a->w) {
        free(lo);
        free(kk);
        axis_free(a);
        return ncmi_error_set("resize plan: out of memory");
    }
    for (int i = 0; i < out; i++) {
        int xmin = lo[2 * i], n = lo[2 * i + 1];
        int s = xmin;
        if (s + maxn > in) s = in - maxn; /* pad in front: leading weights 0 */
        a->start[i] = s;
        const double *k = kk + (size_t)i * ksize;
        int32_t *w = a->w + (size_t)i * maxn;
        for (int x = 0; x < n; x++) {
            double v = k[x] * (1 << FX_PREC);
            w[xmin - s + x] = (int32_t)(k[x] < 0 ? -0.5 + v : 0.5 + v);
        }
    }
    free(lo);
    free(kk);
    return 0;
}

fx_resize_plan *fx_resize_plan_new(int in_w, int in_h, int out_w, int out_h)
{
    if (in_w < 1 || in_h < 1 || out_w < 1 || out_h < 1 || in_w > FX_RESIZE_MAX_SIDE ||
        in_h > FX_RESIZE_MAX_SIDE || out_w > FX_RESIZE_MAX_SIDE || out_h > FX_RESIZE_MAX_SIDE) {
        ncmi_error_set("resize plan: bad size %dx%d -> %dx%d (each side 1..%d)", in_w, in_h,
                       out_w, out_h, FX_RESIZE_MAX_SIDE);
        return NULL;
    }
    fx_resize_plan *p = calloc(1, sizeof *p);
    if (!p) {
        ncmi_error_set("resize plan: out of memory");
        return NULL;
    }
    p->in_w = in_w;
    p->in_h = in_h;
    p->out_w = out_w;
    p->out_h = out_h;
    p->need_h = out_w != in_w;
    p->need_v = out_h != in_h;
#if FX_X86_DISPATCH
    const char *no = getenv("NCMI_NO_AVX2");
    p->avx2 = __builtin_cpu_supports("avx2") && !(no && *no && strcmp(no, "0") != 0);
#endif
    p->row0 = 0;
    p->nrows = in_h;
    if (p->need_h) {
        if (axis_init(&p->ax, in_w, out_w) != 0) goto fail;
        size_t nw = (size_t)out_w * p->ax.taps;
        p->ax.wv = aligned_alloc(sizeof(fx_v4i), nw * sizeof(fx_v4i));
        if (!p->ax.wv) {
            ncmi_error_set("resize plan: out of memory");
            goto fail;
        }
        for (size_t i = 0; i < nw; i++) {
            int32_t k = p->ax.w[i];
            p->ax.wv[i] = (fx_v4i){k, k, k, k};
        }
    }
    if (p->need_v) {
        if (axis_init(&p->ay, in_h, out_h) != 0) goto fail;
        /* the horizontal pass only produces the rows the vertical one reads */
        int first = p->ay.start[0], last = first;
        for (int i = 0; i < out_h; i++) {
            if (p->ay.start[i] < first) first = p->ay.start[i];
            if (p->ay.start[i] + p->ay.taps > last) last = p->ay.start[i] + p->ay.taps;
        }
        p->row0 = first;
        p->nrows = last - first;
    }
    return p;
fail:
    fx_resize_plan_free(p);
    return NULL;
}

void fx_resize_plan_free(fx_resize_plan *p)
{
    if (!p) return;
    axis_free(&p->ax);
    axis_free(&p->ay);
    free(p);
}

void fx_resize_plan_sizes(const fx_resize_plan *p, int *in_w, int *in_h, int *out_w, int *out_h)
{
    if (in_w) *in_w = p->in_w;
    if (in_h) *in_h = p->in_h;
    if (out_w) *out_w = p->out_w;
    if (out_h) *out_h = p->out_h;
}

/* scratch (see fx_resize_rgb): 15 bytes of alignment slack + the input row
 * widened to 16 bytes per pixel + the horizontal pass's rows when both
 * passes run */
size_t fx_resize_tmp_bytes(const fx_resize_plan *p)
{
    if (!p->need_h) return 0;
    size_t b = 15 + (size_t)p->in_w * 16;
    if (p->need_v) b += (size_t)p->out_w * p->nrows * 3;
    return b;
}

/* ---- the two passes ----
 *
 * All sums are exact integers (|sum| < 2^31), so the order of the additions
 * and the instruction set do not change a single result. Each pass has a
 * portable build (GCC / clang vector extensions; SSE2 on x86-64, NEON on
 * arm64) and, on x86-64, an AVX2 build (the vertical pass: the same C
 * compiled for AVX2; the horizontal pass: SSE4.1 / AVX2 intrinsics), picked
 * per plan at run time. tests/test_preprocess.c checks both against Pillow. */

#define FX_HALF (1 << (FX_PREC - 1))

#define FX_INLINE static inline __attribute__((always_inline))

FX_INLINE uint8_t clip8(int32_t s)
{
    s >>= FX_PREC;
    s = s < 0 ? 0 : s;
    s = s > 255 ? 255 : s;
    return (uint8_t)s;
}

/* Horizontal pass, one row: s (in pixels) -> d (out pixels). The row is first
 * widened to one fx_v4i per pixel (px, `in` entries: R, G, B, 0), so that
 * each tap is one vector load, multiply by the tap's weight (stored
 * broadcast in the plan) and add for the three channels at once. TAPS is a
 * constant at the call sites below, which unrolls the tap loop. */
FX_INLINE void hrow(const fx_axis *a, const uint8_t *restrict s, uint8_t *restrict d,
                    fx_v4i *restrict px, const int TAPS)
{
    const int in = a->in, out = a->out;
    const int *start = a->start;
    const fx_v4i *w = a->wv;
    for (int x = 0; x < in; x++) px[x] = (fx_v4i){s[3 * x], s[3 * x + 1], s[3 * x + 2], 0};
    for (int i = 0; i < out; i++) {
        const fx_v4i *q = px + start[i];
        const fx_v4i *k = w + (size_t)i * TAPS;
        fx_v4i acc = {FX_HALF, FX_HALF, FX_HALF, FX_HALF};
#pragma GCC unroll 8
        for (int t = 0; t < TAPS; t++) acc += q[t] * k[t];
        acc >>= FX_PREC;
        acc &= ~(acc < 0);              /* max(acc, 0) */
        fx_v4i hi = acc > 255;
        acc = (acc & ~hi) | (hi & 255); /* min(acc, 255) */
        d[3 * i] = (uint8_t)acc[0];
        d[3 * i + 1] = (uint8_t)acc[1];
        d[3 * i + 2] = (uint8_t)acc[2];
    }
}

/* the horizontal pass over nrows rows, with the tap count as a constant for
 * the usual cases (256->224: 3 taps, 512->224: 5 or 6, upsampling: 2) */
#define HPASS_SWITCH(ROW)                                                                 \
    for (int y = 0; y < nrows; y++) {                                                     \
        const uint8_t *s = src + (size_t)y * a->in * 3;                                   \
        uint8_t *d = dst + (size_t)y * a->out * 3;                                        \
        switch (a->taps) {                                                                \
        case 2: ROW(a, s, d, px, 2); break;                                               \
        case 3: ROW(a, s, d, px, 3); break;                                               \
        case 4: ROW(a, s, d, px, 4); break;                                               \
        case 5: ROW(a, s, d, px, 5); break;                                               \
        case 6: ROW(a, s, d, px, 6); break;                                               \
        default: ROW(a, s, d, px, a->taps); break;                                        \
        }                                                                                 \
    }

static void hpass_base(const fx_axis *a, const uint8_t *src, int nrows, uint8_t *dst, void *pxv)
{
    fx_v4i *px = pxv;
    HPASS_SWITCH(hrow)
}

#if FX_X86_DISPATCH
/* The same row with SSE4.1 / AVX2 intrinsics: the widening is one
 * pmovzxbd per pixel, the clipping the saturation of packssdw + packuswb,
 * and the three bytes go out in one 4-byte store (the fourth byte is
 * overwritten by the next pixel; the row's last pixel is stored exactly). */
__attribute__((target("avx2"))) FX_INLINE void hrow_avx2(const fx_axis *a, const uint8_t *restrict s,
                                                         uint8_t *restrict d, __m128i *restrict px,
                                                         const int TAPS)
{
    const int in = a->in, out = a->out;
    const int *start = a->start;
    const __m128i *w = (const __m128i *)a->wv;
    for (int x = 0; x < in - 1; x++) {
        int32_t v;
        memcpy(&v, s + 3 * x, 4); /* R G B and the next pixel's R */
        px[x] = _mm_cvtepu8_epi32(_mm_cvtsi32_si128(v));
    }
    const uint8_t *l = s + 3 * (in - 1); /* the last pixel: no read past the row */
    px[in - 1] = _mm_setr_epi32(l[0], l[1], l[2], 0);
    const __m128i half = _mm_set1_epi32(FX_HALF);
    for (int i = 0; i < out; i++) {
        const __m128i *q = px + start[i];
        const __m128i *k = w + (size_t)i * TAPS;
        __m128i acc = half;
#pragma GCC unroll 8
        for (int t = 0; t < TAPS; t++)
            acc = _mm_add_epi32(acc, _mm_mullo_epi32(_mm_load_si128(q + t), _mm_load_si128(k + t)));
        acc = _mm_srai_epi32(acc, FX_PREC);
        acc = _mm_packus_epi16(_mm_packs_epi32(acc, acc), acc);
        uint32_t v = (uint32_t)_mm_cvtsi128_si32(acc);
        if (i + 1 < out) {
            memcpy(d + 3 * i, &v, 4);
        } else {
            d[3 * i] = (uint8_t)v;
            d[3 * i + 1] = (uint8_t)(v >> 8);
            d[3 * i + 2] = (uint8_t)(v >> 16);
        }
    }
}

__attribute__((target("avx2"))) static void hpass_avx2(const fx_axis *a, const uint8_t *src,
                                                       int nrows, uint8_t *dst, void *pxv)
{
    __m128i *px = pxv;
    HPASS_SWITCH(hrow_avx2)
}
#endif

/* Vertical pass: output row i = sum over taps of source rows start[i] + t
 * (rows n = w*3 bytes wide), in chunks of an int32 accumulator that stays
 * in L1; every loop runs over contiguous bytes and vectorises. */
#define FX_CHUNK 512

FX_INLINE void vpass_body(const fx_axis *a, const uint8_t *src, int row0, size_t n,
                          uint8_t *restrict dst)
{
    int32_t acc[FX_CHUNK];
    const int taps = a->taps;
    for (int i = 0; i < a->out; i++) {
        const uint8_t *s0 = src + (size_t)(a->start[i] - row0) * n;
        const int32_t *k = a->w + (size_t)i * taps;
        uint8_t *restrict d = dst + (size_t)i * n;
        for (size_t j0 = 0; j0 < n; j0 += FX_CHUNK) {
            const size_t m = n - j0 < FX_CHUNK ? n - j0 : FX_CHUNK;
            const uint8_t *restrict s = s0 + j0;
            const int32_t k0 = k[0];
            for (size_t j = 0; j < m; j++) acc[j] = FX_HALF + s[j] * k0;
            for (int t = 1; t < taps; t++) {
                const uint8_t *restrict st = s + (size_t)t * n;
                const int32_t kt = k[t];
                for (size_t j = 0; j < m; j++) acc[j] += st[j] * kt;
            }
            for (size_t j = 0; j < m; j++) d[j0 + j] = clip8(acc[j]);
        }
    }
}

static void vpass_base(const fx_axis *a, const uint8_t *src, int row0, size_t n, uint8_t *dst)
{
    vpass_body(a, src, row0, n, dst);
}

#if FX_X86_DISPATCH
__attribute__((target("avx2"))) static void vpass_avx2(const fx_axis *a, const uint8_t *src,
                                                       int row0, size_t n, uint8_t *dst)
{
    vpass_body(a, src, row0, n, dst);
}
#endif

static void hpass(const fx_resize_plan *p, const uint8_t *src, int nrows, uint8_t *dst, void *px)
{
#if FX_X86_DISPATCH
    if (p->avx2) {
        hpass_avx2(&p->ax, src, nrows, dst, px);
        return;
    }
#endif
    hpass_base(&p->ax, src, nrows, dst, px);
}

static void vpass(const fx_resize_plan *p, const uint8_t *src, int row0, size_t n, uint8_t *dst)
{
#if FX_X86_DISPATCH
    if (p->avx2) {
        vpass_avx2(&p->ay, src, row0, n, dst);
        return;
    }
#endif
    vpass_base(&p->ay, src, row0, n, dst);
}

void fx_resize_rgb(const fx_resize_plan *p, const uint8_t *rgb, uint8_t *out, void *tmp)
{
    const size_t in_row = (size_t)p->in_w * 3;
    if (!p->need_h && !p->need_v) {
        memcpy(out, rgb, in_row * p->in_h);
        return;
    }
    if (!p->need_h) {
        vpass(p, rgb, 0, in_row, out);
        return;
    }
    /* scratch: the input row widened to 16 bytes per pixel (16-byte
     * aligned), then the horizontal pass's rows when a vertical pass follows */
    // NOLINTNEXTLINE(performance-no-int-to-ptr): false positive, rounding the scratch pointer up to 16-byte alignment
    fx_v4i *px = (fx_v4i *)(((uintptr_t)tmp + 15) & ~(uintptr_t)15);
    if (!p->need_v) {
        hpass(p, rgb, p->in_h, out, px);
        return;
    }
    uint8_t *mid = (uint8_t *)(px + p->in_w);
    hpass(p, rgb + (size_t)p->row0 * in_row, p->nrows, mid, px);
    vpass(p, mid, p->row0, (size_t)p->out_w * 3, out);
}

void fx_normalize_chw(const uint8_t *rgb, int w, int h, const float mean[3], const float std[3],
                      float *dst)
{
    /* the 3 x 256 possible values, each computed as torchvision does */
    float lut[3][256];
    for (int c = 0; c < 3; c++)
        for (int v = 0; v < 256; v++) lut[c][v] = ((float)v / 255.0f - mean[c]) / std[c];
    const size_t n = (size_t)w * h;
    float *r = dst, *g = dst + n, *b = dst + 2 * n;
    for (size_t i = 0; i < n; i++) {
        r[i] = lut[0][rgb[3 * i]];
        g[i] = lut[1][rgb[3 * i + 1]];
        b[i] = lut[2][rgb[3 * i + 2]];
    }
}

void fx_rgba_over_white(const uint8_t *rgba, int w, int h, uint8_t *rgb)
{
    const size_t n = (size_t)w * h;
    for (size_t i = 0; i < n; i++) {
        unsigned r = rgba[4 * i], g = rgba[4 * i + 1], b = rgba[4 * i + 2], a = rgba[4 * i + 3];
        unsigned bg = 255 * (255 - a) + 127;
        rgb[3 * i] = (uint8_t)((r * a + bg) / 255);
        rgb[3 * i + 1] = (uint8_t)((g * a + bg) / 255);
        rgb[3 * i + 2] = (uint8_t)((b * a + bg) / 255);
    }
}

void fx_rgba_premul_over_white(const uint8_t *rgba, int w, int h, uint8_t *rgb)
{
    const size_t n = (size_t)w * h;
    for (size_t i = 0; i < n; i++) {
        unsigned r = rgba[4 * i], g = rgba[4 * i + 1], b = rgba[4 * i + 2], a = rgba[4 * i + 3];
        unsigned bg = 255 - a;
        r += bg;
        g += bg;
        b += bg;
        rgb[3 * i] = (uint8_t)(r > 255 ? 255 : r);
        rgb[3 * i + 1] = (uint8_t)(g > 255 ? 255 : g);
        rgb[3 * i + 2] = (uint8_t)(b > 255 ? 255 : b);
    }
}
