//! The SCA state store: a fixed-size hash table of slots, each behind its
//! own lock, each holding the AoRs that hash to it.
//!
//! Everything about one AoR (its call-info and line-seize subscriptions,
//! later its appearances) lives in one [`AorEntry`] under one slot lock, so
//! a decision that looks at subscriptions and appearances together is
//! atomic without lock ordering.
//!
//! The store is generic over the allocator and the lock: in the module the
//! allocator is Kamailio's shared memory and the lock a Kamailio
//! `gen_lock_t`; in tests, the global heap and a spin lock.
//!
//! Nothing outside this crate writes an entry's fields: an AoR changes
//! through an [`AorEdit`](crate::change::AorEdit), which records what
//! changed in a [`ChangeSet`](crate::change::ChangeSet) (for NOTIFYs, DB
//! deletes, replication and liveness), or through the clearly named
//! restore path ([`AorGuard::merge_restored`]) and the cluster's apply
//! ([`crate::cluster::replica`]).

use allocator_api2::alloc::{AllocError, Allocator};
use allocator_api2::vec::Vec;
use core::hash::BuildHasher;
use foldhash::fast::FixedState;
use hashbrown::HashTable;

use crate::appearance::Appearances;
use crate::model::{EventType, SubState};
use crate::packed::Packed;
use crate::tagpfx::{self, ToTag};
use crate::thinvec::ThinVec;
use crate::sync::{Guard, Locked, RawLock};

/// Seed of the AoR hash: the same in every process, forever.
const HASH_SEED: u64 = 0x5ca_5ca_5ca;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreError {
    /// Shared memory is exhausted; nothing was changed.
    NoMemory,
}

impl From<AllocError> for StoreError {
    fn from(_: AllocError) -> Self {
        StoreError::NoMemory
    }
}

/// A subscription as plain data: what a SUBSCRIBE carries, what the DB
/// stores, what a peer node receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionRec<'a> {
    pub aor: &'a [u8],
    pub subscriber: &'a [u8],
    pub event: EventType,
    /// Absolute expiry, seconds since the epoch.
    pub expires: i64,
    pub state: SubState,
    /// Seized appearance index (line-seize only), or -1.
    pub index: i32,
    pub call_id: &'a [u8],
    pub from_tag: &'a [u8],
    pub to_tag: &'a [u8],
    pub record_route: &'a [u8],
    pub notify_cseq: u32,
    pub subscribe_cseq: u32,
}

// indexes into Subscription::strs
const S_SUBSCRIBER: usize = 0;
const S_CALL_ID: usize = 1;
const S_FROM_TAG: usize = 2;
const S_TO_TAG: usize = 3;
const S_RR: usize = 4;

/// A stored subscription: its strings in one allocation, the To-tag
/// without its shared prefix when it has one ([`crate::tagpfx`]).
pub struct Subscription<A: Allocator> {
    strs: Packed<A, 5>,
    pub(crate) event: EventType,
    pub(crate) state: SubState,
    /// The To-tag's prefix in [`tagpfx::table`] (0: the tag is whole).
    tag_prefix: u8,
    pub(crate) expires: i64,
    pub(crate) index: i32,
    pub(crate) notify_cseq: u32,
    pub(crate) subscribe_cseq: u32,
    /// Persistence bookkeeping (see [`crate::persist`]): bumped by every
    /// change ([`Subscription::touch`], a replacing [`AorGuard::put_sub`]).
    gen: u32,
    /// Changed since its last committed DB write.
    dirty: bool,
    /// A row with this subscription's key (subscriber, AoR, event) is known
    /// committed to the DB: the next write is an UPDATE, not an INSERT.
    in_db: bool,
    /// A row with this key may exist: a write of it was taken into a batch
    /// (committed or not) and no delete committed since. A subscription
    /// that ends before any batch took it needs no DB delete.
    may_be_in_db: bool,
    /// Cluster only: the packed [`Ver`](crate::cluster::Ver) of the latest
    /// SUBSCRIBE; its node is the subscription's origin, the one node that
    /// NOTIFYs it (0: written locally, not stamped).
    pub(crate) ver: u64,
}

impl<A: Allocator> Subscription<A> {
    fn new_in(r: &SubscriptionRec<'_>, alloc: A) -> Result<Self, AllocError> {
        let (tag_prefix, to_tag) = tagpfx::table().split(r.to_tag).unwrap_or((0, r.to_tag));
        Ok(Subscription {
            strs: Packed::new_in([r.subscriber, r.call_id, r.from_tag, to_tag, r.record_route], alloc)?,
            event: r.event,
            state: r.state,
            tag_prefix,
            expires: r.expires,
            index: r.index,
            notify_cseq: r.notify_cseq,
            subscribe_cseq: r.subscribe_cseq,
            gen: 1,
            dirty: true,
            in_db: false,
            may_be_in_db: false,
            ver: 0,
        })
    }

    /// Record a change made in place: the DB writer writes it again.
    pub fn touch(&mut self) {
        self.gen = self.gen.wrapping_add(1);
        self.dirty = true;
    }

    /// A NOTIFY of it is being sent: its CSeq goes on, and its row is
    /// rewritten. (Code outside this crate holds a subscription mutably
    /// only once it has left the store: an ended one.)
    pub fn count_notify(&mut self) {
        self.notify_cseq = self.notify_cseq.wrapping_add(1);
        self.touch();
    }

    /// Whether this node writes this subscription to its DB at all (a
    /// cluster copy of a peer's subscription is the peer's to write):
    /// true marks it changed, false forgets any pending write.
    pub fn set_ours_to_write(&mut self, yes: bool) {
        if yes {
            self.touch();
        } else {
            self.dirty = false;
        }
    }

    /// Changed since its last committed DB write?
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// Is a row with its key known committed to the DB?
    pub fn in_db(&self) -> bool {
        self.in_db
    }

    /// The change generation (compared by the DB writer after a commit).
    pub fn gen(&self) -> u32 {
        self.gen
    }

    /// A DB write of generation `gen` of this subscription's key committed:
    /// the row exists now (`row_exists`) or was deleted; the mark goes only
    /// if nothing changed since.
    pub fn mark_committed(&mut self, gen: u32, row_exists: bool) {
        self.in_db = row_exists;
        if self.gen == gen {
            self.dirty = false;
            if !row_exists {
                self.may_be_in_db = false;
            }
        }
    }

    /// A batch took a write of this subscription (`writes_row`: an INSERT
    /// or UPDATE, not a delete): from now on its row may exist.
    pub fn mark_taken(&mut self, writes_row: bool) {
        if writes_row {
            self.may_be_in_db = true;
        }
    }

    /// Loaded from the DB: the row exists and holds exactly this.
    pub fn mark_restored(&mut self) {
        self.in_db = true;
        self.may_be_in_db = true;
        self.dirty = false;
    }

    /// Does removing this subscription need a DB delete? Yes if its row
    /// exists, or may (a write taken into a batch, committed or not).
    pub fn needs_db_delete(&self) -> bool {
        self.in_db || self.may_be_in_db
    }

    pub fn event(&self) -> EventType {
        self.event
    }
    pub fn state(&self) -> SubState {
        self.state
    }
    /// Absolute expiry, seconds since the epoch (0: ended).
    pub fn expires(&self) -> i64 {
        self.expires
    }
    /// Seized appearance index (line-seize only), or -1.
    pub fn index(&self) -> i32 {
        self.index
    }
    /// CSeq of the last NOTIFY sent.
    pub fn notify_cseq(&self) -> u32 {
        self.notify_cseq
    }
    pub fn subscribe_cseq(&self) -> u32 {
        self.subscribe_cseq
    }
    /// Cluster: the packed version of the latest SUBSCRIBE (0: local, not
    /// stamped).
    pub fn ver(&self) -> u64 {
        self.ver
    }

    pub fn subscriber(&self) -> &[u8] {
        self.strs.get(S_SUBSCRIBER)
    }
    pub fn call_id(&self) -> &[u8] {
        self.strs.get(S_CALL_ID)
    }
    pub fn from_tag(&self) -> &[u8] {
        self.strs.get(S_FROM_TAG)
    }
    /// The To-tag (read it with [`ToTag`]'s methods, or whole with
    /// [`ToTag::in_buf`]).
    pub fn to_tag(&self) -> ToTag<'_> {
        let prefix = match self.tag_prefix {
            0 => &[][..],
            n => tagpfx::table().get(n).unwrap_or(&[]),
        };
        ToTag::new(prefix, self.strs.get(S_TO_TAG))
    }
    pub fn record_route(&self) -> &[u8] {
        self.strs.get(S_RR)
    }

    /// Same SIP dialog as `r` (Call-ID, From-tag and To-tag)?
    pub fn same_dialog(&self, r: &SubscriptionRec<'_>) -> bool {
        self.call_id() == r.call_id && self.from_tag() == r.from_tag && self.to_tag() == r.to_tag
    }

    /// As a record; its To-tag rebuilt in `buf` when stored split.
    pub fn to_rec<'s>(&'s self, aor: &'s [u8], buf: &'s mut std::vec::Vec<u8>) -> SubscriptionRec<'s> {
        self.to_rec_tagged(aor, self.to_tag().in_buf(buf))
    }

    /// As a record with `to_tag`, the whole To-tag (from
    /// [`Subscription::to_tag`]).
    pub fn to_rec_tagged<'s>(&'s self, aor: &'s [u8], to_tag: &'s [u8]) -> SubscriptionRec<'s> {
        SubscriptionRec {
            aor,
            subscriber: self.subscriber(),
            event: self.event,
            expires: self.expires,
            state: self.state,
            index: self.index,
            call_id: self.call_id(),
            from_tag: self.from_tag(),
            to_tag,
            record_route: self.record_route(),
            notify_cseq: self.notify_cseq,
            subscribe_cseq: self.subscribe_cseq,
        }
    }

    pub fn shm_bytes(&self) -> usize {
        core::mem::size_of::<Self>() + self.strs.heap_len()
    }
}

/// All state of one AoR: one pointer, as it sits in a hash table whose
/// spare buckets cost as much as used ones. The AoR itself is the tail of
/// the subscriptions' allocation, its appearances (a pointer, none
/// allocated while there are none) and whether it is shared (a flag) are
/// in that allocation's header; the hash is recomputed from the AoR when
/// the table grows (rare).
pub struct AorEntry<A: Allocator + Clone> {
    /// The subscriptions, with the AoR as their allocation's tail, the
    /// appearances in its header and its flag the AoR's "shared
    /// appearance" (the C module's "registered appearance list"): set when
    /// a subscription is stored, cleared by
    /// [`AorEdit::unregister`](crate::change::AorEdit::unregister).
    pub(crate) subs: ThinVec<Subscription<A>, A, Appearances<A>>,
}

impl<A: Allocator + Clone> AorEntry<A> {
    pub fn aor(&self) -> &[u8] {
        self.subs.tail()
    }

    /// The subscriptions, in no particular order.
    pub fn subs(&self) -> &[Subscription<A>] {
        &self.subs
    }

    /// The appearances (lines in use), kept in the header of the
    /// subscriptions' allocation (which an entry always has: it holds the
    /// AoR).
    pub fn apps(&self) -> &Appearances<A> {
        match self.subs.extra() {
            Some(a) => a,
            None => unreachable!("an entry's subscriptions always have an allocation"),
        }
    }

    pub(crate) fn apps_mut(&mut self) -> &mut Appearances<A> {
        match self.subs.extra_mut() {
            Some(a) => a,
            None => unreachable!("an entry's subscriptions always have an allocation"),
        }
    }

    /// Is this AoR a shared appearance (C: `sca_uri_is_shared_appearance`)?
    pub fn is_shared(&self) -> bool {
        self.subs.flag()
    }

    /// Mark the AoR shared or not (its subscriptions' allocation always
    /// exists: it holds the AoR).
    pub(crate) fn set_shared(&mut self, on: bool) {
        let set = self.subs.set_flag(on);
        debug_assert!(set, "an entry's subscriptions always have an allocation");
    }

    pub fn find_sub(&self, event: EventType, subscriber: &[u8]) -> Option<usize> {
        self.subs.iter().position(|s| s.event == event && s.subscriber() == subscriber)
    }

    pub fn subs_of(&self, event: EventType) -> impl Iterator<Item = &Subscription<A>> {
        self.subs.iter().filter(move |s| s.event == event)
    }

    fn is_empty(&self) -> bool {
        self.subs.is_empty() && self.apps().is_empty() && !self.is_shared()
    }

    pub fn has_subscribers(&self, event: EventType) -> bool {
        self.subs.iter().any(|s| s.event == event)
    }

    /// Insert or replace the subscription of (`r.event`, `r.subscriber`)
    /// (marks the AoR shared). On `NoMemory` nothing changed.
    pub(crate) fn put_sub(&mut self, r: &SubscriptionRec<'_>) -> Result<Stored, StoreError> {
        let mut sub = Subscription::new_in(r, self.subs.allocator().clone())?;
        self.set_shared(true);
        match self.find_sub(r.event, r.subscriber) {
            Some(i) => {
                // the same row in the DB: its history carries over
                let old = &self.subs[i];
                sub.gen = old.gen.wrapping_add(1);
                sub.in_db = old.in_db;
                sub.may_be_in_db = old.may_be_in_db;
                self.subs[i] = sub;
                Ok(Stored::Replaced)
            }
            None => {
                // exact: most AoRs have one or two subscribers, and every
                // spare slot is shared memory
                self.subs.try_reserve_exact(1)?;
                self.subs.push_within_capacity(sub).map_err(|_| StoreError::NoMemory)?;
                Ok(Stored::Inserted)
            }
        }
    }

    /// The phone at `contact` is gone (subscriber liveness): its
    /// subscriptions to this AoR end (returned, for a last NOTIFY and the
    /// DB), the lines it only seized are released, its appearances in a
    /// call are flagged and kept.
    pub(crate) fn contact_gone(&mut self, contact: &[u8]) -> ContactGone<A> {
        let mut ended = std::vec::Vec::new();
        let mut i = 0;
        while i < self.subs.len() {
            if self.subs[i].subscriber() == contact {
                ended.push(self.subs.swap_remove(i));
            } else {
                i += 1;
            }
        }
        let (released, flagged) = self.apps_mut().owner_gone(contact);
        ContactGone { ended, released, flagged }
    }
}

/// What [`AorEntry::contact_gone`] did in one AoR.
pub struct ContactGone<A: Allocator> {
    pub ended: std::vec::Vec<Subscription<A>>,
    pub released: std::vec::Vec<u32>,
    pub flagged: usize,
}

impl<A: Allocator> ContactGone<A> {
    pub fn is_empty(&self) -> bool {
        self.ended.is_empty() && self.released.is_empty() && self.flagged == 0
    }
}

/// What storing a subscription did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// There was none of this (event, subscriber).
    Inserted,
    /// It replaced the one there was.
    Replaced,
}

/// What [`AorGuard::merge_restored`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restored {
    /// Not in memory: added from the DB.
    Added,
    /// The DB copy was newer than the live one (same dialog).
    ReplacedLive,
    /// The live subscription is newer and stays (marked as in the DB).
    KeptLive,
}

pub struct SlotData<A: Allocator + Clone> {
    aors: HashTable<AorEntry<A>, A>,
}

pub struct Store<A: Allocator + Clone, L: RawLock> {
    slots: Vec<Locked<L, SlotData<A>>, A>,
    mask: u64,
    alloc: A,
}

impl<A: Allocator + Clone, L: RawLock> Store<A, L> {
    /// A store of `2^log2_slots` slots. Call [`Store::init_locks`] once the
    /// store has reached its final address.
    pub fn new_in(log2_slots: u32, alloc: A) -> Result<Self, StoreError> {
        let log2 = log2_slots.clamp(1, 20);
        let n = 1usize << log2;
        let mut slots = Vec::new_in(alloc.clone());
        slots.try_reserve_exact(n).map_err(|_| StoreError::NoMemory)?;
        for _ in 0..n {
            slots.push(Locked::new(SlotData { aors: HashTable::new_in(alloc.clone()) }));
        }
        Ok(Store { slots, mask: (n - 1) as u64, alloc })
    }

    pub fn init_locks(&self) -> bool {
        self.slots.iter().all(|s| s.init())
    }

    /// Release host lock resources (at shutdown; nobody locks afterwards).
    pub fn destroy_locks(&self) {
        for s in self.slots.iter() {
            s.destroy();
        }
    }

    pub fn slot_count(&self) -> usize {
        self.slots.len()
    }

    fn hash(aor: &[u8]) -> u64 {
        FixedState::with_seed(HASH_SEED).hash_one(aor)
    }

    /// The slot of an AoR of hash `hash`: from bits 32 up, since a slot's
    /// table places entries by the low bits (and tags them with the top
    /// seven). Taken from the low bits, every AoR of a slot would start
    /// its probe at the same few places of the slot's table, and a lookup
    /// would walk most of it (a 1M restore spent 8 % of its time there).
    fn slot_of(&self, hash: u64) -> usize {
        ((hash >> 32) & self.mask) as usize
    }

    /// Lock the slot of `aor` and work on that AoR.
    pub fn lock_aor<'s>(&'s self, aor: &'s [u8]) -> AorGuard<'s, A, L> {
        let hash = Self::hash(aor);
        let slot = &self.slots[self.slot_of(hash)];
        AorGuard { guard: slot.lock(), aor, hash, alloc: &self.alloc }
    }

    /// [`Store::lock_aor`] with a bounded wait (for shutdown): None if the
    /// slot is still held after `attempts` tries, `pause()` between them.
    pub fn try_lock_aor_within<'s>(&'s self, aor: &'s [u8], attempts: u32, pause: impl FnMut()) -> Option<AorGuard<'s, A, L>> {
        let hash = Self::hash(aor);
        let slot = &self.slots[self.slot_of(hash)];
        let guard = slot.try_lock_within(attempts, pause)?;
        Some(AorGuard { guard, aor, hash, alloc: &self.alloc })
    }

    /// Visit the AoRs of slot `i` (0 to [`Store::slot_count`] - 1) under
    /// its lock; false if there is no such slot.
    pub fn visit_slot(&self, i: usize, mut f: impl FnMut(&AorEntry<A>)) -> bool {
        match self.slots.get(i) {
            Some(slot) => {
                let g = slot.lock();
                g.aors.iter().for_each(&mut f);
                true
            }
            None => false,
        }
    }

    /// Visit every AoR, one slot locked at a time.
    pub fn for_each_aor(&self, mut f: impl FnMut(&AorEntry<A>)) {
        for slot in self.slots.iter() {
            let g = slot.lock();
            for e in g.aors.iter() {
                f(e);
            }
        }
    }

    /// Visit every AoR read-only, for shutdown: a slot whose lock is still
    /// held after `attempts` tries (with `pause()` between them) is skipped,
    /// since at that point only a process that died holding it can hold it,
    /// and what it was changing may be half done. Allocates and frees
    /// nothing in `A`. Returns how many slots were skipped.
    pub fn for_each_aor_unless_held(&self, attempts: u32, mut pause: impl FnMut(), mut f: impl FnMut(&AorEntry<A>)) -> usize {
        let mut skipped = 0;
        for slot in self.slots.iter() {
            match slot.try_lock_within(attempts, &mut pause) {
                Some(g) => g.aors.iter().for_each(&mut f),
                None => skipped += 1,
            }
        }
        skipped
    }

    /// Visit every AoR mutably, one slot locked at a time; entries that `f`
    /// leaves empty are dropped.
    pub fn retain_aors(&self, mut f: impl FnMut(&mut AorEntry<A>)) {
        for slot in self.slots.iter() {
            let mut g = slot.lock();
            g.aors.retain(|e| {
                f(e);
                !e.is_empty()
            });
        }
    }

    pub fn subscription_count(&self, event: EventType) -> usize {
        let mut n = 0;
        self.for_each_aor(|e| n += e.subs_of(event).count());
        n
    }
}

/// A locked slot, narrowed to one AoR.
pub struct AorGuard<'s, A: Allocator + Clone, L: RawLock> {
    guard: Guard<'s, L, SlotData<A>>,
    aor: &'s [u8],
    hash: u64,
    alloc: &'s A,
}

impl<A: Allocator + Clone, L: RawLock> AorGuard<'_, A, L> {
    /// The AoR this guard is for.
    pub fn aor(&self) -> &[u8] {
        self.aor
    }

    pub fn entry(&self) -> Option<&AorEntry<A>> {
        let aor = self.aor;
        self.guard.aors.find(self.hash, |e| e.aor() == aor)
    }

    pub fn entry_mut(&mut self) -> Option<&mut AorEntry<A>> {
        let aor = self.aor;
        self.guard.aors.find_mut(self.hash, |e| e.aor() == aor)
    }

    /// The AoR's entry, created (not shared, empty) if absent.
    pub fn entry_or_insert(&mut self) -> Result<&mut AorEntry<A>, StoreError> {
        self.entry_or_insert_for(0)
    }

    /// [`AorGuard::entry_or_insert`], a new entry with room for `subs`
    /// subscriptions.
    pub(crate) fn entry_or_insert_for(&mut self, subs: usize) -> Result<&mut AorEntry<A>, StoreError> {
        let aor = self.aor;
        if self.entry().is_none() {
            let e = AorEntry {
                subs: ThinVec::with_tail_in(aor, subs, self.alloc.clone())?,
            };
            let rehash = |e: &AorEntry<A>| Store::<A, L>::hash(e.aor());
            self.guard.aors.try_reserve(1, rehash).map_err(|_| StoreError::NoMemory)?;
            self.guard.aors.insert_unique(self.hash, e, rehash);
        }
        let hash = self.hash;
        self.guard
            .aors
            .find_mut(hash, |e| e.aor() == aor)
            .ok_or(StoreError::NoMemory)
    }

    /// Drop the AoR's entry if nothing is left in it.
    pub fn prune(&mut self) {
        let aor = self.aor;
        if let Ok(occ) = self.guard.aors.find_entry(self.hash, |e| e.aor() == aor) {
            if occ.get().is_empty() {
                occ.remove();
            }
        }
    }

    pub fn find_sub(&self, event: EventType, subscriber: &[u8]) -> Option<&Subscription<A>> {
        let e = self.entry()?;
        e.find_sub(event, subscriber).and_then(|i| e.subs.get(i))
    }

    pub(crate) fn find_sub_mut(
        &mut self,
        event: EventType,
        subscriber: &[u8],
    ) -> Option<&mut Subscription<A>> {
        let e = self.entry_mut()?;
        let i = e.find_sub(event, subscriber)?;
        e.subs.get_mut(i)
    }

    /// Insert or replace the subscription of (`r.event`, `r.subscriber`),
    /// creating the entry if needed (restore, the cluster's apply, tests;
    /// handlers use [`AorEdit::put_sub`](crate::change::AorEdit::put_sub)).
    /// On `NoMemory` the store is unchanged.
    pub(crate) fn put_sub(&mut self, r: &SubscriptionRec<'_>) -> Result<Stored, StoreError> {
        let res = self.entry_or_insert_for(1).and_then(|e| e.put_sub(r));
        if res.is_err() {
            self.prune();
        }
        res
    }

    /// Is this AoR a shared appearance (C: `sca_uri_is_shared_appearance`)?
    pub fn is_shared(&self) -> bool {
        self.entry().is_some_and(|e| e.is_shared())
    }

    pub fn alloc(&self) -> A {
        self.alloc.clone()
    }

    /// Merge a subscription read back from the DB (start-up restore, or a
    /// restore retried while phones already subscribe). Absent: stored as
    /// it is in the DB (clean). Present: the row exists, so the live one is
    /// written as an UPDATE; the DB copy replaces it only if it is newer
    /// (same dialog, later SUBSCRIBE CSeq or expiry): a live subscription
    /// in another dialog came after the restart and wins.
    pub fn merge_restored(&mut self, r: &SubscriptionRec<'_>) -> Result<Restored, StoreError> {
        // one lookup of the AoR: a restore of a million rows makes a
        // million of them, most for an AoR not stored yet
        let (aor, hash) = (self.aor, self.hash);
        let Some(e) = self.guard.aors.find_mut(hash, |e| e.aor() == aor) else {
            let mut e = AorEntry { subs: ThinVec::with_tail_in(aor, 1, self.alloc.clone())? };
            e.put_sub(r)?;
            e.subs[0].mark_restored();
            let rehash = |e: &AorEntry<A>| Store::<A, L>::hash(e.aor());
            self.guard.aors.try_reserve(1, rehash).map_err(|_| StoreError::NoMemory)?;
            self.guard.aors.insert_unique(hash, e, rehash);
            return Ok(Restored::Added);
        };
        let existed = match e.find_sub(r.event, r.subscriber) {
            Some(i) => {
                let s = &mut e.subs[i];
                s.in_db = true;
                s.may_be_in_db = true;
                let newer = s.same_dialog(r) && (r.subscribe_cseq, r.expires) > (s.subscribe_cseq, s.expires);
                if !newer {
                    return Ok(Restored::KeptLive);
                }
                true
            }
            None => false,
        };
        if let Err(err) = e.put_sub(r) {
            self.prune();
            return Err(err);
        }
        // replaced in place, or pushed last
        if let Some(i) = e.find_sub(r.event, r.subscriber) {
            e.subs[i].mark_restored();
        }
        Ok(if existed { Restored::ReplacedLive } else { Restored::Added })
    }

    /// Remove the subscription of (`event`, `subscriber`) and hand it over
    /// (the entry stays, even if empty: [`AorGuard::prune`] drops it).
    pub(crate) fn take_sub(&mut self, event: EventType, subscriber: &[u8]) -> Option<Subscription<A>> {
        let e = self.entry_mut()?;
        let i = e.find_sub(event, subscriber)?;
        Some(e.subs.swap_remove(i))
    }

    #[cfg(test)]
    pub(crate) fn remove_sub(&mut self, event: EventType, subscriber: &[u8]) -> bool {
        let removed = match self.entry_mut() {
            Some(e) => match e.find_sub(event, subscriber) {
                Some(i) => {
                    e.subs.swap_remove(i);
                    true
                }
                None => false,
            },
            None => false,
        };
        self.prune();
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::SpinLock;
    use allocator_api2::alloc::Global;

    use crate::testutil::rec;

    fn store() -> Store<Global, SpinLock> {
        crate::testutil::store(2)
    }

    #[test]
    fn a_gone_contact_loses_its_subscriptions_and_seized_lines_only() {
        let s = store();
        let aor = b"sip:line@x";
        {
            let mut g = s.lock_aor(aor);
            for who in [&b"sip:dead@1"[..], b"sip:alive@2"] {
                g.put_sub(&rec(aor, who, EventType::CallInfo)).expect("put");
            }
            g.put_sub(&rec(aor, b"sip:dead@1", EventType::LineSeize)).expect("put");
            let e = g.entry_mut().expect("entry");
            e.apps_mut().seize(Some(1), b"sip:dead@1", 0, Global).expect("seize");
            e.apps_mut().seize(Some(2), b"sip:dead@1", 0, Global).expect("seize");
            e.apps_mut().get_mut(2).expect("2").set_state(crate::parse::appearance::AppearanceState::Active, 1);
        }
        let mut g = s.lock_aor(aor);
        let e = g.entry_mut().expect("entry");
        let gone = e.contact_gone(b"sip:dead@1");
        let mut events: std::vec::Vec<EventType> = gone.ended.iter().map(|s| s.event).collect();
        events.sort_by_key(|e| *e as u8);
        assert_eq!(events.len(), 2);
        assert!(gone.ended.iter().all(|s| s.subscriber() == b"sip:dead@1"));
        assert_eq!(gone.released, [1]);
        assert_eq!(gone.flagged, 1);
        assert_eq!(e.subs.len(), 1);
        assert_eq!(e.subs[0].subscriber(), b"sip:alive@2");
        assert_eq!(e.apps().iter().map(|a| a.index).collect::<std::vec::Vec<_>>(), [2]);
        assert!(e.contact_gone(b"sip:nobody@3").is_empty());
    }

    #[test]
    fn put_find_update_remove() {
        let s = store();
        let aor = b"sip:100@example.com";
        {
            let mut g = s.lock_aor(aor);
            assert_eq!(g.put_sub(&rec(aor, b"sip:100@10.0.0.1", EventType::CallInfo)), Ok(Stored::Inserted));
            assert_eq!(g.put_sub(&rec(aor, b"sip:100@10.0.0.2", EventType::CallInfo)), Ok(Stored::Inserted));
            assert_eq!(g.put_sub(&rec(aor, b"sip:100@10.0.0.1", EventType::LineSeize)), Ok(Stored::Inserted));
            let mut r = rec(aor, b"sip:100@10.0.0.1", EventType::CallInfo);
            r.expires = 2000;
            assert_eq!(g.put_sub(&r), Ok(Stored::Replaced));
            let found = g.find_sub(EventType::CallInfo, b"sip:100@10.0.0.1").expect("found");
            assert_eq!(found.expires, 2000);
            assert_eq!(found.to_rec(aor, &mut std::vec::Vec::new()), r);
        }
        assert_eq!(s.subscription_count(EventType::CallInfo), 2);
        assert_eq!(s.subscription_count(EventType::LineSeize), 1);
        {
            let mut g = s.lock_aor(aor);
            assert!(g.remove_sub(EventType::CallInfo, b"sip:100@10.0.0.1"));
            assert!(!g.remove_sub(EventType::CallInfo, b"sip:100@10.0.0.1"));
        }
        assert_eq!(s.subscription_count(EventType::CallInfo), 1);
    }

    #[test]
    fn an_aor_stays_shared_until_unregistered_then_is_dropped() {
        let s = store();
        let aor = b"sip:200@example.com";
        {
            let mut g = s.lock_aor(aor);
            assert!(!g.is_shared());
            g.put_sub(&rec(aor, b"c", EventType::CallInfo)).expect("put");
            assert!(g.is_shared());
            g.remove_sub(EventType::CallInfo, b"c");
            // like the C module's appearance list: registered on the first
            // subscription, kept after the last one
            assert!(g.is_shared());
            let mut cs = crate::change::ChangeSet::new();
            g.entry_mut().expect("entry").edit(&mut cs).unregister();
            g.prune();
            assert!(!g.is_shared());
            assert!(g.entry().is_none());
        }
        let mut n = 0;
        s.for_each_aor(|_| n += 1);
        assert_eq!(n, 0);
    }

    #[test]
    fn shutdown_visit_skips_only_a_slot_someone_still_holds() {
        let s = store();
        let aors: std::vec::Vec<std::string::String> = (0..64).map(|i| format!("sip:{i}@example.com")).collect();
        for a in &aors {
            s.lock_aor(a.as_bytes()).put_sub(&rec(a.as_bytes(), b"c", EventType::CallInfo)).expect("put");
        }
        // nothing held: everything visited, no waiting
        let (mut seen, mut pauses) = (0, 0);
        assert_eq!(s.for_each_aor_unless_held(3, || pauses += 1, |_| seen += 1), 0);
        assert_eq!((seen, pauses), (64, 0));
        // a "dead process" holds the slot of AoR 0
        let held = s.lock_aor(aors[0].as_bytes());
        let mut visited = std::vec::Vec::new();
        let mut pauses = 0;
        let skipped = s.for_each_aor_unless_held(3, || pauses += 1, |e| visited.push(e.aor().to_vec()));
        assert_eq!(skipped, 1);
        assert_eq!(pauses, 2, "tried 3 times, pausing between tries");
        assert!(!visited.contains(&aors[0].as_bytes().to_vec()));
        let slot = |a: &std::string::String| s.slot_of(Store::<Global, SpinLock>::hash(a.as_bytes()));
        let same_slot = aors.iter().filter(|a| slot(a) == slot(&aors[0])).count();
        assert_eq!(visited.len(), 64 - same_slot, "every other slot was visited");
        drop(held);
        assert_eq!(s.for_each_aor_unless_held(1, || {}, |_| {}), 0, "released: nothing skipped");
    }

    #[test]
    fn a_slot_spreads_its_aors_over_its_table() {
        // a slot's table places an entry by the low bits of its hash: the
        // AoRs of one slot must not share them, or each lookup probes
        // through all of them
        let s: Store<Global, SpinLock> = crate::testutil::store(9);
        let aors: std::vec::Vec<std::string::String> = (0..20_000).map(|i| format!("sip:{i}@example.com")).collect();
        let h = |a: &std::string::String| Store::<Global, SpinLock>::hash(a.as_bytes());
        let first = s.slot_of(h(&aors[0]));
        let low: std::collections::HashSet<u64> =
            aors.iter().filter(|a| s.slot_of(h(a)) == first).map(|a| h(a) & 63).collect();
        assert!(low.len() >= 16, "the AoRs of a slot start at {} places of 64", low.len());
    }

    #[test]
    fn many_aors_across_slots_are_all_found() {
        let s = store();
        let aors: std::vec::Vec<std::string::String> =
            (0..500).map(|i| format!("sip:{i}@example.com")).collect();
        for a in &aors {
            let mut g = s.lock_aor(a.as_bytes());
            g.put_sub(&rec(a.as_bytes(), b"c", EventType::CallInfo)).expect("put");
        }
        for a in &aors {
            let g = s.lock_aor(a.as_bytes());
            assert!(g.find_sub(EventType::CallInfo, b"c").is_some(), "{a}");
        }
        assert_eq!(s.subscription_count(EventType::CallInfo), 500);
    }

    #[test]
    fn retain_drops_what_the_visitor_empties() {
        let s = store();
        for i in 0..10 {
            let a = format!("sip:{i}@x");
            let mut g = s.lock_aor(a.as_bytes());
            let mut r = rec(a.as_bytes(), b"c", EventType::CallInfo);
            r.expires = i;
            g.put_sub(&r).expect("put");
        }
        s.retain_aors(|e| e.subs.retain(|sub| sub.expires >= 5));
        assert_eq!(s.subscription_count(EventType::CallInfo), 5);
    }
}
