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
//! - **Anti-entropy.** Every `dmq_digest_interval` seconds, and when a
//!   peer comes back, nodes exchange digests of their stores and merge
//!   what differs ([`heal`]).
//! - **Sync.** When dmq's node list forms, [`sca_rs_dmq_on_init`] asks
//!   every peer for its store. The first to answer is followed, chunk by
//!   chunk (each chunk a 200 reply body), until it says it is done.

use core::ffi::{c_char, c_int, c_void};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::OnceLock;

use sca_core::cluster::codec::{self, Builder, Header, Kind, Message, Record, SyncChunk, SyncReq, SYNC_DONE};
use sca_core::cluster::replica::{self, node_of, Applied, Snapshot, Tomb, Tombs};
use sca_core::cluster::MAX_NODE_ID;
use sca_core::model::{EventType, SubState};
use sca_core::store::AorGuard;
use sca_core::sync::Locked;

use crate::host::dmq::{self, NodeRef};
use crate::host::entry::{Out, StrArg};
use crate::host::guard::guard_or;
use crate::host::raw;
use crate::host::lock::KLock;
use crate::host::log::B;
use crate::host::shm::{self, SharedStatic, Shm};
use crate::module::params::{Config, DmqConfig};
use crate::module::{config, effects, shared, subscribe::now, Shared};
use crate::{entry, lm_dbg, lm_err, lm_info, lm_notice};

mod apply;
mod capture;
mod heal;
pub mod metrics;
mod peers;
mod rpc;
mod sync;

use apply::{apply, is_echo};
pub(crate) use capture::capture;
use peers::with_peer;
pub use rpc::rpc_lines;
use sync::{sync_chunk, sync_timer};
pub use sync::refuse_seize_while_syncing;
pub use apply::sca_rs_dmq_on_request;
pub use sync::{sca_rs_dmq_on_init, sca_rs_dmq_on_reply};

/// Reply tags: what a KDMQ we sent was.
const TAG_CHANGES: usize = 1;
const TAG_SYNC: usize = 2;
const TAG_DIGEST: usize = 3;

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

/// What every process shares (shared memory).
pub struct ClusterShared {
    tombs: Locked<KLock, allocator_api2::vec::Vec<TombSlot, Shm>>,
    sync: Locked<KLock, SyncState>,
    peers: Locked<KLock, [PeerSlot; MAX_PEERS]>,
    heal: Locked<KLock, heal::HealState>,
    pub counters: Counters,
    pub heal_counters: heal::HealCounters,
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
        heal: Locked::new(heal::HealState::new()),
        counters: Counters::default(),
        heal_counters: heal::HealCounters::default(),
        seq: AtomicU32::new(0),
    })
    .map_err(|_| "out of shared memory creating the cluster state".to_string())?;
    if !c.tombs.init() || !c.sync.init() || !c.peers.init() || !c.heal.init() {
        return Err("cannot initialise the cluster locks".into());
    }
    CLUSTER.set(c);
    if crate::host::proc::register_timer(sync_timer, 1).is_err() {
        return Err("cannot register the cluster sync timer".into());
    }
    if crate::host::proc::register_timer(heal::digest_timer, 1).is_err() {
        return Err("cannot register the cluster digest timer".into());
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

#[derive(Default)]
struct ApplyStats {
    applied: u64,
    stale: u64,
    records: u64,
}

