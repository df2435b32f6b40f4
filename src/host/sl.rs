//! Replies to requests through the `sl` module (transaction-aware: a reply
//! goes statefully when tm has a transaction for the request).

use crate::host::kstr;
use crate::host::msg::SipMsg;
use crate::host::sys;


/// Bind sl (in mod_init). Err when the sl module is not loaded.
pub fn bind() -> Result<(), ()> {
    // SAFETY: [I1] called once in mod_init, before fork.
    if unsafe { sys::sca_rs_sl_bind() } == 0 {
        Ok(())
    } else {
        Err(())
    }
}

/// Send `code reason` with `extra_headers` (each line ending in CRLF).
pub fn reply(msg: &mut SipMsg<'_>, code: u16, reason: &str, extra_headers: &[u8]) -> Result<(), ()> {
    if !extra_headers.is_empty() {
        // SAFETY: [I9] add_lump_rpl2 copies the bytes (flags without LUMP_RPL_NODUP)
        // into pkg memory attached to the message.
        let lump = unsafe {
            sys::add_lump_rpl2(
                msg.as_ptr(),
                extra_headers.as_ptr() as *mut _,
                extra_headers.len() as i32,
                sys::LUMP_RPL_HDR as i32,
            )
        };
        if lump.is_null() {
            crate::lm_err!("cannot add reply headers to {code} {reason}");
            return Err(());
        }
    }
    let r = kstr::from_bytes(reason.as_bytes());
    // SAFETY: [I9] msg is the current request; sl copies the reason.
    if unsafe { sys::sca_rs_sl_reply(msg.as_ptr(), code as i32, &r) } < 0 {
        crate::lm_err!("failed to send {code} {reason} reply");
        return Err(());
    }
    Ok(())
}

/// The To-tag that sl puts (or put) in a reply to this request.
pub fn reply_totag<'a>(msg: &mut SipMsg<'a>) -> Option<&'a [u8]> {
    let mut s = sys::str_ { s: core::ptr::null_mut(), len: 0 };
    // SAFETY: [I14] sl writes a str pointing to its static per-process tag buffer,
    // valid until the next request is processed by this process.
    if unsafe { sys::sca_rs_sl_get_totag(msg.as_ptr(), &mut s) } < 0 {
        return None;
    }
    // SAFETY: [I14] see above; the caller reads it while handling `msg` only
    // ('a, the message's lifetime) and copies what it keeps.
    let t = unsafe { kstr::as_bytes(&s) };
    (!t.is_empty()).then_some(t)
}

/// Have sl call back (`sca_rs_on_sl_reply`) before it sends a reply.
pub fn register_reply_callback() -> Result<(), ()> {
    // SAFETY: [I1] called once in mod_init, after bind().
    if unsafe { sys::sca_rs_sl_register_reply_cb() } < 0 {
        Err(())
    } else {
        Ok(())
    }
}
