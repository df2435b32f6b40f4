//! Who belongs to which shared AoR (docs/security.md): a set of (AoR,
//! member) pairs read from the operator's `sca_members` table, held in
//! shared memory, and the rule that decides membership.
//!
//! Identities and AoRs are compared as `user@host`: the scheme (`sip:`,
//! `sips:`), angle brackets, a display name, the port, URI parameters and
//! headers are dropped and the host is lower-cased (the user part is
//! case-sensitive in SIP). An identity equal to the AoR is always a member
//! (a phone registered as the AoR itself); any other needs a row.

use allocator_api2::alloc::{AllocError, Allocator};
use core::hash::BuildHasher;
use foldhash::fast::FixedState;
use hashbrown::HashTable;

use crate::packed::Packed;

const SEED: u64 = 0x005c_a3e3_be25;

/// `user@host` of a URI, name-addr or bare `user@realm` identity; None
/// when there is no user part or no host.
pub fn normalize(v: &[u8]) -> Option<std::vec::Vec<u8>> {
    let v = v.trim_ascii();
    // a name-addr: what is inside <...>
    let v = match v.iter().position(|&b| b == b'<') {
        Some(i) => {
            let rest = &v[i + 1..];
            &rest[..rest.iter().position(|&b| b == b'>')?]
        }
        None => v,
    };
    let lower = v.to_ascii_lowercase();
    let v = if lower.starts_with(b"sip:") {
        &v[4..]
    } else if lower.starts_with(b"sips:") {
        &v[5..]
    } else {
        v
    };
    let v = &v[..v
        .iter()
        .position(|&b| b == b';' || b == b'?' || b == b'>')
        .unwrap_or(v.len())];
    let at = v.iter().rposition(|&b| b == b'@')?;
    let (user, host) = (&v[..at], &v[at + 1..]);
    // the port goes (an IPv6 reference keeps its colons)
    let host = match host.iter().rposition(|&b| b == b':') {
        Some(c) if !host.contains(&b']') || host[..c].ends_with(b"]") => &host[..c],
        _ => host,
    };
    if user.is_empty()
        || host.is_empty()
        || user.iter().chain(host).any(|&b| b.is_ascii_whitespace())
    {
        return None;
    }
    let mut out = std::vec::Vec::with_capacity(v.len());
    out.extend_from_slice(user);
    out.push(b'@');
    out.extend(host.iter().map(u8::to_ascii_lowercase));
    Some(out)
}

fn hash(aor: &[u8], member: &[u8]) -> u64 {
    FixedState::with_seed(SEED).hash_one((aor, member))
}

/// The (AoR, member) pairs, normalized.
pub struct Members<A: Allocator + Clone> {
    set: HashTable<Packed<A, 2>, A>,
    alloc: A,
}

/// Why a row was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowError {
    /// The AoR or the member is not a `user@host`.
    Malformed,
}

impl<A: Allocator + Clone> Members<A> {
    pub fn new_in(alloc: A) -> Self {
        Members {
            set: HashTable::new_in(alloc.clone()),
            alloc,
        }
    }

    pub fn len(&self) -> usize {
        self.set.len()
    }

    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }

    /// Add a row (AoR, member) as the table has it. A duplicate is taken
    /// once.
    pub fn add(&mut self, aor: &[u8], member: &[u8]) -> Result<Result<(), RowError>, AllocError> {
        let (Some(a), Some(m)) = (normalize(aor), normalize(member)) else {
            return Ok(Err(RowError::Malformed));
        };
        let h = hash(&a, &m);
        if self
            .set
            .find(h, |p| p.get(0) == a && p.get(1) == m)
            .is_some()
        {
            return Ok(Ok(()));
        }
        let p = Packed::new_in([&a[..], &m[..]], self.alloc.clone())?;
        self.set
            .try_reserve(1, |p| hash(p.get(0), p.get(1)))
            .map_err(|_| AllocError)?;
        self.set.insert_unique(h, p, |p| hash(p.get(0), p.get(1)));
        Ok(Ok(()))
    }

    /// Is `identity` a member of `aor`? Yes when both are the same
    /// `user@host`, or the table lists the pair; never when either is
    /// malformed.
    pub fn is_member(&self, identity: &[u8], aor: &[u8]) -> bool {
        let (Some(a), Some(m)) = (normalize(aor), normalize(identity)) else {
            return false;
        };
        a == m
            || self
                .set
                .find(hash(&a, &m), |p| p.get(0) == a && p.get(1) == m)
                .is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use allocator_api2::alloc::Global;

    #[test]
    fn identities_and_aors_compare_as_user_at_host() {
        let n = |s: &str| normalize(s.as_bytes()).map(|v| String::from_utf8(v).expect("utf8"));
        assert_eq!(n("sip:100@Example.COM").as_deref(), Some("100@example.com"));
        assert_eq!(
            n("SIPS:100@example.com:5061;transport=tls").as_deref(),
            Some("100@example.com")
        );
        assert_eq!(
            n("\"Line\" <sip:100@example.com;user=phone>;tag=x").as_deref(),
            Some("100@example.com")
        );
        assert_eq!(n("alice@example.com").as_deref(), Some("alice@example.com"));
        assert_eq!(
            n("Alice@example.com").as_deref(),
            Some("Alice@example.com"),
            "the user part keeps its case"
        );
        assert_eq!(
            n("sip:100@[2001:db8::1]:5060").as_deref(),
            Some("100@[2001:db8::1]")
        );
        assert_eq!(
            n("sip:100@[2001:db8::1]").as_deref(),
            Some("100@[2001:db8::1]")
        );
        assert_eq!(n("sip:100@h?subject=x").as_deref(), Some("100@h"));
        for bad in [
            "",
            "sip:",
            "sip:example.com",
            "@example.com",
            "100@",
            "<sip:100@x",
            "a b@c",
        ] {
            assert_eq!(n(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_member_is_listed_or_is_the_aor_itself() {
        let mut m = Members::new_in(Global);
        assert_eq!(
            m.add(b"sip:line@example.com", b"alice@example.com"),
            Ok(Ok(()))
        );
        assert_eq!(
            m.add(b"line@example.com", b"sip:alice@EXAMPLE.com"),
            Ok(Ok(())),
            "a duplicate"
        );
        assert_eq!(
            m.add(b"sip:line@example.com", b"bob"),
            Ok(Err(RowError::Malformed))
        );
        assert_eq!(m.len(), 1);
        assert!(m.is_member(b"alice@example.com", b"sip:line@example.com;transport=udp"));
        assert!(m.is_member(b"sip:alice@example.com:5060", b"<sip:line@example.com>"));
        assert!(!m.is_member(b"bob@example.com", b"sip:line@example.com"));
        assert!(!m.is_member(b"alice@example.com", b"sip:other@example.com"));
        assert!(
            !m.is_member(b"alice@other.example", b"sip:line@example.com"),
            "the realm counts"
        );
        // the AoR's own identity, with or without a table
        assert!(Members::new_in(Global).is_member(b"line@example.com", b"sip:line@example.com"));
        // nothing malformed is ever a member
        assert!(!m.is_member(b"", b""));
        assert!(!m.is_member(b"example.com", b"example.com"));
    }
}
