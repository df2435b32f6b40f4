//! Layer 2: a thin safe layer over Kamailio. Each file wraps one host
//! facility; the `unsafe` needed to talk to C stays in here, each block
//! with the invariant it relies on (docs/SAFETY.md, `[In]`).
//!
//! Layer 1, [`sys`] (bindgen output + the C shim's functions), is private
//! to this module: the compiler rejects any use of it from src/module or
//! src/keepalive. What they need from C is here as safe functions, as
//! [`entry!`](crate::entry)-generated entry points, and as the C types of
//! the export tables and callback signatures ([`raw`]).

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
