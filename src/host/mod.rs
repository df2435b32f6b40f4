//! Layer 2: a thin safe layer over Kamailio. Each file wraps one host
//! facility; the `unsafe` needed to talk to C stays in here, each block
//! with the invariant it relies on (docs/SAFETY.md, `[In]`).
//!
//! Layer 1, [`sys`] (bindgen output + the C shim's functions), is private
//! to this module: the compiler rejects any use of it from src/module or
//! src/keepalive. What they need from C is here as safe functions, as
//! [`entry!`](crate::entry)-generated entry points, and as the C types of
//! the export tables and callback signatures ([`raw`]).

/// A C library another module already loaded into Kamailio, used through
/// its stable C API: `Lib` with one field per function, found by `dlsym`
/// in the handle `dlopen(soname, RTLD_NOLOAD)` gives (nothing is loaded
/// or run; the handle is never closed); `lib()` (None: not loaded, or a
/// function missing) and `available()`. For the sqlite library ([I22])
/// and libpq ([I23]).
macro_rules! loaded_library {
    ($soname:literal; $($field:ident = $sym:literal: fn($($arg:ty),*) -> $ret:ty;)*) => {
        struct Lib {
            $($field: unsafe extern "C" fn($($arg),*) -> $ret,)*
        }

        static LIB: std::sync::OnceLock<Option<Lib>> = std::sync::OnceLock::new();

        fn lib() -> Option<&'static Lib> {
            LIB.get_or_init(|| {
                // SAFETY: [I22] [I23] RTLD_NOLOAD only looks the library up
                // among those already loaded: nothing is loaded or run.
                let h = unsafe { libc::dlopen($soname.as_ptr(), libc::RTLD_NOW | libc::RTLD_NOLOAD) };
                if h.is_null() {
                    return None;
                }
                Some(Lib {
                    $($field: {
                        // SAFETY: [I22] [I23] dlsym only reads the live
                        // handle, never closed.
                        let p = unsafe { libc::dlsym(h, $sym.as_ptr()) };
                        if p.is_null() {
                            return None;
                        }
                        // SAFETY: [I22] [I23] the named function of the
                        // library's stable C API, with the signature it
                        // documents.
                        unsafe { core::mem::transmute::<*mut core::ffi::c_void, unsafe extern "C" fn($($arg),*) -> $ret>(p) }
                    },)*
                })
            })
            .as_ref()
        }

        /// Is the library loaded (by its db_* module) and usable?
        pub fn available() -> bool {
            lib().is_some()
        }
    };
}

pub mod avp;
pub mod clock;
pub mod db;
pub mod dmq;
pub mod entry;
pub mod export;
pub mod guard;
pub mod ka;
pub mod kstr;
pub mod lock;
pub mod log;
pub mod msg;
pub mod pq;
pub mod proc;
pub mod rpc;
pub mod shm;
pub mod sl;
pub mod sqlite;
pub mod stats;
mod sys;
pub mod tm;

/// The C types that appear in export tables and in the signatures of
/// entry points (so that [`entry!`](crate::entry) can name them from
/// anywhere). Types only: no function of layer 1 is reachable through
/// here.
pub mod raw {
    pub use super::sys::{
        cmd_export_t, ka_dest_t, ka_response_f, ka_state, ka_statechanged_f, keepalive_api_t,
        modparam_t, module_exports, param_export_t, rpc_export_t, rpc_t, sip_msg, sr_kemi_t, str_,
    };
}
