//! Kamailio statistics (docs/observability.md): Kamailio runs
//! cfg-examples/kamailio-sca-metrics.cfg, phones subscribe, seize, are
//! refused, call; a keepalive gateway is silent, another answers; and every
//! sca_rs statistic, scraped from `/metrics` over HTTP (xhttp_prom) and read
//! with `kamcmd stats.get_statistics`, moved by exactly what was done.

mod common;
mod keepalive_support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::flows::subscribe_call_info;
use common::kamailio::{Kamailio, KamailioOpts, ScaModule};
use common::scenarios::{call_info, sdp};
use common::sip::{Direction, Response, SipMessage, Subscribe, Ua, RECV_TIMEOUT};
use keepalive_support::{list, wait_until, Gateway};

const AOR: &str = "sip:100@127.0.0.1";
const CALLEE: &str = "sip:200@127.0.0.1";
/// A second shared line, for the phone that never answers its NOTIFYs.
const AOR_D: &str = "sip:300@127.0.0.1";
const WAIT: Duration = Duration::from_secs(15);

type Stats = BTreeMap<String, i64>;

/// The example config as a harness template (its own `#!define` switches
/// take the harness's ports, sockets and DB); `gateway` is the keepalive
/// destination it monitors; `defines` are more `#!define` lines.
fn example(gateway: &str, defines: &str) -> KamailioOpts {
    let path = common::kamailio::repo_root().join("cfg-examples/kamailio-sca-metrics.cfg");
    let text = std::fs::read_to_string(&path).expect("read cfg-examples/kamailio-sca-metrics.cfg");
    assert!(
        text.contains("loadmodule \"sca_rs.so\""),
        "example loads sca_rs.so"
    );
    let text = text.replace(
        "loadmodule \"sca_rs.so\"",
        "loadmodule \"{{SCA_LOADMODULE}}\"",
    );
    let tpl = format!(
        "#!define LISTEN udp:127.0.0.1:{{{{PORT}}}}\n#!define HTTP_LISTEN tcp:127.0.0.1:{{{{PORT}}}}\n\
         #!define DBURL \"{{{{DB_URL}}}}\"\n#!define CTL \"{{{{CTL_SOCKET}}}}\"\n\
         #!define GATEWAY \"{gateway}\"\n#!define PING_INTERVAL 1\n#!define FR_TIMER 1000\n\
         #!define SCA_EXAMPLE_WITHOUT_AUTH\n{defines}{text}"
    );
    KamailioOpts::new(&tpl, ScaModule::Rust)
}

/// `GET path` over HTTP/1.1 to Kamailio's TCP listener: (status, body).
fn http_get(k: &Kamailio, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(k.addr()).expect("connect to Kamailio's TCP listener");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .expect("send GET");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    // the body ends at Content-Length (xhttp may keep the connection open)
    loop {
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let len = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>())
                })
                .and_then(Result::ok);
            if let Some(len) = len {
                if buf.len() >= end + 4 + len {
                    let status = text
                        .split_whitespace()
                        .nth(1)
                        .and_then(|c| c.parse().ok())
                        .unwrap_or(0);
                    return (
                        status,
                        String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).into_owned(),
                    );
                }
            }
        }
        match s.read(&mut chunk) {
            Ok(0) => panic!("connection closed before the whole reply:\n{text}"),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => panic!("reading the HTTP reply: {e}\n{text}"),
        }
    }
}

/// sca_rs's statistics from `/metrics` (`kamailio_sca_rs_<name> <value> [ts]`).
fn scrape(k: &Kamailio) -> Stats {
    let (status, body) = http_get(k, "/metrics");
    assert_eq!(status, 200, "{body}");
    body.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let name = f.next()?.strip_prefix("kamailio_sca_rs_")?;
            Some((name.to_string(), f.next()?.parse().ok()?))
        })
        .collect()
}

/// sca_rs's statistics from `kamcmd stats.get_statistics sca_rs:`.
fn kamcmd_stats(k: &Kamailio) -> Stats {
    k.rpc(&["stats.get_statistics", "sca_rs:"])
        .lines()
        .filter_map(|l| {
            let (n, v) = l.trim().split_once(" = ")?;
            Some((
                n.strip_prefix("sca_rs:")?.to_string(),
                v.trim().parse().ok()?,
            ))
        })
        .collect()
}

/// Every statistic the module registers (docs/observability.md).
const NAMES: &[&str] = &[
    "subscriptions_call_info",
    "subscriptions_line_seize",
    "subscribe_accepted",
    "subscribe_refused_4xx",
    "subscribe_refused_5xx",
    "notify_sent",
    "notify_failed",
    "seizes_granted",
    "seizes_refused",
    "appearances_seized",
    "appearances_progressing",
    "appearances_alerting",
    "appearances_active",
    "appearances_held",
    "call_info_updates",
    "db_rows_written",
    "db_rows_failed",
    "db_backlog",
    "db_last_flush_ms",
    "db_restored",
    "cluster_msgs_sent",
    "cluster_msgs_send_failed",
    "cluster_msgs_received",
    "cluster_msgs_rejected",
    "cluster_conflicts_won",
    "cluster_conflicts_lost",
    "cluster_digests_sent",
    "cluster_digest_buckets_differed",
    "cluster_heal_applied",
    "cluster_sync_state",
    "cluster_peers_active",
    "liveness_phones_monitored",
    "liveness_declared_dead",
    "liveness_subscriptions_ended",
    "liveness_lines_released",
    "keepalive_pings_sent",
    "keepalive_pings_failed",
    "keepalive_pings_answered",
    "keepalive_ping_rtt_ms",
    "keepalive_destinations_up",
    "keepalive_destinations_down",
    "keepalive_destinations_unknown",
    "limits_refused_seized_per_contact",
    "limits_refused_index_too_high",
    "limits_refused_subs_per_aor",
    "limits_refused_subs_per_contact",
    "limits_refused_total_subs",
    "limits_refused_low_shm",
];

/// The statistics that only SIP of this test moves (not the keepalive
/// pings nor the DB writer, which run on their own clocks).
fn sca_part(s: &Stats) -> Stats {
    s.iter()
        .filter(|(n, _)| !n.starts_with("keepalive_") && !n.starts_with("db_"))
        .map(|(n, v)| (n.clone(), *v))
        .collect()
}

/// Both views, which must agree on what SIP moved. Liveness moves on its
/// own clock (subscriber pings), so the views are compared when nothing
/// moved between two scrapes around the kamcmd read (waited for, with a
/// deadline); a disagreement then is a real one.
fn both(k: &Kamailio) -> Stats {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let before = scrape(k);
        let rpc = kamcmd_stats(k);
        let after = scrape(k);
        if sca_part(&before) == sca_part(&after) || std::time::Instant::now() > deadline {
            assert_eq!(
                sca_part(&after),
                sca_part(&rpc),
                "/metrics and stats.get_statistics disagree"
            );
            return after;
        }
    }
}

fn phone(k: &Kamailio, name: &str, user: &str) -> Ua {
    let mut ua = Ua::new(name, user, k.addr()).expect("UA");
    ua.auto_answer_notify = true;
    ua
}

/// Read whatever reaches `uas` for `dur` (NOTIFYs are answered as read).
fn pump(uas: &mut [&mut Ua], dur: Duration) {
    let until = Instant::now() + dur;
    while Instant::now() < until {
        for ua in uas.iter_mut() {
            let _ = ua.recv(Duration::from_millis(20));
        }
    }
}

/// The NOTIFYs `ua` received (retransmissions not counted).
fn notifies_received(ua: &Ua) -> i64 {
    ua.transcript()
        .iter()
        .filter(|e| {
            e.dir == Direction::Received && !e.retransmission && e.msg.method() == Some("NOTIFY")
        })
        .count() as i64
}

fn notify_with(ua: &mut Ua, what: &str) -> SipMessage {
    let deadline = Instant::now() + RECV_TIMEOUT;
    loop {
        let m = ua
            .expect_request("NOTIFY", deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|e| panic!("NOTIFY with {what}: {e}"));
        if m.header_lines("Call-Info").join(", ").contains(what) {
            return m;
        }
    }
}

/// Rows in the sqlite DB's subscription table.
fn db_rows(k: &Kamailio) -> i64 {
    k.sqlite("SELECT count(*) FROM sca_subscriptions;")
        .expect("sqlite")
        .trim()
        .parse()
        .expect("count")
}

/// Assert `after - before` for each named statistic.
fn assert_moved(before: &Stats, after: &Stats, expect: &[(&str, i64)]) {
    for (name, delta) in expect {
        let (b, a) = (before[*name], after[*name]);
        assert_eq!(a - b, *delta, "{name}: {b} -> {a}");
    }
}

fn assert_values(now: &Stats, expect: &[(&str, i64)]) {
    for (name, v) in expect {
        assert_eq!(now[*name], *v, "{name}");
    }
}

#[test]
fn every_statistic_moves_by_what_sip_keepalive_and_the_db_did() {
    let silent = Gateway::new(0);
    let answering = Gateway::new(200);
    answering.set_delay(30);
    let k = Kamailio::start(example(&silent.hostport(), ""));
    let answering_uri = format!("sip:{}", answering.hostport());
    assert_eq!(
        k.rpc(&["keepalive.add", &answering_uri, "metrics-test"]),
        "Ok. Destination added."
    );

    // every statistic is there, in both views, and /metrics serves nothing else
    let start = both(&k);
    for n in NAMES {
        assert!(
            start.contains_key(*n),
            "{n} missing from /metrics: {start:?}"
        );
    }
    assert_eq!(start.len(), NAMES.len(), "{start:?}");
    assert_eq!(http_get(&k, "/other").0, 404);
    // nothing happened yet; the cluster is off
    for (n, v) in sca_part(&start) {
        assert_eq!(v, 0, "{n} at start");
    }
    assert_eq!(start["db_restored"], 0);

    let mut a = phone(&k, "A", "100");
    let mut b = phone(&k, "B", "100");
    let mut c = phone(&k, "C", "200");

    // two call-info subscriptions: two 202s, one NOTIFY each
    subscribe_call_info(&mut a, AOR);
    subscribe_call_info(&mut b, AOR);
    let s1 = both(&k);
    assert_moved(
        &start,
        &s1,
        &[
            ("subscribe_accepted", 2),
            ("notify_sent", 2),
            ("notify_failed", 0),
        ],
    );
    assert_values(
        &s1,
        &[
            ("subscriptions_call_info", 2),
            ("subscriptions_line_seize", 0),
        ],
    );

    // A seizes line 1: its line-seize NOTIFY, then the group's (A and B)
    let mut da = a.dialog(AOR);
    let s = a
        .send_subscribe(
            &mut da,
            &Subscribe::new("line-seize", 15).call_info(&call_info("1")),
        )
        .expect("line-seize");
    let r = a
        .expect_final_response(&s, RECV_TIMEOUT)
        .expect("reply to line-seize");
    assert_eq!(r.status(), Some(200), "{}", r.raw);
    a.expect_request("NOTIFY", RECV_TIMEOUT)
        .expect("line-seize NOTIFY");
    a.expect_request("NOTIFY", RECV_TIMEOUT)
        .expect("call-info NOTIFY to A");
    notify_with(&mut b, "appearance-index=1;appearance-state=seized");
    let s2 = both(&k);
    assert_moved(
        &s1,
        &s2,
        &[
            ("subscribe_accepted", 1),
            ("seizes_granted", 1),
            ("notify_sent", 3),
            ("seizes_refused", 0),
        ],
    );
    assert_values(
        &s2,
        &[("subscriptions_line_seize", 1), ("appearances_seized", 1)],
    );

    // B wants the same line: 480; then a line-seize without Call-Info: 400
    let mut db = b.dialog(AOR);
    let s = b
        .send_subscribe(
            &mut db,
            &Subscribe::new("line-seize", 15).call_info(&call_info("1")),
        )
        .expect("line-seize");
    let r = b.expect_final_response(&s, RECV_TIMEOUT).expect("reply");
    assert_eq!(r.status(), Some(480), "{}", r.raw);
    let mut db2 = b.dialog(AOR);
    let s = b
        .send_subscribe(&mut db2, &Subscribe::new("line-seize", 15))
        .expect("line-seize");
    let r = b.expect_final_response(&s, RECV_TIMEOUT).expect("reply");
    assert_eq!(r.status(), Some(400), "{}", r.raw);
    let s3 = both(&k);
    assert_moved(
        &s2,
        &s3,
        &[
            ("subscribe_refused_4xx", 2),
            ("seizes_refused", 1),
            ("subscribe_accepted", 0),
            ("notify_sent", 0),
            ("seizes_granted", 0),
        ],
    );
    assert_values(
        &s3,
        &[("subscriptions_line_seize", 1), ("appearances_seized", 1)],
    );

    // A calls C on line 1; C answers, A ACKs: sca_call_info_update ran on
    // the INVITE and on the 200
    let mut dlg = a.dialog(CALLEE);
    dlg.remote_target = c.contact_uri();
    let req = a
        .request(&mut dlg, "INVITE")
        .header("Call-Info", &call_info("1"))
        .body("application/sdp", &sdp("A", 1, "sendrecv"));
    let invite = a.send(&req).expect("INVITE");
    let c_invite = c
        .expect_request("INVITE", RECV_TIMEOUT)
        .expect("INVITE at C");
    let tag = c.uas_tag(c_invite.call_id().unwrap_or(""));
    let ok = Response::for_request(&c_invite, 200, "OK")
        .with_to_tag(&tag)
        .record_route_from(&c_invite)
        .header("Contact", &format!("<{}>", c.contact_uri()))
        .body("application/sdp", &sdp("C", 1, "sendrecv"));
    c.send_response(&c_invite, &ok).expect("200");
    let r = a
        .expect_final_response(&invite, RECV_TIMEOUT)
        .expect("200 at A");
    assert_eq!(r.status(), Some(200), "{}", r.raw);
    dlg.update_from_response(&r);
    let ack = a.request_with_cseq(&dlg, "ACK", invite.cseq().map(|c| c.0).unwrap_or(1));
    a.send(&ack).expect("ACK");
    notify_with(&mut b, "appearance-index=1;appearance-state=active");
    let s4 = both(&k);
    assert_moved(&s3, &s4, &[("call_info_updates", 2)]);
    assert_values(&s4, &[("appearances_active", 1), ("appearances_seized", 0)]);

    // A hangs up: the BYE and its 200 went through sca_call_info_update
    let bye = a.request(&mut dlg, "BYE");
    let bye = a.send(&bye).expect("BYE");
    let c_bye = c.expect_request("BYE", RECV_TIMEOUT).expect("BYE at C");
    c.reply(&c_bye, 200, "OK").expect("200 to BYE");
    let r = a
        .expect_final_response(&bye, RECV_TIMEOUT)
        .expect("200 to BYE at A");
    assert_eq!(r.status(), Some(200), "{}", r.raw);
    notify_with(&mut b, "appearance-index=*;appearance-state=idle");
    let s5 = both(&k);
    assert_moved(&s4, &s5, &[("call_info_updates", 2)]);
    for st in ["seized", "progressing", "alerting", "active", "held"] {
        assert_eq!(s5[&format!("appearances_{st}")], 0, "{st} after the call");
    }

    // D subscribes to another line and never answers its NOTIFY: tm gives
    // it up after fr_timer (1 s), a failed NOTIFY
    let mut d = Ua::new("D", "300", k.addr()).expect("UA");
    let mut dd = d.dialog(AOR_D);
    let s = d
        .send_subscribe(&mut dd, &Subscribe::new("call-info", 600))
        .expect("SUBSCRIBE");
    let r = d.expect_final_response(&s, RECV_TIMEOUT).expect("reply");
    assert_eq!(r.status(), Some(202), "{}", r.raw);
    assert!(
        wait_until(WAIT, || both(&k)["notify_failed"] == 1),
        "the unanswered NOTIFY counted as failed:\n{}",
        k.log_tail(30)
    );

    // every NOTIFY a phone received was counted as sent, and no other
    pump(
        &mut [&mut a, &mut b, &mut c, &mut d],
        Duration::from_millis(300),
    );
    let received: i64 = [&a, &b, &c, &d].iter().map(|u| notifies_received(u)).sum();
    let s6 = both(&k);
    assert_eq!(
        s6["notify_sent"], received,
        "NOTIFYs sent = NOTIFYs the phones got"
    );
    assert_eq!(
        s6["notify_sent"],
        2 + 3 + s5["notify_sent"] - s2["notify_sent"] + 1,
        "as counted step by step"
    );
    assert_values(
        &s6,
        &[
            ("subscribe_accepted", 4),
            ("subscribe_refused_4xx", 2),
            ("subscribe_refused_5xx", 0),
            ("seizes_granted", 1),
            ("seizes_refused", 1),
            ("notify_failed", 1),
            ("call_info_updates", 4),
            ("subscriptions_call_info", 3),
            // nothing of the cluster nor of liveness moved: both are off
            ("cluster_msgs_sent", 0),
            ("cluster_sync_state", 0),
            ("cluster_peers_active", 0),
            ("liveness_phones_monitored", 0),
            ("liveness_declared_dead", 0),
            // no bound (docs/security.md) refused anything
            ("limits_refused_seized_per_contact", 0),
            ("limits_refused_index_too_high", 0),
            ("limits_refused_subs_per_aor", 0),
            ("limits_refused_subs_per_contact", 0),
            ("limits_refused_total_subs", 0),
            ("limits_refused_low_shm", 0),
        ],
    );

    // the DB writer (every second) catches up: no backlog, nothing failed,
    // every stored subscription written at least once
    assert!(
        wait_until(WAIT, || both(&k)["db_backlog"] == 0),
        "DB backlog drained"
    );
    let rows = db_rows(&k);
    let s7 = both(&k);
    assert_eq!(
        rows,
        s7["subscriptions_call_info"] + s7["subscriptions_line_seize"],
        "rows in the DB"
    );
    assert!(
        s7["db_rows_written"] >= rows,
        "{} rows written, {rows} in the table",
        s7["db_rows_written"]
    );
    assert_eq!(s7["db_rows_failed"], 0);
    eprintln!("statistics after the SIP steps: {s7:?}");

    // keepalive: the silent gateway goes down, the other stays up; the
    // counters agree with keepalive.list's per-destination figures, read
    // between two identical scrapes (pings go on meanwhile)
    let ka = |s: &Stats| -> Stats {
        s.iter()
            .filter(|(n, _)| n.starts_with("keepalive_"))
            .map(|(n, v)| (n.clone(), *v))
            .collect()
    };
    let mut last = String::new();
    let consistent = wait_until(WAIT, || {
        let m1 = scrape(&k);
        let dests = list(&k);
        let m2 = kamcmd_stats(&k);
        if ka(&m1) != ka(&m2) {
            return false;
        }
        let sum = |f: &str| {
            dests
                .iter()
                .map(|d| d[f].parse::<i64>().expect(f))
                .sum::<i64>()
        };
        let (pings, replies, timeouts, errors) =
            (sum("pings"), sum("replies"), sum("timeouts"), sum("errors"));
        let state = |uri: &str| {
            dests
                .iter()
                .find(|d| d["uri"] == uri)
                .map(|d| d["state"].clone())
        };
        last = format!("{m1:?}\n{dests:?}");
        m1["keepalive_destinations_down"] == 1
            && m1["keepalive_destinations_up"] == 1
            && m1["keepalive_destinations_unknown"] == 0
            && state(&format!("sip:{}", silent.hostport())).as_deref() == Some("2")
            && state(&answering_uri).as_deref() == Some("1")
            && m1["keepalive_pings_sent"] == pings
            && m1["keepalive_pings_answered"] == replies
            && m1["keepalive_pings_failed"] == timeouts + errors
            && replies >= 2
            && timeouts >= 2
    });
    assert!(
        consistent,
        "keepalive statistics = keepalive.list figures:\n{last}"
    );
    eprintln!("keepalive statistics and keepalive.list agreed on:\n{last}");
    // latency: the answering gateway waits 30 ms before each answer
    let m = scrape(&k);
    assert!(
        m["keepalive_ping_rtt_ms"] >= 20 * m["keepalive_pings_answered"],
        "{m:?}"
    );

    assert!(
        k.log_errors().iter().all(|l| !l.contains("statistic")),
        "{:?}",
        k.log_errors()
    );
}

/// Subscriptions restored from the DB at start-up are counted, exactly.
#[test]
fn restored_subscriptions_are_counted() {
    let gw = Gateway::new(200);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let mut sql = String::new();
    for i in 0..5 {
        sql += &format!(
            "INSERT INTO sca_subscriptions (subscriber, aor, event, expires, state, app_idx, call_id, from_tag, to_tag, \
             record_route, notify_cseq, subscribe_cseq, server_id) VALUES ('sip:p{i}@127.0.0.1:5999', \
             'sip:10{i}@127.0.0.1', 1, {}, 0, 0, 'cid-{i}', 'ft', 'tt', '', 1, 1, 0);\n",
            now + 3600
        );
    }
    // and one that expired while Kamailio was down: not restored
    sql += &format!(
        "INSERT INTO sca_subscriptions (subscriber, aor, event, expires, state, app_idx, call_id, from_tag, to_tag, \
         record_route, notify_cseq, subscribe_cseq, server_id) VALUES ('sip:old@127.0.0.1:5999', \
         'sip:199@127.0.0.1', 1, {}, 0, 0, 'cid-old', 'ft', 'tt', '', 1, 1, 0);\n",
        now - 10
    );
    let k = Kamailio::start(example(&gw.hostport(), "").db_seed_sql(&sql));
    let s = both(&k);
    assert_eq!(s["db_restored"], 5, "{s:?}");
    assert_eq!(kamcmd_stats(&k)["db_restored"], 5);
    assert_eq!(s["subscriptions_call_info"], 5);
    assert_eq!(s["db_rows_failed"], 0);
}

/// Subscriber liveness (on in the example with `SUBSCRIBER_KEEPALIVE`): a
/// phone that stops answering is declared dead once, its two subscriptions
/// end and its seized line is released; the statistics say so, as
/// `sca.subscriber_liveness` does.
#[test]
fn liveness_statistics_follow_a_phone_declared_dead() {
    let gw = Gateway::new(200);
    let k = Kamailio::start(example(&gw.hostport(), "#!define SUBSCRIBER_KEEPALIVE 1\n"));
    let mut b = phone(&k, "B", "100");
    let mut a = phone(&k, "A", "100");
    a.auto_answer_options = Some(200);
    b.auto_answer_options = Some(200);
    subscribe_call_info(&mut b, AOR);
    subscribe_call_info(&mut a, AOR);
    let mut da = a.dialog(AOR);
    let s = a
        .send_subscribe(
            &mut da,
            &Subscribe::new("line-seize", 15).call_info(&call_info("1")),
        )
        .expect("line-seize");
    let r = a
        .expect_final_response(&s, RECV_TIMEOUT)
        .expect("reply to line-seize");
    assert_eq!(r.status(), Some(200), "{}", r.raw);
    notify_with(&mut b, "appearance-index=1;appearance-state=seized");
    let s1 = both(&k);
    assert_values(
        &s1,
        &[
            ("liveness_phones_monitored", 2),
            ("liveness_declared_dead", 0),
            ("liveness_lines_released", 0),
            ("appearances_seized", 1),
        ],
    );

    // A goes silent (reads nothing from now on); B keeps answering
    let deadline = Instant::now() + WAIT;
    while both(&k)["liveness_declared_dead"] == 0 {
        assert!(
            Instant::now() < deadline,
            "A declared dead:\n{}",
            k.log_tail(30)
        );
        pump(&mut [&mut b], Duration::from_millis(100));
    }
    let s2 = both(&k);
    assert_values(
        &s2,
        &[
            ("liveness_declared_dead", 1),
            ("liveness_subscriptions_ended", 2),
            ("liveness_lines_released", 1),
            ("liveness_phones_monitored", 1),
            ("appearances_seized", 0),
            ("subscriptions_call_info", 1),
            ("subscriptions_line_seize", 0),
        ],
    );
    // the same figures as the module's own RPC command
    let rpc: Stats = k
        .rpc(&["sca.subscriber_liveness"])
        .lines()
        .filter_map(|l| {
            let (n, v) = l.trim().split_once(' ')?;
            Some((n.to_string(), v.trim().parse().ok()?))
        })
        .collect();
    for (stat, field) in [
        ("liveness_phones_monitored", "monitored"),
        ("liveness_declared_dead", "declared_dead"),
        ("liveness_subscriptions_ended", "subscriptions_ended"),
        ("liveness_lines_released", "lines_released"),
    ] {
        assert_eq!(
            s2[stat], rpc[field],
            "{stat} vs sca.subscriber_liveness {field}"
        );
    }
}

/// The cluster statistics on two real nodes (dmq over 127.0.0.1 and .2),
/// read with `kamcmd stats.get_statistics`: what `sca.cluster` says, and a
/// subscription on node 1 is one message sent there and one received on
/// node 2; a malformed KDMQ is one rejected.
#[test]
fn cluster_statistics_follow_replication() {
    use common::cluster::{cluster_stat, default_specs, kdmq_request, send_for_reply, Cluster};
    let specs = default_specs(2)
        .into_iter()
        .map(|mut s| {
            s.extra_modparams += "loadmodule \"kex.so\"\n";
            // no periodic digest exchange (its messages would count in
            // the one-message-each-way check below)
            s.extra_modparams += "modparam(\"sca_rs\", \"dmq_digest_interval\", 0)\n";
            s
        })
        .collect();
    let Some(c) = Cluster::start("cluster_statistics_follow_replication", specs) else {
        return;
    };
    c.wait_mesh(WAIT);
    let (k1, k2) = (c.node(1), c.node(2));
    // both synced (or alone at the time, idle) and heard from the other
    let settled = |k: &Kamailio| {
        let s = kamcmd_stats(k);
        matches!(s["cluster_sync_state"], 1 | 3) && s["cluster_peers_active"] == 1
    };
    assert!(
        wait_until(WAIT, || settled(k1) && settled(k2)),
        "{:?}\n{:?}",
        kamcmd_stats(k1),
        kamcmd_stats(k2)
    );
    // the statistics are sca.cluster's figures
    for k in [k1, k2] {
        let s = kamcmd_stats(k);
        for (stat, field) in [
            ("cluster_msgs_sent", "tx_msgs"),
            ("cluster_msgs_send_failed", "tx_failed"),
            ("cluster_msgs_received", "rx_msgs"),
            ("cluster_msgs_rejected", "rx_rejected"),
            ("cluster_conflicts_won", "conflicts_won"),
            ("cluster_conflicts_lost", "conflicts_lost"),
            ("cluster_digests_sent", "digests_sent"),
            ("cluster_heal_applied", "heal_applied"),
        ] {
            assert_eq!(
                s[stat],
                cluster_stat(k, field) as i64,
                "{stat} vs sca.cluster {field}"
            );
        }
    }
    let (b1, b2) = (kamcmd_stats(k1), kamcmd_stats(k2));

    // a phone subscribes on node 1: node 2 gets it in one message
    let mut a = Ua::new("A", "100", c.addr(1)).expect("UA");
    a.auto_answer_notify = true;
    subscribe_call_info(&mut a, AOR);
    assert!(
        wait_until(WAIT, || kamcmd_stats(k2)["subscriptions_call_info"] == 1),
        "replicated to node 2"
    );
    let (a1, a2) = (kamcmd_stats(k1), kamcmd_stats(k2));
    assert_moved(
        &b1,
        &a1,
        &[
            ("cluster_msgs_sent", 1),
            ("cluster_msgs_send_failed", 0),
            ("cluster_msgs_received", 0),
            ("subscribe_accepted", 1),
        ],
    );
    assert_moved(
        &b2,
        &a2,
        &[
            ("cluster_msgs_received", 1),
            ("cluster_msgs_sent", 0),
            ("cluster_msgs_rejected", 0),
            ("subscribe_accepted", 0),
        ],
    );

    // a malformed KDMQ to node 2: a 400, one rejected
    let mut x = Ua::new("X", "sca_rs", c.addr(2)).expect("UA");
    let req = kdmq_request(&x, c.addr(2), Some("application/x-sca-rs"), b"garbage");
    let r = send_for_reply(&mut x, &req);
    assert_eq!(r.status(), Some(400), "{}", r.raw);
    let r2 = kamcmd_stats(k2);
    assert_moved(&a2, &r2, &[("cluster_msgs_rejected", 1)]);
    assert_eq!(r2["cluster_peers_active"], 1);
}

/// A DB that refuses the writes: each failed attempt counts in
/// `db_rows_failed`, the changes wait in `db_backlog` (nothing counted as
/// written); once the DB takes them again the backlog drains, the rows are
/// written and the failures stop growing.
#[test]
fn a_failing_db_counts_failed_rows_and_keeps_the_backlog() {
    let gw = Gateway::new(200);
    let k = Kamailio::start(example(&gw.hostport(), ""));
    let mut a = phone(&k, "A", "101");
    subscribe_call_info(&mut a, AOR);
    assert!(
        wait_until(WAIT, || {
            let s = both(&k);
            s["db_backlog"] == 0 && s["db_rows_written"] >= 1
        }),
        "the first subscription is written: {:?}",
        both(&k)
    );
    let before = both(&k);
    assert_eq!(before["db_rows_failed"], 0);

    // the table goes away (as a DB that refuses writes): two more phones
    k.sqlite("ALTER TABLE sca_subscriptions RENAME TO sca_subscriptions_away;")
        .expect("rename the table");
    let mut b = phone(&k, "B", "102");
    let mut c = phone(&k, "C", "103");
    subscribe_call_info(&mut b, AOR);
    subscribe_call_info(&mut c, AOR);
    // a write attempt (every second) fails for both rows, and the next again
    assert!(
        wait_until(WAIT, || both(&k)["db_rows_failed"] >= 4),
        "failed writes counted: {:?}",
        both(&k)
    );
    let failing = both(&k);
    assert!(failing["db_backlog"] >= 2, "{failing:?}");
    assert_eq!(
        failing["db_rows_written"], before["db_rows_written"],
        "nothing counted as written while the DB refuses"
    );
    assert!(
        k.log_errors().iter().any(|l| l.contains("SCA DB write failed")),
        "{:?}",
        k.log_errors()
    );

    // the DB is back: the backlog drains, both rows are written, the
    // failures stop growing
    k.sqlite("ALTER TABLE sca_subscriptions_away RENAME TO sca_subscriptions;")
        .expect("rename the table back");
    assert!(
        wait_until(WAIT, || both(&k)["db_backlog"] == 0),
        "backlog drained after the DB came back: {:?}",
        both(&k)
    );
    let healed = both(&k);
    assert!(
        healed["db_rows_written"] >= before["db_rows_written"] + 2,
        "{before:?} -> {healed:?}"
    );
    let rows = db_rows(&k);
    assert_eq!(rows, 3, "every subscription in the DB");
    // no attempt is left to fail: the next write (a fourth phone) succeeds
    let mut d = phone(&k, "D", "104");
    subscribe_call_info(&mut d, AOR);
    assert!(
        wait_until(WAIT, || {
            let s = both(&k);
            s["db_backlog"] == 0 && s["db_rows_written"] > healed["db_rows_written"]
        }),
        "the fourth phone's row is written"
    );
    assert_eq!(both(&k)["db_rows_failed"], healed["db_rows_failed"]);
}
