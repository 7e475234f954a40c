//! A real coturn (Debian's `turnserver`) with the REST-credential scheme the signaling server
//! issues (`use-auth-secret`), UDP only or with TCP and TLS listeners ([`StreamListeners`]), on
//! loopback or inside a network namespace; stopped when the guard drops.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long coturn may take to open its listener.
pub const COTURN_START_LIMIT: Duration = Duration::from_secs(15);

/// Where and how coturn runs.
pub struct CoturnOptions<'a> {
    /// Directory for its database, pid file and log (`turn.log`).
    pub dir: &'a Path,
    /// Network namespace to run in (`ip netns exec`), or `None` for this one.
    pub netns: Option<&'a str>,
    /// Listening and relay address.
    pub ip: IpAddr,
    /// Listening port (STUN and TURN).
    pub port: u16,
    /// The `static-auth-secret` shared with the signaling server.
    pub secret: &'a str,
    /// TCP (on `port`) and TLS listeners; `None`: UDP only.
    pub streams: Option<StreamListeners<'a>>,
}

/// coturn's stream listeners: TCP on the options' port, TLS on its own.
pub struct StreamListeners<'a> {
    /// Whether UDP is served too (`false`: `--no-udp`, a server only TCP reaches).
    pub udp: bool,
    /// TLS: PEM certificate chain, PEM key and port.
    pub tls: Option<(&'a Path, &'a Path, u16)>,
}

/// A running coturn, killed (SIGINT, then SIGKILL) when dropped.
pub struct Coturn {
    child: Child,
    log: PathBuf,
}

impl Coturn {
    /// Starts coturn and waits until its UDP listener is open (`ss` sees the socket).
    ///
    /// # Panics
    /// `turnserver` is missing or does not come up within [`COTURN_START_LIMIT`] (the log's
    /// tail is in the message).
    pub fn start(o: &CoturnOptions<'_>) -> Coturn {
        let log = o.dir.join("turn.log");
        // relay ports from a range that depends on the port, so parallel loopback instances
        // do not compete for the same ones
        let min = 40000 + (o.port % 100) * 200;
        let mut cmd = match o.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "turnserver"]);
                c
            }
            None => Command::new("turnserver"),
        };
        cmd.arg("-n")
            .arg(format!("--listening-ip={}", o.ip))
            .arg(format!("--relay-ip={}", o.ip))
            .arg(format!("--listening-port={}", o.port))
            .arg(format!("--min-port={min}"))
            .arg(format!("--max-port={}", min + 199))
            .args([
                "--use-auth-secret",
                "--realm=sotto",
                "--no-dtls",
                "--no-tcp-relay",
                "--no-cli",
                "--no-stdout-log",
                "--simple-log",
                "--verbose",
            ])
            .arg(format!("--log-file={}", log.display()))
            .arg(format!("--static-auth-secret={}", o.secret))
            .arg(format!("--db={}", o.dir.join("turn.db").display()))
            .arg(format!("--pidfile={}", o.dir.join("turn.pid").display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        match &o.streams {
            // UDP only by default: the TCP listener on the same port number failed to bind
            // whenever a TIME_WAIT socket (plentiful on a busy machine) held it, and coturn then
            // exits; tests that want TCP pick a port free for TCP
            None => {
                cmd.args(["--no-tcp", "--no-tls"]);
            }
            Some(st) => {
                if !st.udp {
                    cmd.arg("--no-udp");
                }
                match st.tls {
                    Some((cert, key, port)) => {
                        cmd.arg(format!("--cert={}", cert.display()))
                            .arg(format!("--pkey={}", key.display()))
                            .arg(format!("--tls-listening-port={port}"));
                    }
                    None => {
                        cmd.arg("--no-tls");
                    }
                }
            }
        }
        if o.ip.is_loopback() {
            cmd.arg("--allow-loopback-peers");
        }
        let child = cmd
            .spawn()
            .expect("coturn's turnserver is required (apt-get install coturn)");
        let mut turn = Coturn { child, log };
        let t0 = Instant::now();
        loop {
            let up = match &o.streams {
                None => listening(o.netns, "-Huln", o.ip, o.port),
                Some(st) => {
                    listening(o.netns, "-Htln", o.ip, o.port)
                        && st
                            .tls
                            .is_none_or(|(_, _, p)| listening(o.netns, "-Htln", o.ip, p))
                }
            };
            if up {
                return turn;
            }
            let exited = turn.child.try_wait().ok().flatten();
            if exited.is_some() || t0.elapsed() > COTURN_START_LIMIT {
                let log = turn.log_text();
                let tail: Vec<&str> = log.lines().rev().take(8).collect();
                panic!(
                    "turnserver did not come up on {}:{} (exit {exited:?}); log tail (newest first): {tail:#?}",
                    o.ip, o.port
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Everything coturn logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Whether `ss FLAGS` (`-Huln` UDP, `-Htln` TCP) sees a socket bound to `ip:port` (in namespace
/// `netns`).
pub fn listening(netns: Option<&str>, flags: &str, ip: IpAddr, port: u16) -> bool {
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, "ss"]);
            c
        }
        None => Command::new("ss"),
    };
    cmd.args([flags, "src", &format!("{ip}:{port}")])
        .output()
        .map(|o| o.status.success() && !o.stdout.is_empty())
        .unwrap_or(false)
}

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-INT")
            .arg(self.child.id().to_string())
            .status();
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(2) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
