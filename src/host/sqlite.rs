//! The sqlite library itself, for the DB writer's batches on a `sqlite://`
//! `db_url`.
//!
//! Kamailio's db_sqlite prepares every query it is given: a batch written
//! through it as multi-row SQL text spent about half its CPU in sqlite's
//! parser. Here the writer prepares one INSERT and two DELETEs a batch and
//! binds each row's values, as sqlite is meant to be used.
//!
//! The library is the one db_sqlite already loaded into Kamailio
//! (`dlopen` with `RTLD_NOLOAD`): sca_rs.so links nothing more, and
//! without db_sqlite loaded this is simply unavailable (the writer then
//! goes through Kamailio's DB API as before).

use core::ffi::{c_char, c_int, c_void, CStr};
use std::ffi::CString;

type Db = c_void;
type Stmt = c_void;

const SQLITE_OK: c_int = 0;
const SQLITE_ROW: c_int = 100;
const SQLITE_DONE: c_int = 101;
const SQLITE_NULL: c_int = 5;
const SQLITE_OPEN_READWRITE: c_int = 0x2;

loaded_library! {
    c"libsqlite3.so.0";
    open_v2 = c"sqlite3_open_v2": fn(*const c_char, *mut *mut Db, c_int, *const c_char) -> c_int;
    close_v2 = c"sqlite3_close_v2": fn(*mut Db) -> c_int;
    exec = c"sqlite3_exec": fn(*mut Db, *const c_char, *const c_void, *mut c_void, *mut *mut c_char) -> c_int;
    prepare_v2 = c"sqlite3_prepare_v2": fn(*mut Db, *const c_char, c_int, *mut *mut Stmt, *mut *const c_char) -> c_int;
    bind_text = c"sqlite3_bind_text": fn(*mut Stmt, c_int, *const c_char, c_int, *const c_void) -> c_int;
    bind_int64 = c"sqlite3_bind_int64": fn(*mut Stmt, c_int, i64) -> c_int;
    step = c"sqlite3_step": fn(*mut Stmt) -> c_int;
    reset = c"sqlite3_reset": fn(*mut Stmt) -> c_int;
    finalize = c"sqlite3_finalize": fn(*mut Stmt) -> c_int;
    errmsg = c"sqlite3_errmsg": fn(*mut Db) -> *const c_char;
    busy_timeout = c"sqlite3_busy_timeout": fn(*mut Db, c_int) -> c_int;
    bind_parameter_count = c"sqlite3_bind_parameter_count": fn(*mut Stmt) -> c_int;
    column_count = c"sqlite3_column_count": fn(*mut Stmt) -> c_int;
    column_type = c"sqlite3_column_type": fn(*mut Stmt, c_int) -> c_int;
    column_int64 = c"sqlite3_column_int64": fn(*mut Stmt, c_int) -> i64;
    column_blob = c"sqlite3_column_blob": fn(*mut Stmt, c_int) -> *const c_void;
    column_bytes = c"sqlite3_column_bytes": fn(*mut Stmt, c_int) -> c_int;
}

/// A connection of this process to one sqlite file.
pub struct Sqlite {
    db: *mut Db,
    lib: &'static Lib,
}

/// A value bound to a statement's parameter.
#[derive(Clone, Copy, Debug)]
pub enum Bind<'a> {
    Text(&'a [u8]),
    Int(i64),
}

impl Sqlite {
    /// Open an existing file read-write (no create: the table must be
    /// there), waiting up to `busy_ms` for other writers.
    pub fn open(path: &[u8], busy_ms: i32) -> Result<Self, String> {
        let lib = lib().ok_or("libsqlite3 is not loaded (db_sqlite.so is)")?;
        let p = CString::new(path).map_err(|_| "the sqlite path has a NUL byte".to_string())?;
        let mut db = core::ptr::null_mut();
        // SAFETY: [I22] a NUL-terminated path and an out pointer; whatever
        // the result, a non-null handle is ours to close.
        let rc = unsafe { (lib.open_v2)(p.as_ptr(), &mut db, SQLITE_OPEN_READWRITE, core::ptr::null()) };
        let con = Sqlite { db, lib };
        if db.is_null() {
            return Err("sqlite3_open_v2: out of memory".into());
        }
        if rc != SQLITE_OK {
            return Err(format!("sqlite3_open_v2 {}: {}", String::from_utf8_lossy(path), con.errmsg()));
        }
        // SAFETY: [I22] db is this connection's open handle.
        unsafe { (lib.busy_timeout)(db, busy_ms) };
        Ok(con)
    }

    fn errmsg(&self) -> String {
        // SAFETY: [I22] db is open; errmsg returns a NUL-terminated string
        // owned by sqlite, copied at once.
        unsafe { CStr::from_ptr((self.lib.errmsg)(self.db)) }.to_string_lossy().into_owned()
    }

    /// Run `sql` (statements without results).
    pub fn exec(&self, sql: &str) -> Result<(), String> {
        let s = CString::new(sql).map_err(|_| "SQL with a NUL byte".to_string())?;
        // SAFETY: [I22] db is open; no callback, no error string asked for.
        let rc = unsafe {
            (self.lib.exec)(self.db, s.as_ptr(), core::ptr::null(), core::ptr::null_mut(), core::ptr::null_mut())
        };
        if rc == SQLITE_OK {
            Ok(())
        } else {
            Err(format!("{sql}: {}", self.errmsg()))
        }
    }

    /// Prepare one statement with `?` parameters.
    pub fn prepare(&self, sql: &str) -> Result<Statement<'_>, String> {
        let mut st = core::ptr::null_mut();
        let len = c_int::try_from(sql.len()).map_err(|_| "SQL too long".to_string())?;
        // SAFETY: [I22] db is open; sql is read for len bytes; a non-null
        // statement is ours to finalize.
        let rc = unsafe { (self.lib.prepare_v2)(self.db, sql.as_ptr().cast(), len, &mut st, core::ptr::null_mut()) };
        if rc != SQLITE_OK || st.is_null() {
            if !st.is_null() {
                // SAFETY: [I22] a statement prepare_v2 returned, finalized once.
                unsafe { (self.lib.finalize)(st) };
            }
            return Err(format!("{sql}: {}", self.errmsg()));
        }
        // SAFETY: [I22] st is the live statement just prepared.
        let params = unsafe { (self.lib.bind_parameter_count)(st) };
        Ok(Statement { st, con: self, params })
    }
}

impl Drop for Sqlite {
    fn drop(&mut self) {
        // SAFETY: [I22] the handle is open and closed once; its statements
        // borrow this connection, so they were finalized before.
        unsafe { (self.lib.close_v2)(self.db) };
    }
}

/// A prepared statement, run once per row.
pub struct Statement<'c> {
    st: *mut Stmt,
    con: &'c Sqlite,
    /// Its parameters: each run binds every one of them.
    params: c_int,
}

impl Statement<'_> {
    /// Bind `vals` to parameters 1.. and run the statement to its end.
    pub fn run(&mut self, vals: &[Bind<'_>]) -> Result<(), String> {
        if vals.len() != self.params as usize {
            return Err(format!("{} values for {} parameters", vals.len(), self.params));
        }
        let lib = self.con.lib;
        // SAFETY: [I22] st is a live statement of an open connection. Text
        // is bound without a copy (a null destructor: SQLITE_STATIC), and
        // stays borrowed until step and reset are done, before this returns;
        // every parameter is bound again before the next step (checked
        // above), so sqlite never reads an earlier run's buffers.
        unsafe {
            (lib.reset)(self.st);
            for (i, v) in vals.iter().enumerate() {
                let n = i as c_int + 1;
                let rc = match *v {
                    Bind::Int(x) => (lib.bind_int64)(self.st, n, x),
                    Bind::Text(b) => {
                        let len = c_int::try_from(b.len()).map_err(|_| "value too long".to_string())?;
                        (lib.bind_text)(self.st, n, b.as_ptr().cast(), len, core::ptr::null())
                    }
                };
                if rc != SQLITE_OK {
                    return Err(format!("binding parameter {n}: {}", self.con.errmsg()));
                }
            }
            let rc = (lib.step)(self.st);
            (lib.reset)(self.st);
            if rc != SQLITE_DONE {
                return Err(self.con.errmsg());
            }
        }
        Ok(())
    }
}

/// The current row of a statement being stepped ([`Statement::each_row`]).
pub struct Row<'s> {
    st: *mut Stmt,
    lib: &'s Lib,
    cols: c_int,
}

impl Row<'_> {
    /// Column `i` as an integer (sqlite's conversion of any value, as
    /// `CAST(... AS INTEGER)`); None for NULL or no such column.
    pub fn int(&self, i: usize) -> Option<i64> {
        let i = c_int::try_from(i).ok().filter(|&i| i < self.cols)?;
        // SAFETY: [I22] st is on a row (SQLITE_ROW) and i is one of its columns.
        unsafe { ((self.lib.column_type)(self.st, i) != SQLITE_NULL).then(|| (self.lib.column_int64)(self.st, i)) }
    }

    /// Column `i`'s bytes (a text's UTF-8 as stored); empty for NULL or no
    /// such column. Borrowed until the statement steps again.
    pub fn bytes(&self, i: usize) -> &[u8] {
        let Some(i) = c_int::try_from(i).ok().filter(|&i| i < self.cols) else {
            return &[];
        };
        // SAFETY: [I22] st is on a row and i is one of its columns; blob
        // then bytes (the order sqlite documents) give the value's buffer,
        // valid until the next step, which needs `&mut` of the statement
        // this row borrows.
        unsafe {
            let p = (self.lib.column_blob)(self.st, i);
            let n = (self.lib.column_bytes)(self.st, i);
            if p.is_null() || n <= 0 {
                return &[];
            }
            core::slice::from_raw_parts(p.cast::<u8>(), n as usize)
        }
    }
}

impl Statement<'_> {
    /// Step a statement without parameters through its rows, each handed
    /// to `each`; an error of `each` stops there and is returned.
    pub fn each_row(&mut self, mut each: impl FnMut(&Row<'_>) -> Result<(), String>) -> Result<(), String> {
        let lib = self.con.lib;
        // SAFETY: [I22] st is a live statement of an open connection.
        let cols = unsafe { (lib.column_count)(self.st) };
        let r = loop {
            // SAFETY: [I22] as above; the row handed out is only read
            // before the next step.
            match unsafe { (lib.step)(self.st) } {
                SQLITE_ROW => {
                    if let Err(e) = each(&Row { st: self.st, lib, cols }) {
                        break Err(e);
                    }
                }
                SQLITE_DONE => break Ok(()),
                _ => break Err(self.con.errmsg()),
            }
        };
        // SAFETY: [I22] as above.
        unsafe { (lib.reset)(self.st) };
        r
    }
}

impl Drop for Statement<'_> {
    fn drop(&mut self) {
        // SAFETY: [I22] a statement prepare_v2 returned, finalized once.
        unsafe { (self.con.lib.finalize)(self.st) };
    }
}
