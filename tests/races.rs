//! Races: three phones on four SIP workers and the RPC process work on the
//! same AoR at once: seizing index 1 and releasing it, subscribing and
//! unsubscribing call-info, while kamcmd seizes and releases lines too.
//!
//! The check that cannot give a false alarm: a contender's hold of index 1
//! as the client sees it (from the 200 / the RPC answer to sending the
//! release) lies inside the module's hold, so two such holds that overlap
//! mean two owners at once. Afterwards: no deadlock (every thread
//! finished, Kamailio serves), every worker alive, and the RPC view
//! consistent (no appearance left, only the observer's subscription).

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use common::cfg::sca_opts;
use common::flows::subscribe_call_info;
use common::kamailio::{Kamailio, ScaModule};
use common::scenarios::call_info;
use common::sip::{Subscribe, Ua, RECV_TIMEOUT};

const AOR: &str = "sip:100@127.0.0.1";
const ROUNDS: usize = 60;
const HOLD: Duration = Duration::from_millis(3);

type Hold = (Instant, Instant, String);

fn phone(k: &Kamailio, name: &str, holds: &Mutex<Vec<Hold>>) -> (usize, usize) {
    let mut ua = Ua::new(name, "100", k.addr()).expect("UA");
    ua.auto_answer_notify = true;
    let (mut won, mut lost) = (0, 0);
    for round in 0..ROUNDS {
        // every third round, a call-info subscription comes and goes too
        if round % 3 == 0 {
            let mut d = subscribe_call_info(&mut ua, AOR);
            let s = ua.send_subscribe(&mut d, &Subscribe::new("call-info", 0)).expect("unsubscribe");
            let r = ua.expect_final_response(&s, RECV_TIMEOUT).expect("reply to unsubscribe");
            assert_eq!(r.status(), Some(202), "{name}: {}", r.raw);
        }
        let mut d = ua.dialog(AOR);
        let seize = Subscribe::new("line-seize", 15).call_info(&call_info("1"));
        let s = ua.send_subscribe(&mut d, &seize).expect("line-seize");
        let r = ua.expect_final_response(&s, RECV_TIMEOUT).expect("reply to line-seize");
        match r.status() {
            Some(200) => {
                let from = Instant::now();
                won += 1;
                d.update_from_response(&r);
                thread::sleep(HOLD);
                let until = Instant::now();
                holds.lock().expect("holds").push((from, until, name.to_string()));
                let rel = Subscribe::new("line-seize", 0).call_info(&call_info("1"));
                let s = ua.send_subscribe(&mut d, &rel).expect("release");
                let r = ua.expect_final_response(&s, RECV_TIMEOUT).expect("reply to release");
                assert_eq!(r.status(), Some(200), "{name} releases: {}", r.raw);
            }
            Some(480) => lost += 1,
            other => panic!("{name}: line-seize answered {other:?}: {}", r.raw),
        }
    }
    (won, lost)
}

fn rpc_contender(k: &Kamailio, holds: &Mutex<Vec<Hold>>) -> usize {
    let mut on_index_1 = 0;
    for _ in 0..ROUNDS {
        let out = k.rpc(&["sca.seize_appearance", AOR, "sip:rpc@127.0.0.1"]);
        let from = Instant::now();
        let idx: u32 = out
            .split_whitespace()
            .skip_while(|w| *w != "appearance-index")
            .nth(1)
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("seize answer: {out}"));
        if idx == 1 {
            on_index_1 += 1;
            thread::sleep(HOLD);
            holds.lock().expect("holds").push((from, Instant::now(), "rpc".into()));
        }
        // a fault would panic in rpc()
        k.rpc(&["sca.release_appearance", AOR, &idx.to_string()]);
        // give the phones a chance at the line
        thread::sleep(HOLD * 2);
    }
    on_index_1
}

#[test]
fn sip_workers_and_rpc_on_one_aor_one_owner_per_index() {
    let mut k = Kamailio::start(sca_opts(ScaModule::Rust).children(4));
    let mut obs = Ua::new("O", "100", k.addr()).expect("UA");
    obs.auto_answer_notify = true;
    subscribe_call_info(&mut obs, AOR);
    let obs_local = obs.local.to_string();
    // keep the observer answering NOTIFYs while the others race
    let stop = AtomicBool::new(false);
    let holds = Mutex::new(Vec::new());
    let started = Instant::now();
    /// Stops the observer however the scope ends (a panic included).
    struct StopOnDrop<'a>(&'a AtomicBool);
    impl Drop for StopOnDrop<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    let (phones, rpc) = thread::scope(|s| {
        let o = s.spawn(|| {
            while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(120) {
                let _ = obs.expect_silence(Duration::from_millis(100));
            }
        });
        let _stop = StopOnDrop(&stop);
        let ps: Vec<_> = ["A1", "A2", "A3"].map(|n| {
            let (k, holds) = (&k, &holds);
            s.spawn(move || phone(k, n, holds))
        }).into_iter().collect();
        let r = s.spawn(|| rpc_contender(&k, &holds));
        let phones: Vec<(usize, usize)> = ps.into_iter().map(|p| p.join().expect("phone thread")).collect();
        let rpc = r.join().expect("rpc thread");
        drop(_stop);
        o.join().expect("observer");
        (phones, rpc)
    });
    eprintln!("races: phones (won, lost) {phones:?}, rpc on index 1: {rpc}, in {:?}", started.elapsed());

    let mut holds = holds.into_inner().expect("holds");
    holds.sort_by_key(|h| h.0);
    for w in holds.windows(2) {
        assert!(w[0].1 < w[1].0, "index 1 held by {} and {} at once", w[0].2, w[1].2);
    }
    let won: usize = phones.iter().map(|p| p.0).sum();
    let lost: usize = phones.iter().map(|p| p.1).sum();
    assert_eq!(won + lost, 3 * ROUNDS, "every seize got an answer");
    assert!(won > 0 && lost > 0, "the phones did contend: won {won}, lost {lost}");

    assert!(k.is_running(), "Kamailio died:\n{}", k.log_tail(40));
    let psx = k.rpc(&["core.psx"]);
    assert_eq!(psx.matches("udp receiver child=").count(), 4, "every worker is still there:\n{psx}");
    // consistent view: no line left seized, only the observer subscribed
    let apps = k.rpc(&["sca.all_appearances"]);
    assert!(!apps.lines().any(|l| l.contains(" seized ")), "a line stayed seized: {apps}");
    // (ended subscriptions stay listed as terminated until the purge timer)
    let subs = k.rpc(&["sca.all_subscriptions"]);
    let active: Vec<&str> = subs.lines().filter(|l| l.ends_with(" active")).collect();
    assert_eq!(active.len(), 1, "only the observer is subscribed: {subs}");
    assert!(active[0].contains(&format!("{} call-info", obs_local)), "{subs}");
}
