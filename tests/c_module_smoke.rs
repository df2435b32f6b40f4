//! Smoke test of the harness against Debian's C `sca.so`: a call-info
//! SUBSCRIBE / NOTIFY / unSUBSCRIBE exchange over real UDP with a real
//! Kamailio. The exact replies asserted here are the C module's behaviour,
//! the reference for sca_rs; `tests/golden/c_subscribe_basic.txt` holds the
//! raw messages of one run and the normalized transcript, which every run
//! is compared against (`UPDATE_GOLDEN=1` rewrites the file).

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::cfg::{sca_modparam, sca_opts};
use common::kamailio::{golden_file, kamailio_major_minor, Kamailio, ScaModule};
use common::sip::{Normalizer, SipMessage, Subscribe, Ua, RECV_TIMEOUT};

const AOR: &str = "sip:100@127.0.0.1";

/// The golden of the Kamailio version under test when its C module answers
/// differently from 5.6's (see golden_file).
fn golden_path(for_write: bool) -> PathBuf {
    golden_file("c_subscribe_basic.txt", for_write)
}

const NORMALIZED_BEGIN: &str = "##### normalized transcript (compared on every run) #####\n";
const RAW_BEGIN: &str = "##### raw messages of the recorded run (reference only) #####\n";

/// Assert the header names of `m`, in order (lower-case full names).
fn assert_header_names(m: &SipMessage, expected: &[&str]) {
    let names = m.header_names();
    assert_eq!(names, expected, "header names/order of:\n{}", m.raw);
}

fn hdr<'a>(m: &'a SipMessage, name: &str) -> &'a str {
    m.header(name)
        .unwrap_or_else(|| panic!("no {name} header in:\n{}", m.raw))
}

/// The C module's 2xx to a call-info SUBSCRIBE (sca_subscription_reply):
/// sl's reply with Event, Contact (the Request-URI, no angle brackets),
/// Allow-Events and Expires added, in that order.
fn assert_c_202(resp: &SipMessage, sub: &SipMessage, expires: u32, ua: &Ua) -> String {
    assert_eq!(
        resp.start_line, "SIP/2.0 202 Accepted",
        "status line of:\n{}",
        resp.raw
    );
    assert_header_names(
        resp,
        &[
            "via",
            "from",
            "to",
            "call-id",
            "cseq",
            "event",
            "contact",
            "allow-events",
            "expires",
            "server",
            "content-length",
        ],
    );
    assert_eq!(
        hdr(resp, "Via"),
        format!(
            "{};rport={};received=127.0.0.1",
            hdr(sub, "Via").trim_end_matches(";rport"),
            ua.local.port()
        )
    );
    assert_eq!(hdr(resp, "From"), hdr(sub, "From"));
    assert_eq!(hdr(resp, "Call-ID"), hdr(sub, "Call-ID"));
    assert_eq!(hdr(resp, "CSeq"), hdr(sub, "CSeq"));
    assert_eq!(hdr(resp, "Event"), "call-info");
    assert_eq!(
        hdr(resp, "Contact"),
        AOR,
        "C uses the SUBSCRIBE's Request-URI as Contact"
    );
    assert_eq!(hdr(resp, "Allow-Events"), "call-info, line-seize");
    assert_eq!(hdr(resp, "Expires"), expires.to_string());
    assert!(
        hdr(resp, "Server").starts_with("kamailio ("),
        "Server of:\n{}",
        resp.raw
    );
    assert_eq!(hdr(resp, "Content-Length"), "0");
    assert!(resp.body.is_empty());
    let to_tag = resp.ttag().expect("202 has a To-tag");
    match sub.ttag() {
        // in-dialog: the tag we sent comes back unchanged
        Some(t) => assert_eq!(to_tag, t),
        None => {
            assert!(!to_tag.is_empty());
            assert_eq!(hdr(resp, "To"), format!("{};tag={to_tag}", hdr(sub, "To")));
        }
    }
    to_tag
}

/// The C module's call-info NOTIFY (sca_notify_subscriber via tm's
/// t_request_within): To/From are the AoR with the subscription's tags
/// swapped, then Contact (the AoR), Call-Info, Event and
/// Subscription-State appended in that order.
fn assert_c_notify(
    n: &SipMessage,
    ua: &Ua,
    k: &Kamailio,
    from_tag: &str,
    to_tag: &str,
    cseq: u32,
    state: &str,
) {
    assert_eq!(
        n.start_line,
        format!("NOTIFY {} SIP/2.0", ua.contact_uri()),
        "NOTIFY:\n{}",
        n.raw
    );
    assert_header_names(
        n,
        &[
            "via",
            "to",
            "from",
            "cseq",
            "call-id",
            "max-forwards",
            "content-length",
            "user-agent",
            "contact",
            "call-info",
            "event",
            "subscription-state",
        ],
    );
    assert!(
        hdr(n, "Via").starts_with(&format!("SIP/2.0/UDP {};branch=z9hG4bK", k.addr())),
        "Via of:\n{}",
        n.raw
    );
    assert_eq!(hdr(n, "To"), format!("<{AOR}>;tag={from_tag}"));
    assert_eq!(hdr(n, "From"), format!("<{AOR}>;tag={to_tag}"));
    assert_eq!(hdr(n, "CSeq"), format!("{cseq} NOTIFY"));
    assert_eq!(hdr(n, "Max-Forwards"), "70");
    assert_eq!(hdr(n, "Content-Length"), "0");
    assert!(hdr(n, "User-Agent").starts_with("kamailio ("));
    assert_eq!(hdr(n, "Contact"), AOR);
    assert_eq!(
        hdr(n, "Call-Info"),
        "<sip:127.0.0.1>;appearance-index=*;appearance-state=idle"
    );
    assert_eq!(hdr(n, "Event"), "call-info");
    assert_eq!(hdr(n, "Subscription-State"), state);
    assert!(n.body.is_empty());
}

/// `sca.all_subscriptions` line: "<user> <contact host:port> <event>
/// <seconds left> <state>".
fn assert_all_subscriptions(
    k: &Kamailio,
    ua: &Ua,
    secs: std::ops::RangeInclusive<i64>,
    state: &str,
) {
    let out = k.rpc(&["sca.all_subscriptions"]);
    let f: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(f.len(), 5, "one subscription expected, got {out:?}");
    assert_eq!(
        &f[..3],
        &["100", &ua.local.to_string(), "call-info"],
        "{out:?}"
    );
    let left: i64 = f[3]
        .parse()
        .unwrap_or_else(|_| panic!("seconds left in {out:?}"));
    assert!(
        secs.contains(&left),
        "seconds left {left} not in {secs:?}: {out:?}"
    );
    assert_eq!(f[4], state, "{out:?}");
}

#[test]
fn c_call_info_subscribe_notify_unsubscribe() {
    let k = Kamailio::start(sca_opts(ScaModule::C));
    assert_eq!(
        k.rpc(&["sca.subscription_count", "call-info"]),
        "0 call-info"
    );

    let mut ua = Ua::new("alice", "100", k.addr()).expect("bind UA socket");
    ua.auto_answer_notify = true;
    let mut dlg = ua.dialog(AOR);

    // ---- initial SUBSCRIBE: the AoR comes from the Request-URI
    let sub1 = ua
        .send_subscribe(&mut dlg, &Subscribe::new("call-info", 600))
        .expect("send SUBSCRIBE");
    let r1 = ua
        .expect_final_response(&sub1, RECV_TIMEOUT)
        .expect("202 to initial SUBSCRIBE");
    let server_tag = assert_c_202(&r1, &sub1, 600, &ua);
    assert!(dlg.update_from_response(&r1));
    assert_eq!(dlg.remote_target, AOR, "refreshes go to the 202's Contact");

    let n1 = ua
        .expect_request("NOTIFY", RECV_TIMEOUT)
        .expect("NOTIFY after initial SUBSCRIBE");
    // C defect: the first NOTIFY is built from the request's subscription,
    // whose `expires` is still relative (600), so sca_notify computes
    // ttl = 600 - time(NULL) < 0 and omits ";expires=" (RFC 6665 4.1.3
    // wants it on "active"). Asserted as C behaves.
    assert_c_notify(&n1, &ua, &k, &dlg.local_tag, &server_tag, 1, "active");

    assert_eq!(
        k.rpc(&["sca.subscription_count", "call-info"]),
        "1 call-info"
    );
    assert_eq!(
        k.rpc(&["sca.subscription_count", "line-seize"]),
        "0 line-seize"
    );
    let usage = k
        .kamcmd(&["sca.subscription_count"])
        .expect_err("missing argument must be a fault");
    assert_eq!(
        usage,
        "error: 500 - usage: sca.subscription_count {call-info | line-seize}"
    );
    assert_all_subscriptions(&k, &ua, 598..=600, "active");

    // ---- unSUBSCRIBE (in-dialog, Expires: 0)
    let sub2 = ua
        .send_subscribe(&mut dlg, &Subscribe::new("call-info", 0))
        .expect("send unSUBSCRIBE");
    let r2 = ua
        .expect_final_response(&sub2, RECV_TIMEOUT)
        .expect("202 to unSUBSCRIBE");
    assert_c_202(&r2, &sub2, 0, &ua);
    let n2 = ua
        .expect_request("NOTIFY", RECV_TIMEOUT)
        .expect("NOTIFY after unSUBSCRIBE");
    // Terminated without a reason; Call-Info still carries the idle line.
    assert_c_notify(&n2, &ua, &k, &dlg.local_tag, &server_tag, 2, "terminated");

    // Our 200s matched tm's NOTIFY transactions: no retransmission came,
    // and nothing else is sent.
    ua.expect_silence(Duration::from_millis(1200))
        .expect("no further messages");
    let rtx: Vec<_> = ua
        .transcript()
        .iter()
        .filter(|e| e.retransmission)
        .collect();
    assert!(rtx.is_empty(), "unexpected retransmissions: {rtx:?}");

    // C keeps the terminated subscription in its table until the purge
    // timer (purge_expired_interval, default 120 s) runs.
    assert_eq!(
        k.rpc(&["sca.subscription_count", "call-info"]),
        "1 call-info"
    );
    assert_all_subscriptions(&k, &ua, -5..=0, "terminated");

    // ---- transcript: print, compare with / write the golden file
    let mut norm = Normalizer::new()
        .label_addr(k.addr(), "proxy")
        .label_addr(ua.local, "alice");
    let normalized = norm.normalize_transcript("alice", ua.transcript());
    eprintln!("normalized transcript (C sca.so):\n{normalized}");

    let path = golden_path(std::env::var_os("UPDATE_GOLDEN").is_some());
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        let dir = path.parent().expect("golden dir");
        std::fs::create_dir_all(dir).expect("create tests/golden");
        let text = format!(
            "# Debian Kamailio {kv} C sca.so: call-info SUBSCRIBE, NOTIFY, unSUBSCRIBE.\n\
             # Written by `UPDATE_GOLDEN=1 cargo test --test c_module_smoke`.\n\
             # UA alice = sip:100@127.0.0.1 at {ua}, Kamailio at {proxy}.\n\n\
             {NORMALIZED_BEGIN}{normalized}\n{RAW_BEGIN}{raw}",
            kv = kamailio_major_minor(),
            ua = ua.local,
            proxy = k.addr(),
            raw = ua.transcript_raw()
        );
        std::fs::write(&path, text).expect("write golden file");
        eprintln!("wrote {}", path.display());
    } else {
        let golden = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "read {} ({e}); run with UPDATE_GOLDEN=1 to create it",
                path.display()
            )
        });
        let start = golden
            .find(NORMALIZED_BEGIN)
            .expect("normalized section in golden file")
            + NORMALIZED_BEGIN.len();
        let end = golden.find(RAW_BEGIN).expect("raw section in golden file");
        assert_eq!(
            normalized,
            golden[start..end].trim_end_matches('\n').to_string() + "\n",
            "normalized transcript differs from {}",
            path.display()
        );
    }

    // ---- Kamailio is healthy and stops cleanly
    let bad = k.log_errors();
    assert!(
        bad.is_empty(),
        "errors in Kamailio log:\n{}",
        bad.join("\n")
    );
    let mut k = k;
    assert!(k.is_running(), "kamailio died during the test");
    let st = k.stop().expect("kamailio stops on SIGTERM within 10 s");
    assert!(st.success(), "kamailio exit status {st}");
}

/// With purge_expired_interval=1 the terminated subscription disappears
/// from the table, silently (C only NOTIFYs subscriptions that were not
/// terminated yet).
#[test]
fn c_terminated_subscription_is_purged() {
    let module = ScaModule::C;
    let k = Kamailio::start(sca_opts(module.clone()).var(
        "SCA_MODPARAMS",
        &sca_modparam(&module, "purge_expired_interval", "1"),
    ));
    let mut ua = Ua::new("bob", "100", k.addr()).expect("bind UA socket");
    ua.auto_answer_notify = true;
    let mut dlg = ua.dialog(AOR);

    let s = ua
        .send_subscribe(&mut dlg, &Subscribe::new("call-info", 300))
        .expect("send SUBSCRIBE");
    let r = ua.expect_final_response(&s, RECV_TIMEOUT).expect("202");
    assert_eq!(r.status(), Some(202));
    assert!(dlg.update_from_response(&r));
    let n = ua.expect_request("NOTIFY", RECV_TIMEOUT).expect("NOTIFY");
    assert_eq!(n.header("Subscription-State"), Some("active"));

    let s = ua
        .send_subscribe(&mut dlg, &Subscribe::new("call-info", 0))
        .expect("send unSUBSCRIBE");
    let r = ua
        .expect_final_response(&s, RECV_TIMEOUT)
        .expect("202 to unSUBSCRIBE");
    assert_eq!(r.status(), Some(202));
    let n = ua
        .expect_request("NOTIFY", RECV_TIMEOUT)
        .expect("terminating NOTIFY");
    assert_eq!(n.header("Subscription-State"), Some("terminated"));

    // The count is only observable over RPC: poll it, bounded.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let c = k.rpc(&["sca.subscription_count", "call-info"]);
        if c == "0 call-info" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "subscription not purged within 5 s: {c:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    ua.expect_silence(Duration::from_millis(300))
        .expect("purging a terminated subscription sends nothing");
}
