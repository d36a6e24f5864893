"""Golden file for tests/test_mil_abmil.c: the ABMIL / AEM head (mil/abmil.c)
against the PyTorch reference tests/reference/mil_ref_abmil.py.

Also tests/golden/mil_abmil_mlp.safetensors: ABMIL with the instance network
(mil.instance_layers [12, 10], dropout 0 so that training mode is
deterministic, attention hidden 8), gated ("mlp_gated") and tanh
("mlp_tanh") attention, torch.manual_seed(1): the parameters of each under
"<variant>.<state_dict key>", and "<variant>.n<N>.{z,alpha,logits,loss,grad.*}"
for the bags x.n1, x.n7, x.n50 of the same file.

Small dims: D_feat 32, D_inner 16, attention hidden 8, C 3. One ABMIL
(torch.manual_seed(0), nn.Linear default init), seeded bags of N = 1, 7, 13,
50 instances (features with a per-dimension offset and scale).

Tensors (float32; labels I64):
  <state_dict key>                 the parameters (dimreduction.fc1.weight, ...,
                                   classifier.fc.weight / .bias)
  x.n<N>, y.n<N>                   bag [N, 32] and its label [1]
  ce.n<N>.{z,alpha,logits,loss}    z [1,16], alpha [1,N], logits [1,3],
                                   loss = CE(logits, y) [1]
  ce.n<N>.grad.<param>, .grad.x    every parameter gradient, the input gradient
  <aem>.n<N>.{aux,loss}            aux = lambda * sum alpha ln alpha (lambda 0.1),
                                   loss = CE + aux; aem: every instance,
                                   aem_top5: the 5 largest weights renormalised,
                                   aem_top100: k >= N (every weight, renormalised)
  <aem>.n<N>.grad.<param>, .grad.x
  ncmi.{xi,center,labels,z,loss}   the NCMI head (nn/ncmi.h defaults: tau 0.2, NSF,
                                   gamma classes, ratio per sample, floor 1e-4) on
                                   the z rows of the bags N = 1, 7, 13, 50 (in that
                                   order), evaluation mode (centre fixed, not updated)
  ncmi.grad.<ABMIL param>, ncmi.grad.xi, ncmi.grad.x.n<N>

As golden_attention.py: values are computed in float64 from the float32
inputs and stored as float32, and a float32 PyTorch run is checked against
them with the C test's metric (1e-4 relative, floor 1e-2 x the tensor's
largest magnitude, for gradients also 1e-2 x the case's largest gradient).

Run from the repository root: /usr/bin/python3 tests/reference/golden_mil_abmil.py
"""
import os
import sys
from collections import OrderedDict

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import check_roundtrip, golden_path, rel_err, st_write  # noqa: E402
from mil_ref_abmil import ABMIL, ABMILInstanceMLP, aem_term  # noqa: E402
from ncmi_reference import ncmi_loss  # noqa: E402

D_FEAT, D_INNER, HIDDEN, C = 32, 16, 8, 3
SIZES = [1, 7, 13, 50]
LABELS = {1: 2, 7: 0, 13: 1, 50: 2}
AEM_CASES = [("aem", 0, [1, 7, 50]), ("aem_top5", 5, [7, 50]), ("aem_top100", 100, [7])]
LAMBDA = 0.1
TAU = 0.2


def grads(model, x):
    g = OrderedDict(("grad." + n, p.grad.clone()) for n, p in model.named_parameters()
                    if p.grad is not None)
    if x is not None:
        g["grad.x"] = x.grad.clone()
    return g


def bag_case(model, x, y, top_k=None):
    """CE (top_k None) or CE + AEM term: named outputs of one bag."""
    model.zero_grad()
    x = x.clone().requires_grad_(True)
    logits, z, a = model(x)
    ce = F.cross_entropy(logits, y)
    o = OrderedDict()
    if top_k is None:
        o["z"] = z
        o["alpha"] = torch.softmax(a, dim=1)
        o["logits"] = logits
        loss = ce
    else:
        aux = aem_term(a, LAMBDA, top_k)
        o["aux"] = aux.reshape(1)
        loss = ce + aux
    o["loss"] = loss.reshape(1)
    loss.backward()
    o.update(grads(model, x))
    return o


def ncmi_case(model, xs, ys, xi, center):
    model.zero_grad()
    xs = [x.clone().requires_grad_(True) for x in xs]
    z = torch.cat([model.embed(x)[0] for x in xs], dim=0)
    xi = xi.clone().requires_grad_(True)
    loss = ncmi_loss(z, center, xi, ys, TAU, "nsf", "classes", "per_sample", 1, None, 1e-4)
    loss.backward()
    o = OrderedDict([("z", z), ("loss", loss.reshape(1))])
    o.update(grads(model, None))
    for n in ("classifier.fc.weight", "classifier.fc.bias"):
        o.pop("grad." + n, None)  # not in the graph: no gradient
    o["grad.xi"] = xi.grad.clone()
    for N, x in zip(SIZES, xs):
        o["grad.x.n%d" % N] = x.grad.clone()
    return o


def run_all(model, X, xi, center):
    out = OrderedDict()
    for N in SIZES:
        y = torch.tensor([LABELS[N]])
        for k, v in bag_case(model, X[N], y).items():
            out["ce.n%d.%s" % (N, k)] = v
    for name, k, sizes in AEM_CASES:
        for N in sizes:
            y = torch.tensor([LABELS[N]])
            for kk, v in bag_case(model, X[N], y, k).items():
                out["%s.n%d.%s" % (name, N, kk)] = v
    ys = torch.tensor([LABELS[N] for N in SIZES])
    for k, v in ncmi_case(model, [X[N] for N in SIZES], ys, xi, center).items():
        out["ncmi." + k] = v
    return out


def case_floors(t):
    """1e-2 x the largest gradient of each case (prefix before '.grad.')."""
    fl = {}
    for k, v in t.items():
        if ".grad." in k:
            c = k.split(".grad.")[0]
            fl[c] = max(fl.get(c, 0.0), 1e-2 * v.double().abs().max().item())
    return fl


def main():
    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = ABMIL(D_FEAT, D_INNER, C, attn_hidden=HIDDEN)
    off, sc = torch.randn(D_FEAT), torch.rand(D_FEAT) + 0.5
    X = OrderedDict((N, torch.randn(N, D_FEAT) * sc + off) for N in SIZES)
    xi = F.pad(torch.eye(C), (0, D_INNER - C)) * 10 + 1e-6 + 0.5 * torch.randn(C, D_INNER)
    with torch.no_grad():
        zs = torch.cat([model.embed(X[N])[0] for N in SIZES], dim=0)
        center = zs.mean(0) + 0.5 * torch.randn(D_INNER)

    t = OrderedDict()
    for k, v in model.state_dict().items():
        t[k] = v.clone()
    for N in SIZES:
        t["x.n%d" % N] = X[N]
        t["y.n%d" % N] = torch.tensor([LABELS[N]], dtype=torch.int64)
    t["ncmi.xi"] = xi
    t["ncmi.center"] = center
    t["ncmi.labels"] = torch.tensor([LABELS[N] for N in SIZES], dtype=torch.int64)

    ref32 = run_all(model, X, xi, center)
    m64 = ABMIL(D_FEAT, D_INNER, C, attn_hidden=HIDDEN).double()
    m64.load_state_dict(model.state_dict())
    ref = run_all(m64, OrderedDict((N, x.double()) for N, x in X.items()), xi.double(),
                  center.double())
    for k, v in ref.items():
        t[k] = v.detach().float()

    floors = case_floors(ref)
    worst, wname = 0.0, ""
    for k, v in ref32.items():
        c = k.split(".grad.")[0] if ".grad." in k else None
        e = rel_err(v.detach(), ref[k].detach(), floors.get(c, 0.0) if c else 0.0)
        if e > worst:
            worst, wname = e, k
        if os.environ.get("GOLDEN_VERBOSE"):
            print("  %-40s %.3g" % (k, e))
    print("mil_abmil: float32 torch vs float64 reference: max rel err %.3g (%s)" % (worst, wname))
    assert worst < 1e-4, "float32 torch disagrees with the float64 reference"

    path = golden_path("mil_abmil.safetensors")
    st_write(path, t, {"generator": "tests/reference/golden_mil_abmil.py",
                       "torch": torch.__version__, "seed": "0",
                       "dims": "%d %d %d %d" % (D_FEAT, D_INNER, HIDDEN, C),
                       "lambda": str(LAMBDA), "tau": str(TAU)})
    check_roundtrip(path, t)
    print("wrote %s (%d tensors, %d bytes), ce.n50 loss %.6f, ncmi loss %.6f" %
          (path, len(t), os.path.getsize(path), t["ce.n50.loss"].item(), t["ncmi.loss"].item()))


MLP_LAYERS, MLP_SIZES = [12, 10], [1, 7, 50]


def main_mlp():
    torch.manual_seed(1)
    torch.set_num_threads(1)
    X = OrderedDict((N, torch.randn(N, D_FEAT) * 2 + 0.5) for N in MLP_SIZES)
    t, ref32, ref = OrderedDict(), OrderedDict(), OrderedDict()
    for N in MLP_SIZES:
        t["x.n%d" % N] = X[N]
        t["y.n%d" % N] = torch.tensor([LABELS[N]], dtype=torch.int64)
    for var, gated in (("mlp_gated", True), ("mlp_tanh", False)):
        model = ABMILInstanceMLP(D_FEAT, MLP_LAYERS, C, attn_hidden=HIDDEN, dropout=0.0, gated=gated)
        for k, v in model.state_dict().items():
            t["%s.%s" % (var, k)] = v.clone()
        m64 = ABMILInstanceMLP(D_FEAT, MLP_LAYERS, C, attn_hidden=HIDDEN, dropout=0.0, gated=gated).double()
        m64.load_state_dict(model.state_dict())
        for N in MLP_SIZES:
            y = torch.tensor([LABELS[N]])
            for k, v in bag_case(model, X[N], y).items():
                ref32["%s.n%d.%s" % (var, N, k)] = v
            for k, v in bag_case(m64, X[N].double(), y).items():
                ref["%s.n%d.%s" % (var, N, k)] = v
    for k, v in ref.items():
        t[k] = v.detach().float()
    floors = case_floors(ref)
    worst = max(rel_err(v.detach(), ref[k].detach(),
                        floors.get(k.split(".grad.")[0], 0.0) if ".grad." in k else 0.0)
                for k, v in ref32.items())
    print("mil_abmil_mlp: float32 torch vs float64 reference: max rel err %.3g" % worst)
    assert worst < 1e-4, "float32 torch disagrees with the float64 reference"
    path = golden_path("mil_abmil_mlp.safetensors")
    st_write(path, t, {"generator": "tests/reference/golden_mil_abmil.py", "torch": torch.__version__,
                       "seed": "1", "layers": "12 10", "dims": "%d %d %d" % (D_FEAT, HIDDEN, C)})
    check_roundtrip(path, t)
    print("wrote %s (%d tensors)" % (path, len(t)))


if __name__ == "__main__":
    main()
    main_mlp()
