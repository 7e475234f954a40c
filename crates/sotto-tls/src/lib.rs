//! # sotto-tls
//!
//! Transport security for sotto's two WebSocket channels, the signaling connection
//! (`sotto-server`) and the relay's control channel (`sotto-relay`); the rules are normative in
//! `protocol-spec/signaling.md` and `relay.md` ("Transport security").
//!
//! * **Clients** connect with [`connect`]: `wss://` is TLS 1.3 or 1.2 (rustls, `ring`
//!   provider), the server verified against the system's roots plus any extra CA certificates
//!   given ([`ClientTls`]). There is no switch to skip verification. Plain `ws://` is refused
//!   with [`Error::PlaintextToRemoteHost`], before anything is sent, unless the host is loopback
//!   (127.0.0.0/8, `::1`, `localhost`).
//! * **Servers** run [`accept`] on each TCP connection: TLS with the certificate chain and key
//!   of [`TlsFiles`] when given, plain otherwise. [`ServerTls::reload`] reads the files again
//!   and swaps the configuration for connections accepted afterwards; open connections keep
//!   theirs, and a bad file keeps the old certificate in use.
//!
//! The WebSocket handshake runs over the returned [`Stream`], with the same URL:
//!
//! ```no_run
//! # async fn demo() -> sotto_tls::Result<()> {
//! use sotto_tls::{check_url, connect, ClientTls, Error};
//! // the system's roots plus a private CA
//! let tls = ClientTls::with_ca_files(["/etc/sotto/ca.pem"])?;
//! let stream = connect("wss://sotto.example.org:8443", &tls).await?;
//! assert!(stream.is_tls());
//! # Ok(()) }
//! ```
//!
//! ```
//! use sotto_tls::{check_url, Error};
//! assert!(check_url("ws://127.0.0.1:8443").is_ok());
//! assert!(matches!(check_url("ws://sotto.example.org:8443"), Err(Error::PlaintextToRemoteHost)));
//! ```

mod client;
pub mod consts;
mod error;
mod pem;
mod server;
mod stream;

pub use client::{
    check_url, connect, connect_tls, is_loopback_host, is_plain_loopback, is_tls_url, ClientTls,
};
pub use error::{Error, Result};
/// Why a server's certificate was refused ([`Error::Certificate`]).
pub use rustls::CertificateError;
pub use server::{accept, warn_if_plaintext_exposed, ServerTls, TlsFiles};
pub use stream::Stream;

/// The one crypto provider: *ring* (aws-lc-rs needs cmake to build).
fn provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::ring::default_provider())
}
