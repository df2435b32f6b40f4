//! Replication of SCA state between Kamailio nodes over DMQ (see
//! `docs/cluster-design.md`).
//!
//! Every node holds the whole store. Each change is sent to the other
//! nodes as a small binary message, and merge rules based on version
//! stamps make every node end up with the same state, whatever order the
//! messages arrive in. This module holds the parts that need no Kamailio:
//!
//! * [`Ver`], the version stamp every replicated item carries;
//! * [`codec`], the binary message format (encoding and validation);
//! * [`replica`], capture of local changes and merge of remote ones.

use core::cmp::Ordering;

pub mod codec;
pub mod digest;
pub mod replica;

/// Bits of a packed stamp that hold the node id.
pub const NODE_BITS: u32 = 20;
/// The highest node id (node ids are 1 to this; 0 means "not stamped").
pub const MAX_NODE_ID: u32 = (1 << NODE_BITS) - 1;
/// How far a subscription's NOTIFY CSeq jumps when its origin changes
/// node: NOTIFYs are not replicated, so the new origin does not know how
/// many the old one sent, and the CSeq must not go backwards.
pub const ORIGIN_CSEQ_JUMP: u32 = 1000;

/// A version stamp: when a change was made (`ms`, milliseconds since the
/// epoch) and by which node (`node`, the writer's node id).
///
/// Stamps are ordered by `ms` first and by `node` second, so two stamps
/// are equal only when the same node wrote both at the same millisecond.
/// Writers never go backwards: a new stamp for an item is
/// `max(now_ms, old.ms + 1)`, so the newest change to an item always has
/// the highest stamp, even when the clock steps back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Ver {
    /// Milliseconds since the Unix epoch.
    pub ms: u64,
    /// The node id of the writer.
    pub node: u32,
}

impl Ver {
    /// The lowest stamp: older than anything a node writes. Rows restored
    /// from a database get it, so any replicated copy wins over them.
    pub const ZERO: Ver = Ver { ms: 0, node: 0 };

    pub const fn new(ms: u64, node: u32) -> Self {
        Ver { ms, node }
    }

    /// The stamp as one `u64` (what the store keeps): `ms` in the high 44
    /// bits, `node` in the low [`NODE_BITS`]. Packed stamps order like
    /// [`Ver`]s as long as `ms < 2^44` (year 2527) and `node <=`
    /// [`MAX_NODE_ID`]; larger values are cut to fit.
    pub const fn pack(self) -> u64 {
        let ms = if self.ms >= (1 << (64 - NODE_BITS)) { (1 << (64 - NODE_BITS)) - 1 } else { self.ms };
        let node = if self.node > MAX_NODE_ID { MAX_NODE_ID } else { self.node };
        (ms << NODE_BITS) | node as u64
    }

    pub const fn unpack(v: u64) -> Ver {
        Ver { ms: v >> NODE_BITS, node: (v & MAX_NODE_ID as u64) as u32 }
    }

    /// A node's next stamp for an item whose latest stamp is `old`
    /// (packed): now, or one millisecond after `old` if the clock is
    /// behind it. Packed.
    pub fn next(now_ms: u64, old: u64, node: u32) -> u64 {
        let ms = now_ms.max(Ver::unpack(old).ms + 1);
        Ver::new(ms, node).pack()
    }
}

impl Ord for Ver {
    fn cmp(&self, other: &Self) -> Ordering {
        self.ms.cmp(&other.ms).then(self.node.cmp(&other.node))
    }
}

impl PartialOrd for Ver {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ver_orders_by_ms_then_node() {
        // a later millisecond wins whatever the node ids
        assert!(Ver::new(2, 0) > Ver::new(1, u32::MAX));
        assert!(Ver::new(1, u32::MAX) < Ver::new(2, 0));
        // same millisecond: the higher node id wins
        assert!(Ver::new(5, 2) > Ver::new(5, 1));
        assert_eq!(Ver::new(5, 1).cmp(&Ver::new(5, 1)), Ordering::Equal);
        assert!(Ver::ZERO < Ver::new(0, 1));
        assert_eq!(Ver::default(), Ver::ZERO);

        let mut v = vec![
            Ver::new(3, 1),
            Ver::new(1, 9),
            Ver::new(3, 0),
            Ver::new(u64::MAX, 0),
            Ver::ZERO,
        ];
        v.sort();
        assert_eq!(
            v,
            [
                Ver::ZERO,
                Ver::new(1, 9),
                Ver::new(3, 0),
                Ver::new(3, 1),
                Ver::new(u64::MAX, 0)
            ]
        );
        assert_eq!(Ver::new(3, 0).max(Ver::new(2, 7)), Ver::new(3, 0));
    }

    #[test]
    fn packed_stamps_order_like_vers_and_round_trip() {
        let vs = [Ver::ZERO, Ver::new(0, 1), Ver::new(1, 9), Ver::new(1_800_000_000_000, 3), Ver::new(1_800_000_000_000, MAX_NODE_ID), Ver::new(1_800_000_000_001, 1)];
        for w in vs.windows(2) {
            assert!(w[0] < w[1]);
            assert!(w[0].pack() < w[1].pack(), "{:?} {:?}", w[0], w[1]);
        }
        for v in vs {
            assert_eq!(Ver::unpack(v.pack()), v);
        }
        // out of range values are cut, not wrapped
        assert_eq!(Ver::unpack(Ver::new(5, u32::MAX).pack()), Ver::new(5, MAX_NODE_ID));
        assert!(Ver::new(u64::MAX, 1).pack() > Ver::new(1_800_000_000_000, 1).pack());
        // never backwards: a clock behind the item's stamp still moves on
        let old = Ver::new(1000, 2).pack();
        assert_eq!(Ver::unpack(Ver::next(10, old, 1)), Ver::new(1001, 1));
        assert_eq!(Ver::unpack(Ver::next(5000, old, 1)), Ver::new(5000, 1));
        assert!(Ver::next(0, 0, 1) > 0);
    }
}
