/* Image transforms for natural-image training, with torchvision 0.14's
 * semantics on PIL images (docs/natural.md "Augmentations").
 *
 * Images are uint8, HWC, c channels (3 = RGB; 1 = grey, in-memory sets such
 * as MNIST only). A sample goes through
 *
 *   training:   [RandomResizedCrop(rrc_size) + PIL bilinear resize]
 *               [RandomCrop(crop_size or the current size, padding, zero fill)]
 *               [RandomHorizontalFlip(flip_p)]
 *               [RandomRotation(rotate_deg): nearest, zero fill, PIL's rotate]
 *   evaluation: [Resize(eval_resize): shorter side, PIL bilinear]
 *               [CenterCrop(eval_crop)]
 *   both:       ToTensor + Normalize(mean, std) -> float CHW
 *
 * each bracket only when its parameter is set. Random choices are drawn first
 * (nat_aug_draw, from an nn_rng) and then applied (nat_aug_run): applying is
 * deterministic, so with the same parameters the pixels are torchvision's
 * functional calls' (F.resized_crop, F.pad + F.crop, F.hflip, F.rotate,
 * F.resize, F.center_crop) byte for byte; tests/test_natdata.c checks them
 * against tests/golden/natdata.safetensors. torchvision's own random draws
 * (torch's generator) are not reproduced: the draws follow the same
 * distributions and algorithms (RandomResizedCrop's 10 attempts and centre
 * crop fallback included).
 *
 * Resizing goes through features/preprocess.h (Pillow-exact antialiased
 * bilinear), so it needs c == 3. */
#ifndef NCMI_NATURAL_AUGMENT_H
#define NCMI_NATURAL_AUGMENT_H

#include <stdint.h>

#include "../nn/rng.h"

/* Normalisation constants as torchvision holds them (Python doubles rounded
 * to float32). CIFAR: the NCMI code's CIFAR-100 statistics; ImageNet: the
 * usual ones (= FX_IMAGENET_*); MNIST: 0.1307 / 0.3081. */
extern const float NAT_CIFAR_MEAN[3], NAT_CIFAR_STD[3];
extern const float NAT_IMAGENET_MEAN[3], NAT_IMAGENET_STD[3];
extern const float NAT_MNIST_MEAN[1], NAT_MNIST_STD[1];

typedef struct nat_aug {
    /* training */
    int rrc_size;           /* RandomResizedCrop((rrc_size, rrc_size)); 0: off */
    double rrc_scale[2];    /* area fraction range (0.08, 1) */
    double rrc_ratio[2];    /* aspect ratio range (3/4, 4/3) */
    int crop_padding;       /* RandomCrop padding (zero fill) */
    int crop_size;          /* RandomCrop size; 0 with crop_padding > 0: the current size */
    double flip_p;          /* RandomHorizontalFlip probability; 0: off */
    double rotate_deg;      /* RandomRotation((-d, d)); 0: off */
    /* evaluation */
    int eval_resize;        /* Resize(eval_resize): shorter side; 0: off */
    int eval_crop;          /* CenterCrop(eval_crop); 0: off */
    /* both */
    float mean[3], std[3];  /* Normalize (grey images use [0]) */
} nat_aug;

/* The NCMI code's CIFAR recipe: RandomCrop(32, padding=4), flip 0.5,
 * RandomRotation(15); eval: none; CIFAR mean/std. */
void nat_aug_cifar(nat_aug *a);
/* ImageNet: RandomResizedCrop(train_size, (0.08, 1), (3/4, 4/3)) + flip 0.5;
 * eval: Resize(eval_resize) + CenterCrop(eval_size), eval_resize 0 meaning
 * round(eval_size * 256 / 224) (224 -> 256, 280 -> 320); ImageNet mean/std. */
void nat_aug_imagenet(nat_aug *a, int train_size, int eval_size, int eval_resize);
/* Normalisation only (training and eval alike), e.g. MNIST:
 * nat_aug_plain(a, NAT_MNIST_MEAN, NAT_MNIST_STD, 1). */
void nat_aug_plain(nat_aug *a, const float *mean, const float *std, int c);

/* Output size of the pipeline for an input of w x h: 0, or -1 with
 * ncmi_error() when the recipe cannot apply (crop larger than the padded
 * image, resizing a grey image, sizes out of range). */
int nat_aug_out_size(const nat_aug *a, int training, int w, int h, int c, int *ow, int *oh);

/* The random choices for one training sample of w x h. */
typedef struct nat_aug_params {
    int rrc_top, rrc_left, rrc_h, rrc_w; /* RandomResizedCrop box (in the input) */
    int rrc_fallback;                    /* 1: the 10 attempts failed, centre crop */
    int crop_top, crop_left;             /* RandomCrop offsets in the padded image */
    int flip;                            /* mirror left-right */
    double angle;                        /* degrees, counter-clockwise (PIL) */
} nat_aug_params;

/* Draw p for an input of w x h (training only). Draw order: RandomResizedCrop
 * (per attempt: scale, log-ratio uniforms; then top, left), RandomCrop (top,
 * left), flip (one uniform < flip_p), angle (uniform in [-d, d)). */
void nat_aug_draw(const nat_aug *a, nn_rng *r, int w, int h, nat_aug_params *p);

/* torchvision's RandomResizedCrop.get_params with uniforms from r. */
void nat_rrc_params(nn_rng *r, int w, int h, const double scale[2], const double ratio[2],
                    int *top, int *left, int *ch, int *cw, int *fallback);

/* Apply: img (w x h x c) -> *out (malloc'd, *ow x *oh x c uint8).
 * training: p must be set (nat_aug_draw); eval: p is ignored (may be NULL).
 * 0, or -1 with ncmi_error(). */
int nat_aug_run(const nat_aug *a, int training, const nat_aug_params *p, const uint8_t *img,
                int w, int h, int c, uint8_t **out, int *ow, int *oh);

/* ToTensor + Normalize: uint8 HWC -> float CHW, each value computed in
 * float32 as torchvision does ((v / 255 - mean) / std). c is 1 or 3. */
void nat_normalize(const uint8_t *img, int w, int h, int c, const float *mean, const float *std,
                   float *dst);

/* ---- the primitives (uint8 HWC, c channels) ---- */

/* out (cw x ch) = the box at (left, top) of img; pixels outside img are 0
 * (zero padding). */
void nat_crop(const uint8_t *img, int w, int h, int c, int top, int left, int ch, int cw,
              uint8_t *out);
/* Mirror left-right in place. */
void nat_hflip(uint8_t *img, int w, int h, int c);
/* PIL's Image.rotate(angle, NEAREST, expand=False, fillcolor=0): angle in
 * degrees counter-clockwise about (w/2, h/2); the transposes for 0/180 (and
 * 90/270 when square), else the affine map in Pillow's 16.16 fixed point.
 * out: w x h x c, must not overlap img. */
void nat_rotate(const uint8_t *img, int w, int h, int c, double angle, uint8_t *out);
/* torchvision Resize(size) on a w x h image: the output size (shorter side
 * -> size, the other int(size * long / short)). */
void nat_resize_shorter(int w, int h, int size, int *ow, int *oh);
/* torchvision CenterCrop(ch, cw) on a w x h image: the box in the input's
 * coordinates (negative / beyond the image where CenterCrop pads):
 * top = int(round((h - ch) / 2.0)) after its padding rule. */
void nat_center_crop_box(int w, int h, int ch, int cw, int *top, int *left);
/* Pillow-exact bilinear resize (c == 3): 0, or -1 with ncmi_error(). */
int nat_resize(const uint8_t *img, int w, int h, uint8_t *out, int ow, int oh);

#endif
