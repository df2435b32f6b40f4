//! Hostile RPC: every sca.* command with missing, extra, wrong-typed and
//! oversized arguments gets a clear answer (a fault, or the normal output
//! when the arguments are valid after all) and changes nothing.

mod common;

use common::cfg::sca_opts;
use common::kamailio::{Kamailio, ScaModule};
use common::flows::subscribe_call_info;
use common::sip::{Ua, RECV_TIMEOUT};

const AOR: &str = "sip:100@127.0.0.1";

const COMMANDS: [&str; 11] = [
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
