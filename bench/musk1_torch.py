"""The PyTorch peer of ncmi's Musk1 cross-validation (bench/musk1.sh):
ABMIL trained in PyTorch on the same fold files, with the same protocol as
`ncmi train --config configs/musk1_abmil_<recipe>_ce.yaml --folds ... --seeds`:

  - bags from <features>/<slide_id>.h5 (`features` [N, 166]), splits from
    <folds>/fold<k>.csv (slide_id,label,split; classes negative, positive);
  - features z-scored with the mean and population std of the training bags'
    instances (ncmi's data.standardize: std < 1e-6 -> 1);
  - one bag per step, the training bags shuffled every epoch, cross-entropy on
    a Linear(D, 2) head;
  - after every epoch the mean cross-entropy on the validation bags (eval
    mode); the epoch with the lowest (the first on ties) is tested (ncmi's
    train.select: loss);
  - per seed the mean over the folds of test accuracy, macro-F1 and macro-AUC,
    then mean and sample std over the seeds.

Recipes (configs/musk1_abmil_ce.yaml, configs/musk1_abmil_ilse_ce.yaml):
  m500: dimension reduction to 500 (no bias) + ReLU, gated attention 128,
        AdamW lr 5e-4 weight decay 1e-4, 40 epochs
  ilse: fc-256, fc-128, fc-64 (each + ReLU + dropout 0.5), attention without
        the gate, 64 hidden, Adam lr 5e-4 with L2 5e-3, 100 epochs

The models are tests/reference/mil_ref_abmil.py's (the official state_dict
names). Only the initial weights and the random order differ from ncmi's run
(the two use different random generators), so the two tables measure the same
recipe on the same folds.

    /usr/bin/python3 bench/musk1_torch.py --recipe m500 --seeds 0-4 \
        --folds ../shared/fixtures/mil/musk1/folds --features ../shared/fixtures/mil/musk1/features
Prints one row per seed and `mean` / `std` rows; --json FILE writes them.
--write-random-folds DIR --seeds S writes the fold files of one repetition of
the paper's protocol (new stratified folds per repetition) for bench/musk1.sh
FOLDS=random.
"""
import argparse
import csv
import json
import os
import statistics
import sys
import time

import h5py
import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import f1_score, roc_auc_score

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "reference"))
from mil_ref_abmil import ABMIL, ABMILInstanceMLP  # noqa: E402

CLASSES = ["negative", "positive"]


def parse_seeds(text):
    out = []
    for part in text.split(","):
        if "-" in part:
            a, b = part.split("-")
            out += list(range(int(a), int(b) + 1))
        else:
            out.append(int(part))
    return out


def read_fold(path):
    rows = {"train": [], "val": [], "test": []}
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            if r["split"] not in rows:
                sys.exit(f"{path}: split '{r['split']}' is not train, val or test")
            if r["label"] not in CLASSES:
                sys.exit(f"{path}: label '{r['label']}' is not one of {CLASSES}")
            rows[r["split"]].append((r["slide_id"], CLASSES.index(r["label"])))
    return rows


def load_bags(features, rows, cache):
    out = []
    for sid, y in rows:
        if sid not in cache:
            path = os.path.join(features, sid + ".h5")
            with h5py.File(path, "r") as f:
                cache[sid] = np.asarray(f["features"], dtype=np.float64)
        out.append((cache[sid], y))
    return out


def make_model(recipe, d_feat):
    if recipe == "m500":
        m = ABMIL(d_feat, 500, 2, attn_hidden=128)
        opt = torch.optim.AdamW(m.parameters(), lr=5e-4, weight_decay=1e-4, betas=(0.9, 0.999))
        return m, opt, 40
    m = ABMILInstanceMLP(d_feat, [256, 128, 64], 2, attn_hidden=64, dropout=0.5, gated=False)
    opt = torch.optim.Adam(m.parameters(), lr=5e-4, weight_decay=5e-3, betas=(0.9, 0.999))
    return m, opt, 100


def evaluate(model, bags):
    model.eval()
    probs, ys, loss = [], [], 0.0
    with torch.no_grad():
        for x, y in bags:
            logits = model(x)[0]
            loss += F.cross_entropy(logits, torch.tensor([y])).item()
            probs.append(torch.softmax(logits, dim=1)[0, 1].item())
            ys.append(y)
    return loss / max(len(bags), 1), np.array(probs), np.array(ys)


def run_fold(recipe, seed, fold_rows, features, cache):
    bags = {k: load_bags(features, v, cache) for k, v in fold_rows.items()}
    inst = np.concatenate([x for x, _ in bags["train"]], axis=0)
    mean = inst.mean(axis=0)
    sd = np.sqrt(np.maximum((inst * inst).mean(axis=0) - mean * mean, 0))
    inv = 1.0 / np.where(sd < 1e-6, 1.0, sd)
    tens = {k: [(torch.tensor(((x - mean) * inv).astype(np.float32)), y) for x, y in v] for k, v in bags.items()}
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model, opt, epochs = make_model(recipe, inst.shape[1])
    best, best_state = None, None
    for _ in range(epochs):
        model.train()
        for i in torch.randperm(len(tens["train"]), generator=gen).tolist():
            x, y = tens["train"][i]
            opt.zero_grad()
            F.cross_entropy(model(x)[0], torch.tensor([y])).backward()
            opt.step()
        vloss, _, _ = evaluate(model, tens["val"])
        if best is None or vloss < best:
            best = vloss
            best_state = {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    _, p, y = evaluate(model, tens["test"])
    pred = (p >= 0.5).astype(int)
    acc = float((pred == y).mean())
    f1 = float(f1_score(y, pred, average="macro", labels=[0, 1], zero_division=0))
    auc = float(roc_auc_score(y, p)) if len(set(y.tolist())) == 2 else float("nan")
    return acc, f1, auc


def write_random_folds(src, out, seed, k, n_val=8):
    """Fold files for one repetition of the paper's protocol: the bags of
    src/fold0.csv dealt into k stratified test folds after a shuffle with
    seed, and n_val random other bags as each fold's validation split (as the
    fixture's folds have 8); the rest train."""
    with open(os.path.join(src, "fold0.csv"), newline="") as f:
        bags = [(r["slide_id"], r["label"]) for r in csv.DictReader(f)]
    rng = np.random.RandomState(seed)
    folds, i = [[] for _ in range(k)], 0
    for c in CLASSES:
        members = [b for b in bags if b[1] == c]
        for j in rng.permutation(len(members)):
            folds[i % k].append(members[j])
            i += 1
    os.makedirs(out, exist_ok=True)
    for f in range(k):
        test = set(folds[f])
        rest = [b for b in bags if b not in test]
        val = {rest[j] for j in rng.permutation(len(rest))[:n_val]}
        with open(os.path.join(out, f"fold{f}.csv"), "w") as fh:
            fh.write("slide_id,label,split\n")
            for b in bags:
                fh.write(f"{b[0]},{b[1]},{'test' if b in test else 'val' if b in val else 'train'}\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", choices=["m500", "ilse"], default="m500")
    ap.add_argument("--seeds", default="0-4")
    ap.add_argument("--folds", default="../shared/fixtures/mil/musk1/folds")
    ap.add_argument("--features", default="../shared/fixtures/mil/musk1/features")
    ap.add_argument("--json", default=None)
    ap.add_argument("--write-random-folds", metavar="DIR", default=None,
                    help="write stratified random fold files (as many as --folds has) for the first of --seeds into DIR, then exit")
    a = ap.parse_args()
    files = sorted(f for f in os.listdir(a.folds) if f.startswith("fold") and f.endswith(".csv"))
    if not files:
        sys.exit(f"{a.folds}: no fold<k>.csv files")
    if a.write_random_folds:  # as many folds as a.folds has
        write_random_folds(a.folds, a.write_random_folds, parse_seeds(a.seeds)[0], len(files))
        return
    torch.set_num_threads(1)
    folds = [read_fold(os.path.join(a.folds, f)) for f in sorted(files, key=lambda s: int(s[4:-4]))]
    cache, rows, t0 = {}, [], time.time()
    print(f"PyTorch {torch.__version__} ABMIL ({a.recipe}), {len(folds)}-fold cross-validation, seeds {a.seeds}")
    print(f"{'seed':>6} {'accuracy':>9} {'macro-F1':>9} {'macro-AUC':>9}")
    for s in parse_seeds(a.seeds):
        r = [run_fold(a.recipe, s, fr, a.features, cache) for fr in folds]
        row = [statistics.fmean(v[i] for v in r) for i in range(3)]
        rows.append({"seed": s, "accuracy": row[0], "f1_macro": row[1], "auc_macro": row[2]})
        print(f"{s:>6} {row[0]:9.4f} {row[1]:9.4f} {row[2]:9.4f}", flush=True)
    summary = {}
    for k in ("accuracy", "f1_macro", "auc_macro"):
        v = [r[k] for r in rows]
        summary[k] = {"mean": statistics.fmean(v), "std": statistics.stdev(v) if len(v) > 1 else 0.0, "n": len(v)}
    print(f"{'mean':>6} " + " ".join(f"{summary[k]['mean']:9.4f}" for k in ("accuracy", "f1_macro", "auc_macro")))
    print(f"{'std':>6} " + " ".join(f"{summary[k]['std']:9.4f}" for k in ("accuracy", "f1_macro", "auc_macro")))
    print(f"({time.time() - t0:.0f} s; std: sample standard deviation over the seeds)")
    if a.json:
        tmp = a.json + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"recipe": a.recipe, "seeds": rows, "summary": summary, "torch": torch.__version__}, f, indent=1)
        os.replace(tmp, a.json)


if __name__ == "__main__":
    main()
