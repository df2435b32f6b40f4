//! The destinations table: every monitored destination and its state, as
//! plain data with explicit operations. No locking, no clock, no I/O: the
//! caller passes the time in ([`Now`]), sends the pings [`Table::due`] asks
//! for, and feeds their outcome back ([`Table::on_result`]). State changes
//! come out as [`Event`]s, queued in order.
//!
//! A destination is identified by an id that is never reused; pings carry
//! `(id, seq)` (packed into the pointer-sized callback parameter of a tm
//! transaction by [`encode_param`]), so the reply to a ping of a destination
//! deleted meanwhile finds nothing and changes nothing, and a destination
//! deleted and added again does not inherit replies meant for its
//! predecessor.
//!
//! Generic over the allocator (Kamailio shared memory in the module, the
//! heap in tests) and over `H`, what the owner of a destination attaches
//! to it (the module keeps the API callbacks there; the table never looks
//! inside).

use allocator_api2::alloc::{AllocError, Allocator};
use allocator_api2::vec::Vec;

use super::codes::AliveCodes;
use super::uri::{self, Key};
use crate::packed::Packed;

/// A destination's state, with the C module's values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[repr(i32)]
pub enum State {
    /// Not decided yet (no ping answered or failed).
    #[default]
    Unknown = 0,
    Up = 1,
    Down = 2,
}

impl State {
    pub fn code(self) -> i32 {
        self as i32
    }
}

/// Behaviour of the table; fixed at start-up.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// Ping interval of destinations added without one.
    pub default_interval_ms: u64,
    /// Delay of a new destination's first ping (the C module's 500 ms).
    pub first_ping_delay_ms: u64,
    /// A destination whose failed pings in a row exceed this is removed
    /// (0: never).
    pub delete_counter: u32,
    /// Failed pings in a row before a destination is down (C: 1).
    pub down_after: u32,
    /// Answered pings in a row before a destination is up (C: 1).
    pub up_after: u32,
    /// Reply codes that count as alive.
    pub alive: AliveCodes,
    /// State changes queued at most; beyond, the oldest is dropped.
    pub max_events: usize,
}

impl Default for Config {
    /// The C module's behaviour.
    fn default() -> Self {
        Config {
            default_interval_ms: 30_000,
            first_ping_delay_ms: 500,
            delete_counter: 5,
            down_after: 1,
            up_after: 1,
            alive: AliveCodes::default(),
            max_events: 4096,
        }
    }
}

/// The time, as the caller sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Now {
    /// Seconds since the epoch (shown to people: last checked / up / down).
    pub wall: i64,
    /// Milliseconds of a monotonic clock shared by every process
    /// (scheduling, round-trip times).
    pub mono_ms: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KaError {
    /// Shared memory is exhausted; nothing was changed.
    NoMemory,
    /// Destination ids are exhausted (2^40 adds).
    NoIds,
}

impl From<AllocError> for KaError {
    fn from(_: AllocError) -> Self {
        KaError::NoMemory
    }
}

/// Per-destination counters, for `keepalive.list` with `ka_list_stats`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Pings sent (or attempted).
    pub pings: u64,
    /// Replies received from the destination (any code).
    pub replies: u64,
    /// Pings that got no reply in time (tm's local 408).
    pub timeouts: u64,
    /// Pings that could not be sent at all, or ended with another local
    /// error reply.
    pub send_errors: u64,
    /// Round-trip time of the last reply.
    pub rtt_last_ms: u32,
    pub rtt_max_ms: u32,
    rtt_sum_ms: u64,
    rtt_count: u64,
}

impl Stats {
    /// Mean round-trip time of the replies so far (0 without any).
    pub fn rtt_avg_ms(&self) -> u32 {
        self.rtt_sum_ms.checked_div(self.rtt_count).map_or(0, |a| a.min(u32::MAX as u64) as u32)
    }

    fn add_rtt(&mut self, ms: u64) {
        let ms32 = ms.min(u32::MAX as u64) as u32;
        self.rtt_last_ms = ms32;
        self.rtt_max_ms = self.rtt_max_ms.max(ms32);
        self.rtt_sum_ms = self.rtt_sum_ms.saturating_add(ms);
        self.rtt_count += 1;
    }
}

/// Bits of a ping's sequence number carried in its callback parameter.
pub const SEQ_BITS: u32 = 24;
const SEQ_MASK: u64 = (1 << SEQ_BITS) - 1;
/// Largest destination id (the rest of a 64-bit parameter).
pub const MAX_ID: u64 = (1 << (64 - SEQ_BITS)) - 1;

/// The callback parameter of a ping: never 0 (ids start at 1).
pub fn encode_param(id: u64, seq: u32) -> u64 {
    (id << SEQ_BITS) | (seq as u64 & SEQ_MASK)
}

/// `(id, low bits of seq)` of a callback parameter.
pub fn decode_param(p: u64) -> (u64, u32) {
    (p >> SEQ_BITS, (p & SEQ_MASK) as u32)
}

/// A destination flag (beyond the C API's): any reply, whatever its code,
/// proves the destination is there. Set on SCA subscribers' phones, where
/// a 404 or 405 to OPTIONS still means the phone is up.
pub const FLAG_ANY_REPLY_ALIVE: i32 = 1 << 24;
/// A destination flag (beyond the C API's): `delete_counter` does not
/// remove it; its owner does (SCA subscribers' phones are removed by the
/// liveness logic once declared down).
pub const FLAG_NO_DELETE_COUNTER: i32 = 1 << 25;

/// Pings remembered per destination for round-trip times.
const INFLIGHT: usize = 8;

const S_URI: usize = 0;
const S_OWNER: usize = 1;
/// The route set to ping over (`<uri>, <uri>`, a stored Record-Route):
/// empty for every destination but SCA subscribers' phones.
const S_ROUTE: usize = 2;

struct Dest<A: Allocator, H> {
    id: u64,
    /// URI (normalized: with a scheme), owner, route set.
    strs: Packed<A, 3>,
    flags: i32,
    state: State,
    last_checked: i64,
    last_up: i64,
    last_down: i64,
    /// Failed pings in a row (the C module's `counter`).
    fails: u32,
    /// Answered pings in a row.
    oks: u32,
    interval_ms: u64,
    next_ping_ms: u64,
    pinged: bool,
    /// Sequence number of the last ping sent (0: none yet).
    last_seq: u32,
    /// Sequence number of the newest ping whose outcome was applied.
    applied_seq: u32,
    /// (seq, sent at) of recent pings.
    inflight: [(u32, u64); INFLIGHT],
    stats: Stats,
    hooks: H,
    /// A monitored group's destination (`add_spread`, `sync_owner`): how
    /// many of the owner's things need it; [`Table::release`] removes it
    /// when the last one lets go. 1 for every other destination.
    refs: u32,
}

impl<A: Allocator, H: Copy> Dest<A, H> {
    fn uri(&self) -> &[u8] {
        self.strs.get(S_URI)
    }
    fn owner(&self) -> &[u8] {
        self.strs.get(S_OWNER)
    }
    fn route(&self) -> &[u8] {
        self.strs.get(S_ROUTE)
    }
    fn is(&self, key: &Key<'_>, owner: &[u8]) -> bool {
        self.owner() == owner && key.matches(self.uri())
    }
    fn info(&self) -> DestInfo<H> {
        DestInfo {
            id: self.id,
            uri: self.uri().to_vec(),
            owner: self.owner().to_vec(),
            flags: self.flags,
            state: self.state,
            last_checked: self.last_checked,
            last_up: self.last_up,
            last_down: self.last_down,
            fails: self.fails,
            interval_ms: self.interval_ms,
            stats: self.stats,
            hooks: self.hooks,
        }
    }
    /// Offset of the second ping after the first, in [interval/2, 3*interval/2):
    /// destinations added together (all of the config's at start-up) drift
    /// apart instead of being pinged in one burst every interval.
    fn spread_ms(&self) -> u64 {
        let iv = self.interval_ms.min(u32::MAX as u64);
        iv / 2 + spread_in(self.id, iv)
    }
}

/// A point in [0, interval) that destinations with consecutive ids cover
/// evenly (Fibonacci hashing of the id).
fn spread_in(id: u64, interval_ms: u64) -> u64 {
    let h = id.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
    (h * interval_ms.min(u32::MAX as u64)) >> 32
}

/// A copy of a destination's data, for callers outside the lock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DestInfo<H> {
    pub id: u64,
    pub uri: std::vec::Vec<u8>,
    pub owner: std::vec::Vec<u8>,
    pub flags: i32,
    pub state: State,
    pub last_checked: i64,
    pub last_up: i64,
    pub last_down: i64,
    /// Failed pings in a row.
    pub fails: u32,
    pub interval_ms: u64,
    pub stats: Stats,
    pub hooks: H,
}

/// What [`Table::add`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Added<H> {
    New { id: u64, uri: std::vec::Vec<u8> },
    /// The URI/owner pair was there already: its failure counter was reset
    /// (as the C module does) and, when the add brought hooks, they replaced
    /// the old ones (returned).
    Exists { id: u64, state: State, uri: std::vec::Vec<u8>, replaced: Option<H> },
}

/// A ping to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ping {
    pub id: u64,
    pub seq: u32,
    pub uri: std::vec::Vec<u8>,
    /// Route set to send it over (empty: straight to `uri`).
    pub route: std::vec::Vec<u8>,
}

impl Ping {
    pub fn param(&self) -> u64 {
        encode_param(self.id, self.seq)
    }
}

/// How a ping ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PingResult {
    /// A reply from the destination.
    Reply(u32),
    /// tm ended the transaction itself: 408 is a timeout, anything else a
    /// local error (e.g. no route to the destination).
    Local(u32),
    /// The ping could not be sent.
    SendError,
}

/// What [`Table::on_result`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied<H> {
    pub id: u64,
    pub uri: std::vec::Vec<u8>,
    pub owner: std::vec::Vec<u8>,
    pub hooks: H,
    /// The result counted as alive.
    pub alive: bool,
    /// The result is older than one applied already: counted in the
    /// statistics only.
    pub stale: bool,
    pub transition: Option<(State, State)>,
    /// The destination was removed: its failures exceeded delete_counter.
    pub removed: bool,
    pub rtt_ms: Option<u32>,
}

/// A state change, delivered in the order the changes happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event<H> {
    pub id: u64,
    pub uri: std::vec::Vec<u8>,
    pub owner: std::vec::Vec<u8>,
    pub from: State,
    pub to: State,
    /// The destination's hooks now; None when it was removed since.
    pub hooks: Option<H>,
}

struct EventRec<A: Allocator> {
    id: u64,
    strs: Packed<A, 2>,
    from: State,
    to: State,
}

pub struct Table<A: Allocator + Clone, H> {
    alloc: A,
    cfg: Config,
    /// Sorted by id (ids only grow, new ones are appended).
    dests: Vec<Dest<A, H>, A>,
    next_id: u64,
    events: Vec<EventRec<A>, A>,
    dropped_events: u64,
}

impl<A: Allocator + Clone, H: Copy + Default> Table<A, H> {
    pub fn new_in(cfg: Config, alloc: A) -> Self {
        Table {
            dests: Vec::new_in(alloc.clone()),
            events: Vec::new_in(alloc.clone()),
            alloc,
            cfg,
            next_id: 1,
            dropped_events: 0,
        }
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub fn len(&self) -> usize {
        self.dests.len()
    }

    pub fn is_empty(&self) -> bool {
        self.dests.is_empty()
    }

    /// State changes dropped because the queue was full.
    pub fn dropped_events(&self) -> u64 {
        self.dropped_events
    }

    fn index_of(&self, id: u64) -> Option<usize> {
        self.dests.binary_search_by_key(&id, |d| d.id).ok()
    }

    fn position(&self, uri: &[u8], owner: &[u8]) -> Option<usize> {
        let key = Key::of(uri);
        self.dests.iter().rposition(|d| d.is(&key, owner))
    }

    /// Monitor `uri` for `owner`. A URI without `sip:`/`sips:` gets `sip:`
    /// (the caller checks it parses as a SIP URI). `interval_ms` None: the
    /// configured default. `hooks` None: none for a new destination, and
    /// an existing one keeps its own.
    pub fn add(
        &mut self,
        uri_in: &[u8],
        owner: &[u8],
        flags: i32,
        interval_ms: Option<u64>,
        hooks: Option<H>,
        now: Now,
    ) -> Result<Added<H>, KaError> {
        let uri = uri::normalize(uri_in);
        if let Some(i) = self.position(&uri, owner) {
            let d = &mut self.dests[i];
            d.fails = 0;
            let replaced = hooks.map(|h| core::mem::replace(&mut d.hooks, h));
            return Ok(Added::Exists { id: d.id, state: d.state, uri: d.uri().to_vec(), replaced });
        }
        let first_ping_ms = now.mono_ms + self.cfg.first_ping_delay_ms;
        let id = self.push_new(&uri, owner, b"", flags, interval_ms, hooks.unwrap_or_default(), 1, |_, _| first_ping_ms)?;
        Ok(Added::New { id, uri })
    }

    /// Append a destination known not to be there yet; `first_ping` gives
    /// the time of its first ping from its id and interval.
    #[allow(clippy::too_many_arguments)]
    fn push_new(
        &mut self,
        uri: &[u8],
        owner: &[u8],
        route: &[u8],
        flags: i32,
        interval_ms: Option<u64>,
        hooks: H,
        refs: u32,
        first_ping: impl FnOnce(u64, u64) -> u64,
    ) -> Result<u64, KaError> {
        if self.next_id > MAX_ID {
            return Err(KaError::NoIds);
        }
        let strs = Packed::new_in([uri, owner, route], self.alloc.clone())?;
        self.dests.try_reserve(1).map_err(|_| KaError::NoMemory)?;
        let id = self.next_id;
        self.next_id += 1;
        let interval_ms = interval_ms.filter(|&i| i > 0).unwrap_or(self.cfg.default_interval_ms).max(1);
        self.dests.push(Dest {
            id,
            strs,
            flags,
            state: State::Unknown,
            last_checked: 0,
            last_up: 0,
            last_down: 0,
            fails: 0,
            oks: 0,
            interval_ms,
            next_ping_ms: first_ping(id, interval_ms),
            pinged: false,
            last_seq: 0,
            applied_seq: 0,
            inflight: [(0, 0); INFLIGHT],
            stats: Stats::default(),
            hooks,
            refs,
        });
        Ok(id)
    }

    /// Make `owner`'s destinations exactly `wanted` (URI with a scheme →
    /// (route set to ping over, how many things need it)), in one pass:
    /// the others of `owner` are removed, a changed route set is updated,
    /// every count set, the missing ones added with `flags` and
    /// `interval_ms`, their first pings spread over one interval
    /// (thousands added at once are not pinged in a burst). `wanted` is
    /// left holding what was added. Returns (added, removed).
    pub fn sync_owner(
        &mut self,
        owner: &[u8],
        wanted: &mut std::collections::HashMap<std::vec::Vec<u8>, (std::vec::Vec<u8>, u32)>,
        flags: i32,
        interval_ms: u64,
        now: Now,
    ) -> Result<(usize, usize), KaError> {
        let before = self.dests.len();
        let alloc = self.alloc.clone();
        self.dests.retain_mut(|d| {
            if d.owner() != owner {
                return true;
            }
            let Some((route, refs)) = wanted.remove(d.uri()) else { return false };
            d.refs = refs.max(1);
            if route != d.route() {
                // on no memory the old route set stays until the next sync
                if let Ok(strs) = Packed::new_in([d.uri(), d.owner(), &route], alloc.clone()) {
                    d.strs = strs;
                }
            }
            true
        });
        let removed = before - self.dests.len();
        let mut added = 0;
        for (uri, (route, refs)) in wanted.iter() {
            let first = |id, iv| now.mono_ms + spread_in(id, iv);
            self.push_new(uri, owner, route, flags, Some(interval_ms), H::default(), (*refs).max(1), first)?;
            added += 1;
        }
        Ok((added, removed))
    }

    /// Like [`Table::add`] for one destination of a monitored group,
    /// pinged over `route` (a route set; empty: straight to the URI): the
    /// first ping somewhere in the first interval rather than right away.
    /// An existing one keeps its route set (the next sync_owner updates it)
    /// and counts one more thing that needs it ([`Table::release`]).
    pub fn add_spread(
        &mut self,
        uri_in: &[u8],
        owner: &[u8],
        route: &[u8],
        flags: i32,
        interval_ms: u64,
        now: Now,
    ) -> Result<Added<H>, KaError> {
        let uri = uri::normalize(uri_in);
        if let Some(i) = self.position(&uri, owner) {
            let d = &mut self.dests[i];
            d.refs = d.refs.saturating_add(1);
            return Ok(Added::Exists { id: d.id, state: d.state, uri: d.uri().to_vec(), replaced: None });
        }
        let first = |id, iv| now.mono_ms + spread_in(id, iv);
        let id = self.push_new(&uri, owner, route, flags, Some(interval_ms), H::default(), 1, first)?;
        Ok(Added::New { id, uri })
    }

    /// One thing that needed the group destination `uri` of `owner` (see
    /// [`Table::add_spread`]) lets go of it: removed when it was the last.
    /// Some(true) removed, Some(false) still needed, None: not there.
    pub fn release(&mut self, uri_in: &[u8], owner: &[u8]) -> Option<bool> {
        let uri = uri::normalize(uri_in);
        let i = self.position(&uri, owner)?;
        let d = &mut self.dests[i];
        d.refs = d.refs.saturating_sub(1);
        if d.refs > 0 {
            return Some(false);
        }
        self.dests.remove(i);
        Some(true)
    }

    /// (all, up, down) destinations of `owner`.
    pub fn count_owner(&self, owner: &[u8]) -> (usize, usize, usize) {
        self.dests.iter().filter(|d| d.owner() == owner).fold((0, 0, 0), |(n, up, down), d| {
            (n + 1, up + (d.state == State::Up) as usize, down + (d.state == State::Down) as usize)
        })
    }

    /// Destinations of every owner by state: (up, down, unknown).
    pub fn count_states(&self) -> (usize, usize, usize) {
        self.dests.iter().fold((0, 0, 0), |(up, down, unknown), d| match d.state {
            State::Up => (up + 1, down, unknown),
            State::Down => (up, down + 1, unknown),
            State::Unknown => (up, down, unknown + 1),
        })
    }

    /// Stop monitoring `uri` for `owner` (same matching rule as add).
    pub fn remove(&mut self, uri: &[u8], owner: &[u8]) -> Option<DestInfo<H>> {
        let i = self.position(uri, owner)?;
        let info = self.dests[i].info();
        self.dests.remove(i);
        Some(info)
    }

    pub fn remove_id(&mut self, id: u64) -> Option<DestInfo<H>> {
        let i = self.index_of(id)?;
        let info = self.dests[i].info();
        self.dests.remove(i);
        Some(info)
    }

    /// Remove every destination of `owner`; how many.
    pub fn remove_owner(&mut self, owner: &[u8]) -> usize {
        let before = self.dests.len();
        self.dests.retain(|d| d.owner() != owner);
        before - self.dests.len()
    }

    /// Remove every destination; how many.
    pub fn flush(&mut self) -> usize {
        let n = self.dests.len();
        self.dests.clear();
        n
    }

    /// State of the destination `query` names (see [`uri`] for the rule);
    /// with several owners of one URI, the most recently added one's.
    pub fn state_of(&self, query: &[u8]) -> Option<State> {
        uri::state_query_keys(query)
            .iter()
            .flatten()
            .find_map(|k| self.dests.iter().rev().find(|d| k.matches(d.uri())).map(|d| d.state))
    }

    pub fn get(&self, uri: &[u8], owner: &[u8]) -> Option<DestInfo<H>> {
        self.position(uri, owner).map(|i| self.dests[i].info())
    }

    pub fn get_id(&self, id: u64) -> Option<DestInfo<H>> {
        self.index_of(id).map(|i| self.dests[i].info())
    }

    /// Every destination, most recently added first (the C module's order).
    pub fn list(&self) -> std::vec::Vec<DestInfo<H>> {
        self.dests.iter().rev().map(Dest::info).collect()
    }

    /// The pings due at `now`, at most `max` of them, appended to `out`;
    /// each is recorded as sent (`last checked`). The caller sends them and
    /// reports each outcome. Pings beyond `max` stay due for the next call
    /// (thousands of destinations added at once are not pinged in one
    /// burst).
    pub fn due(&mut self, now: Now, max: usize, out: &mut std::vec::Vec<Ping>) {
        let mut n = 0;
        for d in self.dests.iter_mut() {
            if d.next_ping_ms > now.mono_ms {
                continue;
            }
            if n == max {
                break;
            }
            n += 1;
            d.last_seq = match d.last_seq.wrapping_add(1) {
                0 => 1,
                s => s,
            };
            let seq = d.last_seq;
            d.inflight[seq as usize % INFLIGHT] = (seq, now.mono_ms);
            d.last_checked = now.wall;
            d.stats.pings += 1;
            if !d.pinged {
                d.pinged = true;
                d.next_ping_ms = now.mono_ms + d.spread_ms();
            } else {
                d.next_ping_ms += d.interval_ms;
                if d.next_ping_ms <= now.mono_ms {
                    // the timer fell behind: no burst of catch-up pings
                    d.next_ping_ms = now.mono_ms + d.interval_ms;
                }
            }
            out.push(Ping { id: d.id, seq, uri: d.uri().to_vec(), route: d.route().to_vec() });
        }
    }

    /// Milliseconds until the next ping is due (None: no destination).
    pub fn next_due_in(&self, now: Now) -> Option<u64> {
        self.dests.iter().map(|d| d.next_ping_ms.saturating_sub(now.mono_ms)).min()
    }

    /// Apply the outcome of ping `seq` (its low [`SEQ_BITS`] bits are
    /// enough) of destination `id`. None when the destination is gone.
    pub fn on_result(&mut self, id: u64, seq: u32, result: PingResult, now: Now) -> Option<Applied<H>> {
        let i = self.index_of(id)?;
        let cfg = self.cfg;
        let d = &mut self.dests[i];
        // the full sequence number: the newest sent one with these low bits
        let behind = (d.last_seq.wrapping_sub(seq) as u64 & SEQ_MASK) as u32;
        let seq = d.last_seq.wrapping_sub(behind);
        let slot = &mut d.inflight[seq as usize % INFLIGHT];
        let mut rtt_ms = None;
        if slot.0 == seq && seq != 0 {
            if let PingResult::Reply(_) = result {
                let ms = now.mono_ms.saturating_sub(slot.1);
                d.stats.add_rtt(ms);
                rtt_ms = Some(ms.min(u32::MAX as u64) as u32);
            }
            *slot = (0, 0);
        }
        let alive = match result {
            PingResult::Reply(code) => {
                d.stats.replies += 1;
                d.flags & FLAG_ANY_REPLY_ALIVE != 0 || cfg.alive.contains(code)
            }
            PingResult::Local(408) => {
                d.stats.timeouts += 1;
                false
            }
            PingResult::Local(_) | PingResult::SendError => {
                d.stats.send_errors += 1;
                false
            }
        };
        // a ping never sent (or one older than the low bits can tell) is
        // stale, as is one older than the newest applied
        let sent = d.last_seq != 0 && (behind as u64) < d.stats.pings;
        let stale = !sent || seq == 0 || (d.applied_seq != 0 && (seq.wrapping_sub(d.applied_seq) as i32) <= 0);
        let mut out = Applied {
            id,
            uri: d.uri().to_vec(),
            owner: d.owner().to_vec(),
            hooks: d.hooks,
            alive,
            stale,
            transition: None,
            removed: false,
            rtt_ms,
        };
        if stale {
            return Some(out);
        }
        d.applied_seq = seq;
        let old = d.state;
        if alive {
            d.last_up = now.wall;
            d.fails = 0;
            d.oks = d.oks.saturating_add(1);
            if d.state != State::Up && d.oks >= cfg.up_after {
                d.state = State::Up;
            }
        } else {
            d.last_down = now.wall;
            d.oks = 0;
            d.fails = d.fails.saturating_add(1);
            if d.state != State::Down && d.fails >= cfg.down_after {
                d.state = State::Down;
            }
        }
        let new = d.state;
        let remove =
            !alive && cfg.delete_counter > 0 && d.fails > cfg.delete_counter && d.flags & FLAG_NO_DELETE_COUNTER == 0;
        if new != old {
            out.transition = Some((old, new));
            self.push_event(id, &out.uri, &out.owner, old, new);
        }
        if remove {
            self.dests.remove(i);
            out.removed = true;
        }
        Some(out)
    }

    fn push_event(&mut self, id: u64, uri: &[u8], owner: &[u8], from: State, to: State) {
        if self.events.len() >= self.cfg.max_events.max(1) {
            self.events.remove(0);
            self.dropped_events += 1;
        }
        let Ok(strs) = Packed::new_in([uri, owner], self.alloc.clone()) else {
            self.dropped_events += 1;
            return;
        };
        if self.events.try_reserve(1).is_err() {
            self.dropped_events += 1;
            return;
        }
        self.events.push(EventRec { id, strs, from, to });
    }

    pub fn has_events(&self) -> bool {
        !self.events.is_empty()
    }

    /// The oldest state change not delivered yet.
    pub fn pop_event(&mut self) -> Option<Event<H>> {
        if self.events.is_empty() {
            return None;
        }
        let e = self.events.remove(0);
        let hooks = self.index_of(e.id).map(|i| self.dests[i].hooks);
        Some(Event {
            id: e.id,
            uri: e.strs.get(S_URI).to_vec(),
            owner: e.strs.get(S_OWNER).to_vec(),
            from: e.from,
            to: e.to,
            hooks,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use allocator_api2::alloc::Global;

    type T = Table<Global, u32>;

    fn at(ms: u64) -> Now {
        Now { wall: 1_700_000_000 + (ms / 1000) as i64, mono_ms: ms }
    }

    fn table(cfg: Config) -> T {
        Table::new_in(cfg, Global)
    }

    fn c_like() -> Config {
        Config { default_interval_ms: 1000, ..Config::default() }
    }

    fn pings(t: &mut T, now: Now) -> std::vec::Vec<Ping> {
        let mut v = std::vec::Vec::new();
        t.due(now, usize::MAX, &mut v);
        v
    }

    #[test]
    fn sync_owner_adds_and_removes_in_one_pass_and_leaves_others_alone() {
        let mut t = table(c_like());
        t.add(b"sip:gw@x", b"drouting", 0, None, None, at(0)).expect("add");
        t.add(b"sip:p1@x", b"phones", 0, None, None, at(0)).expect("add");
        t.add(b"sip:p2@x", b"phones", 0, None, None, at(0)).expect("add");
        let mut wanted: std::collections::HashMap<std::vec::Vec<u8>, (std::vec::Vec<u8>, u32)> = [
            (b"sip:p2@x".to_vec(), (vec![], 1)),
            (b"sip:p3@x".to_vec(), (b"<sip:edge;lr>".to_vec(), 1)),
            (b"sip:p4@x".to_vec(), (vec![], 1)),
        ]
        .into();
        assert_eq!(t.sync_owner(b"phones", &mut wanted, FLAG_ANY_REPLY_ALIVE, 30_000, at(0)), Ok((2, 1)));
        assert_eq!(wanted.len(), 2, "left with what was added");
        let mut uris: std::vec::Vec<(std::vec::Vec<u8>, std::vec::Vec<u8>)> =
            t.list().into_iter().map(|d| (d.owner, d.uri)).collect();
        uris.sort();
        assert_eq!(
            uris,
            [
                (b"drouting".to_vec(), b"sip:gw@x".to_vec()),
                (b"phones".to_vec(), b"sip:p2@x".to_vec()),
                (b"phones".to_vec(), b"sip:p3@x".to_vec()),
                (b"phones".to_vec(), b"sip:p4@x".to_vec()),
            ]
        );
        assert_eq!(t.count_owner(b"phones"), (3, 0, 0));
        // p2 moved behind an edge proxy: same destination, new route set
        let mut again: std::collections::HashMap<std::vec::Vec<u8>, (std::vec::Vec<u8>, u32)> = [
            (b"sip:p2@x".to_vec(), (b"<sip:edge2;lr>".to_vec(), 1)),
            (b"sip:p3@x".to_vec(), (b"<sip:edge;lr>".to_vec(), 1)),
            (b"sip:p4@x".to_vec(), (vec![], 1)),
        ]
        .into();
        assert_eq!(t.sync_owner(b"phones", &mut again, 0, 30_000, at(1)), Ok((0, 0)));
        let routes: std::collections::HashMap<std::vec::Vec<u8>, std::vec::Vec<u8>> =
            pings(&mut t, at(60_000)).into_iter().map(|p| (p.uri, p.route)).collect();
        assert_eq!(routes.get(&b"sip:p2@x"[..]).map(|r| &r[..]), Some(&b"<sip:edge2;lr>"[..]));
        assert_eq!(routes.get(&b"sip:p3@x"[..]).map(|r| &r[..]), Some(&b"<sip:edge;lr>"[..]));
        assert_eq!(routes.get(&b"sip:gw@x"[..]).map(|r| &r[..]), Some(&b""[..]));
        assert_eq!(t.sync_owner(b"phones", &mut Default::default(), 0, 30_000, at(1)), Ok((0, 3)));
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn a_group_destination_goes_when_the_last_thing_that_needs_it_lets_go() {
        let mut t = table(c_like());
        assert!(matches!(t.add_spread(b"sip:p1@x", b"phones", b"", 0, 10_000, at(0)), Ok(Added::New { .. })));
        assert!(matches!(t.add_spread(b"p1@x", b"phones", b"", 0, 10_000, at(0)), Ok(Added::Exists { .. })));
        assert_eq!(t.release(b"sip:p1@x", b"other"), None, "another owner's");
        assert_eq!(t.release(b"sip:p1@x", b"phones"), Some(false), "still needed once");
        assert_eq!(t.count_owner(b"phones"), (1, 0, 0));
        assert_eq!(t.release(b"p1@x", b"phones"), Some(true));
        assert_eq!(t.count_owner(b"phones"), (0, 0, 0));
        assert_eq!(t.release(b"sip:p1@x", b"phones"), None);
        // sync_owner sets the counts: three things need p2, then only one
        let mut wanted: std::collections::HashMap<std::vec::Vec<u8>, (std::vec::Vec<u8>, u32)> =
            [(b"sip:p2@x".to_vec(), (vec![], 3))].into();
        t.sync_owner(b"phones", &mut wanted, 0, 10_000, at(0)).expect("sync");
        assert_eq!(t.release(b"sip:p2@x", b"phones"), Some(false));
        let mut wanted: std::collections::HashMap<std::vec::Vec<u8>, (std::vec::Vec<u8>, u32)> =
            [(b"sip:p2@x".to_vec(), (vec![], 1))].into();
        t.sync_owner(b"phones", &mut wanted, 0, 10_000, at(1)).expect("sync");
        assert_eq!(t.release(b"sip:p2@x", b"phones"), Some(true));
        assert!(t.is_empty());
    }

    #[test]
    fn spread_first_pings_cover_the_interval_instead_of_a_burst() {
        let mut t = table(c_like());
        let mut wanted: std::collections::HashMap<std::vec::Vec<u8>, (std::vec::Vec<u8>, u32)> =
            (0..1000).map(|i| (format!("sip:p{i}@x").into_bytes(), (vec![], 1))).collect();
        t.sync_owner(b"phones", &mut wanted, 0, 10_000, at(0)).expect("sync");
        // in each tenth of the interval, about a tenth of the first pings
        let mut seen = std::collections::HashSet::new();
        for tenth in 1..=10u64 {
            let first = pings(&mut t, at(tenth * 1000)).iter().filter(|p| seen.insert(p.id)).count();
            assert!((50..=150).contains(&first), "{first} first pings in tenth {tenth}");
        }
        assert_eq!(seen.len(), 1000);
        assert!(matches!(t.add_spread(b"sip:p1@x", b"phones", b"", 0, 10_000, at(0)), Ok(Added::Exists { .. })));
        let id = new_id(t.add_spread(b"sip:late@x", b"phones", b"", 0, 10_000, at(20_000)).expect("add"));
        assert!(pings(&mut t, at(20_000)).iter().all(|p| p.id != id) || spread_in(id, 10_000) == 0);
        assert!(pings(&mut t, at(30_000)).iter().any(|p| p.id == id));
    }

    #[test]
    fn delete_counter_spares_destinations_flagged_so() {
        let cfg = Config { delete_counter: 1, down_after: 3, ..c_like() };
        let mut t = table(cfg);
        let kept = new_id(t.add(b"sip:phone@x", b"p", FLAG_NO_DELETE_COUNTER, None, None, at(0)).expect("add"));
        let gone = new_id(t.add(b"sip:gw@x", b"g", 0, None, None, at(0)).expect("add"));
        for round in 1..=4u64 {
            for p in pings(&mut t, at(round * 2000)) {
                t.on_result(p.id, p.seq, PingResult::Local(408), at(round * 2000 + 100));
            }
        }
        assert!(t.get_id(gone).is_none(), "removed after delete_counter + 1 failures");
        assert_eq!(t.get_id(kept).map(|d| d.state), Some(State::Down), "kept, and down after 3");
    }

    #[test]
    fn any_reply_proves_a_flagged_destination_alive() {
        let cfg = Config { down_after: 1, ..c_like() };
        let mut t = table(cfg);
        let phone = new_id(t.add(b"sip:phone@x", b"p", FLAG_ANY_REPLY_ALIVE, None, None, at(0)).expect("add"));
        let gw = new_id(t.add(b"sip:gw@x", b"g", 0, None, None, at(0)).expect("add"));
        let ps = pings(&mut t, at(1000));
        for p in &ps {
            t.on_result(p.id, p.seq, PingResult::Reply(405), at(1100)).expect("applied");
        }
        assert_eq!(t.get_id(phone).map(|d| d.state), Some(State::Up));
        assert_eq!(t.get_id(gw).map(|d| d.state), Some(State::Down));
        t.add(b"sip:new@x", b"g", 0, None, None, at(1200)).expect("add");
        assert_eq!(t.count_states(), (1, 1, 1), "(up, down, unknown) over every owner");
        // no reply at all is still a failure
        let ps = pings(&mut t, at(5000));
        let p = ps.iter().find(|p| p.id == phone).expect("phone pinged");
        t.on_result(p.id, p.seq, PingResult::Local(408), at(5100)).expect("applied");
        assert_eq!(t.get_id(phone).map(|d| d.state), Some(State::Down));
    }

    fn new_id(a: Added<u32>) -> u64 {
        match a {
            Added::New { id, .. } => id,
            other => panic!("expected a new destination, got {other:?}"),
        }
    }

    #[test]
    fn add_normalizes_and_dedups_with_one_rule() {
        let mut t = table(c_like());
        let id = new_id(t.add(b"1.2.3.4:5080", b"o", 0, None, None, at(0)).expect("add"));
        // the C module added this twice (raw compare against "sip:...")
        match t.add(b"1.2.3.4:5080", b"o", 0, None, None, at(0)).expect("add") {
            Added::Exists { id: e, .. } => assert_eq!(e, id),
            other => panic!("{other:?}"),
        }
        assert!(matches!(t.add(b"SIP:1.2.3.4:5080", b"o", 0, None, None, at(0)), Ok(Added::Exists { .. })));
        // another owner is another destination
        let id2 = new_id(t.add(b"sip:1.2.3.4:5080", b"other", 0, None, None, at(0)).expect("add"));
        assert_ne!(id, id2);
        // sips is another destination too
        new_id(t.add(b"sips:1.2.3.4:5080", b"o", 0, None, None, at(0)).expect("add"));
        assert_eq!(t.len(), 3);
        let l = t.list();
        assert_eq!(l[0].uri, b"sips:1.2.3.4:5080");
        assert_eq!(l[2].uri, b"sip:1.2.3.4:5080");
        assert_eq!(l[2].owner, b"o");
        assert_eq!(t.get(b"1.2.3.4:5080", b"o").map(|d| d.id), Some(id));
        assert!(t.get(b"1.2.3.4:5080", b"nobody").is_none());
        assert_eq!(t.remove(b"Sip:1.2.3.4:5080", b"o").map(|d| d.id), Some(id));
        assert!(t.remove(b"sip:1.2.3.4:5080", b"o").is_none());
        assert_eq!(t.len(), 2);
        assert_eq!(t.flush(), 2);
        assert!(t.is_empty());
    }

    #[test]
    fn first_ping_after_500ms_then_spread_then_every_interval() {
        let mut t = table(c_like());
        let id = new_id(t.add(b"h", b"o", 0, None, None, at(0)).expect("add"));
        assert!(pings(&mut t, at(499)).is_empty());
        let p = pings(&mut t, at(500));
        assert_eq!(p, vec![Ping { id, seq: 1, uri: b"sip:h".to_vec(), route: vec![] }]);
        assert!(pings(&mut t, at(500)).is_empty(), "sent once");
        // the second ping comes 0.5 to 1.5 intervals later
        let wait = t.next_due_in(at(500)).expect("scheduled");
        assert!((500..1500).contains(&wait), "{wait}");
        let second = 500 + wait;
        assert_eq!(pings(&mut t, at(second)).len(), 1);
        assert!(pings(&mut t, at(second + 999)).is_empty());
        assert_eq!(pings(&mut t, at(second + 1000)).len(), 1);
        // a stalled timer does not cause a burst
        assert_eq!(pings(&mut t, at(second + 10_000)).len(), 1);
        assert!(pings(&mut t, at(second + 10_500)).is_empty());
        assert_eq!(t.get_id(id).map(|d| d.stats.pings), Some(4));
    }

    #[test]
    fn a_burst_of_due_pings_is_capped_per_call() {
        let mut t = table(c_like());
        for i in 0..10 {
            t.add(format!("h{i}").as_bytes(), b"o", 0, None, None, at(0)).expect("add");
        }
        let mut v = std::vec::Vec::new();
        t.due(at(500), 4, &mut v);
        assert_eq!(v.len(), 4);
        assert_eq!(t.next_due_in(at(500)), Some(0), "the rest is still due");
        t.due(at(560), 4, &mut v);
        t.due(at(620), 4, &mut v);
        assert_eq!(v.len(), 10);
        let mut ids: std::vec::Vec<u64> = v.iter().map(|p| p.id).collect();
        ids.dedup();
        assert_eq!(ids.len(), 10, "each once");
    }

    #[test]
    fn destinations_added_together_are_spread_over_the_interval() {
        let mut t = table(Config { default_interval_ms: 10_000, ..c_like() });
        for i in 0..20 {
            t.add(format!("h{i}").as_bytes(), b"o", 0, None, None, at(0)).expect("add");
        }
        assert_eq!(pings(&mut t, at(500)).len(), 20);
        // over the next 1.5 intervals, no 1 s window holds more than a few
        let mut per_second = [0usize; 16];
        for ms in (600..15_500).step_by(100) {
            per_second[(ms / 1000) as usize] += pings(&mut t, at(ms)).len();
        }
        assert!(per_second.iter().all(|&n| n <= 5), "{per_second:?}");
        assert!(per_second.iter().sum::<usize>() >= 20);
    }

    #[test]
    fn states_follow_replies_once_per_transition_with_times_not_swapped() {
        let mut t = table(c_like());
        let id = new_id(t.add(b"h", b"o", 0, None, Some(7), at(0)).expect("add"));
        let p = pings(&mut t, at(500));
        let a = t.on_result(id, p[0].seq, PingResult::Reply(200), at(520)).expect("known");
        assert!(a.alive && !a.stale);
        assert_eq!(a.transition, Some((State::Unknown, State::Up)));
        assert_eq!(a.rtt_ms, Some(20));
        assert_eq!(a.hooks, 7);
        let d = t.get_id(id).expect("there");
        // #3790: a 2xx sets last up, not last down
        assert_eq!((d.last_up, d.last_down), (at(520).wall, 0));
        assert_eq!(d.state, State::Up);
        let e = t.pop_event().expect("event");
        assert_eq!((e.from, e.to, e.hooks, e.uri.as_slice()), (State::Unknown, State::Up, Some(7), &b"sip:h"[..]));
        assert!(t.pop_event().is_none());

        // up again: no event
        let p = pings(&mut t, at(5000));
        let a = t.on_result(id, p[0].seq, PingResult::Reply(202), at(5001)).expect("known");
        assert_eq!(a.transition, None);
        assert!(!t.has_events());

        // a timeout: down, last down set
        let p = pings(&mut t, at(10_000));
        let a = t.on_result(id, p[0].seq, PingResult::Local(408), at(12_000)).expect("known");
        assert_eq!(a.transition, Some((State::Up, State::Down)));
        assert_eq!(a.rtt_ms, None);
        let d = t.get_id(id).expect("there");
        assert_eq!((d.last_up, d.last_down), (at(5001).wall, at(12_000).wall));
        assert_eq!(d.stats.timeouts, 1);
        assert_eq!(t.pop_event().map(|e| (e.from, e.to)), Some((State::Up, State::Down)));
        // a non-2xx reply keeps it down: no event
        let p = pings(&mut t, at(20_000));
        t.on_result(id, p[0].seq, PingResult::Reply(503), at(20_001)).expect("known");
        assert!(!t.has_events());
        assert_eq!(t.state_of(b"h"), Some(State::Down));
    }

    #[test]
    fn thresholds_delay_transitions() {
        let mut t = table(Config { down_after: 3, up_after: 2, delete_counter: 0, ..c_like() });
        let id = new_id(t.add(b"h", b"o", 0, None, None, at(0)).expect("add"));
        let mut ms = 500;
        let mut step = |t: &mut T, r: PingResult| {
            let p = pings(t, at(ms));
            assert_eq!(p.len(), 1, "a ping at {ms}");
            let a = t.on_result(id, p[0].seq, r, at(ms + 1)).expect("known");
            ms += 1500;
            a.transition
        };
        assert_eq!(step(&mut t, PingResult::Reply(200)), None);
        assert_eq!(step(&mut t, PingResult::Reply(200)), Some((State::Unknown, State::Up)));
        assert_eq!(step(&mut t, PingResult::Local(408)), None);
        assert_eq!(step(&mut t, PingResult::SendError), None);
        // a success in between resets the run
        assert_eq!(step(&mut t, PingResult::Reply(200)), None);
        assert_eq!(step(&mut t, PingResult::Local(408)), None);
        assert_eq!(step(&mut t, PingResult::Local(408)), None);
        assert_eq!(step(&mut t, PingResult::Local(503)), Some((State::Up, State::Down)));
        assert_eq!(step(&mut t, PingResult::Reply(200)), None);
        assert_eq!(step(&mut t, PingResult::Reply(200)), Some((State::Down, State::Up)));
    }

    #[test]
    fn alive_codes_are_configurable() {
        let alive = AliveCodes::parse("200-299,404,405").expect("valid");
        let mut t = table(Config { alive, ..c_like() });
        let id = new_id(t.add(b"h", b"o", 0, None, None, at(0)).expect("add"));
        let p = pings(&mut t, at(500));
        let a = t.on_result(id, p[0].seq, PingResult::Reply(405), at(501)).expect("known");
        assert!(a.alive);
        assert_eq!(t.state_of(b"h"), Some(State::Up));
        // a local 408 is never alive, even if 408 were listed
        let alive = AliveCodes::parse("200-299,408").expect("valid");
        let mut t = table(Config { alive, ..c_like() });
        let id = new_id(t.add(b"h", b"o", 0, None, None, at(0)).expect("add"));
        let p = pings(&mut t, at(500));
        assert!(!t.on_result(id, p[0].seq, PingResult::Local(408), at(501)).expect("known").alive);
        let p = pings(&mut t, at(5000));
        assert!(t.on_result(id, p[0].seq, PingResult::Reply(408), at(5001)).expect("known").alive);
    }

    #[test]
    fn delete_counter_removes_the_destination_3028() {
        let mut t = table(c_like()); // delete_counter 5
        let id = new_id(t.add(b"h", b"o", 0, None, None, at(0)).expect("add"));
        let mut ms = 500;
        let mut seqs = std::vec::Vec::new();
        for n in 1..=6 {
            let p = pings(&mut t, at(ms));
            assert_eq!(p.len(), 1);
            seqs.push(p[0].seq);
            let a = t.on_result(id, p[0].seq, PingResult::Local(408), at(ms + 1)).expect("known");
            assert_eq!(a.removed, n == 6, "after {n} failures");
            ms += 1500;
        }
        assert!(t.is_empty(), "removed, not kept un-pinged");
        assert!(pings(&mut t, at(ms + 60_000)).is_empty());
        // a late 200 for it changes nothing (C: "alive forever, never pinged")
        assert!(t.on_result(id, seqs[0], PingResult::Reply(200), at(ms)).is_none());
        assert_eq!(t.state_of(b"h"), None);
        // re-adding starts afresh
        let id2 = new_id(t.add(b"h", b"o", 0, None, None, at(ms)).expect("add"));
        assert_ne!(id, id2);
        assert_eq!(t.state_of(b"h"), Some(State::Unknown));
    }

    #[test]
    fn re_adding_resets_the_counter_and_can_replace_hooks() {
        let mut t = table(c_like());
        let id = new_id(t.add(b"h", b"o", 0, None, Some(1), at(0)).expect("add"));
        let mut ms = 500;
        for _ in 0..5 {
            let p = pings(&mut t, at(ms));
            t.on_result(id, p[0].seq, PingResult::Local(408), at(ms + 1)).expect("known");
            ms += 1500;
        }
        assert_eq!(t.get_id(id).map(|d| d.fails), Some(5));
        match t.add(b"h", b"o", 0, None, None, at(ms)).expect("add") {
            Added::Exists { replaced, state, .. } => {
                assert_eq!(replaced, None);
                assert_eq!(state, State::Down);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(t.get_id(id).map(|d| (d.fails, d.hooks)), Some((0, 1)));
        match t.add(b"h", b"o", 0, None, Some(2), at(ms)).expect("add") {
            Added::Exists { replaced, .. } => assert_eq!(replaced, Some(1)),
            other => panic!("{other:?}"),
        }
        assert_eq!(t.get_id(id).map(|d| d.hooks), Some(2));
    }

    #[test]
    fn replies_for_deleted_or_re_added_destinations_change_nothing_2448() {
        let mut t = table(c_like());
        let id = new_id(t.add(b"h", b"o", 0, None, None, at(0)).expect("add"));
        let p = pings(&mut t, at(500));
        assert!(t.remove(b"h", b"o").is_some());
        let id2 = new_id(t.add(b"h", b"o", 0, None, None, at(600)).expect("add"));
        // the reply to the old destination's ping arrives now
        assert!(t.on_result(id, p[0].seq, PingResult::Reply(200), at(700)).is_none());
        assert_eq!(t.get_id(id2).map(|d| d.state), Some(State::Unknown));
        // nonsense parameters are ignored
        assert!(t.on_result(0, 0, PingResult::Reply(200), at(700)).is_none());
        assert!(t.on_result(MAX_ID, 5, PingResult::Reply(200), at(700)).is_none());
        let (i, s) = decode_param(encode_param(id2, 77));
        assert_eq!((i, s), (id2, 77));
        // a reply naming a ping never sent is stale
        let a = t.on_result(id2, 3, PingResult::Reply(200), at(700)).expect("known");
        assert!(a.stale);
        assert_eq!(t.get_id(id2).map(|d| d.state), Some(State::Unknown));
    }

    #[test]
    fn late_results_of_older_pings_do_not_flap_the_state() {
        let mut t = table(Config { delete_counter: 0, ..c_like() });
        let id = new_id(t.add(b"h", b"o", 0, None, None, at(0)).expect("add"));
        let p1 = pings(&mut t, at(500));
        let p2 = pings(&mut t, at(2500));
        // ping 2 answered first, ping 1 times out later
        assert_eq!(
            t.on_result(id, p2[0].seq, PingResult::Reply(200), at(2510)).expect("known").transition,
            Some((State::Unknown, State::Up))
        );
        let late = t.on_result(id, p1[0].seq, PingResult::Local(408), at(5500)).expect("known");
        assert!(late.stale);
        assert_eq!(late.transition, None);
        let d = t.get_id(id).expect("there");
        assert_eq!(d.state, State::Up);
        assert_eq!(d.stats.timeouts, 1, "still counted");
        assert_eq!(d.last_down, 0);
    }

    #[test]
    fn latency_statistics() {
        let mut t = table(Config { delete_counter: 0, ..c_like() });
        let id = new_id(t.add(b"h", b"o", 0, None, None, at(0)).expect("add"));
        let mut ms = 500;
        for rtt in [10, 30, 20] {
            let p = pings(&mut t, at(ms));
            t.on_result(id, p[0].seq, PingResult::Reply(200), at(ms + rtt)).expect("known");
            ms += 1500;
        }
        let p = pings(&mut t, at(ms));
        t.on_result(id, p[0].seq, PingResult::Local(408), at(ms + 5000)).expect("known");
        let s = t.get_id(id).expect("there").stats;
        assert_eq!((s.rtt_last_ms, s.rtt_max_ms, s.rtt_avg_ms()), (20, 30, 20));
        assert_eq!((s.pings, s.replies, s.timeouts, s.send_errors), (4, 3, 1, 0));
    }

    #[test]
    fn state_of_matches_sip_and_sips_with_and_without_scheme() {
        let mut t = table(c_like());
        let a = new_id(t.add(b"127.0.0.1:5080", b"o", 0, None, None, at(0)).expect("add"));
        let b = new_id(t.add(b"sips:tls.example.com", b"o", 0, None, None, at(0)).expect("add"));
        let p = pings(&mut t, at(500));
        for ping in &p {
            let r = if ping.id == a { PingResult::Reply(200) } else { PingResult::Local(408) };
            t.on_result(ping.id, ping.seq, r, at(501)).expect("known");
        }
        assert_eq!(b, p.iter().find(|x| x.uri.starts_with(b"sips")).map(|x| x.id).unwrap_or(0));
        for q in [&b"127.0.0.1:5080"[..], b"sip:127.0.0.1:5080", b"SIP:127.0.0.1:5080"] {
            assert_eq!(t.state_of(q), Some(State::Up), "{}", String::from_utf8_lossy(q));
        }
        for q in [&b"tls.example.com"[..], b"sips:tls.example.com", b"SIPS:tls.example.com"] {
            assert_eq!(t.state_of(q), Some(State::Down), "{}", String::from_utf8_lossy(q));
        }
        for q in [&b"sips:127.0.0.1:5080"[..], b"sip:tls.example.com", b"127.0.0.1", b"", b":tls.example.com"] {
            assert_eq!(t.state_of(q), None, "{}", String::from_utf8_lossy(q));
        }
    }

    #[test]
    fn events_come_in_order_and_carry_current_hooks() {
        let mut t = table(Config { delete_counter: 0, ..c_like() });
        let id = new_id(t.add(b"h", b"o", 0, None, Some(1), at(0)).expect("add"));
        let other = new_id(t.add(b"g", b"o", 0, None, Some(9), at(0)).expect("add"));
        let mut ms = 500;
        for r in [200, 500, 200] {
            for p in pings(&mut t, at(ms)) {
                let res = if p.id == id { PingResult::Reply(r) } else { PingResult::Reply(200) };
                t.on_result(p.id, p.seq, res, at(ms + 1)).expect("known");
            }
            ms += 1500;
        }
        t.add(b"h", b"o", 0, None, Some(2), at(ms)).expect("add");
        t.remove_id(other);
        let evs: std::vec::Vec<_> = core::iter::from_fn(|| t.pop_event()).collect();
        let mine: std::vec::Vec<_> = evs.iter().filter(|e| e.id == id).map(|e| (e.from, e.to, e.hooks)).collect();
        assert_eq!(
            mine,
            vec![
                (State::Unknown, State::Up, Some(2)),
                (State::Up, State::Down, Some(2)),
                (State::Down, State::Up, Some(2))
            ]
        );
        let theirs: std::vec::Vec<_> = evs.iter().filter(|e| e.id == other).map(|e| e.hooks).collect();
        assert_eq!(theirs, vec![None], "removed since: no hooks to call");
    }

    #[test]
    fn event_queue_is_bounded() {
        let mut t = table(Config { max_events: 2, delete_counter: 0, ..c_like() });
        let id = new_id(t.add(b"h", b"o", 0, None, None, at(0)).expect("add"));
        let mut ms = 500;
        for i in 0..5 {
            let p = pings(&mut t, at(ms));
            let r = if i % 2 == 0 { PingResult::Reply(200) } else { PingResult::Local(408) };
            t.on_result(id, p[0].seq, r, at(ms + 1)).expect("known");
            ms += 1500;
        }
        assert_eq!(t.dropped_events(), 3);
        let evs: std::vec::Vec<_> = core::iter::from_fn(|| t.pop_event()).map(|e| e.to).collect();
        assert_eq!(evs, vec![State::Down, State::Up]);
    }

    #[test]
    fn owners_share_the_engine() {
        let mut t = table(c_like());
        t.add(b"a", b"drouting", 0, None, None, at(0)).expect("add");
        t.add(b"b", b"drouting", 0, None, None, at(0)).expect("add");
        t.add(b"a", b"registrar", 0, Some(5000), None, at(0)).expect("add");
        assert_eq!(t.len(), 3);
        assert_eq!(t.get(b"a", b"registrar").map(|d| d.interval_ms), Some(5000));
        assert_eq!(t.remove_owner(b"drouting"), 2);
        assert_eq!(t.list().iter().map(|d| d.owner.clone()).collect::<std::vec::Vec<_>>(), vec![b"registrar".to_vec()]);
    }

    #[test]
    fn sequence_numbers_survive_wrapping_of_the_parameter_bits() {
        let mut t = table(Config { delete_counter: 0, default_interval_ms: 1, first_ping_delay_ms: 0, ..c_like() });
        let id = new_id(t.add(b"h", b"o", 0, None, None, at(0)).expect("add"));
        // jump close to the 24-bit boundary
        if let Some(i) = t.index_of(id) {
            t.dests[i].last_seq = (1 << SEQ_BITS) - 2;
            t.dests[i].applied_seq = (1 << SEQ_BITS) - 3;
            t.dests[i].pinged = true;
        }
        let mut last = State::Unknown;
        for k in 0..5u64 {
            let ms = k;
            let p = pings(&mut t, at(ms));
            assert_eq!(p.len(), 1);
            let (_, low) = decode_param(p[0].param());
            let r = if k % 2 == 0 { PingResult::Reply(200) } else { PingResult::Local(408) };
            let a = t.on_result(id, low, r, at(ms)).expect("known");
            assert!(!a.stale, "ping {k} (seq {}) not stale", p[0].seq);
            last = t.get_id(id).map(|d| d.state).unwrap_or(State::Unknown);
        }
        assert_eq!(last, State::Up);
    }
}
