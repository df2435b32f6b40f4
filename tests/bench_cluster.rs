//! Benchmark workload 6, cluster replication (run by `make bench` through
//! bench/bench.py, never by `make test`: #[ignore]d, and it asserts only
//! that the flow itself worked).
//!
//! One shared AoR. Phones M1 and M2 subscribe call-info to it; phone A
//! subscribes call-info too, then seizes index 1 (line-seize SUBSCRIBE,
//! 200) and releases it (line-seize SUBSCRIBE with Expires 0, 200),
//! BENCH_ROUNDS times (default 300) after a few warm-up cycles: two state
//! changes per cycle. Each step waits until M1, M2 and A have the step's
//! NOTIFYs before the next one, so the lags below are latencies, not
//! queueing.
//!
//! * single: one node, dmq loaded but `enable_dmq` 0 (the cluster config
//!   otherwise, tests/common/cluster.rs), every phone through it;
//! * cluster: two nodes with `enable_dmq` 1; A and M1 through node 1, M2
//!   through node 2, so every change made on node 1 is replicated to
//!   node 2, which NOTIFYs M2.
//!
//! Reported per run: CPU per state change of all Kamailio processes of all
//! nodes, and of each node alone (node 2's is the apply side); the KDMQ
//! messages and bytes node 1 sent per change (`sca.cluster` tx_msgs,
//! tx_bytes); per member the lag from A receiving its 200 to the member
//! receiving the NOTIFY that shows the change (p50 / p90 / max, ms; about
//! 0 for a local NOTIFY, negative when it beats the 200), and the same
//! from A sending the SUBSCRIBE; the nodes' idle CPU for scale; NOTIFYs
//! lost (none within 2 s) or from a node other than the member's own.
//! CPU is each process's time on CPU from /proc/<pid>/task/*/schedstat
//! (nanoseconds): utime+stime come in 10 ms ticks, too coarse for node 2's
//! share over a few hundred changes. The tick figure is reported alongside.
//!
//! Output: one line `BENCH {json}` on stderr.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use common::cluster::{
    cluster_field, cluster_stat, default_specs, subscriptions, Cluster, NodeSpec,
};
use common::kamailio::Kamailio;
use common::scenarios::call_info;
use common::sip::{Dialog, Subscribe, Ua};

const AOR: &str = "sip:100@127.0.0.1";
/// Wait for a reply.
const T: Duration = Duration::from_secs(5);
/// Wait for a step's NOTIFYs (tm retransmits a lost one within this).
const STEP_WAIT: Duration = Duration::from_secs(2);
/// Cycles before the measured ones.
const WARMUP: usize = 10;

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// CPU of every process in group `pgid`: (nanoseconds on CPU from
/// schedstat, summed over their threads; utime+stime clock ticks).
fn cpu(pgid: u32) -> (u64, u64) {
    let (mut ns, mut ticks) = (0, 0);
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
        ticks += f[11].parse::<u64>().unwrap_or(0) + f[12].parse::<u64>().unwrap_or(0);
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
    (ns, ticks)
}

/// A NOTIFY a member received: which member, when, whether its
/// Call-Info shows index 1 seized, and whether it came from the node the
/// member subscribed through (the only one that may NOTIFY it).
struct Event {
    member: usize,
    at: Instant,
    seized: bool,
    from_home: bool,
}

/// Members answering NOTIFYs on their own threads, reporting each one.
struct Members {
    n: usize,
    stop: Arc<AtomicBool>,
    threads: Vec<thread::JoinHandle<()>>,
    rx: mpsc::Receiver<Event>,
}

impl Members {
    /// One member subscribed through each of `homes`.
    fn start(homes: &[SocketAddr]) -> Members {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        let mut threads = Vec::new();
        for (i, &home) in homes.iter().enumerate() {
            let mut ua = Ua::new(&format!("M{}", i + 1), "100", home).expect("UA");
            ua.keep_recent(64);
            ua.auto_answer_notify = true;
            common::flows::subscribe_call_info(&mut ua, AOR);
            ua.auto_answer_notify = false;
            let (stop, tx) = (stop.clone(), tx.clone());
            threads.push(thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let Ok(m) = ua.recv(Duration::from_millis(50)) else {
                        continue;
                    };
                    if m.method() != Some("NOTIFY") {
                        continue;
                    }
                    let at = Instant::now();
                    let _ = ua.reply(&m, 200, "OK");
                    let seized = m
                        .header_lines("Call-Info")
                        .join(",")
                        .contains("appearance-index=1;appearance-state=seized");
                    let from_home = m.peer == Some(home);
                    let _ = tx.send(Event {
                        member: i,
                        at,
                        seized,
                        from_home,
                    });
                }
            }));
        }
        Members {
            n: homes.len(),
            stop,
            threads,
            rx,
        }
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// What the measured steps saw.
#[derive(Default)]
struct Tally {
    /// per member: ms from A receiving its 200 to the member receiving its
    /// NOTIFY (negative when the NOTIFY came first)
    lags: Vec<Vec<f64>>,
    /// per member: ms from A sending the SUBSCRIBE to the member's NOTIFY
    from_send: Vec<Vec<f64>>,
    /// per member: steps whose NOTIFY did not come within [`STEP_WAIT`]
    lost: Vec<u64>,
    /// NOTIFYs showing the other state than the step's (late ones)
    unexpected: u64,
    /// A's own NOTIFYs (line-seize and call-info) that did not come
    a_missing: u64,
    /// NOTIFYs a member got from another node than its own (a bug)
    foreign: u64,
}

impl Tally {
    fn new(members: usize) -> Tally {
        Tally {
            lags: vec![Vec::new(); members],
            from_send: vec![Vec::new(); members],
            lost: vec![0; members],
            ..Tally::default()
        }
    }
}

/// One state change: A sends `sub` in `dlg` through node 1 and must get a
/// 200; then every member's NOTIFY showing `seized` and A's two NOTIFYs
/// (line-seize, call-info) are awaited.
fn step(
    a: &mut Ua,
    dlg: &mut Dialog,
    sub: &Subscribe,
    seized: bool,
    members: &Members,
    tally: &mut Tally,
) {
    let t_send = Instant::now();
    let s = a.send_subscribe(dlg, sub).expect("send line-seize");
    let r = a.expect_final_response(&s, T).expect("reply to line-seize");
    let t_ok = Instant::now();
    assert_eq!(
        r.status(),
        Some(200),
        "{} (seize: {seized}): {}",
        sub.event,
        r.raw
    );
    dlg.update_from_response(&r);
    let deadline = t_ok + STEP_WAIT;
    let mut got = vec![false; members.n];
    while got.iter().any(|g| !g) {
        let Ok(ev) = members
            .rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        else {
            break;
        };
        if !ev.from_home {
            tally.foreign += 1;
        }
        if ev.seized != seized || got[ev.member] {
            tally.unexpected += 1;
            continue;
        }
        got[ev.member] = true;
        let ms = if ev.at >= t_ok {
            ev.at.duration_since(t_ok).as_secs_f64() * 1e3
        } else {
            -(t_ok.duration_since(ev.at).as_secs_f64() * 1e3)
        };
        tally.lags[ev.member].push(ms);
        tally.from_send[ev.member]
            .push(ev.at.saturating_duration_since(t_send).as_secs_f64() * 1e3);
    }
    for (i, g) in got.iter().enumerate() {
        if !g {
            tally.lost[i] += 1;
        }
    }
    for _ in 0..2 {
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(100));
        if a.recv_where(left, "NOTIFY", |m| m.method() == Some("NOTIFY"))
            .is_err()
        {
            tally.a_missing += 1;
        }
    }
}

/// A seize and its release.
fn cycle(a: &mut Ua, members: &Members, tally: &mut Tally) {
    let mut ls = a.dialog(AOR);
    step(
        a,
        &mut ls,
        &Subscribe::new("line-seize", 15).call_info(&call_info("1")),
        true,
        members,
        tally,
    );
    step(
        a,
        &mut ls,
        &Subscribe::new("line-seize", 0).call_info(&call_info("1")),
        false,
        members,
        tally,
    );
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn num(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.3}")
    } else {
        "null".into()
    }
}

/// Error and warning lines of a node's log, and the first few errors.
fn log_problems(k: &Kamailio) -> (usize, usize, Vec<String>) {
    let log = k.log();
    let errors: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("ERROR:") || l.contains("CRITICAL:") || l.contains("BUG:"))
        .collect();
    let warnings = log.lines().filter(|l| l.contains("WARNING:")).count();
    (
        errors.len(),
        warnings,
        errors.iter().take(5).map(|l| l.to_string()).collect(),
    )
}

/// The `sca.cluster` counters compared before and after.
const COUNTERS: [&str; 6] = [
    "tx_msgs",
    "tx_bytes",
    "tx_failed",
    "rx_msgs",
    "rx_applied",
    "rx_stale",
];

/// What [`run`] hands to the test: its JSON object, CPU µs per change of
/// all nodes, and per member the p50 lags from A's 200 and from A's send.
struct RunOut {
    json: String,
    cpu_us: f64,
    p50: Vec<f64>,
    p50_from_send: Vec<f64>,
}

/// One run (see the top of this file); `None` when the cluster cannot run
/// here.
fn run(cluster: bool, rounds: usize) -> Option<RunOut> {
    let label = if cluster { "cluster" } else { "single" };
    let specs = if cluster {
        default_specs(2)
    } else {
        let mut s = NodeSpec::new(1, 1);
        s.enable_dmq = false;
        vec![s]
    };
    let c = Cluster::start(&format!("workload 6 ({label})"), specs)?;
    if cluster {
        c.wait_mesh(Duration::from_secs(20));
        // the start-up full sync done before anything is measured
        let deadline = Instant::now() + Duration::from_secs(10);
        while c
            .running()
            .iter()
            .any(|(_, k)| cluster_field(k, "sync_state") != "synced")
            && Instant::now() < deadline
        {
            thread::sleep(Duration::from_millis(50));
        }
    }
    let home2 = c.addr(if cluster { 2 } else { 1 });
    let members = Members::start(&[c.addr(1), home2]);
    let mut a = Ua::new("A", "100", c.addr(1)).expect("UA");
    a.keep_recent(64);
    a.auto_answer_notify = true;
    common::flows::subscribe_call_info(&mut a, AOR);
    c.wait_agree("3 call-info subscriptions", T, subscriptions, |v| {
        v.len() == 3
    });

    let mut warm = Tally::new(members.n);
    for _ in 0..WARMUP {
        cycle(&mut a, &members, &mut warm);
    }
    thread::sleep(Duration::from_millis(200));
    while members.rx.try_recv().is_ok() {}

    let nodes = c.running();
    let counters = |k: &Kamailio| -> Vec<u64> {
        if cluster {
            COUNTERS.iter().map(|n| cluster_stat(k, n)).collect()
        } else {
            vec![0; COUNTERS.len()]
        }
    };
    let stats0: Vec<Vec<u64>> = nodes.iter().map(|(_, k)| counters(k)).collect();
    let pgids: Vec<u32> = nodes
        .iter()
        .map(|(_, k)| k.pid().expect("running"))
        .collect();
    // what the nodes burn doing nothing (timers, dmq pings), for scale
    let idle0: Vec<(u64, u64)> = pgids.iter().map(|p| cpu(*p)).collect();
    thread::sleep(Duration::from_secs(1));
    let cpu0: Vec<(u64, u64)> = pgids.iter().map(|p| cpu(*p)).collect();
    let idle_us_per_s: f64 = idle0
        .iter()
        .zip(&cpu0)
        .map(|(a, b)| (b.0 - a.0) as f64 / 1e3)
        .sum();
    let mut tally = Tally::new(members.n);
    let started = Instant::now();
    for _ in 0..rounds {
        cycle(&mut a, &members, &mut tally);
    }
    let wall = started.elapsed();
    // the members' last 200 OKs reach Kamailio
    thread::sleep(Duration::from_millis(50));
    let cpu1: Vec<(u64, u64)> = pgids.iter().map(|p| cpu(*p)).collect();
    let stats1: Vec<Vec<u64>> = nodes.iter().map(|(_, k)| counters(k)).collect();
    members.stop();

    let changes = (2 * rounds) as f64;
    let node_us: Vec<f64> = cpu0
        .iter()
        .zip(&cpu1)
        .map(|(a, b)| (b.0 - a.0) as f64 / 1e3 / changes)
        .collect();
    let node_tick_us: Vec<f64> = cpu0
        .iter()
        .zip(&cpu1)
        .map(|(a, b)| (b.1 - a.1) as f64 * 1e4 / changes)
        .collect();
    let all_us: f64 = node_us.iter().sum();
    let all_tick_us: f64 = node_tick_us.iter().sum();

    let mut lag_json = Vec::new();
    let (mut p50, mut p50_from_send) = (Vec::new(), Vec::new());
    for (i, l) in tally.lags.iter().enumerate() {
        let mut l = l.clone();
        l.sort_by(|x, y| x.partial_cmp(y).expect("no NaN"));
        let mut fs = tally.from_send[i].clone();
        fs.sort_by(|x, y| x.partial_cmp(y).expect("no NaN"));
        let node = if cluster && i == 1 { 2 } else { 1 };
        p50.push(percentile(&l, 0.5));
        p50_from_send.push(percentile(&fs, 0.5));
        lag_json.push(format!(
            "{{\"member\":\"M{}\",\"node\":{node},\"n\":{},\"lost\":{},\"p50_ms\":{},\"p90_ms\":{},\"max_ms\":{},\"min_ms\":{},\
\"from_send_p50_ms\":{},\"from_send_p90_ms\":{}}}",
            i + 1,
            l.len(),
            tally.lost[i],
            num(percentile(&l, 0.5)),
            num(percentile(&l, 0.9)),
            num(l.last().copied().unwrap_or(f64::NAN)),
            num(l.first().copied().unwrap_or(f64::NAN)),
            num(percentile(&fs, 0.5)),
            num(percentile(&fs, 0.9)),
        ));
    }
    let mut node_json = Vec::new();
    for (slot, (id, k)) in nodes.iter().enumerate() {
        let (errors, warnings, first) = log_problems(k);
        for l in &first {
            eprintln!("workload 6 ({label}) node {id} log: {l}");
        }
        let delta: Vec<String> = COUNTERS
            .iter()
            .enumerate()
            .map(|(j, n)| format!("\"{n}\":{}", stats1[slot][j] - stats0[slot][j]))
            .collect();
        node_json.push(format!(
            "{{\"node\":{id},\"cpu_us_per_change\":{},\"cpu_tick_us_per_change\":{},\"log_errors\":{errors},\"log_warnings\":{warnings}{}{}}}",
            num(node_us[slot]),
            num(node_tick_us[slot]),
            if cluster { "," } else { "" },
            if cluster { delta.join(",") } else { String::new() },
        ));
    }
    let (kdmq_msgs, kdmq_bytes) = if cluster {
        (
            num((stats1[0][0] - stats0[0][0]) as f64 / changes),
            num((stats1[0][1] - stats0[0][1]) as f64 / changes),
        )
    } else {
        ("null".into(), "null".into())
    };
    let json = format!(
        "{{\"nodes\":{},\"wall_s\":{},\"changes_per_s\":{},\"cpu_us_per_change\":{},\"cpu_tick_us_per_change\":{},\
\"idle_cpu_us_per_s\":{},\"kdmq_msgs_per_change\":{kdmq_msgs},\"kdmq_bytes_per_change\":{kdmq_bytes},\
\"unexpected_notifies\":{},\"a_missing_notifies\":{},\"foreign_notifies\":{},\
\"per_node\":[{}],\"lag\":[{}]}}",
        nodes.len(),
        num(wall.as_secs_f64()),
        num(changes / wall.as_secs_f64()),
        num(all_us),
        num(all_tick_us),
        num(idle_us_per_s),
        tally.unexpected,
        tally.a_missing,
        tally.foreign,
        node_json.join(","),
        lag_json.join(","),
    );
    let lost: u64 = tally.lost.iter().sum();
    if lost + tally.unexpected + tally.a_missing + tally.foreign > 0 {
        eprintln!(
            "workload 6 ({label}): {lost} member NOTIFYs lost, {} unexpected, {} of A's missing, {} from the wrong node",
            tally.unexpected, tally.a_missing, tally.foreign
        );
    }
    assert!(
        tally.lags.iter().all(|l| !l.is_empty()),
        "workload 6 ({label}): every member got NOTIFYs ({lost} lost)"
    );
    drop(c);
    Some(RunOut {
        json,
        cpu_us: all_us,
        p50,
        p50_from_send,
    })
}

#[test]
#[ignore = "benchmark: make bench runs it"]
fn workload_6_cluster_replication() {
    let rounds = env_num("BENCH_ROUNDS", 300).max(1);
    let Some(single) = run(false, rounds) else {
        return;
    };
    let Some(cluster) = run(true, rounds) else {
        return;
    };
    // the lag from A's 200 of a local NOTIFY is about 0 (either may come
    // first), so the ratio is taken on the lags from A's send, and the
    // difference on the lags from the 200
    eprintln!(
        "BENCH {{\"workload\":6,\"rounds\":{rounds},\"changes\":{},\"single\":{},\"cluster\":{},\
\"cpu_ratio_cluster_single\":{},\"lag_from_send_p50_ratio_node2_node1\":{},\"lag_p50_extra_ms_node2\":{}}}",
        2 * rounds,
        single.json,
        cluster.json,
        num(cluster.cpu_us / single.cpu_us),
        num(cluster.p50_from_send[1] / cluster.p50_from_send[0]),
        num(cluster.p50[1] - cluster.p50[0]),
    );
}
