#!/usr/bin/env bash
# bench/tile.sh [BUILD]: ncmi tile against a Python implementation of CLAM's
# algorithm (tests/reference/clam_reference.py: OpenSlide + OpenCV) on a
# cohort of generated slides of realistic size, in the same run: time per
# slide and peak memory (/usr/bin/time -v, "Maximum resident set size").
#
#   bash bench/tile.sh build
#   NCMI_BENCH_TILE_N=5 NCMI_BENCH_TILE_W=80000 NCMI_BENCH_TILE_H=60000 bash bench/tile.sh
#
# The slides are cached in $NCMI_BENCH_TILE_DATA (default bench-data/tile-<W>x<H>,
# gitignored), so reruns only time. Both sides run the same preset and target
# resolution; each slide is a separate process on both sides (start-up counted).
set -euo pipefail
BUILD=${1:-build}
N=${NCMI_BENCH_TILE_N:-3}
W=${NCMI_BENCH_TILE_W:-40000}
H=${NCMI_BENCH_TILE_H:-30000}
MPP=${NCMI_BENCH_TILE_MPP:-0.25}
PRESET=${NCMI_BENCH_TILE_PRESET:-biopsy}
TARGET=${NCMI_BENCH_TILE_TARGET:-0.5}
DATA=${NCMI_BENCH_TILE_DATA:-bench-data/tile-${W}x${H}}
OUT=${NCMI_BENCH_TILE_OUT:-$(mktemp -d /tmp/ncmi-bench-tile.XXXXXX)}
PY=/usr/bin/python3

[ -x /usr/bin/time ] || { echo "bench/tile: /usr/bin/time missing (apt-get install time, or ./setup)" >&2; exit 2; }
make --no-print-directory NO_SETUP=1 BUILD="$BUILD" "$BUILD/ncmi" "$BUILD/tools/make_slides" >/dev/null

if [ ! -f "$DATA/manifest.csv" ] || [ "$(($(wc -l <"$DATA/manifest.csv") - 1))" -lt "$N" ]; then
  echo "bench/tile: writing $N synthetic slides of ${W}x${H} px at $MPP um/px into $DATA (once)"
  mkdir -p "$DATA"
  t0=$(date +%s.%N)
  "$BUILD/tools/make_slides" --out "$DATA" --n "$N" --width "$W" --height "$H" --mpp "$MPP" --quiet
  echo "bench/tile: written in $(awk "BEGIN { printf \"%.1f\", $(date +%s.%N) - $t0 }") s"
fi
mapfile -t SLIDES < <(ls "$DATA"/slide_*.tif* | head -n "$N")

# "<seconds> <max RSS kB>" from a /usr/bin/time -v log
measure() {
  awk -F': ' '/Elapsed \(wall clock\)/ { n = split($2, t, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + t[i] }
              /Maximum resident set size/ { m = $2 }
              END { printf "%.3f %d\n", s, m }' "$1"
}

calc() { awk "BEGIN { printf \"%.6f\", $* }"; }
mkdir -p "$OUT/py"
echo "bench/tile: $(nproc) CPUs; preset $PRESET, target $TARGET um/px, 256 px patches; outputs in $OUT"
printf '%-14s %10s %10s %8s %10s %10s %8s %9s %9s\n' slide "ncmi s" "python s" speedup "ncmi MiB" "py MiB" "mem x" "ncmi n" "py n"
tot_n=0; tot_p=0; P0S=(); RES=""
for s in "${SLIDES[@]}"; do
  id=$(basename "${s%.*}")
  /usr/bin/time -v "$BUILD/ncmi" tile "$s" --out "$OUT/ncmi" --force --preset "$PRESET" \
      --target-mpp "$TARGET" 2>"$OUT/$id.ncmi.log" >/dev/null || { cat "$OUT/$id.ncmi.log" >&2; exit 1; }
  P0=$(awk -F, -v id="$id" 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == "patch_size_level0") c = i }
                           $1 == id { print $c }' "$OUT/ncmi/tile_status.csv")
  P0S+=("$P0")
  /usr/bin/time -v "$PY" tests/reference/clam_reference.py --slide "$s" --preset "$PRESET" --patch-level0 "$P0" --no-padding --out "$OUT/py/$id.json" >"$OUT/$id.py.out" 2>"$OUT/$id.py.log" \
      || { cat "$OUT/$id.py.log" >&2; exit 1; }
  read -r tn mn < <(measure "$OUT/$id.ncmi.log")
  read -r tp mp < <(measure "$OUT/$id.py.log")
  nn=$("$PY" -c "import h5py,sys; print(h5py.File(sys.argv[1])['coords'].shape[0])" "$OUT/ncmi/patches/$id.h5")
  np_=$("$PY" -c "import json,sys; print(json.load(open(sys.argv[1]))['n_coords'])" "$OUT/py/$id.json" 2>/dev/null || echo "?")
  printf '%-14s %10.3f %10.3f %7.1fx %10.1f %10.1f %7.2fx %9s %9s\n' "$id" "$tn" "$tp" \
    "$(calc "$tp / $tn")" "$(calc "$mn / 1024")" "$(calc "$mp / 1024")" \
    "$(calc "$mp / $mn")" "$nn" "$np_"
  RES+="RESULT tile ${id}_time $tn $tp s"$'\n'"RESULT tile ${id}_peak_rss $(calc "$mn / 1024") $(calc "$mp / 1024") MiB"$'\n'
  tot_n=$(calc "$tot_n + $tn"); tot_p=$(calc "$tot_p + $tp")
done
printf '%-14s %10.3f %10.3f %7.1fx\n' total "$tot_n" "$tot_p" "$(calc "$tot_p / $tot_n")"
echo "(one process per slide on both sides; speedup = python s / ncmi s; mem x = python peak RSS / ncmi peak RSS)"

# the whole cohort in one process on both sides (CLAM's create_patches_fp.py runs a
# folder in one process): start-up paid once; ncmi with 1 and with $(nproc) jobs
J=$(nproc)
/usr/bin/time -v "$BUILD/ncmi" tile "${SLIDES[@]}" --out "$OUT/cohort1" --force --preset "$PRESET" \
    --target-mpp "$TARGET" --jobs 1 2>"$OUT/cohort1.log" >/dev/null || { cat "$OUT/cohort1.log" >&2; exit 1; }
/usr/bin/time -v "$BUILD/ncmi" tile "${SLIDES[@]}" --out "$OUT/cohortJ" --force --preset "$PRESET" \
    --target-mpp "$TARGET" --jobs "$J" 2>"$OUT/cohortJ.log" >/dev/null || { cat "$OUT/cohortJ.log" >&2; exit 1; }
/usr/bin/time -v "$PY" bench/tile_clam_cohort.py --preset "$PRESET" --patch-level0 "${P0S[@]}" -- "${SLIDES[@]}" \
    >"$OUT/cohort_py.out" 2>"$OUT/cohort_py.log" || { cat "$OUT/cohort_py.log" >&2; exit 1; }
read -r c1 m1 < <(measure "$OUT/cohort1.log")
read -r cj mj < <(measure "$OUT/cohortJ.log")
read -r cp mp < <(measure "$OUT/cohort_py.log")
imp=$(awk '$1 == "imports" { print $2 }' "$OUT/cohort_py.out")
work=$(awk '$1 == "total" { print $2 }' "$OUT/cohort_py.out")
n=${#SLIDES[@]}
echo
echo "whole cohort ($n slides) in one process:"
printf '%-28s %10s %12s %10s %8s\n' run "wall s" "s / slide" "peak MiB" "speedup"
printf '%-28s %10.3f %12.3f %10.1f %7.1fx\n' "python (CLAM algorithm)" "$cp" "$(calc "$cp / $n")" "$(calc "$mp / 1024")" 1
printf '%-28s %10.3f %12.3f %10.1f %7.1fx\n' "ncmi tile --jobs 1" "$c1" "$(calc "$c1 / $n")" "$(calc "$m1 / 1024")" "$(calc "$cp / $c1")"
printf '%-28s %10.3f %12.3f %10.1f %7.1fx\n' "ncmi tile --jobs $J" "$cj" "$(calc "$cj / $n")" "$(calc "$mj / 1024")" "$(calc "$cp / $cj")"
echo "(python: $imp s of imports, $work s of reading + segmentation + grid for the $n slides; ncmi also"
echo " writes the preview PNG, the GeoJSON and the coords HDF5 of every slide, python only its counts)"
# machine-readable lines for bench/report.py
printf '%s' "$RES"
echo "RESULT tile per_slide_total $tot_n $tot_p s"
echo "RESULT tile cohort_jobs1 $c1 $cp s"
echo "RESULT tile cohort_jobs$J $cj $cp s"
echo "RESULT tile cohort_jobs1_peak_rss $(calc "$m1 / 1024") $(calc "$mp / 1024") MiB"
if [ -n "${NCMI_TILE_PROFILE:-}" ]; then grep "ncmi: tile: .*: open" "$OUT/cohort1.log"; fi
