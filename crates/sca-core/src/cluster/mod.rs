//! Replication of SCA state between Kamailio nodes over DMQ (see
//! `docs/cluster-design.md`).
//!
//! Every node holds the whole store. Each change is sent to the other
//! nodes as a small binary message, and merge rules based on version
//! stamps make every node end up with the same state, whatever order the
//! messages arrive in. This module holds the parts that need no Kamailio:
//!
//! * [`Ver`], the version stamp every replicated item carries;
//! * [`codec`], the binary message format (encoding and validation).
//!
//! Nothing here is wired into the module yet.

use core::cmp::Ordering;

pub mod codec;

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
}
