//! KEMI exports as the C module's: `KSR.keepalive.is_alive(dst)`,
//! `KSR.keepalive.add_destination(uri, owner)`,
//! `KSR.keepalive.del_destination(uri, owner)`.

use core::ffi::{c_int, c_void};

use crate::host::export::HostCell;
use crate::host::guard::guard;
use crate::host::kstr;
use crate::sys;

use crate::host::export::{kemi, KEMIP_NONE as NONE, KEMIP_STR as STR, KEMI_END};

const fn item(fname: &'static core::ffi::CStr, func: *mut c_void, p: [c_int; 6]) -> sys::sr_kemi_t {
    kemi(c"keepalive", fname, func, p)
}

static KEMI: HostCell<[sys::sr_kemi_t; 4]> = HostCell::new([
    item(c"is_alive", ki_is_alive as *mut c_void, [STR, NONE, NONE, NONE, NONE, NONE]),
    item(c"add_destination", ki_add_destination as *mut c_void, [STR, STR, NONE, NONE, NONE, NONE]),
    item(c"del_destination", ki_del_destination as *mut c_void, [STR, STR, NONE, NONE, NONE, NONE]),
    KEMI_END,
]);

/// Register the `keepalive` KEMI module (from mod_register; the core
/// accepts one table per module name, several per .so).
pub fn register() -> Result<(), ()> {
    // SAFETY: the table is a static that lives for the process; the core
    // keeps a pointer to it.
    if unsafe { sys::sr_kemi_modules_add(KEMI.get() as *mut sys::sr_kemi_t) } < 0 {
        Err(())
    } else {
        Ok(())
    }
}

/// # Safety
/// `s` is NULL or a str valid for the call.
unsafe fn arg<'a>(s: *mut sys::str_) -> Option<&'a [u8]> {
    // SAFETY: per the contract.
    unsafe { s.as_ref().map(|s| kstr::as_bytes(s)) }
}

unsafe extern "C" fn ki_is_alive(_msg: *mut sys::sip_msg, dst: *mut sys::str_) -> c_int {
    guard("keepalive.is_alive", || {
        // SAFETY: KEMI passes a str valid for the call.
        let Some(d) = (unsafe { arg(dst) }) else { return -1 };
        super::cmds::is_alive_code(super::destination_state(d))
    })
}

unsafe extern "C" fn ki_add_destination(_msg: *mut sys::sip_msg, uri: *mut sys::str_, owner: *mut sys::str_) -> c_int {
    guard("keepalive.add_destination", || {
        // SAFETY: KEMI passes strs valid for the call.
        let (Some(u), Some(o)) = (unsafe { arg(uri) }, unsafe { arg(owner) }) else { return -1 };
        super::add_code(&super::add_destination(u, o, 0, None, None))
    })
}

unsafe extern "C" fn ki_del_destination(_msg: *mut sys::sip_msg, uri: *mut sys::str_, owner: *mut sys::str_) -> c_int {
    guard("keepalive.del_destination", || {
        // SAFETY: KEMI passes strs valid for the call.
        let (Some(u), Some(o)) = (unsafe { arg(uri) }, unsafe { arg(owner) }) else { return -1 };
        if super::del_destination(u, o) {
            1
        } else {
            -1
        }
    })
}
