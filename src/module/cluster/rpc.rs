//! `sca.cluster`.

use super::*;

/// `sca.cluster`: `name value` lines.
pub fn rpc_lines() -> Result<Vec<String>, &'static str> {
    let (Some(c), Some(n)) = (cluster(), node()) else {
        return Err("cluster is off (modparam enable_dmq)");
    };
    let (phase, source, chunks, records, retries, ms) = {
        let s = c.sync.lock();
        let ms = if s.finished_ms > 0 { s.finished_ms.saturating_sub(s.started_ms) } else { 0 };
        (s.phase, String::from_utf8_lossy(s.source()).into_owned(), s.chunks, s.records, s.retries, ms)
    };
    let k = &c.counters;
    let mut out = vec![
        "enabled 1".to_string(),
        format!("node_id {}", n.id),
        format!("node_uri {}", B(&n.uri)),
        format!("boot_id {}", n.boot_id),
        format!("proto {}", codec::PROTO),
        format!("sync_state {}", phase.name()),
        format!("sync_source {}", if source.is_empty() { "-" } else { &source }),
        format!("sync_chunks {chunks}"),
        format!("sync_records {records}"),
        format!("sync_retries {retries}"),
        format!("sync_ms {ms}"),
    ];
    for (name, v) in [
        ("tx_msgs", &k.tx_msgs),
        ("tx_bytes", &k.tx_bytes),
        ("tx_failed", &k.tx_failed),
        ("rx_msgs", &k.rx_msgs),
        ("rx_bytes", &k.rx_bytes),
        ("rx_applied", &k.rx_applied),
        ("rx_stale", &k.rx_stale),
        ("rx_rejected", &k.rx_rejected),
        ("conflicts_won", &k.conflicts_won),
        ("conflicts_lost", &k.conflicts_lost),
        ("seizes_refused_syncing", &k.seizes_refused_syncing),
        ("digests_sent", &c.heal_counters.digests_sent),
        ("digests_answered", &c.heal_counters.digests_answered),
        ("digest_buckets_differed", &c.heal_counters.buckets_differed),
        ("heal_records", &c.heal_counters.heal_records),
        ("heal_applied", &c.heal_counters.heal_applied),
        ("heal_corrections_sent", &c.heal_counters.corrections_sent),
        ("digest_us", &c.heal_counters.digest_us),
    ] {
        out.push(format!("{name} {}", v.load(Relaxed)));
    }
    // one line per peer: what it said of itself, what it answered us
    let now = now_ms();
    let peers: Vec<PeerSlot> = c.peers.lock().iter().filter(|p| p.addr_len > 0).copied().collect();
    for p in peers {
        let ago = if p.last_rx_ms > 0 { now.saturating_sub(p.last_rx_ms).to_string() } else { "-".into() };
        out.push(format!(
            "peer {} node_id {} boot_id {} rx {} last_rx_ms_ago {ago} tx_ok {} tx_failed {} last_code {}",
            B(p.addr()),
            p.node_id,
            p.boot_id,
            p.rx,
            p.tx_ok,
            p.tx_failed,
            p.last_code
        ));
    }
    Ok(out)
}
