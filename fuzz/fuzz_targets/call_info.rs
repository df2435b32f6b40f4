//! Call-Info header values (SUBSCRIBE, INVITE and replies from phones).
#![no_main]
use libfuzzer_sys::fuzz_target;
use sca_core::parse::callinfo::{self, AppearanceIndex, MAX_APPEARANCE_INDEX};
use sca_core::parse::format;

fn within(outer: &[u8], inner: &[u8]) -> bool {
    let (o, i) = (outer.as_ptr() as usize, inner.as_ptr() as usize);
    inner.is_empty() || (i >= o && i + inner.len() <= o + outer.len())
}

fuzz_target!(|data: &[u8]| {
    if let Ok(ci) = callinfo::parse(data) {
        assert!(within(data, ci.uri), "the URI is a slice of the input");
        if let AppearanceIndex::Number(n) = ci.index {
            assert!(n <= MAX_APPEARANCE_INDEX);
            // what we would send back for it parses to the same thing
            if let (Some(state), Some(host)) = (ci.state, ci.uri.strip_prefix(b"sip:")) {
                let mut once = Vec::new();
                format::write_appearance_value(&mut once, host, n, state, None);
                let again = callinfo::parse(&once).expect("our own Call-Info value parses");
                assert_eq!(again.index, ci.index);
                let mut twice = Vec::new();
                format::write_appearance_value(&mut twice, host, n, again.state.expect("state"), None);
                assert_eq!(once, twice, "formatting is stable");
            }
        }
        if let Some(au) = ci.appearance_uri {
            assert!(within(data, au));
        }
    }
    for v in callinfo::values(data).take(1024) {
        if let Ok(ci) = v {
            assert!(within(data, ci.uri));
        }
    }
});
