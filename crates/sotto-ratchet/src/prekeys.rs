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

/// How long a signed prekey (and the last-resort Kyber prekey with it) is published before a
/// fresh one replaces it: one week, as the X3DH and PQXDH specifications suggest ("once a week
/// or once a month").
pub const SIGNED_PREKEY_ROTATE_AFTER_MS: u64 = 7 * 24 * 3600 * 1000;

/// How long a replaced signed or last-resort Kyber prekey is kept, counted from the creation of
/// its successor: a session start built on the old bundle (fetched before the rotation, sent
/// late, or queued for an offline device) still opens within this window. Afterwards the private
/// key is deleted, so a later compromise of the device cannot open such session starts.
pub const SIGNED_PREKEY_GRACE_MS: u64 = 30 * 24 * 3600 * 1000;

/// What [`plan_prekey_rotation`] decided for one kind of medium-term prekey.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrekeyRotationPlan {
    /// `Some(id)`: generate a fresh key under `id` (the newest is too old, or there is none).
    pub new_id: Option<u32>,
    /// The key to publish once the plan is carried out: `new_id`, or else the newest key.
    pub current: u32,
    /// Keys replaced at least `grace_ms` ago: delete them (never the newest, never the one just
    /// replaced by `new_id`).
    pub remove: Vec<u32>,
}

/// The rotation policy for signed prekeys and last-resort Kyber prekeys, without I/O.
///
/// `keys` are `(id, creation time in ms)`; ids only grow, so the highest id is the current key.
/// A key counts as replaced from its successor's creation time. Rotates when `now_ms` is at
/// least `rotate_after_ms` past the current key's creation (a clock that went backwards never
/// rotates early); keeps every replaced key until `grace_ms` after its replacement.
///
/// # Errors
/// [`Error::InvalidArgument`] if the next id would not fit in a `u32`.
pub fn plan_prekey_rotation(
    keys: &[(u32, u64)],
    now_ms: u64,
    rotate_after_ms: u64,
    grace_ms: u64,
) -> Result<PrekeyRotationPlan> {
    let mut keys = keys.to_vec();
    keys.sort_unstable();
    keys.dedup_by_key(|k| k.0);
    let (new_id, current) = match keys.last() {
        None => (Some(1), 1),
        Some(&(id, created)) if now_ms.saturating_sub(created) >= rotate_after_ms => {
            let next = id
                .checked_add(1)
                .ok_or(Error::InvalidArgument("signed prekey ids exhausted"))?;
            (Some(next), next)
        }
        Some(&(id, _)) => (None, id),
    };
    let remove = keys
        .windows(2)
        .filter(|w| now_ms.saturating_sub(w[1].1) >= grace_ms)
        .map(|w| w[0].0)
        .collect();
    Ok(PrekeyRotationPlan {
        new_id,
        current,
        remove,
    })
}

#[cfg(test)]
mod rotation_tests {
    use super::*;

    const DAY: u64 = 24 * 3600 * 1000;
    const T0: u64 = 1_764_000_000_000;

    fn plan(keys: &[(u32, u64)], now: u64) -> PrekeyRotationPlan {
        plan_prekey_rotation(
            keys,
            now,
            SIGNED_PREKEY_ROTATE_AFTER_MS,
            SIGNED_PREKEY_GRACE_MS,
        )
        .unwrap()
    }

    #[test]
    fn a_fresh_key_stays_and_an_old_one_is_replaced() {
        assert_eq!(plan(&[], T0).new_id, Some(1));
        assert_eq!(plan(&[(1, T0)], T0 + 7 * DAY - 1).new_id, None);
        assert_eq!(plan(&[(1, T0)], T0 + 7 * DAY).new_id, Some(2));
        // a clock that went backwards does not rotate
        assert_eq!(plan(&[(1, T0)], T0 - 100 * DAY).new_id, None);
        assert_eq!(plan(&[(1, T0)], T0 + 7 * DAY).current, 2);
        // the current key is the highest id, whatever the order given
        assert_eq!(plan(&[(5, T0 + DAY), (4, T0)], T0 + 7 * DAY).new_id, None);
        assert_eq!(plan(&[(5, T0 + DAY), (4, T0)], T0 + 7 * DAY).current, 5);
        assert_eq!(
            plan(&[(5, T0 + DAY), (4, T0)], T0 + 8 * DAY).new_id,
            Some(6)
        );
    }

    #[test]
    fn replaced_keys_are_kept_for_the_grace_period_after_their_successor() {
        // 1 replaced by 2 at T0 + 7 days; 2 is current
        let keys = [(1, T0), (2, T0 + 7 * DAY)];
        assert!(plan(&keys, T0 + 8 * DAY).remove.is_empty());
        assert!(plan(&keys, T0 + 37 * DAY - 1).remove.is_empty());
        let p = plan(&keys, T0 + 37 * DAY);
        assert_eq!(p.remove, vec![1]);
        // 2 is overdue too: replaced now, so kept
        assert_eq!(p.new_id, Some(3));
        // never the newest, however old
        assert!(plan(&[(9, T0)], T0 + 1000 * DAY).remove.is_empty());
        // several generations: only those replaced long enough ago
        let keys = [
            (1, T0),
            (2, T0 + 10 * DAY),
            (3, T0 + 40 * DAY),
            (4, T0 + 60 * DAY),
        ];
        assert_eq!(plan(&keys, T0 + 75 * DAY).remove, vec![1, 2]);
    }

    #[test]
    fn ids_that_would_overflow_are_refused() {
        let e = plan_prekey_rotation(&[(u32::MAX, T0)], T0 + 8 * DAY, 7 * DAY, 30 * DAY);
        assert!(matches!(e, Err(Error::InvalidArgument(_))), "{e:?}");
    }
}
