//! `keepalive.*` RPC commands, with the C module's output and faults
//! (`kamcmd` prints them alike), except `last up` / `last down`, which
//! the C module swapped (Kamailio issue #3790).

use sca_core::keepalive::DestInfo;

use crate::entry;
use crate::host::export::{rpc, RpcDoc, RpcExport};
use crate::host::rpc::{Rpc, RpcStruct};

use super::Hooks;

static DOC_LIST: RpcDoc = RpcDoc::new(c"Return the content of keepalive destination groups");
static DOC_ADD: RpcDoc = RpcDoc::new(
    c"add new destination to keepalive memory. Usage: keepalive.add sip:user@domain listname",
);
static DOC_DEL: RpcDoc = RpcDoc::new(
    c"delete destination from keepalive memory. Usage: keepalive.del sip:user@domain listname",
);
static DOC_GET: RpcDoc = RpcDoc::new(
    c"get destination details from keepalive memory. Usage: keepalive.get sip:user@domain listname",
);
static DOC_FLUSH: RpcDoc = RpcDoc::new(c"Flush data from keepalive memory. Usage: keepalive.flush");

/// Entries for the module's RPC table (src/module/rpc.rs).
pub const RPCS: [RpcExport; 5] = [
    rpc(c"keepalive.list", rpc_list, DOC_LIST.ptr()),
    rpc(c"keepalive.add", rpc_add, DOC_ADD.ptr()),
    rpc(c"keepalive.del", rpc_del, DOC_DEL.ptr()),
    rpc(c"keepalive.get", rpc_get, DOC_GET.ptr()),
    rpc(c"keepalive.flush", rpc_flush, DOC_FLUSH.ptr()),
];

/// The C module's fault when keepalive is not initialised: true when sent.
fn not_ready(r: &Rpc) -> bool {
    if super::shared().is_none() {
        r.fault(500, "keepalive is not initialised");
        return true;
    }
    false
}

/// A struct member as an int, clamped as the C module's int fields.
fn int(s: &RpcStruct<'_>, name: &str, v: i64) {
    let _ = s.int(name, v.clamp(i32::MIN as i64, i32::MAX as i64) as i32);
}

pub use crate::host::clock::ctime;

fn list_entry(r: &Rpc, d: &DestInfo<Hooks>, stats: bool) {
    let Some(s) = r.add_struct().ok() else { return };
    let _ = s.str("uri", &d.uri);
    let _ = s.str("owner", &d.owner);
    let _ = s.str("last checked", ctime(d.last_checked).as_bytes());
    let _ = s.str("last up", ctime(d.last_up).as_bytes());
    let _ = s.str("last down", ctime(d.last_down).as_bytes());
    int(&s, "state", d.state.code() as i64);
    if stats {
        int(&s, "pings", d.stats.pings as i64);
        int(&s, "replies", d.stats.replies as i64);
        int(&s, "timeouts", d.stats.timeouts as i64);
        int(&s, "errors", d.stats.send_errors as i64);
        int(&s, "failures in a row", d.fails as i64);
        int(&s, "latency last ms", d.stats.rtt_last_ms as i64);
        int(&s, "latency avg ms", d.stats.rtt_avg_ms() as i64);
        int(&s, "latency max ms", d.stats.rtt_max_ms as i64);
    }
}

entry! {
    rpc fn rpc_list("keepalive.list", r) {
        if not_ready(r) {
            return;
        }
        let stats = super::settings().is_some_and(|s| s.list_stats);
        // a copy taken under the lock (the C module walked the live list
        // without it)
        for d in super::with_table(|t| t.list()).unwrap_or_default() {
            list_entry(r, &d, stats);
        }
    }
}

/// The two arguments of add/del/get, or the C module's fault.
fn uri_and_owner(r: &Rpc) -> Option<(Vec<u8>, Vec<u8>)> {
    let (n, uri, owner) = r.scan_two_strs();
    if n < 2 {
        crate::lm_err!("not enough parameters - read so far: {n}");
        r.fault(500, "Not enough parameters or wrong format");
        return None;
    }
    if uri.is_empty() || owner.is_empty() {
        crate::lm_err!("parameter is len less than 1");
        r.fault(500, "parameter is len less than 1");
        return None;
    }
    Some((uri, owner))
}

entry! {
    rpc fn rpc_add("keepalive.add", r) {
        if not_ready(r) {
            return;
        }
        let Some((uri, owner)) = uri_and_owner(r) else { return };
        if super::add_code(&super::add_destination(&uri, &owner, 0, None, None)) < 0 {
            crate::lm_err!("couldn't add data to list");
            r.fault(500, "couldn't add data to list");
            return;
        }
        let _ = r.printf("Ok. Destination added.");
    }
}

entry! {
    rpc fn rpc_del("keepalive.del", r) {
        if not_ready(r) {
            return;
        }
        let Some((uri, owner)) = uri_and_owner(r) else { return };
        if !super::del_destination(&uri, &owner) {
            crate::lm_err!("couldn't delete data from list");
            r.fault(500, "couldn't delete data from list");
            return;
        }
        let _ = r.printf("Ok. Destination removed.");
    }
}

entry! {
    rpc fn rpc_get("keepalive.get", r) {
        if not_ready(r) {
            return;
        }
        let Some((uri, owner)) = uri_and_owner(r) else { return };
        let Some(d) = super::with_table(|t| t.get(&uri, &owner)).flatten() else {
            crate::lm_err!("Target is empty");
            r.fault(500, "couldn't get data from list");
            return;
        };
        let Some(s) = r.add_struct().ok() else { return };
        let _ = s.str("uri", &d.uri);
        let _ = s.str("owner", &d.owner);
        int(&s, "state", d.state.code() as i64);
    }
}

entry! {
    rpc fn rpc_flush("keepalive.flush", r) {
        if not_ready(r) {
            return;
        }
        let n = super::with_table(|t| t.flush()).unwrap_or(0);
        crate::lm_dbg!("keepalive flush: {n} destinations removed");
        let _ = r.printf("Ok. Destination list flushed.");
    }
}
