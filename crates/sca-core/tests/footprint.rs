//! Where a stored subscription's shared memory goes: a model of `make
//! bench`'s workload 1 (one call-info subscription per AoR, SIPp's
//! strings, sl's To-tags) and of a group of 5 phones per AoR, through a
//! counting allocator that rounds each block as Kamailio's q_malloc does
//! (8 bytes with Debian's debug build; each block also costs a fragment
//! header that is not in `used`). Prints the figures (`--nocapture`) and
//! checks them against the target (200 B measured, so 185 B
//! modelled).

use std::alloc::Layout;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicIsize, Ordering};

use allocator_api2::alloc::{AllocError, Allocator, Global};

use sca_core::model::{EventType, SubState};
use sca_core::store::{Store, SubscriptionRec};
use sca_core::sync::SpinLock;

/// q_malloc's ROUNDTO with DBG_QM_MALLOC on x86_64.
const ROUNDTO: usize = 8;

/// Global, counting live bytes (rounded as q_malloc rounds) and blocks;
/// zero-sized like the module's shm allocator, so the records measured
/// have the module's sizes (one test in this file: the counters are
/// global).
#[derive(Clone, Copy, Default)]
struct Counting;

static BYTES: AtomicIsize = AtomicIsize::new(0);
static BLOCKS: AtomicIsize = AtomicIsize::new(0);

impl Counting {
    fn live(&self) -> (isize, isize) {
        (BYTES.load(Ordering::SeqCst), BLOCKS.load(Ordering::SeqCst))
    }
}

fn rounded(layout: Layout) -> isize {
    layout.size().max(1).div_ceil(ROUNDTO) as isize * ROUNDTO as isize
}

// SAFETY: forwards to Global, only counting.
unsafe impl Allocator for Counting {
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        let p = Global.allocate(layout)?;
        BYTES.fetch_add(rounded(layout), Ordering::SeqCst);
        BLOCKS.fetch_add(1, Ordering::SeqCst);
        Ok(p)
    }
    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        BYTES.fetch_sub(rounded(layout), Ordering::SeqCst);
        BLOCKS.fetch_sub(1, Ordering::SeqCst);
        // SAFETY: ptr/layout come from allocate above, per the trait contract.
        unsafe { Global.deallocate(ptr, layout) }
    }
}

/// An sl To-tag of this "Kamailio" (5.6): the same 33-byte prefix, a CRC
/// suffix.
fn sl_tag(i: usize) -> String {
    format!(
        "9575f611751ecf79aab75be446a1af16.{:08x}",
        i.wrapping_mul(2654435761) & 0xffff_ffff
    )
}

/// (shm bytes, blocks) per subscription: `aors` AoRs with `phones` phones
/// each, SIPp-like strings, a 2^9-slot table (the module's default).
fn model(aors: usize, phones: usize) -> (f64, f64) {
    let a = Counting;
    let store: Store<Counting, SpinLock> = Store::new_in(9, a).expect("store");
    assert!(store.init_locks());
    let before = a.live();
    let pid = 24376;
    for i in 1..=aors {
        let aor = format!("sip:{i}@127.0.0.1");
        for p in 0..phones {
            let n = i * phones + p;
            let who = format!("sip:{i}@127.0.0.1:{}", 40_000 + p);
            let call_id = format!("{n}-{pid}@127.0.0.1");
            let from_tag = format!("{pid}b{n}");
            let to_tag = sl_tag(n);
            let r = SubscriptionRec {
                aor: aor.as_bytes(),
                subscriber: who.as_bytes(),
                event: EventType::CallInfo,
                expires: 2_000_000_000,
                state: SubState::Active,
                index: -1,
                call_id: call_id.as_bytes(),
                from_tag: from_tag.as_bytes(),
                to_tag: to_tag.as_bytes(),
                record_route: b"",
                notify_cseq: 1,
                subscribe_cseq: 1,
            };
            let mut g = store.lock_aor(aor.as_bytes());
            let mut cs = sca_core::change::ChangeSet::new();
            let mut e = g.edit_or_insert(&mut cs).expect("entry");
            e.put_sub(&r).expect("stored");
        }
    }
    let after = a.live();
    let n = (aors * phones) as f64;
    let per = (
        (after.0 - before.0) as f64 / n,
        (after.1 - before.1) as f64 / n,
    );
    // every To-tag reads back whole
    let mut k = 0;
    store.for_each_aor(|e| {
        for s in e.subs() {
            assert_eq!(s.to_tag().len(), 41);
            assert!(s.to_tag() == s.to_tag().to_vec()[..]);
            k += 1;
        }
    });
    assert_eq!(k, aors * phones);
    per
}

#[test]
fn workload_1_and_groups_of_five_fit_the_target() {
    for (aors, phones) in [(1000, 1), (5000, 1), (20000, 1), (20000, 5)] {
        let (bytes, blocks) = model(aors, phones);
        println!(
            "{aors} AoRs x {phones} phones: {bytes:.1} B and {blocks:.2} blocks per subscription"
        );
        // the model reads ~20 B below what workload 1 measures (q_malloc
        // reuses freed fragments up to ~110 B larger without splitting):
        // 185 here keeps the measured figure under the 200 B target
        assert!(
            bytes <= 185.0,
            "{aors}x{phones}: {bytes:.1} B per subscription"
        );
    }
}
