//! Keepalive in sca_rs against a real Kamailio: destinations pinged with
//! OPTIONS over loopback, `ka_is_alive()` following them, event routes
//! once per transition, the RPC commands and their faults, delete_counter
//! removing a destination (#3028), times not swapped (#3790), adds and
//! deletes while pings are in flight (#2448), and the sca_rs extensions
//! (thresholds, alive codes, latency in keepalive.list).
//!
//! ping_interval 1 s and tm fr_timer 1 s keep every test short; every
//! wait is bounded.

mod common;
mod keepalive_support;

use std::time::{Duration, Instant};

use common::kamailio::Kamailio;
use keepalive_support::{
    count_in_log, epoch_text, ka_opts, list, listed_state, parse_structs, wait_until, Client, Gateway, Ka,
};

const WAIT: Duration = Duration::from_secs(8);

fn q(s: &str) -> String {
    format!("\"{s}\"")
}

fn start(params: &[(&str, String)]) -> Kamailio {
    Kamailio::start(ka_opts(Ka::Rust, params))
}

fn rust_only_route() -> &'static str {
    "\tif ($rU == \"isalive2\") {\n\t\t$var(r) = is_alive(\"$hdr(X-Dst)\");\n\t\tsl_send_reply(\"200\", \"alive $var(r)\");\n\t\texit;\n\t}\n"
}

#[test]
fn is_alive_follows_a_destination_that_goes_silent_and_comes_back() {
    let gw = Gateway::new(200);
    let hp = gw.hostport();
    let k = Kamailio::start(
        ka_opts(
            Ka::Rust,
            &[
                ("ping_interval", "1".into()),
                ("delete_counter", "0".into()),
                ("ping_from", q("sip:pinger@ka.example.org")),
                ("destination", q(&hp)),
            ],
        )
        .var("EXTRA_ROUTE", rust_only_route()),
    );
    let mut c = Client::new(&k);
    let uri = format!("sip:{hp}");

    assert!(wait_until(WAIT, || c.is_alive(&hp) == 1 && listed_state(&k, &uri) == Some(1)), "{}", k.log_tail(40));
    // the ping itself: OPTIONS to the destination, From = ping_from
    let opt = gw.last_options().expect("an OPTIONS reached the gateway");
    assert_eq!(opt.request_uri(), Some(uri.as_str()));
    assert!(opt.header("From").unwrap_or("").contains("sip:pinger@ka.example.org"), "{}", opt.raw);
    assert!(opt.header("To").unwrap_or("").contains(&uri), "{}", opt.raw);
    // #3790: a destination that only ever answered has a last up, no last down
    let l = list(&k);
    assert_eq!(l.len(), 1, "{l:?}");
    assert_eq!(l[0]["owner"], "_params");
    assert_ne!(l[0]["last up"], epoch_text(), "{l:?}");
    assert_eq!(l[0]["last down"], epoch_text(), "{l:?}");
    assert!(l[0]["last checked"].ends_with('\n'), "ctime format: {l:?}");

    // every spelling of the destination
    for dst in [hp.clone(), uri.clone(), format!("SIP:{hp}")] {
        assert_eq!(c.is_alive(&dst), 1, "{dst}");
    }
    assert_eq!(c.is_alive(&format!("sips:{hp}")), -1);
    assert_eq!(c.is_alive("127.0.0.1:1"), -1);
    let (_, alias) = c.ask("isalive2", &[("X-Dst", &hp)]);
    assert_eq!(alias, "alive 1", "is_alive() is ka_is_alive()");

    // silent: down
    gw.set_code(0);
    assert!(wait_until(WAIT, || c.is_alive(&hp) == 2), "{}", k.log_tail(40));
    assert_eq!(c.is_alive(&uri), 2);
    let l = list(&k);
    assert_eq!(l[0]["state"], "2");
    assert_ne!(l[0]["last down"], epoch_text(), "{l:?}");

    // back: up
    gw.set_code(200);
    assert!(wait_until(WAIT, || c.is_alive(&hp) == 1), "{}", k.log_tail(40));

    // once per transition: up, down, up — and nothing more while it stays up
    // (two more answered pings, that is two more checks of its state)
    let seen = gw.options_seen();
    assert!(wait_until(WAIT, || gw.options_seen() >= seen + 2), "two more pings:\n{}", k.log_tail(40));
    let up = format!("KA-EVENT up {uri}");
    let down = format!("KA-EVENT down {uri}");
    assert_eq!((count_in_log(&k, &up), count_in_log(&k, &down)), (2, 1), "{}", k.log_tail(60));
    assert!(!k.log().contains("panic"), "{}", k.log_tail(40));
}

#[test]
fn rpc_add_get_del_list_flush_and_bad_input() {
    let gw = Gateway::new(200);
    let hp = gw.hostport();
    let uri = format!("sip:{hp}");
    let k = start(&[("ping_interval", "1".into())]);

    assert_eq!(k.rpc(&["keepalive.list"]), "");
    assert_eq!(k.rpc(&["keepalive.add", &uri, "owner1"]), "Ok. Destination added.");
    let before = k.rpc(&["keepalive.list"]);
    let l = parse_structs(&before);
    assert_eq!(l.len(), 1);
    assert_eq!((l[0]["uri"].as_str(), l[0]["owner"].as_str()), (uri.as_str(), "owner1"));
    for key in ["last checked", "last up", "last down", "state"] {
        assert!(l[0].contains_key(key), "{key} in {l:?}");
    }

    // faults, and nothing changed
    let fault = |args: &[&str], want: &str| {
        let e = k.kamcmd(args).expect_err(&format!("{args:?} must fail"));
        assert_eq!(e, format!("error: 500 - {want}"), "{args:?}");
    };
    fault(&["keepalive.add"], "Not enough parameters or wrong format");
    fault(&["keepalive.add", &uri], "Not enough parameters or wrong format");
    fault(&["keepalive.add", "sip:a@b:c:d:e", "owner1"], "couldn't add data to list");
    fault(&["keepalive.add", "@@@", "owner1"], "couldn't add data to list");
    // not one token: Kamailio's parser takes these, the wire would not
    fault(&["keepalive.add", "sip:gw example.org", "owner1"], "couldn't add data to list");
    fault(&["keepalive.add", "sip:<gw.example.org>", "owner1"], "couldn't add data to list");
    fault(&["keepalive.add", "sip:user@", "owner1"], "couldn't add data to list");
    fault(&["keepalive.add", &uri, "owner1"], "couldn't add data to list");
    fault(&["keepalive.add", &hp, "owner1"], "couldn't add data to list");
    fault(&["keepalive.get", &uri], "Not enough parameters or wrong format");
    fault(&["keepalive.get", &uri, "nobody"], "couldn't get data from list");
    fault(&["keepalive.del", &uri], "Not enough parameters or wrong format");
    fault(&["keepalive.del", &uri, "nobody"], "couldn't delete data from list");
    fault(&["keepalive.del", "sip:10.0.0.1", "owner1"], "couldn't delete data from list");
    let after = parse_structs(&k.rpc(&["keepalive.list"]));
    assert_eq!(after.len(), 1, "bad input changed the list: {after:?}");
    assert_eq!(after[0]["uri"], uri);

    // get: uri, owner, state; also without the scheme (one matching rule)
    assert!(wait_until(WAIT, || listed_state(&k, &uri) == Some(1)));
    let g = parse_structs(&k.rpc(&["keepalive.get", &uri, "owner1"]));
    assert_eq!(g.len(), 1);
    assert_eq!(g[0].keys().cloned().collect::<Vec<_>>(), vec!["owner", "state", "uri"]);
    assert_eq!((g[0]["uri"].as_str(), g[0]["owner"].as_str(), g[0]["state"].as_str()), (uri.as_str(), "owner1", "1"));
    assert_eq!(parse_structs(&k.rpc(&["keepalive.get", &hp, "owner1"])), g);

    // a second owner of the same URI is another destination; most recent first
    assert_eq!(k.rpc(&["keepalive.add", &hp, "owner2"]), "Ok. Destination added.");
    let owners: Vec<String> = list(&k).iter().map(|d| d["owner"].clone()).collect();
    assert_eq!(owners, vec!["owner2", "owner1"]);

    assert_eq!(k.rpc(&["keepalive.del", &uri, "owner1"]), "Ok. Destination removed.");
    let owners: Vec<String> = list(&k).iter().map(|d| d["owner"].clone()).collect();
    assert_eq!(owners, vec!["owner2"]);
    assert_eq!(k.rpc(&["keepalive.add", "sips:127.0.0.1:5061", "owner3"]), "Ok. Destination added.");
    assert_eq!(k.rpc(&["keepalive.flush"]), "Ok. Destination list flushed.");
    assert_eq!(k.rpc(&["keepalive.list"]), "");
    assert_eq!(k.rpc(&["keepalive.flush"]), "Ok. Destination list flushed.");

    // the script functions: 1 added, -2 there already, -1 bad URI / unknown
    let mut c = Client::new(&k);
    assert_eq!(c.add(&hp, "script"), 1);
    assert_eq!(c.add(&uri, "script"), -2);
    assert_eq!(c.add("sip:a@b:c:d:e", "script"), -1);
    assert_eq!(c.add("sip:gw example.org", "script"), -1);
    assert!(listed_state(&k, &uri).is_some());
    assert!(wait_until(WAIT, || c.is_alive(&hp) == 1));
    assert_eq!(c.del(&uri, "nobody"), -1);
    assert_eq!(c.del(&hp, "script"), 1);
    assert_eq!(c.del(&hp, "script"), -1);
    assert_eq!(c.is_alive(&hp), -1);
    assert_eq!(k.rpc(&["keepalive.list"]), "");

    let methods = k.rpc(&["system.listMethods"]);
    for m in ["keepalive.list", "keepalive.add", "keepalive.del", "keepalive.get", "keepalive.flush"] {
        assert!(methods.lines().any(|l| l == m), "{m} not registered");
    }
}

#[test]
fn delete_counter_removes_a_dead_destination_3028() {
    let gw = Gateway::new(0);
    let hp = gw.hostport();
    let uri = format!("sip:{hp}");
    // a second destination that always answers: its pings are the clock
    // that shows the keepalive timer ran on after the removal
    let clock = Gateway::new(200);
    let k = start(&[
        ("ping_interval", "1".into()),
        ("delete_counter", "2".into()),
        ("destination", q(&hp)),
        ("destination", q(&clock.hostport())),
    ]);
    let mut c = Client::new(&k);

    assert!(wait_until(WAIT, || c.is_alive(&hp) == 2), "{}", k.log_tail(40));
    // 3 failed pings in a row (> delete_counter 2): removed, not kept un-pinged
    assert!(wait_until(WAIT, || listed_state(&k, &uri).is_none()), "{}", k.log_tail(40));
    // the removal is logged just after the list edit: wait for the line
    assert!(wait_until(WAIT, || k.log().contains("removed after 3 failed pings in a row")), "{}", k.log_tail(40));
    assert_eq!(c.is_alive(&hp), -1);
    assert_eq!(count_in_log(&k, &format!("KA-EVENT down {uri}")), 1);
    // no more pings; a late answer brings nothing back
    let seen = gw.options_seen();
    gw.set_code(200);
    let ticks = clock.options_seen();
    assert!(wait_until(WAIT, || clock.options_seen() >= ticks + 3), "the clock destination is pinged on:\n{}", k.log_tail(40));
    assert!(gw.options_seen() <= seen + 1, "still pinged: {} -> {}", seen, gw.options_seen());
    assert_eq!(c.is_alive(&hp), -1);
    assert_eq!(count_in_log(&k, &format!("KA-EVENT up {uri}")), 0);
    // added again, it is monitored afresh
    assert_eq!(k.rpc(&["keepalive.add", &uri, "again"]), "Ok. Destination added.");
    assert!(wait_until(WAIT, || c.is_alive(&hp) == 1), "{}", k.log_tail(40));
}

#[test]
fn thresholds_alive_codes_and_latency_statistics() {
    let gw = Gateway::new(200);
    let gw404 = Gateway::new(404);
    let gw503 = Gateway::new(503);
    let (hp, hp404, hp503) = (gw.hostport(), gw404.hostport(), gw503.hostport());
    let uri = format!("sip:{hp}");
    let k = start(&[
        ("ping_interval", "1".into()),
        ("delete_counter", "0".into()),
        ("ka_down_threshold", "3".into()),
        ("ka_up_threshold", "2".into()),
        ("ka_alive_codes", q("200-299,404")),
        ("ka_list_stats", "1".into()),
        ("destination", q(&hp)),
        ("destination", q(&hp404)),
        ("destination", q(&hp503)),
    ]);
    let mut c = Client::new(&k);
    let get = |k: &Kamailio| {
        list(k).into_iter().find(|d| d.get("uri") == Some(&uri)).expect("listed")
    };

    // 2 answers before up; 404 counts as alive here, 503 not
    // (not checked yet is "up" for ka_is_alive(), as in C: ask the list)
    let uri404 = format!("sip:{hp404}");
    assert!(
        wait_until(WAIT, || listed_state(&k, &uri) == Some(1) && listed_state(&k, &uri404) == Some(1)),
        "{}",
        k.log_tail(40)
    );
    assert_eq!(c.is_alive(&hp404), 1);
    let d = get(&k);
    assert!(d["replies"].parse::<u32>().expect("replies") >= 2, "{d:?}");
    assert!(wait_until(WAIT, || c.is_alive(&hp503) == 2), "{}", k.log_tail(40));
    let lat = |d: &std::collections::BTreeMap<String, String>, f: &str| d[f].parse::<u32>().expect(f);
    assert!(lat(&d, "latency max ms") >= lat(&d, "latency avg ms"), "{d:?}");
    assert!(lat(&d, "latency max ms") < 1000, "{d:?}");
    assert_eq!(lat(&d, "timeouts"), 0);

    // silent: up until the 3rd failure in a row, never up with 3 or more
    gw.set_code(0);
    let mut seen_up_failing = false;
    let deadline = Instant::now() + WAIT;
    loop {
        let d = get(&k);
        let (state, fails) = (lat(&d, "state"), lat(&d, "failures in a row"));
        assert!(fails < 3 || state == 2, "{d:?}");
        if state == 1 && fails > 0 {
            seen_up_failing = true;
        }
        if state == 2 {
            assert!(lat(&d, "timeouts") >= 3, "{d:?}");
            break;
        }
        assert!(Instant::now() < deadline, "never down: {d:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(seen_up_failing, "one failed ping must not take it down");

    // back: down until the 2nd answer
    let replies_before = lat(&get(&k), "replies");
    gw.set_code(200);
    assert!(wait_until(WAIT, || listed_state(&k, &uri) == Some(1)), "{}", k.log_tail(40));
    assert!(lat(&get(&k), "replies") >= replies_before + 2);
    assert_eq!(count_in_log(&k, &format!("KA-EVENT down {uri}")), 1);
    assert_eq!(count_in_log(&k, &format!("KA-EVENT up {uri}")), 2);
}

#[test]
fn adding_and_deleting_while_pings_are_in_flight_2448() {
    // replies come late, so destinations are deleted, flushed and re-added
    // with their pings outstanding
    let gws: Vec<Gateway> = (0..4).map(|_| Gateway::new(200)).collect();
    for g in &gws {
        g.set_delay(150);
    }
    let silent = Gateway::new(0);
    let k = start(&[("ping_interval", "1".into()), ("delete_counter", "1".into())]);
    let mut c = Client::new(&k);
    let deadline = Instant::now() + Duration::from_secs(6);
    let mut i = 0usize;
    while Instant::now() < deadline {
        let g = &gws[i % gws.len()];
        let owner = format!("o{}", i % 3);
        match i % 7 {
            0 | 1 => {
                let _ = k.kamcmd(&["keepalive.add", &format!("sip:{}", g.hostport()), &owner]);
            }
            2 => {
                let _ = c.add(&g.hostport(), &owner);
            }
            3 => {
                let _ = k.kamcmd(&["keepalive.del", &format!("sip:{}", g.hostport()), &owner]);
            }
            4 => {
                let _ = c.del(&g.hostport(), &owner);
                let _ = k.kamcmd(&["keepalive.add", &format!("sip:{}", silent.hostport()), &owner]);
            }
            5 => {
                let _ = c.is_alive(&g.hostport());
                let _ = k.kamcmd(&["keepalive.list"]);
            }
            _ => {
                if i % 21 == 6 {
                    let _ = k.kamcmd(&["keepalive.flush"]);
                }
            }
        }
        i += 1;
        std::thread::sleep(Duration::from_millis(40));
    }
    // still serving, nothing crashed or panicked
    let mut k = k;
    assert!(k.is_running(), "{}", k.log_tail(60));
    assert!(k.kamcmd(&["core.psx"]).is_ok());
    let log = k.log();
    for bad in ["panic", "CRITICAL", "BUG", "segfault", "signal 11"] {
        assert!(!log.contains(bad), "{bad} in the log:\n{}", k.log_tail(60));
    }
    let _ = k.kamcmd(&["keepalive.flush"]);
    assert_eq!(k.rpc(&["keepalive.list"]), "");
    assert!(gws.iter().map(Gateway::options_seen).sum::<usize>() > 0);
}

#[test]
fn invalid_modparams_stop_kamailio_with_a_reason() {
    for (params, why) in [
        (vec![("ping_interval", "0".to_string())], "ping_interval"),
        (vec![("destination", q("sip:a@b:c:d:e"))], "destination"),
        (vec![("ka_alive_codes", q("2xx"))], "ka_alive_codes"),
        (vec![("ka_down_threshold", "0".to_string())], "ka_down_threshold"),
    ] {
        let r = Kamailio::try_start(ka_opts(Ka::Rust, &params));
        match r {
            Ok(k) => panic!("started with {params:?}:\n{}", k.log_tail(20)),
            Err(e) => assert!(e.contains(why), "{why} not named in:\n{e}"),
        }
    }
}

const LUA: &str = r#"
function ksr_request_route()
    local user = KSR.pv.get("$rU")
    local dst = KSR.hdr.get("X-Dst") or ""
    local owner = KSR.hdr.get("X-Owner") or ""
    if user == "isalive" then
        KSR.sl.sl_send_reply(200, "alive " .. KSR.keepalive.is_alive(dst))
    elseif user == "add" then
        KSR.sl.sl_send_reply(200, "add " .. KSR.keepalive.add_destination(dst, owner))
    elseif user == "del" then
        KSR.sl.sl_send_reply(200, "del " .. KSR.keepalive.del_destination(dst, owner))
    else
        KSR.sl.sl_send_reply(404, "Not here")
    end
    return 1
end
"#;

const LUA_CFG: &str = r#"#!KAMAILIO
debug={{DEBUG}}
log_stderror=yes
children={{CHILDREN}}
exit_timeout=4
disable_tcp=yes
auto_aliases=no
dns=no
rev_dns=no
listen=udp:127.0.0.1:{{PORT}}
mpath="{{MPATH}}"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "pv.so"
loadmodule "ctl.so"
loadmodule "app_lua.so"
loadmodule "{{SCA_LOADMODULE}}"
modparam("ctl", "binrpc", "{{CTL_SOCKET}}")
modparam("tm", "fr_timer", 1000)
modparam("app_lua", "load", "{{LUA}}")
modparam("sca_rs", "ping_interval", 1)
cfgengine "lua"
"#;

#[test]
fn kemi_keepalive_functions_from_lua() {
    let dir = common::kamailio::TestDir::new("sca_rs-ka-kemi").expect("temp dir");
    let lua = dir.path.join("ka.lua");
    std::fs::write(&lua, LUA).expect("write Lua script");
    let k = Kamailio::start(
        common::kamailio::KamailioOpts::new(LUA_CFG, common::kamailio::ScaModule::Rust)
            .with_db(false)
            .var("LUA", &lua.display().to_string()),
    );
    let gw = Gateway::new(200);
    let hp = gw.hostport();
    let uri = format!("sip:{hp}");
    let mut c = Client::new(&k);
    assert_eq!(c.is_alive(&hp), -1);
    assert_eq!(c.add(&hp, "lua"), 1);
    assert_eq!(c.add(&uri, "lua"), -2);
    assert_eq!(c.add("sip:a@b:c:d:e", "lua"), -1);
    assert!(wait_until(WAIT, || listed_state(&k, &uri) == Some(1)), "{}", k.log_tail(40));
    assert_eq!(c.is_alive(&uri), 1);
    gw.set_code(0);
    assert!(wait_until(WAIT, || c.is_alive(&hp) == 2), "{}", k.log_tail(40));
    assert_eq!(c.del(&hp, "nobody"), -1);
    assert_eq!(c.del(&hp, "lua"), 1);
    assert_eq!(c.is_alive(&hp), -1);
}
