#!/usr/bin/env python3
"""Instruction counts per call-info SUBSCRIBE under valgrind's callgrind
(issues 15 and 18): a deterministic companion to workload 1's CPU time,
which varies by ±13 % between runs on this machine.

Per variant (bench.py's config: "floor", "rust-nodb", "rust" = sqlite
`db_url` with `db_update_interval` --db-interval so the writer runs inside
the window; "floor-loaded", a diagnostic: the floor with sca_rs.so loaded
and never called) Kamailio runs under `valgrind --tool=callgrind` (valgrind
follows Kamailio's forks; one output file per process, cg.<pid>.<n>):

1. warm-up: --warmup SUBSCRIBEs from AoRs of their own (sip:w<i>@...),
   then a pause past tm's wait timer (and, with `db_url`, until the writer
   has stored them);
2. a dump of every process (`vgdb dump`, which also zeroes its counters),
   an idle window of --idle s, a dump (idle cost per second, per process);
3. the measured window: --n SUBSCRIBEs (bench/subscribe.xml, AoRs
   sip:<i>@...) at --rate/s, checked to be all answered without any
   retransmission either way; a pause past tm's wait timer (and until the
   DB holds every row); a dump.

Prints Ir (instructions executed) per SUBSCRIBE per variant, raw and with
each process's idle rate over the window's duration taken off, the ratios
(also without q_malloc's own instructions: its find walks the free hash
bucket by bucket, so its cost per call depends on where free fragments
happen to lie; --mem tlsf runs Kamailio with TLSF instead, whose find is a
bitmap lookup, to see the rest of the work),
the split per process kind (SIP workers, timers, DB writer, ...), the
objects and functions where rust-nodb differs from the floor (self and
inclusive), the callers of q_malloc (pkg: called directly; shm: through
qm_shm_malloc), and what the DB writer spends per row.

    python3 bench/callgrind.py [--n 2000] [--rate 20] [--variants floor,rust-nodb,rust] [--mem tlsf]
                               [--keep DIR] [--json FILE] [--from-json FILE]

Needs target/release/sca_rs.so (make build). Figures only; one valgrind
process tree at a time.
"""

import argparse
import collections
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench as B  # noqa: E402
import persist as P  # noqa: E402

VALGRIND_OPTS = ["--tool=callgrind", "--quiet", "--trace-children=yes", "--child-silent-after-fork=no",
                 "--collect-systime=no", "--separate-threads=no"]
# --trace-children=yes: Kamailio does not exec, but only with it does a forked
# child start a gdbserver of its own (vgdb dump needs one per process)
TM_WAIT_S = 5  # tm's wt_timer default: a finished transaction is freed this long after


# ---------------------------------------------------------------- running

def wrapper(d, out):
    """A `kamailio` first in PATH that runs the real one under callgrind
    (bench.start_kamailio runs `kamailio` from PATH)."""
    bindir = os.path.join(d, "bin")
    os.makedirs(bindir, exist_ok=True)
    path = os.path.join(bindir, "kamailio")
    with open(path, "w") as f:
        f.write("#!/bin/sh\nexec valgrind " + " ".join(VALGRIND_OPTS) +
                f" --vgdb=yes --vgdb-prefix={d}/vgdb-pipe --callgrind-out-file={out}/cg.%p"
                " /usr/sbin/kamailio \"$@\"\n")
    os.chmod(path, 0o755)
    return bindir


def group_pids(pgid):
    return sorted(B.group_stats(pgid))


def psx(d):
    """pid -> Kamailio's description of the process (core.psx)."""
    out, pid = {}, None
    for line in B.kamcmd(d, "core.psx", timeout=60).splitlines():
        line = line.strip()
        if line.startswith("PID:"):
            pid = int(line[4:])
        elif line.startswith("DSC:") and pid is not None:
            out[pid] = line[4:].strip()
    return out


def kind_of(desc):
    if desc is None:
        return "other"
    if desc.startswith("udp receiver"):
        return "SIP workers"
    if "SCA DB SYNC" in desc:
        return "DB writer"
    if "timer" in desc.lower():
        return "timers"
    if "attendant" in desc:
        return "main"
    return desc.split(" - ")[0].split(" child")[0]


def dump_all(d, out, pids, hint):
    """Dump (and zero) every process; returns pid -> the new file."""
    before = set(os.listdir(out))
    for pid in pids:
        r = subprocess.run(["vgdb", f"--vgdb-prefix={d}/vgdb-pipe", f"--pid={pid}", "dump", hint],
                           capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise RuntimeError(f"vgdb dump {pid}: {r.stderr.strip()}")
    files = {}
    deadline = time.time() + 60
    while time.time() < deadline:
        new = set(os.listdir(out)) - before
        files = {}
        for f in new:
            m = re.fullmatch(r"cg\.(\d+)\.\d+", f)
            if m:
                files[int(m.group(1))] = os.path.join(out, f)
        if set(files) >= set(pids):
            break
        time.sleep(0.2)
    missing = set(pids) - set(files)
    if missing:
        raise RuntimeError(f"no dump from {sorted(missing)}")
    # wait until the files are complete (the "totals:" line ends them)
    for f in files.values():
        for _ in range(300):
            with open(f, errors="replace") as fh:
                text = fh.read()
            if "\ntotals:" in text or "\nsummary:" in text:
                break
            time.sleep(0.1)
    return files


def sipp_run(d, port, n, rate, scenario, tag):
    stf = os.path.join(d, f"stat-{tag}.csv")
    cmd = ["sipp", "-sf", scenario, "-m", str(n), "-r", str(rate), "-l", str(max(rate * 4, 100)),
           "-i", "127.0.0.1", "-p", str(B.free_port()), "-nostdin", "-timeout", str(int(n / rate) + 120),
           "-trace_stat", "-fd", "1", "-stf", stf, f"127.0.0.1:{port}"]
    t0 = time.time()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=d)
    secs = time.time() - t0
    stat = open(stf).read().splitlines()
    row = dict(zip(stat[0].split(";"), stat[-1].split(";")))
    keys = ("SuccessfulCall(C)", "FailedCall(C)", "Retransmissions(C)", "OutOfCallMsgs(C)", "DeadCallMsgs(C)",
            "UnexpectedMsg_1(C)", "UnexpectedMsg_2(C)")
    res = {k: int(row[k]) for k in keys if row.get(k, "").strip().isdigit()}
    res["seconds"] = secs
    for k, v in row.items():  # any per-message retransmission / timeout column
        if re.match(r"(Retrans|Timeout|Unexp)\w*_\d+\(C\)", k) and v.strip().isdigit():
            res[k] = int(v)
    return res


def clean(res, n):
    bad = {k: v for k, v in res.items() if k not in ("SuccessfulCall(C)", "seconds") and v}
    return res.get("SuccessfulCall(C)") == n and not bad, bad


def wait_rows(db, want, timeout=600):
    deadline = time.time() + timeout
    c = -1
    while time.time() < deadline:
        c = db.count()
        if c >= want:
            return c
        time.sleep(1.0)
    raise RuntimeError(f"DB holds {c} rows, expected {want}")


def run_variant(variant, a, keep):
    d = tempfile.mkdtemp(prefix=f"sca_rs-cg-{variant}-")
    os.chmod(d, 0o755)
    out = os.path.join(d, "cg")
    os.makedirs(out)
    port = B.free_port()
    so = os.path.join(B.TOP, "target/release/sca_rs.so")
    db = None
    if variant == "floor":
        load, params, call = "", "", B.FLOOR_CALL
    elif variant == "floor-loaded":
        # the floor's routing with sca_rs.so loaded and never called: what
        # loading the module alone does to Kamailio's own costs
        load, params, call = f'loadmodule "{so}"', "", B.FLOOR_CALL
    elif variant == "rust-nodb":
        load, params, call = f'loadmodule "{so}"', "", B.SCA_CALL
    elif variant == "rust":
        db = P.Sqlite(d)
        load, call = f'loadmodule "{so}"', B.SCA_CALL
        params = (f'modparam("sca_rs", "db_url", "{db.url()}")\n'
                  f'modparam("sca_rs", "db_update_interval", {a.db_interval})')
    else:
        raise ValueError(variant)
    cfg = B.CFG.format(children=a.children, port=port, mpath=B.MODDIR, dir=d, sca_load=load, sca_params=params,
                       sca_call=call)
    env_path = os.environ["PATH"]
    os.environ["PATH"] = wrapper(d, out) + ":" + env_path
    warm_sf = os.path.join(d, "warmup.xml")
    with open(os.path.join(B.TOP, "bench/subscribe.xml")) as f:
        # the warm-up's AoRs are not the measured ones
        open(warm_sf, "w").write(f.read().replace("sip:[call_number]@", "sip:w[call_number]@"))
    res = {"variant": variant, "n": a.n, "rate": a.rate, "warmup": a.warmup}
    t_start = time.time()
    k = None
    try:
        k = B.start_kamailio(d, cfg, a.shm, a.children - 1, variant, extra=("-x", a.mem) if a.mem else ())
        os.environ["PATH"] = env_path
        print(f"[{variant}] up in {time.time() - t_start:.0f} s", flush=True)
        procs = psx(d)
        pids = group_pids(k.pid)
        res["procs"] = {str(p): procs.get(p, "main" if p == k.pid else None) for p in pids}
        w = sipp_run(d, port, a.warmup, a.rate, warm_sf, "warmup")
        ok, bad = clean(w, a.warmup)
        print(f"[{variant}] warm-up: {w}", flush=True)
        if db:
            wait_rows(db, a.warmup)
        time.sleep(TM_WAIT_S + 4)
        dump_all(d, out, pids, "pre")
        t0 = time.time()
        time.sleep(a.idle)
        idle_files = dump_all(d, out, pids, "idle")
        t1 = time.time()
        m = sipp_run(d, port, a.n, a.rate, os.path.join(B.TOP, "bench/subscribe.xml"), "measured")
        ok, bad = clean(m, a.n)
        print(f"[{variant}] measured: {m}", flush=True)
        res["sipp"] = m
        res["sipp_clean"] = ok
        if not ok:
            print(f"[{variant}] WARNING: not clean: {bad}", flush=True)
        if db:
            res["db_rows"] = wait_rows(db, a.warmup + a.n)
        time.sleep(TM_WAIT_S + 4)
        if db:
            time.sleep(2)  # the writer's bookkeeping after its commit
        win_files = dump_all(d, out, pids, "window")
        t2 = time.time()
        res["idle_s"], res["window_s"] = t1 - t0, t2 - t1
        res["idle"] = {str(p): parse(f) for p, f in idle_files.items()}
        res["window"] = {str(p): parse(f) for p, f in win_files.items()}
    finally:
        os.environ["PATH"] = env_path
        if k is not None:
            B.stop_kamailio(k)
        if keep:
            dst = os.path.join(keep, variant)
            shutil.rmtree(dst, ignore_errors=True)
            shutil.copytree(d, dst, ignore=shutil.ignore_patterns("vgdb-pipe*", "ctl"))
        shutil.rmtree(d, ignore_errors=True)
    return res


# ---------------------------------------------------------------- parsing

NAME_RE = re.compile(r"\((\d+)\)(?: (.*))?")


def parse(path):
    """Self and inclusive Ir per (object, function), calls between functions,
    total: a callgrind out file (name compression, one event: Ir)."""
    names = {"ob": {}, "fl": {}, "fn": {}}
    space = {"ob": "ob", "cob": "ob", "fl": "fl", "fi": "fl", "fe": "fl", "cfi": "fl", "cfl": "fl", "fn": "fn",
             "cfn": "fn"}

    def name(kind, v):
        m = NAME_RE.fullmatch(v)
        if not m:
            return v
        tbl = names[space[kind]]
        if m.group(2) is not None:
            tbl[m.group(1)] = m.group(2)
        return tbl.get(m.group(1), v)

    self_ir = collections.Counter()
    incl_ir = collections.Counter()
    edges = collections.Counter()  # (caller fn, callee fn) -> inclusive Ir
    edge_calls = collections.Counter()
    ob = fn = cfn = cob = None
    in_call = False
    total = 0
    with open(path, errors="replace") as f:
        for line in f:
            if not line or line[0] == "\n" or line[0] == "#":
                continue
            c = line[0]
            if c.isdigit() or c in "+-*":
                parts = line.split()
                ir = int(parts[1]) if len(parts) > 1 else 0
                if in_call:
                    incl_ir[(ob, fn)] += ir
                    edges[(fn, cfn)] += ir
                    in_call = False
                else:
                    self_ir[(ob, fn)] += ir
                    incl_ir[(ob, fn)] += ir
                continue
            key, _, v = line.rstrip("\n").partition("=")
            if key == "ob":
                ob = name("ob", v)
            elif key == "fn":
                fn = name("fn", v)
                cob = None
            elif key == "cfn":
                cfn = name("cfn", v)
            elif key == "cob":
                cob = name("cob", v)
            elif key in ("fl", "fi", "fe", "cfi", "cfl"):
                name(key, v)
            elif key == "calls":
                in_call = True
                edge_calls[(fn, cfn)] += int(v.split()[0])
            elif line.startswith("totals:") or line.startswith("summary:"):
                total = int(line.split()[1])
    del cob
    # recursion makes inclusive figures above the total: cap them
    incl = {k: min(v, total) for k, v in incl_ir.items()}
    return {"total": total,
            "self": {f"{o}\t{n}": v for (o, n), v in self_ir.items() if v},
            "incl": {f"{o}\t{n}": v for (o, n), v in incl.items() if v},
            "edges": {f"{a}\t{b}": v for (a, b), v in edges.items() if v},
            "edge_calls": {f"{a}\t{b}": v for (a, b), v in edge_calls.items() if v}}


# ---------------------------------------------------------------- summing

def short_ob(o):
    return os.path.basename(o or "?")


def summarize(r):
    """Per-SUBSCRIBE figures of one variant's run."""
    n = r["n"]
    procs = r["procs"]
    by_kind = collections.Counter()
    by_kind_net = collections.Counter()
    total = net = 0
    self_sum, incl_sum, edges, calls, ob_sum = (collections.Counter() for _ in range(5))
    for p, w in r["window"].items():
        idle = r["idle"].get(p, {"total": 0})["total"]
        idle_part = idle / r["idle_s"] * r["window_s"] if r["idle_s"] else 0
        kind = kind_of(procs.get(p))
        by_kind[kind] += w["total"]
        by_kind_net[kind] += max(w["total"] - idle_part, 0)
        total += w["total"]
        net += max(w["total"] - idle_part, 0)
        for k, v in w["self"].items():
            self_sum[k] += v
            ob_sum[short_ob(k.split("\t")[0])] += v
        for k, v in w["incl"].items():
            incl_sum[k] += v
        edges.update(w["edges"])
        calls.update(w["edge_calls"])
    per = {
        "variant": r["variant"], "n": n,
        "ir_per_sub": total / n, "ir_per_sub_net": net / n,
        "by_kind": {k: v / n for k, v in by_kind.items()},
        "by_kind_net": {k: v / n for k, v in by_kind_net.items()},
        "by_object": {k: v / n for k, v in ob_sum.items()},
        "self": {k: v / n for k, v in self_sum.items()},
        "incl": {k: v / n for k, v in incl_sum.items()},
        "edges": {k: v / n for k, v in edges.items()},
        "edge_calls": {k: v / n for k, v in calls.items()},
        "window_s": r["window_s"], "idle_s": r["idle_s"],
        "idle_ir_per_s": sum(x["total"] for x in r["idle"].values()) / r["idle_s"],
    }
    return per


# Callers that hold the shm lock themselves and call q_malloc directly
# (shm_*_unsafe): their qm_malloc/qm_free are shm, not pkg.
SHM_UNSAFE_CALLERS = ("free_cell_helper",)


def qm_split(s):
    """q_malloc's cost per SUBSCRIBE: shm (through qm_shm_*, whose own
    cost includes what the compiler inlined into them, or from an
    shm_*_unsafe caller) and pkg (qm_* called from anywhere else), with the
    callers of each."""
    out = {"fns": {}}
    for fn in ("qm_malloc", "qm_free", "qm_realloc", "qm_mallocxz"):
        sh = pk = 0.0
        for k, v in s["edges"].items():
            a, b = k.split("\t")
            if b != fn:
                continue
            if a.startswith("qm_shm_") or a in SHM_UNSAFE_CALLERS:
                sh += v
            else:
                pk += v
        out["fns"][fn] = (sh, pk)
    shm_self = sum(v for k, v in s["self"].items() if k.split("\t")[1].startswith("qm_shm_"))
    out["shm_self"] = shm_self
    for what in ("shm", "pkg"):
        ir, calls = collections.Counter(), collections.Counter()
        for k, v in s["edges"].items():
            a, b = k.split("\t")
            if what == "shm":
                hit = b.startswith("qm_shm_") or (b.startswith("qm_") and a in SHM_UNSAFE_CALLERS)
            else:
                hit = b in ("qm_malloc", "qm_free", "qm_realloc", "qm_mallocxz") and not (
                    a.startswith("qm_shm_") or a in SHM_UNSAFE_CALLERS)
            if hit:
                ir[f"{a} -> {b}"] += v
                calls[f"{a} -> {b}"] += s["edge_calls"].get(k, 0)
        out[what] = [(k, v, calls[k]) for k, v in ir.most_common(14)]
        out[what + "_total"] = (sum(ir.values()), sum(calls.values()))
    return out


def fmt_fn(k):
    o, n = k.split("\t")
    return f"{n} [{short_ob(o)}]"


def report(sums, a):
    lines = []
    p = lines.append
    p(f"N={a.n} SUBSCRIBEs at {a.rate}/s after {a.warmup} warm-up, children={a.children}, "
      f"db_update_interval {a.db_interval} (rust), memory manager {a.mem or 'default (qm)'}")
    p("")
    p(f"{'variant':10} {'Ir/SUB':>10} {'net of idle':>12} {'window s':>9} {'idle Ir/s':>10}")
    for v, s in sums.items():
        p(f"{v:10} {s['ir_per_sub']:10.0f} {s['ir_per_sub_net']:12.0f} {s['window_s']:9.1f} {s['idle_ir_per_s']:10.0f}")
    p("")
    pairs = (("rust-nodb", "floor"), ("rust", "floor"), ("rust", "rust-nodb"), ("floor-loaded", "floor"),
             ("rust-nodb", "floor-loaded"))
    for x, y in pairs:
        if x in sums and y in sums:
            p(f"{x}/{y}: {sums[x]['ir_per_sub'] / sums[y]['ir_per_sub']:.3f} "
              f"(net of idle {sums[x]['ir_per_sub_net'] / sums[y]['ir_per_sub_net']:.3f}); "
              f"extra {sums[x]['ir_per_sub'] - sums[y]['ir_per_sub']:.0f} Ir/SUB")
    p("")
    # q_malloc's find walks its free hash bucket by bucket (no bitmap): its
    # cost per call depends on where free fragments lie, not on the work
    qm = {v: sum(x for k, x in s["self"].items() if k.split("\t")[1].startswith("qm_")) for v, s in sums.items()}
    p("Without q_malloc's own instructions (qm_*, self):")
    for v, s in sums.items():
        p(f"  {v:10} {s['ir_per_sub'] - qm[v]:10.0f} Ir/SUB (q_malloc {qm[v]:.0f})")
    for x, y in pairs:
        if x in sums and y in sums:
            p(f"  {x}/{y}: {(sums[x]['ir_per_sub'] - qm[x]) / (sums[y]['ir_per_sub'] - qm[y]):.3f}")
    p("")
    p("Per process kind, Ir/SUB (net of idle in brackets):")
    kinds = sorted({k for s in sums.values() for k in s["by_kind"]})
    p(f"{'kind':22}" + "".join(f"{v:>22}" for v in sums))
    for kd in kinds:
        p(f"{kd:22}" + "".join(f"{s['by_kind'].get(kd, 0):10.0f} ({s['by_kind_net'].get(kd, 0):8.0f}) " for s in
                                sums.values()))
    p("")
    p("Per object (self Ir/SUB):")
    obs = sorted({k for s in sums.values() for k in s["by_object"]},
                 key=lambda o: -max(s["by_object"].get(o, 0) for s in sums.values()))
    p(f"{'object':28}" + "".join(f"{v:>12}" for v in sums))
    for o in obs[:16]:
        p(f"{o[:28]:28}" + "".join(f"{s['by_object'].get(o, 0):12.0f}" for s in sums.values()))
    for x, y in (("floor", "rust-nodb"), ("rust-nodb", "rust")):
        if x not in sums or y not in sums:
            continue
        f, r = sums[x], sums[y]
        for what in ("self", "incl"):
            keys = set(f[what]) | set(r[what])
            diff = sorted(keys, key=lambda k: -abs(r[what].get(k, 0) - f[what].get(k, 0)))
            p("")
            p(f"Top functions by {what} Ir/SUB, {y} - {x} (all processes):")
            p(f"{'function':60} {x:>10} {y:>10} {'diff':>9}")
            for k in diff[:a.top]:
                p(f"{fmt_fn(k)[:60]:60} {f[what].get(k, 0):10.0f} {r[what].get(k, 0):10.0f} "
                  f"{r[what].get(k, 0) - f[what].get(k, 0):9.0f}")
        p("")
        p(f"Per object self Ir/SUB, {y} - {x}:")
        for o in sorted(set(f["by_object"]) | set(r["by_object"]),
                        key=lambda o: -abs(r["by_object"].get(o, 0) - f["by_object"].get(o, 0)))[:10]:
            p(f"  {o[:40]:40} {r['by_object'].get(o, 0) - f['by_object'].get(o, 0):10.0f}")
    for v in ("floor", "rust-nodb"):
        if v in sums:
            p("")
            p(f"Top self Ir/SUB in {v}:")
            for k, val in sorted(sums[v]["self"].items(), key=lambda kv: -kv[1])[:a.top]:
                p(f"  {fmt_fn(k)[:70]:70} {val:9.0f}")
    for v, s in sums.items():
        q = qm_split(s)
        p("")
        p(f"q_malloc in {v}: shm {q['shm_total'][0]:.0f} Ir/SUB in {q['shm_total'][1]:.1f} calls, "
          f"pkg {q['pkg_total'][0]:.0f} Ir/SUB in {q['pkg_total'][1]:.1f} calls (inclusive)")
        for what in ("shm", "pkg"):
            p(f"  {what} by caller (inclusive Ir/SUB, calls/SUB, Ir/call):")
            for k, ir, c in q[what]:
                p(f"    {k[:64]:64} {ir:8.0f} {c:6.2f} {ir / max(c, 1e-9):8.0f}")
    if "rust" in sums:
        s = sums["rust"]
        rows = a.n
        p("")
        w_self = collections.Counter()
        for k, v in s.get("writer_self", {}).items():
            w_self[k] += v
        tot = sum(w_self.values())
        p(f"DB writer: {s['by_kind'].get('DB writer', 0) * a.n / rows:.0f} Ir per row written "
          f"(net of idle {s['by_kind_net'].get('DB writer', 0) * a.n / rows:.0f}); by object:")
        by_ob = collections.Counter()
        for k, v in w_self.items():
            by_ob[short_ob(k.split("\t")[0])] += v
        for o, v in by_ob.most_common(10):
            p(f"  {o:40} {v / rows:9.0f} ({v / max(tot, 1) * 100:4.1f} %)")
        p("  top functions (self Ir/row):")
        for k, v in w_self.most_common(a.top):
            p(f"    {fmt_fn(k)[:70]:70} {v / rows:9.0f}")
        w_incl = s.get("writer_incl", {})
        p("  top functions (inclusive Ir/row):")
        for k, v in sorted(w_incl.items(), key=lambda kv: -kv[1])[:a.top]:
            p(f"    {fmt_fn(k)[:70]:70} {v / rows:9.0f}")
    return lines


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--rate", type=int, default=20, help="SUBSCRIBEs/s (20 is clean under callgrind here)")
    ap.add_argument("--idle", type=float, default=10.0, help="idle window, s")
    ap.add_argument("--children", type=int, default=4)
    ap.add_argument("--shm", type=int, default=256)
    ap.add_argument("--db-interval", type=int, default=5)
    ap.add_argument("--mem", help="Kamailio's memory manager (-x), e.g. tlsf; default: Kamailio's (q_malloc)")
    ap.add_argument("--variants", default="floor,rust-nodb,rust")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--keep", help="copy each run's directory (callgrind files, logs) here")
    ap.add_argument("--json", help="write the per-SUBSCRIBE figures here")
    ap.add_argument("--from-json", help="report on a --json of an earlier run instead of running")
    a = ap.parse_args()
    if a.from_json:
        saved = json.load(open(a.from_json))
        sums = saved["variants"] if "variants" in saved else saved
        for k, v in saved.get("args", {}).items():
            setattr(a, k, v)
    else:
        if not os.path.exists(os.path.join(B.TOP, "target/release/sca_rs.so")):
            sys.exit("no target/release/sca_rs.so: make build")
        if a.keep:
            os.makedirs(a.keep, exist_ok=True)
        sums = {}
        for v in a.variants.split(","):
            r = run_variant(v, a, a.keep)
            s = summarize(r)
            s["sipp"], s["sipp_clean"], s["db_rows"] = r["sipp"], r["sipp_clean"], r.get("db_rows")
            s["procs"] = r["procs"]
            writer = [p for p, dsc in r["procs"].items() if kind_of(dsc) == "DB writer"]
            if writer:
                s["writer_self"] = r["window"][writer[0]]["self"]
                s["writer_incl"] = r["window"][writer[0]]["incl"]
            sums[v] = s
            print(f"[{v}] {s['ir_per_sub']:.0f} Ir/SUBSCRIBE ({s['ir_per_sub_net']:.0f} net of idle)", flush=True)
        if a.json:
            with open(a.json, "w") as f:
                json.dump({"args": {k: getattr(a, k) for k in ("n", "warmup", "rate", "children", "db_interval", "mem")},
                           "variants": sums}, f)
    print()
    print("\n".join(report(sums, a)))


if __name__ == "__main__":
    sys.exit(main())
