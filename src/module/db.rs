//! Persistence of subscriptions in `sca_subscriptions` (Kamailio's schema,
//! version 2) through the generic DB API. The bookkeeping (what to write,
//! when a write counts) is `sca_core::persist`; this file runs statements.
//!
//! - Restore: in mod_init, before the workers fork, every unexpired row of
//!   this server (`server_id`) goes into shared memory, read in keyed pages
//!   (`id > last ORDER BY id LIMIT n`, each page freed before the next) so
//!   a table of any size fits Kamailio's private memory; on sqlite and
//!   PostgreSQL a page comes back as one aggregated text value
//!   ([`page`]), one private-memory allocation instead of ~7 a row. But
//!   first the rows are read past Kamailio's DB API, through the library
//!   its driver loaded, each stored as it comes and none in private
//!   memory: from PostgreSQL in one `COPY ... TO STDOUT` through libpq
//!   ([`copy`], streamed by the server while they are stored), from
//!   sqlite by stepping one SELECT through the sqlite library. Where that
//!   cannot be used or stops, the pages read the rest. A restore that
//!   fails is logged as an ERROR and retried by the DB writer process until
//!   it succeeds, merged with what phones subscribed meanwhile.
//! - Write-behind: a dedicated timer process (like the C module's "SCA DB
//!   SYNC") writes every `db_update_interval` seconds, in one transaction
//!   (the driver's, or `BEGIN`/`COMMIT` on db_sqlite): the deletes of ended
//!   subscriptions, then one INSERT or UPDATE per changed subscription. No
//!   slot lock is held during DB I/O. Marks are cleared only after the
//!   commit, and only where nothing changed since the copy was taken; a
//!   failed batch is retried the careful way (delete by key, then insert),
//!   then row by row, so one bad row does not hold up the others.
//! - Shutdown: mod_destroy (main process, after the children exited) writes
//!   everything not known committed, the careful way.
//!
//! Appearances (call state) are not persisted, like the C module: a restart
//! loses Kamailio's transactions, so the call-state updates that would keep
//! them right are lost too; phones re-learn idle lines from the first NOTIFY.

use std::sync::atomic::Ordering;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use sca_core::persist::{self, copy, page, sql, RowData, RowOp, RowWrite};
use sca_core::store::{Restored, SubscriptionRec};

use crate::host::db::{self as hdb, DbApi, DbConn, Val, Value, OP_EQ, OP_LT};
use crate::host::pq::{self, Pq};
use crate::host::sqlite::{Bind, Sqlite};
use crate::host::log::B;
use crate::module::metrics;
use crate::module::params::Config;
use crate::module::{Shared, Tombstone};
use crate::{lm_err, lm_info, lm_notice, lm_warn};

/// The table version Kamailio's sca-create.sql creates.
const TABLE_VERSION: u32 = 2;

/// Rows per restore page: ~0.7 kB of private memory each in the drivers'
/// results, so a page stays far below Kamailio's default 8 MB.
const PAGE_ROWS: usize = 2000;

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

const KEY: [&str; 3] = ["subscriber", "aor", "event"];
const KEY_OPS: [&core::ffi::CStr; 3] = [OP_EQ, OP_EQ, OP_EQ];

static API: OnceLock<DbApi> = OnceLock::new();
/// `subs_table`, checked to be a plain identifier (it goes into SQL text).
static TABLE: OnceLock<String> = OnceLock::new();
/// `db_url` is PostgreSQL's (its multi-row INSERTs are built on arrays).
static POSTGRES: OnceLock<bool> = OnceLock::new();

fn server_id() -> i32 {
    crate::host::proc::server_id()
}

/// Bind the DB module for `db_url` (mod_init). Err is a config error.
pub fn bind(url: &[u8], table: &[u8]) -> Result<(), String> {
    let t = core::str::from_utf8(table).map_err(|_| "subs_table is not UTF-8".to_string())?;
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(format!("subs_table {t:?} is not a plain table name (letters, digits, _)"));
    }
    let api = DbApi::bind(url)?;
    let _ = API.set(api);
    let _ = TABLE.set(t.to_string());
    let _ = POSTGRES.set(url.starts_with(b"postgres:"));
    Ok(())
}

fn table() -> &'static str {
    TABLE.get().map_or("sca_subscriptions", String::as_str)
}

fn is_sqlite(cfg: &Config) -> bool {
    cfg.db_url.as_deref().is_some_and(|u| u.starts_with(b"sqlite:"))
}

fn open(cfg: &Config) -> Result<DbConn<'static>, String> {
    let api = API.get().ok_or("DB API not bound")?;
    let url = cfg.db_url.as_deref().ok_or("no db_url")?;
    let mut con = api.connect(url)?;
    con.use_table(&cfg.subs_table)?;
    if is_sqlite(cfg) {
        // db_sqlite sets no busy timeout: a reader of the file (sqlite3,
        // a backup) would otherwise fail our writes at once. WAL: readers
        // (other processes, sqlite3) are never blocked by a batch and do
        // not block it; a commit is one append to the log. NORMAL sync in
        // WAL mode keeps every commit across a crash of Kamailio (kill -9);
        // only a power loss can take the last commits back.
        // A big page cache (sqlite's own heap, not Kamailio's pkg) keeps a
        // batch of new rows from spilling pages to the log before its commit.
        for pragma in [
            "PRAGMA busy_timeout = 5000",
            "PRAGMA journal_mode = WAL",
            "PRAGMA synchronous = NORMAL",
            "PRAGMA cache_size = -32768",
        ] {
            if let Err(e) = con.raw_rows(pragma) {
                lm_warn!("{pragma} on {}: {e}", B(cfg.db_url.as_deref().unwrap_or_default()));
            }
        }
    }
    Ok(con)
}

/// The DB writer's connection: Kamailio's DB API, and on a `sqlite://`
/// URL the same file through the sqlite library (see
/// [`crate::host::sqlite`]): its batches are then written with prepared
/// statements, one bound row at a time, instead of SQL text that
/// db_sqlite would parse again for every statement.
pub struct WriterConn {
    api: DbConn<'static>,
    native: Option<Sqlite>,
}

/// The file db_sqlite opened for this connection, as sqlite resolved it
/// (`PRAGMA database_list`, the main database's row): the library then
/// opens that very file, however the URL spelled it.
fn sqlite_file(api: &DbConn<'_>) -> Option<Vec<u8>> {
    let rows = api.raw_rows("PRAGMA database_list").ok()?;
    let main = rows.iter().find(|r| r.get(1).map(Value::bytes) == Some(&b"main"[..]))?;
    let file = main.get(2).map(Value::bytes)?;
    (!file.is_empty()).then(|| file.to_vec())
}

fn open_writer(cfg: &Config) -> Result<WriterConn, String> {
    let api = open(cfg)?;
    let file = if is_sqlite(cfg) && crate::host::sqlite::available() { sqlite_file(&api) } else { None };
    let native = match file {
        Some(path) => match Sqlite::open(&path, 5000) {
            Ok(n) => match n.exec("PRAGMA synchronous = NORMAL; PRAGMA cache_size = -32768") {
                Ok(()) => Some(n),
                Err(e) => {
                    lm_warn!("SCA DB writer: {e}; writing through db_sqlite instead");
                    None
                }
            },
            Err(e) => {
                lm_warn!("SCA DB writer: {e}; writing through db_sqlite instead");
                None
            }
        },
        _ => None,
    };
    Ok(WriterConn { api, native })
}

/// A row of the row-by-row read (`COLUMNS`, then id): the same record as
/// every other read builds ([`page::row`]).
fn row_to_rec(row: &[Value]) -> Option<SubscriptionRec<'_>> {
    let int = |i: usize| row.get(i).and_then(Value::int);
    let bytes = |i: usize| row.get(i).map(Value::bytes).unwrap_or(&[]);
    // page::row's order: id, server_id, event, expires, state, app_idx,
    // notify_cseq, subscribe_cseq; subscriber, aor, call_id, from_tag,
    // to_tag, record_route
    let ints = [Some(0), int(12), int(2), int(3), int(4), int(5), int(10), int(11)];
    let strs = [bytes(0), bytes(1), bytes(6), bytes(7), bytes(8), bytes(9)];
    page::row(ints, strs, true)?.rec
}

/// What a restore did.
#[derive(Default, Debug)]
struct RestoreStats {
    added: usize,
    kept_live: usize,
    skipped: usize,
    pages: usize,
    /// How the rows were read (the last way, if one took over from another).
    via: &'static str,
    /// Time waiting for the DB: its driver (the query, the result into
    /// private memory) or its library (the rows of a direct read).
    read: Duration,
    /// Time storing into shared memory.
    store: Duration,
    /// Keeps q_malloc's search short while the rows are stored.
    aid: crate::host::shm::FillAid,
}

/// Which restore read a backend gets: its rows aggregated into one text
/// value a page (sqlite, PostgreSQL), or row by row (any other).
fn page_dialect(cfg: &Config) -> Option<page::Dialect> {
    let url = cfg.db_url.as_deref()?;
    if url.starts_with(b"sqlite:") {
        Some(page::Dialect::Sqlite)
    } else if url.starts_with(b"postgres:") {
        Some(page::Dialect::Postgres)
    } else {
        None
    }
}

/// Rows a restore page aggregated into one text value starts with; halved
/// (down to [`AGG_PAGE_MIN`]) while a page's text is over [`AGG_PAGE_BYTES`],
/// so that one value stays far below Kamailio's default 8 MB of private
/// memory whatever the rows hold.
const AGG_PAGE_ROWS: usize = 2000;
const AGG_PAGE_MIN: usize = 100;
const AGG_PAGE_BYTES: usize = 1 << 20;

/// The aggregated read's state: rows a page, the strings' buffers.
struct AggCursor {
    rows: usize,
    bufs: [Vec<u8>; 6],
}

/// One row read back: merged into the store unless skipped.
fn take_row(
    st: &Shared,
    stats: &mut RestoreStats,
    now: i64,
    id: i64,
    sid: Option<i64>,
    rec: Option<SubscriptionRec<'_>>,
) -> Result<(), String> {
    let Some(rec) = rec else {
        if stats.skipped < 10 {
            lm_err!("skipping malformed row id {id} of {}", table());
        }
        stats.skipped += 1;
        return Ok(());
    };
    if rec.state.is_terminated() || rec.expires <= now || sid != Some(i64::from(server_id())) {
        stats.skipped += 1;
        return Ok(());
    }
    match st.store.lock_aor(rec.aor).merge_restored(&rec) {
        Ok(Restored::Added | Restored::ReplacedLive) => stats.added += 1,
        Ok(Restored::KeptLive) => stats.kept_live += 1,
        Err(e) => return Err(format!("out of shared memory after {} subscriptions ({e:?}): raise -m", stats.added)),
    }
    stats.aid.tick();
    Ok(())
}

/// One aggregated page after `last_id` (see [`page`]): Ok(Some(rows
/// read)), or Ok(None) when the page cannot be used: the caller reads it
/// again row by row from the same `last_id` (rows of it merged already
/// merge again harmlessly, as in a retried restore).
fn restore_agg_page(
    con: &DbConn<'_>,
    d: page::Dialect,
    st: &Shared,
    stats: &mut RestoreStats,
    now: i64,
    last_id: &mut i64,
    cur: &mut AggCursor,
) -> Result<Option<usize>, String> {
    let table = table();
    let AggCursor { rows, bufs } = cur;
    let t0 = Instant::now();
    let res = match con.raw_rows(&page::query(d, table, *last_id, *rows)) {
        Ok(r) => r,
        Err(e) => {
            lm_warn!("reading {table} a page at a time failed after id {last_id} ({e}): reading it row by row");
            return Ok(None);
        }
    };
    let t1 = Instant::now();
    let first = res.first();
    let count = first.and_then(|r| r.first()).and_then(Value::int).unwrap_or(-1);
    let text = first.and_then(|r| r.get(2)).map(Value::bytes).unwrap_or(&[]);
    // every line read, each with an id, before anything is merged
    let lines: Vec<&[u8]> = page::lines(text).collect();
    if usize::try_from(count).ok() != Some(lines.len()) {
        lm_warn!(
            "a page of {table} after id {last_id} gave {} lines for {count} rows: reading it row by row",
            lines.len()
        );
        return Ok(None);
    }
    let mut max_id = *last_id;
    for line in &lines {
        let row = match page::parse(line, bufs) {
            Some(r) => r,
            None => {
                lm_warn!("a page of {table} after id {last_id} has a line that cannot be read: reading it row by row");
                return Ok(None);
            }
        };
        max_id = max_id.max(row.id);
        take_row(st, stats, now, row.id, row.server_id, row.rec)?;
    }
    stats.read += t1 - t0;
    stats.store += t1.elapsed();
    stats.pages += 1;
    stats.via = "aggregated pages";
    *last_id = max_id;
    if text.len() > AGG_PAGE_BYTES {
        *rows = (*rows / 2).max(AGG_PAGE_MIN);
    }
    Ok(Some(lines.len()))
}

/// A row the direct read stores: parsed (None: a line that cannot be
/// read), merged; Err stops the read.
type Sink<'a> = dyn FnMut(Option<page::Row<'_>>) -> Result<(), String> + 'a;

/// The rows after `last_id` read past Kamailio's DB API by `read` (given
/// `last_id` and the sink that stores each row as it comes, in id
/// order). Ok(true): all read. Ok(false): the read could not start or
/// stopped (logged); the rows up to `last_id` are merged and the caller
/// reads the rest page by page. Err: the store is full.
fn restore_direct(
    via: &'static str,
    st: &Shared,
    stats: &mut RestoreStats,
    now: i64,
    last_id: &mut i64,
    read: impl FnOnce(i64, &mut Sink<'_>) -> Result<(), String>,
) -> Result<bool, String> {
    let t0 = Instant::now();
    let mut store = Duration::ZERO;
    let mut full = None;
    let from = *last_id;
    let r = read(from, &mut |row| {
        let t = Instant::now();
        let row = row.ok_or("a row that cannot be read")?;
        let r = take_row(st, stats, now, row.id, row.server_id, row.rec);
        // the rows come by id: those up to here are merged
        *last_id = (*last_id).max(row.id);
        store += t.elapsed();
        r.inspect_err(|e| full = Some(e.clone()))
    });
    stats.store += store;
    stats.read += t0.elapsed().saturating_sub(store);
    stats.pages += 1;
    stats.via = via;
    match (r, full) {
        (Ok(()), _) => Ok(true),
        (Err(_), Some(e)) => Err(e),
        (Err(e), None) => {
            lm_warn!("reading {} by {via} stopped after id {last_id} ({e}): reading the rest a page at a time", table());
            Ok(false)
        }
    }
}

/// PostgreSQL: one `COPY` through libpq (see [`copy`]), the server
/// streaming the rows while they are stored.
fn restore_copy(url: &[u8], st: &Shared, stats: &mut RestoreStats, now: i64, last_id: &mut i64) -> Result<bool, String> {
    if !pq::available() {
        return Ok(false);
    }
    restore_direct("COPY through libpq", st, stats, now, last_id, |from, sink| {
        let module = API.get().and_then(DbApi::module_file);
        let con = Pq::connect(&hdb::url_parts(url)?, module.as_deref())?;
        let mut bufs: [Vec<u8>; 6] = Default::default();
        con.copy_out(&copy::query(table(), from), |line| sink(copy::parse(line, &mut bufs)))
    })
}

/// sqlite: one SELECT stepped through the sqlite library (see
/// [`crate::host::sqlite`]) on the file db_sqlite opened.
fn restore_sqlite(api: &DbConn<'_>, st: &Shared, stats: &mut RestoreStats, now: i64, last_id: &mut i64) -> Result<bool, String> {
    if !crate::host::sqlite::available() {
        return Ok(false);
    }
    restore_direct("the sqlite library", st, stats, now, last_id, |from, sink| {
        let file = sqlite_file(api).ok_or("db_sqlite's file not found")?;
        let con = Sqlite::open(&file, 5000)?;
        let mut q = con.prepare(&copy::select(table(), from))?;
        q.each_row(|r| {
            let ints = core::array::from_fn(|i| r.int(i));
            let strs = core::array::from_fn(|i| r.bytes(page::INTS.len() + i));
            sink(page::row(ints, strs, true))
        })
    })
}

/// Read this server's unexpired rows into the store (directly where the
/// backend allows, see [`restore_direct`]; else, or for what a direct
/// read left, page by page), merged with what is there (nothing at
/// start-up; a retry after fork finds what phones subscribed meanwhile).
/// Err: the DB could not be read (rows read before stay merged; a retry
/// merges them again, harmlessly).
fn restore_pages(cfg: &Config, st: &Shared, now: i64) -> Result<RestoreStats, String> {
    let table = table();
    let mut con = open(cfg)?;
    // (the version check switches the connection to the `version` table)
    con.check_version(&cfg.subs_table, TABLE_VERSION)?;
    con.use_table(&cfg.subs_table)?;
    // rows of this server that expired while it was down
    let now32 = i32::try_from(now).unwrap_or(i32::MAX);
    if let Err(e) = con.delete(&["server_id", "expires"], &[OP_EQ, OP_LT], &[Val::Int(server_id()), Val::Int(now32)]) {
        lm_warn!("cannot delete the expired rows of {table}: {e}; they are skipped");
    }
    let cols = COLUMNS.join(", ");
    let mut stats = RestoreStats::default();
    let mut last_id: i64 = 0;
    let mut agg = page_dialect(cfg);
    let streamed = match (agg.filter(|_| cfg.db_restore_direct), cfg.db_url.as_deref()) {
        (Some(page::Dialect::Postgres), Some(url)) => restore_copy(url, st, &mut stats, now, &mut last_id)?,
        (Some(page::Dialect::Sqlite), _) => restore_sqlite(&con, st, &mut stats, now, &mut last_id)?,
        _ => false,
    };
    if streamed {
        return Ok(stats);
    }
    let mut cur = AggCursor { rows: AGG_PAGE_ROWS, bufs: Default::default() };
    loop {
        // Only the primary key in the query: every backend then walks it
        // from `last_id` (with a filter on server_id or expires, a planner
        // without fresh statistics, as PostgreSQL after a bulk load, sorts
        // the whole table for each page). Other servers' rows and expired
        // ones are skipped here.
        if let Some(d) = agg {
            let asked = cur.rows;
            match restore_agg_page(&con, d, st, &mut stats, now, &mut last_id, &mut cur)? {
                Some(n) if n < asked => return Ok(stats),
                Some(_) => continue,
                // from here on row by row
                None => agg = None,
            }
        }
        let sql = format!("SELECT {cols}, id FROM {table} WHERE id > {last_id} ORDER BY id LIMIT {PAGE_ROWS}");
        let t0 = Instant::now();
        let rows = con.raw_rows(&sql).map_err(|e| format!("reading {table} after id {last_id}: {e}"))?;
        let t1 = Instant::now();
        stats.read += t1 - t0;
        stats.pages += 1;
        stats.via = "pages of rows";
        for row in &rows {
            let id = row.get(13).and_then(Value::int);
            let Some(id) = id else {
                return Err(format!("a row of {table} after id {last_id} has no id"));
            };
            last_id = last_id.max(id);
            take_row(st, &mut stats, now, id, row.get(12).and_then(Value::int), row_to_rec(row))?;
        }
        stats.store += t1.elapsed();
        if rows.len() < PAGE_ROWS {
            return Ok(stats);
        }
    }
}

/// Restore at start-up (mod_init, before fork). False: it failed, was
/// logged, and the DB writer retries it.
pub fn restore(cfg: &Config, st: &Shared, now: i64) -> bool {
    let t0 = Instant::now();
    match restore_pages(cfg, st, now) {
        Ok(s) => {
            metrics::DB_RESTORED.add(s.added as u64);
            lm_notice!(
                "restored {} SCA subscriptions from {} ({} rows skipped: expired, ended or another server's; {} pages) in {} ms (DB read {} ms, store {} ms; read by {})",
                s.added,
                B(&cfg.subs_table),
                s.skipped,
                s.pages,
                t0.elapsed().as_millis(),
                s.read.as_millis(),
                s.store.as_millis(),
                s.via
            );
            true
        }
        Err(e) => {
            lm_err!(
                "cannot restore SCA subscriptions from {}: {e}. Phones' lines look idle until they re-subscribe \
                 or the restore succeeds; the DB writer retries it every {}s",
                B(&cfg.subs_table),
                cfg.db_update_interval
            );
            false
        }
    }
}

/// The DB writer's retry of a failed start-up restore. True once done.
fn restore_retry(cfg: &Config, st: &Shared, now: i64) -> bool {
    match restore_pages(cfg, st, now) {
        Ok(s) => {
            st.restore_pending.store(false, Ordering::Release);
            metrics::DB_RESTORED.add(s.added as u64);
            lm_notice!(
                "SCA restore retry succeeded: restored {} SCA subscriptions from {} ({} already re-subscribed, {} skipped)",
                s.added,
                B(&cfg.subs_table),
                s.kept_live,
                s.skipped
            );
            true
        }
        Err(e) => {
            lm_err!(
                "SCA restore retry failed: {e}. Phones' lines look idle until they re-subscribe or the restore \
                 succeeds; retrying in {}s",
                cfg.db_update_interval
            );
            false
        }
    }
}

// ---------------------------------------------------------------- writes

fn key_vals(r: &RowData) -> [Val<'_>; 3] {
    [Val::Str(&r.subscriber), Val::Str(&r.aor), Val::Int(r.event as i32)]
}

/// Columns after the key, as written by INSERT and UPDATE.
fn data_vals(r: &RowData) -> [Val<'_>; 10] {
    [
        Val::Int(i32::try_from(r.expires).unwrap_or(i32::MAX)),
        Val::Int(r.state as i32),
        Val::Int(r.index.max(0)),
        Val::Str(&r.call_id),
        Val::Str(&r.from_tag),
        Val::Str(&r.to_tag),
        Val::Str(&r.record_route),
        Val::Int(r.notify_cseq as i32),
        Val::Int(r.subscribe_cseq.wrapping_add(1) as i32),
        Val::Int(server_id()),
    ]
}

/// A row's values for [`COLUMNS`], as INSERTed.
fn row_vals(r: &RowData) -> [Val<'_>; 13] {
    let [a, b, c] = key_vals(r);
    let d = data_vals(r);
    [a, b, c, d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7], d[8], d[9]]
}

/// The table's unique key (subscriber, call_id, from_tag, to_tag).
fn dialog_vals(r: &RowData) -> [Val<'_>; 4] {
    [Val::Str(&r.subscriber), Val::Str(&r.call_id), Val::Str(&r.from_tag), Val::Str(&r.to_tag)]
}

fn tomb_key_vals(t: &Tombstone) -> [Val<'_>; 3] {
    [Val::Str(&t.subscriber), Val::Str(&t.aor), Val::Int(t.event as i32)]
}

/// The same values bound to a statement of the sqlite library.
fn binds<'v, const N: usize>(vals: &[Val<'v>; N]) -> [Bind<'v>; N] {
    vals.map(|v| match v {
        Val::Int(i) => Bind::Int(i64::from(i)),
        Val::Str(b) => Bind::Text(b),
    })
}

/// The rows to INSERT of `writes` (not the deletes), in the order of the
/// table's unique key (subscriber, call_id, from_tag, to_tag), whose first
/// column also leads the subscriber index: each statement's index inserts
/// then go to neighbouring B-tree pages instead of random ones (the
/// snapshot's order is the hash table's). Profiled on sqlite: its insert
/// work per row roughly halves; PostgreSQL's and MariaDB's index inserts
/// gain too.
fn in_key_order<'w>(writes: impl Iterator<Item = &'w RowWrite>) -> Vec<&'w RowData> {
    let mut rows: Vec<&RowData> = writes.filter(|w| w.op != RowOp::Delete).map(|w| &w.row).collect();
    rows.sort_unstable_by(|a, b| {
        (&a.subscriber, &a.call_id, &a.from_tag, &a.to_tag).cmp(&(&b.subscriber, &b.call_id, &b.from_tag, &b.to_tag))
    });
    rows
}

fn insert(con: &DbConn<'_>, r: &RowData) -> Result<(), String> {
    con.insert(&COLUMNS, &row_vals(r))
}

fn update(con: &DbConn<'_>, r: &RowData) -> Result<(), String> {
    con.update(&KEY, &KEY_OPS, &key_vals(r), &COLUMNS[3..], &data_vals(r))
}

fn delete_key(con: &DbConn<'_>, t: &Tombstone) -> Result<(), String> {
    con.delete(&KEY, &KEY_OPS, &tomb_key_vals(t))
}

/// Whatever row holds this subscription's key, or its dialog (the table's
/// unique key): gone, then the row inserted. Right whatever the DB holds.
fn rewrite(con: &DbConn<'_>, r: &RowData) -> Result<(), String> {
    con.delete(&KEY, &KEY_OPS, &key_vals(r))?;
    con.delete(&["subscriber", "call_id", "from_tag", "to_tag"], &[OP_EQ, OP_EQ, OP_EQ, OP_EQ], &dialog_vals(r))?;
    insert(con, r)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// One statement per row, as its history says (INSERT/UPDATE).
    Fast,
    /// Delete by key and by dialog, then insert: for a batch that failed
    /// the fast way, and at shutdown (a batch abandoned after its commit
    /// left rows "not known committed" that are in the DB).
    Careful,
}

fn write_row(con: &DbConn<'_>, w: &RowWrite, mode: Mode) -> Result<(), String> {
    let r = match (mode, w.op) {
        (_, RowOp::Delete) => con.delete(&KEY, &KEY_OPS, &key_vals(&w.row)),
        (Mode::Fast, RowOp::Insert) => insert(con, &w.row),
        (Mode::Fast, RowOp::Update) => update(con, &w.row),
        (Mode::Careful, _) => rewrite(con, &w.row),
    };
    r.map_err(|e| format!("{e} (subscription of {})", B(&w.row.subscriber)))
}

/// DELETE every row matching one of `conds`, [`sql::CHUNK`] conditions a statement.
fn delete_where(con: &DbConn<'_>, conds: &[String]) -> Result<(), String> {
    for stmt in sql::deletes(table(), conds) {
        con.raw_rows(&stmt).map_err(|e| format!("multi-row delete: {e}"))?;
    }
    Ok(())
}

/// INSERT `rows`, [`sql::CHUNK`] rows a statement (PostgreSQL: one array
/// a column, [`sql::ARRAY_CHUNK`] rows a statement).
fn insert_values(con: &DbConn<'_>, rows: &[&RowData]) -> Result<(), String> {
    let stmts = if POSTGRES.get().copied().unwrap_or(false) {
        sql::inserts_unnest(table(), &COLUMNS, rows, server_id())
    } else {
        sql::inserts(table(), &COLUMNS, rows, server_id())
    };
    for stmt in stmts {
        con.raw_rows(&stmt).map_err(|e| format!("multi-row insert: {e}"))?;
    }
    Ok(())
}

/// Deletes first, then rows, in one transaction; rolled back on an error.
/// Rows of plain ASCII go in multi-row statements (the bulk of them);
/// the others one by one through the DB API.
fn write_batch(con: &DbConn<'_>, tombs: &[Tombstone], rows: &[RowWrite], mode: Mode) -> Result<(), String> {
    let tx = con.begin();
    let result = (|| {
        let mut deletes = Vec::new();
        for t in tombs {
            if sql::plain(&t.subscriber) && sql::plain(&t.aor) {
                deletes.push(sql::key_cond(&t.subscriber, &t.aor, t.event));
            } else {
                delete_key(con, t)?;
            }
        }
        let (bulk, single): (Vec<&RowWrite>, Vec<&RowWrite>) = rows.iter().partition(|w| sql::row_is_plain(&w.row));
        for w in &bulk {
            let r = &w.row;
            if mode == Mode::Careful || w.op != RowOp::Insert {
                deletes.push(sql::key_cond(&r.subscriber, &r.aor, r.event));
            }
            if mode == Mode::Careful && w.op != RowOp::Delete {
                deletes.push(sql::dialog_cond(r));
            }
        }
        delete_where(con, &deletes)?;
        insert_values(con, &in_key_order(bulk.iter().copied()))?;
        for w in single {
            write_row(con, w, mode)?;
        }
        con.commit(tx)
    })();
    if result.is_err() {
        con.rollback(tx);
    }
    result
}

/// [`write_batch`] on the sqlite library: the same statements in the same
/// order (deletes of ended subscriptions; per row its key's delete unless
/// it is a fast-mode insert, its dialog's delete in careful mode; then the
/// inserts in the unique key's order), each prepared once and run with
/// the row's values bound, so any byte goes through.
fn write_batch_native(db: &Sqlite, tombs: &[Tombstone], rows: &[RowWrite], mode: Mode) -> Result<(), String> {
    let t = table();
    db.exec("BEGIN IMMEDIATE")?;
    let result = (|| {
        let mut del_key = db.prepare(&format!("DELETE FROM {t} WHERE subscriber = ? AND aor = ? AND event = ?"))?;
        let mut del_dialog = db.prepare(&format!(
            "DELETE FROM {t} WHERE subscriber = ? AND call_id = ? AND from_tag = ? AND to_tag = ?"
        ))?;
        let mut ins = db.prepare(&format!(
            "INSERT INTO {t} ({}) VALUES ({})",
            COLUMNS.join(", "),
            vec!["?"; COLUMNS.len()].join(", ")
        ))?;
        for d in tombs {
            del_key.run(&binds(&tomb_key_vals(d)))?;
        }
        for w in rows {
            let r = &w.row;
            if mode == Mode::Careful || w.op != RowOp::Insert {
                del_key.run(&binds(&key_vals(r)))?;
            }
            if mode == Mode::Careful && w.op != RowOp::Delete {
                del_dialog.run(&binds(&dialog_vals(r)))?;
            }
        }
        for r in in_key_order(rows.iter()) {
            ins.run(&binds(&row_vals(r))).map_err(|e| format!("{e} (subscription of {})", B(&r.subscriber)))?;
        }
        Ok(())
    })()
    .and_then(|()| db.exec("COMMIT"));
    if result.is_err() {
        // (after a failed COMMIT the transaction may be gone already)
        let _ = db.exec("ROLLBACK");
    }
    result
}

/// A batch through the writer's connection: the sqlite library's when it
/// has one, else Kamailio's DB API.
fn write_batch_on(con: &WriterConn, tombs: &[Tombstone], rows: &[RowWrite], mode: Mode) -> Result<(), String> {
    match &con.native {
        Some(db) => write_batch_native(db, tombs, rows, mode),
        None => write_batch(&con.api, tombs, rows, mode),
    }
}

/// What is committed after [`write_batch_resilient`].
struct Written {
    /// The first `tombs` deletes committed.
    tombs: usize,
    /// The rows committed (all of them, or those that went through one by one).
    rows: Vec<RowWrite>,
    /// The first error, if anything stays to write.
    error: Option<String>,
}

/// The batch the fast way; if that fails, the careful way; if that fails
/// too, each delete and row in its own transaction, so a row the DB
/// refuses does not hold up the others (it stays marked and is retried).
fn write_batch_resilient(con: &WriterConn, tombs: &[Tombstone], rows: Vec<RowWrite>, first: Mode) -> Written {
    let mut err = String::new();
    let modes: &[Mode] = if first == Mode::Fast { &[Mode::Fast, Mode::Careful] } else { &[Mode::Careful] };
    for &mode in modes {
        match write_batch_on(con, tombs, &rows, mode) {
            Ok(()) => return Written { tombs: tombs.len(), rows, error: None },
            Err(e) => err = e,
        }
    }
    let mut done_tombs = 0;
    for t in tombs {
        if write_batch_on(con, std::slice::from_ref(t), &[], Mode::Careful).is_err() {
            break;
        }
        done_tombs += 1;
    }
    let total = rows.len();
    let ok: Vec<RowWrite> = rows
        .into_iter()
        .filter(|w| done_tombs == tombs.len() && write_batch_on(con, &[], std::slice::from_ref(w), Mode::Careful).is_ok())
        .collect();
    let error = (done_tombs < tombs.len() || ok.len() < total).then(|| {
        format!(
            "{err}; written one by one: {done_tombs} of {} deletes, {} of {total} rows",
            tombs.len(),
            ok.len()
        )
    });
    Written { tombs: done_tombs, rows: ok, error }
}

/// Batches this big are logged (a burst of new subscriptions, a restart).
const BIG_BATCH: usize = 1000;

/// One batch of the writer. Returns the rows written.
fn flush(st: &Shared, con: &WriterConn) -> Result<usize, String> {
    // the deletes first: a subscription that ended and came back after
    // this point is in the snapshot and written after its delete
    let tombs = st.peek_tombstones();
    let rows = persist::snapshot(&st.store, &tombs);
    if tombs.is_empty() && rows.is_empty() {
        return Ok(0);
    }
    let t0 = Instant::now();
    let total = tombs.len() + rows.len();
    let w = write_batch_resilient(con, &tombs, rows, Mode::Fast);
    st.last_flush_ms.store(t0.elapsed().as_millis() as u64, Ordering::Relaxed);
    metrics::DB_ROWS_FAILED.add(total.saturating_sub(w.tombs + w.rows.len()) as u64);
    if w.rows.len() + w.tombs >= BIG_BATCH {
        lm_notice!(
            "SCA DB writer: {} rows and {} deletes committed in {} ms",
            w.rows.len(),
            w.tombs,
            t0.elapsed().as_millis()
        );
    }
    st.drop_tombstones(w.tombs);
    persist::mark_committed(&st.store, &w.rows);
    st.rows_written.fetch_add(w.rows.len() as u64, Ordering::Relaxed);
    match w.error {
        None => Ok(w.rows.len()),
        Some(e) => Err(e),
    }
}

/// One tick of the DB writer process: a pending restore first, then a
/// batch, with a connection of this process, reconnecting as needed.
pub fn flush_with_reconnect(cfg: &Config, st: &Shared, conn: &mut Option<WriterConn>, now: i64) {
    if st.restore_pending.load(Ordering::Acquire) && !restore_retry(cfg, st, now) {
        // writing now could put a second row beside a row not read yet
        return;
    }
    if conn.is_none() {
        match open_writer(cfg) {
            Ok(c) => {
                lm_notice!(
                    "SCA DB writer connected to {}{}",
                    B(cfg.db_url.as_deref().unwrap_or_default()),
                    if c.native.is_some() { " (batches through the sqlite library, prepared statements)" } else { "" }
                );
                *conn = Some(c);
            }
            Err(e) => {
                lm_err!("SCA DB writer: {e}; changes stay in shared memory, retrying in {}s", cfg.db_update_interval);
                return;
            }
        }
    }
    let Some(c) = conn.as_ref() else { return };
    if let Err(e) = flush(st, c) {
        lm_err!("SCA DB write failed: {e}; what is not written stays in shared memory, retrying in {}s", cfg.db_update_interval);
        // reconnect next time: the connection may be dead
        *conn = None;
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
///
/// The writer may have died in the middle of a batch (SIGTERM, or killed):
/// its transaction was then rolled back, or committed without the marks
/// cleared; either way everything still marked is written here, the careful
/// way (delete by key, then insert), so nothing is lost or doubled.
pub fn flush_at_exit(cfg: &Config, st: &Shared) {
    let pause = || std::thread::sleep(Duration::from_millis(1));
    if st.restore_pending.load(Ordering::Acquire) {
        // the careful way replaces only the rows under the keys written:
        // the rows never restored stay for the next start
        lm_warn!("SCA restore never succeeded: writing what phones subscribed since; the other rows stay as they are");
    }
    let tombs = st.tombstones_at_exit(EXIT_LOCK_TRIES, pause).unwrap_or_else(|| {
        lm_warn!("SCA ended-subscription queue still locked at shutdown: their DB rows stay until they expire");
        Vec::new()
    });
    let (rows, skipped) = persist::snapshot_at_exit(&st.store, &tombs, EXIT_LOCK_TRIES, pause);
    if skipped > 0 {
        lm_warn!(
            "{skipped} SCA hash slot(s) still locked by a process that exited at shutdown: \
             their changes since the last periodic DB write are not saved"
        );
    }
    let con = match open_writer(cfg) {
        Ok(c) => c,
        Err(e) => {
            lm_err!("final SCA DB flush: {e}");
            return;
        }
    };
    let n = rows.len();
    let w = write_batch_resilient(&con, &tombs, rows, Mode::Careful);
    match w.error {
        None => lm_info!(
            "SCA subscriptions flushed to the DB at shutdown ({n} rows written, {} deletes{})",
            w.tombs,
            if con.native.is_some() { ", through the sqlite library" } else { "" }
        ),
        Some(e) => lm_err!("final SCA DB flush incomplete: {e}"),
    }
}
