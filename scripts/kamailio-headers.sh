#!/usr/bin/env bash
# Extract the headers and the compile defines of one Kamailio version from
# its Debian source package (a .dsc with its files, already downloaded).
#
#   scripts/kamailio-headers.sh DSC OUTDIR VERSION
#
# OUTDIR gets the source's core/ lib/ modules/ headers, cdefs.txt (one
# compile define a line, what Debian's plain 'make cfg' used) and VERSION
# (the Debian version, e.g. 6.0.1-1+deb13u2). OUTDIR is replaced as a whole
# only when everything worked. Used by scripts/setup.sh (the host's
# Kamailio) and scripts/suite.sh (another Debian suite's).
set -euo pipefail
dsc=$1 out=$2 kver=$3
die() { echo "setup: error: $*" >&2; exit 1; }

work=$(mktemp -d /tmp/sca-rs-ksrc.XXXXXX)
trap 'rm -rf --one-file-system "$work"' EXIT
# dpkg-source applies Debian's patches, so the headers are what Debian built.
dpkg-source -q -x "$dsc" "$work/src" >/dev/null 2>&1 || die "dpkg-source -x $dsc failed"
ksrc="$work/src/src"
[ -f "$ksrc/core/sr_module.h" ] || die "unexpected source layout in $dsc"

if grep -q 'dh-cmake\|dh-sequence-cmake' "$work/src/debian/control" 2>/dev/null; then
  # Debian builds this version with CMake (6.1 on): the defines are those
  # CMake gives the core (src/main.c), read from its compile database. They
  # differ from the Makefiles' (no FAST_LOCK/ADAPTIVE_WAIT, for one).
  for t in cmake flex bison python3; do
    command -v "$t" >/dev/null || die "$t is needed to derive Kamailio's CMake defines (make setup installs it)"
  done
  cmake -S "$work/src" -B "$work/build" -DCMAKE_EXPORT_COMPILE_COMMANDS=ON \
    > "$work/cmake.log" 2>&1 || { tail -n 20 "$work/cmake.log" >&2; die "cmake configure of $dsc failed"; }
  defs=$(python3 - "$work/build/compile_commands.json" <<'PY'
import json, shlex, sys
db = json.load(open(sys.argv[1]))
e = next(x for x in db if x["file"].endswith("/src/main.c"))
args = e["arguments"] if "arguments" in e else shlex.split(e["command"])
# shell-quoted again, as the Makefile route prints them (eval'd below)
print(" ".join(shlex.quote(a) for a in args if a.startswith("-D") and a not in ("-Dkamailio_EXPORTS", "-DNDEBUG")))
PY
) || die "cannot read the core's defines from CMake's compile database"
else
  # Compile defines: ask the source's own Makefiles (what Debian's plain
  # 'make cfg' used). LIBSSL_SET_MUTEX_SHARED=1 is what Debian's build got from
  # pkg-config libssl (the 'TLS_PTHREAD_MUTEX_SHARED' flag of kamailio -v).
  rm -f "$ksrc/config.mak" "$ksrc/modules.lst"
  defs=$(make -s --no-print-directory -C "$ksrc" LIBSSL_SET_MUTEX_SHARED=1 \
          --eval='sca_rs_printdefs: ; $(info $(C_DEFS) $(CC_PMUTEX_OPTS))' sca_rs_printdefs 2>/dev/null \
          | grep -- '-DNAME=' | tail -n1)
fi
[ -n "$defs" ] || die "could not derive compile defines from Kamailio's build files"

rm -rf --one-file-system "$out.new" && mkdir -p "$out.new"
( cd "$ksrc" && find core lib modules -name '*.h' -print0 | tar --null -T - -cf - ) | tar -C "$out.new" -xf -
# one define per line, shell quoting removed (eval of make's own output)
eval "set -- $defs"
printf '%s\n' "$@" > "$out.new/cdefs.txt"
echo "$kver" > "$out.new/VERSION"
rm -rf --one-file-system "$out" && mv "$out.new" "$out"
echo "setup: headers of Kamailio $kver in $out ($(grep -c . "$out/cdefs.txt") compile flags)" >&2
