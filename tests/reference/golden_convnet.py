"""Golden file for tests/test_golden.c: a small convnet, one training step.

    x [4,3,12,12]
    conv1  Conv2d(3->8, k3, pad 1, no bias)                [4,8,12,12]
    bn1    BatchNorm2d(8), training mode (batch statistics,
           running statistics updated, momentum 0.1)        [4,8,12,12]
    relu, maxpool(k2, s2)                                   [4,8,6,6]
    conv2  Conv2d(8->8, k3, pad 2, dilation 2, groups 4)    [4,8,6,6]
    relu
    conv3  Conv2d(8->8, k3, stride 2, pad 1, groups 2)      [4,8,3,3]
    avgpool(k2, s1)                                         [4,8,2,2]
    flatten, fc Linear(32->5)                               [4,5]
    loss = CE(logits, y) + CE(logits, y, label_smoothing=0.1)

Parameters come from PyTorch's default init under torch.manual_seed(0), then
BatchNorm affine parameters and running statistics are set to non-trivial
values. Everything is generated in float32; the reference forward/backward
is then evaluated in float64 (same float32 values, promoted) and stored as
float32, so the golden numbers carry no float32 rounding of their own. The
script also checks that a plain float32 PyTorch run agrees with them within
the tolerance the C test uses.

Writes tests/golden/convnet.safetensors:
    x, y (I64), every state_dict entry before the step (conv1.weight, ...,
    bn1.running_mean, bn1.num_batches_tracked (I64), ...), intermediates
    out.conv1, out.bn1, out.pool1, out.conv2, out.conv3, out.pool2,
    out.logits, loss.ce, loss.ce_smooth, loss (the sum), grad.<param> for
    every trainable parameter, grad.x, after.bn1.running_mean,
    after.bn1.running_var, after.bn1.num_batches_tracked (I64), and
    out.eval_logits: the logits of x in eval mode after the step (BatchNorm
    normalising with the updated running statistics).

Run from the repository root: /usr/bin/python3 tests/reference/golden_convnet.py
"""
import os
import sys
from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import check_roundtrip, golden_path, rel_err, st_write, train_step  # noqa: E402

N_CLASSES = 5
SMOOTH = 0.1


class ConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=4)
        self.conv3 = nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=2)
        self.fc = nn.Linear(32, N_CLASSES)

    def forward(self, x):
        o = OrderedDict()
        o["out.conv1"] = self.conv1(x)
        o["out.bn1"] = self.bn1(o["out.conv1"])
        o["out.pool1"] = F.max_pool2d(F.relu(o["out.bn1"]), 2, 2)
        o["out.conv2"] = self.conv2(o["out.pool1"])
        o["out.conv3"] = self.conv3(F.relu(o["out.conv2"]))
        o["out.pool2"] = F.avg_pool2d(o["out.conv3"], 2, 1)
        o["out.logits"] = self.fc(o["out.pool2"].flatten(1))
        return o


def run(model, x, y):
    """One training-mode forward + backward; returns (outputs, losses, grads)."""
    model.train()
    return train_step(model, x, y, SMOOTH)


def main():
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    model = ConvNet()
    with torch.no_grad():
        model.bn1.weight.copy_(torch.rand(8) + 0.5)
        model.bn1.bias.copy_(torch.randn(8) * 0.2)
        model.bn1.running_mean.copy_(torch.randn(8) * 0.1)
        model.bn1.running_var.copy_(torch.rand(8) + 0.5)
    x = torch.randn(4, 3, 12, 12)
    y = torch.tensor([0, 3, 1, 4], dtype=torch.int64)

    t = OrderedDict()
    t["x"] = x
    t["y"] = y
    for k, v in model.state_dict().items():
        t[k] = v.clone()

    # float32 run (for the sanity check below) on a copy
    m32 = ConvNet()
    m32.load_state_dict(model.state_dict())
    o32, l32, g32 = run(m32, x, y)

    # float64 reference
    m64 = model.double()
    o, losses, grads = run(m64, x.double(), y)
    t.update(o)
    t.update(losses)
    t.update(grads)
    t["after.bn1.running_mean"] = m64.bn1.running_mean
    t["after.bn1.running_var"] = m64.bn1.running_var
    t["after.bn1.num_batches_tracked"] = m64.bn1.num_batches_tracked
    # eval mode after the step: running statistics (updated), no update
    m64.eval()
    with torch.no_grad():
        t["out.eval_logits"] = m64(x.double())["out.logits"]
    assert m64.bn1.num_batches_tracked.item() == 1
    t = OrderedDict((k, v.detach().float() if v.is_floating_point() else v) for k, v in t.items())

    # float32 PyTorch vs float64 reference: the rounding a float32 engine incurs
    worst = 0.0
    ref32 = OrderedDict(list(o32.items()) + list(l32.items()) + list(g32.items()))
    ref32["after.bn1.running_mean"] = m32.bn1.running_mean
    ref32["after.bn1.running_var"] = m32.bn1.running_var
    for k, v in ref32.items():
        err = rel_err(v, t[k], floor=1e-6)
        worst = max(worst, err)
        if os.environ.get("GOLDEN_VERBOSE"): print("  %-28s %.3g" % (k, err))
    print("convnet: float32 torch vs float64 reference: max rel err %.3g" % worst)
    assert worst < 1e-4, "float32 torch disagrees with the float64 reference"

    path = golden_path("convnet.safetensors")
    st_write(path, t, {"generator": "tests/reference/golden_convnet.py",
                       "torch": torch.__version__, "seed": "0"})
    check_roundtrip(path, t)
    print("wrote %s (%d tensors, %d bytes), loss %.6f" %
          (path, len(t), os.path.getsize(path), t["loss"].item()))


if __name__ == "__main__":
    main()
