//! Kamailio locks (`gen_lock_t`) for the store.
//!
//! A `KLock` is embedded in the structure it protects, which lives in shared
//! memory, and is initialised in place with `lock_init` once there (Debian's
//! build uses futex locks: a word in shm, valid across processes).

use core::cell::{Cell, UnsafeCell};
use core::ptr::null_mut;

use sca_core::sync::RawLock;

use crate::host::sys;

pub struct KLock(UnsafeCell<sys::gen_lock_t>);

// Kamailio's children exit straight from their SIGTERM/SIGINT handler,
// wherever they are. One that did so holding a lock of ours would leave it
// held for good and what it protects half changed, and the final DB flush
// would have to give that part up. So a process holds these signals back
// while it holds (or waits for) any of our locks; a deferred signal is
// delivered the moment the last one is released. Two sigprocmask calls per
// outermost lock; Kamailio processes are single-threaded, so the nesting
// depth is per thread = per process.
thread_local! {
    static DEPTH: Cell<u32> = const { Cell::new(0) };
    static SAVED: Cell<Option<libc::sigset_t>> = const { Cell::new(None) };
}

fn exit_signals() -> libc::sigset_t {
    // SAFETY: [I5] sigset_t is plain data; sigemptyset initialises it fully.
    unsafe {
        let mut set: libc::sigset_t = core::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        set
    }
}

/// Hold SIGTERM/SIGINT back (outermost call saves the mask).
fn defer_exit_signals() {
    DEPTH.with(|d| {
        if d.get() == 0 {
            let set = exit_signals();
            // SAFETY: [I5] a valid set and a place for the old mask.
            let mut old: libc::sigset_t = unsafe { core::mem::zeroed() };
            // SAFETY: [I5] as above; pthread_sigmask only reads/writes these.
            if unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old) } == 0 {
                SAVED.with(|s| s.set(Some(old)));
            }
        }
        d.set(d.get() + 1);
    });
}

/// Undo [`defer_exit_signals`]; the outermost call restores the mask, and a
/// signal that arrived meanwhile is delivered now.
fn allow_exit_signals() {
    DEPTH.with(|d| {
        let n = d.get().saturating_sub(1);
        d.set(n);
        if n == 0 {
            if let Some(old) = SAVED.with(|s| s.take()) {
                // SAFETY: [I5] restores the mask saved by the outermost defer.
                unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, null_mut()) };
            }
        }
    });
}

// SAFETY: [I4] gen_lock_t is designed to be shared between processes and
// threads; all access goes through Kamailio's lock functions.
unsafe impl Sync for KLock {}
// SAFETY: [I4] moving an uninitialised or unheld lock is fine; the store never
// moves a lock after init (its slots vector is never resized).
unsafe impl Send for KLock {}

// SAFETY: [I4] lock_get/lock_release are Kamailio's mutual exclusion primitives
// for processes sharing the lock's memory.
unsafe impl RawLock for KLock {
    fn uninit() -> Self {
        KLock(UnsafeCell::new(sys::gen_lock_t::default()))
    }
    fn init(&self) -> bool {
        // SAFETY: [I4] the lock sits at its final address and nobody holds it.
        unsafe { sys::sca_rs_lock_init(self.0.get()) == 0 }
    }
    fn lock(&self) {
        defer_exit_signals();
        // SAFETY: [I4] initialised by init() (the store guarantees it).
        unsafe { sys::sca_rs_lock_get(self.0.get()) }
    }
    fn try_lock(&self) -> bool {
        defer_exit_signals();
        // SAFETY: [I4] initialised by init(); lock_try never waits.
        let taken = unsafe { sys::sca_rs_lock_try(self.0.get()) == 0 };
        if !taken {
            allow_exit_signals();
        }
        taken
    }
    fn unlock(&self) {
        // SAFETY: [I4] called by the guard that holds the lock.
        unsafe { sys::sca_rs_lock_release(self.0.get()) };
        allow_exit_signals();
    }
    fn destroy(&self) {
        // SAFETY: [I4] at shutdown, nobody uses the lock any more.
        unsafe { sys::sca_rs_lock_destroy(self.0.get()) }
    }
}

/// `gen_lock_t`'s size in C against the bindings' (mod_init): a mismatch
/// means the headers do not match the build.
pub fn check_layout() -> Result<(), String> {
    // SAFETY: [I0] a size query without side effects.
    let c_lock = unsafe { sys::sca_rs_gen_lock_size() };
    if c_lock != core::mem::size_of::<sys::gen_lock_t>() {
        return Err(format!(
            "gen_lock_t is {c_lock} bytes in C but {} in the bindings: headers do not match the build",
            core::mem::size_of::<sys::gen_lock_t>()
        ));
    }
    Ok(())
}
