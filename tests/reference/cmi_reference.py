#!/usr/bin/python3
"""Writes tests/golden/cmi.json: dataset-level CMI, Gamma, NCMI and
nearest-centroid accuracy (paper Eq. 5-8, ../shared/docs/ncmi.md) computed
by brute force in float64 numpy, with the O(N^2) pair sum of Eq. 7:

  p_x   = simplex(v_x)      nsf: s(v)/(sum s(v) + 1e-8), softmax
  s^c   = mean of p_x over class c
  CMI   = (1/N) sum_x KL(p_x || s^{y_x})
  Gamma = (1/N^2) sum_z sum_{x: y_x != y_z} KL(s^{y_x} || p_z)
  NCMI  = CMI / Gamma (null when Gamma = 0)
  cc    = mean_x [argmin_{c present} KL(p_x || s^c) == y_x]

"musk1": the same (vectorized pair sum, checked against the loop version
on the cases above) for the musk1 fixture, fold0.csv, every instance one
sample / --pool mean, softmax and nsf, as `ncmi measure` computes them.

tests/test_cmi.c recomputes them with eval/cmi.c (O(N*C*D)) and compares
within 1e-6 relative. Inputs are float32 values written exactly.
"""
import json
import os

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "golden", "cmi.json")


def simplex(v, kind):
    v = v.astype(np.float64)
    if kind == "nsf":
        s = 1.0 / (1.0 + np.exp(-v))
        return s / (s.sum(axis=1, keepdims=True) + 1e-8)
    e = np.exp(v - v.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def kl(p, q):
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(p > 0, p * (np.log(p) - np.log(q)), 0.0)
    return t.sum(axis=-1)


def brute(x, y, C, kind):
    p = simplex(x, kind)
    N = len(y)
    present = [c for c in range(C) if (y == c).any()]
    s = {c: p[y == c].mean(axis=0) for c in present}
    cmi = np.mean([kl(p[i], s[y[i]]) for i in range(N)])
    gam = 0.0
    for z in range(N):
        for i in range(N):
            if y[i] != y[z]:
                gam += kl(s[y[i]], p[z])
    gam /= N * N
    hits = 0
    for i in range(N):
        d = [kl(p[i], s[c]) for c in present]
        hits += present[int(np.argmin(d))] == y[i]
    return {"cmi": cmi, "gamma": gam, "ncmi": cmi / gam if gam > 0 else None, "cc_accuracy": hits / N,
            "n_classes_present": len(present)}


def brute_fast(x, y, C, kind):
    """The same definitions, the pair sum vectorized over x (for musk1, N ~ 500)."""
    p = simplex(x, kind)
    N = len(y)
    present = [c for c in range(C) if (y == c).any()]
    s = np.zeros((C, p.shape[1]))
    for c in present:
        s[c] = p[y == c].mean(axis=0)
    cmi = kl(p, s[y]).mean()
    S = s[y]
    gam = sum(kl(S[y != y[z]], p[z][None, :]).sum() for z in range(N)) / (N * N)
    d = np.stack([kl(p, s[c][None, :]) for c in present], axis=1)
    cc = np.mean(np.array(present)[d.argmin(axis=1)] == y)
    return {"cmi": cmi, "gamma": gam, "ncmi": cmi / gam if gam > 0 else None, "cc_accuracy": cc}


def musk1():
    """ncmi measure on the musk1 fixture (fold0.csv, all rows; classes sorted:
    negative, positive), when the fixture is present."""
    import csv
    import h5py
    root = os.environ.get("NCMI_FIXTURES", os.path.join(HERE, "..", "..", "..", "shared", "fixtures"))
    d = os.path.join(root, "mil", "musk1")
    if not os.path.isdir(d):
        # keep what the committed file has, so that regenerating without the fixture changes nothing
        print(f"musk1 fixture not found under {root} (set NCMI_FIXTURES): musk1 section kept as it was")
        try:
            return json.load(open(OUT)).get("musk1")
        except (OSError, ValueError):
            return None
    rows = list(csv.DictReader(open(os.path.join(d, "folds", "fold0.csv"))))
    classes = sorted({r["label"] for r in rows})
    xs, ys, pooled = [], [], []
    for r in rows:
        with h5py.File(os.path.join(d, "features", r["slide_id"] + ".h5"), "r") as f:
            x = f["features"][:].astype(np.float32)
        xs.append(x)
        ys += [classes.index(r["label"])] * len(x)
        pooled.append(x.astype(np.float64).mean(axis=0).astype(np.float32))
    X, Y = np.concatenate(xs), np.array(ys)
    P, PY = np.stack(pooled), np.array([classes.index(r["label"]) for r in rows])
    out = {"manifest": "mil/musk1/folds/fold0.csv", "classes": classes, "n_samples": int(len(Y)),
           "n_slides": len(rows), "dim": int(X.shape[1]), "results": {}}
    for kind in ("softmax", "nsf"):
        out["results"][kind + "_none"] = brute_fast(X, Y, len(classes), kind)
        out["results"][kind + "_mean"] = brute_fast(P, PY, len(classes), kind)
    return out


def main():
    rng = np.random.default_rng(7)
    specs = [  # name, N, D, C, simplex, scale, separation, classes used
        ("nsf_basic", 40, 6, 3, "nsf", 1.0, 1.0, None),
        ("softmax_basic", 40, 6, 3, "softmax", 1.0, 1.0, None),
        ("nsf_separated", 90, 12, 5, "nsf", 1.0, 3.0, None),
        ("softmax_separated", 90, 12, 5, "softmax", 1.0, 3.0, None),
        ("softmax_large", 50, 8, 4, "softmax", 30.0, 1.0, None),  # p spans ~80 orders of magnitude
        ("nsf_large", 50, 8, 4, "nsf", 30.0, 1.0, None),
        ("missing_class", 45, 7, 4, "nsf", 1.0, 1.5, [0, 1, 3]),
        ("d_less_than_c", 60, 2, 5, "softmax", 2.0, 1.0, None),
        ("one_class", 20, 5, 3, "nsf", 1.0, 1.0, [1]),
        ("binary", 70, 10, 2, "nsf", 1.0, 0.7, None),
    ]
    cases = []
    for name, N, D, C, kind, scale, sep, used in specs:
        y = rng.choice(used if used else np.arange(C), size=N)
        mu = rng.normal(size=(C, D)) * sep
        x = ((mu[y] + rng.normal(size=(N, D))) * scale).astype(np.float32)
        e = brute(x, y, C, kind)
        f = brute_fast(x, y, C, kind)
        assert all(abs(e[k] - f[k]) <= 1e-12 * max(1, abs(e[k])) for k in ("cmi", "gamma", "cc_accuracy"))
        cases.append({"name": name, "N": N, "D": D, "C": C, "simplex": kind,
                      "x": [float(v) for v in x.ravel()], "y": y.tolist(), "expected": e})
    m = musk1()
    with open(OUT, "w") as f:
        json.dump({"cases": cases, "musk1": m}, f, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {OUT}: {len(cases)} cases, {os.path.getsize(OUT)} bytes")


if __name__ == "__main__":
    main()
