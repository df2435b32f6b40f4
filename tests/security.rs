//! Who may see and seize a line (docs/security.md), with a real Kamailio:
//! the example configs as shipped (native, KEMI/Lua and metrics: digest
//! authentication of SUBSCRIBE and INVITE, membership through
//! `sca_is_member()` / `KSR.sca.is_member` and the `sca_members` table), and the bounds only the module can enforce (seized lines per
//! contact, the highest appearance index, subscriptions per contact, per
//! AoR and in total), their refusals counted and logged once per source.

mod common;

use std::time::Duration;

use common::cfg::{sca_modparam, sca_opts};
use common::digest::{authorization, md5_hex};
use common::kamailio::{
    kamailio_file, repo_root, Kamailio, KamailioOpts, ScaModule, SQLITE_SCHEMA_DIR,
};
use common::scenarios::sdp;
use common::sip::{Dialog, Request, Response, SipMessage, Subscribe, Ua, RECV_TIMEOUT};

const AOR: &str = "sip:100@127.0.0.1";

fn call_info(idx: u32) -> String {
    format!("<sip:127.0.0.1>;appearance-index={idx}")
}

/// A SUBSCRIBE of `ua` to `aor` in a new dialog; its final reply.
fn subscribe(ua: &mut Ua, aor: &str, sub: &Subscribe) -> SipMessage {
    let mut d = ua.dialog(aor);
    let s = ua.send_subscribe(&mut d, sub).expect("send SUBSCRIBE");
    ua.expect_final_response(&s, RECV_TIMEOUT)
        .expect("reply to SUBSCRIBE")
}

fn seize(ua: &mut Ua, idx: u32) -> SipMessage {
    subscribe(
        ua,
        AOR,
        &Subscribe::new("line-seize", 15).call_info(&call_info(idx)),
    )
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
    ua.recv_where(RECV_TIMEOUT, what, |m| {
        m.method() == Some("NOTIFY") && m.header("Call-Info").is_some_and(|c| c.contains(what))
    })
    .unwrap_or_else(|e| panic!("{e}"));
}

/// `sca.subscription_count <event>`.
fn count(k: &Kamailio, event: &str) -> u64 {
    let out = k.rpc(&["sca.subscription_count", event]);
    out.split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{out}"))
}

/// Log lines that report a refusal of `source`.
fn refusal_lines(k: &Kamailio, source: &str) -> usize {
    k.log()
        .lines()
        .filter(|l| l.contains("refused with") && l.contains(source))
        .count()
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
        ("min_free_shm_percent", 2),
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
    let err = Kamailio::try_start(sca_opts(m).var("SCA_MODPARAMS", &p))
        .err()
        .expect("refuses to start");
    assert!(err.contains("max_subs_per_aor must be 0 (off)"), "{err}");
}

#[test]
fn a_contact_seizing_more_lines_than_allowed_is_refused_while_others_keep_working() {
    let k = start(&[
        ("max_seized_per_contact", "2"),
        ("max_appearance_index", "8"),
    ]);
    let mut greedy = ua("G", &k);
    let mut other = ua("O", &k);
    let mut watcher = ua("W", &k);
    assert_eq!(
        status(&subscribe(
            &mut watcher,
            AOR,
            &Subscribe::new("call-info", 600)
        )),
        202
    );

    // two lines, each by a new line-seize from the same phone
    assert_eq!(status(&seize(&mut greedy, 1)), 200);
    assert_eq!(status(&seize(&mut greedy, 2)), 200);
    // the third: refused, and nothing seized
    let r = seize(&mut greedy, 3);
    assert_eq!(status(&r), 403, "{}", r.raw);
    assert!(
        r.reason()
            .is_some_and(|p| p.contains("too many lines seized")),
        "{}",
        r.raw
    );
    // "any free line" is refused alike
    assert_eq!(status(&seize(&mut greedy, 0)), 403);
    let apps = k.rpc(&["sca.show_appearance", AOR]);
    assert_eq!(
        apps.lines().filter(|l| l.contains("seized")).count(),
        2,
        "{apps}"
    );
    assert!(
        !apps
            .lines()
            .any(|l| l.split_whitespace().nth(1) == Some("3")),
        "{apps}"
    );

    // another phone still seizes, and the group still hears of it
    assert_eq!(status(&seize(&mut other, 3)), 200);
    notified(&mut watcher, "appearance-index=3;appearance-state=seized");

    // an index above max_appearance_index is refused for anyone
    let r = seize(&mut other, 9);
    assert_eq!(status(&r), 403);
    assert!(
        r.reason()
            .is_some_and(|p| p.contains("appearance index too high")),
        "{}",
        r.raw
    );

    // counted, and logged once per source however often it is refused
    for _ in 0..5 {
        assert_eq!(status(&seize(&mut greedy, 4)), 403);
    }
    assert_eq!(limit(&k, "refused_seized_per_contact"), 7);
    assert_eq!(limit(&k, "refused_appearance_index"), 1);
    let g = greedy.contact_uri();
    assert_eq!(refusal_lines(&k, &g), 1, "{}", k.log_tail(40));
    assert_eq!(
        refusal_lines(&k, &other.contact_uri()),
        1,
        "{}",
        k.log_tail(40)
    );
    assert!(
        k.log().contains("max_seized_per_contact = 2"),
        "the log names the bound"
    );

    // releasing a line makes room again
    let rel = subscribe(
        &mut greedy,
        AOR,
        &Subscribe::new("line-seize", 0).call_info(&call_info(1)),
    );
    assert_eq!(status(&rel), 200);
    assert_eq!(status(&seize(&mut greedy, 4)), 200);
}

#[test]
fn a_flood_of_subscriptions_is_bounded_and_members_are_unaffected() {
    let k = start(&[
        ("max_subs_per_contact", "5"),
        ("max_subs_per_aor", "3"),
        ("max_subscriptions", "12"),
    ]);
    let mut member = ua("M", &k);
    assert_eq!(
        status(&subscribe(
            &mut member,
            AOR,
            &Subscribe::new("call-info", 600)
        )),
        202
    );

    // one contact subscribes to many AoRs: five are stored, the rest refused
    let mut flood = ua("F", &k);
    let mut codes = Vec::new();
    for i in 0..40 {
        codes.push(status(&subscribe(
            &mut flood,
            &format!("sip:flood{i}@127.0.0.1"),
            &Subscribe::new("call-info", 600),
        )));
    }
    assert_eq!(codes.iter().filter(|c| **c == 202).count(), 5, "{codes:?}");
    assert_eq!(codes.iter().filter(|c| **c == 403).count(), 35, "{codes:?}");
    assert_eq!(count(&k, "call-info"), 6);
    assert_eq!(limit(&k, "refused_subs_per_contact"), 35);
    assert_eq!(
        refusal_lines(&k, &flood.contact_uri()),
        1,
        "{}",
        k.log_tail(40)
    );
    // a refresh of a stored subscription is not a new one
    let mut d = flood.dialog("sip:flood0@127.0.0.1");
    let s = flood
        .send_subscribe(&mut d, &Subscribe::new("call-info", 600))
        .expect("send");
    let r = flood
        .expect_final_response(&s, RECV_TIMEOUT)
        .expect("reply");
    assert_eq!(status(&r), 202);
    assert!(d.update_from_response(&r));
    let s = flood
        .send_subscribe(&mut d, &Subscribe::new("call-info", 600))
        .expect("send refresh");
    assert_eq!(
        status(
            &flood
                .expect_final_response(&s, RECV_TIMEOUT)
                .expect("reply")
        ),
        202
    );

    // the member's line keeps working: a seize, and its group hears of it
    let mut m2 = ua("M2", &k);
    assert_eq!(
        status(&subscribe(&mut m2, AOR, &Subscribe::new("call-info", 600))),
        202
    );
    assert_eq!(status(&seize(&mut m2, 1)), 200);
    notified(&mut member, "appearance-index=1;appearance-state=seized");

    // per AoR: the AoR holds three (M, M2 call-info; M2 line-seize)
    let mut m3 = ua("M3", &k);
    let r = subscribe(&mut m3, AOR, &Subscribe::new("call-info", 600));
    assert_eq!(status(&r), 403, "{}", r.raw);
    assert!(
        r.reason()
            .is_some_and(|p| p.contains("too many subscriptions for this AoR")),
        "{}",
        r.raw
    );

    // in total: M, M2 (two), F (five) and four more make 12, then 503 with Retry-After
    let mut codes = Vec::new();
    let mut last = None;
    for i in 0..8 {
        let mut u = ua(&format!("P{i}"), &k);
        let r = subscribe(
            &mut u,
            &format!("sip:p{i}@127.0.0.1"),
            &Subscribe::new("call-info", 600),
        );
        codes.push(status(&r));
        last = Some(r);
    }
    assert_eq!(
        codes,
        [202, 202, 202, 202, 503, 503, 503, 503],
        "12 stored, then refused"
    );
    let last = last.expect("a reply");
    assert_eq!(last.header("Retry-After"), Some("120"), "{}", last.raw);
    assert_eq!(limit(&k, "refused_subscriptions"), 4);
    assert_eq!(limit(&k, "subscriptions_counted"), 12);
    let stored = count(&k, "call-info") + count(&k, "line-seize");
    assert_eq!(stored, 12, "shm holds what the bound allows, no more");
    assert!(k.log_errors().is_empty(), "{:?}", k.log_errors());
}

/// Poll `cond` until it holds or `within` passes.
fn wait_until(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + within;
    loop {
        if cond() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Two new subscriptions of `u` to `c0`, `c1`; their dialogs.
fn two_subscriptions(u: &mut Ua) -> Vec<Dialog> {
    (0..2)
        .map(|i| {
            let mut d = u.dialog(&format!("sip:c{i}@127.0.0.1"));
            let s = u
                .send_subscribe(&mut d, &Subscribe::new("call-info", 600))
                .expect("send");
            let r = u.expect_final_response(&s, RECV_TIMEOUT).expect("reply");
            assert_eq!(status(&r), 202);
            assert!(d.update_from_response(&r));
            d
        })
        .collect()
}

/// A contact at its cap that unsubscribes has room again at once.
#[test]
fn an_unsubscribe_makes_room_at_once() {
    // the first purge is 120 s away: only the unsubscribe can make room
    let k = start(&[("max_subs_per_contact", "2")]);
    let mut u = ua("U", &k);
    let mut dialogs = two_subscriptions(&mut u);
    assert_eq!(
        status(&subscribe(
            &mut u,
            "sip:c2@127.0.0.1",
            &Subscribe::new("call-info", 600)
        )),
        403
    );
    let s = u
        .send_subscribe(&mut dialogs[0], &Subscribe::new("call-info", 0))
        .expect("send unsubscribe");
    assert_eq!(
        status(&u.expect_final_response(&s, RECV_TIMEOUT).expect("reply")),
        202
    );
    // unsubscribing again changes nothing
    let s = u
        .send_subscribe(&mut dialogs[0], &Subscribe::new("call-info", 0))
        .expect("send unsubscribe");
    assert_eq!(
        status(&u.expect_final_response(&s, RECV_TIMEOUT).expect("reply")),
        202
    );
    assert_eq!(limit(&k, "subscriptions_counted"), 1);
    assert_eq!(
        status(&subscribe(
            &mut u,
            "sip:c2@127.0.0.1",
            &Subscribe::new("call-info", 600)
        )),
        202
    );
    assert_eq!(
        status(&subscribe(
            &mut u,
            "sip:c3@127.0.0.1",
            &Subscribe::new("call-info", 600)
        )),
        403
    );
}

/// Subscriptions that end otherwise (here deactivated over RPC) stop
/// counting when the purge has removed them and recounted.
#[test]
fn the_purge_recounts_and_ended_subscriptions_stop_counting() {
    let k = start(&[
        ("max_subs_per_contact", "2"),
        ("purge_expired_interval", "1"),
    ]);
    let mut u = ua("U", &k);
    two_subscriptions(&mut u);
    assert_eq!(
        status(&subscribe(
            &mut u,
            "sip:c2@127.0.0.1",
            &Subscribe::new("call-info", 600)
        )),
        403
    );
    k.rpc(&["sca.deactivate_all_subscriptions"]);
    assert!(
        wait_until(Duration::from_secs(10), || count(&k, "call-info") == 0
            && limit(&k, "subscriptions_counted") == 0),
        "purged and recounted: {}",
        k.rpc(&["sca.limits"])
    );
    assert_eq!(
        status(&subscribe(
            &mut u,
            "sip:c2@127.0.0.1",
            &Subscribe::new("call-info", 600)
        )),
        202
    );
}

/// Subscriptions restored from the DB at start-up count against the
/// bounds from the start.
#[test]
fn restored_subscriptions_count_against_the_bounds() {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let rows: String = (0..3)
        .map(|i| {
            format!(
                "INSERT INTO sca_subscriptions (subscriber, aor, event, expires, state, app_idx, call_id, from_tag, to_tag, record_route, notify_cseq, subscribe_cseq, server_id) \
                 VALUES ('sip:old@127.0.0.1:5999', 'sip:r{i}@127.0.0.1', 1, {}, 0, 0, 'cid-{i}', 'ft', 'tt', '', 1, 1, 0);\n",
                now + 3600
            )
        })
        .collect();
    let m = ScaModule::Rust;
    let p = sca_modparam(&m, "max_subscriptions", "4");
    let k = Kamailio::start(sca_opts(m).var("SCA_MODPARAMS", &p).db_seed_sql(&rows));
    assert_eq!(count(&k, "call-info"), 3, "restored");
    assert_eq!(limit(&k, "subscriptions_counted"), 3);
    let mut u = ua("U", &k);
    assert_eq!(
        status(&subscribe(
            &mut u,
            "sip:n0@127.0.0.1",
            &Subscribe::new("call-info", 600)
        )),
        202
    );
    let r = subscribe(
        &mut u,
        "sip:n1@127.0.0.1",
        &Subscribe::new("call-info", 600),
    );
    assert_eq!(status(&r), 503, "{}", r.raw);
}

// ------------------------------------------------------------ the example config

/// The shipped example configs that route SCA (each secure by default).
const NATIVE: &str = "cfg-examples/kamailio-sca.cfg";
/// The KEMI one: its routing is cfg-examples/kamailio-sca.lua.
const KEMI: &str = "cfg-examples/kamailio-sca-kemi.cfg";
const METRICS: &str = "cfg-examples/kamailio-sca-metrics.cfg";

/// An example config as shipped, the harness's port, ctl socket, DB and
/// module path going in through its own switches (`#!define`s before its
/// text; each example defines only what is not defined yet).
fn example_template(file: &str) -> String {
    let text = std::fs::read_to_string(repo_root().join(file))
        .unwrap_or_else(|e| panic!("read {file}: {e}"));
    assert!(text.contains("loadmodule \"sca_rs.so\""), "{file} loads sca_rs.so");
    let text = text.replace(
        "loadmodule \"sca_rs.so\"",
        "loadmodule \"{{SCA_LOADMODULE}}\"",
    );
    let lua = repo_root().join("cfg-examples/kamailio-sca.lua");
    format!(
        "#!define LISTEN udp:127.0.0.1:{{{{PORT}}}}\n#!define DBURL \"{{{{DB_URL}}}}\"\n#!define CTL \"{{{{CTL_SOCKET}}}}\"\n\
         #!define KEMI_SCRIPT \"{}\"\n\
         #!define HTTP_LISTEN tcp:127.0.0.1:{{{{PORT}}}}\n#!define GATEWAY \"127.0.0.1:{{{{PORT}}}}\"\n#!define PING_INTERVAL 3600\n{text}",
        lua.display()
    )
}

/// Users (password = user name reversed) and memberships of line 100.
const SEED: &str = "
INSERT INTO subscriber (username, domain, password) VALUES ('alice', '127.0.0.1', 'ecila');
INSERT INTO subscriber (username, domain, password) VALUES ('bob', '127.0.0.1', 'bob-pw');
INSERT INTO subscriber (username, domain, password) VALUES ('mallory', '127.0.0.1', 'yrollam');
INSERT INTO subscriber (username, domain, password) VALUES ('100', '127.0.0.1', '001');
INSERT INTO subscriber (username, domain, password) VALUES ('carol', '127.0.0.1', 'lorac');
INSERT INTO sca_members (aor, member) VALUES ('sip:100@127.0.0.1', 'alice@127.0.0.1');
INSERT INTO sca_members (aor, member) VALUES ('100@127.0.0.1', 'sip:bob@127.0.0.1');
";

fn start_example() -> Kamailio {
    start_example_file(NATIVE)
}

fn start_example_file(file: &str) -> Kamailio {
    let mut sql =
        std::fs::read_to_string(kamailio_file(SQLITE_SCHEMA_DIR).join("auth_db-create.sql"))
            .expect("auth_db schema");
    sql.push_str(
        &std::fs::read_to_string(repo_root().join("schema/db_sqlite/sca_members-create.sql"))
            .expect("our schema"),
    );
    sql.push_str(SEED);
    Kamailio::start(KamailioOpts::new(&example_template(file), ScaModule::Rust).db_seed_sql(&sql))
}

/// Credentials: (user, password).
type Creds = Option<(&'static str, &'static str)>;
const ALICE: Creds = Some(("alice", "ecila"));
const BOB: Creds = Some(("bob", "bob-pw"));
const MALLORY: Creds = Some(("mallory", "yrollam"));

/// Send the request `build` makes; a 407 is answered once with `creds`
/// (ACKed first for an INVITE). The final reply to the last one sent.
fn send_authed(
    ua: &mut Ua,
    creds: Creds,
    mut build: impl FnMut(&mut Ua, Option<String>) -> Request,
) -> SipMessage {
    let req = build(ua, None);
    let sent = ua.send(&req).expect("send");
    let resp = ua
        .expect_final_response(&sent, RECV_TIMEOUT)
        .expect("final reply");
    let Some((user, pw)) = creds.filter(|_| resp.status() == Some(407)) else {
        return resp;
    };
    if req.method == "INVITE" {
        let ack = ua.ack_for_non2xx(&sent, &resp).expect("ACK");
        ua.send(&ack).expect("send ACK");
    }
    let ch = resp
        .header("Proxy-Authenticate")
        .expect("a 407 carries a challenge")
        .to_string();
    let auth = authorization(&ch, user, pw, &req.method, &req.uri);
    let req = build(ua, Some(auth));
    let sent = ua.send(&req).expect("send with credentials");
    ua.expect_final_response(&sent, RECV_TIMEOUT)
        .expect("final reply")
}

/// A SUBSCRIBE in `d` (initial or refresh) with `creds`; its final reply
/// (the dialog learns from a 2xx).
fn subscribe_as(ua: &mut Ua, creds: Creds, d: &mut Dialog, sub: &Subscribe) -> SipMessage {
    let r = send_authed(ua, creds, |ua, auth| {
        let s = match &auth {
            Some(a) => sub.clone().header("Proxy-Authorization", a),
            None => sub.clone(),
        };
        ua.subscribe_request(d, &s)
    });
    d.update_from_response(&r);
    r
}

fn nothing_stored(k: &Kamailio) {
    assert_eq!(count(k, "call-info"), 0);
    assert_eq!(count(k, "line-seize"), 0);
    assert!(
        k.kamcmd(&["sca.show_appearance", AOR]).is_err(),
        "no line of {AOR} exists"
    );
}

#[test]
fn the_example_config_challenges_strangers_and_refuses_non_members() {
    challenges_strangers_and_refuses_non_members(start_example());
}

#[test]
fn the_kemi_example_challenges_strangers_and_refuses_non_members() {
    challenges_strangers_and_refuses_non_members(start_example_file(KEMI));
}

#[test]
fn the_metrics_example_challenges_strangers_and_refuses_non_members() {
    challenges_strangers_and_refuses_non_members(start_example_file(METRICS));
}

fn challenges_strangers_and_refuses_non_members(k: Kamailio) {
    let mut stranger = ua("S", &k);

    // no credentials: challenged, nothing stored, no NOTIFY
    let mut d = stranger.dialog(AOR);
    let r = subscribe_as(
        &mut stranger,
        None,
        &mut d,
        &Subscribe::new("call-info", 600),
    );
    assert_eq!(status(&r), 407, "{}", r.raw);
    assert!(
        r.header("Proxy-Authenticate")
            .is_some_and(|c| c.starts_with("Digest ")),
        "{}",
        r.raw
    );
    let mut d = stranger.dialog(AOR);
    let r = subscribe_as(
        &mut stranger,
        None,
        &mut d,
        &Subscribe::new("line-seize", 15).call_info(&call_info(1)),
    );
    assert_eq!(status(&r), 407);
    // a wrong password is no better
    let mut d = stranger.dialog(AOR);
    let r = subscribe_as(
        &mut stranger,
        Some(("alice", "guess")),
        &mut d,
        &Subscribe::new("call-info", 600),
    );
    assert_eq!(status(&r), 407, "{}", r.raw);
    nothing_stored(&k);

    // authenticated, but not a member of line 100: 403, nothing stored
    let mut m = ua("M", &k);
    let mut d = m.dialog(AOR);
    let r = subscribe_as(&mut m, MALLORY, &mut d, &Subscribe::new("call-info", 600));
    assert_eq!(status(&r), 403, "{}", r.raw);
    assert!(
        r.reason().is_some_and(|p| p.contains("not a member")),
        "{}",
        r.raw
    );
    let mut d = m.dialog(AOR);
    for idx in 1..=3 {
        let r = subscribe_as(
            &mut m,
            MALLORY,
            &mut d,
            &Subscribe::new("line-seize", 15).call_info(&call_info(idx)),
        );
        assert_eq!(status(&r), 403, "{}", r.raw);
        d = m.dialog(AOR);
    }
    nothing_stored(&k);
    stranger
        .expect_silence(Duration::from_millis(300))
        .expect("no NOTIFY to the stranger");
    m.expect_silence(Duration::from_millis(300))
        .expect("no NOTIFY to the non-member");
    assert!(
        k.log()
            .contains("mallory@127.0.0.1 is not a member of sip:100@127.0.0.1"),
        "{}",
        k.log_tail(30)
    );

    // the AoR's own user is a member without a row
    let mut own = ua("OWN", &k);
    let mut d = own.dialog(AOR);
    assert_eq!(
        status(&subscribe_as(
            &mut own,
            Some(("100", "001")),
            &mut d,
            &Subscribe::new("call-info", 600)
        )),
        202
    );
    assert_eq!(count(&k, "call-info"), 1);

    // a membership added to the table counts after sca.reload_members
    k.sqlite(
        "INSERT INTO sca_members (aor, member) VALUES ('sip:100@127.0.0.1', 'mallory@127.0.0.1');",
    )
    .expect("insert");
    let mut d = m.dialog(AOR);
    assert_eq!(
        status(&subscribe_as(
            &mut m,
            MALLORY,
            &mut d,
            &Subscribe::new("call-info", 600)
        )),
        403,
        "not before the reload"
    );
    assert_eq!(k.rpc(&["sca.reload_members"]).trim(), "members 3");
    let mut d = m.dialog(AOR);
    assert_eq!(
        status(&subscribe_as(
            &mut m,
            MALLORY,
            &mut d,
            &Subscribe::new("call-info", 600)
        )),
        202
    );
    // ... and one removed stops counting for new subscriptions
    k.sqlite("DELETE FROM sca_members WHERE member = 'mallory@127.0.0.1';")
        .expect("delete");
    assert_eq!(k.rpc(&["sca.reload_members"]).trim(), "members 2");
    let mut d = m.dialog(AOR);
    assert_eq!(
        status(&subscribe_as(
            &mut m,
            MALLORY,
            &mut d,
            &Subscribe::new("line-seize", 15).call_info(&call_info(1))
        )),
        403
    );
    assert!(
        k.kamcmd(&["sca.show_appearance", AOR])
            .map_or(true, |a| !a.contains(" seized ")),
        "no line seized"
    );
    assert!(k.log_errors().is_empty(), "{:?}", k.log_errors());
}

#[test]
fn members_use_the_example_config_end_to_end() {
    members_end_to_end(start_example());
}

#[test]
fn members_use_the_kemi_example_end_to_end() {
    members_end_to_end(start_example_file(KEMI));
}

/// Members subscribe, seize, call, hold and retrieve through an example;
/// a non-member cannot call from the shared line.
fn members_end_to_end(k: Kamailio) {
    let mut alice = ua("ALICE", &k);
    let mut bob = ua("BOB", &k);
    let mut carol = Ua::new("CAROL", "200", k.addr()).expect("UA");

    // alice watches line 100; a refresh in the dialog is authenticated too
    let mut da = alice.dialog(AOR);
    let r = subscribe_as(
        &mut alice,
        ALICE,
        &mut da,
        &Subscribe::new("call-info", 600),
    );
    assert_eq!(status(&r), 202, "{}", r.raw);
    notified(&mut alice, "appearance-index=*;appearance-state=idle");
    let r = subscribe_as(
        &mut alice,
        ALICE,
        &mut da,
        &Subscribe::new("call-info", 600),
    );
    assert_eq!(status(&r), 202, "the refresh: {}", r.raw);
    notified(&mut alice, "appearance-index=*;appearance-state=idle");

    // bob seizes line 1; alice sees it
    let mut db = bob.dialog(AOR);
    let r = subscribe_as(
        &mut bob,
        BOB,
        &mut db,
        &Subscribe::new("line-seize", 15).call_info(&call_info(1)),
    );
    assert_eq!(status(&r), 200, "{}", r.raw);
    notified(&mut alice, "appearance-index=1;appearance-state=seized");

    // bob calls carol on line 1: challenged, then relayed
    let mut call = bob.dialog("sip:200@127.0.0.1");
    call.remote_target = carol.contact_uri();
    let inv = bob
        .request(&mut call, "INVITE")
        .header("Call-Info", &call_info(1));
    let sent = bob.send(&inv).expect("send INVITE");
    let r = bob
        .expect_final_response(&sent, RECV_TIMEOUT)
        .expect("reply to INVITE");
    assert_eq!(status(&r), 407, "{}", r.raw);
    let ack = bob.ack_for_non2xx(&sent, &r).expect("ACK");
    bob.send(&ack).expect("send ACK");
    let auth = authorization(
        r.header("Proxy-Authenticate").expect("challenge"),
        "bob",
        "bob-pw",
        "INVITE",
        &inv.uri,
    );
    let inv = bob
        .request(&mut call, "INVITE")
        .header("Call-Info", &call_info(1))
        .header("Proxy-Authorization", &auth);
    let sent = bob.send(&inv).expect("send INVITE with credentials");
    let at_carol = carol
        .expect_request("INVITE", RECV_TIMEOUT)
        .expect("carol rings");
    let tag = carol.uas_tag(at_carol.call_id().expect("Call-ID"));
    let ok = Response::for_request(&at_carol, 200, "OK")
        .with_to_tag(&tag)
        .record_route_from(&at_carol)
        .header("Contact", &format!("<{}>", carol.contact_uri()));
    carol.send_response(&at_carol, &ok).expect("200 from carol");
    let r = bob
        .expect_final_response(&sent, RECV_TIMEOUT)
        .expect("bob's 200");
    assert_eq!(status(&r), 200, "{}", r.raw);
    assert!(call.update_from_response(&r));
    let ack = bob.request_with_cseq(&call, "ACK", call.local_cseq);
    bob.send(&ack).expect("send ACK");
    carol
        .expect_request("ACK", RECV_TIMEOUT)
        .expect("carol gets the ACK");
    notified(
        &mut alice,
        "appearance-index=1;appearance-state=active;appearance-uri=\"<sip:200@127.0.0.1>\"",
    );

    // bob holds (in the dialog: no new challenge); the group sees it
    let re = bob
        .request(&mut call, "INVITE")
        .header("Call-Info", &call_info(1))
        .body("application/sdp", &sdp("bob", 2, "sendonly"));
    let sent = bob.send(&re).expect("send re-INVITE");
    let at_carol = carol
        .expect_request("INVITE", RECV_TIMEOUT)
        .expect("carol gets the re-INVITE");
    let ok = Response::for_request(&at_carol, 200, "OK")
        .with_to_tag(&tag)
        .header("Contact", &format!("<{}>", carol.contact_uri()))
        .body("application/sdp", &sdp("carol", 2, "recvonly"));
    carol
        .send_response(&at_carol, &ok)
        .expect("200 to the re-INVITE");
    assert_eq!(
        status(&bob.expect_final_response(&sent, RECV_TIMEOUT).expect("200")),
        200
    );
    let ack = bob.request_with_cseq(&call, "ACK", call.local_cseq);
    bob.send(&ack).expect("send ACK");
    carol
        .expect_request("ACK", RECV_TIMEOUT)
        .expect("carol gets the ACK");
    notified(&mut alice, "appearance-index=1;appearance-state=held");

    // alice retrieves the held call: an INVITE to the shared AoR,
    // challenged, checked for membership, sent on to carol with Replaces
    let mut ret = alice.dialog(AOR);
    ret.remote_target = format!("sip:100@{}", k.addr());
    let inv = alice
        .request(&mut ret, "INVITE")
        .header("Call-Info", &call_info(1))
        .body("application/sdp", &sdp("alice", 1, "sendrecv"));
    let sent = alice.send(&inv).expect("send the retrieve");
    let r = alice
        .expect_final_response(&sent, RECV_TIMEOUT)
        .expect("reply to the retrieve");
    assert_eq!(status(&r), 407, "the retrieve is challenged: {}", r.raw);
    let ack = alice.ack_for_non2xx(&sent, &r).expect("ACK");
    alice.send(&ack).expect("send ACK");
    let auth = authorization(
        r.header("Proxy-Authenticate").expect("challenge"),
        "alice",
        "ecila",
        "INVITE",
        &inv.uri,
    );
    let inv = alice
        .request(&mut ret, "INVITE")
        .header("Call-Info", &call_info(1))
        .header("Proxy-Authorization", &auth)
        .body("application/sdp", &sdp("alice", 1, "sendrecv"));
    let sent = alice
        .send(&inv)
        .expect("send the retrieve with credentials");
    let at_carol = carol
        .expect_request("INVITE", RECV_TIMEOUT)
        .expect("carol gets the retrieve");
    let replaces = at_carol.header("Replaces").unwrap_or_default().to_string();
    assert!(
        replaces.starts_with(&call.call_id),
        "Replaces names bob's call: {}",
        at_carol.raw
    );
    let ctag = carol.uas_tag(at_carol.call_id().expect("Call-ID"));
    let ok = Response::for_request(&at_carol, 200, "OK")
        .with_to_tag(&ctag)
        .record_route_from(&at_carol)
        .header("Contact", &format!("<{}>", carol.contact_uri()))
        .body("application/sdp", &sdp("carol", 3, "sendrecv"));
    carol
        .send_response(&at_carol, &ok)
        .expect("200 to the retrieve");
    let r = alice
        .expect_final_response(&sent, RECV_TIMEOUT)
        .expect("alice's 200");
    assert_eq!(status(&r), 200, "{}", r.raw);
    assert!(ret.update_from_response(&r));
    let ack = alice.request_with_cseq(&ret, "ACK", ret.local_cseq);
    alice.send(&ack).expect("send ACK");
    carol
        .expect_request("ACK", RECV_TIMEOUT)
        .expect("carol gets alice's ACK");
    let alice_contact = alice.contact_uri();
    assert!(
        wait_until(RECV_TIMEOUT, || k
            .rpc(&["sca.show_appearance", AOR])
            .lines()
            .any(|l| l.contains(" 1 active ") && l.contains(&alice_contact))),
        "line 1 is alice's call now: {}",
        k.rpc(&["sca.show_appearance", AOR])
    );

    // alice hangs up: the line is idle again
    let bye = alice.request(&mut ret, "BYE");
    let sent = alice.send(&bye).expect("send BYE");
    let at_carol = carol
        .expect_request("BYE", RECV_TIMEOUT)
        .expect("carol gets the BYE");
    carol.reply(&at_carol, 200, "OK").expect("200 to BYE");
    assert_eq!(
        status(
            &alice
                .expect_final_response(&sent, RECV_TIMEOUT)
                .expect("200 to BYE")
        ),
        200
    );
    alice
        .recv_where(RECV_TIMEOUT, "idle NOTIFY", |m| {
            m.method() == Some("NOTIFY")
                && m.header("Call-Info")
                    == Some("<sip:127.0.0.1>;appearance-index=*;appearance-state=idle")
        })
        .expect("the group hears the line is idle");

    // a non-member cannot call from the shared line
    let mut m = ua("M", &k);
    let mut call = m.dialog("sip:200@127.0.0.1");
    call.remote_target = carol.contact_uri();
    let r = send_authed(&mut m, MALLORY, |ua, auth| {
        let r = ua
            .request(&mut call, "INVITE")
            .header("Call-Info", &call_info(2));
        match auth {
            Some(a) => r.header("Proxy-Authorization", &a),
            None => r,
        }
    });
    assert_eq!(status(&r), 403, "{}", r.raw);
    // (a late retransmission of the earlier dialog's BYE under load is not
    // a call: only an INVITE would be)
    let invite = carol.recv_where(Duration::from_millis(300), "an INVITE", |m| m.method() == Some("INVITE"));
    assert!(invite.is_err(), "carol is not called: {:?}", invite.map(|m| m.raw));
    assert!(k.log_errors().is_empty(), "{:?}", k.log_errors());
}

// ------------------------------------------------------------ KEMI

const LUA: &str = r#"
function ksr_request_route()
    if KSR.is_SUBSCRIBE() then
        -- a script-chosen identity (a real script: the authenticated one)
        local id = KSR.hdr.get("X-Identity") or ""
        if KSR.sca.is_member(id, KSR.pv.get("$ru")) < 0 then
            KSR.sl.sl_send_reply(403, "Forbidden - not a member of this shared line")
            return 1
        end
        KSR.sca.handle_subscribe()
        return 1
    end
    KSR.sl.sl_send_reply(404, "Not Found")
end
"#;

const LUA_CFG: &str = r#"#!KAMAILIO
debug={{DEBUG}}
log_stderror=yes
children={{CHILDREN}}
exit_timeout=4
disable_tcp=yes
auto_aliases=no
listen=udp:127.0.0.1:{{PORT}}
mpath="{{MPATH}}"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "pv.so"
loadmodule "textops.so"
loadmodule "ctl.so"
loadmodule "db_sqlite.so"
loadmodule "app_lua.so"
loadmodule "{{SCA_LOADMODULE}}"
modparam("ctl", "binrpc", "{{CTL_SOCKET}}")
modparam("app_lua", "load", "{{LUA}}")
modparam("{{SCA_MODULE}}", "db_url", "{{DB_URL}}")
modparam("{{SCA_MODULE}}", "members_table", "sca_members")
{{EXTRA}}
cfgengine "lua"
"#;

/// Kamailio on [`LUA_CFG`] with `extra` config lines and `sql` run on its
/// sqlite DB; SUBSCRIBEs of each identity get the status expected.
fn lua_members(extra: &str, sql: &str, cases: &[(&str, u16)]) -> Kamailio {
    let dir = common::kamailio::TestDir::new("sca_rs-sec-kemi").expect("temp dir");
    let lua = dir.path.join("sca.lua");
    std::fs::write(&lua, LUA).expect("write Lua script");
    let k = Kamailio::start(
        KamailioOpts::new(LUA_CFG, ScaModule::Rust)
            .var("LUA", &lua.display().to_string())
            .var("EXTRA", extra)
            .db_seed_sql(sql),
    );
    let mut u = ua("U", &k);
    for (id, want) in cases {
        let r = subscribe(
            &mut u,
            AOR,
            &Subscribe::new("call-info", 600).header("X-Identity", id),
        );
        assert_eq!(status(&r), *want, "identity {id:?}: {}", r.raw);
    }
    k
}

#[test]
fn kemi_is_member_reads_the_members_table() {
    let mut sql =
        std::fs::read_to_string(kamailio_file(SQLITE_SCHEMA_DIR).join("auth_db-create.sql"))
            .expect("auth_db schema");
    sql.push_str(
        &std::fs::read_to_string(repo_root().join("schema/db_sqlite/sca_members-create.sql"))
            .expect("our schema"),
    );
    sql.push_str(SEED);
    let k = lua_members(
        "",
        &sql,
        &[
            ("alice@127.0.0.1", 202),
            ("mallory@127.0.0.1", 403),
            ("100@127.0.0.1", 202),
            ("", 403),
            ("bob@other.example", 403),
        ],
    );
    // a refused identity stored nothing: alice's and 100's subscriptions
    // share the UA's contact, so one subscription
    assert_eq!(count(&k, "call-info"), 1);
    // a reload that cannot read the table is a fault, and the memberships
    // in use stay
    k.sqlite("DROP TABLE sca_members;").expect("drop");
    let err = k.kamcmd(&["sca.reload_members"]).expect_err("a fault");
    assert!(err.contains("sca_members"), "{err}");
    let mut u = ua("V", &k);
    let r = subscribe(
        &mut u,
        AOR,
        &Subscribe::new("call-info", 600).header("X-Identity", "alice@127.0.0.1"),
    );
    assert_eq!(status(&r), 202, "alice is still a member: {}", r.raw);
}

#[test]
fn a_missing_members_table_is_a_clear_start_up_error() {
    let dir = common::kamailio::TestDir::new("sca_rs-sec-kemi").expect("temp dir");
    let lua = dir.path.join("sca.lua");
    std::fs::write(&lua, LUA).expect("write Lua script");
    let err = Kamailio::try_start(
        KamailioOpts::new(LUA_CFG, ScaModule::Rust)
            .var("LUA", &lua.display().to_string())
            .var("EXTRA", "")
            .ready_timeout(Duration::from_secs(5)),
    )
    .err()
    .expect("refuses to start");
    assert!(err.contains("table sca_members is missing or not at version 1 (create it from schema/<db>/sca_members-create.sql)"), "{err}");
}

const MEMBER_ROWS: &str =
    "INSERT INTO sca_members (aor, member) VALUES ('sip:100@127.0.0.1', 'alice@127.0.0.1');";

/// The shipped PostgreSQL schema, read through db_postgres
/// (`members_db_url`).
#[test]
fn the_members_table_works_on_postgresql() {
    let pg = common::postgres::Postgres::start().expect("PostgreSQL test server");
    let schema =
        std::fs::read_to_string(repo_root().join("schema/postgres/sca_members-create.sql"))
            .expect("schema");
    pg.psql("kamailio", &schema).expect("load the schema");
    pg.psql("kamailio", MEMBER_ROWS).expect("rows");
    let extra = format!(
        "loadmodule \"db_postgres.so\"\nmodparam(\"sca_rs\", \"members_db_url\", \"{}\")",
        pg.url()
    );
    let k = lua_members(
        &extra,
        "",
        &[("alice@127.0.0.1", 202), ("mallory@127.0.0.1", 403)],
    );
    pg.psql(
        "kamailio",
        "INSERT INTO sca_members (aor, member) VALUES ('sip:100@127.0.0.1', 'mallory@127.0.0.1');",
    )
    .expect("row");
    assert_eq!(k.rpc(&["sca.reload_members"]).trim(), "members 2");
}

/// The shipped MySQL schema, on MariaDB through db_mysql.
#[test]
fn the_members_table_works_on_mariadb() {
    let db = common::mariadb::MariaDb::start().expect("MariaDB test server");
    let schema = std::fs::read_to_string(repo_root().join("schema/mysql/sca_members-create.sql"))
        .expect("schema");
    db.sql("kamailio", &schema).expect("load the schema");
    db.sql("kamailio", MEMBER_ROWS).expect("rows");
    let extra = format!(
        "loadmodule \"db_mysql.so\"\nmodparam(\"sca_rs\", \"members_db_url\", \"{}\")",
        db.url()
    );
    let k = lua_members(
        &extra,
        "",
        &[("alice@127.0.0.1", 202), ("mallory@127.0.0.1", 403)],
    );
    db.sql(
        "kamailio",
        "INSERT INTO sca_members (aor, member) VALUES ('sip:100@127.0.0.1', 'mallory@127.0.0.1');",
    )
    .expect("row");
    assert_eq!(k.rpc(&["sca.reload_members"]).trim(), "members 2");
}

// ------------------------------------------------------------ the cluster example

/// A KDMQ request from `from` to `to`; the reply's status.
fn kdmq_status(from: std::net::Ipv4Addr, to: std::net::SocketAddr) -> u16 {
    let sock = std::net::UdpSocket::bind((from, 0)).expect("bind");
    sock.set_read_timeout(Some(RECV_TIMEOUT)).expect("timeout");
    let local = sock.local_addr().expect("addr");
    let req = Request::new("KDMQ", &format!("sip:sca_rs@{to}"))
        .header(
            "Via",
            &format!("SIP/2.0/UDP {local};branch=z9hG4bK-kdmq-{}", local.port()),
        )
        .header("From", &format!("<sip:{local}>;tag=kdmq"))
        .header("To", &format!("<sip:{to}>"))
        .header("Call-ID", &format!("kdmq-{}@{}", local.port(), from))
        .header("CSeq", "1 KDMQ")
        .header("Max-Forwards", "1");
    sock.send_to(&req.render(), to).expect("send KDMQ");
    let mut buf = vec![0u8; 65536];
    let (n, _) = sock.recv_from(&mut buf).expect("a reply to the KDMQ");
    SipMessage::parse(&buf[..n])
        .expect("parse")
        .status()
        .unwrap_or(0)
}

/// cfg-examples/kamailio-sca-cluster.cfg as shipped (node 1, its SIP port
/// the harness's) refuses KDMQ from an address that is not a node, before
/// dmq sees it, and challenges SUBSCRIBEs like the single-node example.
#[test]
fn the_cluster_example_refuses_kdmq_from_non_nodes_and_authenticates() {
    let outsider = std::net::Ipv4Addr::new(127, 0, 0, 5);
    if let Err(e) = common::kamailio::probe_loopback(outsider) {
        panic!("this test needs {outsider} on the loopback interface: {e}");
    }
    let text = std::fs::read_to_string(repo_root().join("cfg-examples/kamailio-sca-cluster.cfg"))
        .expect("read the example");
    // the port of the three settings (listen, server_address,
    // notification_address) becomes the harness's
    let text: Vec<String> = text
        .lines()
        .map(|l| {
            if l.starts_with('#') {
                l.to_string()
            } else {
                l.replace(":5060", ":{{PORT}}")
            }
        })
        .collect();
    let text = text.join("\n");
    assert_eq!(
        text.matches(":{{PORT}}").count(),
        3,
        "listen, server_address, notification_address"
    );
    let text = text.replace(
        "loadmodule \"sca_rs.so\"",
        "loadmodule \"{{SCA_LOADMODULE}}\"",
    );
    let tpl =
        format!("#!define DBURL \"{{{{DB_URL}}}}\"\n#!define CTL \"{{{{CTL_SOCKET}}}}\"\n{text}");
    let mut sql =
        std::fs::read_to_string(kamailio_file(SQLITE_SCHEMA_DIR).join("auth_db-create.sql"))
            .expect("auth_db schema");
    sql.push_str(
        &std::fs::read_to_string(repo_root().join("schema/db_sqlite/sca_members-create.sql"))
            .expect("our schema"),
    );
    sql.push_str(SEED);
    let k = Kamailio::start(KamailioOpts::new(&tpl, ScaModule::Rust).db_seed_sql(&sql));

    assert_eq!(
        kdmq_status(outsider, k.addr()),
        403,
        "a KDMQ from {outsider}"
    );
    // from a node's address it reaches dmq (which has no handler for this
    // peer name: not the script's 403)
    assert_ne!(
        kdmq_status(std::net::Ipv4Addr::LOCALHOST, k.addr()),
        403,
        "a KDMQ from a node"
    );

    let mut s = ua("S", &k);
    let mut d = s.dialog(AOR);
    assert_eq!(
        status(&subscribe_as(
            &mut s,
            None,
            &mut d,
            &Subscribe::new("call-info", 600)
        )),
        407
    );
    let mut d = s.dialog(AOR);
    assert_eq!(
        status(&subscribe_as(
            &mut s,
            MALLORY,
            &mut d,
            &Subscribe::new("call-info", 600)
        )),
        403
    );
    let mut d = s.dialog(AOR);
    assert_eq!(
        status(&subscribe_as(
            &mut s,
            ALICE,
            &mut d,
            &Subscribe::new("call-info", 600)
        )),
        202
    );
    assert_eq!(count(&k, "call-info"), 1);
}

// ------------------------------------------------------------ the test UA's digest

#[test]
fn the_test_uas_md5_matches_rfc_1321_test_vectors() {
    assert_eq!(md5_hex(""), "d41d8cd98f00b204e9800998ecf8427e");
    assert_eq!(md5_hex("abc"), "900150983cd24fb0d6963f7d28e17f72");
    assert_eq!(
        md5_hex("message digest"),
        "f96b697d7cb7938d525a2f31aaf161d0"
    );
    assert_eq!(
        md5_hex("12345678901234567890123456789012345678901234567890123456789012345678901234567890"),
        "57edf4a22be3c955ac49da2e2107b67a"
    );
}

#[test]
fn the_test_uas_digest_gives_the_rfc_2617_example_response() {
    let ch = r#"Digest realm="testrealm@host.com", qop="auth,auth-int", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41""#;
    let v = authorization(ch, "Mufasa", "Circle Of Life", "GET", "/dir/index.html");
    assert!(
        v.contains("response=\"6629fae49393a05397450978507c4ef1\""),
        "{v}"
    );
}
