//! Periodic work in Kamailio's timer process (every
//! `purge_expired_interval` seconds, like the C module): expired
//! subscriptions, and appearances stuck in seized or active-pending.

use sca_core::model::{EventType, SubState};
use sca_core::parse::appearance::AppearanceState;

use crate::host::log::B;
use crate::module::{config, notify, shared, subscribe::now};
use crate::{entry, lm_info};

pub fn register(interval: u32) -> Result<(), String> {
    if crate::host::proc::register_timer(purge, interval).is_err() {
        Err("cannot register the purge timer".into())
    } else {
        Ok(())
    }
}

entry! {
    timer fn purge("purge timer") {
        let (Some(st), Some(cfg)) = (shared(), config()) else { return };
        let now = now();
        let mut call_info = Vec::new();
        st.store.retain_aors(|entry| {
            let aor = entry.aor().to_vec();
            let mut group_changed = false;
            let mut i = 0;
            while i < entry.subs.len() {
                if entry.subs[i].expires > now {
                    i += 1;
                    continue;
                }
                let mut sub = entry.subs.swap_remove(i);
                // its row goes with it (in the next DB write)
                if sub.needs_db_delete() {
                    st.add_tombstone(&aor, sub.subscriber(), sub.event);
                }
                // each node expires its copies; the NOTIFY is the origin's
                if !sub.state.is_terminated() && crate::module::cluster::is_local(sub.ver) {
                    // like the C module: a last NOTIFY saying why it ended
                    sub.state = SubState::TerminatedTimeout;
                    sub.expires = 0;
                    sub.notify_cseq = sub.notify_cseq.wrapping_add(1);
                    call_info.clear();
                    if notify::call_info_header(entry, sub.event, sub.index, &mut call_info).is_ok() {
                        let _ = notify::send(cfg, &sub.to_rec(&aor), &call_info, now);
                    }
                    // an expired line-seize frees a line that is only seized
                    if sub.event == EventType::LineSeize && sub.index > 0 {
                        let idx = sub.index as u32;
                        if entry.apps.get(idx).is_some_and(|a| a.state == AppearanceState::Seized) {
                            entry.apps.release(idx);
                            group_changed = true;
                        }
                    }
                }
                lm_info!("{} subscription from {} expired, deleting", sub.event.name(), B(sub.subscriber()));
            }
            if entry.apps.purge_stale(now) > 0 {
                lm_info!("purged stale appearances of {}", B(&aor));
                group_changed = true;
            }
            if group_changed {
                notify::notify_group(cfg, entry, now);
            }
        });
    }
}
