#!/usr/bin/env bash
# Build a Debian package of sca_rs.so for the Kamailio it was built against.
#
#   scripts/deb.sh SUITE MODULE          build it; the .deb's path is the last line
#   scripts/deb.sh --path SUITE MODULE   only print where it goes
#
# SUITE is the host's own suite (its installed kamailio) or one prepared by
# scripts/suite.sh (the kamailio of .build/suites/SUITE/root). The package
# installs sca_rs.so into that suite's Kamailio module directory, depends on
# exactly that Kamailio upstream version (the loader refuses a module built
# for any other: an exact version and compile-flags match), and ships the
# README, docs and example configs under /usr/share/doc/kamailio-sca-rs.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
die() { echo "deb: error: $*" >&2; exit 1; }
only_path=0
[ "${1:-}" = --path ] && { only_path=1; shift; }
suite=${1:?suite} module=${2:?module}
[ -f "$module" ] || die "no module at $module: run make build first"

host=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
if [ "$suite" = "$host" ]; then
  q() { "$@"; }
else
  root="$top/.build/suites/$suite/root"
  [ -x "$root/usr/sbin/kamailio" ] || die "no $suite root: run make setup KAMAILIO_SUITE=$suite"
  q() { chroot "$root" "$@"; }
fi
kver=$(q dpkg-query -W -f='${Version}' kamailio)
upver=${kver%%-*}
upver=${upver#*:}
# (awk reads all of dpkg's output: an early exit would fail the pipe)
moddir=$(q dpkg -L kamailio | awk '/\/kamailio\/modules$/ && !f { print; f = 1 }')
[ -n "$moddir" ] || die "no module directory in $suite's kamailio"

pkg=kamailio-sca-rs
crate_ver=$(sed -n 's/^version = "\(.*\)"/\1/p' "$top/Cargo.toml" | head -n1)
version="$crate_ver+kamailio$upver"
out="$top/.build/deb/$suite"
deb="$out/${pkg}_${version}_amd64.deb"
if [ "$only_path" = 1 ]; then echo "$deb"; exit 0; fi

# the module must carry this Kamailio's version string (what the loader compares)
# (6.1's CMake build spells the OS "Linux")
grep -qaE "kamailio $upver \(x86_64/[Ll]inux\)" "$module" \
  || die "$module was not built for Kamailio $upver ($suite); build it with KAMAILIO_SUITE=$suite"

# shared-library dependencies: the newest glibc symbol version the module
# uses, libgcc_s when it is NEEDED; libsrdb1 comes with kamailio itself
glibc=$(objdump -T "$module" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -V | tail -n1)
depends="kamailio (>= $upver), kamailio (<< $upver.~), libc6 (>= $glibc)"
if readelf -d "$module" | grep -q 'NEEDED.*libgcc_s'; then depends="$depends, libgcc-s1"; fi

stage=$(mktemp -d /tmp/sca-rs-deb.XXXXXX)
trap 'rm -rf --one-file-system "$stage"' EXIT
doc="$stage/usr/share/doc/$pkg"
install -d "$stage/DEBIAN" "$stage$moddir" "$doc/docs" "$doc/examples"
install -m 0644 "$module" "$stage$moddir/sca_rs.so"
# the release build carries debug info; the package does not need it
objcopy --strip-debug "$stage$moddir/sca_rs.so"
install -m 0644 "$top/README.md" "$doc/README.md"
install -m 0644 "$top"/docs/*.md "$doc/docs/"
install -m 0644 "$top"/cfg-examples/*.cfg "$top"/cfg-examples/*.lua "$doc/examples/"
# the sca_members table (docs/security.md), like Kamailio's own schema files
for d in db_sqlite postgres mysql; do
  install -d "$stage/usr/share/$pkg/schema/$d"
  install -m 0644 "$top/schema/$d/sca_members-create.sql" "$stage/usr/share/$pkg/schema/$d/"
done
cat > "$doc/copyright" <<EOF
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: sca_rs

Files: *
License: GPL-2.0-or-later
 On Debian systems the full text of the GNU General Public License version 2
 is in /usr/share/common-licenses/GPL-2.
EOF
size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
cat > "$stage/DEBIAN/control" <<EOF
Package: $pkg
Version: $version
Architecture: amd64
Maintainer: sca_rs developers <root@localhost>
Installed-Size: $size
Depends: $depends
Section: net
Priority: optional
Description: Shared Call Appearances and keepalive for Kamailio $upver (Rust module)
 sca_rs.so, a drop-in replacement for Kamailio's C sca and keepalive
 modules in one module, built for Kamailio $upver exactly (Debian $suite,
 $kver). Load it with loadmodule "sca_rs.so"; README, docs and example
 configs are in /usr/share/doc/$pkg.
EOF
mkdir -p "$out"
rm -f "$out/${pkg}_"*.deb
dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" >/dev/null
echo "deb: $pkg $version for Kamailio $kver ($suite), Depends: $depends" >&2
echo "$deb"
