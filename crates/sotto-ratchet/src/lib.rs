//! # sotto-ratchet
//!
//! The Signal protocol — XEdDSA identity signatures, PQXDH (X25519 + Kyber1024) session setup
//! and the Double Ratchet with SPQR v1, the sparse post-quantum ratchet (ML-KEM-768 braid,
//! "triple ratchet", [`spqr`]) — byte-compatible with libsignal 0.92.2 and 0.103.0 (which
//! require SPQR), 0.90.0, and 0.72.1 (which has no SPQR: sessions under the default
//! [`SpqrPolicy::Preferred`] downgrade for it; [`SpqrPolicy::Required`] refuses it).
//!
//! The protocol core does no network I/O and reads no clock: randomness
//! (`&mut (impl RngCore + CryptoRng)`) and time (`SystemTime`) are parameters. The only I/O
//! is the optional encrypted file store (`file-store` feature, on by default). The normative
//! description of every format, label and limit is `protocol-spec/ratchet.md`.
//!
//! ```
//! use std::time::SystemTime;
//! use sotto_ratchet::*;
//!
//! let mut rng = rand::thread_rng();
//! let now = SystemTime::now();
//! // Bob publishes a bundle.
//! let bob_id = IdentityKeyPair::generate(&mut rng);
//! let mut bob = InMemoryStore::new(bob_id.clone(), 2);
//! let spk = SignedPreKeyRecord::generate(1, 0, &bob_id, &mut rng);
//! let kpk = KyberPreKeyRecord::generate(1, 0, &bob_id, &mut rng);
//! let opk = PreKeyRecord::generate(7, &mut rng);
//! let bundle = PreKeyBundle::from_records(2, 1, bob_id.public(), Some(&opk), &spk, &kpk);
//! bob.save_signed_pre_key(spk)?;
//! bob.save_kyber_pre_key(kpk, true)?;
//! bob.save_pre_key(opk)?;
//!
//! // Alice starts a session and sends.
//! let mut alice = InMemoryStore::new(IdentityKeyPair::generate(&mut rng), 1);
//! let (to_bob, to_alice) = (ProtocolAddress::new("bob", 1), ProtocolAddress::new("alice", 1));
//! process_prekey_bundle(&to_bob, &mut alice, &bundle, now, &mut rng)?;
//! let m = encrypt_with_rng(&to_bob, &mut alice, b"hi", now, &mut rng)?;
//! assert_eq!(m.message_type(), 3); // PreKeySignalMessage until Bob replies
//! assert_eq!(decrypt(&to_alice, &mut bob, &m, &mut rng)?, b"hi");
//! let r = encrypt_with_rng(&to_alice, &mut bob, b"hello", now, &mut rng)?;
//! assert_eq!(decrypt(&to_bob, &mut alice, &r, &mut rng)?, b"hello");
//! // Both sides run SPQR: the braid starts at epoch 1.
//! assert_eq!(alice.load_session(&to_bob)?.and_then(|r| r.spqr_epoch()), Some(1));
//! # Ok::<(), sotto_ratchet::Error>(())
//! ```

pub mod addresses;
pub mod consts;
mod crypto;
pub mod curve;
mod error;
#[cfg(feature = "file-store")]
mod file_store;
mod fingerprint;
mod identity;
pub mod kem;
mod message;
mod prekeys;
pub mod proto;
pub mod ratchet;
mod record;
mod session;
pub mod spqr;
mod store;

pub use curve::{KeyPair, PrivateKey, PublicKey};
pub use error::{Error, Result};
#[cfg(feature = "file-store")]
pub use file_store::{FileStore, StoreKeySource};
pub use fingerprint::Fingerprint;
pub use identity::{IdentityKey, IdentityKeyPair};
pub use kem::{KyberKeyPair, KyberPublicKey, KyberSecretKey};
pub use message::{CiphertextMessage, PreKeySignalMessage, SignalMessage};
pub use prekeys::{
    plan_prekey_rotation, KyberPreKeyRecord, PreKeyBundle, PreKeyRecord, PrekeyRotationPlan,
    SignedPreKeyRecord, SIGNED_PREKEY_GRACE_MS, SIGNED_PREKEY_ROTATE_AFTER_MS,
};
pub use record::SessionRecord;
pub use session::{
    decrypt, decrypt_prekey_message, decrypt_signal_message, decrypt_with, encrypt,
    encrypt_with_rng, process_prekey_bundle, process_prekey_bundle_with_policy, DecryptOptions,
};
pub use spqr::SpqrPolicy;
pub use store::{
    Direction, IdentityChange, IdentityKeyStore, InMemoryStore, KyberPreKeyStore, PreKeyStore,
    ProtocolAddress, ProtocolStore, SessionStore, SignedPreKeyStore,
};

/// Hooks for known-answer tests against published libsignal values. Not a stable API.
#[doc(hidden)]
pub mod testing {
    use crate::curve::PublicKey;
    use crate::identity::IdentityKey;
    use crate::ratchet::{derive_initial_keys_with_label, ChainKey};

    /// Drops the SPQR state of the record's current session (as after a downgrade by a peer
    /// without SPQR), so tests can reach the Double Ratchet's own limits.
    pub fn strip_spqr(record: &mut crate::SessionRecord) {
        if let Some(s) = record.current.as_mut() {
            s.pq = crate::spqr::SpqrState::default();
        }
    }

    /// `(root_key, chain_key)` from a key-agreement secret and HKDF label.
    pub fn initial_keys(label: &[u8], secret: &[u8]) -> ([u8; 32], [u8; 32]) {
        let (rk, ck) = derive_initial_keys_with_label(label, secret);
        (*rk.as_bytes(), *ck.key())
    }

    /// One symmetric ratchet step: `(seed, cipher_key, mac_key, iv, next_chain_key)`.
    #[allow(clippy::type_complexity)]
    pub fn chain_step(chain_key: [u8; 32]) -> ([u8; 32], [u8; 32], [u8; 32], [u8; 16], [u8; 32]) {
        let ck = ChainKey::new(chain_key, 0);
        let seed = ck.message_key_seed();
        let keys = seed.keys();
        let next = ck.next().map(|n| *n.key()).unwrap_or([0; 32]);
        (*seed.seed(), keys.cipher_key, keys.mac_key, keys.iv, next)
    }

    /// The message an adversary holding `sender`'s Double Ratchet state but not its SPQR state
    /// could make (one who broke the X25519 ratchet, the threat SPQR exists for): the next
    /// message of the current sending chain, keyed without an SPQR salt, with `pq_ratchet` as
    /// field 5. `None` when the record has no current state.
    pub fn forge_with_double_ratchet_keys_only(
        sender: &crate::SessionRecord,
        plaintext: &[u8],
        pq_ratchet: &[u8],
    ) -> Option<crate::SignalMessage> {
        let s = sender.current.as_ref()?;
        let ck = &s.sender_chain.chain_key;
        let keys = ck.message_key_seed().keys();
        let ciphertext = crate::crypto::aes256_cbc_encrypt(&keys.cipher_key, &keys.iv, plaintext);
        Some(crate::message::SignalMessage::new(
            s.version,
            &keys.mac_key,
            s.sender_chain.ratchet_key.public_key,
            ck.index(),
            s.previous_counter,
            ciphertext,
            &s.local_identity,
            &s.remote_identity,
            pq_ratchet,
        ))
    }

    /// Serializes a SignalMessage with an explicit MAC key (as libsignal's `SignalMessage::new`).
    #[allow(clippy::too_many_arguments)]
    pub fn signal_message(
        version: u8,
        mac_key: &[u8; 32],
        ratchet_key: PublicKey,
        counter: u32,
        previous_counter: u32,
        ciphertext: Vec<u8>,
        sender: &IdentityKey,
        receiver: &IdentityKey,
    ) -> Vec<u8> {
        crate::message::SignalMessage::new(
            version,
            mac_key,
            ratchet_key,
            counter,
            previous_counter,
            ciphertext,
            sender,
            receiver,
            &[],
        )
        .serialized()
        .to_vec()
    }
}
