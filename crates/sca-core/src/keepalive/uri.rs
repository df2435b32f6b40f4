//! How destinations are named and matched.
//!
//! The C keepalive module stores a destination's URI as given, with `sip:`
//! put in front when it starts with neither `sip:` nor `sips:` (any case),
//! then compares it three different ways: byte for byte against the raw
//! argument when adding, deleting and getting (so `1.2.3.4` was never found
//! again and could be added twice), and by skipping the first four bytes of
//! the stored URI in `ka_is_alive()` (so only the scheme-less form matched,
//! and a `sips:` destination only as `:host`).
//!
//! Here every lookup uses one rule:
//!
//! * a URI given without a scheme means `sip:` + the URI (as in C);
//! * two URIs are the same destination when their schemes are equal ignoring
//!   case and the rest is equal byte for byte;
//! * `ka_is_alive()` (and the API's `destination_state`) also accept the
//!   scheme-less form of a `sips:` destination: `host` looks for `sip:host`
//!   first, then `sips:host`.

/// URI scheme of a destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    Sip,
    Sips,
}

impl Scheme {
    pub fn prefix(self) -> &'static [u8] {
        match self {
            Scheme::Sip => b"sip:",
            Scheme::Sips => b"sips:",
        }
    }
}

/// The scheme of `uri` and what follows its colon, if it starts with
/// `sip:` or `sips:` in any case.
pub fn split_scheme(uri: &[u8]) -> Option<(Scheme, &[u8])> {
    if uri.len() >= 4 && uri[..4].eq_ignore_ascii_case(b"sip:") {
        Some((Scheme::Sip, &uri[4..]))
    } else if uri.len() >= 5 && uri[..5].eq_ignore_ascii_case(b"sips:") {
        Some((Scheme::Sips, &uri[5..]))
    } else {
        None
    }
}

/// Does `uri` need `sip:` in front to become a destination URI?
pub fn needs_prefix(uri: &[u8]) -> bool {
    split_scheme(uri).is_none()
}

/// `uri` as stored: unchanged when it has a scheme, else `sip:` + `uri`.
pub fn normalize(uri: &[u8]) -> std::vec::Vec<u8> {
    let mut v = std::vec::Vec::with_capacity(uri.len() + 4);
    if needs_prefix(uri) {
        v.extend_from_slice(b"sip:");
    }
    v.extend_from_slice(uri);
    v
}

/// Why a destination URI is refused before Kamailio's (lenient) parser sees
/// it: a URI is sent as a Request-URI, so it must be one token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Malformed {
    /// No host after the scheme (and user part).
    NoHost,
    /// A space, control character or one of `<>"` anywhere in it.
    BadByte(u8),
}

/// Check `uri` (with its scheme, as [`normalize`] gives it) for what can
/// never be a SIP URI on the wire, whatever a parser makes of it.
pub fn check_well_formed(uri: &[u8]) -> Result<(), Malformed> {
    if let Some(&b) = uri.iter().find(|&&b| b <= b' ' || b == 0x7f || matches!(b, b'<' | b'>' | b'"')) {
        return Err(Malformed::BadByte(b));
    }
    let rest = split_scheme(uri).map_or(uri, |(_, r)| r);
    // host[:port][;params][?headers], after an optional user part
    let after_user = rest.iter().rposition(|&b| b == b'@').map_or(rest, |i| &rest[i + 1..]);
    let host_end = after_user.iter().position(|&b| matches!(b, b';' | b'?')).unwrap_or(after_user.len());
    let hostport = &after_user[..host_end];
    let host = if hostport.first() == Some(&b'[') {
        hostport
    } else {
        hostport.split(|&b| b == b':').next().unwrap_or(&[])
    };
    if host.is_empty() {
        return Err(Malformed::NoHost);
    }
    Ok(())
}

/// A lookup key: scheme plus the rest of the URI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Key<'a> {
    pub scheme: Scheme,
    pub rest: &'a [u8],
}

impl<'a> Key<'a> {
    /// The key of `uri`, reading a missing scheme as `sip:`.
    pub fn of(uri: &'a [u8]) -> Key<'a> {
        match split_scheme(uri) {
            Some((scheme, rest)) => Key { scheme, rest },
            None => Key { scheme: Scheme::Sip, rest: uri },
        }
    }

    /// Does the stored destination URI `stored` name this key?
    pub fn matches(&self, stored: &[u8]) -> bool {
        Key::of(stored) == *self
    }
}

/// The keys `ka_is_alive(query)` tries, in order.
pub fn state_query_keys(query: &[u8]) -> [Option<Key<'_>>; 2] {
    match split_scheme(query) {
        Some((scheme, rest)) => [Some(Key { scheme, rest }), None],
        None => [Some(Key { scheme: Scheme::Sip, rest: query }), Some(Key { scheme: Scheme::Sips, rest: query })],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_like_the_c_module() {
        assert_eq!(normalize(b"1.2.3.4"), b"sip:1.2.3.4");
        assert_eq!(normalize(b"sip:1.2.3.4"), b"sip:1.2.3.4");
        assert_eq!(normalize(b"SIP:1.2.3.4"), b"SIP:1.2.3.4");
        assert_eq!(normalize(b"sips:h:5061"), b"sips:h:5061");
        assert_eq!(normalize(b"Sips:h"), b"Sips:h");
        // "sip" alone is a host name
        assert_eq!(normalize(b"sip"), b"sip:sip");
        assert_eq!(normalize(b""), b"sip:");
    }

    #[test]
    fn well_formed_uris_only() {
        for ok in [&b"sip:1.2.3.4"[..], b"sip:gw.example.org:5080;transport=tcp", b"sips:u@h", b"sip:[::1]:5060", b"sip:h?x=y"] {
            assert_eq!(check_well_formed(ok), Ok(()), "{}", String::from_utf8_lossy(ok));
        }
        assert_eq!(check_well_formed(b"sip:gw example.org"), Err(Malformed::BadByte(b' ')));
        assert_eq!(check_well_formed(b"sip:gw\texample"), Err(Malformed::BadByte(b'\t')));
        assert_eq!(check_well_formed(b"sip:<gw>"), Err(Malformed::BadByte(b'<')));
        assert_eq!(check_well_formed(b"sip:h\"x"), Err(Malformed::BadByte(b'"')));
        assert_eq!(check_well_formed(b"sip:h\r\nVia: x"), Err(Malformed::BadByte(b'\r')));
        assert_eq!(check_well_formed(b"sip:"), Err(Malformed::NoHost));
        assert_eq!(check_well_formed(b"sip:user@"), Err(Malformed::NoHost));
        assert_eq!(check_well_formed(b"sip::5060"), Err(Malformed::NoHost));
        assert_eq!(check_well_formed(b"sip:u@;transport=udp"), Err(Malformed::NoHost));
    }

    #[test]
    fn one_matching_rule() {
        let k = Key::of(b"1.2.3.4:5080");
        assert!(k.matches(b"sip:1.2.3.4:5080"));
        assert!(k.matches(b"SIP:1.2.3.4:5080"));
        assert!(!k.matches(b"sips:1.2.3.4:5080"));
        assert!(!k.matches(b"sip:1.2.3.4"));
        assert!(Key::of(b"sIpS:h").matches(b"sips:h"));
        // the rest is compared byte for byte, as the C module does
        assert!(!Key::of(b"sip:Host").matches(b"sip:host"));
    }

    #[test]
    fn state_queries_try_sip_then_sips_without_scheme() {
        let [a, b] = state_query_keys(b"h:1");
        assert_eq!(a, Some(Key { scheme: Scheme::Sip, rest: b"h:1" }));
        assert_eq!(b, Some(Key { scheme: Scheme::Sips, rest: b"h:1" }));
        let [a, b] = state_query_keys(b"sips:h:1");
        assert_eq!(a, Some(Key { scheme: Scheme::Sips, rest: b"h:1" }));
        assert_eq!(b, None);
    }
}
