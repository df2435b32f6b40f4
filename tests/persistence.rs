//! Persistence: subscriptions survive restarts of a real Kamailio on the
//! same sqlite DB (graceful stop: nothing lost; kill -9: at most the last
//! db_update_interval), and phones get NOTIFYs afterwards without
//! re-subscribing.

mod common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::cfg::{sca_modparam, sca_opts};
use common::kamailio::{create_sqlite_db, sqlite_exec, Kamailio, ScaModule, TestDir};
use common::postgres::Postgres;
use common::flows::subscribe_call_info;
use common::sip::{Subscribe, Ua, RECV_TIMEOUT};

const AOR: &str = "sip:100@127.0.0.1";

/// A fresh sqlite DB with Debian's schema, in a directory removed when the
/// returned `TestDir` goes.
fn new_db() -> (TestDir, PathBuf) {
    let dir = TestDir::new("sca_rs-persist").expect("temp dir");
    let db = dir.path.join("sca.sqlite");
    create_sqlite_db(&db, None).expect("create DB");
    (dir, db)
}

fn start(db: &Path, interval: u32) -> Kamailio {
    start_url(&format!("sqlite:///{}", db.display()), "", interval)
}

/// Kamailio with sca_rs on `url`; `extra` goes before the modparams (e.g.
/// loading another db_* module).
fn start_url(url: &str, extra: &str, interval: u32) -> Kamailio {
    let m = ScaModule::Rust;
    // `sca.all_subscriptions` of up to ~2500 lines in one reply (kamcmd
    // reads at most 128 kB)
    let params = format!(
        "{extra}modparam(\"ctl\", \"binrpc_max_body_size\", 128)\n{}",
        sca_modparam(&m, "db_update_interval", &interval.to_string())
    );
    Kamailio::start(sca_opts(m).with_db(false).var("DB_URL", url).var("SCA_MODPARAMS", &params))
}


fn rows(db: &Path) -> Vec<String> {
    let out = sqlite_exec(db, "SELECT subscriber, aor, event, state FROM sca_subscriptions ORDER BY subscriber;")
        .expect("query sqlite");
    out.lines().map(String::from).filter(|l| !l.is_empty()).collect()
}

fn wait_rows(db: &Path, n: usize, within: Duration) -> Vec<String> {
    let deadline = Instant::now() + within;
    loop {
        let r = rows(db);
        if r.len() == n || Instant::now() > deadline {
            return r;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Phones A1 and A2, both subscribed to call-info for AOR.
fn two_phones_subscribed(k: &Kamailio) -> (Ua, Ua) {
    let mut a1 = Ua::new("A1", "100", k.addr()).expect("UA");
    let mut a2 = Ua::new("A2", "100", k.addr()).expect("UA");
    a1.auto_answer_notify = true;
    a2.auto_answer_notify = true;
    subscribe_call_info(&mut a1, AOR);
    subscribe_call_info(&mut a2, AOR);
    (a1, a2)
}

/// A line-seize by `seizer` makes Kamailio NOTIFY every call-info
/// subscriber: proof that `phone` is known to this Kamailio.
fn assert_phone_notified_on_seize(k: &Kamailio, seizer: &mut Ua, phone: &mut Ua) {
    let mut d = seizer.dialog(AOR);
    let s = seizer
        .send_subscribe(&mut d, &Subscribe::new("line-seize", 15).call_info("<sip:127.0.0.1>;appearance-index=1"))
        .expect("send line-seize");
    let r = seizer.expect_final_response(&s, RECV_TIMEOUT).expect("reply to line-seize");
    assert_eq!(r.status(), Some(200), "{}", r.raw);
    let n = phone.expect_request("NOTIFY", RECV_TIMEOUT).unwrap_or_else(|e| {
        panic!("{} got no NOTIFY after a restart: {e}\n{}", phone.name, k.log_tail(40))
    });
    assert_eq!(
        n.header("Call-Info"),
        Some("<sip:127.0.0.1>;appearance-index=1;appearance-state=seized,<sip:127.0.0.1>;appearance-index=*;appearance-state=idle")
    );
    assert!(n.header("Subscription-State").is_some_and(|s| s.starts_with("active;expires=")), "{}", n.raw);
}

#[test]
fn subscriptions_survive_a_graceful_restart() {
    let (_dir, db) = new_db();

    // a long interval: the graceful stop must write what the timer did not
    let mut k = start(&db, 300);
    let (mut a1, mut a2) = two_phones_subscribed(&k);
    assert!(rows(&db).is_empty(), "nothing written before the first flush");
    let st = k.stop().expect("graceful stop");
    assert!(st.success(), "{st}");
    let r = rows(&db);
    assert_eq!(r.len(), 2, "both subscriptions flushed at shutdown: {r:?}\n{}", k.log_tail(20));
    assert!(r.iter().all(|l| l.contains("|sip:100@127.0.0.1|1|0")), "{r:?}");

    let k2 = start(&db, 300);
    assert_eq!(k2.rpc(&["sca.subscription_count", "call-info"]), "2 call-info");
    assert!(k2.log().contains("restored 2 SCA subscriptions"), "{}", k2.log_tail(30));
    a1.proxy = k2.addr();
    let mut seizer = Ua::new("A3", "100", k2.addr()).expect("UA");
    seizer.auto_answer_notify = true;
    // A3 needs no call-info subscription to seize; A1 and A2 are told
    assert_phone_notified_on_seize(&k2, &mut seizer, &mut a2);
    let n = a1.expect_request("NOTIFY", RECV_TIMEOUT).expect("A1 notified too");
    // the NOTIFY goes on in A1's dialog: its CSeq follows the ones before the restart
    assert_eq!(n.header("CSeq"), Some("2 NOTIFY"), "{}", n.raw);
}

#[test]
fn kill_9_loses_at_most_the_last_interval() {
    let (_dir, db) = new_db();

    let mut k = start(&db, 1);
    let (a1, mut a2) = two_phones_subscribed(&k);
    let r = wait_rows(&db, 2, Duration::from_secs(5));
    assert_eq!(r.len(), 2, "the writer flushed within the interval: {r:?}\n{}", k.log_tail(20));
    k.kill9();

    let k2 = start(&db, 1);
    assert_eq!(k2.rpc(&["sca.subscription_count", "call-info"]), "2 call-info");
    let out = k2.rpc(&["sca.all_subscriptions"]);
    for ua in [&a1, &a2] {
        assert!(out.contains(&ua.local.to_string()), "{} restored: {out}", ua.name);
    }
    a2.proxy = k2.addr();
    let mut seizer = Ua::new("A3", "100", k2.addr()).expect("UA");
    seizer.auto_answer_notify = true;
    assert_phone_notified_on_seize(&k2, &mut seizer, &mut a2);
}

#[test]
fn unsubscribed_and_expired_rows_are_deleted() {
    let (_dir, db) = new_db();
    let k = start(&db, 1);
    let mut a1 = Ua::new("A1", "100", k.addr()).expect("UA");
    a1.auto_answer_notify = true;
    let mut d1 = subscribe_call_info(&mut a1, AOR);
    assert_eq!(wait_rows(&db, 1, Duration::from_secs(5)).len(), 1);
    let s = a1.send_subscribe(&mut d1, &Subscribe::new("call-info", 0)).expect("unSUBSCRIBE");
    a1.expect_final_response(&s, RECV_TIMEOUT).expect("202");
    a1.expect_request("NOTIFY", RECV_TIMEOUT).expect("terminated NOTIFY");
    let r = wait_rows(&db, 0, Duration::from_secs(5));
    assert!(r.is_empty(), "the ended subscription's row is deleted: {r:?}");
}

#[test]
fn subscriptions_survive_a_restart_with_postgresql() {
    let pg = Postgres::start().expect("PostgreSQL test server");
    let load = "loadmodule \"db_postgres.so\"\n";
    let rows = |pg: &Postgres| -> Vec<String> {
        pg.psql("kamailio", "SELECT subscriber, aor, event, state FROM sca_subscriptions ORDER BY subscriber;")
            .expect("query PostgreSQL")
            .lines()
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect()
    };

    let mut k = start_url(&pg.url(), load, 1);
    let (mut a1, mut a2) = two_phones_subscribed(&k);
    let deadline = Instant::now() + Duration::from_secs(5);
    while rows(&pg).len() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let r = rows(&pg);
    assert_eq!(r.len(), 2, "written to PostgreSQL: {r:?}\n{}", k.log_tail(20));
    assert!(r.iter().all(|l| l.contains("|sip:100@127.0.0.1|1|0")), "{r:?}");
    let st = k.stop().expect("graceful stop");
    assert!(st.success(), "{st}");

    let k2 = start_url(&pg.url(), load, 1);
    assert_eq!(k2.rpc(&["sca.subscription_count", "call-info"]), "2 call-info");
    a1.proxy = k2.addr();
    let mut seizer = Ua::new("A3", "100", k2.addr()).expect("UA");
    seizer.auto_answer_notify = true;
    assert_phone_notified_on_seize(&k2, &mut seizer, &mut a2);
    a1.expect_request("NOTIFY", RECV_TIMEOUT).expect("A1 notified too");
}

#[test]
fn a_db_that_goes_down_and_comes_back_loses_nothing() {
    let pg = Postgres::start().expect("PostgreSQL test server");
    let count = |pg: &Postgres| -> usize {
        pg.psql("kamailio", "SELECT count(*) FROM sca_subscriptions;")
            .ok()
            .and_then(|o| o.trim().parse().ok())
            .unwrap_or(usize::MAX)
    };
    let k = start_url(&pg.url(), "loadmodule \"db_postgres.so\"\n", 1);
    let mut a1 = Ua::new("A1", "100", k.addr()).expect("UA");
    a1.auto_answer_notify = true;
    subscribe_call_info(&mut a1, AOR);

    pg.pause().expect("stop PostgreSQL");
    // SIP keeps working from shared memory while the DB is down
    let mut a2 = Ua::new("A2", "100", k.addr()).expect("UA");
    a2.auto_answer_notify = true;
    subscribe_call_info(&mut a2, AOR);
    assert_eq!(k.rpc(&["sca.subscription_count", "call-info"]), "2 call-info");
    assert!(
        k.wait_for_log("retrying in 1s", Duration::from_secs(5)),
        "the failed write is logged:\n{}",
        k.log_tail(30)
    );

    pg.resume().expect("start PostgreSQL again");
    let deadline = Instant::now() + Duration::from_secs(10);
    while count(&pg) != 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(count(&pg), 2, "both subscriptions written after the DB came back\n{}", k.log_tail(30));
}

/// Phone `i` (AoR `sip:<2000+i>@127.0.0.1`, its own UDP port) subscribes
/// call-info and answers the first NOTIFY, as a phone does. Its
/// `<subscriber>|<aor>` (as in the DB) once acknowledged with a 202; None
/// when unanswered (Kamailio stopped, or overloaded).
fn subscribe_one(proxy: std::net::SocketAddr, i: u32) -> Option<String> {
    let user = (2000 + i).to_string();
    let mut ua = Ua::new(&format!("L{i}"), &user, proxy).ok()?;
    let aor = format!("sip:{user}@127.0.0.1");
    let mut d = ua.dialog(&aor);
    let s = ua.send_subscribe(&mut d, &Subscribe::new("call-info", 600)).ok()?;
    match ua.expect_final_response(&s, Duration::from_millis(1500)) {
        Ok(r) if r.status() == Some(202) => {
            if let Ok(n) = ua.expect_request("NOTIFY", Duration::from_millis(500)) {
                let _ = ua.reply(&n, 200, "OK");
            }
            Some(format!("{}|{aor}", ua.contact_uri()))
        }
        _ => None,
    }
}

/// Phones `from`, `from + step`, ... subscribing one after another (at most
/// `per_sec` a second, 0: as fast as answered), from a thread, until one
/// gets no answer (Kamailio stopped) or `stop` is set. Returns each
/// acknowledged subscription (`<subscriber>|<aor>`, as in the DB) with the
/// time of its 202.
fn subscribe_load_from(proxy: std::net::SocketAddr, from: u32, step: u32, per_sec: u32, stop: &AtomicBool) -> Vec<(String, Instant)> {
    let mut acked = Vec::new();
    let t0 = Instant::now();
    for n in 0u32.. {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        if per_sec > 0 {
            let due = t0 + Duration::from_secs_f64(f64::from(n) / f64::from(per_sec));
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
        }
        match subscribe_one(proxy, from + n * step) {
            Some(key) => acked.push((key, Instant::now())),
            None => break,
        }
    }
    acked
}

fn subscribe_load(proxy: std::net::SocketAddr, per_sec: u32, stop: &AtomicBool) -> Vec<(String, Instant)> {
    subscribe_load_from(proxy, 0, 1, per_sec, stop)
}

/// `<subscriber>|<aor>` of every call-info row in the DB.
fn db_keys(db: &Path) -> HashSet<String> {
    sqlite_exec(db, "SELECT subscriber, aor FROM sca_subscriptions WHERE event = 1;")
        .expect("query sqlite")
        .lines()
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

fn first_few<T: std::fmt::Debug>(v: &[T]) -> String {
    format!("{:?}{}", &v[..v.len().min(5)], if v.len() > 5 { " ..." } else { "" })
}

#[test]
fn graceful_restart_under_load_loses_no_acknowledged_subscription() {
    let (_dir, db) = new_db();
    let mut k = start(&db, 1);
    let addr = k.addr();
    let stop = AtomicBool::new(false);
    let acked = std::thread::scope(|s| {
        // as fast as Kamailio answers: the DB writer lags behind, and the
        // final flush must write everything
        let load = s.spawn(|| subscribe_load(addr, 0, &stop));
        // stop Kamailio in the middle of the load (well under way)
        assert!(wait_until(Duration::from_secs(30), || call_info_count(&k) >= 100), "the load runs\n{}", k.log_tail(20));
        let st = k.stop().expect("graceful stop under load");
        assert!(st.success(), "{st}");
        stop.store(true, Ordering::Relaxed);
        load.join().expect("load thread")
    });
    assert!(acked.len() > 20, "the load ran: {} acknowledged", acked.len());
    assert!(!k.log().contains("still locked"), "no lock left held at shutdown:\n{}", k.log_tail(20));
    let rows = db_keys(&db);
    let lost: Vec<&String> = acked.iter().map(|(s, _)| s).filter(|s| !rows.contains(*s)).collect();
    assert!(lost.is_empty(), "{} of {} acknowledged subscriptions not in the DB: {}", lost.len(), acked.len(), first_few(&lost));

    let k2 = start(&db, 1);
    assert_eq!(k2.rpc(&["sca.subscription_count", "call-info"]), format!("{} call-info", rows.len()), "every row restored");
}

#[test]
fn kill_9_under_load_loses_at_most_the_last_interval() {
    let (_dir, db) = new_db();
    let mut k = start(&db, 1);
    let addr = k.addr();
    let stop = AtomicBool::new(false);
    // db_update_interval is 1 s; a flush takes a moment more
    let margin = Duration::from_millis(2000);
    let (acked, killed_at) = std::thread::scope(|s| {
        // a rate the DB writer keeps up with (README, Persistence: sqlite
        // writes about 1500 new rows/s on the test machine)
        let load = s.spawn(|| subscribe_load(addr, 300, &stop));
        // once 100 subscriptions are stored, the load goes on until they
        // are older than the margin: the writer had its chance at them
        assert!(wait_until(Duration::from_secs(30), || call_info_count(&k) >= 100), "the load runs\n{}", k.log_tail(20));
        let hundred_at = Instant::now();
        let old = margin + Duration::from_millis(500);
        assert!(wait_until(old + Duration::from_secs(30), || hundred_at.elapsed() > old && call_info_count(&k) >= 200), "the load goes on");
        let t = Instant::now();
        k.kill9();
        stop.store(true, Ordering::Relaxed);
        (load.join().expect("load thread"), t)
    });
    let old_enough: Vec<&String> = acked.iter().filter(|(_, at)| *at + margin < killed_at).map(|(s, _)| s).collect();
    assert!(old_enough.len() > 20, "the load ran long enough: {} of {}", old_enough.len(), acked.len());
    let rows = db_keys(&db);
    let lost: Vec<&&String> = old_enough.iter().filter(|s| !rows.contains(**s)).collect();
    assert!(lost.is_empty(), "{} subscriptions acknowledged over {margin:?} before kill -9 not in the DB: {}", lost.len(), first_few(&lost));
    let acked_keys: HashSet<&String> = acked.iter().map(|(s, _)| s).collect();
    assert!(rows.iter().filter(|r| !acked_keys.contains(r)).count() <= 1, "rows only for acknowledged (or the one in flight)");

    let k2 = start(&db, 1);
    assert_eq!(k2.rpc(&["sca.subscription_count", "call-info"]), format!("{} call-info", rows.len()), "every row restored");
}


// ------------------------------------------------ every backend, at scale

use common::mariadb::MariaDb;

/// A DB the tests can fill, query and (for servers) take down.
enum Db {
    /// (the directory lives as long as the DB)
    Sqlite(#[allow(dead_code)] TestDir, PathBuf),
    Pg(Postgres),
    Maria(MariaDb),
}

impl Db {
    fn sqlite() -> Db {
        let (dir, path) = new_db();
        Db::Sqlite(dir, path)
    }
    fn postgres() -> Db {
        Db::Pg(Postgres::start().expect("PostgreSQL test server"))
    }
    fn mariadb() -> Db {
        Db::Maria(MariaDb::start().expect("MariaDB test server"))
    }

    fn url(&self) -> String {
        match self {
            Db::Sqlite(_, p) => format!("sqlite:///{}", p.display()),
            Db::Pg(pg) => pg.url(),
            Db::Maria(m) => m.url(),
        }
    }

    /// Config lines loading the DB module (db_sqlite is in the base config).
    fn load(&self) -> &'static str {
        match self {
            Db::Sqlite(..) => "",
            Db::Pg(_) => "loadmodule \"db_postgres.so\"\n",
            Db::Maria(_) => "loadmodule \"db_mysql.so\"\n",
        }
    }

    /// Rows of a query, columns joined with `|`.
    fn query(&self, sql: &str) -> Vec<String> {
        let out = match self {
            Db::Sqlite(_, p) => sqlite_exec(p, sql).expect("query sqlite"),
            Db::Pg(pg) => pg.psql("kamailio", sql).expect("query PostgreSQL"),
            Db::Maria(m) => m.sql("kamailio", sql).expect("query MariaDB").replace('\t', "|"),
        };
        out.lines().filter(|l| !l.is_empty()).map(String::from).collect()
    }

    fn exec(&self, sql: &str) {
        match self {
            Db::Sqlite(_, p) => sqlite_exec(p, sql).map(drop),
            Db::Pg(pg) => pg.psql("kamailio", sql).map(drop),
            Db::Maria(m) => m.sql("kamailio", sql).map(drop),
        }
        .expect("SQL");
    }

    fn count(&self) -> usize {
        self.query("SELECT count(*) FROM sca_subscriptions;").first().and_then(|c| c.trim().parse().ok()).expect("count")
    }

    /// `n` unexpired call-info rows of server 0 (AoR `sip:<i>@127.0.0.1`,
    /// subscriber `sip:<i>@10.<i/65536>.<i/256%256>.<i%256>:5060`), plus
    /// 100 expired ones and 100 of another server, which must not load.
    fn fill(&self, n: usize) {
        let cols = "subscriber, aor, event, expires, state, app_idx, call_id, from_tag, to_tag, record_route, notify_cseq, subscribe_cseq, server_id";
        let (series, cat, now) = match self {
            Db::Sqlite(..) => (
                format!("WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {}) SELECT i FROM s", n + 200),
                "||",
                "CAST(strftime('%s','now') AS INTEGER)",
            ),
            Db::Pg(_) => (format!("SELECT generate_series(1, {}) AS i", n + 200), "||", "CAST(extract(epoch FROM now()) AS INTEGER)"),
            Db::Maria(_) => (format!("SELECT seq AS i FROM seq_1_to_{}", n + 200), "", "UNIX_TIMESTAMP()"),
        };
        let c = |parts: &[&str]| -> String {
            if cat.is_empty() {
                format!("CONCAT({})", parts.join(", "))
            } else {
                parts.join(&format!(" {cat} "))
            }
        };
        let host = match self {
            Db::Maria(_) => "CONCAT('10.', i DIV 65536, '.', (i DIV 256) % 256, '.', i % 256)".to_string(),
            Db::Pg(_) => c(&["'10.'", "(i / 65536)", "'.'", "((i / 256) % 256)", "'.'", "(i % 256)"]),
            Db::Sqlite(..) => c(&["'10.'", "(i / 65536)", "'.'", "((i / 256) % 256)", "'.'", "(i % 256)"]),
        };
        let sql = format!(
            "INSERT INTO sca_subscriptions ({cols}) SELECT {}, {}, 1, \
             CASE WHEN i > {n} + 100 THEN {now} - 10 ELSE {now} + 3600 END, 0, 0, {}, 'ft', 'tt', '', 1, 1, \
             CASE WHEN i > {n} AND i <= {n} + 100 THEN 7 ELSE 0 END FROM ({series}) AS s;",
            c(&["'sip:'", "i", "'@'", &host, "':5060'"]),
            c(&["'sip:'", "i", "'@127.0.0.1'"]),
            c(&["'cid-'", "i"]),
        );
        self.exec(&sql);
    }

    /// `<aor user> <subscriber host:port> <event>` of every row of server 0
    /// that is not expired: what `sca.all_subscriptions` prints for them.
    fn keys(&self) -> Vec<String> {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
        let mut keys: Vec<String> = self
            .query(&format!("SELECT aor, subscriber, event FROM sca_subscriptions WHERE server_id = 0 AND expires > {now};"))
            .iter()
            .map(|l| row_key(l))
            .collect();
        keys.sort();
        keys
    }
}

/// `sip:<user>@<host>[:port]` → (user, host[:port]).
fn uri_parts(uri: &str) -> (&str, &str) {
    let rest = uri.trim_start_matches('<').trim_start_matches("sip:");
    let (user, host) = rest.split_once('@').unwrap_or(("", rest));
    (user, host.split([';', '>']).next().unwrap_or(host))
}

fn row_key(line: &str) -> String {
    let mut f = line.split('|');
    let (aor, sub, event) = (f.next().unwrap_or(""), f.next().unwrap_or(""), f.next().unwrap_or(""));
    let event = match event.trim() {
        "1" => "call-info",
        "2" => "line-seize",
        e => e,
    };
    format!("{} {} {event}", uri_parts(aor).0, uri_parts(sub).1)
}

/// The same keys from `sca.all_subscriptions`.
fn memory_keys(k: &Kamailio) -> Vec<String> {
    let count = |ev: &str| -> usize {
        k.rpc(&["sca.subscription_count", ev]).split_whitespace().next().and_then(|n| n.parse().ok()).expect("count")
    };
    let before = count("call-info") + count("line-seize");
    let mut keys: Vec<String> = k
        .rpc(&["sca.all_subscriptions"])
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 3).then(|| format!("{} {} {}", f[0], f[1], f[2]))
        })
        .collect();
    keys.sort();
    let after = count("call-info") + count("line-seize");
    // (phones may subscribe meanwhile)
    assert!(
        (before..=after).contains(&keys.len()),
        "sca.all_subscriptions printed every subscription, not cut by the RPC reply size: {} lines, {before}..{after} subscriptions",
        keys.len()
    );
    keys
}

fn assert_same_keys(what: &str, db: &[String], mem: &[String]) {
    if db == mem {
        return;
    }
    let dbs: HashSet<&String> = db.iter().collect();
    let mems: HashSet<&String> = mem.iter().collect();
    let only_db: Vec<&&String> = dbs.difference(&mems).take(5).collect();
    let only_mem: Vec<&&String> = mems.difference(&dbs).take(5).collect();
    panic!(
        "{what}: {} rows in the DB, {} subscriptions in memory; only in the DB: {only_db:?}; only in memory: {only_mem:?}",
        db.len(),
        mem.len()
    );
}

/// Kamailio with Kamailio's default memory sizes (`-m 64 -M 8`),
/// `db_restore_direct` as given.
fn start_default_mem(db: &Db, interval: u32, direct: bool) -> Kamailio {
    let m = ScaModule::Rust;
    let params = format!(
        "{}{}{}",
        db.load(),
        sca_modparam(&m, "db_update_interval", &interval.to_string()),
        sca_modparam(&m, "db_restore_direct", if direct { "1" } else { "0" })
    );
    Kamailio::start(
        sca_opts(m)
            .with_db(false)
            .var("DB_URL", &db.url())
            .var("SCA_MODPARAMS", &params)
            .arg("-m")
            .arg("64")
            .arg("-M")
            .arg("8")
            .ready_timeout(Duration::from_secs(120)),
    )
}

/// The way the restore read the rows, from its log line.
fn restore_read_by(k: &Kamailio) -> String {
    let log = k.log();
    let line = log.lines().find(|l| l.contains("SCA subscriptions from") && l.contains("read by ")).unwrap_or("");
    line.split("read by ").nth(1).map(|r| r.trim_end().trim_end_matches(')').to_string()).unwrap_or_default()
}

/// 100,000 rows restored, read each of the ways given: `db_restore_direct`
/// and the way the log must name (one Kamailio after the other, on the
/// same table).
fn restores_100k(db: Db, reads: &[(bool, &str)]) {
    const N: usize = 100_000;
    db.fill(N);
    assert_eq!(db.count(), N + 200);
    for &(direct, by) in reads {
        let mut k = start_default_mem(&db, 5, direct);
        restored_100k(&db, &k);
        assert_eq!(restore_read_by(&k), by, "db_restore_direct {direct}: {}", k.log_tail(10));
        let st = k.stop().expect("graceful stop");
        assert!(st.success(), "{st}");
    }
}

fn restored_100k(db: &Db, k: &Kamailio) {
    const N: usize = 100_000;
    assert!(
        k.wait_for_log(&format!("restored {N} SCA subscriptions"), Duration::from_secs(5)),
        "{}",
        k.log_tail(30)
    );
    assert_eq!(k.rpc(&["sca.subscription_count", "call-info"]), format!("{N} call-info"));
    assert!(!k.log().contains("no private memory"), "{}", k.log_tail(30));
    // Row for row: a restore only stores rows it read, and the store holds
    // one subscription per (AoR, subscriber, event), each row's key being
    // distinct here; so the count equal to the rows of this server that
    // are unexpired means the same set. (`sca.all_subscriptions` of 100k
    // lines does not fit kamcmd's reply buffer; it is compared in full in
    // the smaller tests.) Spot checks, exact to the expiry, of every
    // 5000th AoR and of rows that must not load:
    assert_eq!(db.keys().len(), N);
    for i in (1..=N).step_by(5000).chain([N, N + 1, N + 100, N + 101, N + 200]) {
        let aor = format!("sip:{i}@127.0.0.1");
        let row = db.query(&format!(
            "SELECT subscriber, expires FROM sca_subscriptions WHERE aor = '{aor}' AND server_id = 0 AND expires > {};",
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs()
        ));
        let want: Vec<String> = row.iter().map(|r| {
            let (sub, exp) = r.split_once('|').expect("2 columns");
            format!("{aor} call-info {sub} {exp}")
        }).collect();
        let got: Vec<String> = k.rpc(&["sca.show_subscription", &aor, "call-info"]).lines().map(String::from).collect();
        assert_eq!(got, want, "AoR {i} (rows {N}+1..{N}+100 are another server's, above expired)");
    }
    // and the 100 expired rows were deleted at start-up, the other server's kept
    assert_eq!(db.count(), N + 100, "expired rows of this server deleted, foreign ones kept");
}

#[test]
fn restores_100k_rows_from_sqlite_at_default_memory_sizes() {
    restores_100k(Db::sqlite(), &[(true, "the sqlite library"), (false, "aggregated pages")]);
}

#[test]
fn restores_100k_rows_from_postgresql_at_default_memory_sizes() {
    restores_100k(Db::postgres(), &[(true, "COPY through libpq"), (false, "aggregated pages")]);
}

/// The direct read connects as db_postgres does, `con_param` included: a
/// db_url naming a port where nothing listens, and `con_param` naming the
/// server's (db_postgres gives it to libpq after the URL's parts). The
/// restore reads by COPY only if its connection took the `con_param` too.
#[test]
fn the_direct_restore_connects_with_db_postgres_con_param() {
    const N: usize = 300;
    let db = Db::postgres();
    db.fill(N);
    let Db::Pg(pg) = &db else { unreachable!() };
    // a port nobody listens on (refused at once)
    let nobody = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
    let url = pg.url().replace(&format!(":{}/", pg.port), &format!(":{nobody}/"));
    assert_ne!(url, pg.url(), "the URL names another port");
    let load = format!("{}modparam(\"db_postgres\", \"con_param\", \"port={}\")\n", db.load(), pg.port);
    let k = start_url(&url, &load, 5);
    assert!(k.wait_for_log(&format!("restored {N} SCA subscriptions"), Duration::from_secs(10)), "{}", k.log_tail(20));
    assert_eq!(restore_read_by(&k), "COPY through libpq", "{}", k.log_tail(20));
    assert!(!k.log().contains("with COPY through libpq ("), "no fallback: {}", k.log_tail(20));
}

#[test]
fn restores_100k_rows_from_mariadb_at_default_memory_sizes() {
    // (no direct read for db_mysql: row by row whatever the modparam)
    restores_100k(Db::mariadb(), &[(true, "pages of rows")]);
}

#[test]
fn subscriptions_survive_a_restart_with_mariadb() {
    let db = Db::mariadb();
    let mut k = start_url(&db.url(), db.load(), 1);
    let (mut a1, mut a2) = two_phones_subscribed(&k);
    let deadline = Instant::now() + Duration::from_secs(10);
    while db.count() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_same_keys("written to MariaDB", &db.keys(), &memory_keys(&k));
    let st = k.stop().expect("graceful stop");
    assert!(st.success(), "{st}");

    let k2 = start_url(&db.url(), db.load(), 1);
    assert_eq!(k2.rpc(&["sca.subscription_count", "call-info"]), "2 call-info");
    a1.proxy = k2.addr();
    let mut seizer = Ua::new("A3", "100", k2.addr()).expect("UA");
    seizer.auto_answer_notify = true;
    assert_phone_notified_on_seize(&k2, &mut seizer, &mut a2);
    a1.expect_request("NOTIFY", RECV_TIMEOUT).expect("A1 notified too");
}

/// The DB is down when Kamailio starts: the restore fails (an ERROR saying
/// what it means), Kamailio serves, phones subscribe; the DB comes back,
/// the writer's retry restores the rows, merged with the new ones: nothing
/// lost, nothing doubled.
fn a_failed_restore_is_retried_and_merged(mut db: Db) {
    const N: usize = 500;
    db.fill(N);
    match &mut db {
        Db::Pg(pg) => pg.pause().expect("stop PostgreSQL"),
        Db::Maria(m) => m.pause().expect("stop MariaDB"),
        Db::Sqlite(..) => unreachable!("a server DB"),
    }
    let mut k = start_url(&db.url(), db.load(), 1);
    assert!(
        k.wait_for_log("cannot restore SCA subscriptions", Duration::from_secs(10)),
        "{}",
        k.log_tail(30)
    );
    assert!(k.log().contains("lines look idle until they re-subscribe or the restore succeeds"), "{}", k.log_tail(30));
    assert_eq!(k.rpc(&["sca.subscription_count", "call-info"]), "0 call-info");
    // phones subscribe meanwhile: two new AoRs
    let (_a1, _a2) = two_phones_subscribed(&k);
    match &mut db {
        Db::Pg(pg) => pg.resume().expect("start PostgreSQL"),
        Db::Maria(m) => m.resume().expect("start MariaDB"),
        Db::Sqlite(..) => unreachable!(),
    }
    assert!(
        k.wait_for_log(&format!("SCA restore retry succeeded: restored {N} SCA subscriptions"), Duration::from_secs(30)),
        "{}",
        k.log_tail(30)
    );
    assert_eq!(k.rpc(&["sca.subscription_count", "call-info"]), format!("{} call-info", N + 2));
    let st = k.stop().expect("graceful stop");
    assert!(st.success(), "{st}");
    let keys = db.keys();
    let unique: HashSet<&String> = keys.iter().collect();
    assert_eq!(unique.len(), keys.len(), "no row doubled");
    assert_eq!(keys.len(), N + 2, "the restored rows and the two new ones");
    let k2 = start_url(&db.url(), db.load(), 1);
    assert_same_keys("after the restart", &db.keys(), &memory_keys(&k2));
}

#[test]
fn a_failed_restore_is_retried_and_merged_postgresql() {
    a_failed_restore_is_retried_and_merged(Db::postgres());
}

#[test]
fn a_failed_restore_is_retried_and_merged_mariadb() {
    a_failed_restore_is_retried_and_merged(Db::mariadb());
}

// ------------------------------------------------ stops and faults under load

/// `<subscriber>|<aor>` (as acknowledged) → the key [`Db::keys`] gives.
fn acked_key(s: &str) -> String {
    let (sub, aor) = s.split_once('|').expect("subscriber|aor");
    row_key(&format!("{aor}|{sub}|1"))
}

fn call_info_count(k: &Kamailio) -> usize {
    k.rpc(&["sca.subscription_count", "call-info"]).split_whitespace().next().and_then(|n| n.parse().ok()).expect("count")
}

/// Wait (with a deadline) until `cond` holds; false if it never did.
fn wait_until(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

const LOAD_THREADS: u32 = 3;

/// A graceful stop in the middle of a burst of new subscriptions (three
/// phones' threads, as fast as Kamailio answers; db_update_interval 1 s, so
/// batches are in flight when SIGTERM comes): every subscription that
/// existed before the stop (`sca.all_subscriptions`) and every one
/// acknowledged is in the DB, nothing else but the few in flight, nothing
/// twice; the restarted Kamailio has exactly the DB's rows.
fn graceful_stop_during_a_burst(db: Db) {
    let mut k = start_url(&db.url(), db.load(), 1);
    let addr = k.addr();
    let stop = AtomicBool::new(false);
    let (acked, before) = std::thread::scope(|s| {
        let loads: Vec<_> = (0..LOAD_THREADS)
            .map(|t| {
                let stop = &stop;
                s.spawn(move || subscribe_load_from(addr, t, LOAD_THREADS, 0, stop))
            })
            .collect();
        assert!(wait_until(Duration::from_secs(30), || call_info_count(&k) >= 300), "the load runs\n{}", k.log_tail(20));
        let before = memory_keys(&k);
        // more arrive, and a batch or two is written, while it goes on
        let target = before.len() + 300;
        assert!(wait_until(Duration::from_secs(30), || call_info_count(&k) >= target), "the load goes on");
        let st = k.stop().expect("graceful stop under load");
        assert!(st.success(), "{st}");
        stop.store(true, Ordering::Relaxed);
        let acked: Vec<String> = loads.into_iter().flat_map(|l| l.join().expect("load thread")).map(|(s, _)| acked_key(&s)).collect();
        (acked, before)
    });
    assert!(!k.log().contains("still locked"), "no lock left held at shutdown:\n{}", k.log_tail(20));
    let rows = db.keys();
    let set: HashSet<&String> = rows.iter().collect();
    assert_eq!(set.len(), rows.len(), "no row twice");
    let lost_before: Vec<&String> = before.iter().filter(|s| !set.contains(s)).collect();
    assert!(lost_before.is_empty(), "{} of {} subscriptions in memory before the stop not in the DB: {}", lost_before.len(), before.len(), first_few(&lost_before));
    let lost: Vec<&String> = acked.iter().filter(|s| !set.contains(s)).collect();
    assert!(lost.is_empty(), "{} of {} acknowledged subscriptions not in the DB: {}", lost.len(), acked.len(), first_few(&lost));
    let acked_set: HashSet<&String> = acked.iter().chain(before.iter()).collect();
    let extra = rows.iter().filter(|r| !acked_set.contains(r)).count();
    assert!(extra <= LOAD_THREADS as usize, "{extra} rows neither acknowledged nor in memory before (at most one in flight per phone thread)");
    let k2 = start_url(&db.url(), db.load(), 1);
    assert_same_keys("restored after the graceful stop", &rows, &memory_keys(&k2));
}

#[test]
fn graceful_stop_during_a_burst_loses_nothing_sqlite() {
    graceful_stop_during_a_burst(Db::sqlite());
}

#[test]
fn graceful_stop_during_a_burst_loses_nothing_postgresql() {
    graceful_stop_during_a_burst(Db::postgres());
}

#[test]
fn graceful_stop_during_a_burst_loses_nothing_mariadb() {
    graceful_stop_during_a_burst(Db::mariadb());
}

/// The pid of the `SCA DB SYNC PROCESS` (from `core.psx`). Kamailio
/// answers RPC before every child is forked (the harness waits for the SIP
/// receivers): the writer is waited for, with a deadline.
fn writer_pid(k: &Kamailio) -> i32 {
    let find = |psx: &str| {
        let mut pid = None;
        for l in psx.lines().map(str::trim) {
            if let Some(p) = l.strip_prefix("PID:") {
                pid = p.trim().parse().ok();
            }
            if l.contains("SCA DB SYNC PROCESS") {
                return Some(pid.expect("PID before DSC"));
            }
        }
        None
    };
    let mut psx = String::new();
    let mut pid = None;
    let found = wait_until(Duration::from_secs(10), || {
        psx = k.rpc(&["core.psx"]);
        pid = find(&psx);
        pid.is_some()
    });
    assert!(found, "no SCA DB writer in core.psx within 10 s:\n{psx}");
    pid.expect("found")
}

/// Time on CPU of process `pid`, ns (/proc/<pid>/schedstat).
fn cpu_ns(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

/// Let the stopped writer `w` go and return once it has been on the CPU
/// for half a millisecond (building its batch of 1500 rows takes about
/// that; whether the kill then lands before or after the commit, the
/// assertions after it hold either way).
fn resume_writer_into_its_batch(w: i32) -> bool {
    let t0 = cpu_ns(w);
    signal(w, libc::SIGCONT);
    wait_until(Duration::from_secs(10), || cpu_ns(w) > t0 + 500_000)
}

fn signal(pid: i32, sig: i32) {
    // SAFETY: kill(2) on a process of the Kamailio this test started.
    assert_eq!(unsafe { libc::kill(pid, sig) }, 0, "kill({pid}, {sig})");
}

/// A session of the test's own holding the table's write lock, so the DB
/// writer's next batch blocks inside its transaction (snapshot taken, no
/// slot lock held, statements waiting on the DB).
struct TableLock(std::process::Child);

impl TableLock {
    fn take(db: &Db) -> TableLock {
        use std::io::{BufRead, Write};
        use std::process::{Command, Stdio};
        let (mut cmd, sql) = match db {
            Db::Sqlite(_, p) => {
                let mut c = Command::new("sqlite3");
                c.arg(p);
                (c, ".timeout 10000\nBEGIN IMMEDIATE;\nSELECT 'locked';\n".to_string())
            }
            Db::Pg(pg) => {
                let mut c = Command::new("runuser");
                c.args(["-u", "postgres", "--", "psql", "-q", "-A", "-t", "-h", "127.0.0.1", "-p", &pg.port.to_string(), "-U", "postgres", "-d", "kamailio"]);
                (c, "BEGIN; LOCK TABLE sca_subscriptions IN ACCESS EXCLUSIVE MODE; SELECT 'locked';\n".to_string())
            }
            Db::Maria(_) => unreachable!("sqlite and PostgreSQL only"),
        };
        let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("DB shell");
        child.stdin.as_mut().expect("stdin").write_all(sql.as_bytes()).expect("lock SQL");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("read");
        assert_eq!(line.trim(), "locked", "the table is locked");
        TableLock(child)
    }

    fn release(mut self) {
        use std::io::Write;
        if let Some(mut stdin) = self.0.stdin.take() {
            let _ = stdin.write_all(b"ROLLBACK;\n");
        }
        let _ = self.0.wait();
    }
}

/// Is the writer `w` waiting inside the DB (having run since `t0`)? On
/// PostgreSQL: a backend waits for a lock; on sqlite (in-process): the
/// writer sleeps in sqlite's busy handler, its CPU time almost flat.
fn writer_blocked_in_db(db: &Db, w: i32, t0: u64) -> bool {
    match db {
        Db::Pg(_) => {
            db.query("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock';").first().map(String::as_str) == Some("1")
        }
        _ => {
            let c1 = cpu_ns(w);
            std::thread::sleep(Duration::from_millis(200));
            let st = std::fs::read_to_string(format!("/proc/{w}/stat")).unwrap_or_default();
            let sleeping = st.rsplit_once(") ").is_some_and(|(_, r)| r.starts_with('S'));
            // (the busy handler wakes now and then to retry: a little CPU)
            c1 > t0 + 200_000 && cpu_ns(w) < c1 + 5_000_000 && sleeping
        }
    }
}

/// kill -9 of the DB writer alone in the middle of a big batch: its
/// statements are blocked on a lock the test holds on the table, so it
/// dies inside its transaction. Kamailio shuts down (a child died), and
/// its final flush writes everything the writer had not committed; the DB
/// ends up with exactly what was in memory.
fn kill_9_of_the_writer_mid_batch(db: Db) {
    const N: u32 = 1500;
    let mut k = start_url(&db.url(), db.load(), 1);
    let w = writer_pid(&k);
    // hold the writer while a backlog builds up, so its next batch is big
    signal(w, libc::SIGSTOP);
    let addr = k.addr();
    let acked: Vec<String> = std::thread::scope(|s| {
        let loads: Vec<_> = (0..LOAD_THREADS)
            .map(|t| s.spawn(move || (0..N / LOAD_THREADS).filter_map(|i| subscribe_one(addr, t + i * LOAD_THREADS)).collect::<Vec<_>>()))
            .collect();
        loads.into_iter().flat_map(|l| l.join().expect("load thread")).map(|s| acked_key(&s)).collect()
    });
    assert!(acked.len() as u32 >= N - 10, "the phones subscribed: {} of {N}", acked.len());
    let mem = memory_keys(&k);
    assert_eq!(db.count(), 0, "nothing written while the writer is stopped");
    let lock = TableLock::take(&db);
    let t0 = cpu_ns(w);
    signal(w, libc::SIGCONT);
    assert!(
        wait_until(Duration::from_secs(10), || writer_blocked_in_db(&db, w, t0)),
        "the writer took its batch and waits on the table lock"
    );
    signal(w, libc::SIGKILL);
    lock.release();
    // Kamailio stops by itself when a child dies; stop() waits for it
    k.stop();
    assert!(!k.log().contains("SCA DB writer:"), "the writer died before its commit");
    assert!(!k.log().contains("still locked"), "no slot lock was left held:\n{}", k.log_tail(30));
    assert!(k.log().contains("flushed to the DB at shutdown"), "the final flush ran:\n{}", k.log_tail(30));
    assert_same_keys("after kill -9 of the writer", &db.keys(), &mem);
    let acked: HashSet<&String> = acked.iter().collect();
    assert!(mem.iter().all(|m| acked.contains(m)) && mem.len() == acked.len(), "memory held exactly the acknowledged subscriptions");
}

#[test]
fn kill_9_of_the_writer_mid_batch_loses_nothing_sqlite() {
    kill_9_of_the_writer_mid_batch(Db::sqlite());
}

#[test]
fn kill_9_of_the_writer_mid_batch_loses_nothing_postgresql() {
    kill_9_of_the_writer_mid_batch(Db::postgres());
}

/// PostgreSQL goes away in the middle of a burst and comes back: the
/// writer's failed batches leave their marks, and once the DB is back the
/// DB holds exactly what is in memory.
#[test]
fn a_db_that_goes_away_mid_burst_loses_nothing() {
    let Db::Pg(pg) = Db::postgres() else { unreachable!() };
    let db_url = pg.url();
    let load_line = "loadmodule \"db_postgres.so\"\n";
    let k = start_url(&db_url, load_line, 1);
    let addr = k.addr();
    let stop = AtomicBool::new(false);
    let acked: Vec<String> = std::thread::scope(|s| {
        let loads: Vec<_> = (0..LOAD_THREADS)
            .map(|t| {
                let stop = &stop;
                // paced: what is compared must fit one RPC reply
                s.spawn(move || subscribe_load_from(addr, t, LOAD_THREADS, 100, stop))
            })
            .collect();
        assert!(wait_until(Duration::from_secs(30), || call_info_count(&k) >= 200), "the load runs");
        pg.pause().expect("stop PostgreSQL");
        assert!(k.wait_for_log("retrying in 1s", Duration::from_secs(10)), "the failed write is logged:\n{}", k.log_tail(30));
        let target = call_info_count(&k) + 200;
        assert!(wait_until(Duration::from_secs(30), || call_info_count(&k) >= target), "SIP goes on while the DB is down");
        pg.resume().expect("start PostgreSQL again");
        let target = call_info_count(&k) + 200;
        assert!(wait_until(Duration::from_secs(30), || call_info_count(&k) >= target), "the load goes on");
        stop.store(true, Ordering::Relaxed);
        loads.into_iter().flat_map(|l| l.join().expect("load thread")).map(|(s, _)| acked_key(&s)).collect()
    });
    let db = Db::Pg(pg);
    let mem = memory_keys(&k);
    assert!(
        wait_until(Duration::from_secs(30), || db.keys() == mem),
        "the DB caught up with memory\n{}",
        k.log_tail(20)
    );
    assert_same_keys("after the DB came back", &db.keys(), &mem);
    let mem: HashSet<&String> = mem.iter().collect();
    assert!(acked.iter().all(|a| mem.contains(a)), "every acknowledged subscription is in memory and the DB");
}

/// Call-IDs with a quote, a backslash and non-ASCII bytes (all legal in a
/// SIP Call-ID, or at least accepted by Kamailio): the multi-row SQL quotes
/// the first, the others go through the DB API's bound values. Written and
/// read back byte for byte; restored the same through the DB API and
/// directly (COPY's text format escapes the backslash); after a restart
/// each phone refreshes in its dialog (202: the dialog was restored
/// exactly).
fn odd_call_ids_survive(db: Db) {
    let ids = ["it's-a-quote@x", "back\\slash@x", "caf\u{e9}-\u{fc}@x"];
    let mut k = start_url(&db.url(), db.load(), 300);
    let mut phones = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let aor = format!("sip:{}@127.0.0.1", 300 + i);
        let mut ua = Ua::new(&format!("Q{i}"), &(300 + i).to_string(), k.addr()).expect("UA");
        ua.auto_answer_notify = true;
        let mut d = ua.dialog(&aor);
        d.call_id = id.to_string();
        let s = ua.send_subscribe(&mut d, &Subscribe::new("call-info", 600)).expect("SUBSCRIBE");
        let r = ua.expect_final_response(&s, RECV_TIMEOUT).expect("reply");
        assert_eq!(r.status(), Some(202), "{}", r.raw);
        assert!(d.update_from_response(&r));
        ua.expect_request("NOTIFY", RECV_TIMEOUT).expect("NOTIFY");
        phones.push((ua, d));
    }
    let st = k.stop().expect("graceful stop");
    assert!(st.success(), "{st}");
    if matches!(db, Db::Sqlite(..)) {
        // on sqlite the values are bound through the sqlite library
        assert!(
            k.log().contains("at shutdown (3 rows written, 0 deletes, through the sqlite library)"),
            "the final flush used the sqlite library\n{}",
            k.log_tail(20)
        );
    }
    let mut got = db.query("SELECT call_id FROM sca_subscriptions;");
    got.sort();
    let mut want: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(got, want, "Call-IDs written byte for byte");
    // restored through Kamailio's DB API (db_restore_direct 0), then
    // directly (the library of sqlite, libpq's COPY): the same subscriptions
    let m = ScaModule::Rust;
    let mut k1 = start_url(&db.url(), &format!("{}{}", db.load(), sca_modparam(&m, "db_restore_direct", "0")), 300);
    // (sca.show_subscription: the expiry as a time, not seconds left)
    let show = |k: &Kamailio| -> Vec<String> {
        (0..ids.len()).map(|i| k.rpc(&["sca.show_subscription", &format!("sip:{}@127.0.0.1", 300 + i), "call-info"])).collect()
    };
    let via_api = show(&k1);
    assert!(via_api.iter().all(|l| l.contains(" call-info ")), "{via_api:?}");
    let by_api = restore_read_by(&k1);
    let st = k1.stop().expect("graceful stop");
    assert!(st.success(), "{st}");
    let k2 = start_url(&db.url(), db.load(), 300);
    assert_eq!(k2.rpc(&["sca.subscription_count", "call-info"]), "3 call-info");
    assert_eq!(show(&k2), via_api, "the same restored either way");
    let (api, direct) = match db {
        Db::Sqlite(..) => ("aggregated pages", "the sqlite library"),
        Db::Pg(..) => ("aggregated pages", "COPY through libpq"),
        _ => ("pages of rows", "pages of rows"),
    };
    assert_eq!((by_api.as_str(), restore_read_by(&k2).as_str()), (api, direct));
    for (ua, d) in &mut phones {
        ua.proxy = k2.addr();
        let s = ua.send_subscribe(d, &Subscribe::new("call-info", 600)).expect("refresh");
        let r = ua.expect_final_response(&s, RECV_TIMEOUT).expect("reply to the refresh");
        assert_eq!(r.status(), Some(202), "in-dialog refresh of {} after the restart: {}", d.call_id, r.raw);
    }
}

#[test]
fn odd_call_ids_survive_a_restart_sqlite() {
    odd_call_ids_survive(Db::sqlite());
}

#[test]
fn odd_call_ids_survive_a_restart_postgresql() {
    odd_call_ids_survive(Db::postgres());
}

#[test]
fn odd_call_ids_survive_a_restart_mariadb() {
    odd_call_ids_survive(Db::mariadb());
}

/// kill -9 of the whole Kamailio while the writer is in the middle of a
/// 1500-row batch: the batch is one transaction, so the DB holds all of it
/// or none of it (never part), stays readable, and the restarted Kamailio
/// restores exactly its rows.
#[test]
fn kill_9_during_a_flush_leaves_the_batch_whole_or_absent_sqlite() {
    const N: u32 = 1500;
    let db = Db::sqlite();
    let mut k = start_url(&db.url(), db.load(), 1);
    let w = writer_pid(&k);
    signal(w, libc::SIGSTOP);
    let addr = k.addr();
    let acked: usize = std::thread::scope(|s| {
        let loads: Vec<_> = (0..LOAD_THREADS)
            .map(|t| s.spawn(move || (0..N / LOAD_THREADS).filter_map(|i| subscribe_one(addr, t + i * LOAD_THREADS)).count()))
            .collect();
        loads.into_iter().map(|l| l.join().expect("load thread")).sum()
    });
    let mem = memory_keys(&k);
    assert_eq!(mem.len(), acked);
    let ran = resume_writer_into_its_batch(w);
    k.kill9();
    eprintln!("Kamailio killed after the writer's {} on the CPU", if ran { "0.5 ms" } else { "less than 0.5 ms in 10 s" });
    let rows = db.keys();
    eprintln!("kill -9 during the flush: {} of {} rows in the DB", rows.len(), mem.len());
    assert!(rows.is_empty() || rows == mem, "the batch is whole or absent: {} of {} rows", rows.len(), mem.len());
    let k2 = start_url(&db.url(), db.load(), 1);
    assert_same_keys("restored after kill -9 during a flush", &rows, &memory_keys(&k2));
}

/// A restore that fails on a read error (the table's `version` row is
/// missing: "table ... is missing or not at version 2"), the DB otherwise
/// fine. Phones subscribe meanwhile. Stopped before the restore succeeded,
/// the final flush writes the new subscriptions and leaves the other rows
/// alone; started again with the error still there, then repaired while
/// running, the writer's retry restores every row, merged.
#[test]
fn a_restore_that_fails_on_a_read_error_then_completes_sqlite() {
    const N: usize = 300;
    let db = Db::sqlite();
    db.fill(N);
    db.exec("DELETE FROM version WHERE table_name = 'sca_subscriptions';");
    let mut k = start_url(&db.url(), db.load(), 1);
    assert!(k.wait_for_log("cannot restore SCA subscriptions", Duration::from_secs(10)), "{}", k.log_tail(30));
    assert!(k.log().contains("not at version 2"), "the ERROR names the cause:\n{}", k.log_tail(30));
    assert_eq!(k.rpc(&["sca.subscription_count", "call-info"]), "0 call-info");
    let (_a1, _a2) = two_phones_subscribed(&k);
    let st = k.stop().expect("graceful stop");
    assert!(st.success(), "{st}");
    assert_eq!(db.keys().len(), N + 2, "the stored rows kept, the two new ones written");
    assert_eq!(db.count(), N + 200 + 2, "nothing else touched (expired and foreign rows too)");

    let k2 = start_url(&db.url(), db.load(), 1);
    assert!(k2.wait_for_log("cannot restore SCA subscriptions", Duration::from_secs(10)), "{}", k2.log_tail(30));
    db.exec("INSERT INTO version (table_name, table_version) VALUES ('sca_subscriptions', '2');");
    assert!(
        k2.wait_for_log(&format!("SCA restore retry succeeded: restored {} SCA subscriptions", N + 2), Duration::from_secs(30)),
        "{}",
        k2.log_tail(30)
    );
    assert_same_keys("after the retried restore", &db.keys(), &memory_keys(&k2));
}
