/* Patch preprocessing for feature extraction (docs/features.md "Preprocessing").
 *
 * What torchvision does to a patch read as a PIL image, reproduced in integer
 * arithmetic so that the results are the same bytes:
 *
 *   RGBA region --fx_rgba_over_white--> RGB uint8
 *            --fx_resize_rgb (PIL Image.resize(size, BILINEAR))--> RGB uint8
 *            --fx_normalize_chw (ToTensor + Normalize)--> float CHW planes
 *
 * Every function is reentrant: a plan is read-only once made and may be
 * shared by any number of reader threads, each with its own scratch buffer.
 * On x86-64 the resize kernels have an AVX2 build chosen at run time when
 * the CPU has AVX2; NCMI_NO_AVX2=1 in the environment when a plan is made
 * keeps that plan on the baseline build (the bytes are the same either way:
 * the arithmetic is exact integer sums). */
#ifndef NCMI_FEATURES_PREPROCESS_H
#define NCMI_FEATURES_PREPROCESS_H

#include <stddef.h>
#include <stdint.h>

/* Largest side a plan accepts (input or output), pixels. */
#define FX_RESIZE_MAX_SIDE 65536

/* Resampling plan from (in_w, in_h) to (out_w, out_h): antialiased bilinear
 * exactly as Pillow's Image.resize(size, Image.BILINEAR) (ImagingResample:
 * triangle filter whose support grows with the downscale factor, horizontal
 * pass then vertical pass, 22-bit fixed-point coefficients, rounding and
 * clipping to uint8 after each pass; a pass whose size does not change is
 * skipped, and equal sizes are a copy, as in Pillow). torchvision's Resize on
 * a PIL image calls exactly this. The per-output-pixel bounds and
 * coefficients are computed once here.
 * NULL with ncmi_error() set when a size is < 1 or > FX_RESIZE_MAX_SIDE, or
 * on allocation failure. */
typedef struct fx_resize_plan fx_resize_plan;
fx_resize_plan *fx_resize_plan_new(int in_w, int in_h, int out_w, int out_h);
void fx_resize_plan_free(fx_resize_plan *p); /* NULL is fine */

/* Bytes of scratch fx_resize_rgb needs: 0 for a copy or a vertical-only
 * plan (tmp may then be NULL); otherwise 16*in_w + 15, plus 3*out_w times
 * the input rows the vertical pass reads when both axes change (176,143
 * bytes for 256x256 -> 224x224, 352,271 for 512x512 -> 224x224). */
size_t fx_resize_tmp_bytes(const fx_resize_plan *p);

/* rgb: in_w*in_h*3 uint8 interleaved -> out: out_w*out_h*3 uint8 (must not
 * overlap rgb). tmp: fx_resize_tmp_bytes(p) bytes owned by the caller, any
 * alignment, so that a reader thread allocates nothing per patch. A plain
 * copy when the sizes are equal. */
void fx_resize_rgb(const fx_resize_plan *p, const uint8_t *rgb, uint8_t *out, void *tmp);

/* The plan's sizes (any pointer may be NULL). */
void fx_resize_plan_sizes(const fx_resize_plan *p, int *in_w, int *in_h, int *out_w, int *out_h);

/* ImageNet statistics, as torchvision's Normalize holds them: the Python
 * doubles 0.485 ... rounded to float32. */
extern const float FX_IMAGENET_MEAN[3], FX_IMAGENET_STD[3];

/* uint8 RGB HWC -> float CHW planes: dst[c*w*h + y*w + x] =
 * ((float)v / 255.0f - mean[c]) / std[c], each operation in float32 as
 * ToTensor (div(255)) followed by Normalize (sub_(mean).div_(std)) does, so
 * the values are bitwise torchvision's. dst: 3*w*h floats (one slot of an
 * NCHW batch). */
void fx_normalize_chw(const uint8_t *rgb, int w, int h, const float mean[3], const float std[3],
                      float *dst);

/* Straight (non-premultiplied) RGBA, w*h*4, composited onto opaque white ->
 * RGB w*h*3:
 *     out = (c*a + 255*(255 - a) + 127) / 255      (integer division)
 * i.e. c*a/255 + (255 - a) rounded to nearest (no ties occur: 255 is odd).
 * This is byte for byte what Pillow gives for
 *     Image.alpha_composite(Image.new("RGBA", size, "white"), img).convert("RGB")
 * (checked for all 65,536 (c, a) pairs by tests/test_preprocess.c). a = 0
 * gives white, a = 255 the colour. rgb may be the same buffer as rgba (the
 * conversion runs front to back). */
void fx_rgba_over_white(const uint8_t *rgba, int w, int h, uint8_t *rgb);

/* Premultiplied RGBA (OpenSlide's ARGB with its bytes put in R,G,B,A order,
 * not un-premultiplied), w*h*4 -> RGB over white:
 *     out = min(c + 255 - a, 255)
 * the rule tl_slide_read_rgb (tiler/slide.h) applies to OpenSlide's pixels;
 * for a premultiplied c = round(c_straight * a / 255) it equals
 * fx_rgba_over_white of the straight colour up to the premultiplication's
 * own rounding. rgb may be the same buffer as rgba. */
void fx_rgba_premul_over_white(const uint8_t *rgba, int w, int h, uint8_t *rgb);

#endif
