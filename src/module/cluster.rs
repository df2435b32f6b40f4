//! Cluster replication over Kamailio's DMQ (opt-in, `enable_dmq`; see
//! docs/cluster.md).
//!
//! - **Capture.** Code that changes the store locks the AoR through
//!   `effects::edit`. The edit snapshots the AoR, and when it ends, after
//!   its effects, [`capture`] stamps what changed and encodes the records
//!   while the slot is still locked; the edit unlocks, and only then
//!   [`broadcast`]s (dmq holds its node-list lock while it calls tm).
//! - **Apply.** A peer's KDMQ reaches [`sca_rs_dmq_on_request`] in a DMQ
//!   worker. The whole message is validated first; a bad one gets a 400
//!   and a log line, and changes nothing. Records are merged one AoR at a
//!   time by `sca_core::cluster::replica`, in `effects::edit_from_peer`
//!   (effects, no capture), so they are never sent on again. A changed
//!   AoR NOTIFYs its *local* call-info subscribers: every node NOTIFYs only
//!   the subscriptions whose latest SUBSCRIBE it received, so each phone
//!   gets one NOTIFY per change.
//! - **Sync.** When dmq's node list forms, [`sca_rs_dmq_on_init`] asks
//!   every peer for its store. The first to answer is followed, chunk by
//!   chunk (each chunk a 200 reply body), until it says it is done.

use core::ffi::{c_char, c_int, c_void};
use core::ptr::null_mut;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::OnceLock;

use sca_core::cluster::codec::{self, Builder, Header, Kind, Message, Record, SyncChunk, SyncReq, SYNC_DONE};
use sca_core::cluster::replica::{self, node_of, Applied, Snapshot, Tomb, Tombs};
use sca_core::cluster::{Ver, MAX_NODE_ID, ORIGIN_CSEQ_JUMP};
use sca_core::model::{EventType, SubState};
use sca_core::store::AorGuard;
use sca_core::sync::Locked;

use crate::host::dmq::{self, NodeRef};
use crate::host::export::HostCell;
use crate::host::guard::guard_or;
use crate::host::kstr;
use crate::host::lock::KLock;
use crate::host::log::B;
use crate::host::shm::{self, Shm};
use crate::module::params::{Config, DmqConfig};
use crate::module::{config, effects, shared, subscribe::now, Shared};
use crate::{lm_dbg, lm_err, lm_info, lm_notice, sys};

/// Reply tags: what a KDMQ we sent was.
const TAG_CHANGES: usize = 1;
const TAG_SYNC: usize = 2;

/// Tombstone table: slots, in buckets of four.
const TOMB_SLOTS: usize = 8192;
const TOMB_WAYS: usize = 4;

/// This node, fixed in mod_init (every process gets the same copy).
pub struct Node {
    pub id: u32,
    pub boot_id: u32,
    pub uri: Vec<u8>,
    pub cfg: DmqConfig,
    /// mod_init's clock (ms): where `dmq_sync_wait` counts from.
    pub started_ms: u64,
}

static NODE: OnceLock<Node> = OnceLock::new();

/// This node, when clustering is on.
pub fn node() -> Option<&'static Node> {
    NODE.get()
}

pub fn enabled() -> bool {
    NODE.get().is_some()
}

/// Does this node NOTIFY (and persist) a subscription with stamp `ver`?
/// Without clustering every subscription is local; with it, those whose
/// latest SUBSCRIBE came here (or that were restored here and not since
/// stamped).
pub fn is_local(ver: u64) -> bool {
    match node() {
        None => true,
        Some(n) => {
            let origin = node_of(ver);
            origin == 0 || origin == n.id
        }
    }
}

/// The node id a subscription or appearance stamp names (this node for
/// unstamped ones), for the RPC listings.
pub fn node_field(stamp: u64) -> Option<u32> {
    node().map(|n| match node_of(stamp) {
        0 => n.id,
        id => id,
    })
}

#[derive(Default)]
pub struct Counters {
    pub tx_msgs: AtomicU64,
    pub tx_bytes: AtomicU64,
    pub tx_failed: AtomicU64,
    pub rx_msgs: AtomicU64,
    pub rx_bytes: AtomicU64,
    pub rx_applied: AtomicU64,
    pub rx_stale: AtomicU64,
    pub rx_rejected: AtomicU64,
    pub conflicts_won: AtomicU64,
    pub conflicts_lost: AtomicU64,
    pub seizes_refused_syncing: AtomicU64,
}

#[derive(Clone, Copy, Default)]
struct TombSlot {
    key: u64,
    inc: u64,
    ver: u64,
    at: i64,
}

#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum SyncPhase {
    Idle = 0,
    Requesting = 1,
    Synced = 2,
    Failed = 3,
}

impl SyncPhase {
    fn name(self) -> &'static str {
        match self {
            SyncPhase::Idle => "idle",
            SyncPhase::Requesting => "requesting",
            SyncPhase::Synced => "synced",
            SyncPhase::Failed => "failed",
        }
    }
}

const SOURCE_MAX: usize = 128;

struct SyncState {
    phase: SyncPhase,
    session: u32,
    source: [u8; SOURCE_MAX],
    source_len: usize,
    chunks: u32,
    records: u64,
    /// Times the current sync was asked again (no answer in time).
    retries: u32,
    started_ms: u64,
    /// The last request sent or chunk received (the sync timer's clock).
    progress_ms: u64,
    finished_ms: u64,
}

impl SyncState {
    fn source(&self) -> &[u8] {
        &self.source[..self.source_len]
    }
}

/// Peers this node has heard from or sent to, by address.
const MAX_PEERS: usize = 16;
const PEER_ADDR_MAX: usize = 64;

#[derive(Clone, Copy)]
struct PeerSlot {
    addr: [u8; PEER_ADDR_MAX],
    addr_len: u8,
    /// From its messages (0: none received yet).
    node_id: u32,
    boot_id: u32,
    rx: u64,
    last_rx_ms: u64,
    tx_ok: u64,
    tx_failed: u64,
    last_code: u16,
}

impl Default for PeerSlot {
    fn default() -> Self {
        PeerSlot {
            addr: [0; PEER_ADDR_MAX],
            addr_len: 0,
            node_id: 0,
            boot_id: 0,
            rx: 0,
            last_rx_ms: 0,
            tx_ok: 0,
            tx_failed: 0,
            last_code: 0,
        }
    }
}

impl PeerSlot {
    fn addr(&self) -> &[u8] {
        &self.addr[..usize::from(self.addr_len)]
    }
}

/// `host:port` of a dmq node URI (`sip:10.0.0.2:5060;status=active`) or
/// of a KDMQ's From (`<sip:sca_rs@10.0.0.2:5060>;tag=...`).
fn peer_addr(uri: &[u8]) -> &[u8] {
    let start = uri.windows(4).position(|w| w.eq_ignore_ascii_case(b"sip:")).map_or(0, |i| i + 4);
    let rest = &uri[start..];
    let end = rest.iter().position(|&b| matches!(b, b';' | b'>' | b'?' | b' ')).unwrap_or(rest.len());
    let hostport = &rest[..end];
    match hostport.iter().position(|&b| b == b'@') {
        Some(at) => &hostport[at + 1..],
        None => hostport,
    }
}

/// Update the slot of the peer at `uri` (a new one if there is room).
fn with_peer(c: &ClusterShared, uri: &[u8], f: impl FnOnce(&mut PeerSlot)) {
    let addr = peer_addr(uri);
    if addr.is_empty() || addr.len() > PEER_ADDR_MAX {
        return;
    }
    let mut peers = c.peers.lock();
    let i = match peers.iter().position(|p| p.addr() == addr) {
        Some(i) => i,
        None => match peers.iter().position(|p| p.addr_len == 0) {
            Some(i) => {
                peers[i].addr[..addr.len()].copy_from_slice(addr);
                peers[i].addr_len = addr.len() as u8;
                i
            }
            None => return,
        },
    };
    f(&mut peers[i]);
}

/// What every process shares (shared memory).
pub struct ClusterShared {
    tombs: Locked<KLock, allocator_api2::vec::Vec<TombSlot, Shm>>,
    sync: Locked<KLock, SyncState>,
    peers: Locked<KLock, [PeerSlot; MAX_PEERS]>,
    pub counters: Counters,
    seq: AtomicU32,
}

static CLUSTER: HostCell<*mut ClusterShared> = HostCell::new(null_mut());

fn cluster() -> Option<&'static ClusterShared> {
    // SAFETY: written once in mod_init before fork; shm that lives until
    // Kamailio exits.
    unsafe { CLUSTER.read().as_ref() }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The node id derived from dmq's address: a fixed-seed hash, so a
/// restarted node keeps it.
fn derive_id(uri: &[u8]) -> u32 {
    // FNV-1a
    let h = uri.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    match ((h >> 32) as u32 ^ h as u32) & MAX_NODE_ID {
        0 => 1,
        id => id,
    }
}

/// mod_init: bind dmq, register the peer, create the shared state.
pub fn init(cfg: &Config) -> Result<(), String> {
    let Some(dcfg) = &cfg.dmq else { return Ok(()) };
    let uri = dmq::init()?;
    let id = if dcfg.node_id > 0 { dcfg.node_id } else { derive_id(&uri) };
    let boot_id = (now_ms() as u32) ^ std::process::id().rotate_left(16);
    let mut tombs = allocator_api2::vec::Vec::new_in(Shm);
    tombs
        .try_reserve_exact(TOMB_SLOTS)
        .map_err(|_| "out of shared memory creating the cluster tombstones".to_string())?;
    tombs.resize(TOMB_SLOTS, TombSlot::default());
    let sync = SyncState {
        phase: SyncPhase::Idle,
        session: 0,
        source: [0; SOURCE_MAX],
        source_len: 0,
        chunks: 0,
        records: 0,
        retries: 0,
        started_ms: 0,
        progress_ms: 0,
        finished_ms: 0,
    };
    let p = shm::into_shared(ClusterShared {
        tombs: Locked::new(tombs),
        sync: Locked::new(sync),
        peers: Locked::new([PeerSlot::default(); MAX_PEERS]),
        counters: Counters::default(),
        seq: AtomicU32::new(0),
    })
    .map_err(|_| "out of shared memory creating the cluster state".to_string())?;
    // SAFETY: just created, not shared yet.
    let c = unsafe { p.as_ref() };
    if !c.tombs.init() || !c.sync.init() || !c.peers.init() {
        return Err("cannot initialise the cluster locks".into());
    }
    CLUSTER.write(p.as_ptr());
    // SAFETY: mod_init is where timers are registered.
    if unsafe { sys::register_timer(Some(sync_timer), null_mut(), 1) } < 0 {
        return Err("cannot register the cluster sync timer".into());
    }
    lm_info!(
        "sca_rs: cluster replication over DMQ on: node {id} ({}), boot {boot_id:08x}",
        B(&uri)
    );
    NODE.set(Node { id, boot_id, uri, cfg: dcfg.clone(), started_ms: now_ms() }).map_err(|_| "cluster init ran twice".to_string())?;
    Ok(())
}

/// The tombstone table, locked, at `now` (seconds).
struct TombsNow<'a> {
    t: sca_core::sync::Guard<'a, KLock, allocator_api2::vec::Vec<TombSlot, Shm>>,
    now: i64,
    ttl: i64,
}

impl TombsNow<'_> {
    fn bucket(&self, key: u64) -> usize {
        (key as usize % (self.t.len() / TOMB_WAYS)) * TOMB_WAYS
    }
    fn live(&self, s: &TombSlot) -> bool {
        s.key != 0 && self.now - s.at <= self.ttl
    }
}

impl Tombs for TombsNow<'_> {
    fn get(&mut self, key: u64) -> Option<Tomb> {
        let b = self.bucket(key);
        self.t[b..b + TOMB_WAYS]
            .iter()
            .find(|s| s.key == key && self.live(s))
            .map(|s| Tomb { inc: s.inc, ver: s.ver })
    }

    fn put(&mut self, key: u64, t: Tomb) {
        let b = self.bucket(key);
        let (now, ttl) = (self.now, self.ttl);
        let ways = &mut self.t[b..b + TOMB_WAYS];
        // the same key, else a free or expired slot, else the oldest
        let i = ways
            .iter()
            .position(|s| s.key == key)
            .or_else(|| ways.iter().position(|s| s.key == 0 || now - s.at > ttl))
            .or_else(|| ways.iter().enumerate().min_by_key(|(_, s)| s.at).map(|(i, _)| i))
            .unwrap_or(0);
        ways[i] = TombSlot { key, inc: t.inc, ver: t.ver, at: now };
    }

    fn fresh(&mut self, key: u64) -> bool {
        let b = self.bucket(key);
        self.t[b..b + TOMB_WAYS].iter().any(|s| s.key == key && self.now - s.at <= self.ttl / 2)
    }
}

fn tombs<'a>(c: &'a ClusterShared, n: &Node) -> TombsNow<'a> {
    TombsNow { t: c.tombs.lock(), now: now(), ttl: i64::from(n.cfg.tombstone_ttl) }
}

fn header(kind: Kind) -> Option<Header> {
    let (c, n) = (cluster()?, node()?);
    Some(Header::new(kind, n.id, n.boot_id, c.seq.fetch_add(1, Relaxed).wrapping_add(1)))
}

/// Encode `records` as one or more CHANGES messages (each under the size
/// limit). A record that cannot be encoded is logged and left out.
fn encode_changes(records: &[Record<'_>]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let Some(h) = header(Kind::Changes) else { return out };
    let Ok(mut b) = Builder::new(&h) else { return out };
    for r in records {
        match b.push(r) {
            Ok(()) => {}
            Err(codec::Error::TooLarge { .. }) if !b.is_empty() => {
                let Some(h) = header(Kind::Changes) else { return out };
                let Ok(next) = Builder::new(&h) else { return out };
                if let Ok(m) = core::mem::replace(&mut b, next).finish() {
                    out.push(m);
                }
                if let Err(e) = b.push(r) {
                    lm_err!("cluster: cannot replicate a {} record: {e}", codec::record_name(r.code()));
                }
            }
            Err(e) => lm_err!("cluster: cannot replicate a {} record: {e}", codec::record_name(r.code())),
        }
    }
    if !b.is_empty() {
        if let Ok(m) = b.finish() {
            out.push(m);
        }
    }
    out
}

pub(crate) fn broadcast(msgs: Vec<Vec<u8>>) {
    let Some(c) = cluster() else { return };
    for m in msgs {
        c.counters.tx_msgs.fetch_add(1, Relaxed);
        c.counters.tx_bytes.fetch_add(m.len() as u64, Relaxed);
        if dmq::bcast(&m, TAG_CHANGES).is_err() {
            c.counters.tx_failed.fetch_add(1, Relaxed);
            lm_err!("cluster: cannot broadcast a change ({} bytes) over dmq", m.len());
        }
    }
}

// ---------------------------------------------------------------- capture

/// What changed in the AoR under `g` since `snap` (taken when it was
/// locked): stamped, tombstoned, encoded (effects::Edit calls this while
/// the slot is still locked, and broadcasts after unlocking).
pub(crate) fn capture(snap: &Snapshot, g: &mut AorGuard<'_, Shm, KLock>) -> Vec<Vec<u8>> {
    let (Some(c), Some(n)) = (cluster(), node()) else { return Vec::new() };
    let stamped = {
        let mut t = tombs(c, n);
        replica::stamp(snap, g, n.id, now_ms(), &mut t)
    };
    if stamped.is_empty() {
        return Vec::new();
    }
    let recs = replica::records(snap, g, &stamped);
    encode_changes(&recs)
}

// ---------------------------------------------------------------- apply

/// A message this very process tree sent (same node id, same boot).
fn is_echo(m: &Message<'_>, n: &Node) -> bool {
    m.header.node_id == n.id && m.header.boot_id == n.boot_id
}

#[derive(Default)]
struct ApplyStats {
    applied: u64,
    stale: u64,
    records: u64,
}

/// Merge the state records of `m`; NOTIFY local subscribers of changed
/// AoRs when `notify`.
fn apply(m: &Message<'_>, notify_groups: bool, from: &[u8]) -> ApplyStats {
    let mut s = ApplyStats::default();
    let (Some(st), Some(c), Some(n)) = (shared(), cluster(), node()) else { return s };
    let now = now();
    for r in &m.records {
        let outcome = match r {
            Record::SubPut(p) => {
                let mut g = effects::edit_from_peer(st, p.sub.aor, now);
                let mut t = tombs(c, n);
                let local_before = g.find_sub(p.sub.event, p.sub.subscriber).map(|x| x.notify_cseq);
                let r = replica::apply_sub_put(&mut g, p, n.id, &mut t);
                drop(t);
                if matches!(r, Ok(Applied::Changed)) && p.origin == n.id {
                    // our own subscription coming back (after a restart): our
                    // NOTIFYs since its last SUBSCRIBE were not replicated
                    if let Some(sub) = g.find_sub_mut(p.sub.event, p.sub.subscriber) {
                        sub.notify_cseq = sub.notify_cseq.max(local_before.unwrap_or(0)).wrapping_add(ORIGIN_CSEQ_JUMP);
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
            Record::SyncReq(_) | Record::SyncChunk(_) => continue,
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
fn last_notify(mut sub: sca_core::store::Subscription<Shm>) -> sca_core::change::Ended<Shm> {
    let notify = !sub.state.is_terminated();
    if notify {
        sub.state = match sub.event {
            EventType::LineSeize => SubState::TerminatedNoresource,
            EventType::CallInfo => SubState::TerminatedDeactivated,
        };
        sub.expires = 0;
    }
    sca_core::change::Ended { sub, notify }
}

/// Seizes of ours that lost to a peer's earlier ones: the phone is told as
/// a local loser would be, after the fact: its line-seize subscription
/// ends with `noresource` (the local case answers 480), and the group,
/// already NOTIFYed of the winner, stays as it is. Through [`lock`], so the
/// ended subscription is deleted on the peers too.
fn lost(st: &Shared, aor: &[u8], lost: &[replica::Lost], from: &[u8], now: i64) {
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
            .is_some_and(|s| s.index == l.index as i32 && effects::is_local(s.ver));
        if local {
            if let Some(mut ed) = g.core() {
                ed.end_sub(EventType::LineSeize, &l.owner, SubState::TerminatedNoresource, false);
            }
        }
    }
}

/// A SYNC_REQ: the store from slot `cursor` on, about `max_bytes` of it.
fn sync_chunk(req: &SyncReq) -> Result<Vec<u8>, String> {
    let (Some(st), Some(n)) = (shared(), node()) else { return Err("not ready".into()) };
    let h = header(Kind::SyncChunk).ok_or("not ready")?;
    let mut b = Builder::new(&h).map_err(|e| e.to_string())?;
    let limit = (req.max_bytes as usize).clamp(1024, 60000);
    let slots = st.store.slot_count();
    let mut slot = req.cursor as usize;
    // the closing SYNC_CHUNK record and some slack
    const RESERVE: usize = 64;
    while slot < slots && b.len() < limit {
        let mut full = false;
        st.store.visit_slot(slot, |e| {
            if full {
                return;
            }
            let mut recs: Vec<Record<'_>> = e.subs.iter().map(|s| sync_sub_put(e.aor(), s, n.id)).collect();
            if e.shared || !e.apps.is_empty() {
                recs.push(replica::aor_apps_record(e, Vec::new()));
            }
            for r in &recs {
                if r.encoded_len() + RESERVE > b.room() {
                    full = true;
                    return;
                }
                if let Err(err) = b.push(r) {
                    lm_err!("cluster sync: left out a {} record of {}: {err}", codec::record_name(r.code()), B(e.aor()));
                }
            }
        });
        if full && b.record_count() > 0 {
            // this slot again in the next chunk (records are idempotent)
            break;
        }
        slot += 1;
    }
    let next = if slot >= slots { SYNC_DONE } else { slot as u32 };
    b.push(&Record::SyncChunk(SyncChunk { session: req.session, next_cursor: next }))
        .map_err(|e| e.to_string())?;
    b.finish().map_err(|e| e.to_string())
}

/// A subscription's SUB_PUT for a sync: unstamped (restored) ones go out
/// as this node's, older than any stamped copy.
fn sync_sub_put<'a>(aor: &'a [u8], s: &'a sca_core::store::Subscription<Shm>, self_id: u32) -> Record<'a> {
    let mut r = replica::sub_put_record(aor, s);
    if let Record::SubPut(p) = &mut r {
        if p.origin == 0 {
            p.origin = self_id;
            p.ver = Ver::new(0, self_id);
        }
    }
    r
}

fn reject(c: &ClusterShared, from: &[u8], why: &str) -> (c_int, &'static core::ffi::CStr) {
    c.counters.rx_rejected.fetch_add(1, Relaxed);
    lm_err!("sca_rs: rejected DMQ message from {}: {why}", B(from));
    (400, c"Bad Request")
}

fn content_type_ok(ct: &[u8]) -> bool {
    let main = ct.split(|&b| b == b';').next().unwrap_or_default();
    main.trim_ascii().eq_ignore_ascii_case(codec::CONTENT_TYPE.as_bytes())
}

fn on_request(body: &[u8], ctype: &[u8], from: &[u8]) -> (c_int, &'static core::ffi::CStr, Option<Vec<u8>>) {
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
    with_peer(c, from, |p| {
        p.node_id = m.header.node_id;
        p.boot_id = m.header.boot_id;
        p.rx += 1;
        p.last_rx_ms = now_ms();
    });
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
        Kind::SyncChunk => {
            let (code, reason) = reject(c, from, "a SYNC_CHUNK comes in a reply, not a request");
            (code, reason, None)
        }
    }
}

/// dmq: a peer's KDMQ for `sca_rs` (DMQ worker process).
///
/// # Safety
/// Called by the shim with valid `str`s for the duration of the call and
/// writable `code`, `reason` and `reply_body`.
#[no_mangle]
pub unsafe extern "C" fn sca_rs_dmq_on_request(
    body: *const sys::str_,
    content_type: *const sys::str_,
    from_uri: *const sys::str_,
    code: *mut c_int,
    reason: *mut *const c_char,
    reply_body: *mut sys::str_,
) {
    if code.is_null() || reason.is_null() || reply_body.is_null() {
        return;
    }
    let (rc, rr, rb) = guard_or("dmq request", (500, c"Server Internal Error", None), || {
        // SAFETY: per the function contract; views used within this call.
        let (b, ct, from) = unsafe {
            (
                body.as_ref().map(|s| kstr::as_bytes(s)).unwrap_or_default(),
                content_type.as_ref().map(|s| kstr::as_bytes(s)).unwrap_or_default(),
                from_uri.as_ref().map(|s| kstr::as_bytes(s)).unwrap_or_default(),
            )
        };
        on_request(b, ct, from)
    });
    // SAFETY: checked non-null above; the shim owns these out-parameters.
    unsafe {
        *code = rc;
        *reason = rr.as_ptr();
        if let Some(p) = rb.as_deref().and_then(dmq::pkg_copy) {
            *reply_body = p;
        }
    }
}

// ---------------------------------------------------------------- sync

/// Ask every peer for its store (init callback; `retry`: the sync timer,
/// when the last request got no usable answer in time).
fn start_sync(why: &str, retry: bool) {
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

/// dmq: the node list arrived (a cluster formed): pull a full sync.
#[no_mangle]
pub extern "C" fn sca_rs_dmq_on_init() -> c_int {
    guard_or("dmq init callback", 0, || {
        start_sync("dmq node list received", false);
        0
    })
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

/// Every second (timer process): a sync that got no usable answer within
/// `dmq_sync_timeout` is asked again, up to `dmq_sync_retries` times,
/// then given up (the node still converges through live changes).
unsafe extern "C" fn sync_timer(_ticks: u32, _param: *mut c_void) {
    guard_or("cluster sync timer", (), || {
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
    })
}

fn on_sync_reply(code: c_int, body: &[u8], uri: &[u8], peer: Option<NodeRef>) {
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
fn notify_local_groups() {
    let (Some(st), Some(cfg)) = (shared(), config()) else { return };
    let now = now();
    effects::sweep(st, cfg, now, |ed| {
        if !ed.entry().apps.is_empty() {
            ed.notify_group();
        }
    });
}

/// dmq: the final reply to a KDMQ we sent (a SIP worker, or tm's timer
/// process for a timeout).
///
/// # Safety
/// Called by the shim with valid `str`s for the duration of the call;
/// `node` is dmq's node for this reply, valid during the call, or null.
#[no_mangle]
pub unsafe extern "C" fn sca_rs_dmq_on_reply(
    param: *mut c_void,
    code: c_int,
    body: *const sys::str_,
    node_uri: *const sys::str_,
    node: *mut c_void,
) {
    guard_or("dmq reply", (), || {
        let Some(c) = cluster() else { return };
        // SAFETY: per the function contract.
        let (b, uri, nd) = unsafe {
            (
                body.as_ref().map(|s| kstr::as_bytes(s)).unwrap_or_default(),
                node_uri.as_ref().map(|s| kstr::as_bytes(s)).unwrap_or_default(),
                NodeRef::from_raw(node),
            )
        };
        with_peer(c, uri, |p| {
            if (200..300).contains(&code) {
                p.tx_ok += 1;
            } else {
                p.tx_failed += 1;
            }
            p.last_code = u16::try_from(code).unwrap_or(0);
        });
        match param as usize {
            TAG_SYNC => on_sync_reply(code, b, uri, nd),
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
    })
}

// ---------------------------------------------------------------- RPC

/// `sca.cluster`: `name value` lines.
pub fn rpc_lines() -> Result<Vec<String>, &'static str> {
    let (Some(c), Some(n)) = (cluster(), node()) else {
        return Err("cluster is off (modparam enable_dmq)");
    };
    let (phase, source, chunks, records, retries, ms) = {
        let s = c.sync.lock();
        let ms = if s.finished_ms > 0 { s.finished_ms.saturating_sub(s.started_ms) } else { 0 };
        (s.phase, String::from_utf8_lossy(s.source()).into_owned(), s.chunks, s.records, s.retries, ms)
    };
    let k = &c.counters;
    let mut out = vec![
        "enabled 1".to_string(),
        format!("node_id {}", n.id),
        format!("node_uri {}", B(&n.uri)),
        format!("boot_id {}", n.boot_id),
        format!("proto {}", codec::PROTO),
        format!("sync_state {}", phase.name()),
        format!("sync_source {}", if source.is_empty() { "-" } else { &source }),
        format!("sync_chunks {chunks}"),
        format!("sync_records {records}"),
        format!("sync_retries {retries}"),
        format!("sync_ms {ms}"),
    ];
    for (name, v) in [
        ("tx_msgs", &k.tx_msgs),
        ("tx_bytes", &k.tx_bytes),
        ("tx_failed", &k.tx_failed),
        ("rx_msgs", &k.rx_msgs),
        ("rx_bytes", &k.rx_bytes),
        ("rx_applied", &k.rx_applied),
        ("rx_stale", &k.rx_stale),
        ("rx_rejected", &k.rx_rejected),
        ("conflicts_won", &k.conflicts_won),
        ("conflicts_lost", &k.conflicts_lost),
        ("seizes_refused_syncing", &k.seizes_refused_syncing),
    ] {
        out.push(format!("{name} {}", v.load(Relaxed)));
    }
    // one line per peer: what it said of itself, what it answered us
    let now = now_ms();
    let peers: Vec<PeerSlot> = c.peers.lock().iter().filter(|p| p.addr_len > 0).copied().collect();
    for p in peers {
        let ago = if p.last_rx_ms > 0 { now.saturating_sub(p.last_rx_ms).to_string() } else { "-".into() };
        out.push(format!(
            "peer {} node_id {} boot_id {} rx {} last_rx_ms_ago {ago} tx_ok {} tx_failed {} last_code {}",
            B(p.addr()),
            p.node_id,
            p.boot_id,
            p.rx,
            p.tx_ok,
            p.tx_failed,
            p.last_code
        ));
    }
    Ok(out)
}
