#!/usr/bin/env bash
# make demo: show the build, tile a small cohort of generated slides, then train
# the demo MLP on synthetic data (features and MIL training join with issues 5/7).
#   tools/demo.sh BUILD_DIR
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build}
NCMI="$BUILD/ncmi"
OUT=demo-out
[ -x "$NCMI" ] || { echo "demo: $NCMI not built (run make)" >&2; exit 2; }

echo "== $NCMI version"
"$NCMI" version
echo
if [ -x "$BUILD/tools/make_slides" ]; then
  echo "== $BUILD/tools/make_slides: 3 generated slides (8000x6000 px at 0.25 um/px) in $OUT/slides"
  "$BUILD/tools/make_slides" --out "$OUT/slides" --n 3 --width 8000 --height 6000 --mpp 0.25 --quiet
  echo "== $NCMI tile --manifest $OUT/slides/manifest.csv --out $OUT/tiles --target-mpp 0.5 --jobs 2 --force"
  "$NCMI" tile --manifest "$OUT/slides/manifest.csv" --out "$OUT/tiles" --target-mpp 0.5 --jobs 2 --force
  echo "demo: coords in $OUT/tiles/patches/, previews in $OUT/tiles/previews/, status $OUT/tiles/tile_status.csv"
  echo
fi
echo "== $NCMI train --config configs/demo_mlp.yaml --out $OUT --force"
start=$(date +%s%N)
"$NCMI" train --config configs/demo_mlp.yaml --out "$OUT" --force
end=$(date +%s%N)

run="$OUT/demo_mlp"
acc=$(tail -n 1 "$run/log.csv" | cut -d, -f6)
echo
awk -v a="$acc" -v r="$run" -v t0="$start" -v t1="$end" 'BEGIN {
  printf "demo: final val accuracy %.1f%% (%s/log.csv)\n", 100 * a, r
  printf "demo: run folder %s (config.yaml, log.csv, last.safetensors, best.safetensors), trained in %.1f s\n", r, (t1 - t0) / 1e9
}'
