//! Devices registered on the test server ([`SERVER_ID`]): ephemeral or persistent, engines
//! running them, and call messages between them.

use sotto_server::tls::ClientTls;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sotto_call::engine::{Engine, MediaFactory};
use sotto_call::messages::{Body, CallId, CallMessage};
use sotto_call::sealed::{Device, SealedError};
use sotto_call::state::{CallMachine, Role};
use sotto_ratchet::StoreKeySource;
use sotto_server::Events;

use crate::server::SERVER_ID;

/// How long [`recv`] waits for the next call message.
pub const RECV_TIMEOUT: Duration = Duration::from_secs(20);

/// Registers `who` (an in-memory device) at the server `url`.
pub async fn device(url: &str, who: &str) -> (Device, Events) {
    Device::register(url, &ClientTls::default(), SERVER_ID, who)
        .await
        .unwrap()
}

/// Registers `who` at the server `url` and runs an engine for it with `media`; its calls go
/// through a relay if `relay` says which (or that the server places them), else peer to peer.
pub async fn engine(
    url: &str,
    who: &str,
    media: MediaFactory,
    machine: fn(Role) -> CallMachine,
    relay: Option<sotto_call::engine::RelayChoice>,
) -> Engine {
    let (dev, events) = device(url, who).await;
    Engine::spawn_with_relay(dev, events, media, machine, relay)
}

/// A fresh 32-byte store key file `NAME.key` in `dir`.
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
    Device::register_persistent(
        url,
        &ClientTls::default(),
        SERVER_ID,
        user,
        dir,
        StoreKeySource::KeyFile(key),
    )
    .await
}

/// Loads the persistent device in `dir` (store key in `key`) and signs in with it, as after a
/// restart.
pub async fn load(dir: &Path, key: &Path) -> Result<(Device, Events), SealedError> {
    Device::load(
        dir,
        StoreKeySource::KeyFile(key),
        None,
        &ClientTls::default(),
    )
    .await
}

/// A call message with `body` in a fresh call.
pub fn msg(body: Body) -> CallMessage {
    CallMessage::new(CallId::random(), 0, body)
}

/// The next call message, or the error opening it; panics after [`RECV_TIMEOUT`].
pub async fn recv(dev: &Device, ev: &mut Events) -> Result<CallMessage, SealedError> {
    tokio::time::timeout(RECV_TIMEOUT, dev.next(ev))
        .await
        .expect("a message in time")
        .expect("client open")
        .map(|i| i.message)
}
