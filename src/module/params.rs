//! Module parameters: the C `sca` module's names and defaults. Kamailio
//! writes them while parsing the config (main process, before mod_init);
//! [`Config::load`] validates them once in mod_init.

use core::ffi::{c_int, c_void};

use sca_core::limits::Limits;

use crate::host::export::{param, HostCell, ParamExport, StrParam, PARAM_END, PARAM_INT, PARAM_STR};

pub static HASH_TABLE_SIZE: HostCell<c_int> = HostCell::new(-1);
pub static CALL_INFO_MAX_EXPIRES: HostCell<c_int> = HostCell::new(3600);
pub static LINE_SEIZE_MAX_EXPIRES: HostCell<c_int> = HostCell::new(15);
pub static PURGE_EXPIRED_INTERVAL: HostCell<c_int> = HostCell::new(120);
pub static DB_UPDATE_INTERVAL: HostCell<c_int> = HostCell::new(300);
/// sca_rs only: seconds a line may stay seized without a call before the
/// purge frees it (the C module's fixed `SCA_APPEARANCE_STATE_SEIZED_TTL`).
pub static SEIZED_TTL: HostCell<c_int> = HostCell::new(sca_core::appearance::SEIZED_TTL as c_int);
pub static ONHOLD_BFLAG: HostCell<c_int> = HostCell::new(-1);
pub static DB_URL: StrParam = StrParam::new();
pub static SUBS_TABLE: StrParam = StrParam::new();
pub static STATE_TABLE: StrParam = StrParam::new();
pub static OUTBOUND_PROXY: StrParam = StrParam::new();
pub static SERVER_ADDRESS: StrParam = StrParam::new();
pub static CONTACT_FALLBACK: StrParam = StrParam::new();
pub static FROM_URI_AVP: StrParam = StrParam::new();
pub static TO_URI_AVP: StrParam = StrParam::new();
/// sca_rs only: ping subscribers' phones every N seconds (0: off).
pub static SUBSCRIBER_KEEPALIVE_INTERVAL: HostCell<c_int> = HostCell::new(0);
/// sca_rs only: replicate SCA state to the other nodes over DMQ
/// (docs/cluster.md); 0 = off.
pub static ENABLE_DMQ: HostCell<c_int> = HostCell::new(0);
/// This node's id in the cluster (1 to 1048575); 0 = derived from dmq's
/// server_address.
pub static DMQ_NODE_ID: HostCell<c_int> = HostCell::new(0);
/// Target size of one full-sync chunk, in bytes.
pub static DMQ_SYNC_CHUNK_BYTES: HostCell<c_int> = HostCell::new(30000);
/// Seconds a release or delete is remembered against late messages.
pub static DMQ_TOMBSTONE_TTL: HostCell<c_int> = HostCell::new(120);
/// Seconds a full sync may go without an answer before it is asked again.
pub static DMQ_SYNC_TIMEOUT: HostCell<c_int> = HostCell::new(5);
/// How many times a full sync is asked again before it is given up.
pub static DMQ_SYNC_RETRIES: HostCell<c_int> = HostCell::new(3);
/// Seconds after start during which an unsynced node refuses new
/// line-seizes (0: off).
pub static DMQ_SYNC_WAIT: HostCell<c_int> = HostCell::new(0);
/// Seconds between anti-entropy digest exchanges with the peers (0: off).
pub static DMQ_DIGEST_INTERVAL: HostCell<c_int> = HostCell::new(10);

// sca_rs only: bounds (docs/security.md); 0 turns one off.
pub static MAX_SEIZED_PER_CONTACT: HostCell<c_int> = HostCell::new(Limits::DEFAULT.max_seized_per_contact as c_int);
pub static MAX_SUBS_PER_AOR: HostCell<c_int> = HostCell::new(Limits::DEFAULT.max_subs_per_aor as c_int);
pub static MAX_SUBS_PER_CONTACT: HostCell<c_int> = HostCell::new(Limits::DEFAULT.max_subs_per_contact as c_int);
pub static MAX_APPEARANCE_INDEX: HostCell<c_int> = HostCell::new(Limits::DEFAULT.max_appearance_index as c_int);
pub static MAX_SUBSCRIPTIONS: HostCell<c_int> = HostCell::new(Limits::DEFAULT.max_subscriptions as c_int);
/// sca_rs only: the membership table (docs/security.md) and its DB.
pub static MEMBERS_TABLE: StrParam = StrParam::new();
pub static MEMBERS_DB_URL: StrParam = StrParam::new();
/// sca_rs only: the start-up restore reads through the DB driver's
/// library (libpq's COPY, the sqlite library) rather than Kamailio's DB
/// API (0: always through the DB API).
pub static DB_RESTORE_DIRECT: HostCell<c_int> = HostCell::new(1);
pub static MIN_FREE_SHM_PERCENT: HostCell<c_int> = HostCell::new(Limits::DEFAULT.min_free_shm_percent as c_int);

// + 8: keepalive (src/keepalive/params.rs)
const N_PARAMS: usize = 34 + 8;

pub static PARAMS: HostCell<[ParamExport; N_PARAMS]> = HostCell::new([
    param(c"hash_table_size", PARAM_INT, HASH_TABLE_SIZE.get() as *mut c_void),
    param(c"call_info_max_expires", PARAM_INT, CALL_INFO_MAX_EXPIRES.get() as *mut c_void),
    param(c"line_seize_max_expires", PARAM_INT, LINE_SEIZE_MAX_EXPIRES.get() as *mut c_void),
    param(c"purge_expired_interval", PARAM_INT, PURGE_EXPIRED_INTERVAL.get() as *mut c_void),
    param(c"db_update_interval", PARAM_INT, DB_UPDATE_INTERVAL.get() as *mut c_void),
    param(c"onhold_bflag", PARAM_INT, ONHOLD_BFLAG.get() as *mut c_void),
    param(c"db_url", PARAM_STR, DB_URL.ptr()),
    param(c"subs_table", PARAM_STR, SUBS_TABLE.ptr()),
    param(c"state_table", PARAM_STR, STATE_TABLE.ptr()),
    param(c"outbound_proxy", PARAM_STR, OUTBOUND_PROXY.ptr()),
    param(c"server_address", PARAM_STR, SERVER_ADDRESS.ptr()),
    param(c"contact_fallback", PARAM_STR, CONTACT_FALLBACK.ptr()),
    param(c"from_uri_avp", PARAM_STR, FROM_URI_AVP.ptr()),
    param(c"to_uri_avp", PARAM_STR, TO_URI_AVP.ptr()),
    param(c"subscriber_keepalive_interval", PARAM_INT, SUBSCRIBER_KEEPALIVE_INTERVAL.get() as *mut c_void),
    param(c"enable_dmq", PARAM_INT, ENABLE_DMQ.get() as *mut c_void),
    param(c"dmq_node_id", PARAM_INT, DMQ_NODE_ID.get() as *mut c_void),
    param(c"dmq_sync_chunk_bytes", PARAM_INT, DMQ_SYNC_CHUNK_BYTES.get() as *mut c_void),
    param(c"dmq_tombstone_ttl", PARAM_INT, DMQ_TOMBSTONE_TTL.get() as *mut c_void),
    param(c"dmq_sync_timeout", PARAM_INT, DMQ_SYNC_TIMEOUT.get() as *mut c_void),
    param(c"dmq_sync_retries", PARAM_INT, DMQ_SYNC_RETRIES.get() as *mut c_void),
    param(c"dmq_sync_wait", PARAM_INT, DMQ_SYNC_WAIT.get() as *mut c_void),
    param(c"dmq_digest_interval", PARAM_INT, DMQ_DIGEST_INTERVAL.get() as *mut c_void),
    param(c"max_seized_per_contact", PARAM_INT, MAX_SEIZED_PER_CONTACT.get() as *mut c_void),
    param(c"max_subs_per_aor", PARAM_INT, MAX_SUBS_PER_AOR.get() as *mut c_void),
    param(c"max_subs_per_contact", PARAM_INT, MAX_SUBS_PER_CONTACT.get() as *mut c_void),
    param(c"max_appearance_index", PARAM_INT, MAX_APPEARANCE_INDEX.get() as *mut c_void),
    param(c"max_subscriptions", PARAM_INT, MAX_SUBSCRIPTIONS.get() as *mut c_void),
    param(c"min_free_shm_percent", PARAM_INT, MIN_FREE_SHM_PERCENT.get() as *mut c_void),
    param(c"members_table", PARAM_STR, MEMBERS_TABLE.ptr()),
    param(c"members_db_url", PARAM_STR, MEMBERS_DB_URL.ptr()),
    param(c"seized_ttl", PARAM_INT, SEIZED_TTL.get() as *mut c_void),
    param(c"db_restore_direct", PARAM_INT, DB_RESTORE_DIRECT.get() as *mut c_void),
    // keepalive: ping_interval, destination, ping_from, delete_counter, ka_*
    crate::keepalive::params::PARAMS[0],
    crate::keepalive::params::PARAMS[1],
    crate::keepalive::params::PARAMS[2],
    crate::keepalive::params::PARAMS[3],
    crate::keepalive::params::PARAMS[4],
    crate::keepalive::params::PARAMS[5],
    crate::keepalive::params::PARAMS[6],
    crate::keepalive::params::PARAMS[7],
    PARAM_END,
]);

/// Validated configuration, fixed at mod_init (before fork: every process
/// gets the same copy).
#[derive(Clone)]
pub struct Config {
    pub log2_slots: u32,
    pub call_info_max_expires: u32,
    pub line_seize_max_expires: u32,
    pub purge_expired_interval: u32,
    /// Seconds a line stays seized without a call before the purge frees
    /// it (default 120, the C module's constant).
    pub seized_ttl: u32,
    pub db_update_interval: u32,
    /// Restore through the DB driver's library where it can (see
    /// `db_restore_direct`).
    pub db_restore_direct: bool,
    pub onhold_bflag: i32,
    pub db_url: Option<Vec<u8>>,
    pub subs_table: Vec<u8>,
    pub state_table: Vec<u8>,
    pub outbound_proxy: Option<Vec<u8>>,
    pub server_address: Option<Vec<u8>>,
    /// Owner URI used when a message has no Contact (newer Kamailio).
    pub contact_fallback: Option<Vec<u8>>,
    /// AVPs that hold the From / To URI to use instead of the headers.
    pub from_uri_avp: Option<crate::host::avp::Avp>,
    pub to_uri_avp: Option<crate::host::avp::Avp>,
    /// Subscriber liveness: seconds between pings of each subscribed
    /// phone; 0 = off (docs/liveness.md).
    pub subscriber_keepalive_interval: u32,
    /// Cluster replication (docs/cluster.md): None when off.
    pub dmq: Option<DmqConfig>,
    /// Bounds on seizes and subscriptions (docs/security.md).
    pub limits: Limits,
    /// Membership of shared AoRs: the table, and its DB (None: db_url).
    pub members_table: Option<Vec<u8>>,
    pub members_db_url: Option<Vec<u8>>,
}

#[derive(Clone)]
pub struct DmqConfig {
    /// 0: derive from dmq's server_address.
    pub node_id: u32,
    pub sync_chunk_bytes: u32,
    pub tombstone_ttl: u32,
    pub sync_timeout: u32,
    pub sync_retries: u32,
    /// Seconds after start during which new line-seizes get 480 until the
    /// node has synced (0: off).
    pub sync_wait: u32,
    /// Seconds between anti-entropy digest exchanges (0: off).
    pub digest_interval: u32,
}

fn opt_str(c: &StrParam) -> Option<Vec<u8>> {
    c.value()
}

fn avp(name: &str, c: &StrParam) -> Result<Option<crate::host::avp::Avp>, String> {
    match opt_str(c) {
        None => Ok(None),
        Some(spec) => crate::host::avp::Avp::parse(&spec).map(Some).map_err(|e| format!("modparam {name}: {e}")),
    }
}

fn at_least_zero(name: &str, v: c_int, max: c_int) -> Result<u32, String> {
    if !(0..=max).contains(&v) {
        Err(format!("modparam {name} must be 0 (off) to {max}, got {v}"))
    } else {
        Ok(v as u32)
    }
}

fn positive(name: &str, v: c_int) -> Result<u32, String> {
    if v <= 0 {
        Err(format!("modparam {name} must be a positive number of seconds, got {v}"))
    } else {
        Ok(v as u32)
    }
}

impl Config {
    pub fn load() -> Result<Config, String> {
        let hts = HASH_TABLE_SIZE.read();
        // like the C module: 2^hash_table_size slots, 2^9 by default
        let log2_slots = if hts > 0 { hts as u32 } else { 9 };
        if log2_slots > 20 {
            return Err(format!("modparam hash_table_size {hts} is too large (at most 20: 2^20 slots)"));
        }
        let onhold_bflag = ONHOLD_BFLAG.read();
        if onhold_bflag > 31 {
            return Err(format!("modparam onhold_bflag {onhold_bflag} > 31"));
        }
        let ska = SUBSCRIBER_KEEPALIVE_INTERVAL.read();
        if ska < 0 {
            return Err(format!("modparam subscriber_keepalive_interval must be >= 0 seconds (0: off), got {ska}"));
        }
        let dmq = match ENABLE_DMQ.read() {
            0 => None,
            1 => {
                let id = DMQ_NODE_ID.read();
                if !(0..=sca_core::cluster::MAX_NODE_ID as c_int).contains(&id) {
                    return Err(format!(
                        "modparam dmq_node_id must be 1 to {} (0: derived from dmq's server_address), got {id}",
                        sca_core::cluster::MAX_NODE_ID
                    ));
                }
                let chunk = DMQ_SYNC_CHUNK_BYTES.read();
                if !(1024..=60000).contains(&chunk) {
                    return Err(format!("modparam dmq_sync_chunk_bytes must be 1024 to 60000, got {chunk}"));
                }
                Some(DmqConfig {
                    node_id: id as u32,
                    sync_chunk_bytes: chunk as u32,
                    tombstone_ttl: positive("dmq_tombstone_ttl", DMQ_TOMBSTONE_TTL.read())?,
                    sync_timeout: positive("dmq_sync_timeout", DMQ_SYNC_TIMEOUT.read())?,
                    sync_retries: match DMQ_SYNC_RETRIES.read() {
                        r @ 0..=100 => r as u32,
                        r => return Err(format!("modparam dmq_sync_retries must be 0 to 100, got {r}")),
                    },
                    sync_wait: match DMQ_SYNC_WAIT.read() {
                        w @ 0..=3600 => w as u32,
                        w => return Err(format!("modparam dmq_sync_wait must be 0 (off) to 3600 seconds, got {w}")),
                    },
                    digest_interval: match DMQ_DIGEST_INTERVAL.read() {
                        d @ 0..=3600 => d as u32,
                        d => return Err(format!("modparam dmq_digest_interval must be 0 (off) to 3600 seconds, got {d}")),
                    },
                })
            }
            v => return Err(format!("modparam enable_dmq must be 0 or 1, got {v}")),
        };
        let limits = Limits {
            max_seized_per_contact: at_least_zero("max_seized_per_contact", MAX_SEIZED_PER_CONTACT.read(), c_int::MAX)?,
            max_subs_per_aor: at_least_zero("max_subs_per_aor", MAX_SUBS_PER_AOR.read(), c_int::MAX)?,
            max_subs_per_contact: at_least_zero("max_subs_per_contact", MAX_SUBS_PER_CONTACT.read(), c_int::MAX)?,
            max_appearance_index: at_least_zero("max_appearance_index", MAX_APPEARANCE_INDEX.read(), c_int::MAX)?,
            max_subscriptions: at_least_zero("max_subscriptions", MAX_SUBSCRIPTIONS.read(), c_int::MAX)?,
            min_free_shm_percent: at_least_zero("min_free_shm_percent", MIN_FREE_SHM_PERCENT.read(), 90)?,
        };
        Ok(Config {
            limits,
            members_table: opt_str(&MEMBERS_TABLE),
            members_db_url: opt_str(&MEMBERS_DB_URL),
            dmq,
            subscriber_keepalive_interval: ska as u32,
            log2_slots,
            call_info_max_expires: positive("call_info_max_expires", CALL_INFO_MAX_EXPIRES.read())?,
            line_seize_max_expires: positive("line_seize_max_expires", LINE_SEIZE_MAX_EXPIRES.read())?,
            purge_expired_interval: positive("purge_expired_interval", PURGE_EXPIRED_INTERVAL.read())?,
            seized_ttl: positive("seized_ttl", SEIZED_TTL.read())?,
            db_update_interval: positive("db_update_interval", DB_UPDATE_INTERVAL.read())?,
            db_restore_direct: at_least_zero("db_restore_direct", DB_RESTORE_DIRECT.read(), 1)? == 1,
            onhold_bflag,
            db_url: opt_str(&DB_URL),
            subs_table: opt_str(&SUBS_TABLE).unwrap_or_else(|| b"sca_subscriptions".to_vec()),
            state_table: opt_str(&STATE_TABLE).unwrap_or_else(|| b"sca_state".to_vec()),
            outbound_proxy: opt_str(&OUTBOUND_PROXY),
            server_address: opt_str(&SERVER_ADDRESS),
            contact_fallback: opt_str(&CONTACT_FALLBACK),
            from_uri_avp: avp("from_uri_avp", &FROM_URI_AVP)?,
            to_uri_avp: avp("to_uri_avp", &TO_URI_AVP)?,
        })
    }
}
