//! URIs, AoRs and Contact values, the way the SCA module derives them.
//!
//! * [`extract_aor`] is `sca_uri_extract_aor`: the URI up to its first `;`.
//!   Scheme, user, host and **port are kept**, URI parameters are dropped
//!   (`sip:alice@example.com:5060;transport=tcp` gives
//!   `sip:alice@example.com:5060`). Headers (`?...`) are kept when the URI
//!   has no parameters, as in C.
//! * [`host_of`] is `sca_call_info_domain_from_uri`: everything after the
//!   first `@` (or, without one, after the first `:`), used to build
//!   `<sip:HOST>` in Call-Info. Port and anything after it are kept, as in C.
//! * [`build_aor`] is `sca_uri_build_aor`, [`canonical_aor`] is
//!   `sca_create_canonical_aor_for_ua` (given the To/From URI and the
//!   Contact URI).
//! * [`name_addr_uri`] takes the URI out of a From/To/Contact value
//!   (`"Name" <uri>;params`, `Name <uri>`, or a bare `uri;params`), and
//!   [`contact_uri`] applies the C module's Contact rules on top
//!   (`sca_get_msg_contact_uri`).
//! * [`scheme`] and [`parts`] are a small stand-in for Kamailio's
//!   `parse_uri`, enough for the AoR logic.
//!
//! These functions take the URI as it appears in the message; they do not
//! unescape or normalise anything, and comparisons of their results are
//! byte comparisons, as in C.

use std::borrow::Cow;

use super::{is_ws, starts_with_ci, trim_ws, Cursor, ParseError};

/// URI schemes Kamailio's `parse_uri` accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// `sip:`
    Sip,
    /// `sips:`
    Sips,
    /// `tel:`
    Tel,
    /// `urn:`
    Urn,
}

impl Scheme {
    /// Lowercase scheme name without the colon (Kamailio's
    /// `uri_type_to_str`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Sip => "sip",
            Self::Sips => "sips",
            Self::Tel => "tel",
            Self::Urn => "urn",
        }
    }
}

/// The scheme of `uri`, case-insensitively. As in Kamailio, something must
/// follow the colon; `tels:` and all other schemes are rejected.
pub fn scheme(uri: &[u8]) -> Result<Scheme, ParseError> {
    let (s, len) = if starts_with_ci(uri, b"sip:") {
        (Scheme::Sip, 4)
    } else if starts_with_ci(uri, b"sips:") {
        (Scheme::Sips, 5)
    } else if starts_with_ci(uri, b"tel:") {
        (Scheme::Tel, 4)
    } else if starts_with_ci(uri, b"urn:") {
        (Scheme::Urn, 4)
    } else if uri.is_empty() {
        return Err(ParseError::EmptyUri);
    } else {
        return Err(ParseError::UnsupportedScheme);
    };
    if uri.len() <= len {
        return Err(ParseError::Truncated("URI after scheme"));
    }
    Ok(s)
}

/// `sca_uri_extract_aor`: `uri` up to (not including) its first `;`.
///
/// C never fails here; we reject an empty URI, and an empty AoR (a URI
/// starting with `;`, found by fuzzing), which would key state under "".
pub fn extract_aor(uri: &[u8]) -> Result<&[u8], ParseError> {
    let end = uri.iter().position(|&b| b == b';').unwrap_or(uri.len());
    match uri.get(..end) {
        Some(aor) if !aor.is_empty() => Ok(aor),
        _ => Err(ParseError::EmptyUri),
    }
}

/// The AoR of a From/To value: [`extract_aor`] of [`name_addr_uri`].
pub fn aor_of_name_addr(value: &[u8]) -> Result<&[u8], ParseError> {
    extract_aor(name_addr_uri(value)?)
}

/// `sca_call_info_domain_from_uri`: the part of `uri` after its first `@`,
/// or after its first `:` if it has no `@`.
///
/// Stricter than C: an empty result is an error ([`ParseError::NoHost`])
/// rather than `<sip:>` in the NOTIFY.
pub fn host_of(uri: &[u8]) -> Result<&[u8], ParseError> {
    let sep = uri
        .iter()
        .position(|&b| b == b'@')
        .or_else(|| uri.iter().position(|&b| b == b':'))
        .ok_or(ParseError::NoHost)?;
    match uri.get(sep + 1..) {
        Some(host) if !host.is_empty() => Ok(host),
        _ => Err(ParseError::NoHost),
    }
}

/// `sca_uri_build_aor`: the AoR of a held call's callee, from its Contact
/// URI and another AoR of the same domain. Appends
/// `contact-up-to-its-first-@` + `@` + [`host_of`]`(domain_uri)` to `out`
/// and returns `true`; returns `false` (appending nothing) if
/// `contact_uri` has no `@` ("by definition can't be an SCA line").
///
/// Note that the contact part keeps the scheme and any password
/// (`sip:bob@10.0.0.2:5062` + `sip:alice@example.com` gives
/// `sip:bob@example.com`).
pub fn build_aor(
    contact_uri: &[u8],
    domain_uri: &[u8],
    out: &mut Vec<u8>,
) -> Result<bool, ParseError> {
    let Some(at) = contact_uri.iter().position(|&b| b == b'@') else {
        return Ok(false);
    };
    let domain = host_of(domain_uri)?;
    out.extend_from_slice(contact_uri.get(..at).unwrap_or_default());
    out.push(b'@');
    out.extend_from_slice(domain);
    Ok(true)
}

/// The pieces of a URI that the AoR logic needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UriParts<'a> {
    /// The scheme.
    pub scheme: Scheme,
    /// User part without password; empty if there is none. For `tel:` the
    /// number (Kamailio moves it there too), for `urn:` empty.
    pub user: &'a [u8],
    /// Host; empty for `tel:`. IPv6 references keep their brackets.
    pub host: &'a [u8],
    /// Port digits, if a port is given.
    pub port: Option<&'a [u8]>,
    /// URI parameters after the first `;` following the host (no `;`).
    pub params: &'a [u8],
}

/// Split a URI into scheme, user, host, port and parameters.
///
/// A simplified `parse_uri`: the user part ends at the first `@`; host and
/// port end at `;` or `?`; the port must be 1 to 5 digits and at most
/// 65535. A `@` with nothing before it is an error, as in Kamailio.
pub fn parts(uri: &[u8]) -> Result<UriParts<'_>, ParseError> {
    let scheme = scheme(uri)?;
    let skip = scheme.as_str().len() + 1;
    let rest = uri.get(skip..).unwrap_or_default();

    match scheme {
        Scheme::Tel => {
            let end = rest.iter().position(|&b| b == b';').unwrap_or(rest.len());
            return Ok(UriParts {
                scheme,
                user: rest.get(..end).unwrap_or_default(),
                host: &[],
                port: None,
                params: rest.get(end + 1..).unwrap_or_default(),
            });
        }
        Scheme::Urn => {
            return Ok(UriParts {
                scheme,
                user: &[],
                host: rest,
                port: None,
                params: &[],
            });
        }
        Scheme::Sip | Scheme::Sips => {}
    }

    let (user, hostpart) = match rest.iter().position(|&b| b == b'@') {
        Some(0) => {
            return Err(ParseError::Unexpected {
                what: "URI user",
                offset: skip,
            })
        }
        Some(at) => {
            let userinfo = rest.get(..at).unwrap_or_default();
            let user_end = userinfo
                .iter()
                .position(|&b| b == b':')
                .unwrap_or(userinfo.len());
            (
                userinfo.get(..user_end).unwrap_or_default(),
                rest.get(at + 1..).unwrap_or_default(),
            )
        }
        None => (&[][..], rest),
    };

    let hp_end = hostpart
        .iter()
        .position(|&b| b == b';' || b == b'?')
        .unwrap_or(hostpart.len());
    let hostport = hostpart.get(..hp_end).unwrap_or_default();
    let params = if hostpart.get(hp_end) == Some(&b';') {
        let after = hostpart.get(hp_end + 1..).unwrap_or_default();
        let end = after.iter().position(|&b| b == b'?').unwrap_or(after.len());
        after.get(..end).unwrap_or_default()
    } else {
        &[]
    };

    let (host, port_part) = if hostport.first() == Some(&b'[') {
        let close = hostport
            .iter()
            .position(|&b| b == b']')
            .ok_or(ParseError::Truncated("IPv6 reference"))?;
        (
            hostport.get(..=close).unwrap_or_default(),
            hostport.get(close + 1..).unwrap_or_default(),
        )
    } else {
        let colon = hostport
            .iter()
            .position(|&b| b == b':')
            .unwrap_or(hostport.len());
        (
            hostport.get(..colon).unwrap_or_default(),
            hostport.get(colon..).unwrap_or_default(),
        )
    };
    if host.is_empty() {
        return Err(ParseError::NoHost);
    }
    if host.iter().any(|&b| b <= b' ' || b == 0x7f) {
        return Err(ParseError::Unexpected {
            what: "URI host",
            offset: 0,
        });
    }
    let port = match port_part {
        [] => None,
        [b':', digits @ ..] => {
            if digits.is_empty() || digits.len() > 5 {
                return Err(ParseError::OutOfRange("URI port"));
            }
            super::parse_decimal(digits, 65_535, "URI port")?;
            Some(digits)
        }
        _ => {
            return Err(ParseError::Unexpected {
                what: "URI port",
                offset: 0,
            })
        }
    };

    Ok(UriParts {
        scheme,
        user,
        host,
        port,
        params,
    })
}

/// The canonical AoR of the UA that sent (`tf_uri` = From URI) or answers
/// (`tf_uri` = To URI) a message, as `sca_create_canonical_aor_for_ua`
/// computes it:
///
/// * no Contact, a Contact URI without user, or a Contact user equal to
///   the To/From user: [`extract_aor`]`(tf_uri)` (borrowed);
/// * otherwise `scheme:contact-user@tf-host[:tf-port]`, where the scheme is
///   the Contact URI's.
///
/// # Compatibility
///
/// The C code (`sca_aor_create_from_info`) builds the second form with a
/// bookkeeping slip: when the To/From URI has a port, the port is copied
/// over the `:` meant to precede it, giving `sip:bob@example.com5070`.
/// We produce the intended `sip:bob@example.com:5070`.
pub fn canonical_aor<'a>(
    tf_uri: &'a [u8],
    contact_uri: Option<&[u8]>,
) -> Result<Cow<'a, [u8]>, ParseError> {
    let tf_aor = extract_aor(tf_uri)?;
    let Some(contact) = contact_uri else {
        return Ok(Cow::Borrowed(tf_aor));
    };
    let c = parts(contact)?;
    let tf = parts(tf_uri)?;
    if c.user.is_empty() || c.user == tf.user {
        return Ok(Cow::Borrowed(tf_aor));
    }
    let mut out = Vec::with_capacity(
        c.scheme.as_str().len()
            + 2
            + c.user.len()
            + tf.host.len()
            + tf.port.map_or(0, |p| p.len() + 1),
    );
    out.extend_from_slice(c.scheme.as_str().as_bytes());
    out.push(b':');
    out.extend_from_slice(c.user);
    out.push(b'@');
    out.extend_from_slice(tf.host);
    if let Some(port) = tf.port {
        out.push(b':');
        out.extend_from_slice(port);
    }
    Ok(Cow::Owned(out))
}

/// The URI of a name-addr or addr-spec (From, To or one Contact entry):
/// `"Display" <uri>;params`, `Display Name <uri>`, `<uri>`, or
/// `uri;params` (then the URI ends at the first `;` or `,`, as Kamailio's
/// `parse_to` reads it).
pub fn name_addr_uri(value: &[u8]) -> Result<&[u8], ParseError> {
    split_name_addr(value).map(|(uri, _)| uri)
}

/// [`name_addr_uri`] plus the offset just after the URI (after the `>` if
/// bracketed).
fn split_name_addr(value: &[u8]) -> Result<(&[u8], usize), ParseError> {
    let mut cur = Cursor::new(value);
    cur.skip_ws();
    if cur.at_end() {
        return Err(ParseError::Empty);
    }
    if cur.peek() == Some(b'"') {
        cur.quoted()?;
        cur.skip_ws();
        let uri = cur.angle("name-addr")?;
        return non_empty(uri).map(|u| (u, cur.pos()));
    }
    let start = cur.pos();
    let stop = value
        .get(start..)
        .unwrap_or_default()
        .iter()
        .position(|&b| matches!(b, b'<' | b';' | b',' | b'"'))
        .map(|p| p + start);
    match stop.and_then(|p| value.get(p).map(|&b| (p, b))) {
        Some((p, b'<')) => {
            // Display name as tokens (not validated), then <uri>.
            let mut cur = Cursor::at(value, p);
            let uri = cur.angle("name-addr")?;
            non_empty(uri).map(|u| (u, cur.pos()))
        }
        Some((p, b'"')) => Err(ParseError::Unexpected {
            what: "name-addr",
            offset: p,
        }),
        _ => {
            // addr-spec without brackets: up to ';' or ',' (or the end).
            let end = stop.unwrap_or(value.len());
            let uri = trim_ws(value.get(start..end).unwrap_or_default());
            if let Some(off) = uri.iter().position(|&b| is_ws(b) || b < b' ' || b == 0x7f) {
                return Err(ParseError::Unexpected {
                    what: "addr-spec",
                    offset: start + off,
                });
            }
            non_empty(uri).map(|u| (u, end))
        }
    }
}

fn non_empty(uri: &[u8]) -> Result<&[u8], ParseError> {
    if uri.is_empty() {
        Err(ParseError::EmptyUri)
    } else {
        Ok(uri)
    }
}

/// The URI of a Contact header value under the SCA module's rules
/// (`sca_get_msg_contact_uri`):
///
/// * empty value: `Ok(None)` (C: "no Contact", not an error);
/// * `*`: [`ParseError::StarContact`];
/// * more than one contact (a `,` outside quotes and brackets):
///   [`ParseError::MultipleValues`];
/// * otherwise the URI of the single contact, without `<>` and parameters.
///
/// Only one Contact *header* is looked at by C (`msg->contact`, the first);
/// choosing it is the caller's job.
pub fn contact_uri(value: &[u8]) -> Result<Option<&[u8]>, ParseError> {
    let trimmed = trim_ws(value);
    if trimmed.is_empty() {
        return Ok(None);
    }
    if trimmed.first() == Some(&b'*') {
        return Err(ParseError::StarContact);
    }
    let (uri, end) = split_name_addr(value)?;
    // Walk the contact parameters looking for a list separator.
    let mut cur = Cursor::at(value, end);
    while let Some(b) = cur.peek() {
        match b {
            b',' => return Err(ParseError::MultipleValues("Contact")),
            b'"' => {
                cur.quoted()?;
            }
            _ => cur.bump(),
        }
    }
    Ok(Some(uri))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes() {
        assert_eq!(scheme(b"sip:a@b"), Ok(Scheme::Sip));
        assert_eq!(scheme(b"SIP:a@b"), Ok(Scheme::Sip));
        assert_eq!(scheme(b"sips:a@b"), Ok(Scheme::Sips));
        assert_eq!(scheme(b"tel:+123"), Ok(Scheme::Tel));
        assert_eq!(scheme(b"urn:service:sos"), Ok(Scheme::Urn));
        assert_eq!(scheme(b"tels:+123"), Err(ParseError::UnsupportedScheme));
        assert_eq!(scheme(b"http://x"), Err(ParseError::UnsupportedScheme));
        assert_eq!(scheme(b"sip"), Err(ParseError::UnsupportedScheme));
        assert_eq!(
            scheme(b"sip:"),
            Err(ParseError::Truncated("URI after scheme"))
        );
        assert_eq!(scheme(b""), Err(ParseError::EmptyUri));
        assert_eq!(Scheme::Sips.as_str(), "sips");
    }

    #[test]
    fn extract_aor_like_c() {
        assert_eq!(
            extract_aor(b"sip:alice@example.com"),
            Ok(&b"sip:alice@example.com"[..])
        );
        assert_eq!(
            extract_aor(b"sip:alice@example.com:5060;transport=tcp"),
            Ok(&b"sip:alice@example.com:5060"[..])
        );
        assert_eq!(
            extract_aor(b"sip:alice@example.com?subject=x"),
            Ok(&b"sip:alice@example.com?subject=x"[..])
        );
        assert_eq!(
            extract_aor(b"sip:+1234;phone-context=x@h"),
            Ok(&b"sip:+1234"[..])
        );
        assert_eq!(extract_aor(b";x"), Err(ParseError::EmptyUri), "an empty AoR");
        assert_eq!(extract_aor(b""), Err(ParseError::EmptyUri));
    }

    #[test]
    fn aor_of_name_addr_values() {
        assert_eq!(
            aor_of_name_addr(b"\"Alice\" <sip:alice@example.com:5060;transport=udp>;tag=abc"),
            Ok(&b"sip:alice@example.com:5060"[..])
        );
        assert_eq!(
            aor_of_name_addr(b"sip:alice@example.com;tag=abc"),
            Ok(&b"sip:alice@example.com"[..])
        );
        assert_eq!(
            aor_of_name_addr(b"Alice Smith <sip:alice@example.com>"),
            Ok(&b"sip:alice@example.com"[..])
        );
    }

    #[test]
    fn host_of_like_c() {
        assert_eq!(host_of(b"sip:alice@example.com"), Ok(&b"example.com"[..]));
        assert_eq!(
            host_of(b"sip:alice@example.com:5070"),
            Ok(&b"example.com:5070"[..])
        );
        assert_eq!(host_of(b"sip:example.com"), Ok(&b"example.com"[..]));
        assert_eq!(host_of(b"sip:a@b@c"), Ok(&b"b@c"[..]));
        assert_eq!(
            host_of(b"sip:alice:pw@example.com"),
            Ok(&b"example.com"[..])
        );
        assert_eq!(host_of(b"example.com"), Err(ParseError::NoHost));
        assert_eq!(host_of(b"sip:alice@"), Err(ParseError::NoHost));
        assert_eq!(host_of(b""), Err(ParseError::NoHost));
    }

    #[test]
    fn build_aor_like_c() {
        let mut out = Vec::new();
        assert_eq!(
            build_aor(b"sip:bob@10.0.0.2:5062", b"sip:alice@example.com", &mut out),
            Ok(true)
        );
        assert_eq!(out, b"sip:bob@example.com");

        out.clear();
        assert_eq!(
            build_aor(b"sip:bob@10.0.0.2", b"sip:example.com:5070", &mut out),
            Ok(true)
        );
        assert_eq!(out, b"sip:bob@example.com:5070");

        out.clear();
        assert_eq!(
            build_aor(b"sip:10.0.0.2", b"sip:alice@example.com", &mut out),
            Ok(false)
        );
        assert!(out.is_empty());

        assert_eq!(
            build_aor(b"sip:bob@h", b"example.com", &mut out),
            Err(ParseError::NoHost)
        );
        assert!(out.is_empty());
    }

    #[test]
    fn parts_of_sip_uris() {
        assert_eq!(
            parts(b"sip:alice:secret@example.com:5060;transport=tcp?subject=x"),
            Ok(UriParts {
                scheme: Scheme::Sip,
                user: b"alice",
                host: b"example.com",
                port: Some(b"5060"),
                params: b"transport=tcp",
            })
        );
        assert_eq!(
            parts(b"sips:[2001:db8::1]:5061"),
            Ok(UriParts {
                scheme: Scheme::Sips,
                user: b"",
                host: b"[2001:db8::1]",
                port: Some(b"5061"),
                params: b"",
            })
        );
        assert_eq!(
            parts(b"tel:+1-555-1234;phone-context=example.com"),
            Ok(UriParts {
                scheme: Scheme::Tel,
                user: b"+1-555-1234",
                host: b"",
                port: None,
                params: b"phone-context=example.com",
            })
        );
    }

    #[test]
    fn parts_rejects_bad_uris() {
        assert_eq!(
            parts(b"sip:@example.com"),
            Err(ParseError::Unexpected {
                what: "URI user",
                offset: 4
            })
        );
        assert_eq!(parts(b"sip:alice@"), Err(ParseError::NoHost));
        assert_eq!(parts(b"sip:alice@:5060"), Err(ParseError::NoHost));
        assert_eq!(parts(b"sip:h:"), Err(ParseError::OutOfRange("URI port")));
        assert_eq!(
            parts(b"sip:h:65536"),
            Err(ParseError::OutOfRange("URI port"))
        );
        assert_eq!(
            parts(b"sip:h:123456"),
            Err(ParseError::OutOfRange("URI port"))
        );
        assert_eq!(parts(b"sip:h:50x"), Err(ParseError::NotANumber("URI port")));
        assert_eq!(
            parts(b"sip:[::1"),
            Err(ParseError::Truncated("IPv6 reference"))
        );
        assert_eq!(
            parts(b"sip:[::1]x"),
            Err(ParseError::Unexpected {
                what: "URI port",
                offset: 0
            })
        );
        assert_eq!(
            parts(b"sip:a b"),
            Err(ParseError::Unexpected {
                what: "URI host",
                offset: 0
            })
        );
        assert_eq!(
            parts(b"sip:h\0"),
            Err(ParseError::Unexpected {
                what: "URI host",
                offset: 0
            })
        );
        assert_eq!(parts(b"mailto:a@b"), Err(ParseError::UnsupportedScheme));
    }

    #[test]
    fn canonical_aor_like_c() {
        let from = b"sip:alice@example.com;user=phone";
        // No Contact, Contact without user, same user: the From AoR.
        assert_eq!(
            canonical_aor(from, None),
            Ok(Cow::Borrowed(&b"sip:alice@example.com"[..]))
        );
        assert_eq!(
            canonical_aor(from, Some(b"sip:10.0.0.1:5062")),
            Ok(Cow::Borrowed(&b"sip:alice@example.com"[..]))
        );
        assert_eq!(
            canonical_aor(from, Some(b"sip:alice@10.0.0.1:5062;transport=tcp")),
            Ok(Cow::Borrowed(&b"sip:alice@example.com"[..]))
        );
        // Different Contact user: rebuilt with the Contact's user and scheme.
        assert_eq!(
            canonical_aor(from, Some(b"sips:alice-2@10.0.0.1:5062")).as_deref(),
            Ok(&b"sips:alice-2@example.com"[..])
        );
        // With a To/From port: kept (C garbles this, see docs).
        assert_eq!(
            canonical_aor(b"sip:alice@example.com:5070", Some(b"sip:bob@10.0.0.1")).as_deref(),
            Ok(&b"sip:bob@example.com:5070"[..])
        );
        assert_eq!(canonical_aor(b"", None), Err(ParseError::EmptyUri));
        assert_eq!(
            canonical_aor(from, Some(b"garbage")),
            Err(ParseError::UnsupportedScheme)
        );
    }

    #[test]
    fn name_addr_forms() {
        assert_eq!(name_addr_uri(b"<sip:a@b>"), Ok(&b"sip:a@b"[..]));
        assert_eq!(
            name_addr_uri(b" \"A, \\\"B\\\" <x>\" <sip:a@b;lr>;tag=1"),
            Ok(&b"sip:a@b;lr"[..])
        );
        assert_eq!(name_addr_uri(b"Alice <sip:a@b>"), Ok(&b"sip:a@b"[..]));
        assert_eq!(name_addr_uri(b"sip:a@b;tag=1"), Ok(&b"sip:a@b"[..]));
        assert_eq!(name_addr_uri(b"sip:a@b , sip:c@d"), Ok(&b"sip:a@b"[..]));
        assert_eq!(name_addr_uri(b""), Err(ParseError::Empty));
        assert_eq!(name_addr_uri(b"<>"), Err(ParseError::EmptyUri));
        assert_eq!(name_addr_uri(b";tag=1"), Err(ParseError::EmptyUri));
        assert_eq!(
            name_addr_uri(b"\"Alice <sip:a@b>"),
            Err(ParseError::UnterminatedQuote { offset: 0 })
        );
        assert_eq!(
            name_addr_uri(b"Alice <sip:a@b"),
            Err(ParseError::UnterminatedAngle { offset: 6 })
        );
        assert_eq!(
            name_addr_uri(b"\"Alice\" sip:a@b"),
            Err(ParseError::Unexpected {
                what: "name-addr",
                offset: 8
            })
        );
        assert_eq!(
            name_addr_uri(b"Al\"ice\" <sip:a@b>"),
            Err(ParseError::Unexpected {
                what: "name-addr",
                offset: 2
            })
        );
        assert_eq!(
            name_addr_uri(b"sip:a b"),
            Err(ParseError::Unexpected {
                what: "addr-spec",
                offset: 5
            })
        );
        assert_eq!(
            name_addr_uri(b"sip:a\0b"),
            Err(ParseError::Unexpected {
                what: "addr-spec",
                offset: 5
            })
        );
    }

    #[test]
    fn contact_rules_like_c() {
        assert_eq!(contact_uri(b""), Ok(None));
        assert_eq!(contact_uri(b"  \r\n"), Ok(None));
        assert_eq!(contact_uri(b"*"), Err(ParseError::StarContact));
        assert_eq!(contact_uri(b" * "), Err(ParseError::StarContact));
        assert_eq!(
            contact_uri(b"<sip:alice@10.0.0.1:5060;transport=udp>;expires=3600"),
            Ok(Some(&b"sip:alice@10.0.0.1:5060;transport=udp"[..]))
        );
        assert_eq!(
            contact_uri(b"sip:alice@10.0.0.1;expires=3600"),
            Ok(Some(&b"sip:alice@10.0.0.1"[..]))
        );
        assert_eq!(
            contact_uri(b"<sip:a@h>;+sip.instance=\"<urn:uuid:1,2>\""),
            Ok(Some(&b"sip:a@h"[..]))
        );
        let multi = Err(ParseError::MultipleValues("Contact"));
        assert_eq!(contact_uri(b"<sip:a@h>, <sip:b@h>"), multi);
        assert_eq!(contact_uri(b"sip:a@h,sip:b@h"), multi);
        assert_eq!(contact_uri(b"\"A,B\" <sip:a@h>;q=1,<sip:b@h>"), multi);
        assert_eq!(
            contact_uri(b"<sip:a@h>;x=\"unterminated"),
            Err(ParseError::UnterminatedQuote { offset: 12 })
        );
    }

    #[test]
    fn large_garbage_is_handled() {
        let big: Vec<u8> = b"sip:a@<\",;"
            .iter()
            .copied()
            .cycle()
            .take(10_240)
            .collect();
        assert!(contact_uri(&big).is_err());
        assert_eq!(
            name_addr_uri(&big),
            Err(ParseError::Unexpected {
                what: "name-addr",
                offset: 16
            })
        );
        assert_eq!(extract_aor(&big), Ok(&b"sip:a@<\","[..]));
        assert_eq!(host_of(&big).map(<[u8]>::len), Ok(10_240 - 6));
        let long_host: Vec<u8> = b"sip:"
            .iter()
            .copied()
            .chain(std::iter::repeat_n(b'h', 10_240))
            .collect();
        assert_eq!(parts(&long_host).map(|p| p.host.len()), Ok(10_240));
    }
}
