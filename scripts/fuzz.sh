#!/usr/bin/env bash
# Coverage-guided fuzzing of every parser of untrusted input (fuzz/), with
# libFuzzer on the stable toolchain: rustc's sanitizer-coverage passes are
# stable -C options, so no nightly and no cargo-fuzz are needed.
#
#   FUZZ_SECONDS  run time per target (make fuzz: 300, make test: 10)
#   FUZZ_TARGETS  which targets (default: all of fuzz/fuzz_targets)
#   FUZZ_MERGE=1  merge what the run found into the kept corpus fuzz/corpus/
#
# A crash or a failed assertion stops with the input saved under
# fuzz/artifacts/<target>/ and a non-zero exit.
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${FUZZ_SECONDS:-300}
targets=${FUZZ_TARGETS:-$(cd fuzz/fuzz_targets && ls *.rs | sed 's/\.rs$//')}
triple=$(rustc -vV | sed -n 's/^host: //p')

# An explicit --target keeps these flags off build scripts (they would not
# link against libFuzzer's coverage callbacks).
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks"
cargo build --quiet --release --locked --manifest-path fuzz/Cargo.toml \
    --target "$triple" --target-dir target/fuzz

fail=0
for t in $targets; do
    bin=target/fuzz/$triple/release/$t
    work=$(mktemp -d)
    log=$(mktemp)
    mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
    # new inputs go to $work; the kept corpus is read only
    if "$bin" -max_total_time="$secs" -max_len=4096 -timeout=10 -rss_limit_mb=2048 \
        -artifact_prefix="fuzz/artifacts/$t/" -print_final_stats=1 \
        "$work" "fuzz/corpus/$t" >"$log" 2>&1; then
        runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
        cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 || true)
        printf 'fuzz %-20s ok: %s runs in %ss, %s, corpus %s kept + %s new\n' \
            "$t" "${runs:-?}" "$secs" "${cov:-cov: ?}" \
            "$(ls "fuzz/corpus/$t" | wc -l)" "$(ls "$work" | wc -l)"
        if [ "${FUZZ_MERGE:-0}" = 1 ]; then
            "$bin" -merge=1 "fuzz/corpus/$t" "$work" >/dev/null 2>&1
        fi
    else
        echo "fuzz $t FAILED; the input is under fuzz/artifacts/$t/:" >&2
        grep -E 'panicked|ERROR|SUMMARY|Test unit written' -A3 "$log" | head -40 >&2
        fail=1
    fi
    rm -rf "$work" "$log"
done
exit $fail
