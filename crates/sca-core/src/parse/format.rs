//! Rendering of the NOTIFY headers the SCA module sends, byte for byte as
//! the C module prints them (sca_call_info.c, sca_notify.c, sca_event.c).
//!
//! A call-info NOTIFY carries one Call-Info header holding every appearance
//! of the AoR, separated by bare commas (no space), followed by the idle
//! wildcard value, then CRLF:
//!
//! ```text
//! Call-Info: <sip:HOST>;appearance-index=1;appearance-state=active;appearance-uri="\"Bob\" <sip:bob@example.com>",<sip:HOST>;appearance-index=*;appearance-state=idle\r\n
//! ```
//!
//! `HOST` is [`crate::parse::uri::host_of`] of the AoR (port included).
//! `appearance-uri` is only written when the appearance has a non-empty
//! URI; its text is stored pre-escaped (see [`write_appearance_uri`]) and
//! written between quotes without further escaping.
//!
//! A NOTIFY for one seized index (line-seize) carries
//! `Call-Info: <sip:HOST>;appearance-index=N\r\n` ([`write_index_header`]).

use super::push_decimal;
use crate::model::EventType;
use crate::parse::appearance::AppearanceState;

/// Name and separator of the Call-Info header, as the C module writes it.
pub const CALL_INFO_HEADER_PREFIX: &[u8] = b"Call-Info: ";

/// One appearance to render.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appearance<'a> {
    /// `appearance-index`.
    pub index: u32,
    /// `appearance-state`.
    pub state: AppearanceState,
    /// Stored `appearance-uri` text (already escaped), if any.
    pub uri: Option<&'a [u8]>,
}

/// Append one appearance value:
/// `<sip:HOST>;appearance-index=N;appearance-state=S[;appearance-uri="URI"]`.
/// The `appearance-uri` part is left out when `appearance_uri` is `None` or
/// empty, as in C.
pub fn write_appearance_value(
    out: &mut Vec<u8>,
    host: &[u8],
    index: u32,
    state: AppearanceState,
    appearance_uri: Option<&[u8]>,
) {
    out.extend_from_slice(b"<sip:");
    out.extend_from_slice(host);
    out.extend_from_slice(b">;appearance-index=");
    push_decimal(out, index);
    out.extend_from_slice(b";appearance-state=");
    out.extend_from_slice(state.as_str().as_bytes());
    if let Some(uri) = appearance_uri.filter(|u| !u.is_empty()) {
        out.extend_from_slice(b";appearance-uri=\"");
        out.extend_from_slice(uri);
        out.push(b'"');
    }
}

/// Append the idle wildcard value:
/// `<sip:HOST>;appearance-index=*;appearance-state=idle` (no CRLF).
pub fn write_idle_value(out: &mut Vec<u8>, host: &[u8]) {
    out.extend_from_slice(b"<sip:");
    out.extend_from_slice(host);
    out.extend_from_slice(b">;appearance-index=*;appearance-state=idle");
}

/// Append the full Call-Info header of a NOTIFY for all appearances of an
/// AoR (`sca_call_info_build_header`), CRLF included. `appearances` are
/// written in the order given (the C module keeps them sorted by index).
///
/// For `CallInfo` subscriptions the result is
/// `Call-Info: ` + values joined by `,` + `,` (if there were any) + the idle
/// wildcard value + CRLF.
///
/// For `LineSeize` subscriptions no idle value is added. Returns whether a
/// header was written.
///
/// # Compatibility
///
/// For line-seize the C module omits the idle value but keeps the trailing
/// `,` and never writes the CRLF, so the Event header that follows is glued
/// onto the Call-Info line. (This happens when a line-seize NOTIFY is sent
/// for index 0, e.g. a line-seize SUBSCRIBE with `appearance-index=0` on an
/// existing dialog.) We write `Call-Info: ` + values joined by `,` + CRLF,
/// and nothing at all (returning `false`) if there are no appearances,
/// where C would emit a bare `Call-Info: `.
pub fn write_call_info_header<'a>(
    out: &mut Vec<u8>,
    host: &[u8],
    appearances: impl IntoIterator<Item = Appearance<'a>>,
    event: EventType,
) -> bool {
    let start = out.len();
    out.extend_from_slice(CALL_INFO_HEADER_PREFIX);
    let mut any = false;
    for app in appearances {
        if any {
            out.push(b',');
        }
        write_appearance_value(out, host, app.index, app.state, app.uri);
        any = true;
    }
    match event {
        EventType::CallInfo => {
            if any {
                out.push(b',');
            }
            write_idle_value(out, host);
        }
        EventType::LineSeize => {
            if !any {
                out.truncate(start);
                return false;
            }
        }
    }
    out.extend_from_slice(b"\r\n");
    true
}

/// Append `Call-Info: <sip:HOST>;appearance-index=N\r\n`
/// (`sca_call_info_append_header_for_appearance_index`).
pub fn write_index_header(out: &mut Vec<u8>, host: &[u8], index: u32) {
    out.extend_from_slice(CALL_INFO_HEADER_PREFIX);
    out.extend_from_slice(b"<sip:");
    out.extend_from_slice(host);
    out.extend_from_slice(b">;appearance-index=");
    push_decimal(out, index);
    out.extend_from_slice(b"\r\n");
}

/// Append `Expires: <secs>\r\n`.
pub fn write_expires_header(out: &mut Vec<u8>, secs: u32) {
    out.extend_from_slice(b"Expires: ");
    push_decimal(out, secs);
    out.extend_from_slice(b"\r\n");
}

/// Append `Event: call-info\r\n` or `Event: line-seize\r\n`.
pub fn write_event_header(out: &mut Vec<u8>, event: EventType) {
    out.extend_from_slice(b"Event: ");
    out.extend_from_slice(event.name().as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Append the NOTIFY's `Contact: URI\r\n`, where `uri` is the
/// `server_address` module parameter if set, else the subscription's AoR.
/// Written as given, without angle brackets, as C does.
pub fn write_contact_header(out: &mut Vec<u8>, uri: &[u8]) {
    out.extend_from_slice(b"Contact: ");
    out.extend_from_slice(uri);
    out.extend_from_slice(b"\r\n");
}

/// Append the stored form of an appearance URI, as
/// `sca_appearance_update_unsafe` builds it from the From display name and
/// URI: the display name escaped like Kamailio's `escape_common` (`'`, `"`
/// and `\` get a backslash, NUL becomes `\0`), a space, then `<URI>`.
/// Without a (non-empty) display name just `<URI>`. Writes nothing if `uri`
/// is empty (C then keeps the previous URI).
///
/// Kamailio hands the display name over with its quotes, so `"Bob"` ends up
/// as `\"Bob\" <sip:bob@example.com>`, which is valid inside the quoted
/// `appearance-uri` parameter.
pub fn write_appearance_uri(out: &mut Vec<u8>, display: Option<&[u8]>, uri: &[u8]) {
    if uri.is_empty() {
        return;
    }
    if let Some(display) = display.filter(|d| !d.is_empty()) {
        for &b in display {
            match b {
                b'\'' | b'"' | b'\\' => {
                    out.push(b'\\');
                    out.push(b);
                }
                0 => out.extend_from_slice(b"\\0"),
                _ => out.push(b),
            }
        }
        out.push(b' ');
    }
    out.push(b'<');
    out.extend_from_slice(uri);
    out.push(b'>');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::callinfo::{self, AppearanceIndex, CallInfo};
    use crate::parse::uri::host_of;
    use AppearanceState as S;

    fn render(f: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut out = Vec::new();
        f(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    #[test]
    fn single_values() {
        assert_eq!(
            render(|o| write_appearance_value(o, b"example.com", 1, S::Seized, None)),
            "<sip:example.com>;appearance-index=1;appearance-state=seized"
        );
        assert_eq!(
            render(|o| write_appearance_value(o, b"example.com", 2, S::ActivePending, Some(b"<sip:b@c>"))),
            "<sip:example.com>;appearance-index=2;appearance-state=active;appearance-uri=\"<sip:b@c>\""
        );
        assert_eq!(
            render(|o| write_appearance_value(o, b"h", 3, S::Unknown, Some(b""))),
            "<sip:h>;appearance-index=3;appearance-state=unknown"
        );
        assert_eq!(
            render(|o| write_idle_value(o, b"example.com:5070")),
            "<sip:example.com:5070>;appearance-index=*;appearance-state=idle"
        );
        assert_eq!(render(|o| write_expires_header(o, 0)), "Expires: 0\r\n");
        assert_eq!(render(|o| write_expires_header(o, 3600)), "Expires: 3600\r\n");
    }

    #[test]
    fn call_info_header_for_call_info_subscribers() {
        let apps = [
            Appearance {
                index: 1,
                state: S::Active,
                uri: Some(b"\\\"Bob\\\" <sip:bob@example.com>"),
            },
            Appearance {
                index: 3,
                state: S::HeldPrivate,
                uri: None,
            },
        ];
        let mut out = Vec::new();
        assert!(write_call_info_header(
            &mut out,
            b"example.com",
            apps,
            EventType::CallInfo
        ));
        assert_eq!(
            String::from_utf8_lossy(&out),
            "Call-Info: <sip:example.com>;appearance-index=1;appearance-state=active;\
             appearance-uri=\"\\\"Bob\\\" <sip:bob@example.com>\",\
             <sip:example.com>;appearance-index=3;appearance-state=held-private,\
             <sip:example.com>;appearance-index=*;appearance-state=idle\r\n"
        );

        let mut out = Vec::new();
        assert!(write_call_info_header(
            &mut out,
            b"example.com",
            [],
            EventType::CallInfo
        ));
        assert_eq!(
            out,
            b"Call-Info: <sip:example.com>;appearance-index=*;appearance-state=idle\r\n"
        );
    }

    #[test]
    fn call_info_header_for_line_seize() {
        let apps = [Appearance {
            index: 2,
            state: S::Seized,
            uri: None,
        }];
        let mut out = b"X".to_vec();
        assert!(write_call_info_header(
            &mut out,
            b"h",
            apps,
            EventType::LineSeize
        ));
        assert_eq!(
            out,
            b"XCall-Info: <sip:h>;appearance-index=2;appearance-state=seized\r\n"
        );

        let mut out = b"X".to_vec();
        assert!(!write_call_info_header(
            &mut out,
            b"h",
            [],
            EventType::LineSeize
        ));
        assert_eq!(out, b"X");
    }

    #[test]
    fn index_event_and_contact_headers() {
        assert_eq!(
            render(|o| write_index_header(o, b"example.com", 4)),
            "Call-Info: <sip:example.com>;appearance-index=4\r\n"
        );
        assert_eq!(
            render(|o| write_event_header(o, EventType::CallInfo)),
            "Event: call-info\r\n"
        );
        assert_eq!(
            render(|o| write_event_header(o, EventType::LineSeize)),
            "Event: line-seize\r\n"
        );
        assert_eq!(
            render(|o| write_contact_header(o, b"sip:sca@10.0.0.1")),
            "Contact: sip:sca@10.0.0.1\r\n"
        );
    }

    #[test]
    fn appearance_uri_escaping_like_escape_common() {
        assert_eq!(
            render(|o| write_appearance_uri(o, Some(b"\"Bob\""), b"sip:bob@example.com")),
            "\\\"Bob\\\" <sip:bob@example.com>"
        );
        assert_eq!(
            render(|o| write_appearance_uri(o, Some(b"O'Neil \\ x\0"), b"sip:o@h")),
            "O\\'Neil \\\\ x\\0 <sip:o@h>"
        );
        assert_eq!(
            render(|o| write_appearance_uri(o, None, b"sip:a@h")),
            "<sip:a@h>"
        );
        assert_eq!(
            render(|o| write_appearance_uri(o, Some(b""), b"sip:a@h")),
            "<sip:a@h>"
        );
        assert_eq!(render(|o| write_appearance_uri(o, Some(b"X"), b"")), "");
    }

    #[test]
    fn rendered_header_parses_back() {
        let host = host_of(b"sip:alice@example.com:5070").unwrap_or_default();
        let mut stored = Vec::new();
        write_appearance_uri(
            &mut stored,
            Some(b"\"Bob, Jr.\""),
            b"sip:bob@example.com;user=phone",
        );
        let apps = [
            Appearance {
                index: 1,
                state: S::Alerting,
                uri: Some(&stored),
            },
            Appearance {
                index: 2,
                state: S::Held,
                uri: None,
            },
        ];
        let mut out = Vec::new();
        assert!(write_call_info_header(
            &mut out,
            host,
            apps,
            EventType::CallInfo
        ));
        let value = out
            .strip_prefix(CALL_INFO_HEADER_PREFIX)
            .and_then(|v| v.strip_suffix(b"\r\n"))
            .unwrap_or_default();
        let parsed: Vec<_> = callinfo::values(value).collect();
        assert_eq!(
            parsed,
            [
                Ok(CallInfo {
                    uri: b"sip:example.com:5070",
                    index: AppearanceIndex::Number(1),
                    state: Some(S::Alerting),
                    appearance_uri: Some(&stored),
                }),
                Ok(CallInfo {
                    uri: b"sip:example.com:5070",
                    index: AppearanceIndex::Number(2),
                    state: Some(S::Held),
                    appearance_uri: None,
                }),
                Ok(CallInfo {
                    uri: b"sip:example.com:5070",
                    index: AppearanceIndex::Any,
                    state: Some(S::Idle),
                    appearance_uri: None,
                }),
            ]
        );
    }

    #[test]
    fn index_extremes_render() {
        assert_eq!(
            render(|o| write_appearance_value(o, b"h", 0, S::Idle, None)),
            "<sip:h>;appearance-index=0;appearance-state=idle"
        );
        assert_eq!(
            render(|o| write_index_header(o, b"h", u32::MAX)),
            "Call-Info: <sip:h>;appearance-index=4294967295\r\n"
        );
    }
}
