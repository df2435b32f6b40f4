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

# The host layer (src/host, the shim) only runs inside Kamailio: run
# integration tests with every Kamailio process under memcheck. Kamailio's
# own pools hide shm/pkg misuse from valgrind, but our per-process heap, the
# structs we hand to C and read back, and uninitialised data reaching the
# core are checked. Any error in a process that loaded sca_rs.so fails;
# errors of the C module's runs are only counted.
VG_TESTS=${VG_TESTS:-"rpc hostile_rpc sca_core_diff keepalive hostile_sip contact_fallback kemi cluster"}
vgdir=$(mktemp -d)
trap 'rm -rf "$vgdir"' EXIT
cargo build --release --locked -p sca_rs --tests -q
for t in $VG_TESTS; do
    # memcheck slows every step: a golden's expires=/left= may drift by
    # more than the native run's 2 s
    if ! SCA_RS_VG_DIR="$vgdir" SCA_RS_EXPIRES_TOLERANCE=15 KAMAILIO_BIN="$PWD/scripts/valgrind-kamailio.sh" \
        cargo test --release --locked -p sca_rs --test "$t" -q >"$vgdir/test-$t.out" 2>&1; then
        echo "valgrind: integration test $t failed under memcheck" >&2
        tail -40 "$vgdir/test-$t.out" >&2
        echo "valgrind: why test $t failed:" >&2
        grep -A6 "panicked at" "$vgdir/test-$t.out" | head -60 >&2
        exit 1
    fi
done
rust_logs=$(ls "$vgdir"/sca_rs.*.log 2>/dev/null | wc -l)
[ "$rust_logs" -gt 0 ] || { echo "valgrind: no Kamailio process with sca_rs.so ran under memcheck" >&2; exit 1; }
bad=$(find "$vgdir" -name 'sca_rs.*.log' -size +0 | head -5)
if [ -n "$bad" ]; then
    echo "valgrind: memcheck errors in Kamailio processes running sca_rs:" >&2
    for f in $bad; do head -60 "$f" >&2; done
    exit 1
fi
c_errs=$(find "$vgdir" -name 'c.*.log' -size +0 | wc -l)
echo "valgrind host layer: clean ($rust_logs sca_rs Kamailio processes over: $VG_TESTS; $c_errs processes of Debian's C modules had memcheck errors)"
