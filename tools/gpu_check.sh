#!/usr/bin/env bash
# The GPU checks of a build, in one go: make test-gpu's test binary, then the
# GPU op benchmark against PyTorch, then make bench-mil's script on the GPU
# (one training step per bag of each MIL head, ncmi vs PyTorch on cuda:
# MIL_DEVICE=cuda, sizes $MIL_SIZES (500,4000,16000), ROUNDS=1, at most
# GPU_MIL_BENCH_TIMEOUT seconds (600); log mil_step.log). For a GPU machine
# that has the NVIDIA driver but not this project's build dependencies:
# build elsewhere with
#   make BUILD=build-gpu HAVE_OPENSLIDE=0 HAVE_VIPS=0 HAVE_HDF5=0 gpu-build
# (all, test_gpu, bench_gpu_ops and bench_mil_step; none needs HDF5)
# copy the build folder (and, in NCMI_LIBS, the .so files `ldd` lists as
# missing there), and run
#   bash tools/gpu_check.sh build-gpu [log-dir]
# cuDNN/cuBLAS are taken from /usr/local/cuda/lib64, else from the NVIDIA
# wheels of the machine's python3 (PyTorch's), found automatically.
set -uo pipefail
B=${1:-build}
LOG=${2:-}
extra=""
[ -n "${NCMI_LIBS:-}" ] && extra="$NCMI_LIBS"
if ! ls /usr/local/cuda/lib64/libcudnn.so.* >/dev/null 2>&1; then
    nv=$(python3 -c "import nvidia, os; print(list(nvidia.__path__)[0])" 2>/dev/null || true)
    # wheel layouts differ (nvidia/cudnn/lib, nvidia/cu13/lib, ...): every
    # folder under the package that holds a shared library
    [ -n "$nv" ] && for d in $(find "$nv" -name 'lib*.so*' -printf '%h\n' | sort -u); do extra="$extra:$d"; done
fi
export LD_LIBRARY_PATH="${extra#:}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
missing=$(ldd "$B/test_gpu" | grep "not found")
[ -n "$missing" ] && { echo "gpu_check.sh: missing libraries:"; echo "$missing"; exit 2; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null
run() { if [ -n "$LOG" ]; then "$@" 2>&1 | tee "$LOG/$name.log"; else "$@" 2>&1; fi; }
name=test_gpu; NCMI_BIN=$B/ncmi run timeout ${GPU_TEST_TIMEOUT:-420} "$B/test_gpu" ${GPU_TEST_FILTER:-tests/gpu/}
rc=$?
name=bench_gpu_ops; run timeout ${GPU_BENCH_TIMEOUT:-240} bash bench/gpu_ops.sh "$B" "${BENCH_ITERS:-10}"
name=bench_gpu_ops_timed; (export NCMI_CUDNN_BENCHMARK=1; run timeout ${GPU_BENCH_TIMEOUT:-240} bash bench/gpu_ops.sh "$B" "${BENCH_ITERS:-10}")
# MIL heads: every head at each size, ncmi and torch on the GPU, 1 round of MIL_BENCH_SECS (2) s each
if [ -x "$B/bench_mil_step" ]; then
    name=mil_step; (export MIL_DEVICE=cuda ROUNDS=1; run timeout ${GPU_MIL_BENCH_TIMEOUT:-600} bash bench/mil_step.sh "$B" \
        "${MIL_HEADS:-abmil,aem,transmil,asmil}" "${MIL_SIZES:-500,4000,16000}" "${MIL_BENCH_SECS:-2}")
else
    echo "gpu_check.sh: $B/bench_mil_step not built: no MIL benchmark (make BUILD=$B ... gpu-build)"
fi
exit $rc
