//! Call appearances of one SCA AoR: the "lines" phones of the group light
//! up. An appearance exists from the moment a line is seized until it goes
//! idle again; idle lines are simply absent.
//!
//! Index rules are the C module's: indexes start at 1; "next available" is
//! the lowest index not in use; a seize of an index in use fails.

use allocator_api2::alloc::{AllocError, Allocator};
use crate::thinvec::ThinVec;

use crate::packed::Packed;
use crate::parse::appearance::AppearanceState;

/// An appearance is seized for at most this long without a call (C:
/// `SCA_APPEARANCE_STATE_SEIZED_TTL`; Polycoms resubscribe line-seizes).
pub const SEIZED_TTL: i64 = 120;
/// ... and active-pending (answered, waiting for the ACK) this long.
pub const PENDING_TTL: i64 = 35;

pub const FLAG_OWNER_PENDING: u8 = 1 << 0;
pub const FLAG_CALLEE_PENDING: u8 = 1 << 1;
/// The owner's phone stopped answering keepalive pings while this
/// appearance was in a call (subscriber liveness leaves such appearances
/// alone: the call may still be up through the other party). Cleared by
/// the appearance's next state change.
pub const FLAG_OWNER_UNREACHABLE: u8 = 1 << 2;

// indexes into Appearance::strs
const OWNER: usize = 0;
const CALLEE: usize = 1;
const URI: usize = 2;
const CALL_ID: usize = 3;
const FROM_TAG: usize = 4;
const TO_TAG: usize = 5;
const PREV_OWNER: usize = 6;
const PREV_CALLEE: usize = 7;
const PREV_CALL_ID: usize = 8;
const PREV_FROM_TAG: usize = 9;
const PREV_TO_TAG: usize = 10;
pub const N_STRS: usize = 11;

/// A SIP dialog as the SCA module identifies calls (borrowed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DialogRef<'a> {
    pub call_id: &'a [u8],
    pub from_tag: &'a [u8],
    pub to_tag: &'a [u8],
}

impl DialogRef<'_> {
    pub fn is_empty(&self) -> bool {
        self.call_id.is_empty() && self.from_tag.is_empty() && self.to_tag.is_empty()
    }
}

/// One in-use appearance. Its strings share one allocation, rebuilt when
/// one of them changes (rare: once per call event).
pub struct Appearance<A: Allocator + Clone> {
    pub index: u32,
    pub state: AppearanceState,
    pub flags: u8,
    /// Time of the last state change (seconds since the epoch).
    pub mtime: i64,
    pub ctime: i64,
    /// Cluster only: the seize that made this incarnation, as a packed
    /// [`Ver`](crate::cluster::Ver) (0: not stamped yet).
    pub inc: u64,
    /// Cluster only: the packed version of the latest change (0: none).
    pub ver: u64,
    /// Cluster only: the release watermark of this index when it was
    /// seized: every incarnation up to `pred` was known to be released.
    pub pred: u64,
    strs: Packed<A, N_STRS>,
}

/// Everything about an appearance, borrowed: what a peer node sends.
#[derive(Debug, Clone, Copy)]
pub struct AppearanceParts<'a> {
    pub index: u32,
    pub state: AppearanceState,
    pub flags: u8,
    pub mtime: i64,
    pub ctime: i64,
    pub inc: u64,
    pub ver: u64,
    pub pred: u64,
    /// owner, callee, uri, call_id, from_tag, to_tag, prev_owner,
    /// prev_callee, prev_call_id, prev_from_tag, prev_to_tag
    pub strs: [&'a [u8]; N_STRS],
}

/// Changes to an appearance's strings: `None` leaves a string as it is.
#[derive(Default, Clone, Copy)]
pub struct StrUpdate<'a> {
    pub owner: Option<&'a [u8]>,
    pub callee: Option<&'a [u8]>,
    pub uri: Option<&'a [u8]>,
    pub dialog: Option<DialogRef<'a>>,
    /// Move the current owner / callee / dialog to the `prev_*` slots
    /// before applying the new values (held-call retrieval keeps them to
    /// restore on failure).
    pub keep_previous: bool,
}

impl<A: Allocator + Clone> Appearance<A> {
    pub fn new_in(index: u32, owner: &[u8], now: i64, alloc: A) -> Result<Self, AllocError> {
        let mut parts: [&[u8]; N_STRS] = [&[]; N_STRS];
        parts[OWNER] = owner;
        Ok(Appearance {
            index,
            state: AppearanceState::Seized,
            flags: 0,
            mtime: now,
            ctime: now,
            inc: 0,
            ver: 0,
            pred: 0,
            strs: Packed::new_in(parts, alloc)?,
        })
    }

    /// An appearance exactly as `p` describes it.
    pub fn from_parts(p: &AppearanceParts<'_>, alloc: A) -> Result<Self, AllocError> {
        Ok(Appearance {
            index: p.index,
            state: p.state,
            flags: p.flags,
            mtime: p.mtime,
            ctime: p.ctime,
            inc: p.inc,
            ver: p.ver,
            pred: p.pred,
            strs: Packed::new_in(p.strs, alloc)?,
        })
    }

    /// The eleven strings, in [`AppearanceParts::strs`] order.
    pub fn strs(&self) -> [&[u8]; N_STRS] {
        core::array::from_fn(|i| self.strs.get(i))
    }

    pub fn owner(&self) -> &[u8] {
        self.strs.get(OWNER)
    }
    pub fn callee(&self) -> &[u8] {
        self.strs.get(CALLEE)
    }
    /// The `appearance-uri` value (`"Display" <sip:...>` or `<sip:...>`).
    pub fn uri(&self) -> &[u8] {
        self.strs.get(URI)
    }
    pub fn dialog(&self) -> DialogRef<'_> {
        DialogRef {
            call_id: self.strs.get(CALL_ID),
            from_tag: self.strs.get(FROM_TAG),
            to_tag: self.strs.get(TO_TAG),
        }
    }
    pub fn prev_owner(&self) -> &[u8] {
        self.strs.get(PREV_OWNER)
    }
    pub fn prev_callee(&self) -> &[u8] {
        self.strs.get(PREV_CALLEE)
    }
    pub fn prev_dialog(&self) -> DialogRef<'_> {
        DialogRef {
            call_id: self.strs.get(PREV_CALL_ID),
            from_tag: self.strs.get(PREV_FROM_TAG),
            to_tag: self.strs.get(PREV_TO_TAG),
        }
    }

    /// Same call as `call_id` / `from_tag` (the C module ignores the
    /// To-tag when it looks an appearance up by dialog).
    pub fn matches_dialog(&self, call_id: &[u8], from_tag: &[u8]) -> bool {
        self.strs.get(CALL_ID) == call_id && self.strs.get(FROM_TAG) == from_tag
    }

    pub fn set_state(&mut self, state: AppearanceState, now: i64) {
        self.state = state;
        self.flags &= !FLAG_OWNER_UNREACHABLE;
        self.mtime = now;
    }

    /// Apply `u`; on `AllocError` the appearance is unchanged.
    pub fn update_strs(&mut self, u: &StrUpdate<'_>, alloc: A) -> Result<(), AllocError> {
        let mut parts: [&[u8]; N_STRS] = core::array::from_fn(|i| self.strs.get(i));
        if u.keep_previous {
            if u.owner.is_some() && !self.owner().is_empty() {
                parts[PREV_OWNER] = self.owner();
            }
            if u.callee.is_some() && !self.callee().is_empty() {
                parts[PREV_CALLEE] = self.callee();
            }
            if u.dialog.is_some() && !self.dialog().is_empty() {
                let d = self.dialog();
                parts[PREV_CALL_ID] = d.call_id;
                parts[PREV_FROM_TAG] = d.from_tag;
                parts[PREV_TO_TAG] = d.to_tag;
            }
        }
        if let Some(o) = u.owner {
            parts[OWNER] = o;
        }
        if let Some(c) = u.callee {
            parts[CALLEE] = c;
        }
        if let Some(uri) = u.uri {
            parts[URI] = uri;
        }
        if let Some(d) = u.dialog {
            parts[CALL_ID] = d.call_id;
            parts[FROM_TAG] = d.from_tag;
            parts[TO_TAG] = d.to_tag;
        }
        let strs = Packed::new_in(parts, alloc)?;
        self.strs = strs;
        Ok(())
    }

    pub fn shm_bytes(&self) -> usize {
        core::mem::size_of::<Self>() + self.strs.heap_len()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeizeError {
    /// The requested index is in use (the C module answers 480).
    Unavailable,
    NoMemory,
}

/// The appearances of one AoR, sorted by index.
pub struct Appearances<A: Allocator + Clone> {
    list: ThinVec<Appearance<A>, A>,
}

impl<A: Allocator + Clone> crate::thinvec::HeaderExtra<A> for Appearances<A> {
    fn new_in(alloc: &A) -> Self {
        Appearances::new_in(alloc.clone())
    }
}

impl<A: Allocator + Clone> Appearances<A> {
    pub fn new_in(alloc: A) -> Self {
        Appearances { list: ThinVec::new_in(alloc) }
    }


    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Appearance<A>> {
        self.list.iter()
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Appearance<A>> {
        self.list.iter_mut()
    }

    /// The lowest index >= 1 not in use.
    pub fn next_free_index(&self) -> u32 {
        let mut want = 1;
        for a in self.list.iter() {
            if a.index > want {
                break;
            }
            if a.index == want {
                want += 1;
            }
        }
        want
    }

    pub fn get(&self, index: u32) -> Option<&Appearance<A>> {
        self.list.iter().find(|a| a.index == index)
    }

    pub fn get_mut(&mut self, index: u32) -> Option<&mut Appearance<A>> {
        self.list.iter_mut().find(|a| a.index == index)
    }

    pub fn by_dialog_mut(&mut self, call_id: &[u8], from_tag: &[u8]) -> Option<&mut Appearance<A>> {
        self.list.iter_mut().find(|a| a.matches_dialog(call_id, from_tag))
    }

    pub fn by_dialog(&self, call_id: &[u8], from_tag: &[u8]) -> Option<&Appearance<A>> {
        self.list.iter().find(|a| a.matches_dialog(call_id, from_tag))
    }

    /// Seize `index` (or the next free one for `None`) for `owner`, in state
    /// seized. Returns the index.
    pub fn seize(&mut self, index: Option<u32>, owner: &[u8], now: i64, alloc: A) -> Result<u32, SeizeError> {
        let idx = match index {
            Some(i) if i > 0 => i,
            _ => self.next_free_index(),
        };
        let pos = match self.list.binary_search_by_key(&idx, |a| a.index) {
            Ok(_) => return Err(SeizeError::Unavailable),
            Err(pos) => pos,
        };
        let app = Appearance::new_in(idx, owner, now, alloc).map_err(|_| SeizeError::NoMemory)?;
        self.list.try_insert(pos, app).map_err(|_| SeizeError::NoMemory)?;
        Ok(idx)
    }

    /// Put `app` at its index, replacing what is there (cluster merge).
    /// On `AllocError` nothing changed.
    pub fn put(&mut self, app: Appearance<A>) -> Result<(), AllocError> {
        match self.list.binary_search_by_key(&app.index, |a| a.index) {
            Ok(pos) => {
                self.list[pos] = app;
                Ok(())
            }
            Err(pos) => self.list.try_insert(pos, app).map_err(|_| AllocError),
        }
    }

    /// Release `index`; true if it was in use.
    pub fn release(&mut self, index: u32) -> bool {
        match self.list.iter().position(|a| a.index == index) {
            Some(p) => {
                self.list.remove(p);
                true
            }
            None => false,
        }
    }

    /// Release the appearance of a call; its index if there was one.
    pub fn release_by_dialog(&mut self, call_id: &[u8], from_tag: &[u8]) -> Option<u32> {
        let p = self.list.iter().position(|a| a.matches_dialog(call_id, from_tag))?;
        Some(self.list.remove(p).index)
    }

    /// Release every appearance `owner` holds; how many.
    pub fn release_owner(&mut self, owner: &[u8]) -> usize {
        let before = self.list.len();
        self.list.retain(|a| a.owner() != owner);
        before - self.list.len()
    }

    /// The owner `owner` is gone (its phone stopped answering): release
    /// the appearances it has only seized, flag those in a call
    /// ([`FLAG_OWNER_UNREACHABLE`]). Returns (released indexes, flagged).
    pub fn owner_gone(&mut self, owner: &[u8]) -> (std::vec::Vec<u32>, usize) {
        let mut released = std::vec::Vec::new();
        let mut flagged = 0;
        self.list.retain_mut(|a| {
            if a.owner() != owner {
                return true;
            }
            if a.state == AppearanceState::Seized {
                released.push(a.index);
                return false;
            }
            if a.flags & FLAG_OWNER_UNREACHABLE == 0 {
                a.flags |= FLAG_OWNER_UNREACHABLE;
                flagged += 1;
            }
            true
        });
        (released, flagged)
    }

    /// Drop appearances stuck in seized (for [`SEIZED_TTL`]) or
    /// active-pending (for [`PENDING_TTL`]); how many were dropped.
    pub fn purge_stale(&mut self, now: i64) -> usize {
        self.purge_stale_after(now, SEIZED_TTL).len()
    }

    /// [`Appearances::purge_stale`] with appearances stuck in seized for
    /// `seized_ttl` seconds (the `seized_ttl` module parameter); the
    /// indexes dropped.
    pub fn purge_stale_after(&mut self, now: i64, seized_ttl: i64) -> std::vec::Vec<u32> {
        let mut gone = std::vec::Vec::new();
        self.list.retain(|a| {
            let ttl = match a.state {
                AppearanceState::Seized => seized_ttl,
                AppearanceState::ActivePending => PENDING_TTL,
                _ => return true,
            };
            let keep = now - a.mtime < ttl;
            if !keep {
                gone.push(a.index);
            }
            keep
        });
        gone
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
    fn seize_takes_the_lowest_free_index_and_refuses_taken_ones() {
        let mut a = apps();
        assert_eq!(a.seize(None, b"sip:a1", 0, Global), Ok(1));
        assert_eq!(a.seize(Some(3), b"sip:a2", 0, Global), Ok(3));
        assert_eq!(a.seize(None, b"sip:a2", 0, Global), Ok(2));
        assert_eq!(a.seize(None, b"sip:a2", 0, Global), Ok(4));
        assert_eq!(a.seize(Some(3), b"sip:a1", 0, Global), Err(SeizeError::Unavailable));
        // index 0 means "any", like the C module
        assert_eq!(a.seize(Some(0), b"sip:a1", 0, Global), Ok(5));
        let idx: std::vec::Vec<u32> = a.iter().map(|x| x.index).collect();
        assert_eq!(idx, [1, 2, 3, 4, 5]);
        assert!(a.release(2));
        assert!(!a.release(2));
        assert_eq!(a.next_free_index(), 2);
        assert_eq!(a.get(3).map(|x| x.owner()), Some(&b"sip:a2"[..]));
    }

    #[test]
    fn update_keeps_previous_values_when_asked() {
        let mut a = apps();
        a.seize(Some(1), b"sip:a1", 0, Global).expect("seize");
        let app = a.get_mut(1).expect("app");
        let d1 = DialogRef { call_id: b"c1", from_tag: b"f1", to_tag: b"t1" };
        app.update_strs(&StrUpdate { dialog: Some(d1), callee: Some(b"sip:b"), ..Default::default() }, Global)
            .expect("update");
        assert_eq!(app.dialog(), d1);
        assert_eq!(app.owner(), b"sip:a1");
        let d2 = DialogRef { call_id: b"c2", from_tag: b"f2", to_tag: b"" };
        app.update_strs(
            &StrUpdate { owner: Some(b"sip:a2"), dialog: Some(d2), keep_previous: true, ..Default::default() },
            Global,
        )
        .expect("update");
        assert_eq!(app.owner(), b"sip:a2");
        assert_eq!(app.prev_owner(), b"sip:a1");
        assert_eq!(app.dialog(), d2);
        assert_eq!(app.prev_dialog(), d1);
        assert_eq!(app.callee(), b"sip:b");
        assert!(app.matches_dialog(b"c2", b"f2"));
        assert!(!app.matches_dialog(b"c1", b"f1"));
    }

    #[test]
    fn release_by_dialog_and_owner() {
        let mut a = apps();
        a.seize(Some(1), b"sip:a1", 0, Global).expect("seize");
        a.seize(Some(2), b"sip:a2", 0, Global).expect("seize");
        a.seize(Some(3), b"sip:a1", 0, Global).expect("seize");
        let d = DialogRef { call_id: b"c", from_tag: b"f", to_tag: b"" };
        a.get_mut(2).expect("2").update_strs(&StrUpdate { dialog: Some(d), ..Default::default() }, Global).expect("u");
        assert_eq!(a.release_by_dialog(b"c", b"f"), Some(2));
        assert_eq!(a.release_by_dialog(b"c", b"f"), None);
        assert_eq!(a.release_owner(b"sip:a1"), 2);
        assert!(a.is_empty());
    }

    #[test]
    fn a_gone_owner_loses_seized_lines_and_its_calls_are_flagged() {
        let mut a = apps();
        a.seize(Some(1), b"sip:dead", 0, Global).expect("seize");
        a.seize(Some(2), b"sip:dead", 0, Global).expect("seize");
        a.seize(Some(3), b"sip:alive", 0, Global).expect("seize");
        a.seize(Some(4), b"sip:dead", 0, Global).expect("seize");
        a.get_mut(2).expect("2").set_state(AppearanceState::Active, 5);
        a.get_mut(4).expect("4").set_state(AppearanceState::Held, 5);
        assert_eq!(a.owner_gone(b"sip:dead"), (vec![1], 2));
        assert_eq!(a.iter().map(|x| x.index).collect::<std::vec::Vec<_>>(), [2, 3, 4]);
        assert_ne!(a.get(2).expect("2").flags & FLAG_OWNER_UNREACHABLE, 0);
        assert_eq!(a.get(3).expect("3").flags & FLAG_OWNER_UNREACHABLE, 0);
        // flagged once; a later state change clears the flag
        assert_eq!(a.owner_gone(b"sip:dead"), (vec![], 0));
        a.get_mut(4).expect("4").set_state(AppearanceState::Active, 9);
        assert_eq!(a.get(4).expect("4").flags & FLAG_OWNER_UNREACHABLE, 0);
        assert_eq!(a.owner_gone(b"sip:nobody"), (vec![], 0));
    }

    #[test]
    fn purge_drops_only_stuck_seized_and_pending() {
        let mut a = apps();
        a.seize(Some(1), b"o", 0, Global).expect("seize");
        a.seize(Some(2), b"o", 0, Global).expect("seize");
        a.seize(Some(3), b"o", 0, Global).expect("seize");
        a.get_mut(2).expect("2").set_state(AppearanceState::ActivePending, 100);
        a.get_mut(3).expect("3").set_state(AppearanceState::Active, 0);
        assert_eq!(a.purge_stale(119), 0);
        assert_eq!(a.purge_stale(120), 1); // seized since 0
        assert_eq!(a.purge_stale(134), 0);
        assert_eq!(a.purge_stale(135), 1); // pending since 100
        assert_eq!(a.purge_stale(10_000), 0); // active stays
        assert_eq!(a.iter().map(|x| x.index).collect::<std::vec::Vec<_>>(), [3]);
    }

    #[test]
    fn the_seized_ttl_can_be_shorter_and_the_purge_names_the_lines() {
        let mut a = apps();
        a.seize(Some(3), b"o", 0, Global).expect("seize");
        a.seize(Some(5), b"o", 2, Global).expect("seize");
        assert!(a.purge_stale_after(3, 4).is_empty());
        assert_eq!(a.purge_stale_after(4, 4), [3]);
        assert_eq!(a.purge_stale_after(6, 4), [5]);
        assert!(a.is_empty());
    }
}
