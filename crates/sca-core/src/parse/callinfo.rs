//! Call-Info header values as used by SCA:
//! `<sip:HOST>;appearance-index=N;appearance-state=S;appearance-uri="..."`.
//!
//! Two entry points:
//!
//! * [`parse`] reads the single value a UA puts into a request or response
//!   (INVITE, its replies, BYE, line-seize SUBSCRIBE). This is what the C
//!   module's `sca_call_info_body_parse` does; the index must be a number.
//! * [`values`] iterates a comma-separated list as the module itself sends
//!   it in NOTIFYs; there `appearance-index=*` is allowed. The C module
//!   never parses such lists; this is for tests and fuzzers.
//!
//! Only the first Call-Info *header* of a message is looked at by the C
//! module (`get_hdr(msg, HDR_CALLINFO_T)`); picking the header is the
//! caller's job.
//!
//! # Compatibility with `sca_call_info_body_parse`
//!
//! Everything the C parser accepts is accepted here with the same index and
//! state, except the case noted under "Stricter" below. The C parser is a
//! fixed-position matcher; we parse the RFC 3261 grammar instead, so we
//! also accept valid input that C rejects:
//!
//! * whitespace around `;`, `=` and after `>` (C: none allowed);
//! * parameter names in any letter case (C: exact lowercase);
//! * parameters in any order and unknown parameters, which are ignored
//!   (C: exactly `appearance-index`, then optionally `appearance-state`,
//!   then optionally `appearance-uri`, nothing else);
//! * `;` inside the `<...>` URI, e.g. `<sip:h;transport=tcp>` (C requires
//!   the first `;` of the value to follow the `>` directly);
//! * `<SIP:...>` (the scheme is case-insensitive in RFC 3261).
//!
//! Values:
//!
//! * [`CallInfo::uri`] is the URI *without* the angle brackets (C keeps
//!   them in `sca_uri`, which it never uses).
//! * [`CallInfo::appearance_uri`] is the contents of the quoted string
//!   without the quotes, escapes left as they are (C keeps the raw rest of
//!   the header including quotes, and never uses it).
//! * `appearance-index=0` is accepted and returned as `Number(0)`, as in
//!   C, where 0 means "any index" (a line-seize for index 0 seizes the next
//!   free one). See [`CallInfo::is_empty_c`].
//! * The state name follows [`AppearanceState::from_bytes`] (so `active`
//!   is `ActivePending`, names are case-sensitive).
//!
//! Stricter than C (all garbage, or accidental in C):
//!
//! * An empty index, `+5`, or an index above `i32::MAX` is an error; C's
//!   `str2int` takes an empty string or a lone `+` as 0, skips a leading
//!   `+`, and accepts values up to `u32::MAX`, which then become negative
//!   `int` indexes.
//! * `appearance-uri` must be one well-formed value (a terminated quoted
//!   string, a `<...>` URI, or a non-empty run up to `;`, `,` or
//!   whitespace), followed only by more parameters. C takes everything
//!   after `appearance-uri=` verbatim (unterminated quotes, spaces, junk).
//! * Several comma-separated values: [`parse`] rejects them
//!   ([`ParseError::MultipleValues`]). C rejects them too when the comma
//!   follows the index or the state (the value then fails to convert), but
//!   accepts them when it follows `appearance-uri=`, because the URI
//!   swallows the rest of the header.
//! * Whitespace, control characters and `<` inside the `<...>` URI, and
//!   NUL bytes anywhere outside quoted strings, are errors.
//! * Schemes other than `sip:` (`sips:`, `tel:`) are errors, as in C.

use super::{is_token_char, is_ws, parse_decimal, starts_with_ci, Cursor, ParseError};
use crate::parse::appearance::AppearanceState;

/// Largest appearance index accepted: the C module stores it in an `int`.
pub const MAX_APPEARANCE_INDEX: u32 = i32::MAX as u32;

/// The `appearance-index` parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AppearanceIndex {
    /// A concrete index. `0` means "any" to the C module.
    Number(u32),
    /// `*`: every idle index (only in NOTIFY values, see [`values`]).
    Any,
}

impl AppearanceIndex {
    /// The concrete index, if any.
    pub const fn number(self) -> Option<u32> {
        match self {
            Self::Number(n) => Some(n),
            Self::Any => None,
        }
    }
}

/// One parsed Call-Info value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallInfo<'a> {
    /// The URI between `<` and `>`, e.g. `sip:example.com`.
    pub uri: &'a [u8],
    /// `appearance-index` (required).
    pub index: AppearanceIndex,
    /// `appearance-state`, if present (C: `SCA_APPEARANCE_STATE_UNKNOWN`
    /// when absent).
    pub state: Option<AppearanceState>,
    /// Contents of `appearance-uri`, without the surrounding quotes.
    pub appearance_uri: Option<&'a [u8]>,
}

impl CallInfo<'_> {
    /// The C module's `SCA_CALL_INFO_EMPTY`: index 0 and no state.
    pub fn is_empty_c(&self) -> bool {
        self.index == AppearanceIndex::Number(0) && self.state.is_none()
    }
}

/// Parse a single Call-Info value (see the module docs).
pub fn parse(value: &[u8]) -> Result<CallInfo<'_>, ParseError> {
    let (info, end) = parse_one(value, 0, false)?;
    if end < value.len() {
        return Err(ParseError::MultipleValues("Call-Info"));
    }
    Ok(info)
}

/// Iterate the comma-separated values of a Call-Info header, as sent in
/// NOTIFYs (`appearance-index=*` allowed). Stops after the first error.
pub fn values(value: &[u8]) -> Values<'_> {
    Values {
        input: value,
        pos: 0,
        state: ValuesState::First,
    }
}

/// Iterator returned by [`values`].
#[derive(Debug, Clone)]
pub struct Values<'a> {
    input: &'a [u8],
    pos: usize,
    state: ValuesState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ValuesState {
    First,
    AfterComma,
    Done,
}

impl<'a> Iterator for Values<'a> {
    type Item = Result<CallInfo<'a>, ParseError>;

    fn next(&mut self) -> Option<Self::Item> {
        let after_comma = match self.state {
            ValuesState::Done => return None,
            ValuesState::First => false,
            ValuesState::AfterComma => true,
        };
        match parse_one(self.input, self.pos, true) {
            Ok((info, end)) => {
                if self.input.get(end) == Some(&b',') {
                    self.pos = end + 1;
                    self.state = ValuesState::AfterComma;
                } else {
                    self.state = ValuesState::Done;
                }
                Some(Ok(info))
            }
            Err(e) => {
                self.state = ValuesState::Done;
                Some(Err(if after_comma && e == ParseError::Empty {
                    ParseError::Truncated("Call-Info value after ','")
                } else {
                    e
                }))
            }
        }
    }
}

/// Parse one value starting at `start`. Returns the value and the offset of
/// the `,` that ends it, or `input.len()`.
fn parse_one(
    input: &[u8],
    start: usize,
    allow_wildcard: bool,
) -> Result<(CallInfo<'_>, usize), ParseError> {
    let mut cur = Cursor::at(input, start);
    cur.skip_ws();
    if cur.at_end() {
        return Err(ParseError::Empty);
    }
    let uri = cur.angle("Call-Info URI")?;
    if uri.is_empty() {
        return Err(ParseError::EmptyUri);
    }
    if !starts_with_ci(uri, b"sip:") {
        return Err(ParseError::UnsupportedScheme);
    }

    let mut index: Option<AppearanceIndex> = None;
    let mut state: Option<AppearanceState> = None;
    let mut appearance_uri: Option<&[u8]> = None;

    loop {
        cur.skip_ws();
        match cur.peek() {
            None | Some(b',') => break,
            Some(b';') => cur.bump(),
            Some(_) => {
                return Err(ParseError::Unexpected {
                    what: "Call-Info parameters",
                    offset: cur.pos(),
                })
            }
        }
        cur.skip_ws();
        let name_at = cur.pos();
        let name = cur.take_while(is_token_char);
        if name.is_empty() {
            return Err(if cur.at_end() {
                ParseError::Truncated("parameter name")
            } else {
                ParseError::Unexpected {
                    what: "parameter name",
                    offset: name_at,
                }
            });
        }
        cur.skip_ws();
        let value = if cur.eat(b'=') {
            cur.skip_ws();
            param_value(&mut cur)?
        } else {
            None
        };

        if name.eq_ignore_ascii_case(b"appearance-index") {
            if index.is_some() {
                return Err(ParseError::DuplicateParam("appearance-index"));
            }
            index = Some(parse_index(value, allow_wildcard)?);
        } else if name.eq_ignore_ascii_case(b"appearance-state") {
            if state.is_some() {
                return Err(ParseError::DuplicateParam("appearance-state"));
            }
            let text = match value {
                Some(ParamValue::Token(t)) => t,
                Some(ParamValue::Quoted(_)) => return Err(ParseError::UnknownState),
                None => return Err(ParseError::MissingValue("appearance-state")),
            };
            state = Some(AppearanceState::from_bytes(text).ok_or(ParseError::UnknownState)?);
        } else if name.eq_ignore_ascii_case(b"appearance-uri") {
            if appearance_uri.is_some() {
                return Err(ParseError::DuplicateParam("appearance-uri"));
            }
            appearance_uri = Some(match value {
                Some(ParamValue::Token(t) | ParamValue::Quoted(t)) => t,
                None => return Err(ParseError::MissingValue("appearance-uri")),
            });
        }
        // Other parameters are ignored.
    }

    let index = index.ok_or(ParseError::MissingParam("appearance-index"))?;
    Ok((
        CallInfo {
            uri,
            index,
            state,
            appearance_uri,
        },
        cur.pos(),
    ))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ParamValue<'a> {
    Token(&'a [u8]),
    Quoted(&'a [u8]),
}

/// A parameter value after `=` (and whitespace): a quoted string, a
/// `<...>` URI (kept with its brackets), or a run of bytes up to `;`, `,`,
/// whitespace or a quote. `None` if the value is empty.
fn param_value<'a>(cur: &mut Cursor<'a>) -> Result<Option<ParamValue<'a>>, ParseError> {
    match cur.peek() {
        Some(b'"') => Ok(Some(ParamValue::Quoted(cur.quoted()?))),
        Some(b'<') => {
            // A bracketed URI, kept with its brackets.
            let start = cur.pos();
            cur.angle("parameter value")?;
            Ok(Some(ParamValue::Token(cur.since(start))))
        }
        _ => {
            let t = cur.take_while(|b| {
                !is_ws(b) && b > b' ' && b != 0x7f && !matches!(b, b';' | b',' | b'"')
            });
            Ok((!t.is_empty()).then_some(ParamValue::Token(t)))
        }
    }
}

fn parse_index(
    value: Option<ParamValue<'_>>,
    allow_wildcard: bool,
) -> Result<AppearanceIndex, ParseError> {
    const WHAT: &str = "appearance-index";
    match value {
        None => Err(ParseError::MissingValue(WHAT)),
        Some(ParamValue::Quoted(_)) => Err(ParseError::NotANumber(WHAT)),
        Some(ParamValue::Token(b"*")) => {
            if allow_wildcard {
                Ok(AppearanceIndex::Any)
            } else {
                Err(ParseError::WildcardIndex)
            }
        }
        Some(ParamValue::Token(t)) => {
            parse_decimal(t, MAX_APPEARANCE_INDEX, WHAT).map(AppearanceIndex::Number)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::appearance::AppearanceState as S;

    fn ok(v: &[u8]) -> CallInfo<'_> {
        match parse(v) {
            Ok(ci) => ci,
            Err(e) => panic!("{:?} failed: {e}", String::from_utf8_lossy(v)),
        }
    }

    #[test]
    fn c_canonical_forms() {
        let ci = ok(b"<sip:example.com>;appearance-index=1");
        assert_eq!(ci.uri, b"sip:example.com");
        assert_eq!(ci.index, AppearanceIndex::Number(1));
        assert_eq!(ci.state, None);
        assert_eq!(ci.appearance_uri, None);

        let ci = ok(b"<sip:example.com>;appearance-index=2;appearance-state=held");
        assert_eq!(ci.index, AppearanceIndex::Number(2));
        assert_eq!(ci.state, Some(S::Held));

        let ci = ok(
            b"<sip:example.com>;appearance-index=3;appearance-state=held-private;appearance-uri=\"sip:alice@example.com\"",
        );
        assert_eq!(ci.state, Some(S::HeldPrivate));
        assert_eq!(ci.appearance_uri, Some(&b"sip:alice@example.com"[..]));
    }

    #[test]
    fn active_parses_as_active_pending_like_c() {
        let ci = ok(b"<sip:h>;appearance-index=1;appearance-state=active");
        assert_eq!(ci.state, Some(S::ActivePending));
    }

    #[test]
    fn every_c_state_name_is_accepted() {
        for (name, state) in [
            ("idle", S::Idle),
            ("seized", S::Seized),
            ("progressing", S::Progressing),
            ("alerting", S::Alerting),
            ("active", S::ActivePending),
            ("held", S::Held),
            ("held-private", S::HeldPrivate),
        ] {
            let v = format!("<sip:h>;appearance-index=1;appearance-state={name}");
            assert_eq!(
                parse(v.as_bytes()).map(|c| c.state),
                Ok(Some(state)),
                "{name}"
            );
        }
    }

    #[test]
    fn unknown_or_miscased_state_is_rejected_like_c() {
        for v in [
            &b"<sip:h>;appearance-index=1;appearance-state=unknown"[..],
            b"<sip:h>;appearance-index=1;appearance-state=IDLE",
            b"<sip:h>;appearance-index=1;appearance-state=ringing",
            b"<sip:h>;appearance-index=1;appearance-state=\"idle\"",
        ] {
            assert_eq!(parse(v), Err(ParseError::UnknownState));
        }
        assert_eq!(
            parse(b"<sip:h>;appearance-index=1;appearance-state="),
            Err(ParseError::MissingValue("appearance-state"))
        );
        assert_eq!(
            parse(b"<sip:h>;appearance-index=1;appearance-state"),
            Err(ParseError::MissingValue("appearance-state"))
        );
    }

    #[test]
    fn index_zero_is_accepted_and_c_empty() {
        let ci = ok(b"<sip:h>;appearance-index=0");
        assert_eq!(ci.index, AppearanceIndex::Number(0));
        assert!(ci.is_empty_c());
        let ci = ok(b"<sip:h>;appearance-index=0;appearance-state=idle");
        assert!(!ci.is_empty_c());
        assert!(!ok(b"<sip:h>;appearance-index=1").is_empty_c());
    }

    #[test]
    fn index_limits_and_garbage() {
        assert_eq!(
            ok(b"<sip:h>;appearance-index=2147483647").index,
            AppearanceIndex::Number(2_147_483_647)
        );
        assert_eq!(
            ok(b"<sip:h>;appearance-index=007").index,
            AppearanceIndex::Number(7)
        );
        let oor = Err(ParseError::OutOfRange("appearance-index"));
        assert_eq!(parse(b"<sip:h>;appearance-index=2147483648"), oor);
        assert_eq!(parse(b"<sip:h>;appearance-index=4294967296"), oor);
        assert_eq!(parse(b"<sip:h>;appearance-index=99999999999999999999"), oor);
        let nan = Err(ParseError::NotANumber("appearance-index"));
        assert_eq!(parse(b"<sip:h>;appearance-index=-1"), nan);
        assert_eq!(parse(b"<sip:h>;appearance-index=+1"), nan);
        assert_eq!(parse(b"<sip:h>;appearance-index=1x"), nan);
        assert_eq!(parse(b"<sip:h>;appearance-index=x"), nan);
        assert_eq!(parse(b"<sip:h>;appearance-index=\"1\""), nan);
        assert_eq!(
            parse(b"<sip:h>;appearance-index="),
            Err(ParseError::MissingValue("appearance-index"))
        );
        assert_eq!(
            parse(b"<sip:h>;appearance-index"),
            Err(ParseError::MissingValue("appearance-index"))
        );
        assert_eq!(
            parse(b"<sip:h>;appearance-index=*"),
            Err(ParseError::WildcardIndex)
        );
    }

    #[test]
    fn missing_index_is_rejected() {
        let missing = Err(ParseError::MissingParam("appearance-index"));
        assert_eq!(parse(b"<sip:h>"), missing);
        assert_eq!(parse(b"<sip:h>;appearance-state=idle"), missing);
        assert_eq!(parse(b"<sip:h>;purpose=icon"), missing);
    }

    #[test]
    fn lenient_whitespace_case_and_order() {
        let ci = ok(b"  <sip:h> ; Appearance-Index = 4 ;\tAPPEARANCE-STATE= seized \r\n");
        assert_eq!(ci.index, AppearanceIndex::Number(4));
        assert_eq!(ci.state, Some(S::Seized));

        let ci = ok(
            b"<SIP:h;transport=tcp>;appearance-state=alerting;foo;bar=\"x;y\";appearance-index=5",
        );
        assert_eq!(ci.uri, b"SIP:h;transport=tcp");
        assert_eq!(ci.index, AppearanceIndex::Number(5));
        assert_eq!(ci.state, Some(S::Alerting));
    }

    #[test]
    fn appearance_uri_forms() {
        let ci = ok(b"<sip:h>;appearance-index=1;appearance-uri=\"\\\"Alice\\\" <sip:a@h>\"");
        assert_eq!(ci.appearance_uri, Some(&b"\\\"Alice\\\" <sip:a@h>"[..]));
        let ci = ok(b"<sip:h>;appearance-index=1;appearance-uri=\"\"");
        assert_eq!(ci.appearance_uri, Some(&b""[..]));
        let ci = ok(b"<sip:h>;appearance-index=1;appearance-uri=sip:a@h");
        assert_eq!(ci.appearance_uri, Some(&b"sip:a@h"[..]));
        let ci = ok(b"<sip:h>;appearance-index=1;appearance-uri=<sip:a@h;user=phone>;x=y");
        assert_eq!(ci.appearance_uri, Some(&b"<sip:a@h;user=phone>"[..]));
        assert_eq!(
            parse(b"<sip:h>;appearance-index=1;appearance-uri="),
            Err(ParseError::MissingValue("appearance-uri"))
        );
        assert_eq!(
            parse(b"<sip:h>;appearance-index=1;appearance-uri=\"sip:a@h"),
            Err(ParseError::UnterminatedQuote { offset: 42 })
        );
        assert_eq!(
            parse(b"<sip:h>;appearance-index=1;appearance-uri=<sip:a@h"),
            Err(ParseError::UnterminatedAngle { offset: 42 })
        );
    }

    #[test]
    fn duplicated_params_are_rejected() {
        assert_eq!(
            parse(b"<sip:h>;appearance-index=1;appearance-index=2"),
            Err(ParseError::DuplicateParam("appearance-index"))
        );
        assert_eq!(
            parse(b"<sip:h>;appearance-index=1;appearance-state=idle;APPEARANCE-STATE=idle"),
            Err(ParseError::DuplicateParam("appearance-state"))
        );
        assert_eq!(
            parse(b"<sip:h>;appearance-index=1;appearance-uri=\"a\";appearance-uri=\"b\""),
            Err(ParseError::DuplicateParam("appearance-uri"))
        );
    }

    #[test]
    fn uri_part_errors() {
        assert_eq!(parse(b""), Err(ParseError::Empty));
        assert_eq!(parse(b"   \r\n\t"), Err(ParseError::Empty));
        assert_eq!(
            parse(b"sip:h;appearance-index=1"),
            Err(ParseError::Unexpected {
                what: "Call-Info URI",
                offset: 0
            })
        );
        assert_eq!(
            parse(b"\"Line\" <sip:h>;appearance-index=1"),
            Err(ParseError::Unexpected {
                what: "Call-Info URI",
                offset: 0
            })
        );
        assert_eq!(
            parse(b"<sip:h"),
            Err(ParseError::UnterminatedAngle { offset: 0 })
        );
        assert_eq!(
            parse(b"<"),
            Err(ParseError::UnterminatedAngle { offset: 0 })
        );
        assert_eq!(parse(b"<>;appearance-index=1"), Err(ParseError::EmptyUri));
        assert_eq!(
            parse(b"<sips:h>;appearance-index=1"),
            Err(ParseError::UnsupportedScheme)
        );
        assert_eq!(
            parse(b"<tel:+1234>;appearance-index=1"),
            Err(ParseError::UnsupportedScheme)
        );
        assert_eq!(
            parse(b"<sip:a b>;appearance-index=1"),
            Err(ParseError::Unexpected {
                what: "Call-Info URI",
                offset: 6
            })
        );
        assert_eq!(
            parse(b"<sip:h>x;appearance-index=1"),
            Err(ParseError::Unexpected {
                what: "Call-Info parameters",
                offset: 7
            })
        );
    }

    #[test]
    fn truncated_values() {
        assert_eq!(
            parse(b"<sip:h>;"),
            Err(ParseError::Truncated("parameter name"))
        );
        assert_eq!(
            parse(b"<sip:h>; "),
            Err(ParseError::Truncated("parameter name"))
        );
        assert_eq!(
            parse(b"<sip:h>;appearance-index=1;"),
            Err(ParseError::Truncated("parameter name"))
        );
        assert_eq!(
            parse(b"<sip:h>;=1"),
            Err(ParseError::Unexpected {
                what: "parameter name",
                offset: 8
            })
        );
        assert_eq!(
            parse(b"<sip:h>;appearance-index=1 2"),
            Err(ParseError::Unexpected {
                what: "Call-Info parameters",
                offset: 27
            })
        );
    }

    #[test]
    fn embedded_nul_is_rejected() {
        assert!(parse(b"<sip:h\0>;appearance-index=1").is_err());
        assert!(parse(b"<sip:h>;appearance-index=1\0").is_err());
        assert!(parse(b"<sip:h>;appearance\0-index=1").is_err());
        assert!(parse(b"<sip:h>;appearance-index=\x001").is_err());
        assert!(parse(b"<sip:h>;appearance-index=1;appearance-state=idle\0").is_err());
        // Inside a quoted string a NUL is carried through untouched.
        let ci = ok(b"<sip:h>;appearance-index=1;appearance-uri=\"a\0b\"");
        assert_eq!(ci.appearance_uri, Some(&b"a\0b"[..]));
    }

    #[test]
    fn parse_rejects_lists() {
        let multi = Err(ParseError::MultipleValues("Call-Info"));
        assert_eq!(
            parse(b"<sip:h>;appearance-index=1,<sip:h>;appearance-index=2"),
            multi
        );
        assert_eq!(parse(b"<sip:h>;appearance-index=1 ,"), multi);
        assert_eq!(
            parse(b"<sip:h>;appearance-index=1;appearance-uri=\"a,b\",<sip:h>;appearance-index=2"),
            multi
        );
        // A comma inside a quoted string is not a separator.
        let ci = ok(b"<sip:h>;appearance-index=1;appearance-uri=\"a,b\"");
        assert_eq!(ci.appearance_uri, Some(&b"a,b"[..]));
    }

    #[test]
    fn values_iterates_notify_lists() {
        let v = b"<sip:example.com>;appearance-index=1;appearance-state=active;appearance-uri=\"<sip:a@b>\", <sip:example.com>;appearance-index=*;appearance-state=idle";
        let got: Vec<_> = values(v).collect();
        assert_eq!(got.len(), 2);
        assert_eq!(
            got.first(),
            Some(&Ok(CallInfo {
                uri: b"sip:example.com",
                index: AppearanceIndex::Number(1),
                state: Some(S::ActivePending),
                appearance_uri: Some(b"<sip:a@b>"),
            }))
        );
        assert_eq!(
            got.get(1),
            Some(&Ok(CallInfo {
                uri: b"sip:example.com",
                index: AppearanceIndex::Any,
                state: Some(S::Idle),
                appearance_uri: None,
            }))
        );
    }

    #[test]
    fn values_edge_cases() {
        let got: Vec<_> = values(b"").collect();
        assert_eq!(got, [Err(ParseError::Empty)]);

        let got: Vec<_> = values(b"<sip:h>;appearance-index=1,").collect();
        assert_eq!(got.len(), 2);
        assert!(matches!(got.first(), Some(Ok(_))));
        assert_eq!(
            got.get(1),
            Some(&Err(ParseError::Truncated("Call-Info value after ','")))
        );

        let got: Vec<_> =
            values(b"<sip:h>;appearance-index=1,,<sip:h>;appearance-index=2").collect();
        assert_eq!(got.len(), 2);
        assert!(matches!(
            got.get(1),
            Some(Err(ParseError::Unexpected { .. }))
        ));

        let got: Vec<_> =
            values(b"<sip:h>;appearance-index=1, garbage, <sip:h>;appearance-index=2").collect();
        assert_eq!(got.len(), 2, "iteration stops at the first error");
        assert!(got.get(1).is_some_and(|r| r.is_err()));
    }

    #[test]
    fn large_inputs_are_linear_and_do_not_panic() {
        // 10 kB of assorted garbage.
        let garbage: Vec<u8> = b"<>;=,\"\\ a*\0"
            .iter()
            .copied()
            .cycle()
            .take(10_240)
            .collect();
        assert!(parse(&garbage).is_err());
        assert!(values(&garbage).count() <= 1);

        // A 10 kB appearance-uri and 10 kB of ignored parameters parse fine.
        let mut v = b"<sip:h>;appearance-index=1;appearance-uri=\"".to_vec();
        v.extend(std::iter::repeat_n(b'x', 10_240));
        v.push(b'"');
        for _ in 0..1000 {
            v.extend_from_slice(b";foo=bar");
        }
        let ci = ok(&v);
        assert_eq!(ci.appearance_uri.map(<[u8]>::len), Some(10_240));

        // Many list elements.
        let mut list = Vec::new();
        for i in 1..=500 {
            if i > 1 {
                list.push(b',');
            }
            list.extend_from_slice(format!("<sip:h>;appearance-index={i}").as_bytes());
        }
        assert_eq!(values(&list).filter(|r| r.is_ok()).count(), 500);

        // Huge digit strings fail fast.
        let mut digits = b"<sip:h>;appearance-index=".to_vec();
        digits.extend(std::iter::repeat_n(b'9', 10_240));
        assert_eq!(
            parse(&digits),
            Err(ParseError::OutOfRange("appearance-index"))
        );
        // ...and so do 10 kB of leading zeros, which are a valid 1.
        let mut zeros = b"<sip:h>;appearance-index=".to_vec();
        zeros.extend(std::iter::repeat_n(b'0', 10_240));
        zeros.push(b'1');
        assert_eq!(ok(&zeros).index, AppearanceIndex::Number(1));
    }

    #[test]
    fn every_truncation_of_a_valid_value_is_classified() {
        let full: &[u8] = b"<sip:example.com>;appearance-index=12;appearance-state=held;appearance-uri=\"sip:a@b\"";
        let text = String::from_utf8_lossy(full);
        let pos_after = |m: &str| text.find(m).map_or(usize::MAX, |i| i + m.len());
        let index_done = pos_after("index=1");
        let quote_open = pos_after("uri=\"");
        let quote_close = full.len();
        for n in 0..=full.len() {
            let prefix = full.get(..n).unwrap_or_default();
            let result = parse(prefix);
            if n < index_done {
                assert!(result.is_err(), "cut at {n} has no index yet");
            } else if n >= quote_open && n < quote_close {
                assert_eq!(
                    result,
                    Err(ParseError::UnterminatedQuote {
                        offset: quote_open - 1
                    }),
                    "cut at {n}"
                );
            }
            if let Ok(ci) = result {
                // A truncated parameter *name* is an unknown parameter and
                // is ignored, so some cuts are valid; the index is intact.
                assert!(
                    matches!(ci.index, AppearanceIndex::Number(1 | 12)),
                    "cut at {n}: {ci:?}"
                );
            }
        }
        for end in ["index=1", "index=12", "state=held"] {
            assert!(
                parse(full.get(..pos_after(end)).unwrap_or_default()).is_ok(),
                "{end}"
            );
        }
        assert_eq!(
            parse(full.get(..pos_after("state=hel")).unwrap_or_default()),
            Err(ParseError::UnknownState)
        );
        assert!(parse(full).is_ok());
    }
}
