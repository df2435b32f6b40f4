//! Shared by the keepalive integration tests (tests/keepalive*.rs): a
//! Kamailio config that loads either sca_rs.so or Debian's keepalive.so,
//! a gateway that answers OPTIONS (or stays silent) on demand, a client
//! that asks the script for `ka_is_alive()`, and kamcmd output parsing.
//!
//! Requires `mod common;` in the test crate before `mod keepalive_support;`.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::common::kamailio::{mpath, Kamailio, KamailioOpts, ScaModule};
use crate::common::sip::{Response, SipMessage, Ua};

/// Which implementation of keepalive Kamailio loads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ka {
    /// Our sca_rs.so.
    Rust,
    /// Debian's keepalive.so.
    C,
}

impl Ka {
    /// Module name in `modparam()`.
    pub fn module(self) -> &'static str {
        match self {
            Ka::Rust => "sca_rs",
            Ka::C => "keepalive",
        }
    }

    fn loadmodule(self) -> String {
        match self {
            Ka::Rust => format!("loadmodule \"{}\"", ScaModule::Rust.loadmodule_path().display()),
            Ka::C => format!("loadmodule \"{}/keepalive.so\"", mpath()),
        }
    }
}

/// Kamailio config for keepalive tests. Placeholders beyond the harness's:
/// `{{KA_LOADMODULE}}`, `{{KA_MODPARAMS}}`, `{{FR_TIMER}}`,
/// `{{EXTRA_LOADMODULES}}`, `{{EXTRA_MODPARAMS}}`, `{{EXTRA_ROUTE}}`.
pub const KA_CFG: &str = r#"#!KAMAILIO
debug={{DEBUG}}
log_stderror=yes
fork=yes
children={{CHILDREN}}
exit_timeout=4
disable_tcp=yes
auto_aliases=no
dns=no
rev_dns=no
use_dns_cache=no
listen=udp:127.0.0.1:{{PORT}}
mpath="{{MPATH}}"

loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "pv.so"
loadmodule "xlog.so"
loadmodule "textops.so"
loadmodule "ctl.so"
{{EXTRA_LOADMODULES}}
{{KA_LOADMODULE}}

modparam("ctl", "binrpc", "{{CTL_SOCKET}}")
modparam("tm", "fr_timer", {{FR_TIMER}})
{{EXTRA_MODPARAMS}}
{{KA_MODPARAMS}}

request_route {
	if ($rU == "isalive") {
		$var(r) = ka_is_alive("$hdr(X-Dst)");
		sl_send_reply("200", "alive $var(r)");
		exit;
	}
	if ($rU == "add") {
		$var(r) = ka_add_destination("$hdr(X-Dst)", "$hdr(X-Owner)");
		sl_send_reply("200", "add $var(r)");
		exit;
	}
	if ($rU == "del") {
		$var(r) = ka_del_destination("$hdr(X-Dst)", "$hdr(X-Owner)");
		sl_send_reply("200", "del $var(r)");
		exit;
	}
{{EXTRA_ROUTE}}
	sl_send_reply("404", "Not here");
	exit;
}

event_route[keepalive:dst-up] {
	xlog("L_NOTICE", "KA-EVENT up $ru\n");
}

event_route[keepalive:dst-down] {
	xlog("L_NOTICE", "KA-EVENT down $ru\n");
}
"#;

/// Options for [`KA_CFG`]: `modparams` are (name, value as written in
/// the config, quotes included) for the keepalive implementation.
pub fn ka_opts(ka: Ka, modparams: &[(&str, String)]) -> KamailioOpts {
    let params: String = modparams
        .iter()
        .map(|(n, v)| format!("modparam(\"{}\", \"{n}\", {v})\n", ka.module()))
        .collect();
    // the harness wants an SCA module; the config loads what KA_LOADMODULE says
    KamailioOpts::new(KA_CFG, ScaModule::Rust)
        .with_db(false)
        .var("KA_LOADMODULE", &ka.loadmodule())
        .var("KA_MODPARAMS", &params)
        .var("FR_TIMER", "1000")
        .var("EXTRA_LOADMODULES", "")
        .var("EXTRA_MODPARAMS", "")
        .var("EXTRA_ROUTE", "")
}

/// Poll `f` every 50 ms until it is true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

// ------------------------------------------------------------ gateway

/// A SIP peer on 127.0.0.1 that answers OPTIONS with a configurable code,
/// or not at all, and answers other requests with 200.
pub struct Gateway {
    pub addr: SocketAddr,
    code: Arc<AtomicU32>,
    delay_ms: Arc<AtomicU64>,
    options: Arc<AtomicUsize>,
    last_options: Arc<Mutex<Option<SipMessage>>>,
    requests: Arc<Mutex<Vec<SipMessage>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Gateway {
    /// Answering OPTIONS with `code` (0: silent).
    pub fn new(code: u32) -> Gateway {
        let sock = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0)).expect("bind gateway socket");
        sock.set_read_timeout(Some(Duration::from_millis(50))).expect("set timeout");
        let addr = sock.local_addr().expect("local addr");
        let code = Arc::new(AtomicU32::new(code));
        let delay_ms = Arc::new(AtomicU64::new(0));
        let options = Arc::new(AtomicUsize::new(0));
        let last_options = Arc::new(Mutex::new(None));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (c, d, o, l, r, s) = (
            Arc::clone(&code),
            Arc::clone(&delay_ms),
            Arc::clone(&options),
            Arc::clone(&last_options),
            Arc::clone(&requests),
            Arc::clone(&stop),
        );
        let thread = thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while !s.load(Ordering::SeqCst) {
                let Ok((n, peer)) = sock.recv_from(&mut buf) else { continue };
                let Ok(msg) = SipMessage::parse(&buf[..n]) else { continue };
                if !msg.is_request() || msg.method() == Some("ACK") {
                    continue;
                }
                let status = if msg.method() == Some("OPTIONS") {
                    o.fetch_add(1, Ordering::SeqCst);
                    if let Ok(mut g) = l.lock() {
                        *g = Some(msg.clone());
                    }
                    c.load(Ordering::SeqCst)
                } else {
                    if let Ok(mut g) = r.lock() {
                        g.push(msg.clone());
                    }
                    200
                };
                if status == 0 {
                    continue;
                }
                let delay = d.load(Ordering::SeqCst);
                if delay > 0 {
                    thread::sleep(Duration::from_millis(delay));
                }
                let reason = if (200..300).contains(&status) { "OK" } else { "Whatever" };
                let resp = Response::for_request(&msg, status as u16, reason).with_to_tag("gw").render();
                let _ = sock.send_to(&resp, peer);
            }
        });
        Gateway { addr, code, delay_ms, options, last_options, requests, stop, thread: Some(thread) }
    }

    /// `127.0.0.1:<port>`
    pub fn hostport(&self) -> String {
        self.addr.to_string()
    }

    /// Answer OPTIONS with `code`; 0: stay silent.
    pub fn set_code(&self, code: u32) {
        self.code.store(code, Ordering::SeqCst);
    }

    pub fn set_delay(&self, ms: u64) {
        self.delay_ms.store(ms, Ordering::SeqCst);
    }

    pub fn options_seen(&self) -> usize {
        self.options.load(Ordering::SeqCst)
    }

    pub fn last_options(&self) -> Option<SipMessage> {
        self.last_options.lock().ok().and_then(|g| g.clone())
    }

    /// Requests other than OPTIONS received so far.
    pub fn requests(&self) -> Vec<SipMessage> {
        self.requests.lock().map(|g| g.clone()).unwrap_or_default()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ------------------------------------------------------------ client

/// Asks the config's script functions (MESSAGE to `isalive`, `add`, `del`).
pub struct Client {
    ua: Ua,
    port: u16,
}

impl Client {
    pub fn new(k: &Kamailio) -> Client {
        Client { ua: Ua::new("client", "client", k.addr()).expect("client UA"), port: k.port }
    }

    /// Send a MESSAGE to `user`@Kamailio with headers; the final reply's
    /// status and reason.
    pub fn ask(&mut self, user: &str, headers: &[(&str, &str)]) -> (u16, String) {
        let mut d = self.ua.dialog(&format!("sip:{user}@127.0.0.1:{}", self.port));
        let mut req = self.ua.request(&mut d, "MESSAGE");
        for (n, v) in headers {
            req = req.header(n, v);
        }
        let sent = self.ua.send(&req).expect("send MESSAGE");
        let r = self.ua.expect_final_response(&sent, Duration::from_secs(3)).expect("reply to MESSAGE");
        (r.status().unwrap_or(0), r.reason().unwrap_or("").to_string())
    }

    fn number(&mut self, user: &str, word: &str, headers: &[(&str, &str)]) -> i32 {
        let (status, reason) = self.ask(user, headers);
        assert_eq!(status, 200, "{user}: {reason}");
        reason
            .strip_prefix(word)
            .and_then(|r| r.trim().parse().ok())
            .unwrap_or_else(|| panic!("unexpected reply reason {reason:?}"))
    }

    /// `ka_is_alive(dst)` as the script returns it.
    pub fn is_alive(&mut self, dst: &str) -> i32 {
        self.number("isalive", "alive", &[("X-Dst", dst)])
    }

    pub fn add(&mut self, dst: &str, owner: &str) -> i32 {
        self.number("add", "add", &[("X-Dst", dst), ("X-Owner", owner)])
    }

    pub fn del(&mut self, dst: &str, owner: &str) -> i32 {
        self.number("del", "del", &[("X-Dst", dst), ("X-Owner", owner)])
    }
}

// ------------------------------------------------------------ kamcmd output

/// The structs of a kamcmd reply (`{`, `\tname: value` lines, `}`), in
/// order. A value ending in a newline (ctime) keeps it.
pub fn parse_structs(out: &str) -> Vec<BTreeMap<String, String>> {
    let mut res = Vec::new();
    let mut cur: Option<BTreeMap<String, String>> = None;
    let mut last_key: Option<String> = None;
    for line in out.lines() {
        if line == "{" {
            cur = Some(BTreeMap::new());
            last_key = None;
        } else if line == "}" {
            if let Some(c) = cur.take() {
                res.push(c);
            }
        } else if let (Some(c), Some(rest)) = (cur.as_mut(), line.strip_prefix('\t')) {
            if let Some((k, v)) = rest.split_once(": ") {
                c.insert(k.to_string(), v.to_string());
                last_key = Some(k.to_string());
            }
        } else if line.is_empty() {
            // the newline ctime() puts at the end of a time
            if let (Some(c), Some(k)) = (cur.as_mut(), last_key.as_ref()) {
                if let Some(v) = c.get_mut(k) {
                    v.push('\n');
                }
            }
        }
    }
    res
}

/// `keepalive.list`, parsed.
pub fn list(k: &Kamailio) -> Vec<BTreeMap<String, String>> {
    parse_structs(&k.kamcmd(&["keepalive.list"]).unwrap_or_else(|e| panic!("keepalive.list: {e}")))
}

/// The `state` field of the listed destination `uri` (None: not listed).
pub fn listed_state(k: &Kamailio, uri: &str) -> Option<i32> {
    list(k).iter().find(|d| d.get("uri").map(String::as_str) == Some(uri)).and_then(|d| d.get("state")?.parse().ok())
}

/// What `ctime_r(0)` prints here (the tests run with Kamailio's TZ).
pub fn epoch_text() -> String {
    // Kamailio inherits our environment, so local time is ours
    let out = std::process::Command::new("date")
        .args(["-d", "@0", "+%a %b %e %H:%M:%S %Y"])
        .output()
        .expect("run date");
    format!("{}\n", String::from_utf8_lossy(&out.stdout).trim_end())
}

/// How many log lines contain `needle`.
pub fn count_in_log(k: &Kamailio, needle: &str) -> usize {
    k.log().lines().filter(|l| l.contains(needle)).count()
}
