//! Small SIP flows several tests share.

use super::sip::{Dialog, Subscribe, Ua, RECV_TIMEOUT};

/// A call-info subscription of `ua` to `aor` (600 s): asserts the 202 and
/// takes the first NOTIFY; returns the established dialog.
pub fn subscribe_call_info(ua: &mut Ua, aor: &str) -> Dialog {
    let mut d = ua.dialog(aor);
    let s = ua.send_subscribe(&mut d, &Subscribe::new("call-info", 600)).expect("send SUBSCRIBE");
    let r = ua.expect_final_response(&s, RECV_TIMEOUT).expect("reply to SUBSCRIBE");
    assert_eq!(r.status(), Some(202), "{}: {}", ua.name, r.raw);
    assert!(d.update_from_response(&r), "the 202 establishes the dialog");
    ua.expect_request("NOTIFY", RECV_TIMEOUT).expect("NOTIFY after SUBSCRIBE");
    d
}

/// Known, documented deviations of sca_rs from the C module
/// (docs/compat.md), masked on both sides of a transcript comparison:
/// the C module omits `;expires=` on the NOTIFY that answers a SUBSCRIBE
/// (it computes the remaining time from a relative value); we send it.
pub fn mask_known_deviations(t: &str) -> String {
    t.lines()
        .map(|l| match l.find("Subscription-State: active;expires=") {
            Some(i) => format!("{}Subscription-State: active", &l[..i]),
            None => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}
