//! `keepalive.*` RPC commands, with the C module's output and faults
//! (`kamcmd` prints them alike), except `last up` / `last down`, which
//! the C module swapped (Kamailio issue #3790).

use core::ffi::{c_char, c_int, c_void};
use std::ffi::CString;

use sca_core::keepalive::DestInfo;

use crate::host::export::{rpc, RpcDoc};
use crate::host::guard::guard_or;
use crate::host::kstr;
use crate::sys;

use super::Hooks;

static DOC_LIST: RpcDoc = RpcDoc::new(c"Return the content of keepalive destination groups");
static DOC_ADD: RpcDoc = RpcDoc::new(
    c"add new destination to keepalive memory. Usage: keepalive.add sip:user@domain listname",
);
static DOC_DEL: RpcDoc = RpcDoc::new(
    c"delete destination from keepalive memory. Usage: keepalive.del sip:user@domain listname",
);
static DOC_GET: RpcDoc = RpcDoc::new(
    c"get destination details from keepalive memory. Usage: keepalive.get sip:user@domain listname",
);
static DOC_FLUSH: RpcDoc = RpcDoc::new(c"Flush data from keepalive memory. Usage: keepalive.flush");

/// Entries for the module's RPC table (src/module/rpc.rs).
pub const RPCS: [sys::rpc_export_t; 5] = [
    rpc(c"keepalive.list", rpc_list, DOC_LIST.ptr()),
    rpc(c"keepalive.add", rpc_add, DOC_ADD.ptr()),
    rpc(c"keepalive.del", rpc_del, DOC_DEL.ptr()),
    rpc(c"keepalive.get", rpc_get, DOC_GET.ptr()),
    rpc(c"keepalive.flush", rpc_flush, DOC_FLUSH.ptr()),
];

/// The RPC transport's functions for one call.
struct Rpc<'a> {
    api: &'a sys::rpc_t,
    ctx: *mut c_void,
}

fn cstring(b: &[u8]) -> CString {
    CString::new(b.iter().map(|&c| if c == 0 { b'?' } else { c }).collect::<Vec<u8>>()).unwrap_or_default()
}

impl Rpc<'_> {
    fn fault(&self, code: c_int, msg: &str) {
        let m = cstring(msg.as_bytes());
        if let Some(f) = self.api.fault {
            // SAFETY: "%s" and one NUL-terminated string.
            unsafe { f(self.ctx, code, c"%s".as_ptr() as *mut c_char, m.as_ptr()) }
        }
    }

    fn printf(&self, line: &str) {
        let m = cstring(line.as_bytes());
        if let Some(f) = self.api.rpl_printf {
            // SAFETY: "%s" and one NUL-terminated string.
            unsafe { f(self.ctx, c"%s".as_ptr() as *mut c_char, m.as_ptr()) };
        }
    }

    /// `scan("SS")` as the C module: how many were read, and the two.
    fn scan_two(&self) -> (c_int, Vec<u8>, Vec<u8>) {
        let Some(f) = self.api.scan else { return (0, Vec::new(), Vec::new()) };
        let mut a = sys::str_ { s: core::ptr::null_mut(), len: 0 };
        let mut b = sys::str_ { s: core::ptr::null_mut(), len: 0 };
        // SAFETY: "SS": two str* out-parameters.
        let n = unsafe { f(self.ctx, c"SS".as_ptr() as *mut c_char, &mut a as *mut sys::str_, &mut b as *mut sys::str_) };
        // SAFETY: the transport keeps the arguments alive during the call; copied.
        let (a, b) = unsafe { (kstr::as_bytes(&a).to_vec(), kstr::as_bytes(&b).to_vec()) };
        (n, a, b)
    }

    fn add_struct(&self) -> Option<RpcStruct<'_>> {
        let f = self.api.add?;
        let mut h: *mut c_void = core::ptr::null_mut();
        // SAFETY: "{" takes a void** receiving the struct handle.
        let rc = unsafe { f(self.ctx, c"{".as_ptr() as *mut c_char, &mut h as *mut *mut c_void) };
        (rc >= 0 && !h.is_null()).then_some(RpcStruct { rpc: self, h })
    }
}

struct RpcStruct<'a> {
    rpc: &'a Rpc<'a>,
    h: *mut c_void,
}

impl RpcStruct<'_> {
    fn str(&self, name: &core::ffi::CStr, v: &[u8]) {
        let s = kstr::from_bytes(v);
        if let Some(f) = self.rpc.api.struct_add {
            // SAFETY: "S": member name (char*) and a str* the transport copies.
            unsafe { f(self.h, c"S".as_ptr() as *mut c_char, name.as_ptr(), &s as *const sys::str_) };
        }
    }
    fn int(&self, name: &core::ffi::CStr, v: i64) {
        let v = v.clamp(i32::MIN as i64, i32::MAX as i64) as c_int;
        if let Some(f) = self.rpc.api.struct_add {
            // SAFETY: "d": member name (char*) and an int.
            unsafe { f(self.h, c"d".as_ptr() as *mut c_char, name.as_ptr(), v) };
        }
    }
}

fn with_rpc(entry: &str, api: *mut sys::rpc_t, ctx: *mut c_void, f: impl FnOnce(&Rpc<'_>)) {
    guard_or(entry, (), || {
        // SAFETY: Kamailio passes its rpc_t for the duration of the call.
        let Some(api) = (unsafe { api.as_ref() }) else { return };
        let r = Rpc { api, ctx };
        if super::shared().is_none() {
            r.fault(500, "keepalive is not initialised");
            return;
        }
        f(&r)
    })
}

/// `ctime_r()`'s text (local time, ending in a newline), as the C module
/// shows times.
pub fn ctime(t: i64) -> String {
    const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let tt = t as libc::time_t;
    // SAFETY: an all-zero tm is a valid value to be overwritten.
    let mut tm: libc::tm = unsafe { core::mem::zeroed() };
    // SAFETY: localtime_r reads tt and writes tm, both ours.
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

fn list_entry(r: &Rpc<'_>, d: &DestInfo<Hooks>, stats: bool) {
    let Some(s) = r.add_struct() else { return };
    s.str(c"uri", &d.uri);
    s.str(c"owner", &d.owner);
    s.str(c"last checked", ctime(d.last_checked).as_bytes());
    s.str(c"last up", ctime(d.last_up).as_bytes());
    s.str(c"last down", ctime(d.last_down).as_bytes());
    s.int(c"state", d.state.code() as i64);
    if stats {
        s.int(c"pings", d.stats.pings as i64);
        s.int(c"replies", d.stats.replies as i64);
        s.int(c"timeouts", d.stats.timeouts as i64);
        s.int(c"errors", d.stats.send_errors as i64);
        s.int(c"failures in a row", d.fails as i64);
        s.int(c"latency last ms", d.stats.rtt_last_ms as i64);
        s.int(c"latency avg ms", d.stats.rtt_avg_ms() as i64);
        s.int(c"latency max ms", d.stats.rtt_max_ms as i64);
    }
}

unsafe extern "C" fn rpc_list(api: *mut sys::rpc_t, ctx: *mut c_void) {
    with_rpc("keepalive.list", api, ctx, |r| {
        let stats = super::settings().is_some_and(|s| s.list_stats);
        // a copy taken under the lock (the C module walked the live list
        // without it)
        for d in super::with_table(|t| t.list()).unwrap_or_default() {
            list_entry(r, &d, stats);
        }
    })
}

/// The two arguments of add/del/get, or the C module's fault.
fn uri_and_owner(r: &Rpc<'_>) -> Option<(Vec<u8>, Vec<u8>)> {
    let (n, uri, owner) = r.scan_two();
    if n < 2 {
        crate::lm_err!("not enough parameters - read so far: {n}");
        r.fault(500, "Not enough parameters or wrong format");
        return None;
    }
    if uri.is_empty() || owner.is_empty() {
        crate::lm_err!("parameter is len less than 1");
        r.fault(500, "parameter is len less than 1");
        return None;
    }
    Some((uri, owner))
}

unsafe extern "C" fn rpc_add(api: *mut sys::rpc_t, ctx: *mut c_void) {
    with_rpc("keepalive.add", api, ctx, |r| {
        let Some((uri, owner)) = uri_and_owner(r) else { return };
        if super::add_code(&super::add_destination(&uri, &owner, 0, None, None)) < 0 {
            crate::lm_err!("couldn't add data to list");
            r.fault(500, "couldn't add data to list");
            return;
        }
        r.printf("Ok. Destination added.");
    })
}

unsafe extern "C" fn rpc_del(api: *mut sys::rpc_t, ctx: *mut c_void) {
    with_rpc("keepalive.del", api, ctx, |r| {
        let Some((uri, owner)) = uri_and_owner(r) else { return };
        if !super::del_destination(&uri, &owner) {
            crate::lm_err!("couldn't delete data from list");
            r.fault(500, "couldn't delete data from list");
            return;
        }
        r.printf("Ok. Destination removed.");
    })
}

unsafe extern "C" fn rpc_get(api: *mut sys::rpc_t, ctx: *mut c_void) {
    with_rpc("keepalive.get", api, ctx, |r| {
        let Some((uri, owner)) = uri_and_owner(r) else { return };
        let Some(d) = super::with_table(|t| t.get(&uri, &owner)).flatten() else {
            crate::lm_err!("Target is empty");
            r.fault(500, "couldn't get data from list");
            return;
        };
        let Some(s) = r.add_struct() else { return };
        s.str(c"uri", &d.uri);
        s.str(c"owner", &d.owner);
        s.int(c"state", d.state.code() as i64);
    })
}

unsafe extern "C" fn rpc_flush(api: *mut sys::rpc_t, ctx: *mut c_void) {
    with_rpc("keepalive.flush", api, ctx, |r| {
        let n = super::with_table(|t| t.flush()).unwrap_or(0);
        crate::lm_dbg!("keepalive flush: {n} destinations removed");
        r.printf("Ok. Destination list flushed.");
    })
}
