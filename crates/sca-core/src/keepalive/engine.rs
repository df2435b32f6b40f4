//! The destinations table behind one lock, for memory shared by processes.
//!
//! Unlike [`crate::sync::Locked`], the lock can also be taken and released
//! without a guard: the keepalive API that other Kamailio modules bind
//! (`lock_destination_list` / `unlock_destination_list`) hands the lock to C
//! code as two separate calls.

use allocator_api2::alloc::Allocator;
use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};

use super::table::{Config, Table};
use crate::sync::RawLock;

pub struct Engine<A: Allocator + Clone, L: RawLock, H> {
    lock: L,
    table: UnsafeCell<Table<A, H>>,
}

// SAFETY: [I19] the table is only reached through the lock (a guard, or the
// raw lock's holder via `table_held`); the lock works across threads and
// processes (RawLock's contract).
unsafe impl<A: Allocator + Clone + Send, L: RawLock + Sync, H: Send> Sync for Engine<A, L, H> {}
// SAFETY: [I19] moving the engine moves the table; nobody holds the lock then.
unsafe impl<A: Allocator + Clone + Send, L: RawLock + Send, H: Send> Send for Engine<A, L, H> {}

impl<A: Allocator + Clone, L: RawLock, H: Copy + Default> Engine<A, L, H> {
    pub fn new_in(cfg: Config, alloc: A) -> Self {
        Engine { lock: L::uninit(), table: UnsafeCell::new(Table::new_in(cfg, alloc)) }
    }

    /// Initialise the lock, once the engine sits at its final address.
    pub fn init(&self) -> bool {
        self.lock.init()
    }

    pub fn lock(&self) -> TableGuard<'_, A, L, H> {
        self.lock.lock();
        TableGuard { engine: self }
    }

    /// Take the lock without a guard.
    ///
    /// # Safety
    /// The caller releases it with [`Engine::unlock_raw`] and, meanwhile,
    /// reaches the table only through [`Engine::table_held`] (a [`lock`]
    /// by the same holder would deadlock).
    ///
    /// [`lock`]: Engine::lock
    pub unsafe fn lock_raw(&self) {
        self.lock.lock();
    }

    /// # Safety
    /// The caller holds the lock through [`Engine::lock_raw`].
    pub unsafe fn unlock_raw(&self) {
        self.lock.unlock();
    }

    /// The table, while the caller holds the lock through [`Engine::lock_raw`].
    ///
    /// # Safety
    /// The caller holds the raw lock, and no other reference to the table
    /// made by this function is alive.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn table_held(&self) -> &mut Table<A, H> {
        // SAFETY: [I19] per the contract, the lock excludes every other user.
        unsafe { &mut *self.table.get() }
    }

    /// Release host resources of the lock (at shutdown).
    pub fn destroy(&self) {
        self.lock.destroy();
    }
}

/// Holds the engine's lock until dropped (also while unwinding).
pub struct TableGuard<'a, A: Allocator + Clone, L: RawLock, H> {
    engine: &'a Engine<A, L, H>,
}

impl<A: Allocator + Clone, L: RawLock, H> Deref for TableGuard<'_, A, L, H> {
    type Target = Table<A, H>;
    fn deref(&self) -> &Table<A, H> {
        // SAFETY: [I19] the guard holds the lock.
        unsafe { &*self.engine.table.get() }
    }
}

impl<A: Allocator + Clone, L: RawLock, H> DerefMut for TableGuard<'_, A, L, H> {
    fn deref_mut(&mut self) -> &mut Table<A, H> {
        // SAFETY: [I19] the guard holds the lock and is borrowed mutably.
        unsafe { &mut *self.engine.table.get() }
    }
}

impl<A: Allocator + Clone, L: RawLock, H> Drop for TableGuard<'_, A, L, H> {
    fn drop(&mut self) {
        self.engine.lock.unlock();
    }
}

#[cfg(test)]
mod tests {
    use super::super::table::{Added, Now, PingResult, State};
    use super::*;
    use crate::sync::SpinLock;
    use allocator_api2::alloc::Global;
    use std::sync::Arc;

    type E = Engine<Global, SpinLock, u32>;

    fn now(ms: u64) -> Now {
        Now { wall: (ms / 1000) as i64, mono_ms: ms }
    }

    /// Adds, deletes, pings and replies from several threads at once, as
    /// Kamailio's processes do (RPC, script, timer, reply handlers): no
    /// panic, and replies for deleted destinations change nothing.
    #[test]
    fn concurrent_adds_deletes_and_replies() {
        let e: Arc<E> = Arc::new(Engine::new_in(
            Config { default_interval_ms: 1, first_ping_delay_ms: 0, delete_counter: 3, ..Config::default() },
            Global,
        ));
        assert!(e.init());
        let mut threads = Vec::new();
        for t in 0..4u64 {
            let e = Arc::clone(&e);
            threads.push(std::thread::spawn(move || {
                let mut sent = Vec::new();
                for i in 0..2000u64 {
                    let uri = format!("h{}", i % 17);
                    match (i + t) % 5 {
                        0 | 1 => {
                            let _ = e.lock().add(uri.as_bytes(), b"o", 0, None, Some(t as u32), now(i));
                        }
                        2 => {
                            e.lock().remove(uri.as_bytes(), b"o");
                        }
                        3 => e.lock().due(now(i), 8, &mut sent),
                        _ => {
                            if let Some(p) = sent.pop() {
                                let r = if i % 3 == 0 { PingResult::Reply(200) } else { PingResult::Local(408) };
                                let _ = e.lock().on_result(p.id, p.seq, r, now(i));
                            }
                            while e.lock().pop_event().is_some() {}
                        }
                    }
                }
            }));
        }
        for t in threads {
            t.join().expect("no panic");
        }
        let g = e.lock();
        assert!(g.len() <= 17);
        for d in g.list() {
            assert!(matches!(d.state, State::Unknown | State::Up | State::Down));
        }
    }

    #[test]
    fn raw_lock_for_the_c_api() {
        let e: E = Engine::new_in(Config::default(), Global);
        assert!(e.init());
        // SAFETY: [I19] paired lock/unlock; the table is reached only through table_held meanwhile.
        unsafe {
            e.lock_raw();
            let t = e.table_held();
            assert!(matches!(t.add(b"h", b"o", 0, None, None, now(0)), Ok(Added::New { .. })));
            e.unlock_raw();
        }
        assert_eq!(e.lock().len(), 1);
    }
}
