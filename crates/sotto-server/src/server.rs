//! The signaling server: accept, authenticate, route.
//!
//! One task per connection: it reads and answers requests and writes its connection's bounded
//! outbound queue to the socket, several frames per system call, from one poll (a blocked write
//! never stops reading, and the other way round). Every store call runs on one store thread
//! (`worker.rs`), which group-commits envelope writes and, after each commit, hands stored
//! envelopes straight to online recipients' queues; a connection that fell behind is woken instead
//! and reads its backlog from the [`Store`]. Senders never wait on a recipient: handing over and
//! waking (flags plus one waker, which coalesce) are both non-blocking, so a slow reader only
//! slows itself.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::{Sink, SinkExt, Stream, StreamExt};
use rand::RngCore;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};

use crate::worker::{Conn, Ended, OnlineMap, Out, StoreWorker};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use crate::auth;
use crate::clock::{Clock, SystemClock};
use crate::consts;
use crate::error::{ErrorCode, Result};
use crate::limits::{ConnectionLimiter, TokenBucket};
use crate::metrics::Metrics;
use crate::protocol::{
    decode_client_frame, encode_server_frame, valid_username, Bundle, ClientMessage, Envelope,
    ServerMessage, B64,
};
use crate::store::{
    BundleOutcome, DeviceAddr, EnqueueOutcome, NewEnvelope, RegisterOutcome, Store, StoreResult,
    StoredEnvelope, WriteOp, WriteOutcome,
};
use crate::turn::{self, TurnConfig};

/// Every enforced limit; [`Default`] takes the values in [`crate::consts`].
#[derive(Debug, Clone)]
pub struct Limits {
    /// [`consts::MAX_FRAME_BYTES`].
    pub max_frame_bytes: usize,
    /// [`consts::MAX_QUEUED_ENVELOPES_PER_DEVICE`].
    pub max_queued_per_device: usize,
    /// [`consts::ENVELOPES_PER_SECOND`].
    pub envelopes_per_second: u32,
    /// [`consts::ENVELOPE_BURST`].
    pub envelope_burst: u32,
    /// [`consts::MAX_CONNECTIONS_PER_ADDR`].
    pub max_connections_per_addr: usize,
    /// [`consts::AUTH_TIMEOUT`].
    pub auth_timeout: Duration,
    /// [`consts::MAX_ENVELOPE_TTL_SECS`].
    pub max_envelope_ttl_secs: u64,
    /// [`consts::OUTBOUND_QUEUE_FRAMES`].
    pub outbound_queue_frames: usize,
    /// [`consts::MAX_ONE_TIME_PREKEYS_PER_UPLOAD`].
    pub max_one_time_prekeys_per_upload: usize,
    /// [`consts::MAX_ONE_TIME_PREKEYS_STORED`].
    pub max_one_time_prekeys_stored: usize,
    /// [`consts::LOW_PREKEY_THRESHOLD`].
    pub low_prekey_threshold: u32,
    /// [`consts::MAX_MALFORMED_FRAMES`].
    pub max_malformed_frames: u32,
    /// [`consts::EXPIRY_SWEEP_INTERVAL`].
    pub expiry_sweep_interval: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame_bytes: consts::MAX_FRAME_BYTES,
            max_queued_per_device: consts::MAX_QUEUED_ENVELOPES_PER_DEVICE,
            envelopes_per_second: consts::ENVELOPES_PER_SECOND,
            envelope_burst: consts::ENVELOPE_BURST,
            max_connections_per_addr: consts::MAX_CONNECTIONS_PER_ADDR,
            auth_timeout: consts::AUTH_TIMEOUT,
            max_envelope_ttl_secs: consts::MAX_ENVELOPE_TTL_SECS,
            outbound_queue_frames: consts::OUTBOUND_QUEUE_FRAMES,
            max_one_time_prekeys_per_upload: consts::MAX_ONE_TIME_PREKEYS_PER_UPLOAD,
            max_one_time_prekeys_stored: consts::MAX_ONE_TIME_PREKEYS_STORED,
            low_prekey_threshold: consts::LOW_PREKEY_THRESHOLD,
            max_malformed_frames: consts::MAX_MALFORMED_FRAMES,
            expiry_sweep_interval: consts::EXPIRY_SWEEP_INTERVAL,
        }
    }
}

/// Server configuration.
#[derive(Clone)]
pub struct ServerConfig {
    /// This server's identity, bound into every authentication signature (e.g. its public URL).
    pub server_id: String,
    /// Limits.
    pub limits: Limits,
    /// TURN credential issuing, if configured.
    pub turn: Option<TurnConfig>,
    /// Wall clock for TTLs and TURN expiry.
    pub clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfig")
            .field("server_id", &self.server_id)
            .field("limits", &self.limits)
            .field("turn", &self.turn)
            .finish_non_exhaustive()
    }
}

impl ServerConfig {
    /// Defaults with the system clock and no TURN.
    pub fn new(server_id: impl Into<String>) -> Self {
        Self {
            server_id: server_id.into(),
            limits: Limits::default(),
            turn: None,
            clock: Arc::new(SystemClock),
        }
    }
}

struct Shared {
    cfg: ServerConfig,
    worker: StoreWorker,
    online: OnlineMap,
    limiter: ConnectionLimiter,
    metrics: Arc<Metrics>,
    next_conn: AtomicU64,
    shutdown: watch::Receiver<bool>,
}

impl Shared {
    fn online(&self) -> std::sync::MutexGuard<'_, HashMap<DeviceAddr, Arc<Conn>>> {
        self.online.lock()
    }

    async fn store<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Store) -> StoreResult<T> + Send + 'static,
    ) -> std::result::Result<T, ErrorCode> {
        store_answer(self.worker.call(f).await)
    }

    fn push(&self, addr: &DeviceAddr, msg: &ServerMessage) {
        if let (Some(c), Ok(text)) = (self.online().get(addr), encode_server_frame(msg)) {
            // Best effort: a push to a connection that is not reading is dropped.
            let _ = c.try_push(Out::Text(text));
        }
    }
}

fn store_answer<T>(
    r: std::result::Result<StoreResult<T>, crate::worker::Gone>,
) -> std::result::Result<T, ErrorCode> {
    match r {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "store failure");
            Err(ErrorCode::Internal)
        }
        Err(_) => Err(ErrorCode::Internal),
    }
}

/// A running server. Dropping it does not stop it; call [`Server::shutdown`] or [`Server::abort`].
pub struct Server {
    local_addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown_tx: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    aux: Vec<tokio::task::JoinHandle<()>>,
}

impl Server {
    /// Starts serving on `listener` (spawned on the current tokio runtime).
    pub fn spawn(cfg: ServerConfig, store: Arc<dyn Store>, listener: TcpListener) -> Result<Self> {
        let local_addr = listener.local_addr()?;
        let (shutdown_tx, shutdown) = watch::channel(false);
        let online = OnlineMap::default();
        let metrics = Arc::new(Metrics::default());
        let worker = StoreWorker::start(store, online.clone(), metrics.clone())?;
        let shared = Arc::new(Shared {
            limiter: ConnectionLimiter::new(cfg.limits.max_connections_per_addr),
            cfg,
            worker,
            online,
            metrics,
            next_conn: AtomicU64::new(1),
            shutdown,
        });
        let task = tokio::spawn(accept_loop(shared.clone(), listener));
        let sweeper = tokio::spawn(expiry_sweeper(shared.clone()));
        tracing::info!(%local_addr, "signaling server listening");
        Ok(Self {
            local_addr,
            shared,
            shutdown_tx,
            task,
            aux: vec![sweeper],
        })
    }

    /// Binds `addr` and starts serving.
    pub async fn bind(cfg: ServerConfig, store: Arc<dyn Store>, addr: &str) -> Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        Self::spawn(cfg, store, listener)
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The `ws://` URL of this server.
    pub fn url(&self) -> String {
        format!("ws://{}", self.local_addr)
    }

    /// Prometheus text metrics.
    pub fn metrics_text(&self) -> String {
        self.shared.metrics.render()
    }

    /// Serves `GET /metrics` (Prometheus text) on `listener` until shutdown.
    pub fn serve_metrics(&mut self, listener: TcpListener) {
        self.aux
            .push(tokio::spawn(metrics_loop(self.shared.clone(), listener)));
    }

    /// Graceful shutdown: stop accepting, tell every connection `shutting_down` and close it,
    /// wait up to [`consts::SHUTDOWN_GRACE`] for in-flight requests, then flush the store.
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
        let _ = self.shared.store(|s| s.flush()).await;
        tracing::info!("signaling server stopped");
    }

    /// Hard stop without draining (for tests that simulate a crash of the serving task).
    pub fn abort(self) {
        self.task.abort();
        for t in self.aux {
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

async fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    let mut shutdown = shared.shutdown.clone();
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    let _ = tcp.set_nodelay(true);
                    conns.spawn(handle_connection(shared.clone(), tcp, peer));
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

async fn metrics_loop(shared: Arc<Shared>, listener: TcpListener) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    loop {
        let Ok((mut tcp, _)) = listener.accept().await else {
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            let mut n = 0;
            let read = async {
                while n < buf.len() {
                    match tcp.read(&mut buf[n..]).await {
                        Ok(0) | Err(_) => break,
                        Ok(k) => n += k,
                    }
                    if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
            };
            if tokio::time::timeout(Duration::from_secs(5), read)
                .await
                .is_err()
            {
                return;
            }
            let resp = if buf[..n].starts_with(b"GET /metrics ") {
                let body = shared.metrics.render();
                format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                )
            } else {
                "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                    .to_owned()
            };
            let _ = tcp.write_all(resp.as_bytes()).await;
            let _ = tcp.shutdown().await;
        });
    }
}

type Ws = WebSocketStream<TcpStream>;

fn frame_text(msg: &ServerMessage) -> String {
    encode_server_frame(msg)
        .unwrap_or_else(|_| r#"{"v":1,"type":"error","code":"internal","message":""}"#.to_owned())
}

fn frame(msg: &ServerMessage) -> Message {
    Message::text(frame_text(msg))
}

fn close_frame(code: Option<ErrorCode>) -> Message {
    let Some(code) = code else {
        return Message::Close(None);
    };
    let cc = match code {
        ErrorCode::FrameTooLarge => CloseCode::Size,
        ErrorCode::ShuttingDown => CloseCode::Away,
        ErrorCode::TooManyConnections | ErrorCode::RateLimited | ErrorCode::SlowConsumer => {
            CloseCode::Again
        }
        ErrorCode::Internal => CloseCode::Error,
        _ => CloseCode::Policy,
    };
    Message::Close(Some(CloseFrame {
        code: cc,
        reason: code.as_str().into(),
    }))
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

async fn handle_connection(shared: Arc<Shared>, tcp: TcpStream, peer: SocketAddr) {
    let slot = shared.limiter.acquire(peer.ip());
    // The handshake and authentication run boxed, so the socket lives in one place at a time and
    // the resting task stays small.
    let Some(guard) = Box::pin(open(&shared, tcp, slot.is_some())).await else {
        return;
    };
    if let (_, Some(session)) = guard {
        session.run(&shared).await;
    }
    drop(slot);
}

/// WebSocket handshake and authentication. `None` if the handshake failed; otherwise the counted
/// connection and, if it authenticated, its session (if not, it has been answered and closed).
async fn open<'a>(
    shared: &'a Shared,
    tcp: TcpStream,
    within_limit: bool,
) -> Option<(ConnGuard<'a>, Option<Box<Session>>)> {
    let limits = &shared.cfg.limits;
    let hs = tokio::time::timeout(
        limits.auth_timeout,
        tokio_tungstenite::accept_async_with_config(tcp, Some(ws_config(limits))),
    )
    .await;
    let Ok(Ok(mut ws)) = hs else {
        return None;
    };
    Metrics::inc(&shared.metrics.connections_total);
    Metrics::inc(&shared.metrics.connections_active);
    let guard = ConnGuard(&shared.metrics);
    if !within_limit {
        send_error_and_close(
            &mut ws,
            &shared.metrics,
            None,
            ErrorCode::TooManyConnections,
            "too many connections from this address",
        )
        .await;
        return Some((guard, None));
    }
    let deadline = Instant::now() + limits.auth_timeout;
    let authed = tokio::time::timeout_at(deadline, authenticate(shared, &mut ws))
        .await
        .unwrap_or(Err((
            None,
            ErrorCode::AuthTimeout,
            "authentication timed out",
        )));
    match authed {
        Ok(addr) => Some((guard, Some(Session::start(shared, ws, addr)))),
        Err((id, code, why)) => {
            if code == ErrorCode::AuthFailed {
                Metrics::inc(&shared.metrics.auth_failures_total);
            }
            send_error_and_close(&mut ws, &shared.metrics, id, code, why).await;
            Some((guard, None))
        }
    }
}

type AuthErr = (Option<u64>, ErrorCode, &'static str);

/// The unauthenticated state: challenge sent, waiting for `register` or `login`.
async fn authenticate(shared: &Shared, ws: &mut Ws) -> std::result::Result<DeviceAddr, AuthErr> {
    let limits = &shared.cfg.limits;
    let mut nonce = [0u8; consts::CHALLENGE_NONCE_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let challenge = ServerMessage::Challenge {
        server: shared.cfg.server_id.clone(),
        nonce: B64(nonce.to_vec()),
    };
    ws.send(frame(&challenge))
        .await
        .map_err(|_| (None, ErrorCode::Internal, "send failed"))?;
    let mut malformed = 0u32;
    let mut shutdown = shared.shutdown.clone();
    loop {
        let msg = tokio::select! {
            m = ws.next() => m,
            _ = shutdown.changed() => return Err((None, ErrorCode::ShuttingDown, "server shutting down")),
        };
        let bytes = match msg {
            None | Some(Err(_)) | Some(Ok(Message::Close(_))) => {
                return Err((None, ErrorCode::Malformed, "connection closed"))
            }
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Binary(_))) => {
                return Err((None, ErrorCode::Malformed, "binary frames are not used"))
            }
            Some(Ok(_)) => continue,
        };
        let f = match decode_client_frame(bytes.as_bytes(), limits.max_frame_bytes) {
            Ok(f) => f,
            Err(e) if e.code == ErrorCode::FrameTooLarge => {
                return Err((e.id, e.code, "frame exceeds the size limit"))
            }
            Err(e) => {
                malformed += 1;
                if malformed >= limits.max_malformed_frames {
                    return Err((e.id, e.code, "too many malformed frames"));
                }
                shared.metrics.error(e.code);
                let _ = ws
                    .send(frame(&ServerMessage::error(
                        e.id,
                        e.code,
                        "malformed frame",
                    )))
                    .await;
                continue;
            }
        };
        let id = f.id;
        let (username, device_id, identity_key, signature, register) = match f.msg {
            ClientMessage::Register {
                username,
                device_id,
                identity_key,
                signature,
            } => (username, device_id, Some(identity_key), signature, true),
            ClientMessage::Login {
                username,
                device_id,
                signature,
            } => (username, device_id, None, signature, false),
            ClientMessage::Ping => {
                let _ = ws.send(frame(&ServerMessage::Pong { id })).await;
                continue;
            }
            _ => {
                shared.metrics.error(ErrorCode::NotAuthenticated);
                let _ = ws
                    .send(frame(&ServerMessage::error(
                        Some(id),
                        ErrorCode::NotAuthenticated,
                        "authenticate first",
                    )))
                    .await;
                continue;
            }
        };
        if !valid_username(&username) {
            return Err((Some(id), ErrorCode::InvalidField, "invalid username"));
        }
        let addr = DeviceAddr::new(username, device_id);
        let key = match identity_key {
            Some(k) => {
                if !auth::valid_identity_key(&k.0) {
                    return Err((Some(id), ErrorCode::InvalidField, "invalid identity key"));
                }
                k.0
            }
            None => {
                let a = addr.clone();
                match shared.store(move |s| s.identity(&a)).await {
                    Ok(Some(k)) => k,
                    Ok(None) => {
                        return Err((Some(id), ErrorCode::AuthFailed, "authentication failed"))
                    }
                    Err(code) => return Err((Some(id), code, "storage failure")),
                }
            }
        };
        let message = auth::auth_message(&shared.cfg.server_id, &nonce, &addr.user, addr.device);
        if !auth::verify(&key, &message, &signature.0) {
            return Err((Some(id), ErrorCode::AuthFailed, "authentication failed"));
        }
        let created = if register {
            let a = addr.clone();
            let k = key.clone();
            let now = shared.cfg.clock.now_ms();
            match shared.store(move |s| s.register(&a, &k, now)).await {
                Ok(RegisterOutcome::Created) => true,
                Ok(RegisterOutcome::AlreadyRegistered) => false,
                Ok(RegisterOutcome::UsernameTaken) => {
                    return Err((Some(id), ErrorCode::UsernameTaken, "username taken"))
                }
                Ok(RegisterOutcome::IdentityMismatch) => {
                    return Err((
                        Some(id),
                        ErrorCode::IdentityMismatch,
                        "device has another identity key",
                    ))
                }
                Err(code) => return Err((Some(id), code, "storage failure")),
            }
        } else {
            false
        };
        let a = addr.clone();
        let one_time_prekeys = shared
            .store(move |s| s.one_time_count(&a))
            .await
            .map_err(|code| (Some(id), code, "storage failure"))?;
        ws.send(frame(&ServerMessage::Authenticated {
            id,
            created,
            one_time_prekeys,
        }))
        .await
        .map_err(|_| (None, ErrorCode::Internal, "send failed"))?;
        return Ok(addr);
    }
}

/// Why a session ends.
enum End {
    Closed,
    Error(Option<u64>, ErrorCode, &'static str),
}

/// What an authenticated connection's task handles next.
enum Event {
    /// A frame (or the end of the stream) from the peer.
    Incoming(Option<std::result::Result<Message, WsError>>),
    /// The connection must end.
    End(End),
}

/// A `send`/`ack` waiting for room in its connection's outbound queue (its requests are not read
/// meanwhile), and how long it may wait.
struct Stalled {
    op: WriteOp,
    id: u64,
    until: Pin<Box<tokio::time::Sleep>>,
}

/// The authenticated state, driven by the connection's one task: it reads requests, writes
/// answers and pushes from the connection's outbound queue (several frames per system call), and
/// reads the backlog when the store thread asks it to — all from one poll, so a blocked socket
/// write never stops reading and vice versa.
struct Session {
    ws: Ws,
    conn: Arc<Conn>,
    addr: DeviceAddr,
    /// Highest envelope id written; a handed-over envelope that a backlog read already wrote
    /// (id <= cursor) is skipped.
    cursor: u64,
    /// Frames handed to the socket layer and not yet flushed.
    dirty: bool,
    /// The close frame has been handed to the socket layer.
    closing: bool,
    /// Frames read since the last flush.
    reads: u32,
    /// A backlog read in flight on the store thread.
    backlog_rx: Option<oneshot::Receiver<StoreResult<Vec<StoredEnvelope>>>>,
    /// Backlog envelopes read and not yet written.
    backlog: Option<std::vec::IntoIter<StoredEnvelope>>,
    /// The backlog read was a full batch: read again once it is written.
    more_backlog: bool,
    /// Reading is paused until this fires (rate limit).
    paused: Option<Pin<Box<tokio::time::Sleep>>>,
    stalled: Option<Box<Stalled>>,
    /// The server was shutting down when this session started.
    shutting_down: bool,
    /// Envelope rate limit.
    bucket: TokenBucket,
    /// Malformed frames so far.
    malformed: u32,
}

/// Frames written per poll before the task lets others run.
const WRITES_PER_POLL: usize = 256;

impl Session {
    /// Moves queued frames into the socket layer while it accepts them. `Err` when the socket
    /// failed; stops after the close frame.
    fn poll_write(&mut self, shared: &Shared, cx: &mut Context<'_>) -> std::result::Result<(), ()> {
        for _ in 0..WRITES_PER_POLL {
            if self.closing {
                return Ok(());
            }
            match Pin::new(&mut self.ws).poll_ready(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(_)) => return Err(()),
                Poll::Pending => return Ok(()),
            }
            let msg = if let Some(it) = &mut self.backlog {
                let Some(e) = it.next() else {
                    self.backlog = None;
                    if std::mem::take(&mut self.more_backlog) {
                        self.conn.request_backlog();
                    }
                    continue;
                };
                if e.id <= self.cursor {
                    continue;
                }
                self.cursor = e.id;
                Metrics::inc(&shared.metrics.envelopes_delivered_total);
                envelope_frame(e)
            } else if self.backlog_rx.is_some() {
                // Nothing from the queue while a backlog read is in flight: an envelope handed
                // over after that read must not be written before the read's envelopes.
                return Ok(());
            } else {
                match self.conn.pop() {
                    None => return Ok(()),
                    Some(Out::Text(t)) => Message::text(t),
                    Some(Out::Envelope(e)) => {
                        if e.id <= self.cursor {
                            continue;
                        }
                        self.cursor = e.id;
                        Metrics::inc(&shared.metrics.envelopes_delivered_total);
                        envelope_frame(*e)
                    }
                    Some(Out::Close(code)) => {
                        self.closing = true;
                        close_frame(code)
                    }
                }
            };
            if Pin::new(&mut self.ws).start_send(msg).is_err() {
                return Err(());
            }
            self.dirty = true;
        }
        // More to write: come back after the others have run.
        cx.waker().wake_by_ref();
        Ok(())
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> std::result::Result<(), ()> {
        if self.dirty {
            match Pin::new(&mut self.ws).poll_flush(cx) {
                Poll::Ready(Ok(())) => self.dirty = false,
                Poll::Ready(Err(_)) => return Err(()),
                Poll::Pending => {}
            }
        }
        Ok(())
    }

    /// Drives writes, backlog reads and a stalled write; returns the next frame read or why the
    /// connection ends.
    fn poll_event(&mut self, shared: &Shared, cx: &mut Context<'_>) -> Poll<Event> {
        let closed = Poll::Ready(Event::End(End::Closed));
        // Register first, then look at the flags and the queue: no wake-up is lost.
        self.conn.register(cx.waker());
        match self.conn.ended() {
            Some(Ended::Replaced) => {
                return Poll::Ready(Event::End(End::Error(
                    None,
                    ErrorCode::Replaced,
                    "another connection authenticated as this device",
                )))
            }
            Some(Ended::ShuttingDown) => {
                return Poll::Ready(Event::End(End::Error(
                    None,
                    ErrorCode::ShuttingDown,
                    "server shutting down",
                )))
            }
            None => {}
        }
        if self.backlog_rx.is_none() && self.backlog.is_none() && self.conn.take_backlog_request() {
            match self.start_backlog_read(shared) {
                Ok(rx) => self.backlog_rx = Some(rx),
                Err(e) => return Poll::Ready(Event::End(e)),
            }
        }
        if let Some(rx) = &mut self.backlog_rx {
            match Pin::new(rx).poll(cx) {
                Poll::Ready(Ok(Ok(envs))) => {
                    self.backlog_rx = None;
                    self.more_backlog = envs.len() == consts::DELIVERY_BATCH;
                    self.backlog = Some(envs.into_iter());
                }
                Poll::Ready(_) => {
                    return Poll::Ready(Event::End(End::Error(
                        None,
                        ErrorCode::Internal,
                        "storage failure",
                    )))
                }
                Poll::Pending => {}
            }
        }
        if self.poll_write(shared, cx).is_err() {
            return closed;
        }
        let mut read = true;
        if let Some(st) = &mut self.stalled {
            read = false;
            if let Some(slot) = self.conn.try_reserve() {
                if let Some(st) = self.stalled.take() {
                    if shared.worker.submit(st.op, st.id, slot).is_err() {
                        return Poll::Ready(Event::End(End::Error(
                            None,
                            ErrorCode::Internal,
                            "storage failure",
                        )));
                    }
                }
                read = true;
            } else if st.until.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Event::End(End::Error(
                    None,
                    ErrorCode::SlowConsumer,
                    "not reading",
                )));
            }
        }
        if let Some(p) = &mut self.paused {
            if p.as_mut().poll(cx).is_ready() {
                self.paused = None;
            } else {
                read = false;
            }
        }
        if read {
            if self.reads < consts::READS_PER_FLUSH {
                if let Poll::Ready(m) = Pin::new(&mut self.ws).poll_next(cx) {
                    self.reads += 1;
                    return Poll::Ready(Event::Incoming(m));
                }
            } else {
                // Flush the answers collected so far, then go on reading.
                cx.waker().wake_by_ref();
            }
        }
        self.reads = 0;
        if self.poll_flush(cx).is_err() {
            return closed;
        }
        Poll::Pending
    }

    fn start_backlog_read(
        &self,
        shared: &Shared,
    ) -> std::result::Result<oneshot::Receiver<StoreResult<Vec<StoredEnvelope>>>, End> {
        let a = self.addr.clone();
        let now = shared.cfg.clock.now_ms();
        let after = self.cursor;
        let conn = self.conn.clone();
        let batch = consts::DELIVERY_BATCH;
        shared
            .worker
            .queue(move |s| {
                let envs = s.pending(&a, after, now, batch)?;
                if envs.len() < batch {
                    // Seen every envelope committed so far: later ones are handed over.
                    conn.lagging.store(false, Ordering::Release);
                }
                Ok(envs)
            })
            .map_err(|_| End::Error(None, ErrorCode::Internal, "storage failure"))
    }

    /// Queues the last frames and writes them (at most 2 s), then closes the socket.
    async fn finish(mut self: Box<Self>, shared: &Shared, end: End) {
        // Unwritten backlog stays stored for the next connection.
        self.backlog_rx = None;
        self.backlog = None;
        match end {
            End::Closed => self.conn.push_final(Out::Close(None)),
            End::Error(id, code, why) => {
                shared.metrics.error(code);
                self.conn
                    .push_final(Out::Text(frame_text(&ServerMessage::error(id, code, why))));
                self.conn.push_final(Out::Close(Some(code)));
            }
        }
        let drain = std::future::poll_fn(|cx| {
            self.conn.register(cx.waker());
            if self.poll_write(shared, cx).is_err() {
                return Poll::Ready(());
            }
            if self.closing {
                // Flushes the close frame.
                return Pin::new(&mut self.ws).poll_close(cx).map(|_| ());
            }
            match self.poll_flush(cx) {
                Err(()) => Poll::Ready(()),
                Ok(()) => Poll::Pending,
            }
        });
        let _ = Box::pin(tokio::time::timeout(Duration::from_secs(2), drain)).await;
    }
}

impl Session {
    /// Enters the authenticated state: the connection goes online (replacing an earlier one of the
    /// same device).
    fn start(shared: &Shared, ws: Ws, addr: DeviceAddr) -> Box<Self> {
        let limits = &shared.cfg.limits;
        let conn_id = shared.next_conn.fetch_add(1, Ordering::Relaxed);
        // Lagging, with a backlog read requested, until the first backlog read has caught up (see
        // worker.rs).
        let conn = Arc::new(Conn::new(conn_id, limits.outbound_queue_frames));
        let shutting_down = {
            let mut online = shared.online();
            // Checked under the map's lock, which `Server::shutdown` takes after setting the flag: a
            // session either sees the flag here or is told by the shutdown.
            if *shared.shutdown.borrow() {
                true
            } else {
                if let Some(p) = online.insert(addr.clone(), conn.clone()) {
                    p.end(Ended::Replaced);
                }
                false
            }
        };
        Metrics::inc(&shared.metrics.authenticated_active);
        Box::new(Session {
            ws,
            conn,
            addr,
            cursor: 0,
            dirty: false,
            closing: false,
            reads: 0,
            backlog_rx: None,
            backlog: None,
            more_backlog: false,
            paused: None,
            stalled: None,
            shutting_down,
            bucket: TokenBucket::new(
                limits.envelopes_per_second,
                limits.envelope_burst,
                std::time::Instant::now(),
            ),
            malformed: 0,
        })
    }

    /// Serves the authenticated connection until it ends.
    async fn run(mut self: Box<Self>, shared: &Shared) {
        let end = loop {
            if self.shutting_down {
                break End::Error(None, ErrorCode::ShuttingDown, "server shutting down");
            }
            let s = &mut *self;
            let msg = match std::future::poll_fn(|cx| s.poll_event(shared, cx)).await {
                Event::End(e) => break e,
                Event::Incoming(m) => m,
            };
            let (id, m) = match self.on_frame(shared, msg) {
                Step::Next => continue,
                Step::End(e) => break e,
                Step::Request(id, m) => (id, m),
            };
            let (response, slow_down) = Box::pin(handle_request(shared, &self.addr, id, m)).await;
            if reply(shared, &self.conn, response).is_err() {
                break End::Error(None, ErrorCode::SlowConsumer, "not reading");
            }
            if let Some(d) = slow_down {
                self.pause(d);
            }
        };
        {
            let mut online = shared.online();
            if online
                .get(&self.addr)
                .is_some_and(|o| o.conn_id == self.conn.conn_id)
            {
                online.remove(&self.addr);
            }
        }
        Metrics::dec(&shared.metrics.authenticated_active);
        Box::pin(self.finish(shared, end)).await;
    }

    /// The offender is slowed: its frames are not read until a token is due.
    fn pause(&mut self, d: Duration) {
        self.paused = Some(Box::pin(tokio::time::sleep(d.min(Duration::from_secs(1)))));
    }

    /// Handles a frame read from the peer, unless it is a request that needs an answer from
    /// [`handle_request`].
    fn on_frame(
        &mut self,
        shared: &Shared,
        msg: Option<std::result::Result<Message, WsError>>,
    ) -> Step {
        let limits = &shared.cfg.limits;
        let bytes = match msg {
            None | Some(Ok(Message::Close(_))) => return Step::End(End::Closed),
            Some(Err(WsError::Capacity(_))) => {
                return Step::End(End::Error(
                    None,
                    ErrorCode::FrameTooLarge,
                    "frame exceeds the size limit",
                ))
            }
            Some(Err(_)) => return Step::End(End::Closed),
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Binary(_))) => {
                return self.malformed(
                    shared,
                    None,
                    ErrorCode::Malformed,
                    "binary frames are not used",
                )
            }
            Some(Ok(_)) => return Step::Next,
        };
        let f = match decode_client_frame(bytes.as_bytes(), limits.max_frame_bytes) {
            Ok(f) => f,
            Err(e) if e.code == ErrorCode::FrameTooLarge => {
                return Step::End(End::Error(e.id, e.code, "frame exceeds the size limit"))
            }
            Err(e) => return self.malformed(shared, e.id, e.code, "malformed frame"),
        };
        drop(bytes);
        let m @ (ClientMessage::Send { .. } | ClientMessage::Ack { .. }) = f.msg else {
            return Step::Request(f.id, f.msg);
        };
        let op = match prepare_write(shared, &self.addr, &mut self.bucket, f.id, m) {
            Ok(op) => op,
            Err(answer) => {
                let (response, slow_down) = *answer;
                if reply(shared, &self.conn, response).is_err() {
                    return Step::End(End::Error(None, ErrorCode::SlowConsumer, "not reading"));
                }
                if let Some(d) = slow_down {
                    self.pause(d);
                }
                return Step::Next;
            }
        };
        // Pipelined: the store thread answers into the slot reserved here, after the group
        // commit; this task goes on reading. A full outbound queue means the peer is not reading:
        // its requests are not read until the queue has room, but not for longer than
        // OUTBOUND_WAIT.
        match self.conn.try_reserve() {
            Some(slot) => {
                if shared.worker.submit(op, f.id, slot).is_err() {
                    return Step::End(End::Error(None, ErrorCode::Internal, "storage failure"));
                }
            }
            None => {
                self.stalled = Some(Box::new(Stalled {
                    op,
                    id: f.id,
                    until: Box::pin(tokio::time::sleep(consts::OUTBOUND_WAIT)),
                }));
            }
        }
        Step::Next
    }

    /// Answers a malformed frame, or ends the connection after too many.
    fn malformed(
        &mut self,
        shared: &Shared,
        id: Option<u64>,
        code: ErrorCode,
        why: &'static str,
    ) -> Step {
        self.malformed += 1;
        if self.malformed >= shared.cfg.limits.max_malformed_frames {
            return Step::End(End::Error(id, code, "too many malformed frames"));
        }
        if reply(shared, &self.conn, ServerMessage::error(id, code, why)).is_err() {
            return Step::End(End::Error(None, ErrorCode::SlowConsumer, "not reading"));
        }
        Step::Next
    }
}

/// What the connection's task does after a frame.
enum Step {
    /// Read on.
    Next,
    /// A request for [`handle_request`].
    Request(u64, ClientMessage),
    /// End the connection.
    End(End),
}

fn reply(shared: &Shared, conn: &Conn, msg: ServerMessage) -> std::result::Result<(), ()> {
    if let ServerMessage::Error { code, .. } = &msg {
        shared.metrics.error(*code);
    }
    conn.try_push(Out::Text(frame_text(&msg))).map_err(|_| ())
}

fn envelope_frame(e: StoredEnvelope) -> Message {
    frame(&ServerMessage::Envelope(Envelope {
        envelope_id: e.id,
        from_user: e.env.from.user,
        from_device: e.env.from.device,
        stored_at_ms: e.env.stored_at_ms,
        expires_at_ms: e.env.expires_at_ms,
        ciphertext: B64(e.env.ciphertext),
    }))
}

/// Validates a `send` or an `ack` into a store write, or answers it at once.
fn prepare_write(
    shared: &Shared,
    me: &DeviceAddr,
    bucket: &mut TokenBucket,
    id: u64,
    msg: ClientMessage,
) -> std::result::Result<WriteOp, Box<(ServerMessage, Option<Duration>)>> {
    let limits = &shared.cfg.limits;
    let err = |code, why: &str| Box::new((ServerMessage::error(Some(id), code, why), None));
    match msg {
        ClientMessage::Send {
            to_user,
            to_device,
            ttl_secs,
            ciphertext,
        } => {
            if let Err(wait) = bucket.try_take(std::time::Instant::now()) {
                return Err(Box::new((
                    ServerMessage::error(Some(id), ErrorCode::RateLimited, "envelope rate limit"),
                    Some(wait),
                )));
            }
            if ttl_secs == 0 || ttl_secs > limits.max_envelope_ttl_secs {
                return Err(err(ErrorCode::TtlTooLong, "ttl out of range"));
            }
            if !valid_username(&to_user) {
                return Err(err(ErrorCode::UnknownRecipient, "unknown recipient"));
            }
            let now = shared.cfg.clock.now_ms();
            Ok(WriteOp::Enqueue {
                env: NewEnvelope {
                    to: DeviceAddr::new(to_user, to_device),
                    from: me.clone(),
                    stored_at_ms: now,
                    expires_at_ms: now.saturating_add(ttl_secs.saturating_mul(1000)),
                    ciphertext: ciphertext.0,
                },
                max_queued: limits.max_queued_per_device,
            })
        }
        ClientMessage::Ack { envelope_id } => Ok(WriteOp::Ack {
            to: me.clone(),
            id: envelope_id,
        }),
        _ => Err(err(ErrorCode::Internal, "internal routing error")),
    }
}

/// The response to request `id` once its write is committed (or failed); runs on the store
/// thread after the group commit.
pub(crate) fn write_answer(metrics: &Metrics, id: u64, r: &StoreResult<WriteOutcome>) -> String {
    let msg = match r {
        Ok(WriteOutcome::Enqueued(EnqueueOutcome::Stored(envelope_id))) => {
            Metrics::inc(&metrics.envelopes_stored_total);
            ServerMessage::Stored {
                id,
                envelope_id: *envelope_id,
            }
        }
        Ok(WriteOutcome::Enqueued(EnqueueOutcome::QueueFull)) => ServerMessage::error(
            Some(id),
            ErrorCode::RecipientQueueFull,
            "recipient queue full",
        ),
        Ok(WriteOutcome::Enqueued(EnqueueOutcome::UnknownRecipient)) => {
            ServerMessage::error(Some(id), ErrorCode::UnknownRecipient, "unknown recipient")
        }
        Ok(WriteOutcome::Acked(deleted)) => {
            if *deleted {
                Metrics::inc(&metrics.envelopes_acked_total);
            }
            ServerMessage::Acked { id }
        }
        Err(_) => ServerMessage::error(Some(id), ErrorCode::Internal, "storage failure"),
    };
    if let ServerMessage::Error { code, .. } = &msg {
        metrics.error(*code);
    }
    frame_text(&msg)
}

/// Handles one authenticated request; returns the response and, when rate limited, how long to
/// stop reading from this connection.
async fn handle_request(
    shared: &Shared,
    me: &DeviceAddr,

    id: u64,
    msg: ClientMessage,
) -> (ServerMessage, Option<Duration>) {
    let limits = &shared.cfg.limits;
    let err = |code, why: &str| (ServerMessage::error(Some(id), code, why), None);
    match msg {
        ClientMessage::Ping => (ServerMessage::Pong { id }, None),
        ClientMessage::Register { .. } | ClientMessage::Login { .. } => {
            err(ErrorCode::InvalidField, "already authenticated")
        }
        ClientMessage::Send { .. } | ClientMessage::Ack { .. } => {
            // Routed by `prepare_write` before this function is called.
            err(ErrorCode::Internal, "internal routing error")
        }
        ClientMessage::FetchBundle {
            username,
            device_id,
        } => {
            if !valid_username(&username) {
                return err(ErrorCode::UnknownRecipient, "unknown device");
            }
            let a = DeviceAddr::new(username, device_id);
            let a2 = a.clone();
            match shared.store(move |s| s.take_bundle(&a2)).await {
                Ok(BundleOutcome::Bundle(b)) => {
                    Metrics::inc(&shared.metrics.bundles_fetched_total);
                    if b.one_time_prekey.is_some()
                        && b.one_time_remaining < limits.low_prekey_threshold
                    {
                        shared.push(
                            &a,
                            &ServerMessage::PrekeysLow {
                                remaining: b.one_time_remaining,
                            },
                        );
                    }
                    let bundle = Bundle {
                        username: a.user,
                        device_id: a.device,
                        identity_key: B64(b.identity_key),
                        signed_prekey: b.signed_prekey,
                        kem_prekey: b.kem_prekey,
                        one_time_prekey: b.one_time_prekey,
                    };
                    (ServerMessage::Bundle { id, bundle }, None)
                }
                Ok(BundleOutcome::UnknownDevice) => {
                    err(ErrorCode::UnknownRecipient, "unknown device")
                }
                Ok(BundleOutcome::NoPrekeys) => err(ErrorCode::NoPrekeys, "no prekeys published"),
                Err(code) => err(code, "storage failure"),
            }
        }
        ClientMessage::ListDevices { username } => {
            if !valid_username(&username) {
                return err(ErrorCode::UnknownRecipient, "unknown user");
            }
            let listed = shared
                .store(move |s| {
                    let ids = s.devices(&username)?;
                    let mut keys = Vec::with_capacity(ids.len());
                    for &device_id in &ids {
                        let addr = DeviceAddr {
                            user: username.clone(),
                            device: device_id,
                        };
                        keys.push(B64(s.identity(&addr)?.unwrap_or_default()));
                    }
                    Ok((ids, keys))
                })
                .await;
            match listed {
                Ok((device_ids, identity_keys)) => (
                    ServerMessage::Devices {
                        id,
                        device_ids,
                        identity_keys,
                    },
                    None,
                ),
                Err(code) => err(code, "storage failure"),
            }
        }
        ClientMessage::PublishPrekeys {
            signed_prekey,
            kem_prekey,
            one_time_prekeys,
        } => {
            if one_time_prekeys.len() > limits.max_one_time_prekeys_per_upload {
                return err(
                    ErrorCode::InvalidField,
                    "too many one-time prekeys in one upload",
                );
            }
            let sized = |k: &crate::protocol::SignedPreKey| {
                !k.public.0.is_empty()
                    && k.public.0.len() <= consts::MAX_PREKEY_PUBLIC_BYTES
                    && k.signature.0.len() <= consts::MAX_PREKEY_SIGNATURE_BYTES
            };
            if signed_prekey.as_ref().is_some_and(|k| !sized(k))
                || kem_prekey.as_ref().is_some_and(|k| !sized(k))
                || one_time_prekeys.iter().any(|k| {
                    k.public.0.is_empty() || k.public.0.len() > consts::MAX_PREKEY_PUBLIC_BYTES
                })
            {
                return err(ErrorCode::InvalidField, "prekey size out of range");
            }
            let a = me.clone();
            let max = limits.max_one_time_prekeys_stored;
            match shared
                .store(move |s| {
                    s.publish_prekeys(
                        &a,
                        signed_prekey.as_ref(),
                        kem_prekey.as_ref(),
                        &one_time_prekeys,
                        max,
                    )
                })
                .await
            {
                Ok(Some(n)) => (
                    ServerMessage::Published {
                        id,
                        one_time_prekeys: n,
                    },
                    None,
                ),
                Ok(None) => err(ErrorCode::InvalidField, "one-time prekey stock limit"),
                Err(code) => err(code, "storage failure"),
            }
        }
        ClientMessage::AddDevice {
            device_id,
            identity_key,
        } => {
            if device_id == me.device {
                return err(
                    ErrorCode::InvalidField,
                    "cannot re-key the signed-in device",
                );
            }
            if !auth::valid_identity_key(&identity_key.0) {
                return err(ErrorCode::InvalidField, "invalid identity key");
            }
            let a = DeviceAddr::new(me.user.clone(), device_id);
            let a2 = a.clone();
            let now = shared.cfg.clock.now_ms();
            match shared
                .store(move |s| s.set_device(&a2, &identity_key.0, now))
                .await
            {
                Ok(replaced) => {
                    if replaced {
                        if let Some(c) = shared.online().get(&a) {
                            c.end(Ended::Replaced);
                        }
                    }
                    (ServerMessage::DeviceAdded { id, replaced }, None)
                }
                Err(code) => err(code, "storage failure"),
            }
        }
        ClientMessage::TurnCredentials => {
            let Some(t) = &shared.cfg.turn else {
                return err(ErrorCode::TurnUnavailable, "no TURN configured");
            };
            let expiry = shared.cfg.clock.now_ms() / 1000 + t.ttl_secs;
            let c = turn::credentials(&t.secret, &format!("{}.{}", me.user, me.device), expiry);
            (
                ServerMessage::Turn {
                    id,
                    username: c.username,
                    password: c.password,
                    ttl_secs: t.ttl_secs,
                    uris: t.uris.clone(),
                },
                None,
            )
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
        let online = OnlineMap::default();
        let shared = Arc::new(Shared {
            limiter: ConnectionLimiter::new(1),
            cfg: ServerConfig::new("x"),
            worker: StoreWorker::start(
                Arc::new(crate::store::MemoryStore::new()),
                online.clone(),
                Arc::default(),
            )
            .unwrap(),
            online,
            metrics: Arc::default(),
            next_conn: AtomicU64::new(1),
            shutdown: watch::channel(false).1,
        });
        let c = TcpStream::connect(addr).await.unwrap();
        let f = handle_connection(shared.clone(), c, addr);
        let task = std::mem::size_of_val(&f);
        let session = std::mem::size_of::<Session>();
        eprintln!("handle_connection future: {task} B, session: {session} B");
        assert!(task <= 512, "connection future grew to {task} B");
        assert!(session <= 512, "session grew to {session} B");
    }
}
