//! What a `publish_prekeys` upload must hold: public keys of their type and size, as
//! `sotto-ratchet` (libsignal) serializes them, and signed prekeys signed by the device's
//! identity key. No I/O; the server runs it before storing anything.
//!
//! * signed and one-time prekeys: X25519, `0x05 ‖ 32 bytes` (33 bytes);
//! * the KEM (last-resort) prekey: Kyber1024, `0x08 ‖ 1568 bytes`, coefficients reduced;
//! * the signed and KEM prekeys' signatures: XEdDSA (64 bytes) by the identity key over the
//!   serialized public key — what every peer checks before using the bundle, so a bundle that
//!   fails here could never have set up a session.

use sotto_ratchet::{IdentityKey, KyberPublicKey, PublicKey};

use crate::error::ErrorCode;
use crate::protocol::{OneTimePreKey, SignedPreKey};

/// Why an upload is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrekeyRefusal {
    /// A key that is not a public key of its type and size.
    InvalidPrekey,
    /// A signature that does not verify under the identity key.
    BadSignature,
}

impl PrekeyRefusal {
    /// The wire code.
    pub fn code(self) -> ErrorCode {
        match self {
            Self::InvalidPrekey => ErrorCode::InvalidPrekey,
            Self::BadSignature => ErrorCode::BadPrekeySignature,
        }
    }
}

/// Checks each key's type and size (no identity key needed).
///
/// # Errors
/// [`PrekeyRefusal::InvalidPrekey`].
pub fn check_formats(
    signed: Option<&SignedPreKey>,
    kem: Option<&SignedPreKey>,
    one_time: &[OneTimePreKey],
) -> Result<(), PrekeyRefusal> {
    let ec = |bytes: &[u8]| PublicKey::deserialize(bytes).is_ok();
    let ok = signed.is_none_or(|k| ec(&k.public.0))
        && kem.is_none_or(|k| KyberPublicKey::deserialize(&k.public.0).is_ok())
        && one_time.iter().all(|k| ec(&k.public.0));
    if ok {
        Ok(())
    } else {
        Err(PrekeyRefusal::InvalidPrekey)
    }
}

/// Checks the signed and KEM prekeys' signatures under `identity_key` (serialized, 33 bytes).
///
/// # Errors
/// [`PrekeyRefusal::BadSignature`], also for an identity key that does not parse.
pub fn check_signatures(
    identity_key: &[u8],
    signed: Option<&SignedPreKey>,
    kem: Option<&SignedPreKey>,
) -> Result<(), PrekeyRefusal> {
    let Ok(identity) = IdentityKey::deserialize(identity_key) else {
        return Err(PrekeyRefusal::BadSignature);
    };
    let verified = |k: &SignedPreKey| identity.verify_signature(&k.public.0, &k.signature.0);
    if signed.is_none_or(verified) && kem.is_none_or(verified) {
        Ok(())
    } else {
        Err(PrekeyRefusal::BadSignature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::B64;
    use sotto_ratchet::{IdentityKeyPair, KyberPreKeyRecord, PreKeyRecord, SignedPreKeyRecord};

    struct Upload {
        identity: Vec<u8>,
        signed: SignedPreKey,
        kem: SignedPreKey,
        one_time: Vec<OneTimePreKey>,
    }

    fn upload() -> Upload {
        let mut rng = rand::thread_rng();
        let id = IdentityKeyPair::generate(&mut rng);
        let s = SignedPreKeyRecord::generate(1, 0, &id, &mut rng);
        let k = KyberPreKeyRecord::generate(2, 0, &id, &mut rng);
        let o = PreKeyRecord::generate(3, &mut rng);
        Upload {
            identity: id.public().serialize().to_vec(),
            signed: SignedPreKey {
                id: 1,
                public: B64(s.key_pair.public_key.serialize().to_vec()),
                signature: B64(s.signature.to_vec()),
            },
            kem: SignedPreKey {
                id: 2,
                public: B64(k.key_pair.public_key.serialize()),
                signature: B64(k.signature.to_vec()),
            },
            one_time: vec![OneTimePreKey {
                id: 3,
                public: B64(o.key_pair.public_key.serialize().to_vec()),
            }],
        }
    }

    #[test]
    fn real_keys_pass() {
        let u = upload();
        assert_eq!(
            check_formats(Some(&u.signed), Some(&u.kem), &u.one_time),
            Ok(())
        );
        assert_eq!(
            check_signatures(&u.identity, Some(&u.signed), Some(&u.kem)),
            Ok(())
        );
        assert_eq!(check_formats(None, None, &[]), Ok(()));
    }

    #[test]
    fn keys_of_the_wrong_type_or_size_are_refused() {
        let u = upload();
        let bad = Err(PrekeyRefusal::InvalidPrekey);
        let mut random_otk = u.one_time.clone();
        random_otk[0].public = B64(vec![0x42; 1600]);
        assert_eq!(check_formats(None, None, &random_otk), bad);
        let mut short = u.one_time.clone();
        short[0].public.0.pop();
        assert_eq!(check_formats(None, None, &short), bad);
        let mut wrong_type = u.one_time.clone();
        wrong_type[0].public.0[0] = 0x08;
        assert_eq!(check_formats(None, None, &wrong_type), bad);
        // a Kyber key where an X25519 key belongs, and the other way round
        let mut kyber_as_signed = u.signed.clone();
        kyber_as_signed.public = u.kem.public.clone();
        assert_eq!(check_formats(Some(&kyber_as_signed), None, &[]), bad);
        let mut ec_as_kem = u.kem.clone();
        ec_as_kem.public = u.signed.public.clone();
        assert_eq!(check_formats(None, Some(&ec_as_kem), &[]), bad);
        let mut long_kem = u.kem.clone();
        long_kem.public.0.push(0);
        assert_eq!(check_formats(None, Some(&long_kem), &[]), bad);
    }

    #[test]
    fn signatures_by_another_key_are_refused() {
        let u = upload();
        let other = upload();
        let bad = Err(PrekeyRefusal::BadSignature);
        assert_eq!(
            check_signatures(&other.identity, Some(&u.signed), None),
            bad
        );
        assert_eq!(check_signatures(&other.identity, None, Some(&u.kem)), bad);
        let mut flipped = u.signed.clone();
        flipped.signature.0[5] ^= 1;
        assert_eq!(check_signatures(&u.identity, Some(&flipped), None), bad);
        assert_eq!(check_signatures(&[5; 32], Some(&u.signed), None), bad);
        assert_eq!(
            PrekeyRefusal::BadSignature.code(),
            ErrorCode::BadPrekeySignature
        );
        assert_eq!(
            PrekeyRefusal::InvalidPrekey.code(),
            ErrorCode::InvalidPrekey
        );
    }
}
