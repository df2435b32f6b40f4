"""Workload 7 of bench/bench.py: persistence (issues 15 and 20).

- writer: 20000 new subscriptions (SIPp, 2000/s) while the DB writer is
  stopped (SIGSTOP), then one batch: rows/s from the writer's own log line
  ("N rows ... committed in T ms"), CPU per row from the writer's
  /proc/<pid>/schedstat (time on CPU, ns) over the batch; sqlite,
  PostgreSQL and MariaDB.
- graceful stop: SIPp at 1000, 3000 and 5000 new subscriptions/s, SIGTERM
  after 3 s (db_update_interval 5): rows in the DB against the
  subscriptions in memory just before the stop (and SIPp's successes).
- kill -9 under 2000/s (db_update_interval 1): how far behind the DB was,
  from `sca.subscription_count` sampled every 100 ms.
- restore: N rows written straight into the table, Kamailio started on it:
  the restore's time (its log line) and the shm it took (core.shmmem used
  against an empty start); 100k and 1M rows, sqlite and PostgreSQL.
- CPU per SUBSCRIBE with `db_url` against the same config without it
  (workload 1's run_variant, "rust" and "rust-nodb").

Figures only: nothing is asserted.
"""

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time

import bench as B

SCHEMA = "/usr/share/kamailio"
WRITER_RE = re.compile(r"SCA DB writer: (\d+) rows and (\d+) deletes committed in (\d+) ms")
RESTORE_RE = re.compile(r"restored (\d+) SCA subscriptions from \S+ \((\d+) rows skipped: [^;]*; (\d+) pages\) in (\d+) ms "
                        r"\(DB read (\d+) ms, store (\d+) ms; read by ([^)]*)\)")


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


class Sqlite:
    name = "sqlite"
    load = ""

    def __init__(self, d):
        self.path = os.path.join(d, "sca.sqlite")
        for f in ("standard", "sca"):
            with open(f"{SCHEMA}/db_sqlite/{f}-create.sql") as sql:
                subprocess.run(["sqlite3", self.path], stdin=sql, check=True)

    def url(self):
        return f"sqlite:///{self.path}"

    def sql(self, q):
        return run(["sqlite3", "-cmd", ".timeout 10000", self.path, q]).stdout

    def fill(self, n):
        self.sql(f"WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {n}) "
                 "INSERT INTO sca_subscriptions (subscriber, aor, event, expires, state, app_idx, call_id, from_tag, "
                 "to_tag, record_route, notify_cseq, subscribe_cseq, server_id) SELECT 'sip:'||i||'@10.'||(i/65536)||'.'"
                 "||((i/256)%256)||'.'||(i%256)||':5060', 'sip:'||i||'@127.0.0.1', 1, "
                 "CAST(strftime('%s','now') AS INTEGER) + 3600, 0, 0, 'cid-'||i, 'ft', 'tt', '', 1, 1, 0 FROM s;")

    def count(self):
        return int(self.sql("SELECT count(*) FROM sca_subscriptions;").strip() or 0)

    def close(self):
        pass


class Postgres:
    name = "postgresql"
    load = 'loadmodule "db_postgres.so"'

    def __init__(self, d):
        self.dir = os.path.join(d, "pg")
        os.makedirs(self.dir)
        shutil.chown(self.dir, "postgres", "postgres")
        bins = sorted(p for p in os.listdir("/usr/lib/postgresql"))
        self.bin = f"/usr/lib/postgresql/{bins[-1]}/bin"
        self.port = B.free_port()
        data = os.path.join(self.dir, "data")
        self.as_pg([f"{self.bin}/initdb", "-D", data, "-A", "trust", "-U", "postgres"])
        # fsync on: the figures are for a DB that keeps what it commits
        self.as_pg([f"{self.bin}/pg_ctl", "-D", data, "-l", os.path.join(self.dir, "pg.log"), "-o",
                    f"-k {self.dir} -c listen_addresses=127.0.0.1 -p {self.port}", "-w", "start"])
        self.psql("CREATE DATABASE kamailio;", db="postgres")
        for f in ("standard", "sca"):
            self.as_pg(["psql", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", str(self.port), "-U",
                        "postgres", "-d", "kamailio", "-f", f"{SCHEMA}/postgres/{f}-create.sql"])

    def as_pg(self, args):
        return run(["runuser", "-u", "postgres", "--", *args])

    def psql(self, q, db="kamailio"):
        return self.as_pg(["psql", "-q", "-A", "-t", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
                           "-d", db, "-c", q]).stdout

    def url(self):
        return f"postgres://postgres@127.0.0.1:{self.port}/kamailio"

    def fill(self, n):
        self.psql("INSERT INTO sca_subscriptions (subscriber, aor, event, expires, state, app_idx, call_id, from_tag, "
                  "to_tag, record_route, notify_cseq, subscribe_cseq, server_id) SELECT 'sip:'||i||'@10.'||(i/65536)"
                  "||'.'||((i/256)%256)||'.'||(i%256)||':5060', 'sip:'||i||'@127.0.0.1', 1, "
                  f"CAST(extract(epoch FROM now()) AS INTEGER) + 3600, 0, 0, 'cid-'||i, 'ft', 'tt', '', 1, 1, 0 "
                  f"FROM generate_series(1, {n}) AS i;")
        # a restart meets a DB at rest, not one still writing out and
        # analysing a bulk load in the background (autovacuum): settle it
        self.psql("VACUUM ANALYZE sca_subscriptions;")
        self.psql("CHECKPOINT;")

    def count(self):
        return int(self.psql("SELECT count(*) FROM sca_subscriptions;").strip() or 0)

    def close(self):
        subprocess.run(["runuser", "-u", "postgres", "--", f"{self.bin}/pg_ctl", "-D",
                        os.path.join(self.dir, "data"), "-m", "immediate", "stop"], capture_output=True)


class MariaDb:
    name = "mariadb"
    load = 'loadmodule "db_mysql.so"'

    def __init__(self, d):
        self.dir = os.path.join(d, "mariadb")
        os.makedirs(os.path.join(self.dir, "data"))
        os.makedirs(os.path.join(self.dir, "tmp"))
        run(["chown", "-R", "mysql:mysql", self.dir])
        run(["mariadb-install-db", "--no-defaults", "--user=mysql", f"--datadir={self.dir}/data", "--skip-test-db",
             f"--tmpdir={self.dir}/tmp", "--auth-root-authentication-method=normal"])
        self.port = B.free_port()
        log = open(os.path.join(self.dir, "mariadb.log"), "w")
        # durable commits (innodb_flush_log_at_trx_commit=1, the default)
        self.p = subprocess.Popen(["/usr/sbin/mariadbd", "--no-defaults", "--user=mysql", f"--datadir={self.dir}/data",
                                   f"--socket={self.dir}/sock", f"--tmpdir={self.dir}/tmp", "--bind-address=127.0.0.1",
                                   f"--port={self.port}", "--skip-grant-tables", "--skip-name-resolve"],
                                  stdout=log, stderr=log)
        for _ in range(600):
            if subprocess.run(self.cli("SELECT 1;"), capture_output=True).returncode == 0:
                break
            time.sleep(0.1)
        run(self.cli("CREATE DATABASE kamailio;"))
        for f in ("standard", "sca"):
            with open(f"{SCHEMA}/mysql/{f}-create.sql") as sql:
                subprocess.run(self.cli(None, "kamailio"), stdin=sql, check=True, capture_output=True)

    def cli(self, q, db=None):
        c = ["mariadb", "--no-defaults", "-h", "127.0.0.1", "-P", str(self.port), "-u", "root", "-N", "-B"]
        if q is not None:
            c += ["-e", q]
        if db:
            c.append(db)
        return c

    def url(self):
        return f"mysql://root@127.0.0.1:{self.port}/kamailio"

    def count(self):
        return int(run(self.cli("SELECT count(*) FROM sca_subscriptions;", "kamailio")).stdout.strip() or 0)

    def close(self):
        self.p.kill()
        self.p.wait()


def kamailio_with(d, db, shm_mb, interval, pkg_mb=16, children=4, extra=()):
    so = os.path.join(B.TOP, "target/release/sca_rs.so")
    load = f'{db.load}\nloadmodule "{so}"'
    params = (f'modparam("sca_rs", "db_url", "{db.url()}")\n'
              f'modparam("sca_rs", "db_update_interval", {interval})')
    port = B.free_port()
    cfg = B.CFG.format(children=children, port=port, mpath=B.MODDIR, dir=d, sca_load=load, sca_params=params,
                       sca_call=B.SCA_CALL)
    k = B.start_kamailio(d, cfg, shm_mb, children - 1, "persist", pkg_mb=pkg_mb, extra=extra)
    return k, port


def log_of(d):
    with open(os.path.join(d, "kamailio.log"), errors="replace") as f:
        return f.read()


def writer_pid(d):
    pid = None
    for line in B.kamcmd(d, "core.psx").splitlines():
        line = line.strip()
        if line.startswith("PID:"):
            pid = int(line[4:])
        if "SCA DB SYNC PROCESS" in line:
            return pid
    raise RuntimeError("no SCA DB writer process")


def cpu_ns(pid):
    total = 0
    for t in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{t}/schedstat") as f:
            total += int(f.read().split()[0])
    return total


def sipp(d, port, n, rate, wait=True):
    cmd = ["sipp", "-sf", os.path.join(B.TOP, "bench/subscribe.xml"), "-m", str(n), "-r", str(rate),
           "-l", str(max(rate * 4, 100)), "-i", "127.0.0.1", "-p", str(B.free_port()), "-nostdin",
           "-timeout", str(int(n / rate) + 30), "-trace_stat", "-fd", "1", "-stf", os.path.join(d, "stat.csv"),
           f"127.0.0.1:{port}"]
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=d)
    if wait:
        p.wait()
    return p


def sipp_ok(d):
    try:
        stat = open(os.path.join(d, "stat.csv")).read().splitlines()
        row = dict(zip(stat[0].split(";"), stat[-1].split(";")))
        return int(row.get("SuccessfulCall(C)", 0)), int(row.get("FailedCall(C)", 0))
    except (OSError, IndexError, ValueError):
        return 0, 0


def with_db(kind, f):
    d = tempfile.mkdtemp(prefix=f"sca_rs-bench-persist-{kind.name}-")
    os.chmod(d, 0o755)
    db = None
    try:
        db = kind(d)
        return f(d, db)
    finally:
        if db is not None:
            db.close()
        if os.environ.get("BENCH_KEEP") is None:
            shutil.rmtree(d, ignore_errors=True)


def writer_throughput(kind, n=20000, rate=2000):
    def go(d, db):
        k, port = kamailio_with(d, db, 512, 1)
        try:
            w = writer_pid(d)
            os.kill(w, signal.SIGSTOP)
            sipp(d, port, n, rate)
            ok, failed = sipp_ok(d)
            c0 = cpu_ns(w)
            os.kill(w, signal.SIGCONT)
            m = None
            for _ in range(1200):
                m = WRITER_RE.search(log_of(d))
                if m:
                    break
                time.sleep(0.05)
            c1 = cpu_ns(w)
            rows = int(m.group(1)) if m else 0
            ms = int(m.group(3)) if m else 0
            return {"backend": db.name, "subscribed": ok, "failed": failed, "rows": rows, "batch_ms": ms,
                    "rows_per_s": rows / (ms / 1000) if ms else 0.0,
                    "cpu_us_per_row": (c1 - c0) / 1000 / rows if rows else 0.0, "db_rows": db.count()}
        finally:
            B.stop_kamailio(k)
    return with_db(kind, go)


def graceful_stop(rate, seconds=3):
    def go(d, db):
        k, port = kamailio_with(d, db, 512, 5)
        p = sipp(d, port, rate * (seconds + 10), rate, wait=False)
        time.sleep(seconds)
        before = int(B.kamcmd(d, "sca.subscription_count", "call-info").split()[0] or 0)
        t = time.time()
        B.stop_kamailio(k)
        stop_s = time.time() - t
        time.sleep(1.5)  # SIPp's last stats line (written every second)
        p.kill()
        p.wait()
        ok, failed = sipp_ok(d)
        rows = db.count()
        return {"rate": rate, "in_memory_before_stop": before, "sipp_ok": ok, "db_rows": rows, "stop_s": stop_s,
                "lost": max(0, max(before, ok) - rows), "flushed": "flushed to the DB at shutdown" in log_of(d)}
    return with_db(Sqlite, go)


def kill9(rate=2000, seconds=5, interval=1):
    def go(d, db):
        k, port = kamailio_with(d, db, 512, interval)
        p = sipp(d, port, rate * (seconds + 10), rate, wait=False)
        samples = []
        t_end = time.time() + seconds
        while time.time() < t_end:
            out = B.kamcmd(d, "sca.subscription_count", "call-info").split()
            if out:
                samples.append((time.time(), int(out[0])))
            time.sleep(0.1)
        t_kill = time.time()
        os.killpg(k.pid, signal.SIGKILL)
        k.wait()
        p.kill()
        p.wait()
        rows = db.count()
        # the DB holds what existed at some moment: the latest sample not above it
        behind = [t_kill - t for t, c in samples if c <= rows]
        age = min(behind) if behind else float("inf")
        older = [c for t, c in samples if t <= t_kill - interval - 1.0]
        lost_old = max(0, (older[-1] if older else 0) - rows)
        return {"rate": rate, "interval": interval, "in_memory_at_kill": samples[-1][1] if samples else 0,
                "db_rows": rows, "db_behind_s": age, "lost_older_than_interval_plus_1s": lost_old}
    return with_db(Sqlite, go)


def restore(kind, n, shm_mb, allocators=("qm", "tlsf")):
    """One table of `n` rows, restored once per Kamailio memory manager
    (`-x`; q_malloc is Kamailio's default)."""
    def go(d, db):
        base = {}
        for alloc in allocators:
            k, _ = kamailio_with(d, db, shm_mb, 5, pkg_mb=8, extra=("-x", alloc))
            base[alloc], _ = B.shm(d)
            B.stop_kamailio(k)
        t = time.time()
        db.fill(n)
        fill_s = time.time() - t
        out = []
        for alloc in allocators:
            os.rename(os.path.join(d, "kamailio.log"), os.path.join(d, f"kamailio-before-{alloc}.log"))
            t = time.time()
            k, _ = kamailio_with(d, db, shm_mb, 5, pkg_mb=8, extra=("-x", alloc))
            start_s = time.time() - t
            try:
                used, _ = B.shm(d)
                m = RESTORE_RE.search(log_of(d))
                count = int((B.kamcmd(d, "sca.subscription_count", "call-info").split() or ["0"])[0])
                out.append({"backend": db.name, "n": n, "alloc": alloc, "restored": count,
                            "restore_ms": int(m.group(4)) if m else None, "read_ms": int(m.group(5)) if m else None,
                            "store_ms": int(m.group(6)) if m else None, "pages": int(m.group(3)) if m else None,
                            "via": m.group(7) if m else None,
                            "start_s": start_s, "fill_s": fill_s, "shm_mb_total": shm_mb,
                            "shm_used_bytes": used - base[alloc],
                            "shm_per_sub": (used - base[alloc]) / max(count, 1)})
            finally:
                B.stop_kamailio(k)
        return out
    return with_db(kind, go)


def run_all(a, w1):
    """All of workload 7; prints as it goes; returns the results."""
    r = {"writer": [], "graceful": [], "kill9": [], "restore": [], "cpu": []}
    for kind in (Sqlite, Postgres, MariaDb):
        x = writer_throughput(kind)
        r["writer"].append(x)
        print(f"writer {x['backend']:10} rows={x['rows']} in {x['batch_ms']} ms: {x['rows_per_s']:.0f} rows/s, "
              f"{x['cpu_us_per_row']:.1f} us CPU/row (DB rows {x['db_rows']}, SIPp ok {x['subscribed']})", flush=True)
    for rate in a.persist_rates:
        x = graceful_stop(rate)
        r["graceful"].append(x)
        print(f"graceful stop at {rate}/s: {x['in_memory_before_stop']} in memory before, SIPp ok {x['sipp_ok']}, "
              f"DB rows {x['db_rows']}, lost {x['lost']} (stop took {x['stop_s']:.1f} s)", flush=True)
    x = kill9()
    r["kill9"].append(x)
    print(f"kill -9 at {x['rate']}/s: {x['in_memory_at_kill']} in memory, DB rows {x['db_rows']}, DB "
          f"{x['db_behind_s']:.1f} s behind; lost older than interval+1s: {x['lost_older_than_interval_plus_1s']}",
          flush=True)
    for kind in (Sqlite, Postgres):
        for n, shm_mb in ((100_000, 64), (1_000_000, 1024)):
            for x in restore(kind, n, shm_mb):
                r["restore"].append(x)
                print(f"restore {x['backend']:10} n={n} -x {x['alloc']}: {x['restored']} restored in {x['restore_ms']} ms "
                      f"(DB read {x['read_ms']} ms, store {x['store_ms']} ms, {x['pages']} pages, by {x['via']}), start "
                      f"{x['start_s']:.1f} s, shm {x['shm_used_bytes'] / 1e6:.1f} MB ({x['shm_per_sub']:.0f} B/sub, "
                      f"-m {shm_mb})", flush=True)
    for v in ("rust-nodb", "rust-db5"):
        r["cpu"].append(w1(v, 20000, 256))
    return r


def fmt(r):
    lines = ["## Workload 7: persistence", "",
             "The DB writer's batch of 20000 new subscriptions (SIPp at 2000/s with",
             "the writer stopped, then let go): rows/s from its own log line, CPU",
             "from its /proc schedstat over the batch.", "",
             "| backend | rows | batch ms | rows/s | CPU µs/row |", "| --- | --- | --- | --- | --- |"]
    for x in r["writer"]:
        lines.append(f"| {x['backend']} | {x['rows']} | {x['batch_ms']} | {x['rows_per_s']:.0f} | "
                     f"{x['cpu_us_per_row']:.1f} |")
    lines += ["", "Graceful stop (SIGTERM) 3 s into a sustained burst, sqlite, `db_update_interval` 5:", "",
              "| rate/s | in memory before the stop | SIPp ok | DB rows | lost |", "| --- | --- | --- | --- | --- |"]
    for x in r["graceful"]:
        lines.append(f"| {x['rate']} | {x['in_memory_before_stop']} | {x['sipp_ok']} | {x['db_rows']} | {x['lost']} |")
    for x in r["kill9"]:
        lines += ["", f"kill -9 5 s into {x['rate']}/s, `db_update_interval` {x['interval']}: "
                      f"{x['in_memory_at_kill']} in memory, {x['db_rows']} rows, the DB {x['db_behind_s']:.1f} s behind; "
                      f"lost of those older than interval + 1 s: {x['lost_older_than_interval_plus_1s']}."]
    lines += ["", "Restore at start-up (before the workers fork; `-M 8`), with Kamailio's default memory",
              "manager (`-x qm`) and with TLSF (`-x tlsf`); read: waiting for the DB and its library",
              "(the query, the rows), store: parsing and storing into shared memory:", "",
              "| backend | rows | -x | restored | restore ms | read ms | store ms | read by | shm used | B/sub |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for x in r["restore"]:
        lines.append(f"| {x['backend']} | {x['n']} | {x['alloc']} | {x['restored']} | {x['restore_ms']} | "
                     f"{x['read_ms']} | {x['store_ms']} | {x['via']} | {x['shm_used_bytes'] / 1e6:.1f} MB (-m {x['shm_mb_total']}) | "
                     f"{x['shm_per_sub']:.0f} |")
    if len(r["cpu"]) == 2:
        nodb, db = r["cpu"]
        lines += ["", f"CPU per SUBSCRIBE (workload 1, N=20000): {db['cpu_us_per_op']:.1f} µs with `db_url` "
                      f"(sqlite, `db_update_interval` 5, the writer's share included), {nodb['cpu_us_per_op']:.1f} µs without: "
                      f"ratio {B.ratio(db['cpu_us_per_op'], nodb['cpu_us_per_op']):.2f}."]
    return lines + [""]
