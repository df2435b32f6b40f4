//! The one place where a change of state is told to the world.
//!
//! Handlers (SIP, RPC, timers, liveness, a peer's records) only decide
//! state: they change an AoR through an [`Edit`] (or, for store-wide
//! sweeps, a [`sca_core::change::AorEdit`] of an entry) and the edit
//! records what changed in a [`ChangeSet`]. [`apply`] turns a change set
//! into its effects, under the AoR's lock, in the order the C module's
//! transcripts have them:
//!
//! 1. each ended subscription: its DB delete (if its row may exist), then
//!    its last NOTIFY (if due and this node is its origin);
//! 2. each subscription ended in place: its NOTIFY;
//! 3. the call-info group: one NOTIFY each (this node's subscriptions).
//!
//! An [`Edit`] then captures the AoR for the cluster (local changes only;
//! a peer's records are never sent on), unlocks, broadcasts, and tells
//! subscriber liveness which contacts the AoR started or stopped needing
//! pinged ([`Watched`]); both compare the AoR with what it was when
//! locked, so no change escapes them. The SUBSCRIBE path answers first
//! and NOTIFYs (and tells liveness) after its reply
//! ([`subscribe_notifies`]).
//!
//! DB writes need nothing here: `sca-core` marks a subscription's row to
//! be written in the very method that changes it. Only a removed
//! subscription, which leaves nothing to mark, needs its DB delete queued
//! (step 1).

use core::ops::{Deref, DerefMut};

use sca_core::change::{AorEdit, ChangeSet};
use sca_core::cluster::replica::Snapshot;
use sca_core::model::EventType;
use sca_core::store::{AorEntry, AorGuard, StoreError, Subscription, SubscriptionRec};

use crate::host::lock::KLock;
use crate::host::log::B;
use crate::host::shm::Shm;
use crate::lm_err;
use crate::module::params::Config;
use crate::module::{cluster, config, liveness, notify, Shared};

/// Does this node NOTIFY (and persist) a subscription stamped `ver`?
pub fn is_local(ver: u64) -> bool {
    cluster::is_local(ver)
}

/// Apply `cs`, the changes just made to `e` (None: the AoR is gone), under
/// its lock: DB deletes and NOTIFYs (see the module documentation).
pub fn apply(cfg: &Config, st: &Shared, aor: &[u8], e: Option<&mut AorEntry<Shm>>, cs: ChangeSet<Shm>, now: i64) {
    let mut h = Vec::with_capacity(256);
    for mut x in cs.ended {
        let sub = &mut x.sub;
        // its row goes with it (in the next DB write)
        if sub.needs_db_delete() {
            st.add_tombstone(aor, sub.subscriber(), sub.event());
        }
        if !x.notify || !is_local(sub.ver()) {
            continue;
        }
        sub.count_notify();
        h.clear();
        let built = match e.as_deref() {
            Some(e) => notify::call_info_header(e, sub.event(), sub.index(), &mut h),
            None => notify::idle_call_info_header(&sub.to_rec(aor, &mut Vec::new()), &mut h),
        };
        if built.is_ok() {
            let _ = notify::send(cfg, &sub.to_rec(aor, &mut Vec::new()), &h, now);
        }
    }
    let Some(e) = e else { return };
    for (event, subscriber) in &cs.notify_subs {
        let Some(i) = e.find_sub(*event, subscriber) else { continue };
        let sub = &e.subs()[i];
        if !is_local(sub.ver()) {
            continue;
        }
        h.clear();
        let built = notify::call_info_header(e, *event, sub.index(), &mut h);
        let Some(sub) = notify_sent(e, i) else { continue };
        if built.is_ok() {
            let _ = notify::send(cfg, &sub.to_rec(aor, &mut Vec::new()), &h, now);
        }
    }
    if cs.notify_group {
        notify_group(cfg, e, now);
    }
}

/// NOTIFY every call-info subscriber of the AoR with its appearances
/// (C: `sca_notify_call_info_subscribers`). Terminated subscriptions
/// waiting for the purge are skipped, and each subscriber gets its own
/// Subscription-State (docs/compat.md). With clustering, each
/// subscription is NOTIFYed by its own node.
fn notify_group(cfg: &Config, entry: &mut AorEntry<Shm>, now: i64) {
    let mut h = Vec::with_capacity(256);
    if notify::call_info_header(entry, EventType::CallInfo, -1, &mut h).is_err() {
        return;
    }
    let aor = entry.aor().to_vec();
    for i in 0..entry.subs().len() {
        let sub = &entry.subs()[i];
        if sub.event() != EventType::CallInfo || sub.state().is_terminated() || !is_local(sub.ver()) {
            continue;
        }
        if let Some(sub) = notify_sent(entry, i) {
            let _ = notify::send(cfg, &sub.to_rec(&aor, &mut Vec::new()), &h, now);
        }
    }
}

/// Subscription `i` of `e` is being NOTIFYed: its CSeq goes on (see
/// [`AorEdit::notify_sent`]).
fn notify_sent(e: &mut AorEntry<Shm>, i: usize) -> Option<&Subscription<Shm>> {
    let mut bookkeeping = ChangeSet::new();
    e.edit(&mut bookkeeping).notify_sent(i)?;
    e.subs().get(i)
}

/// A locked AoR being changed: its [`ChangeSet`] is applied, and (local
/// changes) replicated, when it is finished or dropped.
pub struct Edit<'s> {
    /// The AoR's lock. Fields drop in declaration order once `drop` ran:
    /// this one first, so the AoR is unlocked before `told` sends.
    g: AorGuard<'s, Shm, KLock>,
    /// What the end of the edit tells outside the lock (filled by `drop`).
    told: Told,
    st: &'s Shared,
    /// Cluster: the AoR as locked, for the capture.
    snap: Option<Snapshot>,
    /// Liveness on: the contacts the AoR needed pinged as locked.
    watched: Option<Watched>,
    cs: ChangeSet<Shm>,
    now: i64,
}

/// Lock `aor` to change it (a local change: replicated).
pub fn edit<'s>(st: &'s Shared, aor: &'s [u8], now: i64) -> Edit<'s> {
    let g = st.store.lock_aor(aor);
    let snap = cluster::enabled().then(|| Snapshot::take(g.entry()));
    let watched = Watched::take(g.entry());
    Edit { g, told: Told::default(), st, snap, watched, cs: ChangeSet::new(), now }
}

/// Lock `aor` to apply a peer's records to it: effects, no replication.
/// (Subscriptions a peer stores or refreshes need no effect here: their
/// NOTIFYs, DB rows and pings are their origin's; but one of ours that a
/// peer's newer record takes over is no longer pinged here, and one that
/// comes back to us from a peer is.)
pub fn edit_from_peer<'s>(st: &'s Shared, aor: &'s [u8], now: i64) -> Edit<'s> {
    let g = st.store.lock_aor(aor);
    let watched = Watched::take(g.entry());
    Edit { g, told: Told::default(), st, snap: None, watched, cs: ChangeSet::new(), now }
}

impl<'s> Deref for Edit<'s> {
    type Target = AorGuard<'s, Shm, KLock>;
    fn deref(&self) -> &Self::Target {
        &self.g
    }
}

impl DerefMut for Edit<'_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.g
    }
}

impl Edit<'_> {
    /// The AoR's entry as an edit that records what it changes (None: no
    /// such AoR).
    pub fn core(&mut self) -> Option<AorEdit<'_, Shm>> {
        let e = self.g.entry_mut()?;
        Some(e.edit(&mut self.cs))
    }

    /// [`Edit::core`], the entry created if absent (dropped again at the
    /// end of the edit if it stays empty).
    pub fn core_or_insert(&mut self) -> Result<AorEdit<'_, Shm>, StoreError> {
        self.g.edit_or_insert(&mut self.cs)
    }

    /// The changes so far (for a peer's apply, which records by hand what
    /// `sca_core::cluster::replica` did).
    pub fn changes(&mut self) -> &mut ChangeSet<Shm> {
        &mut self.cs
    }

    /// Tell the call-info group the appearances (changed or not).
    pub fn notify_group(&mut self) {
        self.cs.notify_group = true;
    }

    /// Apply and replicate now, then unlock.
    pub fn finish(self) {}

    /// Take the changes out, to be applied after the SIP reply
    /// ([`subscribe_notifies`]), with what liveness is to hear of them
    /// (the edit is done: nothing changes the AoR after this); what is
    /// left to the end of the edit is the capture for the peers. Dropped
    /// unapplied (an error reply): the change set of a SUBSCRIBE that
    /// failed is never told, as in the C module (an error leaves the
    /// phone's subscriptions as they were).
    pub fn defer_effects(&mut self) -> Deferred {
        let e = self.g.entry();
        let watch = self.watched.take().map(|w| w.delta(e)).unwrap_or_default();
        Deferred { cs: core::mem::take(&mut self.cs), watch }
    }
}

/// A SUBSCRIBE's effects, told after its reply ([`Edit::defer_effects`]).
pub struct Deferred {
    cs: ChangeSet<Shm>,
    watch: WatchDelta,
}

impl Drop for Edit<'_> {
    /// Apply the changes and capture them for the peers, under the lock;
    /// the broadcast and liveness follow in [`Told`]'s drop, after `g`'s
    /// has unlocked.
    fn drop(&mut self) {
        // nothing told and nothing captured while unwinding: the change
        // may be half done
        if std::thread::panicking() {
            return;
        }
        let cs = core::mem::take(&mut self.cs);
        if !cs.is_empty() {
            if let Some(cfg) = config() {
                let aor = self.g.aor().to_vec();
                apply(cfg, self.st, &aor, self.g.entry_mut(), cs, self.now);
            }
        }
        self.g.prune();
        if let Some(w) = self.watched.take() {
            self.told.watch = w.delta(self.g.entry());
        }
        if let Some(snap) = self.snap.take() {
            self.told.msgs = cluster::capture(&snap, &mut self.g);
        }
    }
}

/// An edit's effects outside the AoR's lock: its records for the peers,
/// and what liveness is to hear.
#[derive(Default)]
struct Told {
    msgs: Vec<Vec<u8>>,
    watch: WatchDelta,
}

impl Drop for Told {
    fn drop(&mut self) {
        if !self.msgs.is_empty() {
            cluster::broadcast(core::mem::take(&mut self.msgs));
        }
        core::mem::take(&mut self.watch).tell();
    }
}

/// Run `f` on every AoR through an [`Edit`] (so its changes are told and
/// replicated), one AoR locked at a time: for the rare store-wide
/// operations (RPC deactivation, a phone declared dead).
pub fn for_each_aor(st: &Shared, now: i64, mut f: impl FnMut(&mut Edit<'_>)) {
    let mut aors = Vec::new();
    st.store.for_each_aor(|e| aors.push(e.aor().to_vec()));
    for aor in &aors {
        let mut ed = edit(st, aor, now);
        f(&mut ed);
        ed.prune();
    }
}

/// Store-wide sweep that every node does for its own copies (the purge):
/// `f` edits each AoR; the effects are applied (liveness hears of them
/// once every slot is unlocked again), nothing is replicated.
pub fn sweep(st: &Shared, cfg: &Config, now: i64, mut f: impl FnMut(&mut AorEdit<'_, Shm>)) {
    let mut watch = WatchDelta::default();
    st.store.retain_aors(|e| {
        let watched = Watched::take(Some(e));
        let mut cs = ChangeSet::new();
        f(&mut e.edit(&mut cs));
        if !cs.is_empty() {
            let aor = e.aor().to_vec();
            apply(cfg, st, &aor, Some(e), cs, now);
            if let Some(w) = watched {
                watch.extend(w.delta(Some(e)));
            }
        }
    });
    watch.tell();
}

/// A SUBSCRIBE's NOTIFYs, after its reply (the C module's order): the
/// subscriber's (as stored now: its route set and CSeq; `rec` with CSeq 1
/// when nothing is stored, an unsubscribe), then the rest of the
/// SUBSCRIBE's changes ([`Edit::defer_effects`]): for a seize or release
/// the group's; then liveness: a phone whose call-info subscription is
/// new here is monitored, one that unsubscribed is not any more (when it
/// was its last). Err when the subscriber's NOTIFY could not be sent.
pub fn subscribe_notifies(st: &Shared, cfg: &Config, rec: &SubscriptionRec<'_>, index: i32, d: Deferred, now: i64) -> Result<(), ()> {
    let Deferred { cs, watch } = d;
    let mut guard = st.store.lock_aor(rec.aor);
    let mut call_info = Vec::with_capacity(256);
    let event = rec.event;
    let sent = match guard.entry_mut() {
        Some(e) => {
            let built = notify::call_info_header(e, event, index, &mut call_info);
            // the entry locked by rec.aor holds exactly those bytes
            match e.find_sub(event, rec.subscriber) {
                Some(i) => match notify_sent(e, i) {
                    Some(sub) => built.and_then(|()| notify::send(cfg, &sub.to_rec(rec.aor, &mut Vec::new()), &call_info, now)),
                    None => Err(()),
                },
                None => built.and_then(|()| notify::send(cfg, &SubscriptionRec { notify_cseq: 1, ..rec.clone() }, &call_info, now)),
            }
        }
        None => notify::idle_call_info_header(rec, &mut call_info)
            .and_then(|()| notify::send(cfg, &SubscriptionRec { notify_cseq: 1, ..rec.clone() }, &call_info, now)),
    };
    if sent.is_err() {
        lm_err!("SCA {} SUBSCRIBE+NOTIFY for {} failed", event.name(), B(rec.subscriber));
        drop(guard);
        // stored all the same: liveness counts it
        watch.tell();
        return Err(());
    }
    if !cs.is_empty() {
        apply(cfg, st, rec.aor, guard.entry_mut(), cs, now);
    }
    drop(guard);
    watch.tell();
    Ok(())
}

/// Subscriber liveness: the contacts an AoR needs pinged, that is those of
/// its live call-info subscriptions that this node NOTIFYs (at most one
/// subscription per contact in an AoR), sorted. Taken when an AoR is
/// locked for an edit (None: liveness off), compared with the AoR when
/// the edit ends ([`Watched::delta`]): each contact the AoR gained is
/// watched, each it lost (unsubscribed, expired, ended, deactivated, or
/// taken over by a peer) unwatched; liveness counts per contact the AoRs
/// that need it, so a phone stops being pinged when its last call-info
/// subscription ends.
struct Watched(Vec<Vec<u8>>);

/// The live call-info subscriptions of `e` that this node NOTIFYs.
fn pinged_subs(e: Option<&AorEntry<Shm>>) -> impl Iterator<Item = &Subscription<Shm>> {
    e.into_iter()
        .flat_map(|e| e.subs_of(EventType::CallInfo))
        .filter(|s| !s.state().is_terminated() && is_local(s.ver()))
}

impl Watched {
    fn take(e: Option<&AorEntry<Shm>>) -> Option<Watched> {
        if !liveness::enabled() {
            return None;
        }
        let mut v: Vec<Vec<u8>> = pinged_subs(e).map(|s| s.subscriber().to_vec()).collect();
        v.sort_unstable();
        Some(Watched(v))
    }

    /// What changed between the AoR as taken and `e`, the AoR now.
    fn delta(self, e: Option<&AorEntry<Shm>>) -> WatchDelta {
        let before = self.0;
        let mut d = WatchDelta::default();
        let mut after: Vec<&[u8]> = Vec::with_capacity(before.len() + 1);
        for s in pinged_subs(e) {
            after.push(s.subscriber());
            if before.binary_search_by(|c| c.as_slice().cmp(s.subscriber())).is_err() {
                d.watch.push((s.subscriber().to_vec(), s.record_route().to_vec()));
            }
        }
        after.sort_unstable();
        d.unwatch = before.into_iter().filter(|c| after.binary_search(&c.as_slice()).is_err()).collect();
        d
    }
}

/// Contacts to watch (with the route set to ping over) and to unwatch,
/// told to liveness outside the AoR's lock ([`WatchDelta::tell`]).
#[derive(Default)]
struct WatchDelta {
    watch: Vec<(Vec<u8>, Vec<u8>)>,
    unwatch: Vec<Vec<u8>>,
}

impl WatchDelta {
    fn extend(&mut self, o: WatchDelta) {
        self.watch.extend(o.watch);
        self.unwatch.extend(o.unwatch);
    }

    fn tell(self) {
        for (contact, route) in &self.watch {
            liveness::watch(contact, route);
        }
        for contact in &self.unwatch {
            liveness::unwatch(contact);
        }
    }
}

/// NOTIFY the call-info group of `aor` (nothing changed here; a peer or
/// the other side of a call did): no capture.
pub fn notify_group_of(st: &Shared, cfg: &Config, aor: &[u8], now: i64) {
    let mut g = st.store.lock_aor(aor);
    if let Some(e) = g.entry_mut() {
        notify_group(cfg, e, now);
    }
}
