#!/usr/bin/env bash
# make test-cohort (CI): the whole synthetic pipeline, make table3 DATASET=synthetic, in a fresh
# work folder (slides generated, tiled, encoded, 4 heads x {CE, NCMI} trained, table written), then
# the acceptance check of reports/table3_synthetic.csv: CE, NCMI-LP and NCMI-CC rows for all four
# heads, every macro-F1 >= 0.4 (chance: 0.25 for 4 balanced classes).
#   tools/ci_table3.sh          (WORK=DIR to keep the work folder; REPORTS=DIR for the table)
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
WORK=${WORK:-$tmp/synthetic}
REPORTS=${REPORTS:-reports}
start=$(date +%s)
make --no-print-directory table3 DATASET=synthetic WORK="$WORK" REPORTS="$REPORTS" NO_SETUP=1
end=$(date +%s)
csv="$REPORTS/table3_synthetic.csv"
awk -F, -v secs=$((end - start)) '
  NR > 1 && ($2 == "CE" || $2 == "NCMI-LP" || $2 == "NCMI-CC") {
    n++
    if ($5 == "" || $5 + 0 < 0.4) { bad++; printf "test-cohort: %s %s: macro-F1 %s\n", $1, $2, ($5 == "" ? "missing" : $5) }
  }
  END {
    if (n != 12 || bad) { printf "test-cohort: FAILED: %d of 12 rows, %d below 0.4\n", n, bad; exit 1 }
    printf "test-cohort: ok: 12 rows (4 heads x CE, NCMI-LP, NCMI-CC), every macro-F1 >= 0.4 (chance 0.25); %d s\n", secs
  }' "$csv"
