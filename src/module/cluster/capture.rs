//! Capture of local changes: what an `effects::Edit` changed, stamped and
//! encoded for the peers.

use super::*;

/// What changed in the AoR under `g` since `snap` (taken when it was
/// locked): stamped, tombstoned, encoded (effects::Edit calls this while
/// the slot is still locked, and broadcasts after unlocking).
pub(crate) fn capture(snap: &Snapshot, g: &mut AorGuard<'_, Shm, KLock>) -> Vec<Vec<u8>> {
    let (Some(c), Some(n)) = (cluster(), node()) else { return Vec::new() };
    let stamped = {
        let mut t = tombs(c, n);
        replica::stamp(snap, g, n.id, now_ms(), &mut t)
    };
    if stamped.is_empty() {
        return Vec::new();
    }
    let mut tags = Vec::new();
    let recs = replica::records(snap, g, &stamped, &mut tags);
    encode_changes(&recs)
}

