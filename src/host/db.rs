//! Kamailio's generic DB API (srdb1): whatever `db_*` module serves the
//! URL (db_sqlite, db_postgres, db_mysql, ...).
//!
//! A [`DbApi`] is bound once in mod_init (the function table is copied to
//! every forked process); a [`DbConn`] belongs to one process and is closed
//! when dropped. Values cross as [`Val`] (borrowed) and come back as
//! [`Value`] (owned), so no pointer into a driver's result outlives it.

use core::ffi::{c_char, c_int, c_void};
use std::ffi::{CStr, CString};

use crate::host::kstr;
use crate::host::sys;

#[derive(Clone, Copy)]
pub struct DbApi {
    f: sys::db_func_t,
}

// SAFETY: [I1] the function table is plain function pointers, the same in every
// process; connections (not Send) are separate.
unsafe impl Send for DbApi {}
// SAFETY: [I1] see above.
unsafe impl Sync for DbApi {}

/// A value to write or compare with.
#[derive(Clone, Copy, Debug)]
pub enum Val<'a> {
    Int(i32),
    Str(&'a [u8]),
}

/// A value read from a row.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Str(Vec<u8>),
}

impl Value {
    pub fn int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            Value::Str(s) => core::str::from_utf8(s).ok()?.trim().parse().ok(),
            Value::Null => None,
        }
    }
    pub fn bytes(&self) -> &[u8] {
        match self {
            Value::Str(s) => s,
            _ => &[],
        }
    }
}

pub const OP_EQ: &CStr = c"=";
pub const OP_LT: &CStr = c"<";

fn db_val(v: &Val<'_>) -> sys::db_val_t {
    let mut d = sys::db_val_t::default();
    match *v {
        Val::Int(i) => {
            d.type_ = sys::db_type_t_DB1_INT;
            d.val.int_val = i;
        }
        Val::Str(s) => {
            d.type_ = sys::db_type_t_DB1_STR;
            d.val.str_val = kstr::from_bytes(s);
        }
    }
    d
}

fn read_val(v: &sys::db_val_t) -> Value {
    if v.nul != 0 {
        return Value::Null;
    }
    // SAFETY: [I6] the union member read is the one `type_` names; string
    // pointers are valid until the result is freed (we copy them).
    unsafe {
        match v.type_ {
            t if t == sys::db_type_t_DB1_INT => Value::Int(v.val.int_val as i64),
            t if t == sys::db_type_t_DB1_BIGINT => Value::Int(v.val.ll_val),
            t if t == sys::db_type_t_DB1_DATETIME => Value::Int(v.val.time_val),
            t if t == sys::db_type_t_DB1_STR || t == sys::db_type_t_DB1_BLOB => {
                Value::Str(kstr::as_bytes(&v.val.str_val).to_vec())
            }
            t if t == sys::db_type_t_DB1_STRING => {
                let p = v.val.string_val;
                if p.is_null() {
                    Value::Null
                } else {
                    Value::Str(CStr::from_ptr(p).to_bytes().to_vec())
                }
            }
            _ => Value::Null,
        }
    }
}

/// An empty `Dl_info` for dladdr to fill.
fn empty_dl_info() -> libc::Dl_info {
    libc::Dl_info {
        dli_fname: core::ptr::null(),
        dli_fbase: core::ptr::null_mut(),
        dli_sname: core::ptr::null(),
        dli_saddr: core::ptr::null_mut(),
    }
}

/// The parts of a DB URL, as Kamailio's own parser (srdb1's `new_db_id`,
/// which every db_* module's connections use) reads them.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct UrlParts {
    pub scheme: Option<Vec<u8>>,
    pub username: Option<Vec<u8>>,
    pub password: Option<Vec<u8>>,
    pub host: Option<Vec<u8>>,
    pub port: Option<u16>,
    pub database: Option<Vec<u8>>,
}

/// Parse `url` with Kamailio's DB URL parser. Err: it rejects the URL.
pub fn url_parts(url: &[u8]) -> Result<UrlParts, String> {
    let u = kstr::from_bytes(url);
    // SAFETY: [I6] new_db_id copies the URL into a new private-memory
    // db_id (not pooled: nothing else refers to it), freed below.
    let id = unsafe { sys::new_db_id(&u, sys::db_pooling_t_DB_POOLING_NONE) };
    if id.is_null() {
        return Err(format!("Kamailio cannot parse the DB URL {}", String::from_utf8_lossy(url)));
    }
    let part = |p: *const c_char| {
        // SAFETY: [I6] each part is null or a NUL-terminated string of
        // the live db_id, copied at once.
        (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_bytes().to_vec())
    };
    // SAFETY: [I6] id is the live db_id just made.
    let r = unsafe { &*id };
    let parts = UrlParts {
        scheme: part(r.scheme),
        username: part(r.username),
        password: part(r.password),
        host: part(r.host),
        port: (r.port != 0).then_some(r.port),
        database: part(r.database),
    };
    // SAFETY: [I6] the db_id is ours, freed once, after the parts were copied.
    unsafe { sys::free_db_id(id) };
    Ok(parts)
}

impl DbApi {
    /// Bind the DB module that serves `url` (mod_init only).
    pub fn bind(url: &[u8]) -> Result<DbApi, String> {
        let mut f = sys::db_func_t::default();
        let u = kstr::from_bytes(url);
        // SAFETY: [I6] db_bind_mod fills the table from the loaded db_* module.
        if unsafe { sys::db_bind_mod(&u, &mut f) } < 0 {
            return Err(format!(
                "cannot bind a DB module for {}: is its db_* module loaded?",
                String::from_utf8_lossy(url)
            ));
        }
        for (name, ok) in [
            ("init", f.init.is_some()),
            ("close", f.close.is_some()),
            ("use_table", f.use_table.is_some()),
            ("query", f.query.is_some()),
            ("free_result", f.free_result.is_some()),
            ("insert", f.insert.is_some()),
            ("delete", f.delete.is_some()),
            ("update", f.update.is_some()),
            ("raw_query", f.raw_query.is_some()),
        ] {
            if !ok {
                return Err(format!("the DB module for this URL has no {name} function"));
            }
        }
        Ok(DbApi { f })
    }

    /// The file of the db_* module bound (its `init`'s object, as the
    /// loader maps it), for finding what that module loaded.
    pub fn module_file(&self) -> Option<CString> {
        let f = self.f.init? as *const c_void;
        let mut info: libc::Dl_info = empty_dl_info();
        // SAFETY: [I6] dladdr only reads the loader's tables for an
        // address of a loaded module; info is written on success.
        if unsafe { libc::dladdr(f, &mut info) } == 0 || info.dli_fname.is_null() {
            return None;
        }
        // SAFETY: [I6] dli_fname is the loader's NUL-terminated path of a
        // loaded object (never unloaded: Kamailio keeps its modules), copied.
        Some(unsafe { CStr::from_ptr(info.dli_fname) }.to_owned())
    }

    /// Open a connection for this process.
    pub fn connect(&self, url: &[u8]) -> Result<DbConn<'_>, String> {
        let u = kstr::from_bytes(url);
        let init = self.f.init.ok_or("no init")?;
        // SAFETY: [I6] init copies the URL and returns a connection or NULL.
        let con = unsafe { init(&u) };
        if con.is_null() {
            return Err(format!("cannot connect to {}", String::from_utf8_lossy(url)));
        }
        Ok(DbConn { api: self, con, table: None })
    }
}

pub struct DbConn<'a> {
    api: &'a DbApi,
    con: *mut sys::db1_con_t,
    /// The current table's name: drivers keep the `str` pointer that
    /// use_table() gets, so it must live as long as the connection uses it.
    table: Option<Box<(Vec<u8>, sys::str_)>>,
}

struct Keys {
    _names: Vec<Vec<u8>>,
    strs: Vec<sys::str_>,
}

impl Keys {
    fn new(names: &[&str]) -> Keys {
        let names: Vec<Vec<u8>> = names.iter().map(|n| n.as_bytes().to_vec()).collect();
        let strs = names.iter().map(|n| kstr::from_bytes(n)).collect();
        Keys { _names: names, strs }
    }
    fn ptrs(&mut self) -> Vec<sys::db_key_t> {
        self.strs.iter_mut().map(|s| s as *mut sys::str_).collect()
    }
}

impl DbConn<'_> {
    pub fn use_table(&mut self, table: &[u8]) -> Result<(), String> {
        let mut b = Box::new((table.to_vec(), sys::str_ { s: core::ptr::null_mut(), len: 0 }));
        b.1 = kstr::from_bytes(&b.0);
        let f = self.api.f.use_table.ok_or("no use_table")?;
        // SAFETY: [I6] a live connection; the str and its bytes live in the box,
        // kept in self until the next use_table or close.
        if unsafe { f(self.con, &b.1) } < 0 {
            return Err(format!("cannot use table {}", String::from_utf8_lossy(table)));
        }
        self.table = Some(b);
        Ok(())
    }

    /// Check the `version` table entry of `table`. The connection uses the
    /// `version` table afterwards: call use_table again.
    pub fn check_version(&mut self, table: &[u8], version: u32) -> Result<(), String> {
        let t = kstr::from_bytes(table);
        let mut f = self.api.f;
        // SAFETY: [I6] a live connection and this process's copy of the table.
        if unsafe { sys::db_check_table_version(&mut f, self.con, &t, version) } < 0 {
            return Err(format!(
                "table {} is missing or not at version {version} (create it from Kamailio's sca-create.sql)",
                String::from_utf8_lossy(table)
            ));
        }
        Ok(())
    }

    pub fn insert(&self, columns: &[&str], values: &[Val<'_>]) -> Result<(), String> {
        let mut keys = Keys::new(columns);
        let kptr = keys.ptrs();
        let vals: Vec<sys::db_val_t> = values.iter().map(db_val).collect();
        let f = self.api.f.insert.ok_or("no insert")?;
        // SAFETY: [I6] keys and values have the same length; strings outlive the call.
        if unsafe { f(self.con, kptr.as_ptr(), vals.as_ptr(), vals.len().min(kptr.len()) as c_int) } < 0 {
            return Err("insert failed".into());
        }
        Ok(())
    }

    /// DELETE WHERE key1 op1 val1 AND ...
    pub fn delete(&self, columns: &[&str], ops: &[&CStr], values: &[Val<'_>]) -> Result<(), String> {
        let mut keys = Keys::new(columns);
        let kptr = keys.ptrs();
        let vals: Vec<sys::db_val_t> = values.iter().map(db_val).collect();
        let optr: Vec<*const c_char> = ops.iter().map(|o| o.as_ptr()).collect();
        let f = self.api.f.delete.ok_or("no delete")?;
        let n = kptr.len().min(vals.len()).min(optr.len());
        // SAFETY: [I6] the three arrays hold at least n entries; strings outlive the call.
        if unsafe { f(self.con, kptr.as_ptr(), optr.as_ptr() as *const sys::db_op_t, vals.as_ptr(), n as c_int) } < 0 {
            return Err("delete failed".into());
        }
        Ok(())
    }
}

/// How a connection batches statements into one transaction.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Tx {
    /// The driver's transaction API (db_postgres, db_mysql).
    Api,
    /// `BEGIN` / `COMMIT` through raw queries (db_sqlite).
    Sql,
    /// No transaction could be started: statements run one by one.
    None,
}

impl DbConn<'_> {
    /// Run one SQL statement through the driver's raw_query, its result
    /// (if any) read into owned rows and freed. A result is always
    /// requested: db_sqlite only steps a statement when it stores a result
    /// (without one, `BEGIN` would be prepared and never run).
    pub fn raw_rows(&self, sql: &str) -> Result<Vec<Vec<Value>>, String> {
        let f = self.api.f.raw_query.ok_or("the DB module has no raw_query")?;
        let free = self.api.f.free_result.ok_or("no free_result")?;
        let q = kstr::from_bytes(sql.as_bytes());
        let mut res: *mut sys::db1_res_t = core::ptr::null_mut();
        // SAFETY: [I6] a live connection; the SQL bytes outlive the call; the
        // driver allocates `res` (or leaves it NULL), freed below.
        let rc = unsafe { f(self.con, &q, &mut res) };
        let out = if res.is_null() {
            Vec::new()
        } else {
            // SAFETY: [I6] res is this connection's result until freed:
            // rows[0..n] exist, each with values[0..row.n]; values are copied.
            unsafe {
                let r = &*res;
                let mut out = Vec::with_capacity(r.n.max(0) as usize);
                for i in 0..r.n.max(0) as usize {
                    let row = &*r.rows.add(i);
                    out.push((0..row.n.max(0) as usize).map(|j| read_val(&*row.values.add(j))).collect());
                }
                free(self.con, res);
                out
            }
        };
        if rc < 0 {
            return Err("query failed".into());
        }
        Ok(out)
    }

    fn raw(&self, sql: &str) -> Result<(), ()> {
        self.raw_rows(sql).map(|_| ()).map_err(|_| ())
    }

    /// UPDATE the current table SET `ucols` = `uvals` WHERE `cols` `ops` `vals`.
    pub fn update(
        &self,
        cols: &[&str],
        ops: &[&CStr],
        vals: &[Val<'_>],
        ucols: &[&str],
        uvals: &[Val<'_>],
    ) -> Result<(), String> {
        let f = self.api.f.update.ok_or("the DB module has no update")?;
        let mut keys = Keys::new(cols);
        let kptr = keys.ptrs();
        let mut ukeys = Keys::new(ucols);
        let ukptr = ukeys.ptrs();
        let v: Vec<sys::db_val_t> = vals.iter().map(db_val).collect();
        let uv: Vec<sys::db_val_t> = uvals.iter().map(db_val).collect();
        let optr: Vec<*const c_char> = ops.iter().map(|o| o.as_ptr()).collect();
        let n = kptr.len().min(v.len()).min(optr.len());
        let un = ukptr.len().min(uv.len());
        // SAFETY: [I6] each array holds at least its count of entries; the
        // strings they point to outlive the call.
        let rc = unsafe {
            f(
                self.con,
                kptr.as_ptr(),
                optr.as_ptr() as *const sys::db_op_t,
                v.as_ptr(),
                ukptr.as_ptr(),
                uv.as_ptr(),
                n as c_int,
                un as c_int,
            )
        };
        if rc < 0 {
            return Err("update failed".into());
        }
        Ok(())
    }

    /// Start a transaction, the best way the driver offers.
    pub fn begin(&self) -> Tx {
        if let Some(f) = self.api.f.start_transaction {
            // SAFETY: [I6] a live connection; no table locking requested.
            if unsafe { f(self.con, sys::db_locking_t_DB_LOCKING_NONE) } == 0 {
                return Tx::Api;
            }
        }
        if self.raw("BEGIN").is_ok() {
            return Tx::Sql;
        }
        Tx::None
    }

    pub fn commit(&self, tx: Tx) -> Result<(), String> {
        let ok = match tx {
            // SAFETY: [I6] a live connection with a transaction started by begin().
            Tx::Api => self.api.f.end_transaction.is_some_and(|f| unsafe { f(self.con) } == 0),
            Tx::Sql => self.raw("COMMIT").is_ok(),
            Tx::None => true,
        };
        if ok { Ok(()) } else { Err("commit failed".into()) }
    }

    pub fn rollback(&self, tx: Tx) {
        match tx {
            Tx::Api => {
                if let Some(f) = self.api.f.abort_transaction {
                    // SAFETY: [I6] a live connection with a transaction started by begin().
                    unsafe { f(self.con) };
                }
            }
            Tx::Sql => {
                let _ = self.raw("ROLLBACK");
            }
            Tx::None => {}
        }
    }
}

impl Drop for DbConn<'_> {
    fn drop(&mut self) {
        if let Some(close) = self.api.f.close {
            // SAFETY: [I6] a connection opened by connect() and not used afterwards.
            unsafe { close(self.con) }
        }
    }
}
