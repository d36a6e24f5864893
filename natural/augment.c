/* Image transforms with torchvision's semantics; see augment.h. */
#include "augment.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../features/preprocess.h"
#include "../nn/error.h"

const float NAT_CIFAR_MEAN[3] = {(float)0.5071, (float)0.4865, (float)0.4409};
const float NAT_CIFAR_STD[3] = {(float)0.2673, (float)0.2564, (float)0.2762};
const float NAT_IMAGENET_MEAN[3] = {(float)0.485, (float)0.456, (float)0.406};
const float NAT_IMAGENET_STD[3] = {(float)0.229, (float)0.224, (float)0.225};
const float NAT_MNIST_MEAN[1] = {(float)0.1307};
const float NAT_MNIST_STD[1] = {(float)0.3081};

#define NAT_MAX_SIDE 65536

void nat_aug_plain(nat_aug *a, const float *mean, const float *std, int c)
{
    memset(a, 0, sizeof *a);
    for (int k = 0; k < 3; k++) {
        a->mean[k] = mean[c == 1 ? 0 : k];
        a->std[k] = std[c == 1 ? 0 : k];
    }
}

void nat_aug_cifar(nat_aug *a)
{
    nat_aug_plain(a, NAT_CIFAR_MEAN, NAT_CIFAR_STD, 3);
    a->crop_padding = 4;
    a->crop_size = 0; /* the image's own size: 32 for CIFAR */
    a->flip_p = 0.5;
    a->rotate_deg = 15;
}

void nat_aug_imagenet(nat_aug *a, int train_size, int eval_size, int eval_resize)
{
    nat_aug_plain(a, NAT_IMAGENET_MEAN, NAT_IMAGENET_STD, 3);
    a->rrc_size = train_size;
    a->rrc_scale[0] = 0.08;
    a->rrc_scale[1] = 1.0;
    a->rrc_ratio[0] = 3.0 / 4.0;
    a->rrc_ratio[1] = 4.0 / 3.0;
    a->flip_p = 0.5;
    a->eval_crop = eval_size;
    a->eval_resize = eval_resize > 0 ? eval_resize : (int)lround(eval_size * 256.0 / 224.0);
}

/* ---- primitives ---- */

void nat_crop(const uint8_t *img, int w, int h, int c, int top, int left, int ch, int cw,
              uint8_t *out)
{
    const size_t orow = (size_t)cw * c;
    /* columns of the box inside the image */
    int x0 = left < 0 ? -left : 0;
    int x1 = left + cw > w ? w - left : cw;
    if (x1 < x0) x1 = x0;
    for (int y = 0; y < ch; y++) {
        uint8_t *o = out + (size_t)y * orow;
        int sy = top + y;
        if (sy < 0 || sy >= h || x1 == x0) {
            memset(o, 0, orow);
            continue;
        }
        if (x0 > 0) memset(o, 0, (size_t)x0 * c);
        memcpy(o + (size_t)x0 * c, img + ((size_t)sy * w + left + x0) * c, (size_t)(x1 - x0) * c);
        if (x1 < cw) memset(o + (size_t)x1 * c, 0, (size_t)(cw - x1) * c);
    }
}

void nat_hflip(uint8_t *img, int w, int h, int c)
{
    for (int y = 0; y < h; y++) {
        uint8_t *r = img + (size_t)y * w * c;
        for (int a = 0, b = w - 1; a < b; a++, b--)
            for (int k = 0; k < c; k++) {
                uint8_t t = r[(size_t)a * c + k];
                r[(size_t)a * c + k] = r[(size_t)b * c + k];
                r[(size_t)b * c + k] = t;
            }
    }
}

/* Python's round(x, 15): the correctly rounded 15-decimal value (glibc's
 * printf rounds exactly, as CPython's dtoa does). */
static double py_round15(double x)
{
    char b[64];
    snprintf(b, sizeof b, "%.15f", x);
    return strtod(b, NULL);
}

/* Python's float % (the result takes the divisor's sign) */
static double py_mod(double x, double m)
{
    double r = fmod(x, m);
    if (r != 0.0) {
        if ((m < 0) != (r < 0)) r += m;
    } else {
        r = copysign(0.0, m);
    }
    return r;
}

static inline void put_px(uint8_t *o, const uint8_t *s, int c)
{
    for (int k = 0; k < c; k++) o[k] = s[k];
}

void nat_rotate(const uint8_t *img, int w, int h, int c, double angle, uint8_t *out)
{
    const double a = py_mod(angle, 360.0);
    /* Image.rotate's fast paths (no centre, no translation) */
    if (a == 0) {
        memcpy(out, img, (size_t)w * h * c);
        return;
    }
    if (a == 180) { /* Transpose.ROTATE_180 */
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++)
                put_px(out + ((size_t)y * w + x) * c,
                       img + ((size_t)(h - 1 - y) * w + (w - 1 - x)) * c, c);
        return;
    }
    if ((a == 90 || a == 270) && w == h) {
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++) {
                /* ROTATE_90 (counter-clockwise): out(x, y) = in(w-1-y, x);
                 * ROTATE_270: out(x, y) = in(y, h-1-x) */
                int sx = a == 90 ? w - 1 - y : y, sy = a == 90 ? x : h - 1 - x;
                put_px(out + ((size_t)y * w + x) * c, img + ((size_t)sy * w + sx) * c, c);
            }
        return;
    }
    /* the reverse affine map, as Image.rotate builds it */
    const double rad = -(a * (M_PI / 180.0));
    double m[6] = {py_round15(cos(rad)), py_round15(sin(rad)), 0.0,
                   py_round15(-sin(rad)), py_round15(cos(rad)), 0.0};
    const double cx = w / 2.0, cy = h / 2.0;
    double t2 = m[0] * -cx + m[1] * -cy + m[2];
    double t5 = m[3] * -cx + m[4] * -cy + m[5];
    m[2] = t2 + cx;
    m[5] = t5 + cy;
    memset(out, 0, (size_t)w * h * c); /* fillcolor 0 */
    /* ImagingTransformAffine, nearest: 16.16 fixed point when the four
     * corners map inside +-32768, floating point otherwise */
    int fixed = 1;
    const int cxs[4] = {0, w, 0, w}, cys[4] = {0, h, h, 0};
    for (int i = 0; i < 4; i++)
        if (!(fabs(cxs[i] * m[0] + cys[i] * m[1] + m[2]) < 32768.0 &&
              fabs(cxs[i] * m[3] + cys[i] * m[4] + m[5]) < 32768.0))
            fixed = 0;
    if (fixed) {
#define NAT_FIX(v) ((int)floor((v) * 65536.0 + 0.5))
        int a0 = NAT_FIX(m[0]), a1 = NAT_FIX(m[1]), a3 = NAT_FIX(m[3]), a4 = NAT_FIX(m[4]);
        int a2 = NAT_FIX(m[2] + m[0] * 0.5 + m[1] * 0.5);
        int a5 = NAT_FIX(m[5] + m[3] * 0.5 + m[4] * 0.5);
#undef NAT_FIX
        for (int y = 0; y < h; y++) {
            int xx = a2, yy = a5;
            uint8_t *o = out + (size_t)y * w * c;
            for (int x = 0; x < w; x++, o += c) {
                int xin = xx >> 16; /* arithmetic shift: floor */
                if (xin >= 0 && xin < w) {
                    int yin = yy >> 16;
                    if (yin >= 0 && yin < h) put_px(o, img + ((size_t)yin * w + xin) * c, c);
                }
                xx += a0;
                yy += a3;
            }
            a2 += a1;
            a5 += a4;
        }
        return;
    }
    double xo = m[2] + m[1] * 0.5 + m[0] * 0.5;
    double yo = m[5] + m[4] * 0.5 + m[3] * 0.5;
    for (int y = 0; y < h; y++) {
        double xx = xo, yy = yo;
        uint8_t *o = out + (size_t)y * w * c;
        for (int x = 0; x < w; x++, o += c) {
            int xin = xx < 0.0 ? -1 : (int)xx;
            if (xin >= 0 && xin < w) {
                int yin = yy < 0.0 ? -1 : (int)yy;
                if (yin >= 0 && yin < h) put_px(o, img + ((size_t)yin * w + xin) * c, c);
            }
            xx += m[0];
            yy += m[3];
        }
        xo += m[1];
        yo += m[4];
    }
}

void nat_resize_shorter(int w, int h, int size, int *ow, int *oh)
{
    int shrt = w <= h ? w : h, lng = w <= h ? h : w;
    /* Python: int(size * long / short), a correctly rounded true division */
    int nl = (int)((double)size * (double)lng / (double)shrt);
    if (w <= h) {
        *ow = size;
        *oh = nl;
    } else {
        *ow = nl;
        *oh = size;
    }
}

/* one axis of F.center_crop: the crop's start in the input's coordinates */
static int center_axis(int in, int crop)
{
    int pad0 = 0;
    if (crop > in) {
        pad0 = (crop - in) / 2;
        in = crop; /* padded: (crop - in) // 2 before, (crop - in + 1) // 2 after */
    }
    return (int)rint((in - crop) / 2.0) - pad0; /* int(round(x)): half to even */
}

void nat_center_crop_box(int w, int h, int ch, int cw, int *top, int *left)
{
    *top = center_axis(h, ch);
    *left = center_axis(w, cw);
}

int nat_resize(const uint8_t *img, int w, int h, uint8_t *out, int ow, int oh)
{
    fx_resize_plan *p = fx_resize_plan_new(w, h, ow, oh);
    if (!p) return -1;
    size_t tb = fx_resize_tmp_bytes(p);
    void *tmp = tb ? malloc(tb) : NULL;
    if (tb && !tmp) {
        fx_resize_plan_free(p);
        return ncmi_error_set("resize %dx%d -> %dx%d: out of memory", w, h, ow, oh);
    }
    fx_resize_rgb(p, img, out, tmp);
    free(tmp);
    fx_resize_plan_free(p);
    return 0;
}

void nat_normalize(const uint8_t *img, int w, int h, int c, const float *mean, const float *std,
                   float *dst)
{
    if (c == 3) {
        fx_normalize_chw(img, w, h, mean, std, dst);
        return;
    }
    float lut[256];
    for (int v = 0; v < 256; v++) lut[v] = ((float)v / 255.0f - mean[0]) / std[0];
    const size_t n = (size_t)w * h;
    for (size_t i = 0; i < n; i++) dst[i] = lut[img[i]];
}

/* ---- random parameters ---- */

void nat_rrc_params(nn_rng *r, int w, int h, const double scale[2], const double ratio[2],
                    int *top, int *left, int *ch, int *cw, int *fallback)
{
    const double area = (double)h * w;
    const double lr0 = log(ratio[0]), lr1 = log(ratio[1]);
    for (int attempt = 0; attempt < 10; attempt++) {
        double target = area * (scale[0] + (scale[1] - scale[0]) * nn_rng_uniform(r));
        double ar = exp(lr0 + (lr1 - lr0) * nn_rng_uniform(r));
        /* int(round(x)): half to even */
        int ww = (int)rint(sqrt(target * ar));
        int hh = (int)rint(sqrt(target / ar));
        if (ww > 0 && ww <= w && hh > 0 && hh <= h) {
            *top = (int)nn_rng_below(r, (uint64_t)(h - hh + 1));
            *left = (int)nn_rng_below(r, (uint64_t)(w - ww + 1));
            *ch = hh;
            *cw = ww;
            *fallback = 0;
            return;
        }
    }
    /* centre crop fallback */
    double in_ratio = (double)w / (double)h;
    double rmin = ratio[0] < ratio[1] ? ratio[0] : ratio[1];
    double rmax = ratio[0] < ratio[1] ? ratio[1] : ratio[0];
    int ww, hh;
    if (in_ratio < rmin) {
        ww = w;
        hh = (int)rint(ww / rmin);
    } else if (in_ratio > rmax) {
        hh = h;
        ww = (int)rint(hh * rmax);
    } else {
        ww = w;
        hh = h;
    }
    *top = (h - hh) / 2;
    *left = (w - ww) / 2;
    *ch = hh;
    *cw = ww;
    *fallback = 1;
}

void nat_aug_draw(const nat_aug *a, nn_rng *r, int w, int h, nat_aug_params *p)
{
    memset(p, 0, sizeof *p);
    if (a->rrc_size > 0) {
        nat_rrc_params(r, w, h, a->rrc_scale, a->rrc_ratio, &p->rrc_top, &p->rrc_left, &p->rrc_h,
                       &p->rrc_w, &p->rrc_fallback);
        w = h = a->rrc_size;
    }
    if (a->crop_padding > 0 || a->crop_size > 0) {
        int cs_w = a->crop_size > 0 ? a->crop_size : w, cs_h = a->crop_size > 0 ? a->crop_size : h;
        int pw = w + 2 * a->crop_padding, ph = h + 2 * a->crop_padding;
        p->crop_top = ph >= cs_h ? (int)nn_rng_below(r, (uint64_t)(ph - cs_h + 1)) : 0;
        p->crop_left = pw >= cs_w ? (int)nn_rng_below(r, (uint64_t)(pw - cs_w + 1)) : 0;
    }
    if (a->flip_p > 0) p->flip = nn_rng_uniform(r) < a->flip_p;
    if (a->rotate_deg > 0) p->angle = -a->rotate_deg + 2 * a->rotate_deg * nn_rng_uniform(r);
}

/* ---- the pipeline ---- */

static int check_side(int v, const char *what)
{
    if (v < 1 || v > NAT_MAX_SIDE)
        return ncmi_error_set("augmentation: %s %d is out of range (1..%d)", what, v, NAT_MAX_SIDE);
    return 0;
}

int nat_aug_out_size(const nat_aug *a, int training, int w, int h, int c, int *ow, int *oh)
{
    if (check_side(w, "image width") || check_side(h, "image height")) return -1;
    if (c != 1 && c != 3) return ncmi_error_set("augmentation: %d channels (1 or 3 expected)", c);
    if (training) {
        if (a->rrc_size > 0) {
            if (check_side(a->rrc_size, "RandomResizedCrop size")) return -1;
            if (c != 3) return ncmi_error_set("augmentation: RandomResizedCrop needs RGB images");
            if (!(a->rrc_scale[0] > 0 && a->rrc_scale[0] <= a->rrc_scale[1] &&
                  a->rrc_ratio[0] > 0 && a->rrc_ratio[0] <= a->rrc_ratio[1]))
                return ncmi_error_set("augmentation: RandomResizedCrop scale (%g, %g) / ratio (%g, %g) "
                                      "must be positive and ordered",
                                      a->rrc_scale[0], a->rrc_scale[1], a->rrc_ratio[0], a->rrc_ratio[1]);
            w = h = a->rrc_size;
        }
        if (a->crop_padding < 0 || a->crop_size < 0)
            return ncmi_error_set("augmentation: negative RandomCrop size or padding");
        if (a->crop_padding > 0 || a->crop_size > 0) {
            int cw = a->crop_size > 0 ? a->crop_size : w, ch = a->crop_size > 0 ? a->crop_size : h;
            if (cw > w + 2 * a->crop_padding || ch > h + 2 * a->crop_padding)
                return ncmi_error_set("augmentation: RandomCrop(%d, padding=%d) is larger than the "
                                      "padded %dx%d image", a->crop_size, a->crop_padding, w, h);
            w = cw;
            h = ch;
        }
        if (!(a->flip_p >= 0 && a->flip_p <= 1) || !(a->rotate_deg >= 0 && a->rotate_deg <= 360))
            return ncmi_error_set("augmentation: flip probability %g (0..1) or rotation %g degrees "
                                  "(0..360) out of range", a->flip_p, a->rotate_deg);
    } else {
        if (a->eval_resize > 0) {
            if (check_side(a->eval_resize, "Resize size")) return -1;
            if (c != 3) return ncmi_error_set("augmentation: Resize needs RGB images");
            int nw, nh;
            nat_resize_shorter(w, h, a->eval_resize, &nw, &nh);
            if (check_side(nw, "resized width") || check_side(nh, "resized height")) return -1;
            w = nw;
            h = nh;
        }
        if (a->eval_crop > 0) {
            if (check_side(a->eval_crop, "CenterCrop size")) return -1;
            w = h = a->eval_crop;
        }
    }
    *ow = w;
    *oh = h;
    return 0;
}

int nat_aug_run(const nat_aug *a, int training, const nat_aug_params *p, const uint8_t *img,
                int w, int h, int c, uint8_t **out, int *ow, int *oh)
{
    *out = NULL;
    int fw, fh;
    if (nat_aug_out_size(a, training, w, h, c, &fw, &fh)) return -1;
    /* the largest intermediate: the input, the resized image, the padded crop */
    uint8_t *cur = NULL, *nxt = NULL;
    const uint8_t *src = img; /* current image (borrowed until the first step) */
    int cw = w, chh = h;
#define NAT_STEP_ALLOC(W, H)                                                          \
    do {                                                                              \
        nxt = malloc((size_t)(W) * (H) * c + 1);                                      \
        if (!nxt) {                                                                   \
            free(cur);                                                                \
            return ncmi_error_set("augmentation: out of memory for %dx%d", (W), (H)); \
        }                                                                             \
    } while (0)
#define NAT_STEP_DONE(W, H) \
    do {                    \
        free(cur);          \
        cur = nxt;          \
        nxt = NULL;         \
        src = cur;          \
        cw = (W);           \
        chh = (H);          \
    } while (0)
    if (training) {
        if (a->rrc_size > 0) {
            if (p->rrc_top < 0 || p->rrc_left < 0 || p->rrc_h < 1 || p->rrc_w < 1 ||
                p->rrc_top + p->rrc_h > chh || p->rrc_left + p->rrc_w > cw) {
                free(cur);
                return ncmi_error_set("augmentation: crop box %dx%d at (%d, %d) outside the %dx%d image",
                                      p->rrc_w, p->rrc_h, p->rrc_left, p->rrc_top, cw, chh);
            }
            uint8_t *box = malloc((size_t)p->rrc_w * p->rrc_h * c);
            if (!box) {
                free(cur);
                return ncmi_error_set("augmentation: out of memory");
            }
            nat_crop(src, cw, chh, c, p->rrc_top, p->rrc_left, p->rrc_h, p->rrc_w, box);
            NAT_STEP_ALLOC(a->rrc_size, a->rrc_size);
            int rc = nat_resize(box, p->rrc_w, p->rrc_h, nxt, a->rrc_size, a->rrc_size);
            free(box);
            if (rc) {
                free(nxt);
                free(cur);
                return -1;
            }
            NAT_STEP_DONE(a->rrc_size, a->rrc_size);
        }
        if (a->crop_padding > 0 || a->crop_size > 0) {
            int sw = a->crop_size > 0 ? a->crop_size : cw, sh = a->crop_size > 0 ? a->crop_size : chh;
            NAT_STEP_ALLOC(sw, sh);
            nat_crop(src, cw, chh, c, p->crop_top - a->crop_padding, p->crop_left - a->crop_padding,
                     sh, sw, nxt);
            NAT_STEP_DONE(sw, sh);
        }
        if (a->flip_p > 0 && p->flip) {
            if (!cur) {
                NAT_STEP_ALLOC(cw, chh);
                memcpy(nxt, src, (size_t)cw * chh * c);
                NAT_STEP_DONE(cw, chh);
            }
            nat_hflip(cur, cw, chh, c);
        }
        if (a->rotate_deg > 0) {
            NAT_STEP_ALLOC(cw, chh);
            nat_rotate(src, cw, chh, c, p->angle, nxt);
            NAT_STEP_DONE(cw, chh);
        }
    } else {
        if (a->eval_resize > 0) {
            int nw, nh;
            nat_resize_shorter(cw, chh, a->eval_resize, &nw, &nh);
            NAT_STEP_ALLOC(nw, nh);
            if (nat_resize(src, cw, chh, nxt, nw, nh)) {
                free(nxt);
                free(cur);
                return -1;
            }
            NAT_STEP_DONE(nw, nh);
        }
        if (a->eval_crop > 0) {
            int top, left;
            nat_center_crop_box(cw, chh, a->eval_crop, a->eval_crop, &top, &left);
            NAT_STEP_ALLOC(a->eval_crop, a->eval_crop);
            nat_crop(src, cw, chh, c, top, left, a->eval_crop, a->eval_crop, nxt);
            NAT_STEP_DONE(a->eval_crop, a->eval_crop);
        }
    }
#undef NAT_STEP_ALLOC
#undef NAT_STEP_DONE
    if (!cur) { /* nothing changed the image: a copy */
        cur = malloc((size_t)cw * chh * c + 1);
        if (!cur) return ncmi_error_set("augmentation: out of memory");
        memcpy(cur, img, (size_t)cw * chh * c);
    }
    NCMI_CHECK(cw == fw && chh == fh, "augmentation: %dx%d produced, %dx%d planned", cw, chh, fw, fh);
    *out = cur;
    *ow = cw;
    *oh = chh;
    return 0;
}
