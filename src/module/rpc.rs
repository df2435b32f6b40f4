//! `kamcmd sca.*` commands.

use core::ffi::c_void;

use sca_core::model::EventType;
use sca_core::parse::uri;

use crate::host::export::{rpc, HostCell, RpcDoc, RPC_END};
use crate::host::guard::guard_or;
use crate::host::rpc::Rpc;
use crate::module::shared;
use crate::sys;

static DOC_SUBSCRIPTION_COUNT: RpcDoc =
    RpcDoc::new(c"show count of call-info or line-seize subscriptions");

static DOC_ALL_SUBSCRIPTIONS: RpcDoc = RpcDoc::new(c"Show all shared call appearance subscriptions");
static DOC_ALL_APPEARANCES: RpcDoc =
    RpcDoc::new(c"Show appearance state for all SCA accounts of record (AoR)");
static DOC_SHOW_APPEARANCE: RpcDoc =
    RpcDoc::new(c"Show appearance state for a single SCA account of record (AoR)");

pub static RPCS: HostCell<[sys::rpc_export_t; 5]> = HostCell::new([
    rpc(c"sca.all_subscriptions", rpc_all_subscriptions, DOC_ALL_SUBSCRIPTIONS.ptr()),
    rpc(c"sca.subscription_count", rpc_subscription_count, DOC_SUBSCRIPTION_COUNT.ptr()),
    rpc(c"sca.all_appearances", rpc_all_appearances, DOC_ALL_APPEARANCES.ptr()),
    rpc(c"sca.show_appearance", rpc_show_appearance, DOC_SHOW_APPEARANCE.ptr()),
    RPC_END,
]);

fn lossy(b: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(b)
}

/// One line per subscription, as the C module prints them:
/// `<aor user> <subscriber host[:port]> <event> <seconds left> <state>`.
unsafe extern "C" fn rpc_all_subscriptions(api: *mut sys::rpc_t, ctx: *mut c_void) {
    with_rpc("sca.all_subscriptions", api, ctx, |r| {
        let Some(st) = shared() else {
            r.fault(500, "Empty subscription table!");
            return;
        };
        let now = crate::module::subscribe::now();
        let mut lines = Vec::new();
        st.store.for_each_aor(|e| {
            for sub in e.subs.iter() {
                let line = match (uri::parts(e.aor()), uri::parts(sub.subscriber())) {
                    (Ok(a), Ok(s)) => format!(
                        "{} {}{}{} {} {} {}",
                        lossy(a.user),
                        lossy(s.host),
                        if s.port.is_some() { ":" } else { "" },
                        lossy(s.port.unwrap_or_default()),
                        sub.event.name(),
                        sub.expires - now,
                        sub.state.as_str()
                    ),
                    _ => format!(
                        "{} {} {} {} {}",
                        lossy(e.aor()),
                        lossy(sub.subscriber()),
                        sub.event.name(),
                        sub.expires,
                        sub.state.as_str()
                    ),
                };
                lines.push(line);
            }
        });
        // printed after the slot locks are released
        for l in lines {
            if r.printf(&l).is_err() {
                return;
            }
        }
    })
}

fn appearance_lines(e: &sca_core::store::AorEntry<crate::host::shm::Shm>, out: &mut Vec<String>) {
    for a in e.apps.iter() {
        let d = a.dialog();
        out.push(format!(
            "{} {} {} {} {} {} {} {} {}",
            lossy(e.aor()),
            a.index,
            a.state.as_str(),
            a.mtime,
            lossy(a.owner()),
            lossy(a.callee()),
            lossy(d.call_id),
            lossy(d.from_tag),
            lossy(d.to_tag)
        ));
    }
}

/// One line per in-use appearance, as the C module prints them:
/// `<aor> <index> <state> <mtime> <owner> <callee> <call-id> <from-tag> <to-tag>`.
unsafe extern "C" fn rpc_all_appearances(api: *mut sys::rpc_t, ctx: *mut c_void) {
    with_rpc("sca.all_appearances", api, ctx, |r| {
        let Some(st) = shared() else { return };
        let mut lines = Vec::new();
        st.store.for_each_aor(|e| appearance_lines(e, &mut lines));
        for l in lines {
            if r.printf(&l).is_err() {
                return;
            }
        }
    })
}

/// The appearances of one AoR, in `sca.all_appearances`' format. (The C
/// module 5.6.3 answers this command with a fault: not implemented.)
unsafe extern "C" fn rpc_show_appearance(api: *mut sys::rpc_t, ctx: *mut c_void) {
    with_rpc("sca.show_appearance", api, ctx, |r| {
        let Some(st) = shared() else { return };
        let Some(aor) = r.scan_str() else {
            r.fault(500, "usage: sca.show_appearance sip:user@domain");
            return;
        };
        let g = st.store.lock_aor(&aor);
        let Some(e) = g.entry().filter(|e| e.shared) else {
            drop(g);
            r.fault(404, &format!("{} is not a shared appearance", lossy(&aor)));
            return;
        };
        let mut lines = Vec::new();
        appearance_lines(e, &mut lines);
        drop(g);
        for l in lines {
            if r.printf(&l).is_err() {
                return;
            }
        }
    })
}

/// Run an RPC body with the panic guard and a checked context.
fn with_rpc(name: &str, api: *mut sys::rpc_t, ctx: *mut c_void, f: impl FnOnce(&Rpc)) {
    guard_or(name, (), || {
        // SAFETY: Kamailio passes its rpc_t and context for this call.
        if let Some(r) = unsafe { Rpc::new(api, ctx) } {
            f(&r)
        }
    })
}

unsafe extern "C" fn rpc_subscription_count(api: *mut sys::rpc_t, ctx: *mut c_void) {
    with_rpc("sca.subscription_count", api, ctx, |r| {
        const USAGE: &str = "usage: sca.subscription_count {call-info | line-seize}";
        let Some(st) = shared() else {
            r.fault(500, "Empty subscription table!");
            return;
        };
        let Some(name) = r.scan_str() else {
            r.fault(500, USAGE);
            return;
        };
        let Some(event) = EventType::from_name(&name) else {
            r.fault(500, USAGE);
            return;
        };
        let n = st.store.subscription_count(event);
        let _ = r.printf(&format!("{n} {}", String::from_utf8_lossy(&name)));
    })
}
