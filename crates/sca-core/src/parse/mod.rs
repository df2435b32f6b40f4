//! Pure parsers and formatters for the SIP pieces the SCA module reads and
//! writes.
//!
//! Everything here works on raw bytes (`&[u8]`): SIP is not guaranteed to
//! be UTF-8. Parsers borrow from their input and do not allocate; the few
//! builders that have to concatenate write into a caller-supplied
//! `Vec<u8>` (or return a `Cow`).
//!
//! Behavioural reference is the C `sca` module of Kamailio 5.6.3. For input
//! that the C module accepts, these functions make the same accept/reject
//! decision and yield the same values, except where a function's docs say
//! otherwise (the "Compatibility" sections). On garbage we are sometimes
//! stricter than C, which often reads past the value it was given or
//! silently turns bad numbers into 0; every such place is documented.
//!
//! No function in this module panics on any input, and all of them run in
//! time linear in the input length.
//!
//! Header values are expected the way Kamailio hands them to a module: the
//! header body without the name and colon. Leading and trailing SIP
//! whitespace (SP, HTAB, CR, LF) is ignored, just as Kamailio trims header
//! bodies before the C module sees them.

use std::fmt;

pub mod appearance;
pub mod callinfo;
pub mod event;
pub mod expires;
pub mod format;
pub mod sdp;
pub mod substate;
pub mod uri;

/// Why a value could not be parsed. Small and `Copy`, meant for log lines;
/// the caller has the offending input at hand if it wants to log it too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParseError {
    /// The value is empty or consists of whitespace only.
    Empty,
    /// A URI (between `<` and `>`, or a bare addr-spec) is empty.
    EmptyUri,
    /// The value ended while the named element was still expected.
    Truncated(&'static str),
    /// A byte that does not fit the grammar, at `offset` in the input.
    Unexpected {
        /// What was being parsed.
        what: &'static str,
        /// Offset of the offending byte in the input.
        offset: usize,
    },
    /// A quoted string starting at `offset` has no closing quote.
    UnterminatedQuote {
        /// Offset of the opening quote.
        offset: usize,
    },
    /// A `<` at `offset` has no matching `>`.
    UnterminatedAngle {
        /// Offset of the `<`.
        offset: usize,
    },
    /// A required parameter is missing.
    MissingParam(&'static str),
    /// A parameter occurs more than once.
    DuplicateParam(&'static str),
    /// A parameter or value that needs a value has none.
    MissingValue(&'static str),
    /// Something that must be a decimal number is not.
    NotANumber(&'static str),
    /// A number is too large.
    OutOfRange(&'static str),
    /// `appearance-index=*` where a concrete index is required.
    WildcardIndex,
    /// `appearance-state` is not one of the names the C module knows.
    UnknownState,
    /// The Event header names no package the SCA module handles.
    UnknownEvent,
    /// The Subscription-State value is not `active`, `pending` or
    /// `terminated`.
    UnknownSubscriptionState,
    /// The URI scheme is not one that is accepted here.
    UnsupportedScheme,
    /// A comma-separated list where only a single value is allowed.
    MultipleValues(&'static str),
    /// `Contact: *`, which the SCA module rejects.
    StarContact,
    /// A URI without a host / domain part.
    NoHost,
    /// The SDP body could not be parsed; the text says what was wrong.
    Sdp(&'static str),
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("empty value"),
            Self::EmptyUri => f.write_str("empty URI"),
            Self::Truncated(what) => write!(f, "value ends before {what}"),
            Self::Unexpected { what, offset } => {
                write!(f, "unexpected character at offset {offset} in {what}")
            }
            Self::UnterminatedQuote { offset } => {
                write!(f, "unterminated quoted string starting at offset {offset}")
            }
            Self::UnterminatedAngle { offset } => {
                write!(f, "'<' at offset {offset} has no matching '>'")
            }
            Self::MissingParam(p) => write!(f, "missing parameter {p}"),
            Self::DuplicateParam(p) => write!(f, "duplicate parameter {p}"),
            Self::MissingValue(p) => write!(f, "missing value for {p}"),
            Self::NotANumber(p) => write!(f, "{p} is not a decimal number"),
            Self::OutOfRange(p) => write!(f, "{p} is out of range"),
            Self::WildcardIndex => f.write_str("appearance-index=* not allowed here"),
            Self::UnknownState => f.write_str("unknown appearance-state"),
            Self::UnknownEvent => f.write_str("unknown event package"),
            Self::UnknownSubscriptionState => f.write_str("unknown subscription state"),
            Self::UnsupportedScheme => f.write_str("unsupported URI scheme"),
            Self::MultipleValues(h) => write!(f, "{h} must contain a single value"),
            Self::StarContact => f.write_str("Contact must not be \"*\""),
            Self::NoHost => f.write_str("URI has no host part"),
            Self::Sdp(what) => write!(f, "bad SDP: {what}"),
        }
    }
}

impl std::error::Error for ParseError {}

/// SIP whitespace as Kamailio's `trim()` sees it: SP, HTAB, CR, LF.
pub(crate) fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// Strip leading and trailing SIP whitespace.
pub(crate) fn trim_ws(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if is_ws(*first) {
            s = rest;
        } else {
            break;
        }
    }
    while let [rest @ .., last] = s {
        if is_ws(*last) {
            s = rest;
        } else {
            break;
        }
    }
    s
}

/// RFC 3261 `token` character.
pub(crate) fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
        )
}

/// `s` starts with `prefix`, ASCII case-insensitively.
pub(crate) fn starts_with_ci(s: &[u8], prefix: &[u8]) -> bool {
    s.get(..prefix.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
}

/// Strict unsigned decimal: digits only, no sign, no whitespace, value at
/// most `max`. Leading zeros are fine (as with Kamailio's `str2int`).
pub(crate) fn parse_decimal(
    digits: &[u8],
    max: u32,
    what: &'static str,
) -> Result<u32, ParseError> {
    if digits.is_empty() {
        return Err(ParseError::MissingValue(what));
    }
    if !digits.iter().all(u8::is_ascii_digit) {
        return Err(ParseError::NotANumber(what));
    }
    let mut value: u32 = 0;
    for &b in digits {
        value = value
            .checked_mul(10)
            .and_then(|v| v.checked_add(u32::from(b - b'0')))
            .filter(|v| *v <= max)
            .ok_or(ParseError::OutOfRange(what))?;
    }
    Ok(value)
}

/// Append the decimal representation of `n`.
pub(crate) fn push_decimal(out: &mut Vec<u8>, n: u32) {
    let mut buf = [0u8; 10];
    let mut start = buf.len();
    let mut rest = n;
    while let Some(next) = start.checked_sub(1) {
        start = next;
        if let Some(slot) = buf.get_mut(start) {
            // rest % 10 < 10, so the cast cannot truncate.
            *slot = b'0' + (rest % 10) as u8;
        }
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    out.extend_from_slice(buf.get(start..).unwrap_or_default());
}

/// A forward-only reader over a byte slice, used by the header parsers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cursor<'a> {
    input: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(input: &'a [u8]) -> Self {
        Self { input, pos: 0 }
    }

    pub(crate) fn at(input: &'a [u8], pos: usize) -> Self {
        Self { input, pos }
    }

    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    /// The bytes from `start` up to the current position.
    pub(crate) fn since(&self, start: usize) -> &'a [u8] {
        self.input.get(start..self.pos).unwrap_or_default()
    }

    pub(crate) fn peek(&self) -> Option<u8> {
        self.input.get(self.pos).copied()
    }

    pub(crate) fn at_end(&self) -> bool {
        self.pos >= self.input.len()
    }

    pub(crate) fn bump(&mut self) {
        if self.pos < self.input.len() {
            self.pos += 1;
        }
    }

    /// Consume `b` if it is next; report whether it was.
    pub(crate) fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.bump();
            true
        } else {
            false
        }
    }

    pub(crate) fn skip_ws(&mut self) {
        while self.peek().is_some_and(is_ws) {
            self.bump();
        }
    }

    /// Consume the longest run of bytes satisfying `pred`.
    pub(crate) fn take_while(&mut self, pred: impl Fn(u8) -> bool) -> &'a [u8] {
        let start = self.pos;
        while self.peek().is_some_and(&pred) {
            self.bump();
        }
        self.input.get(start..self.pos).unwrap_or_default()
    }

    /// Consume a quoted string whose opening `"` is the next byte; return
    /// its raw contents (quoted-pairs are kept as they are).
    pub(crate) fn quoted(&mut self) -> Result<&'a [u8], ParseError> {
        let open = self.pos;
        if !self.eat(b'"') {
            return Err(ParseError::Unexpected {
                what: "quoted string",
                offset: open,
            });
        }
        let start = self.pos;
        loop {
            match self.peek() {
                None => return Err(ParseError::UnterminatedQuote { offset: open }),
                Some(b'"') => {
                    let end = self.pos;
                    self.bump();
                    return Ok(self.input.get(start..end).unwrap_or_default());
                }
                Some(b'\\') => {
                    self.bump();
                    if self.at_end() {
                        return Err(ParseError::UnterminatedQuote { offset: open });
                    }
                    self.bump();
                }
                Some(_) => self.bump(),
            }
        }
    }

    /// Consume `<...>` whose `<` is the next byte; return the contents.
    /// The contents must not contain whitespace, control characters or
    /// another `<`.
    pub(crate) fn angle(&mut self, what: &'static str) -> Result<&'a [u8], ParseError> {
        let open = self.pos;
        if !self.eat(b'<') {
            return Err(ParseError::Unexpected { what, offset: open });
        }
        let start = self.pos;
        loop {
            match self.peek() {
                None => return Err(ParseError::UnterminatedAngle { offset: open }),
                Some(b'>') => {
                    let end = self.pos;
                    self.bump();
                    return Ok(self.input.get(start..end).unwrap_or_default());
                }
                Some(b) if b <= b' ' || b == 0x7f || b == b'<' => {
                    return Err(ParseError::Unexpected {
                        what,
                        offset: self.pos,
                    })
                }
                Some(_) => self.bump(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trim_ws_strips_sip_whitespace_only() {
        assert_eq!(trim_ws(b" \t\r\n abc \r\n"), b"abc");
        assert_eq!(trim_ws(b"   "), b"");
        assert_eq!(trim_ws(b""), b"");
        assert_eq!(trim_ws(b"\0a\0"), b"\0a\0");
    }

    #[test]
    fn parse_decimal_limits() {
        assert_eq!(parse_decimal(b"0", u32::MAX, "n"), Ok(0));
        assert_eq!(parse_decimal(b"0007", u32::MAX, "n"), Ok(7));
        assert_eq!(parse_decimal(b"4294967295", u32::MAX, "n"), Ok(u32::MAX));
        assert_eq!(
            parse_decimal(b"4294967296", u32::MAX, "n"),
            Err(ParseError::OutOfRange("n"))
        );
        assert_eq!(
            parse_decimal(b"99999999999999999999", u32::MAX, "n"),
            Err(ParseError::OutOfRange("n"))
        );
        assert_eq!(
            parse_decimal(b"11", 10, "n"),
            Err(ParseError::OutOfRange("n"))
        );
        assert_eq!(
            parse_decimal(b"", 10, "n"),
            Err(ParseError::MissingValue("n"))
        );
        assert_eq!(
            parse_decimal(b"-1", 10, "n"),
            Err(ParseError::NotANumber("n"))
        );
        assert_eq!(
            parse_decimal(b"+1", 10, "n"),
            Err(ParseError::NotANumber("n"))
        );
        assert_eq!(
            parse_decimal(b"1 ", 10, "n"),
            Err(ParseError::NotANumber("n"))
        );
    }

    #[test]
    fn push_decimal_renders_all_magnitudes() {
        for n in [0u32, 1, 9, 10, 99, 100, 12345, u32::MAX] {
            let mut out = Vec::new();
            push_decimal(&mut out, n);
            assert_eq!(out, n.to_string().into_bytes());
        }
    }

    #[test]
    fn cursor_quoted_and_angle() {
        let mut c = Cursor::new(br#""a\"b" rest"#);
        assert_eq!(c.quoted(), Ok(&br#"a\"b"#[..]));
        assert_eq!(c.pos(), 6);

        let mut c = Cursor::new(b"\"abc");
        assert_eq!(c.quoted(), Err(ParseError::UnterminatedQuote { offset: 0 }));
        let mut c = Cursor::new(b"\"abc\\");
        assert_eq!(c.quoted(), Err(ParseError::UnterminatedQuote { offset: 0 }));

        let mut c = Cursor::new(b"<sip:a>x");
        assert_eq!(c.angle("uri"), Ok(&b"sip:a"[..]));
        assert_eq!(c.peek(), Some(b'x'));
        let mut c = Cursor::new(b"<sip:a");
        assert_eq!(
            c.angle("uri"),
            Err(ParseError::UnterminatedAngle { offset: 0 })
        );
        let mut c = Cursor::new(b"<sip:a b>");
        assert_eq!(
            c.angle("uri"),
            Err(ParseError::Unexpected {
                what: "uri",
                offset: 6
            })
        );
    }

    #[test]
    fn errors_render_for_logs() {
        let e = ParseError::Unexpected {
            what: "Call-Info",
            offset: 3,
        };
        assert_eq!(
            e.to_string(),
            "unexpected character at offset 3 in Call-Info"
        );
        assert_eq!(
            ParseError::OutOfRange("appearance-index").to_string(),
            "appearance-index is out of range"
        );
    }
}
