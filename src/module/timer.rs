//! Periodic work in Kamailio's timer process: expired subscriptions.

use core::ffi::c_void;

use sca_core::model::SubState;

use crate::host::guard::guard_or;
use crate::host::log::B;
use crate::module::{config, notify, shared, subscribe::now};
use crate::{lm_info, sys};

pub fn register(interval: u32) -> Result<(), String> {
    // SAFETY: called from mod_init, where timers must be registered.
    let rc = unsafe { sys::register_timer(Some(purge_expired), core::ptr::null_mut(), interval) };
    if rc < 0 {
        Err("cannot register the purge timer".into())
    } else {
        Ok(())
    }
}

unsafe extern "C" fn purge_expired(_ticks: u32, _param: *mut c_void) {
    guard_or("purge timer", (), || {
        let (Some(st), Some(cfg)) = (shared(), config()) else { return };
        let now = now();
        let mut call_info = Vec::new();
        st.store.retain_aors(|entry| {
            let aor = entry.aor().to_vec();
            entry.subs.retain_mut(|sub| {
                if sub.expires > now {
                    return true;
                }
                if !sub.state.is_terminated() {
                    // like the C module: a last NOTIFY saying why it ended
                    sub.state = SubState::TerminatedTimeout;
                    sub.expires = 0;
                    sub.notify_cseq = sub.notify_cseq.wrapping_add(1);
                    call_info.clear();
                    let rec = sub.to_rec(&aor);
                    if notify::idle_call_info_header(&rec, &mut call_info).is_ok() {
                        let _ = notify::send(cfg, &rec, &call_info, now);
                    }
                }
                lm_info!("{} subscription from {} expired, deleting", sub.event.name(), B(sub.subscriber()));
                false
            });
        });
    })
}
