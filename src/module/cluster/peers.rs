//! Peers this node has heard from or sent to (for `sca.cluster`).

use super::*;

/// `host:port` of a dmq node URI (`sip:10.0.0.2:5060;status=active`) or
/// of a KDMQ's From (`<sip:sca_rs@10.0.0.2:5060>;tag=...`).
pub(super) fn peer_addr(uri: &[u8]) -> &[u8] {
    let start = uri.windows(4).position(|w| w.eq_ignore_ascii_case(b"sip:")).map_or(0, |i| i + 4);
    let rest = &uri[start..];
    let end = rest.iter().position(|&b| matches!(b, b';' | b'>' | b'?' | b' ')).unwrap_or(rest.len());
    let hostport = &rest[..end];
    match hostport.iter().position(|&b| b == b'@') {
        Some(at) => &hostport[at + 1..],
        None => hostport,
    }
}

/// Update the slot of the peer at `uri` (a new one if there is room).
pub(super) fn with_peer(c: &ClusterShared, uri: &[u8], f: impl FnOnce(&mut PeerSlot)) {
    let addr = peer_addr(uri);
    if addr.is_empty() || addr.len() > PEER_ADDR_MAX {
        return;
    }
    let mut peers = c.peers.lock();
    let i = match peers.iter().position(|p| p.addr() == addr) {
        Some(i) => i,
        None => match peers.iter().position(|p| p.addr_len == 0) {
            Some(i) => {
                peers[i].addr[..addr.len()].copy_from_slice(addr);
                peers[i].addr_len = addr.len() as u8;
                i
            }
            None => return,
        },
    };
    f(&mut peers[i]);
}

