//! SIP digest authentication for the test UA (RFC 2617 with `qop=auth`
//! or without, MD5): the response to a 401/407 challenge. MD5 (RFC 1321)
//! is written out here rather than taken from a crate.

/// MD5 of `data`.
pub fn md5(data: &[u8]) -> [u8; 16] {
    const S: [u32; 64] = [
        7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 5, 9, 14, 20, 5, 9, 14, 20, 5,
        9, 14, 20, 5, 9, 14, 20, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 6, 10,
        15, 21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21,
    ];
    let k: Vec<u32> = (0..64)
        .map(|i| ((i as f64 + 1.0).sin().abs() * 4294967296.0) as u32)
        .collect();
    let (mut a0, mut b0, mut c0, mut d0) =
        (0x67452301u32, 0xefcdab89u32, 0x98badcfeu32, 0x10325476u32);
    let mut msg = data.to_vec();
    let bits = (data.len() as u64).wrapping_mul(8);
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&bits.to_le_bytes());
    for chunk in msg.chunks(64) {
        let m: Vec<u32> = chunk
            .chunks(4)
            .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
            .collect();
        let (mut a, mut b, mut c, mut d) = (a0, b0, c0, d0);
        for i in 0..64 {
            let (f, g) = match i / 16 {
                0 => ((b & c) | (!b & d), i),
                1 => ((d & b) | (!d & c), (5 * i + 1) % 16),
                2 => (b ^ c ^ d, (3 * i + 5) % 16),
                _ => (c ^ (b | !d), (7 * i) % 16),
            };
            let f = f.wrapping_add(a).wrapping_add(k[i]).wrapping_add(m[g]);
            a = d;
            d = c;
            c = b;
            b = b.wrapping_add(f.rotate_left(S[i]));
        }
        a0 = a0.wrapping_add(a);
        b0 = b0.wrapping_add(b);
        c0 = c0.wrapping_add(c);
        d0 = d0.wrapping_add(d);
    }
    let mut out = [0u8; 16];
    for (i, v) in [a0, b0, c0, d0].iter().enumerate() {
        out[i * 4..i * 4 + 4].copy_from_slice(&v.to_le_bytes());
    }
    out
}

pub fn md5_hex(data: &str) -> String {
    md5(data.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A parameter of a `Digest ...` challenge (quoted or not).
pub fn param(challenge: &str, name: &str) -> Option<String> {
    let rest = challenge.trim().strip_prefix("Digest")?.trim();
    for part in split_params(rest) {
        let (k, v) = part.split_once('=')?;
        if k.trim().eq_ignore_ascii_case(name) {
            return Some(v.trim().trim_matches('"').to_string());
        }
    }
    None
}

fn split_params(s: &str) -> Vec<String> {
    let (mut out, mut cur, mut quoted) = (Vec::new(), String::new(), false);
    for ch in s.chars() {
        match ch {
            '"' => {
                quoted = !quoted;
                cur.push(ch);
            }
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            _ => cur.push(ch),
        }
    }
    if !cur.trim().is_empty() {
        out.push(cur);
    }
    out
}

/// The `Authorization` / `Proxy-Authorization` value answering
/// `challenge` (a `WWW-Authenticate` / `Proxy-Authenticate` value) for
/// `method` `uri`.
pub fn authorization(
    challenge: &str,
    user: &str,
    password: &str,
    method: &str,
    uri: &str,
) -> String {
    let realm = param(challenge, "realm").unwrap_or_default();
    let nonce = param(challenge, "nonce").unwrap_or_default();
    let opaque = param(challenge, "opaque");
    let qop_auth =
        param(challenge, "qop").is_some_and(|q| q.split(',').any(|x| x.trim() == "auth"));
    let ha1 = md5_hex(&format!("{user}:{realm}:{password}"));
    let ha2 = md5_hex(&format!("{method}:{uri}"));
    let mut v = format!("Digest username=\"{user}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", algorithm=MD5");
    if qop_auth {
        let (nc, cnonce) = ("00000001", "0a4f113b");
        let resp = md5_hex(&format!("{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}"));
        v.push_str(&format!(
            ", response=\"{resp}\", qop=auth, nc={nc}, cnonce=\"{cnonce}\""
        ));
    } else {
        let resp = md5_hex(&format!("{ha1}:{nonce}:{ha2}"));
        v.push_str(&format!(", response=\"{resp}\""));
    }
    if let Some(o) = opaque {
        v.push_str(&format!(", opaque=\"{o}\""));
    }
    v
}
