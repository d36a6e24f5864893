#!/usr/bin/python3
"""Writes tests/golden/preprocess.safetensors: what Pillow and torchvision do
to a patch, for features/preprocess.c (tests/test_preprocess.c compares).

Inputs are not stored: both sides generate them with the same integer
formula (test_image below, fx-test image in tests/test_preprocess.c):
16x16 blocks that cycle through uniform noise, a wrapping colour ramp (sharp
255 -> 0 edges) and black/white noise (the worst case for clipping).

uint8 data is stored byte for byte in I32 tensors (nn/safetensors reads no
U8): a [k, W*3] uint8 array is an I32 tensor [k, W*3/4] whose little-endian
bytes are the array's bytes.

For each resize case N (Image.resize((out_w, out_h), Image.BILINEAR) on the
RGB image, exactly what torchvision's Resize calls on a PIL image):
  "N.size"  I64 [5]: in_w, in_h, out_w, out_h, seed
  "N.rows"  I64 [k]: the output rows stored (all of them for r256; a
            subset elsewhere, to keep the file small)
  "N.out"   I32 [k, out_w*3/4]: those rows of PIL's output, packed bytes
"tv256.*": torchvision's whole transform, Compose([Resize(224), ToTensor(),
Normalize(ImageNet mean, std)]) on the r256 input image:
  "tv256.rows" I64 [k], "tv256.x" F32 [3, k, 224] (those rows of the CHW
  tensor).
"alpha.pil" I32 [256, 64]: row a, byte c = the red channel of
  Image.alpha_composite(white, RGBA (c, 255-c, c, a)).convert("RGB");
  (the green channel, 255 - c, is checked here against the same closed form
  as the red one and not stored).
Metadata: Pillow, torchvision and torch versions. Without torchvision
(Debian's python3-torchvision) the script runs its transform written out
(tv_transform: the same calls torchvision 0.14 makes); with it, both are
checked to agree bit for bit.
"""
import os
import sys

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import golden_path, st_write  # noqa: E402

try:
    import torchvision
    from torchvision import transforms
except ImportError:  # Debian's python3-torchvision; ./setup does not install it
    torchvision = transforms = None

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
M32 = 0xFFFFFFFF


def mix32(x):
    """lowbias32 hash on uint32 arrays (wrapping)."""
    x = x.astype(np.uint32)
    x ^= x >> np.uint32(16)
    x *= np.uint32(0x7FEB352D)
    x ^= x >> np.uint32(15)
    x *= np.uint32(0x846CA68B)
    x ^= x >> np.uint32(16)
    return x


def test_image(w, h, seed):
    """[h, w, 3] uint8; the same formula as fx_test_image in the C test."""
    y, x, c = np.meshgrid(np.arange(h, dtype=np.uint32), np.arange(w, dtype=np.uint32),
                          np.arange(3, dtype=np.uint32), indexing="ij")
    s = np.uint32(seed)
    n = mix32(np.uint32((seed * 0x9E3779B9) & M32) + (y * np.uint32(w) + x) * np.uint32(3) + c)
    block = (x // 16 + y // 16 + s) % 3
    ramp = (x * 3 + y * 5 + c * 40 + s) & 255
    v = np.where(block == 0, n & 255, np.where(block == 1, ramp, ((n >> 8) & 1) * 255))
    return v.astype(np.uint8)


def tv_transform(pil, size):
    """torchvision 0.14's Compose([Resize(size), ToTensor(), Normalize(MEAN,
    STD)]) on a PIL RGB image, written out (used when torchvision is absent;
    checked against the real one when it is there)."""
    w, h = pil.size
    if isinstance(size, int):  # shorter side -> size, aspect kept
        short, long = (w, h) if w <= h else (h, w)
        ns, nl = size, int(size * long / short)
        size = (ns, nl) if w <= h else (nl, ns)  # (w, h)
        if (w, h) != size:
            pil = pil.resize(size, Image.BILINEAR)
    x = torch.from_numpy(np.array(pil, np.uint8, copy=True))
    x = x.permute((2, 0, 1)).contiguous().to(dtype=torch.float32).div(255)
    mean = torch.as_tensor(MEAN, dtype=torch.float32).view(-1, 1, 1)
    std = torch.as_tensor(STD, dtype=torch.float32).view(-1, 1, 1)
    return x.sub_(mean).div_(std)


def pack_u8(a):
    a = np.ascontiguousarray(a, dtype=np.uint8)
    assert a.shape[-1] % 4 == 0
    return a.view("<i4")


# name, in_w, in_h, out_w, out_h, seed, rows stored (start, step)
CASES = [
    ("r256", 256, 256, 224, 224, 1, (0, 1)),      # the usual patch
    ("r512", 512, 512, 224, 224, 2, (1, 4)),      # 0.25 mpp read for 0.5 mpp
    ("r300x200", 300, 200, 224, 224, 3, (2, 4)),  # non-square, both axes
    ("r100", 100, 100, 224, 224, 4, (3, 4)),      # upsampling
    ("r224", 224, 224, 224, 224, 5, (0, 28)),     # equal sizes: a copy
    ("r256x224", 256, 224, 224, 224, 6, (5, 16)),  # horizontal pass only
    ("r224x300", 224, 300, 224, 224, 7, (7, 16)),  # vertical pass only
]


def main():
    t = {}
    for name, iw, ih, ow, oh, seed, (r0, step) in CASES:
        img = test_image(iw, ih, seed)
        pil = Image.fromarray(img, "RGB")
        out = np.asarray(pil.resize((ow, oh), Image.BILINEAR))
        assert out.shape == (oh, ow, 3)
        if transforms is not None:  # torchvision's Resize on a PIL image is this call
            tv = np.asarray(transforms.Resize((oh, ow))(pil))
            assert np.array_equal(tv, out), name
        if (iw, ih) == (ow, oh):
            assert np.array_equal(out, img), name
        rows = np.arange(r0, oh, step, dtype=np.int64)
        t[name + ".size"] = np.array([iw, ih, ow, oh, seed], dtype=np.int64)
        t[name + ".rows"] = rows
        t[name + ".out"] = pack_u8(out[rows].reshape(len(rows), ow * 3))

    # torchvision's whole transform on the r256 image
    img = test_image(256, 256, 1)
    x = tv_transform(Image.fromarray(img, "RGB"), 224)
    if transforms is not None:
        tf = transforms.Compose([transforms.Resize(224), transforms.ToTensor(),
                                 transforms.Normalize(MEAN, STD)])
        assert torch.equal(tf(Image.fromarray(img, "RGB")), x)
    assert x.dtype == torch.float32 and tuple(x.shape) == (3, 224, 224)
    rows = np.arange(5, 224, 32, dtype=np.int64)
    t["tv256.rows"] = rows
    t["tv256.x"] = x[:, rows, :].contiguous()

    # alpha compositing onto white, every (c, a)
    a, c = np.meshgrid(np.arange(256), np.arange(256), indexing="ij")
    rgba = np.stack([c, 255 - c, c, a], axis=-1).astype(np.uint8)
    im = Image.fromarray(rgba, "RGBA")
    white = Image.new("RGBA", im.size, (255, 255, 255, 255))
    comp = np.asarray(Image.alpha_composite(white, im).convert("RGB"))
    # the documented closed form (features/preprocess.h), checked here too
    for ch, col in ((0, c), (1, 255 - c)):
        assert np.array_equal(comp[..., ch], (col * a + 255 * (255 - a) + 127) // 255)
    t["alpha.pil"] = pack_u8(comp[..., 0])

    path = golden_path("preprocess.safetensors")
    st_write(path, t, {"pillow": Image.__version__, "torchvision": torchvision.__version__ if torchvision else "absent (tv_transform)",
                       "torch": torch.__version__})
    print("wrote %s (%d bytes)" % (path, os.path.getsize(path)))


if __name__ == "__main__":
    main()
