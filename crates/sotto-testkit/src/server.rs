//! The signaling server on loopback, its SQLite database in a test directory.

use std::path::Path;
use std::sync::Arc;

use sotto_server::{Server, ServerConfig, SqliteStore};

/// The server id every test server and device uses.
pub const SERVER_ID: &str = "test.sotto";

/// A signaling server on `127.0.0.1:0` with its SQLite file (`signal.db`) in `dir`.
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

/// The server's entry for `relay`: its public URL and its token secret.
pub fn relay_entry(relay: &crate::relay::TestRelay) -> sotto_server::RelayEntry {
    sotto_server::RelayEntry {
        url: relay.public_url().to_owned(),
        secret: relay.secret.clone(),
    }
}

/// [`server`] that mints join tokens for `relay` (its calls through it are admitted).
pub async fn server_for_relay(dir: &Path, relay: &crate::relay::TestRelay) -> Server {
    let mut cfg = ServerConfig::new(SERVER_ID);
    cfg.relays = vec![relay_entry(relay)];
    server_with(dir, cfg).await
}
