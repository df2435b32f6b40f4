//! A small SIP user agent for tests: UDP on 127.0.0.1 only, a message
//! parser, request/response builders, minimal dialog state, a transcript,
//! and [`normalize`] for comparing what two Kamailio instances sent.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Default receive timeout for tests.
pub const RECV_TIMEOUT: Duration = Duration::from_secs(3);

static UNIQUE: AtomicU64 = AtomicU64::new(1);

fn unique() -> u64 {
    UNIQUE.fetch_add(1, Ordering::SeqCst)
}

// ------------------------------------------------------------ headers

/// Full lower-case header name for a (possibly compact) header name.
pub fn canonical_name(name: &str) -> String {
    let n = name.trim().to_ascii_lowercase();
    let full = match n.as_str() {
        "i" => "call-id",
        "v" => "via",
        "f" => "from",
        "t" => "to",
        "m" => "contact",
        "l" => "content-length",
        "e" => "content-encoding",
        "c" => "content-type",
        "k" => "supported",
        "s" => "subject",
        "o" => "event",
        "u" => "allow-events",
        "r" => "refer-to",
        "b" => "referred-by",
        "x" => "session-expires",
        _ => return n,
    };
    full.to_string()
}

/// Split a header value at top-level commas (not inside `<...>` or quotes).
pub fn split_commas(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let (mut in_angle, mut in_quote, mut escaped) = (false, false, false);
    for ch in value.chars() {
        if in_quote {
            cur.push(ch);
            if escaped {
                escaped = false;
            } else if ch == '\\' {
                escaped = true;
            } else if ch == '"' {
                in_quote = false;
            }
            continue;
        }
        match ch {
            '"' => {
                in_quote = true;
                cur.push(ch);
            }
            '<' => {
                in_angle = true;
                cur.push(ch);
            }
            '>' => {
                in_angle = false;
                cur.push(ch);
            }
            ',' if !in_angle => {
                out.push(cur.trim().to_string());
                cur.clear();
            }
            _ => cur.push(ch),
        }
    }
    if !cur.trim().is_empty() {
        out.push(cur.trim().to_string());
    }
    out
}

/// The URI of a name-addr / addr-spec header value (`"x" <sip:a@b>;p` →
/// `sip:a@b`, `sip:a@b;tag=1` → `sip:a@b`).
pub fn uri_of(value: &str) -> String {
    if let (Some(s), Some(e)) = (value.find('<'), value.rfind('>')) {
        if s < e {
            return value[s + 1..e].trim().to_string();
        }
    }
    value.split(';').next().unwrap_or("").trim().to_string()
}

/// A header parameter (`tag`, `expires`, …) of a header value: the
/// parameters after `>` for name-addr, after the URI otherwise.
/// `Some("")` for a flag parameter without value.
pub fn header_param(value: &str, name: &str) -> Option<String> {
    let params = match value.rfind('>') {
        Some(e) => &value[e + 1..],
        None => match value.find(';') {
            Some(i) => &value[i..],
            None => return None,
        },
    };
    params
        .split(';')
        .skip_while(|p| p.trim().is_empty())
        .find_map(|p| {
            let mut kv = p.splitn(2, '=');
            let k = kv.next()?.trim();
            if k.eq_ignore_ascii_case(name) {
                Some(kv.next().unwrap_or("").trim().trim_matches('"').to_string())
            } else {
                None
            }
        })
}

// ------------------------------------------------------------ messages

/// A parsed SIP message.
#[derive(Clone, Debug)]
pub struct SipMessage {
    /// `INVITE sip:x SIP/2.0` or `SIP/2.0 200 OK`
    pub start_line: String,
    /// Headers in order, names as written (unfolded values, trimmed).
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The whole datagram as text.
    pub raw: String,
    /// Where it came from (received messages) or went to (sent ones).
    pub peer: Option<SocketAddr>,
}

impl SipMessage {
    pub fn parse(data: &[u8]) -> Result<SipMessage, String> {
        let raw = String::from_utf8_lossy(data).into_owned();
        let (head_len, sep_len) = match find(data, b"\r\n\r\n") {
            Some(i) => (i, 4),
            None => match find(data, b"\n\n") {
                Some(i) => (i, 2),
                None => return Err(format!("no end of headers in message:\n{raw}")),
            },
        };
        let head = String::from_utf8_lossy(&data[..head_len]).into_owned();
        let mut lines = head.split('\n').map(|l| l.trim_end_matches('\r'));
        let start_line = lines.next().unwrap_or("").trim().to_string();
        if !(start_line.starts_with("SIP/2.0 ") || start_line.ends_with(" SIP/2.0")) {
            return Err(format!("bad start line {start_line:?} in message:\n{raw}"));
        }
        let mut headers: Vec<(String, String)> = Vec::new();
        for line in lines {
            if line.starts_with(' ') || line.starts_with('\t') {
                // folded continuation line
                match headers.last_mut() {
                    Some(last) => {
                        last.1.push(' ');
                        last.1.push_str(line.trim());
                    }
                    None => return Err(format!("continuation before first header:\n{raw}")),
                }
                continue;
            }
            if line.is_empty() {
                continue;
            }
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| format!("header line without ':' {line:?} in:\n{raw}"))?;
            headers.push((name.trim().to_string(), value.trim().to_string()));
        }
        let mut body = data[head_len + sep_len..].to_vec();
        let msg = SipMessage {
            start_line,
            headers,
            body: Vec::new(),
            raw,
            peer: None,
        };
        if let Some(cl) = msg.header("Content-Length") {
            let n: usize = cl
                .trim()
                .parse()
                .map_err(|_| format!("bad Content-Length {cl:?}"))?;
            if n > body.len() {
                return Err(format!(
                    "Content-Length {n} but only {} body bytes:\n{}",
                    body.len(),
                    msg.raw
                ));
            }
            body.truncate(n);
        }
        Ok(SipMessage { body, ..msg })
    }

    pub fn is_request(&self) -> bool {
        !self.start_line.starts_with("SIP/2.0 ")
    }

    /// Request method (`None` for responses).
    pub fn method(&self) -> Option<&str> {
        if self.is_request() {
            self.start_line.split(' ').next()
        } else {
            None
        }
    }

    /// Request-URI (`None` for responses).
    pub fn request_uri(&self) -> Option<&str> {
        if self.is_request() {
            self.start_line.split(' ').nth(1)
        } else {
            None
        }
    }

    /// Status code (`None` for requests).
    pub fn status(&self) -> Option<u16> {
        if self.is_request() {
            None
        } else {
            self.start_line
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
        }
    }

    /// Reason phrase (`None` for requests).
    pub fn reason(&self) -> Option<&str> {
        if self.is_request() {
            None
        } else {
            self.start_line.splitn(3, ' ').nth(2)
        }
    }

    /// First value of a header (case-insensitive, compact forms too).
    pub fn header(&self, name: &str) -> Option<&str> {
        let want = canonical_name(name);
        self.headers
            .iter()
            .find(|(n, _)| canonical_name(n) == want)
            .map(|(_, v)| v.as_str())
    }

    /// Every header line with that name, in order.
    pub fn header_lines(&self, name: &str) -> Vec<&str> {
        let want = canonical_name(name);
        self.headers
            .iter()
            .filter(|(n, _)| canonical_name(n) == want)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// Every value of a list header: all lines, split at top-level commas.
    pub fn header_values(&self, name: &str) -> Vec<String> {
        self.header_lines(name)
            .iter()
            .flat_map(|v| split_commas(v))
            .collect()
    }

    pub fn has_header(&self, name: &str) -> bool {
        self.header(name).is_some()
    }

    pub fn call_id(&self) -> Option<&str> {
        self.header("Call-ID")
    }

    /// (number, method) of CSeq.
    pub fn cseq(&self) -> Option<(u32, String)> {
        let v = self.header("CSeq")?;
        let mut it = v.split_whitespace();
        let n = it.next()?.parse().ok()?;
        Some((n, it.next()?.to_string()))
    }

    /// From-tag.
    pub fn ftag(&self) -> Option<String> {
        header_param(self.header("From")?, "tag")
    }

    /// To-tag.
    pub fn ttag(&self) -> Option<String> {
        header_param(self.header("To")?, "tag")
    }

    /// branch of the top Via.
    pub fn via_branch(&self) -> Option<String> {
        let top = split_commas(self.header("Via")?).into_iter().next()?;
        header_param(&top, "branch")
    }

    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Header names in order (lower-case full names), for asserting the
    /// exact header set of a message.
    pub fn header_names(&self) -> Vec<String> {
        self.headers
            .iter()
            .map(|(n, _)| canonical_name(n))
            .collect()
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

// ------------------------------------------------------------ builders

fn render_message(start: &str, headers: &[(String, String)], body: &[u8]) -> Vec<u8> {
    let mut s = String::new();
    s.push_str(start);
    s.push_str("\r\n");
    let mut has_cl = false;
    for (n, v) in headers {
        if canonical_name(n) == "content-length" {
            has_cl = true;
        }
        let _ = write!(s, "{n}: {v}\r\n");
    }
    if !has_cl {
        let _ = write!(s, "Content-Length: {}\r\n", body.len());
    }
    s.push_str("\r\n");
    let mut out = s.into_bytes();
    out.extend_from_slice(body);
    out
}

/// A request under construction. Content-Length is added on render unless
/// set explicitly (so tests can send a wrong one on purpose).
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    pub uri: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn new(method: &str, uri: &str) -> Request {
        Request {
            method: method.into(),
            uri: uri.into(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// Append a header.
    pub fn header(mut self, name: &str, value: &str) -> Request {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Replace all headers of that name by one (appended if absent).
    pub fn set_header(mut self, name: &str, value: &str) -> Request {
        let want = canonical_name(name);
        match self
            .headers
            .iter()
            .position(|(n, _)| canonical_name(n) == want)
        {
            Some(i) => {
                self.headers[i] = (name.into(), value.into());
                let mut j = 0;
                self.headers.retain(|(n, _)| {
                    j += 1;
                    j - 1 == i || canonical_name(n) != want
                });
            }
            None => self.headers.push((name.into(), value.into())),
        }
        self
    }

    pub fn remove_header(mut self, name: &str) -> Request {
        let want = canonical_name(name);
        self.headers.retain(|(n, _)| canonical_name(n) != want);
        self
    }

    pub fn body(mut self, content_type: &str, body: &[u8]) -> Request {
        self = self.set_header("Content-Type", content_type);
        self.body = body.to_vec();
        self
    }

    pub fn render(&self) -> Vec<u8> {
        render_message(
            &format!("{} {} SIP/2.0", self.method, self.uri),
            &self.headers,
            &self.body,
        )
    }
}

/// A response under construction.
#[derive(Clone, Debug)]
pub struct Response {
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn new(status: u16, reason: &str) -> Response {
        Response {
            status,
            reason: reason.into(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// A response to `req`: copies every Via (in order), From, To, Call-ID
    /// and CSeq.
    pub fn for_request(req: &SipMessage, status: u16, reason: &str) -> Response {
        let mut r = Response::new(status, reason);
        for (n, v) in &req.headers {
            if matches!(
                canonical_name(n).as_str(),
                "via" | "from" | "to" | "call-id" | "cseq"
            ) {
                r.headers.push((n.clone(), v.clone()));
            }
        }
        r
    }

    /// Add `;tag=` to To unless it has one.
    pub fn with_to_tag(mut self, tag: &str) -> Response {
        for (n, v) in self.headers.iter_mut() {
            if canonical_name(n) == "to" && header_param(v, "tag").is_none() {
                v.push_str(";tag=");
                v.push_str(tag);
            }
        }
        self
    }

    /// Copy the request's Record-Route headers (dialog-forming 2xx/1xx).
    pub fn record_route_from(mut self, req: &SipMessage) -> Response {
        for v in req.header_lines("Record-Route") {
            self.headers.push(("Record-Route".into(), v.into()));
        }
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Response {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn body(mut self, content_type: &str, body: &[u8]) -> Response {
        self.headers
            .push(("Content-Type".into(), content_type.into()));
        self.body = body.to_vec();
        self
    }

    pub fn render(&self) -> Vec<u8> {
        render_message(
            &format!("SIP/2.0 {} {}", self.status, self.reason),
            &self.headers,
            &self.body,
        )
    }
}

// ------------------------------------------------------------ dialogs

/// Minimal dialog state (RFC 3261 §12) for building in-dialog requests.
#[derive(Clone, Debug)]
pub struct Dialog {
    pub call_id: String,
    pub local_tag: String,
    pub remote_tag: Option<String>,
    /// URI for From (as UAC) / To (as UAS).
    pub local_uri: String,
    pub remote_uri: String,
    /// Request-URI of in-dialog requests.
    pub remote_target: String,
    /// Route headers of in-dialog requests, in order.
    pub route_set: Vec<String>,
    /// Last CSeq we used.
    pub local_cseq: u32,
}

impl Dialog {
    /// Learn the remote tag, target and route set from a response to a
    /// request we sent (2xx, or 1xx with a To-tag). Returns whether anything
    /// was taken.
    pub fn update_from_response(&mut self, resp: &SipMessage) -> bool {
        let Some(status) = resp.status() else {
            return false;
        };
        if !(101..300).contains(&status) {
            return false;
        }
        let Some(tag) = resp.ttag() else { return false };
        let confirmed = self.remote_tag.is_some();
        self.remote_tag = Some(tag);
        if let Some(c) = resp.header("Contact") {
            self.remote_target = uri_of(c);
        }
        if !confirmed {
            // UAC: route set is the Record-Route list reversed.
            let mut rr = resp.header_values("Record-Route");
            rr.reverse();
            self.route_set = rr;
        }
        true
    }

    /// UAS side of a dialog created by a received request (e.g. INVITE):
    /// our tag is `local_tag`.
    pub fn from_request_uas(req: &SipMessage, local_tag: &str) -> Result<Dialog, String> {
        let from = req.header("From").ok_or("request without From")?;
        let to = req.header("To").ok_or("request without To")?;
        Ok(Dialog {
            call_id: req.call_id().ok_or("request without Call-ID")?.to_string(),
            local_tag: local_tag.to_string(),
            remote_tag: header_param(from, "tag"),
            local_uri: uri_of(to),
            remote_uri: uri_of(from),
            remote_target: req
                .header("Contact")
                .map(uri_of)
                .unwrap_or_else(|| uri_of(from)),
            route_set: req.header_values("Record-Route"),
            local_cseq: 0,
        })
    }
}

/// Parameters of a SUBSCRIBE.
#[derive(Clone, Debug)]
pub struct Subscribe {
    pub event: String,
    pub expires: u32,
    /// Call-Info header value (line-seize needs one).
    pub call_info: Option<String>,
    pub extra_headers: Vec<(String, String)>,
}

impl Subscribe {
    pub fn new(event: &str, expires: u32) -> Subscribe {
        Subscribe {
            event: event.into(),
            expires,
            call_info: None,
            extra_headers: Vec::new(),
        }
    }

    pub fn call_info(mut self, v: &str) -> Subscribe {
        self.call_info = Some(v.into());
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Subscribe {
        self.extra_headers.push((name.into(), value.into()));
        self
    }
}

// ------------------------------------------------------------ transcript

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Sent,
    Received,
}

#[derive(Clone, Debug)]
pub struct TranscriptEntry {
    pub dir: Direction,
    /// Time since the UA was created.
    pub at: Duration,
    pub msg: SipMessage,
    /// Sent automatically by the UA (e.g. 200 OK to NOTIFY).
    pub auto: bool,
    /// A retransmission of something already in the transcript.
    pub retransmission: bool,
}

// ------------------------------------------------------------ the UA

/// A test user agent on 127.0.0.1. All requests go to `proxy`; responses go
/// back to where the request came from.
pub struct Ua {
    pub name: String,
    pub user: String,
    /// Domain of the AoR (`sip:<user>@<domain>`).
    pub domain: String,
    pub local: SocketAddr,
    pub proxy: SocketAddr,
    /// Answer every new NOTIFY with 200 OK (it is still handed to the test).
    pub auto_answer_notify: bool,
    /// Answer every OPTIONS with this status and keep it from the test
    /// (a phone answering keepalive pings); counted in `options_answered`.
    pub auto_answer_options: Option<u16>,
    pub options_answered: usize,
    sock: UdpSocket,
    created: Instant,
    transcript: Vec<TranscriptEntry>,
    pending: VecDeque<SipMessage>,
    /// (transaction key, our response) of requests received.
    answered: Vec<(String, Option<Vec<u8>>)>,
    /// Keys of responses received.
    seen_responses: Vec<String>,
    /// Our To-tags as UAS, per Call-ID.
    uas_tags: Vec<(String, String)>,
    /// Keep only about this many recent transcript entries and transaction
    /// keys (long soaks); None keeps everything.
    history: Option<usize>,
}

/// Drop the oldest entries of `v` once it holds twice `cap` (amortised).
fn trim_history<T>(v: &mut Vec<T>, cap: Option<usize>) {
    if let Some(cap) = cap {
        if v.len() > 2 * cap {
            v.drain(..v.len() - cap);
        }
    }
}

impl Ua {
    /// A UA for `sip:<user>@127.0.0.1` bound on 127.0.0.1:0.
    pub fn new(name: &str, user: &str, proxy: SocketAddr) -> io::Result<Ua> {
        if !proxy.ip().is_loopback() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "test traffic must stay on loopback",
            ));
        }
        let sock = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0))?;
        let local = sock.local_addr()?;
        Ok(Ua {
            name: name.into(),
            user: user.into(),
            domain: "127.0.0.1".into(),
            local,
            proxy,
            auto_answer_notify: false,
            auto_answer_options: None,
            options_answered: 0,
            sock,
            created: Instant::now(),
            transcript: Vec::new(),
            pending: VecDeque::new(),
            answered: Vec::new(),
            seen_responses: Vec::new(),
            uas_tags: Vec::new(),
            history: None,
        })
    }

    /// Keep only the recent transcript and transaction keys (at least `n`
    /// of each), so a UA can run millions of transactions.
    pub fn keep_recent(&mut self, n: usize) {
        self.history = Some(n);
    }

    pub fn aor(&self) -> String {
        format!("sip:{}@{}", self.user, self.domain)
    }

    pub fn contact_uri(&self) -> String {
        format!("sip:{}@{}", self.user, self.local)
    }

    pub fn new_tag(&self) -> String {
        format!("{}-tag-{}-{}", self.name, std::process::id(), unique())
    }

    pub fn new_branch(&self) -> String {
        format!("z9hG4bK-{}-{}-{}", self.name, std::process::id(), unique())
    }

    pub fn new_call_id(&self) -> String {
        format!(
            "{}-{}-{}@127.0.0.1",
            self.name,
            std::process::id(),
            unique()
        )
    }

    pub fn via(&self, branch: &str) -> String {
        format!("SIP/2.0/UDP {};branch={};rport", self.local, branch)
    }

    /// A new UAC dialog from our AoR towards `remote_uri` (also the initial
    /// Request-URI).
    pub fn dialog(&self, remote_uri: &str) -> Dialog {
        Dialog {
            call_id: self.new_call_id(),
            local_tag: self.new_tag(),
            remote_tag: None,
            local_uri: self.aor(),
            remote_uri: remote_uri.into(),
            remote_target: remote_uri.into(),
            route_set: Vec::new(),
            local_cseq: 0,
        }
    }

    /// A request within (or initiating) `dialog`, CSeq incremented.
    pub fn request(&self, dialog: &mut Dialog, method: &str) -> Request {
        dialog.local_cseq += 1;
        let cseq = dialog.local_cseq;
        self.request_with_cseq(dialog, method, cseq)
    }

    /// Like [`Ua::request`] with an explicit CSeq number (ACK for 2xx uses
    /// the INVITE's).
    pub fn request_with_cseq(&self, dialog: &Dialog, method: &str, cseq: u32) -> Request {
        let to = match &dialog.remote_tag {
            Some(t) => format!("<{}>;tag={t}", dialog.remote_uri),
            None => format!("<{}>", dialog.remote_uri),
        };
        let mut r = Request::new(method, &dialog.remote_target)
            .header("Via", &self.via(&self.new_branch()))
            .header("Max-Forwards", "70");
        for route in &dialog.route_set {
            r = r.header("Route", route);
        }
        r.header(
            "From",
            &format!("<{}>;tag={}", dialog.local_uri, dialog.local_tag),
        )
        .header("To", &to)
        .header("Call-ID", &dialog.call_id)
        .header("CSeq", &format!("{cseq} {method}"))
        .header("Contact", &format!("<{}>", self.contact_uri()))
    }

    /// A SUBSCRIBE in `dialog`: initial if the dialog has no remote tag
    /// yet, a refresh otherwise.
    pub fn subscribe_request(&self, dialog: &mut Dialog, sub: &Subscribe) -> Request {
        let mut r = self
            .request(dialog, "SUBSCRIBE")
            .header("Event", &sub.event)
            .header("Expires", &sub.expires.to_string());
        if let Some(ci) = &sub.call_info {
            r = r.header("Call-Info", ci);
        }
        for (n, v) in &sub.extra_headers {
            r = r.header(n, v);
        }
        r
    }

    /// Build and send a SUBSCRIBE; returns what was sent.
    pub fn send_subscribe(
        &mut self,
        dialog: &mut Dialog,
        sub: &Subscribe,
    ) -> Result<SipMessage, String> {
        let r = self.subscribe_request(dialog, sub);
        self.send(&r)
    }

    /// CANCEL for an INVITE we sent (same R-URI, top Via, Call-ID, From, To,
    /// CSeq number, Route).
    pub fn cancel_for(&self, invite: &SipMessage) -> Result<Request, String> {
        self.non2xx_request("CANCEL", invite, None)
    }

    /// ACK for a non-2xx final response to an INVITE we sent.
    pub fn ack_for_non2xx(
        &self,
        invite: &SipMessage,
        resp: &SipMessage,
    ) -> Result<Request, String> {
        self.non2xx_request("ACK", invite, Some(resp))
    }

    fn non2xx_request(
        &self,
        method: &str,
        invite: &SipMessage,
        resp: Option<&SipMessage>,
    ) -> Result<Request, String> {
        let uri = invite.request_uri().ok_or("not a request")?;
        let via = split_commas(invite.header("Via").ok_or("no Via")?)
            .into_iter()
            .next()
            .ok_or("empty Via")?;
        let (n, _) = invite.cseq().ok_or("no CSeq")?;
        let to = match resp {
            Some(r) => r.header("To").ok_or("response without To")?,
            None => invite.header("To").ok_or("no To")?,
        };
        let mut r = Request::new(method, uri)
            .header("Via", &via)
            .header("Max-Forwards", "70");
        for route in invite.header_lines("Route") {
            r = r.header("Route", route);
        }
        Ok(r.header("From", invite.header("From").ok_or("no From")?)
            .header("To", to)
            .header("Call-ID", invite.call_id().ok_or("no Call-ID")?)
            .header("CSeq", &format!("{n} {method}")))
    }

    /// Send a request to the proxy; returns it as parsed.
    pub fn send(&mut self, req: &Request) -> Result<SipMessage, String> {
        let bytes = req.render();
        let peer = self.proxy;
        self.send_bytes(&bytes, peer, false)
    }

    /// Send arbitrary bytes to the proxy (malformed-message tests). They
    /// are recorded in the transcript if they parse.
    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<(), String> {
        let peer = self.proxy;
        self.sock
            .send_to(bytes, peer)
            .map_err(|e| format!("{}: send to {peer}: {e}", self.name))?;
        if let Ok(mut m) = SipMessage::parse(bytes) {
            m.peer = Some(peer);
            self.record(Direction::Sent, m, false, false);
        }
        Ok(())
    }

    fn send_bytes(
        &mut self,
        bytes: &[u8],
        peer: SocketAddr,
        auto: bool,
    ) -> Result<SipMessage, String> {
        if !peer.ip().is_loopback() {
            return Err(format!(
                "{}: refusing to send to non-loopback {peer}",
                self.name
            ));
        }
        let mut msg = SipMessage::parse(bytes)
            .map_err(|e| format!("{}: built an unparsable message: {e}", self.name))?;
        msg.peer = Some(peer);
        self.sock
            .send_to(bytes, peer)
            .map_err(|e| format!("{}: send to {peer}: {e}", self.name))?;
        self.record(Direction::Sent, msg.clone(), auto, false);
        Ok(msg)
    }

    fn record(&mut self, dir: Direction, msg: SipMessage, auto: bool, retransmission: bool) {
        self.transcript.push(TranscriptEntry {
            dir,
            at: self.created.elapsed(),
            msg,
            auto,
            retransmission,
        });
        trim_history(&mut self.transcript, self.history);
    }

    /// Our To-tag for requests received in the dialog `call_id`.
    pub fn uas_tag(&mut self, call_id: &str) -> String {
        if let Some((_, t)) = self.uas_tags.iter().find(|(c, _)| c == call_id) {
            return t.clone();
        }
        let t = self.new_tag();
        self.uas_tags.push((call_id.to_string(), t.clone()));
        t
    }

    /// Answer a received request: Via/From/To/Call-ID/CSeq copied, our
    /// To-tag added when To has none.
    pub fn reply(
        &mut self,
        req: &SipMessage,
        status: u16,
        reason: &str,
    ) -> Result<SipMessage, String> {
        let tag = self.uas_tag(req.call_id().unwrap_or(""));
        let resp = Response::for_request(req, status, reason).with_to_tag(&tag);
        self.send_response(req, &resp)
    }

    /// Send a response to a received request, back to its source address.
    pub fn send_response(
        &mut self,
        req: &SipMessage,
        resp: &Response,
    ) -> Result<SipMessage, String> {
        self.send_response_inner(req, resp, false)
    }

    fn send_response_inner(
        &mut self,
        req: &SipMessage,
        resp: &Response,
        auto: bool,
    ) -> Result<SipMessage, String> {
        let peer = req.peer.ok_or("request has no source address")?;
        let bytes = resp.render();
        let sent = self.send_bytes(&bytes, peer, auto)?;
        let key = request_key(req);
        match self.answered.iter_mut().find(|(k, _)| *k == key) {
            Some(e) => e.1 = Some(bytes),
            None => {
                self.answered.push((key, Some(bytes)));
                trim_history(&mut self.answered, self.history);
            }
        }
        Ok(sent)
    }

    /// Next message (queued first), within `timeout`.
    pub fn recv(&mut self, timeout: Duration) -> Result<SipMessage, String> {
        if let Some(m) = self.pending.pop_front() {
            return Ok(m);
        }
        self.recv_socket(timeout)?
            .ok_or_else(|| format!("{}: nothing received within {timeout:?}", self.name))
    }

    /// Read the socket until a new (non-retransmitted) message arrives or
    /// the deadline passes (`Ok(None)`).
    fn recv_socket(&mut self, timeout: Duration) -> Result<Option<SipMessage>, String> {
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; 65536];
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            self.sock
                .set_read_timeout(Some(deadline - now))
                .map_err(|e| format!("set_read_timeout: {e}"))?;
            let (n, peer) = match self.sock.recv_from(&mut buf) {
                Ok(x) => x,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    continue
                }
                Err(e) => return Err(format!("{}: recv: {e}", self.name)),
            };
            let mut msg = SipMessage::parse(&buf[..n])
                .map_err(|e| format!("{}: received from {peer}: {e}", self.name))?;
            msg.peer = Some(peer);
            if msg.is_request() {
                let key = request_key(&msg);
                if let Some((_, answer)) = self.answered.iter().find(|(k, _)| *k == key) {
                    let answer = answer.clone();
                    self.record(Direction::Received, msg, false, true);
                    if let Some(bytes) = answer {
                        // repeat our answer, as a UAS transaction would
                        let _ = self.sock.send_to(&bytes, peer);
                    }
                    continue;
                }
                self.answered.push((key, None));
                trim_history(&mut self.answered, self.history);
                self.record(Direction::Received, msg.clone(), false, false);
                if self.auto_answer_notify && msg.method() == Some("NOTIFY") {
                    let resp = Response::for_request(&msg, 200, "OK");
                    self.send_response_inner(&msg, &resp, true)?;
                }
                if let (Some(status), Some("OPTIONS")) = (self.auto_answer_options, msg.method()) {
                    let tag = self.new_tag();
                    let resp = Response::for_request(&msg, status, "Keepalive").with_to_tag(&tag);
                    self.send_response_inner(&msg, &resp, true)?;
                    self.options_answered += 1;
                    continue;
                }
            } else {
                let key = response_key(&msg);
                if self.seen_responses.contains(&key) {
                    self.record(Direction::Received, msg, false, true);
                    continue;
                }
                self.seen_responses.push(key);
                trim_history(&mut self.seen_responses, self.history);
                self.record(Direction::Received, msg.clone(), false, false);
            }
            return Ok(Some(msg));
        }
    }

    /// The first message satisfying `pred` within `timeout`; others that
    /// arrive meanwhile stay queued for later `recv`s. `what` describes the
    /// expectation in the error.
    pub fn recv_where<F>(
        &mut self,
        timeout: Duration,
        what: &str,
        pred: F,
    ) -> Result<SipMessage, String>
    where
        F: Fn(&SipMessage) -> bool,
    {
        if let Some(i) = self.pending.iter().position(&pred) {
            return self
                .pending
                .remove(i)
                .ok_or_else(|| "queue changed".to_string());
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv_socket(left)? {
                Some(m) if pred(&m) => return Ok(m),
                Some(m) => self.pending.push_back(m),
                None => {
                    let others: Vec<&str> =
                        self.pending.iter().map(|m| m.start_line.as_str()).collect();
                    return Err(format!(
                        "{}: no {what} within {timeout:?}; queued unmatched: {others:?}",
                        self.name
                    ));
                }
            }
        }
    }

    /// The next response (provisional or final) to the request we `sent`.
    pub fn expect_response(
        &mut self,
        sent: &SipMessage,
        timeout: Duration,
    ) -> Result<SipMessage, String> {
        let (call_id, cseq, branch) = transaction_of(sent)?;
        let what = format!(
            "response to {} (CSeq {} {})",
            sent.start_line, cseq.0, cseq.1
        );
        self.recv_where(timeout, &what, |m| {
            !m.is_request()
                && m.call_id() == Some(call_id.as_str())
                && m.cseq().as_ref() == Some(&cseq)
                && m.via_branch().as_deref() == Some(branch.as_str())
        })
    }

    /// The final response to the request we `sent` (provisionals skipped;
    /// they stay in the transcript).
    pub fn expect_final_response(
        &mut self,
        sent: &SipMessage,
        timeout: Duration,
    ) -> Result<SipMessage, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let r = self.expect_response(sent, left)?;
            if r.status().unwrap_or(0) >= 200 {
                return Ok(r);
            }
        }
    }

    /// The next request with this method.
    pub fn expect_request(
        &mut self,
        method: &str,
        timeout: Duration,
    ) -> Result<SipMessage, String> {
        self.recv_where(timeout, &format!("{method} request"), |m| {
            m.method() == Some(method)
        })
    }

    /// Assert nothing new arrives for `dur` (retransmissions of what we
    /// already have are absorbed). Queued messages count as "arrived".
    pub fn expect_silence(&mut self, dur: Duration) -> Result<(), String> {
        if let Some(m) = self.pending.front() {
            return Err(format!(
                "{}: expected silence but have queued:\n{}",
                self.name, m.raw
            ));
        }
        match self.recv_socket(dur)? {
            None => Ok(()),
            Some(m) => {
                let err = format!("{}: expected silence but received:\n{}", self.name, m.raw);
                self.pending.push_back(m);
                Err(err)
            }
        }
    }

    pub fn transcript(&self) -> &[TranscriptEntry] {
        &self.transcript
    }

    /// Raw transcript, one block per message, for logs and golden files.
    pub fn transcript_raw(&self) -> String {
        let mut s = String::new();
        for e in &self.transcript {
            let peer = e.msg.peer.map(|p| p.to_string()).unwrap_or_default();
            let arrow = match e.dir {
                Direction::Sent => format!("{} -> {peer}", self.local),
                Direction::Received => format!("{} <- {peer}", self.local),
            };
            let flags = match (e.auto, e.retransmission) {
                (true, _) => " (auto)",
                (_, true) => " (retransmission)",
                _ => "",
            };
            let _ = writeln!(
                s,
                "===== {} {arrow} at {:.3}s{flags} =====",
                self.name,
                e.at.as_secs_f64()
            );
            s.push_str(&e.msg.raw.replace("\r\n", "\n"));
            if !e.msg.raw.ends_with('\n') {
                s.push('\n');
            }
        }
        s
    }
}

fn request_key(m: &SipMessage) -> String {
    format!(
        "{}|{}|{:?}|{}",
        m.via_branch().unwrap_or_default(),
        m.method().unwrap_or(""),
        m.cseq(),
        m.call_id().unwrap_or("")
    )
}

fn response_key(m: &SipMessage) -> String {
    format!(
        "{}|{}|{:?}|{}|{}",
        m.via_branch().unwrap_or_default(),
        m.status().unwrap_or(0),
        m.cseq(),
        m.call_id().unwrap_or(""),
        m.ttag().unwrap_or_default()
    )
}

fn transaction_of(sent: &SipMessage) -> Result<(String, (u32, String), String), String> {
    Ok((
        sent.call_id()
            .ok_or("sent message has no Call-ID")?
            .to_string(),
        sent.cseq().ok_or("sent message has no CSeq")?,
        sent.via_branch().ok_or("sent message has no Via branch")?,
    ))
}

// ------------------------------------------------------------ normalize

/// Headers rendered by [`normalize`], in this order.
pub const NORMALIZED_HEADERS: &[&str] = &[
    "From",
    "To",
    "CSeq",
    "Event",
    "Subscription-State",
    "Expires",
    "Allow-Events",
    "Contact",
    "Call-Info",
    "Replaces",
    "Retry-After",
    "P-Asserted-Identity",
];

/// Replaces per-run values (addresses with ports, tags) by stable labels so
/// messages from two Kamailio instances compare equal. Labels are assigned
/// in order of first appearance, so normalize messages in transcript order
/// with one `Normalizer` per transcript.
#[derive(Clone, Debug, Default)]
pub struct Normalizer {
    addrs: Vec<(String, String)>,
    tags: Vec<(String, String)>,
    /// Exact strings (e.g. Call-IDs) replaced before anything else.
    literals: Vec<(String, String)>,
}

impl Normalizer {
    pub fn new() -> Normalizer {
        Normalizer::default()
    }

    /// Name an address: `127.0.0.1:5080` → `<label>`.
    pub fn label_addr(mut self, addr: SocketAddr, label: &str) -> Normalizer {
        self.addrs.push((addr.to_string(), format!("<{label}>")));
        self
    }

    /// Replace every occurrence of `literal` (e.g. a Call-ID quoted in a
    /// Replaces header or an RPC answer) by `<label>` before the other
    /// rules run. Longer literals are replaced first.
    pub fn add_literal(&mut self, literal: &str, label: &str) {
        if literal.is_empty() || self.literals.iter().any(|(l, _)| l == literal) {
            return;
        }
        self.literals.push((literal.to_string(), format!("<{label}>")));
        self.literals.sort_by_key(|l| std::cmp::Reverse(l.0.len()));
    }

    /// The label of a literal registered with [`Normalizer::add_literal`].
    pub fn known_literal(&self, literal: &str) -> Option<&str> {
        self.literals
            .iter()
            .find(|(l, _)| l == literal)
            .map(|(_, lab)| lab.as_str())
    }

    /// The label of a tag value already seen in a `tag=` parameter.
    pub fn known_tag(&self, tag: &str) -> Option<&str> {
        self.tags
            .iter()
            .find(|(t, _)| t == tag)
            .map(|(_, l)| l.as_str())
    }

    fn addr_label(&mut self, addr: &str) -> String {
        if let Some((_, l)) = self.addrs.iter().find(|(a, _)| a == addr) {
            return l.clone();
        }
        let l = format!("<addr{}>", self.addrs.len() + 1);
        self.addrs.push((addr.to_string(), l.clone()));
        l
    }

    fn tag_label(&mut self, tag: &str) -> String {
        if let Some((_, l)) = self.tags.iter().find(|(t, _)| t == tag) {
            return l.clone();
        }
        let l = format!("<tag{}>", self.tags.len() + 1);
        self.tags.push((tag.to_string(), l.clone()));
        l
    }

    /// Replace registered literals, `ip:port` (IPv4 with a port) and
    /// `tag=` values (also Replaces' `to-tag=` / `from-tag=`) in `s`.
    pub fn scrub(&mut self, s: &str) -> String {
        let mut s = s.to_string();
        for (lit, label) in &self.literals {
            if s.contains(lit.as_str()) {
                s = s.replace(lit.as_str(), label);
            }
        }
        let s = self.scrub_tags(&s);
        self.scrub_addrs(&s)
    }

    fn scrub_tags(&mut self, s: &str) -> String {
        let mut out = String::new();
        let mut rest = s;
        while let Some(i) = find_ci(rest, "tag=") {
            let before = &rest.as_bytes()[..i];
            let boundary_ok = i == 0
                || matches!(before[i - 1], b';' | b' ')
                || before.ends_with(b";to-")
                || before.ends_with(b";from-");
            out.push_str(&rest[..i + 4]);
            rest = &rest[i + 4..];
            if !boundary_ok {
                continue;
            }
            let end = rest
                .find([';', ',', '>', ' ', '\r', '\n'])
                .unwrap_or(rest.len());
            if end > 0 {
                let label = self.tag_label(&rest[..end]);
                out.push_str(&label);
            }
            rest = &rest[end..];
        }
        out.push_str(rest);
        out
    }

    fn scrub_addrs(&mut self, s: &str) -> String {
        let b = s.as_bytes();
        let mut out = String::new();
        let mut i = 0;
        while i < b.len() {
            if let Some(len) = ipv4_port_at(b, i) {
                let prev_ok = i == 0 || !(b[i - 1].is_ascii_digit() || b[i - 1] == b'.');
                if prev_ok {
                    let label = self.addr_label(&s[i..i + len]);
                    out.push_str(&label);
                    i += len;
                    continue;
                }
            }
            let ch = s[i..].chars().next().unwrap_or(' ');
            out.push(ch);
            i += ch.len_utf8();
        }
        out
    }

    /// See [`normalize`].
    pub fn normalize(&mut self, msg: &SipMessage) -> String {
        let mut s = String::new();
        if msg.is_request() {
            let uri = msg.request_uri().unwrap_or("");
            let _ = writeln!(s, "{} {}", msg.method().unwrap_or(""), self.scrub(uri));
        } else {
            let _ = writeln!(s, "{}", msg.start_line);
        }
        for h in NORMALIZED_HEADERS {
            for v in msg.header_lines(h) {
                let v = self.scrub(v);
                let _ = writeln!(s, "  {h}: {v}");
            }
        }
        if !msg.body.is_empty() {
            let ct = msg.header("Content-Type").unwrap_or("?");
            let _ = writeln!(s, "  [body {ct}]");
            for line in msg.body_str().lines() {
                let _ = writeln!(s, "    {}", self.scrub(line));
            }
        }
        s
    }

    /// Normalized transcript of one UA (retransmissions left out), each
    /// message prefixed with `<ua> ->` (sent) or `<ua> <-` (received).
    pub fn normalize_transcript(&mut self, ua_label: &str, entries: &[TranscriptEntry]) -> String {
        let mut s = String::new();
        for e in entries.iter().filter(|e| !e.retransmission) {
            let arrow = match e.dir {
                Direction::Sent => "->",
                Direction::Received => "<-",
            };
            let _ = write!(s, "{ua_label} {arrow} {}", self.normalize(&e.msg));
        }
        s
    }
}

/// Render the parts of `msg` that matter when comparing two SCA
/// implementations: method + Request-URI or the status line, then From, To,
/// CSeq, Event, Subscription-State (expires value kept), Expires,
/// Allow-Events, Contact, Call-Info, Replaces (each occurrence, in that
/// order), and the body. Via, Call-ID, Max-Forwards, Content-Length etc. are
/// left out; `ip:port` and tag values become labels from `n`.
pub fn normalize(msg: &SipMessage, n: &mut Normalizer) -> String {
    n.normalize(msg)
}

fn find_ci(hay: &str, needle: &str) -> Option<usize> {
    let h = hay.as_bytes();
    let nb = needle.as_bytes();
    h.windows(nb.len()).position(|w| w.eq_ignore_ascii_case(nb))
}

/// Length of `d.d.d.d:port` starting at `i`, if there is one.
fn ipv4_port_at(b: &[u8], i: usize) -> Option<usize> {
    let mut j = i;
    for octet in 0..4 {
        let start = j;
        while j < b.len() && b[j].is_ascii_digit() && j - start < 3 {
            j += 1;
        }
        if j == start {
            return None;
        }
        if octet < 3 {
            if j >= b.len() || b[j] != b'.' {
                return None;
            }
            j += 1;
        }
    }
    if j >= b.len() || b[j] != b':' {
        return None;
    }
    j += 1;
    let start = j;
    while j < b.len() && b[j].is_ascii_digit() {
        j += 1;
    }
    if j == start {
        return None;
    }
    Some(j - i)
}
