//! Property tests of every parser of untrusted input: arbitrary bytes (and
//! SIP-shaped garbage) never panic, and what we format parses back to the
//! same values.

use proptest::prelude::*;

use sca_core::model::SubState;
use sca_core::parse::appearance::AppearanceState;
use sca_core::parse::callinfo::{self, AppearanceIndex};
use sca_core::parse::{event, expires, format, sdp, substate, uri};

/// Bytes that look like SIP header values: mostly the characters the
/// grammars care about, plus anything.
fn sipish() -> impl Strategy<Value = Vec<u8>> {
    let alphabet: Vec<u8> = b"<>;=\",*@:.-_ \t\r\nsipappearance-indexstateuri0123456789idleheldactive".to_vec();
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..300),
        prop::collection::vec(prop::sample::select(alphabet), 0..300),
    ]
}

fn states() -> impl Strategy<Value = AppearanceState> {
    prop::sample::select(vec![
        AppearanceState::Idle,
        AppearanceState::Seized,
        AppearanceState::Progressing,
        AppearanceState::Alerting,
        AppearanceState::Active,
        AppearanceState::Held,
        AppearanceState::HeldPrivate,
    ])
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn no_parser_panics(b in sipish()) {
        let _ = callinfo::parse(&b);
        for v in callinfo::values(&b).take(64) {
            let _ = v;
        }
        let _ = event::parse(&b);
        let _ = event::parse_with_params(&b);
        let _ = expires::parse(&b);
        let _ = uri::extract_aor(&b);
        let _ = uri::host_of(&b);
        let _ = uri::parts(&b);
        let _ = uri::name_addr_uri(&b);
        let _ = uri::contact_uri(&b);
        let _ = uri::canonical_aor(&b, Some(&b));
        let mut out = Vec::new();
        let _ = uri::build_aor(&b, &b, &mut out);
        let _ = sdp::is_held(&b);
        let _ = sdp::analyze(&b);
        let _ = substate::parse(&b);
        let _ = AppearanceState::from_bytes(&b);
    }

    #[test]
    fn call_info_values_round_trip(
        host in "[a-z0-9.]{1,30}",
        index in 1u32..100_000,
        state in states(),
    ) {
        let mut v = Vec::new();
        format::write_appearance_value(&mut v, host.as_bytes(), index, state, None);
        let ci = callinfo::parse(&v).map_err(|e| TestCaseError::fail(format!("{e} in {}", String::from_utf8_lossy(&v))))?;
        prop_assert_eq!(ci.index, AppearanceIndex::Number(index));
        // active is printed for active-pending too; everything else round-trips
        prop_assert_eq!(ci.state.map(|s| s.as_str()), Some(state.as_str()));
        let want = format!("sip:{host}");
        prop_assert_eq!(ci.uri, want.as_bytes());
    }

    #[test]
    fn expires_round_trip_and_clamp(n in 0u32..=u32::MAX, max in 1u32..100_000) {
        let s = n.to_string();
        prop_assert_eq!(expires::parse(s.as_bytes()), Ok(n));
        let c = expires::clamp(n, max);
        prop_assert!(c <= max && (n == 0 || c > 0));
    }

    #[test]
    fn substate_round_trip(ttl in 0u32..100_000, terminated in any::<bool>()) {
        let state = if terminated { SubState::TerminatedTimeout } else { SubState::Active };
        let mut v = Vec::new();
        substate::write_value(&mut v, state, ttl);
        let p = substate::parse(&v).map_err(|e| TestCaseError::fail(format!("{e}")))?;
        prop_assert_eq!(p.state, state);
    }
}
