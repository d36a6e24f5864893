#!/usr/bin/python3
"""Writes tests/golden/losses.safetensors: the CE-family losses of nn/loss.h
and their gradients w.r.t. the logits, computed with torch in float64 from
the definitions (focal, poly1, square, squentropy and anticlass written here;
ce and label smoothing are F.cross_entropy). tests/test_losses.c compares
(test losses_golden_torch).

For each shape S (name "NxC"): "S.logits" [N,C], "S.labels" [N] (as F32).
For each case V on shape S: "V.loss" [1], "V.grad" [N,C]; metadata
"loss.V" = "<shape> <kind> <p0> <p1>" (p0, p1: the loss's hyper-parameters:
label_smoothing eps; focal gamma; poly1 eps; square k M; anticlass lambda).
"""
import json
import os
import struct

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "golden", "losses.safetensors")


from common import st_write as write_safetensors  # noqa: E402  (shared numpy writer)


# ---- the losses, from their definitions (mean over the batch) ----

def ce(f, y, p0, p1):
    return F.cross_entropy(f, y)


def label_smoothing(f, y, eps, p1):
    return F.cross_entropy(f, y, label_smoothing=eps)


def focal(f, y, gamma, p1):
    # Lin et al.: -(1 - p_t)^gamma log p_t, multi-class, no alpha
    lpt = F.log_softmax(f, dim=1).gather(1, y[:, None])[:, 0]
    pt = lpt.exp()
    return (-(1 - pt) ** gamma * lpt).mean()


def poly1(f, y, eps, p1):
    # PolyLoss Poly-1: CE + eps (1 - p_t)
    lpt = F.log_softmax(f, dim=1).gather(1, y[:, None])[:, 0]
    return (-lpt + eps * (1 - lpt.exp())).mean()


def square(f, y, k, M):
    # Hui & Belkin 2021: (1/C)[k (f_y - M)^2 + sum_{j != y} f_j^2]
    C = f.shape[1]
    onehot = F.one_hot(y, C).to(f.dtype)
    target = M * onehot
    weight = 1 + (k - 1) * onehot
    return ((weight * (f - target) ** 2).sum(1) / C).mean()


def squentropy(f, y, p0, p1):
    # Hui, Belkin & Wright 2023: CE + 1/(C-1) sum_{j != y} f_j^2
    C = f.shape[1]
    off = 1 - F.one_hot(y, C).to(f.dtype)
    return (F.cross_entropy(f, y, reduction="none") + (off * f ** 2).sum(1) / (C - 1)).mean()


def anticlass(f, y, lam, p1):
    # CE + lambda * OCCE, OCCE as the authors' OCCELoss (softmax of -f over all C)
    C = f.shape[1]
    ycomp = (C - 1) * F.softmax(-f, dim=1)
    t = torch.ones_like(f)
    t.scatter_(1, y[:, None], 0.0)
    occe = -1.0 / (C - 1) * (t * torch.log(ycomp + 1e-7)).sum(1)
    return F.cross_entropy(f, y) + lam * occe.mean()


LOSSES = {
    "ce": ce, "label_smoothing": label_smoothing, "focal": focal, "poly1": poly1,
    "square": square, "squentropy": squentropy, "anticlass": anticlass,
}
DEFAULTS = {
    "ce": (0, 0), "label_smoothing": (0.1, 0), "focal": (2, 0), "poly1": (1, 0),
    "square": (1, 1), "squentropy": (0, 0), "anticlass": (1, 0),
}
OTHER = {
    "label_smoothing": (0.3, 0), "focal": (0.5, 0), "poly1": (2.5, 0), "square": (3, 5),
    "anticlass": (0.4, 0),
}


def main():
    torch.manual_seed(0)
    T, M = {}, {}
    shapes = [(5, 4), (1, 3), (6, 2), (3, 10), (1, 2)]
    for N, C in shapes:
        s = "%dx%d" % (N, C)
        f = (torch.randn(N, C, dtype=torch.float64) * 2).float().double()
        y = torch.randint(0, C, (N,))
        if N >= 3:
            f[0, y[0]] = 9.0  # a confident row: p_t close to 1 (focal's small 1 - p_t)
            f[1, (y[1] + 1) % C] = 6.0  # a confidently wrong row
        T[s + ".logits"] = f
        T[s + ".labels"] = y.double()
        for kind, fn in LOSSES.items():
            variants = [("", DEFAULTS[kind])]
            if kind in OTHER:
                variants.append(("_b", OTHER[kind]))
            for suffix, (p0, p1) in variants:
                name = "%s.%s%s" % (s, kind, suffix)
                x = f.clone().requires_grad_(True)
                loss = fn(x, y, p0, p1)
                loss.backward()
                T[name + ".loss"] = loss.detach().reshape(1)
                T[name + ".grad"] = x.grad
                M["loss." + name] = "%s %s %.9g %.9g" % (s, kind, p0, p1)
    write_safetensors(OUT, T, M)
    print("wrote", os.path.relpath(OUT), len(T), "tensors")


if __name__ == "__main__":
    main()
