//! Accepting connections: the accept loop, the per-address connection limit, the TLS and
//! WebSocket handshakes and the authentication deadline, then the hand-over to the connection's
//! [`Session`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::SinkExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::consts;
use crate::error::ErrorCode;
use crate::limits::ConnectionSlot;
use crate::metrics::Metrics;
use crate::protocol::ServerMessage;
use crate::server::authenticate::authenticate;
use crate::server::config::Limits;
use crate::server::session::Session;
use crate::server::shared::Shared;
use crate::server::wire::{close_frame, frame, Ws};

/// Socket buffers, and the hard frame size above which tungstenite refuses a frame before it is
/// decoded.
fn ws_config(limits: &Limits) -> WebSocketConfig {
    let hard = limits
        .max_frame_bytes
        .saturating_mul(consts::WS_HARD_MAX_FACTOR);
    WebSocketConfig::default()
        .read_buffer_size(consts::WS_READ_BUFFER_BYTES)
        .write_buffer_size(consts::WS_WRITE_BATCH_BYTES)
        .max_message_size(Some(hard))
        .max_frame_size(Some(hard))
}

/// Accepts connections until shutdown, then waits up to [`consts::SHUTDOWN_GRACE`] for them.
pub(crate) async fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    let mut shutdown = shared.shutdown.clone();
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    // counts against the address until logged in; over the limit, closed at
                    // once: no task, TLS or WebSocket work is spent on it
                    let Some(slot) = shared.limiter.acquire(peer.ip()) else {
                        Metrics::inc(&shared.metrics.connections_refused_total);
                        drop(tcp);
                        continue;
                    };
                    let _ = tcp.set_nodelay(true);
                    conns.spawn(handle_connection(shared.clone(), tcp, peer, slot));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    drop(listener);
    let drain = async { while conns.join_next().await.is_some() {} };
    if tokio::time::timeout(consts::SHUTDOWN_GRACE, drain)
        .await
        .is_err()
    {
        conns.abort_all();
    }
}

async fn send_error_and_close(
    ws: &mut Ws,
    metrics: &Metrics,
    id: Option<u64>,
    code: ErrorCode,
    why: &str,
) {
    metrics.error(code);
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let _ = ws.send(frame(&ServerMessage::error(id, code, why))).await;
        let _ = ws.send(close_frame(Some(code))).await;
    })
    .await;
}

struct ConnGuard<'a>(&'a Metrics);
impl Drop for ConnGuard<'_> {
    fn drop(&mut self) {
        Metrics::dec(&self.0.connections_active);
    }
}

/// A connection that got a pre-login `slot` at accept: it gives the slot back once logged in
/// (then it counts against the logged-in limit only) or closed.
async fn handle_connection(
    shared: Arc<Shared>,
    tcp: TcpStream,
    peer: SocketAddr,
    slot: ConnectionSlot,
) {
    // The handshake and authentication run boxed, so the socket lives in one place at a time and
    // the resting task stays small.
    let Some(guard) = Box::pin(open(&shared, tcp, peer.ip())).await else {
        return;
    };
    drop(slot);
    if let (_, Some((session, _authed))) = guard {
        session.run(&shared).await;
    }
}

/// TLS (if the server has a certificate) and WebSocket handshakes, then authentication. `None`
/// if a handshake failed or took longer than the authentication timeout; otherwise the counted
/// connection and, if it authenticated, its session (if not, it has been answered and closed).
async fn open<'a>(
    shared: &'a Shared,
    tcp: TcpStream,
    ip: std::net::IpAddr,
) -> Option<(ConnGuard<'a>, Option<(Box<Session>, ConnectionSlot)>)> {
    let limits = &shared.cfg.limits;
    // one deadline from accept to login: TLS, WebSocket and authentication all fit in it
    let deadline = Instant::now() + limits.auth_timeout;
    let handshakes = async {
        let stream = sotto_tls::accept(shared.tls.as_ref(), tcp).await.ok()?;
        tokio_tungstenite::accept_async_with_config(stream, Some(ws_config(limits)))
            .await
            .ok()
    };
    let Ok(Some(mut ws)) = tokio::time::timeout_at(deadline, handshakes).await else {
        return None;
    };
    Metrics::inc(&shared.metrics.connections_total);
    Metrics::inc(&shared.metrics.connections_active);
    let guard = ConnGuard(&shared.metrics);
    let authed = tokio::time::timeout_at(deadline, authenticate(shared, &mut ws, ip))
        .await
        .unwrap_or(Err((
            None,
            ErrorCode::AuthTimeout,
            "authentication timed out",
        )));
    match authed {
        Ok((addr, epoch)) => {
            let Some(authed) = shared.authed_limiter.acquire(ip) else {
                send_error_and_close(
                    &mut ws,
                    &shared.metrics,
                    None,
                    ErrorCode::TooManyConnections,
                    "too many logged-in connections from this address",
                )
                .await;
                return Some((guard, None));
            };
            Some((
                guard,
                Some((Session::start(shared, ws, addr, epoch), authed)),
            ))
        }
        Err((id, code, why)) => {
            if code == ErrorCode::AuthFailed {
                Metrics::inc(&shared.metrics.auth_failures_total);
            }
            send_error_and_close(&mut ws, &shared.metrics, id, code, why).await;
            Some((guard, None))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every idle connection holds one task future; the large sub-futures (handshake,
    /// authentication, request handling, closing) are boxed so they do not inflate its resting
    /// size.
    #[tokio::test]
    async fn connection_task_stays_small() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut cfg = crate::server::config::ServerConfig::new("x");
        cfg.limits.max_connections_per_addr = 1;
        let shared = Arc::new(
            Shared::start(
                cfg,
                Arc::new(crate::store::MemoryStore::new()),
                tokio::sync::watch::channel(false).1,
            )
            .unwrap(),
        );
        let c = TcpStream::connect(addr).await.unwrap();
        let slot = shared.limiter.acquire(addr.ip()).unwrap();
        let f = handle_connection(shared.clone(), c, addr, slot);
        let task = std::mem::size_of_val(&f);
        let session = std::mem::size_of::<Session>();
        eprintln!("handle_connection future: {task} B, session: {session} B");
        assert!(task <= 512, "connection future grew to {task} B");
        assert!(session <= 512, "session grew to {session} B");
    }
}
