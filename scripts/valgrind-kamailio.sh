#!/bin/sh
# Kamailio under valgrind memcheck, for scripts/valgrind.sh: the test
# harness runs this instead of /usr/sbin/kamailio (KAMAILIO_BIN). One log
# per process in $SCA_RS_VG_DIR, named after the SCA module the config
# loads (sca_rs.* or c.*), so only our module's runs gate.
cfg=""
prev=""
for a in "$@"; do
    [ "$prev" = "-f" ] && cfg="$a"
    prev="$a"
done
tag=c
grep -q 'sca_rs\.so"' "$cfg" 2>/dev/null && tag=sca_rs
supp="$(dirname "$0")/valgrind-kamailio.supp"
exec valgrind --quiet --track-origins=yes --suppressions="$supp" --log-file="${SCA_RS_VG_DIR:-/tmp}/$tag.%p.log" \
    /usr/sbin/kamailio "$@"
