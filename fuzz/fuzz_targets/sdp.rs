//! SDP bodies of INVITEs and replies (hold detection).
#![no_main]
use libfuzzer_sys::fuzz_target;
use sca_core::parse::sdp;

fuzz_target!(|data: &[u8]| {
    match sdp::analyze(data) {
        Ok(a) => {
            assert!(a.streams_on_hold <= a.streams);
            assert_eq!(sdp::is_held(data), a.is_held());
        }
        Err(_) => assert!(!sdp::is_held(data)),
    }
});
