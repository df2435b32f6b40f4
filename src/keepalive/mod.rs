//! Keepalive: what Kamailio's C `keepalive` module does, inside sca_rs.so
//! (operators drop keepalive.so). Destinations are pinged with SIP OPTIONS
//! through tm; their state is served to the script (`ka_is_alive`), to RPC
//! (`keepalive.*`), to event routes (`keepalive:dst-up` / `dst-down`) and to
//! other modules through the C API (`bind_keepalive`, as drouting uses it).
//!
//! The logic is `sca_core::keepalive` (plain Rust, unit-tested). Here: the
//! shared-memory engine, the clock, and the glue to Kamailio. Every
//! process works on the same engine in shared memory under one Kamailio
//! lock; a ping's tm callback runs in whichever process gets the reply and
//! finds its destination by id (never by pointer).
//!
//! See docs/keepalive.md.

use core::cell::Cell;
use core::ffi::c_void;
use core::ptr::null_mut;
use std::sync::OnceLock;

use sca_core::keepalive::{Added, AliveCodes, Config as EngineConfig, Engine, Now, State, Table};
use sca_core::sync::Locked;

use crate::host::lock::KLock;
use crate::host::log::B;
use crate::host::shm::{self, SharedStatic, Shm};
use crate::{lm_dbg, lm_err, lm_info, lm_warn};

pub mod api;
pub mod cmds;
pub mod kemi;
pub mod metrics;
pub mod params;
pub mod ping;
pub mod rpc;

/// What an API user attached to a destination: its callbacks and their
/// argument. Function pointers into a module loaded before fork, and a
/// pointer the module manages (drouting: a gateway in shared memory); the
/// same in every process.
#[derive(Clone, Copy, Debug)]
pub struct Hooks {
    pub statechanged: crate::host::ka::StateChangedFn,
    pub response: crate::host::ka::ResponseFn,
    pub user_attr: *mut c_void,
}

impl Default for Hooks {
    fn default() -> Self {
        Hooks { statechanged: None, response: None, user_attr: null_mut() }
    }
}

impl Hooks {
    fn is_empty(&self) -> bool {
        self.statechanged.is_none() && self.response.is_none() && self.user_attr.is_null()
    }
}

// SAFETY: [I11] see the type's doc: the pointers mean the same in every process;
// the engine only stores and returns them.
unsafe impl Send for Hooks {}

pub type KaTable = Table<Shm, Hooks>;

/// The keepalive state every process shares (in shared memory).
pub struct KaShared {
    engine: Engine<Shm, KLock, Hooks>,
    /// Held by the process delivering state changes (event routes and
    /// callbacks), so they run one at a time and in order.
    dispatch: Locked<KLock, ()>,
}

/// Per-process settings, fixed before fork.
pub struct Settings {
    pub ping_from: Vec<u8>,
    pub default_interval_s: u32,
    pub route_up: i32,
    pub route_down: i32,
    pub list_stats: bool,
}

static KA: SharedStatic<KaShared> = SharedStatic::new();
static SETTINGS: OnceLock<Settings> = OnceLock::new();

pub fn shared() -> Option<&'static KaShared> {
    KA.get()
}

pub fn settings() -> Option<&'static Settings> {
    SETTINGS.get()
}

thread_local! {
    /// This process holds the engine lock through the C API's
    /// `lock_destination_list()`.
    static API_LOCKED: Cell<bool> = const { Cell::new(false) };
}

/// Run `f` on the destinations table under the engine lock (or under the
/// lock this process already holds through the C API). None before
/// mod_init.
pub fn with_table<R>(f: impl FnOnce(&mut KaTable) -> R) -> Option<R> {
    let ka = shared()?;
    if API_LOCKED.with(Cell::get) {
        // SAFETY: [I4] this process holds the raw lock (lock_destination_list);
        // `f` gets the only reference, for the duration of the call.
        Some(f(unsafe { ka.engine.table_held() }))
    } else {
        Some(f(&mut ka.engine.lock()))
    }
}

/// The current time: wall clock for people, monotonic for scheduling.
pub fn now() -> Now {
    Now { wall: crate::host::clock::now(), mono_ms: crate::host::clock::mono_ms() }
}

/// Why an add failed.
#[derive(Debug)]
pub enum AddError {
    NotUri,
    NoMemory,
    NotReady,
}

/// Is `uri` (with a scheme) a SIP URI Kamailio can parse?
pub fn parses_as_sip_uri(uri: &[u8]) -> bool {
    crate::host::ka::parses_as_sip_uri(uri)
}

/// Add (uri, owner), as every entry point does: `sip:` for a URI without
/// scheme, which must then parse. Returns what the table did.
pub fn add_destination(
    uri: &[u8],
    owner: &[u8],
    flags: i32,
    interval_s: Option<u32>,
    hooks: Option<Hooks>,
) -> Result<Added<Hooks>, AddError> {
    let normalized = sca_core::keepalive::uri::normalize(uri);
    if let Err(why) = sca_core::keepalive::uri::check_well_formed(&normalized) {
        lm_err!("invalid uri <{}>: {why:?}", B(&normalized));
        return Err(AddError::NotUri);
    }
    if !parses_as_sip_uri(&normalized) {
        lm_err!("invalid uri <{}>", B(&normalized));
        return Err(AddError::NotUri);
    }
    let interval_ms = interval_s.filter(|&s| s > 0).map(|s| s as u64 * 1000);
    let hooks = hooks.filter(|h| !h.is_empty());
    let now = now();
    match with_table(|t| t.add(uri, owner, flags, interval_ms, hooks, now)) {
        None => Err(AddError::NotReady),
        Some(Err(e)) => {
            lm_err!("cannot add destination {}: {e:?}", B(&normalized));
            Err(AddError::NoMemory)
        }
        Some(Ok(a)) => {
            match &a {
                Added::New { uri, .. } => lm_dbg!("added destination {} (owner {})", B(uri), B(owner)),
                Added::Exists { uri, .. } => {
                    lm_info!("uri [{}] already in stack --ignoring", B(uri))
                }
            }
            Ok(a)
        }
    }
}

/// The C module's return value for an add: 1 added, -2 there already, -1 error.
pub fn add_code(r: &Result<Added<Hooks>, AddError>) -> i32 {
    match r {
        Ok(Added::New { .. }) => 1,
        Ok(Added::Exists { .. }) => -2,
        Err(_) => -1,
    }
}

/// State for `ka_is_alive()` and the API: the state, or None when no
/// destination matches.
pub fn destination_state(query: &[u8]) -> Option<State> {
    with_table(|t| t.state_of(query)).flatten()
}

/// Remove (uri, owner); true when it was there.
pub fn del_destination(uri: &[u8], owner: &[u8]) -> bool {
    match with_table(|t| t.remove(uri, owner)).flatten() {
        Some(d) => {
            lm_dbg!("removed destination {} (owner {})", B(&d.uri), B(&d.owner));
            true
        }
        None => {
            lm_err!("Couldn't find destination {} (owner {})", B(uri), B(owner));
            false
        }
    }
}

fn positive(name: &str, v: i32) -> Result<u32, String> {
    if v <= 0 {
        Err(format!("modparam {name} must be > 0, got {v}"))
    } else {
        Ok(v as u32)
    }
}

/// Set up keepalive (mod_init, after tm is bound): the shared engine, the
/// config's destinations, event routes and the ping timer.
pub fn init() -> Result<(), String> {
    let p = params::read()?;
    let interval_s = positive("ping_interval", p.ping_interval)?;
    if p.delete_counter < 0 {
        return Err(format!("modparam delete_counter must be >= 0, got {}", p.delete_counter));
    }
    let down_after = positive("ka_down_threshold", p.down_threshold)?;
    let up_after = positive("ka_up_threshold", p.up_threshold)?;
    let alive = match &p.alive_codes {
        None => AliveCodes::default(),
        Some(s) => AliveCodes::parse(s).map_err(|e| format!("modparam ka_alive_codes: {e}"))?,
    };
    if !parses_as_sip_uri(&p.ping_from) {
        return Err(format!("modparam ping_from: '{}' is not a SIP URI", B(&p.ping_from)));
    }
    if p.delete_counter > 0 && down_after > p.delete_counter as u32 + 1 {
        lm_warn!(
            "keepalive: ka_down_threshold {down_after} > delete_counter {} + 1: destinations are removed before they are down",
            p.delete_counter
        );
    }
    let cfg = EngineConfig {
        default_interval_ms: interval_s as u64 * 1000,
        first_ping_delay_ms: 500,
        delete_counter: p.delete_counter as u32,
        down_after,
        up_after,
        alive,
        max_events: 4096,
    };
    let st: &'static KaShared =
        shm::into_shared_ref(KaShared { engine: Engine::new_in(cfg, Shm), dispatch: Locked::new(()) })
            .map_err(|_| "out of shared memory creating the keepalive state".to_string())?;
    if !st.engine.init() || !st.dispatch.init() {
        return Err("cannot initialise the keepalive locks".into());
    }
    KA.set(st);

    let route = crate::host::ka::route_lookup;
    let settings = Settings {
        ping_from: p.ping_from.clone(),
        default_interval_s: interval_s,
        route_up: route(c"keepalive:dst-up"),
        route_down: route(c"keepalive:dst-down"),
        list_stats: p.list_stats != 0,
    };
    SETTINGS.set(settings).map_err(|_| "keepalive initialised twice".to_string())?;

    // the config's destinations (owner "_params", as the C module)
    for d in params::take_initial_destinations() {
        match add_destination(&d, b"_params", 0, None, None) {
            Ok(Added::New { uri, .. }) => {
                lm_info!("Added initial destination Via \"destination\" parameter <{}>", B(&uri))
            }
            Ok(Added::Exists { uri, .. }) => {
                lm_warn!("modparam destination <{}> given twice: monitored once", B(&uri))
            }
            Err(AddError::NotUri) => {
                return Err(format!("modparam destination: '{}' is not a SIP URI", B(&d)));
            }
            Err(e) => return Err(format!("modparam destination '{}': {e:?}", B(&d))),
        }
    }
    if crate::host::ka::start_timer(ping::TICK_MAX_MS).is_err() {
        return Err("cannot start the keepalive timer".into());
    }
    lm_info!(
        "keepalive: ping every {interval_s}s from {}, delete_counter {}, down after {down_after}, up after {up_after}",
        B(&p.ping_from),
        p.delete_counter
    );
    Ok(())
}

/// Free the shared state (mod_destroy: main process, workers gone).
pub fn destroy() {
    if let Some(ka) = KA.take() {
        // mod_destroy runs once after every other process ended; nobody
        // uses the state any more. The shm itself is not freed (SAFETY.md I3).
        ka.engine.destroy();
        ka.dispatch.destroy();
    }
}

/// Deliver queued state changes (event routes, statechanged callbacks),
/// one process at a time, in order. A process that finds another one
/// delivering leaves its changes queued for it: the deliverer looks again
/// after releasing.
pub fn dispatch_events() {
    let Some(ka) = shared() else { return };
    loop {
        {
            let Some(_held) = ka.dispatch.try_lock() else { return };
            while let Some(ev) = with_table(|t| t.pop_event()).flatten() {
                ping::deliver(&ev);
            }
        }
        // a change queued while we held the lock, by a process that then
        // failed to take it, is ours to deliver
        if !with_table(|t| t.has_events()).unwrap_or(false) {
            return;
        }
    }
}


/// Mark this process as holding the engine lock through the C API.
pub(crate) fn api_lock() -> bool {
    let Some(ka) = shared() else { return false };
    if API_LOCKED.with(Cell::get) {
        // already held by this process: a second lock_get would deadlock
        return true;
    }
    // SAFETY: [I4] released by api_unlock; meanwhile with_table uses table_held.
    unsafe { ka.engine.lock_raw() };
    API_LOCKED.with(|c| c.set(true));
    true
}

pub(crate) fn api_unlock() -> bool {
    let Some(ka) = shared() else { return false };
    if !API_LOCKED.with(Cell::get) {
        return false;
    }
    API_LOCKED.with(|c| c.set(false));
    // SAFETY: [I4] this process took it in api_lock.
    unsafe { ka.engine.unlock_raw() };
    true
}
