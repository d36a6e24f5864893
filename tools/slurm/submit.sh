#!/bin/bash
# The whole cohort on a Slurm cluster: tile (CPU array) -> features (GPU array) -> train (one
# multi-GPU job, then eval and reports/table3_<dataset>.md/.csv), chained with dependencies.
#   DATASET=camelyon17 DATA_ROOT=/data/camelyon17 tools/slurm/submit.sh [TILE_TASKS] [FEATURE_TASKS]
# It builds first (the jobs use the binaries as they are: NO_BUILD=1); the repository and WORK must
# be on a filesystem every node sees. The manifest is checked here, before any job is
# submitted (missing slides listed; ALLOW_MISSING=1 goes on without them).
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${DATASET:=camelyon17}" "${DATA_ROOT:?set DATA_ROOT}"
export DATASET DATA_ROOT
mkdir -p logs
make --no-print-directory cohort-build NO_SETUP=1
build/ncmi cohort check --dataset "$DATASET" --data-root "$DATA_ROOT" ${WORK:+--work "$WORK"} \
  ${ALLOW_MISSING:+--allow-missing}
t=$(sbatch --parsable --array=1-"${1:-16}" tools/slurm/tile.sbatch)
f=$(sbatch --parsable --array=1-"${2:-8}" --dependency=afterok:"$t" tools/slurm/features.sbatch)
r=$(sbatch --parsable --dependency=afterok:"$f" tools/slurm/train.sbatch)
echo "submitted: tile $t, features $f, train $r (logs/)"
