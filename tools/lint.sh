#!/usr/bin/env bash
# make lint: cppcheck and clang-tidy on our C sources (docs/hardening.md).
#   tools/lint.sh "<compile flags>"     (the Makefile passes its pkg-config
#                                        includes and NCMI_HAVE_* defines)
# Exit status 1 on any finding. LINT_JOBS=N files in parallel (default 2);
# LINT_ONLY=cppcheck|clang-tidy runs one of the two; extra arguments after the
# flags narrow the file list (e.g. tools/lint.sh "$flags" nn/tensor.c).
set -uo pipefail
cd "$(dirname "$0")/.."
FLAGS=${1:?usage: tools/lint.sh "<compile flags>" [files...]}
shift
JOBS=${LINT_JOBS:-2}
TIDY=${CLANG_TIDY:-$(command -v clang-tidy-14 || command -v clang-tidy)}
CPPCHECK=${CPPCHECK:-cppcheck}

# every C file of ours: the library, the CLI, the tests, tools and benchmarks
# (there is no generated or third-party C in the tree)
if [ $# -gt 0 ]; then
    C_FILES=("$@")
else
    mapfile -t C_FILES < <(ls nn/*.c train/*.c eval/*.c mil/*.c natural/*.c tiler/*.c features/*.c \
        cli/*.c tests/*.c tests/gpu/*.c tools/*.c bench/*.c 2>/dev/null)
fi
CU_FILES=()
[ $# -eq 0 ] && mapfile -t CU_FILES < <(ls nn/cuda/*.cu 2>/dev/null)

# the -D defines of the build (NCMI_HAVE_*), so that cppcheck checks the one
# configuration we build instead of every #if combination
DEFS=$(printf '%s\n' $FLAGS | grep '^-D' | tr '\n' ' ')
fail=0

if [ "${LINT_ONLY:-cppcheck}" = cppcheck ]; then
    echo "lint: cppcheck ($($CPPCHECK --version)) on ${#C_FILES[@]} C files, ${#CU_FILES[@]} CUDA files"
    # warning,portability,performance: bugs and non-portable code, not style.
    # Excluded, with the reason:
    #   varFuncNullUB      NULL as a variadic sentinel: glibc's NULL is (void *)0
    #                      on every platform we build for (Linux, gcc/clang)
    #   invalidPointerCast char buffers read as the float/double elements they
    #                      hold (dist ring buffers, config fields by offset)
    #   missingIncludeSystem  system headers are not given to cppcheck (its own
    #                      library configs model libc)
    CPPCHECK_OPTS=(-q -j "$JOBS" --enable=warning,portability,performance --inline-suppr
        --error-exitcode=1 --suppress=missingIncludeSystem --suppress=varFuncNullUB
        --suppress=invalidPointerCast -D__GNUC__ -D_OPENMP=201511)
    # shellcheck disable=SC2086
    $CPPCHECK "${CPPCHECK_OPTS[@]}" --std=c11 $DEFS "${C_FILES[@]}" || fail=1
    if [ ${#CU_FILES[@]} -gt 0 ]; then
        # the CUDA kernels as C++ (cppcheck parses <<<...>>> launches)
        $CPPCHECK "${CPPCHECK_OPTS[@]}" --language=c++ --std=c++17 -D__CUDACC__ -DNCMI_HAVE_CUDA=1 \
            -DNCMI_HAVE_CUDNN=1 -DNCMI_HAVE_NCCL=1 "${CU_FILES[@]}" || fail=1
    fi
fi

if [ "${LINT_ONLY:-clang-tidy}" = clang-tidy ]; then
    if [ -z "$TIDY" ]; then
        echo "lint: clang-tidy not found (apt-get install clang-tidy)"
        exit 2
    fi
    echo "lint: $($TIDY --version | grep -o 'LLVM version [0-9.]*' | sed 's/LLVM/clang-tidy/') on ${#C_FILES[@]} C files (checks: .clang-tidy)"
    # one clang-tidy per file, JOBS at a time; the flags are those of the build
    # (-std=c11 -D_GNU_SOURCE -fopenmp + pkg-config includes + NCMI_HAVE_*).
    # --warnings-as-errors='*' makes any finding a non-zero exit.
    # A file's output is kept (in a temporary folder) only when it has findings.
    dir=$(mktemp -d)
    # shellcheck disable=SC2016
    printf '%s\n' "${C_FILES[@]}" | xargs -P "$JOBS" -I{} sh -c \
        'o="$3/$(printf %s "$1" | tr / _).log"; "$0" --quiet --warnings-as-errors="*" "$1" -- $2 >"$o" 2>&1 && rm -f "$o"' \
        "$TIDY" {} "$FLAGS" "$dir"
    bad=$(ls "$dir")
    if [ -n "$bad" ]; then
        for f in $bad; do
            grep -v '^[0-9]* warnings\? \(and [0-9]* errors\? \)\?generated\.$' "$dir/$f" \
                | grep -v '^Suppressed \|^Use -header-filter\|^[0-9]* warnings\? treated as errors\?\.$' || true
        done
        echo "lint: clang-tidy findings in $(echo "$bad" | wc -l) files"
        fail=1
    fi
    rm -rf "$dir"
fi

if [ $fail -ne 0 ]; then
    echo "lint: FAILED"
    exit 1
fi
echo "lint: clean"
