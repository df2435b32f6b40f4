//! The module's bounds (docs/security.md), applied by the SUBSCRIBE and
//! call-info handlers: the decisions are `sca_core::limits`'; this keeps
//! their shared counters, logs refusals (once per source and interval)
//! and counts them (`kamcmd sca.limits`).

use sca_core::limits::{self, Census, Counts, Limits, LogGate, Refusal, RefusalCounters};

use crate::host::log::B;
use crate::host::shm::{self, SharedStatic, Shm};
use crate::lm_warn;

/// Shared by every process (in shm).
pub struct State {
    pub census: Census<Shm>,
    gate: LogGate<Shm>,
    pub refused: RefusalCounters,
    /// Shared memory in all, bytes (fixed at start).
    shm_total: u64,
}

static STATE: SharedStatic<State> = SharedStatic::new();

/// Seconds between two refusal log lines about one source.
const LOG_INTERVAL: i64 = 60;

/// mod_init: the shared counters.
pub fn init() -> Result<(), String> {
    let oom = |_| "out of shared memory creating the limit counters".to_string();
    let st = State {
        census: Census::new_in(13, Shm).map_err(oom)?,
        gate: LogGate::new_in(10, LOG_INTERVAL, Shm).map_err(oom)?,
        refused: RefusalCounters::default(),
        shm_total: shm::total(),
    };
    STATE.set(
        shm::into_shared_ref(st)
            .map_err(|_| "out of shared memory creating the limit counters".to_string())?,
    );
    Ok(())
}

pub fn state() -> Option<&'static State> {
    STATE.get()
}

/// The counts a new subscription of `contact` is checked against, with
/// `aor_subs` subscriptions in its AoR now.
pub fn counts(contact: &[u8], aor_subs: usize) -> Counts {
    match state() {
        Some(s) => Counts {
            aor: aor_subs,
            contact: s.census.contact(contact),
            total: s.census.total(),
            shm_free: if s.shm_total > 0 { shm::available() } else { 0 },
            shm_total: s.shm_total,
        },
        None => Counts {
            aor: aor_subs,
            ..Counts::default()
        },
    }
}

/// Count what the store holds now (after the start-up restore; the purge
/// recounts from then on).
pub fn recount(store: &sca_core::store::Store<Shm, crate::host::lock::KLock>) {
    if let Some(s) = state() {
        let mut r = s.census.begin_recount();
        store.for_each_aor(|e| e.subs().iter().for_each(|sub| r.count(sub.subscriber())));
        s.census.finish_recount(r);
    }
}

/// A new subscription of `contact` was stored (+1) or one ended (-1).
pub fn counted(contact: &[u8], delta: i64) {
    if let Some(s) = state() {
        s.census.add(contact, delta);
    }
}

/// Count a refusal and log it, at most once per source and interval.
pub fn refused(l: &Limits, r: Refusal, what: &str, source: &[u8], aor: &[u8], now: i64) {
    let Some(s) = state() else { return };
    s.refused.bump(r);
    if let Some(suppressed) = s.gate.admit(source, now) {
        let bound = match r {
            Refusal::SeizedPerContact => l.max_seized_per_contact,
            Refusal::IndexTooHigh => l.max_appearance_index,
            Refusal::SubsPerAor => l.max_subs_per_aor,
            Refusal::SubsPerContact => l.max_subs_per_contact,
            Refusal::TotalSubs => l.max_subscriptions,
            Refusal::LowShm => l.min_free_shm_percent,
        };
        let (code, _) = r.reply();
        let more = if suppressed > 0 {
            format!(" ({suppressed} more refusals from this source since the last report)")
        } else {
            String::new()
        };
        lm_warn!(
            "{what} from {} for {} refused with {code}: limit {} = {bound} reached{more}; reported at most once per {LOG_INTERVAL}s and source",
            B(source),
            B(aor),
            r.param()
        );
    }
}

/// `sca.limits`: the bounds, the counts and the refusals, `name value`.
pub fn rpc_lines(l: &Limits) -> Vec<String> {
    let mut v = vec![
        format!("max_seized_per_contact {}", l.max_seized_per_contact),
        format!("max_subs_per_aor {}", l.max_subs_per_aor),
        format!("max_subs_per_contact {}", l.max_subs_per_contact),
        format!("max_appearance_index {}", l.max_appearance_index),
        format!("max_subscriptions {}", l.max_subscriptions),
        format!("min_free_shm_percent {}", l.min_free_shm_percent),
    ];
    if let Some(s) = state() {
        v.push(format!("subscriptions_counted {}", s.census.total()));
        v.push(format!("shm_free_bytes {}", shm::available()));
        v.push(format!("shm_total_bytes {}", s.shm_total));
        for r in Refusal::ALL {
            v.push(format!("refused_{} {}", r.name(), s.refused.get(r)));
        }
    }
    v
}

/// The Retry-After header of a 503 (the purge may have made room by
/// then).
pub fn retry_after_header(purge_interval: u32) -> String {
    format!("Retry-After: {}\r\n", limits::retry_after(purge_interval))
}
