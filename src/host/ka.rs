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

/// `bind_keepalive` as the C API's users find it.
pub type BindFn = unsafe extern "C" fn(crate::host::entry::Out<sys::keepalive_api_t>) -> core::ffi::c_int;

/// The export entry of `bind_keepalive`, which `find_export()` callers
/// (drouting, ...) look up in the module's command table.
pub const fn bind_export(name: &'static CStr, f: BindFn) -> crate::host::export::CmdExport {
    // SAFETY: [I7] never called through the cmd_function type: Kamailio
    // hands the pointer to find_export() callers, who call it as
    // bind_keepalive_f (what it is: Out is a transparent pointer); C
    // modules register it the same way (a cast to cmd_function).
    let cmd = unsafe { core::mem::transmute::<BindFn, crate::host::export::CmdFn>(f) };
    crate::host::export::cmd_export_only(name, cmd)
}

use crate::host::entry::{Out, StrArg};

type CInt = core::ffi::c_int;
pub type AddFn =
    unsafe extern "C" fn(StrArg, StrArg, CInt, CInt, StateChangedFn, ResponseFn, *mut c_void) -> CInt;
pub type StateFn = unsafe extern "C" fn(StrArg) -> sys::ka_state;
pub type DelFn = unsafe extern "C" fn(StrArg, StrArg) -> CInt;
pub type FindFn = unsafe extern "C" fn(StrArg, StrArg, Out<*mut sys::ka_dest_t>, Out<*mut sys::ka_dest_t>) -> CInt;

/// The keepalive C API's functions, with entry!'s argument types.
pub struct ApiFns {
    pub add_destination: AddFn,
    pub destination_state: StateFn,
    pub del_destination: DelFn,
    pub find_destination: FindFn,
    pub lock_destination_list: unsafe extern "C" fn() -> CInt,
    pub unlock_destination_list: unsafe extern "C" fn() -> CInt,
}

/// Fill a `keepalive_api_t` (bind_keepalive).
pub fn fill_api(api: &mut sys::keepalive_api_t, f: ApiFns) {
    // SAFETY: [I7] StrArg and Out are #[repr(transparent)] over the
    // pointers the C function types take: the same ABI; C calls them as
    // the api.h types say.
    unsafe {
        api.add_destination = core::mem::transmute::<Option<AddFn>, sys::ka_add_dest_f>(Some(f.add_destination));
        api.destination_state =
            core::mem::transmute::<Option<StateFn>, sys::ka_dest_state_f>(Some(f.destination_state));
        api.del_destination =
            core::mem::transmute::<Option<DelFn>, sys::ka_del_destination_f>(Some(f.del_destination));
        api.find_destination =
            core::mem::transmute::<Option<FindFn>, sys::ka_find_destination_f>(Some(f.find_destination));
    }
    api.lock_destination_list = Some(f.lock_destination_list);
    api.unlock_destination_list = Some(f.unlock_destination_list);
}
