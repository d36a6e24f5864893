"""ncmi -> torchvision: load the best.safetensors of an `ncmi train` run of a
ResNet with a linear head into torchvision's ResNet with
load_state_dict(strict=True), predict the run's test images in eval mode and
compare the class probabilities with the run's predictions_test.csv.

    /usr/bin/python3 tests/reference/interop_load_resnet.py ARCH RUN_DIR MNIST_DIR

ARCH is resnet18|resnet34|resnet50|resnet101. The model is
torchvision.models.<ARCH>(num_classes=C) as it is; conv1 and the stage
widths are changed only where the run's tensors say so (the CIFAR stem: conv1
3x3 stride 1 and maxpool = Identity; in_channels: conv1's input; a width w
other than 64: the stages rebuilt by torchvision's own _make_layer with w, 2w,
4w, 8w planes). Images: the MNIST test-set rows named by the sample ids
(t10k_<row>), normalised as ncmi does ((p/255 - 0.1307) / 0.3081).

Prints what it built and the largest probability difference; exits 1 when the
state_dict does not load strictly (an exception), when a prediction differs
(other than on a near-tie of the two top classes), or when a probability
differs by more than 1e-4. Run by
tests/test_natural_train.c; not a golden generator."""
import csv
import gzip
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torchvision
from torchvision.models.resnet import BasicBlock, Bottleneck

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import st_read  # noqa: E402

LAYERS = {"resnet18": (BasicBlock, [2, 2, 2, 2]), "resnet34": (BasicBlock, [3, 4, 6, 3]),
          "resnet50": (Bottleneck, [3, 4, 6, 3]), "resnet101": (Bottleneck, [3, 4, 23, 3])}


def build(arch, sd, num_classes):
    block, layers = LAYERS[arch]
    c1 = sd["conv1.weight"].shape  # [width, in_channels, k, k]
    width, in_ch, k = int(c1[0]), int(c1[1]), int(c1[2])
    cifar = k == 3
    m = getattr(torchvision.models, arch)(num_classes=num_classes)
    changed = []
    if width != 64:
        m.inplanes = width
        m.bn1 = nn.BatchNorm2d(width)
        m.layer1 = m._make_layer(block, width, layers[0])
        m.layer2 = m._make_layer(block, 2 * width, layers[1], stride=2)
        m.layer3 = m._make_layer(block, 4 * width, layers[2], stride=2)
        m.layer4 = m._make_layer(block, 8 * width, layers[3], stride=2)
        m.fc = nn.Linear(8 * width * block.expansion, num_classes)
        changed.append("width %d" % width)
    if width != 64 or in_ch != 3 or cifar:
        m.conv1 = nn.Conv2d(in_ch, width, kernel_size=k, stride=1 if cifar else 2,
                            padding=1 if cifar else 3, bias=False)
        changed.append("conv1 %dx%d from %d channel(s)" % (k, k, in_ch))
    if cifar:
        m.maxpool = nn.Identity()
        changed.append("no maxpool")
    return m, changed


def mnist_images(mnist_dir):
    path = os.path.join(mnist_dir, "t10k-images-idx3-ubyte.gz")
    opener = gzip.open
    if not os.path.exists(path):
        path, opener = path[:-3], open
    with opener(path, "rb") as f:
        buf = f.read()
    n, rows, cols = (int.from_bytes(buf[i:i + 4], "big") for i in (4, 8, 12))
    return np.frombuffer(buf, dtype=np.uint8, offset=16).reshape(n, rows, cols)


def main():
    if len(sys.argv) == 1:  # `make golden` may run every script: nothing to generate here
        print("interop_load_resnet.py: run by tests/test_natural_train.c (no golden file)")
        return 0
    if len(sys.argv) != 4 or sys.argv[1] not in LAYERS:
        print(__doc__)
        return 2
    arch, run, mnist_dir = sys.argv[1:]
    weights, meta = st_read(os.path.join(run, "best.safetensors"))
    num_classes = int(meta["n_classes"])
    m, changed = build(arch, weights, num_classes)
    sd = {k: torch.from_numpy(np.array(v)) for k, v in weights.items()}
    m.load_state_dict(sd, strict=True)  # raises on a missing/unexpected key or a shape mismatch
    m.eval()

    with open(os.path.join(run, "predictions_test.csv")) as f:
        rows = list(csv.DictReader(f))
    pcols = [c for c in rows[0].keys() if c.startswith("p_")]
    ids = [int(r["slide_id"].split("_")[-1]) for r in rows]
    ref = np.array([[float(r[c]) for c in pcols] for r in rows], dtype=np.float64)
    ref_pred = [r["pred"] for r in rows]
    classes = [c[2:] for c in pcols]

    imgs = mnist_images(mnist_dir)[ids].astype(np.float32)
    x = (imgs / np.float32(255.0) - np.float32(0.1307)) / np.float32(0.3081)
    x = torch.from_numpy(x[:, None, :, :].copy())
    probs = []
    with torch.no_grad():
        for b in range(0, len(ids), 256):
            probs.append(torch.softmax(m(x[b:b + 256]).double(), dim=1).numpy())
    p = np.concatenate(probs)
    diff = float(np.max(np.abs(p - ref)))
    pred = [classes[i] for i in p.argmax(1)]
    same = sum(a == b for a, b in zip(pred, ref_pred))
    top2 = np.sort(ref, axis=1)[:, -2:]
    ties = int(np.sum(top2[:, 1] - top2[:, 0] <= 2e-4))  # a differing argmax may sit on a near-tie
    print("torchvision.models.%s(num_classes=%d)%s: state_dict loaded strictly (%d tensors); "
          "%d test images: %d/%d predictions equal, max |p - p_ncmi| %.3g"
          % (arch, num_classes, " with " + ", ".join(changed) if changed else "", len(sd),
             len(ids), same, len(ids), diff))
    return 0 if diff <= 1e-4 and same >= len(ids) - ties else 1


if __name__ == "__main__":
    sys.exit(main())
