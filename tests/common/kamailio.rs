//! Start a real Kamailio for an integration test and talk to it over its
//! binrpc control socket (`kamcmd`).
//!
//! Every instance gets its own UDP port on 127.0.0.1, its own temporary
//! directory (config, log, sqlite DB, runtime dir, ctl socket), and its own
//! process group, so tests can run in parallel and nothing outlives a test.
//! A cluster test gives several instances one port
//! ([`PortReservation::new_on`], [`KamailioOpts::shared_port`]) on different
//! loopback addresses ([`KamailioOpts::listen_ip`], see `cluster.rs`).
//!
//! Environment knobs:
//! * `SCA_IMPL=c|rust`   module used by [`ScaModule::from_env`] (default `rust`).
//! * `SCA_RS_MODULE=/path/to/sca_rs.so`  override where our module is found.
//! * `KAMAILIO_BIN`, `KAMCMD_BIN`, `KAMAILIO_MPATH`  override the tools/paths.
//! * `KAMAILIO_DEBUG=<n>`  Kamailio log level for the `{{DEBUG}}` placeholder.
//! * `SCA_RS_REPO=/path`  repository root (default: CARGO_MANIFEST_DIR).
//! * `KEEP_TEST_DIRS=1`  keep the temporary directories (their path is printed).

use std::collections::HashSet;
use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Debian's Kamailio module directory.
pub const DEFAULT_MPATH: &str = "/usr/lib/x86_64-linux-gnu/kamailio/modules";
/// Debian's sqlite schema directory.
pub const SQLITE_SCHEMA_DIR: &str = "/usr/share/kamailio/db_sqlite";
/// How long `kamcmd` may take before it is killed.
pub const KAMCMD_TIMEOUT: Duration = Duration::from_secs(5);
/// Lines of log shown when something goes wrong.
pub const LOG_TAIL_LINES: usize = 60;

/// Which SCA implementation Kamailio loads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScaModule {
    /// Debian's C `sca.so`.
    C,
    /// Our `sca_rs` cdylib.
    Rust,
}

impl ScaModule {
    /// `SCA_IMPL=c` selects the C module, anything else (or unset) ours.
    pub fn from_env() -> ScaModule {
        match std::env::var("SCA_IMPL").as_deref() {
            Ok("c") | Ok("C") => ScaModule::C,
            _ => ScaModule::Rust,
        }
    }

    /// Module name as used in `modparam("<name>", ...)`.
    pub fn name(&self) -> &'static str {
        match self {
            ScaModule::C => "sca",
            ScaModule::Rust => "sca_rs",
        }
    }

    /// Path for `loadmodule`.
    ///
    /// For [`ScaModule::Rust`]: `$SCA_RS_MODULE`, else cargo's own output
    /// `<repo>/target/release/libsca_rs.so`, else the `make build` copy
    /// `<repo>/target/release/sca_rs.so` (the latter is named in the error
    /// when neither exists).
    pub fn loadmodule_path(&self) -> PathBuf {
        match self {
            ScaModule::C => Path::new(&mpath()).join("sca.so"),
            ScaModule::Rust => {
                if let Ok(p) = std::env::var("SCA_RS_MODULE") {
                    return PathBuf::from(p);
                }
                // cargo's own output first: `cargo test` rebuilds it, while
                // the sca_rs.so copy is only refreshed by `make build`
                let release = repo_root().join("target").join("release");
                let candidates = [release.join("libsca_rs.so"), release.join("sca_rs.so")];
                candidates
                    .iter()
                    .find(|p| p.exists())
                    .unwrap_or(&candidates[1])
                    .clone()
            }
        }
    }
}

/// The repository root: `$SCA_RS_REPO` if set, else the directory of the
/// Cargo.toml the tests are built from.
pub fn repo_root() -> PathBuf {
    match std::env::var_os("SCA_RS_REPO") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")),
    }
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

pub fn kamailio_bin() -> String {
    env_or("KAMAILIO_BIN", "/usr/sbin/kamailio")
}

fn kamcmd_bin() -> String {
    env_or("KAMCMD_BIN", "/usr/sbin/kamcmd")
}

pub fn mpath() -> String {
    env_or("KAMAILIO_MPATH", DEFAULT_MPATH)
}

/// The root filesystem the Kamailio under test is installed in: `/` for
/// the host's own, `$KAMAILIO_SUITE_ROOT` for another Debian suite's (set
/// by `make test KAMAILIO_SUITE=...`, see scripts/suite.sh; its
/// `KAMAILIO_BIN` runs Kamailio inside that root).
pub fn suite_root() -> PathBuf {
    std::env::var_os("KAMAILIO_SUITE_ROOT").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/"))
}

/// A file of the Kamailio installation under test (an absolute path as
/// Kamailio sees it, e.g. its schema files), as seen from the tests.
pub fn kamailio_file(path: &str) -> PathBuf {
    suite_root().join(path.trim_start_matches('/'))
}

/// The kamailio executable itself (not a wrapper), for inspecting it.
pub fn kamailio_executable() -> PathBuf {
    match std::env::var_os("KAMAILIO_SUITE_ROOT") {
        Some(_) => kamailio_file("/usr/sbin/kamailio"),
        None => PathBuf::from(kamailio_bin()),
    }
}

/// `major.minor` of the Kamailio under test (from `kamailio -v`), e.g.
/// "5.6" or "6.0"; golden files that differ per version carry it.
pub fn kamailio_major_minor() -> String {
    static V: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    V.get_or_init(|| {
        let out = Command::new(kamailio_bin())
            .arg("-v")
            .output()
            .unwrap_or_else(|e| panic!("cannot run {} -v: {e}", kamailio_bin()));
        let text = String::from_utf8_lossy(&out.stdout);
        let v = text
            .lines()
            .find_map(|l| l.strip_prefix("version: kamailio "))
            .and_then(|l| l.split_whitespace().next())
            .unwrap_or_else(|| panic!("no version in `{} -v`:\n{text}", kamailio_bin()));
        v.split('.').take(2).collect::<Vec<_>>().join(".")
    })
    .clone()
}

/// A log line of the C reference module that is its known defect, not a
/// test failure: since 6.0 (#3930, from/to URI AVPs) the C `sca.so` deletes
/// the `from_uri_avp`/`to_uri_avp` AVPs on every SUBSCRIBE and call even
/// when those parameters are unset, and the core logs each delete of the
/// empty name as `search_avp(): 0 ID or NULL NAME AVP!` (docs/compat.md,
/// "Per Kamailio version"). Only for [`ScaModule::C`] on 6.0 and later.
pub fn is_known_c_module_error(module: &ScaModule, line: &str) -> bool {
    *module == ScaModule::C
        && kamailio_at_least(6, 0)
        && line.contains("search_avp(): 0 ID or NULL NAME AVP!")
}

/// Whether the Kamailio under test is `major.minor` or newer.
pub fn kamailio_at_least(major: u32, minor: u32) -> bool {
    let mm = kamailio_major_minor();
    let mut it = mm.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    (it.next().unwrap_or(0), it.next().unwrap_or(0)) >= (major, minor)
}

/// The Kamailio version the unversioned golden files were recorded with.
pub const GOLDEN_BASE_VERSION: &str = "5.6";

/// `tests/golden/<stem>.<ext>`, or `<stem>.<major.minor>.<ext>` when the
/// C module of the Kamailio under test behaves differently from 5.6's and
/// that version has its own reference (docs/compat.md says where).
/// `for_write`: the file an UPDATE_GOLDEN run writes (the versioned one for
/// any version but 5.6).
pub fn golden_file(file_name: &str, for_write: bool) -> PathBuf {
    let dir = repo_root().join("tests").join("golden");
    let mm = kamailio_major_minor();
    let (stem, ext) = file_name.rsplit_once('.').unwrap_or((file_name, "txt"));
    let versioned = dir.join(format!("{stem}.{mm}.{ext}"));
    if mm != GOLDEN_BASE_VERSION && (for_write || versioned.exists()) {
        versioned
    } else {
        dir.join(file_name)
    }
}

/// Options for [`Kamailio::start`].
#[derive(Clone, Debug)]
pub struct KamailioOpts {
    /// Config template; see [`render_template`] for the placeholders.
    pub cfg_template: String,
    pub module: ScaModule,
    /// Create `<dir>/kamailio.sqlite` with the standard + sca schema and set
    /// `{{DB_URL}}` to it.
    pub with_db: bool,
    /// Extra placeholders (`NAME` → value, used as `{{NAME}}`); they may
    /// override the built-in ones except `PORT`, `LISTEN_IP`, `CTL_SOCKET`
    /// and `RUN_DIR`.
    pub vars: Vec<(String, String)>,
    /// SQL run against the fresh DB after the schema (e.g. seed rows).
    pub db_seed_sql: Option<String>,
    /// Worker processes per listener (`-n`).
    pub children: u32,
    /// Deadline for Kamailio to answer on its ctl socket.
    pub ready_timeout: Duration,
    /// Extra command-line arguments for kamailio.
    pub extra_args: Vec<String>,
    /// Address Kamailio listens on (`{{LISTEN_IP}}`, and [`Kamailio::addr`]);
    /// 127.0.0.1 unless a cluster test puts nodes on 127.0.0.2, .3.
    pub listen_ip: Ipv4Addr,
    /// A port reserved by the caller (shared by the nodes of a cluster,
    /// and kept across a restart); `None` reserves a fresh one.
    pub shared_port: Option<Arc<PortReservation>>,
}

impl KamailioOpts {
    pub fn new(cfg_template: &str, module: ScaModule) -> KamailioOpts {
        KamailioOpts {
            cfg_template: cfg_template.to_string(),
            module,
            with_db: true,
            vars: Vec::new(),
            db_seed_sql: None,
            children: 2,
            ready_timeout: Duration::from_secs(10),
            extra_args: Vec::new(),
            listen_ip: Ipv4Addr::LOCALHOST,
            shared_port: None,
        }
    }

    /// Set (or override) a template placeholder.
    pub fn var(mut self, name: &str, value: &str) -> KamailioOpts {
        self.vars.retain(|(k, _)| k != name);
        self.vars.push((name.to_string(), value.to_string()));
        self
    }

    pub fn with_db(mut self, yes: bool) -> KamailioOpts {
        self.with_db = yes;
        self
    }

    pub fn db_seed_sql(mut self, sql: &str) -> KamailioOpts {
        self.db_seed_sql = Some(sql.to_string());
        self
    }

    pub fn children(mut self, n: u32) -> KamailioOpts {
        self.children = n;
        self
    }

    pub fn ready_timeout(mut self, t: Duration) -> KamailioOpts {
        self.ready_timeout = t;
        self
    }

    pub fn arg(mut self, a: &str) -> KamailioOpts {
        self.extra_args.push(a.to_string());
        self
    }

    /// Listen on `ip` (a loopback address) instead of 127.0.0.1.
    pub fn listen_ip(mut self, ip: Ipv4Addr) -> KamailioOpts {
        self.listen_ip = ip;
        self
    }

    /// Use this reserved port instead of reserving one.
    pub fn shared_port(mut self, port: Arc<PortReservation>) -> KamailioOpts {
        self.shared_port = Some(port);
        self
    }
}

/// Replace every `{{NAME}}` in `template` by its value; an unknown or
/// unterminated placeholder is an error (so a typo cannot silently produce a
/// config that Kamailio half-accepts).
pub fn render_template(template: &str, vars: &[(String, String)]) -> Result<String, String> {
    let mut out = String::with_capacity(template.len() + 256);
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find("}}").ok_or_else(|| {
            format!(
                "unterminated placeholder near {:?}",
                trunc(&rest[start..], 40)
            )
        })?;
        let name = &after[..end];
        let value = vars
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
            .ok_or_else(|| format!("no value for placeholder {{{{{name}}}}}"))?;
        out.push_str(value);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

fn trunc(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

// ------------------------------------------------------------------ ports

/// Ports handed out by this process and not yet released.
static PORTS_IN_USE: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
static DIR_COUNTER: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// The message of the panic this test thread is unwinding from, so the
    /// last thing a failed test prints (after every node's log tail) is why
    /// it failed: CI shows only the end of the output.
    static PANIC: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

fn echo_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            // the hook runs on the panicking thread
            let _ = PANIC.try_with(|p| p.replace(Some(format!("{info}"))));
            default(info);
        }));
    });
}

/// The panic message of the current thread, if it is unwinding.
fn current_panic() -> Option<String> {
    PANIC.try_with(|p| p.borrow().clone()).ok().flatten()
}

/// A UDP port on 127.0.0.1 reserved for one Kamailio (or, with
/// [`PortReservation::new_on`], one port on several loopback addresses for
/// the nodes of a cluster).
///
/// Kamailio binds its UDP sockets with SO_REUSEADDR, so two instances given
/// the same port would *both* start and silently share traffic. To make that
/// impossible between tests, a reservation is held in-process (a set) and
/// across processes (an exclusive lock file under the temp dir holding our
/// pid; a lock whose pid is gone is stale and taken over).
#[derive(Debug)]
pub struct PortReservation {
    pub port: u16,
    lock_file: PathBuf,
}

impl PortReservation {
    pub fn new() -> Result<PortReservation, String> {
        PortReservation::new_on(&[Ipv4Addr::LOCALHOST])
    }

    /// A port that is free on every one of `ips` (loopback addresses; the
    /// first one picks the candidate). The lock is per port number, so a
    /// port reserved here is not handed to another test on any address.
    pub fn new_on(ips: &[Ipv4Addr]) -> Result<PortReservation, String> {
        let first = *ips.first().ok_or("no address to reserve a port on")?;
        let lock_dir = std::env::temp_dir().join("sca_rs-test-ports");
        fs::create_dir_all(&lock_dir).map_err(|e| format!("create {}: {e}", lock_dir.display()))?;
        for _ in 0..50 {
            let port = {
                let s = UdpSocket::bind(SocketAddrV4::new(first, 0))
                    .map_err(|e| format!("bind {first}:0: {e}"))?;
                s.local_addr()
                    .map_err(|e| format!("local_addr: {e}"))?
                    .port()
            };
            // free on the others too, and for TCP on all of them (a config
            // with TCP listens on the same port: a CI run once failed on
            // "tcp_init(): bind ... Address already in use"); the sockets
            // close again at once
            if ips[1..].iter().any(|ip| UdpSocket::bind(SocketAddrV4::new(*ip, port)).is_err())
                || ips.iter().any(|ip| std::net::TcpListener::bind(SocketAddrV4::new(*ip, port)).is_err())
            {
                continue;
            }
            {
                let mut guard = PORTS_IN_USE
                    .lock()
                    .map_err(|_| "port set poisoned".to_string())?;
                let set = guard.get_or_insert_with(HashSet::new);
                if set.contains(&port) {
                    continue;
                }
                let lock_file = lock_dir.join(format!("{port}.lock"));
                if !take_lock_file(&lock_file) {
                    continue;
                }
                set.insert(port);
                return Ok(PortReservation { port, lock_file });
            }
        }
        Err("could not reserve a free UDP port after 50 attempts".into())
    }
}

/// Can this host use `ip` as a local address? A bind and a UDP round trip
/// on it (127.0.0.2 and up work on Linux without setup, not everywhere).
pub fn probe_loopback(ip: Ipv4Addr) -> Result<(), String> {
    let a = UdpSocket::bind(SocketAddrV4::new(ip, 0)).map_err(|e| format!("bind {ip}:0: {e}"))?;
    let b = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0))
        .map_err(|e| format!("bind 127.0.0.1:0: {e}"))?;
    let a_addr = a.local_addr().map_err(|e| format!("local_addr: {e}"))?;
    b.send_to(b"probe", a_addr)
        .map_err(|e| format!("send to {a_addr}: {e}"))?;
    a.set_read_timeout(Some(Duration::from_secs(1)))
        .map_err(|e| e.to_string())?;
    let mut buf = [0u8; 16];
    let (n, from) = a
        .recv_from(&mut buf)
        .map_err(|e| format!("receive on {a_addr}: {e}"))?;
    if &buf[..n] != b"probe" {
        return Err(format!("{a_addr} received something else"));
    }
    a.send_to(b"back", from)
        .map_err(|e| format!("send from {a_addr}: {e}"))?;
    b.set_read_timeout(Some(Duration::from_secs(1)))
        .map_err(|e| e.to_string())?;
    let (n, from) = b
        .recv_from(&mut buf)
        .map_err(|e| format!("receive from {a_addr}: {e}"))?;
    if &buf[..n] != b"back" || from != a_addr {
        return Err(format!("reply from {from}, not {a_addr}"));
    }
    Ok(())
}

fn take_lock_file(path: &Path) -> bool {
    let me = std::process::id();
    for _ in 0..2 {
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
        {
            Ok(mut f) => {
                return f.write_all(me.to_string().as_bytes()).is_ok();
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let owner = fs::read_to_string(path)
                    .ok()
                    .and_then(|s| s.trim().parse::<i32>().ok());
                let alive = match owner {
                    // SAFETY: kill with signal 0 only checks for existence.
                    Some(pid) if pid > 0 => unsafe { libc::kill(pid, 0) == 0 },
                    // Being written right now, or garbage: treat as taken.
                    _ => true,
                };
                if alive {
                    return false;
                }
                let _ = fs::remove_file(path);
            }
            Err(_) => return false,
        }
    }
    false
}

impl Drop for PortReservation {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.lock_file);
        if let Ok(mut guard) = PORTS_IN_USE.lock() {
            if let Some(set) = guard.as_mut() {
                set.remove(&self.port);
            }
        }
    }
}

// ------------------------------------------------------------- temp dirs

/// A private temporary directory, removed on drop unless `KEEP_TEST_DIRS`
/// is set.
#[derive(Debug)]
pub struct TestDir {
    pub path: PathBuf,
}

impl TestDir {
    pub fn new(prefix: &str) -> Result<TestDir, String> {
        let n = DIR_COUNTER.fetch_add(1, Ordering::SeqCst);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path =
            std::env::temp_dir().join(format!("{prefix}-{}-{n}-{nanos:x}", std::process::id()));
        fs::create_dir(&path).map_err(|e| format!("create {}: {e}", path.display()))?;
        Ok(TestDir { path })
    }

    pub fn keep() -> bool {
        std::env::var_os("KEEP_TEST_DIRS").is_some_and(|v| !v.is_empty() && v != "0")
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if TestDir::keep() {
            eprintln!("[harness] keeping test dir {}", self.path.display());
        } else {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

// ------------------------------------------------------------ processes

/// Run a command with a deadline; returns its output, or an error when it
/// cannot be started or does not finish in time (it is then killed).
pub fn run_with_timeout(
    cmd: &mut Command,
    timeout: Duration,
) -> Result<std::process::Output, String> {
    let desc = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {desc}: {e}"))?;
    let mut out_pipe = child.stdout.take().ok_or("no stdout pipe")?;
    let mut err_pipe = child.stderr.take().ok_or("no stderr pipe")?;
    let out_t = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out_pipe.read_to_end(&mut v);
        v
    });
    let err_t = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err_pipe.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{desc} did not finish within {timeout:?}"));
            }
            Ok(None) => thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(format!("waiting for {desc}: {e}")),
        }
    };
    let stdout = out_t.join().map_err(|_| "stdout reader panicked")?;
    let stderr = err_t.join().map_err(|_| "stderr reader panicked")?;
    Ok(std::process::Output {
        status,
        stdout,
        stderr,
    })
}

/// Create an sqlite DB at `db` from Debian's standard + sca schemas, then
/// run `seed_sql` if given.
pub fn create_sqlite_db(db: &Path, seed_sql: Option<&str>) -> Result<(), String> {
    let mut sql = String::new();
    for f in ["standard-create.sql", "sca-create.sql"] {
        let p = kamailio_file(SQLITE_SCHEMA_DIR).join(f);
        sql.push_str(&fs::read_to_string(&p).map_err(|e| format!("read {}: {e}", p.display()))?);
        sql.push('\n');
    }
    if let Some(s) = seed_sql {
        sql.push_str(s);
        sql.push('\n');
    }
    sqlite_exec(db, &sql).map(|_| ())
}

/// Run SQL through the `sqlite3` CLI (`-bail`, list mode, `|` separator).
pub fn sqlite_exec(db: &Path, sql: &str) -> Result<String, String> {
    let script = db.with_extension(format!(
        "sql-{}",
        DIR_COUNTER.fetch_add(1, Ordering::SeqCst)
    ));
    fs::write(&script, sql).map_err(|e| format!("write {}: {e}", script.display()))?;
    let mut cmd = Command::new("sqlite3");
    cmd.arg("-bail")
        .arg(db)
        .arg(format!(".read {}", script.display()));
    let res = run_with_timeout(&mut cmd, Duration::from_secs(10));
    let _ = fs::remove_file(&script);
    let out = res?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "sqlite3 {} failed ({}): {}",
            db.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

// ------------------------------------------------------------- Kamailio

/// A running Kamailio. Dropping it stops it (SIGTERM, then SIGKILL of its
/// process group after 3 s) and removes its directory.
pub struct Kamailio {
    child: Option<Child>,
    pub port: u16,
    /// The address it listens on (see [`KamailioOpts::listen_ip`]).
    pub listen_ip: Ipv4Addr,
    pub module: ScaModule,
    /// `unixs:<dir>/kamailio_ctl`
    pub ctl: String,
    pub cfg_path: PathBuf,
    pub log_path: PathBuf,
    pub db_path: Option<PathBuf>,
    /// The fully rendered config.
    pub cfg: String,
    exit_status: Option<ExitStatus>,
    // Drop order: the process is stopped in Drop::drop before these go.
    _port: Arc<PortReservation>,
    dir: TestDir,
}

impl Kamailio {
    /// Start Kamailio and wait until it answers on its ctl socket; panics
    /// with the log tail if it does not.
    pub fn start(opts: KamailioOpts) -> Kamailio {
        match Kamailio::try_start(opts) {
            Ok(k) => k,
            Err(e) => panic!("Kamailio did not start: {e}"),
        }
    }

    /// Like [`Kamailio::start`] but returns the failure (with log tail).
    pub fn try_start(opts: KamailioOpts) -> Result<Kamailio, String> {
        echo_panics();
        let port = match &opts.shared_port {
            Some(p) => Arc::clone(p),
            None => Arc::new(PortReservation::new()?),
        };
        let dir = TestDir::new("sca_rs-kam")?;
        let ctl_path = dir.path.join("kamailio_ctl");
        let ctl = format!("unixs:{}", ctl_path.display());
        let cfg_path = dir.path.join("kamailio.cfg");
        let log_path = dir.path.join("kamailio.log");

        let loadmodule = opts.module.loadmodule_path();
        if !loadmodule.exists() {
            return Err(format!(
                "SCA module {} not found (build it, or set SCA_RS_MODULE / SCA_IMPL=c)",
                loadmodule.display()
            ));
        }

        let mut vars: Vec<(String, String)> = vec![
            ("MPATH".into(), mpath()),
            ("SCA_MODULE".into(), opts.module.name().into()),
            ("SCA_LOADMODULE".into(), loadmodule.display().to_string()),
            ("DEBUG".into(), env_or("KAMAILIO_DEBUG", "2")),
            ("CHILDREN".into(), opts.children.to_string()),
        ];
        let db_path = if opts.with_db {
            let db = dir.path.join("kamailio.sqlite");
            create_sqlite_db(&db, opts.db_seed_sql.as_deref())?;
            // db URL syntax is scheme://host/database, so an absolute path
            // needs a fourth slash (with three it is relative to the cwd).
            vars.push(("DB_URL".into(), format!("sqlite:///{}", db.display())));
            Some(db)
        } else {
            None
        };
        vars.extend(opts.vars.iter().cloned());
        // Fixed per instance: tests must not override these.
        vars.push(("PORT".into(), port.port.to_string()));
        vars.push(("LISTEN_IP".into(), opts.listen_ip.to_string()));
        vars.push(("CTL_SOCKET".into(), ctl.clone()));
        vars.push(("RUN_DIR".into(), dir.path.display().to_string()));

        let cfg = render_template(&opts.cfg_template, &vars)?;
        fs::write(&cfg_path, &cfg).map_err(|e| format!("write {}: {e}", cfg_path.display()))?;

        let log = fs::File::create(&log_path)
            .map_err(|e| format!("create {}: {e}", log_path.display()))?;
        let log2 = log.try_clone().map_err(|e| format!("dup log fd: {e}"))?;
        let mut cmd = Command::new(kamailio_bin());
        cmd.arg("-DD")
            .arg("-E")
            .arg("-f")
            .arg(&cfg_path)
            .arg("-L")
            .arg(mpath())
            .arg("-Y")
            .arg(&dir.path)
            .arg("-w")
            .arg(&dir.path)
            .arg("-n")
            .arg(opts.children.to_string())
            .arg("-m")
            .arg("32")
            .arg("-M")
            .arg("8")
            .args(&opts.extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2))
            // own process group: lets Drop kill every child by group id
            .process_group(0);
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", kamailio_bin()))?;

        let mut k = Kamailio {
            child: Some(child),
            port: port.port,
            listen_ip: opts.listen_ip,
            module: opts.module.clone(),
            ctl,
            cfg_path,
            log_path,
            db_path,
            cfg,
            exit_status: None,
            _port: port,
            dir,
        };
        k.wait_ready(opts.ready_timeout, opts.children)?;
        Ok(k)
    }

    fn wait_ready(&mut self, timeout: Duration, children: u32) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        let mut last_err = String::from("not tried");
        loop {
            if let Some(st) = self.try_exit_status() {
                return Err(format!(
                    "kamailio exited with {st} before it was ready (dir {})\n{}",
                    self.dir.path.display(),
                    self.log_tail(LOG_TAIL_LINES)
                ));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "kamailio not ready within {timeout:?} (last kamcmd error: {last_err}; dir {})\n{}",
                    self.dir.path.display(),
                    self.log_tail(LOG_TAIL_LINES)
                ));
            }
            // The ctl socket answering means the ctl process runs; the
            // receivers are forked before it, but check they are listed so
            // a failed child init cannot go unnoticed.
            match self.kamcmd(&["core.psx"]) {
                Ok(psx) => {
                    let receivers = psx.matches("udp receiver child=").count();
                    if receivers >= children as usize {
                        return Ok(());
                    }
                    last_err = format!("only {receivers} udp receivers listed");
                }
                Err(e) => last_err = e,
            }
            thread::sleep(Duration::from_millis(25));
        }
    }

    /// The SIP address Kamailio listens on.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(self.listen_ip, self.port))
    }

    /// The temporary directory of this instance.
    pub fn dir(&self) -> &Path {
        &self.dir.path
    }

    /// Run `kamcmd -s <ctl> args...`; stdout on success. A binrpc fault
    /// (kamcmd prints `error: <code> - <text>` and still exits 0), a
    /// non-zero exit or a timeout is an `Err`.
    pub fn kamcmd(&self, args: &[&str]) -> Result<String, String> {
        let mut cmd = Command::new(kamcmd_bin());
        cmd.arg("-s").arg(&self.ctl).args(args);
        let out = run_with_timeout(&mut cmd, KAMCMD_TIMEOUT)?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if !out.status.success() {
            return Err(format!(
                "kamcmd {args:?} exited {}: {}{}",
                out.status,
                stderr.trim(),
                stdout.trim()
            ));
        }
        if stdout.starts_with("error: ") {
            return Err(stdout.trim().to_string());
        }
        Ok(stdout)
    }

    /// [`Kamailio::kamcmd`] that panics (with the log tail) on error, and
    /// returns trimmed stdout.
    pub fn rpc(&self, args: &[&str]) -> String {
        match self.kamcmd(args) {
            Ok(s) => s.trim().to_string(),
            Err(e) => panic!(
                "kamcmd {args:?} failed: {e}\n{}",
                self.log_tail(LOG_TAIL_LINES)
            ),
        }
    }

    /// Everything Kamailio logged so far.
    /// ERROR, CRITICAL and ALERT lines of the log, less the one line the
    /// C `sca.so` of Kamailio 6.0 and later logs by design of its own
    /// defect (see [`is_known_c_module_error`]).
    pub fn log_errors(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| l.contains(" ERROR:") || l.contains(" CRITICAL:") || l.contains(" ALERT:"))
            .filter(|l| !is_known_c_module_error(&self.module, l))
            .map(String::from)
            .collect()
    }

    pub fn log(&self) -> String {
        fs::read(&self.log_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_else(|e| format!("<cannot read {}: {e}>", self.log_path.display()))
    }

    /// The last `n` lines of the log, with a header naming the file.
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        let from = lines.len().saturating_sub(n);
        format!(
            "----- last {} lines of {} -----\n{}\n----- end of log -----",
            lines.len() - from,
            self.log_path.display(),
            lines[from..].join("\n")
        )
    }

    /// Poll the log until it contains `needle` or `timeout` passes. Only for
    /// facts that have no other observable channel.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.log().contains(needle) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Run SQL against this instance's sqlite DB.
    pub fn sqlite(&self, sql: &str) -> Result<String, String> {
        let db = self.db_path.as_ref().ok_or("this Kamailio has no DB")?;
        sqlite_exec(db, sql)
    }

    /// Is the main process still running?
    pub fn is_running(&mut self) -> bool {
        self.try_exit_status().is_none()
    }

    fn try_exit_status(&mut self) -> Option<ExitStatus> {
        if self.exit_status.is_none() {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(st)) = child.try_wait() {
                    self.exit_status = Some(st);
                }
            }
        }
        self.exit_status
    }

    /// Pid of the main process, which is also the process group of every
    /// Kamailio process (None once stopped).
    #[allow(dead_code)]
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Kill every process of this Kamailio with SIGKILL (a crash: no
    /// shutdown code runs) and reap it.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = child.id() as libc::pid_t;
            // SAFETY: kill(2) on our own child's process group.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
            self.exit_status = child.wait().ok();
        }
    }

    /// Stop Kamailio now (SIGTERM, then SIGKILL after 3 s); returns how the
    /// main process ended (`None` if it had to be killed). Idempotent.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        let Some(mut child) = self.child.take() else {
            return self.exit_status;
        };
        let pid = child.id() as libc::pid_t;
        let mut graceful = None;
        if self.exit_status.is_none() {
            // SAFETY: plain kill(2) on the pid of our own child.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            // Kamailio's main process waits for its children; on a loaded
            // 2-core machine that can take a few seconds
            let started = Instant::now();
            let deadline = started + Duration::from_secs(20);
            let mut dumped = false;
            while Instant::now() < deadline {
                if !dumped && started.elapsed() > Duration::from_secs(4) && std::env::var_os("SCA_RS_STALL_GDB").is_some() {
                    dumped = true;
                    let out = Command::new("sh")
                        .arg("-c")
                        .arg(format!("for p in $(pgrep -g {pid}); do echo \"== $p\"; cat /proc/$p/cmdline | tr '\\0' ' '; echo; gdb -batch -p $p -ex bt 2>/dev/null | grep '^#'; done"))
                        .output();
                    if let Ok(o) = out {
                        eprintln!("[harness] stalled stop, backtraces:\n{}", String::from_utf8_lossy(&o.stdout));
                    }
                }
                if let Ok(Some(st)) = child.try_wait() {
                    graceful = Some(st);
                    let took = started.elapsed();
                    if took > Duration::from_secs(2) {
                        eprintln!("kamailio took {took:?} to stop (dir {})", self.dir.path.display());
                    }
                    break;
                }
                thread::sleep(Duration::from_millis(10));
            }
        } else {
            graceful = self.exit_status;
        }
        // Whatever is left in the group (the main process if it ignored
        // SIGTERM, or orphaned children) is killed; the group id is the pid
        // of our child, set with process_group(0).
        // SAFETY: kill(2) on our own process group.
        unsafe {
            if libc::kill(-pid, 0) == 0 {
                libc::kill(-pid, libc::SIGKILL);
            }
        }
        let waited = child.wait().ok();
        self.exit_status = graceful.or(waited);
        graceful
    }
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        let graceful = self.stop();
        if thread::panicking() {
            eprintln!(
                "[harness] test failed; Kamailio on {} (cfg {}; {}; set KEEP_TEST_DIRS=1 to keep the dir)\n{}",
                self.addr(),
                self.cfg_path.display(),
                match graceful {
                    Some(st) => format!("stopped: {st}"),
                    None => "had to be killed".to_string(),
                },
                self.log_tail(LOG_TAIL_LINES)
            );
            if let Some(msg) = current_panic() {
                eprintln!("[harness] the test failed with: {msg}");
            }
        }
    }
}
