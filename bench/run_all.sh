#!/usr/bin/env bash
# bench/run_all.sh BUILD_DIR [cpu|gpu]: run every benchmark of bench/ (each
# times ncmi and its peer in the same run), keep each raw log in bench/logs/
# (gitignored) and write the report bench/RESULTS.md (gpu: bench/RESULTS-gpu.md)
# with bench/report.py, which reads the RESULT lines of the logs:
#   RESULT <benchmark> <case> <ncmi value> <peer value or -> <unit>
# `make bench` / `make bench-gpu` run this. Needs bash and python3 only (the
# GPU machine's lean build has no HDF5/OpenSlide: what cannot run there is
# listed in the report with the reason).
#
# Env:
#   BENCH_QUICK=1       fewer sizes and rounds (a smoke run, minutes; not for numbers)
#   BENCH_ONLY=a,b      run these benchmarks only (names below)
#   BENCH_TIMEOUT=s     limit per benchmark (default 1200 s; a benchmark past it is reported as timed out)
#   BENCH_NOTE=text     a note for the report (e.g. "shared machine")
#   BENCH_LOGS=dir      where the logs go (default bench/logs/<cpu|gpu>)
#   BENCH_OUT=file      the report (default bench/RESULTS.md / bench/RESULTS-gpu.md)
# Sizes: the scripts' defaults, except resnet_train (640 images, NCMI_BENCH_RN_N to
# change); the whole CPU run takes about 25-30 min on a busy 2-core machine.
# CPU benchmarks: ops features resnet_train tile ncmi_overhead mil natdata preprocess resnet_fwd
# GPU benchmarks: gpu_ops resnet_train features mil (on cuda)
set -uo pipefail
BUILD=${1:-build}
MODE=${2:-cpu}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
cd "$ROOT" || exit 2
QUICK=${BENCH_QUICK:-0}
[ "$QUICK" = 0 ] && QUICK=""
TMO=${BENCH_TIMEOUT:-1200}
# the peers' python: the Debian one on the CPU machine (as the scripts use), on a
# GPU machine $PYTHON or the python3 on PATH (PyTorch with CUDA), as gpu_ops.sh
PY=python3
[ "$MODE" = cpu ] && [ -x /usr/bin/python3 ] && PY=/usr/bin/python3
[ "$MODE" = gpu ] && PY=${PYTHON:-python3}
export PYTHON=$PY
case "$MODE" in
    cpu) ALL="ops features resnet_train tile ncmi_overhead mil natdata preprocess resnet_fwd"
         OUTF=${BENCH_OUT:-bench/RESULTS.md} ;;
    gpu) ALL="gpu_ops resnet_train features mil"
         OUTF=${BENCH_OUT:-bench/RESULTS-gpu.md} ;;
    *) echo "run_all.sh: mode is cpu or gpu, not $MODE" >&2; exit 2 ;;
esac
LOGS=${BENCH_LOGS:-bench/logs/$MODE}
mkdir -p "$LOGS"
rm -f "$LOGS"/*.log "$LOGS"/*.status "$LOGS"/meta.txt
ONLY=${BENCH_ONLY:-}
if [ -n "$ONLY" ]; then
    for b in ${ONLY//,/ }; do
        case " $ALL " in *" $b "*) ;; *) echo "run_all.sh: no benchmark $b in $MODE mode ($ALL)" >&2; exit 2 ;; esac
    done
fi
selected() { [ -z "$ONLY" ] && return 0; case ",$ONLY," in *",$1,"*) return 0 ;; esac; return 1; }

# ---- the machine and the versions ----
meta() { printf '%s: %s\n' "$1" "$2" >> "$LOGS/meta.txt"; }
pyver() { $PY -c "import $1; print($1.__version__)" 2>/dev/null || echo "not found"; }
pkgver() { pkg-config --modversion "$1" 2>/dev/null || echo "not found"; }
T0=$(date +%s)
meta mode "$MODE"
meta date "$(date -u '+%Y-%m-%d %H:%M:%S UTC')"
meta host "$(hostname)"
meta cpu "$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null)"
meta cores "$(nproc)"
meta memory "$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo 2>/dev/null)"
meta load_start "$(cut -d' ' -f1-3 /proc/loadavg)"
meta git_commit "$(git describe --always --dirty --tags 2>/dev/null || echo unknown) ($(git log -1 --format=%cd --date=short 2>/dev/null))"
meta gcc "$(gcc -dumpfullversion 2>/dev/null || echo 'not found')"
OB=$(pkgver openblas); [ "$OB" = "not found" ] && OB=$("$BUILD/ncmi" --version 2>/dev/null | awk -F': ' '/^OpenBLAS/ { print $2 }')
meta openblas "${OB:-not found}"
meta python3 "$($PY -c 'import sys; print(sys.version.split()[0])' 2>/dev/null || echo 'not found')"
meta torch "$(pyver torch)"
meta torchvision "$(pyver torchvision)"
meta openslide "$(pkgver openslide) (openslide-python $(pyver openslide))"
meta libvips "$(pkgver vips)"
meta hdf5 "$(pkgver hdf5) (h5py $(pyver h5py))"
meta ncmi_build "$("$BUILD/ncmi" --version 2>/dev/null | sed -n '2,3p' | tr '\n' ' ' | tr -s ' ')"
if [ "$MODE" = gpu ]; then
    meta gpu "$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -1 || true)"
    meta torch_cuda "$($PY -c 'import torch; print(torch.version.cuda, torch.cuda.is_available())' 2>/dev/null || echo 'not found')"
fi
meta quick "${QUICK:+yes (BENCH_QUICK=1: fewer sizes and rounds; not for numbers)}${QUICK:-no}"
meta only "${ONLY:-all}"
meta note "${BENCH_NOTE:-}"
meta benchmarks "$ALL"

# ---- running one benchmark ----
# run NAME CMD...: runs CMD with the limit, stdout+stderr into LOGS/NAME.log
# (and the terminal), rc/time/command into LOGS/NAME.status
run() {
    local name=$1; shift
    local st="$LOGS/$name.status" t1 rc
    echo "== $name: $*" | tee "$LOGS/$name.log"
    { echo "cmd=$*"; echo "load_before=$(cut -d' ' -f1 /proc/loadavg)"; } > "$st"
    t1=$(date +%s.%N)
    timeout "$TMO" "$@" 2>&1 | tee -a "$LOGS/$name.log"
    rc=${PIPESTATUS[0]}
    { echo "rc=$rc"; echo "seconds=$(awk "BEGIN { printf \"%.0f\", $(date +%s.%N) - $t1 }")"
      [ "$rc" = 124 ] && echo "reason=timed out after $TMO s (BENCH_TIMEOUT)"; } >> "$st"
}
# skip NAME REASON: the benchmark appears in the report with the reason
skip() { echo "== $1: skipped: $2"; : > "$LOGS/$1.log"; printf 'rc=skip\nreason=%s\n' "$2" > "$LOGS/$1.status"; }
have_bin() { [ -x "$BUILD/$1" ] || { skip "$2" "$BUILD/$1 not built (make BUILD=$BUILD $BUILD/$1)"; return 1; }; }
have_torch() { $PY -c "import torch" 2>/dev/null; }
ncmi_has() { "$BUILD/ncmi" --version 2>/dev/null | grep -q "$1 yes"; }

# features.sh and tile.sh call make for their binaries: keep a CPU-only build
# CPU-only where nvcc exists (make reads CUDA=0 from the environment)
"$BUILD/ncmi" --version 2>/dev/null | grep -q "CUDA no" && export CUDA=0

echo "bench/run_all.sh: $MODE benchmarks into $LOGS, report $OUTF${QUICK:+ (quick)}; load $(cut -d' ' -f1-3 /proc/loadavg)"
for b in $ALL; do
    selected "$b" || continue
    if [ "$MODE" = cpu ]; then
        case $b in
        ops) have_bin bench_ops ops && run ops bash bench/ops.sh "$BUILD" ${QUICK:+1 linear} ;;
        features)
            if ! ncmi_has HDF5 || ! ncmi_has OpenSlide; then skip features "$BUILD/ncmi is built without HDF5 or OpenSlide (ncmi tile/features need both)"
            elif ! $PY -c "import torch, torchvision, openslide, h5py" 2>/dev/null; then skip features "peer missing: python3 torch/torchvision/openslide-python/h5py"
            else
                if [ -n "$QUICK" ]; then export NCMI_BENCH_FEAT_W=${NCMI_BENCH_FEAT_W:-3000} NCMI_BENCH_FEAT_H=${NCMI_BENCH_FEAT_H:-2000} NCMI_BENCH_FEAT_LIMIT=${NCMI_BENCH_FEAT_LIMIT:-16}; fi
                run features bash bench/features.sh "$BUILD"
            fi ;;
        resnet_train)
            if ! have_torch; then skip resnet_train "peer missing: python3 torch"
            else
                # 640 images (512 timed in epoch 2), not the script's 1024: the longest
                # benchmark, and make bench is meant to fit in ~30 min on 2 cores
                rn_n=640; [ -n "$QUICK" ] && rn_n=384
                NCMI_BENCH_RN_N=${NCMI_BENCH_RN_N:-$rn_n} run resnet_train bash bench/resnet_train.sh "$BUILD"
            fi ;;
        tile)
            if ! ncmi_has HDF5 || ! ncmi_has OpenSlide; then skip tile "$BUILD/ncmi is built without HDF5 or OpenSlide"
            elif ! $PY -c "import openslide, cv2, h5py" 2>/dev/null; then skip tile "peer missing: python3 openslide/cv2/h5py"
            elif [ ! -x "$BUILD/tools/make_slides" ]; then skip tile "$BUILD/tools/make_slides not built"
            elif [ -n "$QUICK" ]; then
                NCMI_BENCH_TILE_N=${NCMI_BENCH_TILE_N:-1} NCMI_BENCH_TILE_W=${NCMI_BENCH_TILE_W:-8000} NCMI_BENCH_TILE_H=${NCMI_BENCH_TILE_H:-6000} \
                    run tile bash bench/tile.sh "$BUILD"
            else run tile bash bench/tile.sh "$BUILD"; fi ;;
        ncmi_overhead)
            have_bin bench_ncmi_overhead ncmi_overhead &&
                OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} run ncmi_overhead "$BUILD/bench_ncmi_overhead" ${QUICK:+6} ;;
        mil)
            have_bin bench_mil_step mil &&
                if [ -n "$QUICK" ]; then ROUNDS=1 run mil bash bench/mil_step.sh "$BUILD" abmil 500 1
                else run mil bash bench/mil_step.sh "$BUILD"; fi ;;
        natdata) have_bin bench_natdata natdata && run natdata bash bench/natdata.sh "$BUILD" ${QUICK:+32 1} ;;
        preprocess) have_bin bench_preprocess preprocess && run preprocess "$BUILD/bench_preprocess" ${QUICK:+0.2} ;;
        resnet_fwd)
            have_bin bench_resnet resnet_fwd &&
                if [ -n "$QUICK" ]; then OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(nproc)} run resnet_fwd "$BUILD/bench_resnet" resnet18 4 64 2
                else OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(nproc)} run resnet_fwd "$BUILD/bench_resnet" resnet50_trunc 32 224 3; fi ;;
        esac
    elif ! ncmi_has CUDA; then skip "$b" "$BUILD/ncmi is built without CUDA"
    else
        case $b in
        gpu_ops) have_bin bench_gpu_ops gpu_ops && run gpu_ops bash bench/gpu_ops.sh "$BUILD" ${QUICK:+3} ;;
        resnet_train)
            if ! $PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
                skip resnet_train "peer missing: python3 torch with CUDA"
            else
                rn_n=12800; [ -n "$QUICK" ] && rn_n=1024
                NCMI_BENCH_RN_DEVICE=cuda NCMI_BENCH_RN_N=${NCMI_BENCH_RN_N:-$rn_n} run resnet_train bash bench/resnet_train.sh "$BUILD"
            fi ;;
        features)
            if ! ncmi_has HDF5 || ! ncmi_has OpenSlide; then skip features "$BUILD/ncmi is built without HDF5 or OpenSlide (the lean GPU build: tools/gpu_check.sh)"
            elif ! $PY -c "import torch, torchvision, openslide, h5py" 2>/dev/null; then skip features "peer missing: python3 torch/torchvision/openslide-python/h5py"
            else
                if [ -n "$QUICK" ]; then export NCMI_BENCH_FEAT_LIMIT=${NCMI_BENCH_FEAT_LIMIT:-64}; fi
                NCMI_BENCH_FEAT_DEVICE=cuda run features bash bench/features.sh "$BUILD"
            fi ;;
        mil)
            if ! grep -q MIL_DEVICE bench/mil_step.sh; then skip mil "bench/mil_step.sh has no MIL_DEVICE option (GPU MIL steps not benchmarked)"
            elif have_bin bench_mil_step mil; then
                if [ -n "$QUICK" ]; then MIL_DEVICE=cuda ROUNDS=1 run mil bash bench/mil_step.sh "$BUILD" abmil 4000 1
                else MIL_DEVICE=cuda run mil bash bench/mil_step.sh "$BUILD"; fi
            fi ;;
        esac
    fi
done
meta load_end "$(cut -d' ' -f1-3 /proc/loadavg)"
meta total_seconds "$(( $(date +%s) - T0 ))"
$PY "$HERE/report.py" --logs "$LOGS" --out "$OUTF" || exit 1
echo "bench/run_all.sh: wrote $OUTF (logs in $LOGS, $(( $(date +%s) - T0 )) s)"
