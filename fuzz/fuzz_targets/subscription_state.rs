//! Subscription-State header values (NOTIFYs relayed back, replies).
#![no_main]
use libfuzzer_sys::fuzz_target;
use sca_core::model::SubState;
use sca_core::parse::substate;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = substate::parse(data) {
        // the two states the module sends itself format and parse back
        if matches!(p.state, SubState::Active | SubState::TerminatedTimeout) {
            let mut v = Vec::new();
            substate::write_value(&mut v, p.state, p.expires.unwrap_or(0));
            assert_eq!(substate::parse(&v).map(|q| q.state), Ok(p.state));
        }
    }
});
