#!/usr/bin/env bash
# One training step per bag (forward, linear head + CE (+ aux), backward,
# AdamW) of each MIL head at D_feat 1024 / D_inner 512, ncmi vs PyTorch, in
# the same run, 2 threads each, every configuration in its own process (so
# that its peak RSS is its own). Prints bags/s, the ratio ncmi/torch (> 1:
# ncmi faster), and peak RSS (MB) of both with the ratio ncmi/torch (< 1:
# ncmi smaller).
#   bash bench/mil_step.sh BUILD_DIR [heads] [sizes] [seconds]
#   heads: comma list (default abmil,aem,transmil,asmil; heads that are not
#   built in / have no reference module are skipped with a note)
#   sizes: comma list of N (default 500,4000,16000); seconds per measurement (3)
set -uo pipefail
BUILD=${1:-build}
HEADS=${2:-abmil,aem,transmil,asmil}
SIZES=${3:-500,4000,16000}
SECS=${4:-3}
HERE=$(cd "$(dirname "$0")" && pwd)
BIN="$BUILD/bench_mil_step"
[ -x "$BIN" ] || { echo "mil_step.sh: $BIN not built (make NO_SETUP=1 $BIN)" >&2; exit 2; }
PY=/usr/bin/python3
"$PY" -c "import torch" 2>/dev/null || PY=

printf '%-9s %6s | %10s %10s %7s | %8s %8s %7s | %8s %8s\n' head N "ncmi b/s" "torch b/s" ratio \
    "ncmi MB" "torch MB" "mem" "ncmi+MB" "torch+MB"
IFS=, read -ra HL <<< "$HEADS"
IFS=, read -ra NL <<< "$SIZES"
for h in "${HL[@]}"; do
    for n in "${NL[@]}"; do
        a=$(OMP_NUM_THREADS=2 OPENBLAS_NUM_THREADS=2 "$BIN" "$h" "$n" "$SECS" 2>/tmp/mil_step.$$.err)
        rc=$?
        if [ $rc -eq 3 ]; then
            echo "$h: skipped ($(cat /tmp/mil_step.$$.err))"
            break
        elif [ $rc -ne 0 ]; then
            echo "$h $n: ncmi failed: $(cat /tmp/mil_step.$$.err)"
            continue
        fi
        b=""
        if [ -n "$PY" ]; then
            b=$(OMP_NUM_THREADS=2 MKL_NUM_THREADS=2 "$PY" "$HERE/mil_step_torch.py" "$h" "$n" "$SECS" 2>/tmp/mil_step.$$.err)
            [ $? -eq 0 ] || { echo "$h $n: torch: $(tail -1 /tmp/mil_step.$$.err)"; b=""; }
        fi
        echo "$a" "${b:-torch $h $n - - - -}" | awk '{
            r  = ($11 != "-" && $11 > 0) ? sprintf("%.2f", $4 / $11) : "-";
            mr = ($14 != "-" && $14 > 0) ? sprintf("%.2f", $7 / $14) : "-";
            dn = $7 - $6; dt = ($14 != "-") ? sprintf("%.0f", $14 - $13) : "-";
            printf "%-9s %6d | %10.2f %10s %7s | %8.0f %8s %7s | %8.0f %8s\n",
                   $2, $3, $4, $11, r, $7, ($14 == "-" ? "-" : sprintf("%.0f", $14)), mr, dn, dt }'
    done
done
rm -f /tmp/mil_step.$$.err
