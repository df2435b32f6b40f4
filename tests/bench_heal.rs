//! Benchmark workload 8, the cluster heals (run by `make bench` through
//! bench/bench.py, never by `make test`: #[ignore]d, and it asserts only
//! that the flow itself worked).
//!
//! Two nodes (127.0.0.1 and .2, the test suite's cluster config,
//! `dmq_digest_interval` BENCH_DIGEST_INTERVAL, default 5 s, 256 MB shm
//! each). SIPp stores BENCH_SUBS (default 100 000) call-info subscriptions,
//! one AoR each, through node 1; they replicate to node 2.
//!
//! * **Digest cost.** With nothing changing, over BENCH_IDLE_INTERVALS
//!   (default 6) digest intervals: each node's CPU time (all its
//!   processes, /proc schedstat), the digests it sent and answered, the
//!   KDMQ bytes it sent (`sca.cluster` tx_bytes: its digests and its
//!   answers), and `digest_us`, the time computing its last digest took.
//! * **Convergence.** The link is cut (nftables, packets dropped on
//!   arrival); SIPp subscribes BENCH_CHANGED (default 10 000) of the AoRs
//!   again from a new contact through node 1, so that many AoRs change on
//!   node 1 only (the changes sent to node 2 are lost). The link heals;
//!   the time until node 2 holds every subscription node 1 holds
//!   (`sca.subscription_count`), and what the exchange moved.
//!
//! Output: one line `BENCH {json}` on stderr.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use common::cluster::{cluster_stat, default_specs, Cluster};
use common::kamailio::Kamailio;
use common::partition::Partition;

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Nanoseconds on CPU of every process in group `pgid`.
fn cpu_ns(pgid: u32) -> u64 {
    let mut ns = 0;
    for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let f: Vec<&str> = stat[close + 2..].split(' ').collect();
        if f.get(2).and_then(|g| g.parse::<u32>().ok()) != Some(pgid) {
            continue;
        }
        let Ok(tasks) = std::fs::read_dir(e.path().join("task")) else {
            continue;
        };
        for t in tasks.flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("schedstat")) {
                ns += s
                    .split(' ')
                    .next()
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
    }
    ns
}

fn count(k: &Kamailio) -> u64 {
    let out = k.rpc(&["sca.subscription_count", "call-info"]);
    out.split_whitespace()
        .find_map(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("sca.subscription_count: {out:?}"))
}

/// Run SIPp's call-info SUBSCRIBE scenario (bench/subscribe.xml): `n`
/// AoRs `sip:<1..n>@127.0.0.1` at `rate`/s against `target`. Returns the
/// successful calls.
fn sipp(target: SocketAddr, n: u64, rate: u64, dir: &Path) -> u64 {
    let top = env!("CARGO_MANIFEST_DIR");
    let stat = dir.join("stat.csv");
    let _ = std::fs::remove_file(&stat);
    let out = Command::new("sipp")
        .args(["-sf", &format!("{top}/bench/subscribe.xml")])
        .args([
            "-m",
            &n.to_string(),
            "-r",
            &rate.to_string(),
            "-l",
            &(rate * 4).to_string(),
        ])
        .args([
            "-i",
            "127.0.0.1",
            "-p",
            &free_udp_port().to_string(),
            "-nostdin",
        ])
        .args([
            "-timeout",
            &(n / rate + 120).to_string(),
            "-trace_stat",
            "-stf",
        ])
        .arg(&stat)
        .arg(target.to_string())
        .current_dir(dir)
        .output()
        .expect("run sipp");
    let text = std::fs::read_to_string(&stat).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let (Some(head), Some(last)) = (lines.first(), lines.last()) else {
        panic!(
            "sipp wrote no statistics: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let head: Vec<&str> = head.split(';').collect();
    let last: Vec<&str> = last.split(';').collect();
    head.iter()
        .position(|h| *h == "SuccessfulCall(C)")
        .and_then(|i| last.get(i))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn wait_count(k: &Kamailio, want: u64, within: Duration, what: &str) -> Duration {
    let start = Instant::now();
    loop {
        let n = count(k);
        if n >= want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "{what}: {n} of {want} subscriptions after {within:?}"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

#[test]
#[ignore = "benchmark: run by make bench (bench/bench.py)"]
fn workload_8_cluster_heal() {
    let subs = env_num("BENCH_SUBS", 100_000);
    let changed = env_num("BENCH_CHANGED", 10_000);
    let interval = env_num("BENCH_DIGEST_INTERVAL", 5);
    let idle_intervals = env_num("BENCH_IDLE_INTERVALS", 6);
    let rate = env_num("BENCH_RATE", 1000);
    let mut specs = default_specs(2);
    for s in specs.iter_mut() {
        s.extra_modparams = format!(
            "modparam(\"sca_rs\", \"dmq_digest_interval\", {interval})\n\
             modparam(\"sca_rs\", \"call_info_max_expires\", 3600)\n"
        );
        s.extra_args = vec!["-m".into(), "256".into()];
    }
    let Some(c) = Cluster::start("workload_8_cluster_heal", specs) else {
        return;
    };
    let part = match Partition::new("bench_heal", c.port.port) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("SKIP: workload_8_cluster_heal: nftables is not usable here ({e})");
            return;
        }
    };
    c.wait_mesh(Duration::from_secs(20));
    let dir = tempfile_dir();
    let (k1, k2) = (c.node(1), c.node(2));
    let pg = |k: &Kamailio| k.pid().expect("kamailio pid");

    // load
    let t = Instant::now();
    let ok = sipp(c.addr(1), subs, rate, &dir);
    assert!(ok >= subs * 99 / 100, "sipp stored {ok} of {subs}");
    let loaded = count(k1);
    wait_count(
        k2,
        loaded,
        Duration::from_secs(300),
        "node 2 replicates the load",
    );
    let load_s = t.elapsed().as_secs_f64();

    // idle: the digest exchange only
    // two digest rounds after the load (its transactions have ended)
    let d0 = cluster_stat(k1, "digests_sent");
    let t = Instant::now();
    while cluster_stat(k1, "digests_sent") < d0 + 2 {
        assert!(
            t.elapsed() < Duration::from_secs(interval * 10),
            "node 1 sends digests"
        );
        thread::sleep(Duration::from_millis(200));
    }
    let c0 = (cpu_ns(pg(k1)), cpu_ns(pg(k2)));
    let s0: Vec<(u64, u64, u64)> = [k1, k2]
        .iter()
        .map(|k| {
            (
                cluster_stat(k, "digests_sent"),
                cluster_stat(k, "digests_answered"),
                cluster_stat(k, "tx_bytes"),
            )
        })
        .collect();
    let w = Instant::now();
    thread::sleep(Duration::from_secs(interval * idle_intervals)); // a measuring window, not a wait for an event
    let secs = w.elapsed().as_secs_f64();
    let c1 = (cpu_ns(pg(k1)), cpu_ns(pg(k2)));
    let intervals = secs / interval as f64;
    let mut idle = Vec::new();
    for (i, k) in [k1, k2].iter().enumerate() {
        let sent = cluster_stat(k, "digests_sent") - s0[i].0;
        let answered = cluster_stat(k, "digests_answered") - s0[i].1;
        let bytes = cluster_stat(k, "tx_bytes") - s0[i].2;
        let cpu = if i == 0 { c1.0 - c0.0 } else { c1.1 - c0.1 };
        idle.push(format!(
            "{{\"node\":{},\"cpu_ms_per_interval\":{:.3},\"digests_sent\":{sent},\"digests_answered\":{answered},\
             \"kdmq_bytes_per_interval\":{:.0},\"digest_us\":{}}}",
            i + 1,
            cpu as f64 / 1e6 / intervals,
            bytes as f64 / intervals,
            cluster_stat(k, "digest_us")
        ));
    }

    // partition, change `changed` AoRs on node 1, heal
    let before = (
        cluster_stat(k2, "heal_applied"),
        cluster_stat(k2, "heal_records"),
        cluster_stat(k1, "tx_bytes"),
    );
    part.cut(1, 2);
    let ok2 = sipp(c.addr(1), changed, rate, &dir);
    assert!(ok2 >= changed * 99 / 100, "sipp changed {ok2} of {changed}");
    let n1 = count(k1);
    let n2_cut = count(k2);
    part.heal();
    let took = wait_count(k2, n1, Duration::from_secs(600), "node 2 after the heal");
    let healed = format!(
        "{{\"changed_aors\":{ok2},\"subs_after\":{n1},\"node2_missing_at_heal\":{},\"converge_ms\":{},\"records_received\":{},\
         \"records_applied\":{},\"node1_kdmq_bytes\":{}}}",
        n1.saturating_sub(n2_cut),
        took.as_millis(),
        cluster_stat(k2, "heal_records") - before.1,
        cluster_stat(k2, "heal_applied") - before.0,
        cluster_stat(k1, "tx_bytes") - before.2
    );
    drop(part);
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!(
        "BENCH {{\"subs\":{loaded},\"load_s\":{load_s:.1},\"digest_interval_s\":{interval},\"idle_window_s\":{secs:.1},\
         \"idle\":[{}],\"heal\":{healed}}}",
        idle.join(",")
    );
}

/// A UDP port free now: each SIPp run gets its own, so its contacts are
/// new subscribers of the AoRs.
fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("a free UDP port")
}

fn tempfile_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("sca_rs-bench-heal-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}
