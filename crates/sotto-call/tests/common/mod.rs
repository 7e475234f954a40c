//! Helpers for the tests of persistent devices against the real signaling server (SQLite on
//! disk, real WebSocket). Each test file uses a different subset.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sotto_call::messages::{Body, CallId, CallMessage};
use sotto_call::sealed::{Device, SealedError};
use sotto_ratchet::StoreKeySource;
use sotto_server::{Events, Server, ServerConfig, SqliteStore};

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
