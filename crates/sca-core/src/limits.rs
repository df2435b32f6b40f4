//! Bounds that only the module can enforce (docs/security.md): how many
//! lines one phone may hold seized, how many subscriptions an AoR, a phone
//! (subscriber contact) or the whole store may have, the highest
//! appearance index, and the shared memory kept free.
//!
//! The decisions are plain functions of what the store holds; the counts
//! that span AoRs (per contact, in total) live in a [`Census`]: atomic
//! counters in shared memory, exact up to hash collisions of contacts
//! (which only over-count) and recounted from the store by the purge.
//! Refusal log lines go through a [`LogGate`]: once per source and
//! interval, with how many were suppressed since.

use allocator_api2::alloc::{AllocError, Allocator};
use allocator_api2::vec::Vec;
use core::hash::BuildHasher;
use core::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use foldhash::fast::FixedState;

use crate::appearance::Appearances;
use crate::parse::appearance::AppearanceState;

/// The bounds; 0 turns one off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Lines one subscriber contact holds in state seized in one AoR.
    pub max_seized_per_contact: u32,
    /// Subscriptions (call-info and line-seize) of one AoR.
    pub max_subs_per_aor: u32,
    /// Subscriptions of one subscriber contact, over all AoRs.
    pub max_subs_per_contact: u32,
    /// Highest appearance index a line-seize or a call may take.
    pub max_appearance_index: u32,
    /// Subscriptions in the store (with a cluster, peers' copies too).
    pub max_subscriptions: u32,
    /// Percent of shared memory a new subscription must leave free.
    pub min_free_shm_percent: u32,
}

impl Limits {
    /// The defaults (docs/security.md): generous for real phones, far
    /// below what exhausts a server.
    pub const DEFAULT: Limits = Limits {
        max_seized_per_contact: 4,
        max_subs_per_aor: 500,
        max_subs_per_contact: 1000,
        max_appearance_index: 64,
        max_subscriptions: 0,
        min_free_shm_percent: 2,
    };

    /// No bound at all.
    pub const OFF: Limits = Limits {
        max_seized_per_contact: 0,
        max_subs_per_aor: 0,
        max_subs_per_contact: 0,
        max_appearance_index: 0,
        max_subscriptions: 0,
        min_free_shm_percent: 0,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    SeizedPerContact,
    IndexTooHigh,
    SubsPerAor,
    SubsPerContact,
    TotalSubs,
    LowShm,
}

impl Refusal {
    /// Every kind, in [`Refusal::slot`] order.
    pub const ALL: [Refusal; 6] = [
        Refusal::SeizedPerContact,
        Refusal::IndexTooHigh,
        Refusal::SubsPerAor,
        Refusal::SubsPerContact,
        Refusal::TotalSubs,
        Refusal::LowShm,
    ];

    /// The SIP reply: 403 for a request that policy forbids whatever the
    /// server's load, 503 (with Retry-After) for one that capacity does.
    pub fn reply(self) -> (u16, &'static str) {
        match self {
            Refusal::SeizedPerContact => (403, "Forbidden - too many lines seized by this contact"),
            Refusal::IndexTooHigh => (403, "Forbidden - appearance index too high"),
            Refusal::SubsPerAor => (403, "Forbidden - too many subscriptions for this AoR"),
            Refusal::SubsPerContact => {
                (403, "Forbidden - too many subscriptions from this contact")
            }
            Refusal::TotalSubs | Refusal::LowShm => {
                (503, "Service Unavailable - subscription limit reached")
            }
        }
    }

    /// The modparam that bounds it (for the log).
    pub fn param(self) -> &'static str {
        match self {
            Refusal::SeizedPerContact => "max_seized_per_contact",
            Refusal::IndexTooHigh => "max_appearance_index",
            Refusal::SubsPerAor => "max_subs_per_aor",
            Refusal::SubsPerContact => "max_subs_per_contact",
            Refusal::TotalSubs => "max_subscriptions",
            Refusal::LowShm => "min_free_shm_percent",
        }
    }

    /// Its index in [`Refusal::ALL`] (a counter slot).
    pub fn slot(self) -> usize {
        self as usize
    }

    /// The name the counters are shown under.
    pub fn name(self) -> &'static str {
        match self {
            Refusal::SeizedPerContact => "seized_per_contact",
            Refusal::IndexTooHigh => "appearance_index",
            Refusal::SubsPerAor => "subs_per_aor",
            Refusal::SubsPerContact => "subs_per_contact",
            Refusal::TotalSubs => "subscriptions",
            Refusal::LowShm => "shm",
        }
    }
}

/// May `owner` seize `requested` (None: the next free index) in `apps`?
/// Checked before the seize: the index it would take, then how many lines
/// `owner` holds seized already.
pub fn check_seize<A: Allocator + Clone>(
    l: &Limits,
    apps: &Appearances<A>,
    requested: Option<u32>,
    owner: &[u8],
) -> Result<(), Refusal> {
    check_index(
        l,
        requested
            .filter(|&i| i > 0)
            .unwrap_or_else(|| apps.next_free_index()),
    )?;
    if l.max_seized_per_contact > 0 {
        let held = apps
            .iter()
            .filter(|a| a.state == AppearanceState::Seized && a.owner() == owner)
            .count();
        if held >= l.max_seized_per_contact as usize {
            return Err(Refusal::SeizedPerContact);
        }
    }
    Ok(())
}

/// May an appearance with `index` exist (a seize, or a call answered on
/// that line)?
pub fn check_index(l: &Limits, index: u32) -> Result<(), Refusal> {
    if l.max_appearance_index > 0 && index > l.max_appearance_index {
        Err(Refusal::IndexTooHigh)
    } else {
        Ok(())
    }
}

/// What a new subscription is checked against.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counts {
    /// Subscriptions of the AoR now.
    pub aor: usize,
    /// Subscriptions of the contact now (over all AoRs).
    pub contact: u64,
    /// Subscriptions in the store now.
    pub total: u64,
    /// Shared memory free and in all, bytes (0 total: unknown).
    pub shm_free: u64,
    pub shm_total: u64,
}

/// May a new subscription (not a refresh) be stored? Capacity first (a
/// full server refuses everyone alike), then the per-AoR and per-contact
/// bounds.
pub fn check_new_sub(l: &Limits, c: &Counts) -> Result<(), Refusal> {
    if l.min_free_shm_percent > 0
        && c.shm_total > 0
        && c.shm_free.saturating_mul(100)
            < c.shm_total
                .saturating_mul(u64::from(l.min_free_shm_percent))
    {
        return Err(Refusal::LowShm);
    }
    if l.max_subscriptions > 0 && c.total >= u64::from(l.max_subscriptions) {
        return Err(Refusal::TotalSubs);
    }
    if l.max_subs_per_aor > 0 && c.aor >= l.max_subs_per_aor as usize {
        return Err(Refusal::SubsPerAor);
    }
    if l.max_subs_per_contact > 0 && c.contact >= u64::from(l.max_subs_per_contact) {
        return Err(Refusal::SubsPerContact);
    }
    Ok(())
}

/// Seconds a [`Retry-After`](Refusal::reply) of a 503 asks for: the next
/// purge may have made room.
pub fn retry_after(purge_interval: u32) -> u32 {
    purge_interval.clamp(1, 3600)
}

const SEED: u64 = 0x5ca1_1717;

fn hash(b: &[u8]) -> u64 {
    FixedState::with_seed(SEED).hash_one(b)
}

/// Subscription counts per contact (in hash buckets) and in total, shared
/// by every process. Each count is `base + added`: a new subscription
/// adds one, an unsubscribe takes one, and the purge's recount sets
/// `base` so that the sum is what the store holds (subscriptions that
/// expired or went otherwise are then no longer counted). A recount that
/// races with new subscriptions may count one twice until the next
/// recount, never none. Contacts that share a bucket are counted
/// together: only ever too many, never too few.
pub struct Census<A: Allocator> {
    base: Vec<AtomicI64, A>,
    added: Vec<AtomicI64, A>,
    mask: u64,
}

/// A recount in progress: started with [`Census::begin_recount`].
pub struct Recount {
    counts: std::vec::Vec<i64>,
    added_at_start: std::vec::Vec<i64>,
    mask: u64,
}

impl Recount {
    /// A subscription of `contact` is in the store.
    pub fn count(&mut self, contact: &[u8]) {
        let b = (hash(contact) & self.mask) as usize;
        self.counts[b] += 1;
        let t = self.counts.len() - 1;
        self.counts[t] += 1;
    }
}

impl<A: Allocator> Census<A> {
    /// `2^log2_buckets` contact buckets (clamped to 4..20).
    pub fn new_in(log2_buckets: u32, alloc: A) -> Result<Self, AllocError>
    where
        A: Clone,
    {
        let n = (1usize << log2_buckets.clamp(4, 20)) + 1;
        let mut base = Vec::new_in(alloc.clone());
        let mut added = Vec::new_in(alloc);
        base.try_reserve_exact(n).map_err(|_| AllocError)?;
        added.try_reserve_exact(n).map_err(|_| AllocError)?;
        for _ in 0..n {
            base.push(AtomicI64::new(0));
            added.push(AtomicI64::new(0));
        }
        Ok(Census {
            base,
            added,
            mask: (n - 2) as u64,
        })
    }

    fn bucket(&self, contact: &[u8]) -> usize {
        (hash(contact) & self.mask) as usize
    }

    fn total_slot(&self) -> usize {
        self.base.len() - 1
    }

    fn get(&self, i: usize) -> u64 {
        (self.base[i].load(Ordering::Relaxed) + self.added[i].load(Ordering::Relaxed)).max(0) as u64
    }

    /// Subscriptions of `contact` (and of contacts in its bucket).
    pub fn contact(&self, contact: &[u8]) -> u64 {
        self.get(self.bucket(contact))
    }

    /// Subscriptions in the store.
    pub fn total(&self) -> u64 {
        self.get(self.total_slot())
    }

    /// A subscription of `contact` was stored (`+1`) or ended (`-1`).
    pub fn add(&self, contact: &[u8], delta: i64) {
        self.added[self.bucket(contact)].fetch_add(delta, Ordering::Relaxed);
        self.added[self.total_slot()].fetch_add(delta, Ordering::Relaxed);
    }

    /// Start a recount; [`Recount::count`] every subscription in the
    /// store, then [`Census::finish_recount`].
    pub fn begin_recount(&self) -> Recount {
        Recount {
            counts: vec![0; self.base.len()],
            added_at_start: self
                .added
                .iter()
                .map(|a| a.load(Ordering::Relaxed))
                .collect(),
            mask: self.mask,
        }
    }

    /// Publish a recount: from now on each count is what was counted plus
    /// what was added since the recount began.
    pub fn finish_recount(&self, r: Recount) {
        for (i, b) in self.base.iter().enumerate() {
            b.store(r.counts[i] - r.added_at_start[i], Ordering::Relaxed);
        }
    }
}

/// Rate limit for refusal log lines: at most one per source (hashed into
/// a fixed table) and `interval` seconds; the next one tells how many
/// were suppressed. Sources that share a slot share the limit (fewer
/// lines, never more).
pub struct LogGate<A: Allocator> {
    /// Per slot: time of the last line (seconds).
    last: Vec<AtomicI64, A>,
    /// Per slot: refusals not logged since.
    suppressed: Vec<AtomicU64, A>,
    mask: u64,
    interval: i64,
}

impl<A: Allocator> LogGate<A> {
    /// `2^log2_slots` slots (clamped to 4..16).
    pub fn new_in(log2_slots: u32, interval: i64, alloc: A) -> Result<Self, AllocError>
    where
        A: Clone,
    {
        let n = 1usize << log2_slots.clamp(4, 16);
        let mut last = Vec::new_in(alloc.clone());
        let mut suppressed = Vec::new_in(alloc);
        last.try_reserve_exact(n).map_err(|_| AllocError)?;
        suppressed.try_reserve_exact(n).map_err(|_| AllocError)?;
        for _ in 0..n {
            last.push(AtomicI64::new(i64::MIN));
            suppressed.push(AtomicU64::new(0));
        }
        Ok(LogGate {
            last,
            suppressed,
            mask: (n - 1) as u64,
            interval: interval.max(1),
        })
    }

    /// A refusal from `source` at `now`: Some(suppressed since the last
    /// line) if this one is to be logged, None if it is to be counted only.
    pub fn admit(&self, source: &[u8], now: i64) -> Option<u64> {
        let i = (hash(source) & self.mask) as usize;
        let last = self.last[i].load(Ordering::Relaxed);
        if last != i64::MIN && now < last.saturating_add(self.interval) {
            self.suppressed[i].fetch_add(1, Ordering::Relaxed);
            return None;
        }
        // one process wins the slot for this interval
        if self.last[i]
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            self.suppressed[i].fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(self.suppressed[i].swap(0, Ordering::Relaxed))
    }
}

/// Refusals counted by kind, shared by every process.
#[derive(Default)]
pub struct RefusalCounters {
    n: [AtomicU64; 6],
}

impl RefusalCounters {
    pub fn bump(&self, r: Refusal) {
        self.n[r.slot()].fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self, r: Refusal) -> u64 {
        self.n[r.slot()].load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use allocator_api2::alloc::Global;

    fn apps() -> Appearances<Global> {
        Appearances::new_in(Global)
    }

    #[test]
    fn a_contact_may_hold_only_so_many_seized_lines_and_calls_do_not_count() {
        let l = Limits {
            max_seized_per_contact: 2,
            ..Limits::OFF
        };
        let mut a = apps();
        assert_eq!(check_seize(&l, &a, None, b"sip:x"), Ok(()));
        a.seize(None, b"sip:x", 0, Global).expect("1");
        a.seize(None, b"sip:x", 0, Global).expect("2");
        assert_eq!(
            check_seize(&l, &a, None, b"sip:x"),
            Err(Refusal::SeizedPerContact)
        );
        assert_eq!(
            check_seize(&l, &a, Some(9), b"sip:x"),
            Err(Refusal::SeizedPerContact)
        );
        // someone else is not affected
        assert_eq!(check_seize(&l, &a, None, b"sip:y"), Ok(()));
        // a line in a call is no longer "seized"
        a.get_mut(1)
            .expect("1")
            .set_state(AppearanceState::Active, 1);
        assert_eq!(check_seize(&l, &a, None, b"sip:x"), Ok(()));
        // off: no bound
        a.seize(None, b"sip:x", 0, Global).expect("3");
        assert_eq!(check_seize(&Limits::OFF, &a, None, b"sip:x"), Ok(()));
    }

    #[test]
    fn the_index_bound_covers_requested_and_next_free_indexes() {
        let l = Limits {
            max_appearance_index: 2,
            ..Limits::OFF
        };
        let mut a = apps();
        assert_eq!(check_seize(&l, &a, Some(2), b"o"), Ok(()));
        assert_eq!(
            check_seize(&l, &a, Some(3), b"o"),
            Err(Refusal::IndexTooHigh)
        );
        // index 0 means "any": the next free one is checked
        assert_eq!(check_seize(&l, &a, Some(0), b"o"), Ok(()));
        a.seize(None, b"o", 0, Global).expect("1");
        a.seize(None, b"o", 0, Global).expect("2");
        assert_eq!(check_seize(&l, &a, None, b"p"), Err(Refusal::IndexTooHigh));
        assert_eq!(check_index(&l, 2), Ok(()));
        assert_eq!(check_index(&l, 3), Err(Refusal::IndexTooHigh));
        assert_eq!(check_index(&Limits::OFF, u32::MAX), Ok(()));
    }

    #[test]
    fn new_subscriptions_are_bounded_per_aor_contact_total_and_shm() {
        let l = Limits {
            max_subs_per_aor: 3,
            max_subs_per_contact: 5,
            max_subscriptions: 10,
            min_free_shm_percent: 5,
            ..Limits::OFF
        };
        let ok = Counts {
            aor: 2,
            contact: 4,
            total: 9,
            shm_free: 50,
            shm_total: 1000,
        };
        assert_eq!(check_new_sub(&l, &ok), Ok(()));
        assert_eq!(
            check_new_sub(&l, &Counts { aor: 3, ..ok }),
            Err(Refusal::SubsPerAor)
        );
        assert_eq!(
            check_new_sub(&l, &Counts { contact: 5, ..ok }),
            Err(Refusal::SubsPerContact)
        );
        assert_eq!(
            check_new_sub(&l, &Counts { total: 10, ..ok }),
            Err(Refusal::TotalSubs)
        );
        assert_eq!(
            check_new_sub(&l, &Counts { shm_free: 49, ..ok }),
            Err(Refusal::LowShm)
        );
        // unknown shm size: not checked
        assert_eq!(
            check_new_sub(
                &l,
                &Counts {
                    shm_free: 0,
                    shm_total: 0,
                    ..ok
                }
            ),
            Ok(())
        );
        // capacity before policy
        assert_eq!(
            check_new_sub(
                &l,
                &Counts {
                    aor: 9,
                    total: 10,
                    ..ok
                }
            ),
            Err(Refusal::TotalSubs)
        );
        let huge = Counts {
            aor: usize::MAX,
            contact: u64::MAX,
            total: u64::MAX,
            shm_free: 0,
            shm_total: 1 << 30,
        };
        assert_eq!(check_new_sub(&Limits::OFF, &huge), Ok(()));
        assert_eq!(Refusal::LowShm.reply().0, 503);
        assert_eq!(Refusal::SubsPerAor.reply().0, 403);
    }

    #[test]
    fn the_census_counts_adds_and_a_recount_corrects_it() {
        let c = Census::new_in(8, Global).expect("census");
        c.add(b"a", 1);
        c.add(b"a", 1);
        c.add(b"b", 1);
        assert_eq!((c.contact(b"a"), c.contact(b"b"), c.total()), (2, 1, 3));
        c.add(b"a", -1);
        assert_eq!((c.contact(b"a"), c.total()), (1, 2));
        // the store holds one of a's and none of b's (b's expired)
        let mut r = c.begin_recount();
        r.count(b"a");
        // while the recount runs, b subscribes again (after its slot was
        // counted): kept
        c.add(b"b", 1);
        c.finish_recount(r);
        assert_eq!((c.contact(b"a"), c.contact(b"b"), c.total()), (1, 1, 2));
        // a recount of an empty store
        let r = c.begin_recount();
        c.finish_recount(r);
        assert_eq!((c.contact(b"a"), c.contact(b"b"), c.total()), (0, 0, 0));
        // never negative
        c.add(b"a", -5);
        assert_eq!(c.contact(b"a"), 0);
    }

    #[test]
    fn the_log_gate_admits_one_line_per_source_and_interval_and_counts_the_rest() {
        let g = LogGate::new_in(8, 60, Global).expect("gate");
        assert_eq!(g.admit(b"sip:evil", 1000), Some(0));
        for t in 1001..1050 {
            assert_eq!(g.admit(b"sip:evil", t), None);
        }
        // another source has its own line (unless it shares the slot)
        let other = (0..100)
            .map(|i| format!("sip:good{i}"))
            .find(|s| hash(s.as_bytes()) & g.mask != hash(b"sip:evil") & g.mask)
            .expect("a source in another slot");
        assert_eq!(g.admit(other.as_bytes(), 1001), Some(0));
        assert_eq!(g.admit(b"sip:evil", 1060), Some(49));
        assert_eq!(g.admit(b"sip:evil", 1061), None);
    }

    #[test]
    fn refusal_counters_and_names_line_up() {
        let c = RefusalCounters::default();
        for (i, r) in Refusal::ALL.iter().enumerate() {
            assert_eq!(r.slot(), i);
            c.bump(*r);
        }
        c.bump(Refusal::LowShm);
        assert_eq!(c.get(Refusal::LowShm), 2);
        assert_eq!(c.get(Refusal::IndexTooHigh), 1);
    }
}
