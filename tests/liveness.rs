//! Subscriber liveness (`subscriber_keepalive_interval`): a phone that stops
//! answering gives back the lines it only seized, keeps its calls' lines
//! (flagged), loses its subscriptions; a phone that answers OPTIONS with
//! anything, even 405, stays; with the feature off nothing is pinged and
//! the line stays seized, as with the C module.

mod common;

use std::time::{Duration, Instant};

use common::cfg::{sca_modparam, sca_opts};
use common::flows::subscribe_call_info;
use common::kamailio::{Kamailio, ScaModule};
use common::scenarios::{call_info, sdp};
use common::sip::{Response, SipMessage, Subscribe, Ua, RECV_TIMEOUT};

const AOR: &str = "sip:100@127.0.0.1";
const CALLEE: &str = "sip:200@127.0.0.1";

/// Kamailio with `module`; `interval` Some turns subscriber liveness on
/// (down after 2 unanswered pings; tm gives a ping up after 1 s).
fn start(module: ScaModule, interval: Option<u32>) -> Kamailio {
    let mut p = sca_modparam(&module, "purge_expired_interval", "1");
    p += &sca_modparam(&module, "db_update_interval", "1");
    if let Some(i) = interval {
        p += &sca_modparam(&module, "subscriber_keepalive_interval", &i.to_string());
        p += &sca_modparam(&module, "ka_down_threshold", "2");
    }
    p += "modparam(\"tm\", \"fr_timer\", 1000)\n";
    Kamailio::start(sca_opts(module).var("SCA_MODPARAMS", &p))
}

fn phone(k: &Kamailio, name: &str, user: &str, options: Option<u16>) -> Ua {
    let mut ua = Ua::new(name, user, k.addr()).expect("UA");
    ua.auto_answer_notify = true;
    ua.auto_answer_options = options;
    ua
}

/// `ua` seizes `index` of AOR; returns after the 200 and its 2 NOTIFYs.
fn seize(ua: &mut Ua, index: &str) {
    let mut d = ua.dialog(AOR);
    let s = ua.send_subscribe(&mut d, &Subscribe::new("line-seize", 15).call_info(&call_info(index))).expect("line-seize");
    let r = ua.expect_final_response(&s, RECV_TIMEOUT).expect("reply to line-seize");
    assert_eq!(r.status(), Some(200), "{}", r.raw);
    ua.expect_request("NOTIFY", RECV_TIMEOUT).expect("line-seize NOTIFY");
    ua.expect_request("NOTIFY", RECV_TIMEOUT).expect("call-info NOTIFY");
}

fn call_info_of(m: &SipMessage) -> String {
    m.header_lines("Call-Info").join(", ")
}

/// The next NOTIFY to `ua` whose Call-Info contains `what`, within `within`
/// (other NOTIFYs are answered and skipped, OPTIONS answered).
fn notify_with(ua: &mut Ua, what: &str, within: Duration) -> SipMessage {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let m = ua.expect_request("NOTIFY", left).unwrap_or_else(|e| panic!("NOTIFY with {what}: {e}"));
        if call_info_of(&m).contains(what) {
            return m;
        }
    }
}

/// `sca.subscriber_liveness` as (name, value) pairs.
fn liveness(k: &Kamailio) -> Vec<(String, u64)> {
    k.rpc(&["sca.subscriber_liveness"])
        .lines()
        .filter_map(|l| {
            let (n, v) = l.trim().split_once(' ')?;
            Some((n.to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

fn stat(k: &Kamailio, name: &str) -> u64 {
    let all = liveness(k);
    all.iter().find(|(n, _)| n == name).map(|(_, v)| *v).unwrap_or_else(|| panic!("no {name} in {all:?}"))
}

/// Keep `ua` answering (OPTIONS, NOTIFY) for `dur`; returns what it got.
fn pump(ua: &mut Ua, dur: Duration) -> Vec<SipMessage> {
    let until = Instant::now() + dur;
    let mut got = Vec::new();
    while Instant::now() < until {
        if let Ok(m) = ua.recv(until.saturating_duration_since(Instant::now())) {
            got.push(m);
        }
    }
    got
}

fn wait_for(what: &str, within: Duration, mut ok: impl FnMut() -> bool, mut meanwhile: impl FnMut()) {
    let deadline = Instant::now() + within;
    while !ok() {
        assert!(Instant::now() < deadline, "{what} within {within:?}");
        meanwhile();
    }
}

fn subscriptions(k: &Kamailio) -> String {
    k.rpc(&["sca.all_subscriptions"])
}

fn port_of(ua: &Ua) -> String {
    format!("127.0.0.1:{}", ua.local.port())
}

#[test]
fn a_silent_phone_gives_back_the_line_it_seized() {
    let k = start(ScaModule::Rust, Some(1));
    let mut b = phone(&k, "B", "100", Some(200));
    let mut a = phone(&k, "A", "100", Some(200));
    subscribe_call_info(&mut b, AOR);
    subscribe_call_info(&mut a, AOR);
    seize(&mut a, "1");
    notify_with(&mut b, "appearance-index=1;appearance-state=seized", RECV_TIMEOUT);
    assert_eq!(stat(&k, "monitored"), 2, "one destination per phone");
    // both phones answer pings for a while: nobody is declared dead
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(3) {
        pump(&mut a, Duration::from_millis(100));
        pump(&mut b, Duration::from_millis(100));
    }
    assert!(a.options_answered >= 2 && b.options_answered >= 2, "A {} B {} pings", a.options_answered, b.options_answered);
    assert_eq!(stat(&k, "declared_dead"), 0);
    assert!(k.rpc(&["sca.all_appearances"]).contains(" 1 seized "));

    // A loses power: it reads nothing from now on
    let silent = Instant::now();
    let idle = notify_with(&mut b, "appearance-index=*;appearance-state=idle", Duration::from_secs(10));
    assert!(!call_info_of(&idle).contains("appearance-index=1"), "{}", idle.raw);
    eprintln!("line released {:.1} s after the phone went silent", silent.elapsed().as_secs_f64());
    assert!(!k.rpc(&["sca.all_appearances"]).contains(" 1 seized "));
    assert_eq!(stat(&k, "declared_dead"), 1);
    assert_eq!(stat(&k, "lines_released"), 1);
    assert_eq!(stat(&k, "subscriptions_ended"), 2, "A's call-info and line-seize");
    assert_eq!(stat(&k, "monitored"), 1, "B only");
    let subs = subscriptions(&k);
    assert!(!subs.contains(&port_of(&a)), "A's subscriptions ended: {subs}");
    assert!(subs.contains(&port_of(&b)), "B's stays: {subs}");
    // A's call-info subscription got a last NOTIFY (read now from A's socket)
    let last = a.expect_request("NOTIFY", RECV_TIMEOUT).expect("queued NOTIFY");
    let mut last = last;
    while !last.raw.contains("Subscription-State: terminated;reason=deactivated") {
        last = a.expect_request("NOTIFY", RECV_TIMEOUT).expect("the deactivated NOTIFY for A");
    }
    // and its rows left the DB at the next flush, B's did not
    pump(&mut b, Duration::from_secs(2));
    let rows = k.sqlite("SELECT subscriber FROM sca_subscriptions;").expect("sqlite");
    assert!(!rows.contains(&port_of(&a)), "A's rows deleted: {rows}");
    assert!(rows.contains(&port_of(&b)), "B's row kept: {rows}");

    // back on power, A subscribes again and is served as new
    subscribe_call_info(&mut a, AOR);
    assert_eq!(stat(&k, "monitored"), 2);
    let mut k = k;
    assert!(k.is_running());
}

#[test]
fn a_phone_in_a_call_keeps_its_line_when_it_goes_silent() {
    let k = start(ScaModule::Rust, Some(1));
    let mut b = phone(&k, "B", "100", Some(200));
    let mut a = phone(&k, "A", "100", Some(200));
    let mut c = phone(&k, "C", "200", Some(200));
    subscribe_call_info(&mut b, AOR);
    subscribe_call_info(&mut a, AOR);
    seize(&mut a, "1");
    // A calls C on appearance 1; C answers
    let mut dlg = a.dialog(CALLEE);
    dlg.remote_target = c.contact_uri();
    let req = a.request(&mut dlg, "INVITE").header("Call-Info", &call_info("1")).body("application/sdp", &sdp("A", 1, "sendrecv"));
    let invite = a.send(&req).expect("INVITE");
    let c_invite = c.expect_request("INVITE", RECV_TIMEOUT).expect("INVITE at C");
    let tag = c.uas_tag(c_invite.call_id().unwrap_or(""));
    let ok = Response::for_request(&c_invite, 200, "OK")
        .with_to_tag(&tag)
        .record_route_from(&c_invite)
        .header("Contact", &format!("<{}>", c.contact_uri()))
        .body("application/sdp", &sdp("C", 1, "sendrecv"));
    c.send_response(&c_invite, &ok).expect("200");
    let r = a.expect_final_response(&invite, RECV_TIMEOUT).expect("200 at A");
    assert_eq!(r.status(), Some(200), "{}", r.raw);
    dlg.update_from_response(&r);
    let ack = a.request_with_cseq(&dlg, "ACK", invite.cseq().map(|c| c.0).unwrap_or(1));
    a.send(&ack).expect("ACK");
    notify_with(&mut b, "appearance-index=1;appearance-state=active", RECV_TIMEOUT);

    // A goes silent; B and C keep answering (and B's messages are kept:
    // none of them may free line 1)
    let mut seen_by_b = Vec::new();
    wait_for(
        "A declared dead",
        Duration::from_secs(10),
        || stat(&k, "declared_dead") == 1,
        || {
            seen_by_b.extend(pump(&mut b, Duration::from_millis(100)));
            pump(&mut c, Duration::from_millis(100));
        },
    );
    let apps = k.rpc(&["sca.all_appearances"]);
    let line = apps.lines().find(|l| l.contains(" 1 active ")).unwrap_or_else(|| panic!("the call's line stays: {apps}"));
    assert!(line.trim_end().ends_with("owner-unreachable"), "flagged: {line}");
    assert_eq!(stat(&k, "calls_flagged"), 1);
    assert_eq!(stat(&k, "lines_released"), 0);
    assert!(!subscriptions(&k).contains(&port_of(&a)));
    // the other phones saw no idle NOTIFY for line 1, while A was dying nor
    // in the half second after
    seen_by_b.extend(pump(&mut b, Duration::from_millis(500)));
    let notifies: Vec<&SipMessage> = seen_by_b.iter().filter(|m| m.method() == Some("NOTIFY")).collect();
    // (a NOTIFY carries the AoR's whole state: each one B got must still
    // show line 1 active; a release would show it idle or leave it out)
    for m in &notifies {
        let ci = call_info_of(m);
        assert!(ci.contains("appearance-index=1;appearance-state=active"), "line 1 freed while its call is up: {}", m.raw);
    }
}

#[test]
fn a_phone_answering_405_to_options_is_alive() {
    let k = start(ScaModule::Rust, Some(1));
    let mut a = phone(&k, "A", "100", Some(405));
    subscribe_call_info(&mut a, AOR);
    seize(&mut a, "1");
    pump(&mut a, Duration::from_secs(5));
    assert!(a.options_answered >= 3, "pinged {} times", a.options_answered);
    assert_eq!(stat(&k, "declared_dead"), 0);
    assert_eq!(stat(&k, "up"), 1);
    assert!(subscriptions(&k).contains(&port_of(&a)));
    assert!(k.rpc(&["sca.all_appearances"]).contains(" 1 seized "));
}

/// A phone stops being pinged as soon as its last call-info subscription
/// ends, not at the next once-per-interval recount (30 s here, so it
/// cannot have run): a phone subscribed to two AoRs stays monitored when
/// it unsubscribes from one, and goes when it unsubscribes from the
/// other (one keepalive destination per phone, counting its AoRs).
#[test]
fn a_phone_is_no_longer_pinged_once_its_last_call_info_subscription_ends() {
    const AOR2: &str = "sip:101@127.0.0.1";
    let k = start(ScaModule::Rust, Some(30));
    let mut a = phone(&k, "A", "100", Some(200));
    let mut b = phone(&k, "B", "100", Some(200));
    let mut d1 = subscribe_call_info(&mut a, AOR);
    let mut d2 = subscribe_call_info(&mut a, AOR2);
    let unsubscribe = |ua: &mut Ua, d: &mut common::sip::Dialog| {
        let s = ua.send_subscribe(d, &Subscribe::new("call-info", 0)).expect("unSUBSCRIBE");
        let r = ua.expect_final_response(&s, RECV_TIMEOUT).expect("reply to the unSUBSCRIBE");
        assert_eq!(r.status(), Some(202), "{}", r.raw);
        let n = ua.expect_request("NOTIFY", RECV_TIMEOUT).expect("terminated NOTIFY");
        assert!(n.header("Subscription-State").is_some_and(|s| s.starts_with("terminated")), "{}", n.raw);
    };
    let within = Duration::from_secs(3);
    wait_for("A monitored once", within, || stat(&k, "monitored") == 1, || drop(pump(&mut a, Duration::from_millis(50))));

    // A leaves AOR, B comes: A still has AOR2, so both are monitored
    unsubscribe(&mut a, &mut d1);
    subscribe_call_info(&mut b, AOR);
    wait_for("A (still on AOR2) and B monitored", within, || stat(&k, "monitored") == 2, || drop(pump(&mut a, Duration::from_millis(50))));

    // A leaves AOR2, its last: no longer monitored, B still is
    unsubscribe(&mut a, &mut d2);
    wait_for("A no longer monitored", within, || stat(&k, "monitored") == 1, || drop(pump(&mut b, Duration::from_millis(50))));
    let listed = k.rpc(&["keepalive.list"]);
    assert!(!listed.contains(&port_of(&a)), "A is not a keepalive destination: {listed}");
    assert!(listed.contains(&port_of(&b)), "B is: {listed}");
    assert_eq!(stat(&k, "declared_dead"), 0);
}

/// Off (the default): no OPTIONS to phones, a silent phone's seized line
/// stays seized, as with Debian's C module (run against both).
#[test]
fn with_liveness_off_a_silent_phone_keeps_its_line_like_the_c_module() {
    for module in [ScaModule::Rust, ScaModule::C] {
        let k = start(module.clone(), None);
        let mut b = phone(&k, "B", "100", Some(200));
        let mut a = phone(&k, "A", "100", Some(200));
        subscribe_call_info(&mut b, AOR);
        subscribe_call_info(&mut a, AOR);
        seize(&mut a, "1");
        // A silent for 4 s, B answering
        pump(&mut b, Duration::from_secs(4));
        assert!(k.rpc(&["sca.all_appearances"]).contains(" 1 seized "), "{}: line still seized", module.name());
        assert!(subscriptions(&k).contains(&port_of(&a)), "{}", module.name());
        pump(&mut a, Duration::from_millis(300));
        assert_eq!(a.options_answered + b.options_answered, 0, "{}: no phone pinged", module.name());
        if module == ScaModule::Rust {
            let out = k.kamcmd(&["sca.subscriber_liveness"]);
            assert!(out.is_err(), "liveness off is an RPC fault: {out:?}");
        }
    }
}

/// A phone behind an edge proxy: its Contact cannot be reached from here,
/// and its SUBSCRIBE came with the proxy's Record-Route. Pings go over that
/// route set, as its NOTIFYs do: the proxy gets them (R-URI the contact,
/// a Route header) and answers, and the phone stays alive.
#[test]
fn a_phone_behind_an_edge_proxy_is_pinged_over_its_record_route() {
    let k = start(ScaModule::Rust, Some(1));
    let mut edge = phone(&k, "EDGE", "edge", Some(200));
    let mut a = phone(&k, "A", "100", Some(200));
    let unreachable = "sip:100@127.0.0.1:9";
    let rr = format!("<sip:{};lr>", edge.local);
    let mut d = a.dialog(AOR);
    let req = a
        .subscribe_request(&mut d, &Subscribe::new("call-info", 600))
        .set_header("Contact", &format!("<{unreachable}>"))
        .header("Record-Route", &rr);
    let s = a.send(&req).expect("SUBSCRIBE");
    let r = a.expect_final_response(&s, RECV_TIMEOUT).expect("reply to SUBSCRIBE");
    assert_eq!(r.status(), Some(202), "{}", r.raw);
    let n = edge.expect_request("NOTIFY", RECV_TIMEOUT).expect("the NOTIFY, over the route set");
    assert!(n.start_line.contains(unreachable), "{}", n.raw);
    pump(&mut edge, Duration::from_secs(4));
    assert!(edge.options_answered >= 2, "pinged over the route set {} times", edge.options_answered);
    let t = edge.transcript_raw();
    assert!(t.contains(&format!("OPTIONS {unreachable} SIP/2.0")), "the R-URI is the contact: {t}");
    assert!(t.contains(&format!("Route: {rr}")), "with the route set: {t}");
    assert_eq!(stat(&k, "declared_dead"), 0);
    assert_eq!(stat(&k, "up"), 1);
    assert!(subscriptions(&k).contains("127.0.0.1:9"), "{}", subscriptions(&k));
}
