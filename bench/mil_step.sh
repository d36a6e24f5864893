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
# MIL_DEVICE=cuda: both on the GPU (ncmi's CUDA backend, torch on cuda; each
# timed step waits for the device), and the peak device memory of both too:
# ncmi's caching allocator's high-water mark, torch.cuda.max_memory_allocated
# (ratio ncmi/torch, < 1: ncmi smaller).
set -uo pipefail
BUILD=${1:-build}
HEADS=${2:-abmil,aem,transmil,asmil}
SIZES=${3:-500,4000,16000}
SECS=${4:-3}
ROUNDS=${ROUNDS:-2}
T=${THREADS:-2}
DEV=${MIL_DEVICE:-cpu}
# OpenMP workers that spin after a parallel region starve OpenBLAS's own
# threads (both processes use OpenMP + OpenBLAS): passive waiting for both,
# unless the caller set a policy (measured here: ncmi at N = 500 72 -> 15 ms
# per step, torch 48 -> 19 ms, 2 threads on the shared 2-core machine)
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
HERE=$(cd "$(dirname "$0")" && pwd)
BIN="$BUILD/bench_mil_step"
[ -x "$BIN" ] || { echo "mil_step.sh: $BIN not built (make NO_SETUP=1 $BIN)" >&2; exit 2; }
# the peer: $PYTHON, else Debian's python3, else the python3 on PATH (a GPU
# machine's PyTorch may live in another python than /usr/bin's)
PY=
for p in ${PYTHON:-} /usr/bin/python3 python3; do
    "$p" -c "import torch" 2>/dev/null && { PY=$p; break; }
done
[ -n "$PY" ] || echo "mil_step.sh: no python3 with torch: ncmi only" >&2
err=$(mktemp)
trap 'rm -f "$err"' EXIT

# best (highest bags/s) of several result lines "impl head N bps ms base peak"
best() { sort -k4,4 -g | tail -1; }

echo "device $DEV, threads $T, OMP_WAIT_POLICY=$OMP_WAIT_POLICY, $ROUNDS rounds, ${SECS}s each; $(uptime | sed 's/.*load/load/')"
[ "$DEV" != cpu ] && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null
printf '%-9s %6s | %10s %10s %7s | %8s %8s %6s | %8s %8s | %8s %8s %6s\n' head N "ncmi b/s" "torch b/s" ratio \
    "ncmi MB" "torch MB" "mem" "ncmi+MB" "torch+MB" "ncmi GPU" "torch GPU" "gmem"
RES=""   # machine-readable lines for bench/report.py, printed after the table
# stopped (a time limit): the results measured so far still come out
trap 'printf "%s" "$RES"; echo "mil_step.sh: stopped; results so far above" >&2; exit 124' TERM INT
IFS=, read -ra HL <<< "$HEADS"
IFS=, read -ra NL <<< "$SIZES"
for h in "${HL[@]}"; do
    for n in "${NL[@]}"; do
        A=""; B=""; skip=""
        for ((r = 0; r < ROUNDS; r++)); do
            a=$(OMP_NUM_THREADS=$T OPENBLAS_NUM_THREADS=$T "$BIN" "$h" "$n" "$SECS" "$DEV" 2>"$err")
            rc=$?
            if [ $rc -eq 3 ] || [ $rc -eq 4 ]; then skip="skipped ($(cat "$err"))"; break; fi
            [ $rc -eq 0 ] && A="$A$a"$'\n' || echo "$h $n: ncmi failed: $(tail -1 "$err")"
            if [ -n "$PY" ]; then
                b=$(OMP_NUM_THREADS=$T MKL_NUM_THREADS=$T "$PY" "$HERE/mil_step_torch.py" "$h" "$n" "$SECS" "$DEV" 2>"$err")
                rc=$?
                if [ $rc -eq 0 ]; then B="$B$b"$'\n'
                elif [ $rc -eq 3 ] || [ $rc -eq 4 ]; then B=""; PYSKIP="$(tail -1 "$err")"
                else echo "$h $n: torch failed: $(tail -1 "$err")"; fi
            fi
        done
        if [ -n "$skip" ]; then echo "$h: $skip"; RES+="SKIP mil $h $skip"$'\n'; break; fi
        a=$(printf '%s' "$A" | best); b=$(printf '%s' "$B" | best)
        [ -n "$a" ] || continue
        # fields: ncmi $1-$8, torch $9-$16 (impl head N b/s ms base_MB peak_MB gpu_MB)
        echo "$a" "${b:-torch $h $n - - - - -}" | awk '{
            r  = ($12 != "-" && $12 > 0) ? sprintf("%.2f", $4 / $12) : "-";
            mr = ($15 != "-" && $15 > 0) ? sprintf("%.2f", $7 / $15) : "-";
            dt = ($15 != "-") ? sprintf("%.0f", $15 - $14) : "-";
            gr = ($8 != "-" && $16 != "-" && $16 > 0) ? sprintf("%.2f", $8 / $16) : "-";
            printf "%-9s %6d | %10.2f %10s %7s | %8.0f %8s %6s | %8.0f %8s | %8s %8s %6s\n",
                   $2, $3, $4, $12, r, $7, ($15 == "-" ? "-" : sprintf("%.0f", $15)), mr, $7 - $6, dt,
                   ($8 == "-" ? "-" : sprintf("%.0f", $8)), ($16 == "-" ? "-" : sprintf("%.0f", $16)), gr }'
        RES+=$(echo "$a" "${b:-torch $h $n - - - - -}" | awk '{
            printf "RESULT mil %s_N%s %s %s bags/s\nRESULT mil %s_N%s_peak_rss %s %s MB\n", $2, $3, $4, $12, $2, $3, $7, $15
            printf "RESULT mil %s_N%s_peak_above_start %.1f %s MB", $2, $3, $7 - $6, ($15 == "-" ? "-" : sprintf("%.1f", $15 - $14))
            if ($8 != "-") printf "\nRESULT mil %s_N%s_peak_gpu %s %s MB", $2, $3, $8, $16 }')$'\n'
        [ -z "$b" ] && [ -n "${PYSKIP:-}" ] && echo "   (torch: $PYSKIP)" && RES+="SKIP mil ${h}_N$n torch: $PYSKIP"$'\n'
        PYSKIP=""
    done
done
printf '%s' "$RES"
