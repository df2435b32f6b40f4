//! Kamailio shared memory as a Rust allocator.
//!
//! Shared memory is mapped before Kamailio forks its workers, so a pointer
//! into it is valid, and means the same thing, in every process. Collections
//! of the store are built `new_in(Shm)`; whatever they allocate is visible
//! to every worker (under the store's locks).
//!
//! Kamailio's shm managers align blocks to 8 bytes (some to 16). A request
//! for more alignment (hashbrown's control groups want 16) is served by
//! over-allocating and aligning inside the block, with the block's real
//! start stored just before the aligned pointer; `deallocate` reads it back.

use allocator_api2::alloc::{AllocError, Allocator, Layout};
use core::ptr::NonNull;

use crate::host::sys;

/// What every shm block is aligned to, whatever the memory manager.
const SHM_ALIGN: usize = 8;

#[derive(Clone, Copy, Debug, Default)]
pub struct Shm;

fn raw_alloc(size: usize) -> Option<NonNull<u8>> {
    // SAFETY: [I3] any size is acceptable to shm_malloc; NULL means no memory.
    NonNull::new(unsafe { sys::sca_rs_shm_malloc(size) } as *mut u8)
}

// SAFETY: [I3] blocks come from shm_malloc and go back to shm_free only; every
// returned pointer is aligned to `layout.align()` and has `layout.size()`
// bytes after it inside the block.
unsafe impl Allocator for Shm {
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        if layout.size() == 0 {
            // a zero-sized block needs no memory, only a well-aligned pointer
            let dangling = NonNull::new(layout.align() as *mut u8).ok_or(AllocError)?;
            return Ok(NonNull::slice_from_raw_parts(dangling, 0));
        }
        if layout.align() <= SHM_ALIGN {
            let p = raw_alloc(layout.size()).ok_or(AllocError)?;
            if !(p.as_ptr() as usize).is_multiple_of(layout.align()) {
                // SAFETY: [I3] p was just returned by shm_malloc and is not used.
                unsafe { sys::sca_rs_shm_free(p.as_ptr().cast()) };
                return Err(AllocError);
            }
            return Ok(NonNull::slice_from_raw_parts(p, layout.size()));
        }
        // over-aligned: room for the alignment slack and the back pointer
        let extra = layout.align() + core::mem::size_of::<usize>();
        let total = layout.size().checked_add(extra).ok_or(AllocError)?;
        let base = raw_alloc(total).ok_or(AllocError)?;
        let start = base.as_ptr() as usize + core::mem::size_of::<usize>();
        let aligned = (start + layout.align() - 1) & !(layout.align() - 1);
        // SAFETY: [I3] aligned - size_of::<usize>() >= base and aligned + size
        // <= base + total by construction; the slot before `aligned` is
        // 8-aligned (aligned is a multiple of align > 8) and ours.
        unsafe { ((aligned - core::mem::size_of::<usize>()) as *mut usize).write(base.as_ptr() as usize) };
        let p = NonNull::new(aligned as *mut u8).ok_or(AllocError)?;
        Ok(NonNull::slice_from_raw_parts(p, layout.size()))
    }

    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        if layout.size() == 0 {
            return;
        }
        let block = if layout.align() <= SHM_ALIGN {
            ptr.as_ptr()
        } else {
            // SAFETY: [I3] allocate() stored the block start right before ptr.
            unsafe { ((ptr.as_ptr() as usize - core::mem::size_of::<usize>()) as *const usize).read() as *mut u8 }
        };
        // SAFETY: [I3] the caller passes a block that allocate() returned.
        unsafe { sys::sca_rs_shm_free(block.cast()) }
    }
}

/// Move `value` into shared memory for the lifetime of the process tree.
/// Returns a pointer that stays valid in every forked child. It is never
/// freed: it lives until Kamailio unmaps shared memory at exit (freeing it in
/// `mod_destroy` could block on an allocator lock left by a killed worker).
pub fn into_shared<T>(value: T) -> Result<NonNull<T>, AllocError> {
    let b = allocator_api2::boxed::Box::try_new_in(value, Shm).map_err(|_| AllocError)?;
    let (raw, _) = allocator_api2::boxed::Box::into_raw_with_allocator(b);
    NonNull::new(raw).ok_or(AllocError)
}

/// Like [`into_shared`], as a reference for the rest of the process's life
/// (the value is never freed, I3).
pub fn into_shared_ref<T>(value: T) -> Result<&'static T, AllocError> {
    // SAFETY: [I3] a fresh, initialised allocation in shm that is never
    // freed (it lives until Kamailio unmaps shared memory at exit).
    into_shared(value).map(|p| unsafe { p.as_ref() })
}

/// A static pointing to state in shared memory: set once in mod_init,
/// before fork, then read by every process (I1, I3).
pub struct SharedStatic<T: 'static>(crate::host::export::HostCell<*const T>);

impl<T: 'static> SharedStatic<T> {
    pub const fn new() -> Self {
        SharedStatic(crate::host::export::HostCell::new(core::ptr::null()))
    }
    /// Publish the state (mod_init only).
    pub fn set(&self, v: &'static T) {
        self.0.write(v)
    }
    /// The state; None before mod_init published it or after `take`.
    pub fn get(&self) -> Option<&'static T> {
        // SAFETY: [I1] written in mod_init before fork (or cleared in
        // mod_destroy, single process); [I3] points to shm never freed.
        unsafe { self.0.read().as_ref() }
    }
    /// Unpublish the state (mod_destroy), returning it a last time.
    pub fn take(&self) -> Option<&'static T> {
        let v = self.get();
        self.0.write(core::ptr::null());
        v
    }
}

impl<T: 'static> Default for SharedStatic<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// Shared memory free now, in bytes.
pub fn available() -> u64 {
    // SAFETY: [I3] reads the shm manager's counters; no memory is touched.
    unsafe { sys::sca_rs_shm_available() as u64 }
}

/// Shared memory in all, in bytes (0 when the manager does not say).
pub fn total() -> u64 {
    // SAFETY: [I3] fills a local mem_info from the shm manager's counters.
    unsafe { sys::sca_rs_shm_total() as u64 }
}

/// Helps a long run of small allocations in one process (the start-up
/// restore, before fork) past Kamailio's default memory manager's search.
///
/// q_malloc looks for a free fragment bucket by bucket, from the
/// request's size up (about 2,100 buckets of 8 bytes), and stops at the
/// first one that fits. While shared memory is still one big free
/// fragment, every small request walks all of them to reach it: a
/// million-row restore spent most of its time there. This keeps a block
/// of [`FillAid::SPAN`] bytes allocated, and once about that much has been
/// allocated since, allocates a new one and frees the old: the old one,
/// with used blocks on both sides, is then a free fragment about 1,000
/// buckets up (fewer as it is cut), which the next requests are cut from.
/// Other managers (TLSF, f_malloc) find a fragment without a walk; for
/// them it is an allocation and a free every few dozen rows. It changes where blocks are placed,
/// never what is allocated: without shared memory to spare it does
/// nothing.
#[derive(Debug)]
pub struct FillAid {
    held: Option<NonNull<u8>>,
    /// `available()` when the block in use was freed for the next requests.
    mark: u64,
}

impl FillAid {
    /// Small enough that a walk to it is short (about 1,000 buckets up),
    /// big enough to serve a few dozen requests. Measured on a 1M-row
    /// restore with q_malloc: 2 KiB stored in 3.5 s but left 12 bytes a
    /// row of split-off ends in use, 4 KiB 3.7-4.0 s and 4.7 bytes, 8 KiB
    /// 4.2-4.4 s and 1.2 bytes (without it: 10.2 s).
    pub const SPAN: usize = 8192;

    pub fn new() -> Self {
        FillAid { held: raw_alloc(Self::SPAN), mark: available() }
    }

    /// Call between allocations (a restored row): hands the next span over
    /// once the last one is used up.
    pub fn tick(&mut self) {
        let now = available();
        if self.mark.saturating_sub(now) < Self::SPAN as u64 {
            return;
        }
        let next = raw_alloc(Self::SPAN);
        if let Some(old) = core::mem::replace(&mut self.held, next) {
            // SAFETY: [I3] `old` came from shm_malloc in this value and is
            // freed once, here.
            unsafe { sys::sca_rs_shm_free(old.as_ptr().cast()) };
        }
        self.mark = available();
    }
}

impl Default for FillAid {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for FillAid {
    fn drop(&mut self) {
        if let Some(p) = self.held.take() {
            // SAFETY: [I3] as in `tick`: allocated here, freed once.
            unsafe { sys::sca_rs_shm_free(p.as_ptr().cast()) };
        }
    }
}
