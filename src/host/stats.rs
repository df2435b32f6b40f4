//! Kamailio statistics (the core's counters API, `core/counters.h`): what
//! `kamcmd stats.get_statistics` (kex), `kamcmd cnt.get` (counters) and
//! xhttp_prom (`kamailio_<group>_<name>`) show.
//!
//! - [`Counter`]: a per-process counter, as Kamailio's own (tm, sl): each
//!   process adds to its own row of the core's table, readers sum the rows.
//!   An increment is one add to this process's row: no lock, no atomic.
//! - [`register_gauge`]: a value computed when someone asks, by a function
//!   that reads the module's state (no second copy of it to keep right).
//!
//! Both are registered in mod_init, before the core sizes its table for the
//! processes it is about to fork ([I20]).

use core::ffi::{c_long, c_uint, CStr};
use std::sync::atomic::{AtomicU16, Ordering::Relaxed};
use std::sync::Mutex;

use crate::host::sys;

/// A per-process counter; a `static`, registered once in mod_init.
pub struct Counter {
    /// The core's handle (0: not registered; increments are then dropped).
    /// Written in mod_init before fork, read-only afterwards: each process
    /// has its own copy of this static.
    id: AtomicU16,
    pub name: &'static CStr,
    pub doc: &'static CStr,
}

impl Counter {
    pub const fn new(name: &'static CStr, doc: &'static CStr) -> Counter {
        Counter {
            id: AtomicU16::new(0),
            name,
            doc,
        }
    }

    /// Register in `group` (mod_init only).
    pub fn register(&self, group: &'static CStr) -> Result<(), String> {
        let mut id: u16 = 0;
        // SAFETY: [I20] mod_init, before the counters' prefork set-up; the
        // strings are static and NUL-terminated (the core copies them).
        let rc = unsafe {
            sys::sca_rs_counter_register(
                &mut id,
                group.as_ptr(),
                self.name.as_ptr(),
                self.doc.as_ptr(),
            )
        };
        if rc < 0 || id == 0 {
            return Err(format!(
                "cannot register the statistic {}:{}",
                group.to_string_lossy(),
                self.name.to_string_lossy()
            ));
        }
        self.id.store(id, Relaxed);
        Ok(())
    }

    /// Add 1 in this process's row.
    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }

    /// Add `n` (saturated to the C `int` the core takes).
    #[inline]
    pub fn add(&self, n: u64) {
        let id = self.id.load(Relaxed);
        if id == 0 || n == 0 {
            return;
        }
        // SAFETY: [I20] id is a handle the core gave in mod_init; the shim
        // writes this process's row only, and does nothing when the core's
        // table is not (or no longer) there.
        unsafe { sys::sca_rs_counter_add(id, n.min(i32::MAX as u64) as i32) };
    }
}

/// A gauge's reader: the current value, computed from shared state.
pub type GaugeFn = fn() -> i64;

/// Gauges by key (the key is their callback parameter). Filled in
/// mod_init; every process has its copy after fork, and Kamailio
/// processes are single-threaded, so the lock is never contended.
static GAUGES: Mutex<Vec<GaugeFn>> = Mutex::new(Vec::new());

/// Register a gauge `group:name` read through `f` (mod_init only).
pub fn register_gauge(
    group: &'static CStr,
    name: &'static CStr,
    doc: &'static CStr,
    f: GaugeFn,
) -> Result<(), String> {
    let err = || {
        format!(
            "cannot register the statistic {}:{}",
            group.to_string_lossy(),
            name.to_string_lossy()
        )
    };
    let mut g = GAUGES.lock().map_err(|_| err())?;
    let key = g.len() as c_uint;
    // SAFETY: [I20] mod_init, before the counters' prefork set-up; static
    // NUL-terminated strings; the key is a number (never dereferenced).
    if unsafe { sys::sca_rs_gauge_register(group.as_ptr(), name.as_ptr(), doc.as_ptr(), key) } < 0 {
        return Err(err());
    }
    g.push(f);
    Ok(())
}

crate::entry! {
    /// The core reads a gauge (shim callback): `key` is the index given at
    /// registration.
    #[no_mangle]
    c pub fn sca_rs_gauge_read(key: c_uint) -> c_long ["statistics read", 0] {
        let f = GAUGES.lock().ok().and_then(|g| g.get(key as usize).copied());
        f.map_or(0, |f| f() as c_long)
    }
}
