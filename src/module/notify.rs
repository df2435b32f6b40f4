//! NOTIFY requests to SCA subscribers, as the C module words them:
//! `Contact`, `Call-Info`, `Event`, `Subscription-State`, in that order,
//! sent through tm in the subscription's dialog.

use sca_core::model::{EventType, SubState};
use sca_core::parse::{format, substate, uri};
use sca_core::store::{AorEntry, AorGuard, SubscriptionRec};

use crate::host::lock::KLock;
use crate::host::log::B;
use crate::host::shm::Shm;
use crate::host::tm::{self, Dialog};
use crate::lm_err;
use crate::module::params::Config;

/// The `Call-Info:` header line for a subscriber of `aor` with no
/// appearance in use: `<sip:HOST>;appearance-index=*;appearance-state=idle`
/// for call-info, nothing for line-seize. Err when the AoR has no host.
pub fn idle_call_info_header(sub: &SubscriptionRec<'_>, out: &mut Vec<u8>) -> Result<(), ()> {
    let host = uri::host_of(sub.aor).map_err(|e| lm_err!("no host in AoR {}: {e}", B(sub.aor)))?;
    format::write_call_info_header(out, host, core::iter::empty(), sub.event);
    Ok(())
}

/// Send one NOTIFY to `sub`'s subscriber with the given `Call-Info` header
/// line (CRLF-terminated, or empty). `sub.notify_cseq` is the CSeq this
/// NOTIFY carries: callers increment the stored value under the AoR's lock
/// and send it, so NOTIFYs of one subscription leave in CSeq order.
pub fn send(cfg: &Config, sub: &SubscriptionRec<'_>, call_info_header: &[u8], now: i64) -> Result<(), ()> {
    let mut h = Vec::with_capacity(256 + call_info_header.len());
    format::write_contact_header(&mut h, cfg.server_address.as_deref().unwrap_or(sub.aor));
    h.extend_from_slice(call_info_header);
    format::write_event_header(&mut h, sub.event);
    substate::write_header(&mut h, sub.state, substate::ttl(sub.expires, now));
    let d = Dialog {
        call_id: sub.call_id,
        local_tag: sub.to_tag,
        remote_tag: sub.from_tag,
        // tm sends local_cseq + 1
        local_cseq: sub.notify_cseq.wrapping_sub(1),
        remote_target: sub.subscriber,
        local_uri: sub.aor,
        remote_uri: sub.aor,
        route_set: sub.record_route,
    };
    tm::request_within("NOTIFY", &h, b"", &d).inspect_err(|_| {
        lm_err!("failed to send {} NOTIFY to {} for {}", sub.event.name(), B(sub.subscriber), B(sub.aor))
    })
}

/// The `Call-Info:` header line a subscriber of `entry` gets: every in-use
/// appearance (then `*` idle for call-info), or for a line-seize
/// subscriber with a seized index just that index, as the C module does.
pub fn call_info_header(entry: &AorEntry<Shm>, event: EventType, index: i32, out: &mut Vec<u8>) -> Result<(), ()> {
    let aor = entry.aor();
    let host = uri::host_of(aor).map_err(|e| lm_err!("no host in AoR {}: {e}", B(aor)))?;
    if event == EventType::LineSeize && index > 0 {
        format::write_index_header(out, host, index as u32);
        return Ok(());
    }
    let apps = entry.apps.iter().map(|a| format::Appearance {
        index: a.index,
        state: a.state,
        uri: (!a.uri().is_empty()).then(|| a.uri()),
    });
    format::write_call_info_header(out, host, apps, event);
    Ok(())
}

/// NOTIFY every call-info subscriber of the AoR with its appearances
/// (C: `sca_notify_call_info_subscribers`). Terminated subscriptions
/// waiting for the purge are skipped, and each subscriber gets its own
/// Subscription-State (docs/compat.md).
pub fn notify_group(cfg: &Config, entry: &mut AorEntry<Shm>, now: i64) {
    let mut h = Vec::with_capacity(256);
    if call_info_header(entry, EventType::CallInfo, -1, &mut h).is_err() {
        return;
    }
    let aor = entry.aor().to_vec();
    for sub in entry.subs.iter_mut() {
        // with clustering, each subscription is NOTIFYed by its own node
        if sub.event != EventType::CallInfo || sub.state.is_terminated() || !crate::module::cluster::is_local(sub.ver) {
            continue;
        }
        sub.notify_cseq = sub.notify_cseq.wrapping_add(1);
        sub.touch();
        let _ = send(cfg, &sub.to_rec(&aor), &h, now);
    }
}

/// End `subscriber`'s line-seize subscription of the AoR with `state`
/// (a last NOTIFY carries the index), optionally releasing its seized
/// appearance and telling the group (C: `sca_subscription_terminate`).
/// Returns false when there was no such subscription.
pub fn terminate_line_seize(
    cfg: &Config,
    guard: &mut AorGuard<'_, Shm, KLock>,
    subscriber: &[u8],
    state: SubState,
    release: bool,
    now: i64,
) -> bool {
    let Some(e) = guard.entry_mut() else { return false };
    let Some(i) = e.find_sub(EventType::LineSeize, subscriber) else { return false };
    let mut sub = e.subs.swap_remove(i);
    if let Some(st) = crate::module::shared().filter(|_| sub.needs_db_delete()) {
        st.add_tombstone(e.aor(), sub.subscriber(), EventType::LineSeize);
    }
    sub.expires = 0;
    sub.notify_cseq = sub.notify_cseq.wrapping_add(1);
    sub.state = state;
    let mut h = Vec::with_capacity(128);
    if crate::module::cluster::is_local(sub.ver) && call_info_header(e, EventType::LineSeize, sub.index, &mut h).is_ok() {
        let aor = e.aor().to_vec();
        let _ = send(cfg, &sub.to_rec(&aor), &h, now);
    }
    if release && sub.index > 0 && e.apps.release(sub.index as u32) {
        notify_group(cfg, e, now);
    }
    guard.prune();
    true
}
