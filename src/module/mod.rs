//! The module proper: what Kamailio loads (`exports`, version strings),
//! its initialisation, and the glue from script functions and RPC
//! commands to the logic in `sca_core`.

use core::ffi::{c_char, c_int};
use std::sync::OnceLock;

use sca_core::model::EventType;
use sca_core::packed::Packed;
use sca_core::store::Store;
use sca_core::sync::Locked;

use crate::host::export::{
    cmd, cmd3_as_cmd, cmd_fixup, module_exports, CmdExport, HostCell, ModuleExports, CMD_END, FAILURE_ROUTE,
    ONREPLY_ROUTE, REQUEST_ROUTE,
};
use crate::host::guard::install_panic_hook;
use crate::host::lock::KLock;
use crate::host::shm::{self, SharedStatic, Shm};
use crate::host::{proc, sl, tm};
use crate::{entry, lm_err, lm_info};

pub mod call_info;
pub mod cluster;
pub mod db;
pub mod effects;
pub mod kemi;
pub mod limits;
pub mod liveness;
pub mod metrics;
pub mod members;
pub mod notify;
pub mod params;
pub mod rpc;
pub mod subscribe;
pub mod timer;

use params::Config;

/// The SCA state every process shares: lives in Kamailio shared memory.
pub struct Shared {
    pub store: Store<Shm, KLock>,
    /// Subscriptions that ended before they expired, whose DB rows the
    /// next flush deletes (only kept when `db_url` is set).
    tombstones: Locked<KLock, allocator_api2::vec::Vec<(Packed<Shm, 2>, EventType), Shm>>,
    persist: bool,
    /// The start-up restore failed: the DB writer retries it (and writes
    /// nothing before it succeeded).
    pub restore_pending: core::sync::atomic::AtomicBool,
    /// Rows the DB writer committed since start.
    pub rows_written: core::sync::atomic::AtomicU64,
    /// How long the DB writer's last batch took (ms).
    pub last_flush_ms: core::sync::atomic::AtomicU64,
    /// Subscriber liveness counters.
    pub liveness: liveness::Stats,
}

/// An ended subscription's key, for the DB writer.
pub use sca_core::persist::DbDelete as Tombstone;

fn tombstone_of((p, event): &(Packed<Shm, 2>, EventType)) -> Tombstone {
    Tombstone { aor: p.get(0).to_vec(), subscriber: p.get(1).to_vec(), event: *event }
}

impl Shared {
    pub fn add_tombstone(&self, aor: &[u8], subscriber: &[u8], event: EventType) {
        if !self.persist {
            return;
        }
        let mut q = self.tombstones.lock();
        match Packed::new_in([aor, subscriber], Shm) {
            Ok(p) if q.try_reserve(1).is_ok() => q.push((p, event)),
            // the row then stays until it expires
            _ => lm_err!("out of shared memory queueing the DB delete of {}", crate::host::log::B(subscriber)),
        }
    }

    /// How many DB deletes are queued.
    pub fn tombstones_len(&self) -> usize {
        self.tombstones.lock().len()
    }

    /// The queued DB deletes, oldest first, left in the queue: the writer
    /// drops them with [`Shared::drop_tombstones`] once they committed.
    pub fn peek_tombstones(&self) -> Vec<Tombstone> {
        self.tombstones.lock().iter().map(tombstone_of).collect()
    }

    /// Drop the `n` oldest queued deletes (committed). Only the writer
    /// removes from the queue, so they are the ones it peeked.
    pub fn drop_tombstones(&self, n: usize) {
        let mut q = self.tombstones.lock();
        let n = n.min(q.len());
        q.drain(..n);
    }

    /// The queue at shutdown: read only, a bounded wait for its lock.
    pub fn tombstones_at_exit(&self, attempts: u32, pause: impl FnMut()) -> Option<Vec<Tombstone>> {
        self.tombstones.try_lock_within(attempts, pause).map(|q| q.iter().map(tombstone_of).collect())
    }
}

static SHARED: SharedStatic<Shared> = SharedStatic::new();
static CONFIG: OnceLock<Config> = OnceLock::new();

/// The shared state (None before mod_init succeeded).
pub fn shared() -> Option<&'static Shared> {
    SHARED.get()
}

pub fn config() -> Option<&'static Config> {
    CONFIG.get()
}

// ---------------------------------------------------------------- loader

/// `SER_FULL_VERSION` as compiled by the shim from Kamailio's macros.
#[no_mangle]
#[allow(non_upper_case_globals)]
pub static module_version: HostCell<*const c_char> =
    HostCell::new(crate::host::export::FULL_VERSION);

/// `SER_COMPILE_FLAGS` as compiled by the shim with the binary's defines.
#[no_mangle]
#[allow(non_upper_case_globals)]
pub static module_flags: HostCell<*const c_char> =
    HostCell::new(crate::host::export::COMPILE_FLAGS);

#[no_mangle]
#[allow(non_upper_case_globals)]
pub static module_interface_ver: HostCell<core::ffi::c_uint> = HostCell::new(4);

const CIU_ROUTES: u32 = REQUEST_ROUTE | FAILURE_ROUTE | ONREPLY_ROUTE;

static CMDS: HostCell<[CmdExport; 9 + 5]> = HostCell::new([
    cmd(c"sca_handle_subscribe", subscribe::w_sca_handle_subscribe, 0, REQUEST_ROUTE),
    cmd_fixup(c"sca_handle_subscribe", subscribe::w_sca_handle_subscribe, 1, subscribe::fixup_hs, subscribe::fixup_free_hs, REQUEST_ROUTE),
    cmd_fixup(c"sca_handle_subscribe", subscribe::w_sca_handle_subscribe, 2, subscribe::fixup_hs, subscribe::fixup_free_hs, REQUEST_ROUTE),
    cmd(c"sca_call_info_update", call_info::w_ciu0, 0, CIU_ROUTES),
    cmd_fixup(c"sca_call_info_update", call_info::w_ciu1, 1, call_info::fixup_ciu, call_info::fixup_free_ciu, CIU_ROUTES),
    cmd_fixup(c"sca_call_info_update", call_info::w_ciu2, 2, call_info::fixup_ciu, call_info::fixup_free_ciu, CIU_ROUTES),
    cmd_fixup(
        c"sca_call_info_update",
        cmd3_as_cmd(call_info::w_ciu3),
        3,
        call_info::fixup_ciu,
        call_info::fixup_free_ciu,
        CIU_ROUTES,
    ),
    cmd_fixup(c"sca_is_member", members::w_sca_is_member, 2, members::fixup_im, members::fixup_free_im, REQUEST_ROUTE),
    // keepalive: ka_is_alive, is_alive, ka_add_destination, ka_del_destination, bind_keepalive
    crate::keepalive::cmds::CMDS[0],
    crate::keepalive::cmds::CMDS[1],
    crate::keepalive::cmds::CMDS[2],
    crate::keepalive::cmds::CMDS[3],
    crate::keepalive::cmds::CMDS[4],
    CMD_END,
]);

#[no_mangle]
#[allow(non_upper_case_globals)]
pub static exports: HostCell<ModuleExports> = HostCell::new(module_exports(
    c"sca_rs",
    CMDS.get() as *mut CmdExport,
    params::PARAMS.get() as *mut crate::host::export::ParamExport,
    rpc::RPCS.get() as *mut crate::host::export::RpcExport,
    mod_init,
    child_init,
    mod_destroy,
));

// ---------------------------------------------------------------- life cycle

entry! {
    c fn mod_init() -> c_int ["mod_init", -1] {
        install_panic_hook();
        match init() {
            Ok(()) => 0,
            Err(e) => {
                lm_err!("sca_rs initialisation failed: {e}");
                -1
            }
        }
    }
}

fn init() -> Result<(), String> {
    let cfg = Config::load()?;
    metrics::register()?;
    tm::on_final_reply(metrics::notify_final_reply);
    tm::bind().map_err(|_| "cannot bind the tm API: load tm.so before sca_rs.so".to_string())?;
    sl::bind().map_err(|_| "cannot bind the sl API: load sl.so before sca_rs.so".to_string())?;
    sl::register_reply_callback().map_err(|_| "cannot register the sl reply callback".to_string())?;
    crate::host::lock::check_layout()?;
    // keepalive: engine, config destinations, ping timer (needs tm)
    crate::keepalive::init()?;
    // the To-tag prefixes shared by the stored subscriptions: in shm, so a
    // prefix number means the same in every process (before the restore)
    let prefixes = shm::into_shared_ref(sca_core::tagpfx::TagPrefixes::new())
        .map_err(|_| "out of shared memory creating the SCA tables".to_string())?;
    if !sca_core::tagpfx::install(prefixes) {
        return Err("the To-tag prefix table was in use before mod_init".into());
    }
    let store = Store::new_in(cfg.log2_slots, Shm)
        .map_err(|_| "out of shared memory creating the SCA tables".to_string())?;
    let tombstones = Locked::new(allocator_api2::vec::Vec::new_in(Shm));
    let persist = cfg.db_url.is_some();
    let st: &'static Shared = shm::into_shared_ref(Shared {
        store,
        tombstones,
        persist,
        restore_pending: core::sync::atomic::AtomicBool::new(false),
        rows_written: core::sync::atomic::AtomicU64::new(0),
        last_flush_ms: core::sync::atomic::AtomicU64::new(0),
        liveness: liveness::Stats::default(),
    })
        .map_err(|_| "out of shared memory creating the SCA state".to_string())?;
    if !st.store.init_locks() || !st.tombstones.init() {
        return Err("cannot initialise the SCA table locks".into());
    }
    SHARED.set(st);
    limits::init()?;
    members::init(&cfg)?;
    cluster::init(&cfg)?;
    timer::register(cfg.purge_expired_interval)?;
    liveness::register(cfg.subscriber_keepalive_interval)?;
    if cfg.subscriber_keepalive_interval > 0 {
        lm_info!(
            "sca_rs: subscriber liveness on: call-info subscribers' phones pinged every {}s",
            cfg.subscriber_keepalive_interval
        );
    }
    match &cfg.db_url {
        None => lm_info!("sca_rs: no db_url set: subscriptions are kept in memory only"),
        Some(url) => {
            db::bind(url, &cfg.subs_table)?;
            if !db::restore(&cfg, st, subscribe::now()) {
                st.restore_pending.store(true, core::sync::atomic::Ordering::Release);
            }
            // the write-behind process is forked in child_init(PROC_MAIN)
            if proc::register_basic_timers(1).is_err() {
                return Err("cannot register the DB writer process".into());
            }
            lm_info!(
                "sca_rs: subscriptions persisted to {} table {} every {}s",
                crate::host::log::B(url),
                crate::host::log::B(&cfg.subs_table),
                cfg.db_update_interval
            );
        }
    }
    limits::recount(&st.store);
    lm_info!(
        "sca_rs initialised: {} hash slots, call-info max expires {}s, line-seize max expires {}s",
        1u32 << cfg.log2_slots,
        cfg.call_info_max_expires,
        cfg.line_seize_max_expires
    );
    CONFIG.set(cfg).map_err(|_| "mod_init ran twice".to_string())?;
    Ok(())
}

entry! {
    c fn child_init(rank: c_int) -> c_int ["child_init", -1] {
        let Some(cfg) = config() else { return -1 };
        if rank == proc::PROC_MAIN && cfg.db_url.is_some() {
            let f = db_sync_timer;
            if proc::fork_basic_timer(c"SCA DB SYNC PROCESS", f, cfg.db_update_interval as c_int).is_err() {
                lm_err!("cannot fork the SCA DB writer process");
                return -1;
            }
        }
        0
    }
}

thread_local! {
    /// The DB writer process's connection (one per process, I6).
    static CONN: core::cell::RefCell<Option<db::WriterConn>> =
        const { core::cell::RefCell::new(None) };
}

entry! {
    /// The DB writer process: one connection, one flush per interval.
    timer fn db_sync_timer("DB writer") {
        let (Some(st), Some(cfg)) = (shared(), config()) else { return };
        CONN.with(|c| db::flush_with_reconnect(cfg, st, &mut c.borrow_mut(), subscribe::now()));
    }
}

entry! {
    c fn mod_destroy() ["mod_destroy"] {
        // keepalive
        crate::keepalive::destroy();
        if let (Some(st), Some(cfg)) = (shared(), config()) {
            if cfg.db_url.is_some() {
                db::flush_at_exit(cfg, st);
            }
        }
        if let Some(st) = SHARED.take() {
            // mod_destroy runs once in the main process after the workers
            // are gone; nobody uses the shared state any more. The shm
            // itself is not freed (SAFETY.md I3).
            st.store.destroy_locks();
        }
    }
}
