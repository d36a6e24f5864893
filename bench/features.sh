#!/usr/bin/env bash
# bench/features.sh [BUILD]: ncmi features against the PyTorch pipeline a
# CLAM/TRIDENT user runs (tests/reference/features_reference.py:
# openslide-python + torchvision Resize/ToTensor/Normalize + torchvision
# ResNet-50 truncated after layer3), on the same coords, the same weights
# and the same device, in the same run: patches/s and peak memory
# (/usr/bin/time -v), and the largest difference between the two outputs.
#
#   bash bench/features.sh build
#   NCMI_BENCH_FEAT_DEVICE=cuda NCMI_BENCH_FEAT_BATCH=256 bash bench/features.sh build   # on a GPU
#
# Env: NCMI_BENCH_FEAT_W/H (generated slide, default 6000x4500 at 0.5 um/px),
# NCMI_BENCH_FEAT_LIMIT (patches, default 160), NCMI_BENCH_FEAT_THREADS (CPU threads
# on both sides, default nproc), NCMI_BENCH_FEAT_READERS (ncmi reader threads, default 2),
# NCMI_BENCH_FEAT_ENCODER (default resnet50_trunc), NCMI_BENCH_FEAT_SIZE (input, 224).
set -euo pipefail
BUILD=${1:-build}
W=${NCMI_BENCH_FEAT_W:-6000}
H=${NCMI_BENCH_FEAT_H:-4500}
LIMIT=${NCMI_BENCH_FEAT_LIMIT:-160}
DEV=${NCMI_BENCH_FEAT_DEVICE:-cpu}
T=${NCMI_BENCH_FEAT_THREADS:-$(nproc)}
R=${NCMI_BENCH_FEAT_READERS:-2}
ENC=${NCMI_BENCH_FEAT_ENCODER:-resnet50_trunc}
S=${NCMI_BENCH_FEAT_SIZE:-224}
if [ "$DEV" = cpu ]; then B=${NCMI_BENCH_FEAT_BATCH:-8}; else B=${NCMI_BENCH_FEAT_BATCH:-256}; fi
OUT=${NCMI_BENCH_FEAT_OUT:-$(mktemp -d /tmp/ncmi-bench-features.XXXXXX)}
PY=/usr/bin/python3

[ -x /usr/bin/time ] || { echo "bench/features: /usr/bin/time missing (apt-get install time, or ./setup)" >&2; exit 2; }
make --no-print-directory NO_SETUP=1 BUILD="$BUILD" "$BUILD/ncmi" "$BUILD/tools/make_slides" >/dev/null
"$BUILD/tools/make_slides" --out "$OUT/slides" --n 1 --width "$W" --height "$H" --mpp 0.5 --quiet
SLIDE=$(ls "$OUT"/slides/slide_*.tif* | head -n 1)
ID=$(basename "${SLIDE%.*}")
"$BUILD/ncmi" tile "$SLIDE" --out "$OUT/tiles" >/dev/null 2>&1
# keep the first LIMIT patches on both sides
$PY - "$OUT/tiles/patches/$ID.h5" "$LIMIT" <<'PYEOF'
import sys, h5py
path, limit = sys.argv[1], int(sys.argv[2])
with h5py.File(path, "r+") as f:
    c = f["coords"][:limit]; attrs = dict(f["coords"].attrs)
    del f["coords"]; f["coords"] = c
    for k, v in attrs.items(): f["coords"].attrs[k] = v
PYEOF
N=$($PY -c "import h5py,sys; print(h5py.File(sys.argv[1])['coords'].shape[0])" "$OUT/tiles/patches/$ID.h5")

measure() {
  awk -F': ' '/Elapsed \(wall clock\)/ { n = split($2, t, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + t[i] }
              /Maximum resident set size/ { m = $2 }
              END { printf "%.3f %d\n", s, m }' "$1"
}
calc() { awk "BEGIN { printf \"%.6f\", $* }"; }

echo "bench/features: $(nproc) CPUs, device $DEV, $ENC at ${S}px, $N patches of slide ${W}x${H}, batch $B, $T threads, $R ncmi readers"
# weights: drawn once by ncmi, used by both sides
OMP_NUM_THREADS=$T "$BUILD/ncmi" features --device "$DEV" --encoder "$ENC" --weights random:1 --input-size "$S" \
    --coords "$OUT/tiles" --out "$OUT/warm" "$SLIDE" --batch "$B" --readers "$R" >/dev/null 2>&1
WEIGHTS="$OUT/warm/encoder_random_1.safetensors"
OMP_NUM_THREADS=$T /usr/bin/time -v "$BUILD/ncmi" features --device "$DEV" --encoder "$ENC" --weights "$WEIGHTS" \
    --input-size "$S" --coords "$OUT/tiles" --out "$OUT/ncmi" "$SLIDE" --batch "$B" --readers "$R" --force \
    2>"$OUT/ncmi.log" >/dev/null || { cat "$OUT/ncmi.log" >&2; exit 1; }
/usr/bin/time -v $PY tests/reference/features_reference.py --slide "$SLIDE" --coords "$OUT/tiles/patches/$ID.h5" \
    --weights "$WEIGHTS" --encoder "$ENC" --input-size "$S" --out "$OUT/ref.h5" --batch "$B" --device "$DEV" \
    --threads "$T" >"$OUT/py.out" 2>"$OUT/py.log" || { cat "$OUT/py.log" >&2; exit 1; }
read -r tn mn < <(measure "$OUT/ncmi.log")
read -r tp mp < <(measure "$OUT/py.log")
ERR=$($PY - "$OUT/ncmi/features/$ID.h5" "$OUT/ref.h5" <<'PYEOF'
import sys, h5py, numpy as np
a = h5py.File(sys.argv[1])["features"][:]; b = h5py.File(sys.argv[2])["features"][:]
scale = 1e-2 * np.abs(b).max()
print("%.3g" % (np.abs(a - b) / np.maximum(np.abs(b), scale)).max())
PYEOF
)
grep -h "read .* s, resize" "$OUT/ncmi.log" | sed 's/^/  ncmi: /' || true
printf '%-22s %10s %12s %10s\n' "" "seconds" "patches/s" "peak MiB"
printf '%-22s %10.2f %12.1f %10.1f\n' "ncmi features" "$tn" "$(calc "$N / $tn")" "$(calc "$mn / 1024")"
printf '%-22s %10.2f %12.1f %10.1f\n' "PyTorch (torchvision)" "$tp" "$(calc "$N / $tp")" "$(calc "$mp / 1024")"
echo "speed ratio (ncmi patches/s / PyTorch patches/s): $(calc "$tp / $tn")x; memory ratio (ncmi / PyTorch peak RSS): $(calc "$mn / $mp")x"
echo "largest difference of the features (relative, floor 1e-2 max|ref|): $ERR"
echo "(whole processes on both sides: start-up, weight loading, reading, preprocessing, encoding, writing; outputs in $OUT)"
# machine-readable lines for bench/report.py
echo "RESULT features ${DEV}_throughput $(calc "$N / $tn") $(calc "$N / $tp") patches/s"
echo "RESULT features ${DEV}_peak_rss $(calc "$mn / 1024") $(calc "$mp / 1024") MiB"
echo "RESULT features ${DEV}_max_rel_diff $ERR - rel"
