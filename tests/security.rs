//! Who may see and seize a line (docs/security.md), with a real Kamailio:
//! the bounds only the module can enforce (seized lines per contact, the
//! highest appearance index, subscriptions per contact, per AoR and in
//! total), their refusals counted and logged once per source.

mod common;

use common::cfg::{sca_modparam, sca_opts};
use common::kamailio::{Kamailio, ScaModule};
use common::sip::{SipMessage, Subscribe, Ua, RECV_TIMEOUT};

const AOR: &str = "sip:100@127.0.0.1";

fn call_info(idx: u32) -> String {
    format!("<sip:127.0.0.1>;appearance-index={idx}")
}

/// A SUBSCRIBE of `ua` to `aor` in a new dialog; its final reply.
fn subscribe(ua: &mut Ua, aor: &str, sub: &Subscribe) -> SipMessage {
    let mut d = ua.dialog(aor);
    let s = ua.send_subscribe(&mut d, sub).expect("send SUBSCRIBE");
    ua.expect_final_response(&s, RECV_TIMEOUT).expect("reply to SUBSCRIBE")
}

fn seize(ua: &mut Ua, idx: u32) -> SipMessage {
    subscribe(ua, AOR, &Subscribe::new("line-seize", 15).call_info(&call_info(idx)))
}

fn status(m: &SipMessage) -> u16 {
    m.status().unwrap_or(0)
}

/// `name value` of `kamcmd sca.limits`.
fn limit(k: &Kamailio, name: &str) -> u64 {
    let out = k.rpc(&["sca.limits"]);
    out.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in sca.limits:\n{out}"))
}

fn start(params: &[(&str, &str)]) -> Kamailio {
    let m = ScaModule::Rust;
    let p: String = params.iter().map(|(n, v)| sca_modparam(&m, n, v)).collect();
    Kamailio::start(sca_opts(m).var("SCA_MODPARAMS", &p))
}

fn ua(name: &str, k: &Kamailio) -> Ua {
    let mut u = Ua::new(name, "100", k.addr()).expect("UA");
    u.auto_answer_notify = true;
    u
}

/// Wait for a NOTIFY whose Call-Info contains `what`.
fn notified(ua: &mut Ua, what: &str) {
    ua.recv_where(RECV_TIMEOUT, what, |m| m.method() == Some("NOTIFY") && m.header("Call-Info").is_some_and(|c| c.contains(what)))
        .unwrap_or_else(|e| panic!("{e}"));
}

/// `sca.subscription_count <event>`.
fn count(k: &Kamailio, event: &str) -> u64 {
    let out = k.rpc(&["sca.subscription_count", event]);
    out.split_whitespace().next().and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("{out}"))
}

/// Log lines that report a refusal of `source`.
fn refusal_lines(k: &Kamailio, source: &str) -> usize {
    k.log().lines().filter(|l| l.contains("refused with") && l.contains(source)).count()
}

#[test]
fn the_defaults_are_the_documented_ones() {
    let k = start(&[]);
    for (name, v) in [
        ("max_seized_per_contact", 4),
        ("max_subs_per_aor", 500),
        ("max_subs_per_contact", 1000),
        ("max_appearance_index", 64),
        ("max_subscriptions", 0),
        ("min_free_shm_percent", 5),
    ] {
        assert_eq!(limit(&k, name), v, "{name}");
    }
    assert!(limit(&k, "shm_total_bytes") > 0, "the shm size is known");
    // a line above the default highest index is refused, one below is not
    let mut a = ua("A", &k);
    assert_eq!(status(&seize(&mut a, 65)), 403);
    assert_eq!(status(&seize(&mut a, 64)), 200);
}

#[test]
fn a_bad_bound_is_a_clear_start_up_error() {
    let m = ScaModule::Rust;
    let p = sca_modparam(&m, "max_subs_per_aor", "-1");
    let err = Kamailio::try_start(sca_opts(m).var("SCA_MODPARAMS", &p)).err().expect("refuses to start");
    assert!(err.contains("max_subs_per_aor must be 0 (off)"), "{err}");
}

#[test]
fn a_contact_seizing_more_lines_than_allowed_is_refused_while_others_keep_working() {
    let k = start(&[("max_seized_per_contact", "2"), ("max_appearance_index", "8")]);
    let mut greedy = ua("G", &k);
    let mut other = ua("O", &k);
    let mut watcher = ua("W", &k);
    assert_eq!(status(&subscribe(&mut watcher, AOR, &Subscribe::new("call-info", 600))), 202);

    // two lines, each by a new line-seize from the same phone
    assert_eq!(status(&seize(&mut greedy, 1)), 200);
    assert_eq!(status(&seize(&mut greedy, 2)), 200);
    // the third: refused, and nothing seized
    let r = seize(&mut greedy, 3);
    assert_eq!(status(&r), 403, "{}", r.raw);
    assert!(r.reason().is_some_and(|p| p.contains("too many lines seized")), "{}", r.raw);
    // "any free line" is refused alike
    assert_eq!(status(&seize(&mut greedy, 0)), 403);
    let apps = k.rpc(&["sca.show_appearance", AOR]);
    assert_eq!(apps.lines().filter(|l| l.contains("seized")).count(), 2, "{apps}");
    assert!(!apps.lines().any(|l| l.split_whitespace().nth(1) == Some("3")), "{apps}");

    // another phone still seizes, and the group still hears of it
    assert_eq!(status(&seize(&mut other, 3)), 200);
    notified(&mut watcher, "appearance-index=3;appearance-state=seized");

    // an index above max_appearance_index is refused for anyone
    let r = seize(&mut other, 9);
    assert_eq!(status(&r), 403);
    assert!(r.reason().is_some_and(|p| p.contains("appearance index too high")), "{}", r.raw);

    // counted, and logged once per source however often it is refused
    for _ in 0..5 {
        assert_eq!(status(&seize(&mut greedy, 4)), 403);
    }
    assert_eq!(limit(&k, "refused_seized_per_contact"), 7);
    assert_eq!(limit(&k, "refused_appearance_index"), 1);
    let g = greedy.contact_uri();
    assert_eq!(refusal_lines(&k, &g), 1, "{}", k.log_tail(40));
    assert_eq!(refusal_lines(&k, &other.contact_uri()), 1, "{}", k.log_tail(40));
    assert!(k.log().contains("max_seized_per_contact = 2"), "the log names the bound");

    // releasing a line makes room again
    let rel = subscribe(&mut greedy, AOR, &Subscribe::new("line-seize", 0).call_info(&call_info(1)));
    assert_eq!(status(&rel), 200);
    assert_eq!(status(&seize(&mut greedy, 4)), 200);
}

#[test]
fn a_flood_of_subscriptions_is_bounded_and_members_are_unaffected() {
    let k = start(&[("max_subs_per_contact", "5"), ("max_subs_per_aor", "3"), ("max_subscriptions", "12")]);
    let mut member = ua("M", &k);
    assert_eq!(status(&subscribe(&mut member, AOR, &Subscribe::new("call-info", 600))), 202);

    // one contact subscribes to many AoRs: five are stored, the rest refused
    let mut flood = ua("F", &k);
    let mut codes = Vec::new();
    for i in 0..40 {
        codes.push(status(&subscribe(&mut flood, &format!("sip:flood{i}@127.0.0.1"), &Subscribe::new("call-info", 600))));
    }
    assert_eq!(codes.iter().filter(|c| **c == 202).count(), 5, "{codes:?}");
    assert_eq!(codes.iter().filter(|c| **c == 403).count(), 35, "{codes:?}");
    assert_eq!(count(&k, "call-info"), 6);
    assert_eq!(limit(&k, "refused_subs_per_contact"), 35);
    assert_eq!(refusal_lines(&k, &flood.contact_uri()), 1, "{}", k.log_tail(40));
    // a refresh of a stored subscription is not a new one
    let mut d = flood.dialog("sip:flood0@127.0.0.1");
    let s = flood.send_subscribe(&mut d, &Subscribe::new("call-info", 600)).expect("send");
    let r = flood.expect_final_response(&s, RECV_TIMEOUT).expect("reply");
    assert_eq!(status(&r), 202);
    assert!(d.update_from_response(&r));
    let s = flood.send_subscribe(&mut d, &Subscribe::new("call-info", 600)).expect("send refresh");
    assert_eq!(status(&flood.expect_final_response(&s, RECV_TIMEOUT).expect("reply")), 202);

    // the member's line keeps working: a seize, and its group hears of it
    let mut m2 = ua("M2", &k);
    assert_eq!(status(&subscribe(&mut m2, AOR, &Subscribe::new("call-info", 600))), 202);
    assert_eq!(status(&seize(&mut m2, 1)), 200);
    notified(&mut member, "appearance-index=1;appearance-state=seized");

    // per AoR: the AoR holds three (M, M2 call-info; M2 line-seize)
    let mut m3 = ua("M3", &k);
    let r = subscribe(&mut m3, AOR, &Subscribe::new("call-info", 600));
    assert_eq!(status(&r), 403, "{}", r.raw);
    assert!(r.reason().is_some_and(|p| p.contains("too many subscriptions for this AoR")), "{}", r.raw);

    // in total: M, M2 (two), F (five) and four more make 12, then 503 with Retry-After
    let mut codes = Vec::new();
    let mut last = None;
    for i in 0..8 {
        let mut u = ua(&format!("P{i}"), &k);
        let r = subscribe(&mut u, &format!("sip:p{i}@127.0.0.1"), &Subscribe::new("call-info", 600));
        codes.push(status(&r));
        last = Some(r);
    }
    assert_eq!(codes, [202, 202, 202, 202, 503, 503, 503, 503], "12 stored, then refused");
    let last = last.expect("a reply");
    assert_eq!(last.header("Retry-After"), Some("120"), "{}", last.raw);
    assert_eq!(limit(&k, "refused_subscriptions"), 4);
    assert_eq!(limit(&k, "subscriptions_counted"), 12);
    let stored = count(&k, "call-info") + count(&k, "line-seize");
    assert_eq!(stored, 12, "shm holds what the bound allows, no more");
    assert!(k.log_errors().is_empty(), "{:?}", k.log_errors());
}
