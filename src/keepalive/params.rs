//! Keepalive module parameters, under `modparam("sca_rs", ...)`: the C
//! keepalive module's (`ping_interval`, `destination`, `ping_from`,
//! `delete_counter`, same defaults) and sca_rs extensions starting with
//! `ka_`, whose defaults keep the C behaviour.

use core::ffi::{c_int, c_void};
use std::sync::Mutex;

use crate::entry;
use crate::host::export::{param, HostCell, ParamExport, StrParam, PARAM_INT, PARAM_STR, PARAM_STRING, PARAM_USE_FUNC};
use crate::host::entry::CStrArg;
use crate::host::raw;

pub static PING_INTERVAL: HostCell<c_int> = HostCell::new(30);
pub static PING_FROM: StrParam = StrParam::new();
pub static DELETE_COUNTER: HostCell<c_int> = HostCell::new(5);
pub static DOWN_THRESHOLD: HostCell<c_int> = HostCell::new(1);
pub static UP_THRESHOLD: HostCell<c_int> = HostCell::new(1);
pub static ALIVE_CODES: StrParam = StrParam::new();
pub static LIST_STATS: HostCell<c_int> = HostCell::new(0);

/// `destination` values in config order; read once by mod_init. Written
/// while the config is parsed (main process, before fork).
static INITIAL: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// The C module's default From of pings.
pub const DEFAULT_PING_FROM: &[u8] = b"sip:keepalive@kamailio.org";

/// Entries for the module's parameter table (src/module/params.rs).
pub const PARAMS: [ParamExport; 8] = [
    param(c"ping_interval", PARAM_INT, PING_INTERVAL.get() as *mut c_void),
    param(c"destination", PARAM_STRING | PARAM_USE_FUNC, param_destination as *mut c_void),
    param(c"ping_from", PARAM_STR, PING_FROM.ptr()),
    param(c"delete_counter", PARAM_INT, DELETE_COUNTER.get() as *mut c_void),
    param(c"ka_down_threshold", PARAM_INT, DOWN_THRESHOLD.get() as *mut c_void),
    param(c"ka_up_threshold", PARAM_INT, UP_THRESHOLD.get() as *mut c_void),
    param(c"ka_alive_codes", PARAM_STR, ALIVE_CODES.ptr()),
    param(c"ka_list_stats", PARAM_INT, LIST_STATS.get() as *mut c_void),
];

entry! {
    /// `modparam("sca_rs", "destination", "...")`: one more destination,
    /// monitored from start-up with owner `_params` (added in mod_init, when
    /// shared memory and timers are ready; the C module's crash #2476 came
    /// from doing it here). Called by Kamailio's config parser with a
    /// NUL-terminated string.
    c fn param_destination(_type: raw::modparam_t, val: CStrArg) -> c_int ["modparam destination", -1] {
        // PARAM_STRING: a NUL-terminated string from the config
        let Some(v) = val.get().map(<[u8]>::to_vec) else { return -1 };
        match INITIAL.lock() {
            Ok(mut l) => {
                l.push(v);
                0
            }
            Err(_) => -1,
        }
    }
}

pub(crate) fn take_initial_destinations() -> Vec<Vec<u8>> {
    INITIAL.lock().map(|mut l| std::mem::take(&mut *l)).unwrap_or_default()
}

/// Raw parameter values, read in mod_init.
pub struct Raw {
    pub ping_interval: i32,
    pub ping_from: Vec<u8>,
    pub delete_counter: i32,
    pub down_threshold: i32,
    pub up_threshold: i32,
    pub alive_codes: Option<String>,
    pub list_stats: i32,
}

fn opt_str(c: &StrParam) -> Option<Vec<u8>> {
    c.value()
}

pub fn read() -> Result<Raw, String> {
    let alive_codes = match opt_str(&ALIVE_CODES) {
        None => None,
        Some(b) => Some(String::from_utf8(b).map_err(|_| "modparam ka_alive_codes is not text".to_string())?),
    };
    Ok(Raw {
        ping_interval: PING_INTERVAL.read(),
        ping_from: opt_str(&PING_FROM).unwrap_or_else(|| DEFAULT_PING_FROM.to_vec()),
        delete_counter: DELETE_COUNTER.read(),
        down_threshold: DOWN_THRESHOLD.read(),
        up_threshold: UP_THRESHOLD.read(),
        alive_codes,
        list_stats: LIST_STATS.read(),
    })
}
