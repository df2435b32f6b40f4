//! Property tests of the cluster message codec: arbitrary records
//! round-trip through encode and decode, arbitrary bytes (and damaged
//! messages) never panic the decoder, and whatever decodes re-encodes to a
//! message that decodes to the same records.

use proptest::prelude::*;

use sca_core::appearance::DialogRef;
use sca_core::cluster::codec::{
    decode, encode, AorApps, AppearanceRec, Builder, DigestRec, Error, Header, Kind, Record, SubDel, SubPut,
    SyncChunk, SyncReq, Tombstone, HEADER_LEN, MAX_MESSAGE_LEN,
};
use sca_core::cluster::Ver;
use sca_core::store::SubscriptionRec;
use sca_core::model::{EventType, SubState};
use sca_core::parse::appearance::AppearanceState;
use sca_core::parse::callinfo::MAX_APPEARANCE_INDEX;

/// Source of the test strings: records borrow their strings, so they are
/// slices of this table, which holds every byte value many times over.
static TEXT: [u8; 4096] = {
    let mut t = [0u8; 4096];
    let mut i = 0;
    while i < t.len() {
        // a byte sequence that does not repeat with a short period
        t[i] = ((i * 167 + i / 256 * 13) % 256) as u8;
        i += 1;
    }
    t
};

fn cases() -> u32 {
    // scripts/valgrind.sh sets PROPTEST_CASES lower
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

/// A string of `TEXT`: mostly short, sometimes empty, now and then long.
fn text() -> impl Strategy<Value = &'static [u8]> {
    let len = prop_oneof![
        1 => Just(0usize),
        8 => 1usize..40,
        1 => 40usize..1500,
    ];
    (0..TEXT.len(), len).prop_map(|(start, len)| {
        let end = (start + len).min(TEXT.len());
        &TEXT[start..end]
    })
}

fn ver() -> impl Strategy<Value = Ver> {
    (any::<u64>(), any::<u32>()).prop_map(|(ms, node)| Ver { ms, node })
}

fn event() -> impl Strategy<Value = EventType> {
    prop::sample::select(vec![EventType::CallInfo, EventType::LineSeize])
}

fn sub_state() -> impl Strategy<Value = SubState> {
    (0i32..9).prop_map(|v| SubState::from_i32(v).unwrap())
}

fn app_state() -> impl Strategy<Value = AppearanceState> {
    prop::sample::select(AppearanceState::ALL.to_vec())
}

fn app_index() -> impl Strategy<Value = u32> {
    prop_oneof![1u32..20, 1u32..=MAX_APPEARANCE_INDEX]
}

fn dialog() -> impl Strategy<Value = DialogRef<'static>> {
    (text(), text(), text()).prop_map(|(call_id, from_tag, to_tag)| DialogRef {
        call_id,
        from_tag,
        to_tag,
    })
}

fn sub_put() -> impl Strategy<Value = SubPut<'static>> {
    (
        (text(), event(), text(), any::<i64>(), sub_state()),
        (-1i32..=i32::MAX, text(), text(), text(), text()),
        (any::<u32>(), any::<u32>(), any::<u32>(), ver()),
    )
        .prop_map(
            |(
                (aor, event, subscriber, expires, state),
                (index, call_id, from_tag, to_tag, record_route),
                (notify_cseq, subscribe_cseq, origin, ver),
            )| SubPut {
                sub: SubscriptionRec {
                    aor,
                    event,
                    subscriber,
                    expires,
                    state,
                    index,
                    call_id,
                    from_tag,
                    to_tag,
                    record_route,
                    notify_cseq,
                    subscribe_cseq,
                },
                origin,
                ver,
            },
        )
}

fn sub_del() -> impl Strategy<Value = SubDel<'static>> {
    (text(), event(), text(), ver()).prop_map(|(aor, event, subscriber, ver)| SubDel {
        aor,
        event,
        subscriber,
        ver,
    })
}

fn appearance() -> impl Strategy<Value = AppearanceRec<'static>> {
    (
        (
            app_index(),
            app_state(),
            any::<u8>(),
            any::<i64>(),
            any::<i64>(),
        ),
        (ver(), ver()),
        (text(), text(), text(), dialog()),
        (text(), text(), dialog()),
    )
        .prop_map(
            |(
                (index, state, flags, mtime, ctime),
                (inc, ver),
                (owner, callee, uri, dialog),
                (prev_owner, prev_callee, prev_dialog),
            )| AppearanceRec {
                index,
                state,
                flags,
                mtime,
                ctime,
                inc,
                ver,
                owner,
                callee,
                uri,
                dialog,
                prev_owner,
                prev_callee,
                prev_dialog,
            },
        )
}

fn tombstone() -> impl Strategy<Value = Tombstone> {
    (app_index(), ver(), ver()).prop_map(|(index, inc, ver)| Tombstone { index, inc, ver })
}

fn aor_apps() -> impl Strategy<Value = AorApps<'static>> {
    (
        text(),
        any::<bool>(),
        ver(),
        prop::collection::vec(appearance(), 0..4),
        prop::collection::vec(tombstone(), 0..4),
    )
        .prop_map(|(aor, shared, shared_ver, apps, tombstones)| AorApps {
            aor,
            shared,
            shared_ver,
            apps,
            tombstones,
        })
}

fn sync_req() -> impl Strategy<Value = SyncReq> {
    (any::<u32>(), any::<u32>(), any::<u32>()).prop_map(|(session, cursor, max_bytes)| SyncReq {
        session,
        cursor,
        max_bytes,
    })
}

fn sync_chunk() -> impl Strategy<Value = SyncChunk> {
    (any::<u32>(), any::<u32>()).prop_map(|(session, next_cursor)| SyncChunk {
        session,
        next_cursor,
    })
}

fn digest() -> impl Strategy<Value = DigestRec> {
    (any::<u32>(), any::<u32>(), any::<u32>(), prop::collection::vec(any::<u64>(), 0..300)).prop_map(
        |(session, cursor, max_bytes, sums)| DigestRec { session, cursor, max_bytes, sums },
    )
}

/// A header and records that belong together: `CHANGES` with subscription
/// and appearance records, `SYNC_REQ` with its request, `SYNC_CHUNK` with
/// its chunk record somewhere among subscriptions and appearances.
fn message() -> impl Strategy<Value = (Header, Vec<Record<'static>>)> {
    let header = (any::<u16>(), any::<u32>(), any::<u32>(), any::<u32>());
    let changes = prop::collection::vec(
        prop_oneof![
            sub_put().prop_map(Record::SubPut),
            sub_del().prop_map(Record::SubDel),
            aor_apps().prop_map(Record::AorApps),
        ],
        0..6,
    )
    .prop_map(|r| (Kind::Changes, r));
    let req = sync_req().prop_map(|r| (Kind::SyncReq, vec![Record::SyncReq(r)]));
    let dig = digest().prop_map(|r| (Kind::Digest, vec![Record::Digest(r)]));
    let chunk = (
        prop::collection::vec(
            prop_oneof![
                sub_put().prop_map(Record::SubPut),
                aor_apps().prop_map(Record::AorApps),
            ],
            0..6,
        ),
        sync_chunk(),
        any::<prop::sample::Index>(),
    )
        .prop_map(|(mut records, c, at)| {
            let at = at.index(records.len() + 1);
            records.insert(at, Record::SyncChunk(c));
            (Kind::SyncChunk, records)
        });
    (header, prop_oneof![3 => changes, 1 => req, 2 => chunk, 1 => dig]).prop_map(
        |((flags, node_id, boot_id, seq), (kind, records))| {
            let mut h = Header::new(kind, node_id, boot_id, seq);
            h.flags = flags;
            (h, records)
        },
    )
}

/// What decodes re-encodes (without the skipped unknown records) to a
/// message that decodes to the same header and records, and the encoding
/// is canonical: with nothing skipped it gives back the input.
fn check_reencodes(input: &[u8]) -> Result<(), TestCaseError> {
    let Ok(m) = decode(input) else {
        return Ok(());
    };
    let again = encode(&m.header, &m.records)
        .map_err(|e| TestCaseError::fail(format!("a decoded message does not re-encode: {e}")))?;
    let m2 = decode(&again)
        .map_err(|e| TestCaseError::fail(format!("a re-encoded message does not decode: {e}")))?;
    prop_assert_eq!(m2.header, m.header);
    prop_assert_eq!(&m2.records, &m.records);
    prop_assert_eq!(m2.skipped, 0);
    if m.skipped == 0 {
        prop_assert_eq!(again.as_slice(), input);
    } else {
        prop_assert!(again.len() < input.len());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn records_round_trip((header, records) in message()) {
        let want = HEADER_LEN + records.iter().map(Record::encoded_len).sum::<usize>();
        match encode(&header, &records) {
            Ok(bytes) => {
                prop_assert_eq!(bytes.len(), want);
                let m = decode(&bytes).map_err(|e| TestCaseError::fail(format!("{e}")))?;
                prop_assert_eq!(m.header, header);
                prop_assert_eq!(&m.records, &records);
                prop_assert_eq!(m.skipped, 0);
            }
            // only a message over the limit may be refused
            Err(Error::TooLarge { len }) => {
                prop_assert!(want > MAX_MESSAGE_LEN);
                prop_assert!(len > MAX_MESSAGE_LEN && len <= want);
            }
            Err(e) => return Err(TestCaseError::fail(format!("refused: {e}"))),
        }
    }

    #[test]
    fn builder_splits_into_messages_under_the_limit((header, records) in message()) {
        // put the records, ten times over so that they often need more
        // than one message, into as many messages as it takes; every one
        // decodes, and together they hold every record in order
        let data: Vec<&Record<'_>> = records
            .iter()
            .filter(|r| matches!(r, Record::SubPut(_) | Record::SubDel(_) | Record::AorApps(_)))
            .cycle()
            .take(10 * records.len())
            .collect();
        let h = Header::new(Kind::Changes, header.node_id, header.boot_id, header.seq);
        let mut out = Vec::new();
        let mut b = Builder::new(&h).unwrap();
        for r in &data {
            if let Err(Error::TooLarge { .. }) = b.push(r) {
                out.push(std::mem::replace(&mut b, Builder::new(&h).unwrap()).finish().unwrap());
                b.push(r).map_err(|e| TestCaseError::fail(format!("{e}")))?;
            }
            prop_assert!(b.len() <= MAX_MESSAGE_LEN);
        }
        out.push(b.finish().unwrap());
        let mut back = Vec::new();
        for m in &out {
            prop_assert!(m.len() <= MAX_MESSAGE_LEN);
            back.extend(decode(m).map_err(|e| TestCaseError::fail(format!("{e}")))?.records);
        }
        prop_assert_eq!(back.iter().collect::<Vec<_>>(), data);
    }

    #[test]
    fn arbitrary_bytes_never_panic(b in prop::collection::vec(any::<u8>(), 0..600)) {
        check_reencodes(&b)?;
        // and behind a valid header
        for kind in 1u8..=3 {
            let mut m = b"SCAR".to_vec();
            m.extend_from_slice(&[1, kind, 0, 0]);
            m.extend_from_slice(&[0; 12]);
            m.extend_from_slice(&b);
            check_reencodes(&m)?;
        }
    }

    #[test]
    fn damaged_messages_never_panic(
        (header, records) in message(),
        cut in any::<prop::sample::Index>(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let Ok(bytes) = encode(&header, &records) else { return Ok(()) };
        // truncated anywhere
        let n = cut.index(bytes.len() + 1);
        check_reencodes(&bytes[..n])?;
        // a few bytes overwritten
        let mut m = bytes.clone();
        for (at, v) in &flips {
            let i = at.index(m.len());
            m[i] = *v;
        }
        check_reencodes(&m)?;
    }
}
