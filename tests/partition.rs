//! The cluster heals (docs/cluster.md, "Partitions"): three real Kamailio
//! nodes on 127.0.0.1, .2 and .3 (one port; node N has `dmq_node_id` N),
//! the links between them cut by dropping their UDP on arrival with
//! nftables ([`common::partition`]), phones subscribed through different
//! nodes.
//!
//! * `changes_and_a_conflict_on_both_sides_converge_after_heal`: node 1 is
//!   cut off from nodes 2 and 3 until dmq on each side has dropped the
//!   other; A (node 1) seizes 21, B (node 2) seizes 22, D (node 1) seizes
//!   23 and C (node 3) seizes 23 after it. After the heal every node lists
//!   21:A 22:B 23:D within [`HEAL_BOUND`], every phone gets a call-info
//!   NOTIFY from its own node showing all three, and C (the later seize of
//!   23) gets its line-seize ended with `noresource`.
//! * `a_partition_that_heals_before_dmq_notices`: a change made while the
//!   link is cut for a moment is lost on the wire (the peers answer
//!   nothing, tm times out); the digest exchange brings it over.
//! * `a_flapping_link`: the link between node 1 and the others is cut and
//!   healed again and again, with changes on both sides each time; the
//!   nodes end equal and the phones show the final state.
//!
//! Where 127.0.0.2/.3 or nftables are not usable the tests print
//! `SKIP: ...` and return. The tests run one at a time.

mod common;

use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use common::cluster::{appearances, cluster_stat, default_specs, subscriptions, Cluster};
use common::kamailio::Kamailio;
use common::partition::Partition;
use common::scenarios::call_info;
use common::sip::{Dialog, SipMessage, Subscribe, Ua};

/// The shared (SCA) AoR.
const AOR: &str = "sip:100@127.0.0.1";
/// Wait for an expected reply.
const WAIT: Duration = Duration::from_secs(3);
/// dmq lists (or drops) nodes within this: two pings (`ping_interval` 5,
/// dmq's minimum) and tm's `fr_timer` (2 s) with room for a slow machine.
const DMQ_NOTICES: Duration = Duration::from_secs(40);
/// After the link heals, every node agrees within this (docs/cluster.md,
/// "Partitions": dmq's return, up to 2 x `ping_interval`, plus one
/// `dmq_digest_interval` and the exchange itself), with room for a
/// loaded machine.
const HEAL_BOUND: Duration = Duration::from_secs(30);
/// Seconds between digest exchanges in these tests.
const DIGEST_INTERVAL: u32 = 2;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Three nodes with a short digest interval and line-seizes that outlive
/// the test (300 s).
fn start(test: &str) -> Option<(Cluster, Partition)> {
    let mut specs = default_specs(3);
    for s in specs.iter_mut() {
        s.extra_modparams = format!(
            "modparam(\"sca_rs\", \"dmq_digest_interval\", {DIGEST_INTERVAL})\n\
             modparam(\"sca_rs\", \"line_seize_max_expires\", 300)\n"
        );
    }
    let c = Cluster::start(test, specs)?;
    let p = match Partition::new(test, c.port.port) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("SKIP: {test}: nftables is not usable here ({e})");
            return None;
        }
    };
    c.wait_mesh(Duration::from_secs(20));
    Some((c, p))
}

// ------------------------------------------------------------ phones

/// A phone subscribed to the shared AoR through one node (`home`).
struct Phone {
    name: &'static str,
    ua: Ua,
    home: SocketAddr,
    sub: Option<Dialog>,
    /// Its call-info NOTIFYs and line-seize NOTIFYs so far.
    call_info: Vec<SipMessage>,
    line_seize: Vec<SipMessage>,
}

impl Phone {
    fn new(c: &Cluster, name: &'static str, home_id: usize) -> Phone {
        let home = c.addr(home_id);
        let mut ua = Ua::new(name, "100", home).expect("bind UA socket");
        ua.auto_answer_notify = true;
        Phone {
            name,
            ua,
            home,
            sub: None,
            call_info: Vec::new(),
            line_seize: Vec::new(),
        }
    }

    fn contact(&self) -> String {
        self.ua.local.to_string()
    }

    fn subscribe_call_info(&mut self) {
        let mut d = self.ua.dialog(AOR);
        let s = self
            .ua
            .send_subscribe(&mut d, &Subscribe::new("call-info", 600))
            .expect("send SUBSCRIBE");
        let r = self
            .ua
            .expect_final_response(&s, WAIT)
            .expect("reply to call-info SUBSCRIBE");
        assert_eq!(r.status(), Some(202), "{}: {}", self.name, r.raw);
        assert!(d.update_from_response(&r));
        self.sub = Some(d);
    }

    /// A line-seize of `idx` through `home` (300 s); must get 200.
    fn seize(&mut self, idx: &str) -> Dialog {
        let mut d = self.ua.dialog(AOR);
        let s = self
            .ua
            .send_subscribe(
                &mut d,
                &Subscribe::new("line-seize", 300).call_info(&call_info(idx)),
            )
            .expect("send line-seize");
        let r = self
            .ua
            .expect_final_response(&s, WAIT)
            .expect("reply to line-seize");
        assert_eq!(
            r.status(),
            Some(200),
            "{}: seize {idx}: {}",
            self.name,
            r.raw
        );
        d.update_from_response(&r);
        d
    }

    /// Release the line seized in `d` (line-seize unsubscribe).
    fn release(&mut self, d: &mut Dialog, idx: &str) {
        let s = self
            .ua
            .send_subscribe(
                d,
                &Subscribe::new("line-seize", 0).call_info(&call_info(idx)),
            )
            .expect("send release");
        let r = self
            .ua
            .expect_final_response(&s, WAIT)
            .expect("reply to release");
        assert_eq!(
            r.status(),
            Some(200),
            "{}: release {idx}: {}",
            self.name,
            r.raw
        );
    }

    /// Take every NOTIFY that has arrived (waiting at most `wait` for the
    /// first); each must come from the phone's own node.
    fn drain(&mut self, wait: Duration) {
        let mut wait = wait;
        while let Ok(m) = self
            .ua
            .recv_where(wait, "NOTIFY", |m| m.method() == Some("NOTIFY"))
        {
            wait = Duration::from_millis(5);
            assert_eq!(
                m.peer,
                Some(self.home),
                "{} got a NOTIFY from {:?}, not from its own node {}:\n{}",
                self.name,
                m.peer,
                self.home,
                m.raw
            );
            match m.header("Event") {
                Some("call-info") => self.call_info.push(m),
                Some("line-seize") => self.line_seize.push(m),
                other => panic!("{}: NOTIFY with Event {other:?}:\n{}", self.name, m.raw),
            }
        }
    }

    /// Forget the NOTIFYs so far (a new step starts).
    fn forget(&mut self) {
        self.drain(Duration::from_millis(5));
        self.call_info.clear();
        self.line_seize.clear();
    }

    /// The Call-Info of its newest call-info NOTIFY (highest CSeq).
    fn latest(&self) -> String {
        self.call_info
            .iter()
            .max_by_key(|m| m.cseq().map(|c| c.0).unwrap_or(0))
            .map(|m| m.header_lines("Call-Info").join(","))
            .unwrap_or_default()
    }

    fn ended_noresource(&self) -> bool {
        self.line_seize.iter().any(|m| {
            m.header("Subscription-State")
                .is_some_and(|s| s.starts_with("terminated") && s.contains("reason=noresource"))
        })
    }
}

/// Does this Call-Info show `idx` in a busy state (seized or beyond)?
fn shows(ci: &str, idx: &str) -> bool {
    ci.split(',').any(|p| {
        p.contains(&format!("appearance-index={idx};")) && !p.contains("appearance-state=idle")
    })
}

/// Drain every phone until `done` holds for all of them, or `within`
/// passes (the caller's assertions then say what is missing).
fn drain_until(phones: &mut [&mut Phone], within: Duration, done: impl Fn(&Phone) -> bool) {
    let deadline = Instant::now() + within;
    loop {
        for p in phones.iter_mut() {
            p.drain(Duration::from_millis(20));
        }
        if phones.iter().all(|p| done(p)) || Instant::now() >= deadline {
            return;
        }
    }
}

// ------------------------------------------------------------ cluster views

/// `index owner` of every appearance a node lists.
fn owners(k: &Kamailio) -> Vec<String> {
    appearances(k)
        .iter()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            // "<aor> <index> <state> <mtime> <owner> ...": the owner's host:port
            let owner = f.get(4).unwrap_or(&"?");
            let hostport = owner.rsplit('@').next().unwrap_or(owner);
            let hostport = hostport.split([';', '>']).next().unwrap_or(hostport);
            format!("{} {hostport}", f.get(1).unwrap_or(&"?"))
        })
        .collect()
}

/// Wait until each node in `ids` lists exactly `want` (`index owner`,
/// sorted); panics with every view after `within`.
fn wait_owners(
    c: &Cluster,
    ids: &[usize],
    what: &str,
    within: Duration,
    want: &[String],
) -> Duration {
    let start = Instant::now();
    loop {
        let views: Vec<(usize, Vec<String>)> =
            ids.iter().map(|&id| (id, owners(c.node(id)))).collect();
        if views.iter().all(|(_, v)| v == want) {
            return start.elapsed();
        }
        if start.elapsed() >= within {
            let mut msg = String::new();
            for (id, v) in &views {
                msg += &format!(
                    "--- node {id}: {v:?}\n--- log:\n{}\n",
                    c.node(*id).log_tail(15)
                );
            }
            panic!("{what}: want {want:?} within {within:?}\n{msg}");
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// The `host:port status` entries of `dmq.list_nodes` on `k`.
fn dmq_status(k: &Kamailio) -> Vec<(String, String)> {
    let list = k.kamcmd(&["dmq.list_nodes"]).unwrap_or_default();
    let mut out = Vec::new();
    let (mut host, mut port) = (String::new(), String::new());
    for l in list.lines().map(str::trim) {
        if let Some(h) = l.strip_prefix("host:") {
            host = h.trim().to_string();
        } else if let Some(p) = l.strip_prefix("port:") {
            port = p.trim().to_string();
        } else if let Some(s) = l.strip_prefix("status:") {
            out.push((format!("{host}:{port}"), s.trim().to_string()));
        }
    }
    out
}

/// Does node `k` hold `peer` as an active dmq node?
fn dmq_active(k: &Kamailio, peer: SocketAddr) -> bool {
    dmq_status(k)
        .iter()
        .any(|(a, s)| *a == peer.to_string() && s == "active")
}

/// Wait until `cond` holds (polling), or panic with `what` after `within`.
fn wait_for(what: &str, within: Duration, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        thread::sleep(Duration::from_millis(100));
    }
}

fn line(idx: &str, p: &Phone) -> String {
    format!("{idx} {}", p.contact())
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

// ------------------------------------------------------------ tests

#[test]
fn changes_and_a_conflict_on_both_sides_converge_after_heal() {
    let _g = serial();
    let Some((c, part)) = start("heal_conflict") else {
        return;
    };
    let mut a = Phone::new(&c, "A", 1);
    let mut d = Phone::new(&c, "D", 1);
    let mut b = Phone::new(&c, "B", 2);
    let mut cc = Phone::new(&c, "C", 3);
    for p in [&mut a, &mut d, &mut b, &mut cc] {
        p.subscribe_call_info();
    }
    c.wait_agree("subscriptions", WAIT, subscriptions, |v| v.len() == 4);

    eprintln!(
        "heal_conflict: dmq on node 1 before the cut: {:?}",
        dmq_status(c.node(1))
    );
    // node 1 | nodes 2 and 3, until dmq on each side has dropped the other
    part.cut(1, 2);
    part.cut(1, 3);
    wait_for("dmq drops the other side", DMQ_NOTICES, || {
        !dmq_active(c.node(1), c.addr(2))
            && !dmq_active(c.node(1), c.addr(3))
            && !dmq_active(c.node(2), c.addr(1))
            && !dmq_active(c.node(3), c.addr(1))
    });

    // changes and a conflict on both sides, each answered 200 on its side
    let _da = a.seize("21");
    let _db = b.seize("22");
    let _dd = d.seize("23");
    // C's seize of 23 is sent after D's got its 200: later (or, in the
    // same millisecond, from a higher node id): D wins after the heal
    let _dc = cc.seize("23");
    let left = sorted(vec![line("21", &a), line("23", &d)]);
    let right = sorted(vec![line("22", &b), line("23", &cc)]);
    wait_owners(&c, &[1], "node 1 during the partition", WAIT, &left);
    wait_owners(
        &c,
        &[2, 3],
        "nodes 2 and 3 during the partition",
        WAIT,
        &right,
    );
    let lost3 = cluster_stat(c.node(3), "conflicts_lost");
    // each side's phones were told of their side's seizes; start afresh
    drain_until(&mut [&mut a, &mut d, &mut b, &mut cc], WAIT, |p| {
        let l = p.latest();
        if p.home == c.addr(1) {
            shows(&l, "21") && shows(&l, "23")
        } else {
            shows(&l, "22") && shows(&l, "23")
        }
    });
    for p in [&mut a, &mut d, &mut b, &mut cc] {
        p.forget();
    }

    // heal: every node converges on the merge, D winning index 23
    part.heal();
    let healed = Instant::now();
    let want = sorted(vec![line("21", &a), line("22", &b), line("23", &d)]);
    let took = wait_owners(&c, &[1, 2, 3], "after the heal", HEAL_BOUND, &want);
    eprintln!("changes_and_a_conflict: converged {took:?} after the heal");

    // every phone is told by its own node; C lost 23: noresource
    drain_until(
        &mut [&mut a, &mut d, &mut b, &mut cc],
        HEAL_BOUND.saturating_sub(healed.elapsed()) + WAIT,
        |p| {
            let l = p.latest();
            shows(&l, "21")
                && shows(&l, "22")
                && shows(&l, "23")
                && (p.name != "C" || p.ended_noresource())
        },
    );
    for p in [&a, &d, &b, &cc] {
        let l = p.latest();
        assert!(
            shows(&l, "21") && shows(&l, "22") && shows(&l, "23"),
            "{}: its newest call-info NOTIFY after the heal shows {l:?} ({} NOTIFYs)",
            p.name,
            p.call_info.len()
        );
    }
    assert!(
        cc.ended_noresource(),
        "C's seize of 23 lost: its line-seize ends with noresource; got {:?}",
        cc.line_seize
            .iter()
            .map(|m| m.raw.clone())
            .collect::<Vec<_>>()
    );
    assert!(!d.ended_noresource(), "D won 23: its line-seize stays");
    assert!(
        cluster_stat(c.node(3), "conflicts_lost") > lost3,
        "node 3 counted the conflict it lost"
    );
    // C's line-seize subscription is gone on every node, D's stays. Its
    // deletion is part of the convergence the heal bound covers: node 3
    // deletes it once it has lost 23, and a node that node 3's dmq does not
    // list as active yet learns of it from the next digest exchange that
    // reaches it
    c.wait_agree(
        "line-seize subscriptions after the heal",
        HEAL_BOUND.saturating_sub(healed.elapsed()) + WAIT,
        subscriptions,
        |v| {
            v.iter().filter(|l| l.contains("line-seize")).count() == 3
                && !v
                    .iter()
                    .any(|l| l.contains("line-seize") && l.contains(&cc.contact()))
        },
    );
    eprintln!(
        "changes_and_a_conflict: C's line-seize gone on every node {:?} after the heal",
        healed.elapsed()
    );
    for id in 1..=3 {
        assert!(
            cluster_stat(c.node(id), "digests_sent") > 0,
            "node {id} sent digests"
        );
    }
    assert!(
        (1..=3)
            .map(|id| cluster_stat(c.node(id), "heal_applied"))
            .sum::<u64>()
            > 0,
        "the digest exchange applied records"
    );
    drop(part);
}

#[test]
fn a_partition_that_heals_before_dmq_notices() {
    let _g = serial();
    let Some((c, part)) = start("heal_quick") else {
        return;
    };
    let mut a = Phone::new(&c, "A", 1);
    let mut b = Phone::new(&c, "B", 2);
    let mut o = Phone::new(&c, "O", 3);
    for p in [&mut a, &mut b, &mut o] {
        p.subscribe_call_info();
    }
    c.wait_agree("subscriptions", WAIT, subscriptions, |v| v.len() == 3);
    for p in [&mut a, &mut b, &mut o] {
        p.forget();
    }

    // a short cut: A's seize is lost on the wire to nodes 2 and 3
    let failed0 = cluster_stat(c.node(1), "tx_failed");
    part.cut(1, 2);
    part.cut(1, 3);
    let _da = a.seize("5");
    // the event: tm gave up on the change to both peers (408). Digests
    // (every 2 s, to both peers) time out too; four failures include a
    // digest sent after the seize, so the change, sent before it with
    // the same fr_timer, has timed out as well: it will not arrive late
    wait_for(
        "node 1's change to nodes 2 and 3 times out",
        Duration::from_secs(15),
        || cluster_stat(c.node(1), "tx_failed") >= failed0 + 4,
    );
    let healed0: Vec<u64> = (2..=3)
        .map(|id| cluster_stat(c.node(id), "heal_applied"))
        .collect();
    let listed = dmq_active(c.node(1), c.addr(2)) && dmq_active(c.node(2), c.addr(1));
    part.heal();
    eprintln!("heal_quick: dmq still listed the peers as active at the heal: {listed}");
    wait_owners(&c, &[1], "node 1", WAIT, &[line("5", &a)]);
    let took = wait_owners(
        &c,
        &[1, 2, 3],
        "after the short cut",
        HEAL_BOUND,
        &[line("5", &a)],
    );
    eprintln!("heal_quick: converged {took:?} after the heal");
    for (i, id) in (2..=3).enumerate() {
        assert!(
            cluster_stat(c.node(id), "heal_applied") > healed0[i],
            "node {id} got A's seize from the digest exchange"
        );
    }
    drain_until(&mut [&mut a, &mut b, &mut o], WAIT + WAIT, |p| {
        shows(&p.latest(), "5")
    });
    for p in [&a, &b, &o] {
        assert!(
            shows(&p.latest(), "5"),
            "{} is told of A's seize: {:?}",
            p.name,
            p.latest()
        );
    }
    drop(part);
}

#[test]
fn a_flapping_link() {
    let _g = serial();
    let Some((c, part)) = start("heal_flap") else {
        return;
    };
    let mut a = Phone::new(&c, "A", 1);
    let mut b = Phone::new(&c, "B", 2);
    let mut o = Phone::new(&c, "O", 3);
    for p in [&mut a, &mut b, &mut o] {
        p.subscribe_call_info();
    }
    c.wait_agree("subscriptions", WAIT, subscriptions, |v| v.len() == 3);

    // each round: cut, changes on each side, heal as soon as something
    // across the cut was lost (timed out, or dmq stopped sending there);
    // A seizes the round's index and releases the previous one, B does the
    // same on its indexes
    let mut held_a: Option<(Dialog, String)> = None;
    let mut held_b: Option<(Dialog, String)> = None;
    for round in 1..=4u32 {
        let failed1 = cluster_stat(c.node(1), "tx_failed");
        let failed2 = cluster_stat(c.node(2), "tx_failed");
        part.cut(1, 2);
        part.cut(1, 3);
        if let Some((mut d, idx)) = held_a.take() {
            a.release(&mut d, &idx);
        }
        if let Some((mut d, idx)) = held_b.take() {
            b.release(&mut d, &idx);
        }
        let ia = (10 + round).to_string();
        let ib = (20 + round).to_string();
        held_a = Some((a.seize(&ia), ia));
        held_b = Some((b.seize(&ib), ib));
        // the other side misses them: what is sent across the cut times
        // out, or dmq (after a failed ping) no longer sends there at all
        wait_for(
            &format!("round {round}: the changes across the cut are lost"),
            Duration::from_secs(15),
            || {
                (cluster_stat(c.node(1), "tx_failed") > failed1
                    || !dmq_active(c.node(1), c.addr(2)))
                    && (cluster_stat(c.node(2), "tx_failed") > failed2
                        || !dmq_active(c.node(2), c.addr(1)))
            },
        );
        part.heal();
    }
    let (ia, ib) = (
        held_a.as_ref().map(|h| h.1.clone()).unwrap_or_default(),
        held_b.as_ref().map(|h| h.1.clone()).unwrap_or_default(),
    );
    let want = sorted(vec![line(&ia, &a), line(&ib, &b)]);
    let took = wait_owners(
        &c,
        &[1, 2, 3],
        "after the last heal",
        HEAL_BOUND + HEAL_BOUND,
        &want,
    );
    eprintln!("heal_flap: converged {took:?} after the last heal");
    drain_until(&mut [&mut a, &mut b, &mut o], HEAL_BOUND, |p| {
        let l = p.latest();
        shows(&l, &ia)
            && shows(&l, &ib)
            && !(11..=13).chain(21..=23).any(|i| shows(&l, &i.to_string()))
    });
    for p in [&a, &b, &o] {
        let l = p.latest();
        assert!(
            shows(&l, &ia)
                && shows(&l, &ib)
                && !(11..=13).chain(21..=23).any(|i| shows(&l, &i.to_string())),
            "{}: newest call-info NOTIFY shows {l:?}, want only {ia} and {ib} busy",
            p.name
        );
    }
    drop(part);
}
