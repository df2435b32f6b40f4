//! Foundation: Debian's Kamailio 5.6.3 loads sca_rs.so with the example
//! config, takes its modparams, answers a call-info SUBSCRIBE with 202 and
//! an idle NOTIFY, and serves the subscription count over RPC from another
//! process. The same scenario runs against Debian's C sca.so and the two
//! transcripts must agree, but for the deviations of docs/compat.md.

mod common;

use std::time::Duration;

use common::flows::mask_known_deviations;
use common::kamailio::{kamailio_bin, run_with_timeout, Kamailio, KamailioOpts, ScaModule, TestDir};
use common::sip::{Normalizer, SipMessage, Subscribe, Ua, RECV_TIMEOUT};

const AOR: &str = "sip:100@127.0.0.1";

/// cfg-examples/kamailio-sca.cfg as a harness template: the harness's
/// port, ctl socket and DB go in through the file's own `#!define`
/// switches, and the module is loaded from the harness's path. Without
/// authentication (`SCA_EXAMPLE_WITHOUT_AUTH`): this compares the two
/// modules on one config, and the C module has no `sca_is_member()`;
/// tests/security.rs runs the example as shipped.
fn example_template(module: &ScaModule) -> String {
    let path = common::kamailio::repo_root().join("cfg-examples/kamailio-sca.cfg");
    let text = std::fs::read_to_string(&path).expect("read cfg-examples/kamailio-sca.cfg");
    assert!(text.contains("loadmodule \"sca_rs.so\""), "example loads sca_rs.so");
    let text = text
        .replace("loadmodule \"sca_rs.so\"", "loadmodule \"{{SCA_LOADMODULE}}\"")
        .replace("modparam(\"sca_rs\"", "modparam(\"{{SCA_MODULE}}\"");
    let _ = module;
    format!(
        "#!define LISTEN udp:127.0.0.1:{{{{PORT}}}}\n#!define DBURL \"{{{{DB_URL}}}}\"\n\
         #!define CTL \"{{{{CTL_SOCKET}}}}\"\n#!define SCA_EXAMPLE_WITHOUT_AUTH\n{text}"
    )
}

fn start_example(module: ScaModule) -> Kamailio {
    let tpl = example_template(&module);
    Kamailio::start(KamailioOpts::new(&tpl, module))
}

/// `kamailio -c` over a rendered config; (success, output).
fn kamailio_check(cfg: &str) -> (bool, String) {
    let dir = TestDir::new("sca_rs-check").expect("temp dir");
    let p = dir.path.join("check.cfg");
    std::fs::write(&p, cfg).expect("write cfg");
    let module = ScaModule::Rust.loadmodule_path();
    let cfg = std::fs::read_to_string(&p).expect("read back");
    let cfg = cfg
        .replace("{{SCA_LOADMODULE}}", &module.display().to_string())
        .replace("{{SCA_MODULE}}", "sca_rs")
        .replace("{{PORT}}", "5999")
        .replace("{{DB_URL}}", "sqlite:////tmp/nonexistent.sqlite")
        .replace("{{CTL_SOCKET}}", &format!("unixs:{}/ctl", dir.path.display()));
    std::fs::write(&p, cfg).expect("write cfg");
    let out = run_with_timeout(
        std::process::Command::new(kamailio_bin())
            .arg("-c")
            .arg("-f")
            .arg(&p)
            .arg("-L")
            .arg(common::kamailio::mpath()),
        Duration::from_secs(20),
    )
    .expect("run kamailio -c");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[test]
fn kamailio_check_accepts_the_example_config_with_modparams() {
    let (ok, out) = kamailio_check(&example_template(&ScaModule::Rust));
    assert!(ok, "kamailio -c rejected the example config:\n{out}");
    assert!(out.contains("config file ok"), "{out}");
}

#[test]
fn an_unknown_modparam_is_a_config_error() {
    let tpl = example_template(&ScaModule::Rust)
        + "\nmodparam(\"sca_rs\", \"no_such_param\", 1)\n";
    let (ok, out) = kamailio_check(&tpl);
    assert!(!ok, "kamailio -c accepted an unknown sca_rs modparam:\n{out}");
    assert!(out.contains("no_such_param"), "the error names the parameter:\n{out}");
}

#[test]
fn a_bad_modparam_value_stops_kamailio_with_a_clear_log_line() {
    let tpl = example_template(&ScaModule::Rust)
        .replace("\"call_info_max_expires\", 3600", "\"call_info_max_expires\", -5");
    let r = Kamailio::try_start(KamailioOpts::new(&tpl, ScaModule::Rust).ready_timeout(Duration::from_secs(5)));
    let err = r.err().expect("kamailio must refuse to start");
    assert!(
        err.contains("call_info_max_expires must be a positive number of seconds, got -5"),
        "log names the parameter and value:\n{err}"
    );
}

#[test]
fn a_seized_ttl_of_zero_stops_kamailio_with_a_clear_log_line() {
    let tpl = example_template(&ScaModule::Rust).replace(
        "\"call_info_max_expires\", 3600)",
        "\"call_info_max_expires\", 3600)\nmodparam(\"sca_rs\", \"seized_ttl\", 0)",
    );
    assert!(tpl.contains("\"seized_ttl\", 0"), "the template took the parameter");
    let r = Kamailio::try_start(KamailioOpts::new(&tpl, ScaModule::Rust).ready_timeout(Duration::from_secs(5)));
    let err = r.err().expect("kamailio must refuse to start");
    assert!(
        err.contains("seized_ttl must be a positive number of seconds, got 0"),
        "log names the parameter and value:\n{err}"
    );
}

/// One call-info SUBSCRIBE / NOTIFY / unSUBSCRIBE exchange; returns the
/// UA's transcript (normalized) and the messages seen.
struct Run {
    r202: SipMessage,
    notify1: SipMessage,
    count_after_subscribe: String,
    r202_unsub: SipMessage,
    notify2: SipMessage,
    normalized: String,
    server_tag: String,
    ua_tag: String,
    ua_contact: String,
}

fn run_scenario(k: &Kamailio) -> Run {
    assert_eq!(k.rpc(&["sca.subscription_count", "call-info"]), "0 call-info");
    let mut ua = Ua::new("alice", "100", k.addr()).expect("bind UA socket");
    ua.auto_answer_notify = true;
    let mut dlg = ua.dialog(AOR);

    let sub1 = ua.send_subscribe(&mut dlg, &Subscribe::new("call-info", 600)).expect("send SUBSCRIBE");
    let r202 = ua.expect_final_response(&sub1, RECV_TIMEOUT).expect("reply to SUBSCRIBE");
    assert!(dlg.update_from_response(&r202), "202 establishes the dialog:\n{}", r202.raw);
    let notify1 = ua.expect_request("NOTIFY", RECV_TIMEOUT).expect("NOTIFY after SUBSCRIBE");
    let count_after_subscribe = k.rpc(&["sca.subscription_count", "call-info"]);

    let sub2 = ua.send_subscribe(&mut dlg, &Subscribe::new("call-info", 0)).expect("send unSUBSCRIBE");
    let r202_unsub = ua.expect_final_response(&sub2, RECV_TIMEOUT).expect("reply to unSUBSCRIBE");
    let notify2 = ua.expect_request("NOTIFY", RECV_TIMEOUT).expect("NOTIFY after unSUBSCRIBE");
    ua.expect_silence(Duration::from_millis(500)).expect("nothing else is sent");

    let mut norm = Normalizer::new().label_addr(k.addr(), "proxy").label_addr(ua.local, "alice");
    let normalized = norm.normalize_transcript("alice", ua.transcript());
    Run {
        server_tag: r202.ttag().unwrap_or_default(),
        ua_tag: dlg.local_tag.clone(),
        ua_contact: ua.contact_uri(),
        r202,
        notify1,
        count_after_subscribe,
        r202_unsub,
        notify2,
        normalized,
    }
}

fn hdr<'a>(m: &'a SipMessage, name: &str) -> &'a str {
    m.header(name).unwrap_or_else(|| panic!("no {name} in:\n{}", m.raw))
}

#[test]
fn call_info_subscribe_gets_202_idle_notify_and_rpc_count() {
    let mut k = start_example(ScaModule::Rust);
    let r = run_scenario(&k);

    assert_eq!(r.r202.start_line, "SIP/2.0 202 Accepted", "{}", r.r202.raw);
    assert_eq!(hdr(&r.r202, "Event"), "call-info");
    assert_eq!(hdr(&r.r202, "Contact"), AOR, "the 202's Contact is the Request-URI");
    assert_eq!(hdr(&r.r202, "Allow-Events"), "call-info, line-seize");
    assert_eq!(hdr(&r.r202, "Expires"), "600");
    assert!(!r.server_tag.is_empty(), "202 carries a To-tag");

    let n = &r.notify1;
    assert_eq!(n.start_line, format!("NOTIFY {} SIP/2.0", r.ua_contact), "{}", n.raw);
    assert_eq!(hdr(n, "To"), format!("<{AOR}>;tag={}", r.ua_tag));
    assert_eq!(hdr(n, "From"), format!("<{AOR}>;tag={}", r.server_tag));
    assert_eq!(hdr(n, "CSeq"), "1 NOTIFY");
    assert_eq!(hdr(n, "Contact"), AOR);
    assert_eq!(hdr(n, "Call-Info"), "<sip:127.0.0.1>;appearance-index=*;appearance-state=idle");
    assert_eq!(hdr(n, "Event"), "call-info");
    let ss = hdr(n, "Subscription-State");
    let left: u32 = ss
        .strip_prefix("active;expires=")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("Subscription-State {ss:?} is active with expires"));
    assert!((598..=600).contains(&left), "{ss}");

    // counted by the RPC process: state written by a SIP worker is shared
    assert_eq!(r.count_after_subscribe, "1 call-info");

    assert_eq!(r.r202_unsub.start_line, "SIP/2.0 202 Accepted");
    assert_eq!(hdr(&r.r202_unsub, "Expires"), "0");
    assert_eq!(hdr(&r.notify2, "CSeq"), "2 NOTIFY");
    assert_eq!(hdr(&r.notify2, "Subscription-State"), "terminated");

    assert_eq!(
        k.kamcmd(&["sca.subscription_count"]).expect_err("missing argument is a fault"),
        "error: 500 - usage: sca.subscription_count {call-info | line-seize}"
    );
    assert_eq!(
        k.kamcmd(&["sca.subscription_count", "presence"]).expect_err("unknown event is a fault"),
        "error: 500 - usage: sca.subscription_count {call-info | line-seize}"
    );

    let bad = k.log_errors();
    assert!(bad.is_empty(), "errors in Kamailio log:\n{}", bad.join("\n"));
    assert!(k.is_running(), "kamailio died");
    let st = k.stop().expect("kamailio stops on SIGTERM");
    assert!(st.success(), "kamailio exit status {st}");
}

#[test]
fn differential_against_c_sca_module() {
    let c = start_example(ScaModule::C);
    let rc = run_scenario(&c);
    let rust = start_example(ScaModule::Rust);
    let rr = run_scenario(&rust);
    assert_eq!(rc.count_after_subscribe, rr.count_after_subscribe);
    assert_eq!(hdr(&rc.notify1, "Subscription-State"), "active", "C omits expires (compat.md)");
    let (tc, tr) = (mask_known_deviations(&rc.normalized), mask_known_deviations(&rr.normalized));
    assert_eq!(tc, tr, "transcripts differ\n--- C sca.so\n{tc}\n--- sca_rs.so\n{tr}");
}

/// Newer Kamailio API: `sca_handle_subscribe(to_uri)` subscribes to the AoR
/// the script names, and `to_uri_avp` tells the script which URI was used.
#[test]
fn handle_subscribe_with_a_to_uri_and_uri_avps() {
    let tpl = example_template(&ScaModule::Rust)
        .replace(
            "sca_handle_subscribe();",
            "sca_handle_subscribe(\"sip:300@127.0.0.1\");\n\t\t\txlog(\"L_NOTICE\", \"SCA-TO-AVP=$avp(sca_to)\\n\");",
        )
        .replace(
            "modparam(\"{{SCA_MODULE}}\", \"db_update_interval\", 300)",
            "modparam(\"{{SCA_MODULE}}\", \"db_update_interval\", 300)\n\
             modparam(\"{{SCA_MODULE}}\", \"to_uri_avp\", \"$avp(sca_to)\")\n\
             modparam(\"{{SCA_MODULE}}\", \"from_uri_avp\", \"$avp(sca_from)\")\n\
             modparam(\"{{SCA_MODULE}}\", \"contact_fallback\", \"sip:fallback@127.0.0.1\")",
        );
    assert!(tpl.contains("sca_handle_subscribe(\"sip:300@127.0.0.1\")") && tpl.contains("to_uri_avp"));
    let k = Kamailio::start(KamailioOpts::new(&tpl, ScaModule::Rust));
    let mut ua = Ua::new("alice", "100", k.addr()).expect("bind UA socket");
    ua.auto_answer_notify = true;
    let mut dlg = ua.dialog(AOR);
    let s = ua.send_subscribe(&mut dlg, &Subscribe::new("call-info", 600)).expect("send SUBSCRIBE");
    let r = ua.expect_final_response(&s, RECV_TIMEOUT).expect("reply");
    assert_eq!(r.status(), Some(202), "{}", r.raw);
    let n = ua.expect_request("NOTIFY", RECV_TIMEOUT).expect("NOTIFY");
    assert_eq!(hdr(&n, "To"), format!("<sip:300@127.0.0.1>;tag={}", dlg.local_tag), "the NOTIFY is for the named AoR");
    let subs = k.rpc(&["sca.all_subscriptions"]);
    assert!(subs.starts_with("300 "), "subscribed to sip:300: {subs}");
    assert!(k.wait_for_log("SCA-TO-AVP=sip:300@127.0.0.1", Duration::from_secs(2)), "{}", k.log_tail(20));
    assert!(
        Kamailio::try_start(
            KamailioOpts::new(&tpl.replace("$avp(sca_from)", "$var(nope)"), ScaModule::Rust)
                .ready_timeout(Duration::from_secs(5))
        )
        .err()
        .is_some_and(|e| e.contains("modparam from_uri_avp")),
        "a from_uri_avp that is not an AVP is a start-up error"
    );
}

/// docs/compat.md "An unparsable Expires is refused": sca_rs answers `400
/// Bad Shared Call Appearance Request` and stores nothing; Debian's C module
/// answers 202 and reads the value as 0 (an unsubscribe).
#[test]
fn an_unparsable_expires_gets_400_from_sca_rs_and_202_from_c() {
    for module in [ScaModule::Rust, ScaModule::C] {
        let k = Kamailio::start(common::cfg::sca_opts(module.clone()));
        let mut ua = Ua::new("A", "100", k.addr()).expect("UA");
        ua.auto_answer_notify = true;
        let mut d = ua.dialog(AOR);
        let req = ua.subscribe_request(&mut d, &Subscribe::new("call-info", 600)).set_header("Expires", "abc");
        let sent = ua.send(&req).expect("send SUBSCRIBE");
        let r = ua.expect_final_response(&sent, RECV_TIMEOUT).expect("final reply");
        let want = match module {
            ScaModule::Rust => (400, "Bad Shared Call Appearance Request"),
            ScaModule::C => (202, "Accepted"),
        };
        let reason = r.start_line.splitn(3, ' ').nth(2).unwrap_or("");
        assert_eq!((r.status(), reason), (Some(want.0), want.1), "{module:?}: {}", r.raw);
        // nothing is left subscribed either way (C: an unsubscribe)
        assert_eq!(k.rpc(&["sca.subscription_count", "call-info"]), "0 call-info", "{module:?}");
        if module == ScaModule::Rust {
            assert!(k.log().contains("bad Expires header 'abc'"), "the refusal is logged:\n{}", k.log_tail(20));
        }
    }
}
