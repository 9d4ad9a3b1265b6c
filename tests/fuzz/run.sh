#!/usr/bin/env bash
# run.sh — run the fuzz targets built in build/fuzz/fuzz/ (make fuzz-build).
#   run.sh SECONDS [TARGET...]            fuzz each target SECONDS (make fuzz);
#                                         with FUZZ_RUNS=N in the environment,
#                                         stop a target at N executions too
#   run.sh --regress SECONDS [TARGET...]  every corpus input once, then
#                                         SECONDS of fuzzing (make test)
# New inputs go to build/fuzz/work/TARGET (tests/fuzz/corpus/TARGET is only
# read), crashes to build/fuzz/crash/. Prints per target the executions,
# libFuzzer's cov:/ft: and the corpus size; exits 1 when a target failed.
# Always under nice -n 19: the machines are shared.
set -u
cd "$(dirname "$0")/../.."
regress=0
if [ "${1:-}" = "--regress" ]; then regress=1; shift; fi
secs=${1:?seconds}; shift
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    for f in tests/fuzz/fuzz_*.c; do t=${f##*/fuzz_}; targets+=("${t%.c}"); done
fi
bin=build/fuzz/fuzz
mkdir -p build/fuzz/crash build/fuzz/log
status=0
printf '%-10s %12s %8s %8s %7s %s\n' target execs cov ft corpus result
for t in "${targets[@]}"; do
    exe=$bin/fuzz_$t
    seeds=tests/fuzz/corpus/$t
    work=build/fuzz/work/$t
    if [ "$regress" = 1 ]; then work=build/fuzz/work-regress/$t; rm -rf "$work"; fi
    mkdir -p "$work" "$seeds"
    dict=()
    [ -f "tests/fuzz/$t.dict" ] && dict=(-dict="tests/fuzz/$t.dict")
    case $t in
        xml|envelope|bosh|ws|s2s) [ -f tests/fuzz/xml.dict ] && dict=(-dict=tests/fuzz/xml.dict) ;;
        http) [ -f tests/fuzz/http.dict ] && dict=(-dict=tests/fuzz/http.dict) ;;
    esac
    log=build/fuzz/log/$t.log
    # a regression run beside a long `make fuzz` must not truncate its log
    [ "$regress" = 1 ] && log=build/fuzz/log/regress-$t.log
    runs=()
    [ -n "${FUZZ_RUNS:-}" ] && [ "$regress" = 0 ] && runs=(-runs="$FUZZ_RUNS")
    nice -n 19 "$exe" -max_total_time="$secs" -timeout=10 -rss_limit_mb=1024 \
        -max_len=65536 -print_final_stats=1 -artifact_prefix="build/fuzz/crash/$t-" \
        "${runs[@]}" "${dict[@]}" "$work" "$seeds" >"$log" 2>&1
    rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    last=$(grep -E '^#[0-9]+' "$log" | tail -1)
    cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
    ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
    corp=$(sed -n 's/.* corp: \([0-9]*\).*/\1/p' <<<"$last")
    result=ok
    if [ $rc -ne 0 ]; then
        result="FAILED (rc=$rc, see $log)"
        status=1
    fi
    printf '%-10s %12s %8s %8s %7s %s\n' "$t" "${execs:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}" "$result"
    if [ $rc -ne 0 ]; then grep -E 'ERROR|check failed|SUMMARY|Test unit written' "$log" | head -5; fi
done
exit $status
