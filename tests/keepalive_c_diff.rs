//! Differential: the same keepalive scenario against Debian's C
//! keepalive.so and against sca_rs.so, side by side. RPC output and faults
//! (as kamcmd prints them), `ka_is_alive()` results, event routes and the
//! OPTIONS pings must be the same, except for the documented deviations
//! (docs/keepalive.md), which are asserted on their own:
//! - `last up` / `last down` are swapped by the C module of 5.6 (#3790,
//!   fixed in 5.8: the C module of 6.x is compared unswapped);
//! - the C module matches URIs inconsistently: a scheme-less URI can be
//!   added twice and never found again by get/del, and `ka_is_alive()`
//!   only knows the scheme-less form.

mod common;
mod keepalive_support;

use std::collections::BTreeMap;
use std::time::Duration;

use common::kamailio::{kamailio_at_least, Kamailio};
use common::sip::SipMessage;
use keepalive_support::{count_in_log, epoch_text, ka_opts, parse_structs, wait_until, Client, Gateway, Ka};

const WAIT: Duration = Duration::from_secs(8);

fn q(s: &str) -> String {
    format!("\"{s}\"")
}

fn rpc_line(k: &Kamailio, args: &[&str]) -> String {
    match k.kamcmd(args) {
        Ok(out) => format!("{args:?} -> {}", out.trim_end()),
        Err(e) => format!("{args:?} -> {}", e.trim_end()),
    }
}

/// A time as kamcmd shows it: `<epoch>` or `<time>` (checked to be
/// ctime's format).
fn mask_time(v: &str, epoch: &str) -> String {
    if v == epoch {
        return "<epoch>".into();
    }
    let b = v.as_bytes();
    let ok = v.len() == 25
        && v.ends_with('\n')
        && b[3] == b' '
        && b[7] == b' '
        && b[10] == b' '
        && b[13] == b':'
        && b[16] == b':'
        && b[19] == b' ';
    assert!(ok, "not ctime's format: {v:?}");
    "<time>".into()
}

fn masked_list(k: &Kamailio, ka: Ka) -> Vec<BTreeMap<String, String>> {
    let epoch = epoch_text();
    let mut l = parse_structs(&k.kamcmd(&["keepalive.list"]).expect("keepalive.list"));
    for d in l.iter_mut() {
        if ka == Ka::C && !kamailio_at_least(5, 8) {
            // #3790: the C module before 5.8 records an answered ping as
            // "last down" and a failed one as "last up"
            let up = d.remove("last up").unwrap_or_default();
            let down = d.remove("last down").unwrap_or_default();
            d.insert("last up".into(), down);
            d.insert("last down".into(), up);
        }
        for key in ["last checked", "last up", "last down"] {
            if let Some(v) = d.get_mut(key) {
                *v = mask_time(v, &epoch);
            }
        }
    }
    l
}

/// An OPTIONS ping with its per-transaction values masked.
fn masked_options(m: &SipMessage) -> Vec<String> {
    let mut out = vec![m.start_line.clone()];
    for (n, v) in &m.headers {
        let v = match n.to_ascii_lowercase().as_str() {
            "via" => v.split(";branch=").next().unwrap_or("").to_string() + ";branch=<branch>",
            "from" => v.split(";tag=").next().unwrap_or("").to_string() + ";tag=<tag>",
            "call-id" => "<call-id>".into(),
            _ => v.clone(),
        };
        out.push(format!("{n}: {v}"));
    }
    out
}

struct Run {
    transcript: Vec<String>,
    options: Vec<String>,
}

fn scenario(ka: Ka) -> Run {
    let up = Gateway::new(200);
    let dead = Gateway::new(0);
    let spare = Gateway::new(0);
    let (up_hp, dead_hp, spare_uri) = (up.hostport(), dead.hostport(), format!("sip:{}", spare.hostport()));
    let (up_uri, dead_uri) = (format!("sip:{up_hp}"), format!("sip:{dead_hp}"));
    let k = Kamailio::start(ka_opts(
        ka,
        &[
            ("ping_interval", "1".into()),
            ("delete_counter", "0".into()),
            ("ping_from", q("sip:ka@diff.example.org")),
            ("destination", q(&up_hp)),
            ("destination", q(&dead_uri)),
        ],
    ));
    let mut t = Vec::new();
    let state = |uri: &str| {
        parse_structs(&k.kamcmd(&["keepalive.get", uri, "_params"]).unwrap_or_default())
            .first()
            .and_then(|d| d.get("state").cloned())
    };
    assert!(
        wait_until(WAIT, || state(&up_uri).as_deref() == Some("1") && state(&dead_uri).as_deref() == Some("2")),
        "{ka:?}: states never settled\n{}",
        k.log_tail(40)
    );
    // every destination checked at least twice more (tm retransmits a
    // ping to the silent one once before its 1 s timeout: 3 are 2 pings)
    let (up_seen, dead_seen) = (up.options_seen(), dead.options_seen());
    assert!(
        wait_until(WAIT, || up.options_seen() >= up_seen + 2 && dead.options_seen() >= dead_seen + 3),
        "{ka:?}: two more pings of each destination\n{}",
        k.log_tail(40)
    );

    for d in masked_list(&k, ka) {
        t.push(format!("list entry {d:?}"));
    }
    let mut c = Client::new(&k);
    for dst in [up_hp.as_str(), dead_hp.as_str(), "nothere", "", "127.0.0.1", "sips:nothere"] {
        t.push(format!("ka_is_alive({dst:?}) = {}", c.is_alive(dst)));
    }
    for args in [
        &["keepalive.add"][..],
        &["keepalive.add", &spare_uri],
        &["keepalive.add", &spare_uri, "rpcowner"],
        &["keepalive.add", &spare_uri, "rpcowner"],
        &["keepalive.add", "sip:a@b:c:d:e", "rpcowner"],
        &["keepalive.get", &spare_uri, "rpcowner"],
        &["keepalive.get", &spare_uri, "nobody"],
        &["keepalive.get", &spare_uri],
        &["keepalive.get"],
        &["keepalive.del", &spare_uri, "nobody"],
        &["keepalive.del", &spare_uri, "rpcowner"],
        &["keepalive.del", &spare_uri, "rpcowner"],
        &["keepalive.del", &spare_uri],
        &["keepalive.del"],
        &["keepalive.get", &up_uri, "_params"],
        &["system.methodHelp", "keepalive.list"],
        &["system.methodHelp", "keepalive.add"],
        &["system.methodHelp", "keepalive.del"],
        &["system.methodHelp", "keepalive.get"],
        &["system.methodHelp", "keepalive.flush"],
    ] {
        t.push(rpc_line(&k, args));
    }
    // script add/del
    t.push(format!("ka_add_destination(spare) = {}", c.add(&spare_uri, "script")));
    t.push(format!("ka_add_destination(spare) again = {}", c.add(&spare_uri, "script")));
    t.push(format!("ka_add_destination(bad) = {}", c.add("sip:a@b:c:d:e", "script")));
    t.push(format!("ka_del_destination(spare, other) = {}", c.del(&spare_uri, "other")));
    t.push(format!("ka_del_destination(spare) = {}", c.del(&spare_uri, "script")));
    t.push(format!("ka_del_destination(spare) again = {}", c.del(&spare_uri, "script")));
    // event routes: once per transition, $ru the destination
    t.push(format!("up events {}", count_in_log(&k, &format!("KA-EVENT up {up_uri}"))));
    t.push(format!("down events {}", count_in_log(&k, &format!("KA-EVENT down {dead_uri}"))));
    t.push(format!("other events {}", count_in_log(&k, "KA-EVENT")));
    for args in [&["keepalive.flush"][..], &["keepalive.list"], &["keepalive.flush"]] {
        t.push(rpc_line(&k, args));
    }
    let options = masked_options(&up.last_options().expect("the up gateway was pinged"));
    // ports differ from run to run
    let names = [
        (up_hp.clone(), "<up>"),
        (dead_hp.clone(), "<dead>"),
        (spare.hostport(), "<spare>"),
        (format!("127.0.0.1:{}", k.port), "<kamailio>"),
    ];
    let mask = |l: &String| names.iter().fold(l.clone(), |l, (from, to)| l.replace(from.as_str(), to));
    Run { transcript: t.iter().map(mask).collect(), options: options.iter().map(mask).collect() }
}

#[test]
fn same_rpc_output_is_alive_results_events_and_pings_as_the_c_module() {
    let c = scenario(Ka::C);
    let r = scenario(Ka::Rust);
    let diff: Vec<String> = c
        .transcript
        .iter()
        .zip(r.transcript.iter())
        .filter(|(a, b)| a != b)
        .map(|(a, b)| format!("C:    {a}\nRust: {b}"))
        .collect();
    assert!(
        diff.is_empty() && c.transcript.len() == r.transcript.len(),
        "differences:\n{}\n\nC transcript:\n{}\n\nRust transcript:\n{}",
        diff.join("\n"),
        c.transcript.join("\n"),
        r.transcript.join("\n")
    );
    assert_eq!(c.options, r.options, "the OPTIONS pings differ");
    eprintln!("transcript (both):\n{}\n\nOPTIONS (both):\n{}", r.transcript.join("\n"), r.options.join("\n"));
    // the scenario did see something
    let t = r.transcript.join("\n");
    assert!(t.contains("up events 1") && t.contains("down events 1"), "{t}");
    assert!(t.contains("\"last up\": \"<time>\""), "{t}");
}

/// Where sca_rs deliberately differs: one URI matching rule.
fn deviations(ka: Ka) -> Vec<String> {
    let up = Gateway::new(200);
    let up_hp = up.hostport();
    let up_uri = format!("sip:{up_hp}");
    let k = Kamailio::start(ka_opts(ka, &[("ping_interval", "1".into()), ("destination", q(&up_hp))]));
    let mut c = Client::new(&k);
    let mut t = Vec::new();
    t.push(format!("ka_is_alive(sip:) = {}", c.is_alive(&up_uri)));
    t.push(format!("ka_is_alive(SIP:) = {}", c.is_alive(&format!("SIP:{up_hp}"))));
    t.push(rpc_line(&k, &["keepalive.add", "127.0.0.1:9", "o"]));
    t.push(rpc_line(&k, &["keepalive.add", "127.0.0.1:9", "o"]));
    t.push(rpc_line(&k, &["keepalive.get", "127.0.0.1:9", "o"]));
    t.push(rpc_line(&k, &["keepalive.del", "127.0.0.1:9", "o"]));
    t
}

#[test]
fn documented_deviations_from_the_c_module() {
    let c = deviations(Ka::C);
    let r = deviations(Ka::Rust);
    let want_c = [
        "ka_is_alive(sip:) = -1",
        "ka_is_alive(SIP:) = -1",
        "[\"keepalive.add\", \"127.0.0.1:9\", \"o\"] -> Ok. Destination added.",
        "[\"keepalive.add\", \"127.0.0.1:9\", \"o\"] -> Ok. Destination added.",
        "[\"keepalive.get\", \"127.0.0.1:9\", \"o\"] -> error: 500 - couldn't get data from list",
        "[\"keepalive.del\", \"127.0.0.1:9\", \"o\"] -> error: 500 - couldn't delete data from list",
    ];
    assert_eq!(c, want_c, "the C module's behaviour");
    let want_rust_prefix = [
        "ka_is_alive(sip:) = 1",
        "ka_is_alive(SIP:) = 1",
        "[\"keepalive.add\", \"127.0.0.1:9\", \"o\"] -> Ok. Destination added.",
        "[\"keepalive.add\", \"127.0.0.1:9\", \"o\"] -> error: 500 - couldn't add data to list",
    ];
    assert_eq!(&r[..4], &want_rust_prefix[..], "{r:#?}");
    assert!(r[4].contains("uri: sip:127.0.0.1:9") && r[4].contains("owner: o"), "{r:#?}");
    assert_eq!(r[5], "[\"keepalive.del\", \"127.0.0.1:9\", \"o\"] -> Ok. Destination removed.");
}
