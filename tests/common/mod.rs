//! Shared integration-test harness: a real Kamailio ([`kamailio`]), a SIP
//! test UA over UDP loopback ([`sip`]), the SCA routing config ([`cfg`]) and
//! SCA scenarios run against either module ([`scenarios`]).
//!
//! Each test binary compiles this module separately and uses a different
//! part of it, hence the `dead_code` allowance.
#![allow(dead_code)]

pub mod cfg;
pub mod cluster;
pub mod digest;
pub mod flows;
pub mod kamailio;
pub mod mariadb;
pub mod partition;
pub mod postgres;
pub mod scenarios;
pub mod sip;
