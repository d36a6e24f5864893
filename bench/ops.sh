#!/usr/bin/env bash
# Times ncmi's CPU ops and PyTorch's on the same shapes, in the same run, with
# 2 threads each, and prints a table: ncmi ms, torch ms, torch/ncmi (> 1 means
# ncmi is faster).   bash bench/ops.sh BUILD_DIR [runs] [name-filter]
set -euo pipefail
BUILD=${1:-build}
RUNS=${2:-5}
FILTER=${3:-}
HERE=$(cd "$(dirname "$0")" && pwd)
BIN="$BUILD/bench_ops"
[ -x "$BIN" ] || { echo "ops.sh: $BIN not built (make NO_SETUP=1 $BIN)" >&2; exit 2; }
PY=/usr/bin/python3
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# ncmi: OpenMP threads for the conv/pool/norm loops (each calling
# single-threaded sgemm), OpenBLAS threads for the big sgemms of linear.
OMP_NUM_THREADS=2 OPENBLAS_NUM_THREADS=2 "$BIN" "$RUNS" $FILTER > "$tmp/ncmi"
if "$PY" -c "import torch" 2>/dev/null; then
    OMP_NUM_THREADS=2 MKL_NUM_THREADS=2 "$PY" "$HERE/ops_torch.py" "$RUNS" $FILTER > "$tmp/torch"
else
    echo "ops.sh: python3 torch not found; ncmi numbers only" >&2
    : > "$tmp/torch"
fi

printf '%-30s %10s %10s %12s\n' op "ncmi ms" "torch ms" "torch/ncmi"
awk 'NR == FNR { t[$1] = $2; next }
     { tm = ($1 in t) ? t[$1] : "";
       r = (tm != "" && $2 > 0) ? sprintf("%.2f", tm / $2) : "-";
       printf "%-30s %10.2f %10s %12s\n", $1, $2, (tm == "" ? "-" : sprintf("%.2f", tm)), r
       res = res sprintf("RESULT ops %s %.2f %s ms\n", $1, $2, (tm == "" ? "-" : sprintf("%.2f", tm)))
       if ($1 ~ /_fwdbwd$/) { sn += $2; st += tm; nb++; if (tm == "") miss = 1 } }
     # machine-readable lines for bench/report.py (after the table): every op, and
     # the sum of the forward+backward times of all shapes
     END { printf "%s", res
           if (nb) printf "RESULT ops total_fwdbwd %.2f %s ms\n", sn, (miss ? "-" : sprintf("%.2f", st)) }' \
    "$tmp/torch" "$tmp/ncmi"
