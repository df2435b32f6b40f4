//! Full sync: asking the peers for their stores when dmq's node list
//! forms, answering their requests chunk by chunk, the sync timer.

use super::*;

/// Ask every peer for its store (init callback; `retry`: the sync timer,
/// when the last request got no usable answer in time).
pub(super) fn start_sync(why: &str, retry: bool) {
    let (Some(c), Some(n)) = (cluster(), node()) else { return };
    let session = {
        let mut s = c.sync.lock();
        let now = now_ms();
        let timeout_ms = u64::from(n.cfg.sync_timeout) * 1000;
        if s.phase == SyncPhase::Requesting && now.saturating_sub(s.progress_ms) < timeout_ms {
            return;
        }
        if !retry {
            s.retries = 0;
        }
        s.phase = SyncPhase::Requesting;
        s.session = (now as u32).rotate_left(7) ^ n.boot_id ^ s.session.wrapping_add(1);
        s.source_len = 0;
        s.chunks = 0;
        s.records = 0;
        s.started_ms = now;
        s.progress_ms = now;
        s.finished_ms = 0;
        s.session
    };
    let req = SyncReq { session, cursor: 0, max_bytes: n.cfg.sync_chunk_bytes };
    let Some(h) = header(Kind::SyncReq) else { return };
    match codec::encode(&h, &[Record::SyncReq(req)]) {
        Ok(m) => {
            lm_info!("cluster: requesting a full sync from the other nodes ({why})");
            c.counters.tx_msgs.fetch_add(1, Relaxed);
            c.counters.tx_bytes.fetch_add(m.len() as u64, Relaxed);
            if dmq::bcast(&m, TAG_SYNC).is_err() {
                c.counters.tx_failed.fetch_add(1, Relaxed);
                lm_err!("cluster: cannot broadcast the sync request");
            }
        }
        Err(e) => lm_err!("cluster: cannot encode a sync request: {e}"),
    }
}

entry! {
    /// dmq: the node list arrived (a cluster formed): pull a full sync.
    #[no_mangle]
    c pub fn sca_rs_dmq_on_init() -> c_int ["dmq init callback", 0] {
        start_sync("dmq node list received", false);
        0
    }
}

/// `dmq_sync_wait`: a node that has not synced yet (no answer so far, or
/// a sync under way) would grant seizes on a store that may lack its
/// peers' lines, and lose them later as conflicts. For `dmq_sync_wait`
/// seconds after its start it refuses new line-seizes instead: Some(the
/// seconds left), for the 480's Retry-After, counted. A finished or
/// failed sync ends the wait (a failed one: no peer will answer).
pub fn refuse_seize_while_syncing() -> Option<u32> {
    let (c, n) = (cluster()?, node()?);
    let wait_ms = u64::from(n.cfg.sync_wait) * 1000;
    let waited = now_ms().saturating_sub(n.started_ms);
    if waited >= wait_ms {
        return None;
    }
    if matches!(c.sync.lock().phase, SyncPhase::Synced | SyncPhase::Failed) {
        return None;
    }
    c.counters.seizes_refused_syncing.fetch_add(1, Relaxed);
    Some((wait_ms - waited).div_ceil(1000) as u32)
}

entry! {
    /// Every second (timer process): a sync that got no usable answer within
    /// `dmq_sync_timeout` is asked again, up to `dmq_sync_retries` times,
    /// then given up (the node still converges through live changes).
    timer pub(super) fn sync_timer("cluster sync timer") {
        let (Some(c), Some(n)) = (cluster(), node()) else { return };
        let retry = {
            let mut s = c.sync.lock();
            let waited = now_ms().saturating_sub(s.progress_ms);
            if s.phase != SyncPhase::Requesting || waited < u64::from(n.cfg.sync_timeout) * 1000 {
                return;
            }
            if s.retries >= n.cfg.sync_retries {
                s.phase = SyncPhase::Failed;
                lm_err!(
                    "cluster: full sync failed: no peer answered with its store ({} attempts); \
                     this node serves with what live changes bring",
                    s.retries + 1
                );
                false
            } else {
                s.retries += 1;
                true
            }
        };
        if retry {
            start_sync("no answer in time, asking again", true);
        }
    }
}

pub(super) fn on_sync_reply(code: c_int, body: &[u8], uri: &[u8], peer: Option<NodeRef>) {
    let (Some(c), Some(n)) = (cluster(), node()) else { return };
    if code != 200 {
        if code >= 300 {
            c.counters.tx_failed.fetch_add(1, Relaxed);
        }
        lm_info!("cluster: sync request to {} answered {code}", B(uri));
        return;
    }
    let m = match codec::decode(body) {
        Ok(m) => m,
        Err(e) => {
            c.counters.rx_rejected.fetch_add(1, Relaxed);
            lm_err!("sca_rs: rejected DMQ sync chunk from {}: {e}", B(uri));
            return;
        }
    };
    if is_echo(&m, n) {
        return;
    }
    if let Err(why) = replica::check(&m, n.id) {
        c.counters.rx_rejected.fetch_add(1, Relaxed);
        lm_err!("sca_rs: rejected DMQ sync chunk from {}: {why}", B(uri));
        return;
    }
    let Some(Record::SyncChunk(chunk)) = m.records.iter().find(|r| matches!(r, Record::SyncChunk(_))).cloned() else {
        return;
    };
    c.counters.rx_msgs.fetch_add(1, Relaxed);
    c.counters.rx_bytes.fetch_add(body.len() as u64, Relaxed);
    // merged whoever sent it (harmless), but only the source is followed
    let stats = apply(&m, false, uri);
    let follow = {
        let mut s = c.sync.lock();
        if s.phase != SyncPhase::Requesting || chunk.session != s.session {
            None
        } else {
            // dmq's node URI may carry ;status=... : the address is enough
            let addr = uri.split(|&b| b == b';').next().unwrap_or_default();
            let addr = &addr[..addr.len().min(SOURCE_MAX)];
            if s.source_len == 0 {
                s.source[..addr.len()].copy_from_slice(addr);
                s.source_len = addr.len();
            }
            if s.source() != addr {
                None
            } else {
                s.chunks += 1;
                s.records += stats.records;
                s.progress_ms = now_ms();
                if chunk.next_cursor == SYNC_DONE {
                    s.phase = SyncPhase::Synced;
                    s.finished_ms = now_ms();
                    lm_info!(
                        "cluster: synced from {}: {} records in {} chunks, {} ms",
                        B(uri),
                        s.records,
                        s.chunks,
                        s.finished_ms.saturating_sub(s.started_ms)
                    );
                    Some(None)
                } else {
                    Some(Some(SyncReq { session: s.session, cursor: chunk.next_cursor, max_bytes: n.cfg.sync_chunk_bytes }))
                }
            }
        }
    };
    match follow {
        Some(Some(req)) => {
            let sent = peer.zip(header(Kind::SyncReq)).and_then(|(nd, h)| {
                let m = codec::encode(&h, &[Record::SyncReq(req)]).ok()?;
                c.counters.tx_msgs.fetch_add(1, Relaxed);
                dmq::send(&m, nd, TAG_SYNC).ok()
            });
            if sent.is_none() {
                c.counters.tx_failed.fetch_add(1, Relaxed);
                // the sync timer asks again after dmq_sync_timeout
                lm_err!("cluster: cannot ask {} for the next sync chunk", B(uri));
            }
        }
        Some(None) => notify_local_groups(),
        None => {}
    }
}

/// After a sync: every AoR with appearances tells its local subscribers.
pub(super) fn notify_local_groups() {
    let (Some(st), Some(cfg)) = (shared(), config()) else { return };
    let now = now();
    effects::sweep(st, cfg, now, |ed| {
        if !ed.entry().apps().is_empty() {
            ed.notify_group();
        }
    });
}

entry! {
    /// dmq: the final reply to a KDMQ we sent (a SIP worker, or tm's timer
    /// process for a timeout): `str`s valid for the call; `node` is dmq's
    /// node for this reply, valid during the call, or null.
    #[no_mangle]
    c pub fn sca_rs_dmq_on_reply(
        param: *mut c_void,
        code: c_int,
        body: StrArg,
        node_uri: StrArg,
        node: dmq::NodeArg,
    ) ["dmq reply"] {
        let Some(c) = cluster() else { return };
        let (b, uri, nd) = (body.bytes(), node_uri.bytes(), node.get());
        let mut back = false;
        with_peer(c, uri, |p| {
            if (200..300).contains(&code) {
                // answering again after failures (a link that came back
                // before dmq noticed it was gone)
                back = p.last_code >= 300;
                p.tx_ok += 1;
            } else {
                p.tx_failed += 1;
            }
            p.last_code = u16::try_from(code).unwrap_or(0);
        });
        if back {
            heal::make_due(c, "answers again", uri);
        }
        match param as usize {
            TAG_SYNC => on_sync_reply(code, b, uri, nd),
            TAG_DIGEST => heal::on_digest_reply(code, b, uri, nd),
            _ => {
                if code >= 300 {
                    c.counters.tx_failed.fetch_add(1, Relaxed);
                    match code {
                        // a node being lost (dmq's ping drops it soon), or
                        // one without sca_rs or enable_dmq: counted only
                        404 | 408 => lm_dbg!("cluster: {} answered {code} to a change", B(uri)),
                        _ => lm_err!("cluster: {} answered {code} to a change", B(uri)),
                    }
                }
            }
        }
    }
}

/// A SYNC_REQ: the store from slot `cursor` on, about `max_bytes` of it.
pub(super) fn sync_chunk(req: &SyncReq) -> Result<Vec<u8>, String> {
    heal::store_chunk(req.session, req.cursor, req.max_bytes, None)
}
