#!/usr/bin/python3
"""Writes tests/golden/metrics.json: seeded random classification cases and
what scikit-learn (1.2) says about them; tests/test_metrics.c recomputes
every value with eval/metrics.c and compares within 1e-9.

Each case: C classes, y_true, y_pred (ints) and integer scores k[n][C].
The C side rebuilds the double scores exactly as here: s = k when
"normalize" is false, else s_ij = k_ij / sum_j k_ij (rows summing to 1, so
that sklearn's multi-class roc_auc_score accepts them). Small integer ranges
make tied scores common.

Expected values (null = undefined):
  accuracy, balanced_accuracy (+ warn_balanced: sklearn warned that y_pred
  has classes absent from y_true), {precision,recall,f1}_{macro,micro,weighted}
  with labels=None and zero_division="warn" (+ warn_precision / warn_recall
  for the macro call), per class with labels=range(C): precision, recall,
  f1, support; confusion_matrix (labels=range(C)); top_k[k-1] for
  k = 1..C-1 (C >= 3, top_k_accuracy_score with labels=range(C));
  auc[c] = roc_auc_score(y_true == c, s[:, c]) or null when only one class
  is present in that column; auc_macro = mean over defined, auc_weighted =
  support-weighted; where every class is present (and C > 2) also
  sklearn's own roc_auc_score(multi_class='ovr', average=macro/weighted)
  as ovr_macro/ovr_weighted (the test checks both agree with ours);
  auc_binary (C == 2) = roc_auc_score(y_true, s[:, 1]).
  bootstrap (some cases): the nn_rng stream (xoshiro256** seeded through
  splitmix64, forks as nn_rng_fork) reproduced here, B resamples, metric on
  each with sklearn, NaN dropped, np.percentile 2.5 / 97.5.
"""
import json
import os
import warnings

import numpy as np
from sklearn import metrics as skm
from sklearn.exceptions import UndefinedMetricWarning

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "golden", "metrics.json")

M64 = (1 << 64) - 1


class Rng:
    """nn/rng.c: xoshiro256** seeded through splitmix64."""

    def __init__(self, seed):
        x = seed & M64
        self.s = []
        for _ in range(4):
            x = (x + 0x9E3779B97F4A7C15) & M64
            z = x
            z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
            z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
            self.s.append(z ^ (z >> 31))

    def u64(self):
        s = self.s
        rotl = lambda x, k: ((x << k) | (x >> (64 - k))) & M64
        result = (rotl((s[1] * 5) & M64, 7) * 9) & M64
        t = (s[1] << 17) & M64
        s[2] ^= s[0]
        s[3] ^= s[1]
        s[1] ^= s[2]
        s[0] ^= s[3]
        s[2] ^= t
        s[3] = rotl(s[3], 45)
        return result

    def fork(self, key):
        return Rng(self.u64() ^ ((key * 0xD1B54A32D192ED03) & M64))

    def below(self, n):
        if n <= 1:
            return 0
        limit = M64 - M64 % n
        while True:
            x = self.u64()
            if x < limit:
                return x % n


def num(x):
    x = float(x)
    return None if np.isnan(x) else x


def ovr_auc(y, s, C):
    auc, sup = [], []
    for c in range(C):
        t = (y == c).astype(int)
        auc.append(skm.roc_auc_score(t, s[:, c]) if 0 < t.sum() < len(t) else np.nan)
        sup.append(t.sum())
    auc, sup = np.array(auc), np.array(sup, dtype=float)
    ok = ~np.isnan(auc)
    macro = auc[ok].mean() if ok.any() else np.nan
    weighted = (auc[ok] * sup[ok]).sum() / sup[ok].sum() if ok.any() else np.nan
    return auc, macro, weighted


def prf(y, p, avg):
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        P, R, F, _ = skm.precision_recall_fscore_support(y, p, average=avg, zero_division="warn")
    msgs = " ".join(str(x.message) for x in w if issubclass(x.category, UndefinedMetricWarning))
    return P, R, F, "Precision" in msgs, "Recall" in msgs


BOOT_METRICS = ["accuracy", "balanced_accuracy", "f1_macro", "auc_macro", "auc_weighted"]


def metric(name, y, p, s, C):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if name == "accuracy":
            return skm.accuracy_score(y, p)
        if name == "balanced_accuracy":
            return skm.balanced_accuracy_score(y, p)
        if name == "f1_macro":
            return skm.f1_score(y, p, average="macro")
        if name == "auc_macro":
            return ovr_auc(y, s, C)[1]
        if name == "auc_weighted":
            return ovr_auc(y, s, C)[2]
    raise ValueError(name)


def bootstrap(y, p, s, C, B, seed):
    master = Rng(seed)
    streams = [master.fork(b) for b in range(B)]
    n = len(y)
    vals = {m: [] for m in BOOT_METRICS}
    for b in range(B):
        r = streams[b]
        idx = np.array([r.below(n) for _ in range(n)])
        for m in BOOT_METRICS:
            v = metric(m, y[idx], p[idx], s[idx], C)
            if not np.isnan(v):
                vals[m].append(v)
    out = {}
    for m in BOOT_METRICS:
        v = np.array(vals[m])
        lo, hi = np.percentile(v, [2.5, 97.5]) if len(v) else (np.nan, np.nan)
        out[m] = {"point": num(metric(m, y, p, s, C)), "lo": num(lo), "hi": num(hi), "n_valid": len(v)}
    return {"B": B, "seed": seed, "level": 0.95, "values": out}


def make_case(rng, kind, C, n):
    if kind == "missing_true":  # some classes never in y_true
        keep = rng.choice(C, size=max(1, C - rng.integers(1, C)), replace=False)
        y = rng.choice(keep, size=n)
        p = rng.integers(0, C, size=n)
    elif kind == "missing_pred":
        y = rng.integers(0, C, size=n)
        keep = rng.choice(C, size=max(1, C - rng.integers(1, C)), replace=False)
        p = rng.choice(keep, size=n)
    elif kind == "missing_both":  # class C-1 in neither
        y = rng.integers(0, C - 1, size=n)
        p = rng.integers(0, C - 1, size=n)
    elif kind == "perfect":
        y = rng.integers(0, C, size=n)
        p = y.copy()
    elif kind == "constant":
        y = rng.integers(0, C, size=n)
        p = np.full(n, rng.integers(0, C))
    elif kind == "one_class":
        y = np.full(n, rng.integers(0, C))
        p = rng.integers(0, C, size=n)
    else:  # random, with p agreeing with y about half of the time
        y = rng.integers(0, C, size=n)
        p = np.where(rng.random(n) < 0.5, y, rng.integers(0, C, size=n))
    hi = int(rng.choice([3, 5, 1000]))  # coarse ranges make ties
    k = rng.integers(1, hi + 1, size=(n, C))
    if kind == "perfect":
        k[np.arange(n), y] = hi + 2
    if kind == "constant":
        k[:] = 2
    normalize = bool(rng.random() < 0.6) or (kind not in ("missing_true", "one_class") and C > 2)
    s = k / k.sum(axis=1, keepdims=True) if normalize else k.astype(float)
    return y.astype(int), p.astype(int), k, s, normalize


def expected(y, p, s, C):
    e = {}
    e["accuracy"] = skm.accuracy_score(y, p)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        e["balanced_accuracy"] = skm.balanced_accuracy_score(y, p)
    e["warn_balanced"] = any("y_pred contains classes not in y_true" in str(x.message) for x in w)
    for avg in ("macro", "micro", "weighted"):
        P, R, F, wp, wr = prf(y, p, avg)
        e["precision_" + avg], e["recall_" + avg], e["f1_" + avg] = P, R, F
        if avg == "macro":
            e["warn_precision"], e["warn_recall"] = wp, wr
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        P, R, F, S = skm.precision_recall_fscore_support(y, p, labels=list(range(C)), average=None)
    e["precision"], e["recall"], e["f1"], e["support"] = P.tolist(), R.tolist(), F.tolist(), S.tolist()
    e["confusion_matrix"] = skm.confusion_matrix(y, p, labels=list(range(C))).tolist()
    if C >= 3:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            e["top_k"] = [skm.top_k_accuracy_score(y, s, k=k, labels=list(range(C))) for k in range(1, C)]
    auc, macro, weighted = ovr_auc(y, s, C)
    e["auc"] = [num(a) for a in auc]
    e["auc_macro"], e["auc_weighted"] = num(macro), num(weighted)
    if C > 2 and len(np.unique(y)) == C and np.allclose(s.sum(axis=1), 1):
        e["ovr_macro"] = skm.roc_auc_score(y, s, multi_class="ovr", average="macro", labels=list(range(C)))
        e["ovr_weighted"] = skm.roc_auc_score(y, s, multi_class="ovr", average="weighted", labels=list(range(C)))
    if C == 2:
        e["auc_binary"] = num(skm.roc_auc_score(y, s[:, 1])) if len(np.unique(y)) == 2 else None
    return {k: (num(v) if isinstance(v, (float, np.floating)) else v) for k, v in e.items()}


def main():
    rng = np.random.default_rng(20240603)
    kinds = ["random", "missing_true", "missing_pred", "missing_both", "perfect", "constant", "one_class"]
    cases = []
    for i in range(70):
        kind = kinds[i % len(kinds)]
        C = int(rng.integers(2, 8))
        if kind == "missing_both" and C < 3:
            C = 3
        n = int(rng.integers(6, 29))
        y, p, k, s, normalize = make_case(rng, kind, C, n)
        case = {"name": f"{i}_{kind}_C{C}_n{n}", "C": C, "y_true": y.tolist(), "y_pred": p.tolist(),
                "scores_int": k.tolist(), "normalize": normalize, "expected": expected(y, p, s, C)}
        if i % 6 == 0:
            case["bootstrap"] = bootstrap(y, p, s, C, 40, 1000 + i)
        cases.append(case)
    with open(OUT, "w") as f:
        json.dump({"sklearn": __import__("sklearn").__version__, "cases": cases}, f, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {OUT}: {len(cases)} cases, {os.path.getsize(OUT)} bytes")


if __name__ == "__main__":
    main()
