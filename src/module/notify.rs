//! NOTIFY requests to SCA subscribers, as the C module words them:
//! `Contact`, `Call-Info`, `Event`, `Subscription-State`, in that order,
//! sent through tm in the subscription's dialog.

use sca_core::model::EventType;
use sca_core::parse::{format, substate, uri};
use sca_core::store::{AorEntry, SubscriptionRec};

use crate::host::log::B;
use crate::host::shm::Shm;
use crate::host::tm::{self, Dialog};
use crate::lm_err;
use crate::module::metrics;
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
    let sent = tm::request_within("NOTIFY", &h, b"", &d);
    if sent.is_ok() {
        metrics::NOTIFY_SENT.inc();
    } else {
        metrics::NOTIFY_FAILED.inc();
    }
    sent.inspect_err(|_| {
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
    let apps = entry.apps().iter().map(|a| format::Appearance {
        index: a.index,
        state: a.state,
        uri: (!a.uri().is_empty()).then(|| a.uri()),
    });
    format::write_call_info_header(out, host, apps, event);
    Ok(())
}
