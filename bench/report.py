#!/usr/bin/env python3
"""Writes the benchmark report (bench/RESULTS.md, bench/RESULTS-gpu.md) from the
logs of bench/run_all.sh. Standard library only (the GPU machine's lean setup).

    python3 bench/report.py --logs bench/logs/cpu --out bench/RESULTS.md

The logs folder holds meta.txt ("key: value" lines: machine, versions, load),
and per benchmark NAME.log (its whole output) and NAME.status (rc=, seconds=,
cmd=, reason=). The numbers come from the machine-readable lines the
benchmarks print after their human tables:

    RESULT <benchmark> <case> <ncmi value> <peer value, or -> <unit>
    SKIP <benchmark> <case> <reason...>

The ratio is how many times better ncmi is than its peer: peer / ncmi for
times and memory (units ms, s, us, MiB, MB), ncmi / peer for rates (units
ending in /s); > 1: ncmi faster or smaller. Other units get no ratio.
"""
import argparse
import math
import os
import re
import sys

# name: (make target, source, what is compared)
BENCHES = {
    "ops": ("make bench-ops", "bench/ops.sh",
            "CPU linear/conv2d/batch-norm/max-pool forward and forward+backward at ResNet-50 shapes "
            "(batch 32), median ms; peer: PyTorch, 2 threads each"),
    "features": ("make bench-features", "bench/features.sh",
                 "`ncmi features` (resnet50_trunc, 224 px) against openslide-python + torchvision on the "
                 "same coords and weights, whole processes; peer: the PyTorch pipeline of CLAM/TRIDENT"),
    "resnet_train": ("make bench-resnet", "bench/resnet_train.sh",
                     "ResNet-18 (CIFAR stem) training images/s on synthetic CIFAR-shaped data; "
                     "peer: torchvision with the same recipe"),
    "tile": ("make bench-tile", "bench/tile.sh",
             "`ncmi tile` against a Python/OpenSlide/OpenCV implementation of CLAM's algorithm on "
             "generated slides: one process per slide, then the whole cohort in one process"),
    "ncmi_overhead": ("make bench-ncmi", "bench/ncmi_overhead.c",
                      "one training step with the NCMI head (ncmi column) against the linear + CE head "
                      "(peer column) on the same encoder and batch; ratio < 1 is the NCMI overhead"),
    "mil": ("make bench-mil", "bench/mil_step.sh",
            "one MIL training step per bag (forward, head + CE, backward, AdamW) at D 1024/512; "
            "peer: the PyTorch reference heads; case HEAD_N<bag size>"),
    "natdata": ("make bench-natdata", "bench/natdata.sh",
                "natural-image input pipelines: CPU time per image (all threads), ncmi with 1 worker; "
                "peer: torchvision transforms in one process on the same JPEGs"),
    "preprocess": ("make bench-preprocess", "bench/preprocess.c",
                   "patch resize/normalisation on one thread (ncmi only: no peer in this benchmark; "
                   "the bitwise agreement with torchvision is a test)"),
    "resnet_fwd": ("make BUILD=... BUILD/bench_resnet", "bench/resnet.c",
                   "ResNet encoder forward on the CPU (ncmi only: no peer in the same run)"),
    "gpu_ops": ("make bench-gpu", "bench/gpu_ops.sh",
                "conv2d/linear/matmul forward+backward at ResNet-50 (batch 256) and ABMIL shapes on the "
                "GPU, ms per step; peer: PyTorch on the same GPU"),
}

# goals the docs state: (benchmark, case regex, minimum ratio, text)
GOALS = [
    ("tile", r"^(per_slide_total|cohort_jobs\d+)$", 10.0,
     "≥ 10× (docs/tiling.md)"),
    ("ncmi_overhead", r".*", 1 / 1.03,
     "overhead ≤ 3% (ratio ≥ 0.971; docs/training.md)"),
]


def headline(bench, case, cases):
    """Whether a result goes into the summary table (all go into the detail tables)."""
    if bench == "ops":
        return case == "total_fwdbwd"
    if bench == "features":
        return not case.endswith("max_rel_diff")
    if bench == "tile":
        return case in ("per_slide_total", "cohort_jobs1_peak_rss") or case.startswith("cohort_jobs") \
            and not case.endswith("peak_rss")
    if bench == "mil":
        # each head at the largest bag size measured (speed, peak RSS)
        m = re.match(r"^(.*)_N(\d+)(_peak_rss)?$", case)
        if not m:
            return not case.endswith("_peak_above_start")
        sizes = [int(mm.group(2)) for c in cases for mm in [re.match(r"^(.*)_N(\d+)", c)]
                 if mm and mm.group(1) == m.group(1)]
        return int(m.group(2)) == max(sizes)
    if bench == "preprocess":
        return case.startswith("resize+normalize") or len(cases) == 1
    if bench == "gpu_ops":
        return case.startswith("total_")
    return True


def num(s):
    try:
        v = float(s)
        return v if math.isfinite(v) else None
    except (TypeError, ValueError):
        return None


def direction(unit):
    if unit.endswith("/s"):
        return +1
    if unit in ("ms", "s", "us", "MiB", "MB"):
        return -1
    return 0


def ratio(ncmi, peer, unit):
    a, b, d = num(ncmi), num(peer), direction(unit)
    if a is None or b is None or d == 0 or a <= 0 or b <= 0:
        return None
    return a / b if d > 0 else b / a


def fmt(s):
    v = num(s)
    if v is None:
        return s
    a = abs(v)
    if a >= 1000:
        return "%.0f" % v
    if a >= 100:
        return "%.1f" % v
    if a >= 1 or a == 0:
        return "%.2f" % v
    return "%.3f" % v if a >= 0.01 else "%.3g" % v


def fmt_ratio(r):
    if r is None:
        return "-"
    return "%.2f" % r if r >= 0.01 else "%.3g" % r


def goal_for(bench, case):
    for b, rx, thr, text in GOALS:
        if b == bench and re.search(rx, case):
            return thr, text
    return None, ""


def read_kv(path, sep):
    d = {}
    if os.path.exists(path):
        with open(path, errors="replace") as f:
            for line in f:
                line = line.rstrip("\n")
                if sep in line:
                    k, v = line.split(sep, 1)
                    d.setdefault(k.strip(), v.strip())
    return d


class Bench:
    def __init__(self, logs, name):
        self.name = name
        self.status = read_kv(os.path.join(logs, name + ".status"), "=")
        path = os.path.join(logs, name + ".log")
        self.lines = open(path, errors="replace").read().splitlines() if os.path.exists(path) else []
        self.results, self.skips = [], []
        for line in self.lines:
            f = line.split()
            if len(f) >= 6 and f[0] == "RESULT" and f[1] == name:
                self.results.append({"case": f[2], "ncmi": f[3], "peer": f[4], "unit": f[5]})
            elif len(f) >= 3 and f[0] == "SKIP" and f[1] == name:
                why = re.sub(r"^skipped\s*", "", " ".join(f[3:]))
                self.skips.append((f[2], why[1:-1] if why.startswith("(") and why.endswith(")") else why))
        if name == "gpu_ops":
            self.add_gpu_totals()
        cases = [r["case"] for r in self.results]
        for r in self.results:
            r["ratio"] = ratio(r["ncmi"], r["peer"], r["unit"])
            r["goal"], r["goal_text"] = goal_for(name, r["case"])
            r["headline"] = headline(name, r["case"], cases)

    def add_gpu_totals(self):
        """Sum of ms per step over the cases both sides ran, per mode."""
        tot = {}
        for r in self.results:
            m = re.match(r"^.*_(fp32|tf32|bf16_nhwc_fwd)$", r["case"])
            a, b = num(r["ncmi"]), num(r["peer"])
            if m and a is not None and b is not None and r["unit"] == "ms":
                t = tot.setdefault(m.group(1), [0.0, 0.0, 0])
                t[0] += a
                t[1] += b
                t[2] += 1
        for mode, (a, b, n) in tot.items():
            self.results.append({"case": "total_%s" % mode, "ncmi": "%.3f" % a, "peer": "%.3f" % b,
                                 "unit": "ms", "note": "sum over %d cases" % n})

    def state(self):
        """None when it ran and gave results, else the reason it has none."""
        rc = self.status.get("rc")
        if rc is None and not self.lines:
            return "not run (not selected: BENCH_ONLY)"
        if rc == "skip":
            return "skipped: " + self.status.get("reason", "?")
        if rc not in (None, "0"):
            why = self.status.get("reason") or self.last_error()
            return "failed (exit %s)%s" % (rc, ": " + why if why else "")
        if not self.results:
            return "no RESULT lines in its log" + (": " + self.last_error() if self.last_error() else "")
        return None

    def last_error(self):
        for line in reversed(self.lines):
            s = line.strip()
            if s and not s.startswith(("RESULT", "SKIP", "==")):
                return s[:200]
        return ""

    def geomeans(self):
        """Geometric means of the ratios, speed and memory apart: [(kind, mean, n)]."""
        out = []
        for kind, mem in (("speed", False), ("memory", True)):
            rs = [r["ratio"] for r in self.results if r["ratio"] and "total" not in r["case"]
                  and (r["unit"] in ("MiB", "MB")) == mem]
            if len(rs) > 1:
                out.append((kind, math.exp(sum(math.log(x) for x in rs) / len(rs)), len(rs)))
        return out


def met(r):
    if r["goal"] is None:
        return ""
    if r["ratio"] is None:
        return "-"
    return "yes" if r["ratio"] >= r["goal"] else "no"


def row(cells):
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--logs", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    meta = read_kv(os.path.join(a.logs, "meta.txt"), ":")
    names = meta.get("benchmarks", "").split() or [n for n in BENCHES
                                                      if os.path.exists(os.path.join(a.logs, n + ".status"))]
    benches = [Bench(a.logs, n) for n in names]
    gpu = meta.get("mode") == "gpu"
    o = []
    o.append("# ncmi benchmarks%s" % (" (GPU)" if gpu else " (CPU)"))
    o.append("")
    o.append("Written by `%s` (bench/run_all.sh, bench/report.py) on %s. Every benchmark times ncmi and its "
             "peer in the same run; the raw logs are in `bench/logs/%s/` (not committed)."
             % ("make bench-gpu" if gpu else "make bench", meta.get("date", "?"), meta.get("mode", "cpu")))
    o.append("")
    if meta.get("quick", "no") != "no":
        o.append("**Quick run (BENCH_QUICK=1): fewer sizes and rounds, a smoke test, not numbers to quote.**")
        o.append("")
    cores = num(meta.get("cores")) or 1
    load = num((meta.get("load_start", "") + " ").split()[0])
    o.append("**Machine**: %s, %s cores, %s memory%s. Load average (1, 5, 15 min) at the start %s, at the end %s."
             % (meta.get("cpu", "?"), meta.get("cores", "?"), meta.get("memory", "?"),
                ("; GPU " + meta["gpu"]) if meta.get("gpu") else "",
                meta.get("load_start", "?"), meta.get("load_end", "?")))
    if meta.get("note"):
        o.append("")
        o.append("**Note**: " + meta["note"])
    if load is not None and load >= 0.5 * cores:
        o.append("")
        o.append("The load at the start (%.2f on %d cores) means other processes were running: both sides "
                 "of each benchmark shared the machine with them (alternately or interleaved, not "
                 "identically), so the ratios are indicative and the absolute numbers low." % (load, cores))
    o.append("")
    total = num(meta.get("total_seconds"))
    if total is not None:
        o.append("Total run time: %.0f s (%.1f min)." % (total, total / 60))
        o.append("")
    o.append("**Versions**: " + "; ".join(
        "%s %s" % (label, meta.get(key, "?"))
        for label, key in [("git", "git_commit"), ("gcc", "gcc"), ("OpenBLAS", "openblas"), ("python3", "python3"),
                           ("torch", "torch"), ("torchvision", "torchvision"), ("OpenSlide", "openslide"),
                           ("libvips", "libvips"), ("HDF5", "hdf5")]
        + ([("torch CUDA, available", "torch_cuda")] if gpu else [])) + ".")
    if meta.get("ncmi_build"):
        o.append("ncmi build: " + meta["ncmi_build"] + ".")
    o.append("")
    o.append("**Ratio** = how many times better ncmi is than its peer: peer / ncmi for times and memory, "
             "ncmi / peer for rates; > 1 means ncmi is faster or smaller. A goal is listed where the docs "
             "state one.")
    o.append("")
    o.append("## Summary")
    o.append("")
    hdr = ["benchmark", "case", "ncmi", "peer", "ratio", "unit", "goal", "met"]
    o.append(row(hdr))
    o.append(row(["---"] * len(hdr)))
    for b in benches:
        st = b.state()
        if st:
            o.append(row([b.name, "-", "-", "-", "-", "-", "", st]))
            continue
        for r in b.results:
            if r["headline"]:
                o.append(row([b.name, r["case"], fmt(r["ncmi"]), fmt(r["peer"]), fmt_ratio(r["ratio"]), r["unit"],
                              r["goal_text"], met(r)]))
        for case, why in b.skips:
            o.append(row([b.name, case, "-", "-", "-", "", "", "skipped: " + why]))
    o.append("")
    for b in benches:
        target, src, what = BENCHES.get(b.name, ("", "", ""))
        o.append("## %s" % b.name)
        o.append("")
        if what:
            o.append("%s (`%s`, %s)." % (what, target, src))
            o.append("")
        st = b.state()
        secs = b.status.get("seconds")
        if b.status.get("cmd"):
            o.append("Command: `%s`%s%s." % (b.status["cmd"], (", %s s" % secs) if secs else "",
                                              (", load %s before" % b.status["load_before"])
                                              if b.status.get("load_before") else ""))
            o.append("")
        if st:
            o.append("**%s**" % st)
            o.append("")
            continue
        o.append(row(["case", "ncmi", "peer", "ratio", "unit", "goal", "met"]))
        o.append(row(["---"] * 7))
        for r in b.results:
            o.append(row([r["case"] + (" (%s)" % r["note"] if r.get("note") else ""), fmt(r["ncmi"]),
                          fmt(r["peer"]), fmt_ratio(r["ratio"]), r["unit"], r["goal_text"], met(r)]))
        o.append("")
        gm = b.geomeans()
        if gm:
            o.append("Geometric mean of the ratios: " + "; ".join("%s %.2f (%d cases)" % g for g in gm) + ".")
            o.append("")
        if any(r["ratio"] is None and num(r["ncmi"]) is not None and r["peer"] == "-" for r in b.results) \
                and direction(b.results[0]["unit"]) != 0 and b.name not in ("preprocess", "resnet_fwd"):
            o.append("(peer column \"-\": the peer did not run for that case; see the log)")
            o.append("")
        for case, why in b.skips:
            o.append("- %s skipped: %s" % (case, why))
        if b.skips:
            o.append("")
        human = [line for line in b.lines if not line.startswith(("RESULT ", "SKIP ", "== "))]
        if human:
            o.append("<details><summary>output</summary>")
            o.append("")
            o.append("```")
            o.extend(human[-80:])
            o.append("```")
            o.append("</details>")
            o.append("")
    d = os.path.dirname(a.out)
    if d:
        os.makedirs(d, exist_ok=True)
    with open(a.out, "w") as f:
        f.write("\n".join(o).rstrip("\n") + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
