//! A throwaway `nats-server` (Debian's `nats-server`) on a free loopback port, killed when the
//! guard drops. Without the binary, [`NatsServer::start`] says so on stderr and returns `None`
//! (the test returns early), except under CI (`CI` set), which installs it: there it panics.

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long nats-server may take to open its port.
pub const NATS_START_LIMIT: Duration = Duration::from_secs(15);

/// A running nats-server.
pub struct NatsServer {
    bin: &'static str,
    child: Child,
    port: u16,
}

fn binary() -> Option<&'static str> {
    ["/usr/sbin/nats-server", "/usr/bin/nats-server"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
}

impl NatsServer {
    /// Starts nats-server on 127.0.0.1 and waits until it accepts connections.
    pub fn start() -> Option<NatsServer> {
        let Some(bin) = binary() else {
            let why = "nats-server is not installed (apt-get install nats-server)";
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must run the NATS tests: {why}"
            );
            eprintln!("SKIPPED (NATS doorbell): {why}");
            return None;
        };
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Some(NatsServer {
            bin,
            child: spawn(bin, port),
            port,
        })
    }

    /// Kills it (SIGKILL), then starts it again on the same port (a NATS outage and recovery).
    pub fn kill_then_restart(&mut self, down_for: Duration) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::thread::sleep(down_for);
        self.child = spawn(self.bin, self.port);
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

/// Starts nats-server on 127.0.0.1:`port` and waits until it accepts connections.
fn spawn(bin: &str, port: u16) -> Child {
    let mut child = Command::new(bin)
        .args(["-a", "127.0.0.1", "-p", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        let exited = child.try_wait().ok().flatten();
        assert!(
            exited.is_none() && t0.elapsed() < NATS_START_LIMIT,
            "nats-server did not come up on 127.0.0.1:{port} (exit {exited:?})"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
