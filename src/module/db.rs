//! Persistence of subscriptions in `sca_subscriptions` (Kamailio's schema,
//! version 2) through the generic DB API.
//!
//! - Restore: in mod_init, before the workers fork, every unexpired row of
//!   this server (`server_id`) goes into shared memory.
//! - Write-behind: a dedicated timer process (like the C module's "SCA DB
//!   SYNC") flushes every `db_update_interval` seconds: rows of expired
//!   subscriptions are deleted, removed subscriptions' rows deleted, changed
//!   subscriptions rewritten. No slot lock is held during DB I/O, so a slow
//!   or dead DB never blocks SIP processing; a failed write is retried at the
//!   next flush and nothing in shared memory is lost.
//! - Shutdown: mod_destroy flushes once more, so a graceful stop loses
//!   nothing; a kill -9 loses at most one interval of changes.
//!
//! Appearances (call state) are not persisted, like the C module: a restart
//! loses Kamailio's transactions, so the call-state updates that would keep
//! them right are lost too; phones re-learn idle lines from the first NOTIFY.

use std::sync::OnceLock;
use std::time::Duration;

use allocator_api2::alloc::Allocator;

use sca_core::model::{EventType, SubState};
use sca_core::store::{Subscription, SubscriptionRec};

use crate::host::db::{DbApi, DbConn, Val, Value, OP_EQ, OP_LT};
use crate::host::log::B;
use crate::module::params::Config;
use crate::module::{Shared, Tombstone};
use crate::{lm_err, lm_info, lm_notice, lm_warn, sys};

/// The table version Kamailio's sca-create.sql creates.
const TABLE_VERSION: u32 = 2;

const COLUMNS: [&str; 13] = [
    "subscriber",
    "aor",
    "event",
    "expires",
    "state",
    "app_idx",
    "call_id",
    "from_tag",
    "to_tag",
    "record_route",
    "notify_cseq",
    "subscribe_cseq",
    "server_id",
];

static API: OnceLock<DbApi> = OnceLock::new();

fn server_id() -> i32 {
    // SAFETY: a core global set from the config before modules init.
    unsafe { sys::server_id }
}

/// Bind the DB module for `db_url` (mod_init). Err is a config error.
pub fn bind(url: &[u8]) -> Result<(), String> {
    let api = DbApi::bind(url)?;
    let _ = API.set(api);
    Ok(())
}

fn open(cfg: &Config) -> Result<DbConn<'static>, String> {
    let api = API.get().ok_or("DB API not bound")?;
    let url = cfg.db_url.as_deref().ok_or("no db_url")?;
    let mut con = api.connect(url)?;
    con.use_table(&cfg.subs_table)?;
    Ok(con)
}

fn row_to_rec(row: &[Value]) -> Option<(SubscriptionRec<'_>, ())> {
    let int = |i: usize| row.get(i).and_then(Value::int);
    let bytes = |i: usize| row.get(i).map(Value::bytes).unwrap_or(&[]);
    let rec = SubscriptionRec {
        subscriber: bytes(0),
        aor: bytes(1),
        event: EventType::from_i32(int(2)? as i32)?,
        expires: int(3)?,
        state: SubState::from_i32(int(4)? as i32)?,
        index: match int(5)? {
            i if i > 0 => i32::try_from(i).ok()?,
            _ => -1,
        },
        call_id: bytes(6),
        from_tag: bytes(7),
        to_tag: bytes(8),
        record_route: bytes(9),
        notify_cseq: u32::try_from(int(10)?).unwrap_or(0),
        subscribe_cseq: u32::try_from(int(11)?).unwrap_or(0),
    };
    if rec.subscriber.is_empty() || rec.aor.is_empty() || rec.call_id.is_empty() {
        return None;
    }
    Some((rec, ()))
}

/// Load this server's unexpired subscriptions into the store (mod_init).
/// A DB that cannot be read is logged: the module then starts empty and
/// the write-behind keeps trying.
pub fn restore(cfg: &Config, st: &Shared, now: i64) {
    let mut con = match open(cfg) {
        Ok(c) => c,
        Err(e) => {
            lm_err!("cannot restore SCA subscriptions: {e}; starting with none, will keep writing to the DB");
            return;
        }
    };
    // (the version check switches the connection to the `version` table)
    if let Err(e) = con.check_version(&cfg.subs_table, TABLE_VERSION).and_then(|()| con.use_table(&cfg.subs_table)) {
        lm_err!("{e}");
        return;
    }
    let mut cols = COLUMNS.to_vec();
    cols.push("id");
    let rows = match con.query_all(&cols) {
        Ok(r) => r,
        Err(e) => {
            lm_err!("cannot read {}: {e}", B(&cfg.subs_table));
            return;
        }
    };
    let (mut restored, mut skipped) = (0, 0);
    for row in &rows {
        let sid = row.get(12).and_then(Value::int).unwrap_or(0);
        let Some((rec, ())) = row_to_rec(row) else {
            lm_err!("skipping malformed row {:?} of {}", row.get(13), B(&cfg.subs_table));
            skipped += 1;
            continue;
        };
        if sid != i64::from(server_id()) || rec.expires <= now || rec.state.is_terminated() {
            skipped += 1;
            continue;
        }
        let mut g = st.store.lock_aor(rec.aor);
        match g.put_sub(&rec) {
            Ok(_) => {
                if let Some(s) = g.find_sub_mut(rec.event, rec.subscriber) {
                    s.dirty = false;
                }
                restored += 1;
            }
            Err(e) => {
                lm_err!("out of shared memory restoring subscriptions: {e:?}");
                break;
            }
        }
    }
    lm_info!("restored {restored} SCA subscriptions from {} ({skipped} expired or foreign)", B(&cfg.subs_table));
}

/// An owned copy of a changed subscription, written without locks held.
struct Pending {
    aor: Vec<u8>,
    subscriber: Vec<u8>,
    call_id: Vec<u8>,
    from_tag: Vec<u8>,
    to_tag: Vec<u8>,
    record_route: Vec<u8>,
    event: EventType,
    expires: i64,
    state: SubState,
    index: i32,
    notify_cseq: u32,
    subscribe_cseq: u32,
}

impl Pending {
    fn of<A: Allocator>(aor: &[u8], s: &Subscription<A>) -> Self {
        Pending {
            aor: aor.to_vec(),
            subscriber: s.subscriber().to_vec(),
            call_id: s.call_id().to_vec(),
            from_tag: s.from_tag().to_vec(),
            to_tag: s.to_tag().to_vec(),
            record_route: s.record_route().to_vec(),
            event: s.event,
            expires: s.expires,
            state: s.state,
            index: s.index,
            notify_cseq: s.notify_cseq,
            subscribe_cseq: s.subscribe_cseq,
        }
    }
}

fn write_row(con: &DbConn<'_>, p: &Pending) -> Result<(), String> {
    let key_vals = [Val::Str(&p.subscriber), Val::Str(&p.aor), Val::Int(p.event as i32)];
    con.delete(&["subscriber", "aor", "event"], &[OP_EQ, OP_EQ, OP_EQ], &key_vals)?;
    // the unique key (subscriber, call_id, from_tag, to_tag) of an older
    // row of this phone may be reused by the new dialog
    con.delete(
        &["subscriber", "call_id", "from_tag", "to_tag"],
        &[OP_EQ, OP_EQ, OP_EQ, OP_EQ],
        &[Val::Str(&p.subscriber), Val::Str(&p.call_id), Val::Str(&p.from_tag), Val::Str(&p.to_tag)],
    )?;
    let expires = i32::try_from(p.expires).unwrap_or(i32::MAX);
    con.insert(
        &COLUMNS,
        &[
            Val::Str(&p.subscriber),
            Val::Str(&p.aor),
            Val::Int(p.event as i32),
            Val::Int(expires),
            Val::Int(p.state as i32),
            Val::Int(p.index.max(0)),
            Val::Str(&p.call_id),
            Val::Str(&p.from_tag),
            Val::Str(&p.to_tag),
            Val::Str(&p.record_route),
            Val::Int(p.notify_cseq as i32),
            Val::Int(p.subscribe_cseq.wrapping_add(1) as i32),
            Val::Int(server_id()),
        ],
    )
}

/// Write every change since the last flush, in one transaction where the
/// driver allows (a flush of thousands of rows on sqlite would otherwise
/// commit, and sync, every statement). Returns how many rows were written;
/// on a DB error nothing of this flush is kept in the DB and what was not
/// written stays marked for the next flush.
fn flush(st: &Shared, con: &DbConn<'_>, now: i64) -> Result<usize, String> {
    let tombs: Vec<Tombstone> = st.take_tombstones();
    // changed subscriptions: copied and unmarked under each slot lock,
    // written with no lock held
    let mut pending = Vec::new();
    st.store.retain_aors(|e| {
        let first = pending.len();
        pending.extend(e.subs.iter().filter(|s| s.dirty).map(|s| Pending::of(e.aor(), s)));
        if pending.len() > first {
            e.subs.iter_mut().for_each(|s| s.dirty = false);
        }
    });
    if let Err(e) = write_in_tx(con, &tombs, &pending, now) {
        // nothing of this flush stuck: queue it all again
        st.add_tombstones(tombs.into_iter());
        for q in &pending {
            let mut g = st.store.lock_aor(&q.aor);
            if let Some(s) = g.find_sub_mut(q.event, &q.subscriber) {
                s.dirty = true;
            }
        }
        return Err(e);
    }
    Ok(pending.len())
}

/// Everything in one transaction; rolled back on an error.
fn write_in_tx(con: &DbConn<'_>, tombs: &[Tombstone], pending: &[Pending], now: i64) -> Result<(), String> {
    let tx = con.begin();
    let result = write_all(con, tombs, pending, now).and_then(|()| con.commit(tx));
    if result.is_err() {
        con.rollback(tx);
    }
    result
}

fn write_all(con: &DbConn<'_>, tombs: &[Tombstone], pending: &[Pending], now: i64) -> Result<(), String> {
    con.delete(
        &["server_id", "expires"],
        &[OP_EQ, OP_LT],
        &[Val::Int(server_id()), Val::Int(i32::try_from(now).unwrap_or(i32::MAX))],
    )?;
    // rows of subscriptions that ended before they expired
    for t in tombs {
        con.delete(
            &["subscriber", "aor", "event"],
            &[OP_EQ, OP_EQ, OP_EQ],
            &[Val::Str(&t.subscriber), Val::Str(&t.aor), Val::Int(t.event as i32)],
        )?;
    }
    for p in pending {
        write_row(con, p).map_err(|e| format!("{e} (subscription of {})", String::from_utf8_lossy(&p.subscriber)))?;
    }
    Ok(())
}

/// One flush with a connection of this process, reconnecting as needed.
pub fn flush_with_reconnect(cfg: &Config, st: &Shared, conn: &mut Option<DbConn<'static>>, now: i64) {
    if conn.is_none() {
        match open(cfg) {
            Ok(c) => {
                lm_notice!("SCA DB writer connected to {}", B(cfg.db_url.as_deref().unwrap_or_default()));
                *conn = Some(c);
            }
            Err(e) => {
                lm_err!("SCA DB writer: {e}; changes stay in shared memory, retrying in {}s", cfg.db_update_interval);
                return;
            }
        }
    }
    let Some(c) = conn.as_ref() else { return };
    match flush(st, c, now) {
        Ok(_) => {}
        Err(e) => {
            lm_err!("SCA DB write failed: {e}; retrying in {}s", cfg.db_update_interval);
            // reconnect next time: the connection may be dead
            *conn = None;
        }
    }
}

/// Tries of a lock at shutdown before giving its data up, 1 ms apart.
const EXIT_LOCK_TRIES: u32 = 200;

/// Final flush at shutdown (main process, from mod_destroy).
///
/// Kamailio's main process destroys modules after its children have exited,
/// and a child exits straight from its SIGTERM handler, wherever it was: one
/// killed while holding a slot lock leaves it held for good, with what it was
/// changing possibly half done. So this flush only reads, takes each lock
/// with a bounded wait, and skips (and reports) what stays locked, instead of
/// hanging the shutdown until Kamailio's exit alarm aborts it. It also frees
/// no shared memory: the allocator's own lock may be held the same way.
pub fn flush_at_exit(cfg: &Config, st: &Shared, now: i64) {
    let pause = || std::thread::sleep(Duration::from_millis(1));
    let mut pending = Vec::new();
    let skipped = st.store.for_each_aor_unless_held(EXIT_LOCK_TRIES, pause, |e| {
        pending.extend(e.subs.iter().filter(|s| s.dirty).map(|s| Pending::of(e.aor(), s)));
    });
    if skipped > 0 {
        lm_warn!(
            "{skipped} SCA hash slot(s) still locked by a process that exited at shutdown: \
             their changes since the last periodic DB write are not saved"
        );
    }
    let tombs = match st.tombstones.try_lock_within(EXIT_LOCK_TRIES, pause) {
        Some(q) => q.iter().map(Tombstone::of).collect(),
        None => {
            lm_warn!("SCA ended-subscription queue still locked at shutdown: their DB rows stay until they expire");
            Vec::new()
        }
    };
    match open(cfg) {
        Ok(c) => match write_in_tx(&c, &tombs, &pending, now) {
            Ok(()) => lm_info!("SCA subscriptions flushed to the DB at shutdown ({} rows written)", pending.len()),
            Err(e) => lm_err!("final SCA DB flush failed: {e}"),
        },
        Err(e) => lm_err!("final SCA DB flush: {e}"),
    }
}
