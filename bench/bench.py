#!/usr/bin/env python3
"""sca_rs benchmark, workload 1 (see issue "Benchmarks"): call-info
SUBSCRIBE + NOTIFY from N distinct AoRs at a fixed rate, driven by SIPp over
loopback, against three Kamailio instances built from the same config:

  c      Debian's C sca.so
  rust   our sca_rs.so
  floor  no SCA state: the same SIP work (202 from sl, one NOTIFY
         transaction through the uac module)

Measured per run: Kamailio's CPU time (utime+stime of every Kamailio
process, from /proc) per SUBSCRIBE, shared memory used before/after
(`kamcmd core.shmmem`) per stored subscription, peak shm, failed calls.
Prints a table with the ratios sca_rs/C and sca_rs/floor and writes
docs/performance.md. Never asserts anything about speed.
"""

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODDIR = "/usr/lib/x86_64-linux-gnu/kamailio/modules"

CFG = r"""#!KAMAILIO
debug=1
log_stderror=yes
children=4
exit_timeout=4
disable_tcp=yes
auto_aliases=no
listen=udp:127.0.0.1:{port}
mpath="{mpath}"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "pv.so"
loadmodule "textops.so"
loadmodule "ctl.so"
loadmodule "db_sqlite.so"
loadmodule "rr.so"
loadmodule "uac.so"
{sca_load}
modparam("ctl", "binrpc", "unixs:{dir}/ctl")
{sca_params}
request_route {{
    if (is_method("SUBSCRIBE")) {{
        {sca_call}
        exit;
    }}
    sl_send_reply("404", "Not Found");
}}
"""

SCA_CALL = "sca_handle_subscribe();"

# The floor: what the SCA modules do on the wire, without SCA state.
FLOOR_CALL = r"""append_to_reply("Event: call-info\r\nContact: $ru\r\nAllow-Events: call-info, line-seize\r\nExpires: 3600\r\n");
        sl_send_reply("202", "Accepted");
        $uac_req(method) = "NOTIFY";
        $uac_req(ruri) = $(ct{tobody.uri});
        $uac_req(furi) = $tu;
        $uac_req(turi) = $fu;
        $uac_req(callid) = $ci;
        $uac_req(hdrs) = "Event: call-info\r\nSubscription-State: active;expires=3600\r\nCall-Info: <sip:127.0.0.1>;appearance-index=*;appearance-state=idle\r\nContact: " + $ru + "\r\n";
        uac_req_send();"""


def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def kamcmd(d, *args):
    out = subprocess.run(["kamcmd", "-s", f"unixs:{d}/ctl", *args], capture_output=True, text=True, timeout=30)
    return out.stdout


def shm(d):
    out = kamcmd(d, "core.shmmem")
    vals = dict(re.findall(r"(\w+):\s*(\d+)", out))
    return int(vals.get("used", 0)), int(vals.get("max_used", 0))


def cpu_ticks(pgid):
    """utime+stime (clock ticks) of every process in the group."""
    total = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                st = f.read()
        except OSError:
            continue
        fields = st[st.rindex(")") + 2:].split()
        # fields[2] = pgrp, [11] = utime, [12] = stime (after the comm)
        if int(fields[2]) == pgid:
            total += int(fields[11]) + int(fields[12])
    return total


def run_variant(variant, n, rate, shm_mb):
    d = tempfile.mkdtemp(prefix=f"sca_rs-bench-{variant}-")
    port = free_port()
    db = os.path.join(d, "db.sqlite")
    for f in ("standard", "sca"):
        with open(f"/usr/share/kamailio/db_sqlite/{f}-create.sql") as sql:
            subprocess.run(["sqlite3", db], stdin=sql, check=True)
    if variant == "c":
        load, params, call = 'loadmodule "sca.so"', f'modparam("sca", "db_url", "sqlite:///{db}")', SCA_CALL
    elif variant == "rust":
        so = os.path.join(TOP, "target/release/sca_rs.so")
        load, params, call = f'loadmodule "{so}"', f'modparam("sca_rs", "db_url", "sqlite:///{db}")', SCA_CALL
    else:
        load, params, call = "", "", FLOOR_CALL
    cfg = os.path.join(d, "kamailio.cfg")
    with open(cfg, "w") as f:
        f.write(CFG.format(port=port, mpath=MODDIR, dir=d, sca_load=load, sca_params=params, sca_call=call))
    log = open(os.path.join(d, "kamailio.log"), "w")
    k = subprocess.Popen(
        ["kamailio", "-DD", "-E", "-f", cfg, "-Y", d, "-w", d, "-m", str(shm_mb), "-M", "16"],
        stdout=log, stderr=log, start_new_session=True,
    )
    try:
        for _ in range(200):
            if "udp receiver child=3" in kamcmd(d, "core.psx"):
                break
            time.sleep(0.05)
        else:
            raise RuntimeError(f"{variant}: kamailio did not start, see {d}/kamailio.log")
        used0, _ = shm(d)
        cpu0 = cpu_ticks(k.pid)
        sipp = subprocess.run(
            ["sipp", "-sf", os.path.join(TOP, "bench/subscribe.xml"), "-m", str(n), "-r", str(rate),
             "-l", str(max(rate * 4, 100)), "-i", "127.0.0.1", "-p", str(free_port()), "-nostdin",
             "-timeout", str(int(n / rate) + 60), "-trace_stat", "-stf", os.path.join(d, "stat.csv"),
             f"127.0.0.1:{port}"],
            capture_output=True, text=True, cwd=d,
        )
        # tm keeps finished NOTIFY transactions for its wait timer (5 s):
        # measure what stays, the stored subscriptions
        time.sleep(1.0)
        cpu1 = cpu_ticks(k.pid)
        time.sleep(6.0)
        used1, max_used = shm(d)
        stat = open(os.path.join(d, "stat.csv")).read().splitlines()
        head, last = stat[0].split(";"), stat[-1].split(";")
        row = dict(zip(head, last))
        ok, failed = int(row.get("SuccessfulCall(C)", 0)), int(row.get("FailedCall(C)", 0))
        hz = os.sysconf("SC_CLK_TCK")
        return {
            "variant": variant,
            "n": n,
            "ok": ok,
            "failed": failed,
            "cpu_us_per_op": (cpu1 - cpu0) * 1e6 / hz / max(ok, 1),
            "shm_per_sub": (used1 - used0) / max(ok, 1) if variant != "floor" else 0.0,
            "max_used": max_used,
            "sipp_rc": sipp.returncode,
        }
    finally:
        os.killpg(k.pid, signal.SIGTERM)
        try:
            k.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(k.pid, signal.SIGKILL)
            k.wait()
        if os.environ.get("BENCH_KEEP") is None:
            shutil.rmtree(d, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, nargs="+", default=[5000, 20000])
    ap.add_argument("--rate", type=int, default=1000)
    ap.add_argument("--shm", type=int, default=256, help="shm MB")
    ap.add_argument("--out", default=os.path.join(TOP, "docs/performance.md"))
    a = ap.parse_args()
    rows = []
    for n in a.n:
        for v in ("floor", "c", "rust"):
            r = run_variant(v, n, a.rate, a.shm)
            rows.append(r)
            print(f"{v:6} n={n:6} ok={r['ok']:6} failed={r['failed']:5} cpu={r['cpu_us_per_op']:8.1f} us/op "
                  f"shm={r['shm_per_sub']:7.1f} B/sub peak={r['max_used']}", flush=True)
    lines = [
        "# Performance",
        "",
        "Produced by `make bench` (bench/bench.py); numbers from one run on this",
        "project's 2-core machine. Workload 1 only so far: call-info SUBSCRIBE +",
        f"NOTIFY from N distinct AoRs at {a.rate}/s, SIPp over loopback, {a.shm} MB shm,",
        "4 UDP workers. CPU is all Kamailio processes' utime+stime per successful",
        "SUBSCRIBE; shm is `core.shmmem` used after minus before, per stored",
        "subscription. The floor does the same SIP work with no SCA state.",
        "",
        "| N | variant | ok | failed | CPU µs/op | shm B/sub | peak shm used |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(f"| {r['n']} | {r['variant']} | {r['ok']} | {r['failed']} | {r['cpu_us_per_op']:.1f} | "
                     f"{r['shm_per_sub']:.1f} | {r['max_used']} |")
    lines += ["", "| N | CPU sca_rs/C | CPU sca_rs/floor | shm sca_rs/C |", "| --- | --- | --- | --- |"]
    print()
    for n in a.n:
        by = {r["variant"]: r for r in rows if r["n"] == n}
        c, rust, floor = by["c"], by["rust"], by["floor"]
        rc = rust["cpu_us_per_op"] / max(c["cpu_us_per_op"], 1e-9)
        rf = rust["cpu_us_per_op"] / max(floor["cpu_us_per_op"], 1e-9)
        rs = rust["shm_per_sub"] / max(c["shm_per_sub"], 1e-9)
        print(f"N={n}: CPU sca_rs/C = {rc:.2f}, CPU sca_rs/floor = {rf:.2f}, shm/sub sca_rs/C = {rs:.2f}")
        lines.append(f"| {n} | {rc:.2f} | {rf:.2f} | {rs:.2f} |")
    lines += [
        "",
        "Targets (issue 5): CPU per SUBSCRIBE ≤ 0.6 × C and ≤ 1.3 × floor; ≤ 200 bytes",
        "of shm per stored subscription; zero failures. Workloads 2–5, the 64 MB",
        "run, the plot and profiling are not done yet.",
        "",
    ]
    with open(a.out, "w") as f:
        f.write("\n".join(lines))
    print(f"\nwrote {a.out}")


if __name__ == "__main__":
    sys.exit(main())
