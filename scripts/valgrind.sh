#!/usr/bin/env bash
# sca-core's test binaries (unit tests, the allocator leak tests, the parser
# property tests) under valgrind's memcheck: any invalid read or write, use
# of uninitialised memory or definite leak fails.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "valgrind missing (make setup installs it)" >&2; exit 1; }
bins=$(cargo test --release --locked -p sca_core --no-run --message-format=json 2>/dev/null \
    | python3 -c 'import sys, json
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        print(m["executable"])')
[ -n "$bins" ] || { echo "no sca-core test binaries built" >&2; exit 1; }
for b in $bins; do
    log=$(mktemp)
    # fewer proptest cases: memcheck is ~50x slower
    if PROPTEST_CASES=200 valgrind --quiet --error-exitcode=99 --leak-check=full \
        --errors-for-leak-kinds=definite --show-leak-kinds=definite \
        "$b" --test-threads=2 -q >"$log" 2>&1; then
        echo "valgrind $(basename "$b" | sed 's/-[0-9a-f]*$//'): clean ($(grep -o '[0-9]* passed' "$log" | awk '{s+=$1} END {print s+0}') tests)"
    else
        echo "valgrind $(basename "$b"): FAILED" >&2
        tail -60 "$log" >&2
        rm -f "$log"
        exit 1
    fi
    rm -f "$log"
done
