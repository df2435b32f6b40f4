//! The module's Kamailio statistics, group `sca_rs` (docs/observability.md):
//! `kamcmd stats.get_statistics sca_rs:`, `kamcmd cnt.grp_get_all sca_rs`,
//! and through xhttp_prom `kamailio_sca_rs_<name>`.
//!
//! Counters of events are per-process Kamailio counters, incremented where
//! the event happens (one add to this process's row). Everything that is
//! state (subscriptions, appearances, the DB backlog, the cluster's sync)
//! and the counters the module already keeps in shared memory for its RPC
//! commands (DB rows written, cluster messages, liveness) are read by
//! callback when asked: one source of truth.

use core::ffi::CStr;
use std::sync::atomic::Ordering::Relaxed;

use sca_core::limits::Refusal;
use sca_core::model::EventType;
use sca_core::parse::appearance::AppearanceState;

use crate::host::stats::{register_gauge, Counter, GaugeFn};
use crate::module::{cluster, shared};

/// The statistics group: the module's name, as Kamailio's modules do.
pub const GROUP: &CStr = c"sca_rs";

pub static SUBSCRIBE_ACCEPTED: Counter = Counter::new(
    c"subscribe_accepted",
    c"SUBSCRIBEs answered 2xx (stored, refreshed or ended)",
);
pub static SUBSCRIBE_REFUSED_4XX: Counter = Counter::new(
    c"subscribe_refused_4xx",
    c"SUBSCRIBEs refused with a 4xx (bad request, 481, line taken 480)",
);
pub static SUBSCRIBE_REFUSED_5XX: Counter = Counter::new(
    c"subscribe_refused_5xx",
    c"SUBSCRIBEs refused with a 5xx (out of memory, internal error)",
);
pub static NOTIFY_SENT: Counter = Counter::new(c"notify_sent", c"NOTIFYs handed to tm");
pub static NOTIFY_FAILED: Counter = Counter::new(
    c"notify_failed",
    c"NOTIFYs not sent, or answered with a final reply >= 300 (408: no answer)",
);
pub static SEIZES_GRANTED: Counter =
    Counter::new(c"seizes_granted", c"line-seize SUBSCRIBEs that got a line");
pub static SEIZES_REFUSED: Counter = Counter::new(
    c"seizes_refused",
    c"line-seize SUBSCRIBEs refused with 480 (line taken, or cluster not synced)",
);
pub static CALL_INFO_UPDATES: Counter = Counter::new(
    c"call_info_updates",
    c"sca_call_info_update calls on a message of a shared line",
);
pub static DB_ROWS_FAILED: Counter = Counter::new(
    c"db_rows_failed",
    c"rows and deletes a DB write left unwritten (retried at the next flush)",
);
pub static DB_RESTORED: Counter = Counter::new(
    c"db_restored",
    c"subscriptions restored from the DB (start-up and its retries)",
);

const COUNTERS: [&Counter; 10] = [
    &SUBSCRIBE_ACCEPTED,
    &SUBSCRIBE_REFUSED_4XX,
    &SUBSCRIBE_REFUSED_5XX,
    &NOTIFY_SENT,
    &NOTIFY_FAILED,
    &SEIZES_GRANTED,
    &SEIZES_REFUSED,
    &CALL_INFO_UPDATES,
    &DB_ROWS_FAILED,
    &DB_RESTORED,
];

/// A SUBSCRIBE was answered `code`.
pub fn subscribe_replied(code: u16) {
    match code {
        200..=299 => SUBSCRIBE_ACCEPTED.inc(),
        400..=499 => SUBSCRIBE_REFUSED_4XX.inc(),
        500..=699 => SUBSCRIBE_REFUSED_5XX.inc(),
        _ => {}
    }
}

/// A NOTIFY's final reply (the tm callback, in whichever process gets it).
pub fn notify_final_reply(status: i32) {
    if !(200..300).contains(&status) {
        NOTIFY_FAILED.inc();
    }
}

fn subscriptions(event: EventType) -> i64 {
    shared().map_or(0, |st| st.store.subscription_count(event) as i64)
}

/// Appearances in one of `states`, over the whole store.
fn appearances(states: &[AppearanceState]) -> i64 {
    let Some(st) = shared() else { return 0 };
    let mut n = 0;
    st.store
        .for_each_aor(|e| n += e.apps().iter().filter(|a| states.contains(&a.state)).count());
    n as i64
}

/// Subscriptions with a change not yet in the DB, and ended ones whose
/// row is still to be deleted.
fn db_backlog() -> i64 {
    let Some(st) = shared() else { return 0 };
    let mut n = 0;
    st.store
        .for_each_aor(|e| n += e.subs().iter().filter(|s| s.is_dirty()).count());
    (n + st.tombstones_len()) as i64
}

const GAUGES: &[(&CStr, &CStr, GaugeFn)] = &[
    (
        c"subscriptions_call_info",
        c"call-info subscriptions stored (as sca.subscription_count)",
        || subscriptions(EventType::CallInfo),
    ),
    (
        c"subscriptions_line_seize",
        c"line-seize subscriptions stored",
        || subscriptions(EventType::LineSeize),
    ),
    (
        c"appearances_seized",
        c"appearances seized (line-seize, no call yet)",
        || appearances(&[AppearanceState::Seized]),
    ),
    (
        c"appearances_progressing",
        c"appearances progressing (call set up)",
        || appearances(&[AppearanceState::Progressing]),
    ),
    (
        c"appearances_alerting",
        c"appearances alerting (ringing)",
        || appearances(&[AppearanceState::Alerting]),
    ),
    (
        c"appearances_active",
        c"appearances active (answered)",
        || appearances(&[AppearanceState::Active, AppearanceState::ActivePending]),
    ),
    (
        c"appearances_held",
        c"appearances held (held or held-private)",
        || appearances(&[AppearanceState::Held, AppearanceState::HeldPrivate]),
    ),
    (
        c"db_rows_written",
        c"rows the DB writer committed since start",
        || shared().map_or(0, |st| st.rows_written.load(Relaxed) as i64),
    ),
    (
        c"db_backlog",
        c"subscription changes and deletes waiting for the DB writer",
        db_backlog,
    ),
    (
        c"db_last_flush_ms",
        c"duration of the DB writer's last batch that wrote something (ms)",
        || shared().map_or(0, |st| st.last_flush_ms.load(Relaxed) as i64),
    ),
    (c"cluster_msgs_sent", c"KDMQ messages sent to peers", || {
        cluster::metrics::counter("msgs_sent")
    }),
    (
        c"cluster_msgs_send_failed",
        c"KDMQ messages not sent or not answered 2xx",
        || cluster::metrics::counter("msgs_send_failed"),
    ),
    (
        c"cluster_msgs_received",
        c"KDMQ messages received from peers",
        || cluster::metrics::counter("msgs_received"),
    ),
    (
        c"cluster_msgs_rejected",
        c"KDMQ messages refused (malformed, other protocol, echo)",
        || cluster::metrics::counter("msgs_rejected"),
    ),
    (
        c"cluster_conflicts_won",
        c"replicated records that lost to ours",
        || cluster::metrics::counter("conflicts_won"),
    ),
    (
        c"cluster_conflicts_lost",
        c"our records replaced by a peer's",
        || cluster::metrics::counter("conflicts_lost"),
    ),
    (
        c"cluster_digests_sent",
        c"anti-entropy digests sent to peers (sca.cluster digests_sent)",
        || cluster::metrics::counter("digests_sent"),
    ),
    (
        c"cluster_digest_buckets_differed",
        c"digest buckets found different from a peer's (each is repaired)",
        || cluster::metrics::counter("digest_buckets_differed"),
    ),
    (
        c"cluster_heal_applied",
        c"records a digest exchange changed here (what replication had missed)",
        || cluster::metrics::counter("heal_applied"),
    ),
    (
        c"cluster_sync_state",
        c"start-up sync: 0 off, 1 idle, 2 requesting, 3 synced, 4 failed",
        cluster::metrics::sync_state,
    ),
    (
        c"cluster_peers_active",
        c"peers that answered our last message (or sent us one)",
        cluster::metrics::peers_active,
    ),
    (
        c"liveness_phones_monitored",
        c"subscribers' phones pinged (subscriber liveness)",
        || {
            crate::keepalive::with_table(|t| t.count_owner(crate::module::liveness::OWNER).0 as i64)
                .unwrap_or(0)
        },
    ),
    (c"liveness_declared_dead", c"phones declared dead", || {
        shared().map_or(0, |st| st.liveness.declared_dead.load(Relaxed) as i64)
    }),
    (
        c"liveness_subscriptions_ended",
        c"subscriptions ended because their phone was declared dead",
        || shared().map_or(0, |st| st.liveness.subscriptions_ended.load(Relaxed) as i64),
    ),
    (
        c"liveness_lines_released",
        c"seized lines released because their phone was declared dead",
        || shared().map_or(0, |st| st.liveness.lines_released.load(Relaxed) as i64),
    ),
    (c"limits_refused_seized_per_contact", c"new subscriptions refused by max_seized_per_contact", || {
        refused(Refusal::SeizedPerContact)
    }),
    (c"limits_refused_index_too_high", c"seizes and answered calls refused by max_appearance_index", || {
        refused(Refusal::IndexTooHigh)
    }),
    (c"limits_refused_subs_per_aor", c"new subscriptions refused by max_subs_per_aor", || {
        refused(Refusal::SubsPerAor)
    }),
    (c"limits_refused_subs_per_contact", c"new subscriptions refused by max_subs_per_contact", || {
        refused(Refusal::SubsPerContact)
    }),
    (c"limits_refused_total_subs", c"new subscriptions refused by max_subscriptions (503)", || {
        refused(Refusal::TotalSubs)
    }),
    (c"limits_refused_low_shm", c"new subscriptions refused by min_free_shm_percent (503)", || {
        refused(Refusal::LowShm)
    }),
];

/// Refusals of one bound (docs/security.md), as `sca.limits` shows them.
fn refused(r: Refusal) -> i64 {
    crate::module::limits::state().map_or(0, |s| s.refused.get(r) as i64)
}

/// Register every statistic of the group (mod_init).
pub fn register() -> Result<(), String> {
    for c in COUNTERS {
        c.register(GROUP)?;
    }
    for &(name, doc, f) in GAUGES {
        register_gauge(GROUP, name, doc, f)?;
    }
    crate::keepalive::metrics::register(GROUP)
}
