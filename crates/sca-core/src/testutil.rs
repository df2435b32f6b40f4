//! Builders the unit tests of the store, its edits and persistence share.

use allocator_api2::alloc::Global;

use crate::model::{EventType, SubState};
use crate::store::{Store, SubscriptionRec};
use crate::sync::SpinLock;

/// An active subscription of `who` to `aor` (expires at 1000, no index,
/// dialog `cid`/`ft`/`tt`, no route, NOTIFY CSeq 0, SUBSCRIBE CSeq 1);
/// tests change what they need with `..rec(...)`.
pub fn rec<'a>(aor: &'a [u8], who: &'a [u8], event: EventType) -> SubscriptionRec<'a> {
    SubscriptionRec {
        aor,
        subscriber: who,
        event,
        expires: 1000,
        state: SubState::Active,
        index: -1,
        call_id: b"cid",
        from_tag: b"ft",
        to_tag: b"tt",
        record_route: b"",
        notify_cseq: 0,
        subscribe_cseq: 1,
    }
}

/// A heap store of `2^log2_slots` slots with spin locks, ready to use.
pub fn store(log2_slots: u32) -> Store<Global, SpinLock> {
    let s = Store::new_in(log2_slots, Global).expect("store");
    assert!(s.init_locks());
    s
}
