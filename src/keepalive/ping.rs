//! Pings and their outcome: the tick in the slow timer process sends the
//! OPTIONS that are due through tm; tm calls back (in whichever process
//! gets the final reply, or in its timer process on a timeout) with the
//! ping's `(id, seq)` as parameter; state changes are delivered as event
//! routes and API callbacks.

use core::ffi::{c_int, c_uint, c_void};
use std::sync::OnceLock;

use sca_core::keepalive::table::decode_param;
use sca_core::keepalive::{Event, PingResult, State};

use super::metrics;
use crate::host::ka;
use crate::host::log::B;
use crate::{entry, lm_dbg, lm_err, lm_info};

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

entry! {
    /// Called by the shim's timer (slow timer process); returns the
    /// milliseconds until the next call.
    #[no_mangle]
    c pub fn sca_rs_ka_on_tick() -> c_uint ["keepalive timer", TICK_MAX_MS] {
        let Some(settings) = super::settings() else { return TICK_MAX_MS };
        let now = super::now();
        let mut due = Vec::new();
        super::with_table(|t| t.due(now, MAX_PINGS_PER_TICK, &mut due));
        for p in &due {
            // the parameter is a number, not a pointer: nothing to free,
            // nothing to dangle when the destination goes meanwhile; a
            // route set (an SCA subscriber's phone) goes with the ping
            if ka::ping(&p.uri, &settings.ping_from, &p.route, p.param() as usize).is_ok() {
                metrics::PINGS_SENT.inc();
            } else {
                metrics::PINGS_FAILED.inc();
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
    }
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

entry! {
    /// The final outcome of a ping (shim tm callback). Called by the shim
    /// only: `param` is the value given to `sca_rs_ka_ping`, `ps` the
    /// callback's `struct tmcb_params *` (passed through, never read here).
    #[no_mangle]
    c pub fn sca_rs_ka_on_reply(param: *mut c_void, code: c_int, local: c_int, ps: *mut c_void) ["keepalive reply"] {
        let (id, seq) = decode_param(param as usize as u64);
        let code = code.max(0) as u32;
        let result = if local != 0 { PingResult::Local(code) } else { PingResult::Reply(code) };
        let now = super::now();
        let Some(a) = super::with_table(|t| t.on_result(id, seq, result, now)).flatten() else {
            lm_dbg!("reply {code} to a ping of a destination removed since (id {id})");
            return;
        };
        if local == 0 {
            metrics::PINGS_ANSWERED.inc();
        }
        if let Some(ms) = a.rtt_ms {
            metrics::PING_RTT_MS.add(u64::from(ms));
        }
        if !a.alive {
            metrics::PINGS_FAILED.inc();
        }
        lm_dbg!(
            "OPTIONS request was finished with code {code} (to {}){}",
            B(&a.uri),
            if a.stale { ", older than a result already applied" } else { "" }
        );
        log_applied(&a);
        // state changes first (the C module's order: event route, state
        // callback, then the response callback)
        super::dispatch_events();
        ka::call_response(a.hooks.response, &a.uri, ps, a.hooks.user_attr);
    }
}

/// A state handler for the destinations of one owner (see
/// [`set_owner_handler`]).
pub type OwnerHandler = fn(uri: &[u8], state: State);

static OWNER_HANDLER: OnceLock<(&'static [u8], OwnerHandler)> = OnceLock::new();

/// Deliver the state changes of `owner`'s destinations to `f` instead of
/// the event routes and API callbacks (the module's subscriber liveness:
/// set in mod_init, before fork, so every process has it). One owner.
pub fn set_owner_handler(owner: &'static [u8], f: OwnerHandler) -> Result<(), ()> {
    OWNER_HANDLER.set((owner, f)).map_err(|_| ())
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
    if let Some((owner, f)) = OWNER_HANDLER.get() {
        if ev.owner == *owner {
            // e.g. an SCA subscriber's phone: no event route, no API callback
            f(&ev.uri, ev.to);
            return;
        }
    }
    if let Some(s) = super::settings() {
        let rt = match ev.to {
            State::Up => s.route_up,
            State::Down => s.route_down,
            State::Unknown => -1,
        };
        if rt >= 0 {
            ka::run_route(rt, &ev.uri);
        }
    }
    if let Some(h) = ev.hooks {
        ka::call_statechanged(h.statechanged, &ev.uri, ev.to.code(), h.user_attr);
    }
}
