//! Pings and their outcome: the tick in the slow timer process sends the
//! OPTIONS that are due through tm; tm calls back (in whichever process
//! gets the final reply, or in its timer process on a timeout) with the
//! ping's `(id, seq)` as parameter; state changes are delivered as event
//! routes and API callbacks.

use core::ffi::{c_int, c_uint, c_void};

use sca_core::keepalive::table::decode_param;
use sca_core::keepalive::{Event, PingResult, State};

use crate::host::guard::guard_or;
use crate::host::kstr;
use crate::host::log::B;
use crate::{lm_dbg, lm_err, lm_info, sys};

/// Longest wait between ticks: how late a ping may start after it is due
/// (and after a destination is added in another process).
pub const TICK_MAX_MS: u32 = 250;
/// Shortest wait between ticks.
const TICK_MIN_MS: u64 = 60;
/// OPTIONS sent per tick at most (the rest go in the next ticks). Kamailio's
/// timers tick 16 times a second, so this caps pings at ~16000/s; it was 200
/// (~3300/s), which `make bench` showed falling behind 5000 destinations at
/// ping_interval 1 s.
const MAX_PINGS_PER_TICK: usize = 1000;

/// Called by the shim's timer (slow timer process); returns the
/// milliseconds until the next call.
#[no_mangle]
pub extern "C" fn sca_rs_ka_on_tick() -> c_uint {
    guard_or("keepalive timer", TICK_MAX_MS, || {
        let Some(settings) = super::settings() else { return TICK_MAX_MS };
        let now = super::now();
        let mut due = Vec::new();
        super::with_table(|t| t.due(now, MAX_PINGS_PER_TICK, &mut due));
        let from = kstr::from_bytes(&settings.ping_from);
        for p in &due {
            let uri = kstr::from_bytes(&p.uri);
            // the parameter is a number, not a pointer: nothing to free,
            // nothing to dangle when the destination goes meanwhile
            let param = p.param() as usize as *mut c_void;
            let rc = if p.route.is_empty() {
                // SAFETY: uri and from outlive the call; tm copies them.
                unsafe { sys::sca_rs_ka_ping(&uri, &from, param) }
            } else {
                // an SCA subscriber's phone, over its subscription's route set
                let route = kstr::from_bytes(&p.route);
                // SAFETY: uri, from and route outlive the call; the shim
                // parses the route set into its own copy and tm copies the
                // rest.
                unsafe { sys::sca_rs_ka_ping_routed(&uri, &from, &route, param) }
            };
            if rc < 0 {
                lm_err!("unable to ping [{}]", B(&p.uri));
                let r = super::with_table(|t| t.on_result(p.id, p.seq, PingResult::SendError, super::now())).flatten();
                if let Some(a) = r {
                    log_applied(&a);
                }
            }
        }
        super::dispatch_events();
        let next = super::with_table(|t| t.next_due_in(super::now())).flatten();
        next.unwrap_or(TICK_MAX_MS as u64).clamp(TICK_MIN_MS, TICK_MAX_MS as u64) as c_uint
    })
}

fn log_applied(a: &sca_core::keepalive::Applied<super::Hooks>) {
    if a.removed {
        lm_info!(
            "keepalive: destination {} (owner {}) removed after {} failed pings in a row (delete_counter)",
            B(&a.uri),
            B(&a.owner),
            super::with_table(|t| t.config().delete_counter + 1).unwrap_or(0)
        );
    }
}

/// The final outcome of a ping (shim tm callback).
///
/// # Safety
/// Called by the shim only: `param` is the value given to
/// `sca_rs_ka_ping`, `ps` the callback's `struct tmcb_params *`.
#[no_mangle]
pub unsafe extern "C" fn sca_rs_ka_on_reply(param: *mut c_void, code: c_int, local: c_int, ps: *mut c_void) {
    guard_or("keepalive reply", (), || {
        let (id, seq) = decode_param(param as usize as u64);
        let code = code.max(0) as u32;
        let result = if local != 0 { PingResult::Local(code) } else { PingResult::Reply(code) };
        let now = super::now();
        let Some(a) = super::with_table(|t| t.on_result(id, seq, result, now)).flatten() else {
            lm_dbg!("reply {code} to a ping of a destination removed since (id {id})");
            return;
        };
        lm_dbg!(
            "OPTIONS request was finished with code {code} (to {}){}",
            B(&a.uri),
            if a.stale { ", older than a result already applied" } else { "" }
        );
        log_applied(&a);
        // state changes first (the C module's order: event route, state
        // callback, then the response callback)
        super::dispatch_events();
        if let Some(cb) = a.hooks.response {
            let mut uri = kstr::from_bytes(&a.uri);
            // SAFETY: the API user's callback with its user_attr; `ps` is
            // tm's callback parameter block, valid during this callback.
            unsafe { cb(&mut uri, ps as *mut sys::tmcb_params, a.hooks.user_attr) };
        }
    })
}

/// Deliver one state change: the event route, then the owner's callback.
pub fn deliver(ev: &Event<super::Hooks>) {
    lm_info!(
        "keepalive: destination {} (owner {}) is {}",
        B(&ev.uri),
        B(&ev.owner),
        match ev.to {
            State::Up => "up",
            State::Down => "down",
            State::Unknown => "unknown",
        }
    );
    if ev.owner == crate::module::liveness::OWNER {
        // an SCA subscriber's phone: no event route, no API callback
        crate::module::liveness::on_state(&ev.uri, ev.to);
        return;
    }
    if let Some(s) = super::settings() {
        let rt = match ev.to {
            State::Up => s.route_up,
            State::Down => s.route_down,
            State::Unknown => -1,
        };
        if rt >= 0 {
            let uri = kstr::from_bytes(&ev.uri);
            // SAFETY: a route index looked up in mod_init; uri is copied.
            unsafe { sys::sca_rs_ka_run_route(rt, &uri) };
        }
    }
    if let Some(h) = ev.hooks {
        if let Some(cb) = h.statechanged {
            let mut uri = kstr::from_bytes(&ev.uri);
            // SAFETY: the API user's callback with its user_attr and a str
            // valid for the call.
            unsafe { cb(&mut uri, ev.to.code(), h.user_attr) };
        }
    }
}
