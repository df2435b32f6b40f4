//! AoR and contact URIs: To/From/Contact values, Request-URIs.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sca_core::parse::uri;

fn within(outer: &[u8], inner: &[u8]) -> bool {
    let (o, i) = (outer.as_ptr() as usize, inner.as_ptr() as usize);
    inner.is_empty() || (i >= o && i + inner.len() <= o + outer.len())
}

fuzz_target!(|data: &[u8]| {
    // the second half of the input is the other URI of the pairs
    let (a, b) = data.split_at(data.len() / 2);
    if let Ok(aor) = uri::extract_aor(data) {
        assert!(within(data, aor));
        // an AoR is its own AoR
        assert_eq!(uri::extract_aor(aor), Ok(aor));
    }
    if let Ok(p) = uri::parts(data) {
        assert!(within(data, p.user) && within(data, p.host) && within(data, p.params));
    }
    if let Ok(h) = uri::host_of(data) {
        assert!(within(data, h));
    }
    for f in [uri::name_addr_uri, uri::aor_of_name_addr] {
        if let Ok(u) = f(data) {
            assert!(within(data, u));
        }
    }
    if let Ok(Some(u)) = uri::contact_uri(data) {
        assert!(within(data, u));
    }
    let _ = uri::canonical_aor(a, Some(b));
    let _ = uri::canonical_aor(data, None);
    let mut out = Vec::new();
    if let Ok(false) = uri::build_aor(a, b, &mut out) {
        assert!(out.is_empty(), "nothing appended when there is no AoR");
    }
});
