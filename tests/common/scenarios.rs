//! A library of Shared Call Appearance scenarios, each run against a real
//! Kamailio with either SCA module ([`ScaModule::C`] = Debian's `sca.so`,
//! the behavioural reference, or [`ScaModule::Rust`] = our `sca_rs.so`) and
//! the [`SCA_CFG`](super::cfg::SCA_CFG) routing config.
//!
//! Cast (all on 127.0.0.1, each UA on its own UDP port):
//! * `A1`, `A2`: two phones sharing the SCA AoR `sip:100@127.0.0.1`
//!   (their Contact user is `100` too, so C's "canonical AoR" is the AoR);
//! * `B`: `sip:200@127.0.0.1`, a plain UA that is not SCA. Calls reach it
//!   because the caller puts B's contact in the INVITE's Request-URI.
//!
//! A1 and A2 hold call-info subscriptions unless a scenario says otherwise.
//! Every UA answers NOTIFYs with 200 automatically.
//!
//! A scenario is a function `fn(ScaModule) -> ScenarioResult`. It drives
//! the UAs step by step; after each step it waits for the NOTIFYs the C
//! module sends at that point (a bounded wait: a shortfall is written into
//! the result's notes, it does not abort), then for a quiet period of
//! [`QUIET`] in which any further NOTIFY is collected too. Messages land in
//! each UA's transcript in arrival order; the rendered result shows, per UA
//! in a fixed order, the normalized transcript (see
//! [`Normalizer`](super::sip::Normalizer): addresses, tags and Call-IDs
//! become labels) with `-- step N: ... --` markers, then the RPC outputs
//! collected at key points. A step that cannot go on (no reply at all, a
//! dialog that was not set up) aborts the scenario with a note; if Kamailio
//! died, the notes say `KAMAILIO DIED` and the scenario stops there.
//!
//! Values that vary between runs and are not labels:
//! * `Subscription-State: ...;expires=N` and the seconds left in
//!   `sca.all_subscriptions` (rendered `left=N`) may differ by a second or
//!   two; [`equivalent`] compares numbers after `expires=` / `left=` with a
//!   tolerance of [`EXPIRES_TOLERANCE`] seconds;
//! * the `mtime` column of `sca.all_appearances` is rendered `<mtime>`.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use super::cfg::{sca_modparam, sca_opts};
use super::kamailio::{Kamailio, KamailioOpts, ScaModule};
use super::sip::{Dialog, Direction, Normalizer, Request, Response, SipMessage, Subscribe, Ua};

/// The shared (SCA) AoR of A1 and A2.
pub const AOR: &str = "sip:100@127.0.0.1";
/// The callee's AoR (not SCA).
pub const CALLEE_AOR: &str = "sip:200@127.0.0.1";
/// Wait for an expected message (reply, request, each expected NOTIFY).
pub const WAIT: Duration = Duration::from_secs(3);
/// Quiet period after each step in which further NOTIFYs are collected.
pub const QUIET: Duration = Duration::from_millis(250);
/// Tolerance for `expires=N` / `left=N` values in [`equivalent`].
pub const EXPIRES_TOLERANCE: i64 = 2;

/// [`EXPIRES_TOLERANCE`], or `SCA_RS_EXPIRES_TOLERANCE` seconds where a
/// run is much slower than the recorded one (scripts/valgrind.sh sets it:
/// under memcheck a scenario's steps take seconds, not milliseconds).
pub fn expires_tolerance() -> i64 {
    std::env::var("SCA_RS_EXPIRES_TOLERANCE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(EXPIRES_TOLERANCE)
}

/// `<sip:127.0.0.1>;appearance-index=<idx>` — what the phones send.
pub fn call_info(idx: &str) -> String {
    format!("<sip:127.0.0.1>;appearance-index={idx}")
}

/// A minimal SDP offer/answer; `dir` is the a= direction attribute.
pub fn sdp(user: &str, version: u32, dir: &str) -> Vec<u8> {
    format!(
        "v=0\r\no={user} 1 {version} IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n\
         t=0 0\r\nm=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na={dir}\r\n"
    )
    .into_bytes()
}

// ------------------------------------------------------------ results

/// What one scenario run observed.
#[derive(Clone, Debug)]
pub struct ScenarioResult {
    pub name: String,
    pub module: ScaModule,
    /// One-line summary of the scenario (header of the golden file).
    pub description: String,
    /// Observations: invariants checked by the scenario, shortfalls of
    /// expected NOTIFYs, an abort reason, `KAMAILIO DIED`.
    pub notes: Vec<String>,
    /// (step and command, normalized output), in the order collected.
    pub rpc: Vec<(String, String)>,
    /// (UA label, normalized transcript with step markers), fixed UA order.
    pub transcripts: Vec<(String, String)>,
    pub kamailio_died: bool,
    /// Raw messages and Kamailio's error/warning log lines (reference
    /// only: full of per-run values).
    pub raw: String,
}

impl ScenarioResult {
    /// The text compared with the golden file.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "== notes ==");
        if self.notes.is_empty() {
            let _ = writeln!(s, "(none)");
        }
        for n in &self.notes {
            let _ = writeln!(s, "{n}");
        }
        for (ua, t) in &self.transcripts {
            let _ = writeln!(s, "\n== {ua} ==");
            s.push_str(t);
        }
        let _ = writeln!(s, "\n== rpc ==");
        for (label, out) in &self.rpc {
            let _ = writeln!(s, "[{label}]");
            if out.is_empty() {
                let _ = writeln!(s, "  (empty)");
            }
            for l in out.lines() {
                let _ = writeln!(s, "  {l}");
            }
        }
        s
    }
}

// ------------------------------------------------------------ context

struct Phone {
    label: String,
    ua: Ua,
    /// (transcript length when the step began, step label)
    marks: Vec<(usize, String)>,
}

/// A running scenario: Kamailio, the UAs, step markers, RPC outputs.
pub struct Ctx {
    pub k: Kamailio,
    phones: Vec<Phone>,
    step_no: usize,
    step_label: String,
    /// (label, command, output, mask the to-tag column)
    rpc_raw: Vec<(String, Vec<String>, String, bool)>,
    notes: Vec<String>,
    died: bool,
}

impl Ctx {
    /// Start Kamailio (panics with the harness's start error if it does not
    /// come up) and bind one UA per `(label, user)`.
    pub fn start(opts: KamailioOpts, phones: &[(&str, &str)]) -> Ctx {
        let k = Kamailio::start(opts);
        let phones = phones
            .iter()
            .map(|(label, user)| {
                let mut ua = Ua::new(label, user, k.addr()).expect("bind UA socket");
                ua.auto_answer_notify = true;
                Phone {
                    label: label.to_string(),
                    ua,
                    marks: Vec::new(),
                }
            })
            .collect();
        Ctx {
            k,
            phones,
            step_no: 0,
            step_label: "start".into(),
            rpc_raw: Vec::new(),
            notes: Vec::new(),
            died: false,
        }
    }

    pub fn ua(&mut self, label: &str) -> &mut Ua {
        match self.phones.iter_mut().find(|p| p.label == label) {
            Some(p) => &mut p.ua,
            None => panic!("no UA {label} in this scenario"),
        }
    }

    pub fn note(&mut self, n: &str) {
        let n = format!("{}: {n}", self.step_label);
        self.notes.push(n);
    }

    fn alive(&mut self) -> bool {
        if !self.died && (!self.k.is_running() || child_crash(&self.k).is_some()) {
            self.died = true;
        }
        !self.died
    }

    /// After a failed step: give a crashing Kamailio up to 2 s to show it.
    fn settle_death(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if !self.alive() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// Begin a step: a marker in every transcript; `Err` if Kamailio died.
    pub fn step(&mut self, what: &str) -> Result<(), String> {
        if !self.alive() {
            return Err(format!("KAMAILIO DIED before step {} ({what})", self.step_no + 1));
        }
        self.step_no += 1;
        self.step_label = format!("step {}", self.step_no);
        let label = format!("step {}: {what}", self.step_no);
        for p in &mut self.phones {
            let n = p.ua.transcript().len();
            p.marks.push((n, label.clone()));
        }
        Ok(())
    }

    /// Run an RPC command; its output (or `ERROR: <fault>`) is kept for
    /// the result, labelled with the current step.
    pub fn rpc(&mut self, args: &[&str]) {
        self.rpc_inner(args, false)
    }

    /// `sca.all_appearances` with the to-tag column rendered `<masked>`:
    /// for when C reads it from uninitialized memory (see held_private).
    pub fn rpc_appearances_masking_to_tag(&mut self) {
        self.rpc_inner(&["sca.all_appearances"], true)
    }

    fn rpc_inner(&mut self, args: &[&str], mask_to_tag: bool) {
        let label = format!("{} | {}", self.step_label, args.join(" "));
        let out = if self.alive() {
            match self.k.kamcmd(args) {
                Ok(s) => s.trim_end().to_string(),
                Err(e) => format!("ERROR: {e}"),
            }
        } else {
            "(kamailio is not running)".to_string()
        };
        self.rpc_raw.push((
            label,
            args.iter().map(|a| a.to_string()).collect(),
            out,
            mask_to_tag,
        ));
    }

    /// Wait for `n` NOTIFYs on each listed UA (bounded by [`WAIT`] per UA;
    /// a shortfall becomes a note), then collect any further NOTIFY on any
    /// UA until [`QUIET`] passes without one. Returns the expected ones.
    pub fn notifies(&mut self, expect: &[(&str, usize)]) -> Vec<SipMessage> {
        let mut got = Vec::new();
        for (label, n) in expect {
            let deadline = Instant::now() + WAIT;
            let mut have = 0;
            while have < *n {
                let left = deadline.saturating_duration_since(Instant::now());
                match self
                    .ua(label)
                    .recv_where(left, "NOTIFY", |m| m.method() == Some("NOTIFY"))
                {
                    Ok(m) => {
                        got.push(m);
                        have += 1;
                    }
                    Err(_) => {
                        self.note(&format!("{label} expected {n} NOTIFY, got {have}"));
                        break;
                    }
                }
            }
        }
        self.quiet();
        got
    }

    /// Collect NOTIFYs on every UA until none arrives for [`QUIET`]
    /// (at most 3 s). Other messages read meanwhile stay queued.
    pub fn quiet(&mut self) {
        let hard = Instant::now() + Duration::from_secs(3);
        let mut last = Instant::now();
        while last.elapsed() < QUIET && Instant::now() < hard {
            let mut any = false;
            for p in &mut self.phones {
                if p
                    .ua
                    .recv_where(Duration::from_millis(5), "NOTIFY", |m| {
                        m.method() == Some("NOTIFY")
                    })
                    .is_ok()
                {
                    any = true;
                }
            }
            if any {
                last = Instant::now();
            }
        }
    }

    /// Send a request from `label`'s UA.
    pub fn send(&mut self, label: &str, req: &Request) -> Result<SipMessage, String> {
        self.ua(label).send(req)
    }

    /// The next response to `sent` (provisional or final).
    pub fn response(&mut self, label: &str, sent: &SipMessage) -> Result<SipMessage, String> {
        self.ua(label).expect_response(sent, WAIT)
    }

    /// The final response to `sent` (provisionals stay in the transcript).
    pub fn final_response(&mut self, label: &str, sent: &SipMessage) -> Result<SipMessage, String> {
        self.ua(label).expect_final_response(sent, WAIT)
    }

    pub fn request(&mut self, label: &str, method: &str) -> Result<SipMessage, String> {
        self.ua(label).expect_request(method, WAIT)
    }

    /// SUBSCRIBE in `dlg` (initial or in-dialog); returns the final
    /// response and, on 2xx, takes the dialog state from it.
    pub fn subscribe(
        &mut self,
        label: &str,
        dlg: &mut Dialog,
        sub: &Subscribe,
    ) -> Result<SipMessage, String> {
        let ua = self.ua(label);
        let sent = ua.send_subscribe(dlg, sub)?;
        let r = ua.expect_final_response(&sent, WAIT)?;
        if (200..300).contains(&r.status().unwrap_or(0)) {
            dlg.update_from_response(&r);
        }
        Ok(r)
    }

    /// A new call-info subscription (600 s) from `label`; waits for its
    /// NOTIFY. Returns the subscription dialog.
    pub fn subscribe_call_info(&mut self, label: &str) -> Result<Dialog, String> {
        let mut dlg = self.ua(label).dialog(AOR);
        let r = self.subscribe(label, &mut dlg, &Subscribe::new("call-info", 600))?;
        if r.status() != Some(202) {
            return Err(format!("call-info SUBSCRIBE from {label} got {}", r.start_line));
        }
        self.notifies(&[(label, 1)]);
        Ok(dlg)
    }

    /// A line-seize SUBSCRIBE from `label` for `idx` in a new dialog.
    pub fn seize(
        &mut self,
        label: &str,
        idx: &str,
        expires: u32,
    ) -> Result<(Dialog, SipMessage), String> {
        let mut dlg = self.ua(label).dialog(AOR);
        let r = self.subscribe(
            label,
            &mut dlg,
            &Subscribe::new("line-seize", expires).call_info(&call_info(idx)),
        )?;
        Ok((dlg, r))
    }

    /// B's reply to a request it received: its To-tag for the Call-ID; for
    /// 101..299 also Record-Route (copied) and Contact; SDP if given.
    pub fn b_reply(
        &mut self,
        req: &SipMessage,
        status: u16,
        reason: &str,
        body: Option<Vec<u8>>,
    ) -> Result<SipMessage, String> {
        let ua = self.ua("B");
        let tag = ua.uas_tag(req.call_id().unwrap_or(""));
        let mut r = Response::for_request(req, status, reason).with_to_tag(&tag);
        if (101..300).contains(&status) {
            r = r
                .record_route_from(req)
                .header("Contact", &format!("<{}>", ua.contact_uri()));
        }
        if let Some(b) = body {
            r = r.body("application/sdp", &b);
        }
        ua.send_response(req, &r)
    }

    /// Plain reply (no Contact / SDP) from any UA to a request it received.
    pub fn reply(
        &mut self,
        label: &str,
        req: &SipMessage,
        status: u16,
        reason: &str,
    ) -> Result<SipMessage, String> {
        self.ua(label).reply(req, status, reason)
    }

    /// Drain every UA, then normalize everything into a [`ScenarioResult`].
    pub fn finish(mut self, name: &str, module: ScaModule, description: &str) -> ScenarioResult {
        // whatever is still under way lands in the transcripts
        let hard = Instant::now() + Duration::from_secs(3);
        let mut last = Instant::now();
        while last.elapsed() < Duration::from_millis(300) && Instant::now() < hard {
            let mut any = false;
            for p in &mut self.phones {
                if p.ua.recv(Duration::from_millis(5)).is_ok() {
                    any = true;
                }
            }
            if any {
                last = Instant::now();
            }
        }
        if !self.alive() && !self.notes.iter().any(|n| n.contains("KAMAILIO DIED")) {
            let how = died_how(&self.k);
            self.notes.push(format!("KAMAILIO DIED ({how})"));
        }

        let mut norm = Normalizer::new().label_addr(self.k.addr(), "proxy");
        for p in &self.phones {
            norm = norm.label_addr(p.ua.local, &p.label);
        }
        // Call-IDs (quoted in Replaces and RPC answers), by first appearance
        let mut n_callid = 0;
        for p in &self.phones {
            for e in p.ua.transcript() {
                if let Some(c) = e.msg.call_id() {
                    if norm.known_literal(c).is_none() {
                        n_callid += 1;
                        norm.add_literal(c, &format!("callid{n_callid}"));
                    }
                }
            }
        }

        let mut transcripts = Vec::new();
        for p in &self.phones {
            transcripts.push((p.label.clone(), render_with_marks(&mut norm, p)));
        }
        let rpc = self
            .rpc_raw
            .iter()
            .map(|(label, args, out, mask)| {
                (label.clone(), normalize_rpc(&mut norm, args, out, *mask))
            })
            .collect();
        let notes = self.notes.iter().map(|n| norm.scrub(n)).collect();

        let mut raw = String::new();
        for p in &self.phones {
            raw.push_str(&p.ua.transcript_raw());
        }
        let log = self.k.log();
        let bad: Vec<&str> = log
            .lines()
            .filter(|l| {
                l.contains(" ERROR:") || l.contains(" CRITICAL:") || l.contains(" ALERT:")
                    || l.contains(" WARNING:")
            })
            .collect();
        let _ = writeln!(
            raw,
            "===== Kamailio log: {} ERROR/WARNING lines =====",
            bad.len()
        );
        for l in bad {
            let _ = writeln!(raw, "{l}");
        }

        let died = self.died;
        let mut k = self.k;
        k.stop();
        ScenarioResult {
            name: name.into(),
            module,
            description: description.into(),
            notes,
            rpc,
            transcripts,
            kamailio_died: died,
            raw,
        }
    }
}

/// One UA's normalized transcript with the markers of the steps in which
/// it sent or received something (retransmissions left out).
fn render_with_marks(norm: &mut Normalizer, p: &Phone) -> String {
    let entries = p.ua.transcript();
    let mut out = String::new();
    let mut bounds: Vec<(usize, Option<&str>)> = vec![(0, None)];
    for (pos, label) in &p.marks {
        bounds.push((*pos, Some(label.as_str())));
    }
    for (i, (start, label)) in bounds.iter().enumerate() {
        let end = bounds.get(i + 1).map(|b| b.0).unwrap_or(entries.len());
        let slice = &entries[(*start).min(entries.len())..end.min(entries.len())];
        if !slice.iter().any(|e| !e.retransmission) {
            continue;
        }
        if let Some(l) = label {
            let _ = writeln!(out, "-- {l} --");
        }
        out.push_str(&norm.normalize_transcript(&p.label, slice));
    }
    out
}

/// Normalize an RPC answer; `sca.all_appearances` and
/// `sca.all_subscriptions` get field-wise treatment (see module docs).
fn normalize_rpc(norm: &mut Normalizer, args: &[String], out: &str, mask_to_tag: bool) -> String {
    let cmd = args.first().map(|s| s.as_str()).unwrap_or("");
    let mut lines: Vec<String> = Vec::new();
    for line in out.lines() {
        let l = match cmd {
            // "<aor> <index> <state> <mtime> <owner> <callee> <call-id>
            //  <from-tag> <to-tag>"
            "sca.all_appearances" | "sca.show_appearance" => {
                let mut f: Vec<&str> = line.split(' ').collect();
                // a fault or other text is not an appearance row
                let is_row = f.get(1).is_some_and(|i| i.parse::<u32>().is_ok());
                while is_row && (5..9).contains(&f.len()) {
                    // empty trailing columns (callee, call-id, tags of a
                    // seized appearance) were trimmed with the line's end
                    f.push("");
                }
                if is_row && f.len() == 9 {
                    let tag = |norm: &mut Normalizer, t: &str| match norm.known_tag(t) {
                        Some(l) => l.to_string(),
                        None => norm.scrub(t),
                    };
                    let ft = tag(norm, f[7]);
                    let tt = if mask_to_tag {
                        "<masked>".to_string()
                    } else {
                        tag(norm, f[8])
                    };
                    format!(
                        "{} index={} state={} mtime=<mtime> owner={} callee={} call-id={} from-tag={ft} to-tag={tt}",
                        norm.scrub(f[0]),
                        f[1],
                        f[2],
                        norm.scrub(f[4]),
                        norm.scrub(f[5]),
                        norm.scrub(f[6]),
                    )
                } else {
                    norm.scrub(line)
                }
            }
            // "<user> <contact host:port> <event> <seconds left> <state>"
            "sca.all_subscriptions" => {
                let f: Vec<&str> = line.splitn(5, ' ').collect();
                if f.len() == 5 {
                    format!(
                        "{} {} {} left={} {}",
                        f[0],
                        norm.scrub(f[1]),
                        f[2],
                        f[3],
                        f[4]
                    )
                } else {
                    norm.scrub(line)
                }
            }
            _ => norm.scrub(line),
        };
        lines.push(l);
    }
    if cmd == "sca.all_subscriptions" {
        // hash-table order: sort for a stable rendering
        lines.sort();
    }
    lines.join("\n")
}

// ------------------------------------------------------------ comparison

/// Split a line into its text with the numbers after `expires=` / `left=`
/// replaced by `#`, and those numbers.
fn tolerant_parts(line: &str) -> (String, Vec<i64>) {
    let mut text = String::new();
    let mut nums = Vec::new();
    let mut rest = line;
    loop {
        let next = ["expires=", "left="]
            .iter()
            .filter_map(|k| rest.find(k).map(|i| (i, k.len())))
            .min();
        let Some((i, klen)) = next else { break };
        text.push_str(&rest[..i + klen]);
        rest = &rest[i + klen..];
        let neg = rest.starts_with('-');
        let digits_start = usize::from(neg);
        let digits = rest[digits_start..]
            .bytes()
            .take_while(|b| b.is_ascii_digit())
            .count();
        if digits == 0 {
            continue;
        }
        let n: i64 = rest[..digits_start + digits].parse().unwrap_or(0);
        nums.push(n);
        text.push('#');
        rest = &rest[digits_start + digits..];
    }
    text.push_str(rest);
    (text, nums)
}

/// Two lines are equivalent when they are equal but for numbers after
/// `expires=` / `left=` that differ by at most [`expires_tolerance`].
pub fn lines_equivalent(a: &str, b: &str) -> bool {
    lines_equivalent_within(a, b, expires_tolerance())
}

/// [`lines_equivalent`] with a tolerance of `tol` seconds.
pub fn lines_equivalent_within(a: &str, b: &str, tol: i64) -> bool {
    if a == b {
        return true;
    }
    let (ta, na) = tolerant_parts(a);
    let (tb, nb) = tolerant_parts(b);
    ta == tb
        && na.len() == nb.len()
        && na
            .iter()
            .zip(&nb)
            .all(|(x, y)| (x - y).abs() <= tol)
}

/// `Ok(())` if `expected` and `actual` are equivalent line by line (see
/// [`lines_equivalent`]); otherwise a line diff (`-` expected, `+` actual).
pub fn equivalent(expected: &str, actual: &str) -> Result<(), String> {
    let e: Vec<&str> = expected.lines().collect();
    let a: Vec<&str> = actual.lines().collect();
    if e.len() == a.len() && e.iter().zip(&a).all(|(x, y)| lines_equivalent(x, y)) {
        return Ok(());
    }
    Err(line_diff(&e, &a))
}

/// LCS line diff with 3 lines of context.
fn line_diff(e: &[&str], a: &[&str]) -> String {
    let (n, m) = (e.len(), a.len());
    let mut lcs = vec![vec![0u32; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if lines_equivalent(e[i], a[j]) {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    // (kind, text): ' ' same, '-' only expected, '+' only actual
    let mut ops: Vec<(char, &str)> = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        if i < n && j < m && lines_equivalent(e[i], a[j]) {
            ops.push((' ', e[i]));
            i += 1;
            j += 1;
        } else if j < m && (i == n || lcs[i][j + 1] >= lcs[i + 1][j]) {
            ops.push(('+', a[j]));
            j += 1;
        } else {
            ops.push(('-', e[i]));
            i += 1;
        }
    }
    let changed: Vec<usize> = (0..ops.len()).filter(|&k| ops[k].0 != ' ').collect();
    let mut out = String::new();
    let mut last_shown: Option<usize> = None;
    for (k, (kind, text)) in ops.iter().enumerate() {
        let near = changed
            .iter()
            .any(|&c| (c as isize - k as isize).abs() <= 3);
        if !near {
            continue;
        }
        if let Some(l) = last_shown {
            if k > l + 1 {
                out.push_str("  ...\n");
            }
        }
        let _ = writeln!(out, "{kind} {text}");
        last_shown = Some(k);
    }
    out
}

// ------------------------------------------------------------ the scenarios

/// A scenario: runs against one module and returns its transcript.
pub type Scenario = fn(ScaModule) -> ScenarioResult;

/// Every scenario, by name.
pub const ALL: &[(&str, Scenario)] = &[
    ("subscribe_unsubscribe_expiry", subscribe_unsubscribe_expiry),
    ("line_seize_contention", line_seize_contention),
    ("full_call", full_call),
    ("rejected_call", rejected_call),
    ("cancelled_call", cancelled_call),
    ("hold_and_retrieve", hold_and_retrieve),
    ("held_private", held_private),
    ("malformed_call_info", malformed_call_info),
    ("race_seize", race_seize),
    ("stale_seize_purge", stale_seize_purge),
];

/// `Some("signal N")` if the log says a Kamailio child process was killed
/// by a signal (main then shuts everything down).
fn child_crash(k: &Kamailio) -> Option<String> {
    let log = k.log();
    let i = log.find("exited by a signal ")?;
    let rest = &log[i + "exited by a signal ".len()..];
    let n: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    Some(format!("signal {n}"))
}

/// How Kamailio died, in words stable between runs.
fn died_how(k: &Kamailio) -> String {
    match child_crash(k) {
        Some(sig) => format!("a child process exited by {sig}"),
        None => "the main process exited".to_string(),
    }
}

/// Run `body` in a fresh [`Ctx`]; an `Err` from it (or a death of
/// Kamailio) is noted and ends the scenario, which is then rendered.
fn run(
    name: &str,
    module: ScaModule,
    description: &str,
    opts: KamailioOpts,
    phones: &[(&str, &str)],
    body: impl FnOnce(&mut Ctx) -> Result<(), String>,
) -> ScenarioResult {
    let mut ctx = Ctx::start(opts, phones);
    if let Err(e) = body(&mut ctx) {
        if e.contains("KAMAILIO DIED") {
            let how = died_how(&ctx.k);
            ctx.notes.push(format!("{e}: {how}"));
        } else if ctx.settle_death() {
            let label = ctx.step_label.clone();
            let how = died_how(&ctx.k);
            ctx.notes.push(format!("KAMAILIO DIED in {label}: {how}"));
        } else {
            let label = ctx.step_label.clone();
            ctx.notes.push(format!("ABORTED in {label}: {e}"));
        }
    }
    ctx.finish(name, module, description)
}

fn opts_with(module: &ScaModule, params: &[(&str, &str)]) -> KamailioOpts {
    let mp: String = params
        .iter()
        .map(|(n, v)| sca_modparam(module, n, v))
        .collect();
    sca_opts(module.clone()).var("SCA_MODPARAMS", &mp)
}

const PHONES: &[(&str, &str)] = &[("A1", "100"), ("A2", "100")];
const PHONES_AND_B: &[(&str, &str)] = &[("A1", "100"), ("A2", "100"), ("B", "200")];

/// Expect a status; otherwise a note (the scenario goes on).
fn expect_status(ctx: &mut Ctx, r: &SipMessage, status: u16) {
    if r.status() != Some(status) {
        let l = r.start_line.clone();
        ctx.note(&format!("expected {status}, got {l:?}"));
    }
}

/// Scenario 1: Call-info subscriptions: A1 and A2 subscribe (600 s asked,
/// call_info_max_expires=30 caps it), A2 refreshes in-dialog, A1
/// unsubscribes (its terminated subscription is purged silently by the
/// 1 s purge timer), A2 refreshes with Expires: 2 and the purge timer
/// expires it with a `terminated;reason=timeout` NOTIFY.
pub fn subscribe_unsubscribe_expiry(module: ScaModule) -> ScenarioResult {
    let opts = opts_with(
        &module,
        &[("purge_expired_interval", "1"), ("call_info_max_expires", "30")],
    );
    run(
        "subscribe_unsubscribe_expiry",
        module,
        "call-info SUBSCRIBE/refresh/unSUBSCRIBE and expiry (purge_expired_interval=1, call_info_max_expires=30)",
        opts,
        PHONES,
        |ctx| {
            ctx.step("A1 subscribes call-info (Expires 600, capped to 30)")?;
            let mut d1 = ctx.ua("A1").dialog(AOR);
            let r = ctx.subscribe("A1", &mut d1, &Subscribe::new("call-info", 600))?;
            expect_status(ctx, &r, 202);
            ctx.notifies(&[("A1", 1)]);
            ctx.rpc(&["sca.subscription_count", "call-info"]);

            ctx.step("A2 subscribes call-info (Expires 600)")?;
            let mut d2 = ctx.ua("A2").dialog(AOR);
            let r = ctx.subscribe("A2", &mut d2, &Subscribe::new("call-info", 600))?;
            expect_status(ctx, &r, 202);
            ctx.notifies(&[("A2", 1)]);
            ctx.rpc(&["sca.subscription_count", "call-info"]);
            ctx.rpc(&["sca.all_subscriptions"]);

            ctx.step("A2 refreshes in-dialog (Expires 600)")?;
            let r = ctx.subscribe("A2", &mut d2, &Subscribe::new("call-info", 600))?;
            expect_status(ctx, &r, 202);
            ctx.notifies(&[("A2", 1)]);

            ctx.step("A1 unsubscribes in-dialog (Expires 0)")?;
            let r = ctx.subscribe("A1", &mut d1, &Subscribe::new("call-info", 0))?;
            expect_status(ctx, &r, 202);
            ctx.notifies(&[("A1", 1)]);

            ctx.step("the purge timer removes A1's terminated subscription")?;
            // wait for the purge itself (not recorded: the polls would differ
            // between runs), then record the state it left
            let deadline = Instant::now() + Duration::from_secs(6);
            let listed = |k: &Kamailio| k.kamcmd(&["sca.all_subscriptions"]).map(|o| o.lines().count()).unwrap_or(0);
            while listed(&ctx.k) != 1 {
                if Instant::now() >= deadline {
                    ctx.note("the purge did not remove A1's terminated subscription within 6 s");
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            ctx.quiet();
            ctx.rpc(&["sca.subscription_count", "call-info"]);
            ctx.rpc(&["sca.all_subscriptions"]);

            ctx.step("A2 refreshes in-dialog with Expires 2")?;
            let r = ctx.subscribe("A2", &mut d2, &Subscribe::new("call-info", 2))?;
            expect_status(ctx, &r, 202);
            ctx.notifies(&[("A2", 1)]);

            ctx.step("A2's subscription expires: purge NOTIFY")?;
            let deadline = Instant::now() + Duration::from_secs(6);
            match ctx.ua("A2").recv_where(
                deadline.saturating_duration_since(Instant::now()),
                "purge NOTIFY",
                |m| m.method() == Some("NOTIFY"),
            ) {
                Ok(n) => {
                    let ss = n.header("Subscription-State").unwrap_or("").to_string();
                    ctx.note(&format!("purge NOTIFY Subscription-State: {ss}"));
                }
                Err(_) => ctx.note("no purge NOTIFY within 6 s"),
            }
            ctx.quiet();
            ctx.rpc(&["sca.subscription_count", "call-info"]);
            Ok(())
        },
    )
}

/// A line stuck in seized: A1 seizes index 1 with a long-lived line-seize
/// (line_seize_max_expires=300) and no call follows; after the C module's
/// `SCA_APPEARANCE_STATE_SEIZED_TTL` (120 s; sca_rs's `seized_ttl`
/// default) the stale-appearance purge (every second here) frees the line
/// and NOTIFYs the call-info subscribers; the line-seize subscription is
/// left to expire on its own. Slow: two minutes of waiting for the purge.
pub fn stale_seize_purge(module: ScaModule) -> ScenarioResult {
    let opts = opts_with(
        &module,
        &[("purge_expired_interval", "1"), ("line_seize_max_expires", "300")],
    );
    run(
        "stale_seize_purge",
        module,
        "a line seized for 120 s without a call is purged with a group NOTIFY (purge_expired_interval=1, line_seize_max_expires=300)",
        opts,
        PHONES,
        |ctx| {
            ctx.step("A1 subscribes call-info")?;
            ctx.subscribe_call_info("A1")?;
            ctx.step("A2 subscribes call-info")?;
            ctx.subscribe_call_info("A2")?;

            ctx.step("A1 seizes appearance-index 1 (line-seize, Expires 300), no call follows")?;
            let (_s1, r) = ctx.seize("A1", "1", 300)?;
            expect_status(ctx, &r, 200);
            ctx.notifies(&[("A1", 2), ("A2", 1)]);
            ctx.rpc(&["sca.all_appearances"]);

            ctx.step("the purge frees the line stuck in seized (after 120 s)")?;
            // wait for the purge's NOTIFY itself, on each phone
            let deadline = Instant::now() + Duration::from_secs(150);
            for label in ["A1", "A2"] {
                let left = deadline.saturating_duration_since(Instant::now());
                if ctx.ua(label).recv_where(left, "purge NOTIFY", |m| m.method() == Some("NOTIFY")).is_err() {
                    ctx.note(&format!("{label} got no NOTIFY from the stale-appearance purge within 150 s"));
                }
            }
            ctx.quiet();
            ctx.rpc(&["sca.all_appearances"]);
            ctx.rpc(&["sca.subscription_count", "line-seize"]);
            Ok(())
        },
    )
}

/// Scenario 2: Line-seize contention: A1 seizes index 1; A2 asks for index 1
/// (480 + Retry-After), sends a Call-Info without appearance-index, then
/// appearance-index=0 ("any"); both release with line-seize Expires: 0.
pub fn line_seize_contention(module: ScaModule) -> ScenarioResult {
    let opts = opts_with(&module, &[]);
    run(
        "line_seize_contention",
        module,
        "line-seize: A1 seizes 1, A2 contends for 1, tries no index and index 0, both release",
        opts,
        PHONES,
        |ctx| {
            ctx.step("A1 subscribes call-info")?;
            ctx.subscribe_call_info("A1")?;
            ctx.step("A2 subscribes call-info")?;
            ctx.subscribe_call_info("A2")?;

            ctx.step("A1 seizes appearance-index 1 (line-seize, Expires 15)")?;
            let (mut s1, r) = ctx.seize("A1", "1", 15)?;
            expect_status(ctx, &r, 200);
            ctx.notifies(&[("A1", 2), ("A2", 1)]);
            ctx.rpc(&["sca.all_appearances"]);
            ctx.rpc(&["sca.subscription_count", "line-seize"]);
            ctx.rpc(&["sca.show_appearance", AOR]);

            ctx.step("A2 tries to seize appearance-index 1")?;
            let (_, r) = ctx.seize("A2", "1", 15)?;
            expect_status(ctx, &r, 480);
            ctx.quiet();

            ctx.step("A2 line-seize with Call-Info <sip:127.0.0.1> (no appearance-index)")?;
            let mut d = ctx.ua("A2").dialog(AOR);
            let r = ctx.subscribe(
                "A2",
                &mut d,
                &Subscribe::new("line-seize", 15).call_info("<sip:127.0.0.1>"),
            )?;
            expect_status(ctx, &r, 400);
            ctx.quiet();

            ctx.step("A2 seizes with appearance-index=0")?;
            let (mut s2, r) = ctx.seize("A2", "0", 15)?;
            expect_status(ctx, &r, 200);
            ctx.notifies(&[("A2", 2), ("A1", 1)]);
            ctx.rpc(&["sca.all_appearances"]);

            ctx.step("A1 releases index 1 (in-dialog line-seize, Expires 0)")?;
            let r = ctx.subscribe(
                "A1",
                &mut s1,
                &Subscribe::new("line-seize", 0).call_info(&call_info("1")),
            )?;
            expect_status(ctx, &r, 200);
            ctx.notifies(&[("A1", 2), ("A2", 1)]);

            ctx.step("A2 releases index 2 (in-dialog line-seize, Expires 0)")?;
            let r = ctx.subscribe(
                "A2",
                &mut s2,
                &Subscribe::new("line-seize", 0).call_info(&call_info("2")),
            )?;
            expect_status(ctx, &r, 200);
            ctx.notifies(&[("A2", 2), ("A1", 1)]);
            ctx.rpc(&["sca.all_appearances"]);
            ctx.rpc(&["sca.subscription_count", "line-seize"]);
            Ok(())
        },
    )
}

/// A call from A1 to B under way.
struct Call {
    /// A1's (or A2's) dialog with B.
    dlg: Dialog,
    /// The INVITE as the caller sent it.
    invite: SipMessage,
    /// The INVITE as B received it.
    b_invite: SipMessage,
}

/// Both phones subscribe call-info, A1 seizes index 1, then INVITEs B with
/// Call-Info appearance-index=1; B has the INVITE when this returns.
fn seize_and_invite(ctx: &mut Ctx) -> Result<Call, String> {
    ctx.step("A1 subscribes call-info")?;
    ctx.subscribe_call_info("A1")?;
    ctx.step("A2 subscribes call-info")?;
    ctx.subscribe_call_info("A2")?;

    ctx.step("A1 seizes appearance-index 1 (line-seize, Expires 15)")?;
    let (_, r) = ctx.seize("A1", "1", 15)?;
    expect_status(ctx, &r, 200);
    ctx.notifies(&[("A1", 2), ("A2", 1)]);

    ctx.step("A1 INVITEs B (Call-Info appearance-index=1, SDP sendrecv)")?;
    let b_contact = ctx.ua("B").contact_uri();
    let mut dlg = ctx.ua("A1").dialog(CALLEE_AOR);
    dlg.remote_target = b_contact;
    let req = ctx
        .ua("A1")
        .request(&mut dlg, "INVITE")
        .header("Call-Info", &call_info("1"))
        .body("application/sdp", &sdp("A1", 1, "sendrecv"));
    let invite = ctx.send("A1", &req)?;
    let b_invite = ctx.request("B", "INVITE")?;
    ctx.response("A1", &invite)?; // 100 Trying from tm
    ctx.notifies(&[("A1", 1), ("A2", 1)]);
    Ok(Call {
        dlg,
        invite,
        b_invite,
    })
}

/// B rings then answers; A1 ACKs. The call is active when this returns.
fn ring_answer_ack(ctx: &mut Ctx, call: &mut Call) -> Result<(), String> {
    ctx.step("B rings: 180 Ringing")?;
    let bi = call.b_invite.clone();
    ctx.b_reply(&bi, 180, "Ringing", None)?;
    let r = ctx.response("A1", &call.invite)?;
    expect_status(ctx, &r, 180);
    call.dlg.update_from_response(&r);
    ctx.notifies(&[("A1", 2), ("A2", 1)]);
    ctx.rpc(&["sca.all_appearances"]);
    ctx.rpc(&["sca.subscription_count", "line-seize"]);

    ctx.step("B answers: 200 OK with SDP")?;
    ctx.b_reply(&bi, 200, "OK", Some(sdp("B", 1, "sendrecv")))?;
    let r = ctx.final_response("A1", &call.invite)?;
    expect_status(ctx, &r, 200);
    call.dlg.update_from_response(&r);
    ctx.notifies(&[("A1", 1), ("A2", 1)]);

    ctx.step("A1 ACKs the 200")?;
    let cseq = call.invite.cseq().map(|c| c.0).unwrap_or(1);
    let ack = ctx.ua("A1").request_with_cseq(&call.dlg, "ACK", cseq);
    ctx.send("A1", &ack)?;
    ctx.request("B", "ACK")?;
    ctx.quiet();
    ctx.rpc(&["sca.all_appearances"]);
    Ok(())
}

/// `label` hangs up `dlg` with BYE; B answers 200.
fn hang_up(ctx: &mut Ctx, label: &str, dlg: &mut Dialog, notify: &[(&str, usize)]) -> Result<(), String> {
    let bye = ctx.ua(label).request(dlg, "BYE");
    let bye = ctx.send(label, &bye)?;
    let b_bye = ctx.request("B", "BYE")?;
    ctx.reply("B", &b_bye, 200, "OK")?;
    let r = ctx.final_response(label, &bye)?;
    expect_status(ctx, &r, 200);
    ctx.notifies(notify);
    Ok(())
}

/// Scenario 3: A full call: seize, INVITE, 180, 200, ACK, BYE.
pub fn full_call(module: ScaModule) -> ScenarioResult {
    let opts = opts_with(&module, &[]);
    run(
        "full_call",
        module,
        "A1 seizes 1, calls B (180, 200, ACK), hangs up",
        opts,
        PHONES_AND_B,
        |ctx| {
            let mut call = seize_and_invite(ctx)?;
            ring_answer_ack(ctx, &mut call)?;
            ctx.step("A1 hangs up (BYE)")?;
            hang_up(ctx, "A1", &mut call.dlg, &[("A1", 1), ("A2", 1)])?;
            ctx.rpc(&["sca.all_appearances"]);
            ctx.rpc(&["sca.subscription_count", "line-seize"]);
            Ok(())
        },
    )
}

/// Scenario 4: B rejects the call with 486 Busy Here.
pub fn rejected_call(module: ScaModule) -> ScenarioResult {
    let opts = opts_with(&module, &[]);
    run(
        "rejected_call",
        module,
        "A1 seizes 1, calls B, B answers 486 Busy Here",
        opts,
        PHONES_AND_B,
        |ctx| {
            let call = seize_and_invite(ctx)?;
            ctx.step("B rejects: 486 Busy Here")?;
            let bi = call.b_invite.clone();
            ctx.b_reply(&bi, 486, "Busy Here", None)?;
            let r = ctx.final_response("A1", &call.invite)?;
            expect_status(ctx, &r, 486);
            ctx.request("B", "ACK")?; // tm's hop-by-hop ACK
            ctx.notifies(&[("A1", 3), ("A2", 2)]);

            ctx.step("A1 ACKs the 486")?;
            let ack = ctx.ua("A1").ack_for_non2xx(&call.invite, &r)?;
            ctx.send("A1", &ack)?;
            ctx.quiet();
            ctx.rpc(&["sca.all_appearances"]);
            ctx.rpc(&["sca.subscription_count", "line-seize"]);
            Ok(())
        },
    )
}

/// Scenario 5: A1 cancels the ringing call.
pub fn cancelled_call(module: ScaModule) -> ScenarioResult {
    let opts = opts_with(&module, &[]);
    run(
        "cancelled_call",
        module,
        "A1 seizes 1, calls B, B rings, A1 CANCELs, B answers 487",
        opts,
        PHONES_AND_B,
        |ctx| {
            let mut call = seize_and_invite(ctx)?;
            ctx.step("B rings: 180 Ringing")?;
            let bi = call.b_invite.clone();
            ctx.b_reply(&bi, 180, "Ringing", None)?;
            let r = ctx.response("A1", &call.invite)?;
            expect_status(ctx, &r, 180);
            call.dlg.update_from_response(&r);
            ctx.notifies(&[("A1", 2), ("A2", 1)]);

            ctx.step("A1 CANCELs")?;
            let cancel = ctx.ua("A1").cancel_for(&call.invite)?;
            let cancel = ctx.send("A1", &cancel)?;
            let r = ctx.final_response("A1", &cancel)?;
            expect_status(ctx, &r, 200);
            let b_cancel = ctx.request("B", "CANCEL")?;
            ctx.notifies(&[("A1", 1), ("A2", 1)]);

            ctx.step("B answers the CANCEL with 200 and the INVITE with 487")?;
            ctx.b_reply(&b_cancel, 200, "OK", None)?;
            ctx.b_reply(&bi, 487, "Request Terminated", None)?;
            let r = ctx.final_response("A1", &call.invite)?;
            expect_status(ctx, &r, 487);
            ctx.request("B", "ACK")?; // tm's hop-by-hop ACK
            let ack = ctx.ua("A1").ack_for_non2xx(&call.invite, &r)?;
            ctx.send("A1", &ack)?;
            ctx.quiet();
            ctx.rpc(&["sca.all_appearances"]);
            ctx.rpc(&["sca.subscription_count", "line-seize"]);
            Ok(())
        },
    )
}

/// A1 re-INVITEs B with a=sendonly and `ci` as Call-Info; B answers 200
/// with a=recvonly; A1 ACKs.
fn hold(ctx: &mut Ctx, call: &mut Call, ci: &str, notify: &[(&str, usize)]) -> Result<(), String> {
    let req = ctx
        .ua("A1")
        .request(&mut call.dlg, "INVITE")
        .header("Call-Info", ci)
        .body("application/sdp", &sdp("A1", 2, "sendonly"));
    let reinvite = ctx.send("A1", &req)?;
    let b_re = ctx.request("B", "INVITE")?;
    ctx.response("A1", &reinvite)?; // 100 Trying from tm
    ctx.notifies(notify);

    ctx.step("B answers the re-INVITE: 200 OK a=recvonly")?;
    ctx.b_reply(&b_re, 200, "OK", Some(sdp("B", 2, "recvonly")))?;
    let r = ctx.final_response("A1", &reinvite)?;
    expect_status(ctx, &r, 200);
    ctx.notifies(notify);

    ctx.step("A1 ACKs")?;
    let cseq = reinvite.cseq().map(|c| c.0).unwrap_or(1);
    let ack = ctx.ua("A1").request_with_cseq(&call.dlg, "ACK", cseq);
    ctx.send("A1", &ack)?;
    ctx.request("B", "ACK")?;
    ctx.quiet();
    ctx.rpc(&["sca.all_appearances"]);
    Ok(())
}

/// A2 "retrieves" appearance 1: INVITE to the shared AoR (From = To =
/// Request-URI = sip:100@127.0.0.1) with Call-Info appearance-index=1 and
/// SDP. Returns A2's dialog and the INVITE sent.
fn retrieve_invite(ctx: &mut Ctx) -> Result<(Dialog, SipMessage), String> {
    let mut dlg = ctx.ua("A2").dialog(AOR);
    let req = ctx
        .ua("A2")
        .request(&mut dlg, "INVITE")
        .header("Call-Info", &call_info("1"))
        .body("application/sdp", &sdp("A2", 1, "sendrecv"));
    let inv = ctx.send("A2", &req)?;
    Ok((dlg, inv))
}

/// Scenario 6: Hold and retrieve: A1 holds (a=sendonly); A2 retrieves with an
/// INVITE to the shared AoR carrying Call-Info appearance-index=1. The
/// proxy (SCA_CFG sends INVITEs with Call-Info for the AoR to route(SCA),
/// standing in for doc/sca.cfg's lookup("location")) lets the module
/// rewrite the Request-URI to B's contact and add Replaces. B accepts and
/// BYEs the replaced dialog with A1, as RFC 3891 says; A2 hangs up.
pub fn hold_and_retrieve(module: ScaModule) -> ScenarioResult {
    let opts = opts_with(&module, &[]);
    run(
        "hold_and_retrieve",
        module,
        "A1 calls B, holds (a=sendonly), A2 retrieves via INVITE to the AoR (Replaces), A2 hangs up",
        opts,
        PHONES_AND_B,
        |ctx| {
            let mut call = seize_and_invite(ctx)?;
            ring_answer_ack(ctx, &mut call)?;

            ctx.step("A1 holds: re-INVITE a=sendonly, Call-Info appearance-index=1")?;
            hold(ctx, &mut call, &call_info("1"), &[("A1", 1), ("A2", 1)])?;

            ctx.step("A2 retrieves: INVITE sip:100@127.0.0.1, Call-Info appearance-index=1")?;
            let (mut d2, inv) = retrieve_invite(ctx)?;
            let b_inv = ctx.request("B", "INVITE")?;
            let replaces = b_inv.header("Replaces").unwrap_or("(none)").to_string();
            let ruri = b_inv.request_uri().unwrap_or("").to_string();
            ctx.note(&format!("B got the retrieve INVITE for {ruri} with Replaces: {replaces}"));
            ctx.response("A2", &inv)?; // 100 Trying
            ctx.notifies(&[("A1", 1), ("A2", 1)]);

            ctx.step("B accepts the Replaces INVITE: 200 OK")?;
            ctx.b_reply(&b_inv, 200, "OK", Some(sdp("B", 3, "sendrecv")))?;
            let r = ctx.final_response("A2", &inv)?;
            expect_status(ctx, &r, 200);
            d2.update_from_response(&r);
            ctx.notifies(&[("A1", 1), ("A2", 1)]);

            ctx.step("A2 ACKs")?;
            let cseq = inv.cseq().map(|c| c.0).unwrap_or(1);
            let ack = ctx.ua("A2").request_with_cseq(&d2, "ACK", cseq);
            ctx.send("A2", &ack)?;
            ctx.request("B", "ACK")?;
            // C: the ACK callback NOTIFYs, as To (sip:100) is an SCA AoR
            ctx.notifies(&[("A1", 1), ("A2", 1)]);
            ctx.rpc(&["sca.all_appearances"]);

            ctx.step("B BYEs the replaced dialog with A1")?;
            let b_tag = ctx.ua("B").uas_tag(call.b_invite.call_id().unwrap_or(""));
            let mut old = Dialog::from_request_uas(&call.b_invite, &b_tag)?;
            old.local_cseq = 1;
            let bye = ctx.ua("B").request(&mut old, "BYE");
            let bye = ctx.send("B", &bye)?;
            let a1_bye = ctx.request("A1", "BYE")?;
            ctx.reply("A1", &a1_bye, 200, "OK")?;
            let r = ctx.final_response("B", &bye)?;
            expect_status(ctx, &r, 200);
            ctx.quiet();
            ctx.rpc(&["sca.all_appearances"]);

            ctx.step("A2 hangs up (BYE)")?;
            hang_up(ctx, "A2", &mut d2, &[("A1", 1), ("A2", 1)])?;
            ctx.rpc(&["sca.all_appearances"]);
            Ok(())
        },
    )
}

/// Scenario 7: Private hold: A1 holds with Call-Info appearance-state=held-private;
/// A2's retrieve attempt; A1 resumes (a=sendrecv) and hangs up.
pub fn held_private(module: ScaModule) -> ScenarioResult {
    let opts = opts_with(&module, &[]);
    run(
        "held_private",
        module,
        "A1 calls B, holds privately (appearance-state=held-private), A2 tries to retrieve, A1 resumes and hangs up",
        opts,
        PHONES_AND_B,
        |ctx| {
            let mut call = seize_and_invite(ctx)?;
            ring_answer_ack(ctx, &mut call)?;

            ctx.step("A1 holds privately: re-INVITE a=sendonly, Call-Info appearance-state=held-private")?;
            let ci = format!("{};appearance-state=held-private", call_info("1"));
            hold(ctx, &mut call, &ci, &[("A1", 1), ("A2", 1)])?;

            ctx.step("A2 tries to retrieve: INVITE sip:100@127.0.0.1, Call-Info appearance-index=1")?;
            let (_, inv) = retrieve_invite(ctx)?;
            let r = ctx.final_response("A2", &inv)?;
            let st = r.start_line.clone();
            ctx.note(&format!("A2's retrieve attempt got {st:?}"));
            if r.status().unwrap_or(0) >= 300 {
                let ack = ctx.ua("A2").ack_for_non2xx(&inv, &r)?;
                ctx.send("A2", &ack)?;
            }
            ctx.notifies(&[("A1", 1), ("A2", 1)]);
            // C overwrote the appearance's dialog with A2's INVITE, whose
            // to-tag it takes from an uninitialized sca_dialog: mask it
            ctx.rpc_appearances_masking_to_tag();

            ctx.step("A1 resumes: re-INVITE a=sendrecv, Call-Info appearance-index=1")?;
            let req = ctx
                .ua("A1")
                .request(&mut call.dlg, "INVITE")
                .header("Call-Info", &call_info("1"))
                .body("application/sdp", &sdp("A1", 3, "sendrecv"));
            let reinvite = ctx.send("A1", &req)?;
            let b_re = ctx.request("B", "INVITE")?;
            ctx.response("A1", &reinvite)?; // 100 Trying
            ctx.notifies(&[("A1", 1), ("A2", 1)]);

            ctx.step("B answers: 200 OK a=sendrecv; A1 ACKs")?;
            ctx.b_reply(&b_re, 200, "OK", Some(sdp("B", 3, "sendrecv")))?;
            let r = ctx.final_response("A1", &reinvite)?;
            expect_status(ctx, &r, 200);
            ctx.notifies(&[("A1", 1), ("A2", 1)]);
            let cseq = reinvite.cseq().map(|c| c.0).unwrap_or(1);
            let ack = ctx.ua("A1").request_with_cseq(&call.dlg, "ACK", cseq);
            ctx.send("A1", &ack)?;
            ctx.request("B", "ACK")?;
            ctx.quiet();
            ctx.rpc(&["sca.all_appearances"]);

            ctx.step("A1 hangs up (BYE)")?;
            hang_up(ctx, "A1", &mut call.dlg, &[("A1", 1), ("A2", 1)])?;
            ctx.rpc(&["sca.all_appearances"]);
            Ok(())
        },
    )
}

/// Scenario 8: Malformed Call-Info on an INVITE and on line-seize SUBSCRIBEs, and
/// call-info SUBSCRIBEs with a missing / `*` Contact.
pub fn malformed_call_info(module: ScaModule) -> ScenarioResult {
    let opts = opts_with(&module, &[]);
    run(
        "malformed_call_info",
        module,
        "malformed Call-Info on INVITE and line-seize SUBSCRIBE; SUBSCRIBE without / with * Contact",
        opts,
        PHONES_AND_B,
        |ctx| {
            ctx.step("A1 subscribes call-info")?;
            ctx.subscribe_call_info("A1")?;
            ctx.step("A2 subscribes call-info")?;
            ctx.subscribe_call_info("A2")?;

            ctx.step("A1 INVITEs B with Call-Info appearance-index=abc")?;
            let b_contact = ctx.ua("B").contact_uri();
            let mut dlg = ctx.ua("A1").dialog(CALLEE_AOR);
            dlg.remote_target = b_contact;
            let req = ctx
                .ua("A1")
                .request(&mut dlg, "INVITE")
                .header("Call-Info", &call_info("abc"))
                .body("application/sdp", &sdp("A1", 1, "sendrecv"));
            let invite = ctx.send("A1", &req)?;
            let first = ctx.response("A1", &invite)?;
            let st = first.start_line.clone();
            ctx.note(&format!("A1's first reply to the INVITE: {st:?}"));
            if first.status() == Some(100) {
                let b_inv = ctx.request("B", "INVITE")?;
                let ci = b_inv.header_lines("Call-Info").join(" | ");
                ctx.note(&format!("B got the INVITE with Call-Info: {ci:?}"));
                ctx.quiet();

                ctx.step("B answers 486 Busy Here; A1 ACKs")?;
                ctx.b_reply(&b_inv, 486, "Busy Here", None)?;
                let r = ctx.final_response("A1", &invite)?;
                expect_status(ctx, &r, 486);
                ctx.request("B", "ACK")?;
                let ack = ctx.ua("A1").ack_for_non2xx(&invite, &r)?;
                ctx.send("A1", &ack)?;
            } else if first.status().unwrap_or(0) >= 300 {
                let ack = ctx.ua("A1").ack_for_non2xx(&invite, &first)?;
                ctx.send("A1", &ack)?;
            }
            ctx.quiet();
            ctx.rpc(&["sca.all_appearances"]);

            let bad_seizes: &[(&str, Option<&str>)] = &[
                ("Call-Info appearance-index=abc", Some("<sip:127.0.0.1>;appearance-index=abc")),
                ("no Call-Info header", None),
                ("Call-Info without appearance-index", Some("<sip:127.0.0.1>")),
                ("Call-Info without <>", Some("sip:127.0.0.1;appearance-index=1")),
                ("Call-Info appearance-index=1abc", Some("<sip:127.0.0.1>;appearance-index=1abc")),
                ("Call-Info appearance-index=-1", Some("<sip:127.0.0.1>;appearance-index=-1")),
                (
                    "Call-Info appearance-state=bogus",
                    Some("<sip:127.0.0.1>;appearance-index=1;appearance-state=bogus"),
                ),
                (
                    "Call-Info with appearance-uri before appearance-state",
                    Some("<sip:127.0.0.1>;appearance-index=1;appearance-uri=\"<sip:200@127.0.0.1>\""),
                ),
            ];
            for (what, ci) in bad_seizes {
                ctx.step(&format!("A2 line-seize SUBSCRIBE, {what}"))?;
                let mut d = ctx.ua("A2").dialog(AOR);
                let mut sub = Subscribe::new("line-seize", 15);
                if let Some(ci) = ci {
                    sub = sub.call_info(ci);
                }
                let r = ctx.subscribe("A2", &mut d, &sub)?;
                if (200..300).contains(&r.status().unwrap_or(0)) {
                    // not expected; release what was seized so later steps
                    // start from the same state
                    ctx.notifies(&[("A2", 1)]);
                    let st = r.start_line.clone();
                    ctx.note(&format!("{what}: accepted ({st}); releasing"));
                    let idx = ctx
                        .ua("A2")
                        .transcript()
                        .iter()
                        .rev()
                        .find(|e| {
                            e.dir == Direction::Received
                                && e.msg.header("Event") == Some("line-seize")
                                && e.msg.method() == Some("NOTIFY")
                        })
                        .and_then(|e| e.msg.header("Call-Info").map(|v| v.to_string()))
                        .and_then(|v| super::sip::header_param(&v, "appearance-index"))
                        .unwrap_or_else(|| "1".into());
                    let r = ctx.subscribe(
                        "A2",
                        &mut d,
                        &Subscribe::new("line-seize", 0).call_info(&call_info(&idx)),
                    )?;
                    let st = r.start_line.clone();
                    ctx.note(&format!("release got {st:?}"));
                }
                ctx.quiet();
            }
            ctx.rpc(&["sca.all_appearances"]);
            ctx.rpc(&["sca.subscription_count", "line-seize"]);

            ctx.step("A2 call-info SUBSCRIBE with Contact: *")?;
            let mut d = ctx.ua("A2").dialog(AOR);
            let req = ctx
                .ua("A2")
                .subscribe_request(&mut d, &Subscribe::new("call-info", 600))
                .set_header("Contact", "*");
            let sent = ctx.send("A2", &req)?;
            ctx.final_response("A2", &sent)?;
            ctx.quiet();
            ctx.rpc(&["sca.subscription_count", "call-info"]);
            ctx.rpc(&["sca.all_subscriptions"]);

            // last: C 5.6.3 aborts here (assert on an empty hash key)
            ctx.step("A2 call-info SUBSCRIBE without Contact")?;
            let mut d = ctx.ua("A2").dialog(AOR);
            let req = ctx
                .ua("A2")
                .subscribe_request(&mut d, &Subscribe::new("call-info", 600))
                .remove_header("Contact");
            let sent = ctx.send("A2", &req)?;
            ctx.final_response("A2", &sent)?;
            ctx.quiet();
            ctx.rpc(&["sca.subscription_count", "call-info"]);
            Ok(())
        },
    )
}

/// Runs of [`race_seize`].
pub const RACE_RUNS: usize = 10;

/// Scenario 9: Race: two phones send a line-seize SUBSCRIBE for index 1 at the same
/// moment (both sent before either reply is read; Kamailio with 4
/// workers), [`RACE_RUNS`] times with fresh contending UAs `A1` / `A2`
/// that hold no call-info subscription; a third phone `O` of the same AoR
/// holds one (C only seizes for an AoR that has a call-info subscription:
/// the scenario first records what a line-seize gets without one). Exactly
/// one contender must get 200 OK, the other 480 with Retry-After: 1; the
/// winner then releases. The result records that invariant per run, and
/// the transcripts of run 1 with the contenders named by role (`winner` /
/// `loser`), not by who won.
pub fn race_seize(module: ScaModule) -> ScenarioResult {
    let opts = opts_with(&module, &[]).children(4);
    let mut k = Kamailio::start(opts);
    let mut notes = Vec::new();
    let mut ok_runs = 0;
    let mut first: Option<(Ua, Ua)> = None;
    let mut died = false;
    let sub = Subscribe::new("line-seize", 15).call_info(&call_info("1"));

    // before any call-info subscription
    let mut early = Ua::new("E", "100", k.addr()).expect("bind UA socket");
    early.auto_answer_notify = true;
    let mut de = early.dialog(AOR);
    let early_resp = early
        .send_subscribe(&mut de, &sub)
        .and_then(|s| early.expect_final_response(&s, WAIT));
    let st = match &early_resp {
        Ok(m) => m.start_line.clone(),
        Err(_) => "no final response".to_string(),
    };
    notes.push(format!(
        "line-seize for index 1 before any call-info subscription to the AoR: {st}"
    ));
    if let Ok(r) = &early_resp {
        if (200..300).contains(&r.status().unwrap_or(0)) {
            // not what C does: release, so that the runs start from an
            // idle line. The seize's NOTIFY is waited for first, and the
            // release's after: a worker still busy with either (on a
            // loaded machine) would otherwise NOTIFY O in the middle of a
            // run, with whatever state the run had reached.
            if early.expect_request("NOTIFY", WAIT).is_err() {
                notes.push("E got no NOTIFY for its seize".into());
            }
            de.update_from_response(r);
            let rel = early
                .send_subscribe(
                    &mut de,
                    &Subscribe::new("line-seize", 0).call_info(&call_info("1")),
                )
                .and_then(|s| early.expect_final_response(&s, WAIT))
                .map(|m| m.start_line)
                .unwrap_or_else(|_| "no final response".to_string());
            notes.push(format!("E released index 1: {rel}"));
            match early.expect_request("NOTIFY", WAIT) {
                Ok(n) => notes.push(format!(
                    "E's release NOTIFY: Subscription-State {}",
                    n.header("Subscription-State").unwrap_or("")
                )),
                Err(_) => notes.push("E got no NOTIFY for its release".into()),
            }
        }
    }
    let _ = early.expect_silence(Duration::from_millis(300));

    let mut obs = Ua::new("O", "100", k.addr()).expect("bind UA socket");
    obs.auto_answer_notify = true;
    let mut dobs = obs.dialog(AOR);
    let obs_ok = obs
        .send_subscribe(&mut dobs, &Subscribe::new("call-info", 600))
        .and_then(|s| obs.expect_final_response(&s, WAIT))
        .map(|r| r.status() == Some(202))
        .unwrap_or(false)
        && obs.expect_request("NOTIFY", WAIT).is_ok();
    if !obs_ok {
        notes.push("O's call-info subscription failed".into());
    }
    let mut obs_run1_len = obs.transcript().len();

    for run_no in 1..=RACE_RUNS {
        if !k.is_running() || child_crash(&k).is_some() {
            died = true;
            notes.push(format!("KAMAILIO DIED before run {run_no}: {}", died_how(&k)));
            break;
        }
        let mut a1 = Ua::new("A1", "100", k.addr()).expect("bind UA socket");
        let mut a2 = Ua::new("A2", "100", k.addr()).expect("bind UA socket");
        a1.auto_answer_notify = true;
        a2.auto_answer_notify = true;
        let mut d1 = a1.dialog(AOR);
        let mut d2 = a2.dialog(AOR);
        let r1 = a1.subscribe_request(&mut d1, &sub);
        let r2 = a2.subscribe_request(&mut d2, &sub);
        // both requests go out before either reply is read; alternate
        // who sends first
        let (s1, s2) = if run_no % 2 == 1 {
            let s1 = a1.send(&r1);
            (s1, a2.send(&r2))
        } else {
            let s2 = a2.send(&r2);
            (a1.send(&r1), s2)
        };
        let (s1, s2) = match (s1, s2) {
            (Ok(a), Ok(b)) => (a, b),
            (a, b) => {
                notes.push(format!("run {run_no}: send failed: {:?} {:?}", a.err(), b.err()));
                break;
            }
        };
        let f1 = a1.expect_final_response(&s1, WAIT);
        let f2 = a2.expect_final_response(&s2, WAIT);
        let status = |f: &Result<SipMessage, String>| f.as_ref().ok().and_then(|m| m.status());
        let retry = |f: &Result<SipMessage, String>| {
            f.as_ref()
                .ok()
                .and_then(|m| m.header("Retry-After").map(|s| s.to_string()))
        };
        let (st1, st2) = (status(&f1), status(&f2));
        let lose_retry = if st1 == Some(480) { retry(&f1) } else { retry(&f2) };
        let (mut winner, mut loser, mut wdlg, wresp) = match (st1, st2) {
            (Some(200), Some(480)) => (a1, a2, d1, f1),
            (Some(480), Some(200)) => (a2, a1, d2, f2),
            _ => {
                notes.push(format!(
                    "run {run_no}: A1 got {:?}, A2 got {:?} (want one 200, one 480)",
                    f1.as_ref().map(|m| m.start_line.clone()),
                    f2.as_ref().map(|m| m.start_line.clone())
                ));
                let _ = obs.expect_silence(Duration::from_millis(300));
                continue;
            }
        };
        if let Ok(r) = &wresp {
            wdlg.update_from_response(r);
        }
        // the winner's line-seize NOTIFY and O's call-info NOTIFY
        let seized = winner
            .expect_request("NOTIFY", WAIT)
            .ok()
            .and_then(|n| n.header("Call-Info").map(|s| s.to_string()));
        let obs_seized = obs
            .expect_request("NOTIFY", WAIT)
            .ok()
            .and_then(|n| n.header("Call-Info").map(|s| s.to_string()));
        // release
        let rel = winner.send_subscribe(
            &mut wdlg,
            &Subscribe::new("line-seize", 0).call_info(&call_info("1")),
        );
        let rel_status = rel
            .and_then(|s| winner.expect_final_response(&s, WAIT))
            .ok()
            .and_then(|m| m.status());
        let released = winner
            .expect_request("NOTIFY", WAIT)
            .ok()
            .and_then(|n| n.header("Subscription-State").map(|s| s.to_string()));
        let obs_idle = obs
            .expect_request("NOTIFY", WAIT)
            .ok()
            .and_then(|n| n.header("Call-Info").map(|s| s.to_string()));
        let loser_quiet = loser.expect_silence(Duration::from_millis(100)).is_ok();
        let winner_quiet = winner.expect_silence(Duration::from_millis(50)).is_ok();
        let obs_quiet = obs.expect_silence(Duration::from_millis(50)).is_ok();
        let want_seized = format!(
            "{};appearance-state=seized,<sip:127.0.0.1>;appearance-index=*;appearance-state=idle",
            call_info("1")
        );
        let want_idle = "<sip:127.0.0.1>;appearance-index=*;appearance-state=idle";
        if lose_retry.as_deref() == Some("1")
            && seized.as_deref() == Some(call_info("1").as_str())
            && obs_seized.as_deref() == Some(want_seized.as_str())
            && rel_status == Some(200)
            && released.as_deref() == Some("terminated")
            && obs_idle.as_deref() == Some(want_idle)
            && loser_quiet
            && winner_quiet
            && obs_quiet
        {
            ok_runs += 1;
        } else {
            notes.push(format!(
                "run {run_no}: loser Retry-After {lose_retry:?}, winner's line-seize NOTIFY Call-Info {seized:?}, O's NOTIFY {obs_seized:?}, release {rel_status:?}, release NOTIFY Subscription-State {released:?}, O's NOTIFY {obs_idle:?}, quiet afterwards (loser, winner, O): {loser_quiet} {winner_quiet} {obs_quiet}"
            ));
        }
        if first.is_none() {
            first = Some((winner, loser));
            obs_run1_len = obs.transcript().len();
        }
    }
    notes.insert(
        1,
        format!(
            "{ok_runs}/{RACE_RUNS} runs: exactly one contender got 200 OK + line-seize NOTIFY ({}), the other 480 with Retry-After: 1 and nothing else; O saw index 1 seized, then idle after the winner's release (200 OK + NOTIFY terminated)",
            call_info("1")
        ),
    );
    if !died && (!k.is_running() || child_crash(&k).is_some()) {
        died = true;
        notes.push(format!("KAMAILIO DIED: {}", died_how(&k)));
    }
    let mut norm = Normalizer::new()
        .label_addr(k.addr(), "proxy")
        .label_addr(early.local, "E")
        .label_addr(obs.local, "O");
    let mut transcripts = vec![(
        "E (before any call-info subscription)".to_string(),
        norm.normalize_transcript("E", early.transcript()),
    )];
    let mut raw = early.transcript_raw();
    if let Some((w, l)) = &first {
        norm = norm.label_addr(w.local, "winner").label_addr(l.local, "loser");
        transcripts.push((
            "winner (run 1)".to_string(),
            norm.normalize_transcript("winner", w.transcript()),
        ));
        transcripts.push((
            "loser (run 1)".to_string(),
            norm.normalize_transcript("loser", l.transcript()),
        ));
        raw.push_str(&w.transcript_raw());
        raw.push_str(&l.transcript_raw());
    }
    let obs_entries = obs.transcript();
    transcripts.push((
        "O (call-info subscriber; up to the end of run 1)".to_string(),
        norm.normalize_transcript("O", &obs_entries[..obs_run1_len.min(obs_entries.len())]),
    ));
    raw.push_str(&obs.transcript_raw());
    k.stop();
    ScenarioResult {
        name: "race_seize".into(),
        module,
        description: format!(
            "A1 and A2 send line-seize for index 1 at the same moment, {RACE_RUNS} runs, children=4"
        ),
        notes,
        rpc: Vec::new(),
        transcripts,
        kamailio_died: died,
        raw,
    }
}
