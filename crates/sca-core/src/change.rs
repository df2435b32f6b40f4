//! Edits of one AoR that say what they changed.
//!
//! An [`AorEdit`] is an [`AorEntry`] (under its slot lock) together with a
//! [`ChangeSet`]: its methods change the entry and record in the change
//! set what the rest of the world has to hear of it: subscriptions that
//! ended (with the state their last NOTIFY carries), subscriptions ended
//! in place, appearances released, and whether the call-info group is due
//! a NOTIFY (also when nothing changed: the C module re-NOTIFYs unchanged
//! states in places). The module's effects (NOTIFYs, DB deletes,
//! replication, liveness) are derived from the change set in one place;
//! the code that decides state never sends or marks anything itself.
//!
//! Persistence marks follow the change: a subscription ended in place is
//! touched (its row is rewritten), an ended one is handed over whole, so
//! the caller sees whether its row needs a DB delete.

use allocator_api2::alloc::Allocator;
use std::vec::Vec;

use crate::model::{EventType, SubState};
use crate::parse::appearance::AppearanceState;
use crate::store::{AorEntry, Subscription};

/// A subscription removed from its AoR.
pub struct Ended<A: Allocator> {
    /// As it was, with the state (and expiry) its last NOTIFY carries.
    pub sub: Subscription<A>,
    /// A last NOTIFY is due (by the subscription's origin node).
    pub notify: bool,
}

/// What an edit of one AoR changed.
pub struct ChangeSet<A: Allocator> {
    /// Subscriptions removed, in the order they were.
    pub ended: Vec<Ended<A>>,
    /// Subscriptions ended in place (terminated, kept until the purge), by
    /// (event, subscriber): each is due a NOTIFY with its new state.
    pub notify_subs: Vec<(EventType, Vec<u8>)>,
    /// Appearance indexes released.
    pub released: Vec<u32>,
    /// The call-info subscribers are due a NOTIFY of the appearances.
    pub notify_group: bool,
}

impl<A: Allocator> Default for ChangeSet<A> {
    fn default() -> Self {
        ChangeSet { ended: Vec::new(), notify_subs: Vec::new(), released: Vec::new(), notify_group: false }
    }
}

impl<A: Allocator> ChangeSet<A> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Nothing for anyone to hear of.
    pub fn is_empty(&self) -> bool {
        self.ended.is_empty() && self.notify_subs.is_empty() && self.released.is_empty() && !self.notify_group
    }
}

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

impl<A: Allocator + Clone> AorEdit<'_, A> {
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
        if self.e.apps.release(index) {
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
        let idx = self.e.apps.release_by_dialog(call_id, from_tag)?;
        self.cs.released.push(idx);
        self.cs.notify_group = true;
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
                if self.e.apps.get(idx).is_some_and(|a| a.state == AppearanceState::Seized) {
                    self.release(idx);
                }
            }
        }
        let stale = self.e.apps.purge_stale(now);
        if stale > 0 {
            self.cs.notify_group = true;
        }
        stale
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
        e.apps.seize(Some(1), b"a", 50, Global).expect("seize");
        e.apps.seize(Some(2), b"b", 50, Global).expect("seize");
        e.apps.get_mut(2).expect("2").set_state(AppearanceState::Active, 50);
        let mut cs = ChangeSet::new();
        assert_eq!(e.edit(&mut cs).expire(20), 0);
        // both line-seizes ended with a last NOTIFY; only the seized line went
        assert_eq!(cs.ended.len(), 2);
        assert!(cs.ended.iter().all(|x| x.notify && x.sub.state == SubState::TerminatedTimeout && x.sub.expires == 0));
        assert_eq!(cs.released, [1]);
        assert!(cs.notify_group);
        assert_eq!(e.apps.iter().map(|a| a.index).collect::<Vec<_>>(), [2]);
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
        e.apps.seize(Some(1), b"a", 50, Global).expect("seize");
        e.apps.seize(Some(2), b"b", 50, Global).expect("seize");
        let mut cs = ChangeSet::new();
        let mut ed = e.edit(&mut cs);
        assert_eq!(ed.end_sub(EventType::LineSeize, b"a", SubState::TerminatedNoresource, false), Some(1));
        assert_eq!(ed.end_sub(EventType::LineSeize, b"a", SubState::TerminatedNoresource, false), None);
        assert!(ed.entry().apps.get(1).is_some(), "kept: the call goes on");
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
        e.apps.seize(Some(1), b"dead", 50, Global).expect("seize");
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
