#!/usr/bin/env bash
# make fuzz: run each harness for SECONDS on a copy of its seed corpus and
# regression inputs; non-zero when any harness finds a crash, leak or
# sanitizer report (the input is kept in BUILD/crash/). One process per
# harness (-jobs/-workers unset), at low priority.
#   tests/fuzz/run.sh BUILD SECONDS NAME...
set -u
build=$1 secs=$2
shift 2
# every allocation over 1 GiB fails (malloc returns NULL): a reader must
# report a size it cannot hold, not crash; leaks are findings
export ASAN_OPTIONS="${ASAN_OPTIONS:-allocator_may_return_null=1:max_allocation_size_mb=1024:detect_leaks=1:abort_on_error=0}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
export OMP_NUM_THREADS=1
fail=0
summary=()
for h in "$@"; do
    work=$build/work/$h
    rm -rf "$work"
    mkdir -p "$work" "$build/crash"
    for d in tests/fuzz/corpus/$h tests/fuzz/regress/$h; do
        [ -d "$d" ] && cp "$d"/* "$work"/ 2>/dev/null
    done
    dict=()
    [ -f tests/fuzz/$h.dict ] && dict=(-dict=tests/fuzz/$h.dict)
    log=$build/fuzz_$h.log
    echo "fuzz $h: ${secs}s on $(ls "$work" | wc -l) seed inputs (log $log)"
    nice -n 10 "$build/fuzz_$h" -max_total_time="$secs" -print_final_stats=1 -timeout=30 -rss_limit_mb=3072 \
        -artifact_prefix="$build/crash/$h-" "${dict[@]}" "$work" >"$log" 2>&1
    rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    last=$(grep -E '^#[0-9]+' "$log" | tail -1)
    cov=$(echo "$last" | grep -o 'cov: [0-9]*' | head -1)
    ft=$(echo "$last" | grep -o 'ft: [0-9]*' | head -1)
    line=$(printf "%-12s %s  execs %s  %s  %s" "$h" "$([ $rc = 0 ] && echo ok || echo FAIL)" "${execs:-?}" "${cov:-cov: ?}" "${ft:-ft: ?}")
    echo "  $line"
    summary+=("$line")
    if [ $rc != 0 ]; then
        fail=1
        grep -E 'ERROR|SUMMARY|runtime error|Test unit written|fuzz .*:' "$log" | head -20 | sed 's/^/    /'
    fi
done
echo "fuzz summary (${secs}s each):"
printf '  %s\n' "${summary[@]}"
exit $fail
