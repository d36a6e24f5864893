#!/usr/bin/env python3
"""Builds data-manifests/ (CAMELYON-17 and BRACS slide manifests) from the public
label tables in ../shared/manifests-src/ (see data-manifests/README.md).

    python3 tools/build_manifests.py [--src ../shared/manifests-src] [--out data-manifests] [--check]

Standard library only. Deterministic: the CAMELYON-17 train/val split is drawn
with a fixed seed (SEED below). --check rebuilds into memory and fails (exit 1)
when the files in --out differ, or when a count differs from data.md's."""
import argparse
import collections
import csv
import io
import os
import random
import sys

SEED = 17  # CAMELYON-17 train/val split (patients of centres 0-2)
C17_LABELS = ["negative", "itc", "micro", "macro"]  # index = the AEM table's 0..3
BRACS_GROUP = {"N": "benign", "PB": "benign", "UDH": "benign", "FEA": "atypical", "ADH": "atypical",
               "DCIS": "malignant", "IC": "malignant"}

# counts stated in ../shared/docs/data.md
EXPECT_C17 = {"all": {"negative": 318, "itc": 36, "micro": 59, "macro": 87},
              "test": {"negative": 121, "itc": 16, "micro": 18, "macro": 45}}
EXPECT_BRACS = {"train": {"benign": 203, "atypical": 52, "malignant": 140},
                "val": {"benign": 30, "atypical": 14, "malignant": 21},
                "test": {"benign": 32, "atypical": 23, "malignant": 32}}


def die(msg):
    sys.stderr.write("build_manifests.py: %s\n" % msg)
    sys.exit(1)


def read_csv(path):
    try:
        with open(path, newline="") as f:
            return list(csv.DictReader(f))
    except OSError as e:
        die("%s: %s" % (path, e.strerror))


def pn_stage(labels):
    """pN stage of a patient from its node labels (CAMELYON-17 rules): ITCs alone do
    not count as a positive node; pN1mi = micro-metastases only; pN1 = 1-3 positive
    nodes with at least one macro-metastasis; pN2 = 4-9 positive nodes with at least
    one macro-metastasis; pN0(i+) = ITCs only; pN0 = none."""
    pos = sum(1 for l in labels if l in ("micro", "macro"))
    macro = sum(1 for l in labels if l == "macro")
    if macro:
        return "pN1" if pos <= 3 else "pN2"
    if pos:
        return "pN1mi"
    if any(l == "itc" for l in labels):
        return "pN0(i+)"
    return "pN0"


def camelyon17(src):
    path = os.path.join(src, "camelyon17_slide_labels_aem.csv")
    rows = read_csv(path)
    slides, seen = [], set()
    for i, r in enumerate(rows, 1):
        sid = (r.get("slide_id") or "").strip()
        if not sid.startswith("patient_") or "_node_" not in sid:
            die("%s: row %d: slide_id '%s' is not patient_XXX_node_Y" % (path, i, sid))
        if sid in seen:
            die("%s: row %d: slide '%s' listed twice" % (path, i, sid))
        seen.add(sid)
        try:
            label = C17_LABELS[int(r["label"])]
        except (ValueError, IndexError, KeyError):
            die("%s: row %d: label '%s' is not 0..3" % (path, i, r.get("label")))
        case = sid.split("_node_")[0]
        center = int(case.split("_")[1]) // 20
        if r.get("center") not in (None, "") and int(r["center"]) != center:
            die("%s: row %d: centre %s, but patient %s is in centre %d" % (path, i, r["center"], case, center))
        slides.append({"slide_id": sid, "case_id": case, "center": center, "label": label})
    # train/val: a seeded 90/10 split of the patients of centres 0-2 (grouped by patient, so no
    # patient has slides on both sides), the first draw whose validation set holds every label
    patients = sorted({s["case_id"] for s in slides if s["center"] <= 2})
    n_val = round(len(patients) * 0.1)
    rng = random.Random(SEED)
    for _ in range(1000):
        order = patients[:]
        rng.shuffle(order)
        val = set(order[:n_val])
        if {s["label"] for s in slides if s["case_id"] in val} == set(C17_LABELS):
            break
    else:
        die("no validation draw holds every label")
    for s in slides:
        s["split"] = "test" if s["center"] >= 3 else ("val" if s["case_id"] in val else "train")
        s["rel_path"] = "training/center_%d/%s.tif" % (s["center"], s["slide_id"])
    # patient-level pN stage, with the older table's stage beside it
    v1 = {}
    for r in read_csv(os.path.join(src, "camelyon17_stage_labels_v1.csv")):
        p = r.get("patient", "")
        if p.endswith(".zip"):
            v1[p[:-4]] = r.get("stage", "")
    by_case = collections.defaultdict(list)
    for s in slides:
        by_case[s["case_id"]].append(s)
    patients_rows = []
    for case in sorted(by_case):
        ss = by_case[case]
        st = pn_stage([s["label"] for s in ss])
        patients_rows.append({"case_id": case, "center": ss[0]["center"], "split": ss[0]["split"],
                              "n_slides": len(ss), "pn_stage": st, "pn_stage_v1": v1.get(case, ""),
                              "labels": " ".join(s["label"] for s in sorted(ss, key=lambda s: s["slide_id"]))})
    return slides, patients_rows


def bracs(src):
    path = os.path.join(src, "bracs_split_oodml.csv")
    rows = read_csv(path)
    cases = {}
    for r in read_csv(os.path.join(src, "bracs_patients_longmil.csv")):
        cases[r["slide_id"].strip()] = (r["case_id"].strip(), r["label"].strip())
    out, seen = [], set()
    for i, r in enumerate(rows, 1):
        sid = r["slide_id"].strip()
        if sid in seen:
            die("%s: row %d: slide '%s' listed twice" % (path, i, sid))
        seen.add(sid)
        parts = r["full_path"].split("/")
        typ = next((p[5:] for p in parts if p.startswith("Type_")), None)
        grp = next((p for p in parts if p.startswith("Group_")), None)
        split = r["split_info"].strip()
        if typ not in BRACS_GROUP:
            die("%s: row %d: no known Type_<subtype> folder in '%s'" % (path, i, r["full_path"]))
        if split not in ("train", "val", "test"):
            die("%s: row %d: split '%s'" % (path, i, split))
        case, sub2 = cases.get(sid, ("", ""))
        if sub2 and sub2 != typ:
            die("%s: slide %s: subtype %s here, %s in bracs_patients_longmil.csv" % (path, sid, typ, sub2))
        out.append({"slide_id": sid, "case_id": case, "subtype": typ, "label": BRACS_GROUP[typ], "split": split,
                    "rel_path": "%s/%s/Type_%s/%s.svs" % (split, grp, typ, sid)})
    return out


def to_csv(rows, cols):
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({c: r[c] for c in cols})
    return buf.getvalue()


def counts(rows, key="split"):
    c = collections.defaultdict(collections.Counter)
    for r in rows:
        c[r[key]][r["label"]] += 1
        c["all"][r["label"]] += 1
    return c


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--src", default=os.path.join(here, "..", "..", "shared", "manifests-src"))
    ap.add_argument("--out", default=os.path.join(here, "..", "data-manifests"))
    ap.add_argument("--check", action="store_true", help="compare with the files in --out instead of writing")
    a = ap.parse_args()

    c17, c17p = camelyon17(a.src)
    br = bracs(a.src)
    cc, bc = counts(c17), counts(br)
    for k, v in EXPECT_C17.items():
        if dict(cc[k]) != v:
            die("CAMELYON-17 %s counts %s differ from data.md's %s" % (k, dict(cc[k]), v))
    for k, v in EXPECT_BRACS.items():
        if dict(bc[k]) != v:
            die("BRACS %s counts %s differ from data.md's %s" % (k, dict(bc[k]), v))
    if len(c17) != 500 or len(br) != 547:
        die("%d CAMELYON-17 and %d BRACS slides (expected 500 and 547)" % (len(c17), len(br)))

    files = {
        "camelyon17.csv": to_csv(c17, ["slide_id", "case_id", "center", "label", "split", "rel_path"]),
        "camelyon17_patients.csv": to_csv(c17p, ["case_id", "center", "split", "n_slides", "pn_stage",
                                                 "pn_stage_v1", "labels"]),
        "bracs.csv": to_csv(br, ["slide_id", "case_id", "subtype", "label", "split", "rel_path"]),
    }
    bad = 0
    for name, text in files.items():
        p = os.path.join(a.out, name)
        if a.check:
            try:
                with open(p) as f:
                    same = f.read() == text
            except OSError:
                same = False
            if not same:
                sys.stderr.write("build_manifests.py: %s is not what the script builds\n" % p)
                bad = 1
        else:
            os.makedirs(a.out, exist_ok=True)
            with open(p + ".tmp", "w") as f:
                f.write(text)
            os.replace(p + ".tmp", p)
    for name, c in (("camelyon17", cc), ("bracs", bc)):
        for split in ("train", "val", "test", "all"):
            print("%-10s %-5s %4d  %s" % (name, split, sum(c[split].values()),
                                          "  ".join("%s %d" % kv for kv in sorted(c[split].items()))))
    diff = [p for p in c17p if p["pn_stage_v1"] and p["pn_stage_v1"] != p["pn_stage"]]
    print("camelyon17 patients: %d; pN stage from the slide labels differs from the v1 table for %d: %s"
          % (len(c17p), len(diff), ", ".join("%s (%s vs %s)" % (p["case_id"], p["pn_stage"], p["pn_stage_v1"])
                                              for p in diff) or "none"))
    return bad


if __name__ == "__main__":
    sys.exit(main())
