//! Several byte strings in one allocation, behind one pointer.
//!
//! Every allocation in Kamailio's shared memory costs a fragment header
//! (88 bytes with Debian's debug-enabled q_malloc), and every byte of a
//! record held in a hash table is paid again for the table's spare
//! buckets. So a record's strings share one buffer, and the record holds
//! only a pointer to it: the buffer starts with the `N` end offsets
//! followed by the bytes. The offsets are one byte each when the strings
//! total less than [`WIDE`] bytes (most records), else a [`WIDE`] marker
//! byte, a pad byte and `N` `u16`s. `N` strings: one allocation, 8 bytes
//! in the record (plus the allocator, zero-sized for shm).

use allocator_api2::alloc::{AllocError, Allocator};
use core::alloc::Layout;
use core::ptr::NonNull;

/// Longest total of the strings (SIP messages are at most 64 KB too).
pub const MAX_TOTAL: usize = u16::MAX as usize;

/// First byte of a header of `u16` offsets; totals below it have `u8`
/// offsets (which are never this value).
const WIDE: u8 = 0xff;

pub struct Packed<A: Allocator, const N: usize> {
    /// `[u8; N]` end offsets (total < [`WIDE`]) or `[WIDE, 0]` and
    /// `[u16; N]` end offsets, then the bytes; allocated by `alloc` with
    /// [`Packed::layout`].
    ptr: NonNull<u8>,
    alloc: A,
}

// SAFETY: [I16] Packed owns its buffer exclusively (like a Box<[u8]>); sending
// or sharing it is as safe as sending or sharing its allocator.
unsafe impl<A: Allocator + Send, const N: usize> Send for Packed<A, N> {}
// SAFETY: [I16] as above; `&Packed` only reads the buffer.
unsafe impl<A: Allocator + Sync, const N: usize> Sync for Packed<A, N> {}

impl<A: Allocator, const N: usize> Packed<A, N> {
    /// Header bytes for strings of `total` bytes.
    const fn header(total: usize) -> usize {
        if total < WIDE as usize {
            N
        } else {
            2 + 2 * N
        }
    }

    fn layout(total: usize) -> Result<Layout, AllocError> {
        Layout::from_size_align(Self::header(total) + total, 2).map_err(|_| AllocError)
    }

    /// Copies `parts` into one allocation of exactly their total size plus
    /// the offsets. Err when the allocator fails or the total exceeds
    /// [`MAX_TOTAL`].
    pub fn new_in(parts: [&[u8]; N], alloc: A) -> Result<Self, AllocError> {
        let total: usize = parts.iter().map(|p| p.len()).sum();
        if total > MAX_TOTAL || N == 0 {
            return Err(AllocError);
        }
        let header = Self::header(total);
        let ptr = alloc.allocate(Self::layout(total)?)?.cast::<u8>();
        let mut end = 0usize;
        if header != N {
            // SAFETY: [I17] a wide header has 2 + 2 * N >= 2 bytes.
            unsafe { ptr.as_ptr().write(WIDE) };
            // SAFETY: [I17] as above.
            unsafe { ptr.as_ptr().add(1).write(0) };
        }
        for (i, p) in parts.iter().enumerate() {
            // SAFETY: [I17] the buffer has header + total bytes; the offset
            // slot of i is inside the header (i < N; 2 + 2 * i + 2 <= header
            // when wide) and header + end + p.len() <= header + total; the
            // source is a separate slice, so the regions do not overlap.
            unsafe {
                core::ptr::copy_nonoverlapping(p.as_ptr(), ptr.as_ptr().add(header + end), p.len());
                end += p.len();
                if header == N {
                    ptr.as_ptr().add(i).write(end as u8);
                } else {
                    ptr.as_ptr().add(2 + 2 * i).cast::<u16>().write_unaligned(end as u16);
                }
            }
        }
        Ok(Packed { ptr, alloc })
    }

    fn wide(&self) -> bool {
        // SAFETY: [I17] every header has at least one byte (N > 0), written
        // by new_in: WIDE, or a narrow end offset (< WIDE).
        unsafe { self.ptr.as_ptr().read() == WIDE }
    }

    /// (header length, end offset of string `i`)
    fn end(&self, i: usize) -> (usize, usize) {
        debug_assert!(i < N);
        if self.wide() {
            // SAFETY: [I17] i < N, so 2 + 2 * i + 2 <= 2 + 2 * N, inside the
            // wide header new_in wrote.
            (2 + 2 * N, unsafe { self.ptr.as_ptr().add(2 + 2 * i).cast::<u16>().read_unaligned() as usize })
        } else {
            // SAFETY: [I17] i < N, inside the narrow header new_in wrote.
            (N, unsafe { self.ptr.as_ptr().add(i).read() as usize })
        }
    }

    fn total(&self) -> usize {
        self.end(N - 1).1
    }

    /// The `i`th string (empty when `i` is out of range).
    pub fn get(&self, i: usize) -> &[u8] {
        if i >= N {
            return &[];
        }
        let (header, end) = self.end(i);
        let start = if i == 0 { 0 } else { self.end(i - 1).1 };
        if start > end {
            return &[];
        }
        // SAFETY: [I17] new_in wrote non-decreasing ends <= total, and the bytes
        // [header, header + total) are initialised; the slice lives as long
        // as &self, which owns the buffer.
        unsafe { core::slice::from_raw_parts(self.ptr.as_ptr().add(header + start), end - start) }
    }

    /// Bytes allocated (for memory accounting).
    pub fn heap_len(&self) -> usize {
        let total = self.total();
        Self::header(total) + total
    }
}

impl<A: Allocator, const N: usize> Drop for Packed<A, N> {
    fn drop(&mut self) {
        // SAFETY: [I17] new_in allocated ptr with exactly this layout, which it
        // checked (the total is read back from the header it wrote).
        unsafe {
            let layout = Layout::from_size_align_unchecked(self.heap_len(), 2);
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
        assert_eq!(p.heap_len(), 4 + 11, "one byte per offset");
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

    #[test]
    fn narrow_and_wide_headers_meet_at_255_bytes() {
        for total in [0usize, 1, 200, 253, 254, 255, 256, 300, 1000] {
            let a = vec![b'a'; total / 3];
            let b = vec![b'b'; total - total / 3 - 1.min(total)];
            let c = vec![b'c'; 1.min(total)];
            let p: Packed<Global, 3> = Packed::new_in([&a, &b, &c], Global).expect("alloc");
            assert_eq!((p.get(0), p.get(1), p.get(2)), (&a[..], &b[..], &c[..]), "total {total}");
            let header = if total < 255 { 3 } else { 8 };
            assert_eq!(p.heap_len(), header + total, "total {total}");
        }
    }
}
