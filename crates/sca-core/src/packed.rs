//! Several byte strings in one allocation.
//!
//! Every allocation in Kamailio's shared memory costs a fragment header
//! (tens of bytes with Debian's debug-enabled allocator), so a record's
//! strings share one buffer: `N` strings, one allocation.

use allocator_api2::alloc::{AllocError, Allocator};
use allocator_api2::vec::Vec;

pub struct Packed<A: Allocator, const N: usize> {
    buf: Vec<u8, A>,
    ends: [u32; N],
}

impl<A: Allocator, const N: usize> Packed<A, N> {
    /// Copies `parts` into one allocation of exactly their total size.
    pub fn new_in(parts: [&[u8]; N], alloc: A) -> Result<Self, AllocError> {
        let total: usize = parts.iter().map(|p| p.len()).sum();
        if total > u32::MAX as usize {
            return Err(AllocError);
        }
        let mut buf = Vec::new_in(alloc);
        buf.try_reserve_exact(total).map_err(|_| AllocError)?;
        let mut ends = [0u32; N];
        for (i, p) in parts.iter().enumerate() {
            buf.extend_from_slice(p);
            ends[i] = buf.len() as u32;
        }
        Ok(Packed { buf, ends })
    }

    /// The `i`th string (empty when `i` is out of range).
    pub fn get(&self, i: usize) -> &[u8] {
        let Some(&end) = self.ends.get(i) else { return &[] };
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        self.buf.get(start as usize..end as usize).unwrap_or(&[])
    }

    /// Bytes held (for memory accounting).
    pub fn heap_len(&self) -> usize {
        self.buf.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use allocator_api2::alloc::Global;

    #[test]
    fn holds_each_part_in_order() {
        let p: Packed<Global, 4> =
            Packed::new_in([b"sip:a@b", b"", b"tag", b"x"], Global).expect("alloc");
        assert_eq!(p.get(0), b"sip:a@b");
        assert_eq!(p.get(1), b"");
        assert_eq!(p.get(2), b"tag");
        assert_eq!(p.get(3), b"x");
        assert_eq!(p.get(4), b"");
        assert_eq!(p.heap_len(), 11);
    }
}
