//! A throw-away MariaDB server for tests (Debian's `mariadb-server`): its
//! own data dir in a temp dir, listening on 127.0.0.1 and a free port, no
//! grant tables (any user, no password), Kamailio's MySQL schema loaded;
//! stopped and removed on drop. It runs as the `mysql` user, as Debian's
//! package sets it up.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::kamailio::{run_with_timeout, TestDir};

const SCHEMA_DIR: &str = "/usr/share/kamailio/mysql";

pub struct MariaDb {
    pub port: u16,
    dir: TestDir,
    server: Option<Child>,
}

fn check(out: Output, what: &str) -> Result<Output, String> {
    if out.status.success() {
        Ok(out)
    } else {
        Err(format!("{what}: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
    }
}

impl MariaDb {
    pub fn start() -> Result<MariaDb, String> {
        if !std::path::Path::new("/usr/sbin/mariadbd").exists() {
            return Err("MariaDB is not installed (run make setup: mariadb-server)".into());
        }
        let dir = TestDir::new("sca_rs-mariadb")?;
        let data = dir.path.join("data");
        std::fs::create_dir_all(&data).map_err(|e| format!("mkdir {}: {e}", data.display()))?;
        // its own temp dir: servers started in parallel clash in /tmp
        let tmp = dir.path.join("tmp");
        std::fs::create_dir_all(&tmp).map_err(|e| format!("mkdir {}: {e}", tmp.display()))?;
        let chown = Command::new("chown").arg("-R").arg("mysql:mysql").arg(&dir.path).status();
        if !chown.map(|s| s.success()).unwrap_or(false) {
            return Err("cannot chown the MariaDB test dir".into());
        }
        check(
            run_with_timeout(
                Command::new("mariadb-install-db")
                    .arg("--no-defaults")
                    .arg("--user=mysql")
                    .arg(format!("--datadir={}", data.display()))
                    .arg("--skip-test-db")
                    .arg(format!("--tmpdir={}", tmp.display()))
                    .arg("--auth-root-authentication-method=normal"),
                Duration::from_secs(120),
            )?,
            "mariadb-install-db",
        )?;
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free TCP port: {e}"))?
            .port();
        let mut db = MariaDb { port, dir, server: None };
        db.resume()?;
        db.sql("", "CREATE DATABASE kamailio;")?;
        for f in ["standard", "sca"] {
            let file = PathBuf::from(SCHEMA_DIR).join(format!("{f}-create.sql"));
            let sql = std::fs::read_to_string(&file).map_err(|e| format!("read {}: {e}", file.display()))?;
            db.sql("kamailio", &sql)?;
        }
        Ok(db)
    }

    fn socket(&self) -> PathBuf {
        self.dir.path.join("mysqld.sock")
    }

    /// Start the server (again, on the same port and data) and wait until
    /// it accepts connections.
    pub fn resume(&mut self) -> Result<(), String> {
        let data = self.dir.path.join("data");
        let log = std::fs::File::create(self.dir.path.join(format!("mariadb-{}.log", self.port)))
            .map_err(|e| format!("create MariaDB log: {e}"))?;
        let child = Command::new("/usr/sbin/mariadbd")
            .arg("--no-defaults")
            .arg("--user=mysql")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--socket={}", self.socket().display()))
            .arg(format!("--pid-file={}", self.dir.path.join("mysqld.pid").display()))
            .arg(format!("--tmpdir={}", self.dir.path.join("tmp").display()))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--port={}", self.port))
            .arg("--skip-grant-tables")
            .arg("--skip-name-resolve")
            .arg("--innodb-flush-log-at-trx-commit=2")
            .arg("--innodb-buffer-pool-size=128M")
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start mariadbd: {e}"))?;
        self.server = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() && self.sql("", "SELECT 1;").is_ok() {
                return Ok(());
            }
            if let Some(Ok(Some(st))) = self.server.as_mut().map(|c| c.try_wait()) {
                return Err(format!("mariadbd exited at start: {st}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err("MariaDB did not accept connections within 60 s".into())
    }

    /// Stop the server (the DB is "down"); its data stays.
    pub fn pause(&mut self) -> Result<(), String> {
        let Some(mut c) = self.server.take() else { return Ok(()) };
        // SIGTERM: a clean shutdown
        let _ = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = c.try_wait() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        let _ = c.wait();
        Ok(())
    }

    /// Kamailio's db_url for this server.
    pub fn url(&self) -> String {
        format!("mysql://root@127.0.0.1:{}/kamailio", self.port)
    }

    /// Run SQL (on `db`, or none if empty); tab-separated raw rows, no header.
    pub fn sql(&self, db: &str, sql: &str) -> Result<String, String> {
        let mut cmd = Command::new("mariadb");
        cmd.arg("--no-defaults")
            .arg("-h")
            .arg("127.0.0.1")
            .arg("-P")
            .arg(self.port.to_string())
            .arg("-u")
            .arg("root")
            .arg("-N")
            .arg("-B")
            // values as stored, no escaping of backslashes
            .arg("-r")
            .arg("-e")
            .arg(sql);
        if !db.is_empty() {
            cmd.arg(db);
        }
        let out = check(run_with_timeout(&mut cmd, Duration::from_secs(120))?, "mariadb")?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        if let Some(mut c) = self.server.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
