//! A throwaway PostgreSQL cluster on loopback: `initdb` into a fresh directory, `pg_ctl start`
//! on a free port, stopped (immediately) and deleted when the guard drops. [`PgCluster::stop`]
//! and [`PgCluster::restart`] take it down and bring it back on the same port, for outage tests.
//!
//! Needs Debian's `postgresql` (`/usr/lib/postgresql/<version>/bin`) and root (the cluster runs
//! as the `postgres` user through `runuser`). Without either, [`PgCluster::start`] says why on
//! stderr and returns `None`, and the test returns early — except under CI (`CI` set), which
//! installs both and runs as root: there a missing PostgreSQL fails the test instead of
//! skipping it.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// How long `pg_ctl` waits for the server to start or stop, seconds.
pub const PG_CTL_WAIT_SECS: &str = "60";

/// A running PostgreSQL cluster (user `postgres`, trust authentication, loopback only).
pub struct PgCluster {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
}

/// The newest installed `/usr/lib/postgresql/<version>/bin`.
fn bin_dir() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| {
            let e = e.ok()?;
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, b)| b)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn as_postgres(bin: &Path, tool: &str, args: &[&str]) -> Output {
    Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .arg(bin.join(tool))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("runuser {tool}: {e}"))
}

fn check(what: &str, o: &Output) {
    assert!(
        o.status.success(),
        "{what} failed ({}): {}{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

impl PgCluster {
    /// Creates and starts a cluster, or says why it cannot on stderr and returns `None` (see
    /// the module docs; under CI it panics instead).
    pub fn start() -> Option<PgCluster> {
        let why = match (bin_dir(), is_root()) {
            (Some(bin), true) => return Some(Self::start_in(bin)),
            (None, _) => "PostgreSQL is not installed (/usr/lib/postgresql/*/bin/initdb; apt-get install postgresql)",
            (Some(_), false) => "the PostgreSQL fixture needs root (it runs the cluster as the postgres user)",
        };
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run the PostgreSQL tests: {why}"
        );
        eprintln!("SKIPPED (PostgreSQL backend): {why}");
        None
    }

    fn start_in(bin: PathBuf) -> PgCluster {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "sotto-pg-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let o = Command::new("chown")
            .arg("postgres:postgres")
            .arg(&dir)
            .output()
            .unwrap();
        check("chown", &o);
        let data = dir.join("data");
        let o = as_postgres(
            &bin,
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        check("initdb", &o);
        let c = PgCluster {
            bin,
            dir,
            port: free_port(),
        };
        c.restart();
        c
    }

    /// The connection string for database `postgres` as user `postgres`.
    pub fn url(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres",
            self.port
        )
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Starts the (stopped) cluster again on the same port and directory.
    pub fn restart(&self) {
        let data = self.dir.join("data");
        let log = self.dir.join("postgres.log");
        // fsync off: these clusters hold test data only; a server process killed with SIGKILL
        // loses nothing the database committed either way (the OS keeps the files)
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=60",
            self.port,
            self.dir.display()
        );
        let o = as_postgres(
            &self.bin,
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap(),
                "-l",
                log.to_str().unwrap(),
                "-o",
                &opts,
                "-w",
                "-t",
                PG_CTL_WAIT_SECS,
                "start",
            ],
        );
        if !o.status.success() {
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            check(&format!("pg_ctl start (log: {log})"), &o);
        }
    }

    /// Stops the cluster (`fast`: open connections are ended), keeping its data.
    pub fn stop(&self) {
        let o = self.pg_ctl_stop("fast");
        check("pg_ctl stop", &o);
    }

    fn pg_ctl_stop(&self, mode: &str) -> Output {
        let data = self.dir.join("data");
        as_postgres(
            &self.bin,
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap(),
                "-m",
                mode,
                "-w",
                "-t",
                PG_CTL_WAIT_SECS,
                "stop",
            ],
        )
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = self.pg_ctl_stop("immediate");
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
