//! The module clock: one place for "now". Wall-clock seconds for
//! subscription expiry and everything shown or stored (the C module's
//! `time(NULL)`), wall-clock milliseconds for the cluster's timestamps
//! (compared across nodes), monotonic milliseconds for keepalive's ping
//! scheduling (immune to clock steps).

use std::time::{SystemTime, UNIX_EPOCH};

/// Wall clock, seconds since the epoch.
pub fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// Wall clock, milliseconds since the epoch.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Monotonic clock (CLOCK_MONOTONIC), milliseconds.
pub fn mono_ms() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: [I0] clock_gettime writes the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

/// `ctime_r()`'s text (local time, ending in a newline), as the C module
/// shows times.
pub fn ctime(t: i64) -> String {
    const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let tt = t as libc::time_t;
    // SAFETY: [I0] an all-zero tm is a valid value to be overwritten.
    let mut tm: libc::tm = unsafe { core::mem::zeroed() };
    // SAFETY: [I0] localtime_r reads tt and writes tm, both ours.
    if unsafe { libc::localtime_r(&tt, &mut tm) }.is_null() {
        return "?\n".into();
    }
    format!(
        "{} {}{:3} {:02}:{:02}:{:02} {}\n",
        DAYS.get(tm.tm_wday as usize).unwrap_or(&"???"),
        MONTHS.get(tm.tm_mon as usize).unwrap_or(&"???"),
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec,
        tm.tm_year as i64 + 1900
    )
}
