//! Logging into Kamailio's log, at Kamailio's levels.
//!
//! The message is formatted in Rust into a stack buffer and handed to the
//! shim as data (`"%.*s"`), never as a format string: a `%` in a SIP header
//! that ends up in a log line cannot reach printf. The level is checked
//! before anything is formatted.

use core::fmt::{self, Write};

use crate::host::sys;

pub const L_ALERT: i32 = -5;
pub const L_BUG: i32 = -4;
pub const L_CRIT: i32 = -2;
pub const L_ERR: i32 = -1;
pub const L_WARN: i32 = 0;
pub const L_NOTICE: i32 = 1;
pub const L_INFO: i32 = 2;
pub const L_DBG: i32 = 3;

/// Longest log line; longer messages are cut and end in "...".
const LINE_MAX: usize = 1024;

struct LineBuf {
    buf: [u8; LINE_MAX],
    len: usize,
    cut: bool,
}

impl Write for LineBuf {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = LINE_MAX - 3 - self.len;
        let n = s.len().min(room);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        if n < s.len() {
            self.cut = true;
        }
        Ok(())
    }
}

pub fn enabled(level: i32) -> bool {
    // SAFETY: [I0] reads Kamailio's debug level; no preconditions.
    unsafe { sys::sca_rs_log_enabled(level) != 0 }
}

/// Write one log line. `prefix` and `func` are NUL-terminated literals
/// made by the macros below.
pub fn write(level: i32, prefix: &'static str, func: &'static str, args: fmt::Arguments<'_>) {
    if !enabled(level) {
        return;
    }
    let mut line = LineBuf { buf: [0; LINE_MAX], len: 0, cut: false };
    let _ = line.write_fmt(args);
    if line.cut {
        line.buf[line.len..line.len + 3].copy_from_slice(b"...");
        line.len += 3;
    }
    debug_assert!(prefix.ends_with('\0') && func.ends_with('\0'));
    // SAFETY: [I14] prefix and func are NUL-terminated 'static strings (the
    // macros append "\0"); msg/len describe initialised bytes of `line`.
    unsafe {
        sys::sca_rs_log(
            level,
            prefix.as_ptr().cast(),
            func.as_ptr().cast(),
            line.buf.as_ptr().cast(),
            line.len as i32,
        )
    }
}

/// Display a byte string from SIP lossily, for log lines.
pub struct B<'a>(pub &'a [u8]);

impl fmt::Display for B<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for chunk in self.0.utf8_chunks() {
            f.write_str(chunk.valid())?;
            for b in chunk.invalid() {
                write!(f, "\\x{b:02x}")?;
            }
        }
        Ok(())
    }
}

#[macro_export]
macro_rules! klog {
    ($lvl:expr, $($arg:tt)+) => {
        $crate::host::log::write(
            $lvl,
            concat!("sca_rs [", file!(), ":", line!(), "]: \0"),
            concat!(module_path!(), "\0"),
            format_args!($($arg)+),
        )
    };
}
#[macro_export]
macro_rules! lm_err { ($($arg:tt)+) => { $crate::klog!($crate::host::log::L_ERR, $($arg)+) }; }
#[macro_export]
macro_rules! lm_warn { ($($arg:tt)+) => { $crate::klog!($crate::host::log::L_WARN, $($arg)+) }; }
#[macro_export]
macro_rules! lm_notice { ($($arg:tt)+) => { $crate::klog!($crate::host::log::L_NOTICE, $($arg)+) }; }
#[macro_export]
macro_rules! lm_info { ($($arg:tt)+) => { $crate::klog!($crate::host::log::L_INFO, $($arg)+) }; }
#[macro_export]
macro_rules! lm_dbg { ($($arg:tt)+) => { $crate::klog!($crate::host::log::L_DBG, $($arg)+) }; }
#[macro_export]
macro_rules! lm_crit { ($($arg:tt)+) => { $crate::klog!($crate::host::log::L_CRIT, $($arg)+) }; }
