//! Shared helpers: a real server on 127.0.0.1:0, real clients, raw WebSocket access.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use sotto_ratchet::IdentityKeyPair;
use sotto_server::protocol::{
    decode_server_frame, encode_client_frame, ClientMessage, ServerMessage, B64,
};
use sotto_server::{Client, ClientConfig, Events, MemoryStore, Server, ServerConfig, Store};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const SERVER_ID: &str = "test.sotto";

pub fn identity() -> IdentityKeyPair {
    IdentityKeyPair::generate(&mut rand::thread_rng())
}

pub async fn start(cfg: ServerConfig, store: Arc<dyn Store>) -> Server {
    Server::bind(cfg, store, "127.0.0.1:0").await.unwrap()
}

pub async fn start_default() -> Server {
    start(ServerConfig::new(SERVER_ID), Arc::new(MemoryStore::new())).await
}

pub fn client_cfg(server: &Server, user: &str, device: u32, id: IdentityKeyPair) -> ClientConfig {
    let mut c = ClientConfig::new(server.url(), SERVER_ID, user, device, id);
    c.backoff_min = Duration::from_millis(20);
    c.backoff_max = Duration::from_millis(200);
    c.request_timeout = Duration::from_secs(5);
    c
}

/// Registers a fresh user with a fresh identity.
pub async fn register(server: &Server, user: &str) -> (Client, Events, IdentityKeyPair) {
    let id = identity();
    let (c, e) = Client::connect(client_cfg(server, user, 1, id.clone()).register())
        .await
        .unwrap();
    (c, e, id)
}

pub type RawWs = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A raw WebSocket connection, past the challenge (returned).
pub async fn raw_connect(url: &str) -> (RawWs, Vec<u8>) {
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    match raw_recv(&mut ws).await {
        Some(ServerMessage::Challenge { nonce, .. }) => (ws, nonce.0),
        other => panic!("expected challenge, got {other:?}"),
    }
}

/// A raw connection authenticated (registering) as `user`/1.
pub async fn raw_register(url: &str, user: &str, key: &IdentityKeyPair) -> RawWs {
    let (mut ws, nonce) = raw_connect(url).await;
    match raw_register_on(&mut ws, &nonce, user, key).await {
        Some(ServerMessage::Authenticated { .. }) => ws,
        other => panic!("expected authenticated, got {other:?}"),
    }
}

/// A raw WebSocket connection to `server` from loopback address `ip` (Linux routes all of
/// 127/8 to lo), past the challenge (returned).
pub async fn raw_connect_from(ip: [u8; 4], server: &Server) -> (RawWs, Vec<u8>) {
    let tcp = tokio::net::TcpSocket::new_v4().unwrap();
    tcp.bind((std::net::Ipv4Addr::from(ip), 0).into()).unwrap();
    let tcp = tcp.connect(server.local_addr()).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(server.url(), MaybeTlsStream::Plain(tcp))
        .await
        .unwrap();
    match raw_recv(&mut ws).await {
        Some(ServerMessage::Challenge { nonce, .. }) => (ws, nonce.0),
        other => panic!("expected challenge, got {other:?}"),
    }
}

/// Sends `register` as `user`/1 with `key` on a connection that got `nonce`; the answer.
pub async fn raw_register_on(
    ws: &mut RawWs,
    nonce: &[u8],
    user: &str,
    key: &IdentityKeyPair,
) -> Option<ServerMessage> {
    let sig = sotto_server::auth::sign(key, SERVER_ID, nonce, user, 1);
    raw_send(
        ws,
        0,
        &ClientMessage::Register {
            username: user.into(),
            device_id: 1,
            identity_key: B64(key.public().serialize().to_vec()),
            signature: B64(sig.to_vec()),
        },
    )
    .await;
    raw_recv(ws).await
}

pub async fn raw_send(ws: &mut RawWs, id: u64, msg: &ClientMessage) {
    ws.send(Message::text(encode_client_frame(id, msg).unwrap()))
        .await
        .unwrap();
}

/// Next decoded server frame; `None` on close. Times out after 5 s.
pub async fn raw_recv(ws: &mut RawWs) -> Option<ServerMessage> {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("no frame within 5 s");
        match m {
            Some(Ok(Message::Text(t))) => {
                return Some(decode_server_frame(t.as_bytes(), usize::MAX).unwrap())
            }
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
            Some(Ok(_)) => continue,
        }
    }
}

/// Asserts the connection is closed within 5 s (after draining frames).
pub async fn assert_closed(ws: &mut RawWs) {
    while raw_recv(ws).await.is_some() {}
}

pub fn error_code(m: &Option<ServerMessage>) -> Option<sotto_server::ErrorCode> {
    match m {
        Some(ServerMessage::Error { code, .. }) => Some(*code),
        _ => None,
    }
}

/// A signed prekey and a KEM prekey signed by `key`, as a device publishes them (ids 1 and 2).
pub fn signed_prekeys(
    key: &IdentityKeyPair,
) -> (
    sotto_server::protocol::SignedPreKey,
    sotto_server::protocol::SignedPreKey,
) {
    let mut rng = rand::thread_rng();
    let s = sotto_ratchet::SignedPreKeyRecord::generate(1, 0, key, &mut rng);
    let k = sotto_ratchet::KyberPreKeyRecord::generate(2, 0, key, &mut rng);
    (
        sotto_server::protocol::SignedPreKey {
            id: 1,
            public: B64(s.key_pair.public_key.serialize().to_vec()),
            signature: B64(s.signature.to_vec()),
        },
        sotto_server::protocol::SignedPreKey {
            id: 2,
            public: B64(k.key_pair.public_key.serialize()),
            signature: B64(k.signature.to_vec()),
        },
    )
}

/// One-time prekeys (real X25519 public keys) under `ids`.
pub fn one_time_prekeys(
    ids: impl IntoIterator<Item = u32>,
) -> Vec<sotto_server::protocol::OneTimePreKey> {
    let mut rng = rand::thread_rng();
    ids.into_iter()
        .map(|id| sotto_server::protocol::OneTimePreKey {
            id,
            public: B64(sotto_ratchet::KeyPair::generate(&mut rng)
                .public_key
                .serialize()
                .to_vec()),
        })
        .collect()
}

pub use sotto_testkit::store::{Backend, StoreFixture};

/// A test's database on one backend and the directory it lives in (keep it alive with the
/// server).
pub struct Db {
    pub fixture: StoreFixture,
    pub dir: tempfile::TempDir,
}

impl Db {
    /// The database on `backend`, or `None` where PostgreSQL cannot run (reason on stderr).
    pub fn new(backend: Backend) -> Option<Db> {
        let dir = tempfile::tempdir().unwrap();
        let fixture = StoreFixture::new(backend, dir.path())?;
        Some(Db { fixture, dir })
    }

    /// A new store handle on it (a new connection for PostgreSQL).
    pub fn store(&self) -> Arc<dyn Store> {
        self.fixture.open()
    }
}

/// A server with `cfg` on a fresh database on `backend`, or `None` where PostgreSQL cannot run.
pub async fn start_on(backend: Backend, cfg: ServerConfig) -> Option<(Server, Db)> {
    let db = Db::new(backend)?;
    let server = start(cfg, db.store()).await;
    Some((server, db))
}

/// `mod NAME { sqlite(), postgres() }`: two tests running the async `BODY(Backend)` on each
/// backend, with the `#[tokio::test]` arguments given (if any).
#[macro_export]
macro_rules! on_both_backends {
    ($name:ident, $body:ident $(, ($($arg:tt)*))?) => {
        mod $name {
            #[tokio::test $(($($arg)*))?]
            async fn sqlite() {
                super::$body($crate::common::Backend::Sqlite).await
            }
            #[tokio::test $(($($arg)*))?]
            async fn postgres() {
                super::$body($crate::common::Backend::Postgres).await
            }
        }
    };
}

/// A fresh relay token secret (what `sotto relay` and the server share).
pub fn relay_secret() -> sotto_server::admission::RelaySecret {
    use sotto_server::admission::RelaySecret;
    let text = RelaySecret::generate_file_text(&mut rand::rngs::OsRng);
    RelaySecret::from_bytes(text.as_bytes()).unwrap()
}

/// Owned names.
pub fn names(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// The code a request was refused with (panics if it was not refused).
pub fn refusal<T: std::fmt::Debug>(r: Result<T, sotto_server::Error>) -> sotto_server::ErrorCode {
    match r {
        Err(sotto_server::Error::Refused { code }) => code,
        other => panic!("not refused: {other:?}"),
    }
}

/// The relay at `relay`'s verdict on token `t` for `who` joining `room` now.
pub fn admits(
    relay: &str,
    secret: &sotto_server::admission::RelaySecret,
    t: &sotto_server::protocol::ParticipantToken,
    room: &str,
    who: &str,
) -> Result<(), sotto_server::admission::TokenError> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let e = sotto_server::admission::Expected {
        relay,
        room,
        participant: who,
        now_ms: now,
        left_at_ms: None,
    };
    sotto_server::admission::verify(secret, Some(t.token.as_str()), &e).map(|_| ())
}
