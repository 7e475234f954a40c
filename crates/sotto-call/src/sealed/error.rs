//! [`SealedError`]: what can go wrong sealing or opening a call message.

use crate::messages::MessageError;

/// What can go wrong sealing or opening a call message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SealedError {
    /// The signaling server or connection failed.
    #[error("signaling: {0}")]
    Signaling(#[from] sotto_server::Error),
    /// The ratchet refused (bad MAC, replay, untrusted identity, no session...).
    #[error("ratchet: {0}")]
    Ratchet(#[from] sotto_ratchet::Error),
    /// The envelope is not a ratchet message.
    #[error("envelope is not a sotto ratchet message")]
    NotRatchet,
    /// The decrypted content is not a valid call message.
    #[error("call message: {0}")]
    Message(#[from] MessageError),
    /// The peer's bundle is malformed.
    #[error("peer's prekey bundle is malformed: {0}")]
    BadBundle(String),
    /// The server now binds a different identity key to the peer's device than the one we
    /// pinned: possibly a server (or an attacker) substituting keys. Refused until the user
    /// verifies the new safety number.
    #[error("{0}'s identity key changed: verify the safety number before calling")]
    IdentityChanged(String),
    /// A persistent device's files are missing, malformed or not writable.
    #[error("device: {0}")]
    Device(String),
}
