//! `sca_handle_subscribe()`: call-info and line-seize SUBSCRIBEs.
//!
//! The decisions (status codes, reason phrases, which subscription is
//! created, refreshed or ended) follow the C sca module; see
//! docs/compat.md for where we deliberately differ.

use sca_core::model::{EventType, SubState};
use sca_core::parse;
use sca_core::appearance::SeizeError;
use sca_core::change::AorEdit;
use sca_core::limits::{self, Limits, Refusal};
use sca_core::store::SubscriptionRec;

use crate::host::log::B;
use crate::host::msg::SipMsg;
use crate::host::shm::Shm;
use crate::host::sl;
use crate::module::effects::Edit;
use crate::module::{config, metrics, params::Config, shared, Shared};
use crate::{entry, lm_dbg, lm_err, lm_info};

/// A failed SUBSCRIBE: the reply to send (the C module's codes/phrases).
struct Reject(u16, &'static str);

const BAD_SCA_REQUEST: Reject = Reject(400, "Bad Shared Call Appearance Request");

entry! {
    /// `sca_handle_subscribe([to_uri[, from_uri]])`. A caught panic still
    /// answers the phone (500), which would otherwise retransmit into
    /// silence.
    script pub fn w_sca_handle_subscribe("sca_handle_subscribe", msg, p1, p2)
    on_panic = panic_reply; {
        let param = |p: Option<crate::host::entry::Param>, msg: &mut SipMsg<'_>| -> Result<Option<Vec<u8>>, ()> {
            match p {
                None => Ok(None),
                Some(p) => p.str(msg).map(Some).ok_or(()),
            }
        };
        let (Ok(to), Ok(from)) = (param(p1, msg), param(p2, msg)) else {
            lm_err!("sca_handle_subscribe: cannot get the URI parameters");
            return -1;
        };
        let (Some(st), Some(cfg)) = (shared(), config()) else {
            lm_err!("sca_handle_subscribe called before the module was initialised");
            return -1;
        };
        handle_subscribe_uris(st, cfg, &mut msg.reborrow(), to.as_deref(), from.as_deref(), now())
    }
}

fn panic_reply(m: &mut SipMsg<'_>) -> i32 {
    let _ = sl::reply(m, 500, "Server Internal Error", b"");
    metrics::subscribe_replied(500);
    -1
}

entry! {
    /// Fixup of `sca_handle_subscribe(to_uri[, from_uri])`: strings with
    /// variables.
    fixup pub fn fixup_hs, fixup_free_hs("sca_handle_subscribe fixup") {
        1 | 2 => Fixup::Str,
    }
}

/// The module clock (wall-clock seconds).
pub use crate::host::clock::now;

fn reply_error(msg: &mut SipMsg<'_>, r: Reject) -> i32 {
    let extra = match r.0 {
        480 => "Retry-After: 1\r\n".to_string(),
        // a bound on capacity (docs/security.md): try again after a purge
        503 => crate::module::limits::retry_after_header(config().map_or(120, |c| c.purge_expired_interval)),
        _ => String::new(),
    };
    let _ = sl::reply(msg, r.0, r.1, extra.as_bytes());
    metrics::subscribe_replied(r.0);
    -1
}

/// A request a bound refuses: counted, logged (rate-limited), answered.
fn refuse(l: &Limits, r: Refusal, req: &Request<'_>, event: EventType, now: i64) -> Reject {
    crate::module::limits::refused(l, r, &format!("{} SUBSCRIBE", event.name()), req.subscriber, req.aor, now);
    let (code, phrase) = r.reply();
    Reject(code, phrase)
}

/// What a SUBSCRIBE asks for, parsed (strings borrow the message).
struct Request<'m> {
    aor: &'m [u8],
    subscriber: &'m [u8],
    /// Requested lifetime after clamping, seconds (0 = unsubscribe).
    expires: u32,
    call_id: &'m [u8],
    from_tag: &'m [u8],
    /// Our To-tag: the request's (in-dialog) or the one sl will send
    /// (sl's per-process buffer, the same for this request until the next).
    to_tag: &'m [u8],
    in_dialog: bool,
    record_route: Vec<u8>,
    cseq: u32,
    /// The R-URI as received (the 202's Contact, like the C module).
    ruri: &'m [u8],
}

fn parse_request<'m>(cfg: &Config, msg: &mut SipMsg<'m>, event: EventType) -> Result<Request<'m>, Reject> {
    let max = match event {
        EventType::CallInfo => cfg.call_info_max_expires,
        EventType::LineSeize => cfg.line_seize_max_expires,
    };
    // A missing Expires means 0 for the C module (RFC 6665 would use the
    // package default); we keep the C behaviour for interoperability.
    let expires = match msg.expires() {
        None => 0,
        Some(v) => parse::expires::parse(v).map_err(|e| {
            lm_err!("bad Expires header '{}': {e}", B(v));
            BAD_SCA_REQUEST
        })?,
    };
    let expires = parse::expires::clamp(expires, max);

    let call_id = msg.call_id().ok_or_else(|| {
        lm_err!("SUBSCRIBE without Call-ID");
        BAD_SCA_REQUEST
    })?;
    let cseq = msg
        .cseq()
        .and_then(|(n, _)| core::str::from_utf8(n).ok()?.parse::<u32>().ok())
        .ok_or_else(|| {
            lm_err!("SUBSCRIBE with a missing or bad CSeq");
            BAD_SCA_REQUEST
        })?;
    let subscriber = match msg.contact_uri() {
        Ok(Some(c)) => c,
        Ok(None) => {
            // The C module accepts this and stores a subscription that can
            // never be NOTIFYed; we refuse it (docs/compat.md).
            lm_err!("SUBSCRIBE from {} without Contact", B(call_id));
            return Err(BAD_SCA_REQUEST);
        }
        Err(()) => {
            lm_err!("SUBSCRIBE with an invalid Contact header");
            return Err(BAD_SCA_REQUEST);
        }
    };
    let from = msg.from().ok_or_else(|| {
        lm_err!("SUBSCRIBE with a missing or bad From header");
        BAD_SCA_REQUEST
    })?;
    if from.tag.is_empty() {
        lm_err!("SUBSCRIBE without From-tag");
        return Err(BAD_SCA_REQUEST);
    }
    let to = msg.to().ok_or_else(|| {
        lm_err!("SUBSCRIBE with a missing or bad To header");
        BAD_SCA_REQUEST
    })?;
    let ruri = msg.ruri();
    if ruri.is_empty() {
        lm_err!("SUBSCRIBE without Request-URI");
        return Err(BAD_SCA_REQUEST);
    }

    let (aor, to_tag, in_dialog, record_route) = if to.tag.is_empty() {
        let tag = sl::reply_totag(msg).ok_or_else(|| {
            lm_err!("cannot get a To-tag for the reply to SUBSCRIBE {}", B(ruri));
            Reject(400, "Bad Shared Call Appearance Request")
        })?;
        let aor = parse::uri::extract_aor(ruri).map_err(|e| {
            lm_err!("cannot get an AoR from Request-URI {}: {e}", B(ruri));
            BAD_SCA_REQUEST
        })?;
        (aor, tag, false, msg.record_route_set())
    } else {
        (to.uri, to.tag, true, msg.record_route_set())
    };
    if parse::uri::host_of(aor).is_err() {
        lm_err!("AoR {} of SUBSCRIBE has no host", B(aor));
        return Err(BAD_SCA_REQUEST);
    }
    Ok(Request {
        aor,
        subscriber,
        expires,
        call_id,
        from_tag: from.tag,
        to_tag,
        in_dialog,
        record_route,
        cseq,
        ruri,
    })
}

/// What the locked part of the SUBSCRIBE decided.
struct Outcome {
    /// The appearance index to show a line-seize subscriber (or -1).
    index: i32,
}

pub fn handle_subscribe(st: &Shared, cfg: &Config, msg: &mut SipMsg<'_>, now: i64) -> i32 {
    handle_subscribe_uris(st, cfg, msg, None, None, now)
}

/// `sca_handle_subscribe([to_uri[, from_uri]])`: `to_uri` names the SCA AoR
/// instead of the Request-URI (initial) or To URI (in-dialog); both URIs
/// are also stored in `to_uri_avp` / `from_uri_avp` when configured.
pub fn handle_subscribe_uris<'m>(
    st: &Shared,
    cfg: &Config,
    msg: &mut SipMsg<'m>,
    to_uri: Option<&'m [u8]>,
    from_uri: Option<&'m [u8]>,
    now: i64,
) -> i32 {
    for (avp, uri) in [(cfg.from_uri_avp, from_uri), (cfg.to_uri_avp, to_uri)] {
        if let Some(a) = avp {
            a.del();
            if let Some(u) = uri.filter(|u| !u.is_empty()) {
                a.put(u);
            }
        }
    }
    let to_uri = to_uri.filter(|u| !u.is_empty());
    if msg.parse_all().is_err() {
        lm_err!("header parsing failed: bad request");
        return reply_error(msg, Reject(400, "Bad Request"));
    }
    #[cfg(feature = "test-hooks")]
    if msg.headers_named(b"X-Sca-Rs-Test-Panic", None).next().is_some() {
        // a slot lock is held while panicking: the guard must release it
        let _held = st.store.lock_aor(b"sip:panic@test");
        panic!("test hook: forced panic in sca_handle_subscribe");
    }
    if msg.method() != b"SUBSCRIBE" {
        lm_err!("sca_handle_subscribe called for a {} request", B(msg.method()));
        return reply_error(msg, Reject(500, "Internal server error - config"));
    }
    let Some(ev) = msg.event() else {
        return reply_error(msg, Reject(400, "Missing Event"));
    };
    let event = match parse::event::parse(ev) {
        Ok(e) => e,
        Err(_) => return reply_error(msg, Reject(400, "Bad Event")),
    };
    let mut req = match parse_request(cfg, msg, event) {
        Ok(r) => r,
        Err(r) => return reply_error(msg, r),
    };
    if let Some(t) = to_uri {
        match parse::uri::aor_of_name_addr(t).or_else(|_| parse::uri::extract_aor(t)) {
            Ok(aor) if parse::uri::host_of(aor).is_ok() => req.aor = aor,
            _ => {
                lm_err!("sca_handle_subscribe: bad to_uri parameter '{}'", B(t));
                return reply_error(msg, BAD_SCA_REQUEST);
            }
        }
    }
    // line-seize: the index to seize, from the (required) Call-Info
    let mut seize_index: Option<u32> = None;
    if event == EventType::LineSeize {
        let Some(ci) = msg.call_info() else {
            return reply_error(msg, Reject(400, "Bad Request - missing Call-Info header"));
        };
        match parse::callinfo::parse(ci) {
            Ok(c) => {
                seize_index = match c.index {
                    parse::callinfo::AppearanceIndex::Number(n) => Some(n),
                    parse::callinfo::AppearanceIndex::Any => None,
                }
            }
            Err(e) => {
                lm_err!("line-seize SUBSCRIBE with a bad Call-Info '{}': {e}", B(ci));
                return reply_error(msg, Reject(400, "Bad Request - Invalid Call-Info header"));
            }
        }
    }

    // cluster, dmq_sync_wait: no new seize before this node has synced
    if event == EventType::LineSeize && req.expires > 0 && !req.in_dialog {
        if let Some(left) = crate::module::cluster::refuse_seize_while_syncing() {
            lm_info!(
                "line-seize from {} refused: this node has not synced with the cluster yet ({left} s left of dmq_sync_wait)",
                B(req.subscriber)
            );
            let retry_after = format!("Retry-After: {left}\r\n");
            let _ = sl::reply(msg, 480, "Temporarily Unavailable", retry_after.as_bytes());
            metrics::subscribe_replied(480);
            metrics::SEIZES_REFUSED.inc();
            return -1;
        }
    }
    let state = if req.expires > 0 { SubState::Active } else { SubState::Terminated };
    // notify_cseq: the CSeq of the last NOTIFY (the first one carries 1)
    let mut rec = SubscriptionRec {
        aor: req.aor,
        subscriber: req.subscriber,
        event,
        expires: now + i64::from(req.expires),
        state,
        index: seize_index.map_or(-1, |i| i as i32),
        call_id: req.call_id,
        from_tag: req.from_tag,
        to_tag: req.to_tag,
        record_route: &req.record_route,
        notify_cseq: 0,
        subscribe_cseq: req.cseq,
    };

    let mut guard = crate::module::effects::edit(st, req.aor, now);
    let decided = decide(&mut guard, &mut rec, &req, seize_index, &cfg.limits, now);
    // stored and replicated now; NOTIFYs and liveness after the reply
    let changes = guard.defer_effects();
    drop(guard);
    let outcome = match decided {
        Ok(o) => o,
        Err(r) => return reply_error(msg, r),
    };

    let (code, reason) = event.ok_reply();
    let mut extra = Vec::with_capacity(160);
    parse::format::write_event_header(&mut extra, event);
    parse::format::write_contact_header(&mut extra, cfg.server_address.as_deref().unwrap_or(req.ruri));
    extra.extend_from_slice(b"Allow-Events: call-info, line-seize\r\n");
    parse::format::write_expires_header(&mut extra, req.expires);
    if sl::reply(msg, code, reason, &extra).is_err() {
        return reply_error(msg, Reject(500, "Internal server error"));
    }
    metrics::subscribe_replied(code);

    // NOTIFY the subscriber, then (a seize or release) the group; a new
    // subscription's phone is watched (liveness)
    if crate::module::effects::subscribe_notifies(st, cfg, &rec, outcome.index, changes, now).is_err() {
        return -1;
    }
    if state == SubState::Terminated {
        lm_info!("{} unsubscribed from {} for {}", B(req.subscriber), event.name(), B(req.aor));
    } else {
        lm_dbg!("{} subscribed to {} for {} ({}s)", B(req.subscriber), event.name(), B(req.aor), req.expires);
    }
    1
}

/// The locked part: store, refresh or end the subscription; seize or
/// release a line (through the edit, which records it: the group's
/// NOTIFY and liveness follow from the change set after the reply). `rec`
/// is updated to what the NOTIFY must say.
fn decide(
    guard: &mut Edit<'_>,
    rec: &mut SubscriptionRec<'_>,
    req: &Request<'_>,
    seize_index: Option<u32>,
    lim: &Limits,
    now: i64,
) -> Result<Outcome, Reject> {
    let event = rec.event;
    let mut out = Outcome { index: rec.index };
    // a subscription last refreshed through another node (cluster) moves
    // here; that node's NOTIFYs were not replicated, so the CSeq jumps
    let existing = guard.find_sub(event, req.subscriber).map(|s| {
        let cseq = if crate::module::effects::is_local(s.ver()) { s.notify_cseq() } else { s.notify_cseq().wrapping_add(sca_core::cluster::ORIGIN_CSEQ_JUMP) };
        (cseq, s.record_route().to_vec(), s.index(), s.state().is_terminated())
    });
    if existing.is_none() && (req.in_dialog || req.expires == 0) {
        return if req.in_dialog {
            Err(Reject(481, "Call Leg/Transaction Does Not Exist"))
        } else {
            // an out-of-dialog unsubscribe for nothing: answer, store nothing
            Ok(out)
        };
    }
    if existing.is_none() {
        // a new subscription: the bounds (docs/security.md), checked before
        // an entry is made for a new AoR, so a refusal leaves nothing
        let aor_subs = guard.entry().map_or(0, |e| e.subs().len());
        let counts = crate::module::limits::counts(req.subscriber, aor_subs);
        limits::check_new_sub(lim, &counts).map_err(|r| refuse(lim, r, req, event, now))?;
    }
    // (an entry made here for a new AoR whose seize is refused stays empty
    // and is dropped at the end of the edit)
    let mut ed = guard.core_or_insert().map_err(|_| Reject(500, "Internal Server Error - save subscription"))?;
    let seize = |ed: &mut AorEdit<'_, Shm>| -> Result<u32, Reject> {
        limits::check_seize(lim, ed.entry().apps(), seize_index, req.subscriber)
            .map_err(|r| refuse(lim, r, req, event, now))?;
        ed.seize(seize_index, req.subscriber, now).map_err(|err| match err {
            SeizeError::Unavailable => {
                metrics::SEIZES_REFUSED.inc();
                Reject(480, "Temporarily Unavailable")
            }
            SeizeError::NoMemory => Reject(500, "Internal Server Error - seize appearance index"),
        }).inspect(|_| metrics::SEIZES_GRANTED.inc())
    };
    match existing {
        Some((notify_cseq, old_rr, old_index, was_ended)) => {
            // refresh, re-subscription (new dialog) or unsubscribe: the
            // subscription takes the request's dialog and lifetime; its
            // NOTIFY CSeq goes on. A refresh without Record-Route keeps the
            // stored route set; one with it replaces it.
            rec.notify_cseq = notify_cseq;
            if event == EventType::LineSeize {
                if req.expires == 0 {
                    let idx = seize_index.unwrap_or(0);
                    if !ed.release(idx) {
                        return Err(Reject(500, "Internal Server Error - release seized line"));
                    }
                } else if !req.in_dialog {
                    // a new seize from the same phone (not a refresh)
                    let idx = seize(&mut ed)?;
                    rec.index = idx as i32;
                    out.index = rec.index;
                } else if rec.index <= 0 {
                    rec.index = old_index;
                    out.index = old_index;
                }
            } else if !req.in_dialog {
                // an out-of-dialog SUBSCRIBE from a phone that holds lines
                // means it rebooted: its lines are free again (the group
                // is told)
                let released = ed.release_owner(req.subscriber);
                if released > 0 {
                    lm_info!("released {released} appearances for subscriber {}", B(req.subscriber));
                }
            }
            let stored = if rec.record_route.is_empty() {
                SubscriptionRec { record_route: &old_rr, ..rec.clone() }
            } else {
                rec.clone()
            };
            if let Err(e) = ed.put_sub(&stored) {
                lm_err!("cannot update the subscription of {}: {e:?}", B(req.subscriber));
                return Err(Reject(500, "Internal Server Error - update subscription"));
            }
            // an unsubscribe no longer counts against the bounds (the
            // purge removes it); a terminated one taken up again does
            if req.expires == 0 && !was_ended {
                crate::module::limits::counted(req.subscriber, -1);
            } else if req.expires > 0 && was_ended {
                crate::module::limits::counted(req.subscriber, 1);
            }
        }
        None => {
            if event == EventType::LineSeize {
                let idx = seize(&mut ed)?;
                rec.index = idx as i32;
                out.index = rec.index;
            }
            if let Err(e) = ed.put_sub(rec) {
                lm_err!("cannot save the subscription of {}: {e:?}", B(req.subscriber));
                if event == EventType::LineSeize && rec.index > 0 {
                    // undone; the change set is dropped with the error
                    ed.release(rec.index as u32);
                }
                return Err(Reject(500, "Internal Server Error - save subscription"));
            }
            crate::module::limits::counted(req.subscriber, 1);
        }
    }
    // a line-seize SUBSCRIBE (seize, refresh or release) re-NOTIFYs the
    // group, as the C module does
    if event == EventType::LineSeize {
        ed.notify_group();
    }
    Ok(out)
}
