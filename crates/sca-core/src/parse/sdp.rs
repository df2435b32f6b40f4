//! Hold detection on an SDP body, as the C module's `sca_call_is_held`
//! does it on top of Kamailio's SDP parser.
//!
//! The C module calls the call held if **any media stream** is on hold.
//! A stream is on hold (Kamailio `stream->is_on_hold`) when
//!
//! 1. one of its media-level `a=` lines starts with `a=sendonly` or
//!    `a=inactive` (case-insensitive prefix match, RFC 3264 hold), provided
//!    the `m=` line lists at least one format; or else
//! 2. its connection address is IPv4 `0.0.0.0` (RFC 2543 hold), taken from
//!    the stream's first `c=` line or, without one, from the session-level
//!    `c=` line. Exception: not when ICE trickle is in use (an
//!    `a=ice-options:` line containing `trickle` was seen in this or an
//!    earlier non-held stream) and the media port is exactly `9`.
//!
//! **Session-level `a=sendonly`/`a=inactive` does not count**: Kamailio
//! records it on the session, and `sca_call_is_held` only looks at the
//! streams. [`analyze`] reports it separately
//! ([`HoldAnalysis::session_direction_hold`]) for a caller that wants RFC
//! 4566 semantics; [`is_held`] ignores it, like C. `a=recvonly` is never
//! hold.
//!
//! Bodies Kamailio cannot parse count as "not held" (C logs an error and
//! returns 0). The structural checks are the ones Kamailio makes: a `v=`
//! line, then an `o=` line with an `IP4`/`IP6` address, then an `m=` line;
//! every `m=` line must have media, port and protocol, and every stream
//! needs a `c=` line (its own or the session's) with an address type and
//! address. Lines may end in CRLF, LF or CR.
//!
//! The body must be the `application/sdp` part; the C module also finds SDP
//! inside `multipart/mixed`, which the caller has to unpack. The
//! `onhold_bflag` shortcut (branch flag forces "held") is also the
//! caller's business.
//!
//! # Compatibility
//!
//! Kamailio's origin-line check (`extract_sess_version`) also wants the
//! `o=` line to be at least 15 bytes including its line end; we do not
//! check that length.

use super::{starts_with_ci, ParseError};

/// Result of [`analyze`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HoldAnalysis {
    /// Number of media streams (`m=` lines).
    pub streams: usize,
    /// Streams on hold by the rules in the module docs.
    pub streams_on_hold: usize,
    /// The first session-level direction attribute is `a=sendonly` or
    /// `a=inactive` (ignored by the C module).
    pub session_direction_hold: bool,
}

impl HoldAnalysis {
    /// The C module's verdict: some stream is on hold.
    pub const fn is_held(&self) -> bool {
        self.streams_on_hold > 0
    }
}

/// `sca_call_is_held` on an SDP body: `true` if it puts the call on hold;
/// `false` for bodies that are not, or cannot be parsed.
pub fn is_held(body: &[u8]) -> bool {
    analyze(body).is_ok_and(|a| a.is_held())
}

/// Parse enough of an SDP body to decide on hold (see the module docs).
pub fn analyze(body: &[u8]) -> Result<HoldAnalysis, ParseError> {
    let mut lines = Lines { rest: body };

    if !lines.by_ref().any(|l| l.starts_with(b"v=")) {
        return Err(ParseError::Sdp("no v= line"));
    }
    let origin = lines
        .by_ref()
        .find(|l| l.starts_with(b"o="))
        .ok_or(ParseError::Sdp("no o= line"))?;
    connection(origin).map_err(|_| ParseError::Sdp("bad o= line"))?;

    // Session part: up to the first m= line.
    let mut session_conn: Option<Connection<'_>> = None;
    let mut session_direction: Option<bool> = None;
    let mut media_line: Option<&[u8]> = None;
    for line in lines.by_ref() {
        if line.starts_with(b"m=") {
            media_line = Some(line);
            break;
        }
        if session_conn.is_none() && line.starts_with(b"c=") {
            session_conn = Some(connection(line)?);
        }
        if session_direction.is_none() {
            session_direction = direction_hold(line);
        }
    }
    let mut media_line = media_line.ok_or(ParseError::Sdp("no m= line"))?;

    let mut result = HoldAnalysis {
        session_direction_hold: session_direction == Some(true),
        ..HoldAnalysis::default()
    };
    let mut ice_trickle = false;
    loop {
        let media = media(media_line)?;
        let mut stream_conn: Option<Connection<'_>> = None;
        let mut direction_held = false;
        let mut stream_trickle = false;
        let mut next_media: Option<&[u8]> = None;
        for line in lines.by_ref() {
            if line.starts_with(b"m=") {
                next_media = Some(line);
                break;
            }
            if stream_conn.is_none() && line.starts_with(b"c=") {
                stream_conn = Some(connection(line)?);
            }
            // Kamailio only inspects these attributes when the m= line
            // lists formats.
            if media.has_formats {
                if direction_hold(line) == Some(true) {
                    direction_held = true;
                } else if ice_options_have_trickle(line) {
                    stream_trickle = true;
                }
            }
        }

        let conn = stream_conn
            .or(session_conn)
            .ok_or(ParseError::Sdp("no c= line for a stream"))?;
        let mut held = direction_held;
        if !held {
            ice_trickle |= stream_trickle;
            if conn.ipv4 && conn.address == b"0.0.0.0" && !(ice_trickle && media.port == b"9") {
                held = true;
            }
        }
        result.streams += 1;
        if held {
            result.streams_on_hold += 1;
        }

        match next_media {
            Some(line) => media_line = line,
            None => break,
        }
    }
    Ok(result)
}

/// Non-empty lines of the body; CR, LF and CRLF all end a line.
struct Lines<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Lines<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        loop {
            if self.rest.is_empty() {
                return None;
            }
            let end = self
                .rest
                .iter()
                .position(|&b| b == b'\r' || b == b'\n')
                .unwrap_or(self.rest.len());
            let line = self.rest.get(..end).unwrap_or_default();
            self.rest = self.rest.get(end + 1..).unwrap_or_default();
            if !line.is_empty() {
                return Some(line);
            }
        }
    }
}

/// `Some(true)` for `a=sendonly`/`a=inactive`, `Some(false)` for
/// `a=sendrecv`/`a=recvonly`, `None` otherwise (Kamailio's
/// `extract_sendrecv_mode`: case-insensitive prefix match).
fn direction_hold(line: &[u8]) -> Option<bool> {
    if starts_with_ci(line, b"a=sendonly") || starts_with_ci(line, b"a=inactive") {
        Some(true)
    } else if starts_with_ci(line, b"a=sendrecv") || starts_with_ci(line, b"a=recvonly") {
        Some(false)
    } else {
        None
    }
}

/// Kamailio's `extract_ice_option` plus the trickle test: the options after
/// `a=ice-options:` (one leading space skipped), split on single spaces, at
/// most 10 of them, each trimmed; a NUL ends the list; `trickle` is matched
/// case-sensitively.
fn ice_options_have_trickle(line: &[u8]) -> bool {
    const PREFIX: &[u8] = b"a=ice-options:";
    if !starts_with_ci(line, PREFIX) {
        return false;
    }
    let mut rest = line.get(PREFIX.len()..).unwrap_or_default();
    if let Some(nul) = rest.iter().position(|&b| b == 0) {
        rest = rest.get(..nul).unwrap_or_default();
    }
    if let [b' ', tail @ ..] = rest {
        rest = tail;
    }
    rest.split(|&b| b == b' ')
        .take(10)
        .any(|opt| super::trim_ws(opt) == b"trickle")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Connection<'a> {
    ipv4: bool,
    address: &'a [u8],
}

/// The address of a `c=` or `o=` line, as Kamailio's `extract_mediaip`
/// finds it: after the last ` IP4`/` IP6` (one separator byte skipped),
/// the next whitespace-delimited token.
fn connection(line: &[u8]) -> Result<Connection<'_>, ParseError> {
    let value = super::trim_ws(line.get(2..).unwrap_or_default());
    if value.is_empty() {
        return Err(ParseError::Sdp("empty c= line"));
    }
    let ip = value
        .windows(3)
        .rposition(|w| w == b" IP")
        .ok_or(ParseError::Sdp("no IP4/IP6 in c= line"))?;
    let ipv4 = match value.get(ip + 3) {
        Some(b'4') => true,
        Some(b'6') => false,
        _ => return Err(ParseError::Sdp("bad address type in c= line")),
    };
    let after = value.get(ip + 5..).unwrap_or_default();
    let start = after
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(after.len());
    let after = after.get(start..).unwrap_or_default();
    let end = after
        .iter()
        .position(|&b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
        .unwrap_or(after.len());
    let address = after.get(..end).unwrap_or_default();
    if address.is_empty() {
        return Err(ParseError::Sdp("no address in c= line"));
    }
    Ok(Connection { ipv4, address })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Media<'a> {
    port: &'a [u8],
    has_formats: bool,
}

/// `m=<media> <port> <proto> [<fmt> ...]` as Kamailio's
/// `extract_media_attr` checks it.
fn media(line: &[u8]) -> Result<Media<'_>, ParseError> {
    let is_sp = |b: u8| b == b' ' || b == b'\t';
    let mut parts = super::trim_ws(line.get(2..).unwrap_or_default())
        .split(|&b| is_sp(b))
        .filter(|p| !p.is_empty());
    let _media = parts.next().ok_or(ParseError::Sdp("no media in m= line"))?;
    let port = parts.next().ok_or(ParseError::Sdp("no port in m= line"))?;
    let _proto = parts
        .next()
        .ok_or(ParseError::Sdp("no protocol in m= line"))?;
    let has_formats = parts.next().is_some();
    Ok(Media { port, has_formats })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sdp(lines: &[&str]) -> Vec<u8> {
        let mut s = lines.join("\r\n");
        s.push_str("\r\n");
        s.into_bytes()
    }

    const HEAD: [&str; 4] = [
        "v=0",
        "o=alice 2890844526 2890844527 IN IP4 10.0.0.1",
        "s=-",
        "t=0 0",
    ];

    fn with_head(rest: &[&str]) -> Vec<u8> {
        let all: Vec<&str> = HEAD.iter().chain(rest.iter()).copied().collect();
        sdp(&all)
    }

    #[test]
    fn plain_call_is_not_held() {
        let body = with_head(&[
            "c=IN IP4 10.0.0.1",
            "m=audio 49170 RTP/AVP 0 8",
            "a=sendrecv",
        ]);
        assert_eq!(
            analyze(&body),
            Ok(HoldAnalysis {
                streams: 1,
                streams_on_hold: 0,
                session_direction_hold: false
            })
        );
        assert!(!is_held(&body));
        let body = with_head(&["c=IN IP4 10.0.0.1", "m=audio 49170 RTP/AVP 0", "a=recvonly"]);
        assert!(!is_held(&body));
    }

    #[test]
    fn media_level_sendonly_and_inactive() {
        for attr in [
            "a=sendonly",
            "a=inactive",
            "a=SENDONLY",
            "a=Inactive",
            "a=sendonly-ish",
        ] {
            let body = with_head(&[
                "c=IN IP4 10.0.0.1",
                "m=audio 49170 RTP/AVP 0",
                "a=rtpmap:0 PCMU/8000",
                attr,
            ]);
            assert!(is_held(&body), "{attr}");
        }
        // Only one of two streams on hold is enough.
        let body = with_head(&[
            "c=IN IP4 10.0.0.1",
            "m=audio 49170 RTP/AVP 0",
            "a=sendrecv",
            "m=video 49172 RTP/AVP 96",
            "a=inactive",
        ]);
        assert_eq!(
            analyze(&body).map(|a| (a.streams, a.streams_on_hold)),
            Ok((2, 1))
        );
        assert!(is_held(&body));
    }

    #[test]
    fn direction_needs_formats_on_the_m_line() {
        let body = with_head(&["c=IN IP4 10.0.0.1", "m=audio 49170 RTP/AVP", "a=sendonly"]);
        assert!(!is_held(&body));
    }

    #[test]
    fn session_level_direction_is_ignored_like_c() {
        let body = with_head(&["c=IN IP4 10.0.0.1", "a=sendonly", "m=audio 49170 RTP/AVP 0"]);
        let a = analyze(&body);
        assert_eq!(
            a,
            Ok(HoldAnalysis {
                streams: 1,
                streams_on_hold: 0,
                session_direction_hold: true
            })
        );
        assert!(!is_held(&body));
        // Only the first session-level direction attribute counts.
        let body = with_head(&[
            "c=IN IP4 10.0.0.1",
            "a=sendrecv",
            "a=inactive",
            "m=audio 1 RTP/AVP 0",
        ]);
        assert_eq!(analyze(&body).map(|a| a.session_direction_hold), Ok(false));
    }

    #[test]
    fn zero_address_hold() {
        // Session-level c=0.0.0.0 applies to streams without their own c=.
        let body = with_head(&["c=IN IP4 0.0.0.0", "m=audio 49170 RTP/AVP 0"]);
        assert!(is_held(&body));
        // A stream c= overrides the session one, either way.
        let body = with_head(&[
            "c=IN IP4 0.0.0.0",
            "m=audio 49170 RTP/AVP 0",
            "c=IN IP4 10.0.0.1",
        ]);
        assert!(!is_held(&body));
        let body = with_head(&[
            "c=IN IP4 10.0.0.1",
            "m=audio 49170 RTP/AVP 0",
            "c=IN IP4 0.0.0.0",
        ]);
        assert!(is_held(&body));
        // Only the first c= of a stream counts.
        let body = with_head(&[
            "c=IN IP4 10.0.0.1",
            "m=audio 49170 RTP/AVP 0",
            "c=IN IP4 10.0.0.2",
            "c=IN IP4 0.0.0.0",
        ]);
        assert!(!is_held(&body));
        // Not for IPv6, nor for a multicast TTL suffix.
        let body = with_head(&["c=IN IP6 0.0.0.0", "m=audio 49170 RTP/AVP 0"]);
        assert!(!is_held(&body));
        let body = with_head(&["c=IN IP4 0.0.0.0/127", "m=audio 49170 RTP/AVP 0"]);
        assert!(!is_held(&body));
        // Zero address hold does not need formats on the m= line.
        let body = with_head(&["c=IN IP4 0.0.0.0", "m=audio 49170 RTP/AVP"]);
        assert!(is_held(&body));
    }

    #[test]
    fn ice_trickle_exception() {
        let body = with_head(&[
            "c=IN IP4 0.0.0.0",
            "m=audio 9 UDP/TLS/RTP/SAVPF 111",
            "a=ice-options:trickle",
        ]);
        assert!(!is_held(&body));
        let body = with_head(&[
            "c=IN IP4 0.0.0.0",
            "m=audio 9 RTP/AVP 0",
            "a=ice-options: ice2 trickle",
        ]);
        assert!(!is_held(&body));
        // Port other than 9, or no trickle: held.
        let body = with_head(&[
            "c=IN IP4 0.0.0.0",
            "m=audio 10 RTP/AVP 0",
            "a=ice-options:trickle",
        ]);
        assert!(is_held(&body));
        let body = with_head(&[
            "c=IN IP4 0.0.0.0",
            "m=audio 9 RTP/AVP 0",
            "a=ice-options:ice2",
        ]);
        assert!(is_held(&body));
        // Option names are case-sensitive.
        let body = with_head(&[
            "c=IN IP4 0.0.0.0",
            "m=audio 9 RTP/AVP 0",
            "a=ice-options:TRICKLE",
        ]);
        assert!(is_held(&body));
        // Trickle seen in an earlier stream carries over.
        let body = with_head(&[
            "c=IN IP4 10.0.0.1",
            "m=audio 5000 RTP/AVP 0",
            "a=ice-options:trickle",
            "m=video 9 RTP/AVP 96",
            "c=IN IP4 0.0.0.0",
        ]);
        assert!(!is_held(&body));
        // ...but not from a stream held by direction (Kamailio skips it).
        let body = with_head(&[
            "c=IN IP4 10.0.0.1",
            "m=audio 5000 RTP/AVP 0",
            "a=ice-options:trickle",
            "a=sendonly",
            "m=video 9 RTP/AVP 96",
            "c=IN IP4 0.0.0.0",
        ]);
        assert_eq!(analyze(&body).map(|a| a.streams_on_hold), Ok(2));
        // Only the first ten options are looked at.
        let body = with_head(&[
            "c=IN IP4 0.0.0.0",
            "m=audio 9 RTP/AVP 0",
            "a=ice-options:a b c d e f g h i j trickle",
        ]);
        assert!(is_held(&body));
    }

    #[test]
    fn line_endings() {
        let lf = b"v=0\no=- 1 1 IN IP4 10.0.0.1\ns=-\nc=IN IP4 10.0.0.1\nt=0 0\nm=audio 4000 RTP/AVP 0\na=inactive\n";
        assert!(is_held(lf));
        let cr: Vec<u8> = lf
            .iter()
            .map(|&b| if b == b'\n' { b'\r' } else { b })
            .collect();
        assert!(is_held(&cr));
        let no_final_eol = &lf[..lf.len() - 1];
        assert!(is_held(no_final_eol));
        let mut crlf = Vec::new();
        for &b in lf {
            if b == b'\n' {
                crlf.push(b'\r');
            }
            crlf.push(b);
        }
        assert!(is_held(&crlf));
    }

    #[test]
    fn unparsable_bodies_are_not_held() {
        let cases: [(&[u8], &str); 9] = [
            (b"", "no v= line"),
            (b"   \r\n", "no v= line"),
            (
                b"o=- 1 1 IN IP4 0.0.0.0\r\nm=audio 1 RTP/AVP 0\r\na=inactive\r\n",
                "no v= line",
            ),
            (
                b"v=0\r\nc=IN IP4 0.0.0.0\r\nm=audio 1 RTP/AVP 0\r\n",
                "no o= line",
            ),
            (
                b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nc=IN IP4 0.0.0.0\r\n",
                "no m= line",
            ),
            (
                b"v=0\r\no=- 1 1 IN XX 1.2.3.4\r\nc=IN IP4 0.0.0.0\r\nm=audio 1 RTP/AVP 0\r\n",
                "bad o= line",
            ),
            (
                b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nm=audio 1 RTP/AVP 0\r\na=inactive\r\n",
                "no c= line for a stream",
            ),
            (
                b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nc=IN IP4\r\nm=audio 1 RTP/AVP 0\r\n",
                "no address in c= line",
            ),
            (
                b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nc=IN IP4 0.0.0.0\r\nm=audio 1\r\n",
                "no protocol in m= line",
            ),
        ];
        for (body, why) in cases {
            assert_eq!(
                analyze(body),
                Err(ParseError::Sdp(why)),
                "{}",
                String::from_utf8_lossy(body)
            );
            assert!(!is_held(body));
        }
        // An error in a later stream spoils the whole body, as in Kamailio.
        let body = with_head(&[
            "m=audio 1 RTP/AVP 0",
            "c=IN IP4 0.0.0.0",
            "m=video 2 RTP/AVP 96",
        ]);
        assert_eq!(
            analyze(&body),
            Err(ParseError::Sdp("no c= line for a stream"))
        );
        assert!(!is_held(&body));
    }

    #[test]
    fn lines_must_start_at_line_start() {
        let body = with_head(&[
            "c=IN IP4 10.0.0.1",
            "m=audio 1 RTP/AVP 0",
            " a=inactive",
            "xa=sendonly",
        ]);
        assert!(!is_held(&body));
    }

    #[test]
    fn large_and_garbage_bodies() {
        let garbage: Vec<u8> = b"a=\r\nv=\0m=c=IN IP4 0.0.0.0\n"
            .iter()
            .copied()
            .cycle()
            .take(10_240)
            .collect();
        assert!(analyze(&garbage).is_err());
        assert!(!is_held(&garbage));

        let mut many = with_head(&["c=IN IP4 10.0.0.1"]);
        for i in 0..1000 {
            many.extend_from_slice(
                format!("m=audio {} RTP/AVP 0\r\na=sendrecv\r\n", 2000 + i).as_bytes(),
            );
        }
        many.extend_from_slice(b"m=audio 9999 RTP/AVP 0\r\na=inactive\r\n");
        assert_eq!(
            analyze(&many).map(|a| (a.streams, a.streams_on_hold)),
            Ok((1001, 1))
        );
    }
}
