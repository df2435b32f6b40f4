//! The keepalive API of Kamailio 5.6's `modules/keepalive/api.h`, for C
//! modules that bind it (`keepalive_load_api()` → `find_export
//! ("bind_keepalive", 0, 0)`), drouting among them. The struct layout comes
//! from bindgen over the real header; the functions are Rust.
//!
//! Semantics are the C module's, with these differences (docs/keepalive.md):
//! URIs match by one rule everywhere; adding an existing (uri, owner) with
//! callbacks replaces the old callbacks and user_attr (the C module kept
//! pointers into drouting data that a reload had freed) and tells the new
//! callback the current state; `find_destination` (left unset by the C
//! module's `bind_keepalive`) fills a per-process copy.

use core::cell::RefCell;
use core::ffi::{c_int, c_void};
use core::ptr::null_mut;

use sca_core::keepalive::{Added, DestInfo, State};

use crate::entry;
use crate::host::ka;
use crate::host::kstr;
use crate::host::entry::{Out, StrArg};
use crate::host::raw;

use super::Hooks;

entry! {
    /// Fill `api` with the keepalive functions. 0 on success, -1 for a NULL
    /// pointer (as C).
    ///
    /// `api` is NULL or points to a writable `keepalive_api_t`.
    #[no_mangle]
    c pub fn bind_keepalive(api: Out<raw::keepalive_api_t>) -> c_int ["bind_keepalive", -1] {
        let mut api = api;
        let Some(api) = api.get_mut() else {
            crate::lm_err!("Invalid parameter value");
            return -1;
        };
        ka::fill_api(
            api,
            ka::ApiFns {
                add_destination: api_add_destination,
                destination_state: api_destination_state,
                del_destination: api_del_destination,
                find_destination: api_find_destination,
                lock_destination_list: api_lock_destination_list,
                unlock_destination_list: api_unlock_destination_list,
            },
        );
        0
    }
}

entry! {
    /// `add_destination(uri, owner, flags, ping_interval, statechanged_clb,
    /// response_clb, user_attr)`: 1 added, -2 there already, -1 error.
    /// `ping_interval` in seconds, 0 for the module's `ping_interval`.
    c fn api_add_destination(
        uri: StrArg,
        owner: StrArg,
        flags: c_int,
        ping_interval: c_int,
        statechanged_clb: raw::ka_statechanged_f,
        response_clb: raw::ka_response_f,
        user_attr: *mut c_void,
    ) -> c_int ["keepalive API add_destination", -1] {
        let (Some(u), Some(o)) = (uri.get(), owner.get()) else {
            return -1;
        };
        let hooks = Hooks { statechanged: statechanged_clb, response: response_clb, user_attr };
        let interval = u32::try_from(ping_interval).ok();
        let r = super::add_destination(u, o, flags, interval, Some(hooks));
        if let Ok(Added::Exists { uri, state, replaced: Some(_), .. }) = &r {
            // the owner's new object learns the state it would otherwise
            // only hear of at the next change
            if let State::Up | State::Down = state {
                ka::call_statechanged(statechanged_clb, uri, state.code(), user_attr);
            }
        }
        super::add_code(&r)
    }
}

entry! {
    /// The state of the destination `uri` names (see docs/keepalive.md for the
    /// matching rule), -1 when none.
    c fn api_destination_state(uri: StrArg) -> raw::ka_state ["keepalive API destination_state", -1] {
        let Some(u) = uri.get() else { return -1 };
        super::destination_state(u).map_or(-1, State::code)
    }
}

entry! {
    c fn api_del_destination(uri: StrArg, owner: StrArg) -> c_int ["keepalive API del_destination", -1] {
        let (Some(u), Some(o)) = (uri.get(), owner.get()) else {
            return -1;
        };
        if super::del_destination(u, o) {
            1
        } else {
            -1
        }
    }
}

/// A destination as a `ka_dest_t`, owned by this process.
struct Snapshot {
    dest: raw::ka_dest_t,
    uri: Vec<u8>,
    owner: Vec<u8>,
    uuid: Vec<u8>,
}

thread_local! {
    static SNAPSHOT: RefCell<Option<Box<Snapshot>>> = const { RefCell::new(None) };
}

fn fill(info: &DestInfo<Hooks>) -> *mut raw::ka_dest_t {
    let mut snap = Box::new(Snapshot {
        dest: raw::ka_dest_t::default(),
        uri: info.uri.clone(),
        owner: info.owner.clone(),
        uuid: format!("ka-{}", info.id).into_bytes(),
    });
    let d = &mut snap.dest;
    d.uri = kstr::from_bytes(&snap.uri);
    d.owner = kstr::from_bytes(&snap.owner);
    d.uuid = kstr::from_bytes(&snap.uuid);
    d.flags = info.flags;
    d.state = info.state.code();
    d.last_checked = info.last_checked as _;
    d.last_up = info.last_up as _;
    d.last_down = info.last_down as _;
    d.counter = info.fails.min(i32::MAX as u32) as c_int;
    // ticks of 1/16 s, as the C module keeps it
    d.ping_interval = (info.interval_ms * 16 / 1000).min(u32::MAX as u64) as _;
    d.user_attr = info.hooks.user_attr;
    d.statechanged_clb = info.hooks.statechanged;
    d.response_clb = info.hooks.response;
    let p: *mut raw::ka_dest_t = &mut snap.dest;
    SNAPSHOT.with(|s| *s.borrow_mut() = Some(snap));
    p
}

entry! {
    /// `find_destination(uri, owner, &target, &head)`: 1 and `*target` when
    /// found, 0 otherwise. `*target` is a copy owned by this process, valid
    /// until its next `find_destination` call; writing to it changes nothing.
    /// `*head` is always NULL (there is no list to unlink from).
    c fn api_find_destination(
        uri: StrArg,
        owner: StrArg,
        target: Out<*mut raw::ka_dest_t>,
        head: Out<*mut raw::ka_dest_t>,
    ) -> c_int ["keepalive API find_destination", -1] {
        let (Some(u), Some(o)) = (uri.get(), owner.get()) else {
            return 0;
        };
        let Some(info) = super::with_table(|t| t.get(u, o)).flatten() else { return 0 };
        let p = fill(&info);
        // out-pointers of the caller (NULL tolerated)
        let (mut target, mut head) = (target, head);
        target.set(p);
        head.set(null_mut());
        1
    }
}

entry! {
    /// Take the destinations lock (API users that read several things at
    /// once). While this process holds it, its own keepalive calls do not
    /// take it again.
    c fn api_lock_destination_list() -> c_int ["keepalive API lock_destination_list", -1] {
        if super::api_lock() { 1 } else { 0 }
    }
}

entry! {
    c fn api_unlock_destination_list() -> c_int ["keepalive API unlock_destination_list", -1] {
        if super::api_unlock() { 1 } else { 0 }
    }
}
