//! # sotto-ratchet
//!
//! The Signal protocol — XEdDSA identity signatures, PQXDH (X25519 + Kyber1024) session setup
//! and the Double Ratchet — byte-compatible with libsignal 0.90.0 (sessions without SPQR).
//!
//! The crate does no network I/O and reads no clock: randomness (`&mut (impl RngCore +
//! CryptoRng)`) and time (`SystemTime`) are parameters. The normative description of every
//! format, label and limit is `protocol-spec/ratchet.md`.
//!
//! ```
//! use sotto_ratchet::IdentityKeyPair;
//! let mut rng = rand::thread_rng();
//! let me = IdentityKeyPair::generate(&mut rng);
//! let sig = me.sign(&mut rng, b"challenge");
//! assert!(me.public().verify_signature(b"challenge", &sig));
//! assert_eq!(me.public().serialize()[0], 0x05);
//! ```

pub mod consts;
pub mod curve;
mod error;
mod identity;
pub mod proto;

pub use curve::{KeyPair, PrivateKey, PublicKey};
pub use error::{Error, Result};
pub use identity::{IdentityKey, IdentityKeyPair};
