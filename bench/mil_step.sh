#!/usr/bin/env bash
# One training step per bag (forward, linear head + CE (+ aux), backward,
# AdamW) of each MIL head at D_feat 1024 / D_inner 512, ncmi vs PyTorch, in
# the same run, 2 threads each (THREADS=n to change), every measurement in its
# own process (so that its peak RSS is its own), ncmi and torch alternating
# ROUNDS times (default 2; the best bags/s of each is kept: on a shared
# machine the slower runs measure the neighbours). Prints bags/s, the ratio
# ncmi/torch (> 1: ncmi faster), peak RSS (MB) of both with the ratio
# ncmi/torch (< 1: ncmi smaller), and the peak above the process's RSS before
# the bag and the model exist (torch's includes nothing of its import).
#   bash bench/mil_step.sh BUILD_DIR [heads] [sizes] [seconds]
#   heads: comma list (default abmil,aem,transmil,asmil; heads that are not
#   built in / have no reference module are skipped with a note)
#   sizes: comma list of N (default 500,4000,16000); seconds per measurement (3)
set -uo pipefail
BUILD=${1:-build}
HEADS=${2:-abmil,aem,transmil,asmil}
SIZES=${3:-500,4000,16000}
SECS=${4:-3}
ROUNDS=${ROUNDS:-2}
T=${THREADS:-2}
# OpenMP workers that spin after a parallel region starve OpenBLAS's own
# threads (both processes use OpenMP + OpenBLAS): passive waiting for both,
# unless the caller set a policy (measured here: ncmi at N = 500 72 -> 15 ms
# per step, torch 48 -> 19 ms, 2 threads on the shared 2-core machine)
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
HERE=$(cd "$(dirname "$0")" && pwd)
BIN="$BUILD/bench_mil_step"
[ -x "$BIN" ] || { echo "mil_step.sh: $BIN not built (make NO_SETUP=1 $BIN)" >&2; exit 2; }
PY=/usr/bin/python3
"$PY" -c "import torch" 2>/dev/null || { echo "mil_step.sh: no python3 torch: ncmi only" >&2; PY=; }
err=$(mktemp)
trap 'rm -f "$err"' EXIT

# best (highest bags/s) of several result lines "impl head N bps ms base peak"
best() { sort -k4,4 -g | tail -1; }

echo "threads $T, OMP_WAIT_POLICY=$OMP_WAIT_POLICY, $ROUNDS rounds, ${SECS}s each; $(uptime | sed 's/.*load/load/')"
printf '%-9s %6s | %10s %10s %7s | %8s %8s %6s | %8s %8s\n' head N "ncmi b/s" "torch b/s" ratio \
    "ncmi MB" "torch MB" "mem" "ncmi+MB" "torch+MB"
RES=""   # machine-readable lines for bench/report.py, printed after the table
# stopped (a time limit): the results measured so far still come out
trap 'printf "%s" "$RES"; echo "mil_step.sh: stopped; results so far above" >&2; exit 124' TERM INT
IFS=, read -ra HL <<< "$HEADS"
IFS=, read -ra NL <<< "$SIZES"
for h in "${HL[@]}"; do
    for n in "${NL[@]}"; do
        A=""; B=""; skip=""
        for ((r = 0; r < ROUNDS; r++)); do
            a=$(OMP_NUM_THREADS=$T OPENBLAS_NUM_THREADS=$T "$BIN" "$h" "$n" "$SECS" 2>"$err")
            rc=$?
            if [ $rc -eq 3 ]; then skip="skipped ($(cat "$err"))"; break; fi
            [ $rc -eq 0 ] && A="$A$a"$'\n' || echo "$h $n: ncmi failed: $(tail -1 "$err")"
            if [ -n "$PY" ]; then
                b=$(OMP_NUM_THREADS=$T MKL_NUM_THREADS=$T "$PY" "$HERE/mil_step_torch.py" "$h" "$n" "$SECS" 2>"$err")
                rc=$?
                if [ $rc -eq 0 ]; then B="$B$b"$'\n'
                elif [ $rc -eq 3 ]; then B=""; PYSKIP="$(tail -1 "$err")"
                else echo "$h $n: torch failed: $(tail -1 "$err")"; fi
            fi
        done
        if [ -n "$skip" ]; then echo "$h: $skip"; RES+="SKIP mil $h $skip"$'\n'; break; fi
        a=$(printf '%s' "$A" | best); b=$(printf '%s' "$B" | best)
        [ -n "$a" ] || continue
        echo "$a" "${b:-torch $h $n - - - -}" | awk '{
            r  = ($11 != "-" && $11 > 0) ? sprintf("%.2f", $4 / $11) : "-";
            mr = ($14 != "-" && $14 > 0) ? sprintf("%.2f", $7 / $14) : "-";
            dt = ($14 != "-") ? sprintf("%.0f", $14 - $13) : "-";
            printf "%-9s %6d | %10.2f %10s %7s | %8.0f %8s %6s | %8.0f %8s\n",
                   $2, $3, $4, $11, r, $7, ($14 == "-" ? "-" : sprintf("%.0f", $14)), mr, $7 - $6, dt }'
        RES+=$(echo "$a" "${b:-torch $h $n - - - -}" | awk '{
            printf "RESULT mil %s_N%s %s %s bags/s\nRESULT mil %s_N%s_peak_rss %s %s MB\n", $2, $3, $4, $11, $2, $3, $7, $14
            printf "RESULT mil %s_N%s_peak_above_start %.1f %s MB", $2, $3, $7 - $6, ($14 == "-" ? "-" : sprintf("%.1f", $14 - $13)) }')$'\n'
        [ -z "$b" ] && [ -n "${PYSKIP:-}" ] && echo "   (torch: $PYSKIP)" && RES+="SKIP mil ${h}_N$n torch: $PYSKIP"$'\n'
        PYSKIP=""
    done
done
printf '%s' "$RES"
