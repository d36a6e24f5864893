#!/bin/sh
# 10-fold cross-validation table of a Musk1 config, with ncmi commands only:
# `ncmi train` on each fold (data.fold = k), then the test accuracy of each
# method read from the run's metrics_test[_<method>].json, and mean +- std.
#
#   tools/musk1_cv.sh CONFIG [FOLDS] [-- extra ncmi train arguments]
#     CONFIG   configs/musk1_abmil_ce.yaml or configs/musk1_abmil_ncmi.yaml
#     FOLDS    number of folds (default 10: folds 0..FOLDS-1)
#   env: NCMI (default build/ncmi), OUT (run folders, default runs/musk1_cv),
#        MUSK1 (fixture folder, default the config's data.features / manifest)
#
# Ilse et al. 2018 (Table 1) report 0.892 +- 0.040 (attention) and 0.900 +- 0.050
# (gated attention) for Musk1.
set -eu
CFG=${1:?usage: tools/musk1_cv.sh CONFIG [FOLDS] [-- ncmi train arguments]}
shift
FOLDS=10
if [ $# -gt 0 ] && [ "$1" != "--" ]; then FOLDS=$1; shift; fi
[ $# -gt 0 ] && [ "$1" = "--" ] && shift
NCMI=${NCMI:-build/ncmi}
OUT=${OUT:-runs/musk1_cv}
stem=$(basename "$CFG" .yaml)
set_data=""
if [ -n "${MUSK1:-}" ]; then
    set_data="--set data.features=$MUSK1/features --set data.manifest=$MUSK1/folds/fold{fold}.csv"
fi

# accuracy of a metrics file (the "accuracy" field)
acc() { sed -n 's/^ *"accuracy": *\([-0-9.eE+]*\).*/\1/p' "$1" | head -n 1; }

rows=""
k=0
while [ "$k" -lt "$FOLDS" ]; do
    # shellcheck disable=SC2086
    "$NCMI" train --config "$CFG" --out "$OUT" --force --set "name=${stem}_fold$k" \
        --set "data.fold=$k" $set_data "$@" > "$OUT.${stem}_fold$k.log" 2>&1 ||
        { echo "fold $k failed: see $OUT.${stem}_fold$k.log" >&2; cat "$OUT.${stem}_fold$k.log" >&2; exit 1; }
    run="$OUT/${stem}_fold$k"
    if [ -f "$run/metrics_test_lp.json" ]; then
        line="$k $(acc "$run/metrics_test_cc.json") $(acc "$run/metrics_test_learned.json") $(acc "$run/metrics_test_lp.json")"
        header="fold  NCMI-CC  NCMI-learned  NCMI-LP"
    else
        line="$k $(acc "$run/metrics_test.json")"
        header="fold  accuracy"
    fi
    rows="$rows$line
"
    k=$((k + 1))
done
echo "$stem: test accuracy over $FOLDS folds (selected epoch of each fold)"
printf '%s' "$rows" | awk -v header="$header" '
    BEGIN { print header }
    { printf "%4d", $1; for (i = 2; i <= NF; i++) { printf "  %11.4f", $i; s[i] += $i; q[i] += $i * $i }; print ""; n++; m = NF }
    END {
        printf "mean"; for (i = 2; i <= m; i++) printf "  %11.4f", s[i] / n; print "";
        printf " std"; for (i = 2; i <= m; i++) { v = q[i] / n - (s[i] / n) ^ 2; printf "  %11.4f", (v > 0 ? sqrt(v) : 0) }; print ""
    }'
