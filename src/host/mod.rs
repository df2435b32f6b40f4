//! Layer 2: a thin safe layer over Kamailio. Each file wraps one host
//! facility; the `unsafe` needed to talk to C stays in here, each block
//! with its reason. See docs/SAFETY.md for the host invariants relied on.

pub mod avp;
pub mod db;
pub mod dmq;
pub mod export;
pub mod guard;
pub mod kstr;
pub mod lock;
pub mod log;
pub mod msg;
pub mod rpc;
pub mod shm;
pub mod sl;
pub mod tm;
