//! Benchmark workloads 2 and 3 (run by `make bench` through bench/bench.py,
//! never by `make test`: both are #[ignore]d and assert only that the flow
//! itself worked). BENCH_MODULE=c|rust picks Debian's sca.so or ours.
//!
//! Workload 2, fan-out: BENCH_MEMBERS phones subscribe call-info to one
//! shared AoR; a caller of that AoR goes through seize, INVITE, 180, 200,
//! ACK, hold (re-INVITE sendonly), BYE, BENCH_ROUNDS times. Reported: CPU
//! of all Kamailio processes per NOTIFY the members received, and per state
//! change the time from the trigger to the last member's NOTIFY (median,
//! p95, max).
//!
//! Workload 3, call flow: the same calls without hold and with 2 members, at
//! BENCH_RATE calls a second; CPU per call.
//!
//! Output: one line `BENCH {json}` on stderr.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::cfg::sca_opts;
use common::kamailio::{Kamailio, ScaModule};
use common::scenarios::{call_info, sdp};
use common::sip::{Dialog, Response, SipMessage, Subscribe, Ua};

const AOR: &str = "sip:100@127.0.0.1";
const T: Duration = Duration::from_secs(5);

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn module() -> ScaModule {
    match std::env::var("BENCH_MODULE").as_deref() {
        Ok("c") => ScaModule::C,
        _ => ScaModule::Rust,
    }
}

/// utime+stime (clock ticks) of every process in group `pgid`.
fn cpu_ticks(pgid: u32) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else { continue };
        let Some(close) = stat.rfind(')') else { continue };
        let f: Vec<&str> = stat[close + 2..].split(' ').collect();
        if f.get(2).and_then(|g| g.parse::<u32>().ok()) == Some(pgid) {
            total += f[11].parse::<u64>().unwrap_or(0) + f[12].parse::<u64>().unwrap_or(0);
        }
    }
    total
}

/// Members answering NOTIFYs on their own threads.
struct Members {
    count: Arc<AtomicU64>,
    /// nanoseconds since `base` of the latest NOTIFY
    last: Arc<AtomicU64>,
    base: Instant,
    stop: Arc<AtomicBool>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Members {
    fn start(k: &Kamailio, n: usize) -> Members {
        let (count, last, stop) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(false)));
        let base = Instant::now();
        let mut threads = Vec::new();
        for i in 0..n {
            let mut ua = Ua::new(&format!("M{i}"), "100", k.addr()).expect("UA");
            ua.auto_answer_notify = true;
            common::flows::subscribe_call_info(&mut ua, AOR);
            ua.auto_answer_notify = false;
            let (count, last, stop) = (count.clone(), last.clone(), stop.clone());
            threads.push(thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(m) = ua.recv(Duration::from_millis(50)) {
                        if m.method() == Some("NOTIFY") {
                            let _ = ua.reply(&m, 200, "OK");
                            last.fetch_max(base.elapsed().as_nanos() as u64, Ordering::SeqCst);
                            count.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                }
            }));
        }
        Members { count, last, base, stop, threads }
    }

    /// After a trigger sent at `t0` (with `before` NOTIFYs counted then):
    /// wait until the NOTIFYs stop coming; (how many, time to the last).
    fn settle(&self, t0: Instant, before: u64) -> (u64, Option<Duration>) {
        let mut seen = self.count.load(Ordering::SeqCst);
        let mut quiet_since = Instant::now();
        while quiet_since.elapsed() < Duration::from_millis(40) && t0.elapsed() < T {
            thread::sleep(Duration::from_millis(2));
            let now = self.count.load(Ordering::SeqCst);
            if now != seen {
                seen = now;
                quiet_since = Instant::now();
            }
        }
        let got = seen - before;
        let last = Duration::from_nanos(self.last.load(Ordering::SeqCst));
        let t0_rel = t0.duration_since(self.base);
        (got, (got > 0).then(|| last.saturating_sub(t0_rel)))
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

struct Phone {
    ua: Ua,
}

impl Phone {
    fn final_ok(&mut self, sent: &SipMessage) -> SipMessage {
        let r = self.ua.expect_final_response(sent, T).expect("final response");
        assert_eq!(r.status().map(|s| s / 100), Some(2), "{}", r.raw);
        r
    }
}

fn b_reply(b: &mut Ua, req: &SipMessage, status: u16, body: Option<Vec<u8>>) {
    let tag = b.uas_tag(req.call_id().unwrap_or(""));
    let mut r = Response::for_request(req, status, if status == 180 { "Ringing" } else { "OK" }).with_to_tag(&tag);
    if (101..300).contains(&status) && req.method() == Some("INVITE") {
        r = r.record_route_from(req).header("Contact", &format!("<{}>", b.contact_uri()));
    }
    if let Some(body) = body {
        r = r.body("application/sdp", &body);
    }
    b.send_response(req, &r).expect("B replies");
}

/// One call; `step` is told of each state change: its label, when its
/// trigger was sent and the members' NOTIFY count then (from `count`).
fn call(caller: &mut Phone, b: &mut Ua, hold: bool, count: &AtomicU64, step: &mut dyn FnMut(&str, Instant, u64)) {
    let mark = || (Instant::now(), count.load(Ordering::SeqCst));
    let mut ds = caller.ua.dialog(AOR);
    let (t, c) = mark();
    let s = caller.ua.send_subscribe(&mut ds, &Subscribe::new("line-seize", 15).call_info(&call_info("1"))).expect("seize");
    let r = caller.final_ok(&s);
    assert_eq!(r.status(), Some(200), "seized: {}", r.raw);
    step("seize", t, c);

    let mut dlg: Dialog = caller.ua.dialog("sip:200@127.0.0.1");
    dlg.remote_target = b.contact_uri();
    let req = caller.ua.request(&mut dlg, "INVITE").header("Call-Info", &call_info("1")).body("application/sdp", &sdp("A", 1, "sendrecv"));
    let (t, c) = mark();
    let inv = caller.ua.send(&req).expect("INVITE");
    let b_inv = b.expect_request("INVITE", T).expect("B gets INVITE");
    step("invite", t, c);
    let (t, c) = mark();
    b_reply(b, &b_inv, 180, None);
    let r = caller.ua.expect_response(&inv, T).expect("180");
    dlg.update_from_response(&r);
    step("ringing", t, c);
    let (t, c) = mark();
    b_reply(b, &b_inv, 200, Some(sdp("B", 1, "sendrecv")));
    let r = caller.final_ok(&inv);
    dlg.update_from_response(&r);
    let ack = caller.ua.request_with_cseq(&dlg, "ACK", inv.cseq().map(|c| c.0).unwrap_or(1));
    caller.ua.send(&ack).expect("ACK");
    b.expect_request("ACK", T).expect("B gets ACK");
    step("answered", t, c);

    if hold {
        let req = caller.ua.request(&mut dlg, "INVITE").header("Call-Info", &call_info("1")).body("application/sdp", &sdp("A", 2, "sendonly"));
        let (t, c) = mark();
        let re = caller.ua.send(&req).expect("re-INVITE");
        let b_re = b.expect_request("INVITE", T).expect("B gets re-INVITE");
        b_reply(b, &b_re, 200, Some(sdp("B", 2, "recvonly")));
        caller.final_ok(&re);
        let ack = caller.ua.request_with_cseq(&dlg, "ACK", re.cseq().map(|c| c.0).unwrap_or(1));
        caller.ua.send(&ack).expect("ACK");
        b.expect_request("ACK", T).expect("B gets ACK");
        step("held", t, c);
    }

    let bye = caller.ua.request(&mut dlg, "BYE");
    let (t, c) = mark();
    let bye = caller.ua.send(&bye).expect("BYE");
    let b_bye = b.expect_request("BYE", T).expect("B gets BYE");
    b_reply(b, &b_bye, 200, None);
    caller.final_ok(&bye);
    step("hung up", t, c);
}

fn run(members: usize, rounds: usize, hold: bool, workload: u32) {
    let m = module();
    let name = m.name().to_string();
    // 256 MB like the other workloads: tm keeps each finished NOTIFY
    // transaction for its wait timer, 50 of them per state change
    let k = Kamailio::start(sca_opts(m).children(4).arg("-m").arg("256"));
    let pgid = k.pid().expect("running");
    let mem = Members::start(&k, members);
    let mut caller = Phone { ua: Ua::new("A", "100", k.addr()).expect("UA") };
    caller.ua.auto_answer_notify = true;
    let mut b = Ua::new("B", "200", k.addr()).expect("UA");
    // one call to warm up
    call(&mut caller, &mut b, hold, &mem.count, &mut |_, t0, c0| {
        mem.settle(t0, c0);
    });
    thread::sleep(Duration::from_millis(200));
    let hz = 100.0; // USER_HZ on Linux
    let n0 = mem.count.load(Ordering::SeqCst);
    let cpu0 = cpu_ticks(pgid);
    let started = Instant::now();
    let mut per_step: BTreeMap<String, (u64, Vec<f64>)> = BTreeMap::new();
    // BENCH_RATE calls a second (0: one after another, as fast as they go)
    let rate = env_num("BENCH_RATE", 0);
    for i in 0..rounds {
        if rate > 0 {
            let due = started + Duration::from_secs_f64(i as f64 / rate as f64);
            thread::sleep(due.saturating_duration_since(Instant::now()));
        }
        // what each trigger caused is counted before the next one
        let mut step = |label: &str, t0: Instant, c0: u64| {
            if workload == 2 {
                let (got, lat) = mem.settle(t0, c0);
                let e = per_step.entry(label.to_string()).or_default();
                e.0 += got;
                if let Some(l) = lat {
                    e.1.push(l.as_secs_f64() * 1e3);
                }
            }
        };
        call(&mut caller, &mut b, hold, &mem.count, &mut step);
    }
    let wall = started.elapsed();
    thread::sleep(Duration::from_millis(300));
    let cpu = (cpu_ticks(pgid) - cpu0) as f64 / hz;
    let notifies = mem.count.load(Ordering::SeqCst) - n0;
    mem.stop();
    assert!(notifies > 0, "the members got NOTIFYs");
    let steps: Vec<String> = per_step
        .iter()
        .map(|(k, (n, lats))| {
            let mut l = lats.clone();
            l.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
            let med = l.get(l.len() / 2).copied().unwrap_or(f64::NAN);
            // nearest rank
            let p95 = l.get(((l.len() as f64 * 0.95).ceil() as usize).saturating_sub(1)).copied().unwrap_or(f64::NAN);
            let max = l.last().copied().unwrap_or(f64::NAN);
            format!("{{\"step\":\"{k}\",\"notifies\":{n},\"median_ms\":{med:.2},\"p95_ms\":{p95:.2},\"max_ms\":{max:.2}}}")
        })
        .collect();
    eprintln!(
        "BENCH {{\"workload\":{workload},\"module\":\"{name}\",\"members\":{members},\"rounds\":{rounds},\"notifies\":{notifies},\
\"cpu_s\":{cpu:.3},\"wall_s\":{:.3},\"cpu_us_per_notify\":{:.1},\"cpu_us_per_call\":{:.1},\"calls_per_s\":{:.1},\"steps\":[{}]}}",
        wall.as_secs_f64(),
        cpu * 1e6 / notifies as f64,
        cpu * 1e6 / rounds as f64,
        rounds as f64 / wall.as_secs_f64(),
        steps.join(",")
    );
}

#[test]
#[ignore = "benchmark: make bench runs it"]
fn workload_2_fan_out() {
    run(env_num("BENCH_MEMBERS", 50), env_num("BENCH_ROUNDS", 20), true, 2);
}

#[test]
#[ignore = "benchmark: make bench runs it"]
fn workload_3_call_flow() {
    run(env_num("BENCH_MEMBERS", 2), env_num("BENCH_ROUNDS", 200), false, 3);
}
