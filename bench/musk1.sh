#!/usr/bin/env bash
# Musk1 accuracy beside the PyTorch peer: ncmi's 10-fold cross-validation
# repeated over seeds (`ncmi train --folds --seeds`) and the same recipe in
# PyTorch (bench/musk1_torch.py, the reference ABMIL of tests/reference/) on the
# same fold files of ../shared/fixtures/mil/musk1, one row per recipe: test
# accuracy (mean +- sample std over the seeds of the 10-fold means), macro-F1,
# macro-AUC, and Ilse et al. 2018's number for the recipe.
#   bash bench/musk1.sh BUILD_DIR [recipes]
#   recipes: comma list of m500 (configs/musk1_abmil_ce.yaml) and ilse
#   (configs/musk1_abmil_ilse_ce.yaml); default both
# Env: SEEDS (default 0-4), NCMI_FIXTURES (default ../shared/fixtures),
# FOLDS=random: instead of the fixture's fixed folds, new stratified folds for
# every seed (the paper's 5 x 10-fold protocol; musk1_torch.py
# --write-random-folds), both sides on the same files.
# Accuracy, not speed: ~1 min (m500) and ~4 min (ilse) per side on one core.
# Skips, with a note and exit 0, when the fixture is absent; runs ncmi alone
# when python3 lacks torch, h5py or sklearn.
set -uo pipefail
BUILD=${1:-build}
RECIPES=${2:-m500,ilse}
SEEDS=${SEEDS:-0-4}
FOLDS=${FOLDS:-fixture}
case "$FOLDS" in fixture|random) ;; *) echo "musk1.sh: FOLDS '$FOLDS': fixture or random" >&2; exit 2 ;; esac
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
FIX=${NCMI_FIXTURES:-$ROOT/../shared/fixtures}
M=$FIX/mil/musk1
[ -d "$M" ] && M=$(cd "$M" && pwd)
BIN=$BUILD/ncmi
[ -x "$BIN" ] || { echo "musk1.sh: $BIN not built (make NO_SETUP=1 all)" >&2; exit 2; }
if [ ! -d "$M/folds" ] || [ ! -d "$M/features" ]; then
    echo "musk1.sh: SKIPPED: no Musk1 fixture at $M (set NCMI_FIXTURES)"
    exit 0
fi
PY=
for p in ${PYTHON:-} /usr/bin/python3 python3; do
    "$p" -c "import torch, h5py, sklearn" 2>/dev/null && { PY=$p; break; }
done
[ -n "$PY" ] || echo "musk1.sh: no python3 with torch, h5py and sklearn: ncmi only"
OUT=$(mktemp -d "${TMPDIR:-/tmp}/ncmi-musk1.XXXXXX") || exit 2
trap 'rm -rf "$OUT"' EXIT

# "mean std" of metric $1 over the per-seed rows of the summary files that
# follow: ncmi's cv_seeds_summary.json (seeds[].linear.<m>) or
# musk1_torch.py's JSON (seeds[].<m>); "- -" when there are none
seed_stat() {
    python3 -c 'import json, statistics, sys
v = []
for f in sys.argv[2:]:
    for r in json.load(open(f))["seeds"]:
        v.append(r.get("linear", r)[sys.argv[1]])
print("%.4f %.4f" % (statistics.fmean(v), statistics.stdev(v) if len(v) > 1 else 0.0) if v else "- -")' "$@"
}

# run_pair RECIPE CONFIG FOLDS_DIR SEEDS TAG: ncmi's cross-validation into
# $OUT/ncmi_TAG and the peer's into $OUT/torch_TAG.json; 1 when one failed
run_pair() {
    local r=$1 cfg=$2 folds=$3 seeds=$4 tag=$5 t0 bad=0
    echo "== $r: ncmi train --config $cfg --folds $folds --seeds $seeds"
    t0=$(date +%s)
    if (cd "$ROOT" && "$BIN" train --config "$cfg" --folds "$folds" --seeds "$seeds" --out "$OUT/ncmi_$tag" \
            --set "data.features=$M/features" > "$OUT/ncmi_$tag.log" 2>&1); then
        tail -4 "$OUT/ncmi_$tag.log" | head -2
        echo "   ($(( $(date +%s) - t0 )) s)"
    else
        echo "musk1.sh: ncmi failed:"; tail -20 "$OUT/ncmi_$tag.log"; bad=1
    fi
    if [ -n "$PY" ]; then
        echo "== $r: PyTorch peer (bench/musk1_torch.py --recipe $r --folds $folds --seeds $seeds)"
        OMP_NUM_THREADS=1 "$PY" "$HERE/musk1_torch.py" --recipe "$r" --seeds "$seeds" --folds "$folds" \
            --features "$M/features" --json "$OUT/torch_$tag.json" || { echo "musk1.sh: the PyTorch peer failed"; bad=1; }
    fi
    return $bad
}

rc=0
rows=()
IFS=, read -r -a list <<< "$RECIPES"
seedlist=$(python3 -c 'import sys
out = []
for p in sys.argv[1].split(","):
    a, _, b = p.partition("-")
    out += range(int(a), int(b or a) + 1)
print(" ".join(map(str, out)))' "$SEEDS" 2>/dev/null) || { echo "musk1.sh: SEEDS '$SEEDS': a list such as 0-4 or 0,3,7" >&2; exit 2; }
for r in "${list[@]}"; do
    case "$r" in
        m500) cfg=configs/musk1_abmil_ce.yaml; paper="0.892 ± 0.040 (attention), 0.900 ± 0.050 (gated)" ;;
        ilse) cfg=configs/musk1_abmil_ilse_ce.yaml; paper="0.892 ± 0.040 (attention)" ;;
        *) echo "musk1.sh: unknown recipe '$r' (m500, ilse)" >&2; exit 2 ;;
    esac
    name=$(basename "$cfg" .yaml)
    nj=(); tj=()
    if [ "$FOLDS" = random ]; then
        # the paper's protocol: new stratified folds for every repetition (seed)
        for s in $seedlist; do
            fd="$OUT/folds_seed$s"
            "${PY:-python3}" "$HERE/musk1_torch.py" --write-random-folds "$fd" --seeds "$s" --folds "$M/folds" || exit 2
            run_pair "$r" "$cfg" "$fd" "$s" "${r}_$s" || rc=1
            nj+=("$OUT/ncmi_${r}_$s/$name/cv_seeds_summary.json"); tj+=("$OUT/torch_${r}_$s.json")
        done
    else
        run_pair "$r" "$cfg" "$M/folds" "$SEEDS" "$r" || rc=1
        nj+=("$OUT/ncmi_$r/$name/cv_seeds_summary.json"); tj+=("$OUT/torch_$r.json")
    fi
    ex=(); for f in "${nj[@]}"; do [ -f "$f" ] && ex+=("$f"); done; nj=("${ex[@]}")
    ex=(); for f in "${tj[@]}"; do [ -f "$f" ] && ex+=("$f"); done; tj=("${ex[@]}")
    read -r nam nas <<< "$(seed_stat accuracy "${nj[@]}")"; read -r tam tas <<< "$(seed_stat accuracy "${tj[@]}")"
    read -r nf1 _ <<< "$(seed_stat f1_macro "${nj[@]}")"; read -r tf1 _ <<< "$(seed_stat f1_macro "${tj[@]}")"
    read -r nau _ <<< "$(seed_stat auc_macro "${nj[@]}")"; read -r tau _ <<< "$(seed_stat auc_macro "${tj[@]}")"
    echo "RESULT musk1 ${r}_accuracy $nam $tam accuracy"
    rows+=("| $r | $nam ± $nas | $tam ± $tas | $nf1 / $tf1 | $nau / $tau | $paper |")
done
echo
nf=$(find "$M/folds" -maxdepth 1 -name 'fold*.csv' | wc -l)
what="the fixture's folds"
[ "$FOLDS" = random ] && what="new stratified random folds for every seed (the paper's protocol)"
echo "Musk1, $nf-fold cross-validation on $what, seeds $SEEDS (± sample std over the seeds):"
echo "| recipe | ncmi accuracy | PyTorch accuracy | macro-F1 ncmi / PyTorch | macro-AUC ncmi / PyTorch | Ilse et al. 2018 (5 x 10-fold, own folds) |"
echo "|---|---|---|---|---|---|"
for row in "${rows[@]}"; do echo "$row"; done
exit $rc
