//! Subscription-State values for NOTIFYs.
//!
//! The state itself is [`crate::model::SubState`], whose `as_str` already
//! holds the C module's strings (`terminated;reason=noresource`, ...).
//!
//! Formatting follows `sca_notify_append_subscription_state_header`:
//! `Subscription-State: STATE[;expires=TTL]\r\n`, where `;expires=` is
//! written only when the remaining lifetime is positive, whatever the state
//! (so an `active` subscription that expires this very second is sent
//! without `expires`, and a terminated one never has it because the module
//! zeroes its expiry first).
//!
//! Parsing is not something the C module does; [`parse`] exists for tests
//! and fuzzers and is the inverse of [`write_value`].

use super::{is_token_char, parse_decimal, push_decimal, Cursor, ParseError};
use crate::model::SubState;

/// Name and separator of the header, as the C module writes it.
pub const HEADER_PREFIX: &[u8] = b"Subscription-State: ";

/// Seconds left until `expires_at`, as the C module computes the `expires`
/// parameter: `expires_at - now`, negative values as 0, saturated to
/// `u32::MAX` (C would overflow its `int`).
pub fn ttl(expires_at: i64, now: i64) -> u32 {
    let left = expires_at.saturating_sub(now).max(0);
    u32::try_from(left).unwrap_or(u32::MAX)
}

/// Append `STATE[;expires=TTL]` (no header name, no CRLF).
pub fn write_value(out: &mut Vec<u8>, state: SubState, ttl: u32) {
    out.extend_from_slice(state.as_str().as_bytes());
    if ttl > 0 {
        out.extend_from_slice(b";expires=");
        push_decimal(out, ttl);
    }
}

/// Append the whole header line exactly as the C module does:
/// `Subscription-State: STATE[;expires=TTL]\r\n`.
pub fn write_header(out: &mut Vec<u8>, state: SubState, ttl: u32) {
    out.extend_from_slice(HEADER_PREFIX);
    write_value(out, state, ttl);
    out.extend_from_slice(b"\r\n");
}

/// A parsed Subscription-State value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parsed {
    /// The state; `terminated` with a reason the C module knows maps to the
    /// matching `Terminated*` variant, with any other reason (or none) to
    /// `Terminated`.
    pub state: SubState,
    /// The `expires` parameter, if present.
    pub expires: Option<u32>,
}

/// Parse `substate-value *( ";" subexp-params )` (RFC 6665). The state and
/// parameter names are case-insensitive; the reason value is matched
/// case-insensitively too. Unknown parameters are ignored; `reason` and
/// `expires` must not repeat.
pub fn parse(value: &[u8]) -> Result<Parsed, ParseError> {
    let mut cur = Cursor::new(value);
    cur.skip_ws();
    if cur.at_end() {
        return Err(ParseError::Empty);
    }
    let name = cur.take_while(is_token_char);
    let base = if name.eq_ignore_ascii_case(b"active") {
        SubState::Active
    } else if name.eq_ignore_ascii_case(b"pending") {
        SubState::Pending
    } else if name.eq_ignore_ascii_case(b"terminated") {
        SubState::Terminated
    } else {
        return Err(ParseError::UnknownSubscriptionState);
    };

    let mut reason: Option<&[u8]> = None;
    let mut expires: Option<u32> = None;
    loop {
        cur.skip_ws();
        if cur.at_end() {
            break;
        }
        if !cur.eat(b';') {
            return Err(ParseError::Unexpected {
                what: "Subscription-State",
                offset: cur.pos(),
            });
        }
        cur.skip_ws();
        let pname = cur.take_while(is_token_char);
        if pname.is_empty() {
            return Err(if cur.at_end() {
                ParseError::Truncated("parameter name")
            } else {
                ParseError::Unexpected {
                    what: "parameter name",
                    offset: cur.pos(),
                }
            });
        }
        cur.skip_ws();
        let pvalue = if cur.eat(b'=') {
            cur.skip_ws();
            if cur.peek() == Some(b'"') {
                Some(cur.quoted()?)
            } else {
                Some(cur.take_while(is_token_char))
            }
        } else {
            None
        };
        if pname.eq_ignore_ascii_case(b"reason") {
            if reason.is_some() {
                return Err(ParseError::DuplicateParam("reason"));
            }
            match pvalue {
                Some(v) if !v.is_empty() => reason = Some(v),
                _ => return Err(ParseError::MissingValue("reason")),
            }
        } else if pname.eq_ignore_ascii_case(b"expires") {
            if expires.is_some() {
                return Err(ParseError::DuplicateParam("expires"));
            }
            expires = Some(parse_decimal(
                pvalue.unwrap_or_default(),
                u32::MAX,
                "expires",
            )?);
        }
    }

    let state = match (base, reason) {
        (SubState::Terminated, Some(r)) => terminated_with(r),
        (s, _) => s,
    };
    Ok(Parsed { state, expires })
}

fn terminated_with(reason: &[u8]) -> SubState {
    const REASONS: [(&[u8], SubState); 6] = [
        (b"deactivated", SubState::TerminatedDeactivated),
        (b"giveup", SubState::TerminatedGiveup),
        (b"noresource", SubState::TerminatedNoresource),
        (b"probation", SubState::TerminatedProbation),
        (b"rejected", SubState::TerminatedRejected),
        (b"timeout", SubState::TerminatedTimeout),
    ];
    REASONS
        .iter()
        .find(|(name, _)| reason.eq_ignore_ascii_case(name))
        .map_or(SubState::Terminated, |(_, s)| *s)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [SubState; 9] = [
        SubState::Active,
        SubState::Pending,
        SubState::Terminated,
        SubState::TerminatedDeactivated,
        SubState::TerminatedGiveup,
        SubState::TerminatedNoresource,
        SubState::TerminatedProbation,
        SubState::TerminatedRejected,
        SubState::TerminatedTimeout,
    ];

    fn header(state: SubState, ttl: u32) -> Vec<u8> {
        let mut out = Vec::new();
        write_header(&mut out, state, ttl);
        out
    }

    #[test]
    fn header_bytes_match_c() {
        assert_eq!(
            header(SubState::Active, 3600),
            b"Subscription-State: active;expires=3600\r\n"
        );
        assert_eq!(
            header(SubState::Active, 0),
            b"Subscription-State: active\r\n"
        );
        assert_eq!(
            header(SubState::TerminatedNoresource, 0),
            b"Subscription-State: terminated;reason=noresource\r\n"
        );
        assert_eq!(
            header(SubState::TerminatedTimeout, 5),
            b"Subscription-State: terminated;reason=timeout;expires=5\r\n"
        );
    }

    #[test]
    fn ttl_like_c() {
        assert_eq!(ttl(1_000_060, 1_000_000), 60);
        assert_eq!(ttl(1_000_000, 1_000_000), 0);
        assert_eq!(ttl(0, 1_000_000), 0);
        assert_eq!(ttl(i64::MAX, i64::MIN), u32::MAX);
        assert_eq!(ttl(i64::MIN, i64::MAX), 0);
    }

    #[test]
    fn parse_inverts_write() {
        for state in ALL {
            for t in [0u32, 1, 3600, u32::MAX] {
                let mut v = Vec::new();
                write_value(&mut v, state, t);
                assert_eq!(
                    parse(&v),
                    Ok(Parsed {
                        state,
                        expires: (t > 0).then_some(t)
                    }),
                    "{}",
                    String::from_utf8_lossy(&v)
                );
            }
        }
    }

    #[test]
    fn lenient_forms() {
        assert_eq!(
            parse(b" ACTIVE ; Expires = 10 ; foo=bar "),
            Ok(Parsed {
                state: SubState::Active,
                expires: Some(10)
            })
        );
        assert_eq!(
            parse(b"terminated;reason=invariant;retry-after=5"),
            Ok(Parsed {
                state: SubState::Terminated,
                expires: None
            })
        );
        assert_eq!(
            parse(b"terminated;reason=\"timeout\""),
            Ok(Parsed {
                state: SubState::TerminatedTimeout,
                expires: None
            })
        );
        assert_eq!(
            parse(b"active;reason=timeout").map(|p| p.state),
            Ok(SubState::Active)
        );
    }

    #[test]
    fn malformed() {
        assert_eq!(parse(b""), Err(ParseError::Empty));
        assert_eq!(parse(b"   "), Err(ParseError::Empty));
        assert_eq!(parse(b"waiting"), Err(ParseError::UnknownSubscriptionState));
        assert_eq!(
            parse(b";expires=1"),
            Err(ParseError::UnknownSubscriptionState)
        );
        assert_eq!(
            parse(b"active;"),
            Err(ParseError::Truncated("parameter name"))
        );
        assert_eq!(
            parse(b"active;expires"),
            Err(ParseError::MissingValue("expires"))
        );
        assert_eq!(
            parse(b"active;expires="),
            Err(ParseError::MissingValue("expires"))
        );
        assert_eq!(
            parse(b"active;expires=-1"),
            Err(ParseError::NotANumber("expires"))
        );
        assert_eq!(
            parse(b"active;expires=99999999999999999999"),
            Err(ParseError::OutOfRange("expires"))
        );
        assert_eq!(
            parse(b"active;expires=1;expires=2"),
            Err(ParseError::DuplicateParam("expires"))
        );
        assert_eq!(
            parse(b"terminated;reason=timeout;reason=giveup"),
            Err(ParseError::DuplicateParam("reason"))
        );
        assert_eq!(
            parse(b"terminated;reason="),
            Err(ParseError::MissingValue("reason"))
        );
        assert_eq!(
            parse(b"terminated;reason=\"timeout"),
            Err(ParseError::UnterminatedQuote { offset: 18 })
        );
        assert_eq!(
            parse(b"active\0"),
            Err(ParseError::Unexpected {
                what: "Subscription-State",
                offset: 6
            })
        );
        // 10 kB of repeated flag parameters: valid, unknown ones ignored.
        let big: Vec<u8> = b"active;".iter().copied().cycle().take(10_240).collect();
        assert_eq!(big.last(), Some(&b'e'));
        assert_eq!(parse(&big).map(|p| p.state), Ok(SubState::Active));
        let mut bad = big.clone();
        bad.push(b'@');
        assert!(parse(&bad).is_err());
    }
}
