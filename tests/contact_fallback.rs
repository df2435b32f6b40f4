//! `contact_fallback` (newer Kamailio): an INVITE without Contact from a
//! seized SCA line updates the line and NOTIFYs the group only when the
//! modparam names an owner to use instead.

mod common;

use std::time::Duration;

use common::cfg::{sca_modparam, sca_opts};
use common::flows::subscribe_call_info;
use common::kamailio::{Kamailio, ScaModule};
use common::sip::{Subscribe, Ua, RECV_TIMEOUT};

const AOR: &str = "sip:100@127.0.0.1";

/// A1 seizes line 1 and INVITEs B without a Contact header; returns whether
/// A2 (a call-info subscriber) was told about the INVITE.
fn group_notified(fallback: bool) -> bool {
    let m = ScaModule::Rust;
    let params = if fallback { sca_modparam(&m, "contact_fallback", "\"sip:fallback@127.0.0.1\"") } else { String::new() };
    let k = Kamailio::start(sca_opts(m).var("SCA_MODPARAMS", &params));
    let mut a1 = Ua::new("A1", "100", k.addr()).expect("UA");
    let mut a2 = Ua::new("A2", "100", k.addr()).expect("UA");
    let mut b = Ua::new("B", "200", k.addr()).expect("UA");
    a1.auto_answer_notify = true;
    a2.auto_answer_notify = true;
    subscribe_call_info(&mut a2, AOR);
    let mut ls = a1.dialog(AOR);
    let s = a1
        .send_subscribe(&mut ls, &Subscribe::new("line-seize", 15).call_info("<sip:127.0.0.1>;appearance-index=1"))
        .expect("line-seize");
    assert_eq!(a1.expect_final_response(&s, RECV_TIMEOUT).expect("200").status(), Some(200));
    a2.expect_request("NOTIFY", RECV_TIMEOUT).expect("A2 sees the seize");

    let mut call = a1.dialog("sip:200@127.0.0.1");
    call.remote_target = b.contact_uri();
    let inv = a1
        .request(&mut call, "INVITE")
        .header("Call-Info", "<sip:127.0.0.1>;appearance-index=1")
        .remove_header("Contact");
    a1.send(&inv).expect("send INVITE");
    b.expect_request("INVITE", RECV_TIMEOUT).expect("B gets the INVITE");
    match a2.expect_request("NOTIFY", Duration::from_millis(1500)) {
        Ok(n) => {
            assert!(n.header("Call-Info").is_some_and(|c| c.contains("appearance-index=1")), "{}", n.raw);
            true
        }
        Err(_) => false,
    }
}

#[test]
fn an_invite_without_contact_counts_only_with_contact_fallback() {
    assert!(!group_notified(false), "without contact_fallback the INVITE is not an SCA update (like C)");
    assert!(group_notified(true), "with contact_fallback the fallback owns the update");
}
