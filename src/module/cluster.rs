//! Cluster replication over Kamailio's DMQ (opt-in, `enable_dmq`; see
//! docs/cluster.md).
//!
//! - **Capture.** Code that changes the store locks the AoR through
//!   [`lock`]. The [`ReplGuard`] it returns snapshots the AoR, and when it
//!   is dropped it stamps what changed and encodes the records while the
//!   slot is still locked, unlocks, and only then broadcasts (dmq holds its
//!   node-list lock while it calls tm).
//! - **Apply.** A peer's KDMQ reaches [`sca_rs_dmq_on_request`] in a DMQ
//!   worker. The whole message is validated first; a bad one gets a 400
//!   and a log line, and changes nothing. Records are merged one AoR at a
//!   time by `sca_core::cluster::replica`, outside [`ReplGuard`], so they
//!   are never sent on again. A changed AoR NOTIFYs its *local* call-info
//!   subscribers: every node NOTIFYs only the subscriptions whose latest
//!   SUBSCRIBE it received, so each phone gets one NOTIFY per change.
//! - **Sync.** When dmq's node list forms, [`sca_rs_dmq_on_init`] asks
//!   every peer for its store. The first to answer is followed, chunk by
//!   chunk (each chunk a 200 reply body), until it says it is done.

use core::ffi::{c_char, c_int, c_void};
use core::mem::ManuallyDrop;
use core::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::OnceLock;

use sca_core::cluster::codec::{self, Builder, Header, Kind, Message, Record, SyncChunk, SyncReq, SYNC_DONE};
use sca_core::cluster::replica::{self, node_of, Applied, Snapshot, Tomb, Tombs};
use sca_core::cluster::{Ver, MAX_NODE_ID, ORIGIN_CSEQ_JUMP};
use sca_core::model::{EventType, SubState};
use sca_core::store::AorGuard;
use sca_core::sync::Locked;

use crate::host::dmq::{self, NodeRef};
use crate::host::guard::guard_or;
use crate::host::entry::{Out, StrArg};
use crate::host::raw;
use crate::host::lock::KLock;
use crate::host::log::B;
use crate::host::shm::{self, SharedStatic, Shm};
use crate::module::params::{Config, DmqConfig};
use crate::module::{config, notify, shared, subscribe::now, Shared};
use crate::{entry, lm_dbg, lm_err, lm_info, lm_notice};

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

static CLUSTER: SharedStatic<ClusterShared> = SharedStatic::new();

fn cluster() -> Option<&'static ClusterShared> {
    CLUSTER.get()
}

use crate::host::clock::now_ms;

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
    let c = shm::into_shared_ref(ClusterShared {
        tombs: Locked::new(tombs),
        sync: Locked::new(sync),
        peers: Locked::new([PeerSlot::default(); MAX_PEERS]),
        counters: Counters::default(),
        seq: AtomicU32::new(0),
    })
    .map_err(|_| "out of shared memory creating the cluster state".to_string())?;
    if !c.tombs.init() || !c.sync.init() || !c.peers.init() {
        return Err("cannot initialise the cluster locks".into());
    }
    CLUSTER.set(c);
    if crate::host::proc::register_timer(sync_timer, 1).is_err() {
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

fn broadcast(msgs: Vec<Vec<u8>>) {
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

/// A locked AoR whose changes are replicated when it is dropped.
pub struct ReplGuard<'s> {
    g: ManuallyDrop<AorGuard<'s, Shm, KLock>>,
    snap: Option<Snapshot>,
}

/// Lock `aor` to change it: like `store.lock_aor`, plus replication.
pub fn lock<'s>(st: &'s Shared, aor: &'s [u8]) -> ReplGuard<'s> {
    let g = st.store.lock_aor(aor);
    let snap = enabled().then(|| Snapshot::take(g.entry()));
    ReplGuard { g: ManuallyDrop::new(g), snap }
}

impl<'s> Deref for ReplGuard<'s> {
    type Target = AorGuard<'s, Shm, KLock>;
    fn deref(&self) -> &Self::Target {
        &self.g
    }
}

impl DerefMut for ReplGuard<'_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.g
    }
}

fn capture(snap: &Snapshot, g: &mut AorGuard<'_, Shm, KLock>) -> Vec<Vec<u8>> {
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

impl Drop for ReplGuard<'_> {
    fn drop(&mut self) {
        // no capture while unwinding: the change may be half done
        let msgs = match self.snap.take() {
            Some(snap) if !std::thread::panicking() => capture(&snap, &mut self.g),
            _ => Vec::new(),
        };
        // SAFETY: [I3] dropped exactly once, here; not used afterwards.
        unsafe { ManuallyDrop::drop(&mut self.g) };
        if !msgs.is_empty() {
            broadcast(msgs);
        }
    }
}

/// Run `f` on every AoR through [`lock`] (so its changes replicate), one
/// AoR locked at a time: for the rare store-wide operations (RPC
/// deactivation, a phone declared dead).
pub fn for_each_aor_replicated(st: &Shared, mut f: impl FnMut(&mut AorGuard<'_, Shm, KLock>)) {
    let mut aors = Vec::new();
    st.store.for_each_aor(|e| aors.push(e.aor().to_vec()));
    for aor in &aors {
        let mut g = lock(st, aor);
        f(&mut g);
        g.prune();
    }
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
    let (Some(st), Some(cfg), Some(c), Some(n)) = (shared(), config(), cluster(), node()) else { return s };
    let now = now();
    for r in &m.records {
        let outcome = match r {
            Record::SubPut(p) => {
                let mut g = st.store.lock_aor(p.sub.aor);
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
                let mut g = st.store.lock_aor(d.aor);
                // a subscription of ours ended on another node (a line-seize
                // ended by a call's progress there): its last NOTIFY and its
                // DB row are this node's
                let last = g.entry().and_then(|e| last_notify(e, d.event, d.subscriber));
                let r = {
                    let mut t = tombs(c, n);
                    replica::apply_sub_del(&mut g, d, &mut t)
                };
                if r == Applied::Changed {
                    if let Some(l) = last {
                        st.add_tombstone(d.aor, d.subscriber, d.event);
                        l.send(cfg, d.aor, now);
                    }
                }
                r
            }
            Record::AorApps(a) => {
                let mut g = st.store.lock_aor(a.aor);
                let o = {
                    let mut t = tombs(c, n);
                    replica::apply_aor_apps(&mut g, a, n.id, &mut t)
                };
                match o {
                    Ok(o) => {
                        s.stale += u64::from(o.stale);
                        c.counters.conflicts_won.fetch_add(u64::from(o.won), Relaxed);
                        if o.changed && notify_groups {
                            if let Some(e) = g.entry_mut() {
                                notify::notify_group(cfg, e, now);
                            }
                        }
                        drop(g);
                        if !o.lost.is_empty() {
                            lost(st, cfg, a.aor, &o.lost, from, now);
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

/// The final NOTIFY of a local subscription that a peer deleted, prepared
/// while it is still in the store.
struct LastNotify {
    sub: Vec<Vec<u8>>,
    event: EventType,
    index: i32,
    notify_cseq: u32,
    call_info: Vec<u8>,
}

fn last_notify(
    e: &sca_core::store::AorEntry<Shm>,
    event: EventType,
    subscriber: &[u8],
) -> Option<LastNotify> {
    let s = e.subs.get(e.find_sub(event, subscriber)?)?;
    if !is_local(s.ver) || s.state.is_terminated() {
        return None;
    }
    let mut call_info = Vec::new();
    notify::call_info_header(e, event, s.index, &mut call_info).ok()?;
    Some(LastNotify {
        sub: [s.subscriber(), s.call_id(), s.from_tag(), s.to_tag(), s.record_route()].iter().map(|b| b.to_vec()).collect(),
        event,
        index: s.index,
        notify_cseq: s.notify_cseq.wrapping_add(1),
        call_info,
    })
}

impl LastNotify {
    /// line-seize: `noresource`, as when the call's progress ends it
    /// locally; call-info: `deactivated`.
    fn send(&self, cfg: &Config, aor: &[u8], now: i64) {
        let state = match self.event {
            EventType::LineSeize => SubState::TerminatedNoresource,
            EventType::CallInfo => SubState::TerminatedDeactivated,
        };
        let rec = sca_core::store::SubscriptionRec {
            aor,
            subscriber: &self.sub[0],
            event: self.event,
            expires: 0,
            state,
            index: self.index,
            call_id: &self.sub[1],
            from_tag: &self.sub[2],
            to_tag: &self.sub[3],
            record_route: &self.sub[4],
            notify_cseq: self.notify_cseq,
            subscribe_cseq: 0,
        };
        let _ = notify::send(cfg, &rec, &self.call_info, now);
    }
}

/// Seizes of ours that lost to a peer's earlier ones: the phone is told as
/// a local loser would be, after the fact: its line-seize subscription
/// ends with `noresource` (the local case answers 480), and the group,
/// already NOTIFYed of the winner, stays as it is. Through [`lock`], so the
/// ended subscription is deleted on the peers too.
fn lost(st: &Shared, cfg: &Config, aor: &[u8], lost: &[replica::Lost], from: &[u8], now: i64) {
    let Some(c) = cluster() else { return };
    c.counters.conflicts_lost.fetch_add(lost.len() as u64, Relaxed);
    let mut g = lock(st, aor);
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
            .is_some_and(|s| s.index == l.index as i32 && is_local(s.ver));
        if local {
            notify::terminate_line_seize(cfg, &mut g, &l.owner, SubState::TerminatedNoresource, false, now);
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
    timer fn sync_timer("cluster sync timer") {
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
    st.store.retain_aors(|e| {
        if !e.apps.is_empty() {
            notify::notify_group(cfg, e, now);
        }
    });
}

entry! {
    /// dmq: the final reply to a KDMQ we sent (a SIP worker, or tm's timer
    /// process for a timeout).
    ///
    /// # Safety
    /// Called by the shim with valid `str`s for the duration of the call;
    /// `node` is dmq's node for this reply, valid during the call, or null.
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
    }
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
