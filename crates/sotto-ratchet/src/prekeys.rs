//! One-time prekeys, signed prekeys, Kyber prekeys and the bundle a contact publishes.

use rand_core::{CryptoRng, RngCore};

use crate::curve::{KeyPair, PublicKey, SIGNATURE_LENGTH};
use crate::error::{Error, Result};
use crate::identity::{IdentityKey, IdentityKeyPair};
use crate::kem::{KyberKeyPair, KyberPublicKey};

/// A one-time Curve25519 prekey (consumed by the first session that uses it).
#[derive(Clone, Debug)]
pub struct PreKeyRecord {
    /// Identifier published with the key.
    pub id: u32,
    /// The key pair.
    pub key_pair: KeyPair,
}

impl PreKeyRecord {
    /// A fresh prekey.
    pub fn generate(id: u32, rng: &mut (impl RngCore + CryptoRng)) -> Self {
        Self {
            id,
            key_pair: KeyPair::generate(rng),
        }
    }
}

/// A medium-term Curve25519 prekey signed by the identity key (signature over the 33-byte
/// serialized public key).
#[derive(Clone, Debug)]
pub struct SignedPreKeyRecord {
    /// Identifier.
    pub id: u32,
    /// Creation time, milliseconds since the Unix epoch (caller-supplied).
    pub timestamp: u64,
    /// The key pair.
    pub key_pair: KeyPair,
    /// XEdDSA signature over `key_pair.public_key.serialize()`.
    pub signature: [u8; SIGNATURE_LENGTH],
}

impl SignedPreKeyRecord {
    /// A fresh signed prekey.
    pub fn generate(
        id: u32,
        timestamp: u64,
        identity: &IdentityKeyPair,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Self {
        let key_pair = KeyPair::generate(rng);
        let signature = identity.sign(rng, &key_pair.public_key.serialize());
        Self {
            id,
            timestamp,
            key_pair,
            signature,
        }
    }
}

/// A Kyber1024 prekey signed by the identity key (signature over `0x08 ‖ public key`).
#[derive(Clone, Debug)]
pub struct KyberPreKeyRecord {
    /// Identifier.
    pub id: u32,
    /// Creation time, milliseconds since the Unix epoch (caller-supplied).
    pub timestamp: u64,
    /// The key pair.
    pub key_pair: KyberKeyPair,
    /// XEdDSA signature over `key_pair.public_key.serialize()`.
    pub signature: [u8; SIGNATURE_LENGTH],
}

impl KyberPreKeyRecord {
    /// A fresh signed Kyber1024 prekey.
    pub fn generate(
        id: u32,
        timestamp: u64,
        identity: &IdentityKeyPair,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Self {
        let key_pair = KyberKeyPair::generate(rng);
        let signature = identity.sign(rng, &key_pair.public_key.serialize());
        Self {
            id,
            timestamp,
            key_pair,
            signature,
        }
    }
}

/// Everything an initiator needs to start a PQXDH session with a device.
#[derive(Clone, Debug)]
pub struct PreKeyBundle {
    /// The responder's registration id (echoed in PreKeySignalMessages).
    pub registration_id: u32,
    /// The responder's device id.
    pub device_id: u32,
    /// Optional one-time prekey `(id, key)`.
    pub pre_key: Option<(u32, PublicKey)>,
    /// Signed prekey id.
    pub signed_pre_key_id: u32,
    /// Signed prekey.
    pub signed_pre_key_public: PublicKey,
    /// Identity signature over the serialized signed prekey.
    pub signed_pre_key_signature: Vec<u8>,
    /// The responder's identity key.
    pub identity_key: IdentityKey,
    /// Kyber prekey id.
    pub kyber_pre_key_id: u32,
    /// Kyber1024 prekey.
    pub kyber_pre_key_public: KyberPublicKey,
    /// Identity signature over the serialized Kyber prekey.
    pub kyber_pre_key_signature: Vec<u8>,
}

impl PreKeyBundle {
    /// Builds the bundle a device publishes from its records.
    pub fn from_records(
        registration_id: u32,
        device_id: u32,
        identity_key: IdentityKey,
        pre_key: Option<&PreKeyRecord>,
        signed: &SignedPreKeyRecord,
        kyber: &KyberPreKeyRecord,
    ) -> Self {
        Self {
            registration_id,
            device_id,
            pre_key: pre_key.map(|p| (p.id, p.key_pair.public_key)),
            signed_pre_key_id: signed.id,
            signed_pre_key_public: signed.key_pair.public_key,
            signed_pre_key_signature: signed.signature.to_vec(),
            identity_key,
            kyber_pre_key_id: kyber.id,
            kyber_pre_key_public: kyber.key_pair.public_key.clone(),
            kyber_pre_key_signature: kyber.signature.to_vec(),
        }
    }

    /// Checks both prekey signatures against the bundle's identity key.
    pub fn verify_signatures(&self) -> Result<()> {
        let ik = &self.identity_key;
        if !ik.verify_signature(
            &self.signed_pre_key_public.serialize(),
            &self.signed_pre_key_signature,
        ) {
            return Err(Error::InvalidSignature);
        }
        if !ik.verify_signature(
            &self.kyber_pre_key_public.serialize(),
            &self.kyber_pre_key_signature,
        ) {
            return Err(Error::InvalidSignature);
        }
        Ok(())
    }
}
