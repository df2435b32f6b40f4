//! Shared integration-test harness: a real Kamailio ([`kamailio`]), a SIP
//! test UA over UDP loopback ([`sip`]) and the SCA routing config ([`cfg`]).
//!
//! Each test binary compiles this module separately and uses a different
//! part of it, hence the `dead_code` allowance.
#![allow(dead_code)]

pub mod cfg;
pub mod kamailio;
pub mod sip;
