//! Signaling servers as a cluster on loopback: one throwaway PostgreSQL, one NATS, and nodes
//! sharing them — in this process ([`Cluster::start`]) or as `sotto-server` child processes
//! ([`NodeProcess::spawn`], for tests that SIGKILL one).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use sotto_server::{NatsUrl, Server, ServerConfig};

use crate::nats::NatsServer;
use crate::server::SERVER_ID;
use crate::store::{Backend, StoreFixture};

/// A PostgreSQL and a NATS that nodes share, and the in-process nodes started on them.
pub struct Cluster {
    /// The shared database.
    pub store: StoreFixture,
    /// The doorbell.
    pub nats: NatsServer,
    /// The in-process nodes, in start order.
    pub nodes: Vec<Server>,
}

impl Cluster {
    /// PostgreSQL (its files in `dir`) and NATS, with `n` in-process nodes on `127.0.0.1:0`,
    /// node `i` configured by `cfg(i)` (its NATS URL is set here); `None` where PostgreSQL or
    /// NATS cannot run (reason on stderr). Returns once every node's doorbell is subscribed.
    pub async fn start(
        dir: &Path,
        n: usize,
        cfg: impl Fn(usize) -> ServerConfig,
    ) -> Option<Cluster> {
        let store = StoreFixture::new(Backend::Postgres, dir)?;
        let nats = NatsServer::start()?;
        let mut cluster = Cluster {
            store,
            nats,
            nodes: Vec::new(),
        };
        for i in 0..n {
            let mut c = cfg(i);
            c.nats_url = Some(NatsUrl::new(cluster.nats.url()));
            c.node_id = Some(format!("node-{i}"));
            let node = Server::bind(c, cluster.store.open(), "127.0.0.1:0")
                .await
                .unwrap();
            cluster.nodes.push(node);
        }
        Some(cluster)
    }

    /// Node `i`'s URL.
    pub fn url(&self, i: usize) -> String {
        self.nodes[i].url()
    }

    /// The `sotto-server` flags that make a process a node of this cluster (database, NATS,
    /// server id; it still needs `--listen`).
    pub fn node_args(&self) -> Vec<String> {
        let mut args = self.store.server_args();
        args.extend([
            "--nats-url".into(),
            self.nats.url(),
            "--server-id".into(),
            SERVER_ID.into(),
        ]);
        args
    }
}

/// A `sotto-server` process, killed (SIGKILL) and reaped when dropped.
pub struct NodeProcess {
    child: Child,
    /// Its `ws://` URL.
    pub url: String,
}

impl NodeProcess {
    /// Starts the `sotto-server` binary at `bin` with `args` and `--listen 127.0.0.1:0`, and
    /// waits for its `listening on ADDR` line.
    pub fn spawn(bin: &str, args: &[String]) -> NodeProcess {
        let mut child = Command::new(bin)
            .args(args)
            .args(["--listen", "127.0.0.1:0"])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        let addr = loop {
            line.clear();
            assert!(
                out.read_line(&mut line).unwrap() > 0,
                "sotto-server exited before listening"
            );
            if let Some(a) = line.trim().strip_prefix("listening on") {
                break a.trim().to_owned();
            }
        };
        // keep draining so the child never blocks on a full pipe
        std::thread::spawn(move || {
            let mut sink = String::new();
            while out.read_line(&mut sink).unwrap_or(0) > 0 {
                sink.clear();
            }
        });
        NodeProcess {
            child,
            url: format!("ws://{addr}"),
        }
    }

    /// SIGKILL: the process dies at once, without closing its sockets or its transactions.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
