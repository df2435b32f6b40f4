//! Bounded soak: many subscribe / seize / release / unsubscribe cycles
//! against a real Kamailio, from several phones at once; afterwards the purge
//! has removed everything and shared memory is back to its baseline (no shm
//! leak). `SOAK_CYCLES` raises the count and `SOAK_PHONES` the parallelism
//! (`make soak`).

mod common;

use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use common::cfg::{sca_modparam, sca_opts};
use common::kamailio::{Kamailio, ScaModule};
use common::sip::{Subscribe, Ua, RECV_TIMEOUT};

/// `core.shmmem` → used bytes
fn shm_used(k: &Kamailio) -> i64 {
    let out = k.rpc(&["core.shmmem"]);
    out.lines()
        .find_map(|l| l.trim().strip_prefix("used:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no used: in {out}"))
}

/// `pkg.stats` → private memory used by the SIP workers, summed (the
/// processes that run the module's SIP code).
fn pkg_used_by_workers(k: &Kamailio) -> i64 {
    let out = k.rpc(&["pkg.stats"]);
    let mut total = 0;
    let mut workers = 0;
    for entry in out.split('{').skip(1) {
        if !entry.contains("udp receiver") {
            continue;
        }
        let used: i64 = entry
            .lines()
            .find_map(|l| l.trim().strip_prefix("used:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no used: in {entry}"));
        total += used;
        workers += 1;
    }
    assert!(workers > 0, "no SIP worker in pkg.stats: {out}");
    total
}

fn wait_until(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < deadline, "{what} within {within:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn subscribe_seize_release_cycles_leak_no_shared_memory() {
    let env = |name: &str, default: usize| -> usize {
        std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
    };
    let cycles = env("SOAK_CYCLES", 400);
    let phones = env("SOAK_PHONES", 4).max(1);
    // cycles per second, all phones together: unpaced, the phones saturate
    // both cores, Kamailio's timer process starves and tm's transactions
    // waiting to be freed fill any shm size (an overload test, not a soak)
    let rate = env("SOAK_RATE", 600).max(1);
    let m = ScaModule::Rust;
    // tm keeps each NOTIFY transaction (~9 KB) for its wait timer (5 s by
    // default): at 6 NOTIFYs per cycle that alone would fill 32 MB
    // kex: pkg.stats
    let params = format!(
        "loadmodule \"kex.so\"\n{}\nmodparam(\"tm\", \"wt_timer\", 1000)",
        sca_modparam(&m, "purge_expired_interval", "1")
    );
    let k = Kamailio::start(sca_opts(m).var("SCA_MODPARAMS", &params).children(4).arg("-m").arg("256"));
    // each phone cycles over its own 50 AoRs
    let run_cycle = |ua: &mut Ua, phone: usize, i: usize| {
        let aor = format!("sip:{}@127.0.0.1", 1000 + phone * 50 + i % 50);
        let mut d = ua.dialog(&aor);
        let s = ua.send_subscribe(&mut d, &Subscribe::new("call-info", 600)).expect("SUBSCRIBE");
        let r = ua.expect_final_response(&s, RECV_TIMEOUT).expect("202");
        assert_eq!(r.status(), Some(202), "cycle {i}: {}", r.raw);
        assert!(d.update_from_response(&r));
        ua.expect_request("NOTIFY", RECV_TIMEOUT).expect("NOTIFY");
        let mut ls = ua.dialog(&aor);
        let s = ua
            .send_subscribe(&mut ls, &Subscribe::new("line-seize", 15).call_info("<sip:127.0.0.1>;appearance-index=1"))
            .expect("line-seize");
        let r = ua.expect_final_response(&s, RECV_TIMEOUT).expect("200");
        assert_eq!(r.status(), Some(200), "cycle {i}: {}", r.raw);
        assert!(ls.update_from_response(&r));
        ua.expect_request("NOTIFY", RECV_TIMEOUT).expect("line-seize NOTIFY");
        ua.expect_request("NOTIFY", RECV_TIMEOUT).expect("group NOTIFY");
        let s = ua
            .send_subscribe(&mut ls, &Subscribe::new("line-seize", 0).call_info("<sip:127.0.0.1>;appearance-index=1"))
            .expect("release");
        assert_eq!(ua.expect_final_response(&s, RECV_TIMEOUT).expect("200").status(), Some(200));
        ua.expect_request("NOTIFY", RECV_TIMEOUT).expect("release NOTIFY");
        ua.expect_request("NOTIFY", RECV_TIMEOUT).expect("group NOTIFY");
        let s = ua.send_subscribe(&mut d, &Subscribe::new("call-info", 0)).expect("unSUBSCRIBE");
        assert_eq!(ua.expect_final_response(&s, RECV_TIMEOUT).expect("202").status(), Some(202));
        ua.expect_request("NOTIFY", RECV_TIMEOUT).expect("terminated NOTIFY");
    };
    let mut uas: Vec<Ua> = (0..phones)
        .map(|p| {
            let mut ua = Ua::new(&format!("A{p}"), &format!("{}", 100 + p), k.addr()).expect("UA");
            ua.auto_answer_notify = true;
            ua.keep_recent(40);
            ua
        })
        .collect();
    // every phone runs `n` cycles at once; returns the cycles run
    let run_all = |uas: &mut Vec<Ua>, n: usize| -> usize {
        std::thread::scope(|s| {
            let handles: Vec<_> = uas
                .iter_mut()
                .enumerate()
                .map(|(p, ua)| {
                    s.spawn(move || {
                        let every = Duration::from_secs_f64(phones as f64 / rate as f64);
                        let start = Instant::now();
                        for i in 0..n {
                            if let Some(wait) = (start + every * i as u32).checked_duration_since(Instant::now()) {
                                std::thread::sleep(wait);
                            }
                            let r = std::panic::catch_unwind(AssertUnwindSafe(|| run_cycle(ua, p, i)));
                            if let Err(e) = r {
                                // what this phone saw last, then the failure
                                eprintln!("phone {p}, cycle {i}, last messages:\n{}", ua.transcript_raw());
                                std::panic::resume_unwind(e);
                            }
                        }
                        n
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().expect("phone thread")).sum()
        })
    };
    // warm-up: every AoR of the rotation gets its entry (kept, like the C
    // module's appearance lists), every cache exists
    run_all(&mut uas, 50);
    let settle = |k: &Kamailio| {
        // the purge removes the ended subscriptions; tm frees the NOTIFY
        // transactions after its wait timer (1 s here)
        wait_until("all subscriptions purged", Duration::from_secs(20), || {
            k.rpc(&["sca.subscription_count", "call-info"]) == "0 call-info"
                && k.rpc(&["sca.subscription_count", "line-seize"]) == "0 line-seize"
        });
        std::thread::sleep(Duration::from_secs(3));
    };
    settle(&k);
    let baseline = shm_used(&k);
    let pkg_baseline = pkg_used_by_workers(&k);
    let started = Instant::now();
    let done = run_all(&mut uas, cycles.div_ceil(phones));
    let took = started.elapsed();
    eprintln!(
        "soak: {done} cycles from {phones} phones in {:.1} s ({:.0} cycles/s)",
        took.as_secs_f64(),
        done as f64 / took.as_secs_f64()
    );
    settle(&k);
    let after = shm_used(&k);
    let pkg_after = pkg_used_by_workers(&k);
    eprintln!("soak: shm used {baseline} before, {after} after ({:+} bytes)", after - baseline);
    eprintln!(
        "soak: SIP workers' pkg used {pkg_baseline} before, {pkg_after} after ({:+} bytes)",
        pkg_after - pkg_baseline
    );
    // nothing may grow per cycle; a few hundred bytes of allocator
    // fragmentation are tolerated
    let allowance = 1024;
    assert!(
        after - baseline <= allowance,
        "shm used grew by {} bytes over {done} cycles (baseline {baseline}, after {after})",
        after - baseline
    );
    assert!(
        pkg_after - pkg_baseline <= allowance,
        "the SIP workers' pkg used grew by {} bytes over {done} cycles",
        pkg_after - pkg_baseline
    );
    let mut k = k;
    assert!(k.is_running());
    let log = k.log();
    for bad in [" ERROR:", " CRITICAL:", " BUG:", " ALERT:"] {
        assert!(!log.contains(bad), "{bad} in the log: {}", k.log_tail(20));
    }
}
