//! Event header values of SUBSCRIBEs.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sca_core::parse::event;

fuzz_target!(|data: &[u8]| {
    if let Ok(e) = event::parse(data) {
        assert_eq!(event::parse(e.name().as_bytes()), Ok(e), "the name parses back");
        // the lenient parser accepts whatever the strict one does
        assert_eq!(event::parse_with_params(data).map(|(e, _)| e), Ok(e));
    }
    if let Ok((_, params)) = event::parse_with_params(data) {
        assert!(params.len() <= data.len());
    }
});
