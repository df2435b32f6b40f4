//! What keepalive needs from the host: OPTIONS pings through tm (the
//! shim), its tick timer, the `keepalive:dst-*` event routes, the C API
//! users' callbacks, and the core's URI parser.

use core::ffi::{c_void, CStr};

use crate::host::kstr;
use crate::host::sys;

/// The C API user's callbacks (`keepalive/api.h`) with their `user_attr`.
pub type StateChangedFn = sys::ka_statechanged_f;
pub type ResponseFn = sys::ka_response_f;

/// Send an OPTIONS ping to `uri` from `from` (over the route set `route`
/// when not empty); tm calls `sca_rs_ka_on_reply(param, ..)` with the
/// outcome, in whichever process gets it. Err: not sent.
pub fn ping(uri: &[u8], from: &[u8], route: &[u8], param: usize) -> Result<(), ()> {
    let (u, f) = (kstr::from_bytes(uri), kstr::from_bytes(from));
    let param = param as *mut c_void;
    let rc = if route.is_empty() {
        // SAFETY: [I9] uri and from outlive the call; tm copies them; the
        // parameter is a number, never dereferenced.
        unsafe { sys::sca_rs_ka_ping(&u, &f, param) }
    } else {
        let r = kstr::from_bytes(route);
        // SAFETY: [I9] as above; the shim parses the route set into its own
        // copy.
        unsafe { sys::sca_rs_ka_ping_routed(&u, &f, &r, param) }
    };
    if rc < 0 { Err(()) } else { Ok(()) }
}

/// Start the keepalive tick (slow timer process; mod_init only): the shim
/// calls `sca_rs_ka_on_tick()`, first after `first_ms`.
pub fn start_timer(first_ms: u32) -> Result<(), ()> {
    // SAFETY: [I1] mod_init is where core timers are set up.
    if unsafe { sys::sca_rs_ka_timer_start(first_ms) } < 0 { Err(()) } else { Ok(()) }
}

/// The index of the event route `name`, or -1 (mod_init: config parsed).
pub fn route_lookup(name: &CStr) -> i32 {
    // SAFETY: [I1] the config is parsed; the name is a C string.
    unsafe { sys::sca_rs_ka_route_lookup(name.as_ptr()) }
}

/// Run the event route `rt` (from [`route_lookup`]) for `uri`.
pub fn run_route(rt: i32, uri: &[u8]) {
    let u = kstr::from_bytes(uri);
    // SAFETY: [I10] a route index looked up in mod_init; the shim copies uri.
    unsafe { sys::sca_rs_ka_run_route(rt, &u) };
}

/// Tell an API user's state callback (with its own `user_attr`, which is
/// opaque here: only handed back to the callback registered with it).
#[allow(clippy::not_unsafe_ptr_arg_deref)]
pub fn call_statechanged(cb: StateChangedFn, uri: &[u8], state: i32, user_attr: *mut c_void) {
    let Some(cb) = cb else { return };
    let mut u = kstr::from_bytes(uri);
    // SAFETY: [I11] the callback and user_attr the API user registered
    // together; the str is valid for the call.
    unsafe { cb(&mut u, state, user_attr) };
}

#[allow(clippy::not_unsafe_ptr_arg_deref)]
/// Tell an API user's response callback; `ps` is tm's callback parameter
/// block given to `sca_rs_ka_on_reply`, valid during that callback.
pub fn call_response(cb: ResponseFn, uri: &[u8], ps: *mut c_void, user_attr: *mut c_void) {
    let Some(cb) = cb else { return };
    let mut u = kstr::from_bytes(uri);
    // SAFETY: [I11] as call_statechanged; ps is tm's, passed through.
    unsafe { cb(&mut u, ps as *mut sys::tmcb_params, user_attr) };
}

/// Is `uri` (with a scheme) a SIP URI Kamailio can parse?
pub fn parses_as_sip_uri(uri: &[u8]) -> bool {
    let mut buf = uri.to_vec();
    buf.push(0);
    let mut u = sys::sip_uri::default();
    // SAFETY: [I0] parse_uri reads `len` bytes of the buffer and fills `u`,
    // whose str fields then point into `buf` (dropped right after).
    unsafe { sys::parse_uri(buf.as_mut_ptr().cast(), uri.len() as i32, &mut u) == 0 }
}
