//! Kamailio's `str` (pointer + length, not NUL-terminated).

use crate::host::sys;

/// View a Kamailio `str` as bytes.
///
/// # Safety
/// `s.s` points to `s.len` readable bytes that outlive `'a` (or `s.len <= 0`).
pub unsafe fn as_bytes<'a>(s: &sys::str_) -> &'a [u8] {
    if s.s.is_null() || s.len <= 0 {
        return &[];
    }
    // SAFETY: [I13] per the function contract.
    unsafe { core::slice::from_raw_parts(s.s as *const u8, s.len as usize) }
}

/// A `str` borrowing `b` (Kamailio treats it as read-only where we pass it).
pub fn from_bytes(b: &[u8]) -> sys::str_ {
    sys::str_ { s: b.as_ptr() as *mut _, len: b.len().min(i32::MAX as usize) as i32 }
}

/// View a possibly NULL `str *` as bytes: None for NULL.
///
/// # Safety
/// `p` is NULL or points to a `str` as [`as_bytes`] wants, both outliving `'a`.
pub unsafe fn opt_bytes<'a>(p: *const sys::str_) -> Option<&'a [u8]> {
    // SAFETY: [I13] per the function contract.
    unsafe { p.as_ref().map(|s| as_bytes(s)) }
}
