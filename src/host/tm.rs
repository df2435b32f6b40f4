//! In-dialog requests (NOTIFY) through the `tm` module.

use crate::host::kstr::from_bytes;
use crate::host::sys;

/// Bind tm (in mod_init). Err when the tm module is not loaded first.
pub fn bind() -> Result<(), ()> {
    // SAFETY: [I1] called once in mod_init, before fork.
    if unsafe { sys::sca_rs_tm_bind() } == 0 {
        Ok(())
    } else {
        Err(())
    }
}

/// The dialog an in-dialog request is sent in (borrowed strings).
pub struct Dialog<'a> {
    pub call_id: &'a [u8],
    pub local_tag: &'a [u8],
    pub remote_tag: &'a [u8],
    /// CSeq before this request; tm sends `local_cseq + 1`.
    pub local_cseq: u32,
    pub remote_target: &'a [u8],
    pub local_uri: &'a [u8],
    pub remote_uri: &'a [u8],
    pub route_set: &'a [u8],
}

/// Send `method` in `d` with extra `headers` (CRLF-terminated lines).
pub fn request_within(method: &str, headers: &[u8], body: &[u8], d: &Dialog<'_>) -> Result<(), ()> {
    let m = from_bytes(method.as_bytes());
    let h = from_bytes(headers);
    let b = from_bytes(body);
    let dlg = sys::sca_rs_dialog {
        call_id: from_bytes(d.call_id),
        local_tag: from_bytes(d.local_tag),
        remote_tag: from_bytes(d.remote_tag),
        local_cseq: d.local_cseq,
        remote_target: from_bytes(d.remote_target),
        local_uri: from_bytes(d.local_uri),
        remote_uri: from_bytes(d.remote_uri),
        route_set: from_bytes(d.route_set),
    };
    // SAFETY: [I9] every str borrows memory that outlives the call; tm copies
    // what it keeps into the transaction.
    let rc = unsafe {
        sys::sca_rs_tm_request_within(&m, &h, if body.is_empty() { core::ptr::null() } else { &b }, &dlg, core::ptr::null_mut())
    };
    if rc < 0 {
        Err(())
    } else {
        Ok(())
    }
}

static ON_FINAL_REPLY: std::sync::OnceLock<fn(i32)> = std::sync::OnceLock::new();

/// Have `f` called with the final status of every request sent by
/// [`request_within`] (mod_init; the statistics).
pub fn on_final_reply(f: fn(i32)) {
    let _ = ON_FINAL_REPLY.set(f);
}

crate::entry! {
    /// Called by the shim's tm callback with the final status of a request
    /// sent by [`request_within`]; `_param` is not dereferenced.
    #[no_mangle]
    c pub fn sca_rs_tm_reply(_param: *mut core::ffi::c_void, status: i32) ["tm reply callback"] {
        if let Some(f) = ON_FINAL_REPLY.get() {
            f(status);
        }
        if !(200..300).contains(&status) {
            crate::lm_dbg!("in-dialog request got final status {status}");
        }
    }
}

/// On an INVITE being relayed: have tm call back on its end-to-end ACK
/// and, when `caller_shared`, on locally generated error replies.
pub fn register_invite_callbacks(msg: &mut crate::host::msg::SipMsg<'_>, caller_shared: bool) -> Result<(), ()> {
    // SAFETY: [I2] msg is the INVITE being processed; tm creates or finds its
    // transaction and keeps the callbacks with it.
    if unsafe { sys::sca_rs_tm_register_invite_cbs(msg.as_ptr(), caller_shared as i32) } < 0 {
        Err(())
    } else {
        Ok(())
    }
}
