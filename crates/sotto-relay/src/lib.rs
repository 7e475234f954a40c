//! # sotto-relay: the untrusted selective forwarding unit
//!
//! Each participant holds one webrtc-rs peer connection to the relay. The relay forwards every
//! sender's RTP (whose payloads are SFrame ciphertext) to every other member of the room and
//! never holds a media key. Rooms are joined over a small JSON-over-WebSocket control channel;
//! the relay is the SDP offerer, with fixed receive slots so joins and leaves need no
//! renegotiation (`protocol-spec/relay.md`). It answers keyframe requests ([`feedback`]) and
//! repairs video loss hop by hop: it NACKs senders for what it did not receive and resends to
//! receivers, from a bounded buffer, the packets they NACK ([`nack`]); a resent packet is the
//! same ciphertext.
//!
//! With `capture_dir` set, every forwarded payload is written as the relay saw it
//! ([`capture`]), so anyone can check what an untrusted relay learns.
//!
//! The control channel is `wss://` when the relay is given a certificate and key
//! ([`RelayConfig::tls`], reloadable with [`Relay::reload_tls`]); [`client::join`] verifies it
//! against the system's roots plus the caller's extra CAs ([`tls::ClientTls`]) and refuses plain
//! `ws://` to a host that is not loopback.
//!
//! Only participants the signaling server vouches for get in: every `join` carries a relay
//! token ([`sotto_admission`]) bound to this relay's public URL, the room and the name, which
//! the relay verifies against [`RelayConfig::token_secret`] before it creates any state; a
//! token minted before its participant left the room does not admit it again.
//! On a host behind 1:1 NAT the offer's host candidates advertise [`RelayConfig::public_ip`]
//! ([`nat`]); media sockets bind ports of [`RelayConfig::udp_ports`] when given ([`ports`]).
//!
//! The `test-hooks` feature (off by default) adds knobs only tests use:
//! `Relay::set_outgoing_loss_per_mille`.

pub mod capture;
pub mod client;
pub mod consts;
pub mod feedback;
pub mod level;
pub mod nack;
pub mod nat;
pub mod ports;
pub mod protocol;
pub mod speakers;

mod forward;
mod leaves;
mod peer;
mod relay;
mod room;
mod session;
mod slot;

pub use relay::{serve, Relay, RelayConfig, RelayError, RelayStats};

/// Transport security (`sotto-tls`): [`tls::ClientTls`] for [`client::join`], [`tls::TlsFiles`]
/// for [`RelayConfig::tls`].
pub use sotto_tls as tls;

/// Relay tokens: [`admission::RelaySecret`] for [`RelayConfig::token_secret`],
/// [`admission::RelayToken`] for [`client::join`].
pub use sotto_admission as admission;

/// Locks `m`, taking a poisoned lock over (one panicked task does not stop the relay).
fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
