//! Kamailio locks (`gen_lock_t`) for the store.
//!
//! A `KLock` is embedded in the structure it protects, which lives in shared
//! memory, and is initialised in place with `lock_init` once there (Debian's
//! build uses futex locks: a word in shm, valid across processes).

use core::cell::UnsafeCell;

use sca_core::sync::RawLock;

use crate::sys;

pub struct KLock(UnsafeCell<sys::gen_lock_t>);

// SAFETY: gen_lock_t is designed to be shared between processes and
// threads; all access goes through Kamailio's lock functions.
unsafe impl Sync for KLock {}
// SAFETY: moving an uninitialised or unheld lock is fine; the store never
// moves a lock after init (its slots vector is never resized).
unsafe impl Send for KLock {}

// SAFETY: lock_get/lock_release are Kamailio's mutual exclusion primitives
// for processes sharing the lock's memory.
unsafe impl RawLock for KLock {
    fn uninit() -> Self {
        KLock(UnsafeCell::new(sys::gen_lock_t::default()))
    }
    fn init(&self) -> bool {
        // SAFETY: the lock sits at its final address and nobody holds it.
        unsafe { sys::sca_rs_lock_init(self.0.get()) == 0 }
    }
    fn lock(&self) {
        // SAFETY: initialised by init() (the store guarantees it).
        unsafe { sys::sca_rs_lock_get(self.0.get()) }
    }
    fn try_lock(&self) -> bool {
        // SAFETY: initialised by init(); lock_try never waits.
        unsafe { sys::sca_rs_lock_try(self.0.get()) == 0 }
    }
    fn unlock(&self) {
        // SAFETY: called by the guard that holds the lock.
        unsafe { sys::sca_rs_lock_release(self.0.get()) }
    }
    fn destroy(&self) {
        // SAFETY: at shutdown, nobody uses the lock any more.
        unsafe { sys::sca_rs_lock_destroy(self.0.get()) }
    }
}
