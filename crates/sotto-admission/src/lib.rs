//! # sotto-admission: who may join a relay room
//!
//! The one implementation of relay tokens. The signaling server [`mint`]s a token for each
//! member of a call; the relay [`verify`]s it before it creates any state for a `join`. A token
//! binds (relay URL, room, participant, issued at, expiry) with HMAC-SHA256 under a
//! [`RelaySecret`] the two share (like coturn's REST scheme); the claims travel in clear. No
//! I/O except [`RelaySecret::load`] reading the secret file; time is a parameter.
//!
//! ```
//! use sotto_admission::{mint, verify, Claims, Expected, RelaySecret, TokenError};
//! let secret = RelaySecret::from_bytes(b"0123456789abcdef0123456789abcdef").unwrap();
//! let claims = Claims {
//!     relay: "wss://relay.example.org:8443".into(),
//!     room: "5f0c".into(),
//!     participant: "bob".into(),
//!     issued_at_ms: 1_000,
//!     expires_at_ms: 61_000,
//! };
//! let token = mint(&secret, &claims).unwrap();
//! let expect = Expected {
//!     relay: "wss://relay.example.org:8443",
//!     room: "5f0c",
//!     participant: "bob",
//!     now_ms: 2_000,
//!     left_at_ms: None,
//! };
//! assert_eq!(verify(&secret, Some(token.as_str()), &expect), Ok(claims));
//! let mallory = Expected { participant: "mallory", ..expect };
//! assert_eq!(verify(&secret, Some(token.as_str()), &mallory), Err(TokenError::WrongParticipant));
//! ```

mod address;
pub mod consts;
mod secret;
mod token;

pub use address::{address_key, IPV6_PREFIX_BITS};
pub use secret::{RelaySecret, SecretError};
pub use token::{mint, verify, Claims, Expected, MintError, RelayToken, TokenError};
