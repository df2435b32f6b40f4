#!/usr/bin/env bash
# The package as an operator deploys it:
#
#   scripts/deb-test.sh SUITE DEB
#
# In a fresh copy of the suite's root (an overlay over .build/suites/SUITE/root
# whose changes are thrown away; the root itself is never changed), install
# DEB with dpkg -i, start Kamailio on the installed example config
# (/usr/share/doc/kamailio-sca-rs/examples/kamailio-sca.cfg, which says
# loadmodule "sca_rs.so"; no -L, so the module comes from Kamailio's own
# module directory) and send it a call-info SUBSCRIBE with SIPp
# (tests/deb/subscribe.xml): it must challenge it (407), then answer the
# demo user's authenticated one 202 and NOTIFY the line state.
# Everything runs in a private mount namespace: the overlay and the bind
# mounts vanish with it.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
say() { echo "deb-test: $*" >&2; }
die() { echo "deb-test: FAILED: $*" >&2; exit 1; }

if [ "${1:-}" = --in-namespace ]; then
  shift
  root=$1 T=$2 deb=$3 port=$4 sport=$5
  M=$T/merged
  mount -t overlay overlay -o "lowerdir=$root,upperdir=$T/upper,workdir=$T/work" "$M"
  mount --rbind /dev "$M/dev"
  mount --bind /proc "$M/proc"
  mount --bind /tmp "$M/tmp"
  inroot() { chroot "$M" "$@"; }

  say "dpkg -i $(basename "$deb")"
  inroot dpkg -i "$deb" >&2 || die "dpkg -i refused the package"
  inroot dpkg-query -W -f='${Status}\n' kamailio-sca-rs | grep -qx 'install ok installed' \
    || die "kamailio-sca-rs is not installed after dpkg -i"
  so=$(inroot dpkg -L kamailio-sca-rs | grep '/sca_rs.so$') || die "the package has no sca_rs.so"
  say "installed $so"
  cfg=/usr/share/doc/kamailio-sca-rs/examples/kamailio-sca.cfg
  [ -f "$M$cfg" ] || die "no example config at $cfg"

  run=$T/run db=$T/run/sca.sqlite ctl=$T/run/ctl
  # Debian's schemas, the package's sca_members table, and the demo user of
  # README "Using it" (100 / demo100: the line sip:100@127.0.0.1 itself)
  members=/usr/share/kamailio-sca-rs/schema/db_sqlite/sca_members-create.sql
  [ -f "$M$members" ] || die "the package has no $members"
  inroot sh -c "cat /usr/share/kamailio/db_sqlite/standard-create.sql /usr/share/kamailio/db_sqlite/auth_db-create.sql /usr/share/kamailio/db_sqlite/sca-create.sql $members | sqlite3 $db" \
    || die "cannot create the sqlite DB"
  inroot sqlite3 "$db" "INSERT INTO subscriber (username, domain, password) VALUES ('100', '127.0.0.1', 'demo100')" \
    || die "cannot add the demo user"
  # setsid + chroot exec: $! is kamailio's main process and its process
  # group, so every Kamailio process is stopped by that id
  setsid chroot "$M" /usr/sbin/kamailio -DD -E -f "$cfg" -Y "$run" -w "$run" -n 2 \
    -A "DBURL=\"sqlite:///$db\"" -A "CTL=\"unixs:$ctl\"" -A "LISTEN=udp:127.0.0.1:$port" \
    > "$run/kamailio.log" 2>&1 &
  kpid=$!
  stop() {
    kill -TERM -- "-$kpid" 2>/dev/null || true
    local i
    for i in $(seq 50); do kill -0 -- "-$kpid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL -- "-$kpid" 2>/dev/null || true
    wait "$kpid" 2>/dev/null || true
  }
  trap stop EXIT
  # ready when its control socket answers (or fail when it exits)
  deadline=$((SECONDS + 30))
  until inroot /usr/sbin/kamcmd -s "unixs:$ctl" core.version >/dev/null 2>&1; do
    if ! kill -0 "$kpid" 2>/dev/null; then
      tail -n 30 "$run/kamailio.log" >&2; die "kamailio exited at start-up"
    fi
    [ $SECONDS -lt $deadline ] || { tail -n 30 "$run/kamailio.log" >&2; die "kamailio did not answer on its ctl socket in 30 s"; }
    sleep 0.2
  done
  say "$(inroot /usr/sbin/kamcmd -s "unixs:$ctl" core.version) serving on 127.0.0.1:$port"
  if ! sipp -sf "$top/tests/deb/subscribe.xml" -m 1 -i 127.0.0.1 -p "$sport" -timeout 20 \
       -timeout_error -nostdin -trace_err -error_file "$run/sipp-errors.log" \
       127.0.0.1:"$port" > "$run/sipp.out" 2>&1; then
    cat "$run/sipp-errors.log" >&2 2>/dev/null || true
    tail -n 30 "$run/kamailio.log" >&2
    die "no 407, then 202 + NOTIFY, for a call-info SUBSCRIBE"
  fi
  inroot /usr/sbin/kamcmd -s "unixs:$ctl" sca.all_subscriptions > "$run/subs.txt" 2>&1 || true
  # "<AoR user> <subscriber host:port> <event> <seconds left> <state>"
  grep -Eq "^100 127\.0\.0\.1:$sport call-info [0-9]+ active\$" "$run/subs.txt" \
    || { cat "$run/subs.txt" >&2; die "sca.all_subscriptions does not list the subscription"; }
  say "SUBSCRIBE answered 202 + NOTIFY by the installed module; sca.all_subscriptions lists it"
  exit 0
fi

suite=${1:?suite} deb=${2:?deb}
[ -f "$deb" ] || die "no package at $deb: run make deb KAMAILIO_SUITE=$suite"
root="$top/.build/suites/$suite/root"
# the host's own suite has no root until a package is to be tested in one
[ -x "$root/usr/sbin/kamailio" ] || SCA_RS_SUITE_ROOT_ONLY=1 bash "$top/scripts/suite.sh" "$suite"
[ -x "$root/usr/sbin/kamailio" ] || die "no $suite root at $root: run make setup KAMAILIO_SUITE=$suite"
command -v sipp >/dev/null || die "sipp (sip-tester) missing: run make setup"
T=$(mktemp -d /tmp/sca-rs-debtest.XXXXXX)
cleanup() {
  # the namespace (and with it every mount) is gone when unshare returns;
  # still, never delete through a mount point
  if awk -v r="$T" 'index($2, r) == 1 { f = 1 } END { exit !f }' /proc/self/mounts; then
    echo "deb-test: something is still mounted below $T: left in place" >&2
  else
    rm -rf --one-file-system "$T"
  fi
}
trap cleanup EXIT
mkdir -p "$T/upper" "$T/work" "$T/merged" "$T/run"
cp "$deb" "$T/"
# two free UDP ports on 127.0.0.1 (Kamailio, SIPp)
read -r port sport < <(python3 -c '
import socket
s = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2)]
for x in s: x.bind(("127.0.0.1", 0))
print(*[x.getsockname()[1] for x in s])')
unshare --mount --propagation private bash "$0" --in-namespace "$root" "$T" "$T/$(basename "$deb")" "$port" "$sport"
say "passed ($suite)"
