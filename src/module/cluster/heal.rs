//! Anti-entropy: after a partition, nodes find what differs and merge it
//! (docs/cluster.md, "Partitions").
//!
//! Every `dmq_digest_interval` seconds (and at once when a peer is heard
//! from again after a silence, or answers again after failures) this node
//! broadcasts a `DIGEST` of its store (`sca_core::cluster::digest`). A
//! peer answers with the records of its AoRs in the buckets whose sums
//! differ (a `SYNC_CHUNK` message, up to `dmq_sync_chunk_bytes`; more
//! follow on request). This node merges them like any peer's change:
//! through `effects::edit_from_peer`, NOTIFYing its own call-info
//! subscribers of every AoR that changed, ending a local seize that lost
//! with `noresource`. What a tombstone here keeps out of the answer (a
//! release or delete made on this side) goes back to the peer as a
//! `CHANGES` message. The peer does the same towards this node, so both
//! end with the merge.

use sca_core::cluster::codec::DigestRec;
use sca_core::cluster::digest::{self, Differing, Digest};

use super::*;

/// A peer silent for this many digest intervals is taken as back when it
/// is heard from again: exchange digests at once.
const SILENCE_INTERVALS: u64 = 2;

pub(super) struct HealState {
    /// When the last digest went out (ms).
    last_ms: u64,
    /// Exchange at the next tick, whatever the interval.
    due: bool,
    session: u32,
    /// This node's last digest and when it was computed (ms): answers and
    /// follow-up requests within a digest interval reuse it rather than
    /// walk the store again (an answer chooses what to send by it; the
    /// records themselves are read fresh).
    own: [u64; digest::BUCKETS],
    own_ms: u64,
}

impl HealState {
    pub(super) fn new() -> HealState {
        HealState {
            last_ms: 0,
            due: false,
            session: 0,
            own: [0; digest::BUCKETS],
            own_ms: 0,
        }
    }
}

/// Counters of the digest exchange (`sca.cluster`).
#[derive(Default)]
pub struct HealCounters {
    pub digests_sent: AtomicU64,
    pub digests_answered: AtomicU64,
    /// Buckets that differed, summed over the digests answered here.
    pub buckets_differed: AtomicU64,
    /// Records received in answers to our digests, and those that changed
    /// the store.
    pub heal_records: AtomicU64,
    pub heal_applied: AtomicU64,
    pub corrections_sent: AtomicU64,
    /// Time the last digest of this store took to compute (µs).
    pub digest_us: AtomicU64,
}

/// Exchange digests at the next tick (a peer came back).
pub(super) fn make_due(c: &ClusterShared, why: &str, peer: &[u8]) {
    let mut h = c.heal.lock();
    if !h.due {
        h.due = true;
        lm_info!("cluster: {} is back ({why}): exchanging digests", B(peer));
    }
}

/// Was a peer last heard from so long ago that it counts as back now?
pub(super) fn silent_too_long(last_rx_ms: u64, now: u64) -> bool {
    let Some(n) = node() else { return false };
    let window = u64::from(n.cfg.digest_interval.max(1)) * 1000 * SILENCE_INTERVALS;
    last_rx_ms > 0 && now.saturating_sub(last_rx_ms) > window
}

/// This node's digest of its whole store: computed now (`fresh`), or the
/// one computed within the last digest interval.
fn local_digest(fresh: bool) -> Option<Digest> {
    let (Some(st), Some(c), Some(n)) = (shared(), cluster(), node()) else {
        return None;
    };
    let max_age = u64::from(n.cfg.digest_interval.max(1)) * 1000;
    if !fresh {
        let h = c.heal.lock();
        if h.own_ms > 0 && now_ms().saturating_sub(h.own_ms) < max_age {
            return Some(Digest::from_sums(&h.own));
        }
    }
    let started = std::time::Instant::now();
    let mut d = Digest::new();
    let now = now();
    let seized_ttl = seized_ttl();
    st.store.for_each_aor(|e| d.add(e, n.id, now, seized_ttl));
    c.heal_counters
        .digest_us
        .store(started.elapsed().as_micros() as u64, Relaxed);
    let mut h = c.heal.lock();
    if d.sums().len() == h.own.len() {
        h.own.copy_from_slice(d.sums());
        h.own_ms = now_ms();
    }
    Some(d)
}

/// The stale-line purge's age of a line stuck in seized (`seized_ttl`).
fn seized_ttl() -> i64 {
    config().map_or(sca_core::appearance::SEIZED_TTL, |c| i64::from(c.seized_ttl))
}

fn digest_message(session: u32, cursor: u32) -> Option<Vec<u8>> {
    let n = node()?;
    // the first request of an exchange is fresh; its follow-ups reuse it
    let d = local_digest(cursor == 0)?;
    let h = header(Kind::Digest)?;
    let rec = Record::Digest(DigestRec {
        session,
        cursor,
        max_bytes: n.cfg.sync_chunk_bytes,
        sums: d.sums().to_vec(),
    });
    match codec::encode(&h, &[rec]) {
        Ok(m) => Some(m),
        Err(e) => {
            lm_err!("cluster: cannot encode a digest: {e}");
            None
        }
    }
}

entry! {
    /// Every second (timer process): the digest exchange when its interval
    /// has passed or a peer came back. Not while a full sync is under way.
    timer pub(super) fn digest_timer("cluster digest timer") {
        let (Some(c), Some(n)) = (cluster(), node()) else { return };
        if n.cfg.digest_interval == 0 || c.sync.lock().phase == SyncPhase::Requesting {
            return;
        }
        let now = now_ms();
        let session = {
            let mut h = c.heal.lock();
            if !h.due && now.saturating_sub(h.last_ms) < u64::from(n.cfg.digest_interval) * 1000 {
                return;
            }
            h.due = false;
            h.last_ms = now;
            h.session = h.session.wrapping_add(1);
            h.session
        };
        let Some(m) = digest_message(session, 0) else { return };
        c.counters.tx_msgs.fetch_add(1, Relaxed);
        c.counters.tx_bytes.fetch_add(m.len() as u64, Relaxed);
        c.heal_counters.digests_sent.fetch_add(1, Relaxed);
        if dmq::bcast(&m, TAG_DIGEST).is_err() {
            c.counters.tx_failed.fetch_add(1, Relaxed);
            lm_err!("cluster: cannot broadcast a digest over dmq");
        }
    }
}

/// A peer's DIGEST: the answer (a SYNC_CHUNK message with the records of
/// our AoRs in the buckets that differ, from slot `cursor` on).
pub(super) fn answer(req: &DigestRec) -> Result<Vec<u8>, String> {
    let c = cluster().ok_or("not ready")?;
    // fresh for the first answer of an exchange, cached for its follow-ups
    let ours = local_digest(req.cursor == 0).ok_or("not ready")?;
    let diff = ours.differing(&req.sums);
    c.heal_counters.digests_answered.fetch_add(1, Relaxed);
    if req.cursor == 0 {
        c.heal_counters
            .buckets_differed
            .fetch_add(diff.count() as u64, Relaxed);
    }
    let cursor = if diff.is_empty() {
        u32::MAX
    } else {
        req.cursor
    };
    store_chunk(req.session, cursor, req.max_bytes, Some(&diff))
}

/// The records of our AoRs (those in `only`'s buckets, or all) from slot
/// `cursor` on, in about `max_bytes`, closed by a SYNC_CHUNK record naming
/// the slot to go on from ([`SYNC_DONE`]: none). An AoR is never split.
pub(super) fn store_chunk(
    session: u32,
    cursor: u32,
    max_bytes: u32,
    only: Option<&Differing>,
) -> Result<Vec<u8>, String> {
    let (Some(st), Some(n)) = (shared(), node()) else {
        return Err("not ready".into());
    };
    let h = header(Kind::SyncChunk).ok_or("not ready")?;
    let mut b = Builder::new(&h).map_err(|e| e.to_string())?;
    let limit = (max_bytes as usize).clamp(1024, 60000);
    let slots = st.store.slot_count();
    let mut slot = cursor as usize;
    // lines the purge is about to free are not sent (see digest::purge_due)
    let seized_ttl = seized_ttl();
    let now = now();
    // the closing SYNC_CHUNK record and some slack
    const RESERVE: usize = 64;
    while slot < slots && b.len() < limit {
        let mut full = false;
        st.store.visit_slot(slot, |e| {
            if full || only.is_some_and(|d| !d.contains(e.aor())) {
                return;
            }
            let mut tags = Vec::new();
            let recs = digest::entry_records(e, n.id, now, seized_ttl, &mut tags);
            if recs.iter().map(|r| r.encoded_len()).sum::<usize>() + RESERVE > b.room()
                && b.record_count() > 0
            {
                full = true;
                return;
            }
            for r in &recs {
                if let Err(err) = b.push(r) {
                    lm_err!(
                        "cluster: left out a {} record of {}: {err}",
                        codec::record_name(r.code()),
                        B(e.aor())
                    );
                }
            }
        });
        if full && b.record_count() > 0 {
            // this slot again in the next chunk (records are idempotent)
            break;
        }
        slot += 1;
    }
    let next = if slot >= slots {
        SYNC_DONE
    } else {
        slot as u32
    };
    b.push(&Record::SyncChunk(SyncChunk {
        session,
        next_cursor: next,
    }))
    .map_err(|e| e.to_string())?;
    b.finish().map_err(|e| e.to_string())
}

/// The answer to a DIGEST of ours: merge it (NOTIFYing our phones), send
/// the peer what our tombstones kept out, and ask for the rest if the
/// answer was cut.
pub(super) fn on_digest_reply(code: c_int, body: &[u8], uri: &[u8], peer: Option<NodeRef>) {
    let (Some(c), Some(n)) = (cluster(), node()) else {
        return;
    };
    if code != 200 {
        if code >= 300 {
            c.counters.tx_failed.fetch_add(1, Relaxed);
        }
        lm_dbg!("cluster: digest to {} answered {code}", B(uri));
        return;
    }
    let m = match codec::decode(body) {
        Ok(m) => m,
        Err(e) => {
            c.counters.rx_rejected.fetch_add(1, Relaxed);
            lm_err!("sca_rs: rejected DMQ digest answer from {}: {e}", B(uri));
            return;
        }
    };
    if is_echo(&m, n) {
        return;
    }
    if let Err(why) = replica::check(&m, n.id) {
        c.counters.rx_rejected.fetch_add(1, Relaxed);
        lm_err!("sca_rs: rejected DMQ digest answer from {}: {why}", B(uri));
        return;
    }
    let Some(Record::SyncChunk(chunk)) = m
        .records
        .iter()
        .find(|r| matches!(r, Record::SyncChunk(_)))
        .cloned()
    else {
        return;
    };
    c.counters.rx_msgs.fetch_add(1, Relaxed);
    c.counters.rx_bytes.fetch_add(body.len() as u64, Relaxed);
    let stats = apply(&m, true, uri);
    c.heal_counters
        .heal_records
        .fetch_add(stats.records, Relaxed);
    c.heal_counters
        .heal_applied
        .fetch_add(stats.applied, Relaxed);
    if stats.applied > 0 {
        lm_info!(
            "cluster: digest exchange with {}: {} of {} records changed this node",
            B(uri),
            stats.applied,
            stats.records
        );
    }
    let fixes: Vec<Record<'_>> = {
        let mut t = tombs(c, n);
        m.records
            .iter()
            .filter_map(|r| digest::correction(r, &mut t))
            .collect()
    };
    let Some(nd) = peer else { return };
    if !fixes.is_empty() {
        for msg in encode_changes(&fixes) {
            c.counters.tx_msgs.fetch_add(1, Relaxed);
            c.counters.tx_bytes.fetch_add(msg.len() as u64, Relaxed);
            c.heal_counters.corrections_sent.fetch_add(1, Relaxed);
            if dmq::send(&msg, nd, TAG_CHANGES).is_err() {
                c.counters.tx_failed.fetch_add(1, Relaxed);
                lm_err!("cluster: cannot send {} the releases it missed", B(uri));
            }
        }
    }
    if chunk.next_cursor != SYNC_DONE {
        // an exchange under way: the next periodic one waits for a full
        // interval after its last follow-up, rather than walk the store
        // again beside it
        c.heal.lock().last_ms = now_ms();
        if let Some(msg) = digest_message(chunk.session, chunk.next_cursor) {
            c.counters.tx_msgs.fetch_add(1, Relaxed);
            c.counters.tx_bytes.fetch_add(msg.len() as u64, Relaxed);
            c.heal_counters.digests_sent.fetch_add(1, Relaxed);
            if dmq::send(&msg, nd, TAG_DIGEST).is_err() {
                c.counters.tx_failed.fetch_add(1, Relaxed);
                lm_err!(
                    "cluster: cannot ask {} for the rest of a digest answer",
                    B(uri)
                );
            }
        }
    }
}
