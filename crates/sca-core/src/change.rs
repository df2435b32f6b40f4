//! Edits of one AoR that say what they changed.
//!
//! An [`AorEdit`] is an [`AorEntry`] (under its slot lock) together with a
//! [`ChangeSet`]: its methods are the only way code outside this crate
//! changes an AoR (the entry's fields are private), and each records in
//! the change set what the rest of the world has to hear of it:
//! subscriptions added, refreshed, ended (with the state their last NOTIFY
//! carries) or ended in place; appearances seized, changed or released;
//! and whether the call-info group is due a NOTIFY (also when nothing
//! changed: the C module re-NOTIFYs unchanged states in places). The module's effects (NOTIFYs, DB deletes,
//! replication, liveness) are derived from the change set in one place;
//! the code that decides state never sends or marks anything itself.
//!
//! Persistence marks follow the change: a subscription ended in place is
//! touched (its row is rewritten), an ended one is handed over whole, so
//! the caller sees whether its row needs a DB delete.

use allocator_api2::alloc::Allocator;
use std::vec::Vec;

use allocator_api2::alloc::AllocError;

use crate::appearance::{Appearance, Appearances, DialogRef, SeizeError, StrUpdate, SEIZED_TTL};
use crate::model::{EventType, SubState};
use crate::parse::appearance::AppearanceState;
use crate::store::{AorEntry, StoreError, Stored, Subscription, SubscriptionRec};

/// A subscription removed from its AoR.
pub struct Ended<A: Allocator> {
    /// As it was, with the state (and expiry) its last NOTIFY carries.
    pub sub: Subscription<A>,
    /// A last NOTIFY is due (by the subscription's origin node).
    pub notify: bool,
}

impl<A: Allocator> Ended<A> {
    /// A subscription a peer deleted, as ended here: line-seize
    /// `noresource` (as when a call's progress ends it locally), call-info
    /// `deactivated`; a last NOTIFY is due unless it was already
    /// terminated.
    pub fn deleted_by_peer(mut sub: Subscription<A>) -> Self {
        let notify = !sub.state.is_terminated();
        if notify {
            sub.state = match sub.event {
                EventType::LineSeize => SubState::TerminatedNoresource,
                EventType::CallInfo => SubState::TerminatedDeactivated,
            };
            sub.expires = 0;
        }
        Ended { sub, notify }
    }
}

/// What an edit of one AoR changed.
pub struct ChangeSet<A: Allocator> {
    /// Subscriptions stored new (none before, or a new dialog replacing
    /// the old one: a phone that subscribes again from scratch), by
    /// (event, subscriber).
    pub added: Vec<(EventType, Vec<u8>)>,
    /// Subscriptions refreshed in their dialog (or unsubscribed in it:
    /// see their state), by (event, subscriber).
    pub refreshed: Vec<(EventType, Vec<u8>)>,
    /// Subscriptions removed, in the order they were.
    pub ended: Vec<Ended<A>>,
    /// Subscriptions ended in place (terminated, kept until the purge), by
    /// (event, subscriber): each is due a NOTIFY with its new state.
    pub notify_subs: Vec<(EventType, Vec<u8>)>,
    /// Appearance indexes seized.
    pub seized: Vec<u32>,
    /// Appearance indexes whose state or strings changed.
    pub changed_apps: Vec<u32>,
    /// Appearance indexes released (also by the stale purge, and all of
    /// them when the AoR stops being shared).
    pub released: Vec<u32>,
    /// The call-info subscribers are due a NOTIFY of the appearances.
    pub notify_group: bool,
}

impl<A: Allocator> Default for ChangeSet<A> {
    fn default() -> Self {
        ChangeSet {
            added: Vec::new(),
            refreshed: Vec::new(),
            ended: Vec::new(),
            notify_subs: Vec::new(),
            seized: Vec::new(),
            changed_apps: Vec::new(),
            released: Vec::new(),
            notify_group: false,
        }
    }
}

impl<A: Allocator> ChangeSet<A> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Nothing for anyone to hear of.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.refreshed.is_empty()
            && self.ended.is_empty()
            && self.notify_subs.is_empty()
            && self.seized.is_empty()
            && self.changed_apps.is_empty()
            && self.released.is_empty()
            && !self.notify_group
    }
}

/// Why [`AorEdit::callee_answered`] failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerError {
    /// No line could be seized for the callee.
    Seize(SeizeError),
    /// Out of memory for the appearance's strings.
    NoMemory,
}

/// No appearance matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotFound;

/// An AoR being changed; see the module documentation.
pub struct AorEdit<'e, A: Allocator + Clone> {
    e: &'e mut AorEntry<A>,
    cs: &'e mut ChangeSet<A>,
}

impl<A: Allocator + Clone> AorEntry<A> {
    /// Change this AoR, recording what changed in `cs`.
    pub fn edit<'e>(&'e mut self, cs: &'e mut ChangeSet<A>) -> AorEdit<'e, A> {
        AorEdit { e: self, cs }
    }
}

impl<A: Allocator + Clone, L: crate::sync::RawLock> crate::store::AorGuard<'_, A, L> {
    /// Change this AoR, creating its entry if absent, with room for one
    /// subscription in the allocation that holds the AoR (most edits that
    /// create an entry store one: no second allocation when they do). An
    /// entry left empty is dropped again by
    /// [`AorGuard::prune`](crate::store::AorGuard::prune).
    pub fn edit_or_insert<'e>(&'e mut self, cs: &'e mut ChangeSet<A>) -> Result<AorEdit<'e, A>, StoreError> {
        Ok(self.entry_or_insert_for(1)?.edit(cs))
    }
}

impl<'e, A: Allocator + Clone> AorEdit<'e, A> {
    /// The AoR as it is now.
    pub fn entry(&self) -> &AorEntry<A> {
        self.e
    }

    /// What this edit changed so far.
    pub fn changes(&self) -> &ChangeSet<A> {
        self.cs
    }

    /// Tell the call-info group the appearances as they are (changed or
    /// not).
    pub fn notify_group(&mut self) {
        self.cs.notify_group = true;
    }

    /// Release appearance `index`; the group is told. False if it was not
    /// in use.
    pub fn release(&mut self, index: u32) -> bool {
        if self.e.apps_mut().release(index) {
            self.cs.released.push(index);
            self.cs.notify_group = true;
            true
        } else {
            false
        }
    }

    /// Release the appearance of a call (by Call-ID and From-tag); the
    /// group is told. Its index, None if there was none.
    pub fn release_by_dialog(&mut self, call_id: &[u8], from_tag: &[u8]) -> Option<u32> {
        let idx = self.e.apps_mut().release_by_dialog(call_id, from_tag)?;
        self.cs.released.push(idx);
        self.cs.notify_group = true;
        Some(idx)
    }

    /// A call ends (BYE): release its appearance, `index` if that is in
    /// use, else the one of its dialog (`call_id`, `tag`), but only if it
    /// still belongs to this call (same Call-ID: the line may have been
    /// taken over by a retrieval). Err when no appearance was found;
    /// Ok(None) when the one found is another call's.
    pub fn release_call(&mut self, index: u32, call_id: &[u8], tag: &[u8]) -> Result<Option<u32>, NotFound> {
        let apps = self.e.apps();
        let idx = if index > 0 && apps.get(index).is_some() {
            index
        } else {
            apps.by_dialog(call_id, tag).map(|a| a.index).ok_or(NotFound)?
        };
        let same_call = apps.get(idx).is_some_and(|a| a.dialog().call_id == call_id);
        Ok((same_call && self.release(idx)).then_some(idx))
    }

    /// A call from a shared line was answered (a 200 to its INVITE): the
    /// line's appearance (found by Call-ID and From-tag) becomes active
    /// unless it is on hold, and takes the confirmed dialog `d`, the
    /// answering phone `callee` and (a new call) the `uri` it shows. The
    /// group is told, also when no line is involved (as the C module
    /// does). The index, None without an appearance. Err: out of memory
    /// for the strings (the state changed, the group is not told).
    pub fn caller_answered(&mut self, d: DialogRef<'_>, callee: &[u8], uri: Option<&[u8]>, now: i64) -> Result<Option<u32>, AllocError> {
        let Some(idx) = self.app_index_by_dialog(d.call_id, d.from_tag) else {
            self.notify_group();
            return Ok(None);
        };
        let alloc = self.alloc();
        if let Some(app) = self.app_mut(idx) {
            if !app.state.is_held() {
                app.set_state(AppearanceState::Active, now);
            }
            app.update_strs(&StrUpdate { dialog: Some(d), callee: Some(callee), uri, ..Default::default() }, alloc)?;
        }
        self.notify_group();
        Ok(Some(idx))
    }

    /// A shared callee answered (C: `sca_call_info_uri_update`): the
    /// appearance `index` (if in use) or the call's (by Call-ID and
    /// From-tag of `d`) takes `state` (unless unknown), the dialog and
    /// the answering phone `owner`; without one, a line is seized for the
    /// call (`index`, or the lowest free one), active-pending, showing the
    /// caller (`caller`, shown as `caller_uri`). The group is not told
    /// here (the caller's side does it). The index.
    #[allow(clippy::too_many_arguments)]
    pub fn callee_answered(
        &mut self,
        index: u32,
        state: AppearanceState,
        d: DialogRef<'_>,
        owner: &[u8],
        caller: &[u8],
        caller_uri: &[u8],
        now: i64,
    ) -> Result<u32, AnswerError> {
        let alloc = self.alloc();
        let existing = if self.e.apps().get(index).is_some() { Some(index) } else { self.app_index_by_dialog(d.call_id, d.from_tag) };
        if let Some(idx) = existing {
            if let Some(app) = self.app_mut(idx) {
                if state != AppearanceState::Unknown {
                    app.set_state(state, now);
                }
                app.update_strs(&StrUpdate { dialog: Some(d), owner: Some(owner), ..Default::default() }, alloc)
                    .map_err(|_| AnswerError::NoMemory)?;
            }
            return Ok(idx);
        }
        let idx = self.seize((index > 0).then_some(index), owner, now).map_err(AnswerError::Seize)?;
        let app = self.app_mut(idx).ok_or(AnswerError::NoMemory)?;
        app.set_state(AppearanceState::ActivePending, now);
        let u = StrUpdate {
            dialog: Some(d),
            owner: Some(owner),
            callee: Some(caller),
            uri: (!caller_uri.is_empty()).then_some(caller_uri),
            ..Default::default()
        };
        app.update_strs(&u, alloc).map_err(|_| AnswerError::NoMemory)?;
        Ok(idx)
    }

    /// The end-to-end ACK of an answered call (by Call-ID and tag): an
    /// appearance still active-pending (a shared callee's) becomes active.
    /// Its index, None if there was none to change.
    pub fn confirm_pending(&mut self, call_id: &[u8], tag: &[u8], now: i64) -> Option<u32> {
        let idx = self
            .e
            .apps()
            .by_dialog(call_id, tag)
            .filter(|a| a.state == AppearanceState::ActivePending)
            .map(|a| a.index)?;
        self.app_mut(idx)?.set_state(AppearanceState::Active, now);
        Some(idx)
    }

    /// End the `event` subscription of `subscriber` with `state` (expiry
    /// 0, a last NOTIFY due); with `release`, a line-seize frees the line
    /// it seized and the group is told. Returns the ended subscription's
    /// appearance index, None when there was no such subscription
    /// (C: `sca_subscription_terminate`).
    pub fn end_sub(&mut self, event: EventType, subscriber: &[u8], state: SubState, release: bool) -> Option<i32> {
        let i = self.e.find_sub(event, subscriber)?;
        let mut sub = self.e.subs.swap_remove(i);
        sub.expires = 0;
        sub.state = state;
        let index = sub.index;
        self.cs.ended.push(Ended { sub, notify: true });
        if release && index > 0 {
            self.release(index as u32);
        }
        Some(index)
    }

    /// The purge at `now`: subscriptions that expired end (`timeout`, a
    /// last NOTIFY unless already terminated); an expired line-seize frees
    /// the line it only seized; appearances stuck in seized or
    /// active-pending go. Every node does this for its copies of the AoR,
    /// at the same absolute times. Returns how many stale appearances
    /// went.
    pub fn expire(&mut self, now: i64) -> usize {
        self.expire_with(now, SEIZED_TTL)
    }

    /// [`AorEdit::expire`] with lines stuck in seized for `seized_ttl`
    /// seconds (the `seized_ttl` module parameter) purged: released, and
    /// the group told.
    pub fn expire_with(&mut self, now: i64, seized_ttl: i64) -> usize {
        let mut i = 0;
        while i < self.e.subs.len() {
            if self.e.subs[i].expires > now {
                i += 1;
                continue;
            }
            let mut sub = self.e.subs.swap_remove(i);
            let live = !sub.state.is_terminated();
            if live {
                sub.state = SubState::TerminatedTimeout;
                sub.expires = 0;
            }
            let index = sub.index;
            let event = sub.event;
            self.cs.ended.push(Ended { sub, notify: live });
            if live && event == EventType::LineSeize && index > 0 {
                let idx = index as u32;
                if self.e.apps().get(idx).is_some_and(|a| a.state == AppearanceState::Seized) {
                    self.release(idx);
                }
            }
        }
        let stale = self.e.apps_mut().purge_stale_after(now, seized_ttl);
        let n = stale.len();
        if n > 0 {
            self.cs.notify_group = true;
            self.cs.released.extend(stale);
        }
        n
    }

    /// Store `r` (new, or replacing the subscription of its event and
    /// subscriber): recorded as added (none before, or another dialog) or
    /// refreshed (same dialog). Marks the AoR shared. On `NoMemory`
    /// nothing changed.
    pub fn put_sub(&mut self, r: &SubscriptionRec<'_>) -> Result<Stored, StoreError> {
        let same_dialog = self.e.find_sub(r.event, r.subscriber).is_some_and(|i| self.e.subs[i].same_dialog(r));
        let stored = self.e.put_sub(r)?;
        let key = (r.event, r.subscriber.to_vec());
        if same_dialog {
            self.cs.refreshed.push(key);
        } else {
            self.cs.added.push(key);
        }
        Ok(stored)
    }

    /// A NOTIFY of subscription `i` is being sent: its CSeq goes on (the
    /// row is rewritten). The subscription as it is now, None if there is
    /// no such. Effects' bookkeeping: nothing for anyone else to hear of.
    pub fn notify_sent(&mut self, i: usize) -> Option<&Subscription<A>> {
        let sub = self.e.subs.get_mut(i)?;
        sub.count_notify();
        Some(sub)
    }

    /// Our own subscription came back from a peer (after a restart): our
    /// NOTIFYs since its last SUBSCRIBE were not replicated, so its CSeq
    /// jumps past what this node had sent (`sent_before`) and what the
    /// peer knew.
    pub fn resume_notify_cseq(&mut self, event: EventType, subscriber: &[u8], sent_before: u32) {
        if let Some(i) = self.e.find_sub(event, subscriber) {
            let sub = &mut self.e.subs[i];
            sub.notify_cseq = sub.notify_cseq.max(sent_before).wrapping_add(crate::cluster::ORIGIN_CSEQ_JUMP);
        }
    }

    /// The allocator appearances' strings go to (for
    /// [`Appearance::update_strs`]).
    pub fn alloc(&self) -> A {
        self.e.subs.allocator().clone()
    }

    /// Seize a line for `owner`: `index`, or the lowest free one. The
    /// index seized. The group is not told here (the caller knows when).
    pub fn seize(&mut self, index: Option<u32>, owner: &[u8], now: i64) -> Result<u32, SeizeError> {
        let alloc = self.alloc();
        let idx = self.e.apps_mut().seize(index, owner, now, alloc)?;
        self.cs.seized.push(idx);
        Ok(idx)
    }

    /// Appearance `index`, to change its state or strings (recorded as
    /// changed). None if not in use.
    pub fn app_mut(&mut self, index: u32) -> Option<&mut Appearance<A>> {
        let app = self.e.apps_mut().get_mut(index)?;
        if !self.cs.changed_apps.contains(&index) {
            self.cs.changed_apps.push(index);
        }
        Some(app)
    }

    /// [`AorEdit::app_mut`] for the rest of the edit's borrow (the edit
    /// itself is done).
    pub fn into_app_mut(self, index: u32) -> Option<&'e mut Appearance<A>> {
        let app = self.e.apps_mut().get_mut(index)?;
        if !self.cs.changed_apps.contains(&index) {
            self.cs.changed_apps.push(index);
        }
        Some(app)
    }

    /// The index of the appearance of the call with `call_id` and
    /// `from_tag` (its dialog as stored), if any.
    pub fn app_index_by_dialog(&self, call_id: &[u8], from_tag: &[u8]) -> Option<u32> {
        self.e.apps().by_dialog(call_id, from_tag).map(|a| a.index)
    }

    /// [`AorEdit::app_mut`] of the appearance of a call (by Call-ID and
    /// From-tag).
    pub fn app_by_dialog_mut(&mut self, call_id: &[u8], from_tag: &[u8]) -> Option<&mut Appearance<A>> {
        let idx = self.app_index_by_dialog(call_id, from_tag)?;
        self.app_mut(idx)
    }

    /// Release every line `owner` holds (a phone that rebooted); the group
    /// is told if there was any. How many.
    pub fn release_owner(&mut self, owner: &[u8]) -> usize {
        let idx: Vec<u32> = self.e.apps().iter().filter(|a| a.owner() == owner).map(|a| a.index).collect();
        let n = self.e.apps_mut().release_owner(owner);
        if n > 0 {
            self.cs.released.extend(idx);
            self.cs.notify_group = true;
        }
        n
    }

    /// The AoR is a shared appearance (an operator's RPC seize).
    pub fn set_shared(&mut self) {
        self.e.set_shared(true);
    }

    /// The AoR stops being a shared appearance (C:
    /// `sca_appearance_unregister`): its appearances go too. Nobody is
    /// told (no call-info subscriber is left to tell).
    pub fn unregister(&mut self) {
        self.e.set_shared(false);
        let gone: Vec<u32> = self.e.apps().iter().map(|a| a.index).collect();
        self.cs.released.extend(gone);
        *self.e.apps_mut() = Appearances::new_in(self.alloc());
    }

    /// The phone at `contact` is gone (subscriber liveness): its
    /// subscriptions end (call-info ones with a last NOTIFY
    /// `deactivated`), the lines it only seized are released, its
    /// appearances in a call are flagged and kept. Returns (subscriptions
    /// ended, lines released, appearances flagged).
    pub fn contact_gone(&mut self, contact: &[u8]) -> (usize, usize, usize) {
        let gone = self.e.contact_gone(contact);
        let counts = (gone.ended.len(), gone.released.len(), gone.flagged);
        for mut sub in gone.ended {
            let notify = sub.event == EventType::CallInfo && !sub.state.is_terminated();
            if notify {
                sub.state = SubState::TerminatedDeactivated;
            }
            self.cs.ended.push(Ended { sub, notify });
        }
        if !gone.released.is_empty() {
            self.cs.notify_group = true;
        }
        self.cs.released.extend(gone.released);
        counts
    }

    /// End in place the subscriptions `pick` picks (`deactivated`, expiry
    /// 0, each NOTIFYed; the purge removes them, as the C module does).
    /// Returns their (event, subscriber) in order.
    pub fn deactivate(&mut self, mut pick: impl FnMut(&Subscription<A>) -> bool) -> Vec<(EventType, Vec<u8>)> {
        let mut out = Vec::new();
        for sub in self.e.subs.iter_mut() {
            if !pick(sub) {
                continue;
            }
            sub.state = SubState::TerminatedDeactivated;
            sub.expires = 0;
            sub.touch();
            out.push((sub.event, sub.subscriber().to_vec()));
        }
        self.cs.notify_subs.extend(out.iter().cloned());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Store, SubscriptionRec};
    use crate::sync::SpinLock;
    use allocator_api2::alloc::Global;

    const AOR: &[u8] = b"sip:line@x";

    fn rec<'a>(who: &'a [u8], event: EventType, expires: i64, index: i32) -> SubscriptionRec<'a> {
        SubscriptionRec { expires, index, notify_cseq: 3, ..crate::testutil::rec(AOR, who, event) }
    }

    fn store() -> Store<Global, SpinLock> {
        crate::testutil::store(2)
    }

    #[test]
    fn an_expired_line_seize_ends_with_timeout_and_frees_only_a_seized_line() {
        let s = store();
        let mut g = s.lock_aor(AOR);
        g.put_sub(&rec(b"a", EventType::CallInfo, 100, -1)).expect("put");
        g.put_sub(&rec(b"a", EventType::LineSeize, 10, 1)).expect("put");
        g.put_sub(&rec(b"b", EventType::LineSeize, 10, 2)).expect("put");
        let e = g.entry_mut().expect("entry");
        e.apps_mut().seize(Some(1), b"a", 50, Global).expect("seize");
        e.apps_mut().seize(Some(2), b"b", 50, Global).expect("seize");
        e.apps_mut().get_mut(2).expect("2").set_state(AppearanceState::Active, 50);
        let mut cs = ChangeSet::new();
        assert_eq!(e.edit(&mut cs).expire(20), 0);
        // both line-seizes ended with a last NOTIFY; only the seized line went
        assert_eq!(cs.ended.len(), 2);
        assert!(cs.ended.iter().all(|x| x.notify && x.sub.state == SubState::TerminatedTimeout && x.sub.expires == 0));
        assert_eq!(cs.released, [1]);
        assert!(cs.notify_group);
        assert_eq!(e.apps().iter().map(|a| a.index).collect::<Vec<_>>(), [2]);
        assert_eq!(e.subs.len(), 1);
        // nothing more to expire: an empty change set
        let mut cs = ChangeSet::new();
        e.edit(&mut cs).expire(20);
        assert!(cs.is_empty());
    }

    #[test]
    fn a_terminated_subscription_expires_without_a_last_notify() {
        let s = store();
        let mut g = s.lock_aor(AOR);
        g.put_sub(&rec(b"a", EventType::CallInfo, 100, -1)).expect("put");
        let e = g.entry_mut().expect("entry");
        let mut cs = ChangeSet::new();
        assert_eq!(e.edit(&mut cs).deactivate(|_| true), [(EventType::CallInfo, b"a".to_vec())]);
        assert_eq!(cs.notify_subs.len(), 1);
        assert!(!cs.notify_group && cs.ended.is_empty());
        assert_eq!(e.subs[0].state, SubState::TerminatedDeactivated);
        assert!(e.subs[0].is_dirty());
        let mut cs = ChangeSet::new();
        e.edit(&mut cs).expire(0);
        assert_eq!(cs.ended.len(), 1);
        assert!(!cs.ended[0].notify, "already told when it was deactivated");
        assert!(!cs.notify_group);
    }

    #[test]
    fn ending_a_line_seize_may_release_its_line_and_says_so() {
        let s = store();
        let mut g = s.lock_aor(AOR);
        g.put_sub(&rec(b"a", EventType::LineSeize, 100, 1)).expect("put");
        g.put_sub(&rec(b"b", EventType::LineSeize, 100, 2)).expect("put");
        let e = g.entry_mut().expect("entry");
        e.apps_mut().seize(Some(1), b"a", 50, Global).expect("seize");
        e.apps_mut().seize(Some(2), b"b", 50, Global).expect("seize");
        let mut cs = ChangeSet::new();
        let mut ed = e.edit(&mut cs);
        assert_eq!(ed.end_sub(EventType::LineSeize, b"a", SubState::TerminatedNoresource, false), Some(1));
        assert_eq!(ed.end_sub(EventType::LineSeize, b"a", SubState::TerminatedNoresource, false), None);
        assert!(ed.entry().apps().get(1).is_some(), "kept: the call goes on");
        assert_eq!(ed.end_sub(EventType::LineSeize, b"b", SubState::TerminatedNoresource, true), Some(2));
        assert_eq!(cs.ended.len(), 2);
        assert!(cs.ended.iter().all(|x| x.notify && x.sub.state == SubState::TerminatedNoresource));
        assert_eq!(cs.released, [2]);
        assert!(cs.notify_group);
    }

    #[test]
    fn a_gone_contact_ends_its_subscriptions_and_releases_its_seized_lines() {
        let s = store();
        let mut g = s.lock_aor(AOR);
        g.put_sub(&rec(b"dead", EventType::CallInfo, 100, -1)).expect("put");
        g.put_sub(&rec(b"dead", EventType::LineSeize, 100, 1)).expect("put");
        g.put_sub(&rec(b"alive", EventType::CallInfo, 100, -1)).expect("put");
        let e = g.entry_mut().expect("entry");
        e.apps_mut().seize(Some(1), b"dead", 50, Global).expect("seize");
        let mut cs = ChangeSet::new();
        assert_eq!(e.edit(&mut cs).contact_gone(b"dead"), (2, 1, 0));
        assert_eq!(cs.released, [1]);
        assert!(cs.notify_group);
        let notified: Vec<EventType> = cs.ended.iter().filter(|x| x.notify).map(|x| x.sub.event).collect();
        assert_eq!(notified, [EventType::CallInfo], "only call-info gets a last NOTIFY");
        let mut cs = ChangeSet::new();
        assert_eq!(e.edit(&mut cs).contact_gone(b"nobody"), (0, 0, 0));
        assert!(cs.is_empty());
    }

    #[test]
    fn a_bye_releases_its_own_call_only_and_an_ack_confirms_a_pending_line() {
        use crate::appearance::{DialogRef, StrUpdate};
        let s = store();
        let mut g = s.lock_aor(AOR);
        g.put_sub(&rec(b"a", EventType::CallInfo, 100, -1)).expect("put");
        let e = g.entry_mut().expect("entry");
        let mut cs = ChangeSet::new();
        let mut ed = e.edit(&mut cs);
        for (idx, cid) in [(1, &b"call-1"[..]), (2, b"call-2")] {
            ed.seize(Some(idx), b"a", 0).expect("seize");
            let alloc = ed.alloc();
            let app = ed.app_mut(idx).expect("app");
            let d = DialogRef { call_id: cid, from_tag: b"ft", to_tag: b"tt" };
            app.update_strs(&StrUpdate { dialog: Some(d), ..Default::default() }, alloc).expect("strs");
            app.set_state(AppearanceState::ActivePending, 1);
        }
        assert_eq!(cs.seized, [1, 2]);
        assert_eq!(cs.changed_apps, [1, 2]);
        let mut cs = ChangeSet::new();
        let mut ed = e.edit(&mut cs);
        assert_eq!(ed.confirm_pending(b"call-1", b"ft", 5), Some(1));
        assert_eq!(ed.confirm_pending(b"call-1", b"ft", 6), None, "already active");
        assert_eq!(ed.entry().apps().get(1).expect("1").state, AppearanceState::Active);
        // index 2 named, but it is call-2's: kept
        assert_eq!(ed.release_call(2, b"call-1", b"ft"), Ok(None));
        // no index: found by dialog
        assert_eq!(ed.release_call(0, b"call-1", b"ft"), Ok(Some(1)));
        assert_eq!(ed.release_call(0, b"call-1", b"ft"), Err(NotFound));
        assert_eq!(ed.release_call(2, b"call-2", b"other-tag"), Ok(Some(2)));
        assert_eq!(cs.released, [1, 2]);
        assert!(cs.notify_group);
    }

    #[test]
    fn an_answered_call_shows_on_both_shared_lines() {
        let s = store();
        let mut g = s.lock_aor(AOR);
        let mut cs = ChangeSet::new();
        let mut ed = g.edit_or_insert(&mut cs).expect("entry");
        ed.set_shared();
        // the caller's line: seized, the INVITE's dialog (no To-tag yet)
        let idx = ed.seize(Some(1), b"sip:a@1", 0).expect("seize");
        let alloc = ed.alloc();
        let early = DialogRef { call_id: b"cid", from_tag: b"ft", to_tag: b"" };
        ed.app_mut(idx).expect("1").update_strs(&StrUpdate { dialog: Some(early), ..Default::default() }, alloc).expect("strs");
        let d = DialogRef { call_id: b"cid", from_tag: b"ft", to_tag: b"tt" };
        assert_eq!(ed.caller_answered(d, b"sip:b@2", Some(b"<sip:b@x>"), 3), Ok(Some(1)));
        let app = ed.entry().apps().get(1).expect("1");
        assert_eq!((app.state, app.callee(), app.uri(), app.dialog()), (AppearanceState::Active, &b"sip:b@2"[..], &b"<sip:b@x>"[..], d));
        // no line involved: the group is told anyway
        let other = DialogRef { call_id: b"other", from_tag: b"ft", to_tag: b"tt" };
        assert_eq!(ed.caller_answered(other, b"sip:b@2", None, 3), Ok(None));
        // a held line stays held
        ed.app_mut(1).expect("1").set_state(AppearanceState::Held, 4);
        assert_eq!(ed.caller_answered(d, b"sip:b@2", None, 5), Ok(Some(1)));
        assert_eq!(ed.entry().apps().get(1).expect("1").state, AppearanceState::Held);
        assert!(cs.notify_group);

        // the callee's side: no appearance yet: one is seized, active-pending
        let mut cs = ChangeSet::new();
        let mut ed = g.edit_or_insert(&mut cs).expect("entry");
        let d2 = DialogRef { call_id: b"cid2", from_tag: b"ft2", to_tag: b"tt2" };
        let got = ed.callee_answered(0, AppearanceState::Unknown, d2, b"sip:c@3", b"sip:z@y", b"<sip:z@y>", 6);
        assert_eq!(got, Ok(2), "the lowest free index");
        let app = ed.entry().apps().get(2).expect("2");
        assert_eq!((app.state, app.owner(), app.callee(), app.uri()), (AppearanceState::ActivePending, &b"sip:c@3"[..], &b"sip:z@y"[..], &b"<sip:z@y>"[..]));
        // again (a retransmitted 200): the same appearance, found by dialog
        assert_eq!(ed.callee_answered(0, AppearanceState::Active, d2, b"sip:c@4", b"", b"", 7), Ok(2));
        let app = ed.entry().apps().get(2).expect("2");
        assert_eq!((app.state, app.owner()), (AppearanceState::Active, &b"sip:c@4"[..]));
        // an index in use by another call is taken as named (C's rule)
        assert_eq!(ed.callee_answered(1, AppearanceState::Unknown, d2, b"sip:c@4", b"", b"", 8), Ok(1));
        assert_eq!(cs.seized, [2]);
        assert!(!cs.notify_group, "the caller's side tells the group");
        // a line that cannot be seized
        let mut cs = ChangeSet::new();
        let mut ed = g.edit_or_insert(&mut cs).expect("entry");
        let d3 = DialogRef { call_id: b"cid3", from_tag: b"ft3", to_tag: b"tt3" };
        ed.seize(Some(5), b"sip:q@9", 9).expect("seize 5");
        assert_eq!(ed.callee_answered(5, AppearanceState::Unknown, d3, b"x", b"", b"", 9), Ok(5), "5 is in use: updated, not seized");
    }

    #[test]
    fn a_subscription_stored_again_is_refreshed_in_its_dialog_and_added_in_a_new_one() {
        let s = store();
        let mut g = s.lock_aor(AOR);
        let mut cs = ChangeSet::new();
        let mut ed = g.edit_or_insert(&mut cs).expect("entry");
        let first = rec(b"a", EventType::CallInfo, 100, -1);
        assert_eq!(ed.put_sub(&first), Ok(Stored::Inserted));
        assert_eq!(ed.put_sub(&SubscriptionRec { expires: 200, ..first.clone() }), Ok(Stored::Replaced));
        assert_eq!(ed.put_sub(&SubscriptionRec { call_id: b"new-dialog", ..first.clone() }), Ok(Stored::Replaced));
        assert!(ed.entry().is_shared());
        let key = (EventType::CallInfo, b"a".to_vec());
        assert_eq!(cs.added, [key.clone(), key.clone()]);
        assert_eq!(cs.refreshed, [key]);
        assert!(!cs.notify_group, "storing alone tells nobody");
    }

    #[test]
    fn unregistering_drops_the_lines_and_the_empty_entry_goes() {
        let s = store();
        let mut g = s.lock_aor(AOR);
        let mut cs = ChangeSet::new();
        let mut ed = g.edit_or_insert(&mut cs).expect("entry");
        ed.set_shared();
        ed.seize(None, b"a", 0).expect("seize");
        ed.unregister();
        assert!(!ed.entry().is_shared() && ed.entry().apps().is_empty());
        assert_eq!(cs.released, [1]);
        g.prune();
        assert!(g.entry().is_none());
    }

    #[test]
    fn a_group_notify_can_be_asked_for_without_a_change() {
        let s = store();
        let mut g = s.lock_aor(AOR);
        g.put_sub(&rec(b"a", EventType::CallInfo, 100, -1)).expect("put");
        let e = g.entry_mut().expect("entry");
        let mut cs = ChangeSet::new();
        let mut ed = e.edit(&mut cs);
        assert!(!ed.release(7));
        assert_eq!(ed.release_by_dialog(b"cid", b"ft"), None);
        ed.notify_group();
        assert!(cs.notify_group && cs.released.is_empty() && cs.ended.is_empty());
    }
}
