//! `kamcmd sca.*` commands.

use core::ffi::c_void;

use sca_core::model::EventType;

use crate::host::export::{rpc, HostCell, RpcDoc, RPC_END};
use crate::host::guard::guard_or;
use crate::host::rpc::Rpc;
use crate::module::shared;
use crate::sys;

static DOC_SUBSCRIPTION_COUNT: RpcDoc =
    RpcDoc::new(c"show count of call-info or line-seize subscriptions");

pub static RPCS: HostCell<[sys::rpc_export_t; 2]> = HostCell::new([
    rpc(c"sca.subscription_count", rpc_subscription_count, DOC_SUBSCRIPTION_COUNT.ptr()),
    RPC_END,
]);

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
