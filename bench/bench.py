#!/usr/bin/env python3
"""sca_rs benchmarks (see issue "Benchmarks"). Workload 1: call-info
SUBSCRIBE + NOTIFY from N distinct AoRs at a fixed rate, driven by SIPp over
loopback (also at Kamailio's default 64 MB shm); workload 4: keepalive of
5000 destinations, half answering; workload 5: workload 1 at 1k and 100k
stored subscriptions; workload 6: line seizes replicated between two
sca_rs nodes over DMQ against one node (tests/bench_cluster.rs; workloads
2 and 3 are tests/bench_flows.rs); workload 8: the cluster's digest
exchange at 100k subscriptions and convergence after a partition heals
(tests/bench_heal.rs). Workload 1 runs three Kamailio
instances built from the same config:

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

# What every benchmark config starts with.
CFG_HEAD = r"""#!KAMAILIO
debug=1
log_stderror=yes
children={children}
exit_timeout=4
disable_tcp=yes
auto_aliases=no
listen=udp:127.0.0.1:{port}
mpath="{mpath}"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "pv.so"
loadmodule "ctl.so"
modparam("ctl", "binrpc", "unixs:{dir}/ctl")
"""

CFG = CFG_HEAD + r"""loadmodule "textops.so"
loadmodule "db_sqlite.so"
loadmodule "rr.so"
loadmodule "uac.so"
{sca_load}
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


def kamcmd(d, *args, timeout=30):
    try:
        out = subprocess.run(["kamcmd", "-s", f"unixs:{d}/ctl", *args], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        # (the ctl socket exists from mod_init, but nobody answers before
        # the processes fork: a long start-up restore)
        return ""
    return out.stdout


def shm(d):
    out = kamcmd(d, "core.shmmem")
    vals = dict(re.findall(r"(\w+):\s*(\d+)", out))
    return int(vals.get("used", 0)), int(vals.get("max_used", 0))


def start_kamailio(d, cfg_text, shm_mb, last_worker, label, pkg_mb=16, extra=()):
    """Start Kamailio on `cfg_text` in directory `d`, in its own process
    group, and wait until UDP receiver `last_worker` is up."""
    cfg = os.path.join(d, "kamailio.cfg")
    with open(cfg, "w") as f:
        f.write(cfg_text)
    with open(os.path.join(d, "kamailio.log"), "w") as log:
        k = subprocess.Popen(
            ["kamailio", "-DD", "-E", "-f", cfg, "-Y", d, "-w", d, "-m", str(shm_mb), "-M", str(pkg_mb), *extra],
            stdout=log, stderr=log, start_new_session=True,
        )
    # (a start-up restore of a big table comes first)
    deadline = time.time() + 600
    while time.time() < deadline:
        if f"udp receiver child={last_worker}" in kamcmd(d, "core.psx", timeout=5):
            return k
        if k.poll() is not None:
            break
        time.sleep(0.05)
    stop_kamailio(k)
    raise RuntimeError(f"{label}: kamailio did not start, see {d}/kamailio.log")


def stop_kamailio(k):
    """SIGTERM the whole group, SIGKILL after 10 s; it may be gone already."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, None)):
        try:
            os.killpg(k.pid, sig)
        except ProcessLookupError:
            break
        try:
            k.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue
    k.wait()
    # children of a main process that died are in the same group
    try:
        os.killpg(k.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def group_stats(pgid):
    """pid -> the fields of /proc/<pid>/stat after the comm, for every
    process in the group ([2] = pgrp, [11] = utime, [12] = stime)."""
    out = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                st = f.read()
        except OSError:
            continue
        fields = st[st.rindex(")") + 2:].split()
        if int(fields[2]) == pgid:
            out[int(pid)] = fields
    return out


def cpu_ticks(pgid):
    """utime+stime (clock ticks) of every process in the group."""
    return sum(int(f[11]) + int(f[12]) for f in group_stats(pgid).values())


def fill_db(db, aors, phones):
    """Workload 5's fill: aors x phones call-info subscriptions written
    straight into the sqlite table (restored at start-up), with strings
    shaped like SIPp's and sl's (a To-tag of this Kamailio's 5.6 shape,
    `<32 hex>.<8 hex>`); AoRs sip:fill<i>@127.0.0.1, not SIPp's."""
    n = aors * phones
    subprocess.run(
        ["sqlite3", db,
         f"WITH RECURSIVE s(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM s WHERE i < {n - 1}) "
         "INSERT INTO sca_subscriptions (subscriber, aor, event, expires, state, app_idx, call_id, from_tag, "
         "to_tag, record_route, notify_cseq, subscribe_cseq, server_id) SELECT "
         f"'sip:fill'||(i/{phones})||'@10.'||((i/65536)%256)||'.'||((i/256)%256)||'.'||(i%256)||':5060', "
         f"'sip:fill'||(i/{phones})||'@127.0.0.1', 1, CAST(strftime('%s','now') AS INTEGER) + 7200, 0, 0, "
         "i||'-4242@10.0.0.1', '4242b'||i, '9575f611751ecf79aab75be446a1af16.'||printf('%08x', (i * 2654435761) % 4294967296), "
         "'', 1, 1, 0 FROM s;"],
        check=True)


RESTORE_RE = re.compile(r"restored (\d+) SCA subscriptions from .* in (\d+) ms")


def run_variant(variant, n, rate, shm_mb, fill=None):
    d = tempfile.mkdtemp(prefix=f"sca_rs-bench-{variant}-")
    port = free_port()
    db = os.path.join(d, "db.sqlite")
    for f in ("standard", "sca"):
        with open(f"/usr/share/kamailio/db_sqlite/{f}-create.sql") as sql:
            subprocess.run(["sqlite3", db], stdin=sql, check=True)
    if fill:
        fill_db(db, *fill)
    if variant == "c":
        load, params, call = 'loadmodule "sca.so"', f'modparam("sca", "db_url", "sqlite:///{db}")', SCA_CALL
    elif variant == "rust":
        so = os.path.join(TOP, "target/release/sca_rs.so")
        load, params, call = f'loadmodule "{so}"', f'modparam("sca_rs", "db_url", "sqlite:///{db}")', SCA_CALL
    elif variant == "rust-db5":
        # workload 7: persistence on, written every 5 s (inside the window)
        so = os.path.join(TOP, "target/release/sca_rs.so")
        load, call = f'loadmodule "{so}"', SCA_CALL
        params = f'modparam("sca_rs", "db_url", "sqlite:///{db}")\nmodparam("sca_rs", "db_update_interval", 5)'
    elif variant == "rust-nodb":
        # workload 7: the same without persistence
        so = os.path.join(TOP, "target/release/sca_rs.so")
        load, params, call = f'loadmodule "{so}"', "", SCA_CALL
    else:
        load, params, call = "", "", FLOOR_CALL
    cfg = CFG.format(children=4, port=port, mpath=MODDIR, dir=d, sca_load=load, sca_params=params, sca_call=call)
    t_start = time.time()
    k = start_kamailio(d, cfg, shm_mb, 3, variant)
    restored, restore_ms = 0, None
    if fill:
        m = RESTORE_RE.search(open(os.path.join(d, "kamailio.log")).read())
        if m:
            restored, restore_ms = int(m.group(1)), int(m.group(2))
        print(f"  fill {fill[0]}x{fill[1]}: restored {restored} in {restore_ms} ms "
              f"(start {time.time() - t_start:.0f} s)", flush=True)
    try:
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
            # (the floor stores nothing: what it keeps is Kamailio's own, shown as
            # shm_floor_per_op)
            "shm_per_sub": (used1 - used0) / max(ok, 1) if variant != "floor" else 0.0,
            "shm_floor_per_op": (used1 - used0) / max(ok, 1) if variant == "floor" else None,
            "max_used": max_used,
            "sipp_rc": sipp.returncode,
            "fill": fill and fill[0] * fill[1],
            "restored": restored,
            "restore_ms": restore_ms,
            "used_after_fill": used0,
        }
    finally:
        stop_kamailio(k)
        if os.environ.get("BENCH_KEEP") is None:
            shutil.rmtree(d, ignore_errors=True)

KA_CFG = CFG_HEAD + r"""{ka_load}
modparam("tm", "fr_timer", 2000)
modparam("tm", "wt_timer", 1000)
modparam("{ka_mod}", "ping_interval", 1)
modparam("{ka_mod}", "delete_counter", 0)
{dests}
request_route {{
    sl_send_reply("404", "Not Found");
}}
"""


class Responder:
    """Two UDP sockets on loopback: `up` answers every OPTIONS with 200 OK,
    `down` swallows them. Counts distinct pings (Call-IDs) on each."""

    def __init__(self):
        import threading
        self.up = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.down = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for s in (self.up, self.down):
            s.bind(("127.0.0.1", 0))
            try:  # root may exceed rmem_max: no drops while Python catches up
                s.setsockopt(socket.SOL_SOCKET, getattr(socket, "SO_RCVBUFFORCE", 33), 32 << 20)
            except OSError:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            s.settimeout(0.2)
        self.seen = {"up": set(), "down": set()}
        self.stop = False
        self.threads = [threading.Thread(target=self.loop, args=(self.up, "up", True), daemon=True),
                        threading.Thread(target=self.loop, args=(self.down, "down", False), daemon=True)]
        for t in self.threads:
            t.start()

    def loop(self, sock, name, answer):
        while not self.stop:
            try:
                data, addr = sock.recvfrom(65535)
            except socket.timeout:
                continue
            text = data.decode("latin-1")
            head = text.split("\r\n\r\n", 1)[0].split("\r\n")
            cid = next((l.split(":", 1)[1].strip() for l in head if l.lower().startswith(("call-id:", "i:"))), None)
            if cid is None or not head[0].startswith("OPTIONS "):
                continue
            self.seen[name].add(cid)
            if answer:
                keep = [l for l in head[1:] if l.split(":", 1)[0].strip().lower() in
                        ("via", "v", "from", "f", "to", "t", "call-id", "i", "cseq")]
                keep = [l + ";tag=bench" if l.lower().startswith(("to:", "t:")) and ";tag=" not in l else l for l in keep]
                sock.sendto(("SIP/2.0 200 OK\r\n" + "\r\n".join(keep) + "\r\nContent-Length: 0\r\n\r\n").encode("latin-1"), addr)

    def counts(self):
        return len(self.seen["up"]), len(self.seen["down"])

    def close(self):
        self.stop = True
        for t in self.threads:
            t.join()
        self.up.close()
        self.down.close()


def run_keepalive(variant, n_dest, seconds, shm_mb):
    """Workload 4: n_dest destinations pinged every second, half answering."""
    d = tempfile.mkdtemp(prefix=f"sca_rs-bench-ka-{variant}-")
    port = free_port()
    resp = Responder()
    up_port, down_port = resp.up.getsockname()[1], resp.down.getsockname()[1]
    if variant == "c":
        ka_load, ka_mod = 'loadmodule "keepalive.so"', "keepalive"
    else:
        ka_load, ka_mod = f'loadmodule "{os.path.join(TOP, "target/release/sca_rs.so")}"', "sca_rs"
    dests = "\n".join(
        f'modparam("{ka_mod}", "destination", "sip:k{i}@127.0.0.1:{up_port if i % 2 == 0 else down_port}")'
        for i in range(n_dest))
    cfg = KA_CFG.format(children=2, port=port, mpath=MODDIR, dir=d, ka_load=ka_load, ka_mod=ka_mod, dests=dests)
    try:
        k = start_kamailio(d, cfg, shm_mb, 1, f"ka {variant}")
    except RuntimeError:
        resp.close()
        raise
    try:
        time.sleep(3.0)  # warm-up: every destination pinged, transactions in steady state
        up0, down0 = resp.counts()
        cpu0 = cpu_ticks(k.pid)
        time.sleep(seconds)
        cpu1 = cpu_ticks(k.pid)
        up1, down1 = resp.counts()
        used, max_used = shm(d)
        pings = (up1 - up0) + (down1 - down0)
        hz = os.sysconf("SC_CLK_TCK")
        died = k.poll() is not None or "exited by a signal" in open(os.path.join(d, "kamailio.log")).read()
        return {
            "variant": variant, "n": n_dest, "pings": pings, "answered": up1 - up0,
            "expected": n_dest * seconds, "died": died,
            # a Kamailio that died took its processes' CPU time with it
            "cpu_us_per_ping": None if died else (cpu1 - cpu0) * 1e6 / hz / max(pings, 1),
            "max_used": max_used,
        }
    finally:
        stop_kamailio(k)
        resp.close()
        if os.environ.get("BENCH_KEEP") is None:
            shutil.rmtree(d, ignore_errors=True)


FANOUT_FLOOR_CFG = CFG_HEAD + r"""loadmodule "textops.so"
loadmodule "rr.so"
loadmodule "uac.so"
request_route {{
    if (is_method("MESSAGE")) {{
        sl_send_reply("200", "OK");
        route(FANOUT);
        exit;
    }}
    sl_send_reply("404", "Not Found");
}}
route[FANOUT] {{
{notifies}
}}
"""

FANOUT_NOTIFY = r"""    $uac_req(method) = "NOTIFY";
    $uac_req(ruri) = "sip:m{i}@127.0.0.1:{mport}";
    $uac_req(furi) = "sip:100@127.0.0.1";
    $uac_req(turi) = "sip:m{i}@127.0.0.1";
    $uac_req(callid) = "fan-{i}-" + $ci;
    $uac_req(hdrs) = "Event: call-info\r\nSubscription-State: active;expires=3600\r\nCall-Info: <sip:100@127.0.0.1>;appearance-index=1;appearance-state=seized;appearance-uri=\"<sip:A@127.0.0.1>\"\r\nContact: <sip:127.0.0.1:{kport}>\r\n";
    uac_req_send();"""


def sip_ok(text):
    """A 200 OK to the request `text` (its Via, From, To with a tag,
    Call-ID, CSeq)."""
    head = text.split("\r\n\r\n", 1)[0].split("\r\n")
    keep = [l for l in head[1:] if l.split(":", 1)[0].strip().lower() in
            ("via", "v", "from", "f", "to", "t", "call-id", "i", "cseq")]
    keep = [l + ";tag=m" if l.lower().startswith(("to:", "t:")) and ";tag=" not in l else l for l in keep]
    return ("SIP/2.0 200 OK\r\n" + "\r\n".join(keep) + "\r\nContent-Length: 0\r\n\r\n").encode("latin-1")


def run_fanout_floor(members, rounds, steps=7):
    """Workload 2's floor: no SCA module; each trigger (a MESSAGE, answered
    by sl) makes the config send `members` plain NOTIFYs through the uac
    module (tm), one per member socket, which answer 200. `steps` triggers
    per round, as the fan-out's seven state changes; CPU per NOTIFY and the
    time from a trigger to the last member's NOTIFY."""
    import selectors
    import threading
    d = tempfile.mkdtemp(prefix="sca_rs-bench-fanfloor-")
    port = free_port()
    socks = []
    for _ in range(members):
        m = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        m.bind(("127.0.0.1", 0))
        socks.append(m)
    notifies = "\n".join(FANOUT_NOTIFY.format(i=i, mport=m.getsockname()[1], kport=port) for i, m in enumerate(socks))
    cfg = FANOUT_FLOOR_CFG.format(children=4, port=port, mpath=MODDIR, dir=d, notifies=notifies)
    state = {"count": 0, "last": 0.0, "stop": False}
    lock = threading.Lock()

    def loop():
        sel = selectors.DefaultSelector()
        for m in socks:
            sel.register(m, selectors.EVENT_READ)
        while not state["stop"]:
            for key, _ in sel.select(timeout=0.1):
                data, addr = key.fileobj.recvfrom(65535)
                text = data.decode("latin-1")
                if text.startswith("NOTIFY "):
                    key.fileobj.sendto(sip_ok(text), addr)
                    with lock:
                        state["count"] += 1
                        state["last"] = time.monotonic()

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    trig = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    trig.bind(("127.0.0.1", 0))
    trig.settimeout(5)
    tport = trig.getsockname()[1]
    k = start_kamailio(d, cfg, 256, 3, "fan-out floor")

    def trigger(seq):
        c0 = state["count"]
        msg = (f"MESSAGE sip:100@127.0.0.1:{port} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{tport};branch=z9hG4bKf{seq}\r\n"
               f"From: <sip:A@127.0.0.1>;tag=a{seq}\r\nTo: <sip:100@127.0.0.1>\r\nCall-ID: fan-{seq}@bench\r\n"
               f"CSeq: 1 MESSAGE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n")
        t0 = time.monotonic()
        trig.sendto(msg.encode(), ("127.0.0.1", port))
        trig.recvfrom(65535)  # the 200
        while state["count"] - c0 < members and time.monotonic() - t0 < 5:
            time.sleep(0.0005)
        return (state["last"] - t0) * 1e3, state["count"] - c0

    try:
        trigger(0)  # warm-up
        time.sleep(0.2)
        n0, cpu0 = state["count"], cpu_ticks(k.pid)
        lats = []
        for i in range(rounds * steps):
            lat, got = trigger(i + 1)
            lats.append(lat)
        time.sleep(0.3)
        cpu = (cpu_ticks(k.pid) - cpu0) / os.sysconf("SC_CLK_TCK")
        n = state["count"] - n0
        lats.sort()
        return {"variant": "floor", "notifies": n, "cpu_us_per_notify": cpu * 1e6 / max(n, 1),
                "steps": [{"step": "trigger", "notifies": n, "median_ms": lats[len(lats) // 2],
                           "p95_ms": lats[max(int(len(lats) * 0.95 + 0.999) - 1, 0)], "max_ms": lats[-1]}]}
    finally:
        state["stop"] = True
        stop_kamailio(k)
        t.join()
        for m in socks + [trig]:
            m.close()
        if os.environ.get("BENCH_KEEP") is None:
            shutil.rmtree(d, ignore_errors=True)


def run_flow(workload, module, members, rounds, rate=0):
    """Workloads 2 and 3: tests/bench_flows.rs (the test suite's SIP UA),
    which prints one `BENCH {json}` line."""
    import json
    env = dict(os.environ, BENCH_MODULE=module, BENCH_MEMBERS=str(members), BENCH_ROUNDS=str(rounds),
               BENCH_RATE=str(rate))
    test = {2: "workload_2_fan_out", 3: "workload_3_call_flow"}[workload]
    out = subprocess.run(
        ["cargo", "test", "--quiet", "--release", "--locked", "-p", "sca_rs", "--test", "bench_flows", test,
         "--", "--ignored", "--exact", "--nocapture"],
        capture_output=True, text=True, cwd=TOP, env=env, timeout=1200)
    line = next((l for l in out.stderr.splitlines() if l.startswith("BENCH ")), None)
    if out.returncode != 0 or line is None:
        raise RuntimeError(f"workload {workload} ({module}) failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return json.loads(line[len("BENCH "):])


def run_cluster(rounds):
    """Workload 6: tests/bench_cluster.rs (one node, then two replicating
    over DMQ), which prints one `BENCH {json}` line. None when the test
    skipped (127.0.0.2 not usable here)."""
    import json
    env = dict(os.environ, BENCH_ROUNDS=str(rounds))
    out = subprocess.run(
        ["cargo", "test", "--quiet", "--release", "--locked", "-p", "sca_rs", "--test", "bench_cluster",
         "workload_6_cluster_replication", "--", "--ignored", "--exact", "--nocapture"],
        capture_output=True, text=True, cwd=TOP, env=env, timeout=1200)
    line = next((l for l in out.stderr.splitlines() if l.startswith("BENCH ")), None)
    if out.returncode == 0 and line is None:
        skip = next((l for l in out.stderr.splitlines() if l.startswith("SKIP")), None)
        if skip:
            print(f"workload 6 skipped: {skip}", file=sys.stderr)
            return None
    if out.returncode != 0 or line is None:
        raise RuntimeError(f"workload 6 failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    for l in out.stderr.splitlines():
        if l.startswith("workload 6 ("):  # log errors, lost NOTIFYs
            print(l, file=sys.stderr)
    return json.loads(line[len("BENCH "):])


def run_heal(subs, changed, interval):
    """Workload 8: tests/bench_heal.rs (two nodes, SIPp load, a partition
    with nftables), which prints one `BENCH {json}` line. None when the
    test skipped (127.0.0.2 or nftables not usable here)."""
    import json
    env = dict(os.environ, BENCH_SUBS=str(subs), BENCH_CHANGED=str(changed), BENCH_DIGEST_INTERVAL=str(interval))
    out = subprocess.run(
        ["cargo", "test", "--quiet", "--release", "--locked", "-p", "sca_rs", "--test", "bench_heal",
         "workload_8_cluster_heal", "--", "--ignored", "--exact", "--nocapture"],
        capture_output=True, text=True, cwd=TOP, env=env, timeout=3600)
    line = next((l for l in out.stderr.splitlines() if l.startswith("BENCH ")), None)
    if out.returncode == 0 and line is None:
        skip = next((l for l in out.stderr.splitlines() if l.startswith("SKIP")), None)
        if skip:
            print(f"workload 8 skipped: {skip}", file=sys.stderr)
            return None
    if out.returncode != 0 or line is None:
        raise RuntimeError(f"workload 8 failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return json.loads(line[len("BENCH "):])


def fmt_w8(r):
    h = r["heal"]
    out = [
        "## Workload 8: the cluster heals",
        "",
        f"Two nodes (127.0.0.1 and .2), `dmq_digest_interval` {r['digest_interval_s']} s; SIPp stores",
        f"{r['subs']} call-info subscriptions (one AoR each) through node 1, which",
        "replicate to node 2 (tests/bench_heal.rs). *Digest cost*: nothing changing,",
        f"over {r['idle_window_s']:.0f} s, per node and digest interval: CPU of all its processes",
        "(schedstat; this includes dmq's pings and the other timers), KDMQ bytes",
        "it sent (its digests of 16 KiB and its answers), and the time computing",
        "its last digest took (`digest_us`, a walk of the whole store).",
        "",
        "| node | CPU ms / interval | digest µs | KDMQ bytes / interval | digests sent | answered |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for n in r["idle"]:
        out.append(f"| {n['node']} | {n['cpu_ms_per_interval']:.1f} | {n['digest_us']} | "
                   f"{n['kdmq_bytes_per_interval']:.0f} | {n['digests_sent']} | {n['digests_answered']} |")
    out += [
        "",
        f"*Convergence*: the link cut (nftables, dropped on arrival), SIPp subscribes",
        f"{h['changed_aors']} of the AoRs again from a new contact through node 1, so",
        f"{h['changed_aors']} AoRs change on node 1 only ({h['node2_missing_at_heal']} subscriptions missing on",
        "node 2 when the link heals). Time from the heal until node 2 holds every",
        f"subscription: **{h['converge_ms'] / 1000:.1f} s**; node 2 received {h['records_received']} records in",
        f"digest answers ({h['records_applied']} changed it; the rest were equal AoRs sharing",
        f"a bucket with changed ones); node 1 sent {h['node1_kdmq_bytes'] / 1e6:.1f} MB of KDMQ bodies meanwhile",
        "(its lost changes, digests and answers).",
        "",
    ]
    return out


def lag_of(run, member):
    return next(l for l in run["lag"] if l["member"] == member)


def w6_lost(r):
    return sum(l["lost"] for run in (r["single"], r["cluster"]) for l in run["lag"])


def fmt_w6(r):
    def ms(v):
        return "–" if v is None else f"{v:.3f}"
    out = ["| run | nodes | CPU µs/change, all nodes | node 1 | node 2 | KDMQ msgs/change | KDMQ bytes/change "
           "| changes/s | idle CPU µs/s | lost / foreign NOTIFYs |",
           "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name in ("single", "cluster"):
        run = r[name]
        per = {n["node"]: n for n in run["per_node"]}
        n2 = f"{per[2]['cpu_us_per_change']:.1f}" if 2 in per else "–"
        msgs = "–" if run["kdmq_msgs_per_change"] is None else f"{run['kdmq_msgs_per_change']:.2f}"
        byts = "–" if run["kdmq_bytes_per_change"] is None else f"{run['kdmq_bytes_per_change']:.0f}"
        lost = sum(l["lost"] for l in run["lag"])
        out.append(f"| {name} | {run['nodes']} | {run['cpu_us_per_change']:.1f} | {per[1]['cpu_us_per_change']:.1f} | "
                   f"{n2} | {msgs} | {byts} | {run['changes_per_s']:.0f} | {run['idle_cpu_us_per_s']:.0f} | "
                   f"{lost} / {run['foreign_notifies']} |")
    out += ["", "| run | member (its node) | lag p50 ms | p90 ms | max ms | from send p50 ms | p90 ms |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    for name in ("single", "cluster"):
        for l in r[name]["lag"]:
            out.append(f"| {name} | {l['member']} (node {l['node']}) | {ms(l['p50_ms'])} | {ms(l['p90_ms'])} | "
                       f"{ms(l['max_ms'])} | {ms(l['from_send_p50_ms'])} | {ms(l['from_send_p90_ms'])} |")
    return out


def fmt_w1(rows):
    out = ["| N | shm MB | variant | ok | failed | CPU µs/op | shm B/sub | peak shm used |",
           "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        out.append(f"| {r['n']} | {r['shm_mb']} | {r['variant']} | {r['ok']} | {r['failed']} | "
                   f"{r['cpu_us_per_op']:.1f} | {r['shm_per_sub']:.1f} | {r['max_used']} |")
    return out


def ratio(a, b):
    return a / b if b else float("nan")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--workloads", type=int, nargs="+", default=[1, 2, 3, 4, 5, 6, 7, 8], choices=[1, 2, 3, 4, 5, 6, 7, 8],
                    help="1: SUBSCRIBE+NOTIFY (also at 64 MB shm); 2: fan-out; 3: call flow; 4: keepalive; 5: scale; "
                         "6: cluster replication; 7: persistence (bench/persist.py); 8: the cluster heals")
    ap.add_argument("--persist-rates", type=int, nargs="+", default=[1000, 3000, 5000],
                    help="workload 7: new subscriptions/s for the graceful-stop runs")
    ap.add_argument("--members", type=int, default=50, help="workload 2 group size")
    ap.add_argument("--fanout-rounds", type=int, default=20)
    ap.add_argument("--calls", type=int, default=1000, help="workload 3 calls")
    ap.add_argument("--call-rate", type=int, default=100, help="workload 3 calls per second")
    ap.add_argument("--n", type=int, nargs="+", default=[5000, 20000], help="workload 1 sizes")
    ap.add_argument("--rate", type=int, default=1000)
    ap.add_argument("--shm", type=int, default=256, help="shm MB")
    ap.add_argument("--small-shm", type=int, default=64, help="Kamailio's default shm MB, for the failure check")
    ap.add_argument("--scale-n", type=int, nargs="+", default=[1000, 100000], help="workload 5 sizes")
    ap.add_argument("--scale-fill", type=int, nargs=2, metavar=("AORS", "PHONES"), default=None,
                    help="workload 5 at scale: AORS x PHONES subscriptions restored from a generated sqlite DB "
                         "(e.g. 200000 5: a million) before the SUBSCRIBE load, against 1000 (200 x 5) restored")
    ap.add_argument("--scale-fill-shm", type=int, default=512, help="shm MB of the --scale-fill runs")
    ap.add_argument("--scale-fill-n", type=int, default=20000, help="SUBSCRIBEs measured on top of the fill")
    ap.add_argument("--ka-dest", type=int, default=5000)
    ap.add_argument("--ka-seconds", type=int, default=10)
    ap.add_argument("--cluster-rounds", type=int, default=300, help="workload 6 seize/release cycles")
    ap.add_argument("--out", default=os.path.join(TOP, "docs/performance.md"))
    ap.add_argument("--variants", nargs="+", default=["floor", "c", "rust"], choices=["floor", "c", "rust"],
                    help="workloads 1 and 5: which variants to run (the ratios need all three)")
    ap.add_argument("--heal-subs", type=int, default=100000, help="workload 8 stored subscriptions")
    ap.add_argument("--heal-changed", type=int, default=10000, help="workload 8 AoRs changed during the partition")
    ap.add_argument("--heal-interval", type=int, default=5, help="workload 8 dmq_digest_interval (s)")
    a = ap.parse_args()

    def w1(v, n, shm_mb, fill=None):
        r = run_variant(v, n, a.rate, shm_mb, fill)
        r["shm_mb"] = shm_mb
        print(f"{v:6} n={n:6} shm={shm_mb}MB floor_shm={r.get('shm_floor_per_op')} ok={r['ok']:6} failed={r['failed']:5} cpu={r['cpu_us_per_op']:8.1f} us/op "
              f"shm={r['shm_per_sub']:7.1f} B/sub peak={r['max_used']}", flush=True)
        return r

    results = {"w1": [], "w1_small": [], "w2": [], "w2_floor": [], "w3": [], "w4": [], "w5": [], "w5_fill": [], "w6": [],
               "w7": [], "w8": []}
    if 1 in a.workloads:
        for n in a.n:
            for v in a.variants:
                results["w1"].append(w1(v, n, a.shm))
        for v in a.variants:
            results["w1_small"].append(w1(v, max(a.n), a.small_shm))
    if 2 in a.workloads:
        for v in ("c", "rust"):
            r = run_flow(2, v, a.members, a.fanout_rounds)
            r["variant"] = v
            results["w2"].append(r)
            print(f"fan-out {v:6} notifies={r['notifies']} cpu={r['cpu_us_per_notify']:.1f} us/NOTIFY "
                  + " ".join(f"{st['step']}:{st['median_ms']:.1f}/{st.get('p95_ms', float('nan')):.1f}/{st['max_ms']:.1f}ms"
                             for st in r["steps"]), flush=True)
        r = run_fanout_floor(a.members, a.fanout_rounds)
        results["w2_floor"] = [r]
        st = r["steps"][0]
        print(f"fan-out floor  notifies={r['notifies']} cpu={r['cpu_us_per_notify']:.1f} us/NOTIFY "
              f"trigger:{st['median_ms']:.1f}/{st['p95_ms']:.1f}/{st['max_ms']:.1f}ms", flush=True)
    if 3 in a.workloads:
        for v in ("c", "rust"):
            r = run_flow(3, v, 2, a.calls, a.call_rate)
            r["variant"] = v
            results["w3"].append(r)
            print(f"calls {v:6} calls={r['rounds']} {r['calls_per_s']:.1f}/s cpu={r['cpu_us_per_call']:.1f} us/call "
                  f"({r['cpu_us_per_notify']:.1f} us/NOTIFY)", flush=True)
    if 4 in a.workloads:
        for v in ("c", "rust"):
            r = run_keepalive(v, a.ka_dest, a.ka_seconds, a.shm)
            results["w4"].append(r)
            cpu = "DIED" if r["died"] else f"{r['cpu_us_per_ping']:.1f} us/ping"
            print(f"ka {v:6} dests={r['n']} pings={r['pings']} (expected {r['expected']}, answered {r['answered']}) "
                  f"cpu={cpu} peak={r['max_used']}", flush=True)
    if 5 in a.workloads:
        for n in a.scale_n:
            for v in (v for v in ("c", "rust") if v in a.variants):
                results["w5"].append(w1(v, n, a.shm))
        if a.scale_fill:
            aors, phones = a.scale_fill
            small = (max(1000 // phones, 1), phones)
            for fill in (small, (aors, phones)):
                r = w1("rust", a.scale_fill_n, a.scale_fill_shm, fill)
                results["w5_fill"].append(r)
    if 6 in a.workloads:
        r = run_cluster(a.cluster_rounds)
        if r is not None:
            results["w6"].append(r)
            c, s = r["cluster"], r["single"]
            print(f"cluster: cpu {s['cpu_us_per_change']:.1f} us/change (1 node) vs {c['cpu_us_per_change']:.1f} "
                  f"(2 nodes, ratio {r['cpu_ratio_cluster_single']:.2f}); node 2 applies for "
                  f"{c['per_node'][1]['cpu_us_per_change']:.1f} us; {c['kdmq_msgs_per_change']:.2f} KDMQ "
                  f"({c['kdmq_bytes_per_change']:.0f} B)/change; lag p50 M1 {lag_of(c, 'M1')['p50_ms']:.3f} ms, "
                  f"M2 (node 2) {lag_of(c, 'M2')['p50_ms']:.3f} ms; lost NOTIFYs {w6_lost(r)}", flush=True)

    if 7 in a.workloads:
        import persist
        results["w7"].append(persist.run_all(a, w1))

    if 8 in a.workloads:
        r = run_heal(a.heal_subs, a.heal_changed, a.heal_interval)
        if r is not None:
            results["w8"].append(r)
            n1 = r["idle"][0]
            print(f"heal: digest {n1['digest_us']} us at {r['subs']} subscriptions, {n1['cpu_ms_per_interval']:.1f} ms "
                  f"CPU/interval on node 1; {r['heal']['changed_aors']} changed AoRs converged in "
                  f"{r['heal']['converge_ms'] / 1000:.1f} s", flush=True)

    lines = [
        "# Performance",
        "",
        "Produced by `make bench` (bench/bench.py); numbers from one run on this",
        "project's 2-core machine (SIPp, the responder and Kamailio share the",
        "two cores, so read ratios, not absolute figures). CPU is all Kamailio",
        "processes' utime+stime from /proc over the measured window; shm is",
        "`kamcmd core.shmmem` used after minus before. Nothing here is asserted",
        "by a test.",
        "",
    ]
    summary = []
    if results["w1"]:
        lines += [
            "## Workload 1: call-info SUBSCRIBE + NOTIFY",
            "",
            f"N distinct AoRs at {a.rate}/s, 4 UDP workers. CPU per successful",
            "SUBSCRIBE (with its NOTIFY transaction); shm per stored subscription",
            "(measured 7 s after the load, when tm has freed its transactions).",
            "The floor does the same SIP work (202 from sl, one NOTIFY through",
            "the uac module) with no SCA state.",
            "",
        ] + fmt_w1(results["w1"]) + ["", "| N | CPU sca_rs/C | CPU sca_rs/floor | shm sca_rs/C |", "| --- | --- | --- | --- |"]
        for n in a.n:
            by = {r["variant"]: r for r in results["w1"] if r["n"] == n}
            if "rust" not in by:
                continue
            nan = {"cpu_us_per_op": 0, "shm_per_sub": 0}
            rc = ratio(by["rust"]["cpu_us_per_op"], by.get("c", nan)["cpu_us_per_op"])
            rf = ratio(by["rust"]["cpu_us_per_op"], by.get("floor", nan)["cpu_us_per_op"])
            rs = ratio(by["rust"]["shm_per_sub"], by.get("c", nan)["shm_per_sub"])
            lines.append(f"| {n} | {rc:.2f} | {rf:.2f} | {rs:.2f} |")
            summary.append(f"workload 1, N={n}: CPU sca_rs/C {rc:.2f} (target ≤ 0.6), sca_rs/floor {rf:.2f} "
                           f"(target ≤ 1.3); {by['rust']['shm_per_sub']:.0f} B/subscription (target ≤ 200), "
                           f"failures {by['rust']['failed']}")
        lines += ["", f"### The same at {a.small_shm} MB shm (Kamailio's default)", ""] + fmt_w1(results["w1_small"]) + [""]
        for r in results["w1_small"]:
            summary.append(f"workload 1 at {a.small_shm} MB, N={r['n']}: {r['variant']} {r['failed']} failed")
    if results["w2"]:
        lines += [
            "## Workload 2: fan-out",
            "",
            f"{a.members} phones subscribed to one shared AoR; a caller of that AoR",
            "seizes index 1, INVITEs, the callee rings and answers, the caller",
            f"holds (re-INVITE sendonly) and hangs up; {a.fanout_rounds} rounds after one warm-up",
            "call (tests/bench_flows.rs). CPU per NOTIFY the members received; per",
            "state change, the time from its trigger being sent to the last",
            "member's NOTIFY (median / p95 / max over the rounds) and the NOTIFYs it caused.",
            "*floor*: no SCA module; each of as many triggers (a MESSAGE, sl's 200) makes",
            f"the config send {a.members} plain NOTIFYs through the uac module (tm), one per",
            "member socket (Python, one thread), which answers 200: the cost of the",
            "NOTIFY transactions alone; its column is trigger → last NOTIFY.",
            "",
            "| variant | NOTIFYs | CPU µs/NOTIFY | " + " | ".join(st["step"] for st in results["w2"][0]["steps"]) + " |",
            "| --- | --- | --- | " + " | ".join("---" for _ in results["w2"][0]["steps"]) + " |",
        ]

        def lat(st):
            return f"{st['median_ms']:.1f} / {st.get('p95_ms', float('nan')):.1f} / {st['max_ms']:.1f} ms ({st['notifies']})"
        for r in results["w2"]:
            lines.append(f"| {r['variant']} | {r['notifies']} | {r['cpu_us_per_notify']:.1f} | "
                         + " | ".join(lat(st) for st in r["steps"]) + " |")
        for r in results["w2_floor"]:
            lines.append(f"| floor | {r['notifies']} | {r['cpu_us_per_notify']:.1f} |"
                         + " – |" * len(results["w2"][0]["steps"]))
        by = {r["variant"]: r for r in results["w2"]}
        rn = ratio(by["rust"]["cpu_us_per_notify"], by["c"]["cpu_us_per_notify"])
        lines += ["", f"CPU per NOTIFY sca_rs/C: {rn:.2f}"]
        seize = next((st for st in by["rust"]["steps"] if st["step"] == "seize"), None)
        fl = ""
        if results["w2_floor"]:
            rf = ratio(by["rust"]["cpu_us_per_notify"], results["w2_floor"][0]["cpu_us_per_notify"])
            lines.append(f"CPU per NOTIFY sca_rs/floor: {rf:.2f} (target ≤ 1.1)")
            lines.append(f"floor trigger → last NOTIFY: {lat(results['w2_floor'][0]['steps'][0])}")
            fl = f", sca_rs/floor {rf:.2f} (target ≤ 1.1)"
        if seize:
            lines.append(f"sca_rs seize → last member's NOTIFY: p95 {seize.get('p95_ms', float('nan')):.1f} ms")
            fl += f"; seize → last NOTIFY p95 {seize.get('p95_ms', float('nan')):.1f} ms"
        lines.append("")
        summary.append(f"workload 2: CPU per NOTIFY sca_rs/C {rn:.2f}{fl}; NOTIFYs {by['rust']['notifies']} (sca_rs) vs "
                       f"{by['c']['notifies']} (C)")
    if results["w3"]:
        lines += [
            "## Workload 3: call flow",
            "",
            "Calls from an SCA member (seize, INVITE, 180, 200, ACK, BYE), one after",
            f"another at {a.call_rate} calls/s, {a.calls} calls, 2 members subscribed.",
            "",
            "| variant | calls | calls/s | CPU µs/call | NOTIFYs |",
            "| --- | --- | --- | --- | --- |",
        ]
        for r in results["w3"]:
            lines.append(f"| {r['variant']} | {r['rounds']} | {r['calls_per_s']:.1f} | {r['cpu_us_per_call']:.1f} | {r['notifies']} |")
        by = {r["variant"]: r for r in results["w3"]}
        rcall = ratio(by["rust"]["cpu_us_per_call"], by["c"]["cpu_us_per_call"])
        lines += ["", f"CPU per call sca_rs/C: {rcall:.2f}", ""]
        summary.append(f"workload 3: CPU per call sca_rs/C {rcall:.2f}")
    if results["w4"]:
        lines += [
            "## Workload 4: keepalive",
            "",
            f"{a.ka_dest} destinations (`destination` modparams), `ping_interval` 1 s,",
            "half answering 200 OK, half silent (tm `fr_timer` 2 s, `wt_timer` 1 s:",
            "with tm's default 5 s wait timer the finished transactions alone fill",
            "256 MB at this rate; Debian's keepalive.so then loses a worker to",
            "SIGSEGV and Kamailio exits, sca_rs keeps running with failed pings",
            "logged, see docs/keepalive.md); measured over",
            f"{a.ka_seconds} s after a 3 s warm-up. Pings counted by the responder",
            "(distinct Call-IDs), CPU per ping sent.",
            "",
            "| variant | destinations | pings | expected | answered | CPU µs/ping | peak shm used |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for r in results["w4"]:
            cpu = "Kamailio died (see below)" if r["died"] else f"{r['cpu_us_per_ping']:.1f}"
            lines.append(f"| {r['variant']} | {r['n']} | {r['pings']} | {r['expected']} | {r['answered']} | "
                         f"{cpu} | {r['max_used']} |")
        by = {r["variant"]: r for r in results["w4"]}
        if by["c"]["died"] or by["rust"]["died"]:
            dead = " and ".join(v for v in ("c", "rust") if by[v]["died"])
            lines += ["", f"Kamailio with {dead} died during the run (a worker killed by a signal; seen",
                      "with Debian's keepalive.so after tm ran out of shm: see docs/keepalive.md).", ""]
            summary.append(f"workload 4: Kamailio died with {dead}; pings sent {by['rust']['pings']} (sca_rs) vs "
                           f"{by['c']['pings']} (C) of {by['rust']['expected']} due")
        else:
            rk = ratio(by["rust"]["cpu_us_per_ping"], by["c"]["cpu_us_per_ping"])
            lines += ["", f"CPU per ping sca_rs/C: {rk:.2f}", ""]
            summary.append(f"workload 4: CPU per ping sca_rs/C {rk:.2f}; pings sent {by['rust']['pings']} "
                           f"(sca_rs) vs {by['c']['pings']} (C) of {by['rust']['expected']} due")
    if results["w5"]:
        lines += [
            "## Workload 5: scale",
            "",
            f"Workload 1 with {' and '.join(str(n) for n in a.scale_n)} stored subscriptions in {a.shm} MB:",
            "the cost per operation should not grow with the number stored.",
            "",
        ] + fmt_w1(results["w5"]) + [""]
        for v in ("c", "rust"):
            rs = [r for r in results["w5"] if r["variant"] == v]
            if len(rs) >= 2:
                g = ratio(rs[-1]["cpu_us_per_op"], rs[0]["cpu_us_per_op"])
                lines.append(f"- {v}: CPU per op at N={rs[-1]['n']} / at N={rs[0]['n']} = {g:.2f}; "
                             f"failures {sum(r['failed'] for r in rs)}")
                summary.append(f"workload 5, {v}: CPU per op {rs[-1]['n']}/{rs[0]['n']} = {g:.2f} (target: flat), "
                               f"failures {sum(r['failed'] for r in rs)}")
        lines.append("")
    if results.get("w5_fill"):
        fr = results["w5_fill"]
        small, big = fr[0], fr[-1]
        per_sub = ratio(big["used_after_fill"] - small["used_after_fill"], big["fill"] - small["fill"])
        g = ratio(big["cpu_us_per_op"], small["cpu_us_per_op"])
        lines += [
            f"### At scale: {big['fill']} subscriptions in {big['shm_mb']} MB",
            "",
            f"The store filled by a start-up restore from a generated sqlite DB",
            f"({a.scale_fill[0]} AoRs x {a.scale_fill[1]} phones, SIPp-like strings, sl-shaped To-tags;",
            f"against {small['fill']} restored), then {a.scale_fill_n} SIPp call-info SUBSCRIBEs",
            f"(new AoRs, {a.rate}/s) measured as in workload 1.",
            "",
            "| restored | shm MB | restore ms | shm used after the restore | ok | failed | CPU µs/op | shm B/sub (SIPp) "
            "| peak shm used |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for r in fr:
            lines.append(f"| {r['restored']} | {r['shm_mb']} | {r['restore_ms']} | {r['used_after_fill']} | {r['ok']} | "
                         f"{r['failed']} | {r['cpu_us_per_op']:.1f} | {r['shm_per_sub']:.1f} | {r['max_used']} |")
        lines += ["", f"- shm per restored subscription: {per_sub:.1f} B; CPU per SUBSCRIBE at {big['fill']} "
                      f"stored / at {small['fill']}: {g:.2f}; failures {sum(r['failed'] for r in fr)}", ""]
        summary.append(f"workload 5 at scale: {big['restored']} of {big['fill']} restored in {big['shm_mb']} MB "
                       f"({per_sub:.0f} B/sub), then {big['ok']} SUBSCRIBEs ok, {big['failed']} failed; CPU per "
                       f"SUBSCRIBE {g:.2f} x the cost at {small['fill']} stored (target ≤ 1.1)")
    if results["w6"]:
        r = results["w6"][0]
        c, s = r["cluster"], r["single"]
        m1, m2 = lag_of(c, "M1"), lag_of(c, "M2")
        n2 = next(n for n in c["per_node"] if n["node"] == 2)
        lines += [
            "## Workload 6: cluster replication",
            "",
            "One shared AoR; phones M1, M2 and A subscribe call-info, then A seizes",
            "index 1 (line-seize SUBSCRIBE, 200) and releases it (line-seize",
            f"Expires 0, 200), {r['rounds']} times after 10 warm-up cycles: {r['changes']} state",
            "changes. Each step waits until every phone has its NOTIFYs, so the lags",
            "are latencies, not queueing (tests/bench_cluster.rs). *single*: one",
            "node, dmq loaded but `enable_dmq` 0, every phone through it.",
            "*cluster*: two nodes with `enable_dmq` 1 (127.0.0.1 and .2, the",
            "test suite's cluster config); A and M1 through node 1, M2 through",
            "node 2, which learns each change over DMQ and NOTIFYs M2. CPU here is",
            "time on CPU from /proc/<pid>/task/*/schedstat (utime+stime come in",
            "10 ms ticks, too coarse for node 2's share of a few hundred changes);",
            "node 2's column is the apply side (KDMQ in, apply, NOTIFY M2, reply).",
            "KDMQ counts are `sca.cluster` tx_msgs/tx_bytes of node 1: broadcasts",
            "(dmq sends each to every peer, here one) and their bodies, without the",
            "KDMQ requests' SIP headers or the 200 replies. Lag: from A receiving its 200 to",
            "the member receiving the NOTIFY that shows the change (around 0 for a",
            "local NOTIFY, negative when the NOTIFY beats the 200); *from send*:",
            "from A sending the SUBSCRIBE. Idle CPU: all nodes, doing nothing",
            "(timers, dmq pings), for scale.",
            "",
        ] + fmt_w6(r) + [
            "",
            f"- CPU per state change, cluster (both nodes) / single node: {r['cpu_ratio_cluster_single']:.2f}",
            f"- node 2 per replicated change: {n2['cpu_us_per_change']:.1f} µs "
            f"({ratio(n2['cpu_us_per_change'], s['cpu_us_per_change']):.2f} × a change on the single node)",
            f"- KDMQ per change: {c['kdmq_msgs_per_change']:.2f} messages, {c['kdmq_bytes_per_change']:.0f} bytes",
            f"- lag node 2 / node 1 (p50 from send): {r['lag_from_send_p50_ratio_node2_node1']:.2f}; "
            f"replication adds {r['lag_p50_extra_ms_node2']:.3f} ms at p50 (from the 200)",
            "",
        ]
        summary.append(f"workload 6: CPU per change cluster/single {r['cpu_ratio_cluster_single']:.2f} "
                       f"(node 2 applies one for {n2['cpu_us_per_change']:.0f} µs), "
                       f"{c['kdmq_msgs_per_change']:.2f} KDMQ / {c['kdmq_bytes_per_change']:.0f} B per change; "
                       f"node 2's phone notified {m2['p50_ms']:.2f} ms (p50) / {m2['max_ms']:.2f} ms (max) after the "
                       f"200, node 1's {m1['p50_ms']:.2f} / {m1['max_ms']:.2f} ms; lost NOTIFYs {w6_lost(r)}")
    if results["w7"]:
        import persist
        r = results["w7"][0]
        lines += persist.fmt(r)
        for x in r["writer"]:
            summary.append(f"workload 7, writer {x['backend']}: {x['rows_per_s']:.0f} rows/s, "
                           f"{x['cpu_us_per_row']:.1f} µs CPU/row (targets: sqlite ≥ 50000 rows/s and ≤ 20 µs; "
                           f"PostgreSQL ≥ 20000 rows/s)")
        summary.append("workload 7, graceful stop: lost " + ", ".join(f"{x['lost']} at {x['rate']}/s" for x in r["graceful"])
                       + " (target 0)")
        for x in r["kill9"]:
            summary.append(f"workload 7, kill -9 at {x['rate']}/s: DB {x['db_behind_s']:.1f} s behind, lost older than "
                           f"interval+1s {x['lost_older_than_interval_plus_1s']} (target 0)")
        for x in r["restore"]:
            summary.append(f"workload 7, restore {x['backend']} {x['n']} -x {x['alloc']}: {x['restore_ms']} ms (target ≤ 10000 for 1M), "
                           f"{x['shm_used_bytes'] / 1e6:.0f} MB shm")
        if len(r["cpu"]) == 2:
            summary.append(f"workload 7, CPU per SUBSCRIBE with/without db_url: "
                           f"{ratio(r['cpu'][1]['cpu_us_per_op'], r['cpu'][0]['cpu_us_per_op']):.2f} (target ≤ 1.05)")
    if results["w8"]:
        r = results["w8"][0]
        lines += fmt_w8(r)
        summary.append(f"workload 8: digest of {r['subs']} subscriptions {r['idle'][0]['digest_us'] / 1000:.1f} ms, "
                       f"{r['idle'][0]['kdmq_bytes_per_interval'] / 1024:.0f} KiB KDMQ per interval and node; "
                       f"{r['heal']['changed_aors']} AoRs changed during a partition converged "
                       f"{r['heal']['converge_ms'] / 1000:.1f} s after the heal")
    lines += [
        "## History",
        "",
        "- The first workload-1 run had 600–690 B/subscription (1.4–1.5 × C): each",
        "  AoR's subscription list was allocated with room for four; reserving",
        "  exactly brought it to ~356 B (N=5000) / ~430 B (N=20000).",
        "- Workers now hold SIGTERM back while they hold an sca_rs lock (two",
        "  sigprocmask calls per outermost lock); workload 1 showed no measurable",
        "  change. Run-to-run noise on this 2-core machine is large: two runs on",
        "  2026-11-23 gave workload 1 CPU ratios sca_rs/C of 0.77 and 1.07 (N=5000),",
        "  0.98 and 0.78 (N=20000), workload 2 0.80 and 0.97, workload 4 0.62 and",
        "  0.47. Compare several runs before reading a trend.",
        "- Profile (2026-11-23, `perf record -a` over workload 1 at N=20000, all",
        "  three variants): sca_rs.so's own code is 0.10 % of the samples,",
        "  sca.so's 0.29 %. The hot spot of every variant is Kamailio's shm",
        "  allocator: `qm_malloc` takes about three quarters of the Kamailio",
        "  binary's user time (floor 0.49 %, C 0.68-0.80 %, sca_rs 0.76-0.82 % of all",
        "  samples). What separates the variants is shm allocation, not SCA logic,",
        "  so the fix was fewer and smaller allocations:",
        "- Store records made thin (2026-11-23): `Packed` strings and the new",
        "  `ThinVec` are one pointer each, an AoR's name is the tail of its",
        "  subscriptions' allocation, no stored hash, one-byte enums, a new AoR is",
        "  allocated with room for its first subscription. A model of workload 1",
        "  went from 356 to 224 bytes and from 3 to 2 shm allocations (each also",
        "  costs an 88-byte fragment header on Debian's debug q_malloc, which is",
        "  not in 'used' but fills the pool) per subscription; measured, ~430 to",
        "  ~242 B/subscription at N=20000, and the 64 MB run went from 178 failed",
        "  subscriptions to none (C: ~950).",
        "- The CPU target of 0.6 x C is below the floor here: in the profiled run",
        "  floor/C was 0.72 (256 MB) and 0.69 (64 MB), so no SCA implementation",
        "  inside this Kamailio could reach it on this machine. The comparable",
        "  figure is the cost above the floor: 22 us per SUBSCRIBE for sca_rs",
        "  against 47 us for C in that run (0.47 x).",
        "- Workload 3 (calls) has come out at 0.93, 1.03, 1.08 and 0.92 x C in four",
        "  runs. Profiled (perf, 2026-11-23, the 0.92 run): libsca_rs.so is 0.12 %",
        "  of the samples against sca.so's 0.08 %, tm 0.6 %, the Kamailio binary",
        "  5.3 %; no function of ours reaches 0.02 %. The spread is this",
        "  machine's noise, not our call-state code.",
        "- Cluster fields (2026-11-23): every subscription now carries a version",
        "  stamp (8 bytes) and every appearance an incarnation, a version and a",
        "  release watermark (24 bytes), used only with `enable_dmq` but present",
        "  always; workload 1 went from 230-237 to 233-241 B/subscription.",
        "- Thinner again (2026-12-07, issue 18), measured step by step with",
        "  workload 1 at N=20000 (sca_rs only): 256 B/subscription at the start.",
        "  tests/footprint.rs models the same load through a counting allocator",
        "  that rounds like q_malloc: 2.03 shm blocks per subscription, and ~20 B",
        "  less than measured (q_malloc reuses freed fragments up to ~110 B larger",
        "  without splitting them). The To-tag without sl's 33-byte prefix (the",
        "  same in every reply of this Kamailio: `<32 hex>.`; kept once in a",
        "  set-once table in shm, tags of another shape kept whole) and the AoR's",
        "  shared flag in its allocation's header (hash-table entry 24 -> 16",
        "  bytes): 207 B. Packed strings with one-byte offsets below 255 bytes:",
        "  202 B. The AoR's appearances in the same header (entry 8 bytes; at",
        "  the ~0.6 load of the per-slot tables each entry byte costs ~1.6): 193 B.",
        "",
    ]
    lines += ["## Where we stand against the targets", ""] + [f"- {l}" for l in summary] + [
        "",
        "Targets (benchmark issue): CPU per SUBSCRIBE ≤ 0.6 × C and ≤ 1.3 × floor;",
        "≤ 200 bytes of shm per stored subscription; zero failures in workloads 1",
        "and 5; flat cost per operation from 1k to 100k. Issue 18 (scale and",
        "memory): ≤ 200 B per call-info subscription (workload 1, also at 64 MB);",
        "1,000,000 subscriptions in 512 MB with 0 failures and a SUBSCRIBE cost",
        "≤ 1.1 × the cost at 1000 stored (workload 5 at scale); fan-out CPU per",
        "NOTIFY ≤ 1.1 × a plain uac NOTIFY (workload 2's floor), p95 reported.",
        "",
    ]
    json_path = os.path.join(os.path.dirname(a.out), "performance.json")
    import json
    with open(json_path, "w") as f:
        json.dump(results, f, indent=1)
    png = os.path.join(os.path.dirname(a.out), "performance.png")
    plot = subprocess.run(["/usr/bin/python3", os.path.join(TOP, "bench/plot.py"), json_path, png],
                          capture_output=True, text=True)
    if plot.returncode == 0:
        lines += ["![CPU per operation and shm per subscription against load size](performance.png)", ""]
    else:
        print(f"no plot: {plot.stderr.strip()}", file=sys.stderr)
    with open(a.out, "w") as f:
        f.write("\n".join(lines))
    print()
    for l in summary:
        print(l)
    print(f"\nwrote {a.out}")


if __name__ == "__main__":
    sys.exit(main())
