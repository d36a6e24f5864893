#!/usr/bin/env bash
# conv2d / linear / matmul forward+backward at ResNet-50 (batch 256) and ABMIL
# shapes: ncmi (cuDNN/cuBLAS) and PyTorch on the same GPU in the same run.
# Prints ms per step for each and torch/ncmi (> 1: ncmi faster) in fp32 (TF32
# off), TF32, and the conv forward in bf16 channels-last (inference).
# NCMI_CUDNN_BENCHMARK=1: cuDNN algorithms timed per shape on both sides.
#   bash bench/gpu_ops.sh BUILD_DIR [iters] [name-filter]
set -euo pipefail
BUILD=${1:-build}
ITERS=${2:-10}
FILTER=${3:-}
HERE=$(cd "$(dirname "$0")" && pwd)
BIN="$BUILD/bench_gpu_ops"
[ -x "$BIN" ] || { echo "gpu_ops.sh: $BIN not built (make gpu-build)" >&2; exit 2; }
PY=${PYTHON:-python3}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$BIN" "$ITERS" $FILTER > "$tmp/ncmi"
if "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    "$PY" "$HERE/gpu_ops_torch.py" "$ITERS" "$tmp/ncmi" > "$tmp/torch"
else
    echo "gpu_ops.sh: no PyTorch with CUDA here; ncmi numbers only" >&2
    : > "$tmp/torch"
fi
grep '^DEVICE' "$tmp/ncmi" | sed 's/^DEVICE/device:/'
case "${NCMI_CUDNN_BENCHMARK:-0}" in
    ""|0) echo "cuDNN algorithms: heuristic on both sides (torch.backends.cudnn.benchmark = False)" ;;
    *) echo "cuDNN algorithms: timed on both sides (NCMI_CUDNN_BENCHMARK=1, torch.backends.cudnn.benchmark = True)" ;;
esac
printf '%-26s | %8s %8s %6s | %8s %8s %6s | %8s %8s %6s\n' case "ncmi" "torch" "ratio" "ncmi" "torch" "ratio" "ncmi" "torch" "ratio"
printf '%-26s | %24s | %24s | %24s\n' "" "fp32 fwd+bwd (ms)" "tf32 fwd+bwd (ms)" "bf16 NHWC fwd (ms)"
awk 'NR == FNR { if ($1 == "TORCH") { f[$2] = $3; t[$2] = $4; b[$2] = $5 } next }
     function r(tm, nm) { return (tm > 0 && nm > 0) ? sprintf("%6.2f", tm / nm) : "     -" }
     function v(x) { return x > 0 ? sprintf("%8.3f", x) : "       -" }
     $1 == "CASE" { n = $2; nf = $(NF - 2); nt = $(NF - 1); nb = $NF;
       tf = (n in f) ? f[n] : -1; tt = (n in t) ? t[n] : -1; tb = (n in b) ? b[n] : -1;
       printf "%-26s | %s %s %s | %s %s %s | %s %s %s\n", n, v(nf), v(tf), r(tf, nf), v(nt), v(tt), r(tt, nt), v(nb), v(tb), r(tb, nb) }' \
    "$tmp/torch" "$tmp/ncmi"
grep '^SYNCS' "$tmp/ncmi" | awk '{ print "host synchronisations inside the timed ncmi steps: " $2 }'
grep '^PEAK_MIB' "$tmp/ncmi" | awk '{ print "ncmi peak device memory (MiB): " $2 }'
grep '^TORCH_PEAK_MIB' "$tmp/torch" | awk '{ print "torch peak device memory (MiB): " $2 }' || true
# machine-readable lines for bench/report.py: ms per step of each case and mode,
# ncmi then torch ("-": not run on that side)
awk 'NR == FNR { if ($1 == "TORCH") { f[$2] = $3; t[$2] = $4; b[$2] = $5 } next }
     function v(x) { return x + 0 > 0 ? x : "-" }
     function out(n, m, nv, tv) { if (nv + 0 > 0) print "RESULT gpu_ops " n "_" m " " nv " " v(tv) " ms" }
     $1 == "CASE" { n = $2; out(n, "fp32", $(NF - 2), (n in f) ? f[n] : -1); out(n, "tf32", $(NF - 1), (n in t) ? t[n] : -1)
                    out(n, "bf16_nhwc_fwd", $NF, (n in b) ? b[n] : -1) }' "$tmp/torch" "$tmp/ncmi"
