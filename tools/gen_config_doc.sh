#!/usr/bin/env bash
# Regenerate the key table of docs/config.md from the schema the loader uses:
#   tools/gen_config_doc.sh [BUILD_DIR]
# (tests/test_cli.c checks that docs/config.md holds the current table.)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build}
doc=docs/config.md
begin='<!-- BEGIN generated: ncmi train --help-config=md -->'
end='<!-- END generated -->'
grep -qF "$begin" "$doc" && grep -qF "$end" "$doc" || { echo "$doc: markers missing" >&2; exit 2; }
table=$(mktemp)
trap 'rm -f "$table" "$doc.tmp"' EXIT
"$BUILD/ncmi" train --help-config=md > "$table"
awk -v b="$begin" -v e="$end" -v t="$table" '
  $0 == b { print; while ((getline l < t) > 0) print l; skip = 1; next }
  $0 == e { skip = 0 }
  !skip { print }' "$doc" > "$doc.tmp"
mv "$doc.tmp" "$doc"
echo "updated $doc"
