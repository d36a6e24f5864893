"""Golden file for tests/test_golden.c: an ABMIL-style gated-attention block.

    x [N=37, D=24]                      (one bag of instance features)
    ln    = LayerNorm(24)(x)            (affine, eps 1e-5)
    h     = gelu(fc(ln))                fc Linear(24->20), exact (erf) GELU   [37,20]
    a     = attention_c(tanh(attention_a(h)) * sigmoid(attention_b(h)))
            attention_a/b Linear(20->12), attention_c Linear(12->1, no bias) [37,1]
    alpha = softmax(a^T) over the instances                                   [1,37]
    z     = alpha @ h                                                         [1,20]
    logits = classifier(z)              classifier Linear(20->3)              [1,3]
    loss  = CE(logits, y) + CE(logits, y, label_smoothing=0.1)

Module names follow CLAM's gated attention (attention_a/b/c); attention_c
has no bias here because its gradient is identically zero (softmax is
shift-invariant), so it would compare rounding noise only. Parameters come
from PyTorch's default init under torch.manual_seed(0) (LayerNorm affine set
to non-trivial values). As in golden_convnet.py, float32 values are
evaluated in float64 and stored as float32, and a float32 PyTorch run is
checked against them.

Writes tests/golden/attention.safetensors: x, y (I64), every state_dict
entry, intermediates out.ln, out.h, out.a, out.alpha, out.z, out.logits,
loss.ce, loss.ce_smooth, loss, grad.<param> and grad.x.

Run from the repository root: /usr/bin/python3 tests/reference/golden_attention.py
"""
import os
import sys
from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import check_roundtrip, golden_path, rel_err, st_write, train_step  # noqa: E402

N, D, H, A, C = 37, 24, 20, 12, 3
SMOOTH = 0.1


class GatedAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.norm = nn.LayerNorm(D)
        self.fc = nn.Linear(D, H)
        self.attention_a = nn.Linear(H, A)
        self.attention_b = nn.Linear(H, A)
        self.attention_c = nn.Linear(A, 1, bias=False)
        self.classifier = nn.Linear(H, C)

    def forward(self, x):
        o = OrderedDict()
        o["out.ln"] = self.norm(x)
        o["out.h"] = F.gelu(self.fc(o["out.ln"]))
        h = o["out.h"]
        o["out.a"] = self.attention_c(torch.tanh(self.attention_a(h)) *
                                      torch.sigmoid(self.attention_b(h)))
        o["out.alpha"] = torch.softmax(o["out.a"].t(), dim=1)
        o["out.z"] = o["out.alpha"] @ h
        o["out.logits"] = self.classifier(o["out.z"])
        return o


def run(model, x, y):
    return train_step(model, x, y, SMOOTH)


def main():
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    model = GatedAttention()
    with torch.no_grad():
        model.norm.weight.copy_(torch.rand(D) + 0.5)
        model.norm.bias.copy_(torch.randn(D) * 0.2)
    # features with a per-dimension offset and scale, as encoder outputs have
    x = torch.randn(N, D) * (torch.rand(D) + 0.5) + torch.randn(D)
    y = torch.tensor([2], dtype=torch.int64)

    t = OrderedDict()
    t["x"] = x
    t["y"] = y
    for k, v in model.state_dict().items():
        t[k] = v.clone()

    m32 = GatedAttention()
    m32.load_state_dict(model.state_dict())
    o32, l32, g32 = run(m32, x, y)

    m64 = model.double()
    o, losses, grads = run(m64, x.double(), y)
    t.update(o)
    t.update(losses)
    t.update(grads)
    t = OrderedDict((k, v.detach().float() if v.is_floating_point() else v) for k, v in t.items())

    worst = 0.0
    ref32 = OrderedDict(list(o32.items()) + list(l32.items()) + list(g32.items()))
    for k, v in ref32.items():
        err = rel_err(v, t[k], floor=1e-6)
        worst = max(worst, err)
        if os.environ.get("GOLDEN_VERBOSE"):
            print("  %-28s %.3g" % (k, err))
    print("attention: float32 torch vs float64 reference: max rel err %.3g" % worst)
    assert worst < 1e-4, "float32 torch disagrees with the float64 reference"

    path = golden_path("attention.safetensors")
    st_write(path, t, {"generator": "tests/reference/golden_attention.py",
                       "torch": torch.__version__, "seed": "0"})
    check_roundtrip(path, t)
    print("wrote %s (%d tensors, %d bytes), loss %.6f" %
          (path, len(t), os.path.getsize(path), t["loss"].item()))


if __name__ == "__main__":
    main()
