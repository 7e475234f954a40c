//! # sotto-server
//!
//! The signaling server for sotto and its client library. The server is trusted for availability
//! only: it binds usernames to identity public keys, hands out prekey bundles (each one-time
//! prekey exactly once) and stores-and-forwards opaque envelopes until the recipient acknowledges
//! them. It never sees a key that could open a call. The wire format is
//! `protocol-spec/signaling.md`.
//!
//! With a certificate and key ([`ServerConfig::tls`]) the server speaks `wss://`, and
//! [`Server::reload_tls`] swaps the certificate without dropping a connection. Clients connect to
//! `wss://` verifying the server against the system's roots plus [`ClientConfig::tls`]'s extra
//! CAs, and refuse plain `ws://` to a host that is not loopback ([`tls::Error`]).
//!
//! ```no_run
//! # async fn demo() -> sotto_server::Result<()> {
//! use std::sync::Arc;
//! use sotto_server::{Client, ClientConfig, Server, ServerConfig, MemoryStore};
//! let server = Server::bind(ServerConfig::new("sotto.example"), Arc::new(MemoryStore::new()), "127.0.0.1:0").await?;
//! let id = sotto_ratchet::IdentityKeyPair::generate(&mut rand::thread_rng());
//! let (alice, mut events) = Client::connect(ClientConfig::new(server.url(), "sotto.example", "alice", 1, id).register()).await?;
//! alice.send("alice", 1, 60, b"opaque".to_vec()).await?;
//! let env = events.next_envelope().await.ok_or(sotto_server::Error::Disconnected)?;
//! alice.ack(env.envelope_id).await?;
//! server.shutdown().await;
//! # Ok(()) }
//! ```

pub mod address_limits;
mod answer;
pub mod auth;
pub mod cli;
pub mod client;
pub mod clock;
pub mod config;
pub mod consts;
mod doorbell;
mod error;
pub mod fetch_limits;
pub mod limits;
pub mod metrics;
pub mod prekey_check;
pub mod protocol;
pub mod relay_rooms;
mod server;
pub mod store;
pub mod turn;
mod worker;

pub use client::{Client, ClientConfig, Event, Events, RelayGrant};
pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{Error, ErrorCode, Result};
pub use protocol::{decode_client_frame, Bundle, Envelope};
pub use server::{serve, Limits, NatsUrl, Server, ServerConfig};
pub use store::{Durability, MemoryStore, PgStore, PgUrl, SqliteStore, Store};
pub use turn::TurnConfig;

pub use server::RelayEntry;
/// Relay tokens (`sotto-admission`): [`admission::RelaySecret`] for [`RelayEntry`].
pub use sotto_admission as admission;

/// Transport security (`sotto-tls`): [`tls::ClientTls`] for clients, [`tls::TlsFiles`] for the
/// server, and the typed [`tls::Error`] carried by [`Error::Tls`].
pub use sotto_tls as tls;
