//! The signaling server: accept, authenticate, route.
//!
//! One task per connection: it reads and answers requests and writes its connection's bounded
//! outbound queue to the socket, several frames per system call, from one poll (a blocked write
//! never stops reading, and the other way round). Every store call runs on one store thread
//! ([`crate::worker`]), which group-commits envelope writes and, after each commit, hands stored
//! envelopes straight to online recipients' queues; a connection that fell behind is woken instead
//! and reads its backlog from the [`Store`]. Senders never wait on a recipient: handing over and
//! waking (flags plus one waker, which coalesce) are both non-blocking, so a slow reader only
//! slows itself.
//!
//! Files, each one idea (none of them imports this file, so the modules form no cycle):
//! * `config.rs`: [`ServerConfig`] and [`Limits`];
//! * `shared.rs`: what every connection task shares (store thread, online devices, counters);
//! * `listener.rs`: accepting, the per-address connection limit, TLS and WebSocket handshakes
//!   and auth deadline;
//! * `authenticate.rs`: the unauthenticated state (challenge, `register`/`login`);
//! * `session.rs`: the authenticated state, driven by the connection's one task;
//! * `requests.rs`: what each authenticated request does and answers;
//! * `wire.rs`: server frames as WebSocket messages;
//! * `metrics_http.rs`: `GET /metrics`.
//!
//! This file is the running [`Server`]: it starts and stops those tasks.

mod authenticate;
mod config;
mod listener;
mod metrics_http;
mod requests;
mod session;
mod shared;
mod wire;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::error::{Error, Result};
use crate::store::Store;
use crate::worker::Ended;

pub use config::{Limits, NatsUrl, RelayEntry, ServerConfig};
use shared::Shared;

/// A running server. Dropping it does not stop it; call [`Server::shutdown`] or [`Server::abort`].
pub struct Server {
    local_addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown_tx: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    aux: Vec<tokio::task::JoinHandle<()>>,
}

impl Server {
    /// Starts serving on `listener` (spawned on the current tokio runtime): TLS if `cfg.tls`
    /// names a certificate and key, else plain (with a warning if the address is not loopback).
    ///
    /// # Errors
    /// [`Error::Tls`] for certificate files that cannot be read or do not match; the store
    /// thread failing to start.
    pub fn spawn(cfg: ServerConfig, store: Arc<dyn Store>, listener: TcpListener) -> Result<Self> {
        let local_addr = listener.local_addr()?;
        let (shutdown_tx, shutdown) = watch::channel(false);
        let shared = Arc::new(Shared::start(cfg, store, shutdown)?);
        sotto_tls::warn_if_plaintext_exposed(
            "the signaling server",
            local_addr,
            shared.tls.is_some(),
        );
        let task = tokio::spawn(listener::accept_loop(shared.clone(), listener));
        let sweeper = tokio::spawn(expiry_sweeper(shared.clone()));
        tracing::info!(%local_addr, tls = shared.tls.is_some(), "signaling server listening");
        Ok(Self {
            local_addr,
            shared,
            shutdown_tx,
            task,
            aux: vec![sweeper],
        })
    }

    /// Binds `addr` and starts serving; with a doorbell, waits (at most
    /// [`crate::consts::NATS_CONNECT_TIMEOUT`]) until it is subscribed.
    pub async fn bind(cfg: ServerConfig, store: Arc<dyn Store>, addr: &str) -> Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let server = Self::spawn(cfg, store, listener)?;
        server.doorbell_ready().await;
        Ok(server)
    }

    /// Waits at most [`crate::consts::NATS_CONNECT_TIMEOUT`] for the doorbell to be subscribed;
    /// true when it is (or there is none). Until then rings from other servers are missed:
    /// devices connected here read those envelopes on their next ring or reconnection.
    pub async fn doorbell_ready(&self) -> bool {
        let Some(mut ready) = self.shared.doorbell_ready.clone() else {
            return true;
        };
        let waited =
            tokio::time::timeout(crate::consts::NATS_CONNECT_TIMEOUT, ready.wait_for(|r| *r)).await;
        matches!(waited, Ok(Ok(_)))
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The URL of this server: `wss://ADDR` with TLS, else `ws://ADDR`. (With TLS, clients
    /// must use a name the certificate holds: an IP address here, or the server's DNS name.)
    pub fn url(&self) -> String {
        let scheme = if self.is_tls() { "wss" } else { "ws" };
        format!("{scheme}://{}", self.local_addr)
    }

    /// Whether the listener speaks TLS.
    pub fn is_tls(&self) -> bool {
        self.shared.tls.is_some()
    }

    /// Reads the certificate chain and key again (e.g. renewed) and serves them to every
    /// connection accepted from now on; connections already open are not dropped.
    ///
    /// # Errors
    /// [`Error::Tls`]: a file that cannot be read, holds no certificate or key, or a key that
    /// does not match (the certificate served before stays in use), or
    /// [`sotto_tls::Error::NotConfigured`] for a server without TLS.
    pub fn reload_tls(&self) -> Result<()> {
        let tls = self
            .shared
            .tls
            .as_ref()
            .ok_or(Error::Tls(sotto_tls::Error::NotConfigured))?;
        tls.reload()?;
        tracing::info!("TLS certificate reloaded");
        Ok(())
    }

    /// Prometheus text metrics.
    pub fn metrics_text(&self) -> String {
        self.shared.metrics.render()
    }

    /// Serves `GET /metrics` (Prometheus text) on `listener` until shutdown.
    pub fn serve_metrics(&mut self, listener: TcpListener) {
        self.aux.push(tokio::spawn(metrics_http::serve(
            self.shared.metrics.clone(),
            listener,
        )));
    }

    /// Graceful shutdown: stop accepting, tell every connection `shutting_down` and close it,
    /// wait up to [`crate::consts::SHUTDOWN_GRACE`] for in-flight requests, then flush the store.
    /// Every envelope acknowledged as stored is already committed.
    pub async fn shutdown(self) {
        let _ = self.shutdown_tx.send(true);
        for c in self.shared.online().values() {
            c.end(Ended::ShuttingDown);
        }
        let _ = self.task.await;
        for t in self.aux {
            t.abort();
        }
        if let Some(t) = self
            .shared
            .doorbell_task
            .lock()
            .ok()
            .and_then(|mut t| t.take())
        {
            t.abort();
        }
        let _ = self.shared.store(|s| s.flush()).await;
        tracing::info!("signaling server stopped");
    }

    /// Hard stop without draining (for tests that simulate a crash of the serving task).
    pub fn abort(self) {
        self.task.abort();
        for t in self.aux {
            t.abort();
        }
        if let Some(t) = self
            .shared
            .doorbell_task
            .lock()
            .ok()
            .and_then(|mut t| t.take())
        {
            t.abort();
        }
    }

    /// Resolves when the server stops (after [`Server::shutdown`] from elsewhere, or on error).
    pub async fn wait_for_signal_then_shutdown(
        self,
        signal: impl std::future::Future<Output = ()>,
    ) {
        signal.await;
        self.shutdown().await;
    }
}

/// Runs a server on `listener` until `signal` resolves, then shuts down gracefully.
pub async fn serve(
    cfg: ServerConfig,
    store: Arc<dyn Store>,
    listener: TcpListener,
    signal: impl std::future::Future<Output = ()>,
) -> Result<()> {
    let server = Server::spawn(cfg, store, listener)?;
    server.wait_for_signal_then_shutdown(signal).await;
    Ok(())
}

/// Purges expired envelopes every [`Limits::expiry_sweep_interval`].
async fn expiry_sweeper(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(shared.cfg.limits.expiry_sweep_interval);
    loop {
        tick.tick().await;
        let now = shared.cfg.clock.now_ms();
        if let Ok(n) = shared.store(move |s| s.purge_expired(now)).await {
            shared
                .metrics
                .envelopes_expired_total
                .fetch_add(n, Ordering::Relaxed);
        }
    }
}
