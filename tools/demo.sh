#!/usr/bin/env bash
# make demo: the main job on generated data, from nothing. A synthetic CAMELYON-like cohort
# (96 slides, 4 classes by the size of an inserted tumour region, pen marks) is generated,
# tiled, encoded; ABMIL with the NCMI loss is trained and evaluated on its test split; then one
# test slide is scored for a person (summary, JSON, heatmap, top-k patches, HTML page).
# The stages are those of `make tile features train eval DATASET=synthetic` (ncmi cohort).
#   tools/demo.sh BUILD_DIR        (DEMO_OUT=demo-out)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build}
NCMI="$BUILD/ncmi"
OUT=${DEMO_OUT:-demo-out}
WORK="$OUT/synthetic"
[ -x "$NCMI" ] || { echo "demo: $NCMI not built (run make)" >&2; exit 2; }
[ -x "$BUILD/tools/make_slides" ] || { echo "demo: $BUILD/tools/make_slides not built" >&2; exit 2; }
# OpenMP threads sleep instead of spinning while the patch readers work (2-core machines)
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
t0=$(date +%s)
step() { echo; echo "== $*"; }

step "$NCMI version"
"$NCMI" version
for stage in slides tile features; do
    step "$NCMI cohort $stage --dataset synthetic --work $WORK"
    "$NCMI" cohort "$stage" --dataset synthetic --work "$WORK"
done
step "$NCMI cohort train --dataset synthetic --work $WORK --head abmil --loss ncmi"
"$NCMI" cohort train --dataset synthetic --work "$WORK" --head abmil --loss ncmi
step "$NCMI cohort eval --dataset synthetic --work $WORK --head abmil --loss ncmi"
"$NCMI" cohort eval --dataset synthetic --work "$WORK" --head abmil --loss ncmi
run=$(ls -d "$WORK"/runs/synthetic_abmil_ncmi* | head -n 1)
[ -f "$run/best.safetensors" ] || { echo "demo: no trained run in $WORK/runs" >&2; exit 1; }

# one test slide with the largest tumour class (macro), the first in the manifest
slide=$(awk -F, 'NR == 1 { for (i = 1; i <= NF; i++) c[$i] = i; next }
                 $c["split"] == "test" && $c["label"] == "macro" { print $c["rel_path"]; exit }' "$WORK/manifest.csv")
[ -n "$slide" ] || { echo "demo: no macro test slide in $WORK/manifest.csv" >&2; exit 1; }
case "$slide" in /*) ;; *) slide="$WORK/slides/$slide" ;; esac
[ -f "$slide" ] || slide=$(awk -F, -v s="$(basename "$slide")" 'NR == 1 { for (i = 1; i <= NF; i++) c[$i] = i; next }
                                  index($c["path"], s) { print $c["path"]; exit }' "$WORK/manifest.csv")
step "$NCMI score $slide --run $run --out $OUT/score"
"$NCMI" score "$slide" --run "$run" --out "$OUT/score"
t1=$(date +%s)

id=$(basename "${slide%.*}")
echo
echo "== demo summary"
val() { sed -n "s/^ *\"$1\": \"\{0,1\}\([^\",]*\).*/\1/p" "$2" | head -n 1; }
for m in "$run"/metrics_test_*.json; do
    printf 'demo: test split, NCMI-%-8s accuracy %.3f  macro-F1 %.3f  macro-AUC %.3f  (%s)\n' \
        "$(val method "$m" | tr a-z A-Z)" "$(val accuracy "$m")" "$(val f1_macro "$m")" "$(val auc_macro "$m")" "$m"
done
echo "demo: run folder      $run (config.yaml, log.csv, best.safetensors, predictions_test*.csv)"
echo "demo: report page     $OUT/score/$id.html (open it in a browser)"
echo "demo: heatmap, top-k  $OUT/score/$id.heatmap.png, $OUT/score/$id.topk/"
echo "demo: done in $((t1 - t0)) s"
