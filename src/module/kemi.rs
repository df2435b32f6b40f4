//! KEMI exports (`KSR.sca.*` for Python, Lua, ... scripts), the same
//! functions and signatures as the C sca module.

use core::ffi::{c_char, c_int, c_void};

use crate::entry;
use crate::host::export::{kemi, kemi_register, HostCell, KemiExport};
use crate::host::export::{KEMIP_INT as INT, KEMIP_NONE as NONE, KEMIP_STR as STR, KEMI_END};
use crate::host::entry::{MsgArg, StrArg};
use crate::module::{call_info, config, members, shared, subscribe};

const fn item(fname: &'static core::ffi::CStr, func: *mut c_void, p: [c_int; 6]) -> KemiExport {
    kemi(c"sca", fname, func, p)
}

static KEMI: HostCell<[KemiExport; 7]> = HostCell::new([
    item(c"handle_subscribe", ki_handle_subscribe as *mut c_void, [NONE; 6]),
    item(c"call_info_update_default", ki_ciu_default as *mut c_void, [NONE; 6]),
    item(c"call_info_update_mask", ki_ciu_mask as *mut c_void, [INT, NONE, NONE, NONE, NONE, NONE]),
    item(c"call_info_update_turi", ki_ciu_turi as *mut c_void, [INT, STR, NONE, NONE, NONE, NONE]),
    item(c"call_info_update", ki_ciu as *mut c_void, [INT, STR, STR, NONE, NONE, NONE]),
    item(c"is_member", ki_is_member as *mut c_void, [STR, STR, NONE, NONE, NONE, NONE]),
    KEMI_END,
]);

entry! {
    /// Called by Kamailio when it loads the module, before the config's
    /// modparams: registers the KEMI functions.
    #[no_mangle]
    c pub fn mod_register(_path: *mut c_char, _dlflags: *mut c_int, _p1: *mut c_void, _p2: *mut c_void) -> c_int
    ["mod_register", -1] {
        crate::host::guard::install_panic_hook();
        if kemi_register(&KEMI).is_err() {
            crate::lm_err!("cannot register the KEMI functions");
            return -1;
        }
        // keepalive: KSR.keepalive.*
        if crate::keepalive::kemi::register().is_err() {
            crate::lm_err!("cannot register the keepalive KEMI functions");
            return -1;
        }
        0
    }
}

entry! {
    c fn ki_handle_subscribe(msg: MsgArg) -> c_int ["sca.handle_subscribe", -1] {
        let mut msg = msg;
        let Some(mut m) = msg.get() else { return -1 };
        let (Some(st), Some(cfg)) = (shared(), config()) else { return -1 };
        subscribe::handle_subscribe(st, cfg, &mut m, subscribe::now())
    }
}

fn ciu(msg: &mut MsgArg, mask: c_int, to: Option<&[u8]>, from: Option<&[u8]>) -> c_int {
    let Some(mut m) = msg.get() else { return -1 };
    let (Some(st), Some(cfg)) = (shared(), config()) else { return -1 };
    call_info::update(st, cfg, &mut m, mask, to, from, subscribe::now())
}

entry! {
    c fn ki_ciu_default(msg: MsgArg) -> c_int ["sca.call_info_update_default", -1] {
        ciu(&mut { msg }, 0, None, None)
    }
}

entry! {
    c fn ki_ciu_mask(msg: MsgArg, mask: c_int) -> c_int ["sca.call_info_update_mask", -1] {
        ciu(&mut { msg }, mask, None, None)
    }
}

entry! {
    c fn ki_ciu_turi(msg: MsgArg, mask: c_int, to: StrArg) -> c_int ["sca.call_info_update_turi", -1] {
        ciu(&mut { msg }, mask, to.get(), None)
    }
}

entry! {
    c fn ki_ciu(msg: MsgArg, mask: c_int, to: StrArg, from: StrArg) -> c_int ["sca.call_info_update", -1] {
        ciu(&mut { msg }, mask, to.get(), from.get())
    }
}

entry! {
    c fn ki_is_member(msg: MsgArg, identity: StrArg, aor: StrArg) -> c_int ["sca.is_member", -1] {
        let mut msg = msg;
        let Some(mut m) = msg.get() else { return -1 };
        members::ki_is_member(&mut m, identity.get().unwrap_or_default(), aor.get().unwrap_or_default())
    }
}
