//! Arguments of sca.* and keepalive.* RPC commands (and the keepalive
//! script functions and modparams that take the same strings), NUL-separated.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sca_core::keepalive::uri as kuri;
use sca_core::keepalive::AliveCodes;
use sca_core::model::EventType;
use sca_core::parse::appearance::AppearanceState;
use sca_core::parse::uri;

fuzz_target!(|data: &[u8]| {
    let args: Vec<&[u8]> = data.split(|&b| b == 0).take(4).collect();
    for a in &args {
        if let Some(e) = EventType::from_name(a) {
            assert_eq!(e.name().as_bytes(), *a);
        }
        if let Some(s) = AppearanceState::from_bytes(a) {
            let _ = s.as_str();
        }
        // sca.* AoR arguments
        let _ = uri::extract_aor(a);
        // keepalive destinations
        let n = kuri::normalize(a);
        assert!(!kuri::needs_prefix(&n));
        assert!(kuri::Key::of(a).matches(&n), "a destination is found under what it was added as");
        for k in kuri::state_query_keys(a).into_iter().flatten() {
            let _ = k.matches(&n);
        }
        if let Ok(s) = std::str::from_utf8(a) {
            let _ = AliveCodes::parse(s);
        }
    }
});
