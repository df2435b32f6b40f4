//! KEMI: a Lua routing script (app_lua) drives sca_rs through
//! `KSR.sca.*` exactly as a native kamailio.cfg does: the same 202, the
//! same NOTIFY, and a call's appearance updates through
//! `KSR.sca.call_info_update_default()`.

mod common;

use std::time::Duration;

use common::kamailio::{Kamailio, KamailioOpts, ScaModule};
use common::sip::{Response, Subscribe, Ua, RECV_TIMEOUT};

const AOR: &str = "sip:100@127.0.0.1";

const LUA: &str = r#"
function ksr_request_route()
    if KSR.is_SUBSCRIBE() then
        local ev = KSR.hdr.get("Event")
        if ev == "call-info" or ev == "line-seize" then
            KSR.sca.handle_subscribe()
            return 1
        end
        KSR.sl.sl_send_reply(489, "Bad Event")
        return 1
    end
    if KSR.is_method_in("IBC") then
        -- the mask variant: 0 = both sides
        KSR.sca.call_info_update_mask(0)
        KSR.tm.t_on_reply("ksr_onreply")
        KSR.tm.t_relay()
        return 1
    end
    if KSR.is_ACK() then
        KSR.tm.t_relay()
        return 1
    end
    KSR.sl.sl_send_reply(404, "Not Found")
end

function ksr_onreply()
    KSR.sca.call_info_update_default()
end
"#;

const CFG: &str = r#"#!KAMAILIO
debug={{DEBUG}}
log_stderror=yes
children={{CHILDREN}}
exit_timeout=4
disable_tcp=yes
auto_aliases=no
listen=udp:127.0.0.1:{{PORT}}
alias=udp:127.0.0.1:5060
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
cfgengine "lua"
"#;

#[test]
fn lua_kemi_subscribe_and_call_update() {
    let dir = common::kamailio::TestDir::new("sca_rs-kemi").expect("temp dir");
    let lua = dir.path.join("sca.lua");
    std::fs::write(&lua, LUA).expect("write Lua script");
    let k = Kamailio::start(
        KamailioOpts::new(CFG, ScaModule::Rust).var("LUA", &lua.display().to_string()),
    );
    let mut a1 = Ua::new("A1", "100", k.addr()).expect("UA");
    a1.auto_answer_notify = true;
    let mut d = a1.dialog(AOR);
    let s = a1.send_subscribe(&mut d, &Subscribe::new("call-info", 600)).expect("SUBSCRIBE");
    let r = a1.expect_final_response(&s, RECV_TIMEOUT).expect("reply");
    assert_eq!(r.start_line, "SIP/2.0 202 Accepted", "{}", r.raw);
    assert_eq!(r.header("Allow-Events"), Some("call-info, line-seize"));
    let n = a1.expect_request("NOTIFY", RECV_TIMEOUT).expect("NOTIFY");
    assert_eq!(n.header("Call-Info"), Some("<sip:127.0.0.1>;appearance-index=*;appearance-state=idle"));
    assert_eq!(k.rpc(&["sca.subscription_count", "call-info"]), "1 call-info");

    // a line-seize through KEMI lights the line for the call-info subscriber
    let mut a2 = Ua::new("A2", "100", k.addr()).expect("UA");
    a2.auto_answer_notify = true;
    let mut d2 = a2.dialog(AOR);
    let s = a2
        .send_subscribe(&mut d2, &Subscribe::new("line-seize", 15).call_info("<sip:127.0.0.1>;appearance-index=1"))
        .expect("line-seize");
    let r = a2.expect_final_response(&s, RECV_TIMEOUT).expect("reply");
    assert_eq!(r.status(), Some(200), "{}", r.raw);
    let n = a1.expect_request("NOTIFY", RECV_TIMEOUT).expect("group NOTIFY");
    assert_eq!(
        n.header("Call-Info"),
        Some("<sip:127.0.0.1>;appearance-index=1;appearance-state=seized,<sip:127.0.0.1>;appearance-index=*;appearance-state=idle")
    );
    a2.expect_request("NOTIFY", RECV_TIMEOUT).expect("line-seize NOTIFY");

    // A2 calls B on that line: the INVITE goes through
    // KSR.sca.call_info_update_mask(0), B's 180 through
    // KSR.sca.call_info_update_default(): the group sees it progressing
    let mut b = Ua::new("B", "200", k.addr()).expect("UA");
    let mut call = a2.dialog("sip:200@127.0.0.1");
    call.remote_target = b.contact_uri();
    let inv = a2
        .request(&mut call, "INVITE")
        .header("Call-Info", "<sip:127.0.0.1>;appearance-index=1");
    let inv = a2.send(&inv).expect("send INVITE");
    let at_b = b.expect_request("INVITE", RECV_TIMEOUT).expect("B gets the INVITE");
    assert_eq!(at_b.header("Call-Info"), None, "Call-Info is removed before relaying");
    let n = a1.expect_request("NOTIFY", RECV_TIMEOUT).expect("NOTIFY for the INVITE");
    assert!(n.header("Call-Info").is_some_and(|c| c.contains("appearance-index=1;appearance-state=seized")), "{}", n.raw);
    let ringing = Response::for_request(&at_b, 180, "Ringing")
        .with_to_tag("b-tag-1")
        .header("Contact", &format!("<{}>", b.contact_uri()));
    b.send_response(&at_b, &ringing).expect("180");
    let r = a2.expect_response(&inv, RECV_TIMEOUT).expect("A2 gets a reply");
    let r = if r.status() == Some(100) { a2.expect_response(&inv, RECV_TIMEOUT).expect("180") } else { r };
    assert_eq!(r.status(), Some(180), "{}", r.raw);
    let n = a1.expect_request("NOTIFY", RECV_TIMEOUT).expect("NOTIFY for the 180");
    assert!(n.header("Call-Info").is_some_and(|c| c.contains("appearance-index=1;appearance-state=progressing")), "{}", n.raw);
    let _ = a1.expect_silence(Duration::from_millis(200));
    assert!(!k.log().contains(" ERROR:"), "{}", k.log_tail(30));
}
