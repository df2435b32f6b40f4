//! The Expires header of an SCA SUBSCRIBE, and the C module's clamping.
//!
//! What the C module does (`sca_subscription_from_request`):
//!
//! * No Expires header, or an empty one: the requested expiry is **0**,
//!   i.e. the SUBSCRIBE is treated as an unsubscribe ([`EXPIRES_IF_ABSENT`]).
//!   There is no default as RFC 6665 would have it.
//! * Otherwise the value is clamped to the per-event maximum
//!   (`call_info_max_expires`, default 3600; `line_seize_max_expires`,
//!   default 15). 0 stays 0. See [`clamp`] and [`effective`].
//!
//! # Compatibility
//!
//! For a plain decimal value (optionally surrounded by whitespace) that fits
//! in 32 bits, [`parse`] returns what Kamailio's `parse_expires` yields.
//! Kamailio is lax on anything else and never reports it: the SCA module
//! reads `val` without checking `valid`, so in C
//!
//! * a value of more than 10 characters (even `00000000060`) becomes 0;
//! * non-digits end the number: `12abc` gives 12, `abc` and `-5` give 0;
//! * text after whitespace is ignored: `60 foo` gives 60;
//! * 10-digit values above `u32::MAX` wrap around modulo 2^32.
//!
//! [`parse`] rejects all of these except leading zeros, which it reads as
//! the number they spell.

use super::{parse_decimal, trim_ws, ParseError};
use crate::model::EventType;

/// Default `call_info_max_expires` module parameter of the C module.
pub const DEFAULT_CALL_INFO_MAX_EXPIRES: u32 = 3600;
/// Default `line_seize_max_expires` module parameter of the C module.
pub const DEFAULT_LINE_SEIZE_MAX_EXPIRES: u32 = 15;
/// What the C module uses when a SUBSCRIBE has no (or an empty) Expires
/// header: 0, i.e. unsubscribe.
pub const EXPIRES_IF_ABSENT: u32 = 0;

/// Parse an Expires header value: decimal delta-seconds, surrounding
/// whitespace allowed, nothing else (see the module docs for how C differs
/// on garbage).
pub fn parse(value: &[u8]) -> Result<u32, ParseError> {
    let digits = trim_ws(value);
    if digits.is_empty() {
        return Err(ParseError::Empty);
    }
    parse_decimal(digits, u32::MAX, "Expires")
}

/// Clamp a requested expiry to `max` as the C module does
/// (`if (expires && expires > max) expires = max`).
pub const fn clamp(requested: u32, max: u32) -> u32 {
    if requested > max {
        max
    } else {
        requested
    }
}

/// The maximum that applies to an event package, given the two configured
/// maxima.
pub const fn max_for(event: EventType, call_info_max: u32, line_seize_max: u32) -> u32 {
    match event {
        EventType::CallInfo => call_info_max,
        EventType::LineSeize => line_seize_max,
    }
}

/// The expiry the C module grants for a SUBSCRIBE: `header` is the Expires
/// header value, `None` if the message has none. Absent or empty gives
/// [`EXPIRES_IF_ABSENT`]; otherwise the parsed value clamped to `max`.
pub fn effective(header: Option<&[u8]>, max: u32) -> Result<u32, ParseError> {
    match header.map(trim_ws) {
        None | Some([]) => Ok(EXPIRES_IF_ABSENT),
        Some(value) => parse(value).map(|v| clamp(v, max)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_values() {
        assert_eq!(parse(b"3600"), Ok(3600));
        assert_eq!(parse(b"0"), Ok(0));
        assert_eq!(parse(b" \t60\r\n"), Ok(60));
        assert_eq!(parse(b"4294967295"), Ok(u32::MAX));
        assert_eq!(parse(b"00000000060"), Ok(60));
    }

    #[test]
    fn garbage_is_rejected() {
        assert_eq!(parse(b""), Err(ParseError::Empty));
        assert_eq!(parse(b"   "), Err(ParseError::Empty));
        assert_eq!(parse(b"-5"), Err(ParseError::NotANumber("Expires")));
        assert_eq!(parse(b"+5"), Err(ParseError::NotANumber("Expires")));
        assert_eq!(parse(b"12abc"), Err(ParseError::NotANumber("Expires")));
        assert_eq!(parse(b"60 foo"), Err(ParseError::NotANumber("Expires")));
        assert_eq!(parse(b"6\x000"), Err(ParseError::NotANumber("Expires")));
        assert_eq!(
            parse(b"Thu, 01 Dec 1994 16:00:00 GMT"),
            Err(ParseError::NotANumber("Expires"))
        );
        assert_eq!(parse(b"4294967296"), Err(ParseError::OutOfRange("Expires")));
        assert_eq!(
            parse(b"99999999999999999999"),
            Err(ParseError::OutOfRange("Expires"))
        );
        let big: Vec<u8> = std::iter::repeat_n(b'7', 10_240).collect();
        assert_eq!(parse(&big), Err(ParseError::OutOfRange("Expires")));
    }

    #[test]
    fn clamping_like_c() {
        assert_eq!(clamp(0, 3600), 0);
        assert_eq!(clamp(60, 3600), 60);
        assert_eq!(clamp(3600, 3600), 3600);
        assert_eq!(clamp(3601, 3600), 3600);
        assert_eq!(clamp(u32::MAX, 15), 15);
        assert_eq!(clamp(5, 0), 0);
    }

    #[test]
    fn per_event_maximum() {
        let ci = max_for(
            EventType::CallInfo,
            DEFAULT_CALL_INFO_MAX_EXPIRES,
            DEFAULT_LINE_SEIZE_MAX_EXPIRES,
        );
        let ls = max_for(
            EventType::LineSeize,
            DEFAULT_CALL_INFO_MAX_EXPIRES,
            DEFAULT_LINE_SEIZE_MAX_EXPIRES,
        );
        assert_eq!((ci, ls), (3600, 15));
    }

    #[test]
    fn effective_expiry() {
        assert_eq!(effective(None, 3600), Ok(0));
        assert_eq!(effective(Some(b""), 3600), Ok(0));
        assert_eq!(effective(Some(b"  "), 3600), Ok(0));
        assert_eq!(effective(Some(b"0"), 3600), Ok(0));
        assert_eq!(effective(Some(b"120"), 3600), Ok(120));
        assert_eq!(effective(Some(b"7200"), 3600), Ok(3600));
        assert_eq!(effective(Some(b"3600"), 15), Ok(15));
        assert_eq!(
            effective(Some(b"x"), 15),
            Err(ParseError::NotANumber("Expires"))
        );
    }
}
