//! RPC replies and arguments (`rpc_t`), for `kamcmd` and the other RPC
//! transports. Kamailio's rpc functions are variadic; Rust calls them with
//! fixed, type-checked shapes only, and never passes data as a format.

use core::ffi::{c_char, c_int, c_void};
use std::ffi::CString;

use crate::host::kstr;
use crate::host::sys;

pub struct Rpc {
    api: *mut sys::rpc_t,
    ctx: *mut c_void,
}

/// A struct being filled in an RPC reply.
pub struct RpcStruct<'r> {
    rpc: &'r Rpc,
    handle: *mut c_void,
}

fn cstring(b: &[u8]) -> CString {
    // interior NULs cannot travel in C strings: replace them
    CString::new(b.iter().map(|&c| if c == 0 { b'?' } else { c }).collect::<Vec<u8>>())
        .unwrap_or_default()
}

impl Rpc {
    /// # Safety
    /// `api` and `ctx` are what Kamailio passed to the RPC function, valid
    /// for the duration of that call.
    pub unsafe fn new(api: *mut sys::rpc_t, ctx: *mut c_void) -> Option<Self> {
        (!api.is_null()).then_some(Rpc { api, ctx })
    }

    fn api(&self) -> &sys::rpc_t {
        // SAFETY: [I2] checked non-null in new(); valid during the call.
        unsafe { &*self.api }
    }

    pub fn fault(&self, code: i32, msg: &str) {
        let m = cstring(msg.as_bytes());
        if let Some(f) = self.api().fault {
            // SAFETY: [I14] "%s" with one NUL-terminated string argument.
            unsafe { f(self.ctx, code as c_int, c"%s".as_ptr() as *mut c_char, m.as_ptr()) }
        }
    }

    /// A reply line, as the C modules' `rpl_printf` gives.
    pub fn printf(&self, line: &str) -> Result<(), ()> {
        let m = cstring(line.as_bytes());
        let f = self.api().rpl_printf.ok_or(())?;
        // SAFETY: [I14] "%s" with one NUL-terminated string argument.
        let rc = unsafe { f(self.ctx, c"%s".as_ptr() as *mut c_char, m.as_ptr()) };
        if rc < 0 { Err(()) } else { Ok(()) }
    }

    pub fn add_str(&self, v: &[u8]) -> Result<(), ()> {
        let s = kstr::from_bytes(v);
        let f = self.api().add.ok_or(())?;
        // SAFETY: [I14] "S" takes a str*; the transport copies it.
        let rc = unsafe { f(self.ctx, c"S".as_ptr() as *mut c_char, &s as *const sys::str_) };
        if rc < 0 { Err(()) } else { Ok(()) }
    }

    pub fn add_int(&self, v: i32) -> Result<(), ()> {
        let f = self.api().add.ok_or(())?;
        // SAFETY: [I14] "d" takes an int.
        let rc = unsafe { f(self.ctx, c"d".as_ptr() as *mut c_char, v as c_int) };
        if rc < 0 { Err(()) } else { Ok(()) }
    }

    pub fn add_struct(&self) -> Result<RpcStruct<'_>, ()> {
        let f = self.api().add.ok_or(())?;
        let mut h: *mut c_void = core::ptr::null_mut();
        // SAFETY: [I14] "{" takes a void** that receives the struct handle.
        let rc = unsafe { f(self.ctx, c"{".as_ptr() as *mut c_char, &mut h as *mut *mut c_void) };
        if rc < 0 || h.is_null() { Err(()) } else { Ok(RpcStruct { rpc: self, handle: h }) }
    }

    /// Next argument as a string; None when absent. A wrong type is also
    /// None: the caller answers with its usage fault.
    pub fn scan_str(&self) -> Option<Vec<u8>> {
        let f = self.api().scan?;
        let mut s = sys::str_ { s: core::ptr::null_mut(), len: 0 };
        // SAFETY: [I14] "*S": optional argument, written to a str*.
        let rc = unsafe { f(self.ctx, c"*S".as_ptr() as *mut c_char, &mut s as *mut sys::str_) };
        if rc != 1 {
            return None;
        }
        // SAFETY: [I2] the transport keeps the argument alive during the call; copied here.
        Some(unsafe { kstr::as_bytes(&s) }.to_vec())
    }

    /// `scan("SS")` as the C keepalive module does it: how many were
    /// read, and the two (empty when not read).
    pub fn scan_two_strs(&self) -> (c_int, Vec<u8>, Vec<u8>) {
        let Some(f) = self.api().scan else { return (0, Vec::new(), Vec::new()) };
        let mut a = sys::str_ { s: core::ptr::null_mut(), len: 0 };
        let mut b = sys::str_ { s: core::ptr::null_mut(), len: 0 };
        // SAFETY: [I2] "SS": two str* out-parameters.
        let n = unsafe { f(self.ctx, c"SS".as_ptr() as *mut c_char, &mut a as *mut sys::str_, &mut b as *mut sys::str_) };
        // SAFETY: [I2] the transport keeps the arguments alive during the call; copied.
        let (a, b) = unsafe { (kstr::as_bytes(&a).to_vec(), kstr::as_bytes(&b).to_vec()) };
        (n, a, b)
    }

    /// Next argument as an integer; None when absent or not a number.
    pub fn scan_int(&self) -> Option<i32> {
        let f = self.api().scan?;
        let mut v: c_int = 0;
        // SAFETY: [I14] "*d": optional argument, written to an int*.
        let rc = unsafe { f(self.ctx, c"*d".as_ptr() as *mut c_char, &mut v as *mut c_int) };
        (rc == 1).then_some(v)
    }
}

impl RpcStruct<'_> {
    pub fn str(&self, name: &str, v: &[u8]) -> Result<(), ()> {
        let n = cstring(name.as_bytes());
        let s = kstr::from_bytes(v);
        let f = self.rpc.api().struct_add.ok_or(())?;
        // SAFETY: [I14] "S" member: name (char*) then str*.
        let rc = unsafe { f(self.handle, c"S".as_ptr() as *mut c_char, n.as_ptr(), &s as *const sys::str_) };
        if rc < 0 { Err(()) } else { Ok(()) }
    }

    pub fn int(&self, name: &str, v: i32) -> Result<(), ()> {
        let n = cstring(name.as_bytes());
        let f = self.rpc.api().struct_add.ok_or(())?;
        // SAFETY: [I14] "d" member: name (char*) then int.
        let rc = unsafe { f(self.handle, c"d".as_ptr() as *mut c_char, n.as_ptr(), v as c_int) };
        if rc < 0 { Err(()) } else { Ok(()) }
    }
}
