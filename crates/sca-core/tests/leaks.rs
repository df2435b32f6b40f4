//! Leak check of everything the module keeps in Kamailio's shared memory.
//!
//! The store, appearances and keepalive table are generic over their
//! allocator; in the module it is shm, here a counting allocator. Full
//! lifecycles (subscribe, refresh, seize, call-state updates with held-call
//! retrieval strings, release, unsubscribe, unregister; keepalive add,
//! pings, remove) must give every byte back: after a warm-up (hash tables
//! keep their capacity, as they do in shm) the live bytes return to the
//! same figure after every round, and to zero once the store is dropped.

use std::alloc::Layout;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Arc;

use allocator_api2::alloc::{AllocError, Allocator, Global};

use sca_core::change::ChangeSet;
use sca_core::appearance::{DialogRef, StrUpdate};
use sca_core::keepalive::{Config as KaConfig, Now, PingResult, Table};
use sca_core::model::{EventType, SubState};
use sca_core::parse::appearance::AppearanceState;
use sca_core::store::{Store, SubscriptionRec};
use sca_core::sync::SpinLock;

/// Global, counting live bytes and allocations.
#[derive(Clone, Default)]
struct Counting {
    bytes: Arc<AtomicIsize>,
    blocks: Arc<AtomicIsize>,
}

impl Counting {
    fn live(&self) -> (isize, isize) {
        (self.bytes.load(Ordering::SeqCst), self.blocks.load(Ordering::SeqCst))
    }
}

// SAFETY: forwards to Global, only counting.
unsafe impl Allocator for Counting {
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        let p = Global.allocate(layout)?;
        self.bytes.fetch_add(layout.size() as isize, Ordering::SeqCst);
        self.blocks.fetch_add(1, Ordering::SeqCst);
        Ok(p)
    }
    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        self.bytes.fetch_sub(layout.size() as isize, Ordering::SeqCst);
        self.blocks.fetch_sub(1, Ordering::SeqCst);
        // SAFETY: ptr/layout come from allocate above, per the trait contract.
        unsafe { Global.deallocate(ptr, layout) }
    }
}

fn rec<'a>(aor: &'a [u8], who: &'a [u8], event: EventType, expires: i64, index: i32) -> SubscriptionRec<'a> {
    SubscriptionRec {
        aor,
        subscriber: who,
        event,
        expires,
        state: SubState::Active,
        index,
        call_id: b"subscribe-call-id-0123456789@10.0.0.1",
        from_tag: b"from-tag-abcdef",
        to_tag: b"to-tag-123456",
        record_route: b"<sip:10.0.0.254;lr>",
        notify_cseq: 1,
        subscribe_cseq: 1,
    }
}

/// One round over `n` AoRs of everything a phone group does to the store.
fn sca_round(store: &Store<Counting, SpinLock>, n: usize, round: usize) {
    for i in 0..n {
        let aor = format!("sip:{i}@example.com");
        let a1 = format!("sip:{i}@10.0.0.1:5060;transport=udp;r={round}");
        let a2 = format!("sip:{i}@10.0.0.2:5060");
        let (aor, a1, a2) = (aor.as_bytes(), a1.as_bytes(), a2.as_bytes());
        let mut g = store.lock_aor(aor);
        let mut cs = ChangeSet::new();
        let mut ed = g.edit_or_insert(&mut cs).expect("entry");
        ed.put_sub(&rec(aor, a1, EventType::CallInfo, 1000, -1)).expect("subscribe");
        ed.put_sub(&rec(aor, a2, EventType::CallInfo, 1000, -1)).expect("subscribe");
        // refresh with longer strings (reallocates)
        let mut r = rec(aor, a1, EventType::CallInfo, 2000, -1);
        r.record_route = b"<sip:10.0.0.254;lr>,<sip:10.0.0.253;lr;transport=tcp>";
        ed.put_sub(&r).expect("refresh");
        ed.put_sub(&rec(aor, a1, EventType::LineSeize, 1015, 1)).expect("line-seize");
        let alloc = ed.alloc();
        let idx = ed.seize(None, a1, 10).expect("seize");
        let app = ed.app_mut(idx).expect("seized");
        let d = DialogRef { call_id: b"call-1@10.0.0.1", from_tag: b"ft1", to_tag: b"" };
        app.update_strs(&StrUpdate { owner: None, callee: Some(b"sip:bob@example.com"), uri: Some(b"\"Bob\" <sip:bob@example.com>"), dialog: Some(d), keep_previous: false }, alloc.clone())
            .expect("progressing");
        app.set_state(AppearanceState::Progressing, 11);
        app.set_state(AppearanceState::Active, 12);
        app.set_state(AppearanceState::Held, 13);
        // retrieval by the other phone keeps the previous owner and dialog
        let d2 = DialogRef { call_id: b"call-2@10.0.0.2", from_tag: b"ft2", to_tag: b"tt2" };
        app.update_strs(&StrUpdate { owner: Some(a2), callee: None, uri: None, dialog: Some(d2), keep_previous: true }, alloc)
            .expect("retrieve");
        app.set_state(AppearanceState::Active, 14);
        // a second line seized, then released by dialog and by owner
        let idx2 = ed.seize(Some(7), a2, 15).expect("seize 7");
        assert!(ed.release(idx2));
        assert_eq!(ed.release_by_dialog(b"call-2@10.0.0.2", b"ft2"), Some(idx));
        ed.seize(None, a2, 16).expect("seize again");
        assert_eq!(ed.release_owner(a2), 1);
        // unsubscribe all, unregister
        ed.end_sub(EventType::LineSeize, a1, SubState::TerminatedTimeout, false).expect("a1 line-seize");
        ed.end_sub(EventType::CallInfo, a1, SubState::TerminatedTimeout, false).expect("a1 call-info");
        ed.end_sub(EventType::CallInfo, a2, SubState::TerminatedTimeout, false).expect("a2 call-info");
        ed.unregister();
        drop(cs);
        g.prune();
        assert!(g.entry().is_none(), "the AoR entry is gone");
    }
}

#[test]
fn sca_store_gives_every_byte_back() {
    let alloc = Counting::default();
    {
        let store: Store<Counting, SpinLock> = Store::new_in(4, alloc.clone()).expect("store");
        assert!(store.init_locks());
        sca_round(&store, 300, 0);
        let warm = alloc.live();
        for round in 1..6 {
            sca_round(&store, 300, round);
            assert_eq!(alloc.live(), warm, "live (bytes, blocks) after round {round}");
        }
        // a store with subscriptions still in it is freed whole on drop
        let mut g = store.lock_aor(b"sip:left@example.com");
        let mut cs = ChangeSet::new();
        g.edit_or_insert(&mut cs).expect("entry").put_sub(&rec(b"sip:left@example.com", b"sip:x@10.0.0.9", EventType::CallInfo, 9, -1)).expect("put");
    }
    assert_eq!(alloc.live(), (0, 0), "dropping the store frees everything");
}

#[test]
fn keepalive_table_gives_every_byte_back() {
    let alloc = Counting::default();
    {
        let mut t: Table<Counting, ()> = Table::new_in(KaConfig::default(), alloc.clone());
        let round = |t: &mut Table<Counting, ()>, r: u64| {
            for i in 0..200u32 {
                let uri = format!("sip:10.1.{}.{}:5060;transport=udp", i / 250, i % 250);
                t.add(uri.as_bytes(), b"drouting", 0, None, Some(()), Now { wall: r as i64, mono_ms: 100_000 * r }).expect("add");
            }
            let mut pings = Vec::new();
            t.due(Now { wall: r as i64 + 100, mono_ms: 100_000 * r + 60_000 }, usize::MAX, &mut pings);
            assert_eq!(pings.len(), 200, "every destination is due");
            for (k, p) in pings.iter().enumerate() {
                let res = if k % 2 == 0 { PingResult::Reply(200) } else { PingResult::Local(408) };
                t.on_result(p.id, p.seq, res, Now { wall: r as i64 + 101, mono_ms: 100_000 * r + 61_000 });
            }
            while t.pop_event().is_some() {}
            for i in 0..200u32 {
                let uri = format!("sip:10.1.{}.{}:5060;transport=udp", i / 250, i % 250);
                assert!(t.remove(uri.as_bytes(), b"drouting").is_some());
            }
            assert!(t.is_empty());
        };
        round(&mut t, 1);
        let warm = alloc.live();
        for r in 2..6 {
            round(&mut t, r);
            assert_eq!(alloc.live(), warm, "live (bytes, blocks) after round {r}");
        }
    }
    assert_eq!(alloc.live(), (0, 0));
}
