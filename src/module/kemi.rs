//! KEMI exports (`KSR.sca.*` for Python, Lua, ... scripts), the same
//! functions and signatures as the C sca module.

use core::ffi::{c_char, c_int, c_void};

use crate::host::export::HostCell;
use crate::host::guard::guard;
use crate::host::kstr;
use crate::module::{call_info, config, shared, subscribe};
use crate::sys;

use crate::host::export::{kemi, KEMIP_INT as INT, KEMIP_NONE as NONE, KEMIP_STR as STR, KEMI_END};

const fn item(fname: &'static core::ffi::CStr, func: *mut c_void, p: [c_int; 6]) -> sys::sr_kemi_t {
    kemi(c"sca", fname, func, p)
}

static KEMI: HostCell<[sys::sr_kemi_t; 6]> = HostCell::new([
    item(c"handle_subscribe", ki_handle_subscribe as *mut c_void, [NONE; 6]),
    item(c"call_info_update_default", ki_ciu_default as *mut c_void, [NONE; 6]),
    item(c"call_info_update_mask", ki_ciu_mask as *mut c_void, [INT, NONE, NONE, NONE, NONE, NONE]),
    item(c"call_info_update_turi", ki_ciu_turi as *mut c_void, [INT, STR, NONE, NONE, NONE, NONE]),
    item(c"call_info_update", ki_ciu as *mut c_void, [INT, STR, STR, NONE, NONE, NONE]),
    KEMI_END,
]);

/// Called by Kamailio when it loads the module, before the config's
/// modparams: registers the KEMI functions.
///
/// # Safety
/// Called once by Kamailio's module loader.
#[no_mangle]
pub unsafe extern "C" fn mod_register(
    _path: *mut c_char,
    _dlflags: *mut c_int,
    _p1: *mut c_void,
    _p2: *mut c_void,
) -> c_int {
    crate::host::guard::install_panic_hook();
    guard("mod_register", || {
        // SAFETY: the table is a static that lives for the process; the
        // core keeps a pointer to it.
        if unsafe { sys::sr_kemi_modules_add(KEMI.get() as *mut sys::sr_kemi_t) } < 0 {
            crate::lm_err!("cannot register the KEMI functions");
            return -1;
        }
        // keepalive: KSR.keepalive.*
        if crate::keepalive::kemi::register().is_err() {
            crate::lm_err!("cannot register the keepalive KEMI functions");
            return -1;
        }
        0
    })
}

unsafe extern "C" fn ki_handle_subscribe(msg: *mut sys::sip_msg) -> c_int {
    guard("sca.handle_subscribe", || {
        // SAFETY: KEMI passes the message being routed.
        let Some(mut m) = (unsafe { crate::host::msg::SipMsg::from_raw(msg) }) else { return -1 };
        let (Some(st), Some(cfg)) = (shared(), config()) else { return -1 };
        subscribe::handle_subscribe(st, cfg, &mut m, subscribe::now())
    })
}

fn ciu(msg: *mut sys::sip_msg, mask: c_int, to: Option<&sys::str_>, from: Option<&sys::str_>) -> c_int {
    // SAFETY: KEMI passes the message being routed and str arguments that
    // live for the call.
    let Some(mut m) = (unsafe { crate::host::msg::SipMsg::from_raw(msg) }) else { return -1 };
    let (Some(st), Some(cfg)) = (shared(), config()) else { return -1 };
    // SAFETY: as above.
    let (to, from) = unsafe { (to.map(|t| kstr::as_bytes(t)), from.map(|f| kstr::as_bytes(f))) };
    call_info::update(st, cfg, &mut m, mask, to, from, subscribe::now())
}

unsafe extern "C" fn ki_ciu_default(msg: *mut sys::sip_msg) -> c_int {
    guard("sca.call_info_update_default", || ciu(msg, 0, None, None))
}

unsafe extern "C" fn ki_ciu_mask(msg: *mut sys::sip_msg, mask: c_int) -> c_int {
    guard("sca.call_info_update_mask", || ciu(msg, mask, None, None))
}

unsafe extern "C" fn ki_ciu_turi(msg: *mut sys::sip_msg, mask: c_int, to: *mut sys::str_) -> c_int {
    // SAFETY: NULL or a str valid for the call.
    guard("sca.call_info_update_turi", || ciu(msg, mask, unsafe { to.as_ref() }, None))
}

unsafe extern "C" fn ki_ciu(msg: *mut sys::sip_msg, mask: c_int, to: *mut sys::str_, from: *mut sys::str_) -> c_int {
    // SAFETY: NULL or strs valid for the call.
    guard("sca.call_info_update", || ciu(msg, mask, unsafe { to.as_ref() }, unsafe { from.as_ref() }))
}
