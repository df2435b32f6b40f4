//! Persistence bookkeeping: which subscriptions the DB writer writes, how,
//! and when a write counts as done. Plain Rust over the [`Store`], so the
//! rules are unit-tested without a DB; the module's writer only runs the
//! statements.
//!
//! - Every change of a subscription bumps its generation and marks it
//!   dirty ([`Subscription::touch`], or [`AorGuard::put_sub`](crate::store::AorGuard::put_sub)).
//! - A batch is a [`snapshot`] (copies taken under each slot lock) written
//!   with no lock held. Only after its commit succeeded does
//!   [`mark_committed`] clear the marks, and only where the generation is
//!   still the one written: a change made while the batch was in flight
//!   stays marked. A failed or abandoned batch clears nothing.
//! - A subscription whose key has a row committed ([`Subscription::in_db`])
//!   is written as an UPDATE, any other as an INSERT.
//! - Ended subscriptions are DB deletes ([`DbDelete`]) queued by whoever
//!   removes them, taken by the writer *before* its snapshot and dropped
//!   from the queue only after the commit. A live subscription under the
//!   key of a queued delete (ended, then subscribed again) is written as an
//!   INSERT after that delete in the same batch, whatever its marks say.

use std::collections::HashMap;
use std::vec::Vec;

use allocator_api2::alloc::Allocator;

use crate::model::{EventType, SubState};
use crate::store::{AorEntry, Store, Subscription, SubscriptionRec};
use crate::sync::RawLock;

/// The DB row key of an ended subscription, to delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbDelete {
    pub aor: Vec<u8>,
    pub subscriber: Vec<u8>,
    pub event: EventType,
}

/// An owned copy of a subscription, written with no lock held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowData {
    pub aor: Vec<u8>,
    pub subscriber: Vec<u8>,
    pub call_id: Vec<u8>,
    pub from_tag: Vec<u8>,
    pub to_tag: Vec<u8>,
    pub record_route: Vec<u8>,
    pub event: EventType,
    pub expires: i64,
    pub state: SubState,
    pub index: i32,
    pub notify_cseq: u32,
    pub subscribe_cseq: u32,
}

impl RowData {
    pub fn of<A: Allocator>(aor: &[u8], s: &Subscription<A>) -> Self {
        RowData {
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

    pub fn as_rec(&self) -> SubscriptionRec<'_> {
        SubscriptionRec {
            aor: &self.aor,
            subscriber: &self.subscriber,
            event: self.event,
            expires: self.expires,
            state: self.state,
            index: self.index,
            call_id: &self.call_id,
            from_tag: &self.from_tag,
            to_tag: &self.to_tag,
            record_route: &self.record_route,
            notify_cseq: self.notify_cseq,
            subscribe_cseq: self.subscribe_cseq,
        }
    }

    fn is_key(&self, d: &DbDelete) -> bool {
        self.event == d.event && self.subscriber == d.subscriber && self.aor == d.aor
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RowOp {
    /// No row with this key is known committed.
    Insert,
    /// The row exists: rewrite it in place.
    Update,
    /// The subscription ended (terminated, kept until the purge for its
    /// last NOTIFY): its row goes now.
    Delete,
}

/// One subscription to write, with the generation it was copied at.
#[derive(Debug, Clone)]
pub struct RowWrite {
    pub row: RowData,
    pub op: RowOp,
    pub gen: u32,
}

impl RowWrite {
    fn of<A: Allocator>(aor: &[u8], s: &Subscription<A>) -> Self {
        RowWrite {
            row: RowData::of(aor, s),
            op: if s.state.is_terminated() {
                RowOp::Delete
            } else if s.in_db() {
                RowOp::Update
            } else {
                RowOp::Insert
            },
            gen: s.gen(),
        }
    }
}

fn dirty_rows<A: Allocator + Clone>(e: &AorEntry<A>, rows: &mut Vec<RowWrite>) {
    rows.extend(e.subs.iter().filter(|s| s.is_dirty()).map(|s| RowWrite::of(e.aor(), s)));
}

/// [`dirty_rows`], recording in each subscription that a batch took it.
fn take_dirty_rows<A: Allocator + Clone>(e: &mut AorEntry<A>, rows: &mut Vec<RowWrite>) {
    // ended before any batch took it: there is no row to delete
    for s in e.subs.iter_mut().filter(|s| s.is_dirty() && s.state.is_terminated() && !s.needs_db_delete()) {
        let gen = s.gen();
        s.mark_committed(gen, false);
    }
    let first = rows.len();
    dirty_rows(e, rows);
    if rows.len() > first {
        for s in e.subs.iter_mut().filter(|s| s.is_dirty()) {
            s.mark_taken(!s.state.is_terminated());
        }
    }
}

/// Live subscriptions under the keys of `deletes` become INSERTs after
/// their delete: in `rows` already, or looked up with `live`.
fn reinsert_after_deletes(
    rows: &mut Vec<RowWrite>,
    deletes: &[DbDelete],
    mut live: impl FnMut(&DbDelete) -> Option<RowWrite>,
) {
    if deletes.is_empty() {
        return;
    }
    let mut at: HashMap<(Vec<u8>, Vec<u8>, u8), usize> = HashMap::new();
    for (i, r) in rows.iter().enumerate() {
        at.insert((r.row.aor.clone(), r.row.subscriber.clone(), r.row.event as u8), i);
    }
    for d in deletes {
        let key = (d.aor.clone(), d.subscriber.clone(), d.event as u8);
        if let Some(&i) = at.get(&key) {
            if rows[i].op != RowOp::Delete {
                rows[i].op = RowOp::Insert;
            }
        } else if let Some(mut w) = live(d).filter(|w| w.op != RowOp::Delete) {
            debug_assert!(w.row.is_key(d));
            w.op = RowOp::Insert;
            at.insert(key, rows.len());
            rows.push(w);
        }
    }
}

/// The rows of one batch: every dirty subscription, and the live ones
/// under the keys of `deletes` (taken from the delete queue before this
/// call), each copied under its slot lock.
pub fn snapshot<A: Allocator + Clone, L: RawLock>(store: &Store<A, L>, deletes: &[DbDelete]) -> Vec<RowWrite> {
    let mut rows = Vec::new();
    store.retain_aors(|e| take_dirty_rows(e, &mut rows));
    reinsert_after_deletes(&mut rows, deletes, |d| {
        let mut g = store.lock_aor(&d.aor);
        g.find_sub_mut(d.event, &d.subscriber).map(|s| {
            s.mark_taken(!s.state.is_terminated());
            RowWrite::of(&d.aor, s)
        })
    });
    rows
}

/// [`snapshot`] for shutdown: each lock tried `attempts` times with
/// `pause()` between tries; slots still held (by a process that died
/// holding them) are skipped and counted. Every row is an INSERT: after an
/// abandoned batch, "not known committed" may well be in the DB, and the
/// final flush writes in the careful way (delete by key, then insert).
/// Ended subscriptions stay deletes.
pub fn snapshot_at_exit<A: Allocator + Clone, L: RawLock>(
    store: &Store<A, L>,
    deletes: &[DbDelete],
    attempts: u32,
    mut pause: impl FnMut(),
) -> (Vec<RowWrite>, usize) {
    let mut rows = Vec::new();
    let mut skipped = store.for_each_aor_unless_held(attempts, &mut pause, |e| dirty_rows(e, &mut rows));
    reinsert_after_deletes(&mut rows, deletes, |d| match store.try_lock_aor_within(&d.aor, attempts, &mut pause) {
        Some(g) => g.find_sub(d.event, &d.subscriber).map(|s| RowWrite::of(&d.aor, s)),
        None => {
            skipped += 1;
            None
        }
    });
    for r in rows.iter_mut().filter(|r| r.op != RowOp::Delete) {
        r.op = RowOp::Insert;
    }
    (rows, skipped)
}

/// After the batch holding `rows` committed: clear the marks of those
/// unchanged since, and record that their rows exist.
pub fn mark_committed<A: Allocator + Clone, L: RawLock>(store: &Store<A, L>, rows: &[RowWrite]) {
    for r in rows {
        let mut g = store.lock_aor(&r.row.aor);
        if let Some(s) = g.find_sub_mut(r.row.event, &r.row.subscriber) {
            s.mark_committed(r.gen, r.op != RowOp::Delete);
        }
    }
}

/// SQL text for the writer's multi-row statements. Only values of plain
/// printable ASCII without a backslash ([`sql::plain`]) are put in SQL
/// text: for them doubling `'` is the whole of quoting on sqlite,
/// PostgreSQL and MySQL/MariaDB, whatever their escape settings; rows with
/// any other value go through the DB API's bound values instead.
pub mod sql {
    use super::RowData;
    use crate::model::EventType;
    use std::string::String;
    use std::vec::Vec;

    /// Rows per multi-row statement (an INSERT of this many is ~60 kB of
    /// SQL; an OR of this many key matches stays far below sqlite's
    /// expression depth limit of 1000).
    pub const CHUNK: usize = 200;

    /// Can `b` go into SQL text?
    pub fn plain(b: &[u8]) -> bool {
        b.iter().all(|&c| (0x20..0x7f).contains(&c) && c != b'\\')
    }

    pub fn row_is_plain(r: &RowData) -> bool {
        [&r.subscriber, &r.aor, &r.call_id, &r.from_tag, &r.to_tag, &r.record_route].iter().all(|b| plain(b))
    }

    /// `b` quoted; the caller checked [`plain`] (anything else is dropped,
    /// never emitted raw).
    pub fn push_str(out: &mut String, b: &[u8]) {
        out.push('\'');
        for &c in b.iter().filter(|&&c| (0x20..0x7f).contains(&c) && c != b'\\') {
            if c == b'\'' {
                out.push('\'');
            }
            out.push(c as char);
        }
        out.push('\'');
    }

    /// The row key (subscriber, aor, event) as a condition.
    pub fn key_cond(subscriber: &[u8], aor: &[u8], event: EventType) -> String {
        let mut c = String::with_capacity(96);
        c.push_str("(subscriber = ");
        push_str(&mut c, subscriber);
        c.push_str(" AND aor = ");
        push_str(&mut c, aor);
        c.push_str(&format!(" AND event = {})", event as i32));
        c
    }

    /// The table's unique key (subscriber, call_id, from_tag, to_tag).
    pub fn dialog_cond(r: &RowData) -> String {
        let mut c = String::with_capacity(128);
        let cols: [(&str, &[u8]); 4] =
            [("subscriber", &r.subscriber), ("call_id", &r.call_id), ("from_tag", &r.from_tag), ("to_tag", &r.to_tag)];
        for (i, (col, v)) in cols.into_iter().enumerate() {
            c.push_str(if i == 0 { "(" } else { " AND " });
            c.push_str(col);
            c.push_str(" = ");
            push_str(&mut c, v);
        }
        c.push(')');
        c
    }

    /// `DELETE FROM table WHERE c1 OR c2 ...`, [`CHUNK`] conditions each.
    pub fn deletes(table: &str, conds: &[String]) -> Vec<String> {
        conds.chunks(CHUNK).map(|ch| format!("DELETE FROM {table} WHERE {}", ch.join(" OR "))).collect()
    }

    /// Multi-row INSERTs of `rows` into `columns` (Kamailio's 13 columns of
    /// `sca_subscriptions`, in its order), [`CHUNK`] rows each. The stored
    /// SUBSCRIBE CSeq is the next one expected, as the C module stores it.
    pub fn inserts(table: &str, columns: &[&str], rows: &[&RowData], server_id: i32) -> Vec<String> {
        use core::fmt::Write;
        let head = format!("INSERT INTO {table} ({}) VALUES ", columns.join(", "));
        rows.chunks(CHUNK)
            .map(|chunk| {
                // one allocation a statement: the values' length plus quotes,
                // separators and numbers
                let text: usize = chunk
                    .iter()
                    .map(|r| {
                        [&r.subscriber, &r.aor, &r.call_id, &r.from_tag, &r.to_tag, &r.record_route]
                            .iter()
                            .map(|v| v.len() + v.iter().filter(|&&c| c == b'\'').count() + 2)
                            .sum::<usize>()
                            + 96
                    })
                    .sum();
                let mut sql = String::with_capacity(head.len() + text);
                sql.push_str(&head);
                for (i, r) in chunk.iter().enumerate() {
                    sql.push_str(if i == 0 { "(" } else { ", (" });
                    push_str(&mut sql, &r.subscriber);
                    sql.push_str(", ");
                    push_str(&mut sql, &r.aor);
                    // (writing into a String cannot fail)
                    let _ = write!(
                        sql,
                        ", {}, {}, {}, {}, ",
                        r.event as i32,
                        i32::try_from(r.expires).unwrap_or(i32::MAX),
                        r.state as i32,
                        r.index.max(0)
                    );
                    for v in [&r.call_id, &r.from_tag, &r.to_tag, &r.record_route] {
                        push_str(&mut sql, v);
                        sql.push_str(", ");
                    }
                    let _ = write!(
                        sql,
                        "{}, {}, {server_id})",
                        r.notify_cseq as i32,
                        r.subscribe_cseq.wrapping_add(1) as i32
                    );
                }
                sql
            })
            .collect()
    }

    /// Rows per [`inserts_unnest`] statement (~130 kB of SQL).
    pub const ARRAY_CHUNK: usize = 1000;

    /// PostgreSQL: the INSERTs of [`inserts`] as one array a column and
    /// `unnest`, [`ARRAY_CHUNK`] rows each. The server parses an array
    /// literal as one value instead of a node per VALUES item: 20,000 rows
    /// went in at 29,000-44,000 rows/s instead of 24,000-26,000 (psql).
    pub fn inserts_unnest(table: &str, columns: &[&str], rows: &[&RowData], server_id: i32) -> Vec<String> {
        use core::fmt::Write;
        rows.chunks(ARRAY_CHUNK)
            .map(|chunk| {
                let strs = |f: &dyn Fn(&RowData) -> &[u8]| {
                    let mut a = String::with_capacity(chunk.iter().map(|r| f(r).len() + 3).sum::<usize>() + 16);
                    a.push_str("ARRAY[");
                    for (i, r) in chunk.iter().enumerate() {
                        if i > 0 {
                            a.push(',');
                        }
                        push_str(&mut a, f(r));
                    }
                    a.push_str("]::text[]");
                    a
                };
                let ints = |f: &dyn Fn(&RowData) -> i64| {
                    let mut a = String::with_capacity(chunk.len() * 11 + 16);
                    a.push_str("'{");
                    for (i, r) in chunk.iter().enumerate() {
                        if i > 0 {
                            a.push(',');
                        }
                        // (writing into a String cannot fail)
                        let _ = write!(a, "{}", f(r));
                    }
                    a.push_str("}'::int[]");
                    a
                };
                // the columns of `inserts`, in its order and with its values
                let arrays = [
                    strs(&|r| &r.subscriber),
                    strs(&|r| &r.aor),
                    ints(&|r| r.event as i64),
                    ints(&|r| i64::from(i32::try_from(r.expires).unwrap_or(i32::MAX))),
                    ints(&|r| r.state as i64),
                    ints(&|r| i64::from(r.index.max(0))),
                    strs(&|r| &r.call_id),
                    strs(&|r| &r.from_tag),
                    strs(&|r| &r.to_tag),
                    strs(&|r| &r.record_route),
                    ints(&|r| i64::from(r.notify_cseq as i32)),
                    ints(&|r| i64::from(r.subscribe_cseq.wrapping_add(1) as i32)),
                ];
                format!(
                    "INSERT INTO {table} ({}) SELECT u.*, {server_id} FROM unnest({}) AS u",
                    columns.join(", "),
                    arrays.join(", ")
                )
            })
            .collect()
    }
}

/// The start-up restore's pages as one text value each: a DB driver of
/// Kamailio copies every value of a result into private memory, one
/// allocation per value (and one per row), and Kamailio's default
/// allocator (q_malloc) searches its free lists linearly, so a restore read
/// row by row spends most of its time allocating (profiled: ~75 % of a
/// 100,000-row restore from sqlite). Aggregated on the server side
/// (`group_concat` on sqlite, `string_agg` on PostgreSQL), a page of rows
/// is one value: one allocation of private memory per page.
///
/// A page is `count`, `max(id)` and the text: one line a row, lines
/// separated by `;`, fields by `,`: the integers (id, server_id, event,
/// expires, state, app_idx, notify_cseq, subscribe_cseq) in decimal, then
/// the strings (subscriber, aor, call_id, from_tag, to_tag, record_route)
/// in hexadecimal, so any byte goes through. A NULL is an empty field.
pub mod page {
    use super::SubscriptionRec;
    use crate::model::{EventType, SubState};
    use std::string::String;
    use std::vec::Vec;

    /// Which SQL dialect builds the page.
    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    pub enum Dialect {
        Sqlite,
        Postgres,
    }

    pub const INTS: [&str; 8] =
        ["id", "server_id", "event", "expires", "state", "app_idx", "notify_cseq", "subscribe_cseq"];
    pub const STRS: [&str; 6] = ["subscriber", "aor", "call_id", "from_tag", "to_tag", "record_route"];

    /// The query of the page after `last_id`: at most `rows` rows by id.
    /// The result is one row: count, max(id), the text.
    pub fn query(d: Dialect, table: &str, last_id: i64, rows: usize) -> String {
        // one formatting call a row (`printf` / `format`, whose %s of a
        // NULL is empty) rather than a chain of `||`, each of which copies
        // the line so far: sqlite builds a million lines in 3.5 s instead
        // of 5.6 s
        let mut args = Vec::new();
        for c in INTS {
            args.push(match d {
                // CAST: what sqlite3_column_int would read from any value
                Dialect::Sqlite => format!("CAST({c} AS INTEGER)"),
                Dialect::Postgres => c.to_string(),
            });
        }
        for c in STRS {
            args.push(match d {
                // hex() of a text is its bytes (UTF-8, as sqlite3_column_text)
                Dialect::Sqlite => format!("hex({c})"),
                // the bytes the client would get, in its encoding
                Dialect::Postgres => format!("encode(convert_to({c}, pg_client_encoding()), 'hex')"),
            });
        }
        let pattern = vec!["%s"; args.len()].join(",");
        let line = match d {
            Dialect::Sqlite => format!("printf('{pattern}', {})", args.join(", ")),
            Dialect::Postgres => format!("format('{pattern}', {})", args.join(", ")),
        };
        let agg = match d {
            Dialect::Sqlite => "group_concat(line, ';')",
            Dialect::Postgres => "string_agg(line, ';')",
        };
        format!(
            "SELECT count(*), max(id), {agg} FROM (SELECT id, {line} AS line FROM {table} \
             WHERE id > {last_id} ORDER BY id LIMIT {rows}) AS page"
        )
    }

    /// One row of a page, its strings decoded into the caller's buffers.
    pub struct Row<'a> {
        pub id: i64,
        pub server_id: Option<i64>,
        /// None: the row is malformed (skipped, as the row-by-row read does).
        pub rec: Option<SubscriptionRec<'a>>,
    }

    fn hex_into(h: &[u8], out: &mut Vec<u8>) -> Option<()> {
        fn nib(c: u8) -> Option<u8> {
            match c {
                b'0'..=b'9' => Some(c - b'0'),
                b'a'..=b'f' => Some(c - b'a' + 10),
                b'A'..=b'F' => Some(c - b'A' + 10),
                _ => None,
            }
        }
        out.clear();
        if !h.len().is_multiple_of(2) {
            return None;
        }
        for p in h.chunks_exact(2) {
            out.push(nib(p[0])? << 4 | nib(p[1])?);
        }
        Some(())
    }

    fn int(f: &[u8]) -> Option<i64> {
        core::str::from_utf8(f).ok()?.parse().ok()
    }

    /// Parse one line. None: not a line of [`query`] (no id can be read).
    pub fn parse<'b>(line: &[u8], bufs: &'b mut [Vec<u8>; 6]) -> Option<Row<'b>> {
        let mut fields = line.split(|&c| c == b',');
        let mut ints = [None; 8];
        for v in ints.iter_mut() {
            *v = int(fields.next()?);
        }
        let mut ok = true;
        for b in bufs.iter_mut() {
            match fields.next() {
                Some(h) => ok &= hex_into(h, b).is_some(),
                None => return None,
            }
        }
        if fields.next().is_some() {
            return None;
        }
        let [a, b, c, d, e, f] = bufs;
        row(ints, [a, b, c, d, e, f], ok)
    }

    /// A row from its integers (in the order of `INTS`: id, server_id,
    /// event, expires, state, app_idx, notify_cseq, subscribe_cseq) and
    /// strings (of `STRS`: subscriber, aor, call_id, from_tag, to_tag,
    /// record_route), `ok` false if a string could not be read. None
    /// without an id; a row without a usable subscription has `rec` None.
    pub fn row(ints: [Option<i64>; 8], strs: [&[u8]; 6], ok: bool) -> Option<Row<'_>> {
        let id = ints[0]?;
        let [s_sub, s_aor, s_cid, s_ft, s_tt, s_rr] = strs;
        let rec = (|| {
            if !ok {
                return None;
            }
            let [_, _, event, expires, state, idx, ncseq, scseq] = ints;
            let rec = SubscriptionRec {
                subscriber: s_sub,
                aor: s_aor,
                event: EventType::from_i32(i32::try_from(event?).ok()?)?,
                expires: expires?,
                state: SubState::from_i32(i32::try_from(state?).ok()?)?,
                index: match idx? {
                    i if i > 0 => i32::try_from(i).ok()?,
                    _ => -1,
                },
                call_id: s_cid,
                from_tag: s_ft,
                to_tag: s_tt,
                record_route: s_rr,
                notify_cseq: u32::try_from(ncseq?).unwrap_or(0),
                subscribe_cseq: u32::try_from(scseq?).unwrap_or(0),
            };
            (!rec.subscriber.is_empty() && !rec.aor.is_empty() && !rec.call_id.is_empty()).then_some(rec)
        })();
        Some(Row { id, server_id: ints[1], rec })
    }

    /// The lines of a page's text.
    pub fn lines(text: &[u8]) -> impl Iterator<Item = &[u8]> {
        text.split(|&c| c == b';').filter(|l| !l.is_empty())
    }
}



/// The start-up restore from PostgreSQL as one `COPY ... TO STDOUT`
/// (through libpq itself, not Kamailio's DB API, which cannot run a
/// COPY): the server streams the rows in text format while they are
/// stored, so its work and the store overlap, and no row passes through
/// Kamailio's private memory. Each line is the columns of
/// [`page`]'s rows in the same order, separated by tabs; `\N` is a NULL
/// (an empty string, as in a page), a backslash escapes the bytes that
/// would break the line.
pub mod copy {
    use super::page::{row, Row, INTS, STRS};
    use std::string::String;
    use std::vec::Vec;

    /// The rows after `last_id`, by id, their columns in the order
    /// [`row`](super::page::row) takes them (also the sqlite library's read).
    pub fn select(table: &str, last_id: i64) -> String {
        let cols: Vec<&str> = INTS.iter().chain(STRS.iter()).copied().collect();
        format!("SELECT {} FROM {table} WHERE id > {last_id} ORDER BY id", cols.join(", "))
    }

    /// The COPY of [`select`].
    pub fn query(table: &str, last_id: i64) -> String {
        format!("COPY ({}) TO STDOUT", select(table, last_id))
    }

    /// Decode one field of COPY's text format into `out`. None: an escape
    /// it cannot have written.
    fn unescape(f: &[u8], out: &mut Vec<u8>) -> Option<()> {
        out.clear();
        if f == b"\\N" {
            return Some(());
        }
        let mut i = 0;
        while i < f.len() {
            let c = f[i];
            i += 1;
            if c != b'\\' {
                out.push(c);
                continue;
            }
            let e = *f.get(i)?;
            i += 1;
            out.push(match e {
                b'b' => 0x08,
                b'f' => 0x0c,
                b'n' => b'\n',
                b'r' => b'\r',
                b't' => b'\t',
                b'v' => 0x0b,
                b'0'..=b'7' => {
                    // up to three octal digits
                    let mut v = u32::from(e - b'0');
                    for _ in 0..2 {
                        match f.get(i) {
                            Some(&d @ b'0'..=b'7') => {
                                v = v * 8 + u32::from(d - b'0');
                                i += 1;
                            }
                            _ => break,
                        }
                    }
                    u8::try_from(v).ok()?
                }
                b'x' => {
                    // one or two hex digits
                    let hex = |c: u8| (c as char).to_digit(16);
                    let mut v = hex(*f.get(i)?)?;
                    i += 1;
                    if let Some(d) = f.get(i).and_then(|&c| hex(c)) {
                        v = v * 16 + d;
                        i += 1;
                    }
                    v as u8
                }
                // any other escaped byte is itself (\\, the delimiter)
                other => other,
            });
        }
        Some(())
    }

    fn int(f: &[u8]) -> Option<i64> {
        core::str::from_utf8(f).ok()?.parse().ok()
    }

    /// Parse one line of [`query`]'s output (its newline may be there).
    /// None: not such a line (no id can be read, or not 14 fields).
    pub fn parse<'b>(line: &[u8], bufs: &'b mut [Vec<u8>; 6]) -> Option<Row<'b>> {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let mut fields = line.split(|&c| c == b'\t');
        let mut ints = [None; 8];
        for v in ints.iter_mut() {
            *v = int(fields.next()?);
        }
        let mut ok = true;
        for b in bufs.iter_mut() {
            ok &= unescape(fields.next()?, b).is_some();
        }
        if fields.next().is_some() {
            return None;
        }
        let [a, b, c, d, e, f] = bufs;
        row(ints, [a, b, c, d, e, f], ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Restored;
    use crate::sync::SpinLock;
    use allocator_api2::alloc::Global;

    fn rec<'a>(aor: &'a [u8], who: &'a [u8], call_id: &'a [u8]) -> SubscriptionRec<'a> {
        SubscriptionRec { call_id, ..crate::testutil::rec(aor, who, EventType::CallInfo) }
    }

    fn store() -> Store<Global, SpinLock> {
        crate::testutil::store(3)
    }

    fn ops(rows: &[RowWrite]) -> Vec<(Vec<u8>, RowOp)> {
        let mut v: Vec<_> = rows.iter().map(|r| (r.row.subscriber.clone(), r.op)).collect();
        v.sort();
        v
    }

    const A: &[u8] = b"sip:100@x";

    #[test]
    fn new_is_an_insert_written_is_clean_changed_is_an_update() {
        let s = store();
        s.lock_aor(A).put_sub(&rec(A, b"p1", b"c1")).expect("put");
        let b = snapshot(&s, &[]);
        assert_eq!(ops(&b), [(b"p1".to_vec(), RowOp::Insert)]);
        mark_committed(&s, &b);
        assert!(snapshot(&s, &[]).is_empty(), "clean after the commit");
        // a refresh (put_sub over it) and an in-place change
        let mut r = rec(A, b"p1", b"c1");
        r.expires = 2000;
        s.lock_aor(A).put_sub(&r).expect("refresh");
        let b = snapshot(&s, &[]);
        assert_eq!(ops(&b), [(b"p1".to_vec(), RowOp::Update)]);
        assert_eq!(b[0].row.expires, 2000);
        mark_committed(&s, &b);
        s.lock_aor(A).find_sub_mut(EventType::CallInfo, b"p1").expect("sub").touch();
        assert_eq!(ops(&snapshot(&s, &[])), [(b"p1".to_vec(), RowOp::Update)]);
    }

    #[test]
    fn a_change_during_the_batch_stays_marked() {
        let s = store();
        s.lock_aor(A).put_sub(&rec(A, b"p1", b"c1")).expect("put");
        s.lock_aor(A).put_sub(&rec(A, b"p2", b"c2")).expect("put");
        let b = snapshot(&s, &[]);
        // while the batch is written: p1 NOTIFYed (touched), p2 refreshed
        s.lock_aor(A).find_sub_mut(EventType::CallInfo, b"p1").expect("p1").touch();
        let mut r = rec(A, b"p2", b"c2");
        r.subscribe_cseq = 2;
        s.lock_aor(A).put_sub(&r).expect("refresh");
        mark_committed(&s, &b);
        let again = snapshot(&s, &[]);
        // both written again, as UPDATEs now that their rows exist
        assert_eq!(ops(&again), [(b"p1".to_vec(), RowOp::Update), (b"p2".to_vec(), RowOp::Update)]);
        assert_eq!(again.iter().find(|w| w.row.subscriber == b"p2").expect("p2").row.subscribe_cseq, 2);
    }

    #[test]
    fn a_failed_batch_clears_nothing() {
        let s = store();
        for i in 0..50 {
            let who = format!("p{i}");
            s.lock_aor(A).put_sub(&rec(A, who.as_bytes(), b"c")).expect("put");
        }
        let b = snapshot(&s, &[]);
        assert_eq!(b.len(), 50);
        // the commit failed: no mark_committed
        let again = snapshot(&s, &[]);
        assert_eq!(ops(&again), ops(&b));
        assert!(again.iter().all(|w| w.op == RowOp::Insert));
    }

    #[test]
    fn ended_and_subscribed_again_is_deleted_then_inserted() {
        let s = store();
        s.lock_aor(A).put_sub(&rec(A, b"p1", b"c1")).expect("put");
        let b = snapshot(&s, &[]);
        mark_committed(&s, &b);
        // ends (a delete queued), then the phone subscribes in a new dialog
        let gone = {
            let mut g = s.lock_aor(A);
            let sub = g.find_sub(EventType::CallInfo, b"p1").expect("p1");
            assert!(sub.needs_db_delete());
            g.remove_sub(EventType::CallInfo, b"p1");
            DbDelete { aor: A.to_vec(), subscriber: b"p1".to_vec(), event: EventType::CallInfo }
        };
        s.lock_aor(A).put_sub(&rec(A, b"p1", b"c9")).expect("again");
        let b = snapshot(&s, std::slice::from_ref(&gone));
        assert_eq!(ops(&b), [(b"p1".to_vec(), RowOp::Insert)]);
        assert_eq!(b[0].row.call_id, b"c9");
    }

    #[test]
    fn a_clean_live_subscription_under_a_queued_delete_is_written_again() {
        // the delete was queued after the batch that inserted the new
        // subscription had taken the queue: that batch's commit marked it
        // clean, and the delete (by key) takes its row with it
        let s = store();
        s.lock_aor(A).put_sub(&rec(A, b"p1", b"c1")).expect("put");
        let b = snapshot(&s, &[]);
        mark_committed(&s, &b);
        let gone = DbDelete { aor: A.to_vec(), subscriber: b"p1".to_vec(), event: EventType::CallInfo };
        let b = snapshot(&s, std::slice::from_ref(&gone));
        assert_eq!(ops(&b), [(b"p1".to_vec(), RowOp::Insert)]);
        // a delete for a key with nothing live adds nothing
        let none = DbDelete { aor: A.to_vec(), subscriber: b"zz".to_vec(), event: EventType::CallInfo };
        assert!(snapshot(&s, &[none]).iter().all(|w| w.row.subscriber != b"zz"));
    }

    #[test]
    fn an_ended_subscription_is_a_delete_then_needs_none_at_the_purge() {
        let s = store();
        s.lock_aor(A).put_sub(&rec(A, b"p1", b"c1")).expect("put");
        let b = snapshot(&s, &[]);
        mark_committed(&s, &b);
        {
            // an unSUBSCRIBE: kept, terminated, until the purge
            let mut g = s.lock_aor(A);
            let sub = g.find_sub_mut(EventType::CallInfo, b"p1").expect("p1");
            sub.state = SubState::TerminatedTimeout;
            sub.expires = 0;
            sub.touch();
        }
        let b = snapshot(&s, &[]);
        assert_eq!(ops(&b), [(b"p1".to_vec(), RowOp::Delete)]);
        assert_eq!(ops(&snapshot_at_exit(&s, &[], 1, || {}).0), [(b"p1".to_vec(), RowOp::Delete)]);
        mark_committed(&s, &b);
        let g = s.lock_aor(A);
        let sub = g.find_sub(EventType::CallInfo, b"p1").expect("p1");
        assert!(!sub.in_db() && !sub.is_dirty() && !sub.needs_db_delete(), "row gone, nothing left to do");
    }

    #[test]
    fn ended_before_any_batch_took_it_needs_no_delete_taken_once_it_does() {
        let s = store();
        s.lock_aor(A).put_sub(&rec(A, b"p1", b"c1")).expect("put");
        assert!(!s.lock_aor(A).find_sub(EventType::CallInfo, b"p1").expect("p1").needs_db_delete());
        // taken into a batch that then failed: its row may exist
        let _failed = snapshot(&s, &[]);
        assert!(s.lock_aor(A).find_sub(EventType::CallInfo, b"p1").expect("p1").needs_db_delete());
        // a refresh (put_sub over it) keeps that
        s.lock_aor(A).put_sub(&rec(A, b"p1", b"c1")).expect("refresh");
        assert!(s.lock_aor(A).find_sub(EventType::CallInfo, b"p1").expect("p1").needs_db_delete());
        // p2 ends (an unSUBSCRIBE) before any batch took it: no DB work
        s.lock_aor(A).put_sub(&rec(A, b"p2", b"c2")).expect("put");
        {
            let mut g = s.lock_aor(A);
            let p2 = g.find_sub_mut(EventType::CallInfo, b"p2").expect("p2");
            p2.state = SubState::TerminatedTimeout;
            p2.touch();
        }
        let b = snapshot(&s, &[]);
        assert!(b.iter().all(|w| w.row.subscriber != b"p2"), "{:?}", ops(&b));
        let g = s.lock_aor(A);
        let p2 = g.find_sub(EventType::CallInfo, b"p2").expect("p2");
        assert!(!p2.is_dirty() && !p2.needs_db_delete());
    }

    #[test]
    fn the_exit_snapshot_writes_everything_not_committed_as_inserts() {
        let s = store();
        s.lock_aor(A).put_sub(&rec(A, b"p1", b"c1")).expect("put");
        let b = snapshot(&s, &[]);
        mark_committed(&s, &b);
        s.lock_aor(A).find_sub_mut(EventType::CallInfo, b"p1").expect("p1").touch();
        s.lock_aor(A).put_sub(&rec(A, b"p2", b"c2")).expect("put");
        let (rows, skipped) = snapshot_at_exit(&s, &[], 2, || {});
        assert_eq!(skipped, 0);
        assert_eq!(ops(&rows), [(b"p1".to_vec(), RowOp::Insert), (b"p2".to_vec(), RowOp::Insert)]);
        // a slot held by a dead process is skipped and counted
        let held = s.lock_aor(A);
        let (rows, skipped) = snapshot_at_exit(&s, &[], 2, || {});
        assert!(rows.is_empty());
        assert_eq!(skipped, 1);
        drop(held);
    }

    #[test]
    fn a_restored_row_merges_with_what_phones_subscribed_meanwhile() {
        let s = store();
        // p1 subscribed again (new dialog) before the restore ran; p2 only
        // in the DB; p3 live in the same dialog with an older CSeq
        s.lock_aor(A).put_sub(&rec(A, b"p1", b"new")).expect("put");
        s.lock_aor(A).put_sub(&rec(A, b"p3", b"c3")).expect("put");
        let mut db3 = rec(A, b"p3", b"c3");
        db3.subscribe_cseq = 7;
        let mut g = s.lock_aor(A);
        assert_eq!(g.merge_restored(&rec(A, b"p1", b"old")), Ok(Restored::KeptLive));
        assert_eq!(g.merge_restored(&rec(A, b"p2", b"c2")), Ok(Restored::Added));
        assert_eq!(g.merge_restored(&db3), Ok(Restored::ReplacedLive));
        // merging the same rows again (a retried restore) changes nothing
        assert_eq!(g.merge_restored(&rec(A, b"p2", b"c2")), Ok(Restored::KeptLive));
        drop(g);
        let b = snapshot(&s, &[]);
        // p1 live, over an existing row: an UPDATE; p2, p3 as in the DB
        assert_eq!(ops(&b), [(b"p1".to_vec(), RowOp::Update)]);
        assert_eq!(b[0].row.call_id, b"new");
        assert_eq!(s.subscription_count(EventType::CallInfo), 3);
        let g = s.lock_aor(A);
        assert_eq!(g.find_sub(EventType::CallInfo, b"p3").expect("p3").subscribe_cseq, 7);
    }

    #[test]
    fn sql_text_quotes_only_plain_ascii_and_chunks() {
        assert!(sql::plain(b"sip:it's@x"));
        for bad in [&b"a\\b"[..], b"caf\xc3\xa9", b"a\nb", b"\x00", b"\x7f"] {
            assert!(!sql::plain(bad), "{bad:?}");
        }
        let mut s = std::string::String::new();
        sql::push_str(&mut s, b"it's");
        assert_eq!(s, "'it''s'");
        assert_eq!(
            sql::key_cond(b"sip:a'b@1", b"sip:100@x", EventType::LineSeize),
            "(subscriber = 'sip:a''b@1' AND aor = 'sip:100@x' AND event = 2)"
        );
        let s = store();
        s.lock_aor(A).put_sub(&rec(A, b"p'1", b"c1")).expect("put");
        let mut r = snapshot(&s, &[]).remove(0).row;
        r.expires = 5_000_000_000; // past i32: clamped, as the DB API path does
        let cols = ["subscriber", "aor", "event", "expires", "state", "app_idx", "call_id", "from_tag", "to_tag",
            "record_route", "notify_cseq", "subscribe_cseq", "server_id"];
        let one = sql::inserts("t", &cols, &[&r], 7);
        assert_eq!(
            one,
            ["INSERT INTO t (subscriber, aor, event, expires, state, app_idx, call_id, from_tag, to_tag, record_route, \
              notify_cseq, subscribe_cseq, server_id) VALUES ('p''1', 'sip:100@x', 1, 2147483647, 0, 0, 'c1', 'ft', \
              'tt', '', 0, 2, 7)"]
        );
        assert_eq!(sql::dialog_cond(&r), "(subscriber = 'p''1' AND call_id = 'c1' AND from_tag = 'ft' AND to_tag = 'tt')");
        assert_eq!(
            sql::inserts_unnest("t", &cols, &[&r, &r], 7),
            ["INSERT INTO t (subscriber, aor, event, expires, state, app_idx, call_id, from_tag, to_tag, record_route, \
              notify_cseq, subscribe_cseq, server_id) SELECT u.*, 7 FROM unnest(ARRAY['p''1','p''1']::text[], \
              ARRAY['sip:100@x','sip:100@x']::text[], '{1,1}'::int[], '{2147483647,2147483647}'::int[], '{0,0}'::int[], \
              '{0,0}'::int[], ARRAY['c1','c1']::text[], ARRAY['ft','ft']::text[], ARRAY['tt','tt']::text[], \
              ARRAY['','']::text[], '{0,0}'::int[], '{2,2}'::int[]) AS u"]
        );
        let rows: Vec<RowData> = (0..sql::CHUNK * 2 + 1).map(|_| r.clone()).collect();
        let refs: Vec<&RowData> = rows.iter().collect();
        let stmts = sql::inserts("t", &cols, &refs, 0);
        assert_eq!(stmts.len(), 3);
        let rows: Vec<RowData> = (0..sql::ARRAY_CHUNK + 1).map(|_| r.clone()).collect();
        let refs: Vec<&RowData> = rows.iter().collect();
        let arrays = sql::inserts_unnest("t", &cols, &refs, 0);
        assert_eq!(arrays.len(), 2);
        assert_eq!(arrays[0].matches("'p''1'").count(), sql::ARRAY_CHUNK);
        assert_eq!(arrays[1].matches("'p''1'").count(), 1);
        assert_eq!(stmts[2].matches("('p''1'").count(), 1);
        let conds: Vec<std::string::String> = (0..sql::CHUNK + 1).map(|i| format!("(x = {i})")).collect();
        let dels = sql::deletes("t", &conds);
        assert_eq!(dels.len(), 2);
        assert_eq!(dels[1], format!("DELETE FROM t WHERE (x = {})", sql::CHUNK));
        assert_eq!(dels[0].matches(" OR ").count(), sql::CHUNK - 1);
    }
    #[test]
    fn restore_page_lines_parse_as_the_rows_would() {
        let q = page::query(page::Dialect::Sqlite, "t", 42, 1000);
        assert!(q.contains("WHERE id > 42 ORDER BY id LIMIT 1000"), "{q}");
        assert!(q.contains("group_concat(line, ';')") && q.contains("hex(record_route)"), "{q}");
        let q = page::query(page::Dialect::Postgres, "t", 0, 10);
        assert!(q.contains("string_agg(line, ';')") && q.contains("pg_client_encoding()"), "{q}");
        let hex = |b: &[u8]| b.iter().map(|c| format!("{c:02X}")).collect::<std::string::String>();
        // any byte goes through: ',' ';' and UTF-8 in the strings
        let (sub, aor, cid) = (&b"sip:a,b;c@1"[..], "sip:caf\u{e9}@x".as_bytes(), &b"c'1"[..]);
        let line = format!("7,0,2,1800000000,1,3,4,5,{},{},{},{},{},", hex(sub), hex(aor), hex(cid), hex(b"ft"), hex(b"tt"));
        let text = format!("{line};8,1,1,1,0,0,0,0,{},{},{},,,;9,0,1,1,0,0,0,0,{},{},,,,", hex(b"s"), hex(b"a"), hex(b"c"), hex(b"s"), hex(b"a"));
        let lines: Vec<&[u8]> = page::lines(text.as_bytes()).collect();
        assert_eq!(lines.len(), 3);
        let mut bufs: [Vec<u8>; 6] = Default::default();
        let r = page::parse(lines[0], &mut bufs).expect("line");
        assert_eq!((r.id, r.server_id), (7, Some(0)));
        let rec = r.rec.expect("rec");
        assert_eq!((rec.subscriber, rec.aor, rec.call_id, rec.record_route), (sub, aor, cid, &b""[..]));
        assert_eq!((rec.event, rec.expires, rec.state, rec.index), (EventType::LineSeize, 1_800_000_000, SubState::from_i32(1).expect("s"), 3));
        assert_eq!((rec.notify_cseq, rec.subscribe_cseq, rec.from_tag, rec.to_tag), (4, 5, &b"ft"[..], &b"tt"[..]));
        let r = page::parse(lines[1], &mut bufs).expect("line");
        assert_eq!((r.id, r.server_id, r.rec.expect("rec").index), (8, Some(1), -1));
        // no call_id: malformed, skipped; its id still read
        let r = page::parse(lines[2], &mut bufs).expect("line");
        assert_eq!(r.id, 9);
        assert!(r.rec.is_none());
        // NULL integers and bad hex: malformed; no id or too few fields: not a line
        assert!(page::parse(b"10,,1,1,0,0,0,0,73,61,63,,,", &mut bufs).expect("line").rec.is_some());
        assert!(page::parse(b"10,0,,1,0,0,0,0,73,61,63,,,", &mut bufs).expect("line").rec.is_none());
        assert!(page::parse(b"10,0,1,1,0,0,0,0,7,61,63,,,", &mut bufs).expect("line").rec.is_none());
        assert!(page::parse(b",0,1,1,0,0,0,0,73,61,63,,,", &mut bufs).is_none());
        assert!(page::parse(b"10,0,1,1,0,0,0,0,73,61,63,,", &mut bufs).is_none());
        assert!(page::parse(b"10,0,1,1,0,0,0,0,73,61,63,,,,", &mut bufs).is_none());
    }

    #[test]
    fn copy_lines_parse_as_the_rows_would() {
        let q = copy::query("t", 5);
        assert_eq!(
            q,
            "COPY (SELECT id, server_id, event, expires, state, app_idx, notify_cseq, subscribe_cseq, subscriber, \
             aor, call_id, from_tag, to_tag, record_route FROM t WHERE id > 5 ORDER BY id) TO STDOUT"
        );
        let mut bufs: [Vec<u8>; 6] = Default::default();
        // escapes: tab, newline, backslash, octal, hex; UTF-8 as it is
        let line = "7\t0\t2\t1800000000\t1\t3\t4\t5\tsip:a\\tb\\\\c@1\tsip:caf\u{e9}@x\tc\\n1\\101\\x42\tft\ttt\t\\N\n";
        let r = copy::parse(line.as_bytes(), &mut bufs).expect("line");
        assert_eq!((r.id, r.server_id), (7, Some(0)));
        let rec = r.rec.expect("rec");
        assert_eq!(rec.subscriber, b"sip:a\tb\\c@1");
        assert_eq!(rec.aor, "sip:caf\u{e9}@x".as_bytes());
        assert_eq!(rec.call_id, b"c\n1AB");
        assert_eq!((rec.from_tag, rec.to_tag, rec.record_route), (&b"ft"[..], &b"tt"[..], &b""[..]));
        assert_eq!((rec.event, rec.expires, rec.state, rec.index), (EventType::LineSeize, 1_800_000_000, SubState::from_i32(1).expect("s"), 3));
        assert_eq!((rec.notify_cseq, rec.subscribe_cseq), (4, 5));
        // a NULL server_id and app_idx 0; without a call_id: malformed, id read
        let r = copy::parse(b"8\t\\N\t1\t1\t0\t0\t0\t0\ts\ta\tc\t\t\t", &mut bufs).expect("line");
        assert_eq!((r.id, r.server_id, r.rec.expect("rec").index), (8, None, -1));
        let r = copy::parse(b"9\t0\t1\t1\t0\t0\t0\t0\ts\ta\t\\N\t\t\t", &mut bufs).expect("line");
        assert_eq!(r.id, 9);
        assert!(r.rec.is_none());
        // a bad escape or a bad integer: malformed; no id or the wrong field count: not a line
        assert!(copy::parse(b"10\t0\t1\t1\t0\t0\t0\t0\ts\ta\tc\\x\t\t\t", &mut bufs).expect("line").rec.is_none());
        assert!(copy::parse(b"10\t0\tx\t1\t0\t0\t0\t0\ts\ta\tc\t\t\t", &mut bufs).expect("line").rec.is_none());
        assert!(copy::parse(b"\\N\t0\t1\t1\t0\t0\t0\t0\ts\ta\tc\t\t\t", &mut bufs).is_none());
        assert!(copy::parse(b"10\t0\t1\t1\t0\t0\t0\t0\ts\ta\tc\t\t", &mut bufs).is_none());
        assert!(copy::parse(b"10\t0\t1\t1\t0\t0\t0\t0\ts\ta\tc\t\t\t\t", &mut bufs).is_none());
    }
}
