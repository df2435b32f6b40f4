//! Expires header values.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sca_core::parse::expires;

fuzz_target!(|data: &[u8]| {
    if let Ok(n) = expires::parse(data) {
        assert_eq!(expires::parse(n.to_string().as_bytes()), Ok(n));
        let c = expires::clamp(n, 3600);
        assert!(c <= 3600 && (n == 0 || c > 0));
    }
    if let Ok(n) = expires::effective(Some(data), 3600) {
        assert!(n <= 3600);
    }
});
