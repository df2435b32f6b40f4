//! The Event header of an SCA SUBSCRIBE: `call-info` or `line-seize`.
//!
//! The event type itself is [`crate::model::EventType`] (numeric values as
//! the C module stores them).
//!
//! # Compatibility
//!
//! [`parse`] is exactly `sca_event_from_str(&msg->event->body)`: the whole
//! (trimmed) header body must be `call-info` or `line-seize`, byte for
//! byte. Letter case matters, and **event parameters are not allowed**:
//! `Event: call-info;id=1` is rejected by the C module with `400 Bad Event`,
//! and by [`parse`] with [`ParseError::UnknownEvent`].
//!
//! [`parse_with_params`] is the RFC 6665 reading (package name, then
//! optional `;params`), for a caller that chooses to be more lenient than
//! the C module. It is still case-sensitive.

use super::{is_token_char, trim_ws, Cursor, ParseError};
use crate::model::EventType;

/// Parse an Event header value like the C module (see the module docs).
pub fn parse(value: &[u8]) -> Result<EventType, ParseError> {
    let name = trim_ws(value);
    if name.is_empty() {
        return Err(ParseError::Empty);
    }
    EventType::from_name(name).ok_or(ParseError::UnknownEvent)
}

/// Parse an Event header value allowing parameters after the package name
/// (`call-info;id=1`). Returns the event and the raw text after the first
/// `;` (empty if there is none); the parameters are not validated.
///
/// Not C behaviour: the C module rejects any parameter.
pub fn parse_with_params(value: &[u8]) -> Result<(EventType, &[u8]), ParseError> {
    let value = trim_ws(value);
    if value.is_empty() {
        return Err(ParseError::Empty);
    }
    let mut cur = Cursor::new(value);
    let name = cur.take_while(is_token_char);
    let event = EventType::from_name(name).ok_or(ParseError::UnknownEvent)?;
    cur.skip_ws();
    if cur.at_end() {
        return Ok((event, &[]));
    }
    if !cur.eat(b';') {
        return Err(ParseError::Unexpected {
            what: "Event",
            offset: cur.pos(),
        });
    }
    Ok((event, value.get(cur.pos()..).unwrap_or_default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_names() {
        assert_eq!(parse(b"call-info"), Ok(EventType::CallInfo));
        assert_eq!(parse(b"line-seize"), Ok(EventType::LineSeize));
        assert_eq!(parse(b"  line-seize \r\n"), Ok(EventType::LineSeize));
    }

    #[test]
    fn everything_else_is_unknown_like_c() {
        for v in [
            &b"Call-Info"[..],
            b"CALL-INFO",
            b"call-info;id=1",
            b"call-info ;id=1",
            b"line-seize;",
            b"call_info",
            b"call-info\0",
            b"presence",
            b"dialog",
            b"call-info,line-seize",
        ] {
            assert_eq!(parse(v), Err(ParseError::UnknownEvent), "{v:?}");
        }
        assert_eq!(parse(b""), Err(ParseError::Empty));
        assert_eq!(parse(b" \t "), Err(ParseError::Empty));
    }

    #[test]
    fn lenient_params() {
        assert_eq!(
            parse_with_params(b"call-info;id=1"),
            Ok((EventType::CallInfo, &b"id=1"[..]))
        );
        assert_eq!(
            parse_with_params(b"line-seize ; id=7 "),
            Ok((EventType::LineSeize, &b" id=7"[..]))
        );
        assert_eq!(
            parse_with_params(b"line-seize"),
            Ok((EventType::LineSeize, &b""[..]))
        );
        assert_eq!(
            parse_with_params(b"Line-Seize;id=1"),
            Err(ParseError::UnknownEvent)
        );
        assert_eq!(parse_with_params(b";id=1"), Err(ParseError::UnknownEvent));
        assert_eq!(parse_with_params(b""), Err(ParseError::Empty));
        assert_eq!(
            parse_with_params(b"call-info x"),
            Err(ParseError::Unexpected {
                what: "Event",
                offset: 10
            })
        );
        assert_eq!(
            parse_with_params(b"call-info\0"),
            Err(ParseError::Unexpected {
                what: "Event",
                offset: 9
            })
        );
    }

    #[test]
    fn garbage_is_rejected_quickly() {
        let big: Vec<u8> = b"call-info".iter().copied().cycle().take(10_240).collect();
        assert_eq!(parse(&big), Err(ParseError::UnknownEvent));
        assert_eq!(parse_with_params(&big), Err(ParseError::UnknownEvent));
    }
}
