//! Subscriber liveness (sca_rs only; off unless
//! `subscriber_keepalive_interval` > 0): the phones of call-info
//! subscribers are pinged by the module's keepalive engine, and a phone
//! that stops answering gives its lines back instead of leaving them lit on
//! every other phone of the group until timers expire (docs/liveness.md).
//!
//! - Every distinct contact with a call-info subscription is one keepalive
//!   destination of owner [`OWNER`], however many AoRs it subscribes to,
//!   counting the AoRs: effects.rs calls [`watch`] when an AoR gains a
//!   live call-info subscription of the contact that this node NOTIFYs,
//!   and [`unwatch`] when it loses it (unsubscribed, expired, deactivated,
//!   taken over by a peer), so the contact stops being pinged as soon as
//!   its last one ends. Once per interval [`reconcile`] recounts from the
//!   store (subscriptions restored from the DB, `keepalive.del` or
//!   `keepalive.flush` of a phone, a count off after an edit raced the
//!   previous recount); first pings are spread over the interval.
//! - Pings go over the subscription's stored route set (Record-Route), as
//!   its NOTIFYs do, so a phone behind an edge proxy is reached through it.
//! - Any reply to OPTIONS, whatever its code, proves the phone is there.
//! - Declared down (after `ka_down_threshold` unanswered pings): in every
//!   AoR, its subscriptions end (call-info ones with a last NOTIFY
//!   `terminated;reason=deactivated`, so a phone that is in fact alive
//!   subscribes again at once), and their DB rows are deleted; lines it
//!   only seized are released and the group is NOTIFYed; appearances it
//!   has in a call are kept and flagged in `sca.all_appearances`.
//!
//! The state changes come to [`on_state`] through the keepalive engine's
//! ordered event delivery, like any destination's.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use sca_core::keepalive::table::{FLAG_ANY_REPLY_ALIVE, FLAG_NO_DELETE_COUNTER};
use sca_core::keepalive::State;
use sca_core::model::EventType;

use crate::host::log::B;
use crate::module::{config, effects, shared, subscribe::now};
use crate::{keepalive, lm_dbg, lm_err, lm_notice};

/// The keepalive owner of subscribers' phones.
pub const OWNER: &[u8] = b"sca-subscriber";

/// Their flags: any reply means alive; `delete_counter` does not remove
/// them (declared down, they are handled and removed here).
const FLAGS: i32 = FLAG_ANY_REPLY_ALIVE | FLAG_NO_DELETE_COUNTER;

/// Counters shared by every process (in the module's shm state).
#[derive(Default)]
pub struct Stats {
    pub declared_dead: AtomicU64,
    pub subscriptions_ended: AtomicU64,
    pub lines_released: AtomicU64,
    pub calls_flagged: AtomicU64,
}

/// The ping interval in milliseconds, when the feature is on.
fn interval_ms() -> Option<u64> {
    config().map(|c| c.subscriber_keepalive_interval as u64 * 1000).filter(|&ms| ms > 0)
}

pub fn enabled() -> bool {
    interval_ms().is_some()
}

/// Monitor `contact` (one more AoR has a call-info subscription of it),
/// pinged over `route`, the subscription's stored route set (empty: to
/// the contact directly).
pub fn watch(contact: &[u8], route: &[u8]) {
    let Some(iv) = interval_ms() else { return };
    if !keepalive::parses_as_sip_uri(contact) {
        lm_dbg!("subscriber contact {} is not a SIP URI: not monitored", B(contact));
        return;
    }
    let now = keepalive::now();
    match keepalive::with_table(|t| t.add_spread(contact, OWNER, route, FLAGS, iv, now)) {
        Some(Ok(_)) => {}
        Some(Err(e)) => lm_err!("cannot monitor subscriber {}: {e:?}", B(contact)),
        None => {}
    }
}

/// One AoR fewer has a call-info subscription of `contact`: it stops
/// being monitored when that was the last.
pub fn unwatch(contact: &[u8]) {
    if !enabled() {
        return;
    }
    if keepalive::with_table(|t| t.release(contact, OWNER)) == Some(Some(true)) {
        lm_dbg!("subscriber {} no longer subscribed: not monitored", B(contact));
    }
}

/// Make the monitored phones exactly the contacts with a live call-info
/// subscription, each counting the AoRs it has one in (subscriptions
/// restored from the DB, destinations removed over RPC, counts an edit
/// racing the previous reconcile left off).
pub fn reconcile() {
    let (Some(iv), Some(st)) = (interval_ms(), shared()) else { return };
    // contact -> (the route set to ping it over, that of one of its
    // subscriptions: a phone has one path to this server; the AoRs)
    let mut wanted: HashMap<Vec<u8>, (Vec<u8>, u32)> = HashMap::new();
    st.store.for_each_aor(|e| {
        for s in e.subs_of(EventType::CallInfo) {
            // with clustering, each node pings the phones subscribed through it
            if s.state().is_terminated() || !effects::is_local(s.ver()) {
                continue;
            }
            if let Some((_, n)) = wanted.get_mut(s.subscriber()) {
                *n += 1;
            } else if keepalive::parses_as_sip_uri(s.subscriber()) {
                wanted.insert(s.subscriber().to_vec(), (s.record_route().to_vec(), 1));
            }
        }
    });
    let now = keepalive::now();
    match keepalive::with_table(|t| t.sync_owner(OWNER, &mut wanted, FLAGS, iv, now)) {
        Some(Ok((added, removed))) if added + removed > 0 => {
            lm_dbg!("subscriber liveness: {added} phones added, {removed} no longer subscribed")
        }
        Some(Err(e)) => lm_err!("subscriber liveness: cannot update the monitored phones: {e:?}"),
        _ => {}
    }
}

crate::entry! {
    timer fn reconcile_timer("subscriber liveness timer") {
        reconcile()
    }
}

/// Register the reconcile timer (mod_init), when the feature is on.
pub fn register(interval_s: u32) -> Result<(), String> {
    // keepalive delivers our phones' state changes here (it does not know
    // the module)
    keepalive::ping::set_owner_handler(OWNER, on_state)
        .map_err(|_| "subscriber liveness registered twice".to_string())?;
    if interval_s == 0 {
        return Ok(());
    }
    if crate::host::proc::register_timer(reconcile_timer, interval_s).is_err() {
        return Err("cannot register the subscriber liveness timer".into());
    }
    Ok(())
}

/// A state change of a subscriber's phone (keepalive event delivery).
pub fn on_state(contact: &[u8], to: State) {
    match to {
        State::Down => contact_dead(contact),
        State::Up => lm_dbg!("subscriber {} answers keepalive pings", B(contact)),
        State::Unknown => {}
    }
}

/// `contact` stopped answering: end what it holds, in every AoR.
fn contact_dead(contact: &[u8]) {
    let Some(st) = shared() else { return };
    let now = now();
    let (mut ended, mut released, mut flagged) = (0u64, 0u64, 0u64);
    // through an edit: peers learn what the phone held, its subscriptions
    // get their last NOTIFY and DB delete
    effects::for_each_aor(st, now, |ed| {
        let Some(mut ed) = ed.core() else { return };
        let (e, r, f) = ed.contact_gone(contact);
        ended += e as u64;
        released += r as u64;
        flagged += f as u64;
    });
    keepalive::with_table(|t| t.remove(contact, OWNER));
    let s = &st.liveness;
    s.declared_dead.fetch_add(1, Ordering::Relaxed);
    s.subscriptions_ended.fetch_add(ended, Ordering::Relaxed);
    s.lines_released.fetch_add(released, Ordering::Relaxed);
    s.calls_flagged.fetch_add(flagged, Ordering::Relaxed);
    lm_notice!(
        "subscriber {} stopped answering keepalive pings: {ended} subscriptions ended, {released} seized lines released, {flagged} appearances in a call kept (flagged)",
        B(contact)
    );
}

/// `sca.subscriber_liveness` lines: `name value`.
pub fn rpc_lines() -> Vec<String> {
    let Some(st) = shared() else { return Vec::new() };
    let (monitored, up, down) = keepalive::with_table(|t| t.count_owner(OWNER)).unwrap_or_default();
    let s = &st.liveness;
    let interval = config().map_or(0, |c| c.subscriber_keepalive_interval);
    vec![
        format!("interval {interval}"),
        format!("monitored {monitored}"),
        format!("up {up}"),
        format!("down {down}"),
        format!("declared_dead {}", s.declared_dead.load(Ordering::Relaxed)),
        format!("subscriptions_ended {}", s.subscriptions_ended.load(Ordering::Relaxed)),
        format!("lines_released {}", s.lines_released.load(Ordering::Relaxed)),
        format!("calls_flagged {}", s.calls_flagged.load(Ordering::Relaxed)),
    ]
}
