//! Capture of local changes and merge of remote ones (docs/cluster.md).
//!
//! **Capture** needs no help from the code that changes the store: a
//! [`Snapshot`] of an AoR is taken when its slot is locked, and when the
//! work is done [`stamp`] compares the AoR with it. Every subscription or
//! appearance that is new or different gets a fresh version stamp, every
//! one that is gone gets a tombstone, and [`records`] turns the result into
//! the records to broadcast. So a new code path that changes the store is
//! replicated without anyone remembering to.
//!
//! **Merge** ([`apply_sub_put`], [`apply_sub_del`], [`apply_aor_apps`])
//! applies a peer's records so that the outcome does not depend on the
//! order the records arrive in, nor on duplicates:
//!
//! * a subscription keeps the copy with the highest stamp; a delete wins
//!   over every copy not newer than itself, and its tombstone keeps late
//!   copies out;
//! * an appearance is an *incarnation* (`inc`: the stamp of the seize that
//!   made it) with versions (`ver`). Within one incarnation the highest
//!   version wins. Two different incarnations of one index are two seizes
//!   that did not see each other: **the earlier seize wins, then the lower
//!   node id** (the packed `inc` compares exactly so);
//! * a tombstone ends exactly the incarnation it names, and keeps late
//!   copies of it (or of anything older) out. An appearance record repeats
//!   the tombstone of the incarnation before it, so a node that missed a
//!   release still takes the newer seize.

use core::hash::{BuildHasher, Hasher};
use std::vec::Vec;

use allocator_api2::alloc::Allocator;
use foldhash::fast::FixedState;

use super::codec::{self, AorApps, AppearanceRec, Message, Record, SubDel, SubPut, Tombstone};
use super::{Ver, MAX_NODE_ID, NODE_BITS};
use crate::appearance::{Appearance, AppearanceParts, DialogRef};
use crate::model::EventType;
use crate::store::{AorEntry, AorGuard, StoreError, Subscription};
use crate::sync::RawLock;

/// A released item: the incarnation it ended (0 for subscriptions) and
/// the stamp of the release. Packed stamps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tomb {
    pub inc: u64,
    pub ver: u64,
}

/// Where tombstones live (the module: a table in shared memory with a
/// time to live; tests: a map). Keys come from [`app_key`] and [`sub_key`].
pub trait Tombs {
    fn get(&mut self, key: u64) -> Option<Tomb>;
    /// Store `t` under `key`, replacing what is there.
    fn put(&mut self, key: u64, t: Tomb);
    /// Is the release under `key` recent enough that a seize whose node
    /// did not know of it may have been concurrent with the incarnation it
    /// ended? Tombstones are forgotten after a while; a node that forgot
    /// one seizes without naming it, and a peer that still remembers it
    /// must not take that seize for a concurrent loser. So peers stop
    /// using a release against seizes that do not name it well before any
    /// node forgets it (the module: after half the time to live).
    fn fresh(&mut self, key: u64) -> bool {
        let _ = key;
        true
    }
}

/// Keep the newer of `t` and the tombstone already under `key`.
fn tomb_keep_newer(tombs: &mut impl Tombs, key: u64, t: Tomb) {
    match tombs.get(key) {
        Some(old) if (old.inc, old.ver) >= (t.inc, t.ver) => {}
        _ => tombs.put(key, t),
    }
}

const KEY_SEED: u64 = 0x05ca_703b;

/// The tombstone key of appearance `index` of `aor`.
pub fn app_key(aor: &[u8], index: u32) -> u64 {
    let mut h = FixedState::with_seed(KEY_SEED).build_hasher();
    h.write_usize(aor.len());
    h.write(aor);
    h.write_u8(b'A');
    h.write_u32(index);
    h.finish()
}

/// The tombstone key of the `event` subscription of `subscriber` to `aor`.
pub fn sub_key(aor: &[u8], event: EventType, subscriber: &[u8]) -> u64 {
    let mut h = FixedState::with_seed(KEY_SEED).build_hasher();
    h.write_usize(aor.len());
    h.write(aor);
    h.write_u8(b'S');
    h.write_u8(event as u8);
    h.write(subscriber);
    h.finish()
}

/// The node id in a packed stamp.
pub const fn node_of(stamp: u64) -> u32 {
    (stamp & ((1 << NODE_BITS) - 1)) as u32
}

fn sub_content<A: Allocator>(s: &Subscription<A>) -> u64 {
    // notify_cseq is left out: sending a NOTIFY is not a change to replicate
    let mut h = FixedState::with_seed(KEY_SEED).build_hasher();
    h.write_u8(s.state as u8);
    h.write_i64(s.expires);
    h.write_i32(s.index);
    h.write_u32(s.subscribe_cseq);
    let mut tag = Vec::new();
    for part in [s.call_id(), s.from_tag(), s.to_tag().in_buf(&mut tag), s.record_route()] {
        h.write_usize(part.len());
        h.write(part);
    }
    h.finish()
}

fn app_content<A: Allocator + Clone>(a: &Appearance<A>) -> u64 {
    let mut h = FixedState::with_seed(KEY_SEED).build_hasher();
    h.write_u8(a.state as u8);
    h.write_u8(a.flags);
    h.write_i64(a.mtime);
    h.write_i64(a.ctime);
    for part in a.strs() {
        h.write_usize(part.len());
        h.write(part);
    }
    h.finish()
}

struct SubSnap {
    event: EventType,
    subscriber: Vec<u8>,
    content: u64,
    ver: u64,
}

struct AppSnap {
    index: u32,
    inc: u64,
    content: u64,
    ver: u64,
}

/// An AoR as it was when its slot was locked, reduced to what [`stamp`]
/// compares: identities, content hashes and stamps.
pub struct Snapshot {
    subs: Vec<SubSnap>,
    apps: Vec<AppSnap>,
    shared: bool,
}

impl Snapshot {
    pub fn take<A: Allocator + Clone>(e: Option<&AorEntry<A>>) -> Snapshot {
        let Some(e) = e else {
            return Snapshot { subs: Vec::new(), apps: Vec::new(), shared: false };
        };
        Snapshot {
            subs: e
                .subs
                .iter()
                .map(|s| SubSnap { event: s.event, subscriber: s.subscriber().to_vec(), content: sub_content(s), ver: s.ver })
                .collect(),
            apps: e
                .apps()
                .iter()
                .map(|a| AppSnap { index: a.index, inc: a.inc, content: app_content(a), ver: a.ver })
                .collect(),
            shared: e.is_shared(),
        }
    }
}

/// What [`stamp`] found changed; [`records`] makes the records of it.
#[derive(Default)]
pub struct Stamped {
    /// Indexes into the entry's subscriptions.
    sub_puts: Vec<usize>,
    /// Indexes into the snapshot's subscriptions, with the delete's stamp.
    sub_dels: Vec<(usize, u64)>,
    apps_changed: bool,
    tombstones: Vec<Tombstone>,
}

impl Stamped {
    pub fn is_empty(&self) -> bool {
        self.sub_puts.is_empty() && self.sub_dels.is_empty() && !self.apps_changed
    }
}

/// Compare the AoR under `g` with `before`, stamp what is new or changed
/// with `node`'s stamps at `now_ms`, and tombstone what is gone.
pub fn stamp<A: Allocator + Clone, L: RawLock>(
    before: &Snapshot,
    g: &mut AorGuard<'_, A, L>,
    node: u32,
    now_ms: u64,
    tombs: &mut impl Tombs,
) -> Stamped {
    let aor = g.aor().to_vec();
    let mut out = Stamped::default();
    let mut seen_subs = vec![false; before.subs.len()];
    let mut seen_apps = vec![false; before.apps.len()];
    if let Some(e) = g.entry_mut() {
        for (i, s) in e.subs.iter_mut().enumerate() {
            let prev = before.subs.iter().position(|b| b.event == s.event && b.subscriber == s.subscriber());
            let old = match prev {
                Some(j) => {
                    seen_subs[j] = true;
                    let b = &before.subs[j];
                    if s.ver != 0 && s.ver == b.ver && sub_content(s) == b.content {
                        continue;
                    }
                    b.ver.max(s.ver)
                }
                // re-created after a delete: newer than its tombstone
                None => tombs.get(sub_key(&aor, s.event, s.subscriber())).map_or(0, |t| t.ver).max(s.ver),
            };
            s.ver = Ver::next(now_ms, old, node);
            out.sub_puts.push(i);
        }
        if e.is_shared() != before.shared {
            out.apps_changed = true;
        }
        for a in e.apps_mut().iter_mut() {
            if a.inc == 0 {
                continue;
            }
            if let Some(j) = before.apps.iter().position(|b| b.index == a.index && b.inc == a.inc) {
                seen_apps[j] = true;
                let b = &before.apps[j];
                if app_content(a) != b.content || a.ver != b.ver {
                    a.ver = Ver::next(now_ms, a.ver.max(b.ver), node);
                    out.apps_changed = true;
                }
            }
        }
    } else if before.shared {
        out.apps_changed = true;
    }
    for (j, b) in before.subs.iter().enumerate().filter(|(j, _)| !seen_subs[*j]) {
        let ver = Ver::next(now_ms, b.ver, node);
        tomb_keep_newer(tombs, sub_key(&aor, b.event, &b.subscriber), Tomb { inc: 0, ver });
        out.sub_dels.push((j, ver));
    }
    // releases first: a new seize at the same index comes after them
    for b in before.apps.iter().zip(seen_apps.iter()).filter(|(_, seen)| !**seen).map(|(b, _)| b) {
        out.apps_changed = true;
        if b.inc == 0 {
            continue; // never replicated
        }
        let ver = Ver::next(now_ms, b.ver, node);
        tomb_keep_newer(tombs, app_key(&aor, b.index), Tomb { inc: b.inc, ver });
        out.tombstones.push(Tombstone { index: b.index, inc: Ver::unpack(b.inc), ver: Ver::unpack(ver) });
    }
    if let Some(e) = g.entry_mut() {
        for a in e.apps_mut().iter_mut().filter(|a| a.inc == 0) {
            // a new seize: after every release of this index known here
            let wm = tombs.get(app_key(&aor, a.index)).map_or(0, |t| t.inc);
            a.pred = wm;
            a.inc = Ver::next(now_ms, wm, node);
            a.ver = a.inc;
            out.apps_changed = true;
        }
    }
    out
}

fn app_rec<A: Allocator + Clone>(a: &Appearance<A>) -> AppearanceRec<'_> {
    let s = a.strs();
    AppearanceRec {
        index: a.index,
        state: a.state,
        flags: a.flags,
        mtime: a.mtime,
        ctime: a.ctime,
        inc: Ver::unpack(a.inc),
        ver: Ver::unpack(a.ver),
        owner: s[0],
        callee: s[1],
        uri: s[2],
        dialog: DialogRef { call_id: s[3], from_tag: s[4], to_tag: s[5] },
        prev_owner: s[6],
        prev_callee: s[7],
        prev_dialog: DialogRef { call_id: s[8], from_tag: s[9], to_tag: s[10] },
    }
}

/// The `AOR_APPS` record of an entry: every appearance, each preceded by
/// its release watermark (a tombstone of its `pred`), and the releases in
/// `tombstones`.
pub fn aor_apps_record<'a, A: Allocator + Clone>(e: &'a AorEntry<A>, mut tombstones: Vec<Tombstone>) -> Record<'a> {
    for a in e.apps().iter().filter(|a| a.pred != 0) {
        if !tombstones.iter().any(|t| t.index == a.index && t.inc.pack() >= a.pred) {
            tombstones.push(Tombstone { index: a.index, inc: Ver::unpack(a.pred), ver: Ver::unpack(a.pred) });
        }
    }
    Record::AorApps(AorApps {
        aor: e.aor(),
        shared: e.is_shared(),
        shared_ver: Ver::ZERO,
        apps: e.apps().iter().map(app_rec).collect(),
        tombstones,
    })
}

/// The `SUB_PUT` record of a subscription whose whole To-tag is `to_tag`
/// (see [`to_tags`]).
pub fn sub_put_record<'a, A: Allocator>(aor: &'a [u8], s: &'a Subscription<A>, to_tag: &'a [u8]) -> Record<'a> {
    let ver = Ver::unpack(s.ver);
    Record::SubPut(SubPut { sub: s.to_rec_tagged(aor, to_tag), origin: ver.node, ver })
}

/// The whole To-tags of `subs` into `tags` (cleared first), one per
/// subscription in order, for records that borrow them.
pub fn to_tags<'s, A: Allocator + 's>(subs: impl Iterator<Item = &'s Subscription<A>>, tags: &mut Vec<Vec<u8>>) {
    tags.clear();
    tags.extend(subs.map(|s| s.to_tag().to_vec()));
}

/// The records of what [`stamp`] found, borrowed from the AoR, the
/// snapshot and `tags` (room for the rebuilt To-tags).
pub fn records<'a, A: Allocator + Clone, L: RawLock>(
    before: &'a Snapshot,
    g: &'a AorGuard<'_, A, L>,
    st: &Stamped,
    tags: &'a mut Vec<Vec<u8>>,
) -> Vec<Record<'a>> {
    let mut out = Vec::new();
    let entry = g.entry();
    if let Some(e) = entry {
        let put = || st.sub_puts.iter().filter_map(|&i| e.subs.get(i));
        to_tags(put(), tags);
        let tags: &'a Vec<Vec<u8>> = tags;
        for (s, tag) in put().zip(tags) {
            out.push(sub_put_record(e.aor(), s, tag));
        }
    }
    for &(j, ver) in &st.sub_dels {
        if let Some(b) = before.subs.get(j) {
            out.push(Record::SubDel(SubDel { aor: g.aor(), event: b.event, subscriber: &b.subscriber, ver: Ver::unpack(ver) }));
        }
    }
    if st.apps_changed {
        match entry {
            Some(e) => out.push(aor_apps_record(e, st.tombstones.clone())),
            None => out.push(Record::AorApps(AorApps {
                aor: g.aor(),
                shared: false,
                shared_ver: Ver::ZERO,
                apps: Vec::new(),
                tombstones: st.tombstones.clone(),
            })),
        }
    }
    out
}

/// What the codec cannot check: the node ids and stamps a peer's message
/// carries, against this node's id `self_id`. Err says why, for the log.
pub fn check(m: &Message<'_>, self_id: u32) -> Result<(), String> {
    let h = &m.header;
    if h.node_id == 0 || h.node_id > MAX_NODE_ID {
        return Err(format!("node id {} out of range", h.node_id));
    }
    if h.node_id == self_id {
        return Err(format!(
            "node id {} is this node's own, from another instance (set a different dmq_node_id on each node)",
            h.node_id
        ));
    }
    // a stamp packs: a node id in range, milliseconds below 2^(64 - NODE_BITS)
    let ver_ok = |v: &Ver| v.node != 0 && v.node <= MAX_NODE_ID && v.ms < (1 << (64 - NODE_BITS));
    for r in &m.records {
        let ok = match r {
            Record::SubPut(p) => p.origin != 0 && p.origin <= MAX_NODE_ID && (p.ver.ms == 0 || ver_ok(&p.ver)),
            Record::SubDel(d) => ver_ok(&d.ver),
            Record::AorApps(a) => {
                a.apps.iter().all(|x| ver_ok(&x.inc) && ver_ok(&x.ver)) && a.tombstones.iter().all(|t| ver_ok(&t.inc))
            }
            Record::SyncReq(_) | Record::SyncChunk(_) | Record::Digest(_) => true,
        };
        if !ok {
            return Err(format!("bad node id or stamp in a {} record", codec::record_name(r.code())));
        }
    }
    Ok(())
}

/// What applying one record did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The store changed.
    Changed,
    /// The record was not newer than what this node has: nothing changed.
    Stale,
}

/// Merge a peer's `SUB_PUT`. `self_node` decides whether the copy is
/// this node's to write to its DB (its own subscription coming back in a
/// sync) or not.
pub fn apply_sub_put<A: Allocator + Clone, L: RawLock>(
    g: &mut AorGuard<'_, A, L>,
    p: &SubPut<'_>,
    self_node: u32,
    tombs: &mut impl Tombs,
) -> Result<Applied, StoreError> {
    let v = Ver::new(p.ver.ms, p.origin).pack();
    let r = &p.sub;
    match g.find_sub(r.event, r.subscriber) {
        Some(s) if s.ver >= v => return Ok(Applied::Stale),
        Some(_) => {}
        None => {
            if tombs.get(sub_key(r.aor, r.event, r.subscriber)).is_some_and(|t| t.ver >= v) {
                return Ok(Applied::Stale);
            }
        }
    }
    g.put_sub(r)?;
    if let Some(s) = g.find_sub_mut(r.event, r.subscriber) {
        s.ver = v;
        s.set_ours_to_write(node_of(v) == self_node);
    }
    Ok(Applied::Changed)
}

/// Merge a peer's `SUB_DEL`.
pub fn apply_sub_del<A: Allocator + Clone, L: RawLock>(
    g: &mut AorGuard<'_, A, L>,
    d: &SubDel<'_>,
    tombs: &mut impl Tombs,
) -> Applied {
    let taken = apply_sub_del_take(g, d, tombs);
    g.prune();
    match taken {
        Some(_) => Applied::Changed,
        None => Applied::Stale,
    }
}

/// [`apply_sub_del`], handing over the subscription it removed (None:
/// stale), for its last NOTIFY and DB delete; the caller prunes.
pub fn apply_sub_del_take<A: Allocator + Clone, L: RawLock>(
    g: &mut AorGuard<'_, A, L>,
    d: &SubDel<'_>,
    tombs: &mut impl Tombs,
) -> Option<Subscription<A>> {
    let v = d.ver.pack();
    tomb_keep_newer(tombs, sub_key(d.aor, d.event, d.subscriber), Tomb { inc: 0, ver: v });
    match g.find_sub(d.event, d.subscriber) {
        Some(s) if s.ver < v => g.take_sub(d.event, d.subscriber),
        _ => None,
    }
}

/// A seize of this node that lost to a peer's earlier one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lost {
    pub index: u32,
    /// The owner (the seizing phone's contact) of the losing incarnation.
    pub owner: Vec<u8>,
}

/// What [`apply_aor_apps`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct AppsOutcome {
    /// Some appearance changed: the group needs a NOTIFY.
    pub changed: bool,
    /// Items (appearances and tombstones) not newer than this node's.
    pub stale: u32,
    /// Conflicts this node's seizes won.
    pub won: u32,
    /// This node's seizes that lost.
    pub lost: Vec<Lost>,
}

/// Drop the live appearance at `index` if the watermark `wm` ends it: it
/// is that release or older, or it was seized without knowing of it.
fn exclude<A: Allocator + Clone, L: RawLock>(g: &mut AorGuard<'_, A, L>, index: u32, wm: u64, fresh: bool) -> bool {
    match g.entry_mut() {
        Some(e) if e.apps().get(index).is_some_and(|a| a.inc <= wm || (fresh && a.pred < wm)) => e.apps_mut().release(index),
        _ => false,
    }
}

/// Merge a peer's `AOR_APPS` (module doc for the rules). Its tombstones
/// are release watermarks: one for each release, and one before each
/// appearance naming the releases its seizer knew of (its `pred`).
pub fn apply_aor_apps<A: Allocator + Clone, L: RawLock>(
    g: &mut AorGuard<'_, A, L>,
    r: &AorApps<'_>,
    self_node: u32,
    tombs: &mut impl Tombs,
) -> Result<AppsOutcome, StoreError> {
    let mut out = AppsOutcome::default();
    let alloc = g.alloc();
    if r.shared && !g.is_shared() {
        g.entry_or_insert()?.set_shared(true);
    }
    for t in &r.tombstones {
        let key = app_key(r.aor, t.index);
        tomb_keep_newer(tombs, key, Tomb { inc: t.inc.pack(), ver: t.ver.pack() });
        let wm = tombs.get(key).map_or(0, |t| t.inc);
        let fresh = tombs.fresh(key);
        if exclude(g, t.index, wm, fresh) {
            out.changed = true;
        }
    }
    for a in &r.apps {
        let inc = a.inc.pack();
        let ver = a.ver.pack();
        let pred = r.tombstones.iter().filter(|t| t.index == a.index).map(|t| t.inc.pack()).max().unwrap_or(0);
        let key = app_key(r.aor, a.index);
        let wm = tombs.get(key).map_or(0, |t| t.inc);
        if inc <= wm || (pred < wm && tombs.fresh(key)) || pred >= inc {
            out.stale += 1;
            continue;
        }
        let local = g.entry().and_then(|e| e.apps().get(a.index)).map(|l| (l.inc, l.ver, l.owner().to_vec()));
        match local {
            Some((li, lv, _)) if li == inc && ver <= lv => {
                out.stale += 1;
                continue;
            }
            Some((li, _, _)) if li == inc => {}
            Some((li, _, owner)) => {
                // two seizes that did not see each other: the earlier wins
                if li < inc {
                    if node_of(li) == self_node {
                        out.won += 1;
                    }
                    out.stale += 1;
                    continue;
                }
                if node_of(li) == self_node {
                    out.lost.push(Lost { index: a.index, owner });
                }
            }
            None => {}
        }
        let parts = AppearanceParts {
            index: a.index,
            state: a.state,
            flags: a.flags,
            mtime: a.mtime,
            ctime: a.ctime,
            inc,
            ver,
            pred,
            strs: a.str_parts(),
        };
        let app = Appearance::from_parts(&parts, alloc.clone())?;
        g.entry_or_insert()?.apps_mut().put(app)?;
        out.changed = true;
    }
    g.prune();
    Ok(out)
}

#[cfg(test)]
mod tests;
