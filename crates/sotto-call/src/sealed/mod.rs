//! Sealed call setup: call messages travel inside the pair's sotto-ratchet session, as the
//! opaque ciphertext of signaling envelopes. The signaling server routes bytes it cannot read;
//! the SDP inside (and so the DTLS fingerprint) is authenticated by the devices' identity keys.
//!
//! Envelope ciphertext = `type (1 byte: 2 = SignalMessage, 3 = PreKeySignalMessage) ‖ message`.
//!
//! Layout: `device` (the [`Device`] and its accessors), `register` (registration, sign-in,
//! loading a persistent device), `profile` (a persistent device's directory: `device.json`, the
//! lock), `store` (the ratchet store, in memory or on disk), `prekeys` (publishing and rotating
//! prekeys), `replenish` (when to answer "prekeys low"), `session` (session setup and identity checks), `envelope` (sealing, opening and
//! receiving call messages), `safety` (safety numbers, trusting a new identity key), `error`.

mod device;
mod envelope;
mod error;
mod prekeys;
mod profile;
mod register;
mod replenish;
mod safety;
mod session;
mod store;

use std::sync::Mutex;

pub use crate::consts::{
    CALL_ENVELOPE_TTL_SECS, MAX_SEEN_ENVELOPES, MAX_STORED_ONE_TIME_PREKEYS, ONE_TIME_PREKEYS,
    PREKEY_REPLENISH_BACKOFF_MAX, PREKEY_REPLENISH_BACKOFF_MIN, SAFETY_NUMBER_VERSION,
};

pub use device::Device;
pub use envelope::Incoming;
pub use error::SealedError;
pub use prekeys::PrekeyRefresh;
pub use profile::{
    read_profile, DeviceProfile, LOCK_FILE, MAX_PROFILE_BYTES, PROFILE_FILE, PROFILE_VERSION,
    STORE_FILE,
};
pub use replenish::{Replenish, ReplenishBackoff};
pub use safety::OfferedIdentity;

/// Every session of the calling stack runs SPQR (the sparse post-quantum ratchet): every sotto
/// device speaks it, so a message without it (a downgrade) is refused rather than accepted
/// (`protocol-spec/ratchet.md` §12).
const SPQR_POLICY: sotto_ratchet::SpqrPolicy = sotto_ratchet::SpqrPolicy::Required;

/// Locks `m`, poisoned or not.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
