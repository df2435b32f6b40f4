//! Processes and timers: the core's timer registration, extra timer
//! processes, process ranks, the server id.

use core::ffi::{c_char, c_int, CStr};

use crate::host::sys;

/// A timer callback as [`entry!`](crate::entry)'s `timer` kind makes it.
pub type TimerFn = unsafe extern "C" fn(core::ffi::c_uint, *mut core::ffi::c_void);

/// `child_init`'s rank for the main process (where extra processes fork).
pub const PROC_MAIN: c_int = sys::PROC_MAIN as c_int;

/// A callback every `interval_s` seconds in the core's timer process.
/// mod_init only.
pub fn register_timer(f: TimerFn, interval_s: u32) -> Result<(), ()> {
    // SAFETY: [I1] called from mod_init (before fork), where timers are
    // registered; f is an entry!-made timer callback.
    let rc = unsafe { sys::register_timer(Some(f), core::ptr::null_mut(), interval_s) };
    if rc < 0 { Err(()) } else { Ok(()) }
}

/// Declare `n` extra timer processes (mod_init only).
pub fn register_basic_timers(n: c_int) -> Result<(), ()> {
    // SAFETY: [I1] called from mod_init, where extra processes are declared.
    if unsafe { sys::register_basic_timers(n) } < 0 { Err(()) } else { Ok(()) }
}

/// Fork a timer process calling `f` every `interval_s` seconds
/// (child_init(PROC_MAIN) only, after [`register_basic_timers`]).
pub fn fork_basic_timer(name: &'static CStr, f: TimerFn, interval_s: c_int) -> Result<(), ()> {
    // SAFETY: [I1] child_init(PROC_MAIN) is where extra processes fork;
    // the name is a static C string.
    let rc = unsafe {
        sys::fork_basic_timer(sys::PROC_TIMER, name.as_ptr() as *mut c_char, 0, Some(f), core::ptr::null_mut(), interval_s)
    };
    if rc < 0 { Err(()) } else { Ok(()) }
}

/// The core's `server_id` (set from the config before modules init).
pub fn server_id() -> i32 {
    // SAFETY: [I1] a core global written while the config is parsed,
    // before any module code runs; read only afterwards.
    unsafe { sys::server_id }
}
