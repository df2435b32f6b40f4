//! Hostile SIP against a real Kamailio with sca_rs: a few thousand
//! malformed and extreme SUBSCRIBE / INVITE / BYE / NOTIFY-reply messages.
//! Afterwards Kamailio is alive with every worker, the subscriptions and
//! appearances made before are unchanged, and it still serves a normal
//! SUBSCRIBE.

mod common;

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use common::cfg::sca_opts;
use common::kamailio::{Kamailio, ScaModule};
use common::flows::subscribe_call_info;
use common::sip::{Subscribe, Ua, RECV_TIMEOUT};

const AOR: &str = "sip:100@127.0.0.1";

/// A deterministic xorshift generator (no dependency, reproducible runs).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a>(&mut self, v: &[&'a str]) -> &'a str {
        v[(self.next() % v.len() as u64) as usize]
    }
}

fn message(rng: &mut Rng, i: usize, port: u16) -> Vec<u8> {
    let long = "x".repeat(10_000);
    let call_infos = [
        "<sip:127.0.0.1>;appearance-index=1",
        "<sip:127.0.0.1>;appearance-index=-1",
        "<sip:127.0.0.1>;appearance-index=99999999999999999999",
        "<sip:127.0.0.1>;appearance-index=",
        "<sip:127.0.0.1>;appearance-index=0;appearance-state=held-private",
        "<sip:127.0.0.1;appearance-index=1",
        "<sip:127.0.0.1>;appearance-uri=\"unterminated;appearance-index=1",
        "<>;appearance-index=1",
        "garbage",
        "",
        "<sip:127.0.0.1>;appearance-index=1;appearance-index=2;appearance-state=bogus",
        &long,
    ];
    let events = ["call-info", "line-seize", "Call-Info", "call-info;id=1", "", "presence", &long];
    let expires = ["600", "0", "-1", "abc", "", "99999999999999999999", "15"];
    let methods = ["SUBSCRIBE", "SUBSCRIBE", "SUBSCRIBE", "INVITE", "BYE", "CANCEL", "PRACK", "REFER"];
    let contacts = ["<sip:100@127.0.0.1:1>", "*", "", "<sip:@>", "<", "sip:100@127.0.0.1:1;expires=x", &long];
    let users = ["100", "200", "", "%00", &long];
    let method = rng.pick(&methods);
    let user = rng.pick(&users);
    let mut m = format!(
        "{method} sip:{user}@127.0.0.1 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-hostile-{i};rport\r\n\
         From: <sip:100@127.0.0.1>;tag=h{i}\r\n"
    );
    match rng.next() % 4 {
        0 => m.push_str(&format!("To: <sip:{user}@127.0.0.1>\r\n")),
        1 => m.push_str(&format!("To: <sip:100@127.0.0.1>;tag=unknown-{i}\r\n")),
        2 => {}
        _ => m.push_str("To: <sip:100@127.0.0.1\r\n"),
    }
    if !rng.next().is_multiple_of(8) {
        m.push_str(&format!("Call-ID: hostile-{i}@127.0.0.1\r\n"));
    }
    let cseq = if rng.next().is_multiple_of(10) { "x".to_string() } else { format!("1 {method}") };
    m.push_str(&format!("CSeq: {cseq}\r\nMax-Forwards: 70\r\n"));
    if !rng.next().is_multiple_of(5) {
        m.push_str(&format!("Contact: {}\r\n", rng.pick(&contacts)));
    }
    if !rng.next().is_multiple_of(4) {
        m.push_str(&format!("Event: {}\r\n", rng.pick(&events)));
    }
    if !rng.next().is_multiple_of(3) {
        m.push_str(&format!("Expires: {}\r\n", rng.pick(&expires)));
    }
    for _ in 0..(rng.next() % 3) {
        m.push_str(&format!("Call-Info: {}\r\n", rng.pick(&call_infos)));
    }
    let body = if method == "INVITE" && rng.next().is_multiple_of(2) {
        "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\nm=audio 9 RTP/AVP 0\r\na=sendonly\r\n"
    } else {
        ""
    };
    if !body.is_empty() {
        m.push_str("Content-Type: application/sdp\r\n");
    }
    // sometimes a wrong Content-Length, sometimes a truncated message
    let cl = if rng.next().is_multiple_of(10) { body.len() + 100 } else { body.len() };
    m.push_str(&format!("Content-Length: {cl}\r\n\r\n{body}"));
    let mut bytes = m.into_bytes();
    if rng.next().is_multiple_of(12) {
        let cut = (rng.next() as usize) % bytes.len().max(1);
        bytes.truncate(cut);
    }
    bytes
}

#[test]
fn thousands_of_hostile_messages_change_nothing_and_crash_nothing() {
    let k = Kamailio::start(sca_opts(ScaModule::Rust));
    // state before: two call-info subscribers and a seized line
    let mut a1 = Ua::new("A1", "100", k.addr()).expect("UA");
    let mut a2 = Ua::new("A2", "100", k.addr()).expect("UA");
    for ua in [&mut a1, &mut a2] {
        ua.auto_answer_notify = true;
        subscribe_call_info(ua, AOR);
    }
    let a1c = format!("sip:100@{}", a1.local);
    k.rpc(&["sca.seize_appearance", AOR, &a1c]);
    // the phones' subscriptions as listed, less the seconds left (column 4)
    let phones_subs = |k: &Kamailio| -> Vec<String> {
        let mut v: Vec<String> = k
            .rpc(&["sca.all_subscriptions"])
            .lines()
            .filter(|l| [&a1, &a2].iter().any(|ua| l.contains(&format!(" {} ", ua.local))))
            .map(|l| l.split(' ').enumerate().filter(|(i, _)| *i != 3).map(|(_, w)| w).collect::<Vec<_>>().join(" "))
            .collect();
        v.sort();
        v
    };
    let before_subs = phones_subs(&k);
    assert_eq!(before_subs.len(), 2, "both phones subscribed: {before_subs:?}");
    let before_apps: Vec<String> =
        k.rpc(&["sca.all_appearances"]).lines().map(|l| l.split(' ').take(3).collect::<Vec<_>>().join(" ")).collect();
    assert_eq!(before_apps, ["sip:100@127.0.0.1 1 seized"]);

    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    sock.set_read_timeout(Some(Duration::from_millis(1))).expect("timeout");
    let port = sock.local_addr().expect("addr").port();
    let mut rng = Rng(0x5ca_5ca);
    let n = 3000;
    let started = Instant::now();
    let mut buf = [0u8; 65535];
    for i in 0..n {
        let m = message(&mut rng, i, port);
        sock.send_to(&m, k.addr()).expect("send");
        // drain replies so the socket does not fill up; pace a little
        while sock.recv_from(&mut buf).is_ok() {}
        if i % 200 == 0 {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(started.elapsed() < Duration::from_secs(120), "bounded in time");
    }
    // Wait until Kamailio has read everything: requests sent after the flood
    // (a SUBSCRIBE of an event nobody serves gets 489 from the script) are
    // answered only once the socket's queue ahead of them is consumed.
    let sentinels: Vec<String> = (0..4).map(|i| format!("sentinel-{i}@127.0.0.1")).collect();
    for (i, cid) in sentinels.iter().enumerate() {
        let m = format!(
            "SUBSCRIBE sip:100@127.0.0.1 SIP/2.0\r\n\
             Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-sentinel-{i};rport\r\n\
             From: <sip:100@127.0.0.1>;tag=s{i}\r\nTo: <sip:100@127.0.0.1>\r\nCall-ID: {cid}\r\n\
             CSeq: 1 SUBSCRIBE\r\nMax-Forwards: 70\r\nContact: <sip:100@127.0.0.1:{port}>\r\n\
             Event: sentinel\r\nExpires: 60\r\nContent-Length: 0\r\n\r\n"
        );
        sock.send_to(m.as_bytes(), k.addr()).expect("send sentinel");
    }
    let mut answered = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while answered < sentinels.len() {
        assert!(Instant::now() < deadline, "Kamailio answers the sentinels after the flood ({answered} of 4)");
        if let Ok((n, _)) = sock.recv_from(&mut buf) {
            let reply = String::from_utf8_lossy(&buf[..n]);
            if reply.starts_with("SIP/2.0 489") && sentinels.iter().any(|c| reply.contains(c.as_str())) {
                answered += 1;
            }
        }
    }

    let mut k = k;
    assert!(k.is_running(), "Kamailio died under hostile input:\n{}", k.log_tail(40));
    let psx = k.rpc(&["core.psx"]);
    assert_eq!(psx.matches("udp receiver child=").count(), 2, "every worker is still there:\n{psx}");
    let log = k.log();
    assert!(!log.contains("CRITICAL") || !log.contains("panic"), "no panic caught:\n{}", k.log_tail(40));
    // the phones' subscriptions and A1's seized line are as they were (the
    // hostile requests came from other contacts; valid ones among them may
    // have seized other lines, which is their right)
    let apps = k.rpc(&["sca.all_appearances"]);
    let line1: Vec<&str> = apps
        .lines()
        .find(|l| l.starts_with("sip:100@127.0.0.1 1 "))
        .unwrap_or_else(|| panic!("line 1 is gone: {apps}"))
        .split(' ')
        .collect();
    assert_eq!((line1[2], line1[4]), ("seized", a1c.as_str()), "line 1 unchanged: {apps}");
    let subs = k.rpc(&["sca.all_subscriptions"]);
    for ua in [&a1, &a2] {
        assert!(subs.contains(&format!("100 {} call-info", ua.local)), "{} kept: {subs}", ua.name);
    }
    assert_eq!(phones_subs(&k), before_subs, "the phones' subscriptions are unchanged");
    // and it still serves a normal SUBSCRIBE
    let mut a3 = Ua::new("A3", "100", k.addr()).expect("UA");
    a3.auto_answer_notify = true;
    let mut d3 = a3.dialog(AOR);
    let s = a3.send_subscribe(&mut d3, &Subscribe::new("call-info", 600)).expect("SUBSCRIBE");
    assert_eq!(a3.expect_final_response(&s, RECV_TIMEOUT).expect("reply").status(), Some(202));
    let n = a3.expect_request("NOTIFY", RECV_TIMEOUT).expect("NOTIFY");
    assert!(n.header("Call-Info").is_some_and(|c| c.contains("appearance-index=1;appearance-state=seized")));
    // Stopped right after the flood, workers are busy: none may die holding
    // a slot lock (they hold SIGTERM back while they hold one), and the
    // final flush must run, not hang until the exit alarm aborts Kamailio.
    k.stop().expect("kamailio exits on SIGTERM");
    assert!(
        k.log().contains("SCA subscriptions flushed to the DB at shutdown"),
        "the final flush ran:\n{}",
        k.log_tail(20)
    );
    assert!(!k.log().contains("still locked"), "no lock left held at shutdown:\n{}", k.log_tail(20));
}
