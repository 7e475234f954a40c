//! The signaling server: accept, authenticate, route.
//!
//! One task per connection reads and answers requests; a second task per authenticated connection
//! owns the socket's write half. Every store call runs on one store thread (`worker.rs`), which
//! group-commits envelope writes and, after each commit, hands stored envelopes straight to online
//! recipients' writers; a writer that fell behind is woken instead and reads its backlog from the
//! [`Store`]. Senders never wait on a recipient: handing over and waking ([`Notify`], which
//! coalesces) are both non-blocking, so a slow reader only slows itself.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use rand::RngCore;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Notify};

use crate::worker::{OnlineMap, Out, OutRx, OutTx, StoreWorker};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
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
    WriteOp, WriteOutcome,
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
    fn online(&self) -> std::sync::MutexGuard<'_, HashMap<DeviceAddr, crate::worker::Online>> {
        self.online.lock()
    }

    async fn store<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Store) -> StoreResult<T> + Send + 'static,
    ) -> std::result::Result<T, ErrorCode> {
        store_answer(self.worker.call(f).await)
    }

    fn push(&self, addr: &DeviceAddr, msg: &ServerMessage) {
        if let (Some(o), Ok(text)) = (self.online().get(addr), encode_server_frame(msg)) {
            // Best effort: a push to a connection that is not reading is dropped.
            let _ = o.out.try_send(Box::new(Out::Frame(Message::text(text))));
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
        .write_buffer_size(0)
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
type WsSink = SplitSink<Ws, Message>;
type WsStream = SplitStream<Ws>;

fn frame(msg: &ServerMessage) -> Message {
    match encode_server_frame(msg) {
        Ok(t) => Message::text(t),
        Err(_) => Message::text(r#"{"v":1,"type":"error","code":"internal","message":""}"#),
    }
}

fn close_frame(code: ErrorCode) -> Message {
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
    sink: &mut WsSink,
    metrics: &Metrics,
    id: Option<u64>,
    code: ErrorCode,
    why: &str,
) {
    metrics.error(code);
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let _ = sink.send(frame(&ServerMessage::error(id, code, why))).await;
        let _ = sink.send(close_frame(code)).await;
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
    let limits = &shared.cfg.limits;
    let hs = tokio::time::timeout(
        limits.auth_timeout,
        // Boxed sub-futures keep the resting size of every connection's task small.
        Box::pin(tokio_tungstenite::accept_async_with_config(
            tcp,
            Some(ws_config(limits)),
        )),
    )
    .await;
    let Ok(Ok(ws)) = hs else {
        return;
    };
    Metrics::inc(&shared.metrics.connections_total);
    Metrics::inc(&shared.metrics.connections_active);
    let _guard = ConnGuard(&shared.metrics);
    let (mut sink, mut stream) = ws.split();
    if slot.is_none() {
        Box::pin(send_error_and_close(
            &mut sink,
            &shared.metrics,
            None,
            ErrorCode::TooManyConnections,
            "too many connections from this address",
        ))
        .await;
        return;
    }
    let deadline = Instant::now() + limits.auth_timeout;
    let authed = Box::pin(tokio::time::timeout_at(
        deadline,
        authenticate(&shared, &mut sink, &mut stream),
    ))
    .await
    .unwrap_or(Err((
        None,
        ErrorCode::AuthTimeout,
        "authentication timed out",
    )));
    match authed {
        Ok(addr) => session(shared.clone(), sink, stream, addr).await,
        Err((id, code, why)) => {
            if code == ErrorCode::AuthFailed {
                Metrics::inc(&shared.metrics.auth_failures_total);
            }
            Box::pin(send_error_and_close(
                &mut sink,
                &shared.metrics,
                id,
                code,
                why,
            ))
            .await;
        }
    }
    drop(slot);
}

type AuthErr = (Option<u64>, ErrorCode, &'static str);

/// The unauthenticated state: challenge sent, waiting for `register` or `login`.
async fn authenticate(
    shared: &Shared,
    sink: &mut WsSink,
    stream: &mut WsStream,
) -> std::result::Result<DeviceAddr, AuthErr> {
    let limits = &shared.cfg.limits;
    let mut nonce = [0u8; consts::CHALLENGE_NONCE_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let challenge = ServerMessage::Challenge {
        server: shared.cfg.server_id.clone(),
        nonce: B64(nonce.to_vec()),
    };
    sink.send(frame(&challenge))
        .await
        .map_err(|_| (None, ErrorCode::Internal, "send failed"))?;
    let mut malformed = 0u32;
    let mut shutdown = shared.shutdown.clone();
    loop {
        let msg = tokio::select! {
            m = stream.next() => m,
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
                let _ = sink
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
                let _ = sink.send(frame(&ServerMessage::Pong { id })).await;
                continue;
            }
            _ => {
                shared.metrics.error(ErrorCode::NotAuthenticated);
                let _ = sink
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
        sink.send(frame(&ServerMessage::Authenticated {
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

/// The authenticated state.
async fn session(shared: Arc<Shared>, sink: WsSink, mut stream: WsStream, addr: DeviceAddr) {
    let limits = &shared.cfg.limits;
    let conn_id = shared.next_conn.fetch_add(1, Ordering::Relaxed);
    let (out, out_rx) = mpsc::channel::<Box<Out>>(limits.outbound_queue_frames.max(1));
    let wake = Arc::new(Notify::new());
    let kick = Arc::new(Notify::new());
    // Lagging until the writer's first backlog read has caught up (see worker.rs).
    let lagging = Arc::new(AtomicBool::new(true));
    let previous = shared.online().insert(
        addr.clone(),
        crate::worker::Online {
            conn_id,
            wake: wake.clone(),
            kick: kick.clone(),
            out: out.clone(),
            lagging: lagging.clone(),
        },
    );
    if let Some(p) = previous {
        p.kick.notify_one();
    }
    Metrics::inc(&shared.metrics.authenticated_active);
    wake.notify_one(); // deliver the backlog
    let mut writer = tokio::spawn(writer_loop(
        shared.clone(),
        sink,
        out_rx,
        wake,
        lagging,
        addr.clone(),
    ));

    let mut bucket = TokenBucket::new(
        limits.envelopes_per_second,
        limits.envelope_burst,
        std::time::Instant::now(),
    );
    let mut malformed = 0u32;
    let mut writer_done = false;
    let mut shutdown = shared.shutdown.clone();
    let end = loop {
        let msg = tokio::select! {
            m = stream.next() => m,
            _ = shutdown.changed() => break End::Error(None, ErrorCode::ShuttingDown, "server shutting down"),
            _ = kick.notified() => break End::Error(None, ErrorCode::Replaced, "another connection authenticated as this device"),
            _ = &mut writer, if !writer_done => {
                writer_done = true;
                break End::Closed;
            }
        };
        let bytes = match msg {
            None | Some(Ok(Message::Close(_))) => break End::Closed,
            Some(Err(tokio_tungstenite::tungstenite::Error::Capacity(_))) => {
                break End::Error(
                    None,
                    ErrorCode::FrameTooLarge,
                    "frame exceeds the size limit",
                )
            }
            Some(Err(_)) => break End::Closed,
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Binary(_))) => {
                malformed += 1;
                if malformed >= limits.max_malformed_frames {
                    break End::Error(None, ErrorCode::Malformed, "too many malformed frames");
                }
                if reply(
                    &shared,
                    &out,
                    ServerMessage::error(None, ErrorCode::Malformed, "binary frames are not used"),
                )
                .is_err()
                {
                    break End::Error(None, ErrorCode::SlowConsumer, "not reading");
                }
                continue;
            }
            Some(Ok(_)) => continue,
        };
        let f = match decode_client_frame(bytes.as_bytes(), limits.max_frame_bytes) {
            Ok(f) => f,
            Err(e) if e.code == ErrorCode::FrameTooLarge => {
                break End::Error(e.id, e.code, "frame exceeds the size limit")
            }
            Err(e) => {
                malformed += 1;
                if malformed >= limits.max_malformed_frames {
                    break End::Error(e.id, e.code, "too many malformed frames");
                }
                if reply(
                    &shared,
                    &out,
                    ServerMessage::error(e.id, e.code, "malformed frame"),
                )
                .is_err()
                {
                    break End::Error(None, ErrorCode::SlowConsumer, "not reading");
                }
                continue;
            }
        };
        let (response, slow_down) = match f.msg {
            m @ (ClientMessage::Send { .. } | ClientMessage::Ack { .. }) => {
                match prepare_write(&shared, &addr, &mut bucket, f.id, m) {
                    Ok(op) => {
                        // Pipelined: the store thread answers into the slot reserved here, after
                        // the group commit; this loop goes on reading. A full outbound queue
                        // means the peer is not reading.
                        let slot = match out.clone().try_reserve_owned() {
                            Ok(slot) => slot,
                            // Full: stop reading until answers drain, but not forever.
                            Err(_) => match Box::pin(tokio::time::timeout(
                                consts::OUTBOUND_WAIT,
                                out.clone().reserve_owned(),
                            ))
                            .await
                            {
                                Ok(Ok(slot)) => slot,
                                _ => {
                                    break End::Error(None, ErrorCode::SlowConsumer, "not reading")
                                }
                            },
                        };
                        if shared.worker.submit(op, f.id, slot).is_err() {
                            break End::Error(None, ErrorCode::Internal, "storage failure");
                        }
                        continue;
                    }
                    Err(answer) => *answer,
                }
            }
            m => Box::pin(handle_request(&shared, &addr, f.id, m)).await,
        };
        if reply(&shared, &out, response).is_err() {
            break End::Error(None, ErrorCode::SlowConsumer, "not reading");
        }
        if let Some(d) = slow_down {
            // The offender is slowed: its frames are not read until a token is due.
            Box::pin(tokio::time::sleep(d.min(Duration::from_secs(1)))).await;
        }
    };

    {
        let mut online = shared.online();
        if online.get(&addr).is_some_and(|o| o.conn_id == conn_id) {
            online.remove(&addr);
        }
    }
    Metrics::dec(&shared.metrics.authenticated_active);
    match end {
        End::Closed => {
            let _ = out.try_send(Box::new(Out::Frame(Message::Close(None))));
        }
        End::Error(id, code, why) => {
            shared.metrics.error(code);
            let _ = out.try_send(Box::new(Out::Frame(frame(&ServerMessage::error(
                id, code, why,
            )))));
            let _ = out.try_send(Box::new(Out::Frame(close_frame(code))));
        }
    }
    drop(out);
    // A JoinHandle must not be polled again once it has completed.
    if !writer_done
        && Box::pin(tokio::time::timeout(Duration::from_secs(2), &mut writer))
            .await
            .is_err()
    {
        writer.abort();
    }
}

fn reply(shared: &Shared, out: &OutTx, msg: ServerMessage) -> std::result::Result<(), ()> {
    if let ServerMessage::Error { code, .. } = &msg {
        shared.metrics.error(*code);
    }
    out.try_send(Box::new(Out::Frame(frame(&msg))))
        .map_err(|_| ())
}

fn envelope_frame(e: crate::store::StoredEnvelope) -> Message {
    frame(&ServerMessage::Envelope(Envelope {
        envelope_id: e.id,
        from_user: e.env.from.user,
        from_device: e.env.from.device,
        stored_at_ms: e.env.stored_at_ms,
        expires_at_ms: e.env.expires_at_ms,
        ciphertext: B64(e.env.ciphertext),
    }))
}

/// Owns the socket's write half. `cursor` is the highest envelope id written; an envelope the
/// store thread pushed that a backlog read already wrote (id <= cursor) is skipped.
async fn writer_loop(
    shared: Arc<Shared>,
    mut sink: WsSink,
    mut rx: OutRx,
    wake: Arc<Notify>,
    lagging: Arc<AtomicBool>,
    addr: DeviceAddr,
) {
    let mut cursor = 0u64;
    let batch = consts::DELIVERY_BATCH;
    loop {
        tokio::select! {
            biased;
            m = rx.recv() => {
                let Some(mut item) = m else { break };
                // Write everything already queued, then flush once.
                loop {
                    let msg = match *item {
                        Out::Frame(m) => m,
                        Out::Envelope(e) => {
                            if e.id <= cursor {
                                match rx.try_recv() {
                                    Ok(next) => { item = next; continue; }
                                    Err(_) => break,
                                }
                            }
                            cursor = e.id;
                            Metrics::inc(&shared.metrics.envelopes_delivered_total);
                            envelope_frame(e)
                        }
                    };
                    let close = matches!(msg, Message::Close(_));
                    if sink.feed(msg).await.is_err() || close {
                        let _ = sink.close().await;
                        return;
                    }
                    match rx.try_recv() {
                        Ok(next) => item = next,
                        Err(_) => break,
                    }
                }
                if sink.flush().await.is_err() {
                    break;
                }
            }
            _ = wake.notified() => {
                let a = addr.clone();
                let now = shared.cfg.clock.now_ms();
                let after = cursor;
                let flag = lagging.clone();
                let Ok(envs) = Box::pin(shared.store(move |s| {
                    let envs = s.pending(&a, after, now, batch)?;
                    if envs.len() < batch {
                        // Seen every envelope committed so far: later ones are pushed.
                        flag.store(false, Ordering::Release);
                    }
                    Ok(envs)
                })).await else {
                    break;
                };
                let full = envs.len() == batch;
                for e in envs {
                    cursor = cursor.max(e.id);
                    if sink.feed(envelope_frame(e)).await.is_err() {
                        return;
                    }
                    Metrics::inc(&shared.metrics.envelopes_delivered_total);
                }
                if sink.flush().await.is_err() {
                    break;
                }
                if full {
                    wake.notify_one();
                }
            }
        }
    }
    let _ = sink.close().await;
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
pub(crate) fn write_answer(metrics: &Metrics, id: u64, r: &StoreResult<WriteOutcome>) -> Message {
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
    frame(&msg)
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
            match shared.store(move |s| s.devices(&username)).await {
                Ok(device_ids) => (ServerMessage::Devices { id, device_ids }, None),
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
                        if let Some(o) = shared.online().get(&a) {
                            o.kick.notify_one();
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

    /// Every idle connection holds these two task futures; the large sub-futures (handshake,
    /// authentication, request handling) are boxed so they do not inflate the resting size.
    #[tokio::test]
    async fn connection_tasks_stay_small() {
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
        let conn = std::mem::size_of_val(&f);
        eprintln!("handle_connection future: {conn} B");
        assert!(conn <= 2048, "connection future grew to {conn} B");
        drop(f);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acc = tokio::spawn(async move {
            let (t, _) = listener.accept().await.unwrap();
            tokio_tungstenite::accept_async(t).await.unwrap()
        });
        let (_cl, _) = tokio_tungstenite::client_async(
            format!("ws://{addr}/"),
            TcpStream::connect(addr).await.unwrap(),
        )
        .await
        .unwrap();
        let ws = acc.await.unwrap();
        let (sink, stream) = ws.split();
        let (_tx, rx) = mpsc::channel(1);
        let w = writer_loop(
            shared.clone(),
            sink,
            rx,
            Arc::new(Notify::new()),
            Arc::new(AtomicBool::new(false)),
            DeviceAddr::new("a", 1),
        );
        let writer = std::mem::size_of_val(&w);
        eprintln!("writer future: {writer} B");
        assert!(writer <= 1024, "writer future grew to {writer} B");
        drop(w);
        let _ = stream;
    }
}
