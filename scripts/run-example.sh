#!/usr/bin/env bash
# Run Kamailio in the foreground with sca_rs on cfg-examples/kamailio-sca.cfg.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
run="$top/.build/run"
mkdir -p "$run"
db="$run/sca.sqlite"
if [ ! -s "$db" ]; then
  for f in standard sca; do sqlite3 "$db" < "/usr/share/kamailio/db_sqlite/$f-create.sql"; done
fi
moddir=$(dirname "$(dpkg -L kamailio | grep -m1 '/modules/tm.so$')")
echo "sca_rs: SIP on udp:127.0.0.1:5060, kamcmd -s unixs:$run/kamailio_ctl, DB $db" >&2
exec kamailio -DD -E -f "$top/cfg-examples/kamailio-sca.cfg" \
  -L "$moddir:$top/target/release" \
  -Y "$run" \
  -A "DBURL=\"sqlite:///$db\"" -A "CTL=\"unixs:$run/kamailio_ctl\""
