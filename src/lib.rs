//! sca_rs: Shared Call Appearances and keepalive for Kamailio 5.6, in Rust.
//!
//! Three layers:
//! - [`sys`]: bindgen output over Kamailio's headers plus the C shim;
//! - [`host`]: a thin safe layer over the host (shm, locks, logging, `str`,
//!   SIP message access, replies, tm, RPC, export tables, panic guard);
//! - `sca_core` (crates/sca-core): the SCA/keepalive logic as plain Rust.
//!
//! [`module`] ties them together: the `exports` table, modparams, script
//! functions and RPC commands.

// Host calls that fail log why where it happens; their callers only need
// success or failure, hence `Result<_, ()>`.
#![allow(clippy::result_unit_err)]

pub mod host;
// keepalive (the C keepalive module's job): src/keepalive/
pub mod keepalive;
pub mod module;

