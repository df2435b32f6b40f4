//! Network partitions between cluster nodes on loopback, made with
//! nftables: packets are dropped **on arrival** (an input-hook chain), as a
//! lost link loses them, so the sender's `send()` still succeeds (dropping
//! on output would fail it at once, which is not what a link failure does).
//!
//! Each [`Partition`] owns an nftables table of its own (unique name per
//! test and process) and deletes it when dropped, also on panic.

use std::net::Ipv4Addr;
use std::process::Command;

use super::cluster::node_ip;

/// An nftables table that drops UDP between cluster nodes (node address
/// and the cluster's port on both ends, so phones on other ports are not
/// affected).
pub struct Partition {
    table: String,
    port: u16,
}

fn nft(args: &[&str]) -> Result<String, String> {
    let out = Command::new("nft")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run nft: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "nft {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Partition {
    /// A table named after `test` with an empty input chain. `Err` (the
    /// test prints SKIP) when nft is missing or not permitted here.
    pub fn new(test: &str, port: u16) -> Result<Partition, String> {
        let table = format!("sca_part_{test}_{}", std::process::id());
        let _ = nft(&["delete", "table", "inet", &table]);
        nft(&["add", "table", "inet", &table])?;
        let p = Partition { table, port };
        nft(&[
            "add",
            "chain",
            "inet",
            &p.table,
            "input",
            "{ type filter hook input priority -10; policy accept; }",
        ])?;
        Ok(p)
    }

    fn drop_rule(&self, from: Ipv4Addr, to: Ipv4Addr) {
        let port = self.port.to_string();
        let (f, t) = (from.to_string(), to.to_string());
        nft(&[
            "add",
            "rule",
            "inet",
            &self.table,
            "input",
            "ip",
            "saddr",
            &f,
            "ip",
            "daddr",
            &t,
            "udp",
            "sport",
            &port,
            "udp",
            "dport",
            &port,
            "drop",
        ])
        .unwrap_or_else(|e| panic!("partition: {e}"));
    }

    /// Cut the link between nodes `a` and `b`, both directions.
    pub fn cut(&self, a: usize, b: usize) {
        self.drop_rule(node_ip(a), node_ip(b));
        self.drop_rule(node_ip(b), node_ip(a));
    }

    /// Heal every cut link.
    pub fn heal(&self) {
        nft(&["flush", "chain", "inet", &self.table, "input"])
            .unwrap_or_else(|e| panic!("partition: {e}"));
    }

    /// The table as nft lists it (for failure messages).
    pub fn listing(&self) -> String {
        nft(&["list", "table", "inet", &self.table]).unwrap_or_else(|e| e)
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        if let Err(e) = nft(&["delete", "table", "inet", &self.table]) {
            eprintln!("partition: could not delete table {}: {e}", self.table);
        }
    }
}
