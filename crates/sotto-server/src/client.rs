//! The client library: one authenticated connection kept alive in a background task.
//!
//! [`Client::connect`] connects and authenticates once (returning the server's refusal, e.g.
//! `auth_failed`, as an error); after that, a lost connection is re-established with exponential
//! backoff and jitter. Requests made while disconnected fail fast with [`Error::Disconnected`]
//! (retry them). Incoming envelopes arrive on [`Events`]; the server deletes one only when
//! [`Client::ack`] is called, so anything not acknowledged is redelivered after a reconnect —
//! delivery is at least once, and receivers deduplicate by `envelope_id`.
//!
//! The URL is `wss://` (the server verified against the system's roots plus
//! [`ClientConfig::tls`]), or `ws://` to a loopback host only: anything else is refused with
//! [`Error::Tls`] before a connection is made.
//!
//! The URL may name several nodes of one cluster, separated by commas
//! (`wss://a.example:443,wss://b.example:443`): [`Client::connect`] signs in at the first that
//! answers, and a lost connection is re-established at the next in turn, so a device whose node
//! dies moves to another one. (The nodes share one store, so its queue is there too.)

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rand::Rng;
use sotto_ratchet::IdentityKeyPair;
use sotto_tls::ClientTls;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::auth;
use crate::consts;
use crate::error::{Error, Result};
use crate::protocol::{
    decode_server_frame, encode_client_frame, Bundle, ClientMessage, Envelope, OneTimePreKey,
    ServerMessage, SignedPreKey, B64,
};

type Ws = WebSocketStream<sotto_tls::Stream>;

/// How to reach and authenticate to a server.
#[derive(Clone)]
pub struct ClientConfig {
    /// `wss://host:port`, or `ws://host:port` to a loopback host; or several such URLs of one
    /// cluster's nodes, separated by commas (tried in turn, see the module docs).
    pub url: String,
    /// The CAs a `wss://` server is verified against (default: the system's roots).
    pub tls: ClientTls,
    /// The server identity the client expects (bound into its signature).
    pub server_id: String,
    /// Account name.
    pub username: String,
    /// Device number.
    pub device_id: u32,
    /// The device identity key pair.
    pub identity: IdentityKeyPair,
    /// Send `register` (creates the account if new) instead of `login`.
    pub register: bool,
    /// First reconnect delay.
    pub backoff_min: Duration,
    /// Longest reconnect delay.
    pub backoff_max: Duration,
    /// Time limit for one request and for connect + authenticate.
    pub request_timeout: Duration,
    /// Capacity of the [`Events`] channel. When the application falls this far behind, the client
    /// drops the connection rather than buffer more; unacknowledged envelopes come back after the
    /// reconnect.
    pub events_capacity: usize,
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("url", &self.url)
            .field("tls", &self.tls)
            .field("server_id", &self.server_id)
            .field("device_id", &self.device_id)
            .finish_non_exhaustive()
    }
}

impl ClientConfig {
    /// Defaults: login, the system's CA roots, backoff 100 ms → 10 s, 10 s request timeout.
    pub fn new(
        url: impl Into<String>,
        server_id: impl Into<String>,
        username: impl Into<String>,
        device_id: u32,
        identity: IdentityKeyPair,
    ) -> Self {
        Self {
            url: url.into(),
            tls: ClientTls::default(),
            server_id: server_id.into(),
            username: username.into(),
            device_id,
            identity,
            register: false,
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
            request_timeout: Duration::from_secs(10),
            events_capacity: 1024,
        }
    }

    /// Register (create the account on first use) rather than log in.
    pub fn register(mut self) -> Self {
        self.register = true;
        self
    }

    /// Verify a `wss://` server against `tls` (e.g. the system's roots plus a private CA).
    pub fn with_tls(mut self, tls: ClientTls) -> Self {
        self.tls = tls;
        self
    }
}

/// Something the server pushed, or a change of connection state.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// An envelope for this device. Acknowledge it with [`Client::ack`] once processed.
    Envelope(Envelope),
    /// The one-time prekey stock is low: publish more.
    PrekeysLow {
        /// Keys left.
        remaining: u32,
    },
    /// The connection was lost; the client is reconnecting.
    Disconnected,
    /// The connection was re-established and re-authenticated.
    Reconnected,
}

/// The stream of [`Event`]s.
#[derive(Debug)]
pub struct Events(mpsc::Receiver<Event>);

impl Events {
    /// The next event; `None` once the client is closed.
    pub async fn next(&mut self) -> Option<Event> {
        self.0.recv().await
    }

    /// The next envelope, skipping other events.
    pub async fn next_envelope(&mut self) -> Option<Envelope> {
        loop {
            if let Event::Envelope(e) = self.0.recv().await? {
                return Some(e);
            }
        }
    }
}

/// Whether a fetched bundle's identity key matches what this client saw before (trust on first
/// use). A change is not an error — the application decides, and should warn the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentityStatus {
    /// First time this client sees the device.
    New,
    /// Same key as before.
    Unchanged,
    /// The server now binds a different key to the device.
    Changed,
}

/// A bundle and the identity check.
#[derive(Debug, Clone)]
pub struct FetchedBundle {
    /// The bundle as the server sent it (signatures still to be verified by the caller).
    pub bundle: Bundle,
    /// Trust-on-first-use comparison.
    pub identity: IdentityStatus,
}

/// coturn REST-API credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnGrant {
    /// `<expiry>:<user>`.
    pub username: String,
    /// The password.
    pub password: String,
    /// Validity in seconds.
    pub ttl_secs: u64,
    /// TURN URIs.
    pub uris: Vec<String>,
}

type Reply = oneshot::Sender<Result<ServerMessage>>;

/// Relay tokens and the relay the room is placed at ([`Client::relay_tokens`]).
#[derive(Debug, Clone)]
pub struct RelayGrant {
    /// The relay's public control URL.
    pub relay: String,
    /// One token per participant, in the order asked.
    pub tokens: Vec<crate::protocol::ParticipantToken>,
}

/// Identity keys seen per (username, device): the trust-on-first-use pins.
type Pins = Arc<Mutex<HashMap<(String, u32), Vec<u8>>>>;

enum Cmd {
    Request(ClientMessage, Reply),
}

/// A handle to the connection task. Cheap to clone; the task ends when every handle is dropped.
#[derive(Clone)]
pub struct Client {
    cmd: mpsc::Sender<Cmd>,
    request_timeout: Duration,
    pinned: Pins,
    url: String,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").finish_non_exhaustive()
    }
}

impl Client {
    /// Connects and authenticates. An error here (refused, unreachable) is returned as is; after
    /// success the connection is kept up in the background.
    pub async fn connect(cfg: ClientConfig) -> Result<(Client, Events)> {
        let mut nodes = Nodes::new(&cfg.url);
        let mut ws = establish(&cfg, nodes.current()).await;
        for _ in 1..nodes.len() {
            if ws.is_ok() {
                break;
            }
            nodes.advance();
            ws = establish(&cfg, nodes.current()).await;
        }
        let ws = ws?;
        let (cmd, cmd_rx) = mpsc::channel(256);
        let (ev_tx, ev_rx) = mpsc::channel(cfg.events_capacity.max(1));
        let request_timeout = cfg.request_timeout;
        let url = cfg.url.clone();
        tokio::spawn(run(cfg, nodes, ws, cmd_rx, ev_tx));
        Ok((
            Client {
                cmd,
                request_timeout,
                pinned: Arc::default(),
                url,
            },
            Events(ev_rx),
        ))
    }

    /// The signaling server's URL this client was configured with (with several nodes, the
    /// comma-separated list: see [`Client::node_urls`]).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Each node URL in [`Client::url`].
    pub fn node_urls(&self) -> impl Iterator<Item = &str> {
        self.url.split(',').map(str::trim).filter(|u| !u.is_empty())
    }

    async fn request(&self, msg: ClientMessage) -> Result<ServerMessage> {
        let (tx, rx) = oneshot::channel();
        self.cmd
            .send(Cmd::Request(msg, tx))
            .await
            .map_err(|_| Error::Disconnected)?;
        match tokio::time::timeout(self.request_timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(Error::Disconnected),
            Err(_) => Err(Error::Timeout),
        }
    }

    /// Round trip time of a `ping`.
    pub async fn ping(&self) -> Result<Duration> {
        let t = std::time::Instant::now();
        match self.request(ClientMessage::Ping).await? {
            ServerMessage::Pong { .. } => Ok(t.elapsed()),
            _ => Err(Error::UnexpectedFrame),
        }
    }

    /// Uploads prekeys; returns the one-time stock on the server afterwards.
    pub async fn publish_prekeys(
        &self,
        signed_prekey: Option<SignedPreKey>,
        kem_prekey: Option<SignedPreKey>,
        one_time_prekeys: Vec<OneTimePreKey>,
    ) -> Result<u32> {
        match self
            .request(ClientMessage::PublishPrekeys {
                signed_prekey,
                kem_prekey,
                one_time_prekeys,
            })
            .await?
        {
            ServerMessage::Published {
                one_time_prekeys, ..
            } => Ok(one_time_prekeys),
            _ => Err(Error::UnexpectedFrame),
        }
    }

    /// Fetches a device's bundle (consuming one of its one-time prekeys) and compares its identity
    /// key with the one this client saw before.
    pub async fn fetch_bundle(&self, username: &str, device_id: u32) -> Result<FetchedBundle> {
        match self
            .request(ClientMessage::FetchBundle {
                username: username.to_owned(),
                device_id,
            })
            .await?
        {
            ServerMessage::Bundle { bundle, .. } => {
                let mut pinned = self.pinned.lock().unwrap_or_else(|p| p.into_inner());
                let key = (bundle.username.clone(), bundle.device_id);
                let identity = match pinned.get(&key) {
                    None => IdentityStatus::New,
                    Some(k) if *k == bundle.identity_key.0 => IdentityStatus::Unchanged,
                    Some(_) => IdentityStatus::Changed,
                };
                pinned.insert(key, bundle.identity_key.0.clone());
                Ok(FetchedBundle { bundle, identity })
            }
            _ => Err(Error::UnexpectedFrame),
        }
    }

    /// An account's devices.
    pub async fn list_devices(&self, username: &str) -> Result<Vec<u32>> {
        match self
            .request(ClientMessage::ListDevices {
                username: username.to_owned(),
            })
            .await?
        {
            ServerMessage::Devices { device_ids, .. } => Ok(device_ids),
            _ => Err(Error::UnexpectedFrame),
        }
    }

    /// An account's devices with the identity key the server binds to each (33 B each; empty
    /// from a server that does not send keys). Uses up no one-time prekey.
    pub async fn device_identities(&self, username: &str) -> Result<Vec<(u32, Vec<u8>)>> {
        match self
            .request(ClientMessage::ListDevices {
                username: username.to_owned(),
            })
            .await?
        {
            ServerMessage::Devices {
                device_ids,
                identity_keys,
                ..
            } => {
                if !identity_keys.is_empty() && identity_keys.len() != device_ids.len() {
                    return Err(Error::Malformed("devices: one identity key per device"));
                }
                let mut keys = identity_keys.into_iter().map(|k| k.0);
                Ok(device_ids
                    .into_iter()
                    .map(|d| (d, keys.next().unwrap_or_default()))
                    .collect())
            }
            _ => Err(Error::UnexpectedFrame),
        }
    }

    /// Adds (or re-keys) a sibling device of this account. Returns true if it replaced a key.
    pub async fn add_device(
        &self,
        device_id: u32,
        identity_key: &sotto_ratchet::IdentityKey,
    ) -> Result<bool> {
        match self
            .request(ClientMessage::AddDevice {
                device_id,
                identity_key: B64(identity_key.serialize().to_vec()),
            })
            .await?
        {
            ServerMessage::DeviceAdded { replaced, .. } => Ok(replaced),
            _ => Err(Error::UnexpectedFrame),
        }
    }

    /// Sends an envelope; returns its id once the server has committed it to storage.
    pub async fn send(
        &self,
        to_user: &str,
        to_device: u32,
        ttl_secs: u64,
        ciphertext: Vec<u8>,
    ) -> Result<u64> {
        match self
            .request(ClientMessage::Send {
                to_user: to_user.to_owned(),
                to_device,
                ttl_secs,
                ciphertext: B64(ciphertext),
            })
            .await?
        {
            ServerMessage::Stored { envelope_id, .. } => Ok(envelope_id),
            _ => Err(Error::UnexpectedFrame),
        }
    }

    /// Acknowledges (deletes) a received envelope.
    pub async fn ack(&self, envelope_id: u64) -> Result<()> {
        match self.request(ClientMessage::Ack { envelope_id }).await? {
            ServerMessage::Acked { .. } => Ok(()),
            _ => Err(Error::UnexpectedFrame),
        }
    }

    /// Relay tokens admitting `participants` to `room`, one each, in order, at `relay` or
    /// (`None`) wherever the server places the room (the server decides who may have them:
    /// `not_a_room_member`, `unknown_relay`, ... come back as [`Error::Refused`]). An answer
    /// for another relay than the one named, or for other participants, is
    /// [`Error::UnexpectedFrame`].
    pub async fn relay_tokens(
        &self,
        relay: Option<&str>,
        room: &str,
        participants: &[String],
    ) -> Result<RelayGrant> {
        let msg = ClientMessage::RelayTokens {
            relay: relay.map(str::to_owned),
            room: room.to_owned(),
            participants: participants.to_vec(),
        };
        match self.request(msg).await? {
            ServerMessage::RelayTokens {
                relay: placed,
                tokens,
                ..
            } if tokens.len() == participants.len()
                && tokens
                    .iter()
                    .zip(participants)
                    .all(|(t, p)| &t.participant == p)
                && relay.is_none_or(|r| r == placed)
                && !placed.is_empty() =>
            {
                Ok(RelayGrant {
                    relay: placed,
                    tokens,
                })
            }
            _ => Err(Error::UnexpectedFrame),
        }
    }

    /// Short-lived TURN credentials.
    pub async fn turn_credentials(&self) -> Result<TurnGrant> {
        match self.request(ClientMessage::TurnCredentials).await? {
            ServerMessage::Turn {
                username,
                password,
                ttl_secs,
                uris,
                ..
            } => Ok(TurnGrant {
                username,
                password,
                ttl_secs,
                uris,
            }),
            _ => Err(Error::UnexpectedFrame),
        }
    }
}

fn ws_config() -> WebSocketConfig {
    let max = consts::MAX_FRAME_BYTES * consts::WS_HARD_MAX_FACTOR;
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_message_size(Some(max))
        .max_frame_size(Some(max))
}

async fn next_server_message(ws: &mut Ws) -> Result<ServerMessage> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => {
                return decode_server_frame(
                    t.as_bytes(),
                    consts::MAX_FRAME_BYTES * consts::WS_HARD_MAX_FACTOR,
                )
            }
            Some(Ok(Message::Close(_))) | None => return Err(Error::Disconnected),
            Some(Err(e)) => return Err(e.into()),
            Some(Ok(_)) => continue,
        }
    }
}

/// Connects (TLS unless the server is loopback, see [`sotto_tls::connect`]) and runs the
/// challenge-response handshake.
/// The server URLs a client may use (one, or a cluster's nodes) and the one it uses now.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Nodes {
    urls: Vec<String>,
    at: usize,
}

impl Nodes {
    /// The comma-separated URLs in `list` (blanks ignored), starting at the first.
    fn new(list: &str) -> Self {
        let mut urls: Vec<String> = list
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(str::to_owned)
            .collect();
        if urls.is_empty() {
            // an empty URL fails in `establish` as before
            urls.push(list.to_owned());
        }
        Self { urls, at: 0 }
    }

    fn len(&self) -> usize {
        self.urls.len()
    }

    fn current(&self) -> &str {
        self.urls.get(self.at).map_or("", String::as_str)
    }

    /// Moves to the next node (after the last: the first).
    fn advance(&mut self) {
        self.at = (self.at + 1) % self.urls.len().max(1);
    }
}

async fn establish(cfg: &ClientConfig, url: &str) -> Result<Ws> {
    let fut = async {
        let stream = sotto_tls::connect(url, &cfg.tls).await?;
        let (mut ws, _) =
            tokio_tungstenite::client_async_with_config(url, stream, Some(ws_config())).await?;
        let nonce = match next_server_message(&mut ws).await? {
            ServerMessage::Challenge { server, nonce } => {
                if server != cfg.server_id {
                    return Err(Error::Refused {
                        code: crate::ErrorCode::AuthFailed,
                    });
                }
                nonce
            }
            ServerMessage::Error { code, .. } => return Err(Error::Refused { code }),
            _ => return Err(Error::UnexpectedFrame),
        };
        let signature = B64(auth::sign(
            &cfg.identity,
            &cfg.server_id,
            &nonce.0,
            &cfg.username,
            cfg.device_id,
        )
        .to_vec());
        let msg = if cfg.register {
            ClientMessage::Register {
                username: cfg.username.clone(),
                device_id: cfg.device_id,
                identity_key: B64(cfg.identity.public().serialize().to_vec()),
                signature,
            }
        } else {
            ClientMessage::Login {
                username: cfg.username.clone(),
                device_id: cfg.device_id,
                signature,
            }
        };
        ws.send(Message::text(encode_client_frame(0, &msg)?))
            .await?;
        loop {
            match next_server_message(&mut ws).await? {
                ServerMessage::Authenticated { .. } => return Ok(ws),
                ServerMessage::Error { code, .. } => return Err(Error::Refused { code }),
                _ => continue,
            }
        }
    };
    tokio::time::timeout(cfg.request_timeout, fut)
        .await
        .map_err(|_| Error::Timeout)?
}

enum Lost {
    /// Every `Client` handle was dropped.
    Closed,
    /// The connection failed.
    Connection,
}

async fn run(
    cfg: ClientConfig,
    mut nodes: Nodes,
    ws: Ws,
    mut cmd_rx: mpsc::Receiver<Cmd>,
    ev_tx: mpsc::Sender<Event>,
) {
    let mut ws = ws;
    loop {
        if let Lost::Closed = drive(&mut ws, &mut cmd_rx, &ev_tx).await {
            let _ = ws.close(None).await;
            return;
        }
        let _ = ev_tx.try_send(Event::Disconnected);
        // the node just lost may be down: the next attempt goes to the next one (if any)
        nodes.advance();
        let mut delay = cfg.backoff_min;
        ws = loop {
            let jittered = delay.mul_f64(rand::thread_rng().gen_range(0.5..1.0));
            let sleep = tokio::time::sleep(jittered);
            tokio::pin!(sleep);
            // While disconnected, requests fail at once.
            loop {
                tokio::select! {
                    _ = &mut sleep => break,
                    c = cmd_rx.recv() => match c {
                        Some(Cmd::Request(_, reply)) => { let _ = reply.send(Err(Error::Disconnected)); }
                        None => return,
                    },
                }
            }
            match establish(&cfg, nodes.current()).await {
                Ok(ws) => break ws,
                Err(e) => {
                    tracing::debug!(error = %e, "reconnect failed");
                    nodes.advance();
                    delay = (delay * 2).min(cfg.backoff_max);
                }
            }
        };
        let _ = ev_tx.try_send(Event::Reconnected);
    }
}

async fn drive(ws: &mut Ws, cmd_rx: &mut mpsc::Receiver<Cmd>, ev_tx: &mpsc::Sender<Event>) -> Lost {
    let mut pending: HashMap<u64, Reply> = HashMap::new();
    let mut next_id = 1u64;
    loop {
        tokio::select! {
            c = cmd_rx.recv() => match c {
                None => return Lost::Closed,
                Some(Cmd::Request(msg, reply)) => {
                    let id = next_id;
                    next_id += 1;
                    let Ok(text) = encode_client_frame(id, &msg) else {
                        let _ = reply.send(Err(Error::InvalidArgument("unencodable request")));
                        continue;
                    };
                    if pending.len() >= 1024 {
                        pending.retain(|_, r| !r.is_closed());
                    }
                    pending.insert(id, reply);
                    if ws.send(Message::text(text)).await.is_err() {
                        return Lost::Connection;
                    }
                }
            },
            m = next_server_message(ws) => match m {
                Ok(ServerMessage::Envelope(e)) => {
                    if ev_tx.try_send(Event::Envelope(e)).is_err() {
                        // The application is not keeping up (or is gone): drop the connection
                        // instead of buffering without bound; the server redelivers.
                        return Lost::Connection;
                    }
                }
                Ok(ServerMessage::PrekeysLow { remaining }) => {
                    let _ = ev_tx.try_send(Event::PrekeysLow { remaining });
                }
                Ok(ServerMessage::Error { id: Some(id), code, .. }) => {
                    if let Some(r) = pending.remove(&id) {
                        let _ = r.send(Err(Error::Refused { code }));
                    }
                }
                Ok(ServerMessage::Error { id: None, code, .. }) => {
                    tracing::debug!(%code, "server error frame");
                }
                Ok(m) => {
                    if let Some(r) = m.request_id().and_then(|id| pending.remove(&id)) {
                        let _ = r.send(Ok(m));
                    }
                }
                Err(Error::Malformed(_)) | Err(Error::UnsupportedVersion(_)) => {
                    tracing::debug!("undecodable server frame ignored");
                }
                Err(_) => return Lost::Connection,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Nodes;

    #[test]
    fn nodes_are_tried_in_turn_and_wrap() {
        let mut n = Nodes::new("ws://127.0.0.1:1, ws://127.0.0.1:2,,ws://127.0.0.1:3");
        assert_eq!(n.len(), 3);
        let mut seen = Vec::new();
        for _ in 0..4 {
            seen.push(n.current().to_owned());
            n.advance();
        }
        assert_eq!(
            seen,
            [
                "ws://127.0.0.1:1",
                "ws://127.0.0.1:2",
                "ws://127.0.0.1:3",
                "ws://127.0.0.1:1"
            ]
        );
    }

    #[test]
    fn one_url_stays_put() {
        let mut n = Nodes::new("wss://sotto.example:443");
        n.advance();
        assert_eq!(n.current(), "wss://sotto.example:443");
        assert_eq!(n.len(), 1);
    }
}
