"""Golden file for ncmi's TransMIL head (mil/transmil.c): tests/golden/mil_transmil.safetensors.

One small TransMIL (tests/reference/mil_ref_transmil.py: official structure and
state_dict names, small sizes) and several bags, each forwarded alone:

    n1       N = 1   -> 2 tokens (class token + 1): fewer than the landmarks,
                        front padding to 10 rows, every row its own landmark
    n7       N = 7   -> 3x3 square (2 repeated tokens), 10 tokens = landmarks,
                        no padding
    n20      N = 20  -> 5x5 square, 26 tokens: padding 4, landmarks of 3 rows
                        (the Nystrom approximation proper)
    n50      N = 50  -> 8x8 square, 65 tokens: padding 5, landmarks of 7 rows
    n1_legacy, n20_legacy: the same bags with nystrom-attention 0.0.9's output
                        slice (first n rows after the front padding)

Per case <c>: <c>.x [N, D_feat], <c>.y [1], <c>.out.z [1, d], <c>.out.logits
[1, C], <c>.out.attn [N] (the class token's attention to the instances in
layer 2, averaged over heads), <c>.loss [1] (cross-entropy of the linear head
_fc2), <c>.grad.<param> for every parameter (the head's _fc2 too) and
<c>.grad.x. The parameters themselves are stored once under their state_dict
names. `config` (int64): d_feat, d_inner, heads, landmarks, pinv_iterations,
n_classes.

The reference values are computed in float64 from the float32 inputs and
parameters (the pinv iterations amplify rounding); float32 PyTorch is checked
against them with the tolerance of tests/test_golden.c.
"""
import os
import sys
from collections import OrderedDict

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import check_roundtrip, golden_path, rel_err, st_write  # noqa: E402
from mil_ref_transmil import TransMIL  # noqa: E402

D_FEAT, D, HEADS, LANDMARKS, ITERS, C = 16, 16, 8, 10, 6, 3
CASES = [("n1", 1, False), ("n7", 7, False), ("n20", 20, False), ("n50", 50, False),
         ("n1_legacy", 1, True), ("n20_legacy", 20, True)]


def run(model, x, y, legacy):
    model.set_legacy_slice(legacy)
    model.zero_grad()
    x = x.clone().requires_grad_(True)
    z = model.embed(x.unsqueeze(0))
    logits = model._fc2(z)
    loss = F.cross_entropy(logits, y)
    loss.backward()
    o = OrderedDict()
    o["out.z"] = z
    o["out.logits"] = logits
    o["out.attn"] = model.class_token_attention(x.shape[0])
    o["loss"] = loss.reshape(1)
    for n, p in model.named_parameters():
        o["grad." + n] = p.grad
    o["grad.x"] = x.grad
    return o


def main():
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    model = TransMIL(C, d_feat=D_FEAT, dim=D, heads=HEADS, landmarks=LANDMARKS,
                     pinv_iterations=ITERS, dropout=0.1)
    with torch.no_grad():
        for ln in (model.layer1.norm, model.layer2.norm, model.norm):
            ln.weight.copy_(torch.rand(D) + 0.5)
            ln.bias.copy_(torch.randn(D) * 0.2)
    model.eval()  # dropout off

    t = OrderedDict()
    t["config"] = torch.tensor([D_FEAT, D, HEADS, LANDMARKS, ITERS, C], dtype=torch.int64)
    for k, v in model.state_dict().items():
        t[k] = v.clone()

    m32 = TransMIL(C, d_feat=D_FEAT, dim=D, heads=HEADS, landmarks=LANDMARKS,
                   pinv_iterations=ITERS, dropout=0.1)
    m32.load_state_dict(model.state_dict())
    m32.eval()
    m64 = model.double()

    offset, gain = torch.randn(D_FEAT), torch.rand(D_FEAT) + 0.5
    worst, worst_name = 0.0, ""
    for name, n, legacy in CASES:
        x = torch.randn(n, D_FEAT) * gain + offset
        y = torch.tensor([n % C], dtype=torch.int64)
        t[name + ".x"] = x
        t[name + ".y"] = y
        ref = run(m64, x.double(), y, legacy)
        o32 = run(m32, x, y, legacy)
        for k, v in ref.items():
            t[name + "." + k] = v.detach().float()
            e = rel_err(o32[k], v)
            if e > worst:
                worst, worst_name = e, name + "." + k
            if os.environ.get("GOLDEN_VERBOSE"):
                print("  %-40s %.3g" % (name + "." + k, e))
    print("mil_transmil: float32 torch vs float64 reference: max rel err %.3g (%s)" %
          (worst, worst_name))
    assert worst < 1e-4, "float32 torch disagrees with the float64 reference"

    path = golden_path("mil_transmil.safetensors")
    st_write(path, t, {"generator": "tests/reference/golden_mil_transmil.py",
                       "torch": torch.__version__, "seed": "0"})
    check_roundtrip(path, t)
    print("wrote %s (%d tensors, %d bytes)" % (path, len(t), os.path.getsize(path)))


if __name__ == "__main__":
    main()
