//! Membership of shared AoRs (docs/security.md): `sca_is_member(identity,
//! aor)` and `KSR.sca.is_member(identity, aor)` answer from the
//! `members_table` rows (schema/<db>/sca_members-create.sql), held in
//! shared memory: loaded in mod_init, reloaded by `kamcmd
//! sca.reload_members`. The rule itself is `sca_core::members`.

use std::sync::OnceLock;

use sca_core::members::{Members, RowError};
use sca_core::sync::Locked;

use crate::host::db::DbApi;
use crate::host::lock::KLock;
use crate::host::log::B;
use crate::host::msg::SipMsg;
use crate::host::shm::{self, SharedStatic, Shm};
use crate::module::params::Config;
use crate::{entry, lm_err, lm_info, lm_warn};

/// The version of `sca_members` our schema files create.
const TABLE_VERSION: u32 = 1;

static SET: SharedStatic<Locked<KLock, Members<Shm>>> = SharedStatic::new();
static API: OnceLock<(DbApi, Vec<u8>, String)> = OnceLock::new();

/// mod_init: the shared set, filled from the table when one is configured.
pub fn init(cfg: &Config) -> Result<(), String> {
    let set = shm::into_shared_ref(Locked::new(Members::new_in(Shm)))
        .map_err(|_| "out of shared memory creating the member set".to_string())?;
    if !set.init() {
        return Err("cannot initialise the member set's lock".into());
    }
    SET.set(set);
    let Some(table) = &cfg.members_table else {
        lm_info!(
            "sca_rs: no members_table: sca_is_member() accepts only an identity equal to the AoR"
        );
        return Ok(());
    };
    let t =
        String::from_utf8(table.clone()).map_err(|_| "members_table is not UTF-8".to_string())?;
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(format!(
            "members_table {t:?} is not a plain table name (letters, digits, _)"
        ));
    }
    let Some(url) = cfg.members_db_url.clone().or_else(|| cfg.db_url.clone()) else {
        return Err("members_table is set but neither members_db_url nor db_url is".into());
    };
    let api = DbApi::bind(&url)?;
    let _ = API.set((api, url, t));
    let n = reload()?;
    lm_info!(
        "sca_rs: {n} shared-AoR memberships loaded from {}",
        API.get().map_or("", |a| a.2.as_str())
    );
    Ok(())
}

/// Read the table into a new set and put it in place of the old one.
/// Returns how many memberships the set holds.
pub fn reload() -> Result<usize, String> {
    let Some((api, url, table)) = API.get() else {
        return Err("no members_table is configured".into());
    };
    let Some(set) = SET.get() else {
        return Err("sca_rs is not initialised".into());
    };
    let mut conn = api.connect(url)?;
    conn.check_version(table.as_bytes(), TABLE_VERSION)
        .map_err(|_| format!("table {table} is missing or not at version {TABLE_VERSION} (create it from schema/<db>/sca_members-create.sql)"))?;
    let rows = conn
        .raw_rows(&format!("SELECT aor, member FROM {table}"))
        .map_err(|e| format!("reading {table}: {e}"))?;
    drop(conn);
    let mut fresh = Members::new_in(Shm);
    let mut skipped = 0;
    for row in &rows {
        let (Some(aor), Some(member)) = (row.first(), row.get(1)) else {
            skipped += 1;
            continue;
        };
        match fresh.add(aor.bytes(), member.bytes()) {
            Ok(Ok(())) => {}
            Ok(Err(RowError::Malformed)) => {
                lm_warn!(
                    "{table}: row ({}, {}) skipped: both must be user@host",
                    B(aor.bytes()),
                    B(member.bytes())
                );
                skipped += 1;
            }
            Err(_) => {
                return Err(format!(
                    "out of shared memory loading {table}: the old set stays"
                ))
            }
        }
    }
    let n = fresh.len();
    let old = core::mem::replace(&mut *set.lock(), fresh);
    // freed after the lock is released
    drop(old);
    if skipped > 0 {
        lm_warn!("{table}: {skipped} rows skipped");
    }
    Ok(n)
}

/// Is `identity` a member of `aor`?
pub fn is_member(identity: &[u8], aor: &[u8]) -> bool {
    SET.get().is_some_and(|s| s.lock().is_member(identity, aor))
}

fn check(identity: &[u8], aor: &[u8]) -> i32 {
    if is_member(identity, aor) {
        1
    } else {
        crate::lm_dbg!("{} is not a member of {}", B(identity), B(aor));
        -1
    }
}

entry! {
    /// `sca_is_member(identity, aor)`: 1 when `identity` (`user@realm`,
    /// e.g. `$au@$ar`) may use shared AoR `aor` (e.g. `$ru`), -1 when not.
    script pub fn w_sca_is_member("sca_is_member", msg, p1, p2) {
        let (Some(p1), Some(p2)) = (p1, p2) else { return -1 };
        let (Some(identity), Some(aor)) = (p1.str(msg), p2.str(msg)) else {
            lm_err!("sca_is_member: cannot get the identity or AoR parameter");
            return -1;
        };
        check(&identity, &aor)
    }
}

entry! {
    /// Fixup of `sca_is_member(identity, aor)`: strings with variables.
    fixup pub fn fixup_im, fixup_free_im("sca_is_member fixup") {
        1 | 2 => Fixup::Str,
    }
}

/// KEMI `KSR.sca.is_member(identity, aor)`.
pub fn ki_is_member(_msg: &mut SipMsg<'_>, identity: &[u8], aor: &[u8]) -> i32 {
    check(identity, aor)
}
