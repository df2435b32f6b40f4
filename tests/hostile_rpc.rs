//! Hostile RPC: every sca.* and keepalive.* command with missing, extra,
//! wrong-typed and oversized arguments gets a clear answer (a fault, or the
//! normal output when the arguments are valid after all) and changes nothing.

mod common;
mod keepalive_support;

use common::cfg::sca_opts;
use common::kamailio::{Kamailio, ScaModule};
use common::flows::subscribe_call_info;
use common::sip::{Ua, RECV_TIMEOUT};
use keepalive_support::{ka_opts, list, Ka};

const AOR: &str = "sip:100@127.0.0.1";

const COMMANDS: [&str; 12] = [
    "sca.all_subscriptions",
    "sca.subscription_count",
    "sca.show_subscription",
    "sca.subscribers",
    "sca.deactivate_all_subscriptions",
    "sca.deactivate_subscription",
    "sca.all_appearances",
    "sca.show_appearance",
    "sca.seize_appearance",
    "sca.update_appearance",
    "sca.release_appearance",
    "sca.subscriber_liveness",
];

/// State the commands could change, as text.
fn snapshot(k: &Kamailio) -> String {
    let mut subs: Vec<String> = k.rpc(&["sca.all_subscriptions"]).lines().map(|l| {
        // drop the seconds-left column, which ticks
        let f: Vec<&str> = l.split(' ').collect();
        format!("{} {} {} {}", f[0], f[1], f[2], f.get(4).unwrap_or(&""))
    }).collect();
    subs.sort();
    let apps: Vec<String> = k
        .rpc(&["sca.all_appearances"])
        .lines()
        .map(|l| l.split(' ').enumerate().filter(|(i, _)| *i != 3).map(|(_, w)| w).collect::<Vec<_>>().join(" "))
        .collect();
    format!("{}\n--\n{}", subs.join("\n"), apps.join("\n"))
}

#[test]
fn bad_arguments_fault_and_change_nothing() {
    let k = Kamailio::start(sca_opts(ScaModule::Rust));
    let mut ua = Ua::new("A1", "100", k.addr()).expect("UA");
    ua.auto_answer_notify = true;
    subscribe_call_info(&mut ua, AOR);
    let owner = format!("sip:100@{}", ua.local);
    k.rpc(&["sca.seize_appearance", AOR, &owner]);
    ua.expect_request("NOTIFY", RECV_TIMEOUT).expect("NOTIFY for the seize");
    let before = snapshot(&k);

    let huge = "9".repeat(5000);
    let huge_uri = format!("sip:{}@127.0.0.1", "a".repeat(5000));
    let bad_args: Vec<Vec<&str>> = vec![
        vec![],
        vec![""],
        vec!["not a uri"],
        vec![&huge],
        vec![&huge_uri],
        vec![AOR, "call-info", "extra", "more", "args"],
        vec!["sip:999@127.0.0.1", "s:-1", "bogus"],
        vec![AOR, "99999999999"],
        vec![AOR, "1", "held", "<not-a-uri", "extra"],
        vec![AOR, "0"],
        vec!["\u{1}\u{2}", "\u{7f}\u{1b}[0m"],
    ];
    let mut faults = 0;
    for cmd in COMMANDS {
        // the commands that legitimately change state get only arguments
        // that name nothing that exists
        let changes_state = matches!(
            cmd,
            "sca.deactivate_all_subscriptions" | "sca.seize_appearance" | "sca.update_appearance" | "sca.release_appearance" | "sca.deactivate_subscription"
        );
        for args in &bad_args {
            if cmd == "sca.deactivate_all_subscriptions" {
                continue; // takes no arguments: any call ends every subscription
            }
            if changes_state && args.first() == Some(&AOR) && !(cmd == "sca.release_appearance" && args.get(1) == Some(&"0")) {
                continue;
            }
            if cmd == "sca.seize_appearance" && args.len() >= 2 {
                continue; // two strings are valid arguments: it would seize
            }
            let mut call = vec![cmd];
            call.extend(args.iter().copied());
            if let Err(e) = k.kamcmd(&call) {
                assert!(e.starts_with("error: "), "{call:?}: a clear fault, got {e:?}");
                faults += 1;
            }
            assert!(k.kamcmd(&["core.uptime"]).is_ok(), "the RPC process survives {call:?}");
        }
    }
    assert!(faults > 40, "most of these calls are faults ({faults})");
    assert_eq!(snapshot(&k), before, "hostile RPC changed the state");
    let mut k = k;
    assert!(k.is_running());
}

/// Hostile argument lists for the keepalive commands.
fn hostile_args(huge: &str, huge_uri: &str) -> Vec<Vec<String>> {
    let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    vec![
        v(&[]),
        v(&[""]),
        v(&["", ""]),
        v(&["not a uri", "owner"]),
        v(&[huge, "owner"]),
        v(&[huge_uri, huge]),
        v(&["sip:a@b:c:d:e", "owner"]),
        v(&["sip:127.0.0.1:99999999999", "owner"]),
        v(&["sip:127.0.0.1", "owner", "extra", "more", "args"]),
        v(&["s:-1", "s:-1"]),
        v(&["sip:127.0.0.1", "5"]),
        v(&["\u{1}\u{2}", "\u{7f}\u{1b}[0m"]),
        v(&["sip:[::1", "owner"]),
        v(&["@@@", "owner"]),
    ]
}

#[test]
fn keepalive_bad_arguments_fault_and_change_nothing() {
    // delete_counter 0: the two destinations below never answer a ping, and
    // the failure-count removal must not race with what is checked here
    // (nothing but the RPC calls may change the list; seen on 6.0, whose
    // pings to a closed port fail faster)
    let k = Kamailio::start(ka_opts(Ka::Rust, &[("ping_interval", "1".into()), ("delete_counter", "0".into())]));
    // two destinations that nothing below names (owner "kept")
    assert_eq!(k.rpc(&["keepalive.add", "sip:127.0.0.1:9", "kept"]), "Ok. Destination added.");
    assert_eq!(k.rpc(&["keepalive.add", "sips:127.0.0.1:10", "kept"]), "Ok. Destination added.");
    let snapshot = |k: &Kamailio| {
        let mut v: Vec<(String, String)> = list(k).into_iter().map(|d| (d["uri"].clone(), d["owner"].clone())).collect();
        v.sort();
        v
    };
    let before = snapshot(&k);
    let huge = "9".repeat(5000);
    let huge_uri = format!("sip:{}@127.0.0.1", "a".repeat(5000));
    let (mut faults, mut added) = (0, 0);
    // flush takes no arguments and would legitimately empty the list
    for cmd in ["keepalive.list", "keepalive.get", "keepalive.del", "keepalive.add"] {
        for args in hostile_args(&huge, &huge_uri) {
            let mut call = vec![cmd];
            call.extend(args.iter().map(String::as_str));
            match k.kamcmd(&call) {
                Err(e) => {
                    assert!(e.starts_with("error: 500 - "), "{cmd} {args:?}: a clear fault, got {e:?}");
                    faults += 1;
                }
                // arguments that are valid after all (a 5000-byte user part
                // is a SIP URI): take the destination out again
                Ok(out) if cmd == "keepalive.add" => {
                    assert_eq!(out.trim_end(), "Ok. Destination added.", "{args:?}");
                    let del = [&["keepalive.del"][..], &call[1..3]].concat();
                    assert_eq!(k.rpc(&del), "Ok. Destination removed.");
                    added += 1;
                }
                Ok(_) => assert_eq!(cmd, "keepalive.list", "{cmd} {args:?} succeeded"),
            }
            assert!(k.kamcmd(&["core.uptime"]).is_ok(), "the RPC process survives {call:?}");
        }
    }
    assert!(faults > 35, "most of these calls are faults ({faults}, {added} valid adds)");
    assert_eq!(snapshot(&k), before, "hostile RPC changed the destinations");
    // and the extra arguments did not make flush misbehave either
    assert_eq!(k.rpc(&["keepalive.flush"]), "Ok. Destination list flushed.");
    assert!(list(&k).is_empty());
    let mut k = k;
    assert!(k.is_running());
}
