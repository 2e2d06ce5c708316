//! Throwaway PostgreSQL and Redis servers for tests, started from the installed binaries on
//! loopback ports and stopped (and deleted) on drop. A test that needs a server starts one: it
//! never skips. `./scripts/test.sh` installs the Debian packages when they are missing.
//!
//! PostgreSQL refuses to run as root, so as root `initdb` and `pg_ctl` run as the `postgres` user
//! (`runuser -u postgres --`) on a data directory owned by it.
//!
//! Failures here are test-setup failures, so they are reported with `Result<_, String>` and the
//! tests unwrap them with a message naming the missing piece.

pub mod catalogue;
pub mod fuzz;
pub mod sse;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A free loopback TCP port.
pub fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn run(cmd: &mut Command, what: &str) -> Result<(), String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{what}: cannot run: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn wait_port(port: u16, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("nothing listens on port {port}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The directory holding `initdb`, `pg_ctl` and `postgres`: `TOLLGATE_PG_BIN`, else the newest
/// `/usr/lib/postgresql/*/bin`, else the directory of `initdb` on `PATH`.
pub fn pg_bindir() -> Result<PathBuf, String> {
    if let Ok(d) = std::env::var("TOLLGATE_PG_BIN") {
        return Ok(PathBuf::from(d));
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter_map(|e| {
                    let v = e.file_name().to_string_lossy().parse::<u32>().ok()?;
                    let bin = e.path().join("bin");
                    bin.join("initdb").exists().then_some((v, bin))
                })
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    if let Some((_, bin)) = found.pop() {
        return Ok(bin);
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if dir.join("initdb").exists() && dir.join("pg_ctl").exists() {
                return Ok(dir);
            }
        }
    }
    Err("PostgreSQL server binaries not found: apt-get install -y postgresql (./scripts/test.sh does)".into())
}

/// A throwaway PostgreSQL server on `127.0.0.1:port`, user `tollgate`, trust authentication.
pub struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    root: bool,
    pub port: u16,
}

impl Postgres {
    /// Creates a cluster in a temporary directory and starts it.
    pub fn start() -> Result<Postgres, String> {
        let bin = pg_bindir()?;
        let root = is_root();
        let dir = tempfile::Builder::new()
            .prefix("tollgate-pg-")
            .tempdir()
            .map_err(|e| format!("tempdir: {e}"))?;
        if root {
            run(
                Command::new("chown")
                    .arg("-R")
                    .arg("postgres:")
                    .arg(dir.path()),
                "chown postgres",
            )?;
        }
        let port = free_port()?;
        let pg = Postgres {
            dir,
            bin,
            root,
            port,
        };
        let data = pg.data_dir();
        let mut initdb = pg.command("initdb");
        initdb.arg("-D").arg(&data).args([
            "-U",
            "tollgate",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        ]);
        run(&mut initdb, "initdb")?;
        pg.resume()?;
        Ok(pg)
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn command(&self, tool: &str) -> Command {
        let exe = self.bin.join(tool);
        if self.root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        }
    }

    /// Starts (or restarts) the server on its port.
    pub fn resume(&self) -> Result<(), String> {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=on",
            self.port,
            self.dir.path().display()
        );
        let mut c = self.command("pg_ctl");
        c.arg("-D")
            .arg(self.data_dir())
            .args(["-o", &opts, "-l"])
            .arg(self.dir.path().join("log"))
            .args(["-w", "-t", "60", "start"]);
        run(&mut c, "pg_ctl start")?;
        wait_port(self.port, Duration::from_secs(30))
    }

    /// Stops the server at once (`immediate`: as abrupt as a crash, without losing committed data).
    pub fn stop(&self) -> Result<(), String> {
        let mut c = self.command("pg_ctl");
        c.arg("-D")
            .arg(self.data_dir())
            .args(["-m", "immediate", "-w", "stop"]);
        run(&mut c, "pg_ctl stop")
    }

    /// A new empty database; returns its URL.
    pub fn database(&self, name: &str) -> Result<String, String> {
        let mut c = Command::new(psql()?);
        c.args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args([
                "-U",
                "tollgate",
                "-d",
                "postgres",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
            ])
            .arg(format!("CREATE DATABASE \"{name}\""));
        run(&mut c, "create database")?;
        Ok(self.url(name))
    }

    pub fn url(&self, db: &str) -> String {
        format!("postgres://tollgate@127.0.0.1:{}/{db}", self.port)
    }

    /// Runs one SQL statement with psql and returns its unaligned output.
    pub fn sql(&self, db: &str, sql: &str) -> Result<String, String> {
        let out = Command::new(psql()?)
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args([
                "-U",
                "tollgate",
                "-d",
                db,
                "-At",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ])
            .output()
            .map_err(|e| format!("psql: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }
}

fn psql() -> Result<PathBuf, String> {
    let local = pg_bindir()?.join("psql");
    if local.exists() {
        return Ok(local);
    }
    Ok(PathBuf::from("psql"))
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// The `redis-server` binary: `TOLLGATE_REDIS_SERVER`, else on `PATH`, else `/usr/bin`.
pub fn redis_server() -> Result<PathBuf, String> {
    if let Ok(p) = std::env::var("TOLLGATE_REDIS_SERVER") {
        return Ok(PathBuf::from(p));
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join("redis-server");
            if p.exists() {
                return Ok(p);
            }
        }
    }
    let p = Path::new("/usr/bin/redis-server");
    if p.exists() {
        return Ok(p.to_path_buf());
    }
    Err("redis-server not found: apt-get install -y redis-server (./scripts/test.sh does)".into())
}

/// A throwaway Redis server on `127.0.0.1:port`, without persistence.
pub struct Redis {
    dir: tempfile::TempDir,
    pub port: u16,
}

impl Redis {
    pub fn start() -> Result<Redis, String> {
        let dir = tempfile::Builder::new()
            .prefix("tollgate-redis-")
            .tempdir()
            .map_err(|e| format!("tempdir: {e}"))?;
        let r = Redis {
            dir,
            port: free_port()?,
        };
        r.resume()?;
        Ok(r)
    }

    fn pidfile(&self) -> PathBuf {
        self.dir.path().join("redis.pid")
    }

    /// Starts (or restarts) the server on its port.
    pub fn resume(&self) -> Result<(), String> {
        let mut c = Command::new(redis_server()?);
        c.args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "yes"])
            .arg("--pidfile")
            .arg(self.pidfile())
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(self.dir.path().join("log"));
        run(&mut c, "redis-server")?;
        wait_port(self.port, Duration::from_secs(10))
    }

    /// Stops the server (SIGKILL) and waits until its port is closed.
    pub fn stop(&self) -> Result<(), String> {
        let pid =
            std::fs::read_to_string(self.pidfile()).map_err(|e| format!("redis pidfile: {e}"))?;
        run(Command::new("kill").args(["-9", pid.trim()]), "kill redis")?;
        let _ = std::fs::remove_file(self.pidfile());
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
            if Instant::now() > deadline {
                return Err("redis did not stop".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if self.pidfile().exists() {
            let _ = self.stop();
        }
    }
}
