//! Debian's drouting.so monitoring its gateways through sca_rs's keepalive
//! API (`modparam("drouting", "enable_keepalive", 1)`: drouting finds
//! `bind_keepalive` with `find_export()` and adds every gateway with a
//! state-changed callback). A gateway that stops answering OPTIONS is
//! skipped by `do_routing()`, and used again when it answers again; a
//! `drouting.reload` (which re-adds every gateway with new callback data)
//! keeps a dead gateway out.

mod common;
mod keepalive_support;

use std::time::Duration;

use common::kamailio::Kamailio;
use keepalive_support::{ka_opts, list, wait_until, Client, Gateway, Ka};

const WAIT: Duration = Duration::from_secs(8);

const ROUTE: &str = r#"	if ($rU =~ "^00") {
		if (do_routing("1")) {
			sl_send_reply("200", "ROUTED $ru");
		} else {
			sl_send_reply("503", "NOGW");
		}
		exit;
	}
"#;

fn drouting_state(k: &Kamailio, hp: &str) -> Option<String> {
    let uri = format!("sip:{hp}");
    list(k)
        .into_iter()
        .find(|d| d.get("uri") == Some(&uri) && d.get("owner").map(String::as_str) == Some("drouting"))
        .and_then(|d| d.get("state").cloned())
}

fn route(c: &mut Client) -> String {
    let (status, reason) = c.ask("00123", &[]);
    format!("{status} {reason}")
}

/// Kamailio with drouting over sqlite, gateways gw1 then gw2 for `00...`.
fn start(ka: Ka, hp1: &str, hp2: &str) -> Kamailio {
    let schema = std::fs::read_to_string(common::kamailio::kamailio_file("/usr/share/kamailio/db_sqlite/drouting-create.sql"))
        .expect("Debian's drouting schema (kamailio-sqlite-modules)");
    let seed = format!(
        "{schema}\n\
         INSERT INTO dr_gateways (gwid, type, address, strip, pri_prefix, attrs, description) VALUES \
         (1, 0, '{hp1}', 0, '', '', 'gw1'), (2, 0, '{hp2}', 0, '', '', 'gw2');\n\
         INSERT INTO dr_rules (ruleid, groupid, prefix, timerec, priority, routeid, gwlist, description) VALUES \
         (1, '1', '00', '', 0, '', '1,2', 'both');\n"
    );
    let mut opts = ka_opts(ka, &[("ping_interval", "1".into()), ("delete_counter", "0".into())])
        .with_db(true)
        .db_seed_sql(&seed)
        .var("EXTRA_LOADMODULES", "loadmodule \"db_sqlite.so\"\nloadmodule \"drouting.so\"")
        .var("EXTRA_ROUTE", ROUTE);
    // in the template itself, so that the harness fills in {{DB_URL}}
    opts.cfg_template = opts.cfg_template.replace(
        "{{EXTRA_MODPARAMS}}",
        "modparam(\"drouting\", \"db_url\", \"{{DB_URL}}\")\nmodparam(\"drouting\", \"enable_keepalive\", 1)",
    );
    Kamailio::start(opts)
}

#[test]
fn do_routing_skips_a_gateway_that_stops_answering_and_uses_it_again() {
    let gw1 = Gateway::new(200);
    let gw2 = Gateway::new(200);
    let (hp1, hp2) = (gw1.hostport(), gw2.hostport());
    let k = start(Ka::Rust, &hp1, &hp2);
    let mut c = Client::new(&k);

    // drouting added both gateways through the API (from its first worker)
    assert!(
        wait_until(WAIT, || drouting_state(&k, &hp1).as_deref() == Some("1")
            && drouting_state(&k, &hp2).as_deref() == Some("1")),
        "{:?}\n{}",
        list(&k),
        k.log_tail(40)
    );
    assert_eq!(route(&mut c), format!("200 ROUTED sip:00123@{hp1}"));

    // gw1 stops answering: routed to gw2
    gw1.set_code(0);
    assert!(wait_until(WAIT, || route(&mut c) == format!("200 ROUTED sip:00123@{hp2}")), "{}", k.log_tail(40));
    assert_eq!(drouting_state(&k, &hp1).as_deref(), Some("2"));

    // a reload gives drouting new gateway records: they learn gw1 is down
    k.rpc(&["drouting.reload"]);
    assert_eq!(route(&mut c), format!("200 ROUTED sip:00123@{hp2}"));
    assert_eq!(list(&k).len(), 2, "re-added, not duplicated: {:?}", list(&k));

    // both down: no gateway
    gw2.set_code(0);
    assert!(wait_until(WAIT, || route(&mut c) == "503 NOGW"), "{}", k.log_tail(40));

    // both back: gw1 first again
    gw1.set_code(200);
    gw2.set_code(200);
    assert!(wait_until(WAIT, || route(&mut c) == format!("200 ROUTED sip:00123@{hp1}")), "{}", k.log_tail(40));
    assert!(!k.log().contains("panic"), "{}", k.log_tail(40));
}

/// The same with Debian's keepalive.so: routing around a dead gateway
/// works alike, but after `drouting.reload` the C module keeps calling
/// back with the old (freed) gateway records and never tells the new ones,
/// so drouting routes to the dead gateway again.
#[test]
fn the_c_module_routes_alike_but_forgets_a_dead_gateway_on_reload() {
    let gw1 = Gateway::new(200);
    let gw2 = Gateway::new(200);
    let (hp1, hp2) = (gw1.hostport(), gw2.hostport());
    let k = start(Ka::C, &hp1, &hp2);
    let mut c = Client::new(&k);
    assert!(wait_until(WAIT, || route(&mut c) == format!("200 ROUTED sip:00123@{hp1}")), "{}", k.log_tail(40));
    gw1.set_code(0);
    assert!(wait_until(WAIT, || route(&mut c) == format!("200 ROUTED sip:00123@{hp2}")), "{}", k.log_tail(40));
    k.rpc(&["drouting.reload"]);
    assert_eq!(route(&mut c), format!("200 ROUTED sip:00123@{hp1}"), "C: the dead gateway is used again");
}
