//! A vector that is one pointer wide: length and capacity live at the
//! start of its allocation, and an empty one allocates nothing. It can
//! also carry a byte string (its "tail", set once) in the same allocation,
//! after the elements: the store keeps an AoR's name there, so an AoR with
//! its subscriptions costs one allocation, not two.
//!
//! The store keeps an AoR's subscriptions and appearances in these: the
//! AoR records sit in hash tables whose spare buckets cost as much as the
//! used ones, so 8 bytes instead of `Vec`'s 24, twice per AoR, is memory
//! saved on every AoR (and on each spare bucket). Growth is exact (one
//! more element at a time): most AoRs have one or two subscribers, and
//! every spare element is shared memory.

use allocator_api2::alloc::{AllocError, Allocator};
use core::alloc::Layout;
use core::marker::PhantomData;
use core::ops::{Deref, DerefMut};
use core::ptr::NonNull;

#[repr(C)]
struct Header<X> {
    len: u16,
    cap: u16,
    /// The tail's length, and [`FLAG`].
    tail: u32,
    /// The owner's value kept in the allocation (`()` for most).
    extra: X,
}

/// A value a ThinVec keeps in its allocation's header for its owner (the
/// store: an AoR's appearances, beside its subscriptions), made when the
/// first allocation is.
pub trait HeaderExtra<A>: Sized {
    fn new_in(alloc: &A) -> Self;
}

impl<A> HeaderExtra<A> for () {
    fn new_in(_: &A) {}
}

/// A bit of the owner's in the header's `tail` word (see
/// [`ThinVec::set_flag`]); the tail's length is the other 31 bits.
const FLAG: u32 = 1 << 31;

/// Most elements a ThinVec holds.
pub const MAX_LEN: usize = u16::MAX as usize;

pub struct ThinVec<T, A: Allocator, X: HeaderExtra<A> = ()> {
    /// None: empty, no tail, nothing allocated. Some: a Header, then `cap`
    /// slots of T (the first `len` initialised), then `tail` bytes,
    /// allocated by `alloc` with [`ThinVec::layout`]`(cap, tail)`.
    ptr: Option<NonNull<Header<X>>>,
    alloc: A,
    _owns: PhantomData<(T, X)>,
}

// SAFETY: [I16] ThinVec owns its elements and buffer exclusively, like Vec.
unsafe impl<T: Send, A: Allocator + Send, X: HeaderExtra<A> + Send> Send for ThinVec<T, A, X> {}
// SAFETY: [I16] `&ThinVec` only gives `&T`, like Vec.
unsafe impl<T: Sync, A: Allocator + Sync, X: HeaderExtra<A> + Sync> Sync for ThinVec<T, A, X> {}

impl<T, A: Allocator, X: HeaderExtra<A>> ThinVec<T, A, X> {
    pub fn new_in(alloc: A) -> Self {
        ThinVec { ptr: None, alloc, _owns: PhantomData }
    }

    /// An empty vector carrying `tail` in its (already made) allocation,
    /// with room for `cap` elements (one allocation where a later push
    /// would have taken a second).
    pub fn with_tail_in(tail: &[u8], cap: usize, alloc: A) -> Result<Self, AllocError> {
        if tail.len() >= FLAG as usize || cap > MAX_LEN {
            return Err(AllocError);
        }
        let (layout, off) = Self::layout(cap, tail.len())?;
        let p = alloc.allocate(layout)?.cast::<Header<X>>();
        // SAFETY: [I17] the allocation has room for a Header (aligned by the
        // layout), cap elements (uninitialised, len 0) and, at off, for the
        // tail; the source is a separate slice.
        unsafe {
            p.as_ptr().write(Header { len: 0, cap: cap as u16, tail: tail.len() as u32, extra: X::new_in(&alloc) });
            core::ptr::copy_nonoverlapping(tail.as_ptr(), p.as_ptr().cast::<u8>().add(off), tail.len());
        }
        Ok(ThinVec { ptr: Some(p), alloc, _owns: PhantomData })
    }

    /// (layout of the allocation for `cap` elements and a tail of `tail`
    /// bytes, offset of the tail)
    fn layout(cap: usize, tail: usize) -> Result<(Layout, usize), AllocError> {
        let items = Layout::array::<T>(cap).map_err(|_| AllocError)?;
        let (l, _) = Layout::new::<Header<X>>().extend(items).map_err(|_| AllocError)?;
        let (l, tail_off) = l.extend(Layout::array::<u8>(tail).map_err(|_| AllocError)?).map_err(|_| AllocError)?;
        Ok((l.pad_to_align(), tail_off))
    }

    fn tail_len(&self) -> usize {
        self.header().map_or(0, |h| (h.tail & !FLAG) as usize)
    }

    /// The owner's value in the header (None when nothing is allocated).
    pub fn extra(&self) -> Option<&X> {
        self.header().map(|h| &h.extra)
    }

    /// The owner's value in the header, mutably.
    pub fn extra_mut(&mut self) -> Option<&mut X> {
        // SAFETY: [I17] a Some ptr points to the live Header this vector
        // wrote, and &mut self is exclusive.
        self.ptr.map(|p| unsafe { &mut (*p.as_ptr()).extra })
    }

    /// The owner's flag bit (false when nothing is allocated).
    pub fn flag(&self) -> bool {
        self.header().is_some_and(|h| h.tail & FLAG != 0)
    }

    /// Set or clear the owner's flag bit, kept in the allocation's header
    /// (a vector made by [`ThinVec::with_tail_in`] always has one); false
    /// (nothing changed) when nothing is allocated.
    pub fn set_flag(&mut self, on: bool) -> bool {
        match self.ptr {
            None => false,
            Some(p) => {
                // SAFETY: [I17] a Some ptr points to the live Header this vector
                // wrote, and &mut self is exclusive.
                let h = unsafe { &mut *p.as_ptr() };
                h.tail = if on { h.tail | FLAG } else { h.tail & !FLAG };
                true
            }
        }
    }

    /// The bytes given to [`ThinVec::with_tail_in`] (empty otherwise).
    pub fn tail(&self) -> &[u8] {
        match self.ptr {
            None => &[],
            Some(p) => {
                let Ok((_, off)) = Self::layout(self.capacity(), self.tail_len()) else { return &[] };
                // SAFETY: [I17] with_tail_in wrote tail_len bytes at this offset,
                // and growing moves them along (try_reserve_exact).
                unsafe { core::slice::from_raw_parts(p.as_ptr().cast::<u8>().add(off), self.tail_len()) }
            }
        }
    }

    fn header(&self) -> Option<&Header<X>> {
        // SAFETY: [I17] a Some ptr points to the live Header this vector wrote.
        self.ptr.map(|p| unsafe { &*p.as_ptr() })
    }

    fn data(&self) -> *mut T {
        match self.ptr {
            None => NonNull::<T>::dangling().as_ptr(),
            Some(p) => {
                // SAFETY: [I17] the elements start right after the Header, padded
                // to T's alignment (as Layout::extend placed them), inside
                // the allocation.
                unsafe { p.as_ptr().cast::<u8>().add(Self::data_offset()).cast::<T>() }
            }
        }
    }

    fn data_offset() -> usize {
        let h = core::mem::size_of::<Header<X>>();
        let a = core::mem::align_of::<T>();
        h.div_ceil(a) * a
    }

    /// The allocator it allocates with.
    pub(crate) fn allocator(&self) -> &A {
        &self.alloc
    }

    pub fn capacity(&self) -> usize {
        self.header().map_or(0, |h| h.cap as usize)
    }

    /// Room for `additional` more elements, exactly.
    pub fn try_reserve_exact(&mut self, additional: usize) -> Result<(), AllocError> {
        let len = self.len();
        let want = len.checked_add(additional).ok_or(AllocError)?;
        if want <= self.capacity() {
            return Ok(());
        }
        if want > MAX_LEN {
            return Err(AllocError);
        }
        let tail = self.tail_len();
        let flag = if self.flag() { FLAG } else { 0 };
        let (new_layout, new_tail_off) = Self::layout(want, tail)?;
        let new = match self.ptr {
            None => self.alloc.allocate(new_layout)?.cast::<u8>(),
            Some(p) => {
                let (old_layout, old_tail_off) = Self::layout(self.capacity(), tail)?;
                // SAFETY: [I17] p was allocated by self.alloc with old_layout; the
                // new layout has the same alignment and is larger; grow
                // copies the old bytes (elements move bitwise, which is how
                // Rust moves). The tail then moves up to its new offset
                // (overlapping regions: ptr::copy).
                unsafe {
                    let n = self.alloc.grow(p.cast(), old_layout, new_layout)?.cast::<u8>();
                    core::ptr::copy(n.as_ptr().add(old_tail_off), n.as_ptr().add(new_tail_off), tail);
                    n
                }
            }
        };
        let h = new.cast::<Header<X>>();
        if self.ptr.is_none() {
            // SAFETY: [I17] a new allocation starts with room for a Header
            // (aligned by the layout): written whole.
            unsafe { h.as_ptr().write(Header { len: 0, cap: 0, tail: 0, extra: X::new_in(&self.alloc) }) };
        }
        // SAFETY: [I17] the allocation starts with the Header (grown: moved
        // bitwise with its extra, which stays); len and tail are kept, cap
        // is the new one.
        unsafe {
            let hp = h.as_ptr();
            (*hp).len = len as u16;
            (*hp).cap = want as u16;
            (*hp).tail = tail as u32 | flag;
        }
        self.ptr = Some(h);
        Ok(())
    }

    fn set_len(&mut self, len: usize) {
        if let Some(p) = self.ptr {
            // SAFETY: [I17] the header is ours; callers keep len <= cap and the
            // first len elements initialised.
            unsafe { (*p.as_ptr()).len = len as u16 }
        }
    }

    /// Append `v`; the capacity must have room (see try_reserve_exact),
    /// else `v` is handed back.
    pub fn push_within_capacity(&mut self, v: T) -> Result<(), T> {
        let len = self.len();
        if len >= self.capacity() {
            return Err(v);
        }
        // SAFETY: [I17] slot len < cap is allocated and not initialised.
        unsafe { self.data().add(len).write(v) };
        self.set_len(len + 1);
        Ok(())
    }

    /// Insert `v` at `index` (<= len), growing by one when full. On
    /// `AllocError` nothing changed and `v` is dropped.
    pub fn try_insert(&mut self, index: usize, v: T) -> Result<(), AllocError> {
        let len = self.len();
        if index > len {
            return Err(AllocError);
        }
        self.try_reserve_exact(1)?;
        // SAFETY: [I17] cap > len; shifting [index, len) up by one stays inside
        // the allocation; slot index is then overwritten without a drop.
        unsafe {
            let p = self.data().add(index);
            core::ptr::copy(p, p.add(1), len - index);
            p.write(v);
        }
        self.set_len(len + 1);
        Ok(())
    }

    /// Remove and return the element at `index` (< len), shifting the rest.
    pub fn remove(&mut self, index: usize) -> T {
        let len = self.len();
        assert!(index < len, "ThinVec::remove index {index} >= len {len}");
        // SAFETY: [I17] index < len: the slot is initialised; it is read out
        // once, the tail moved down over it, and len shrinks by one.
        unsafe {
            let p = self.data().add(index);
            let v = p.read();
            core::ptr::copy(p.add(1), p, len - index - 1);
            self.set_len(len - 1);
            v
        }
    }

    /// Remove the element at `index` (< len), moving the last one there.
    pub fn swap_remove(&mut self, index: usize) -> T {
        let len = self.len();
        assert!(index < len, "ThinVec::swap_remove index {index} >= len {len}");
        // SAFETY: [I17] index and len - 1 are initialised slots; the element at
        // index is read out, the last moved into its place, len shrinks.
        unsafe {
            let base = self.data();
            let v = base.add(index).read();
            if index != len - 1 {
                core::ptr::copy_nonoverlapping(base.add(len - 1), base.add(index), 1);
            }
            self.set_len(len - 1);
            v
        }
    }

    /// Keep the elements for which `f` is true (in order).
    pub fn retain_mut(&mut self, mut f: impl FnMut(&mut T) -> bool) {
        let mut i = 0;
        while i < self.len() {
            if f(&mut self[i]) {
                i += 1;
            } else {
                drop(self.remove(i));
            }
        }
    }

    pub fn retain(&mut self, mut f: impl FnMut(&T) -> bool) {
        self.retain_mut(|v| f(v))
    }

    /// Drop every element (the capacity and tail stay).
    pub fn clear(&mut self) {
        while !self.is_empty() {
            let last = self.len() - 1;
            drop(self.swap_remove(last));
        }
    }

    /// Bytes allocated (for memory accounting).
    pub fn heap_len(&self) -> usize {
        match self.ptr {
            None => 0,
            Some(_) => Self::layout(self.capacity(), self.tail_len()).map_or(0, |(l, _)| l.size()),
        }
    }
}

impl<T, A: Allocator, X: HeaderExtra<A>> Deref for ThinVec<T, A, X> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        let len = self.header().map_or(0, |h| h.len as usize);
        // SAFETY: [I17] the first len slots are initialised (dangling and 0 when
        // empty, which from_raw_parts allows).
        unsafe { core::slice::from_raw_parts(self.data(), len) }
    }
}

impl<T, A: Allocator, X: HeaderExtra<A>> DerefMut for ThinVec<T, A, X> {
    fn deref_mut(&mut self) -> &mut [T] {
        let len = self.len();
        // SAFETY: [I17] as in deref, and &mut self is exclusive.
        unsafe { core::slice::from_raw_parts_mut(self.data(), len) }
    }
}

impl<T, A: Allocator, X: HeaderExtra<A>> Drop for ThinVec<T, A, X> {
    fn drop(&mut self) {
        self.clear();
        let (cap, tail) = (self.capacity(), self.tail_len());
        if let Some(p) = self.ptr.take() {
            // SAFETY: [I17] the header's extra was written when the allocation
            // was made and is dropped once, here, before the memory goes.
            unsafe { core::ptr::drop_in_place(&mut (*p.as_ptr()).extra) };
            if let Ok((layout, _)) = Self::layout(cap, tail) {
                // SAFETY: [I17] p was allocated by self.alloc with this layout
                // (try_reserve_exact / with_tail_in); the elements were
                // dropped above.
                unsafe { self.alloc.deallocate(p.cast(), layout) }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use allocator_api2::alloc::Global;
    use std::rc::Rc;

    fn v() -> ThinVec<Rc<u32>, Global> {
        ThinVec::new_in(Global)
    }

    fn push<X: HeaderExtra<Global>>(t: &mut ThinVec<Rc<u32>, Global, X>, x: &Rc<u32>) {
        t.try_reserve_exact(1).expect("reserve");
        assert!(t.push_within_capacity(x.clone()).is_ok());
    }

    fn vals(t: &ThinVec<Rc<u32>, Global>) -> Vec<u32> {
        t.iter().map(|r| **r).collect()
    }

    #[test]
    fn is_one_pointer_and_empty_allocates_nothing() {
        assert_eq!(core::mem::size_of::<ThinVec<u64, Global>>(), 8);
        let t = v();
        assert_eq!((t.len(), t.capacity(), t.heap_len()), (0, 0, 0));
        assert!(t.iter().next().is_none());
    }

    #[test]
    fn push_insert_remove_swap_remove_retain_keep_order_and_drop_once() {
        let one = Rc::new(1);
        let mut t = v();
        for i in 0..5u32 {
            push(&mut t, &Rc::new(i));
        }
        assert_eq!(t.capacity(), 5, "exact growth");
        t.try_insert(0, Rc::new(9)).expect("insert");
        t.try_insert(6, one.clone()).expect("insert at end");
        assert!(t.try_insert(99, Rc::new(7)).is_err());
        assert_eq!(vals(&t), [9, 0, 1, 2, 3, 4, 1]);
        assert_eq!(*t.remove(0), 9);
        assert_eq!(*t.swap_remove(0), 0);
        assert_eq!(vals(&t), [1, 1, 2, 3, 4]);
        t.retain(|x| **x % 2 == 1);
        assert_eq!(vals(&t), [1, 1, 3]);
        t[2] = Rc::new(5);
        assert_eq!(vals(&t), [1, 1, 5]);
        assert_eq!(Rc::strong_count(&one), 2);
        t.retain_mut(|x| !Rc::ptr_eq(x, &one));
        assert_eq!(Rc::strong_count(&one), 1, "removed elements are dropped");
        push(&mut t, &one);
        drop(t);
        assert_eq!(Rc::strong_count(&one), 1, "drop drops every element once");
    }

    #[test]
    fn clear_keeps_the_capacity_and_the_vector_grows_again() {
        let mut t = v();
        push(&mut t, &Rc::new(1));
        t.clear();
        assert_eq!((t.len(), t.capacity()), (0, 1));
        push(&mut t, &Rc::new(2));
        push(&mut t, &Rc::new(3));
        assert_eq!(vals(&t), [2, 3]);
    }

    #[test]
    fn the_tail_survives_growth_and_removals() {
        let tail = b"sip:some-line@example.com";
        let mut t: ThinVec<Rc<u32>, Global> = ThinVec::with_tail_in(tail, 0, Global).expect("alloc");
        assert_eq!((t.len(), t.tail()), (0, &tail[..]));
        for i in 0..7 {
            push(&mut t, &Rc::new(i));
            assert_eq!(t.tail(), tail, "after {} pushes", i + 1);
        }
        t.try_insert(3, Rc::new(42)).expect("insert");
        drop(t.swap_remove(0));
        t.retain(|x| **x != 5);
        assert_eq!(t.tail(), tail);
        assert_eq!(vals(&t), [6, 1, 2, 42, 3, 4]);
        let empty: ThinVec<u8, Global> = ThinVec::with_tail_in(b"", 0, Global).expect("alloc");
        assert!(!empty.flag());
        assert_eq!(empty.tail(), b"");
        // a u8 vector: the tail right after odd element counts
        let mut bytes: ThinVec<u8, Global> = ThinVec::with_tail_in(b"xyz", 2, Global).expect("alloc");
        assert_eq!((bytes.capacity(), bytes.tail()), (2, &b"xyz"[..]));
        for b in 0..5u8 {
            bytes.try_reserve_exact(1).expect("reserve");
            assert!(bytes.push_within_capacity(b).is_ok());
            assert_eq!(bytes.tail(), b"xyz");
        }
        assert_eq!(&bytes[..], [0, 1, 2, 3, 4]);
    }

    /// An owner's value with a drop to count.
    struct Counted(Rc<u32>);
    impl HeaderExtra<Global> for Counted {
        fn new_in(_: &Global) -> Self {
            Counted(Rc::new(7))
        }
    }

    #[test]
    fn the_extra_lives_as_long_as_the_allocation_and_survives_growth() {
        let mut t: ThinVec<Rc<u32>, Global, Counted> = ThinVec::with_tail_in(b"sip:x@y", 0, Global).expect("alloc");
        let probe = t.extra().expect("made with the allocation").0.clone();
        assert_eq!(Rc::strong_count(&probe), 2);
        t.extra_mut().expect("extra").0 = Rc::new(9);
        assert_eq!(Rc::strong_count(&probe), 1, "replaced: the old value dropped");
        let nine = t.extra().expect("extra").0.clone();
        for i in 0..6 {
            push(&mut t, &Rc::new(i));
            assert_eq!(*t.extra().expect("extra").0, 9, "after {} pushes", i + 1);
            assert_eq!(t.tail(), b"sip:x@y");
        }
        assert_eq!(Rc::strong_count(&nine), 2);
        drop(t);
        assert_eq!(Rc::strong_count(&nine), 1, "dropped with the vector");
        let mut lazy: ThinVec<u8, Global, Counted> = ThinVec::new_in(Global);
        assert!(lazy.extra().is_none());
        lazy.try_reserve_exact(1).expect("reserve");
        assert_eq!(lazy.extra().map(|c| *c.0), Some(7), "made with the first allocation");
    }

    #[test]
    fn the_flag_survives_growth_and_leaves_the_tail_alone() {
        let tail = b"sip:flagged@example.com";
        let mut t: ThinVec<Rc<u32>, Global> = ThinVec::with_tail_in(tail, 1, Global).expect("alloc");
        assert!(!t.flag());
        assert!(t.set_flag(true));
        assert!(t.flag());
        for i in 0..5 {
            push(&mut t, &Rc::new(i));
            assert!(t.flag(), "after {} pushes", i + 1);
            assert_eq!(t.tail(), tail);
        }
        assert!(t.set_flag(false));
        assert!(!t.flag());
        assert_eq!((t.tail(), vals(&t)), (&tail[..], vec![0, 1, 2, 3, 4]));
        let mut none = v();
        assert!(!none.set_flag(true), "nothing allocated: no room for a flag");
        assert!(!none.flag());
    }
}
