//! Helpers shared by the integration tests: persistent devices against the real signaling
//! server (SQLite on disk, real WebSocket), and media peers in a room of the real sotto-relay.
//! Each test file uses a different subset.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sotto_call::media::{MediaConfig, MediaPeer, TapFrame};
use sotto_call::messages::{Body, CallId, CallMessage};
use sotto_call::sealed::{Device, SealedError};
use sotto_ratchet::StoreKeySource;
use sotto_relay::client::{join, RoomHandle};
use sotto_server::{Events, Server, ServerConfig, SqliteStore};
use tokio::sync::mpsc;

pub const SERVER_ID: &str = "test.sotto";
pub const T: Duration = Duration::from_secs(20);

/// A signaling server on loopback with its SQLite file in `dir`.
pub async fn server(dir: &Path) -> Server {
    server_with(dir, ServerConfig::new(SERVER_ID)).await
}

/// [`server`] with a given configuration (same database file).
pub async fn server_with(dir: &Path, cfg: ServerConfig) -> Server {
    let store = SqliteStore::open(&dir.join("signal.db"), Default::default()).unwrap();
    Server::bind(cfg, Arc::new(store), "127.0.0.1:0")
        .await
        .unwrap()
}

/// A fresh 32-byte store key file in `dir`.
pub fn key_file(dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(format!("{name}.key"));
    std::fs::write(&p, rand::random::<[u8; 32]>()).unwrap();
    p
}

/// Registers `user` as a persistent device in `dir` with the key in `key`.
pub async fn register(
    url: &str,
    user: &str,
    dir: &Path,
    key: &Path,
) -> Result<(Device, Events), SealedError> {
    Device::register_persistent(url, SERVER_ID, user, dir, StoreKeySource::KeyFile(key)).await
}

pub fn msg(body: Body) -> CallMessage {
    CallMessage::new(CallId::random(), 0, body)
}

/// The next call message, or the error opening it.
pub async fn recv(dev: &Device, ev: &mut Events) -> Result<CallMessage, SealedError> {
    tokio::time::timeout(T, dev.next(ev))
        .await
        .expect("a message in time")
        .expect("client open")
        .map(|i| i.message)
}

/// A media peer joined to a relay room, with the tap of every frame it sent or decrypted.
pub struct P {
    pub name: String,
    pub peer: std::sync::Arc<MediaPeer>,
    pub tap: mpsc::UnboundedReceiver<TapFrame>,
    pub room: RoomHandle,
}

/// Joins `room` at the relay `url` with a loopback media configuration.
pub async fn participant(url: &str, room: &str, name: &str, id: u64) -> P {
    participant_with(url, room, name, MediaConfig::loopback(id).unwrap()).await
}

/// [`participant`] with a given media configuration (its tap is replaced).
pub async fn participant_with(url: &str, room: &str, name: &str, mut c: MediaConfig) -> P {
    let (tx, rx) = mpsc::unbounded_channel();
    c.tap = Some(tx);
    let (peer, _ev) = MediaPeer::new(c).await.unwrap();
    let peer = std::sync::Arc::new(peer);
    let p2 = peer.clone();
    let handle = join(url, room, name, |offer| async move {
        p2.accept_offer(&offer).await
    })
    .await
    .unwrap();
    assert!(
        peer.wait_connected(Duration::from_secs(20)).await,
        "{name} not connected to the relay"
    );
    P {
        name: name.into(),
        peer,
        tap: rx,
        room: handle,
    }
}
