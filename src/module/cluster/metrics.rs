//! The cluster's Kamailio statistics (`module::metrics`): read from the
//! counters and state `sca.cluster` shows, never a copy of them.

use super::*;

/// A cluster counter by name (0 with the cluster off).
pub fn counter(name: &str) -> i64 {
    let Some(c) = cluster() else { return 0 };
    let k = &c.counters;
    let v = match name {
        "msgs_sent" => &k.tx_msgs,
        "msgs_send_failed" => &k.tx_failed,
        "msgs_received" => &k.rx_msgs,
        "msgs_rejected" => &k.rx_rejected,
        "conflicts_won" => &k.conflicts_won,
        "conflicts_lost" => &k.conflicts_lost,
        "seizes_refused_syncing" => &k.seizes_refused_syncing,
        "digests_sent" => &c.heal_counters.digests_sent,
        "digest_buckets_differed" => &c.heal_counters.buckets_differed,
        "heal_applied" => &c.heal_counters.heal_applied,
        _ => return 0,
    };
    v.load(Relaxed) as i64
}

/// The start-up sync: 0 cluster off, 1 idle (no peer yet), 2 requesting,
/// 3 synced, 4 failed.
pub fn sync_state() -> i64 {
    let Some(c) = cluster() else { return 0 };
    1 + c.sync.lock().phase as i64
}

/// Peers whose last KDMQ from us was answered 2xx, or, nothing sent to
/// them yet, that have sent us one.
pub fn peers_active() -> i64 {
    let Some(c) = cluster() else { return 0 };
    let peers = c.peers.lock();
    peers
        .iter()
        .filter(|p| p.addr_len > 0)
        .filter(|p| {
            if p.last_code == 0 {
                p.rx > 0
            } else {
                (200..300).contains(&p.last_code)
            }
        })
        .count() as i64
}
