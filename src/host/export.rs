//! Building blocks for the tables Kamailio reads from the module
//! (`exports`, commands, parameters, RPC methods): const constructors and
//! a `Sync` cell for statics that C code reads or writes.

use core::cell::UnsafeCell;
use core::ffi::{c_char, c_void, CStr};

use crate::host::sys;

/// A static that Kamailio's C code reads or writes (module parameters,
/// export tables). Kamailio writes parameters while parsing the config, in
/// the main process, before any worker exists; afterwards they are read
/// only.
#[repr(transparent)]
pub struct HostCell<T>(UnsafeCell<T>);

// SAFETY: [I1] see the type's doc: writes happen single-threaded before fork.
unsafe impl<T> Sync for HostCell<T> {}

impl<T> HostCell<T> {
    pub const fn new(v: T) -> Self {
        HostCell(UnsafeCell::new(v))
    }
    pub const fn get(&self) -> *mut T {
        self.0.get()
    }
}

impl<T: Copy> HostCell<T> {
    /// Read the value (after config parsing, it no longer changes).
    pub fn read(&self) -> T {
        // SAFETY: [I1] see the type's doc.
        unsafe { *self.0.get() }
    }
    /// Write the value: only in mod_init / single-threaded set-up.
    pub fn write(&self, v: T) {
        // SAFETY: [I1] see the type's doc.
        unsafe { *self.0.get() = v }
    }
}

pub use sys::{
    FAILURE_ROUTE, ONREPLY_ROUTE, PARAM_INT, PARAM_STR, PARAM_STRING, REQUEST_ROUTE,
};
/// sr_module.h: `(1U<<(8*sizeof(int)-1))`, which bindgen cannot evaluate.
pub const PARAM_USE_FUNC: u32 = 1 << (8 * core::mem::size_of::<core::ffi::c_int>() - 1);

pub type CmdFn = unsafe extern "C" fn(*mut sys::sip_msg, *mut c_char, *mut c_char) -> i32;
pub type RpcFn = unsafe extern "C" fn(*mut sys::rpc_t, *mut c_void);

pub const fn cmd(name: &'static CStr, f: CmdFn, param_no: i32, flags: u32) -> sys::cmd_export_t {
    sys::cmd_export_t {
        name: name.as_ptr() as *mut c_char,
        function: Some(f),
        param_no,
        fixup: None,
        free_fixup: None,
        flags,
    }
}

/// A command with a fixup (and its free function).
pub const fn cmd_fixup(
    name: &'static CStr,
    f: CmdFn,
    param_no: i32,
    fixup: FixupFn,
    free_fixup: FixupFn,
    flags: u32,
) -> sys::cmd_export_t {
    sys::cmd_export_t {
        name: name.as_ptr() as *mut c_char,
        function: Some(f),
        param_no,
        fixup: Some(fixup),
        free_fixup: Some(free_fixup),
        flags,
    }
}

pub type FixupFn = unsafe extern "C" fn(*mut *mut c_void, core::ffi::c_int) -> core::ffi::c_int;
pub type CmdFn3 = unsafe extern "C" fn(*mut sys::sip_msg, *mut c_char, *mut c_char, *mut c_char) -> i32;

/// A 3-parameter script function in a `cmd_export_t` (whose type is the
/// 2-parameter one): Kamailio calls it with `param_no` parameters, as the
/// C modules' casts rely on.
pub const fn cmd3_as_cmd(f: CmdFn3) -> CmdFn {
    // SAFETY: [I7] same ABI (all pointer arguments, int return); the core passes
    // exactly param_no + 1 arguments to functions registered with param_no 3.
    unsafe { core::mem::transmute::<CmdFn3, CmdFn>(f) }
}

pub const CMD_END: sys::cmd_export_t = sys::cmd_export_t {
    name: core::ptr::null_mut(),
    function: None,
    param_no: 0,
    fixup: None,
    free_fixup: None,
    flags: 0,
};

pub const fn param(name: &'static CStr, type_: u32, ptr: *mut c_void) -> sys::param_export_t {
    sys::param_export_t { name: name.as_ptr() as *mut c_char, type_, param_pointer: ptr }
}

pub const PARAM_END: sys::param_export_t =
    sys::param_export_t { name: core::ptr::null_mut(), type_: 0, param_pointer: core::ptr::null_mut() };

pub const fn rpc(name: &'static CStr, f: RpcFn, doc: *mut *const c_char) -> sys::rpc_export_t {
    sys::rpc_export_t { name: name.as_ptr(), function: Some(f), doc_str: doc, flags: 0 }
}

pub const RPC_END: sys::rpc_export_t =
    sys::rpc_export_t { name: core::ptr::null(), function: None, doc_str: core::ptr::null_mut(), flags: 0 };

/// A NUL-terminated doc string array of one entry, as `rpc_export_t` wants.
#[repr(transparent)]
pub struct RpcDoc(pub HostCell<[*const c_char; 2]>);

impl RpcDoc {
    pub const fn new(doc: &'static CStr) -> Self {
        RpcDoc(HostCell::new([doc.as_ptr(), core::ptr::null()]))
    }
    pub const fn ptr(&self) -> *mut *const c_char {
        self.0.get() as *mut *const c_char
    }
}

/// KEMI parameter / return types (core/kemi.h), from the target's headers:
/// the values moved between versions (`SR_KEMIP_LONG` went in at 1<<3 in
/// 5.7), so none is written down here.
pub const KEMIP_NONE: core::ffi::c_int = sys::SR_KEMIP_NONE as core::ffi::c_int;
pub const KEMIP_INT: core::ffi::c_int = sys::SR_KEMIP_INT as core::ffi::c_int;
pub const KEMIP_STR: core::ffi::c_int = sys::SR_KEMIP_STR as core::ffi::c_int;

const fn cstr_as_str(v: &'static CStr) -> sys::str_ {
    sys::str_ { s: v.as_ptr() as *mut c_char, len: v.count_bytes() as core::ffi::c_int }
}

/// One KEMI export `KSR.<module>.<fname>` returning an int.
pub const fn kemi(
    module: &'static CStr,
    fname: &'static CStr,
    func: *mut c_void,
    params: [core::ffi::c_int; 6],
) -> sys::sr_kemi_t {
    sys::sr_kemi_t { mname: cstr_as_str(module), fname: cstr_as_str(fname), rtype: KEMIP_INT, func, ptypes: params }
}

/// The terminator of a KEMI table.
pub const KEMI_END: sys::sr_kemi_t = sys::sr_kemi_t {
    mname: sys::str_ { s: core::ptr::null_mut(), len: 0 },
    fname: sys::str_ { s: core::ptr::null_mut(), len: 0 },
    rtype: 0,
    func: core::ptr::null_mut(),
    ptypes: [0; 6],
};

/// Table entry types (layer 1's, named for the tables' statics).
pub type CmdExport = sys::cmd_export_t;
pub type ParamExport = sys::param_export_t;
pub type RpcExport = sys::rpc_export_t;
pub type KemiExport = sys::sr_kemi_t;
pub type ModuleExports = sys::module_exports;

/// Route masks for [`cmd`].
pub const ANY_ROUTE: u32 = sys::ANY_ROUTE;

/// `SER_FULL_VERSION` and `SER_COMPILE_FLAGS` as the shim compiled them
/// with the binary's defines (for the `module_version` / `module_flags`
/// symbols the loader checks).
pub const FULL_VERSION: *const c_char = &raw const sys::sca_rs_full_version as *const c_char;
pub const COMPILE_FLAGS: *const c_char = &raw const sys::sca_rs_compile_flags as *const c_char;

pub type InitFn = unsafe extern "C" fn() -> core::ffi::c_int;
pub type ChildInitFn = unsafe extern "C" fn(core::ffi::c_int) -> core::ffi::c_int;
pub type DestroyFn = unsafe extern "C" fn();

/// The `exports` struct the loader reads.
pub const fn module_exports(
    name: &'static CStr,
    cmds: *mut CmdExport,
    params: *mut ParamExport,
    rpcs: *mut RpcExport,
    init: InitFn,
    child_init: ChildInitFn,
    destroy: DestroyFn,
) -> ModuleExports {
    sys::module_exports {
        name: name.as_ptr() as *mut c_char,
        dlflags: 0,
        cmds,
        params,
        rpc_methods: rpcs,
        pv_items: core::ptr::null_mut(),
        response_f: None,
        init_mod_f: Some(init),
        init_child_f: Some(child_init),
        destroy_mod_f: Some(destroy),
    }
}

/// A command whose function is not a script function: the pointer is
/// handed to `find_export()` callers, who call it as what it is (C modules
/// register their `bind_*` functions the same way).
pub const fn cmd_export_only(name: &'static CStr, f: CmdFn) -> CmdExport {
    sys::cmd_export_t { name: name.as_ptr() as *mut c_char, function: Some(f), param_no: 0, fixup: None, free_fixup: None, flags: 0 }
}

/// Register a KEMI table (mod_register only). The core keeps the pointer:
/// the table is a static.
pub fn kemi_register<const N: usize>(table: &'static HostCell<[KemiExport; N]>) -> Result<(), ()> {
    // SAFETY: [I1] called from mod_register; the table is a static that
    // lives for the process, ending in KEMI_END.
    if unsafe { sys::sr_kemi_modules_add(table.get() as *mut sys::sr_kemi_t) } < 0 { Err(()) } else { Ok(()) }
}

/// A `PARAM_STR` module parameter: the core writes a `str` pointing to
/// config-lifetime pkg memory while parsing the config.
#[repr(transparent)]
pub struct StrParam(HostCell<sys::str_>);

impl StrParam {
    pub const fn new() -> Self {
        StrParam(HostCell::new(sys::str_ { s: core::ptr::null_mut(), len: 0 }))
    }
    /// For the parameter table.
    pub const fn ptr(&self) -> *mut c_void {
        self.0.get() as *mut c_void
    }
    /// The value, None when unset or empty (copied).
    pub fn value(&self) -> Option<Vec<u8>> {
        // SAFETY: [I1] the core wrote a str pointing to config-lifetime pkg
        // memory before mod_init (or left ours, NULL); read only since.
        let b = unsafe { crate::host::kstr::as_bytes(&self.0.read()) };
        (!b.is_empty()).then(|| b.to_vec())
    }
}

impl Default for StrParam {
    fn default() -> Self {
        Self::new()
    }
}
