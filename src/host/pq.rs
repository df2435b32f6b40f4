//! libpq itself, for the start-up restore from a `postgres://` `db_url`.
//!
//! Kamailio's DB API runs one statement and hands back its whole result,
//! copied value by value into private memory; it cannot run a `COPY`.
//! Here the restore streams its rows with `COPY ... TO STDOUT`: the server
//! sends them while they are stored, so its work and the store overlap.
//!
//! The library is the one db_postgres already loaded into Kamailio
//! (`dlopen` with `RTLD_NOLOAD`): sca_rs.so links nothing more, and
//! without db_postgres loaded this is simply unavailable (the restore then
//! reads through Kamailio's DB API as before). The connection is made with
//! the parts Kamailio's own URL parser finds in the `db_url`
//! ([`crate::host::db::url_parts`]), the keywords db_postgres gives libpq.

use core::ffi::{c_char, c_int, c_void, CStr};
use std::ffi::CString;

use crate::host::db::UrlParts;

type Conn = c_void;
type PgResult = c_void;

const CONNECTION_OK: c_int = 0;
const PGRES_COMMAND_OK: c_int = 1;
const PGRES_TUPLES_OK: c_int = 2;
const PGRES_COPY_OUT: c_int = 3;

loaded_library! {
    c"libpq.so.5";
    connectdb_params = c"PQconnectdbParams": fn(*const *const c_char, *const *const c_char, c_int) -> *mut Conn;
    status = c"PQstatus": fn(*const Conn) -> c_int;
    error_message = c"PQerrorMessage": fn(*const Conn) -> *const c_char;
    finish = c"PQfinish": fn(*mut Conn) -> ();
    exec = c"PQexec": fn(*mut Conn, *const c_char) -> *mut PgResult;
    result_status = c"PQresultStatus": fn(*const PgResult) -> c_int;
    result_error_message = c"PQresultErrorMessage": fn(*const PgResult) -> *const c_char;
    clear = c"PQclear": fn(*mut PgResult) -> ();
    get_copy_data = c"PQgetCopyData": fn(*mut Conn, *mut *mut c_char, c_int) -> c_int;
    freemem = c"PQfreemem": fn(*mut c_void) -> ();
    get_result = c"PQgetResult": fn(*mut Conn) -> *mut PgResult;
}

/// A connection of this process to one PostgreSQL database, closed when
/// dropped.
pub struct Pq {
    con: *mut Conn,
    lib: &'static Lib,
}

/// A string libpq owns (NUL-terminated), copied out; empty for null.
///
/// # Safety
/// `p` is null or a NUL-terminated string valid for the call (I23).
unsafe fn owned(p: *const c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: [I23] by the caller's contract.
    let s = unsafe { CStr::from_ptr(p) }.to_string_lossy();
    // libpq's messages span lines (a hint on the next, tab-indented): one log line
    s.split('\n').map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join("; ")
}

/// An owned result, cleared when dropped.
struct Res<'c> {
    res: *mut PgResult,
    lib: &'c Lib,
}

impl Res<'_> {
    fn status(&self) -> c_int {
        // SAFETY: [I23] a result libpq returned (a null one reads as a
        // fatal error: PQresultStatus accepts it).
        unsafe { (self.lib.result_status)(self.res) }
    }

    fn error(&self) -> String {
        // SAFETY: [I23] a live (or null) result; the message is copied at once.
        unsafe { owned((self.lib.result_error_message)(self.res)) }
    }
}

impl Drop for Res<'_> {
    fn drop(&mut self) {
        if !self.res.is_null() {
            // SAFETY: [I23] the result is ours, cleared once.
            unsafe { (self.lib.clear)(self.res) };
        }
    }
}

/// One entry of db_postgres's `con_param` list (`pg_con_param_t` of its
/// pg_mod.h, the same from Kamailio 5.6 to 6.1).
#[repr(C)]
struct ConParam {
    name: *const c_char,
    value: *const c_char,
    next: *const ConParam,
}

/// The connection parameters set with db_postgres's `con_param` (sslmode,
/// a certificate, ...), in its order: every connection db_postgres makes
/// gets them after the URL's parts, so this one does too.
/// `module` is db_postgres.so's file as the loader maps it.
fn con_params(module: &CStr) -> Vec<(CString, CString)> {
    let mut out = Vec::new();
    // SAFETY: [I23] RTLD_NOLOAD only finds the module already loaded;
    // the handle is never closed (the module stays loaded for good).
    let h = unsafe { libc::dlopen(module.as_ptr(), libc::RTLD_NOW | libc::RTLD_NOLOAD) };
    if h.is_null() {
        return out;
    }
    // SAFETY: [I23] dlsym only reads the live handle.
    let head = unsafe { libc::dlsym(h, c"pg_con_param_list".as_ptr()) }.cast::<*const ConParam>();
    if head.is_null() {
        return out;
    }
    // SAFETY: [I23] the list db_postgres built from its modparams at
    // start-up and only reads since; entries have NUL-terminated strings.
    let mut p = unsafe { *head };
    while !p.is_null() {
        // SAFETY: [I23] as above.
        let e = unsafe { &*p };
        if !e.name.is_null() && !e.value.is_null() {
            // SAFETY: [I23] as above; copied at once.
            unsafe { out.push((CStr::from_ptr(e.name).to_owned(), CStr::from_ptr(e.value).to_owned())) };
        }
        p = e.next;
    }
    out
}

impl Pq {
    /// Connect as db_postgres does: port, host, dbname, user, password
    /// from the URL (absent parts left to libpq's defaults), then
    /// db_postgres's `con_param`s (read from `module`, db_postgres.so's
    /// file), the dbname expanded if it is a connection string.
    pub fn connect(parts: &UrlParts, module: Option<&CStr>) -> Result<Self, String> {
        let lib = lib().ok_or("libpq is not loaded (db_postgres.so is)")?;
        let port = parts.port.map(|p| p.to_string());
        let mut kv: Vec<(CString, CString)> = Vec::new();
        let fields: [(&CStr, Option<&[u8]>); 5] = [
            (c"port", port.as_deref().map(str::as_bytes)),
            (c"host", parts.host.as_deref()),
            (c"dbname", parts.database.as_deref()),
            (c"user", parts.username.as_deref()),
            (c"password", parts.password.as_deref()),
        ];
        for (k, v) in fields {
            if let Some(v) = v {
                kv.push((k.to_owned(), CString::new(v).map_err(|_| format!("the db_url's {k:?} has a NUL byte"))?));
            }
        }
        if let Some(m) = module {
            kv.extend(con_params(m));
        }
        let mut keys: Vec<*const c_char> = kv.iter().map(|(k, _)| k.as_ptr()).collect();
        let mut vals: Vec<*const c_char> = kv.iter().map(|(_, v)| v.as_ptr()).collect();
        keys.push(core::ptr::null());
        vals.push(core::ptr::null());
        // SAFETY: [I23] two NULL-terminated arrays of NUL-terminated
        // strings that live across the call; a non-null connection is ours
        // to finish, whatever its status.
        let con = unsafe { (lib.connectdb_params)(keys.as_ptr(), vals.as_ptr(), 1) };
        if con.is_null() {
            return Err("PQconnectdbParams: out of memory".into());
        }
        let pq = Pq { con, lib };
        // SAFETY: [I23] con is this connection's live handle.
        if unsafe { (lib.status)(con) } != CONNECTION_OK {
            return Err(format!("cannot connect: {}", pq.error()));
        }
        Ok(pq)
    }

    fn error(&self) -> String {
        // SAFETY: [I23] con is live; the message is copied at once.
        unsafe { owned((self.lib.error_message)(self.con)) }
    }

    fn exec(&self, sql: &str) -> Result<Res<'_>, String> {
        let s = CString::new(sql).map_err(|_| "SQL with a NUL byte".to_string())?;
        // SAFETY: [I23] con is live, s NUL-terminated; the result is ours.
        let res = unsafe { (self.lib.exec)(self.con, s.as_ptr()) };
        Ok(Res { res, lib: self.lib })
    }

    /// Run `sql` (a statement without rows, or whose rows are not wanted).
    pub fn run(&self, sql: &str) -> Result<(), String> {
        let res = self.exec(sql)?;
        match res.status() {
            PGRES_COMMAND_OK | PGRES_TUPLES_OK => Ok(()),
            _ => Err(format!("{sql}: {}", res.error())),
        }
    }

    /// Run `COPY ... TO STDOUT` and hand each line (its newline included)
    /// to `each` as it arrives. An error of `each` stops the copy and is
    /// returned (the connection is then not usable: drop it).
    pub fn copy_out(&self, sql: &str, mut each: impl FnMut(&[u8]) -> Result<(), String>) -> Result<(), String> {
        let res = self.exec(sql)?;
        if res.status() != PGRES_COPY_OUT {
            return Err(format!("{sql}: {}", res.error()));
        }
        drop(res);
        loop {
            let mut buf: *mut c_char = core::ptr::null_mut();
            // SAFETY: [I23] con is live and in COPY OUT; a positive length
            // comes with a buffer libpq allocated for us, freed below.
            let n = unsafe { (self.lib.get_copy_data)(self.con, &mut buf, 0) };
            if n < 0 {
                break;
            }
            // SAFETY: [I23] buf holds n bytes (n > 0 in blocking mode)
            // until PQfreemem, after `each` is done with the slice.
            let line = unsafe { core::slice::from_raw_parts(buf.cast::<u8>(), n as usize) };
            let r = each(line);
            // SAFETY: [I23] buf is libpq's, freed once.
            unsafe { (self.lib.freemem)(buf.cast()) };
            r?;
        }
        // the COPY's own result, then the end of the results
        let mut err = None;
        loop {
            // SAFETY: [I23] con is live; each result is ours (Res clears it).
            let res = Res { res: unsafe { (self.lib.get_result)(self.con) }, lib: self.lib };
            if res.res.is_null() {
                break;
            }
            if res.status() != PGRES_COMMAND_OK && err.is_none() {
                err = Some(format!("{sql}: {}", res.error()));
            }
        }
        match err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl Drop for Pq {
    fn drop(&mut self) {
        // SAFETY: [I23] the connection is ours, finished once.
        unsafe { (self.lib.finish)(self.con) };
    }
}
