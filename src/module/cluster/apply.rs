//! Apply: a peer's KDMQ, validated, then merged one AoR at a time through
//! `effects::edit_from_peer` (effects, never sent on).

use super::*;

/// A message this very process tree sent (same node id, same boot).
pub(super) fn is_echo(m: &Message<'_>, n: &Node) -> bool {
    m.header.node_id == n.id && m.header.boot_id == n.boot_id
}


/// Merge the state records of `m`; NOTIFY local subscribers of changed
/// AoRs when `notify`.
pub(super) fn apply(m: &Message<'_>, notify_groups: bool, from: &[u8]) -> ApplyStats {
    let mut s = ApplyStats::default();
    let (Some(st), Some(c), Some(n)) = (shared(), cluster(), node()) else { return s };
    let now = now();
    for r in &m.records {
        let outcome = match r {
            Record::SubPut(p) => {
                let mut g = effects::edit_from_peer(st, p.sub.aor, now);
                let mut t = tombs(c, n);
                let local_before = g.find_sub(p.sub.event, p.sub.subscriber).map(|x| x.notify_cseq());
                let r = replica::apply_sub_put(&mut g, p, n.id, &mut t);
                drop(t);
                if matches!(r, Ok(Applied::Changed)) && p.origin == n.id {
                    // our own subscription coming back (after a restart): our
                    // NOTIFYs since its last SUBSCRIBE were not replicated
                    if let Some(mut ed) = g.core() {
                        ed.resume_notify_cseq(p.sub.event, p.sub.subscriber, local_before.unwrap_or(0));
                    }
                }
                r.unwrap_or_else(|_| {
                    lm_err!("cluster: out of shared memory storing a subscription of {}", B(p.sub.aor));
                    Applied::Stale
                })
            }
            Record::SubDel(d) => {
                let mut ed = effects::edit_from_peer(st, d.aor, now);
                let r = {
                    let mut t = tombs(c, n);
                    replica::apply_sub_del_take(&mut ed, d, &mut t)
                };
                match r {
                    // a subscription of ours ended on another node (a
                    // line-seize ended by a call's progress there): its last
                    // NOTIFY and its DB row are this node's
                    Some(sub) => {
                        ed.changes().ended.push(last_notify(sub));
                        Applied::Changed
                    }
                    None => Applied::Stale,
                }
            }
            Record::AorApps(a) => {
                let mut ed = effects::edit_from_peer(st, a.aor, now);
                let o = {
                    let mut t = tombs(c, n);
                    replica::apply_aor_apps(&mut ed, a, n.id, &mut t)
                };
                match o {
                    Ok(o) => {
                        s.stale += u64::from(o.stale);
                        c.counters.conflicts_won.fetch_add(u64::from(o.won), Relaxed);
                        if o.changed && notify_groups {
                            ed.notify_group();
                        }
                        ed.finish();
                        if !o.lost.is_empty() {
                            lost(st, a.aor, &o.lost, from, now);
                        }
                        if o.changed { Applied::Changed } else { Applied::Stale }
                    }
                    Err(_) => {
                        lm_err!("cluster: out of shared memory storing the appearances of {}", B(a.aor));
                        Applied::Stale
                    }
                }
            }
            Record::SyncReq(_) | Record::SyncChunk(_) | Record::Digest(_) => continue,
        };
        s.records += 1;
        match outcome {
            Applied::Changed => s.applied += 1,
            Applied::Stale => s.stale += 1,
        }
    }
    c.counters.rx_applied.fetch_add(s.applied, Relaxed);
    c.counters.rx_stale.fetch_add(s.stale, Relaxed);
    s
}

/// A subscription a peer deleted, as ended here: line-seize `noresource`,
/// as when the call's progress ends it locally; call-info `deactivated`.
/// A last NOTIFY is due unless it was already terminated (effects sends
/// it if the subscription is ours).
pub(super) fn last_notify(sub: sca_core::store::Subscription<Shm>) -> sca_core::change::Ended<Shm> {
    sca_core::change::Ended::deleted_by_peer(sub)
}

/// Seizes of ours that lost to a peer's earlier ones: the phone is told as
/// a local loser would be, after the fact: its line-seize subscription
/// ends with `noresource` (the local case answers 480), and the group,
/// already NOTIFYed of the winner, stays as it is. Through [`lock`], so the
/// ended subscription is deleted on the peers too.
pub(super) fn lost(st: &Shared, aor: &[u8], lost: &[replica::Lost], from: &[u8], now: i64) {
    let Some(c) = cluster() else { return };
    c.counters.conflicts_lost.fetch_add(lost.len() as u64, Relaxed);
    let mut g = effects::edit(st, aor, now);
    for l in lost {
        lm_notice!(
            "cluster: {} lost appearance {} of {} to an earlier seize on {}",
            B(&l.owner),
            l.index,
            B(aor),
            B(from)
        );
        let local = g
            .find_sub(EventType::LineSeize, &l.owner)
            .is_some_and(|s| s.index() == l.index as i32 && effects::is_local(s.ver()));
        if local {
            if let Some(mut ed) = g.core() {
                ed.end_sub(EventType::LineSeize, &l.owner, SubState::TerminatedNoresource, false);
            }
        }
    }
}

pub(super) fn reject(c: &ClusterShared, from: &[u8], why: &str) -> (c_int, &'static core::ffi::CStr) {
    c.counters.rx_rejected.fetch_add(1, Relaxed);
    lm_err!("sca_rs: rejected DMQ message from {}: {why}", B(from));
    (400, c"Bad Request")
}

pub(super) fn content_type_ok(ct: &[u8]) -> bool {
    let main = ct.split(|&b| b == b';').next().unwrap_or_default();
    main.trim_ascii().eq_ignore_ascii_case(codec::CONTENT_TYPE.as_bytes())
}

pub(super) fn on_request(body: &[u8], ctype: &[u8], from: &[u8]) -> (c_int, &'static core::ffi::CStr, Option<Vec<u8>>) {
    let (Some(c), Some(n)) = (cluster(), node()) else {
        return (503, c"Service Unavailable", None);
    };
    c.counters.rx_msgs.fetch_add(1, Relaxed);
    c.counters.rx_bytes.fetch_add(body.len() as u64, Relaxed);
    if !content_type_ok(ctype) {
        let (code, reason) = reject(c, from, &format!("content type '{}' is not {}", B(ctype), codec::CONTENT_TYPE));
        return (code, reason, None);
    }
    let m = match codec::decode(body) {
        Ok(m) => m,
        Err(e) => {
            let (code, reason) = reject(c, from, &e.to_string());
            return (code, reason, None);
        }
    };
    if is_echo(&m, n) {
        // dmq sent us our own message (a notification_address that also
        // names this node): nothing to do
        return (200, c"OK", None);
    }
    if let Err(why) = replica::check(&m, n.id) {
        let (code, reason) = reject(c, from, &why);
        return (code, reason, None);
    }
    let mut back = false;
    with_peer(c, from, |p| {
        let now = now_ms();
        // heard from again after a silence: a partition may have healed
        back = heal::silent_too_long(p.last_rx_ms, now) && p.boot_id == m.header.boot_id;
        p.node_id = m.header.node_id;
        p.boot_id = m.header.boot_id;
        p.rx += 1;
        p.last_rx_ms = now;
    });
    if back {
        heal::make_due(c, "heard from again after a silence", from);
    }
    match m.header.kind {
        Kind::Changes => {
            apply(&m, true, from);
            (200, c"OK", None)
        }
        Kind::SyncReq => {
            let Some(Record::SyncReq(req)) = m.records.iter().find(|r| matches!(r, Record::SyncReq(_))) else {
                let (code, reason) = reject(c, from, "SYNC_REQ without its record");
                return (code, reason, None);
            };
            match sync_chunk(req) {
                Ok(chunk) => {
                    c.counters.tx_bytes.fetch_add(chunk.len() as u64, Relaxed);
                    (200, c"OK", Some(chunk))
                }
                Err(e) => {
                    lm_err!("cluster: cannot build a sync chunk for {}: {e}", B(from));
                    (500, c"Server Internal Error", None)
                }
            }
        }
        Kind::Digest => {
            let Some(Record::Digest(req)) = m.records.iter().find(|r| matches!(r, Record::Digest(_))) else {
                let (code, reason) = reject(c, from, "DIGEST without its record");
                return (code, reason, None);
            };
            match heal::answer(req) {
                Ok(chunk) => {
                    c.counters.tx_bytes.fetch_add(chunk.len() as u64, Relaxed);
                    (200, c"OK", Some(chunk))
                }
                Err(e) => {
                    lm_err!("cluster: cannot answer a digest of {}: {e}", B(from));
                    (500, c"Server Internal Error", None)
                }
            }
        }
        Kind::SyncChunk => {
            let (code, reason) = reject(c, from, "a SYNC_CHUNK comes in a reply, not a request");
            (code, reason, None)
        }
    }
}

entry! {
    /// dmq: a peer's KDMQ for `sca_rs` (DMQ worker process). Called by the
    /// shim with `str`s valid for the call and writable `code`, `reason`
    /// and `reply_body` (a body in pkg memory, I12).
    #[no_mangle]
    c pub fn sca_rs_dmq_on_request(
        body: StrArg,
        content_type: StrArg,
        from_uri: StrArg,
        code: Out<c_int>,
        reason: Out<*const c_char>,
        reply_body: Out<raw::str_>,
    ) ["dmq request"] {
        let (mut code, mut reason, mut reply_body) = (code, reason, reply_body);
        if code.is_null() || reason.is_null() || reply_body.is_null() {
            return;
        }
        let (rc, rr, rb) = guard_or("dmq request", (500, c"Server Internal Error", None), || {
            on_request(body.bytes(), content_type.bytes(), from_uri.bytes())
        });
        code.set(rc);
        reason.set(rr.as_ptr());
        if let Some(p) = rb.as_deref().and_then(dmq::pkg_copy) {
            reply_body.set(p);
        }
    }
}

