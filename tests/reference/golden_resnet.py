"""Golden file for tests/test_resnet.c: torchvision ResNets against natural/resnet.c.

Full ResNet weights do not belong in the repository (ResNet-50: 100 MB), so
every weight comes from a formula that tests/test_resnet.c implements bit for
bit (the test checks that through the SHA-256 of the weights stored here):

    h      = FNV-1a 64 of the tensor's name (UTF-8)
    z      = h + (i + 1) * 0x9E3779B97F4A7C15          (mod 2^64, i = flat index)
    z      = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9;  z = (z ^ (z >> 27)) * 0x94D049BB133111EB
    z      = z ^ (z >> 31);  u = z >> 40                (24 bits: the splitmix64 finaliser)
    v      = (u - 2^23 + 0.5) / 2^23                    (exact, in (-1, 1))
    value  = float32(a + b * v)                         (double arithmetic, then rounded)

with (a, b) by tensor: convolution weights (0, sqrt(6 / fan_out)) (uniform
with kaiming_normal_'s fan_out std), bn weight (1, 0.25), bn bias (0, 0.1),
running_mean (0, 0.1), running_var (1, 0.5), fc weight and bias
(0, 1 / sqrt(in)); num_batches_tracked 0.

References are computed in float64 from those float32 values; the script
checks that float32 PyTorch meets the C test's tolerance against them.

Writes tests/golden/resnet.safetensors:
  trunc50.x [2,3,64,80]     input of the ResNet-50 cases
  trunc50.z [2,1024]        resnet50_trunc (conv1..layer3 + global avg pool), eval
  full50.z  [2,2048]        resnet50 (4 stages), eval
  r18.x [4,3,32,32], r18.y [4] (I64)
                            ResNet-18, CIFAR stem, fc 10 classes, training mode,
                            loss = cross_entropy(logits, y)
  r18.logits [4,10], r18.loss [1], r18.grad.x [4,3,32,32]
  r18.grad.<param>          parameter gradient, whole, when it has <= 4096 elements;
  r18.gidx.<param> (I32) / r18.gval.<param>  else 256 sampled elements, and
  r18.gnorm.<param> [1]     the L2 norm of every parameter gradient
  Gradients (and r18.grad.x) are compared with |ours - ref| <= 1e-4 max(|ref|, rms)
  where rms is the root mean square of the whole reference gradient (gnorm /
  sqrt(numel)): batchnorm's training backward subtracts means, so float32
  rounding scales with the terms, not with a small result; float32 PyTorch
  is at 2e-4 under the forward scheme (scale 1e-2 max|ref|), 3e-5 under this.
  r18.after.<bn>.running_mean / running_var  running statistics after the step
metadata:
  sha256.r18 / sha256.trunc50 / sha256.full50  rn_weights_sha256 of the formula weights
  state_dict.resnet{18,34,50,101}  "name[shape];..." of torchvision's model (fc 1000)

Run from the repository root: /usr/bin/python3 tests/reference/golden_resnet.py
"""
import hashlib
import math
import os
import sys
from collections import OrderedDict

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import check_roundtrip, golden_path, rel_err, st_write  # noqa: E402

M64 = (1 << 64) - 1
G = 0x9E3779B97F4A7C15


def fnv1a64(name):
    h = 0xCBF29CE484222325
    for b in name.encode("utf-8"):
        h ^= b
        h = (h * 0x100000001B3) & M64
    return h


def formula_values(name, n, a, b):
    with np.errstate(over="ignore"):
        i = np.arange(n, dtype=np.uint64)
        z = np.uint64(fnv1a64(name)) + (i + np.uint64(1)) * np.uint64(G)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    u = (z >> np.uint64(40)).astype(np.float64)
    v = (u - 8388608.0 + 0.5) / 8388608.0
    return (a + b * v).astype(np.float32)


def formula_ab(name, shape, fc_in):
    if name.endswith("num_batches_tracked"):
        return None
    if name.endswith("running_mean"):
        return 0.0, 0.1
    if name.endswith("running_var"):
        return 1.0, 0.5
    if name.startswith("fc."):
        return 0.0, 1.0 / math.sqrt(fc_in)
    if len(shape) == 4:  # convolution weight
        fan_out = shape[0] * shape[2] * shape[3]
        return 0.0, math.sqrt(6.0 / fan_out)
    if name.endswith(".weight"):  # batchnorm
        return 1.0, 0.25
    return 0.0, 0.1  # batchnorm bias


def formula_fill(model):
    """Overwrite every state_dict tensor of model with the formula (float32)."""
    sd = model.state_dict()
    fc_in = sd["fc.weight"].shape[1] if "fc.weight" in sd else 0
    with torch.no_grad():
        for name, t in sd.items():
            ab = formula_ab(name, tuple(t.shape), fc_in)
            if ab is None:
                t.zero_()
                continue
            vals = formula_values(name, t.numel(), *ab).reshape(tuple(t.shape))
            t.copy_(torch.from_numpy(vals))


def weights_sha256(sd):
    """rn_weights_sha256: sorted names (no num_batches_tracked): name NUL shape NUL float32 data."""
    s = hashlib.sha256()
    for name in sorted(k for k in sd if not k.endswith("num_batches_tracked")):
        t = sd[name].detach().float().contiguous().numpy()
        s.update(name.encode() + b"\0" + ",".join(str(d) for d in t.shape).encode() + b"\0")
        s.update(t.astype("<f4").tobytes())
    return s.hexdigest()


def trunc_forward(m, x):
    x = m.maxpool(m.relu(m.bn1(m.conv1(x))))
    x = m.layer3(m.layer2(m.layer1(x)))
    return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)


def full_forward(m, x):
    x = m.maxpool(m.relu(m.bn1(m.conv1(x))))
    x = m.layer4(m.layer3(m.layer2(m.layer1(x))))
    return torch.flatten(m.avgpool(x), 1)


def cifar_resnet18(num_classes):
    m = torchvision.models.resnet18(num_classes=num_classes)
    m.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    m.maxpool = nn.Identity()
    return m


def check32(name, ours, ref, rms=None):
    """float32 torch vs the float64 reference under the C test's metric: the
    golden scheme (scale 1e-2 max|ref|), or for gradients of the training case
    max(|ref|, rms) with rms the root mean square of the whole reference
    gradient (see tests/test_resnet.c)."""
    if rms is None:
        err = rel_err(ours, ref, floor=1e-6)
    else:
        a, b = ours.detach().double(), ref.detach().double()
        err = ((a - b).abs() / b.abs().clamp(min=rms)).max().item()
    if os.environ.get("GOLDEN_VERBOSE"):
        print("  %-40s %.3g" % (name, err))
    return err


def state_dict_desc(model):
    return ";".join("%s[%s]" % (k, ",".join(str(d) for d in v.shape))
                    for k, v in model.state_dict().items())


def main():
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(2)
    t = OrderedDict()
    meta = {"generator": "tests/reference/golden_resnet.py", "torch": torch.__version__,
            "torchvision": torchvision.__version__}
    worst = 0.0

    # ---- ResNet-50: truncated (3 stages) and full, eval mode ----
    m50 = torchvision.models.resnet50()
    formula_fill(m50)
    m50.eval()
    sd50 = m50.state_dict()
    meta["sha256.full50"] = weights_sha256(OrderedDict((k, v) for k, v in sd50.items()
                                                       if not k.startswith("fc.")))
    meta["sha256.trunc50"] = weights_sha256(OrderedDict(
        (k, v) for k, v in sd50.items() if not k.startswith("fc.") and not k.startswith("layer4.")))
    x50 = torch.randn(2, 3, 64, 80)
    with torch.no_grad():
        z32 = trunc_forward(m50, x50)
        f32 = full_forward(m50, x50)
        m64 = torchvision.models.resnet50()
        m64.load_state_dict(sd50)
        m64 = m64.double().eval()
        z64 = trunc_forward(m64, x50.double())
        f64 = full_forward(m64, x50.double())
    worst = max(worst, check32("trunc50.z", z32, z64), check32("full50.z", f32, f64))
    t["trunc50.x"] = x50
    t["trunc50.z"] = z64.float()
    t["full50.z"] = f64.float()
    print("resnet50: |z| trunc mean %.4g max %.4g, full mean %.4g max %.4g" %
          (z64.abs().mean(), z64.abs().max(), f64.abs().mean(), f64.abs().max()))

    # ---- ResNet-18, CIFAR stem, 10 classes: one training-mode forward + backward ----
    m18 = cifar_resnet18(10)
    formula_fill(m18)
    sd18 = OrderedDict((k, v.clone()) for k, v in m18.state_dict().items())
    meta["sha256.r18"] = weights_sha256(sd18)
    x18 = torch.randn(4, 3, 32, 32)
    y18 = torch.tensor([3, 0, 9, 3], dtype=torch.int64)

    def step(model, x):
        model.train()
        model.zero_grad()
        x = x.clone().requires_grad_(True)
        logits = model(x)
        loss = F.cross_entropy(logits, y18)
        loss.backward()
        return logits, loss, x.grad

    r32 = cifar_resnet18(10)
    r32.load_state_dict(sd18)
    l32, loss32, gx32 = step(r32, x18)
    r64 = cifar_resnet18(10)
    r64.load_state_dict(sd18)
    r64 = r64.double()
    l64, loss64, gx64 = step(r64, x18.double())
    t["r18.x"] = x18
    t["r18.y"] = y18
    t["r18.logits"] = l64.detach().float()
    t["r18.loss"] = loss64.detach().float().reshape(1)
    t["r18.grad.x"] = gx64.float()
    worst = max(worst, check32("r18.logits", l32, l64), check32("r18.loss", loss32, loss64),
                check32("r18.grad.x", gx32, gx64, rms=gx64.pow(2).mean().sqrt().item()))
    p32 = dict(r32.named_parameters())
    rng = np.random.default_rng(0)
    for name, p in r64.named_parameters():
        g64, g32 = p.grad, p32[name].grad
        rms = g64.pow(2).mean().sqrt().item()
        t["r18.gnorm." + name] = g64.norm().reshape(1).float()
        worst = max(worst, check32("gnorm." + name, g32.double().norm().reshape(1),
                                   g64.norm().reshape(1)))
        if g64.numel() <= 4096:
            t["r18.grad." + name] = g64.float()
            worst = max(worst, check32("grad." + name, g32, g64, rms))
        else:
            idx = np.sort(rng.choice(g64.numel(), 256, replace=False)).astype(np.int32)
            it = torch.from_numpy(idx.astype(np.int64))
            t["r18.gidx." + name] = idx
            t["r18.gval." + name] = g64.flatten()[it].float()
            worst = max(worst, check32("gval." + name, g32.flatten()[it], g64.flatten()[it], rms))
    b32 = dict(r32.named_buffers())
    for name, b in r64.named_buffers():
        if name.endswith("running_mean") or name.endswith("running_var"):
            t["r18.after." + name] = b.float()
            worst = max(worst, check32("after." + name, b32[name], b))
    assert r64.bn1.num_batches_tracked.item() == 1

    print("resnet: float32 torch vs float64 reference: max rel err %.3g" % worst)
    assert worst < 1e-4, "float32 torch disagrees with the float64 reference"

    for arch in ("resnet18", "resnet34", "resnet50", "resnet101"):
        meta["state_dict." + arch] = state_dict_desc(getattr(torchvision.models, arch)())

    t = OrderedDict((k, v.detach().float() if torch.is_tensor(v) and v.is_floating_point() else v)
                    for k, v in t.items())
    path = golden_path("resnet.safetensors")
    st_write(path, t, meta)
    check_roundtrip(path, t)
    print("wrote %s (%d tensors, %d bytes), r18 loss %.6f" %
          (path, len(t), os.path.getsize(path), t["r18.loss"].item()))


if __name__ == "__main__":
    main()
