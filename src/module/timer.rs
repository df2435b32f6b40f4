//! Periodic work in Kamailio's timer process (every
//! `purge_expired_interval` seconds, like the C module): expired
//! subscriptions, and appearances stuck in seized (`seized_ttl`) or
//! active-pending; the group of an AoR whose line the purge frees is
//! NOTIFYed (effects.rs), like any release.

use crate::host::log::B;
use crate::module::{config, effects, shared, subscribe::now};
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
        // every node expires its own copies at the same absolute times
        // (docs/cluster.md): nothing here is replicated, and a peer frees
        // an expired line-seize's line, or a line stuck in seized, as the
        // origin does (appearances carry their mtime to the peers)
        let seized_ttl = i64::from(cfg.seized_ttl);
        // ... and recounts the subscriptions for the bounds
        let census = crate::module::limits::state().map(|l| &l.census);
        let mut recount = census.map(|c| c.begin_recount());
        effects::sweep(st, cfg, now, |ed| {
            let stale = ed.expire_with(now, seized_ttl);
            if let Some(r) = recount.as_mut() {
                ed.entry().subs().iter().for_each(|s| r.count(s.subscriber()));
            }
            for x in &ed.changes().ended {
                lm_info!("{} subscription from {} expired, deleting", x.sub.event().name(), B(x.sub.subscriber()));
            }
            if stale > 0 {
                lm_info!("purged stale appearances of {}", B(ed.entry().aor()));
            }
        });
        if let (Some(c), Some(r)) = (census, recount) {
            c.finish_recount(r);
        }
    }
}
