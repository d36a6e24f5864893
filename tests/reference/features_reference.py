"""PyTorch peer of `ncmi features`: the same patches' features computed with
openslide-python + torchvision, as a CLAM/TRIDENT user would.

    /usr/bin/python3 tests/reference/features_reference.py \
        --slide SLIDE --coords patches/<id>.h5 --weights W.safetensors \
        --encoder resnet50_trunc --out ref.h5 [--input-size 224] [--limit N]
        [--batch 16] [--device cpu|cuda] [--threads 2]

For each row of the coords file: openslide read_region at the file's
patch_level, of side round(patch_size_level0 / level_downsample) (the level's
pixels covering the patch), alpha composited onto white, then
torchvision transforms Resize(input_size) (PIL bilinear, antialiased),
ToTensor, Normalize(ImageNet mean, std); the encoder is torchvision's
resnet50 / resnet18 with the weights from the safetensors file (names as
torchvision's state_dict), eval mode, float32; resnet50_trunc stops after
layer3 and averages over space. Writes `features` [N, D] (float32, coords
row order) and `coords` to --out (h5py).

The test tests/test_features_cmd.c runs it beside `ncmi features` on the
same coords and weights and compares.
"""
import argparse
import os
import sys

import h5py
import numpy as np
import openslide
import torch
import torchvision
from PIL import Image
from torchvision import transforms

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import st_read  # noqa: E402


def encoder(name, weights):
    tensors, _ = st_read(weights)
    if name == "resnet18":
        m = torchvision.models.resnet18()
    else:
        m = torchvision.models.resnet50()
    sd = {k: torch.from_numpy(np.asarray(v).astype(np.int64 if k.endswith("num_batches_tracked") else np.float32))
          for k, v in tensors.items()}
    missing, unexpected = m.load_state_dict(sd, strict=False)
    allowed = ("layer4.", "fc.") if name == "resnet50_trunc" else ("fc.",)
    bad = [k for k in missing if not k.startswith(allowed)]
    if bad or unexpected:
        raise SystemExit("%s: weights do not fit %s: missing %s unexpected %s" % (weights, name, bad[:5], unexpected[:5]))
    m.eval()
    if name == "resnet50_trunc":
        body = torch.nn.Sequential(m.conv1, m.bn1, m.relu, m.maxpool, m.layer1, m.layer2, m.layer3,
                                   torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    else:
        m.fc = torch.nn.Identity()
        body = m
    return body


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--slide", required=True)
    ap.add_argument("--coords", required=True)
    ap.add_argument("--weights", required=True)
    ap.add_argument("--encoder", default="resnet50_trunc")
    ap.add_argument("--out", required=True)
    ap.add_argument("--input-size", type=int, default=224)
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    with h5py.File(a.coords, "r") as f:
        coords = f["coords"][:]
        at = dict(f["coords"].attrs)
    level = int(at["patch_level"])
    slide = openslide.OpenSlide(a.slide)
    ds = slide.level_downsamples[level]
    rs = int(round(float(at["patch_size_level0"]) / ds))
    if a.limit:
        coords = coords[: a.limit]
    tf = transforms.Compose([transforms.Resize(a.input_size), transforms.ToTensor(),
                             transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    net = encoder(a.encoder, a.weights).to(a.device)
    feats = []
    with torch.no_grad():
        for i in range(0, len(coords), a.batch):
            batch = []
            for x, y in coords[i:i + a.batch]:
                rgba = slide.read_region((int(x), int(y)), level, (rs, rs))
                white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                rgb = Image.alpha_composite(white, rgba).convert("RGB")
                batch.append(tf(rgb))
            feats.append(net(torch.stack(batch).to(a.device)).cpu().numpy())
    F = np.concatenate(feats) if feats else np.zeros((0, 1), np.float32)
    with h5py.File(a.out + ".tmp", "w") as f:
        f["features"] = F.astype(np.float32)
        f["coords"] = coords
    os.replace(a.out + ".tmp", a.out)
    print("features_reference: %d patches, %d-d, read side %d at level %d" % (F.shape[0], F.shape[1], rs, level))


if __name__ == "__main__":
    main()
