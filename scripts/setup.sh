#!/usr/bin/env bash
# sca_rs set-up for a fresh Debian bookworm machine (run as root).
#
#  1. installs, with apt, what building and testing need (Kamailio 5.6 with
#     the modules the tests load, SIPp, sqlite3, libclang for bindgen);
#  2. fetches the source of the *installed* kamailio from Debian's source
#     package and extracts its headers into kamailio-headers/;
#  3. derives the compile defines Debian's kamailio binary was built with from
#     that source's own Makefiles, into kamailio-headers/cdefs.txt.
#
# Idempotent: every step is skipped quietly when already done.
# Nothing fetched here is committed (kamailio-headers/ is git-ignored).
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
hdr="$top/kamailio-headers"
say() { echo "setup: $*" >&2; }
die() { echo "setup: error: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root (it installs Debian packages)"
command -v apt-get >/dev/null || die "needs a Debian system with apt-get"

# ---------------------------------------------------------------- packages
pkgs=(kamailio kamailio-extra-modules kamailio-sqlite-modules kamailio-postgres-modules postgresql
      kamailio-lua-modules kamailio-mysql-modules mariadb-server
      sqlite3 sip-tester libclang-dev dpkg-dev make gcc g++ procps valgrind)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# ---------------------------------------------------------------- headers
kver=$(dpkg-query -W -f='${Version}' kamailio)          # e.g. 5.6.3-2
upver=${kver%%-*}                                        # 5.6.3
binver=$(kamailio -v | sed -n 's/^version: kamailio \([0-9.]*\).*/\1/p')
[ "$binver" = "$upver" ] || die "kamailio -v says '$binver' but the package is '$kver'"

if [ -f "$hdr/VERSION" ] && [ "$(cat "$hdr/VERSION")" = "$kver" ] && [ -s "$hdr/cdefs.txt" ]; then
  exit 0
fi

say "fetching Kamailio $kver source from Debian's source package"
# Source entries derived from the machine's own apt sources: same URIs,
# suites and keys, with 'deb-src' instead of 'deb'. No host name is written.
srclist=/etc/apt/sources.list.d/sca-rs-deb-src.sources
if ! apt-cache showsrc kamailio 2>/dev/null | grep -q "^Version: $kver\$"; then
  : > "$srclist.tmp"
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] && [ "$f" != "$srclist" ] || continue
    grep -q '^Types:.*\bdeb\b' "$f" || continue
    # keep only stanzas of Debian's own archive (those signed by its keyring)
    awk -v RS= -v ORS='\n\n' '/debian-archive-keyring/' "$f" \
      | sed -e 's/^Types:.*/Types: deb-src/' >> "$srclist.tmp"
  done
  if [ -f /etc/apt/sources.list ]; then
    sed -n 's/^deb \(.*\)/deb-src \1/p' /etc/apt/sources.list > /etc/apt/sources.list.d/sca-rs-deb-src.list
  fi
  [ -s "$srclist.tmp" ] && mv "$srclist.tmp" "$srclist" || rm -f "$srclist.tmp"
  apt-get update -qq
fi

work=$(mktemp -d /tmp/sca-rs-kdsc.XXXXXX)
trap 'rm -rf --one-file-system "$work"' EXIT
( cd "$work" && apt-get source -qq --download-only "kamailio=$kver" >/dev/null 2>&1 ) \
  || die "apt-get source kamailio=$kver failed (are deb-src entries available?)"
dsc=$(ls "$work"/kamailio_*.dsc | head -n1)
bash "$top/scripts/kamailio-headers.sh" "$dsc" "$hdr" "$kver"
