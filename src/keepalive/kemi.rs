//! KEMI exports as the C module's: `KSR.keepalive.is_alive(dst)`,
//! `KSR.keepalive.add_destination(uri, owner)`,
//! `KSR.keepalive.del_destination(uri, owner)`.

use core::ffi::{c_int, c_void};

use crate::entry;
use crate::host::export::{kemi, kemi_register, HostCell, KemiExport};
use crate::host::export::{KEMIP_NONE as NONE, KEMIP_STR as STR, KEMI_END};
use crate::host::kstr;
use crate::host::raw;

const fn item(fname: &'static core::ffi::CStr, func: *mut c_void, p: [c_int; 6]) -> KemiExport {
    kemi(c"keepalive", fname, func, p)
}

static KEMI: HostCell<[KemiExport; 4]> = HostCell::new([
    item(c"is_alive", ki_is_alive as *mut c_void, [STR, NONE, NONE, NONE, NONE, NONE]),
    item(c"add_destination", ki_add_destination as *mut c_void, [STR, STR, NONE, NONE, NONE, NONE]),
    item(c"del_destination", ki_del_destination as *mut c_void, [STR, STR, NONE, NONE, NONE, NONE]),
    KEMI_END,
]);

/// Register the `keepalive` KEMI module (from mod_register; the core
/// accepts one table per module name, several per .so).
pub fn register() -> Result<(), ()> {
    kemi_register(&KEMI)
}

entry! {
    c fn ki_is_alive(_msg: *mut raw::sip_msg, dst: *mut raw::str_) -> c_int ["keepalive.is_alive", -1] {
        // SAFETY: [I2] KEMI passes a str valid for the call.
        let Some(d) = (unsafe { kstr::opt_bytes(dst) }) else { return -1 };
        super::cmds::is_alive_code(super::destination_state(d))
    }
}

entry! {
    c fn ki_add_destination(_msg: *mut raw::sip_msg, uri: *mut raw::str_, owner: *mut raw::str_) -> c_int
    ["keepalive.add_destination", -1] {
        // SAFETY: [I2] KEMI passes strs valid for the call.
        let (Some(u), Some(o)) = (unsafe { kstr::opt_bytes(uri) }, unsafe { kstr::opt_bytes(owner) }) else { return -1 };
        super::add_code(&super::add_destination(u, o, 0, None, None))
    }
}

entry! {
    c fn ki_del_destination(_msg: *mut raw::sip_msg, uri: *mut raw::str_, owner: *mut raw::str_) -> c_int
    ["keepalive.del_destination", -1] {
        // SAFETY: [I2] KEMI passes strs valid for the call.
        let (Some(u), Some(o)) = (unsafe { kstr::opt_bytes(uri) }, unsafe { kstr::opt_bytes(owner) }) else { return -1 };
        if super::del_destination(u, o) {
            1
        } else {
            -1
        }
    }
}
