#!/usr/bin/env bash
# Run Kamailio in the foreground with sca_rs on cfg-examples/kamailio-sca.cfg.
# The sqlite DB (.build/run/sca.sqlite) gets Debian's standard, auth_db and
# sca schemas, sca_rs's sca_members table and a demo user (see below).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
run="$top/.build/run"
mkdir -p "$run"
db="$run/sca.sqlite"
schema=/usr/share/kamailio/db_sqlite
if [ ! -s "$db" ]; then
  for f in standard sca; do sqlite3 "$db" < "$schema/$f-create.sql"; done
fi
# a DB made before the example authenticated: add what it needs
if ! sqlite3 "$db" "SELECT 1 FROM version WHERE table_name = 'subscriber'" | grep -q 1; then
  sqlite3 "$db" < "$schema/auth_db-create.sql"
fi
if ! sqlite3 "$db" "SELECT 1 FROM version WHERE table_name = 'sca_members'" | grep -q 1; then
  sqlite3 "$db" < "$top/schema/db_sqlite/sca_members-create.sql"
  # the demo: user 100 (password demo100) is shared line sip:100@127.0.0.1
  # itself; alice (password alice-demo) is a member of it
  sqlite3 "$db" "INSERT INTO subscriber (username, domain, password) VALUES ('100', '127.0.0.1', 'demo100');
    INSERT INTO subscriber (username, domain, password) VALUES ('alice', '127.0.0.1', 'alice-demo');
    INSERT INTO sca_members (aor, member) VALUES ('sip:100@127.0.0.1', 'alice@127.0.0.1');"
fi
moddir=$(dirname "$(dpkg -L kamailio | grep -m1 '/modules/tm.so$')")
cat >&2 <<INFO
sca_rs: SIP on udp:127.0.0.1:5060, kamcmd -s unixs:$run/kamailio_ctl, DB $db
sca_rs: SUBSCRIBE and INVITE need digest credentials (realm 127.0.0.1):
  demo users: 100 / demo100 (the line sip:100@127.0.0.1 itself), alice / alice-demo (a member of it)
  add a user:   sqlite3 $db "INSERT INTO subscriber (username, domain, password) VALUES ('bob', '127.0.0.1', 'secret')"
  add a member: sqlite3 $db "INSERT INTO sca_members (aor, member) VALUES ('sip:100@127.0.0.1', 'bob@127.0.0.1')"
                kamcmd -s unixs:$run/kamailio_ctl sca.reload_members
INFO
exec kamailio -DD -E -f "$top/cfg-examples/kamailio-sca.cfg" \
  -L "$moddir:$top/target/release" \
  -Y "$run" \
  -A "DBURL=\"sqlite:///$db\"" -A "CTL=\"unixs:$run/kamailio_ctl\""
