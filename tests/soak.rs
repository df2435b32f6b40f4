//! Bounded soak: many subscribe / seize / release / unsubscribe cycles
//! against a real Kamailio; afterwards the purge has removed everything and
//! shared memory is back to its baseline (no shm leak). `SOAK_CYCLES`
//! raises the count (`make soak`).

mod common;

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

fn wait_until(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < deadline, "{what} within {within:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn subscribe_seize_release_cycles_leak_no_shared_memory() {
    let cycles: usize = std::env::var("SOAK_CYCLES").ok().and_then(|v| v.parse().ok()).unwrap_or(400);
    let m = ScaModule::Rust;
    let params = sca_modparam(&m, "purge_expired_interval", "1");
    let k = Kamailio::start(sca_opts(m).var("SCA_MODPARAMS", &params));
    // warm up: one full cycle, so every per-process cache exists
    let mut ua = Ua::new("A1", "100", k.addr()).expect("UA");
    ua.auto_answer_notify = true;
    let run_cycle = |ua: &mut Ua, i: usize| {
        let aor = format!("sip:{}@127.0.0.1", 1000 + i % 50);
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
    // warm-up: every AoR of the rotation gets its entry (kept, like the C
    // module's appearance lists), every cache exists
    for i in 0..50 {
        run_cycle(&mut ua, i);
    }
    let settle = |k: &Kamailio| {
        // the purge removes the ended subscriptions; tm frees the NOTIFY
        // transactions after its wait timer (~5 s)
        wait_until("all subscriptions purged", Duration::from_secs(20), || {
            k.rpc(&["sca.subscription_count", "call-info"]) == "0 call-info"
                && k.rpc(&["sca.subscription_count", "line-seize"]) == "0 line-seize"
        });
        std::thread::sleep(Duration::from_secs(7));
    };
    settle(&k);
    let baseline = shm_used(&k);
    for i in 0..cycles {
        run_cycle(&mut ua, i);
    }
    settle(&k);
    let after = shm_used(&k);
    // nothing may grow per cycle; a few hundred bytes of allocator
    // fragmentation are tolerated
    let allowance = 1024;
    assert!(
        after - baseline <= allowance,
        "shm used grew by {} bytes over {cycles} cycles (baseline {baseline}, after {after})",
        after - baseline
    );
    let mut k = k;
    assert!(k.is_running());
    assert!(!k.log().contains(" ERROR:"), "{}", k.log_tail(20));
}
