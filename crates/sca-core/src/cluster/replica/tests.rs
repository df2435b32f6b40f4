//! Simulated nodes: each has a store and tombstones; local operations are
//! captured into messages, which are delivered to the other nodes in
//! various orders, with duplicates.

use std::collections::HashMap;

use allocator_api2::alloc::Global;

use super::*;
use crate::cluster::codec::{self, Header, Kind};
use crate::parse::appearance::AppearanceState;
use crate::store::{Store, SubscriptionRec};
use crate::sync::SpinLock;

/// Tombstones in a map; `aged` plays time: every one is past the
/// freshness window (the module's half time to live).
#[derive(Default)]
struct MapTombs(HashMap<u64, Tomb>, bool);

impl Tombs for MapTombs {
    fn get(&mut self, key: u64) -> Option<Tomb> {
        self.0.get(&key).copied()
    }
    fn put(&mut self, key: u64, t: Tomb) {
        self.0.insert(key, t);
    }
    fn fresh(&mut self, key: u64) -> bool {
        self.0.contains_key(&key) && !self.1
    }
}

struct Node {
    id: u32,
    store: Store<Global, SpinLock>,
    tombs: MapTombs,
    now: u64,
    seq: u32,
    won: u32,
    lost: Vec<Lost>,
}

const AOR: &[u8] = b"sip:line@example.com";

impl Node {
    fn new(id: u32) -> Node {
        let store = Store::new_in(2, Global).expect("store");
        assert!(store.init_locks());
        Node { id, store, tombs: MapTombs::default(), now: 1_800_000_000_000, seq: 0, won: 0, lost: Vec::new() }
    }

    /// Run `f` on the AoR as a local operation; the message it makes, if
    /// anything changed.
    fn op(&mut self, f: impl FnOnce(&mut AorGuard<'_, Global, SpinLock>)) -> Option<Vec<u8>> {
        self.now += 1;
        let mut g = self.store.lock_aor(AOR);
        let snap = Snapshot::take(g.entry());
        f(&mut g);
        let st = stamp(&snap, &mut g, self.id, self.now, &mut self.tombs);
        if st.is_empty() {
            return None;
        }
        let mut tags = Vec::new();
        let recs = records(&snap, &g, &st, &mut tags);
        self.seq += 1;
        Some(codec::encode(&Header::new(Kind::Changes, self.id, 7, self.seq), &recs).expect("encode"))
    }

    fn apply(&mut self, msg: &[u8]) {
        let m = codec::decode(msg).expect("decode");
        for r in &m.records {
            match r {
                Record::SubPut(p) => {
                    let mut g = self.store.lock_aor(p.sub.aor);
                    apply_sub_put(&mut g, p, self.id, &mut self.tombs).expect("put");
                }
                Record::SubDel(d) => {
                    let mut g = self.store.lock_aor(d.aor);
                    apply_sub_del(&mut g, d, &mut self.tombs);
                }
                Record::AorApps(a) => {
                    let mut g = self.store.lock_aor(a.aor);
                    let o = apply_aor_apps(&mut g, a, self.id, &mut self.tombs).expect("apps");
                    self.won += o.won;
                    self.lost.extend(o.lost);
                }
                _ => panic!("unexpected record"),
            }
        }
    }

    /// Everything replicated, as text: equal on nodes that agree.
    fn dump(&self) -> Vec<String> {
        let mut out = Vec::new();
        self.store.for_each_aor(|e| {
            for s in e.subs.iter() {
                out.push(format!(
                    "sub {:?} {} {:?} exp={} idx={} ver={}",
                    s.event,
                    String::from_utf8_lossy(s.subscriber()),
                    s.state,
                    s.expires,
                    s.index,
                    s.ver
                ));
            }
            for a in e.apps().iter() {
                out.push(format!(
                    "app {} {:?} {} inc={} ver={} callee={}",
                    a.index,
                    a.state,
                    String::from_utf8_lossy(a.owner()),
                    a.inc,
                    a.ver,
                    String::from_utf8_lossy(a.callee())
                ));
            }
        });
        out.sort();
        out
    }

    fn owner_of(&self, index: u32) -> Option<Vec<u8>> {
        let g = self.store.lock_aor(AOR);
        g.entry().and_then(|e| e.apps().get(index)).map(|a| a.owner().to_vec())
    }
}

fn sub<'a>(who: &'a [u8], expires: i64) -> SubscriptionRec<'a> {
    SubscriptionRec { expires, notify_cseq: 1, ..crate::testutil::rec(AOR, who, EventType::CallInfo) }
}

fn seize(idx: u32, owner: &'static [u8]) -> impl FnOnce(&mut AorGuard<'_, Global, SpinLock>) {
    move |g| {
        let alloc = g.alloc();
        if let Ok(e) = g.entry_or_insert() {
            let _ = e.apps_mut().seize(Some(idx), owner, 10, alloc);
        }
    }
}

fn release(idx: u32) -> impl FnOnce(&mut AorGuard<'_, Global, SpinLock>) {
    move |g| {
        if let Some(e) = g.entry_mut() {
            e.apps_mut().release(idx);
        }
        g.prune();
    }
}

fn set_state(idx: u32, st: AppearanceState) -> impl FnOnce(&mut AorGuard<'_, Global, SpinLock>) {
    move |g| {
        if let Some(a) = g.entry_mut().and_then(|e| e.apps_mut().get_mut(idx)) {
            a.set_state(st, 11);
        }
    }
}

#[test]
fn a_seize_and_its_call_reach_the_peer() {
    let (mut a, mut b) = (Node::new(1), Node::new(2));
    let m = a.op(|g| {
        g.put_sub(&sub(b"sip:a@1", 100)).expect("put");
    });
    b.apply(&m.expect("sub message"));
    for m in [a.op(seize(1, b"sip:a@1")), a.op(set_state(1, AppearanceState::Active))] {
        b.apply(&m.expect("message"));
    }
    assert_eq!(a.dump(), b.dump());
    assert!(b.dump().iter().any(|l| l.starts_with("app 1 Active sip:a@1")), "{:?}", b.dump());
    // the subscription is node 1's (its origin), the copy not B's to persist
    let g = b.store.lock_aor(AOR);
    let s = g.find_sub(EventType::CallInfo, b"sip:a@1").expect("copy");
    assert_eq!(node_of(s.ver), 1);
    assert!(!s.is_dirty());
}

#[test]
fn check_refuses_what_would_not_pack_or_claims_our_id() {
    let mut a = Node::new(1);
    let m = a.op(seize(1, b"sip:a@1")).expect("seize");
    let msg = codec::decode(&m).expect("decode");
    assert_eq!(check(&msg, 2), Ok(()));
    assert!(check(&msg, 1).is_err_and(|e| e.contains("this node's own")));
    let mut bad = msg.clone();
    bad.header.node_id = 0;
    assert!(check(&bad, 2).is_err_and(|e| e.contains("out of range")));
    for (node, ms) in [(0, 5), (crate::cluster::MAX_NODE_ID + 1, 5), (3, 1u64 << 44)] {
        let mut bad = msg.clone();
        if let Some(Record::AorApps(apps)) = bad.records.first_mut() {
            apps.apps[0].ver = Ver::new(ms, node);
        }
        assert!(check(&bad, 2).is_err_and(|e| e.contains("AOR_APPS")), "node {node} ms {ms}");
    }
}

#[test]
fn nothing_changed_sends_nothing() {
    let mut a = Node::new(1);
    assert!(a.op(seize(1, b"sip:a@1")).is_some());
    assert!(a.op(|_| {}).is_none());
    // a seize that fails locally changes nothing either
    assert!(a.op(seize(1, b"sip:b@2")).is_none());
}

#[test]
fn a_release_that_overtakes_its_seize_still_wins() {
    let (mut a, mut b) = (Node::new(1), Node::new(2));
    let m1 = a.op(seize(1, b"sip:a@1")).expect("seize");
    let m2 = a.op(release(1)).expect("release");
    b.apply(&m2);
    b.apply(&m1);
    b.apply(&m1);
    assert_eq!(b.owner_of(1), None);
    assert_eq!(a.dump(), b.dump());
}

#[test]
fn a_late_duplicate_update_does_not_undo_a_newer_one() {
    let (mut a, mut b) = (Node::new(1), Node::new(2));
    let m1 = a.op(seize(1, b"sip:a@1")).expect("seize");
    let m2 = a.op(set_state(1, AppearanceState::Alerting)).expect("ring");
    let m3 = a.op(set_state(1, AppearanceState::Active)).expect("answer");
    for m in [&m3, &m1, &m2, &m1, &m3, &m2] {
        b.apply(m);
    }
    assert_eq!(a.dump(), b.dump());
    assert!(b.dump().iter().any(|l| l.starts_with("app 1 Active")));
}

#[test]
fn simultaneous_seizes_resolve_to_the_earlier_then_lower_node_everywhere() {
    for (ta, tb, winner) in [(100, 100, &b"sip:a@1"[..]), (101, 100, b"sip:b@2"), (100, 101, b"sip:a@1")] {
        let (mut a, mut b, mut c) = (Node::new(1), Node::new(2), Node::new(3));
        a.now = 1_800_000_000_000 + ta;
        b.now = 1_800_000_000_000 + tb;
        let ma = a.op(seize(1, b"sip:a@1")).expect("a");
        let mb = b.op(seize(1, b"sip:b@2")).expect("b");
        a.apply(&mb);
        b.apply(&ma);
        c.apply(&mb);
        c.apply(&ma);
        for n in [&a, &b, &c] {
            assert_eq!(n.owner_of(1).as_deref(), Some(winner), "node {}", n.id);
        }
        assert_eq!(a.dump(), b.dump());
        assert_eq!(a.dump(), c.dump());
        let (w, l) = if winner == b"sip:a@1" { (&a, &b) } else { (&b, &a) };
        assert_eq!(w.won, 1);
        assert!(w.lost.is_empty());
        assert_eq!(l.lost, vec![Lost { index: 1, owner: if winner == b"sip:a@1" { b"sip:b@2".to_vec() } else { b"sip:a@1".to_vec() } }]);
        // a late duplicate of the loser changes nothing
        let loser_msg = if winner == b"sip:a@1" { &mb } else { &ma };
        let before = c.dump();
        c.apply(loser_msg);
        assert_eq!(c.dump(), before);
        // the winner releases: the loser's seize does not come back
        let a_won = winner == b"sip:a@1";
        let mr = if a_won { a.op(release(1)) } else { b.op(release(1)) }.expect("release");
        let mut all = [a, b, c];
        for n in all.iter_mut() {
            n.apply(&mr);
            n.apply(loser_msg);
            assert_eq!(n.owner_of(1), None, "node {}", n.id);
        }
    }
}

#[test]
fn a_node_that_missed_a_release_takes_the_next_seize() {
    let (mut a, mut b) = (Node::new(1), Node::new(2));
    b.apply(&a.op(seize(1, b"sip:a@1")).expect("seize"));
    let _lost_release = a.op(release(1)).expect("release");
    a.now += 5000;
    b.apply(&a.op(seize(1, b"sip:c@3")).expect("seize again"));
    assert_eq!(b.owner_of(1).as_deref(), Some(&b"sip:c@3"[..]));
    assert_eq!(a.dump(), b.dump());
}

#[test]
fn a_seize_after_its_node_forgot_the_release_is_taken_by_a_peer_that_remembers() {
    for peer_aged in [true, false] {
        let (mut a, mut b) = (Node::new(1), Node::new(2));
        b.apply(&a.op(seize(1, b"sip:a@1")).expect("seize"));
        b.apply(&a.op(release(1)).expect("release"));
        // time passes: A's tombstone is gone, B's is past its window
        a.now += 200_000;
        a.tombs.0.clear();
        b.tombs.1 = peer_aged;
        b.apply(&a.op(seize(1, b"sip:c@3")).expect("a new seize"));
        if peer_aged {
            assert_eq!(b.owner_of(1).as_deref(), Some(&b"sip:c@3"[..]));
            assert_eq!(a.dump(), b.dump());
        } else {
            // inside the window such a seize reads as one that lost to the
            // released incarnation: why the module forgets at twice the window
            assert_eq!(b.owner_of(1), None);
        }
    }
}

#[test]
fn subscriptions_last_writer_wins_and_deletes_stick() {
    let (mut a, mut b) = (Node::new(1), Node::new(2));
    let m1 = a.op(|g| {
        g.put_sub(&sub(b"sip:x@1", 100)).expect("put");
    })
    .expect("put");
    // the phone re-subscribes through node 2 (fail-over): origin moves
    b.apply(&m1);
    b.now += 10;
    let m2 = b.op(|g| {
        g.put_sub(&sub(b"sip:x@1", 200)).expect("put");
    })
    .expect("refresh");
    a.apply(&m2);
    a.apply(&m1);
    assert_eq!(a.dump(), b.dump());
    {
        let g = a.store.lock_aor(AOR);
        let s = g.find_sub(EventType::CallInfo, b"sip:x@1").expect("sub");
        assert_eq!((s.expires, node_of(s.ver)), (200, 2));
    }
    let m3 = b.op(|g| {
        g.remove_sub(EventType::CallInfo, b"sip:x@1");
    })
    .expect("delete");
    let c_order = [&m3, &m2, &m1];
    let mut c = Node::new(3);
    for m in c_order {
        c.apply(m);
    }
    a.apply(&m3);
    a.apply(&m2);
    assert_eq!(a.dump(), Vec::<String>::new());
    assert_eq!(c.dump(), Vec::<String>::new());
}

/// xorshift: a fixed, dependency-free sequence
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[test]
fn random_operations_delivered_in_any_order_converge() {
    const OWNERS: [&[u8]; 3] = [b"sip:a@1", b"sip:b@2", b"sip:c@3"];
    const STATES: [AppearanceState; 4] =
        [AppearanceState::Alerting, AppearanceState::Active, AppearanceState::Held, AppearanceState::Progressing];
    let (mut with_apps, mut conflicts) = (0, 0);
    for seed in 1..200u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let mut nodes = [Node::new(1), Node::new(2), Node::new(3)];
        for n in nodes.iter_mut() {
            n.now += rng.below(3);
        }
        let mut sent: Vec<(usize, Vec<u8>)> = Vec::new();
        for round in 0..30 {
            let at = rng.below(3) as usize;
            let idx = 1 + rng.below(3) as u32;
            let m = match rng.below(6) {
                0 | 1 => nodes[at].op(seize(idx, OWNERS[at])),
                2 => nodes[at].op(set_state(idx, STATES[rng.below(4) as usize])),
                3 => nodes[at].op(release(idx)),
                4 => {
                    let exp = 100 + rng.below(50) as i64;
                    nodes[at].op(move |g| {
                        let _ = g.put_sub(&sub(OWNERS[at], exp));
                    })
                }
                _ => nodes[at].op(move |g| {
                    g.remove_sub(EventType::CallInfo, OWNERS[at]);
                }),
            };
            if let Some(m) = m {
                sent.push((at, m));
            }
            // some messages arrive at once, out of order, or twice
            if round % 4 == 3 {
                let k = rng.below(sent.len() as u64 + 1) as usize;
                for (from, m) in sent.iter().take(k) {
                    let to = rng.below(3) as usize;
                    if to != *from {
                        nodes[to].apply(m);
                    }
                }
            }
            for n in nodes.iter_mut() {
                n.now += rng.below(2);
            }
        }
        // then everything, each node in its own shuffled order
        for (to, node) in nodes.iter_mut().enumerate() {
            let mut order: Vec<usize> = (0..sent.len()).collect();
            for i in (1..order.len()).rev() {
                order.swap(i, rng.below(i as u64 + 1) as usize);
            }
            for i in order {
                if sent[i].0 != to {
                    node.apply(&sent[i].1);
                }
            }
        }
        let d0 = nodes[0].dump();
        assert_eq!(d0, nodes[1].dump(), "seed {seed}");
        assert_eq!(d0, nodes[2].dump(), "seed {seed}");
        with_apps += usize::from(d0.iter().any(|l| l.starts_with("app")));
        conflicts += nodes.iter().map(|n| n.lost.len()).sum::<usize>();
    }
    // the runs did exercise the interesting cases
    assert!(with_apps > 20 && conflicts > 20, "{with_apps} runs ended with appearances, {conflicts} conflicts lost");
}

// ------------------------------------------------------------ anti-entropy

use crate::cluster::digest::{self, Digest};

impl Node {
    fn digest(&self) -> Digest {
        let mut d = Digest::new();
        self.store.for_each_aor(|e| d.add(e, self.id, 0, crate::appearance::SEIZED_TTL));
        d
    }

    /// The answer to a peer's digest `theirs`: the records of every AoR in
    /// a bucket that differs (one message, as the module's answer would be
    /// when it fits).
    fn answer(&self, theirs: &[u64]) -> Vec<u8> {
        let diff = self.digest().differing(theirs);
        let mut b =
            codec::Builder::new(&Header::new(Kind::Changes, self.id, 7, 1)).expect("builder");
        self.store.for_each_aor(|e| {
            if diff.contains(e.aor()) {
                for r in digest::entry_records(e, self.id, 0, crate::appearance::SEIZED_TTL, &mut Vec::new()) {
                    b.push(&r).expect("fits");
                }
            }
        });
        b.finish().expect("finish")
    }

    /// Merge a digest's answer; the corrections for the peer.
    fn merge_answer(&mut self, msg: &[u8]) -> Vec<u8> {
        self.apply(msg);
        let m = codec::decode(msg).expect("decode");
        let fixes: Vec<Record<'_>> = m
            .records
            .iter()
            .filter_map(|r| digest::correction(r, &mut self.tombs))
            .collect();
        codec::encode(&Header::new(Kind::Changes, self.id, 7, 2), &fixes).expect("encode")
    }
}

/// `x` pulls from `y`: digest, answer, merge, corrections back.
fn pull(x: &mut Node, y: &mut Node) {
    let ans = y.answer(x.digest().sums());
    let fixes = x.merge_answer(&ans);
    y.apply(&fixes);
}

#[test]
fn a_partition_heals_by_digest_exchange() {
    const OWNERS: [&[u8]; 3] = [b"sip:a@1", b"sip:b@2", b"sip:c@3"];
    let (mut differed, mut conflicts, mut fixes) = (0, 0, 0);
    for seed in 1..200u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5a5a);
        let mut nodes = [Node::new(1), Node::new(2), Node::new(3)];
        // a shared start: some subscriptions and seizes everyone knows
        let mut all = Vec::new();
        for (i, o) in OWNERS.iter().enumerate() {
            all.extend(nodes[i].op(move |g| {
                let _ = g.put_sub(&sub(o, 500));
            }));
            all.extend(nodes[i].op(seize(1 + i as u32, o)));
        }
        for (from, m) in all.iter().enumerate() {
            for (to, n) in nodes.iter_mut().enumerate() {
                if to != from {
                    n.apply(m);
                }
            }
        }
        // partition: node 1 | nodes 2 and 3; each side replicates within
        for _ in 0..20 {
            let at = rng.below(3) as usize;
            let idx = 1 + rng.below(4) as u32;
            let m = match rng.below(5) {
                0 | 1 => nodes[at].op(seize(idx, OWNERS[at])),
                2 => nodes[at].op(release(idx)),
                3 => {
                    let exp = 100 + rng.below(50) as i64;
                    nodes[at].op(move |g| {
                        let _ = g.put_sub(&sub(OWNERS[at], exp));
                    })
                }
                _ => nodes[at].op(move |g| {
                    g.remove_sub(EventType::CallInfo, OWNERS[at]);
                }),
            };
            if let (Some(m), true) = (m, at > 0) {
                let other = 3 - at;
                nodes[other].apply(&m);
            }
            for n in nodes.iter_mut() {
                n.now += rng.below(2);
            }
        }
        let before = nodes[0]
            .digest()
            .differing(nodes[1].digest().sums())
            .count();
        differed += usize::from(before > 0);
        // heal: every node pulls from every other, in some order
        let mut pairs = vec![(0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1)];
        for i in (1..pairs.len()).rev() {
            pairs.swap(i, rng.below(i as u64 + 1) as usize);
        }
        for (x, y) in pairs {
            let (lo, hi) = nodes.split_at_mut(x.max(y));
            let (nx, ny) = if x < y {
                (&mut lo[x], &mut hi[0])
            } else {
                (&mut hi[0], &mut lo[y])
            };
            let ans = ny.answer(nx.digest().sums());
            let fix = nx.merge_answer(&ans);
            fixes += usize::from(!codec::decode(&fix).expect("decode").records.is_empty());
            ny.apply(&fix);
        }
        let d0 = nodes[0].dump();
        assert_eq!(d0, nodes[1].dump(), "seed {seed}");
        assert_eq!(d0, nodes[2].dump(), "seed {seed}");
        let g0 = nodes[0].digest();
        assert_eq!(
            g0,
            nodes[1].digest(),
            "seed {seed}: equal stores, equal digests"
        );
        assert_eq!(g0, nodes[2].digest(), "seed {seed}");
        // a second round moves nothing
        let (a, b) = nodes.split_at_mut(1);
        let ans = b[0].answer(a[0].digest().sums());
        assert!(
            codec::decode(&ans).expect("decode").records.is_empty(),
            "seed {seed}"
        );
        pull(&mut a[0], &mut b[0]);
        conflicts += nodes.iter().map(|n| n.lost.len()).sum::<usize>();
    }
    assert!(
        differed > 150 && conflicts > 20 && fixes > 20,
        "{differed} partitions differed, {conflicts} conflicts lost, {fixes} corrections"
    );
}
