//! A throw-away PostgreSQL server for tests: its own cluster in a temp
//! dir, listening on 127.0.0.1 and a free port, trust auth, the Kamailio
//! schema loaded; stopped and removed on drop. PostgreSQL refuses to run as
//! root, so its commands run as the `postgres` user (Debian's package).

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use super::kamailio::{run_with_timeout, TestDir};

pub struct Postgres {
    pub port: u16,
    dir: TestDir,
    bin: PathBuf,
}

fn bin_dir() -> Result<PathBuf, String> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|e| format!("PostgreSQL is not installed (run make setup): {e}"))?
        .filter_map(|d| d.ok().map(|d| d.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    dirs.sort();
    dirs.pop().ok_or_else(|| "no initdb under /usr/lib/postgresql".to_string())
}

fn as_postgres(args: &[&str]) -> Result<Output, String> {
    let out = run_with_timeout(Command::new("runuser").arg("-u").arg("postgres").arg("--").args(args), Duration::from_secs(60))?;
    if !out.status.success() {
        return Err(format!(
            "{args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(out)
}

impl Postgres {
    pub fn start() -> Result<Postgres, String> {
        let bin = bin_dir()?;
        let dir = TestDir::new("sca_rs-pg")?;
        let data = dir.path.join("data");
        let chown = Command::new("chown").arg("-R").arg("postgres:postgres").arg(&dir.path).status();
        if !chown.map(|s| s.success()).unwrap_or(false) {
            return Err("cannot chown the PostgreSQL test dir".into());
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free TCP port: {e}"))?
            .port();
        let s = |p: PathBuf| p.display().to_string();
        as_postgres(&[&s(bin.join("initdb")), "-D", &s(data.clone()), "-A", "trust", "-U", "postgres", "--no-sync"])?;
        let opts = format!("-k {} -c listen_addresses=127.0.0.1 -p {port} -c fsync=off", dir.path.display());
        as_postgres(&[&s(bin.join("pg_ctl")), "-D", &s(data), "-l", &s(dir.path.join("pg.log")), "-o", &opts, "-w", "start"])?;
        let pg = Postgres { port, dir, bin };
        pg.psql("postgres", "CREATE DATABASE kamailio;")?;
        for f in ["standard", "sca"] {
            let file = crate::common::kamailio::kamailio_file(&format!("/usr/share/kamailio/postgres/{f}-create.sql"))
                .display()
                .to_string();
            as_postgres(&["psql", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", &pg.port.to_string(), "-U", "postgres", "-d", "kamailio", "-f", &file])?;
        }
        Ok(pg)
    }

    fn pg_ctl(&self, args: &[&str]) -> Result<(), String> {
        let pg_ctl = self.bin.join("pg_ctl").display().to_string();
        let data = self.dir.path.join("data").display().to_string();
        let log = self.dir.path.join("pg.log").display().to_string();
        let opts = format!("-k {} -c listen_addresses=127.0.0.1 -p {} -c fsync=off", self.dir.path.display(), self.port);
        let mut a = vec![pg_ctl.as_str(), "-D", data.as_str(), "-l", log.as_str(), "-o", opts.as_str(), "-w"];
        a.extend_from_slice(args);
        as_postgres(&a).map(|_| ())
    }

    /// Stop the server (the DB is "down"); its data stays.
    pub fn pause(&self) -> Result<(), String> {
        self.pg_ctl(&["-m", "fast", "stop"])
    }

    /// Start it again on the same port.
    pub fn resume(&self) -> Result<(), String> {
        self.pg_ctl(&["start"])
    }

    /// Kamailio's db_url for this server.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/kamailio", self.port)
    }

    /// Run SQL; unaligned, tuples-only output (`a|b` per row).
    pub fn psql(&self, db: &str, sql: &str) -> Result<String, String> {
        let out = as_postgres(&["psql", "-q", "-A", "-t", "-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "postgres", "-d", db, "-c", sql])?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let pg_ctl = self.bin.join("pg_ctl").display().to_string();
        let data = self.dir.path.join("data").display().to_string();
        let _ = as_postgres(&[&pg_ctl, "-D", &data, "-m", "immediate", "stop"]);
    }
}
