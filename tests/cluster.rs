//! Cluster replication over DMQ (docs/cluster-design.md, section 5): up to
//! three real Kamailio nodes on 127.0.0.1, .2 and .3 (one port, node N has
//! `dmq_node_id` N), phones subscribed through different nodes.
//!
//! * `cross_node_lights`: a seize on node 1 and a call through node 2, held
//!   through node 3 and retrieved through node 2, light every phone's key,
//!   each phone getting its NOTIFYs from the node it subscribed through only,
//!   and the nodes' `sca.all_appearances` agree after every step;
//! * `simultaneous_seize`: two phones on two nodes seize index 1 at the same
//!   instant, ten times: one owner everywhere, the loser told (480, or a
//!   terminating line-seize NOTIFY);
//! * `node_kill_and_resync`: `kill -9` of the node a call went through, the
//!   others keep the state, the restarted node pulls a full sync and NOTIFYs
//!   its phones again;
//! * `failover_resubscribe`: a phone whose node died refreshes its
//!   subscription through the survivor, which takes it over (NOTIFY in its
//!   dialog, CSeq going on) and keeps it informed;
//! * `malformed_dmq_rejected`: KDMQ bodies that are not ours get a 400, a
//!   log line and a counter, and change nothing;
//! * `peer_without_dmq`: dmq loaded but `enable_dmq` off: `sca.cluster`
//!   faults, KDMQ for `sca_rs` is dmq's 404, RPC listings keep their format;
//! * `expired_line_seize_frees_the_line_on_every_node`: a line-seize made
//!   on node 1 and never refreshed expires: the line is idle on every node,
//!   each phone gets exactly one idle NOTIFY from its own node;
//! * `a_line_stuck_in_seized_is_purged_on_every_node`: a line seized on
//!   node 2 (its line-seize refreshed, no call) for longer than
//!   `seized_ttl`: the purge frees it on every node, each phone gets
//!   exactly one idle NOTIFY from its own node, the line-seize
//!   subscription stays;
//! * `every_release_path_reaches_every_node`: line-seize unsubscribe,
//!   `sca.release_appearance` on another node, a call's BYE: the same;
//! * `a_dead_phone_releases_its_line_on_every_node`: subscriber liveness
//!   declares the seizing phone down on its node: the same, and its
//!   subscriptions are gone everywhere;
//! * `an_rpc_deactivation_reaches_every_node`: `sca.deactivate_subscription`
//!   of the seizing phone on its node: its last NOTIFYs from that node
//!   only, its subscriptions gone from every node, and the line it held
//!   (left seized, as in the C module) freed on every node at
//!   `seized_ttl`, each other phone told once by its own node;
//! * `a_rejected_call_and_a_rebooted_phone_release_on_every_node`: a call
//!   rejected with 486 through another node, and the seizing phone
//!   subscribing afresh after a reboot: the same as the other release
//!   paths.
//!
//! Where 127.0.0.2/.3 are not usable the tests print `SKIP: ...` and return.
//! The tests run one at a time (three Kamailios each, timing checks).

mod common;

use std::net::SocketAddr;
use std::sync::{Barrier, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::cluster::{
    appearances, cluster_field, cluster_stat, kdmq_request, node_field, send_for_reply,
    subscriptions, Cluster, NodeSpec,
};
use common::kamailio::Kamailio;
use common::scenarios::{call_info, sdp};
use common::sip::{Dialog, Response, SipMessage, Subscribe, Ua};

/// The shared (SCA) AoR.
const AOR: &str = "sip:100@127.0.0.1";
/// The callee (not SCA).
const CALLEE_AOR: &str = "sip:200@127.0.0.1";
/// Wait for an expected reply or request.
const WAIT: Duration = Duration::from_secs(3);
/// No further NOTIFY for this long ends a step's collection.
const QUIET: Duration = Duration::from_millis(400);
/// Replication on loopback: the nodes agree within this.
const AGREE: Duration = Duration::from_secs(3);
/// dmq lists every node within this.
const MESH: Duration = Duration::from_secs(20);

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

// ------------------------------------------------------------ phones

/// A phone subscribed to the shared AoR through one node (`home`): the
/// only node that may NOTIFY it.
struct Phone {
    name: String,
    ua: Ua,
    home: SocketAddr,
    home_id: usize,
    /// Its call-info subscription dialog.
    sub: Option<Dialog>,
    /// Highest NOTIFY CSeq seen on the call-info subscription.
    last_cseq: u32,
}

impl Phone {
    fn new(c: &Cluster, name: &str, user: &str, home_id: usize) -> Phone {
        let home = c.addr(home_id);
        let mut ua = Ua::new(name, user, home).expect("bind UA socket");
        ua.auto_answer_notify = true;
        Phone {
            name: name.to_string(),
            ua,
            home,
            home_id,
            sub: None,
            last_cseq: 0,
        }
    }

    /// `host:port` of its contact, as `sca.all_subscriptions` and the
    /// owner column of `sca.all_appearances` show it.
    fn contact_hostport(&self) -> String {
        self.ua.local.to_string()
    }

    /// Subscribe call-info through `home`: 202 and the first NOTIFY, from
    /// `home`.
    fn subscribe_call_info(&mut self) {
        self.ua.proxy = self.home;
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
        let n = self
            .ua
            .expect_request("NOTIFY", WAIT)
            .expect("NOTIFY after SUBSCRIBE");
        assert_eq!(
            n.peer,
            Some(self.home),
            "{}: first NOTIFY from its own node:\n{}",
            self.name,
            n.raw
        );
        self.last_cseq = n.cseq().map(|c| c.0).unwrap_or(0);
        self.sub = Some(d);
    }

    /// A line-seize SUBSCRIBE for `idx` through `home` (new dialog, 15 s):
    /// the dialog and the final reply.
    fn seize(&mut self, idx: &str) -> (Dialog, SipMessage) {
        self.ua.proxy = self.home;
        let mut d = self.ua.dialog(AOR);
        let s = self
            .ua
            .send_subscribe(
                &mut d,
                &Subscribe::new("line-seize", 15).call_info(&call_info(idx)),
            )
            .expect("send line-seize");
        let r = self
            .ua
            .expect_final_response(&s, WAIT)
            .expect("reply to line-seize");
        if r.status().is_some_and(|s| (200..300).contains(&s)) {
            d.update_from_response(&r);
        }
        (d, r)
    }
}

/// What one phone got during a step.
#[derive(Default, Debug)]
struct Got {
    call_info: Vec<SipMessage>,
    line_seize: Vec<SipMessage>,
}

fn call_info_of(m: &SipMessage) -> String {
    m.header_lines("Call-Info").join(",")
}

/// Collect the NOTIFYs of every phone until each has at least `min`
/// call-info NOTIFYs (at most [`WAIT`]) and none has arrived for [`QUIET`].
/// Every NOTIFY must come from the phone's own node, in its subscription's
/// dialog, and call-info CSeqs must be new and above the highest one seen
/// before (a second node NOTIFYing the same subscription, or a duplicate,
/// breaks one or the other; NOTIFYs sent by two processes of one node may
/// arrive out of order, which is fine).
fn collect(phones: &mut [&mut Phone], min: usize) -> Vec<Got> {
    let start = Instant::now();
    let mut last = Instant::now();
    let mut got: Vec<Got> = phones.iter().map(|_| Got::default()).collect();
    let floors: Vec<u32> = phones.iter().map(|p| p.last_cseq).collect();
    loop {
        let mut any = false;
        for ((p, g), floor) in phones.iter_mut().zip(got.iter_mut()).zip(&floors) {
            while let Ok(m) = p.ua.recv_where(Duration::from_millis(5), "NOTIFY", |m| {
                m.method() == Some("NOTIFY")
            }) {
                any = true;
                assert_eq!(
                    m.peer,
                    Some(p.home),
                    "{} got a NOTIFY from {:?}, not from its own node {} (node {}):\n{}",
                    p.name,
                    m.peer,
                    p.home,
                    p.home_id,
                    m.raw
                );
                match m.header("Event") {
                    Some("call-info") => {
                        let cseq = m.cseq().map(|c| c.0).unwrap_or(0);
                        assert!(
                            cseq > *floor && !g.call_info.iter().any(|o| o.cseq() == m.cseq()),
                            "{}: call-info NOTIFY CSeq {cseq}, not above {floor} or seen twice (a duplicate or a second notifier):\n{}",
                            p.name,
                            m.raw
                        );
                        if let Some(d) = &p.sub {
                            assert_eq!(
                                m.call_id(),
                                Some(d.call_id.as_str()),
                                "{}: NOTIFY in its subscription's dialog",
                                p.name
                            );
                        }
                        p.last_cseq = p.last_cseq.max(cseq);
                        g.call_info.push(m);
                    }
                    Some("line-seize") => g.line_seize.push(m),
                    other => panic!("{}: NOTIFY with Event {other:?}:\n{}", p.name, m.raw),
                }
            }
        }
        if any {
            last = Instant::now();
        }
        let enough = got.iter().all(|g| g.call_info.len() >= min);
        if enough && last.elapsed() >= QUIET && start.elapsed() >= QUIET {
            return got;
        }
        if !enough && start.elapsed() >= WAIT {
            return got;
        }
    }
}

/// [`collect`] until `done` holds for what every phone got so far, or
/// [`WAIT`] passes (the caller's assertions then say what is missing): for
/// steps whose NOTIFY count varies, so a late one still counts here rather
/// than spilling into the next step.
fn collect_until(phones: &mut [&mut Phone], done: impl Fn(&[Got]) -> bool) -> Vec<Got> {
    let deadline = Instant::now() + WAIT;
    let mut got: Vec<Got> = phones.iter().map(|_| Got::default()).collect();
    loop {
        for (g, more) in got.iter_mut().zip(collect(phones, 0)) {
            g.call_info.extend(more.call_info);
            g.line_seize.extend(more.line_seize);
        }
        if done(&got) || Instant::now() >= deadline {
            return got;
        }
    }
}

/// The call-info NOTIFY with the highest CSeq (the newest state).
fn latest(g: &Got) -> Option<&SipMessage> {
    g.call_info
        .iter()
        .max_by_key(|m| m.cseq().map(|c| c.0).unwrap_or(0))
}

/// One step's call-info NOTIFYs: every phone gets between `min` and `max`
/// of them, each showing `want` in its Call-Info. Returns each phone's
/// line-seize NOTIFYs.
fn expect_notifies(
    step: &str,
    phones: &mut [&mut Phone],
    min: usize,
    max: usize,
    want: &str,
) -> Vec<Vec<SipMessage>> {
    let got = collect(phones, min);
    let mut ls = Vec::new();
    for (p, g) in phones.iter().zip(got) {
        let n = g.call_info.len();
        assert!(
            (min..=max).contains(&n),
            "{step}: {} got {n} call-info NOTIFYs from node {}, want {min}..={max}:\n{}",
            p.name,
            p.home_id,
            g.call_info
                .iter()
                .map(call_info_of)
                .collect::<Vec<_>>()
                .join("\n")
        );
        for m in &g.call_info {
            let ci = call_info_of(m);
            assert!(
                ci.contains(want),
                "{step}: {}'s NOTIFY shows {ci:?}, want {want:?}",
                p.name
            );
        }
        ls.push(g.line_seize);
    }
    ls
}

/// The state column of an appearance line, and its index.
fn app_index_state(line: &str) -> (String, String) {
    let f: Vec<&str> = line.split(' ').collect();
    (
        f.get(1).unwrap_or(&"").to_string(),
        f.get(2).unwrap_or(&"").to_string(),
    )
}

/// Wait until every running node shows the same appearances: exactly one,
/// index 1, in `state`, and (when given) created by node `node`.
fn agree_one(c: &Cluster, step: &str, state: &str, node: Option<usize>) -> String {
    let v = c.wait_agree(step, AGREE, appearances, |v| {
        v.len() == 1
            && app_index_state(&v[0]) == ("1".to_string(), state.to_string())
            && node.is_none_or(|n| node_field(&v[0]) == Some(n))
    });
    v[0].clone()
}

fn agree_none(c: &Cluster, step: &str) {
    c.wait_agree(step, AGREE, appearances, |v| v.is_empty());
}

// ------------------------------------------------------------ callee

/// The callee's reply to `req` (its To-tag; Record-Route and Contact for
/// 1xx/2xx; SDP if given).
fn answer(d: &mut Ua, req: &SipMessage, status: u16, reason: &str, body: Option<Vec<u8>>) {
    let tag = d.uas_tag(req.call_id().unwrap_or(""));
    let mut r = Response::for_request(req, status, reason).with_to_tag(&tag);
    if (101..300).contains(&status) {
        r = r
            .record_route_from(req)
            .header("Contact", &format!("<{}>", d.contact_uri()));
    }
    if let Some(b) = body {
        r = r.body("application/sdp", &b);
    }
    d.send_response(req, &r).expect("callee reply");
}

/// The next INVITE to the callee, answered at once with 100 Trying (as a
/// phone does: the proxy then stops retransmitting it, so no repeated
/// reply runs the SCA reply logic a second time).
fn callee_gets_invite(d: &mut Ua, what: &str) -> SipMessage {
    let inv = d
        .expect_request("INVITE", WAIT)
        .unwrap_or_else(|e| panic!("callee gets {what}: {e}"));
    d.send_response(&inv, &Response::for_request(&inv, 100, "Trying"))
        .expect("100 Trying");
    inv
}

/// Responses to `sent` until one with `status` (provisionals before it
/// skipped).
fn expect_status(ua: &mut Ua, sent: &SipMessage, status: u16) -> SipMessage {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let r = ua
            .expect_response(sent, left)
            .unwrap_or_else(|e| panic!("{}: no {status} to {}: {e}", ua.name, sent.start_line));
        if r.status() == Some(status) {
            return r;
        }
        assert!(
            r.status().unwrap_or(0) < 200,
            "{}: got {} instead of {status}",
            ua.name,
            r.start_line
        );
    }
}

/// `<sip:127.0.0.N:P;lr=on>`: a Route to node `id`, so an in-dialog request
/// goes through that node only (a phone failing over to another proxy).
fn route_via(c: &Cluster, id: usize) -> String {
    format!("<sip:{};lr=on>", c.addr(id))
}

/// A call of `caller` to the callee `d`, sent through node `via`, with
/// Call-Info appearance-index=1: the caller's dialog, its INVITE, and the
/// INVITE as `d` got it.
struct Call {
    dlg: Dialog,
    invite: SipMessage,
    d_invite: SipMessage,
}

fn invite(c: &Cluster, caller: &mut Phone, d: &mut Ua, via: usize) -> Call {
    caller.ua.proxy = c.addr(via);
    let mut dlg = caller.ua.dialog(CALLEE_AOR);
    dlg.remote_target = d.contact_uri();
    let req = caller
        .ua
        .request(&mut dlg, "INVITE")
        .header("Call-Info", &call_info("1"))
        .body("application/sdp", &sdp(&caller.name, 1, "sendrecv"));
    let invite = caller.ua.send(&req).expect("send INVITE");
    let d_invite = callee_gets_invite(d, "the INVITE");
    assert_eq!(
        d_invite.peer,
        Some(c.addr(via)),
        "the INVITE went through node {via}"
    );
    Call {
        dlg,
        invite,
        d_invite,
    }
}

/// ACK for the 2xx of `inv` in `dlg`; the callee gets it.
fn ack(caller: &mut Phone, dlg: &Dialog, inv: &SipMessage, d: &mut Ua) {
    let cseq = inv.cseq().map(|c| c.0).unwrap_or(1);
    let ack = caller.ua.request_with_cseq(dlg, "ACK", cseq);
    caller.ua.send(&ack).expect("send ACK");
    d.expect_request("ACK", WAIT).expect("callee gets the ACK");
}

/// Seize index 1 by `a` on node 1 (every phone sees it), then a call from
/// `a` through node 2 rung and answered by `d`, ACKed. Each state change
/// (seized, progressing, active) is exactly one call-info NOTIFY to every
/// phone, from its own node; a step that changes no state (the INVITE, the
/// ACK) gives each at most one; after each step every node shows the same
/// appearance, created by node 1.
fn seize_and_call(c: &Cluster, a: &mut Phone, others: &mut [&mut Phone], d: &mut Ua) -> Call {
    // seize on node 1
    let (_ls_dlg, r) = a.seize("1");
    assert_eq!(r.status(), Some(200), "seize through node 1: {}", r.raw);
    {
        let mut all: Vec<&mut Phone> = vec![&mut *a];
        all.extend(others.iter_mut().map(|p| &mut **p));
        let ls = expect_notifies(
            "seize",
            &mut all,
            1,
            1,
            "appearance-index=1;appearance-state=seized",
        );
        assert!(
            ls[0].iter().any(|m| m
                .header("Subscription-State")
                .is_some_and(|s| s.starts_with("active"))),
            "A got its line-seize NOTIFY: {:?}",
            ls[0].iter().map(|m| m.raw.clone()).collect::<Vec<_>>()
        );
        assert!(
            ls[1..].iter().all(|l| l.is_empty()),
            "only A has a line-seize subscription"
        );
    }
    let line = agree_one(c, "after the seize on node 1", "seized", Some(1));
    assert!(
        line.contains(&a.contact_hostport()),
        "A owns the line: {line}"
    );

    // INVITE through node 2: the line stays seized, now with the call's
    // dialog; every phone is told once
    let mut call = invite(c, a, d, 2);
    {
        let mut all: Vec<&mut Phone> = vec![&mut *a];
        all.extend(others.iter_mut().map(|p| &mut **p));
        expect_notifies(
            "INVITE through node 2",
            &mut all,
            1,
            1,
            "appearance-index=1;appearance-state=seized",
        );
    }
    agree_one(c, "after the INVITE through node 2", "seized", Some(1));

    // 180
    let di = call.d_invite.clone();
    answer(d, &di, 180, "Ringing", None);
    let r = expect_status(&mut a.ua, &call.invite, 180);
    call.dlg.update_from_response(&r);
    {
        let mut all: Vec<&mut Phone> = vec![&mut *a];
        all.extend(others.iter_mut().map(|p| &mut **p));
        let ls = expect_notifies(
            "180 through node 2",
            &mut all,
            1,
            1,
            "appearance-index=1;appearance-state=progressing",
        );
        // the C module ends the line-seize subscription here: node 2 sees
        // the 180 and deletes it, node 1 (A's own, checked in collect)
        // applies the delete and sends the last NOTIFY
        assert_eq!(ls[0].len(), 1, "A's line-seize subscription ends with one NOTIFY at the 180");
        let st = ls[0][0].header("Subscription-State").unwrap_or("");
        assert!(
            st.starts_with("terminated") && st.contains("reason=noresource"),
            "A's line-seize NOTIFY at 180: {st}"
        );
    }
    agree_one(c, "after the 180 through node 2", "progressing", Some(1));

    // 200 + ACK
    answer(d, &di, 200, "OK", Some(sdp("D", 1, "sendrecv")));
    let r = expect_status(&mut a.ua, &call.invite, 200);
    call.dlg.update_from_response(&r);
    assert_eq!(
        call.dlg.route_set,
        vec![route_via(c, 2)],
        "node 2 record-routed"
    );
    {
        let mut all: Vec<&mut Phone> = vec![&mut *a];
        all.extend(others.iter_mut().map(|p| &mut **p));
        expect_notifies(
            "200 through node 2",
            &mut all,
            1,
            1,
            "appearance-index=1;appearance-state=active",
        );
    }
    let inv = call.invite.clone();
    // the ACK changes nothing: no NOTIFY anywhere
    ack(a, &call.dlg.clone(), &inv, d);
    {
        let mut all: Vec<&mut Phone> = vec![&mut *a];
        all.extend(others.iter_mut().map(|p| &mut **p));
        expect_notifies(
            "ACK through node 2",
            &mut all,
            0,
            0,
            "appearance-index=1;appearance-state=active",
        );
    }
    let line = agree_one(c, "after the 200/ACK through node 2", "active", Some(1));
    assert!(
        line.contains(call.dlg.call_id.as_str()),
        "the call's dialog is on every node: {line}"
    );
    call
}

/// Wait until `sca.cluster` says `synced` on every running node.
/// Phones A, B and C of line 100, homed on nodes 1, 2 and 3, each
/// subscribed to call-info, once every node stores the three.
fn three_phones_watching(c: &Cluster) -> (Phone, Phone, Phone) {
    let mut a = Phone::new(c, "A", "100", 1);
    let mut b = Phone::new(c, "B", "100", 2);
    let mut cc = Phone::new(c, "C", "100", 3);
    for p in [&mut a, &mut b, &mut cc] {
        p.subscribe_call_info();
    }
    c.wait_agree("subscriptions", AGREE, subscriptions, |v| v.len() == 3);
    (a, b, cc)
}

fn wait_synced(c: &Cluster, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let states: Vec<(usize, String)> = c
            .running()
            .into_iter()
            .map(|(id, k)| (id, cluster_field(k, "sync_state")))
            .collect();
        if states.iter().all(|(_, s)| s == "synced") {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "sync_state not synced everywhere within {within:?}: {states:?}"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

fn log_count(k: &Kamailio, needle: &str) -> usize {
    k.log().matches(needle).count()
}

// ------------------------------------------------------------ tests

#[test]
fn cross_node_lights() {
    let _g = serial();
    let Some(c) = Cluster::start_n("cross_node_lights", 3) else {
        return;
    };
    c.wait_mesh(MESH);
    wait_synced(&c, Duration::from_secs(10));
    for (id, k) in c.running() {
        assert_eq!(cluster_field(k, "enabled"), "1");
        assert_eq!(cluster_stat(k, "node_id"), id as u64);
        assert_eq!(cluster_field(k, "node_uri"), c.uri(id));
        cluster_stat(k, "boot_id");
    }

    let mut a = Phone::new(&c, "A", "100", 1);
    let mut b = Phone::new(&c, "B", "100", 2);
    let mut cc = Phone::new(&c, "C", "100", 3);
    let mut d = Ua::new("D", "200", c.addr(2)).expect("bind UA socket");
    for p in [&mut a, &mut b, &mut cc] {
        p.subscribe_call_info();
    }
    // every node holds the three subscriptions, each with its origin
    let subs = c.wait_agree("subscriptions", AGREE, subscriptions, |v| v.len() == 3);
    for p in [&a, &b, &cc] {
        let line = subs
            .iter()
            .find(|l| l.contains(&p.contact_hostport()))
            .unwrap_or_else(|| panic!("{}'s subscription on every node: {subs:?}", p.name));
        assert_eq!(
            node_field(line),
            Some(p.home_id),
            "origin of {}'s subscription: {line}",
            p.name
        );
    }
    // nobody got a NOTIFY for another node's subscription
    expect_notifies(
        "after subscribing",
        &mut [&mut a, &mut b, &mut cc],
        0,
        0,
        "",
    );

    let mut call = seize_and_call(&c, &mut a, &mut [&mut b, &mut cc], &mut d);

    // hold through node 3: A's phone now uses node 3 as its proxy
    a.ua.proxy = c.addr(3);
    call.dlg.route_set = vec![route_via(&c, 3)];
    let req =
        a.ua.request(&mut call.dlg, "INVITE")
            .header("Call-Info", &call_info("1"))
            .body("application/sdp", &sdp("A", 2, "sendonly"));
    let reinvite = a.ua.send(&req).expect("send re-INVITE");
    let d_re = callee_gets_invite(&mut d, "the re-INVITE");
    assert_eq!(
        d_re.peer,
        Some(c.addr(3)),
        "the re-INVITE went through node 3"
    );
    expect_notifies(
        "hold through node 3",
        &mut [&mut a, &mut b, &mut cc],
        1,
        1,
        "appearance-index=1;appearance-state=held",
    );
    answer(&mut d, &d_re, 200, "OK", Some(sdp("D", 2, "recvonly")));
    expect_status(&mut a.ua, &reinvite, 200);
    let dlg = call.dlg.clone();
    ack(&mut a, &dlg, &reinvite, &mut d);
    expect_notifies(
        "200/ACK of the hold",
        &mut [&mut a, &mut b, &mut cc],
        0,
        2,
        "appearance-index=1;appearance-state=held",
    );
    agree_one(&c, "after the hold through node 3", "held", Some(1));

    // retrieval by B through node 2: an INVITE to the shared AoR, which
    // node 2 turns into an INVITE with Replaces to the held callee
    b.ua.proxy = c.addr(2);
    let mut bd = b.ua.dialog(AOR);
    let req =
        b.ua.request(&mut bd, "INVITE")
            .header("Call-Info", &call_info("1"))
            .body("application/sdp", &sdp("B", 1, "sendrecv"));
    let b_inv = b.ua.send(&req).expect("send retrieve INVITE");
    let d_ret = callee_gets_invite(&mut d, "the retrieve INVITE");
    assert_eq!(d_ret.peer, Some(c.addr(2)));
    assert_eq!(
        d_ret.request_uri(),
        Some(d.contact_uri().as_str()),
        "node 2 sent the retrieval to the held callee"
    );
    let replaces = d_ret
        .header("Replaces")
        .unwrap_or_else(|| panic!("no Replaces:\n{}", d_ret.raw));
    assert!(
        replaces.starts_with(call.dlg.call_id.as_str()),
        "Replaces names A's call: {replaces}"
    );
    expect_notifies(
        "retrieve through node 2",
        &mut [&mut a, &mut b, &mut cc],
        1,
        1,
        "appearance-index=1;appearance-state=active",
    );
    answer(&mut d, &d_ret, 200, "OK", Some(sdp("D", 3, "sendrecv")));
    let r = expect_status(&mut b.ua, &b_inv, 200);
    bd.update_from_response(&r);
    let bdc = bd.clone();
    ack(&mut b, &bdc, &b_inv, &mut d);
    expect_notifies(
        "200/ACK of the retrieval",
        &mut [&mut a, &mut b, &mut cc],
        0,
        2,
        "appearance-index=1;appearance-state=active",
    );
    agree_one(&c, "after the retrieval through node 2", "active", None);

    // the callee ends the replaced dialog with A (through node 2)
    let d_tag = d.uas_tag(call.d_invite.call_id().unwrap_or(""));
    let mut old = Dialog::from_request_uas(&call.d_invite, &d_tag).expect("callee's dialog with A");
    old.local_cseq = 1;
    d.proxy = c.addr(2);
    let bye = d.request(&mut old, "BYE");
    let bye = d.send(&bye).expect("send BYE");
    let a_bye = a.ua.expect_request("BYE", WAIT).expect("A gets the BYE");
    a.ua.reply(&a_bye, 200, "OK").expect("A answers the BYE");
    expect_status(&mut d, &bye, 200);
    expect_notifies(
        "BYE of the replaced dialog",
        &mut [&mut a, &mut b, &mut cc],
        0,
        1,
        "appearance-index=1;appearance-state=active",
    );
    agree_one(&c, "after the BYE of the replaced dialog", "active", None);

    // B hangs up through node 2: the line is idle everywhere
    let bye = b.ua.request(&mut bd, "BYE");
    let bye = b.ua.send(&bye).expect("send BYE");
    let d_bye = d.expect_request("BYE", WAIT).expect("callee gets B's BYE");
    answer(&mut d, &d_bye, 200, "OK", None);
    expect_status(&mut b.ua, &bye, 200);
    expect_notifies(
        "hang-up through node 2",
        &mut [&mut a, &mut b, &mut cc],
        1,
        1,
        "<sip:127.0.0.1>;appearance-index=*;appearance-state=idle",
    );
    agree_none(&c, "after the hang-up");

    for (id, k) in c.running() {
        assert!(cluster_stat(k, "tx_msgs") > 0, "node {id} sent changes");
        assert!(cluster_stat(k, "tx_bytes") > 0, "node {id}");
        assert!(
            cluster_stat(k, "rx_applied") > 0,
            "node {id} applied changes"
        );
        assert_eq!(cluster_stat(k, "rx_rejected"), 0, "node {id}");
        assert_eq!(cluster_stat(k, "conflicts_lost"), 0, "node {id}");
        // each node lists the other two as peers that sent it changes and
        // answered its own with 200
        for other in c.ids().into_iter().filter(|o| *o != id) {
            let p = peer(k, c.addr(other))
                .unwrap_or_else(|| panic!("node {id} lists node {other}: {:?}", k.rpc(&["sca.cluster"])));
            assert_eq!(p["node_id"], other.to_string(), "node {id}'s view of node {other}: {p:?}");
            assert_ne!(p["rx"], "0", "{p:?}");
            assert_ne!(p["tx_ok"], "0", "{p:?}");
            assert_eq!(p["last_code"], "200", "{p:?}");
        }
    }
}

/// The `peer <host:port> name value ...` line of `sca.cluster` for `addr`.
fn peer(k: &Kamailio, addr: SocketAddr) -> Option<std::collections::HashMap<String, String>> {
    let want = format!("peer {addr} ");
    let out = k.rpc(&["sca.cluster"]);
    let line = out.lines().map(str::trim).find(|l| l.starts_with(&want))?;
    let fields: Vec<&str> = line[want.len()..].split(' ').collect();
    Some(fields.chunks(2).filter(|kv| kv.len() == 2).map(|kv| (kv[0].to_string(), kv[1].to_string())).collect())
}

#[test]
fn simultaneous_seize() {
    const ROUNDS: usize = 10;
    let _g = serial();
    let Some(c) = Cluster::start_n("simultaneous_seize", 3) else {
        return;
    };
    c.wait_mesh(MESH);
    let mut a = Phone::new(&c, "A", "100", 1);
    let mut b = Phone::new(&c, "B", "100", 2);
    let mut o = Phone::new(&c, "O", "100", 3);
    for p in [&mut a, &mut b, &mut o] {
        p.subscribe_call_info();
    }
    c.wait_agree("subscriptions", AGREE, subscriptions, |v| v.len() == 3);

    let sub = Subscribe::new("line-seize", 15).call_info(&call_info("1"));
    let (mut by_480, mut after_the_fact) = (0, 0);
    for round in 1..=ROUNDS {
        let lost_before: Vec<u64> = (1..=3)
            .map(|id| cluster_stat(c.node(id), "conflicts_lost"))
            .collect();
        let mut da = a.ua.dialog(AOR);
        let mut db = b.ua.dialog(AOR);
        let ra = a.ua.subscribe_request(&mut da, &sub);
        let rb = b.ua.subscribe_request(&mut db, &sub);
        let barrier = Barrier::new(2);
        let (fa, fb) = thread::scope(|s| {
            let (ua_a, ua_b, bar) = (&mut a.ua, &mut b.ua, &barrier);
            let ha = s.spawn(move || {
                bar.wait();
                let sent = ua_a.send(&ra)?;
                ua_a.expect_final_response(&sent, WAIT)
            });
            let hb = s.spawn(move || {
                bar.wait();
                let sent = ua_b.send(&rb)?;
                ua_b.expect_final_response(&sent, WAIT)
            });
            (
                ha.join().expect("A's thread"),
                hb.join().expect("B's thread"),
            )
        });
        let fa = fa.unwrap_or_else(|e| panic!("round {round}: A: {e}"));
        let fb = fb.unwrap_or_else(|e| panic!("round {round}: B: {e}"));
        let (sa, sb) = (fa.status(), fb.status());
        assert!(
            matches!(
                (sa, sb),
                (Some(200), Some(200)) | (Some(200), Some(480)) | (Some(480), Some(200))
            ),
            "round {round}: A got {}, B got {}",
            fa.start_line,
            fb.start_line
        );
        // the one owner, the same on every node, created by its node
        let (ca, cb) = (a.contact_hostport(), b.contact_hostport());
        let line = c.wait_agree(
            &format!("round {round}: owner of index 1"),
            AGREE,
            appearances,
            |v| {
                v.len() == 1
                    && app_index_state(&v[0]) == ("1".into(), "seized".into())
                    && (v[0].contains(&ca) != v[0].contains(&cb))
            },
        )[0]
        .clone();
        let a_won = line.contains(&ca);
        let (w, _l) = if a_won { (&a, &b) } else { (&b, &a) };
        assert_eq!(
            node_field(&line),
            Some(w.home_id),
            "round {round}: the winner's node created the appearance: {line}"
        );
        if sa == Some(480) || sb == Some(480) {
            // the peer's seize had arrived first: the 200 is the winner
            assert_eq!(
                a_won,
                sa == Some(200),
                "round {round}: the phone that got 200 owns the line: {line}"
            );
            by_480 += 1;
        } else {
            after_the_fact += 1;
        }
        let both_200 = sa == Some(200) && sb == Some(200);

        // NOTIFYs: each from the phone's own node; every phone's group
        // NOTIFYs end showing index 1 seized; the loser of a 200/200 race
        // gets its line-seize subscription terminated (noresource)
        let names = ["A", "B", "O"];
        let (wi, li) = if a_won { (0, 1) } else { (1, 0) };
        let terminated = |ms: &[SipMessage]| {
            ms.iter().any(|m| {
                m.header("Subscription-State")
                    .is_some_and(|s| s.starts_with("terminated") && s.contains("reason=noresource"))
            })
        };
        let shows = |g: &Got, want: &str| latest(g).is_some_and(|m| call_info_of(m).contains(want));
        let got = collect_until(&mut [&mut a, &mut b, &mut o], |got| {
            got.iter().all(|g| shows(g, "appearance-index=1;appearance-state=seized"))
                && (!both_200 || terminated(&got[li].line_seize))
        });
        for (i, g) in got.iter().enumerate() {
            let last = latest(g)
                .unwrap_or_else(|| panic!("round {round}: {} got no call-info NOTIFY", names[i]));
            assert!(
                call_info_of(last).contains("appearance-index=1;appearance-state=seized"),
                "round {round}: {}'s last NOTIFY shows {}",
                names[i],
                call_info_of(last)
            );
        }
        assert!(
            !terminated(&got[wi].line_seize),
            "round {round}: the winner's line-seize stays"
        );
        if both_200 {
            assert!(
                terminated(&got[li].line_seize),
                "round {round}: both got 200; the loser ({}) must get a terminating line-seize NOTIFY, got {:?}",
                names[li],
                got[li].line_seize.iter().map(|m| m.raw.clone()).collect::<Vec<_>>()
            );
            let loser_node = if a_won { 2 } else { 1 };
            assert!(
                cluster_stat(c.node(loser_node), "conflicts_lost") > lost_before[loser_node - 1],
                "round {round}: node {loser_node} counted the conflict it lost"
            );
        }

        // the winner releases; the line is idle everywhere
        let (w, wd, wresp) = if a_won {
            (&mut a, &mut da, &fa)
        } else {
            (&mut b, &mut db, &fb)
        };
        wd.update_from_response(wresp);
        w.ua.proxy = w.home;
        let s =
            w.ua.send_subscribe(
                wd,
                &Subscribe::new("line-seize", 0).call_info(&call_info("1")),
            )
            .expect("send release");
        let r =
            w.ua.expect_final_response(&s, WAIT)
                .expect("reply to release");
        assert_eq!(r.status(), Some(200), "round {round}: release: {}", r.raw);
        agree_none(&c, &format!("round {round}: release"));
        let idle = "<sip:127.0.0.1>;appearance-index=*;appearance-state=idle";
        let got = collect_until(&mut [&mut a, &mut b, &mut o], |got| {
            got.iter().all(|g| latest(g).is_some_and(|m| call_info_of(m) == idle))
        });
        for (i, g) in got.iter().enumerate() {
            let last = latest(g).unwrap_or_else(|| {
                panic!("round {round}: {} got no NOTIFY for the release", names[i])
            });
            assert_eq!(
                call_info_of(last),
                idle,
                "round {round}: {} after the release",
                names[i]
            );
        }
    }
    eprintln!("simultaneous_seize: {ROUNDS} rounds, loser told by 480 in {by_480}, after the fact in {after_the_fact}");
}

#[test]
fn node_kill_and_resync() {
    let _g = serial();
    let Some(mut c) = Cluster::start_n("node_kill_and_resync", 3) else {
        return;
    };
    c.wait_mesh(MESH);
    let mut a = Phone::new(&c, "A", "100", 1);
    let mut b = Phone::new(&c, "B", "100", 2);
    let mut cc = Phone::new(&c, "C", "100", 3);
    let mut d = Ua::new("D", "200", c.addr(2)).expect("bind UA socket");
    for p in [&mut a, &mut b, &mut cc] {
        p.subscribe_call_info();
    }
    c.wait_agree("subscriptions", AGREE, subscriptions, |v| v.len() == 3);
    let mut call = seize_and_call(&c, &mut a, &mut [&mut b, &mut cc], &mut d);
    let apps = c.wait_agree("appearances before the crash", AGREE, appearances, |v| {
        v.len() == 1
    });
    let subs = c.wait_agree(
        "subscriptions before the crash",
        AGREE,
        subscriptions,
        |v| v.len() >= 3,
    );

    // node 2, which the call went through, crashes (kill9 returns once it
    // is reaped; every node agreed on the state before, so no replication
    // message is in flight that could still change the survivors)
    c.kill9(2);
    for id in [1, 3] {
        assert_eq!(
            appearances(c.node(id)),
            apps,
            "node {id} keeps the appearance"
        );
        assert_eq!(
            subscriptions(c.node(id)),
            subs,
            "node {id} keeps every subscription, node 2's too"
        );
    }

    // it comes back (same address, node id and config; empty store and DB)
    let t = Instant::now();
    c.restart(2);
    c.wait_mesh(MESH);
    let k2 = c.node(2);
    let deadline = Instant::now() + Duration::from_secs(15);
    while cluster_field(k2, "sync_state") != "synced" {
        assert!(
            Instant::now() < deadline,
            "node 2 not synced within 15 s: {:?}",
            common::cluster::cluster_info(k2)
        );
        thread::sleep(Duration::from_millis(50));
    }
    eprintln!(
        "node 2 synced {:.2} s after its restart",
        t.elapsed().as_secs_f64()
    );
    assert!(
        cluster_stat(k2, "sync_records") > 0,
        "{:?}",
        common::cluster::cluster_info(k2)
    );
    assert!(cluster_stat(k2, "sync_chunks") > 0);
    let src = cluster_field(k2, "sync_source");
    assert!(src == c.uri(1) || src == c.uri(3), "sync source {src}");
    assert_eq!(
        appearances(k2),
        apps,
        "node 2's appearances after the sync equal node 1's"
    );
    assert_eq!(
        subscriptions(k2),
        subs,
        "node 2's subscriptions after the sync equal node 1's"
    );

    // node 2 is B's node again: once synced it tells B the state, once,
    // in B's dialog and with a higher CSeq than before the crash (waited
    // for here, so a slow NOTIFY cannot spill into the next step); A's and
    // C's nodes have nothing new to tell
    expect_notifies(
        "after node 2's sync",
        &mut [&mut b],
        1,
        1,
        "appearance-index=1;appearance-state=active",
    );
    expect_notifies(
        "after node 2's sync",
        &mut [&mut a, &mut cc],
        0,
        0,
        "",
    );

    // a change on node 1 (A hangs up, the BYE through node 1 only) reaches
    // node 2, which NOTIFYs B
    a.ua.proxy = c.addr(1);
    call.dlg.route_set = vec![route_via(&c, 1)];
    let bye = a.ua.request(&mut call.dlg, "BYE");
    let bye = a.ua.send(&bye).expect("send BYE");
    let d_bye = d.expect_request("BYE", WAIT).expect("callee gets the BYE");
    assert_eq!(d_bye.peer, Some(c.addr(1)));
    answer(&mut d, &d_bye, 200, "OK", None);
    expect_status(&mut a.ua, &bye, 200);
    expect_notifies(
        "hang-up through node 1",
        &mut [&mut a, &mut b, &mut cc],
        1,
        1,
        "<sip:127.0.0.1>;appearance-index=*;appearance-state=idle",
    );
    agree_none(&c, "after the hang-up through node 1");
}

/// Little-endian builders for hand-made cluster messages (the format of
/// crates/sca-core/src/cluster/codec.rs).
mod wire {
    pub fn str16(w: &mut Vec<u8>, s: &[u8]) {
        w.extend_from_slice(&(s.len() as u16).to_le_bytes());
        w.extend_from_slice(s);
    }

    /// Header: magic, proto, kind, flags 0, node_id, boot_id, seq.
    pub fn header(magic: &[u8; 4], proto: u8, kind: u8, node_id: u32) -> Vec<u8> {
        let mut w = magic.to_vec();
        w.push(proto);
        w.push(kind);
        w.extend_from_slice(&0u16.to_le_bytes());
        w.extend_from_slice(&node_id.to_le_bytes());
        w.extend_from_slice(&0x5ca5_0001u32.to_le_bytes());
        w.extend_from_slice(&1u32.to_le_bytes());
        w
    }

    /// A SUB_PUT payload: an active call-info subscription of
    /// `subscriber` to `aor`, origin `origin`, expiring at `expires`.
    pub fn sub_put(
        aor: &str,
        subscriber: &str,
        expires: i64,
        index: i32,
        origin: u32,
        ver_ms: u64,
    ) -> Vec<u8> {
        let mut p = Vec::new();
        str16(&mut p, aor.as_bytes());
        p.push(1); // call-info
        str16(&mut p, subscriber.as_bytes());
        p.extend_from_slice(&expires.to_le_bytes());
        p.push(0); // active
        p.extend_from_slice(&index.to_le_bytes());
        str16(&mut p, b"injected-call-id");
        str16(&mut p, b"from-tag-x");
        str16(&mut p, b"to-tag-y");
        str16(&mut p, b"");
        p.extend_from_slice(&1u32.to_le_bytes()); // notify_cseq
        p.extend_from_slice(&1u32.to_le_bytes()); // subscribe_cseq
        p.extend_from_slice(&origin.to_le_bytes());
        p.extend_from_slice(&ver_ms.to_le_bytes());
        p.extend_from_slice(&origin.to_le_bytes());
        p
    }

    pub fn record(w: &mut Vec<u8>, typ: u8, payload: &[u8]) {
        w.push(typ);
        w.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        w.extend_from_slice(payload);
    }
}

#[test]
fn failover_resubscribe() {
    let _serial = serial();
    let Some(mut c) = Cluster::start_n("failover_resubscribe", 2) else {
        return;
    };
    c.wait_mesh(MESH);
    let mut a = Phone::new(&c, "A", "100", 1);
    let mut b = Phone::new(&c, "B", "100", 2);
    a.subscribe_call_info();
    b.subscribe_call_info();
    let b_contact = b.contact_hostport();
    c.wait_agree("both subscriptions everywhere", AGREE, subscriptions, |v| {
        v.len() == 2 && v.iter().any(|l| l.contains(&b_contact) && node_field(l) == Some(2))
    });

    // B's node dies; B's phone fails over: its refresh (same dialog) goes
    // to node 1, which has B's subscription from the replication
    c.kill9(2);
    b.home = c.addr(1);
    b.home_id = 1;
    b.ua.proxy = b.home;
    let mut d = b.sub.clone().expect("B's subscription dialog");
    let s = b
        .ua
        .send_subscribe(&mut d, &Subscribe::new("call-info", 600))
        .expect("send the refresh");
    let r = b.ua.expect_final_response(&s, WAIT).expect("reply to the refresh");
    assert_eq!(r.status(), Some(202), "node 1 takes B's refresh:\n{}", r.raw);
    let n = b.ua.expect_request("NOTIFY", WAIT).expect("NOTIFY after the refresh");
    assert_eq!(n.peer, Some(c.addr(1)), "{}", n.raw);
    assert_eq!(n.call_id(), Some(d.call_id.as_str()), "in B's subscription dialog");
    let cseq = n.cseq().map(|c| c.0).unwrap_or(0);
    assert!(
        cseq > b.last_cseq,
        "the CSeq goes on above what node 2 sent ({}), got {cseq}",
        b.last_cseq
    );
    b.last_cseq = cseq;
    let subs = subscriptions(c.node(1));
    let line = subs
        .iter()
        .find(|l| l.contains(&b_contact))
        .unwrap_or_else(|| panic!("B's subscription on node 1: {subs:?}"));
    assert_eq!(node_field(line), Some(1), "node 1 is now B's origin: {line}");

    // B keeps getting the group's state, now from node 1
    let (_ls, r) = a.seize("1");
    assert_eq!(r.status(), Some(200), "{}", r.raw);
    expect_notifies(
        "a seize after the fail-over",
        &mut [&mut a, &mut b],
        1,
        1,
        "appearance-index=1;appearance-state=seized",
    );
}

#[test]
fn malformed_dmq_rejected() {
    const CT: &str = "application/x-sca-rs";
    let _g = serial();
    let Some(c) = Cluster::start_n("malformed_dmq_rejected", 2) else {
        return;
    };
    c.wait_mesh(MESH);
    let k = c.node(1);
    // something in the store
    let mut a = Phone::new(&c, "A", "100", 1);
    a.subscribe_call_info();
    let (_d, r) = a.seize("1");
    assert_eq!(r.status(), Some(200));
    agree_one(&c, "seize", "seized", Some(1));
    c.wait_agree("subscriptions", AGREE, subscriptions, |v| v.len() == 2);
    let before: Vec<(Vec<String>, Vec<String>)> = c
        .running()
        .iter()
        .map(|(_, k)| (appearances(k), subscriptions(k)))
        .collect();

    // a body the module would take: a call-info subscription of another
    // AoR, from a node 9 that does not exist
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock");
    let sub_put = wire::sub_put(
        "sip:999@127.0.0.1",
        "sip:999@127.0.0.1:5999",
        now.as_secs() as i64 + 600,
        -1,
        9,
        now.as_millis() as u64,
    );
    let mut valid = wire::header(b"SCAR", 1, 1, 9);
    wire::record(&mut valid, 1, &sub_put);
    let with = |i: usize, v: u8| {
        let mut b = valid.clone();
        b[i] = v;
        b
    };
    let mut overrun = wire::header(b"SCAR", 1, 1, 9);
    overrun.push(1);
    overrun.extend_from_slice(&500u32.to_le_bytes());
    overrun.extend_from_slice(&sub_put[..10]);
    let mut trailing = wire::header(b"SCAR", 1, 1, 9);
    let mut padded = sub_put.clone();
    padded.extend_from_slice(&[0, 0, 0]);
    wire::record(&mut trailing, 1, &padded);
    let mut bad_index = wire::header(b"SCAR", 1, 1, 9);
    let now_ms = now.as_millis() as u64;
    wire::record(
        &mut bad_index,
        1,
        &wire::sub_put(
            "sip:999@127.0.0.1",
            "sip:999@127.0.0.1:5999",
            now.as_secs() as i64 + 600,
            -5,
            9,
            now_ms,
        ),
    );
    let json = br#"{"action":1,"htname":"sca","cname":"sip:999@127.0.0.1","type":0,"strval":"x","mode":0}"#.to_vec();
    let bad: Vec<(&str, Option<&str>, Vec<u8>)> = vec![
        (
            "garbage",
            Some(CT),
            b"\x00\xffthis is not an sca_rs message\r\n\x01\x02\x03".to_vec(),
        ),
        ("JSON", Some(CT), json.clone()),
        ("JSON as application/json", Some("application/json"), json),
        ("wrong magic", Some(CT), with(3, b'X')),
        ("truncated", Some(CT), valid[..valid.len() - 7].to_vec()),
        ("header only, cut short", Some(CT), valid[..12].to_vec()),
        ("unknown proto version 9", Some(CT), with(4, 9)),
        ("unknown message kind 7", Some(CT), with(5, 7)),
        ("record longer than the message", Some(CT), overrun),
        ("bytes left over in a record", Some(CT), trailing),
        ("index out of range", Some(CT), bad_index),
        ("empty body", Some(CT), Vec::new()),
        (
            "wrong content type",
            Some("application/json"),
            valid.clone(),
        ),
        ("no content type", None, valid.clone()),
    ];

    let mut ua = Ua::new("X", "sca_rs", c.addr(1)).expect("bind UA socket");
    let rejected0 = cluster_stat(k, "rx_rejected");
    let applied0 = cluster_stat(k, "rx_applied");
    let mut logged = log_count(k, "rejected DMQ message");
    for (n, (what, ct, body)) in bad.iter().enumerate() {
        let req = kdmq_request(&ua, c.addr(1), *ct, body);
        let r = send_for_reply(&mut ua, &req);
        assert_eq!(r.status(), Some(400), "{what}: {}", r.start_line);
        assert_eq!(
            cluster_stat(k, "rx_rejected"),
            rejected0 + n as u64 + 1,
            "{what}: rx_rejected"
        );
        let deadline = Instant::now() + Duration::from_secs(1);
        while log_count(k, "rejected DMQ message") <= logged {
            assert!(
                Instant::now() < deadline,
                "{what}: no `rejected DMQ message` log line\n{}",
                k.log_tail(20)
            );
            thread::sleep(Duration::from_millis(10));
        }
        logged = log_count(k, "rejected DMQ message");
    }
    assert_eq!(
        cluster_stat(k, "rx_applied"),
        applied0,
        "nothing rejected was applied"
    );
    let after: Vec<(Vec<String>, Vec<String>)> = c
        .running()
        .iter()
        .map(|(_, k)| (appearances(k), subscriptions(k)))
        .collect();
    assert_eq!(
        after, before,
        "the rejected messages changed nothing on any node"
    );

    // the control: the same body, right content type, is taken
    let req = kdmq_request(&ua, c.addr(1), Some(CT), &valid);
    let r = send_for_reply(&mut ua, &req);
    assert_eq!(r.status(), Some(200), "the valid body: {}", r.start_line);
    assert_eq!(cluster_stat(k, "rx_rejected"), rejected0 + bad.len() as u64);
    assert!(cluster_stat(k, "rx_applied") > applied0);
    let subs = subscriptions(k);
    let line = subs
        .iter()
        .find(|l| l.contains("127.0.0.1:5999"))
        .unwrap_or_else(|| panic!("the injected subscription: {subs:?}"));
    assert_eq!(node_field(line), Some(9), "{line}");
    // a KDMQ from outside the cluster's addresses never reaches dmq
    // (127.0.0.4 is not in the cfg's list): 403 from the script
    if common::kamailio::probe_loopback(std::net::Ipv4Addr::new(127, 0, 0, 4)).is_ok() {
        let sock = std::net::UdpSocket::bind("127.0.0.4:0").expect("bind 127.0.0.4");
        sock.set_read_timeout(Some(WAIT)).expect("timeout");
        let mut req = kdmq_request(&ua, c.addr(1), Some(CT), &valid);
        let local = sock.local_addr().expect("addr");
        req = req.set_header(
            "Via",
            &format!("SIP/2.0/UDP {local};branch=z9hG4bK-outsider-1;rport"),
        );
        sock.send_to(&req.render(), c.addr(1)).expect("send");
        let mut buf = vec![0u8; 65536];
        let (n, _) = sock.recv_from(&mut buf).expect("a reply to the outsider");
        let reply = SipMessage::parse(&buf[..n]).expect("parse");
        assert_eq!(reply.status(), Some(403), "{}", reply.raw);
        assert_eq!(
            cluster_stat(k, "rx_rejected"),
            rejected0 + bad.len() as u64,
            "the outsider's KDMQ was not counted"
        );
    }
}

#[test]
fn peer_without_dmq() {
    let _g = serial();
    let mut specs = vec![NodeSpec::new(1, 2), NodeSpec::new(2, 1)];
    specs[1].enable_dmq = false;
    // node 1's full sync can only get 404s: asked again after 1 s, twice;
    // its dmq_sync_wait (600 s) ends when the sync is given up
    specs[0].extra_modparams =
        "modparam(\"sca_rs\", \"dmq_sync_timeout\", 1)\nmodparam(\"sca_rs\", \"dmq_sync_retries\", 2)\nmodparam(\"sca_rs\", \"dmq_sync_wait\", 600)\n".into();
    let Some(c) = Cluster::start("peer_without_dmq", specs) else {
        return;
    };
    // dmq itself works on both
    c.wait_mesh(MESH);
    let (k1, k2) = (c.node(1), c.node(2));
    match k2.kamcmd(&["sca.cluster"]) {
        Ok(out) => panic!("sca.cluster with enable_dmq=0 answered: {out}"),
        Err(e) => {
            assert!(e.contains("500"), "{e}");
            assert!(e.contains("cluster is off (modparam enable_dmq)"), "{e}");
        }
    }
    assert_eq!(cluster_field(k1, "enabled"), "1");

    // node 2 has no sca_rs peer: dmq itself answers 404
    let mut ua = Ua::new("X", "sca_rs", c.addr(2)).expect("bind UA socket");
    let mut body = wire::header(b"SCAR", 1, 1, 1);
    wire::record(&mut body, 2, &{
        let mut p = Vec::new();
        wire::str16(&mut p, b"sip:100@127.0.0.1");
        p.push(1);
        wire::str16(&mut p, b"sip:100@127.0.0.1:5999");
        p.extend_from_slice(&1u64.to_le_bytes());
        p.extend_from_slice(&1u32.to_le_bytes());
        p
    });
    let req = kdmq_request(&ua, c.addr(2), Some("application/x-sca-rs"), &body);
    let r = send_for_reply(&mut ua, &req);
    assert_eq!(r.status(), Some(404), "{}", r.raw);

    // without enable_dmq the listings keep the C module's columns
    let mut p = Phone::new(&c, "P", "100", 2);
    p.subscribe_call_info();
    let (_d, r) = p.seize("1");
    assert_eq!(r.status(), Some(200));
    let apps = appearances(k2);
    assert_eq!(apps.len(), 1, "{apps:?}");
    assert!(!apps[0].contains("node="), "{}", apps[0]);
    assert!(
        apps[0].split(' ').count() <= 9,
        "at most nine columns: {:?}",
        apps[0]
    );
    let subs = k2.rpc(&["sca.all_subscriptions"]);
    assert!(!subs.contains("node="), "{subs}");
    assert_eq!(
        subs.lines().next().map(|l| l.split(' ').count()),
        Some(5),
        "{subs}"
    );

    // node 1 (enable_dmq=1) still works; what it sends node 2 is refused
    let mut q = Phone::new(&c, "Q", "300", 1);
    q.ua.proxy = c.addr(1);
    let mut dq = q.ua.dialog("sip:300@127.0.0.1");
    let s =
        q.ua.send_subscribe(&mut dq, &Subscribe::new("call-info", 600))
            .expect("send");
    let r = q.ua.expect_final_response(&s, WAIT).expect("reply");
    assert_eq!(r.status(), Some(202));
    let subs2 = k2.rpc(&["sca.all_subscriptions"]);
    assert!(
        !subs2.lines().any(|l| l.starts_with("300 ")),
        "node 2 took nothing from node 1: {subs2}"
    );
    assert!(
        appearances(k1).is_empty(),
        "node 1 took nothing from node 2"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while cluster_stat(k1, "tx_failed") == 0 {
        assert!(
            Instant::now() < deadline,
            "node 1 counts what node 2 refused (404) in tx_failed: {:?}",
            common::cluster::cluster_info(k1)
        );
        thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(appearances(k2), apps, "node 2 took nothing from node 1");

    // node 1's sync: nobody answers with a store, so it is asked again
    // dmq_sync_retries times, then given up, and says so
    let deadline = Instant::now() + Duration::from_secs(15);
    while cluster_field(k1, "sync_state") != "failed" {
        assert!(
            Instant::now() < deadline,
            "node 1's sync is given up: {:?}",
            common::cluster::cluster_info(k1)
        );
        thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(cluster_field(k1, "sync_retries"), "2");
    let p2 = peer(k1, c.addr(2)).unwrap_or_else(|| panic!("node 1 lists node 2: {:?}", k1.rpc(&["sca.cluster"])));
    assert_eq!(p2["last_code"], "404", "{p2:?}");
    assert_eq!(p2["rx"], "0", "node 2 never sent sca_rs anything: {p2:?}");
    assert_ne!(p2["tx_failed"], "0", "{p2:?}");
    assert!(k1.log().contains("cluster: full sync failed"), "{}", k1.log_tail(20));

    // no peer will answer: the sync wait is over, node 1 takes seizes
    let mut r = Phone::new(&c, "R", "100", 1);
    r.subscribe_call_info();
    let (_d, resp) = r.seize("1");
    assert_eq!(resp.status(), Some(200), "a seize after the failed sync: {}", resp.raw);
}

/// cfg-examples/kamailio-sca-cluster.cfg passes `kamailio -c` for both of
/// its nodes (node 2 with `-A NODE2`), with the module under test.
#[test]
fn example_cluster_config_checks_for_both_nodes() {
    let path = common::kamailio::repo_root().join("cfg-examples/kamailio-sca-cluster.cfg");
    let text = std::fs::read_to_string(&path).expect("read the cluster example");
    assert_eq!(text.matches("loadmodule \"sca_rs.so\"").count(), 1, "the example loads sca_rs.so");
    let dir = common::kamailio::TestDir::new("sca_rs-cluster-example").expect("temp dir");
    let module = common::kamailio::ScaModule::Rust.loadmodule_path();
    let cfg = dir.path.join("cluster.cfg");
    std::fs::write(&cfg, text.replace("loadmodule \"sca_rs.so\"", &format!("loadmodule \"{}\"", module.display())))
        .expect("write the rendered example");
    for extra in [None, Some("NODE2")] {
        let mut cmd = std::process::Command::new(common::kamailio::kamailio_bin());
        cmd.arg("-c").arg("-f").arg(&cfg).arg("-L").arg(common::kamailio::mpath());
        if let Some(d) = extra {
            cmd.arg("-A").arg(d);
        }
        let out = common::kamailio::run_with_timeout(&mut cmd, Duration::from_secs(20)).expect("run kamailio -c");
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success() && text.contains("config file ok"), "node {extra:?}:\n{text}");
    }
}

/// `dmq_sync_wait`: a node that has not synced refuses new line-seizes
/// (480 + Retry-After) until the wait is over; subscriptions are taken
/// meanwhile. Node 1's peer has no sca_rs peer, so its sync stays
/// unanswered (timeout 60 s, no retry) for the whole wait.
#[test]
fn sync_wait_refuses_seizes_until_the_wait_is_over() {
    const SYNC_WAIT: u64 = 15;
    let _g = serial();
    let mut specs = vec![NodeSpec::new(1, 2), NodeSpec::new(2, 1)];
    specs[1].enable_dmq = false;
    specs[0].extra_modparams = format!(
        "modparam(\"sca_rs\", \"dmq_sync_timeout\", 60)\nmodparam(\"sca_rs\", \"dmq_sync_retries\", 0)\nmodparam(\"sca_rs\", \"dmq_sync_wait\", {SYNC_WAIT})\n"
    );
    let Some(mut c) = Cluster::start("sync_wait_refuses_seizes", specs) else {
        return;
    };
    // a fresh start of node 1, so its wait has just begun
    c.restart(1);
    let started = Instant::now();
    let k1 = c.node(1);

    let mut a = Phone::new(&c, "A", "100", 1);
    a.subscribe_call_info();
    let (_d, r) = a.seize("1");
    assert_eq!(r.status(), Some(480), "a seize while node 1 syncs: {}", r.raw);
    let retry_after: u64 = r
        .header("Retry-After")
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("the 480 says when to retry:\n{}", r.raw));
    assert!(
        (1..=SYNC_WAIT).contains(&retry_after),
        "Retry-After {retry_after}, want the seconds left of {SYNC_WAIT}"
    );
    assert!(appearances(k1).is_empty(), "the refused seize left nothing");
    assert!(
        log_count(k1, "refused: this node has not synced with the cluster yet") >= 1,
        "{}",
        k1.log_tail(20)
    );

    // asked again every half second: taken once the wait is over, while
    // the sync is still unanswered
    let mut refused = 1;
    let deadline = started + Duration::from_secs(SYNC_WAIT + 15);
    let state = loop {
        thread::sleep(Duration::from_millis(500));
        let (_d, r) = a.seize("1");
        match r.status() {
            Some(480) => refused += 1,
            Some(200) => break cluster_field(k1, "sync_state"),
            _ => panic!("seize answered {}", r.raw),
        }
        assert!(
            Instant::now() < deadline,
            "seizes still refused {} s after node 1's start",
            SYNC_WAIT + 15
        );
    };
    assert_eq!(state, "requesting", "the wait ended, not the sync");
    assert_eq!(cluster_stat(k1, "seizes_refused_syncing"), refused);
    let apps = appearances(k1);
    assert!(
        apps.len() == 1 && app_index_state(&apps[0]) == ("1".into(), "seized".into()),
        "node 1 has the seize after the wait: {apps:?}"
    );
}

/// `dmq_sync_wait`: a synced node takes seizes at once, however long the
/// wait.
#[test]
fn sync_wait_ends_when_synced() {
    let _g = serial();
    let mut specs = vec![NodeSpec::new(1, 2), NodeSpec::new(2, 1)];
    for s in &mut specs {
        s.extra_modparams = "modparam(\"sca_rs\", \"dmq_sync_wait\", 600)\n".into();
    }
    let Some(c) = Cluster::start("sync_wait_ends_when_synced", specs) else {
        return;
    };
    c.wait_mesh(MESH);
    wait_synced(&c, Duration::from_secs(15));
    let mut a = Phone::new(&c, "A", "100", 2);
    a.subscribe_call_info();
    let (_d, r) = a.seize("1");
    assert_eq!(r.status(), Some(200), "a seize on a synced node: {}", r.raw);
    assert_eq!(cluster_stat(c.node(2), "seizes_refused_syncing"), 0);
}

/// Poll every phone's NOTIFYs (answering them) until `done` holds for what
/// they got so far and every node shows no appearance, or `within` passes;
/// then one more quiet period, so a duplicate would still be seen.
fn collect_until_idle(
    c: &Cluster,
    phones: &mut [&mut Phone],
    within: Duration,
    done: impl Fn(&[Got]) -> bool,
) -> Vec<Got> {
    let deadline = Instant::now() + within;
    let mut got: Vec<Got> = phones.iter().map(|_| Got::default()).collect();
    loop {
        for (g, more) in got.iter_mut().zip(collect(phones, 0)) {
            g.call_info.extend(more.call_info);
            g.line_seize.extend(more.line_seize);
        }
        let idle = c.running().iter().all(|(_, k)| appearances(k).is_empty());
        if (idle && done(&got)) || Instant::now() >= deadline {
            break;
        }
    }
    for (g, more) in got.iter_mut().zip(collect(phones, 0)) {
        g.call_info.extend(more.call_info);
        g.line_seize.extend(more.line_seize);
    }
    got
}

/// A line-seize made on node 1 and never refreshed expires: every node
/// frees the line (each node expires its own copies at the same absolute
/// times, docs/cluster.md), every phone gets exactly one idle call-info
/// NOTIFY from its own node, and the seizing phone one terminating
/// line-seize NOTIFY (`timeout`).
#[test]
fn expired_line_seize_frees_the_line_on_every_node() {
    let _g = serial();
    let specs: Vec<NodeSpec> = common::cluster::default_specs(3)
        .into_iter()
        .map(|mut s| {
            s.extra_modparams += "modparam(\"sca_rs\", \"purge_expired_interval\", 2)\n";
            s
        })
        .collect();
    let Some(c) = Cluster::start("expired_line_seize", specs) else {
        return;
    };
    c.wait_mesh(MESH);
    wait_synced(&c, Duration::from_secs(10));
    let (mut a, mut b, mut cc) = three_phones_watching(&c);

    // seize (Expires 15) on node 1, never refreshed
    let (_ls, r) = a.seize("1");
    assert_eq!(r.status(), Some(200), "seize through node 1: {}", r.raw);
    expect_notifies(
        "seize",
        &mut [&mut a, &mut b, &mut cc],
        1,
        1,
        "appearance-index=1;appearance-state=seized",
    );
    agree_one(&c, "after the seize on node 1", "seized", Some(1));
    c.wait_agree("line-seize subscription everywhere", AGREE, subscriptions, |v| {
        v.len() == 4
    });

    // expiry: 15 s, the purge every 2 s; the line is idle everywhere
    let got = collect_until_idle(&c, &mut [&mut a, &mut b, &mut cc], Duration::from_secs(40), |g| {
        g.iter().all(|g| !g.call_info.is_empty())
    });
    for (id, k) in c.running() {
        assert!(
            appearances(k).is_empty(),
            "node {id} still lists {:?} after the line-seize expired",
            appearances(k)
        );
        assert_eq!(
            subscriptions(k).len(),
            3,
            "node {id}: the line-seize subscription is gone, the call-info ones stay: {:?}",
            subscriptions(k)
        );
    }
    for (p, g) in [&a, &b, &cc].iter().zip(&got) {
        assert_eq!(
            g.call_info.len(),
            1,
            "{} (node {}) gets exactly one call-info NOTIFY at expiry: {:?}",
            p.name,
            p.home_id,
            g.call_info.iter().map(call_info_of).collect::<Vec<_>>()
        );
        let ci = call_info_of(&g.call_info[0]);
        assert!(
            ci.contains("appearance-index=*;appearance-state=idle") && !ci.contains("appearance-index=1"),
            "{}: the NOTIFY at expiry shows the line idle: {ci}",
            p.name
        );
    }
    assert_eq!(got[0].line_seize.len(), 1, "A's line-seize ends with one NOTIFY");
    let st = got[0].line_seize[0].header("Subscription-State").unwrap_or("");
    assert!(
        st.starts_with("terminated") && st.contains("reason=timeout"),
        "A's last line-seize NOTIFY: {st}"
    );
    assert!(got[1..].iter().all(|g| g.line_seize.is_empty()));
}

/// A line stuck in seized (seized through node 2 with a long-lived
/// line-seize, no call follows) is purged after `seized_ttl` (4 s here; the
/// C module's fixed 120 s by default) on every node: every node frees it
/// at the same absolute time (the appearance's mtime is replicated), every
/// phone gets exactly one idle call-info NOTIFY from its own node, and the
/// line-seize subscription is left alone (no line-seize NOTIFY; it lives
/// on until it expires, as in the C module).
#[test]
fn a_line_stuck_in_seized_is_purged_on_every_node() {
    let _g = serial();
    let specs: Vec<NodeSpec> = common::cluster::default_specs(3)
        .into_iter()
        .map(|mut s| {
            s.extra_modparams += "modparam(\"sca_rs\", \"purge_expired_interval\", 1)\n\
                                  modparam(\"sca_rs\", \"seized_ttl\", 4)\n\
                                  modparam(\"sca_rs\", \"line_seize_max_expires\", 120)\n";
            s
        })
        .collect();
    let Some(c) = Cluster::start("stuck_seized", specs) else {
        return;
    };
    c.wait_mesh(MESH);
    wait_synced(&c, Duration::from_secs(10));
    let (mut a, mut b, mut cc) = three_phones_watching(&c);

    // B seizes line 1 through node 2 for 120 s and never calls
    b.ua.proxy = b.home;
    let mut ls = b.ua.dialog(AOR);
    let s = b
        .ua
        .send_subscribe(&mut ls, &Subscribe::new("line-seize", 120).call_info(&call_info("1")))
        .expect("send line-seize");
    let r = b.ua.expect_final_response(&s, WAIT).expect("reply to line-seize");
    assert_eq!(r.status(), Some(200), "seize through node 2: {}", r.raw);
    expect_notifies(
        "seize on node 2",
        &mut [&mut a, &mut b, &mut cc],
        1,
        1,
        "appearance-index=1;appearance-state=seized",
    );
    agree_one(&c, "after the seize on node 2", "seized", Some(2));
    c.wait_agree("line-seize subscription everywhere", AGREE, subscriptions, |v| v.len() == 4);

    // seized_ttl 4 s, the purge every second: the line is idle everywhere
    let got = collect_until_idle(&c, &mut [&mut a, &mut b, &mut cc], Duration::from_secs(30), |g| {
        g.iter().all(|g| !g.call_info.is_empty())
    });
    for (id, k) in c.running() {
        assert!(
            appearances(k).is_empty(),
            "node {id} still lists {:?} after seized_ttl",
            appearances(k)
        );
        assert!(
            log_count(k, "purged stale appearances of sip:100@127.0.0.1") >= 1,
            "node {id} purged the stale line itself"
        );
        assert_eq!(
            subscriptions(k).len(),
            4,
            "node {id}: the purge frees the line, the line-seize subscription stays: {:?}",
            subscriptions(k)
        );
    }
    for (p, g) in [&a, &b, &cc].iter().zip(&got) {
        assert_eq!(
            g.call_info.len(),
            1,
            "{} (node {}) gets exactly one call-info NOTIFY at the purge: {:?}",
            p.name,
            p.home_id,
            g.call_info.iter().map(call_info_of).collect::<Vec<_>>()
        );
        let ci = call_info_of(&g.call_info[0]);
        assert!(
            ci.contains("appearance-index=*;appearance-state=idle") && !ci.contains("appearance-index=1"),
            "{}: the NOTIFY at the purge shows the line idle: {ci}",
            p.name
        );
        assert_eq!(g.call_info[0].peer, Some(p.home), "{}: NOTIFYed by its own node", p.name);
        assert!(g.line_seize.is_empty(), "{}: no line-seize NOTIFY: the subscription stays", p.name);
    }
}

/// Every other way a line is released, on three nodes: after each, every
/// node lists the line idle and every phone gets exactly one idle
/// call-info NOTIFY from its own node.
///
/// 1. the seizing phone unsubscribes its line-seize (Expires 0) through
///    node 1;
/// 2. `sca.release_appearance` on node 3 of a line seized through node 2;
/// 3. a call through node 2 (seized on node 1) ends with the caller's BYE.
#[test]
fn every_release_path_reaches_every_node() {
    let _g = serial();
    let Some(c) = Cluster::start_n("every_release_path", 3) else {
        return;
    };
    c.wait_mesh(MESH);
    wait_synced(&c, Duration::from_secs(10));
    let mut a = Phone::new(&c, "A", "100", 1);
    let mut b = Phone::new(&c, "B", "100", 2);
    let mut cc = Phone::new(&c, "C", "100", 3);
    let mut d = Ua::new("D", "200", c.addr(2)).expect("bind UA socket");
    for p in [&mut a, &mut b, &mut cc] {
        p.subscribe_call_info();
    }
    c.wait_agree("subscriptions", AGREE, subscriptions, |v| v.len() == 3);
    let idle = "<sip:127.0.0.1>;appearance-index=*;appearance-state=idle";

    // 1. unsubscribe of the line-seize through node 1
    let (mut ls, r) = a.seize("1");
    assert_eq!(r.status(), Some(200), "seize through node 1: {}", r.raw);
    expect_notifies(
        "seize on node 1",
        &mut [&mut a, &mut b, &mut cc],
        1,
        1,
        "appearance-index=1;appearance-state=seized",
    );
    agree_one(&c, "after the seize on node 1", "seized", Some(1));
    a.ua.proxy = a.home;
    let s = a
        .ua
        .send_subscribe(
            &mut ls,
            &Subscribe::new("line-seize", 0).call_info(&call_info("1")),
        )
        .expect("send line-seize unsubscribe");
    let r = a.ua.expect_final_response(&s, WAIT).expect("reply to unsubscribe");
    assert_eq!(r.status(), Some(200), "unsubscribe: {}", r.raw);
    let ls_got = expect_notifies("unsubscribe on node 1", &mut [&mut a, &mut b, &mut cc], 1, 1, idle);
    assert!(
        ls_got[0].iter().any(|m| m
            .header("Subscription-State")
            .is_some_and(|s| s.starts_with("terminated"))),
        "A's line-seize unsubscribe is answered with a terminated NOTIFY"
    );
    agree_none(&c, "after the unsubscribe on node 1");

    // 2. sca.release_appearance on node 3 of a seize through node 2
    let (_ls_b, r) = b.seize("1");
    assert_eq!(r.status(), Some(200), "seize through node 2: {}", r.raw);
    expect_notifies(
        "seize on node 2",
        &mut [&mut a, &mut b, &mut cc],
        1,
        1,
        "appearance-index=1;appearance-state=seized",
    );
    agree_one(&c, "after the seize on node 2", "seized", Some(2));
    c.node(3).rpc(&["sca.release_appearance", AOR, "1"]);
    expect_notifies("sca.release_appearance on node 3", &mut [&mut a, &mut b, &mut cc], 1, 1, idle);
    agree_none(&c, "after sca.release_appearance on node 3");

    // 3. a call's BYE: seized on node 1, the call through node 2
    let mut call = seize_and_call(&c, &mut a, &mut [&mut b, &mut cc], &mut d);
    a.ua.proxy = c.addr(2);
    let bye = a.ua.request(&mut call.dlg, "BYE");
    let bye = a.ua.send(&bye).expect("send BYE");
    let d_bye = d.expect_request("BYE", WAIT).expect("callee gets A's BYE");
    answer(&mut d, &d_bye, 200, "OK", None);
    expect_status(&mut a.ua, &bye, 200);
    expect_notifies("BYE through node 2", &mut [&mut a, &mut b, &mut cc], 1, 1, idle);
    agree_none(&c, "after the BYE");
}

/// A dead phone (subscriber liveness) on three nodes: the phone that
/// seized a line through node 1 stops answering node 1's OPTIONS; node 1
/// declares it down, its subscriptions end everywhere, its seized line is
/// released on every node, every other phone gets exactly one idle
/// NOTIFY from its own node, and the dead phone one last call-info NOTIFY
/// (`deactivated`) from node 1.
#[test]
fn a_dead_phone_releases_its_line_on_every_node() {
    let _g = serial();
    let specs: Vec<NodeSpec> = common::cluster::default_specs(3)
        .into_iter()
        .map(|mut s| {
            s.extra_modparams += "modparam(\"sca_rs\", \"subscriber_keepalive_interval\", 1)\n";
            s.extra_modparams += "modparam(\"sca_rs\", \"ka_down_threshold\", 2)\n";
            s
        })
        .collect();
    let Some(c) = Cluster::start("dead_phone", specs) else {
        return;
    };
    c.wait_mesh(MESH);
    wait_synced(&c, Duration::from_secs(10));
    let mut a = Phone::new(&c, "A", "100", 1);
    let mut b = Phone::new(&c, "B", "100", 2);
    let mut cc = Phone::new(&c, "C", "100", 3);
    for p in [&mut a, &mut b, &mut cc] {
        p.ua.auto_answer_options = Some(200);
        p.subscribe_call_info();
    }
    c.wait_agree("subscriptions", AGREE, subscriptions, |v| v.len() == 3);
    let (_ls, r) = a.seize("1");
    assert_eq!(r.status(), Some(200), "seize through node 1: {}", r.raw);
    expect_notifies(
        "seize on node 1",
        &mut [&mut a, &mut b, &mut cc],
        1,
        1,
        "appearance-index=1;appearance-state=seized",
    );
    agree_one(&c, "after the seize on node 1", "seized", Some(1));

    // A goes silent: node 1 declares it down after two unanswered pings
    a.ua.auto_answer_options = None;
    let got = collect_until_idle(&c, &mut [&mut a, &mut b, &mut cc], Duration::from_secs(30), |g| {
        g.iter().all(|g| !g.call_info.is_empty())
    });
    c.wait_agree("subscriptions after A's death", AGREE, subscriptions, |v| v.len() == 2);
    for (id, k) in c.running() {
        assert!(appearances(k).is_empty(), "node {id} still lists {:?}", appearances(k));
        let subs = subscriptions(k);
        assert!(
            !subs.iter().any(|l| l.contains(&a.contact_hostport())),
            "node {id} still lists A's subscriptions: {subs:?}"
        );
    }
    for (p, g) in [&b, &cc].iter().zip(&got[1..]) {
        assert_eq!(
            g.call_info.len(),
            1,
            "{} gets exactly one call-info NOTIFY: {:?}",
            p.name,
            g.call_info.iter().map(call_info_of).collect::<Vec<_>>()
        );
        let ci = call_info_of(&g.call_info[0]);
        assert!(ci.contains("appearance-index=*;appearance-state=idle") && !ci.contains("appearance-index=1"), "{}: {ci}", p.name);
        assert!(g.line_seize.is_empty());
    }
    assert_eq!(got[0].call_info.len(), 1, "A's last call-info NOTIFY: {:?}", got[0].call_info.iter().map(|m| m.raw.clone()).collect::<Vec<_>>());
    let st = got[0].call_info[0].header("Subscription-State").unwrap_or("");
    assert!(st.starts_with("terminated") && st.contains("reason=deactivated"), "A's last call-info NOTIFY: {st}");
    assert_eq!(cluster_stat(c.node(1), "tx_failed"), 0);
}

/// `sca.deactivate_subscription` on three nodes: node 1 ends the
/// subscriptions of A (subscribed through it, holding line 1 with a
/// long-lived line-seize) in place, `deactivated`, with a last NOTIFY of
/// each from node 1 only; the other phones hear nothing of it (the C
/// module does not NOTIFY the group). The change reaches every node: the
/// purge drops A's terminated subscriptions everywhere, and the line,
/// which a deactivation leaves seized as in the C module, is freed on
/// every node when it has been seized for `seized_ttl`: B and C get
/// exactly one idle NOTIFY each from their own node, A none (its
/// call-info subscription is gone).
#[test]
fn an_rpc_deactivation_reaches_every_node() {
    let _g = serial();
    let specs: Vec<NodeSpec> = common::cluster::default_specs(3)
        .into_iter()
        .map(|mut s| {
            s.extra_modparams += "modparam(\"sca_rs\", \"purge_expired_interval\", 1)\n\
                                  modparam(\"sca_rs\", \"seized_ttl\", 8)\n\
                                  modparam(\"sca_rs\", \"line_seize_max_expires\", 120)\n";
            s
        })
        .collect();
    let Some(c) = Cluster::start("rpc_deactivation", specs) else {
        return;
    };
    c.wait_mesh(MESH);
    wait_synced(&c, Duration::from_secs(10));
    let (mut a, mut b, mut cc) = three_phones_watching(&c);

    // A seizes line 1 through node 1 for 120 s
    a.ua.proxy = a.home;
    let mut ls = a.ua.dialog(AOR);
    let s = a
        .ua
        .send_subscribe(&mut ls, &Subscribe::new("line-seize", 120).call_info(&call_info("1")))
        .expect("send line-seize");
    let r = a.ua.expect_final_response(&s, WAIT).expect("reply to line-seize");
    assert_eq!(r.status(), Some(200), "seize through node 1: {}", r.raw);
    expect_notifies(
        "seize on node 1",
        &mut [&mut a, &mut b, &mut cc],
        1,
        1,
        "appearance-index=1;appearance-state=seized",
    );
    agree_one(&c, "after the seize on node 1", "seized", Some(1));
    c.wait_agree("line-seize subscription everywhere", AGREE, subscriptions, |v| v.len() == 4);

    // node 1 deactivates A's subscriptions (it is their origin)
    let contact = format!("sip:100@{}", a.ua.local);
    let out = c.node(1).rpc(&["sca.deactivate_subscription", AOR, &contact]);
    let mut lines: Vec<&str> = out.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    lines.sort();
    assert_eq!(
        lines,
        [
            format!("Deactivating call-info subscription from {contact}"),
            format!("Deactivating line-seize subscription from {contact}"),
        ],
        "{out}"
    );
    let got = collect_until(&mut [&mut a, &mut b, &mut cc], |g| {
        g[0].call_info.len() + g[0].line_seize.len() >= 2
    });
    let states: Vec<&str> = got[0]
        .call_info
        .iter()
        .chain(&got[0].line_seize)
        .map(|m| m.header("Subscription-State").unwrap_or(""))
        .collect();
    assert_eq!(
        states,
        ["terminated;reason=deactivated", "terminated;reason=deactivated"],
        "A's last NOTIFYs (call-info, line-seize), from node 1"
    );
    for (p, g) in [&b, &cc].iter().zip(&got[1..]) {
        assert!(
            g.call_info.is_empty() && g.line_seize.is_empty(),
            "{} hears nothing of A's deactivation: {:?}",
            p.name,
            g.call_info.iter().map(call_info_of).collect::<Vec<_>>()
        );
    }
    // every node drops A's terminated subscriptions at its purge
    c.wait_agree("A's subscriptions gone from every node", AGREE, subscriptions, |v| {
        v.len() == 2 && !v.iter().any(|l| l.contains(&a.contact_hostport()))
    });

    // the line stays seized until seized_ttl, then is idle everywhere
    let got = collect_until_idle(&c, &mut [&mut a, &mut b, &mut cc], Duration::from_secs(30), |g| {
        g[1..].iter().all(|g| !g.call_info.is_empty())
    });
    for (id, k) in c.running() {
        assert!(appearances(k).is_empty(), "node {id} still lists {:?} after seized_ttl", appearances(k));
        assert_eq!(subscriptions(k).len(), 2, "node {id}: {:?}", subscriptions(k));
    }
    assert!(
        got[0].call_info.is_empty() && got[0].line_seize.is_empty(),
        "A, deactivated, gets nothing more"
    );
    for (p, g) in [&b, &cc].iter().zip(&got[1..]) {
        assert_eq!(
            g.call_info.len(),
            1,
            "{} (node {}) gets exactly one call-info NOTIFY when the line is freed: {:?}",
            p.name,
            p.home_id,
            g.call_info.iter().map(call_info_of).collect::<Vec<_>>()
        );
        let ci = call_info_of(&g.call_info[0]);
        assert!(
            ci.contains("appearance-index=*;appearance-state=idle") && !ci.contains("appearance-index=1"),
            "{}: the line is idle: {ci}",
            p.name
        );
    }
}

/// Two more ways a line is released, on three nodes: after each, every
/// node lists the line idle and every phone gets exactly one idle
/// call-info NOTIFY from its own node.
///
/// 1. a call from a line seized through node 1, sent through node 2, is
///    rejected by the callee (486): node 2 frees the line (and, as the C
///    module does, first repeats the unchanged seized state, which only
///    node 2's own phone hears);
/// 2. the phone that seized a line through node 1 reboots: it subscribes
///    to call-info afresh (a new dialog, out of the old one) through node
///    1, which frees every line it held.
#[test]
fn a_rejected_call_and_a_rebooted_phone_release_on_every_node() {
    let _g = serial();
    let Some(c) = Cluster::start_n("rejected_call_reboot", 3) else {
        return;
    };
    c.wait_mesh(MESH);
    wait_synced(&c, Duration::from_secs(10));
    let mut a = Phone::new(&c, "A", "100", 1);
    let mut b = Phone::new(&c, "B", "100", 2);
    let mut cc = Phone::new(&c, "C", "100", 3);
    let mut d = Ua::new("D", "200", c.addr(2)).expect("bind UA socket");
    for p in [&mut a, &mut b, &mut cc] {
        p.subscribe_call_info();
    }
    c.wait_agree("subscriptions", AGREE, subscriptions, |v| v.len() == 3);
    let idle = "<sip:127.0.0.1>;appearance-index=*;appearance-state=idle";
    let seized = "appearance-index=1;appearance-state=seized";

    // 1. seized through node 1, the INVITE through node 2, D answers 486
    let (_ls, r) = a.seize("1");
    assert_eq!(r.status(), Some(200), "seize through node 1: {}", r.raw);
    expect_notifies("seize on node 1", &mut [&mut a, &mut b, &mut cc], 1, 1, seized);
    agree_one(&c, "after the seize on node 1", "seized", Some(1));
    let call = invite(&c, &mut a, &mut d, 2);
    expect_notifies("INVITE through node 2", &mut [&mut a, &mut b, &mut cc], 1, 1, seized);
    agree_one(&c, "after the INVITE through node 2", "seized", Some(1));
    answer(&mut d, &call.d_invite, 486, "Busy Here", None);
    expect_status(&mut a.ua, &call.invite, 486);
    // (node 2 first repeats the unchanged state to its own phone, as the
    // C module does: scenario_rejected_call; an unchanged state is not
    // replicated, docs/cluster.md "Limits")
    let got = collect_until(&mut [&mut a, &mut b, &mut cc], |g| {
        g.iter().all(|g| latest(g).is_some_and(|m| call_info_of(m).contains(idle)))
    });
    for ((p, g), most) in [&a, &b, &cc].iter().zip(&got).zip([1, 2, 1]) {
        let cis: Vec<String> = g.call_info.iter().map(call_info_of).collect();
        assert!(
            (1..=most).contains(&cis.len()) && latest(g).is_some_and(|m| call_info_of(m).contains(idle)),
            "486 through node 2: {} (node {}) ends with one idle NOTIFY from its own node: {cis:?}",
            p.name,
            p.home_id
        );
        assert!(cis[..cis.len() - 1].iter().all(|ci| ci.contains(seized)), "{}: {cis:?}", p.name);
    }
    agree_none(&c, "after the 486 through node 2");

    // 2. seized again through node 1; A reboots and subscribes afresh
    let (_ls, r) = a.seize("1");
    assert_eq!(r.status(), Some(200), "seize through node 1: {}", r.raw);
    expect_notifies("seize on node 1 again", &mut [&mut a, &mut b, &mut cc], 1, 1, seized);
    agree_one(&c, "after the second seize on node 1", "seized", Some(1));
    a.subscribe_call_info();
    expect_notifies("A's fresh call-info SUBSCRIBE on node 1", &mut [&mut a, &mut b, &mut cc], 1, 1, idle);
    agree_none(&c, "after A's reboot");
    let a_hp = a.contact_hostport();
    c.wait_agree("A's one call-info subscription everywhere", AGREE, subscriptions, |v| {
        v.iter().filter(|l| l.contains(&a_hp) && l.contains(" call-info ")).count() == 1
    });
}
