//! Anti-entropy: cheap digests of a store, so that two nodes that were
//! cut off from each other find what differs and exchange only that
//! (docs/cluster.md, "Partitions").
//!
//! The AoRs are spread over [`BUCKETS`] buckets by a fixed hash of the AoR
//! (independent of the store's slot count, which is a per-node modparam).
//! A bucket's sum is the wrapping sum of its AoRs' [`aor_sum`]s, so it does
//! not depend on the order the AoRs are visited in. An AoR's sum covers
//! only what the merge rules converge on: each live subscription's identity
//! and stamp, each replicated appearance's index, incarnation and version.
//! Two nodes holding the same replicated state have the same sums; a
//! change anywhere in an AoR changes its bucket's sum (but for a 2^-64
//! collision).
//!
//! The exchange (the module): node X sends its sums in a `DIGEST`; node Y
//! answers with the records of its AoRs in the buckets whose sums differ
//! ([`Digest::differing`], [`entry_records`]); X merges them with the usual
//! rules ([`super::replica`]) and, for what a tombstone of its own keeps
//! out, sends Y the release back ([`correction`]). Every node does this
//! with every peer, so after one exchange each way both hold the merge.

use core::hash::{BuildHasher, Hasher};
use std::vec::Vec;

use allocator_api2::alloc::Allocator;
use foldhash::fast::FixedState;

use super::codec::{AorApps, Record, SubDel, SubPut, Tombstone};
use super::replica::{self, app_key, sub_key, Tombs};
use super::Ver;
use crate::appearance::PENDING_TTL;
use crate::model::EventType;
use crate::parse::appearance::AppearanceState;
use crate::store::AorEntry;

/// Buckets of a digest: 2048 sums of 8 bytes, a 16 KiB `DIGEST` message.
/// With 100k AoRs a differing bucket holds about 50 of them.
pub const BUCKETS: usize = 2048;

const SEED: u64 = 0x05ca_d16e;

/// The bucket of `aor`.
pub fn bucket_of(aor: &[u8]) -> usize {
    let mut h = FixedState::with_seed(SEED).build_hasher();
    h.write(aor);
    (h.finish() % BUCKETS as u64) as usize
}

fn mix(mut x: u64) -> u64 {
    // splitmix64's finaliser: spreads every input bit over the output
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Is an appearance in `state` since `mtime` due for the purge of lines
/// stuck in seized or active-pending at `now`? Each node purges at its
/// own interval, so such appearances are neither summed nor sent: a node
/// that has purged one must not get it back from one that has not yet.
pub fn purge_due(state: AppearanceState, mtime: i64, now: i64, seized_ttl: i64) -> bool {
    match state {
        AppearanceState::Seized => now - mtime >= seized_ttl,
        AppearanceState::ActivePending => now - mtime >= PENDING_TTL,
        _ => false,
    }
}

/// Is line `index` of `e`, in `state`, seized by a line-seize
/// subscription that has expired at `now`? The purge releases it on each
/// node at its own time (as it does what is [`purge_due`]), so a node
/// that has released it must not get it back from one that has not yet.
fn seize_expired<A: Allocator + Clone>(e: &AorEntry<A>, index: u32, state: AppearanceState, now: i64) -> bool {
    state == AppearanceState::Seized
        && e.subs.iter().any(|s| {
            s.event == EventType::LineSeize
                && !s.state.is_terminated()
                && s.expires <= now
                && u32::try_from(s.index) == Ok(index)
        })
}

/// The digest of one AoR as this node (`self_id`) holds it at `now`
/// (seconds): 0 when it holds nothing that is replicated. Subscriptions
/// that are terminated or expired are left out (each node purges them at
/// its own time), and so are appearances [`purge_due`]; a subscription
/// restored from this node's database and
/// not stamped since counts as this node's with stamp 0, as a full sync
/// sends it.
pub fn aor_sum<A: Allocator + Clone>(e: &AorEntry<A>, self_id: u32, now: i64, seized_ttl: i64) -> u64 {
    let mut acc = 0u64;
    let mut any = false;
    for s in e.subs.iter() {
        if s.state.is_terminated() || s.expires <= now {
            continue;
        }
        let ver = if s.ver == 0 {
            Ver::new(0, self_id).pack()
        } else {
            s.ver
        };
        let mut h = FixedState::with_seed(SEED).build_hasher();
        h.write_u8(b'S');
        h.write_u8(s.event as u8);
        h.write_usize(s.subscriber().len());
        h.write(s.subscriber());
        h.write_u64(ver);
        acc = acc.wrapping_add(mix(h.finish()));
        any = true;
    }
    for a in e
        .apps()
        .iter()
        .filter(|a| {
            a.inc != 0 && !purge_due(a.state, a.mtime, now, seized_ttl) && !seize_expired(e, a.index, a.state, now)
        })
    {
        let mut h = FixedState::with_seed(SEED).build_hasher();
        h.write_u8(b'A');
        h.write_u32(a.index);
        h.write_u64(a.inc);
        h.write_u64(a.ver);
        acc = acc.wrapping_add(mix(h.finish()));
        any = true;
    }
    if !any {
        return 0;
    }
    let mut h = FixedState::with_seed(SEED).build_hasher();
    h.write(e.aor());
    mix(h.finish().wrapping_add(acc))
}

/// The bucket sums of a store, built AoR by AoR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digest {
    sums: Vec<u64>,
}

impl Default for Digest {
    fn default() -> Self {
        Self::new()
    }
}

impl Digest {
    pub fn new() -> Digest {
        Digest {
            sums: vec![0; BUCKETS],
        }
    }

    /// Count `e` in (see [`aor_sum`]).
    pub fn add<A: Allocator + Clone>(&mut self, e: &AorEntry<A>, self_id: u32, now: i64, seized_ttl: i64) {
        let s = aor_sum(e, self_id, now, seized_ttl);
        if s != 0 {
            let b = bucket_of(e.aor());
            if let Some(x) = self.sums.get_mut(b) {
                *x = x.wrapping_add(s);
            }
        }
    }

    pub fn sums(&self) -> &[u64] {
        &self.sums
    }

    /// A digest from sums kept elsewhere (a cache); of another length than
    /// [`BUCKETS`], it differs everywhere from any peer's.
    pub fn from_sums(sums: &[u64]) -> Digest {
        Digest {
            sums: sums.to_vec(),
        }
    }

    /// The buckets where `theirs` (a peer's sums) differs from ours. Sums
    /// of another length (a peer with another bucket count) differ
    /// everywhere.
    pub fn differing(&self, theirs: &[u64]) -> Differing {
        if theirs.len() != self.sums.len() {
            return Differing {
                bits: vec![true; BUCKETS],
            };
        }
        Differing {
            bits: self.sums.iter().zip(theirs).map(|(a, b)| a != b).collect(),
        }
    }
}

/// The buckets two digests disagree on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Differing {
    bits: Vec<bool>,
}

impl Differing {
    /// Is `aor` in a bucket that differs?
    pub fn contains(&self, aor: &[u8]) -> bool {
        self.bits.get(bucket_of(aor)).copied().unwrap_or(true)
    }

    /// How many buckets differ.
    pub fn count(&self) -> usize {
        self.bits.iter().filter(|b| **b).count()
    }

    pub fn is_empty(&self) -> bool {
        self.count() == 0
    }
}

/// The records that carry an AoR's whole replicated state (a full sync's
/// chunk, a digest's answer): a `SUB_PUT` for each subscription, and an
/// `AOR_APPS` of its appearances when it has any (or is shared). A
/// subscription restored from this node's database and not stamped since
/// goes out as `self_id`'s with stamp 0, older than any stamped copy.
/// What has expired at `now`, or is [`purge_due`], is left out: each node
/// purges it on its own, and a peer that has already done so must not get
/// it back.
/// `tags` is room for the subscriptions' rebuilt To-tags.
pub fn entry_records<'a, A: Allocator + Clone>(
    e: &'a AorEntry<A>,
    self_id: u32,
    now: i64,
    seized_ttl: i64,
    tags: &'a mut Vec<Vec<u8>>,
) -> Vec<Record<'a>> {
    let live = || e.subs.iter().filter(move |s| s.expires > now);
    replica::to_tags(live(), tags);
    let tags: &'a Vec<Vec<u8>> = tags;
    let mut recs: Vec<Record<'a>> = live()
        .zip(tags)
        .map(|(s, tag)| {
            let mut r = replica::sub_put_record(e.aor(), s, tag);
            if let Record::SubPut(p) = &mut r {
                if p.origin == 0 {
                    p.origin = self_id;
                    p.ver = Ver::new(0, self_id);
                }
            }
            r
        })
        .collect();
    if e.is_shared() || !e.apps().is_empty() {
        let mut r = replica::aor_apps_record(e, Vec::new());
        if let Record::AorApps(a) = &mut r {
            a.apps
                .retain(|x| !purge_due(x.state, x.mtime, now, seized_ttl) && !seize_expired(e, x.index, x.state, now));
        }
        recs.push(r);
    }
    recs
}

/// After a peer's record was merged here: what a tombstone of this node
/// kept out of it, as a record that tells the peer of the release (None:
/// nothing). A digest's answer carries only what the peer holds, not what
/// it lacks, so a delete or release made on this side of a partition
/// would otherwise never reach the other side.
pub fn correction<'a>(r: &Record<'a>, tombs: &mut impl Tombs) -> Option<Record<'a>> {
    match r {
        Record::SubPut(p) => sub_correction(p, tombs).map(Record::SubDel),
        Record::AorApps(a) => {
            let mut out = Vec::new();
            for x in &a.apps {
                let Some(t) = tombs.get(app_key(a.aor, x.index)) else {
                    continue;
                };
                let pred = a
                    .tombstones
                    .iter()
                    .filter(|t| t.index == x.index)
                    .map(|t| t.inc.pack())
                    .max()
                    .unwrap_or(0);
                let inc = x.inc.pack();
                let ended = inc <= t.inc || (pred < t.inc && tombs.fresh(app_key(a.aor, x.index)));
                if ended && !out.iter().any(|o: &Tombstone| o.index == x.index) {
                    out.push(Tombstone {
                        index: x.index,
                        inc: Ver::unpack(t.inc),
                        ver: Ver::unpack(t.ver),
                    });
                }
            }
            (!out.is_empty()).then(|| {
                Record::AorApps(AorApps {
                    aor: a.aor,
                    shared: false,
                    shared_ver: Ver::ZERO,
                    apps: Vec::new(),
                    tombstones: out,
                })
            })
        }
        _ => None,
    }
}

fn sub_correction<'a>(p: &SubPut<'a>, tombs: &mut impl Tombs) -> Option<SubDel<'a>> {
    let v = Ver::new(p.ver.ms, p.origin).pack();
    let r = &p.sub;
    tombs
        .get(sub_key(r.aor, r.event, r.subscriber))
        .filter(|t| t.ver >= v)
        .map(|t| SubDel {
            aor: r.aor,
            event: r.event,
            subscriber: r.subscriber,
            ver: Ver::unpack(t.ver),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::appearance::SEIZED_TTL;
    use crate::model::EventType;
    use crate::testutil::{rec, store};

    const AOR: &[u8] = b"sip:100@example.com";

    #[test]
    fn equal_stores_have_equal_sums_in_any_order() {
        let (a, b) = (store(2), store(6));
        let aors: Vec<Vec<u8>> = (0..200)
            .map(|i| format!("sip:{i}@example.com").into_bytes())
            .collect();
        for (i, aor) in aors.iter().enumerate() {
            let who = format!("sip:p{i}@192.0.2.1");
            let r = rec(aor, who.as_bytes(), EventType::CallInfo);
            a.lock_aor(aor).put_sub(&r).expect("put");
        }
        for (i, aor) in aors.iter().enumerate().rev() {
            let who = format!("sip:p{i}@192.0.2.1");
            let r = rec(aor, who.as_bytes(), EventType::CallInfo);
            b.lock_aor(aor).put_sub(&r).expect("put");
        }
        let (mut da, mut db) = (Digest::new(), Digest::new());
        a.for_each_aor(|e| da.add(e, 1, 0, SEIZED_TTL));
        b.for_each_aor(|e| db.add(e, 1, 0, SEIZED_TTL));
        assert_eq!(da, db);
        assert!(da.differing(db.sums()).is_empty());
        assert!(da.sums().iter().any(|s| *s != 0));
        // one stamp changes one bucket
        {
            let mut g = b.lock_aor(&aors[7]);
            let s = g
                .find_sub_mut(EventType::CallInfo, b"sip:p7@192.0.2.1")
                .expect("sub");
            s.ver = Ver::new(5, 2).pack();
        }
        let mut db = Digest::new();
        b.for_each_aor(|e| db.add(e, 1, 0, SEIZED_TTL));
        let d = da.differing(db.sums());
        assert_eq!(d.count(), 1);
        assert!(d.contains(&aors[7]));
        // another bucket count differs everywhere
        assert_eq!(da.differing(&[0; 3]).count(), BUCKETS);
        assert_eq!(Digest::from_sums(da.sums()), da);
    }

    #[test]
    fn lines_due_for_the_purge_and_expired_subscriptions_are_neither_summed_nor_sent() {
        assert!(!purge_due(AppearanceState::Seized, 0, 119, SEIZED_TTL));
        assert!(purge_due(AppearanceState::Seized, 0, 120, SEIZED_TTL));
        assert!(!purge_due(AppearanceState::ActivePending, 100, 134, SEIZED_TTL));
        assert!(purge_due(AppearanceState::ActivePending, 100, 135, SEIZED_TTL));
        assert!(!purge_due(AppearanceState::Active, 0, 1_000_000, SEIZED_TTL));
        let s = store(2);
        let mut g = s.lock_aor(AOR);
        g.put_sub(&rec(AOR, b"sip:a@1", EventType::CallInfo))
            .expect("put");
        let e = g.entry().expect("entry");
        let puts = |now| {
            entry_records(e, 1, now, SEIZED_TTL, &mut Vec::new())
                .iter()
                .filter(|r| matches!(r, Record::SubPut(_)))
                .count()
        };
        assert_eq!(puts(999), 1);
        assert_eq!(puts(1000), 0);
        match &entry_records(e, 7, 0, SEIZED_TTL, &mut Vec::new())[0] {
            Record::SubPut(p) => assert_eq!(
                (p.origin, p.ver),
                (7, Ver::new(0, 7)),
                "restored: this node's, stamp 0"
            ),
            r => panic!("{r:?}"),
        }
    }

    #[test]
    fn expired_terminated_and_restored_subscriptions() {
        let s = store(2);
        let mut g = s.lock_aor(AOR);
        g.put_sub(&rec(AOR, b"sip:a@1", EventType::CallInfo))
            .expect("put");
        let e = g.entry().expect("entry");
        let live = aor_sum(e, 3, 0, SEIZED_TTL);
        assert_ne!(live, 0);
        // expired at 1000: out, like an empty AoR
        assert_eq!(aor_sum(e, 3, 1000, SEIZED_TTL), 0);
        // a restored (unstamped) one counts as stamp (0, self)
        drop(g);
        let mut g = s.lock_aor(AOR);
        g.find_sub_mut(EventType::CallInfo, b"sip:a@1")
            .expect("sub")
            .ver = Ver::new(0, 3).pack();
        assert_eq!(aor_sum(g.entry().expect("entry"), 3, 0, SEIZED_TTL), live);
        g.find_sub_mut(EventType::CallInfo, b"sip:a@1")
            .expect("sub")
            .state = crate::model::SubState::TerminatedTimeout;
        assert_eq!(aor_sum(g.entry().expect("entry"), 3, 0, SEIZED_TTL), 0);
    }
}
