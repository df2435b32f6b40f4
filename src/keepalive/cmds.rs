//! Script functions: `ka_is_alive(dst)` (alias `is_alive(dst)`),
//! `ka_add_destination(uri, owner)`, `ka_del_destination(uri, owner)`, and
//! the `bind_keepalive` export other modules find with `find_export()`.

use core::ffi::{c_char, c_int, c_void};

use sca_core::keepalive::State;

use crate::host::export::{cmd_fixup, CmdFn};
use crate::host::guard::guard;
use crate::host::kstr;
use crate::sys;

/// What `ka_is_alive()` returns, as the C module: 1 up (or not checked
/// yet: 0 would stop the script), 2 down, -1 no such destination.
pub fn is_alive_code(s: Option<State>) -> c_int {
    match s {
        None => -1,
        Some(State::Unknown) | Some(State::Up) => 1,
        Some(State::Down) => 2,
    }
}

/// The string value of a fixed-up parameter (`fixup_spve_*`).
fn svalue(msg: *mut sys::sip_msg, p: *mut c_char) -> Option<Vec<u8>> {
    let mut s = sys::str_ { s: core::ptr::null_mut(), len: 0 };
    // SAFETY: `p` is what the spve fixup made of this parameter; msg is
    // the message being routed.
    if unsafe { sys::sca_rs_fixup_get_svalue(msg, p as *mut c_void, &mut s) } != 0 {
        return None;
    }
    // SAFETY: the value lives for the script call; copied here.
    Some(unsafe { kstr::as_bytes(&s) }.to_vec())
}

unsafe extern "C" fn w_is_alive(msg: *mut sys::sip_msg, dst: *mut c_char, _p2: *mut c_char) -> c_int {
    guard("ka_is_alive", || {
        let Some(d) = svalue(msg, dst) else {
            crate::lm_err!("failed to get dest parameter");
            return -1;
        };
        is_alive_code(super::destination_state(&d))
    })
}

/// The `uri` and `owner` parameters of ka_add/del_destination, logging the
/// one that cannot be read.
fn uri_owner(msg: *mut sys::sip_msg, uri: *mut c_char, owner: *mut c_char) -> Option<(Vec<u8>, Vec<u8>)> {
    let Some(u) = svalue(msg, uri) else {
        crate::lm_err!("unable to get uri string");
        return None;
    };
    let Some(o) = svalue(msg, owner) else {
        crate::lm_err!("unable to get owner regex");
        return None;
    };
    Some((u, o))
}

unsafe extern "C" fn w_add_destination(msg: *mut sys::sip_msg, uri: *mut c_char, owner: *mut c_char) -> c_int {
    guard("ka_add_destination", || {
        let Some((u, o)) = uri_owner(msg, uri, owner) else {
            return -1;
        };
        super::add_code(&super::add_destination(&u, &o, 0, None, None))
    })
}

unsafe extern "C" fn w_del_destination(msg: *mut sys::sip_msg, uri: *mut c_char, owner: *mut c_char) -> c_int {
    guard("ka_del_destination", || {
        let Some((u, o)) = uri_owner(msg, uri, owner) else {
            return -1;
        };
        if super::del_destination(&u, &o) {
            1
        } else {
            -1
        }
    })
}

/// # Safety
/// Called by Kamailio with the parameter slot `param_no` (1 or 2).
unsafe extern "C" fn fixup_spve(param: *mut *mut c_void, param_no: c_int) -> c_int {
    // SAFETY: a string-or-variable parameter, as the C module's fixups.
    guard("keepalive fixup", || unsafe { sys::fixup_spve_all(param, param_no) })
}

/// # Safety
/// Called by Kamailio with a slot `fixup_spve` fixed up.
unsafe extern "C" fn fixup_free_spve(param: *mut *mut c_void, param_no: c_int) -> c_int {
    // SAFETY: frees what fixup_spve made.
    guard("keepalive fixup", || unsafe { sys::fixup_free_spve_all(param, param_no) })
}

const ANY: u32 = sys::ANY_ROUTE;

/// `bind_keepalive` as a command export: Kamailio's `find_export()` looks
/// it up (0 parameters, no route flags, so no script can call it) and the
/// caller casts it back to `bind_keepalive_f`.
const fn bind_keepalive_as_cmd() -> CmdFn {
    type BindFn = unsafe extern "C" fn(*mut sys::keepalive_api_t) -> c_int;
    let f: BindFn = super::api::bind_keepalive;
    // SAFETY: never called through this type: Kamailio hands the pointer
    // to find_export() callers, who call it as bind_keepalive_f (what it
    // is); C modules register it the same way (a cast to cmd_function).
    unsafe { core::mem::transmute::<BindFn, CmdFn>(f) }
}

/// Entries for the module's command table (src/module/mod.rs).
pub const CMDS: [sys::cmd_export_t; 5] = [
    cmd_fixup(c"ka_is_alive", w_is_alive, 1, fixup_spve, fixup_free_spve, ANY),
    cmd_fixup(c"is_alive", w_is_alive, 1, fixup_spve, fixup_free_spve, ANY),
    cmd_fixup(c"ka_add_destination", w_add_destination, 2, fixup_spve, fixup_free_spve, ANY),
    cmd_fixup(c"ka_del_destination", w_del_destination, 2, fixup_spve, fixup_free_spve, ANY),
    sys::cmd_export_t {
        name: c"bind_keepalive".as_ptr() as *mut c_char,
        function: Some(bind_keepalive_as_cmd()),
        param_no: 0,
        fixup: None,
        free_fixup: None,
        flags: 0,
    },
];
