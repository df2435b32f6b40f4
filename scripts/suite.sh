#!/usr/bin/env bash
# Prepare another Debian suite's Kamailio for building and testing sca_rs:
#
#   scripts/suite.sh SUITE        (bookworm, trixie or forky; run as root)
#
# under .build/suites/SUITE/ (once, idempotent, quiet when done):
#  root/     a root filesystem of SUITE made by mmdebstrap from Debian's
#            packages: kamailio and the module packages the tests load;
#  headers/  that Kamailio's headers and compile defines, from the source
#            package of exactly the version installed in root/ (as
#            scripts/setup.sh does for the host);
#  bin/      wrappers (kamailio, kamcmd, in-root) that run root/'s binaries
#            in a private mount namespace: /dev, /proc, /tmp and the
#            checkout (read-only) are bind-mounted at the same paths inside
#            root/ and vanish with the process, so no mount ever outlives a
#            command and nothing can delete host files through one.
# The suite's package URIs are derived from the machine's own apt sources
# (Debian's archive entries, same URIs, other suite); no host name is
# written into the repository.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
say() { echo "setup: $*" >&2; }
die() { echo "setup: error: $*" >&2; exit 1; }
die3() { echo "setup: error: $*" >&2; exit 3; }

# never delete through a mount point: refuse when anything is mounted below
mounted_below() { awk -v r="$1" 'index($2, r) == 1 { f = 1 } END { exit !f }' /proc/self/mounts; }

suite=${1:-}
if [ "$suite" = --clean ]; then          # make clean: .build/ with every root
  [ -e "$top/.build" ] || exit 0
  mounted_below "$top/.build" && die "something is mounted below $top/.build: refusing to delete it"
  rm -rf --one-file-system "$top/.build"
  exit 0
fi
case "$suite" in
  bookworm|trixie|forky) ;;
  *) die "KAMAILIO_SUITE must be bookworm, trixie or forky (got '${suite}')" ;;
esac
host=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
# the host's own Kamailio needs nothing here (scripts/setup.sh), except a
# root of its suite to install the package into (make deb-test):
# SCA_RS_SUITE_ROOT_ONLY=1 makes just the root and its wrappers
root_only=${SCA_RS_SUITE_ROOT_ONLY:-}
[ "$suite" != "$host" ] || [ -n "$root_only" ] || exit 0
[ "$(id -u)" -eq 0 ] || die "must run as root (mmdebstrap, chroot)"

dir="$top/.build/suites/$suite"
root="$dir/root"
# the packages of the modules the integration tests load, and the
# persistence tests' DB modules
pkgs=kamailio,kamailio-extra-modules,kamailio-sqlite-modules,kamailio-postgres-modules,kamailio-mysql-modules,kamailio-lua-modules,sqlite3
# the root is made once per package list; the stamp holds its kamailio version
stamp="$dir/.root-$(echo "$pkgs" | md5sum | cut -c1-12)"
[ -f "$stamp" ] && [ -x "$root/usr/sbin/kamailio" ] && [ -s "$dir/headers/cdefs.txt" ] \
  && [ "$(cat "$dir/headers/VERSION")" = "$(cat "$stamp")" ] && exit 0
[ -n "$root_only" ] && [ -f "$stamp" ] && [ -x "$root/usr/sbin/kamailio" ] && exit 0

# what only another suite needs: mmdebstrap for the root; cmake, flex and
# bison to read the compile defines of a CMake-built Kamailio (6.1 on)
need=()
for p in mmdebstrap cmake flex bison; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  say "installing: ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# ------------------------------------------------ Debian archive URIs
# "URI SUITE" pairs of the machine's apt sources signed by Debian's keyring
# (deb822 files) or plain 'deb' lines.
uri_suites() {
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk -v RS= '/debian-archive-keyring/ {
      t = ""; u = ""; s = ""; n = split($0, L, "\n")
      for (i = 1; i <= n; i++) {
        if (L[i] ~ /^Types:/) t = " " substr(L[i], 7) " "
        if (L[i] ~ /^URIs:/) u = substr(L[i], 6)
        if (L[i] ~ /^Suites:/) s = substr(L[i], 8)
      }
      if (t !~ / deb /) next
      nu = split(u, U, " "); ns = split(s, S, " ")
      for (a = 1; a <= nu; a++) for (b = 1; b <= ns; b++) print U[a], S[b]
    }' "$f"
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    sed -n 's/^deb \(\[[^]]*\] \)\{0,1\}\([^ ]*\) \([^ ]*\).*/\2 \3/p' "$f"
  done
}
main_uri=$(uri_suites | awk -v s="$host" '$2 == s { print $1; exit }')
sec_uri=$(uri_suites | awk -v s="$host-security" '$2 == s { print $1; exit }')
[ -n "$main_uri" ] || die "no Debian archive entry for '$host' in the machine's apt sources"
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
lines=("deb [signed-by=$keyring] $main_uri $suite main")
# stable suites get their security updates (trixie: 6.0.1-1+deb13u2)
if [ "$suite" != forky ] && [ -n "$sec_uri" ]; then
  lines+=("deb [signed-by=$keyring] $sec_uri $suite-security main")
fi
# testing's Release file may be past its Valid-Until date
noexpire='Acquire::Check-Valid-Until "false"'

# ------------------------------------------------ root filesystem
mkdir -p "$dir"
if [ ! -x "$root/usr/sbin/kamailio" ] || [ ! -f "$stamp" ]; then
  # never delete through a mount point
  for r in "$root" "$root.new"; do
    if [ -e "$r" ]; then
      mounted_below "$r" && die "something is mounted below $r: refusing to delete it"
      rm -rf --one-file-system "$r"
    fi
  done
  say "making a Debian $suite root with Kamailio in $root (mmdebstrap)"
  mmdebstrap --quiet --variant=apt --include="$pkgs" --aptopt="$noexpire" \
    "$suite" "$root.new" "${lines[@]}" >&2 || die "mmdebstrap $suite failed"
  mv "$root.new" "$root"
  # name resolution and the loopback names as on the host
  cp -f /etc/hosts "$root/etc/hosts"
  cp -fL /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true
  rm -f "$dir"/.root-*
  chroot "$root" dpkg-query -W -f='${Version}' kamailio > "$stamp"
fi

# ------------------------------------------------ wrappers
mkdir -p "$dir/bin"
cat > "$dir/bin/in-root" <<EOF
#!/bin/sh
# Generated by scripts/suite.sh: run a command of the Debian $suite root
# $root
# in a private mount namespace with /dev, /proc, /tmp (and \$TMPDIR) and the
# checkout (read-only) at the same paths. The mounts exist only in this
# process's namespace and vanish with it; unshare and chroot exec, so the
# caller's pid and process group are the command's.
set -e
ROOT='$root'
TOP='$top'
if [ "\${1:-}" != --in-namespace ]; then
  exec unshare --mount --propagation private "\$0" --in-namespace "\$@"
fi
shift
mount --rbind /dev "\$ROOT/dev"
mount --bind /proc "\$ROOT/proc"
mount --bind /tmp "\$ROOT/tmp"
if [ -n "\${TMPDIR:-}" ] && [ -d "\$TMPDIR" ] && [ "\${TMPDIR#/tmp}" = "\$TMPDIR" ]; then
  mkdir -p "\$ROOT\$TMPDIR" && mount --bind "\$TMPDIR" "\$ROOT\$TMPDIR"
fi
mkdir -p "\$ROOT\$TOP"
mount --bind "\$TOP" "\$ROOT\$TOP"
mount -o remount,bind,ro "\$ROOT\$TOP"
exec chroot "\$ROOT" "\$@"
EOF
for b in kamailio kamcmd; do
  printf '#!/bin/sh\n# Generated by scripts/suite.sh: %s of the Debian %s root.\nexec "$(dirname "$0")/in-root" /usr/sbin/%s "$@"\n' \
    "$b" "$suite" "$b" > "$dir/bin/$b"
done
chmod 0755 "$dir/bin/in-root" "$dir/bin/kamailio" "$dir/bin/kamcmd"

[ -z "$root_only" ] || exit 0

# ------------------------------------------------ headers of that version
kver=$(chroot "$root" dpkg-query -W -f='${Version}' kamailio)
binver=$("$dir/bin/kamailio" -v | sed -n 's/^version: kamailio \([0-9.]*\).*/\1/p')
[ "$binver" = "${kver%%-*}" ] || die "$suite: kamailio -v says '$binver' but the package is '$kver'"
if ! { [ -f "$dir/headers/VERSION" ] && [ "$(cat "$dir/headers/VERSION")" = "$kver" ] \
       && [ -s "$dir/headers/cdefs.txt" ]; }; then
  say "fetching Kamailio $kver source ($suite) from Debian's source package"
  apt="$dir/apt"
  mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial"
  printf '%s\n' "${lines[@]}" | sed 's/^deb /deb-src /' > "$apt/sources.list"
  aptc=(apt-get -qq -o Dir::Etc::sourcelist="$apt/sources.list" -o Dir::Etc::sourceparts=-
        -o Dir::State::Lists="$apt/lists" -o Dir::Cache="$apt/cache"
        -o Acquire::Check-Valid-Until=false)
  "${aptc[@]}" update >&2 || die "apt-get update for $suite sources failed"
  work=$(mktemp -d /tmp/sca-rs-kdsc.XXXXXX)
  trap 'rm -rf --one-file-system "$work"' EXIT
  if [ -n "${SCA_RS_KAMAILIO_DSC:-}" ]; then
    # a mirror without that suite's sources: the operator's copy of the
    # source package (the .dsc with its files beside it)
    dscver=$(sed -n 's/^Version: //p' "$SCA_RS_KAMAILIO_DSC")
    [ "$dscver" = "$kver" ] || die "SCA_RS_KAMAILIO_DSC is kamailio $dscver, the $suite root has $kver"
    dsc=$SCA_RS_KAMAILIO_DSC
  else
    # exit status 3: that source is not to be had here (.ci/run tells it apart)
    ( cd "$work" && "${aptc[@]}" source --download-only "kamailio=$kver" >/dev/null 2>&1 ) \
      || die3 "cannot download Debian's source package kamailio=$kver ($suite) from the machine's
  archive; its headers and compile defines are needed to build for that Kamailio. Where the mirror
  lacks the suite's sources, get kamailio_$kver.dsc with its files and set SCA_RS_KAMAILIO_DSC=/path/to/it."
    dsc=$(ls "$work"/kamailio_*.dsc | head -n1)
  fi
  bash "$top/scripts/kamailio-headers.sh" "$dsc" "$dir/headers" "$kver"
fi
say "Debian $suite: Kamailio $kver ready under .build/suites/$suite"
