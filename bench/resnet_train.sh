#!/usr/bin/env bash
# bench/resnet_train.sh [BUILD]: one short training run of ResNet-18 (CIFAR stem) on
# synthetic CIFAR-shaped data, ncmi (configs/cifar100_resnet18_ce.yaml: the NCMI paper's
# CIFAR recipe) against torchvision + the same recipe (bench/resnet_train_torch.py,
# channels-last on the GPU), same device, same batch, in the same run: images/s of training
# (second epoch for ncmi, after warm-up steps for PyTorch).
#   bash bench/resnet_train.sh build                                   # CPU
#   NCMI_BENCH_RN_DEVICE=cuda NCMI_BENCH_RN_N=25600 bash bench/resnet_train.sh build
# Env: NCMI_BENCH_RN_N (training images, default 1024), NCMI_BENCH_RN_BATCH (128),
# NCMI_BENCH_RN_WIDTH (64), NCMI_BENCH_RN_THREADS (nproc).
set -euo pipefail
BUILD=${1:-build}
N=${NCMI_BENCH_RN_N:-1024}
B=${NCMI_BENCH_RN_BATCH:-128}
WD=${NCMI_BENCH_RN_WIDTH:-64}
DEV=${NCMI_BENCH_RN_DEVICE:-cpu}
T=${NCMI_BENCH_RN_THREADS:-$(nproc)}
OUT=$(mktemp -d /tmp/ncmi-bench-resnet.XXXXXX)
PY=${PYTHON:-/usr/bin/python3}
$PY - "$OUT" "$N" <<'PYEOF'
import sys, numpy as np
out, n = sys.argv[1], int(sys.argv[2])
rng = np.random.default_rng(0)
for name, m in (("train.bin", n), ("test.bin", 256)):
    r = np.zeros((m, 3074), np.uint8)
    r[:, 1] = rng.integers(0, 100, m); r[:, 0] = r[:, 1] // 5
    r[:, 2:] = rng.integers(0, 256, (m, 3072))
    r.tofile(out + "/" + name)
PYEOF
echo "bench/resnet_train: $(nproc) CPUs, device $DEV, ResNet-18 CIFAR stem width $WD, $N images 32x32, batch $B, $T threads"
OMP_NUM_THREADS=$T "$BUILD/ncmi" train --device "$DEV" --config configs/cifar100_resnet18_ce.yaml --set data.root="$OUT" \
    --set model.width="$WD" --set train.epochs=2 --set train.batch_size="$B" --set data.n_val=128 --set data.n_test=128 \
    --set train.threads="$T" --out "$OUT/runs" --force >"$OUT/ncmi.log" 2>&1 || { cat "$OUT/ncmi.log" >&2; exit 1; }
LOG="$OUT/runs/cifar100_resnet18_ce/log.csv"
NT=$(( (N - 128) / B * B ))
S2=$(awk -F, 'NR == 3 { print $NF }' "$LOG")
NCMI=$(awk "BEGIN { printf \"%.2f\", $NT / $S2 }")
TORCH=$($PY bench/resnet_train_torch.py --root "$OUT" --n "$N" --batch "$B" --epochs 2 --device "$DEV" --threads "$T" \
        --width "$WD" | awk '{ print $2 }')
echo "ncmi    images/s $NCMI  (epoch 2: $NT training images in $S2 s, validation of 128 included)"
echo "PyTorch images/s $TORCH"
echo "ratio (ncmi / PyTorch): $(awk "BEGIN { printf \"%.2f\", $NCMI / $TORCH }")x"
echo "RESULT resnet_train ${DEV}_resnet18_w${WD}_b${B} $NCMI $TORCH images/s"   # for bench/report.py
rm -rf "$OUT"
