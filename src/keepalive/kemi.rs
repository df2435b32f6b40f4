//! KEMI exports as the C module's: `KSR.keepalive.is_alive(dst)`,
//! `KSR.keepalive.add_destination(uri, owner)`,
//! `KSR.keepalive.del_destination(uri, owner)`.

use core::ffi::{c_int, c_void};

use crate::entry;
use crate::host::export::{kemi, kemi_register, HostCell, KemiExport};
use crate::host::export::{KEMIP_NONE as NONE, KEMIP_STR as STR, KEMI_END};
use crate::host::entry::{MsgArg, StrArg};

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
    c fn ki_is_alive(_msg: MsgArg, dst: StrArg) -> c_int ["keepalive.is_alive", -1] {
        let Some(d) = dst.get() else { return -1 };
        super::cmds::is_alive_code(super::destination_state(d))
    }
}

entry! {
    c fn ki_add_destination(_msg: MsgArg, uri: StrArg, owner: StrArg) -> c_int ["keepalive.add_destination", -1] {
        let (Some(u), Some(o)) = (uri.get(), owner.get()) else { return -1 };
        super::add_code(&super::add_destination(u, o, 0, None, None))
    }
}

entry! {
    c fn ki_del_destination(_msg: MsgArg, uri: StrArg, owner: StrArg) -> c_int ["keepalive.del_destination", -1] {
        let (Some(u), Some(o)) = (uri.get(), owner.get()) else { return -1 };
        if super::del_destination(u, o) {
            1
        } else {
            -1
        }
    }
}
