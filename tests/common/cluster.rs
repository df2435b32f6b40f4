//! Several Kamailio nodes replicating SCA state over DMQ
//! (docs/cluster-design.md, sections 3 and 5).
//!
//! Node N (1, 2, 3) listens on `udp:127.0.0.N:P`: every node has the same
//! port P ([`PortReservation::new_on`]) on its own loopback address, and
//! `dmq_node_id` N, so conflict winners are deterministic. Node 1 notifies
//! node 2, the others notify node 1. The config is [`SCA_CFG`] with
//! `dmq.so` loaded before the SCA module and the KDMQ block first in
//! `request_route` ([`cluster_cfg`]).
//!
//! 127.0.0.2 and .3 need no setup on Linux (`local 127.0.0.0/8 dev lo`),
//! but some sandboxes lack them: [`Cluster::start`] probes them first and
//! returns `None` after printing `SKIP: ...` when they do not work.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use super::cfg::SCA_CFG;
use super::kamailio::{probe_loopback, Kamailio, KamailioOpts, PortReservation, ScaModule};
use super::sip::{Request, SipMessage, Ua};

/// Address of node `id` (1-based): 127.0.0.`id`.
pub fn node_ip(id: usize) -> Ipv4Addr {
    assert!((1..=254).contains(&id), "node id {id}");
    Ipv4Addr::new(127, 0, 0, id as u8)
}

/// The KDMQ block that starts `request_route` (design, section 3): KDMQ
/// only from the cluster's addresses, handed to dmq's workers.
pub const KDMQ_BLOCK: &str = r#"
	# cluster replication (dmq): before maxfwd, auth and SCA
	if (is_method("KDMQ")) {
		if ($si != "127.0.0.1" && $si != "127.0.0.2" && $si != "127.0.0.3") {
			sl_send_reply("403", "Forbidden");
			exit;
		}
		dmq_handle_message();
		exit;
	}
"#;

/// [`SCA_CFG`] for a cluster node: `dmq.so` loaded right before the SCA
/// module, the KDMQ block first in `request_route`, tm's `fr_timer` 2 s
/// (a KDMQ to a dead peer ends quickly). dmq's and the module's cluster
/// modparams come in `{{SCA_MODPARAMS}}` (see [`node_opts`]).
pub fn cluster_cfg() -> String {
    let mut cfg = SCA_CFG.to_string();
    for (anchor, replacement) in [
        (
            "loadmodule \"{{SCA_LOADMODULE}}\"\n",
            "loadmodule \"dmq.so\"\nloadmodule \"{{SCA_LOADMODULE}}\"\n".to_string(),
        ),
        (
            "request_route {\n",
            format!("request_route {{{KDMQ_BLOCK}\n"),
        ),
        (
            "modparam(\"tm\", \"fr_timer\", 5000)\n",
            "modparam(\"tm\", \"fr_timer\", 2000)\n".to_string(),
        ),
    ] {
        assert_eq!(
            cfg.matches(anchor).count(),
            1,
            "SCA_CFG changed: {anchor:?} is no longer there exactly once"
        );
        cfg = cfg.replace(anchor, &replacement);
    }
    cfg
}

/// One node of a cluster.
#[derive(Clone, Debug)]
pub struct NodeSpec {
    /// 1-based; also its `dmq_node_id` and the last byte of its address.
    pub id: usize,
    /// The node its dmq notifies at start-up (may be itself).
    pub notify: usize,
    /// `modparam("sca_rs", "enable_dmq", 1)` and `dmq_node_id`.
    pub enable_dmq: bool,
    /// More modparam lines (any module).
    pub extra_modparams: String,
    /// More kamailio command-line arguments (after the harness's own, so
    /// `-m 256` overrides its shared memory size).
    pub extra_args: Vec<String>,
}

impl NodeSpec {
    pub fn new(id: usize, notify: usize) -> NodeSpec {
        NodeSpec {
            id,
            notify,
            enable_dmq: true,
            extra_modparams: String::new(),
            extra_args: Vec::new(),
        }
    }
}

/// The SIP URI of node `id` on `port`, as dmq knows it.
pub fn node_uri(id: usize, port: u16) -> String {
    format!("sip:{}:{port}", node_ip(id))
}

/// The modparam lines of a node: dmq's (`server_address` is the node's
/// own listen socket, `notification_address` `spec.notify`, pings every
/// 5 s, 2 workers) and, with `enable_dmq`, sca_rs's.
pub fn cluster_modparams(spec: &NodeSpec, port: u16) -> String {
    let mut p = String::new();
    p += &format!(
        "modparam(\"dmq\", \"server_address\", \"{}\")\n",
        node_uri(spec.id, port)
    );
    p += &format!(
        "modparam(\"dmq\", \"notification_address\", \"{}\")\n",
        node_uri(spec.notify, port)
    );
    p += "modparam(\"dmq\", \"ping_interval\", 5)\n";
    p += "modparam(\"dmq\", \"num_workers\", 2)\n";
    if spec.enable_dmq {
        p += "modparam(\"sca_rs\", \"enable_dmq\", 1)\n";
        p += &format!("modparam(\"sca_rs\", \"dmq_node_id\", {})\n", spec.id);
    }
    p += &spec.extra_modparams;
    p
}

/// [`KamailioOpts`] of one node (sca_rs, a fresh sqlite DB of its own).
pub fn node_opts(spec: &NodeSpec, port: &Arc<PortReservation>) -> KamailioOpts {
    let mut o = KamailioOpts::new(&cluster_cfg(), ScaModule::Rust)
        .listen_ip(node_ip(spec.id))
        .shared_port(Arc::clone(port))
        .var("SCA_MODPARAMS", &cluster_modparams(spec, port.port));
    for a in &spec.extra_args {
        o = o.arg(a);
    }
    o
}

/// `Ok` when 127.0.0.2 and 127.0.0.3 work as local addresses here.
pub fn cluster_addresses_usable() -> Result<(), String> {
    for id in 2..=3 {
        probe_loopback(node_ip(id))?;
    }
    Ok(())
}

/// The usual topology: node 1 notifies node 2, nodes 2.. notify node 1.
pub fn default_specs(n: usize) -> Vec<NodeSpec> {
    (1..=n)
        .map(|id| {
            NodeSpec::new(
                id,
                if id == 1 {
                    if n > 1 {
                        2
                    } else {
                        1
                    }
                } else {
                    1
                },
            )
        })
        .collect()
}

/// Running nodes sharing one port. Node `id` is `nodes[id - 1]`; a node
/// killed with [`Cluster::kill9`] is `None` until [`Cluster::restart`].
pub struct Cluster {
    pub port: Arc<PortReservation>,
    pub specs: Vec<NodeSpec>,
    nodes: Vec<Option<Kamailio>>,
}

impl Cluster {
    /// Start one node per spec (in parallel) and wait until each answers
    /// on its ctl socket. `None` (after printing `SKIP: <test>: ...`) when
    /// the extra loopback addresses do not work on this host.
    pub fn start(test: &str, specs: Vec<NodeSpec>) -> Option<Cluster> {
        if specs.iter().any(|s| s.id > 1) {
            if let Err(e) = cluster_addresses_usable() {
                eprintln!(
                    "SKIP: {test}: 127.0.0.2/127.0.0.3 are not usable as local addresses here ({e}); \
                     the cluster tests need them (Linux routes 127.0.0.0/8 to lo)"
                );
                return None;
            }
        }
        let ips: Vec<Ipv4Addr> = specs.iter().map(|s| node_ip(s.id)).collect();
        let port =
            Arc::new(PortReservation::new_on(&ips).expect("a port free on every node address"));
        let started: Vec<Result<Kamailio, String>> = thread::scope(|s| {
            let handles: Vec<_> = specs
                .iter()
                .map(|spec| {
                    let opts = node_opts(spec, &port);
                    s.spawn(move || Kamailio::try_start(opts))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err("start thread panicked".into()))
                })
                .collect()
        });
        let mut nodes = Vec::new();
        let mut errors = Vec::new();
        for (spec, r) in specs.iter().zip(started) {
            match r {
                Ok(k) => nodes.push(Some(k)),
                Err(e) => {
                    errors.push(format!("node {}: {e}", spec.id));
                    nodes.push(None);
                }
            }
        }
        if !errors.is_empty() {
            // the nodes that did start are stopped when `nodes` drops
            panic!("cluster did not start:\n{}", errors.join("\n"));
        }
        Some(Cluster { port, specs, nodes })
    }

    /// `n` nodes in the usual topology, all with `enable_dmq`.
    pub fn start_n(test: &str, n: usize) -> Option<Cluster> {
        Cluster::start(test, default_specs(n))
    }

    /// Ids of the nodes, running or not.
    pub fn ids(&self) -> Vec<usize> {
        self.specs.iter().map(|s| s.id).collect()
    }

    fn slot(&self, id: usize) -> usize {
        self.specs
            .iter()
            .position(|s| s.id == id)
            .unwrap_or_else(|| panic!("no node {id} in this cluster"))
    }

    /// Node `id` (panics when it is not running).
    pub fn node(&self, id: usize) -> &Kamailio {
        self.nodes[self.slot(id)]
            .as_ref()
            .unwrap_or_else(|| panic!("node {id} is not running"))
    }

    /// The running nodes, with their ids.
    pub fn running(&self) -> Vec<(usize, &Kamailio)> {
        self.specs
            .iter()
            .zip(&self.nodes)
            .filter_map(|(s, k)| k.as_ref().map(|k| (s.id, k)))
            .collect()
    }

    /// SIP address of node `id` (whether it runs or not).
    pub fn addr(&self, id: usize) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(node_ip(id), self.port.port))
    }

    /// dmq URI of node `id`.
    pub fn uri(&self, id: usize) -> String {
        node_uri(id, self.port.port)
    }

    /// Crash node `id`: SIGKILL to every one of its processes.
    pub fn kill9(&mut self, id: usize) {
        let slot = self.slot(id);
        let mut k = self.nodes[slot]
            .take()
            .unwrap_or_else(|| panic!("node {id} is not running"));
        k.kill9();
        drop(k);
    }

    /// Start node `id` again with the same spec, address and port (a new
    /// directory: fresh log and empty DB).
    pub fn restart(&mut self, id: usize) {
        let slot = self.slot(id);
        if let Some(mut k) = self.nodes[slot].take() {
            k.stop();
        }
        let opts = node_opts(&self.specs[slot], &self.port);
        self.nodes[slot] = Some(Kamailio::start(opts));
    }

    /// Wait until `dmq.list_nodes` on every running node lists every
    /// running node, each as active; panics with each node's list after
    /// `timeout`.
    pub fn wait_mesh(&self, timeout: Duration) {
        let want = self.running().len();
        let deadline = Instant::now() + timeout;
        loop {
            let lists: Vec<(usize, Result<String, String>)> = self
                .running()
                .into_iter()
                .map(|(id, k)| (id, k.kamcmd(&["dmq.list_nodes"])))
                .collect();
            // every node listed by every node, and as active: dmq
            // replicates only to nodes it lists as active, and a node that
            // was down stays listed (timeout, disabled) until a ping or its
            // notification reaches the others again
            let ok = lists.iter().all(|(_, l)| {
                l.as_ref().is_ok_and(|l| {
                    let nodes = dmq_nodes_with_status(l);
                    nodes.len() == want && nodes.iter().all(|(_, st)| st == "active")
                })
            });
            if ok {
                return;
            }
            if Instant::now() >= deadline {
                let mut msg = String::new();
                for (id, l) in &lists {
                    msg += &format!("--- node {id} dmq.list_nodes:\n{l:?}\n");
                }
                for (id, k) in self.running() {
                    msg += &format!("--- node {id}:\n{}\n", k.log_tail(30));
                }
                panic!("dmq did not list {want} active nodes everywhere within {timeout:?}\n{msg}");
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Poll `view` of every running node until all are equal and `ok`
    /// holds for that common value; returns it. Panics after `timeout` with
    /// every node's view.
    pub fn wait_agree<F, P>(&self, what: &str, timeout: Duration, view: F, ok: P) -> Vec<String>
    where
        F: Fn(&Kamailio) -> Vec<String>,
        P: Fn(&[String]) -> bool,
    {
        let deadline = Instant::now() + timeout;
        loop {
            let views: Vec<(usize, Vec<String>)> = self
                .running()
                .into_iter()
                .map(|(id, k)| (id, view(k)))
                .collect();
            let first = &views[0].1;
            if views.iter().all(|(_, v)| v == first) && ok(first) {
                return first.clone();
            }
            if Instant::now() >= deadline {
                let mut msg = String::new();
                for (id, v) in &views {
                    msg += &format!("--- node {id}:\n{}\n", v.join("\n"));
                }
                panic!("{what}: the nodes did not agree within {timeout:?}\n{msg}");
            }
            thread::sleep(Duration::from_millis(30));
        }
    }
}

/// The distinct `host:port` entries of a `dmq.list_nodes` answer (a node
/// whose notification address is itself lists itself twice).
pub fn dmq_nodes(list: &str) -> Vec<String> {
    dmq_nodes_with_status(list).into_iter().map(|(n, _)| n).collect()
}

/// `host:port` and `status` (active, timeout, disabled, pending) of each
/// node of a `dmq.list_nodes` reply, each node once.
pub fn dmq_nodes_with_status(list: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut host = String::new();
    let mut cur: Option<usize> = None;
    for l in list.lines().map(str::trim) {
        if let Some(h) = l.strip_prefix("host:") {
            host = h.trim().to_string();
        } else if let Some(p) = l.strip_prefix("port:") {
            let e = format!("{host}:{}", p.trim());
            cur = Some(out.iter().position(|(n, _)| *n == e).unwrap_or_else(|| {
                out.push((e, String::new()));
                out.len() - 1
            }));
        } else if let (Some(st), Some(i)) = (l.strip_prefix("status:"), cur) {
            out[i].1 = st.trim().to_string();
        }
    }
    out
}

/// The lines of `out`, sorted (listings are in hash-table order).
pub fn sorted_lines(out: &str) -> Vec<String> {
    let mut v: Vec<String> = out
        .lines()
        .map(|l| l.trim_end().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    v.sort();
    v
}

/// `sca.all_appearances`, sorted.
pub fn appearances(k: &Kamailio) -> Vec<String> {
    sorted_lines(&k.rpc(&["sca.all_appearances"]))
}

/// `sca.all_subscriptions`, sorted, with the seconds-left column (which
/// ticks on its own) replaced by `-`.
pub fn subscriptions(k: &Kamailio) -> Vec<String> {
    let out = k.rpc(&["sca.all_subscriptions"]);
    let mut v: Vec<String> = out
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let mut f: Vec<&str> = l.trim_end().split(' ').collect();
            if f.len() > 3 {
                f[3] = "-";
            }
            f.join(" ")
        })
        .collect();
    v.sort();
    v
}

/// The ` node=<id>` suffix of an RPC listing line.
pub fn node_field(line: &str) -> Option<usize> {
    line.rsplit(' ').next()?.strip_prefix("node=")?.parse().ok()
}

/// `sca.cluster` as (name, value) pairs, in order.
pub fn cluster_info(k: &Kamailio) -> Vec<(String, String)> {
    k.rpc(&["sca.cluster"])
        .lines()
        .filter_map(|l| {
            let (n, v) = l.trim().split_once(' ')?;
            Some((n.to_string(), v.trim().to_string()))
        })
        .collect()
}

/// One field of `sca.cluster`.
pub fn cluster_field(k: &Kamailio, name: &str) -> String {
    let all = cluster_info(k);
    all.iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| panic!("no {name} in sca.cluster: {all:?}"))
}

/// A numeric field of `sca.cluster`.
pub fn cluster_stat(k: &Kamailio, name: &str) -> u64 {
    let v = cluster_field(k, name);
    v.parse()
        .unwrap_or_else(|_| panic!("sca.cluster {name} is {v:?}, not a number"))
}

/// A KDMQ request for peer `sca_rs` at `to` from `ua`, as dmq sends them
/// (From user = peer id, Max-Forwards 1), with `body` under `content_type`
/// (`None`: no Content-Type header).
pub fn kdmq_request(ua: &Ua, to: SocketAddr, content_type: Option<&str>, body: &[u8]) -> Request {
    let mut r = Request::new("KDMQ", &format!("sip:sca_rs@{to}"))
        .header("Via", &ua.via(&ua.new_branch()))
        .header("Max-Forwards", "1")
        .header(
            "From",
            &format!("<sip:sca_rs@{}>;tag={}", ua.local, ua.new_tag()),
        )
        .header("To", &format!("<sip:sca_rs@{to}>"))
        .header("Call-ID", &ua.new_call_id())
        .header("CSeq", "1 KDMQ");
    r.body = body.to_vec();
    if let Some(ct) = content_type {
        r = r.header("Content-Type", ct);
    }
    r
}

/// Send `req` from `ua` and return the final reply (3 s).
pub fn send_for_reply(ua: &mut Ua, req: &Request) -> SipMessage {
    let sent = ua.send(req).expect("send");
    ua.expect_final_response(&sent, Duration::from_secs(3))
        .unwrap_or_else(|e| panic!("no final reply to {}: {e}", sent.start_line))
}
