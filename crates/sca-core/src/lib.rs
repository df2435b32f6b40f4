//! SCA (Shared Call Appearances) and keepalive logic for sca_rs, as plain
//! Rust without Kamailio symbols, so it can be unit-tested and fuzzed.
//! Behavioural reference: the C `sca` module of Kamailio 5.6.3.

pub mod parse;
pub mod persist;
pub mod appearance;
pub mod change;
pub mod cluster;
pub mod keepalive;
pub mod limits;
pub mod members;
pub mod model;
pub mod packed;
pub mod store;
pub mod sync;
pub mod tagpfx;
pub mod thinvec;
#[cfg(test)]
mod testutil;
