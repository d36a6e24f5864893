"""Golden file for tests/test_mil_asmil.c: the ASMIL head (mil/asmil.c).

Model (tests/reference/mil_ref_asmil.py, official module names): d_feat 24,
d_inner 16, 4 heads, 4 tokens, dropout 0; anchor = the same layout with its
own weights. Linear head "Slide_classifier.fc" (16 -> 3) + cross-entropy;
loss = CE + KD with KD = -0.7 * mean(sigmax(S_anchor / 0.5) * log_softmax(S)).
Weights: PyTorch default init under torch.manual_seed(0), then q, cls,
LayerNorm affine and biases set to non-trivial values (q ~ N(0, 1e-6) would
make every token attend uniformly).

Cases (prefix.): eval_n1, eval_n7, eval_n40 (eval: no token dropping) and
train_n40 (training, tokens `train_n40.drop` removed from the bag attention,
dropout 0). Each: x, y (I64), z [1,16], attn [H,T,N] (softmax weights),
kd, logits, loss, grad.<param> for every student parameter and the
classifier except the k_proj biases (their gradient is identically zero:
softmax and log_softmax are shift-invariant, so it would compare rounding
noise only), grad.x. Then ema.after.<anchor key>: the anchor after one EMA
update with decay 0.9 from the stored student weights.

Values are computed in float64 from the float32 inputs and stored as
float32; a float32 PyTorch run is checked against them (1e-4 relative, the
same rule as tests/test_golden.c).

Run from the repository root: /usr/bin/python3 tests/reference/golden_mil_asmil.py
"""
import os
import sys
from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import check_roundtrip, golden_path, rel_err, st_write  # noqa: E402
from mil_ref_asmil import ASMIL, ema_update, kd_term  # noqa: E402

D_FEAT, D_INNER, HEADS, TOKENS, C = 24, 16, 4, 4, 3
KD_T, KD_W, EMA = 0.5, 0.7, 0.9
CASES = [("eval_n1", 1, None), ("eval_n7", 7, None), ("eval_n40", 40, None),
         ("train_n40", 40, [1, 3])]
ANCHOR_KEYS = ["dimreduction.fc1.weight", "q"] + [
    "sub_attention.%d.%s.%s" % (t, p, w) for t in range(TOKENS)
    for p in ("q_proj", "k_proj") for w in ("weight", "bias")]


def make(softmax):
    return ASMIL(D_FEAT, D_INNER, TOKENS, n_heads=HEADS, dropout=0.0, softmax=softmax)


def randomize(m):
    with torch.no_grad():
        m.q.normal_()
        m.cls.normal_(std=0.5)
        for name, p in m.named_parameters():
            if name.endswith("layer_norm.weight"):
                p.copy_(torch.rand_like(p) + 0.5)
            elif name.endswith(".bias"):
                p.copy_(torch.randn_like(p) * 0.2)


def run_case(student, anchor, head, x, y, drop, training):
    student.train(training)
    student.zero_grad()
    head.zero_grad()
    x = x.clone().requires_grad_(True)
    o = student(x, drop=drop if training else [])
    logits = head(o["z"])
    with torch.no_grad():
        s_anchor = anchor.token_logits(x)
    kd = kd_term(o["logits"], s_anchor, KD_T, KD_W)
    loss = F.cross_entropy(logits, y) + kd
    loss.backward()
    r = OrderedDict()
    r["z"] = o["z"]
    r["attn"] = o["attn"]
    r["kd"] = kd.reshape(1)
    r["logits"] = logits
    r["loss"] = loss.reshape(1)
    for n, p in student.named_parameters():
        if not n.endswith("k_proj.bias"):  # identically zero (softmax is shift-invariant)
            # dropped tokens' v/out projections and layer norm get no gradient
            r["grad." + n] = p.grad if p.grad is not None else torch.zeros_like(p)
    for n, p in head.named_parameters():
        r["grad.Slide_classifier.fc." + n] = p.grad
    r["grad.x"] = x.grad
    return r


def main():
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    student, anchor = make(True), make(False)
    randomize(student)
    randomize(anchor)
    head = nn.Linear(D_INNER, C)
    xs, ys = {}, {}
    for name, n, _ in CASES:
        xs[name] = torch.randn(n, D_FEAT) * (torch.rand(D_FEAT) + 0.5) + torch.randn(D_FEAT)
        ys[name] = torch.randint(0, C, (1,), dtype=torch.int64)

    t = OrderedDict()
    for k, v in student.state_dict().items():
        t[k] = v.clone()
    asd = anchor.state_dict()
    for k in ANCHOR_KEYS:
        t["EMA_model." + k] = asd[k].clone()
    for k, v in head.state_dict().items():
        t["Slide_classifier.fc." + k] = v.clone()

    worst = 0.0
    for name, n, drop in CASES:
        training = drop is not None
        t[name + ".x"] = xs[name]
        t[name + ".y"] = ys[name]
        if training:
            t[name + ".drop"] = torch.tensor(drop, dtype=torch.int64)
        r32 = run_case(student, anchor, head, xs[name], ys[name], drop, training)
        s64, a64, h64 = make(True).double(), make(False).double(), nn.Linear(D_INNER, C).double()
        s64.load_state_dict(student.state_dict())
        a64.load_state_dict(anchor.state_dict())
        h64.load_state_dict(head.state_dict())
        r64 = run_case(s64, a64, h64, xs[name].double(), ys[name], drop, training)
        for k, v in r64.items():
            b = v.detach()
            err = rel_err(r32[k], b)
            worst = max(worst, err)
            if os.environ.get("GOLDEN_VERBOSE"):
                print("  %-40s %.3g" % (name + "." + k, err))
            t[name + "." + k] = b.float()
    print("mil_asmil: float32 torch vs float64 reference: max rel err %.3g" % worst)
    assert worst < 1e-4, "float32 torch disagrees with the float64 reference"

    a64 = make(False).double()
    a64.load_state_dict(anchor.state_dict())
    s64 = make(True).double()
    s64.load_state_dict(student.state_dict())
    ema_update(a64, s64, EMA)
    asd = a64.state_dict()
    for k in ANCHOR_KEYS:
        t["ema.after.EMA_model." + k] = asd[k].float()

    t = OrderedDict((k, v.detach().float() if v.is_floating_point() else v) for k, v in t.items())
    path = golden_path("mil_asmil.safetensors")
    st_write(path, t, {"generator": "tests/reference/golden_mil_asmil.py",
                       "torch": torch.__version__, "seed": "0", "kd_T": str(KD_T),
                       "kd_weight": str(KD_W), "ema": str(EMA)})
    check_roundtrip(path, t)
    print("wrote %s (%d tensors, %d bytes)" % (path, len(t), os.path.getsize(path)))


if __name__ == "__main__":
    main()
