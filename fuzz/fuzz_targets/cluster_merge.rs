//! Cluster merge: whatever a peer sends that decodes, applying it never
//! panics, and applying it a second time changes nothing (duplicates are
//! normal on DMQ: UDP retransmissions are processed again).
#![no_main]
use std::collections::HashMap;

use allocator_api2::alloc::Global;
use libfuzzer_sys::fuzz_target;
use sca_core::cluster::codec::{decode, Record};
use sca_core::cluster::replica::{apply_aor_apps, apply_sub_del, apply_sub_put, Tomb, Tombs};
use sca_core::store::Store;
use sca_core::sync::SpinLock;

#[derive(Default)]
struct MapTombs(HashMap<u64, Tomb>);

impl Tombs for MapTombs {
    fn get(&mut self, key: u64) -> Option<Tomb> {
        self.0.get(&key).copied()
    }
    fn put(&mut self, key: u64, t: Tomb) {
        self.0.insert(key, t);
    }
}

fn apply(store: &Store<Global, SpinLock>, tombs: &mut MapTombs, records: &[Record<'_>]) {
    for r in records {
        match r {
            Record::SubPut(p) => {
                let mut g = store.lock_aor(p.sub.aor);
                let _ = apply_sub_put(&mut g, p, 1, tombs);
            }
            Record::SubDel(d) => {
                let mut g = store.lock_aor(d.aor);
                apply_sub_del(&mut g, d, tombs);
            }
            Record::AorApps(a) => {
                let mut g = store.lock_aor(a.aor);
                let _ = apply_aor_apps(&mut g, a, 1, tombs);
            }
            Record::SyncReq(_) | Record::SyncChunk(_) | Record::Digest(_) => {}
        }
    }
}

fn dump(store: &Store<Global, SpinLock>) -> Vec<String> {
    let mut out = Vec::new();
    store.for_each_aor(|e| {
        for s in e.subs().iter() {
            out.push(format!("{:?} {:?} {:?} {} {}", e.aor(), s.event(), s.subscriber(), s.ver(), s.expires()));
        }
        for a in e.apps().iter() {
            out.push(format!("{:?} {} {:?} {} {} {:?}", e.aor(), a.index, a.state, a.inc, a.ver, a.strs()));
        }
    });
    out.sort();
    out
}

fuzz_target!(|data: &[u8]| {
    let Ok(m) = decode(data) else { return };
    let store = Store::new_in(2, Global).expect("store");
    assert!(store.init_locks());
    let mut tombs = MapTombs::default();
    apply(&store, &mut tombs, &m.records);
    let once = dump(&store);
    apply(&store, &mut tombs, &m.records);
    assert_eq!(dump(&store), once, "applying a message twice changes nothing more");
});
