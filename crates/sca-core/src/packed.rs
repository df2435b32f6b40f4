//! Several byte strings in one allocation, behind one pointer.
//!
//! Every allocation in Kamailio's shared memory costs a fragment header
//! (88 bytes with Debian's debug-enabled q_malloc), and every byte of a
//! record held in a hash table is paid again for the table's spare
//! buckets. So a record's strings share one buffer, and the record holds
//! only a pointer to it: the buffer starts with the `N` end offsets (`u16`)
//! followed by the bytes. `N` strings: one allocation, 8 bytes in the
//! record (plus the allocator, zero-sized for shm).

use allocator_api2::alloc::{AllocError, Allocator};
use core::alloc::Layout;
use core::ptr::NonNull;

/// Longest total of the strings (SIP messages are at most 64 KB too).
pub const MAX_TOTAL: usize = u16::MAX as usize;

pub struct Packed<A: Allocator, const N: usize> {
    /// `[u16; N]` end offsets, then the bytes: `2 * N + ends[N - 1]` bytes,
    /// 2-aligned, allocated by `alloc`.
    ptr: NonNull<u8>,
    alloc: A,
}

// SAFETY: [I16] Packed owns its buffer exclusively (like a Box<[u8]>); sending
// or sharing it is as safe as sending or sharing its allocator.
unsafe impl<A: Allocator + Send, const N: usize> Send for Packed<A, N> {}
// SAFETY: [I16] as above; `&Packed` only reads the buffer.
unsafe impl<A: Allocator + Sync, const N: usize> Sync for Packed<A, N> {}

impl<A: Allocator, const N: usize> Packed<A, N> {
    const HEADER: usize = 2 * N;


    /// Copies `parts` into one allocation of exactly their total size plus
    /// the offsets. Err when the allocator fails or the total exceeds
    /// [`MAX_TOTAL`].
    pub fn new_in(parts: [&[u8]; N], alloc: A) -> Result<Self, AllocError> {
        let total: usize = parts.iter().map(|p| p.len()).sum();
        if total > MAX_TOTAL || N == 0 {
            return Err(AllocError);
        }
        let layout = Layout::from_size_align(Self::HEADER + total, 2).map_err(|_| AllocError)?;
        let ptr = alloc.allocate(layout)?.cast::<u8>();
        let mut end = 0usize;
        for (i, p) in parts.iter().enumerate() {
            // SAFETY: [I17] the buffer has HEADER + total bytes; offset 2 * i < HEADER
            // and HEADER + end + p.len() <= HEADER + total; the source is a
            // separate slice, so the regions do not overlap.
            unsafe {
                core::ptr::copy_nonoverlapping(p.as_ptr(), ptr.as_ptr().add(Self::HEADER + end), p.len());
                end += p.len();
                ptr.as_ptr().add(2 * i).cast::<u16>().write_unaligned(end as u16);
            }
        }
        Ok(Packed { ptr, alloc })
    }

    fn end(&self, i: usize) -> usize {
        debug_assert!(i < N);
        // SAFETY: [I17] i < N, so 2 * i + 2 <= HEADER, inside the buffer written
        // by new_in.
        unsafe { self.ptr.as_ptr().add(2 * i).cast::<u16>().read_unaligned() as usize }
    }

    fn total(&self) -> usize {
        self.end(N - 1)
    }

    /// The `i`th string (empty when `i` is out of range).
    pub fn get(&self, i: usize) -> &[u8] {
        if i >= N {
            return &[];
        }
        let start = if i == 0 { 0 } else { self.end(i - 1) };
        let end = self.end(i);
        if start > end {
            return &[];
        }
        // SAFETY: [I17] new_in wrote non-decreasing ends <= total, and the bytes
        // [HEADER, HEADER + total) are initialised; the slice lives as long
        // as &self, which owns the buffer.
        unsafe { core::slice::from_raw_parts(self.ptr.as_ptr().add(Self::HEADER + start), end - start) }
    }

    /// Bytes allocated (for memory accounting).
    pub fn heap_len(&self) -> usize {
        Self::HEADER + self.total()
    }
}

impl<A: Allocator, const N: usize> Drop for Packed<A, N> {
    fn drop(&mut self) {
        // SAFETY: [I17] new_in allocated ptr with exactly this layout, which it
        // checked (the total is read back from the header it wrote).
        unsafe {
            let layout = Layout::from_size_align_unchecked(Self::HEADER + self.total(), 2);
            self.alloc.deallocate(self.ptr, layout)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use allocator_api2::alloc::Global;

    #[test]
    fn holds_each_part_in_order() {
        let p: Packed<Global, 4> = Packed::new_in([b"sip:a@b", b"", b"tag", b"x"], Global).expect("alloc");
        assert_eq!(p.get(0), b"sip:a@b");
        assert_eq!(p.get(1), b"");
        assert_eq!(p.get(2), b"tag");
        assert_eq!(p.get(3), b"x");
        assert_eq!(p.get(4), b"");
        assert_eq!(p.heap_len(), 8 + 11);
        assert_eq!(core::mem::size_of::<Packed<Global, 4>>(), 8, "one pointer in the record");
    }

    #[test]
    fn all_empty_and_the_size_limit() {
        let p: Packed<Global, 2> = Packed::new_in([b"", b""], Global).expect("alloc");
        assert_eq!((p.get(0), p.get(1)), (&b""[..], &b""[..]));
        let big = vec![b'x'; MAX_TOTAL];
        let p: Packed<Global, 2> = Packed::new_in([&big, b""], Global).expect("64 KB fits");
        assert_eq!(p.get(0).len(), MAX_TOTAL);
        assert!(Packed::<Global, 2>::new_in([&big, b"y"], Global).is_err(), "one byte more does not");
    }
}
