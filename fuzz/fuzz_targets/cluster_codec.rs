//! Cluster messages (DMQ bodies from peer nodes): decoding never panics,
//! and whatever decodes re-encodes to a message that decodes to the same
//! records, byte for byte the input when no unknown record was skipped.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sca_core::cluster::codec::{decode, encode, MAX_MESSAGE_LEN};

fuzz_target!(|data: &[u8]| {
    let Ok(m) = decode(data) else { return };
    assert!(data.len() <= MAX_MESSAGE_LEN);
    let again = encode(&m.header, &m.records).expect("a decoded message re-encodes");
    let m2 = decode(&again).expect("a re-encoded message decodes");
    assert_eq!(m2.header, m.header);
    assert_eq!(m2.records, m.records);
    assert_eq!(m2.skipped, 0);
    if m.skipped == 0 {
        assert_eq!(again, data, "the encoding is canonical");
    }
});
