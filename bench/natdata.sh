#!/usr/bin/env bash
# bench/natdata.sh BUILD_DIR [jpegs] [workers...]: the natural-image input
# pipelines, ncmi (build/bench_natdata, as the trainer drives them) against
# torchvision's transforms (bench/natdata_torch.py, one process) on the same
# generated JPEGs, in the same run. Prints both programs' CASE lines, then a
# table of CPU time per image (all threads; the steadier figure on a shared
# machine: 1e6 / it is what one core gives) with peer/ncmi (> 1: ncmi cheaper),
# ncmi with 1 worker. Defaults: 256 JPEGs, workers 1 2.
set -euo pipefail
BUILD=${1:-build}
NJ=${2:-256}
shift 2 2>/dev/null || shift $#
WORKERS=${*:-1 2}
HERE=$(cd "$(dirname "$0")" && pwd)
BIN="$BUILD/bench_natdata"
[ -x "$BIN" ] || { echo "natdata.sh: $BIN not built (make NO_SETUP=1 $BIN)" >&2; exit 2; }
PY=/usr/bin/python3
tmp=$(mktemp -d /tmp/ncmi-bench-natdata.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/jpegs"
echo "bench/natdata: $(nproc) CPUs, $NJ JPEGs of 500x375, ncmi workers $WORKERS; torchvision one process"
# shellcheck disable=SC2086
NCMI_BENCH_NATDATA_DIR="$tmp/jpegs" "$BIN" "$NJ" $WORKERS | sed 's/^CASE/ncmi  CASE/' | tee "$tmp/ncmi"
if "$PY" -c "import torch, torchvision" 2>/dev/null; then
    "$PY" "$HERE/natdata_torch.py" "$tmp/jpegs" | sed 's/^CASE/torch CASE/' | tee "$tmp/torch"
else
    echo "natdata.sh: python3 torch/torchvision not found; ncmi numbers only" >&2
    : > "$tmp/torch"
fi
printf '%-12s %14s %14s %10s\n' case "ncmi us/img" "torch us/img" "torch/ncmi"
# lines: "<side> CASE <name> workers <W> <images/s> images/s <us> us CPU/image"
awk 'NR == FNR { t[$3] = $8; next }
     $5 <= 1 { n = $3; tm = (n in t) ? t[n] : "-"
       printf "%-12s %14s %14s %10s\n", n, $8, tm, (tm != "-" && $8 > 0) ? sprintf("%.2f", tm / $8) : "-"
       res = res sprintf("RESULT natdata %s_cpu_per_image %s %s us\n", n, $8, tm) }
     END { printf "%s", res }' "$tmp/torch" "$tmp/ncmi"
