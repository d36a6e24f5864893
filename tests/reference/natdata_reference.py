#!/usr/bin/python3
"""Writes tests/golden/natdata.safetensors: what torchvision 0.14 and PIL do to
images, for natural/augment.c and natural/imagefolder.c (tests/test_natdata.c
compares).

Input images are not stored: both sides generate them with test_image()
(tests/reference/preprocess_reference.py; fx-test image in the C tests).
uint8 data is stored as I32 tensors whose little-endian bytes are the bytes
(padded with zeros to a multiple of 4; "<name>.len" I64 [1] holds the true
length where it is not a multiple of 4), as preprocess_reference.py does.

Deterministic evaluation transforms (torchvision Compose on a PIL image):
  "ev.<k>.cfg"  I64 [5]: w, h, seed, resize (shorter side), crop
  "ev.<k>.out"  uint8 [crop, crop, 3] of Compose([Resize(resize), CenterCrop(crop)])
  "ev.0.x"      F32 [3, crop, crop]: the same + ToTensor + Normalize(ImageNet)
  "cifar.x"     F32 [3, 32, 32]: ToTensor + Normalize(CIFAR mean/std) of a 32x32 image
The deterministic part of the random ones, with fixed parameters:
  "rot.<k>.cfg" I64 [3]: w, h, seed; "rot.<k>.angle" F32 [1] (angles exact in float32)
  "rot.<k>.out" uint8 [h, w, 3] of F.rotate(img, angle, NEAREST, fill=0)
  "pcrop.<k>.cfg" I64 [4]: top, left in the padded image, padding, size (32x32 input, seed 11)
  "pcrop.<k>.out" uint8 of F.crop(F.pad(img, padding, fill=0), top, left, size, size)
  "rrc.<k>.cfg"  I64 [7]: w, h, seed, top, left, height, width; out size 24
  "rrc.<k>.out"  uint8 [24, 24, 3] of F.resized_crop(img, ..., [24, 24], BILINEAR)
  "fb.cfg"       I64 [k, 6]: w, h -> RandomResizedCrop.get_params(scale=(2, 2.5)) =
                 top, left, height, width (always the centre-crop fallback) + 0
  "rrcstats.<k>" F32 [8]: w, h, then over 20000 draws of RandomResizedCrop's
                 get_params (torch.manual_seed(0)): mean and std of the area
                 fraction, mean and std of log(width / height), mean of the box
                 centre's x / w and y / h (distribution checks of the C draws)
Decoding (PIL writes the file, the C test decodes the same bytes with libvips):
  "dec.<name>.file" (+ ".len"): the file's bytes
  "dec.<name>.rgb"  uint8 [h, w, 3]: Image.open(file).convert("RGB")
  "dec.<name>.size" I64 [2]: w, h
  "dec.rgbjpg.x" F32 [3, 32, 32]: torchvision's default ImageFolder loader +
                 Resize(36) + CenterCrop(32) + ToTensor + Normalize(ImageNet)
"""
import io
import os
import sys

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import golden_path, st_write  # noqa: E402
from preprocess_reference import test_image  # noqa: E402

import torchvision  # noqa: E402
import torchvision.transforms as T  # noqa: E402
import torchvision.transforms.functional as F  # noqa: E402

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR_STD = (0.2673, 0.2564, 0.2762)


def pack(a):
    """bytes / uint8 array -> (I32 array, true length)"""
    b = bytes(a) if isinstance(a, (bytes, bytearray)) else np.ascontiguousarray(a, np.uint8).tobytes()
    n = len(b)
    b += b"\0" * ((4 - n % 4) % 4)
    return np.frombuffer(b, dtype="<i4").copy(), n


def put_u8(t, name, a):
    arr, n = pack(a)
    t[name] = arr
    if n % 4:
        t[name + ".len"] = np.array([n], dtype=np.int64)


def pil(w, h, seed):
    return Image.fromarray(test_image(w, h, seed), "RGB")


# w, h, seed, resize, crop
EVAL = [
    (150, 113, 21, 73, 64),   # landscape, both axes resampled
    (90, 131, 22, 40, 32),    # portrait
    (61, 61, 23, 61, 60),     # same size (a copy), odd margin: round(0.5) = 0
    (50, 40, 24, 40, 48),     # crop larger than the image: CenterCrop pads
    (120, 90, 25, 36, 33),    # margins 1.5 -> 2 and 7.5 -> 8 (half to even)
    (77, 200, 26, 45, 40),    # long side int(45 * 200 / 77) = 116
]

# w, h, seed, angle (degrees)
ROT = [
    (32, 32, 31, 0.0), (32, 32, 31, 7.5), (32, 32, 31, -13.25), (32, 32, 31, 15.0),
    (32, 32, 31, -0.0078125), (32, 32, 31, 90.0), (32, 32, 31, 180.0), (32, 32, 31, -90.0),
    (40, 30, 32, 12.703125), (40, 30, 32, 90.0), (33, 31, 33, -14.5),
]

PCROP = [(0, 0, 4, 32), (8, 8, 4, 32), (3, 6, 4, 32), (5, 1, 2, 30)]

# w, h, seed, top, left, height, width
RRC = [(120, 90, 41, 10, 20, 60, 80), (120, 90, 41, 40, 100, 7, 9), (120, 90, 41, 0, 0, 90, 120),
       (64, 64, 42, 3, 5, 24, 24)]

RRC_STATS = [(500, 375), (40, 24)]

FALLBACK = [(100, 40), (40, 100), (50, 45), (7, 3), (3, 7)]


def main():
    t = {}
    norm = T.Compose([T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    for k, (w, h, seed, r, c) in enumerate(EVAL):
        img = pil(w, h, seed)
        out = T.Compose([T.Resize(r), T.CenterCrop(c)])(img)
        assert out.size == (c, c)
        t["ev.%d.cfg" % k] = np.array([w, h, seed, r, c], dtype=np.int64)
        put_u8(t, "ev.%d.out" % k, np.asarray(out))
        if k == 0:
            t["ev.0.x"] = norm(out)
    cif = pil(32, 32, 27)
    t["cifar.x"] = T.Compose([T.ToTensor(), T.Normalize(CIFAR_MEAN, CIFAR_STD)])(cif)

    for k, (w, h, seed, angle) in enumerate(ROT):
        out = F.rotate(pil(w, h, seed), angle, interpolation=T.InterpolationMode.NEAREST, fill=0)
        # torchvision's RandomRotation default: the same call with fill=0
        t["rot.%d.cfg" % k] = np.array([w, h, seed], dtype=np.int64)
        t["rot.%d.angle" % k] = np.array([angle], dtype=np.float32)
        assert float(np.float32(angle)) == angle
        put_u8(t, "rot.%d.out" % k, np.asarray(out))

    src = pil(32, 32, 11)
    for k, (top, left, pad, size) in enumerate(PCROP):
        out = F.crop(F.pad(src, pad, fill=0), top, left, size, size)
        t["pcrop.%d.cfg" % k] = np.array([top, left, pad, size], dtype=np.int64)
        put_u8(t, "pcrop.%d.out" % k, np.asarray(out))

    for k, (w, h, seed, top, left, hh, ww) in enumerate(RRC):
        out = F.resized_crop(pil(w, h, seed), top, left, hh, ww, [24, 24],
                             interpolation=T.InterpolationMode.BILINEAR)
        t["rrc.%d.cfg" % k] = np.array([w, h, seed, top, left, hh, ww], dtype=np.int64)
        put_u8(t, "rrc.%d.out" % k, np.asarray(out))

    fb = []
    for w, h in FALLBACK:
        i, j, hh, ww = T.RandomResizedCrop.get_params(Image.new("RGB", (w, h)), [2.0, 2.5],
                                                      [3.0 / 4.0, 4.0 / 3.0])
        fb.append([w, h, i, j, hh, ww])
    t["fb.cfg"] = np.array(fb, dtype=np.int64)

    for k, (w, h) in enumerate(RRC_STATS):
        torch.manual_seed(0)
        img = Image.new("RGB", (w, h))
        d = np.array([T.RandomResizedCrop.get_params(img, [0.08, 1.0], [3.0 / 4.0, 4.0 / 3.0])
                      for _ in range(20000)], dtype=np.float64)
        i, j, hh, ww = d[:, 0], d[:, 1], d[:, 2], d[:, 3]
        area = hh * ww / (w * h)
        lr = np.log(ww / hh)
        t["rrcstats.%d" % k] = np.array([w, h, area.mean(), area.std(), lr.mean(), lr.std(),
                                         ((j + ww / 2) / w).mean(), ((i + hh / 2) / h).mean()],
                                        dtype=np.float32)

    # decoding: files written by PIL
    base = test_image(48, 40, 51)
    cases = []
    bio = io.BytesIO()
    Image.fromarray(base, "RGB").save(bio, "JPEG", quality=90)
    cases.append(("rgbjpg", bio.getvalue()))
    bio = io.BytesIO()
    Image.fromarray(test_image(37, 29, 52), "RGB").save(bio, "JPEG", quality=75, subsampling=0)
    cases.append(("rgb444", bio.getvalue()))
    bio = io.BytesIO()
    Image.fromarray(base[:, :, 1], "L").save(bio, "JPEG", quality=90)
    cases.append(("greyjpg", bio.getvalue()))
    bio = io.BytesIO()
    cmyk = np.concatenate([base, test_image(48, 40, 53)[:, :, :1]], axis=2)
    Image.fromarray(cmyk, "CMYK").save(bio, "JPEG", quality=90)
    cases.append(("cmykjpg", bio.getvalue()))
    bio = io.BytesIO()
    rgba = np.concatenate([base, test_image(48, 40, 54)[:, :, :1]], axis=2)
    Image.fromarray(rgba, "RGBA").save(bio, "PNG")
    cases.append(("rgbapng", bio.getvalue()))
    bio = io.BytesIO()
    Image.fromarray(base, "RGB").quantize(colors=64).save(bio, "PNG")
    cases.append(("palpng", bio.getvalue()))
    bio = io.BytesIO()
    Image.fromarray(base[:, :, 2], "L").save(bio, "PNG")
    cases.append(("greypng", bio.getvalue()))
    for name, data in cases:
        im = Image.open(io.BytesIO(data))
        rgb = np.asarray(im.convert("RGB"))
        put_u8(t, "dec.%s.file" % name, data)
        put_u8(t, "dec.%s.rgb" % name, rgb)
        t["dec.%s.size" % name] = np.array([rgb.shape[1], rgb.shape[0]], dtype=np.int64)
        if name == "rgbjpg":
            # torchvision's ImageFolder loader is this open + convert("RGB")
            tf = T.Compose([T.Resize(36), T.CenterCrop(32), T.ToTensor(),
                            T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
            t["dec.rgbjpg.x"] = tf(im.convert("RGB"))

    path = golden_path("natdata.safetensors")
    st_write(path, t, {"pillow": Image.__version__, "torchvision": torchvision.__version__,
                       "torch": torch.__version__})
    print("wrote %s (%d bytes)" % (path, os.path.getsize(path)))


if __name__ == "__main__":
    main()
