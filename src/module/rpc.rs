//! `kamcmd sca.*` commands.

use sca_core::model::EventType;
use sca_core::parse::uri;

use crate::entry;
use crate::host::export::{rpc, HostCell, RpcDoc, RpcExport, RPC_END};
use crate::host::rpc::Rpc;
use crate::module::shared;

static DOC_SUBSCRIPTION_COUNT: RpcDoc =
    RpcDoc::new(c"show count of call-info or line-seize subscriptions");

static DOC_ALL_SUBSCRIPTIONS: RpcDoc = RpcDoc::new(c"Show all shared call appearance subscriptions");
static DOC_ALL_APPEARANCES: RpcDoc =
    RpcDoc::new(c"Show appearance state for all SCA accounts of record (AoR)");
static DOC_SHOW_APPEARANCE: RpcDoc =
    RpcDoc::new(c"Show appearance state for a single SCA account of record (AoR)");

static DOC_SHOW_SUBSCRIPTION: RpcDoc =
    RpcDoc::new(c"Show details of a single shared call appearance subscription");
static DOC_SUBSCRIBERS: RpcDoc = RpcDoc::new(c"Show contact URIs for all call-info subscribers");
static DOC_DEACTIVATE_ALL: RpcDoc = RpcDoc::new(
    c"Send NOTIFYs with Subscription-State: terminated;reason=deactivated to all subscribers",
);
static DOC_DEACTIVATE: RpcDoc = RpcDoc::new(
    c"Send NOTIFY with Subscription-State: terminated;reason=deactivated to a single subscriber",
);
static DOC_SEIZE: RpcDoc = RpcDoc::new(c"Seize an appearance on an SCA line");
static DOC_UPDATE: RpcDoc = RpcDoc::new(c"Update the state of a seized appearance on an SCA line");
static DOC_LIVENESS: RpcDoc = RpcDoc::new(
    c"Subscriber liveness (sca_rs): phones monitored, declared dead, subscriptions ended, lines released",
);
static DOC_CLUSTER: RpcDoc = RpcDoc::new(
    c"Cluster replication over DMQ (sca_rs): this node, its full sync, messages sent, received, rejected, conflicts",
);
static DOC_LIMITS: RpcDoc = RpcDoc::new(
    c"Bounds on seizes and subscriptions (sca_rs): the limits, subscriptions counted, shm free, refusals by kind",
);
static DOC_RELOAD_MEMBERS: RpcDoc =
    RpcDoc::new(c"Reload the shared-AoR memberships from members_table (sca_rs)");
static DOC_RELEASE: RpcDoc = RpcDoc::new(c"Release a seized or active SCA appearance");

pub static RPCS: HostCell<[RpcExport; 16 + 5]> = HostCell::new([
    rpc(c"sca.all_subscriptions", rpc_all_subscriptions, DOC_ALL_SUBSCRIPTIONS.ptr()),
    rpc(c"sca.subscription_count", rpc_subscription_count, DOC_SUBSCRIPTION_COUNT.ptr()),
    rpc(c"sca.show_subscription", rpc_show_subscription, DOC_SHOW_SUBSCRIPTION.ptr()),
    rpc(c"sca.subscribers", rpc_subscribers, DOC_SUBSCRIBERS.ptr()),
    rpc(c"sca.deactivate_all_subscriptions", rpc_deactivate_all, DOC_DEACTIVATE_ALL.ptr()),
    rpc(c"sca.deactivate_subscription", rpc_deactivate, DOC_DEACTIVATE.ptr()),
    rpc(c"sca.all_appearances", rpc_all_appearances, DOC_ALL_APPEARANCES.ptr()),
    rpc(c"sca.show_appearance", rpc_show_appearance, DOC_SHOW_APPEARANCE.ptr()),
    rpc(c"sca.seize_appearance", rpc_seize_appearance, DOC_SEIZE.ptr()),
    rpc(c"sca.update_appearance", rpc_update_appearance, DOC_UPDATE.ptr()),
    rpc(c"sca.release_appearance", rpc_release_appearance, DOC_RELEASE.ptr()),
    rpc(c"sca.subscriber_liveness", rpc_liveness, DOC_LIVENESS.ptr()),
    rpc(c"sca.cluster", rpc_cluster, DOC_CLUSTER.ptr()),
    rpc(c"sca.limits", rpc_limits, DOC_LIMITS.ptr()),
    rpc(c"sca.reload_members", rpc_reload_members, DOC_RELOAD_MEMBERS.ptr()),
    // keepalive: keepalive.list, .add, .del, .get, .flush
    crate::keepalive::rpc::RPCS[0],
    crate::keepalive::rpc::RPCS[1],
    crate::keepalive::rpc::RPCS[2],
    crate::keepalive::rpc::RPCS[3],
    crate::keepalive::rpc::RPCS[4],
    RPC_END,
]);

fn lossy(b: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(b)
}

entry! {
    /// One line per subscription, as the C module prints them:
    /// `<aor user> <subscriber host[:port]> <event> <seconds left> <state>`.
    rpc fn rpc_all_subscriptions("sca.all_subscriptions", r) {
        let Some(st) = shared() else {
            r.fault(500, "Empty subscription table!");
            return;
        };
        let now = crate::module::subscribe::now();
        let mut lines = Vec::new();
        st.store.for_each_aor(|e| {
            for sub in e.subs().iter() {
                let line = match (uri::parts(e.aor()), uri::parts(sub.subscriber())) {
                    (Ok(a), Ok(s)) => format!(
                        "{} {}{}{} {} {} {}",
                        lossy(a.user),
                        lossy(s.host),
                        if s.port.is_some() { ":" } else { "" },
                        lossy(s.port.unwrap_or_default()),
                        sub.event().name(),
                        sub.expires() - now,
                        sub.state().as_str()
                    ),
                    _ => format!(
                        "{} {} {} {} {}",
                        lossy(e.aor()),
                        lossy(sub.subscriber()),
                        sub.event().name(),
                        sub.expires(),
                        sub.state().as_str()
                    ),
                };
                lines.push(match crate::module::cluster::node_field(sub.ver()) {
                    Some(n) => format!("{line} node={n}"),
                    None => line,
                });
            }
        });
        // printed after the slot locks are released
        for l in lines {
            if r.printf(&l).is_err() {
                return;
            }
        }
    }
}

fn appearance_lines(e: &sca_core::store::AorEntry<crate::host::shm::Shm>, out: &mut Vec<String>) {
    for a in e.apps().iter() {
        let d = a.dialog();
        // sca_rs only, and only when set: the owner's phone stopped
        // answering during the call (subscriber liveness)
        let unreachable = a.flags & sca_core::appearance::FLAG_OWNER_UNREACHABLE != 0;
        // with clustering: the node whose seize made it
        let node = crate::module::cluster::node_field(a.inc).map(|n| format!(" node={n}")).unwrap_or_default();
        out.push(format!(
            "{} {} {} {} {} {} {} {} {}{}{}",
            lossy(e.aor()),
            a.index,
            a.state.as_str(),
            a.mtime,
            lossy(a.owner()),
            lossy(a.callee()),
            lossy(d.call_id),
            lossy(d.from_tag),
            lossy(d.to_tag),
            if unreachable { " owner-unreachable" } else { "" },
            node
        ));
    }
}

entry! {
    /// `sca.subscriber_liveness`: `name value` lines.
    rpc fn rpc_liveness("sca.subscriber_liveness", r) {
        if !crate::module::liveness::enabled() {
            r.fault(500, "subscriber liveness is off (modparam subscriber_keepalive_interval)");
            return;
        }
        print_lines(r, crate::module::liveness::rpc_lines());
    }
}

entry! {
    /// `sca.reload_members`: `members N`; a fault (and the old set kept)
    /// when the table cannot be read.
    rpc fn rpc_reload_members("sca.reload_members", r) {
        match crate::module::members::reload() {
            Ok(n) => {
                let _ = r.printf(&format!("members {n}"));
            }
            Err(e) => r.fault(500, &e),
        }
    }
}

entry! {
    /// `sca.limits`: `name value` lines (docs/security.md).
    rpc fn rpc_limits("sca.limits", r) {
        match crate::module::config() {
            Some(cfg) => print_lines(r, crate::module::limits::rpc_lines(&cfg.limits)),
            None => r.fault(500, "sca_rs is not initialised"),
        }
    }
}

entry! {
    /// `sca.cluster`: `name value` lines (docs/cluster.md).
    rpc fn rpc_cluster("sca.cluster", r) {
        match crate::module::cluster::rpc_lines() {
            Ok(lines) => print_lines(r, lines),
            Err(e) => r.fault(500, e),
        }
    }
}

entry! {
    /// One line per in-use appearance, as the C module prints them:
    /// `<aor> <index> <state> <mtime> <owner> <callee> <call-id> <from-tag> <to-tag>`.
    rpc fn rpc_all_appearances("sca.all_appearances", r) {
        let Some(st) = shared() else { return };
        let mut lines = Vec::new();
        st.store.for_each_aor(|e| appearance_lines(e, &mut lines));
        for l in lines {
            if r.printf(&l).is_err() {
                return;
            }
        }
    }
}

entry! {
    /// The appearances of one AoR, in `sca.all_appearances`' format. (The C
    /// module 5.6.3 answers this command with a fault: not implemented.)
    rpc fn rpc_show_appearance("sca.show_appearance", r) {
        let Some(st) = shared() else { return };
        let Some(aor) = r.scan_str() else {
            r.fault(500, "usage: sca.show_appearance sip:user@domain");
            return;
        };
        let g = st.store.lock_aor(&aor);
        let Some(e) = g.entry().filter(|e| e.is_shared()) else {
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
    }
}

entry! {
    rpc fn rpc_subscription_count("sca.subscription_count", r) {
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
    }
}

fn print_lines(r: &Rpc, lines: Vec<String>) {
    for l in lines {
        if r.printf(&l).is_err() {
            return;
        }
    }
}

entry! {
    /// `sca.show_subscription AOR EVENT [CONTACT]`: `<aor> <event> <subscriber>
    /// <expires>` per match, like the C module prints it (C 5.6.3 compares the
    /// AoR with the wrong field and rarely finds anything; we match properly).
    rpc fn rpc_show_subscription("sca.show_subscription", r) {
        const USAGE: &str = "usage: sca.show_subscription sip:user@domain {call-info | line-seize} [sip:user@IP]";
        let Some(st) = shared() else { return r.fault(500, "Empty subscription table!") };
        let (Some(aor), Some(ev)) = (r.scan_str(), r.scan_str()) else { return r.fault(500, USAGE) };
        let Some(event) = EventType::from_name(&ev) else { return r.fault(500, USAGE) };
        let contact = r.scan_str();
        let g = st.store.lock_aor(&aor);
        let lines: Vec<String> = g
            .entry()
            .map(|e| {
                e.subs_of(event)
                    .filter(|s| contact.as_deref().is_none_or(|c| c == s.subscriber()))
                    .map(|s| format!("{} {} {} {}", lossy(e.aor()), event.name(), lossy(s.subscriber()), s.expires()))
                    .collect()
            })
            .unwrap_or_default();
        drop(g);
        print_lines(r, lines);
    }
}

entry! {
    /// `sca.subscribers`: `<aor> <subscriber contact>` per call-info
    /// subscription (C 5.6.3: fault 600, not implemented).
    rpc fn rpc_subscribers("sca.subscribers", r) {
        let Some(st) = shared() else { return r.fault(500, "Empty subscription table!") };
        let mut lines = Vec::new();
        st.store.for_each_aor(|e| {
            for s in e.subs_of(EventType::CallInfo) {
                lines.push(format!("{} {}", lossy(e.aor()), lossy(s.subscriber())));
            }
        });
        print_lines(r, lines);
    }
}

/// End subscriptions with `terminated;reason=deactivated` (a last NOTIFY
/// each); `filter` picks them. Like the C module, they stay in the table,
/// terminated and expired, until the purge timer drops them. The line each
/// gets is the C module's.
fn deactivate(st: &crate::module::Shared, filter: impl Fn(&[u8], &[u8]) -> bool) -> Vec<String> {
    let now = crate::module::subscribe::now();
    let mut lines = Vec::new();
    crate::module::effects::for_each_aor(st, now, |ed| {
        let Some(mut ed) = ed.core() else { return };
        let aor = ed.entry().aor().to_vec();
        // each node deactivates the subscriptions it NOTIFYs
        let ended = ed.deactivate(|s| filter(&aor, s.subscriber()) && crate::module::effects::is_local(s.ver()));
        for (event, subscriber) in ended {
            lines.push(format!("Deactivating {} subscription from {}", event.name(), lossy(&subscriber)));
        }
    });
    lines
}

entry! {
    rpc fn rpc_deactivate_all("sca.deactivate_all_subscriptions", r) {
        let Some(st) = shared() else { return r.fault(500, "Empty subscription table!") };
        let lines = deactivate(st, |_, _| true);
        print_lines(r, lines);
    }
}

entry! {
    /// `sca.deactivate_subscription AOR CONTACT` (C 5.6.3: not implemented).
    rpc fn rpc_deactivate("sca.deactivate_subscription", r) {
        const USAGE: &str = "usage: sca.deactivate_subscription sip:user@domain sip:user@IP";
        let Some(st) = shared() else { return r.fault(500, "Empty subscription table!") };
        let (Some(aor), Some(contact)) = (r.scan_str(), r.scan_str()) else { return r.fault(500, USAGE) };
        let lines = deactivate(st, |a, s| a == aor.as_slice() && s == contact.as_slice());
        if lines.is_empty() {
            return r.fault(404, &format!("no subscription of {} for {}", lossy(&contact), lossy(&aor)));
        }
        print_lines(r, lines);
    }
}

/// Lock `aor`, run `f` on its entry if it is a shared appearance, then
/// NOTIFY the group; Err(fault message) otherwise.
fn with_shared_aor(
    aor: &[u8],
    create: bool,
    f: impl FnOnce(&mut sca_core::change::AorEdit<'_, crate::host::shm::Shm>, i64) -> Result<String, String>,
) -> Result<String, String> {
    let Some(st) = shared() else { return Err("not initialised".into()) };
    let now = crate::module::subscribe::now();
    let mut g = crate::module::effects::edit(st, aor, now);
    if create {
        // like the C module's seize: the AoR becomes a shared appearance
        g.core_or_insert().map_err(|_| "out of shared memory".to_string())?.set_shared();
    }
    let Some(mut ed) = g.core().filter(|ed| ed.entry().is_shared()) else {
        return Err(format!("No appearances for {}", lossy(aor)));
    };
    let line = f(&mut ed, now)?;
    ed.notify_group();
    Ok(line)
}

entry! {
    rpc fn rpc_seize_appearance("sca.seize_appearance", r) {
        let (Some(aor), Some(owner)) = (r.scan_str(), r.scan_str()) else {
            return r.fault(500, "usage: sca.seize_appearance sip:user@domain");
        };
        let res = with_shared_aor(&aor, true, |e, now| {
            let idx = e.seize(None, &owner, now).map_err(|_| "Failed to seize line".to_string())?;
            Ok(format!("Seized {} appearance-index {idx} for {}", lossy(&aor), lossy(&owner)))
        });
        match res {
            Ok(l) => drop(r.printf(&l)),
            Err(e) => r.fault(500, &e),
        }
    }
}

entry! {
    rpc fn rpc_update_appearance("sca.update_appearance", r) {
        const USAGE: &str = "Usage: sca.update_appearance sip:user@domain appearance-index appearance-state [appearance-uri]";
        let (Some(aor), Some(idx), Some(state)) = (r.scan_str(), r.scan_int(), r.scan_str()) else {
            return r.fault(500, USAGE);
        };
        let uri = r.scan_str();
        let Some(state) = sca_core::parse::appearance::AppearanceState::from_bytes(&state)
            .filter(|s| *s != sca_core::parse::appearance::AppearanceState::Unknown)
        else {
            return r.fault(500, &format!("{}: invalid state", lossy(&state)));
        };
        let res = with_shared_aor(&aor, false, |e, now| {
            let app = u32::try_from(idx).ok().and_then(|i| e.app_mut(i));
            let Some(app) = app else { return Err(format!("Failed to update {} appearance-index {idx}", lossy(&aor))) };
            app.set_state(state, now);
            if let Some(u) = &uri {
                let mut v = Vec::new();
                sca_core::parse::format::write_appearance_uri(&mut v, None, u);
                let upd = sca_core::appearance::StrUpdate { uri: Some(&v), ..Default::default() };
                app.update_strs(&upd, crate::host::shm::Shm).map_err(|_| "out of shared memory".to_string())?;
            }
            Ok(String::new())
        });
        if let Err(e) = res {
            r.fault(500, &e);
        }
    }
}

entry! {
    rpc fn rpc_release_appearance("sca.release_appearance", r) {
        let (Some(aor), Some(idx)) = (r.scan_str(), r.scan_int()) else {
            return r.fault(500, "usage: sca.release_appearance user@domain appearance-index");
        };
        if idx <= 0 {
            return r.fault(500, "appearance-index must be > 0");
        }
        let res = with_shared_aor(&aor, false, |e, _| {
            if e.release(idx as u32) {
                Ok(String::new())
            } else {
                Err(format!("{} appearance index {idx} is not in use", lossy(&aor)))
            }
        });
        if let Err(e) = res {
            r.fault(500, &e);
        }
    }
}
