//! Script functions: `ka_is_alive(dst)` (alias `is_alive(dst)`),
//! `ka_add_destination(uri, owner)`, `ka_del_destination(uri, owner)`, and
//! the `bind_keepalive` export other modules find with `find_export()`.

use core::ffi::c_int;

use sca_core::keepalive::State;

use crate::entry;
use crate::host::entry::Param;
use crate::host::export::{cmd_fixup, CmdExport, ANY_ROUTE as ANY};
use crate::host::msg::SipMsg;

pub fn is_alive_code(s: Option<State>) -> c_int {
    match s {
        None => -1,
        Some(State::Unknown) | Some(State::Up) => 1,
        Some(State::Down) => 2,
    }
}

fn svalue(msg: &mut SipMsg<'_>, p: Option<Param>) -> Option<Vec<u8>> {
    p?.str(msg)
}

entry! {
    script fn w_is_alive("ka_is_alive", msg, dst) {
        let Some(d) = svalue(msg, dst) else {
            crate::lm_err!("failed to get dest parameter");
            return -1;
        };
        is_alive_code(super::destination_state(&d))
    }
}

fn uri_owner(msg: &mut SipMsg<'_>, uri: Option<Param>, owner: Option<Param>) -> Option<(Vec<u8>, Vec<u8>)> {
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

entry! {
    script fn w_add_destination("ka_add_destination", msg, uri, owner) {
        let Some((u, o)) = uri_owner(msg, uri, owner) else {
            return -1;
        };
        super::add_code(&super::add_destination(&u, &o, 0, None, None))
    }
}

entry! {
    script fn w_del_destination("ka_del_destination", msg, uri, owner) {
        let Some((u, o)) = uri_owner(msg, uri, owner) else {
            return -1;
        };
        if super::del_destination(&u, &o) {
            1
        } else {
            -1
        }
    }
}

entry! {
    /// A string-or-variable parameter, as the C module's fixups.
    fixup fn fixup_spve, fixup_free_spve("keepalive fixup") { _ => Fixup::StrAll }
}

pub const CMDS: [CmdExport; 5] = [
    cmd_fixup(c"ka_is_alive", w_is_alive, 1, fixup_spve, fixup_free_spve, ANY),
    cmd_fixup(c"is_alive", w_is_alive, 1, fixup_spve, fixup_free_spve, ANY),
    cmd_fixup(c"ka_add_destination", w_add_destination, 2, fixup_spve, fixup_free_spve, ANY),
    cmd_fixup(c"ka_del_destination", w_del_destination, 2, fixup_spve, fixup_free_spve, ANY),
    crate::host::ka::bind_export(c"bind_keepalive", super::api::bind_keepalive),
];
