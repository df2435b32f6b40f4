//! Locking abstraction for the store.
//!
//! The store lives in memory shared by forked processes, so its locks must
//! work across processes: in the module they are Kamailio `gen_lock_t`s in
//! shared memory (see `src/host/lock.rs`); in unit tests a spin lock on the
//! heap does. Both implement [`RawLock`].

use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicBool, Ordering};

/// A lock that can be placed inside the structure it protects.
///
/// # Safety
/// Implementors guarantee mutual exclusion between `lock` and `unlock`
/// across every thread and process that shares the value, once `init` has
/// run on the value at its final address.
pub unsafe trait RawLock {
    /// An unusable value, to be placed then initialised with [`RawLock::init`].
    fn uninit() -> Self;
    /// Initialise in place (the value never moves afterwards).
    /// Returns false when the host could not initialise the lock.
    fn init(&self) -> bool;
    fn lock(&self);
    /// Take the lock if nobody holds it; never waits.
    fn try_lock(&self) -> bool;
    fn unlock(&self);
    /// Release host resources; called once, when nobody can lock any more.
    fn destroy(&self) {}
}

/// A value protected by a [`RawLock`] stored next to it.
pub struct Locked<L: RawLock, T> {
    lock: L,
    value: UnsafeCell<T>,
}

// SAFETY: [I18] access to `value` only happens through a guard, which holds the lock.
unsafe impl<L: RawLock + Sync, T: Send> Sync for Locked<L, T> {}
// SAFETY: [I18] moving the container moves the value; the lock is not held then.
unsafe impl<L: RawLock + Send, T: Send> Send for Locked<L, T> {}

impl<L: RawLock, T> Locked<L, T> {
    pub fn new(value: T) -> Self {
        Locked { lock: L::uninit(), value: UnsafeCell::new(value) }
    }

    /// Must be called once the value sits at its final address.
    pub fn init(&self) -> bool {
        self.lock.init()
    }

    pub fn lock(&self) -> Guard<'_, L, T> {
        self.lock.lock();
        Guard { owner: self }
    }

    /// The guard if nobody holds the lock; never waits.
    pub fn try_lock(&self) -> Option<Guard<'_, L, T>> {
        // (not then_some: a Guard built eagerly would unlock on drop)
        self.lock.try_lock().then(|| Guard { owner: self })
    }

    /// [`Locked::try_lock`] up to `attempts` times, calling `pause()`
    /// between tries.
    pub fn try_lock_within(&self, attempts: u32, mut pause: impl FnMut()) -> Option<Guard<'_, L, T>> {
        for i in 0..attempts {
            if i > 0 {
                pause();
            }
            if let Some(g) = self.try_lock() {
                return Some(g);
            }
        }
        None
    }

    pub fn destroy(&self) {
        self.lock.destroy();
    }
}

/// Holds the lock until dropped.
pub struct Guard<'a, L: RawLock, T> {
    owner: &'a Locked<L, T>,
}

impl<L: RawLock, T> Deref for Guard<'_, L, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: [I18] the guard holds the lock, so no other reference exists.
        unsafe { &*self.owner.value.get() }
    }
}

impl<L: RawLock, T> DerefMut for Guard<'_, L, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: [I18] the guard holds the lock and is borrowed mutably.
        unsafe { &mut *self.owner.value.get() }
    }
}

impl<L: RawLock, T> Drop for Guard<'_, L, T> {
    fn drop(&mut self) {
        self.owner.lock.unlock();
    }
}

/// A spin lock on an atomic: for unit tests and for anything else that
/// needs a lock without a host. Works across processes too if placed in
/// shared memory, but the module uses Kamailio's locks.
pub struct SpinLock(AtomicBool);

// SAFETY: [I18] compare_exchange(false -> true) with Acquire admits one holder;
// unlock stores false with Release.
unsafe impl RawLock for SpinLock {
    fn uninit() -> Self {
        SpinLock(AtomicBool::new(false))
    }
    fn init(&self) -> bool {
        self.0.store(false, Ordering::Release);
        true
    }
    fn lock(&self) {
        while self
            .0
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            core::hint::spin_loop();
        }
    }
    fn try_lock(&self) -> bool {
        self.0.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed).is_ok()
    }
    fn unlock(&self) {
        self.0.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn guard_gives_exclusive_access_across_threads() {
        let l: Arc<Locked<SpinLock, u64>> = Arc::new(Locked::new(0));
        assert!(l.init());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let l = Arc::clone(&l);
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        let mut g = l.lock();
                        // a non-atomic read-modify-write that loses updates without the lock
                        let v = *g;
                        *g = v + 1;
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        assert_eq!(*l.lock(), 40_000);
    }
}
