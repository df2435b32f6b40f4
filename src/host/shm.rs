//! Kamailio shared memory as a Rust allocator.
//!
//! Shared memory is mapped before Kamailio forks its workers, so a pointer
//! into it is valid, and means the same thing, in every process. Collections
//! of the store are built `new_in(Shm)`; whatever they allocate is visible
//! to every worker (under the store's locks).
//!
//! Kamailio's shm allocator aligns to 8 bytes (16 with some managers); a
//! request for more alignment than a returned block has is refused
//! (`AllocError`), never silently misaligned.

use allocator_api2::alloc::{AllocError, Allocator, Layout};
use core::ptr::NonNull;

use crate::sys;

#[derive(Clone, Copy, Debug, Default)]
pub struct Shm;

// SAFETY: blocks come from shm_malloc and go back to shm_free only;
// every returned block is checked to be at least `layout.size()` long
// (shm_malloc's contract) and aligned to `layout.align()`.
unsafe impl Allocator for Shm {
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        if layout.size() == 0 {
            // a zero-sized block needs no memory, only a well-aligned pointer
            let dangling = NonNull::new(layout.align() as *mut u8).ok_or(AllocError)?;
            return Ok(NonNull::slice_from_raw_parts(dangling, 0));
        }
        // SAFETY: any size is acceptable to shm_malloc; NULL means no memory.
        let p = unsafe { sys::sca_rs_shm_malloc(layout.size()) } as *mut u8;
        let p = NonNull::new(p).ok_or(AllocError)?;
        if (p.as_ptr() as usize) % layout.align() != 0 {
            // SAFETY: p was just returned by shm_malloc and is not used.
            unsafe { sys::sca_rs_shm_free(p.as_ptr().cast()) };
            return Err(AllocError);
        }
        Ok(NonNull::slice_from_raw_parts(p, layout.size()))
    }

    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        if layout.size() != 0 {
            // SAFETY: the caller passes a block that allocate() returned.
            unsafe { sys::sca_rs_shm_free(ptr.as_ptr().cast()) }
        }
    }
}

/// Move `value` into shared memory for the lifetime of the process tree.
/// Returns a pointer that stays valid in every forked child; it is freed
/// by [`free_shared`] in `mod_destroy` only.
pub fn into_shared<T>(value: T) -> Result<NonNull<T>, AllocError> {
    let b = allocator_api2::boxed::Box::try_new_in(value, Shm).map_err(|_| AllocError)?;
    let (raw, _) = allocator_api2::boxed::Box::into_raw_with_allocator(b);
    NonNull::new(raw).ok_or(AllocError)
}

/// Drop and free what [`into_shared`] made.
///
/// # Safety
/// `p` comes from `into_shared::<T>`, is freed once, and no process uses it
/// afterwards (Kamailio's destroy runs in the main process after children
/// have exited).
pub unsafe fn free_shared<T>(p: NonNull<T>) {
    // SAFETY: per the contract above, p is a live Box<T, Shm> allocation.
    drop(unsafe { allocator_api2::boxed::Box::from_raw_in(p.as_ptr(), Shm) });
}
