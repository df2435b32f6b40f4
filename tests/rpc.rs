//! `kamcmd sca.*` against Debian's C sca.so and sca_rs.so side by side:
//! the same calls, including their error paths, give the same output
//! (ports, times and tags normalized) for every command C 5.6.3
//! implements; the commands it does not implement are checked on their own.

mod common;

use std::time::Duration;

use common::cfg::sca_opts;
use common::kamailio::{Kamailio, ScaModule};
use common::flows::subscribe_call_info;
use common::sip::{Ua, RECV_TIMEOUT};

const AOR: &str = "sip:100@127.0.0.1";

struct Phones {
    a1: Ua,
    a2: Ua,
}

fn subscribe_two(k: &Kamailio) -> Phones {
    let mut a1 = Ua::new("A1", "100", k.addr()).expect("UA");
    let mut a2 = Ua::new("A2", "100", k.addr()).expect("UA");
    for ua in [&mut a1, &mut a2] {
        ua.auto_answer_notify = true;
        subscribe_call_info(ua, AOR);
    }
    Phones { a1, a2 }
}

/// kamcmd output or fault, with UA addresses, Kamailio's port, times and
/// seconds left replaced by stable tokens.
fn call(k: &Kamailio, p: &Phones, args: &[&str]) -> String {
    let out = match k.kamcmd(args) {
        Ok(o) => o,
        Err(e) => format!("FAULT {e}"),
    };
    let mut s = out.trim().to_string();
    for (addr, label) in [(p.a1.local, "<A1>"), (p.a2.local, "<A2>"), (k.addr(), "<proxy>")] {
        s = s.replace(&addr.to_string(), label);
    }
    // numbers that are clocks: all_appearances' mtime, all_subscriptions'
    // seconds left (tolerate a second of difference by bucketing); listings
    // are in hash-table order in both modules: compared as sorted sets
    let mut lines: Vec<String> = s.split('\n')
        .map(|line| {
            line.split(' ')
                .map(|w| match w.parse::<i64>() {
                    Ok(n) if n > 1_000_000_000 => "<time>".to_string(),
                    Ok(n) if (590..=600).contains(&n) => "<~600>".to_string(),
                    _ => w.to_string(),
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    lines.sort();
    lines.join("\n")
}

fn notified(ua: &mut Ua) -> String {
    match ua.expect_request("NOTIFY", RECV_TIMEOUT) {
        Ok(n) => format!(
            "{} | {}",
            n.header("Subscription-State").unwrap_or("-").split(";expires=").next().unwrap_or("-"),
            n.header("Call-Info").unwrap_or("-")
        ),
        Err(e) => format!("no NOTIFY: {e}"),
    }
}

/// The scenario; returns one line per step.
fn run(module: ScaModule) -> Vec<String> {
    let k = Kamailio::start(sca_opts(module));
    let mut p = subscribe_two(&k);
    let a1c = format!("sip:100@{}", p.a1.local);
    let mut t = Vec::new();
    let mut step = |name: &str, args: &[&str], p: &mut Phones, notify: bool| {
        let out = call(&k, p, args);
        t.push(format!("{name}: {out}"));
        if notify {
            t.push(format!("  A1 <- {}", notified(&mut p.a1)));
            t.push(format!("  A2 <- {}", notified(&mut p.a2)));
        }
    };
    step("count", &["sca.subscription_count", "call-info"], &mut p, false);
    step("count line-seize", &["sca.subscription_count", "line-seize"], &mut p, false);
    step("count bad event", &["sca.subscription_count", "presence"], &mut p, false);
    step("all_subscriptions", &["sca.all_subscriptions"], &mut p, false);
    step("seize", &["sca.seize_appearance", AOR, &a1c], &mut p, true);
    step("seize missing owner", &["sca.seize_appearance", AOR], &mut p, false);
    step("all_appearances", &["sca.all_appearances"], &mut p, false);
    step("update active", &["sca.update_appearance", AOR, "1", "active"], &mut p, true);
    step("update bad state", &["sca.update_appearance", AOR, "1", "bogus"], &mut p, false);
    step("update unused index", &["sca.update_appearance", AOR, "7", "held"], &mut p, false);
    step("update missing args", &["sca.update_appearance", AOR], &mut p, false);
    step("release index 0", &["sca.release_appearance", AOR, "0"], &mut p, false);
    step("release unused index", &["sca.release_appearance", AOR, "5"], &mut p, false);
    step("release unknown aor", &["sca.release_appearance", "sip:999@127.0.0.1", "1"], &mut p, false);
    step("release missing args", &["sca.release_appearance"], &mut p, false);
    step("release", &["sca.release_appearance", AOR, "1"], &mut p, true);
    step("all_appearances after", &["sca.all_appearances"], &mut p, false);
    step("deactivate all", &["sca.deactivate_all_subscriptions"], &mut p, true);
    step("count after deactivate", &["sca.subscription_count", "call-info"], &mut p, false);
    let _ = p.a1.expect_silence(Duration::from_millis(300));
    t
}

#[test]
fn rpc_output_and_faults_match_the_c_module() {
    let c = run(ScaModule::C);
    let rust = run(ScaModule::Rust);
    eprintln!("C sca.so:\n{}\n\nsca_rs.so:\n{}", c.join("\n"), rust.join("\n"));
    for (a, b) in c.iter().zip(rust.iter()) {
        assert_eq!(a, b, "C (left) and sca_rs (right) differ");
    }
    assert_eq!(c.len(), rust.len());
}

#[test]
fn commands_c_does_not_implement() {
    let k = Kamailio::start(sca_opts(ScaModule::Rust));
    let mut p = subscribe_two(&k);
    let a2c = format!("sip:100@{}", p.a2.local);
    // show_subscription: one line per matching subscription
    let out = call(&k, &p, &["sca.show_subscription", AOR, "call-info"]);
    let mut lines: Vec<&str> = out.lines().collect();
    lines.sort();
    assert_eq!(
        lines,
        [
            "sip:100@127.0.0.1 call-info sip:100@<A1> <time>",
            "sip:100@127.0.0.1 call-info sip:100@<A2> <time>"
        ]
    );
    assert_eq!(
        call(&k, &p, &["sca.show_subscription", AOR, "call-info", &a2c]),
        "sip:100@127.0.0.1 call-info sip:100@<A2> <time>"
    );
    assert!(call(&k, &p, &["sca.show_subscription", AOR]).starts_with("FAULT error: 500 - usage"));
    // subscribers
    let out = call(&k, &p, &["sca.subscribers"]);
    let mut lines: Vec<&str> = out.lines().collect();
    lines.sort();
    assert_eq!(lines, ["sip:100@127.0.0.1 sip:100@<A1>", "sip:100@127.0.0.1 sip:100@<A2>"]);
    // show_appearance
    assert_eq!(call(&k, &p, &["sca.show_appearance", AOR]), "");
    assert_eq!(
        call(&k, &p, &["sca.show_appearance", "sip:999@127.0.0.1"]),
        "FAULT error: 404 - sip:999@127.0.0.1 is not a shared appearance"
    );
    // deactivate_subscription: one subscriber only
    assert_eq!(
        call(&k, &p, &["sca.deactivate_subscription", AOR, &a2c]),
        "Deactivating call-info subscription from sip:100@<A2>"
    );
    let n = p.a2.expect_request("NOTIFY", RECV_TIMEOUT).expect("A2 told");
    assert_eq!(n.header("Subscription-State"), Some("terminated;reason=deactivated"));
    p.a1.expect_silence(Duration::from_millis(300)).expect("A1 not affected");
    assert_eq!(
        call(&k, &p, &["sca.deactivate_subscription", AOR, "sip:nobody@127.0.0.1:1"]),
        "FAULT error: 404 - no subscription of sip:nobody@127.0.0.1:1 for sip:100@127.0.0.1"
    );
}
