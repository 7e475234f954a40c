//! Round-3 Kyber1024 (not ML-KEM), serialized as libsignal does with the 0x08 type byte.

use core::fmt;

use libcrux_ml_kem::kyber1024;
use libcrux_ml_kem::mlkem1024::{MlKem1024Ciphertext, MlKem1024PrivateKey, MlKem1024PublicKey};
use rand_core::{CryptoRng, RngCore};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::consts::KYBER1024_KEY_TYPE;
use crate::error::{Error, Result};

/// Raw Kyber1024 public key length (without the type byte).
pub const KYBER1024_PUBLIC_KEY_LENGTH: usize = 1568;
/// Raw Kyber1024 secret key length (without the type byte).
pub const KYBER1024_SECRET_KEY_LENGTH: usize = 3168;
/// Raw Kyber1024 ciphertext length (without the type byte).
pub const KYBER1024_CIPHERTEXT_LENGTH: usize = 1568;
/// Serialized ciphertext length: type byte plus ciphertext.
pub const KYBER1024_SERIALIZED_CIPHERTEXT_LENGTH: usize = 1 + KYBER1024_CIPHERTEXT_LENGTH;

fn strip_type<'a>(bytes: &'a [u8], raw_len: usize, what: &'static str) -> Result<&'a [u8]> {
    match bytes.split_first() {
        Some((&KYBER1024_KEY_TYPE, rest)) if rest.len() == raw_len => Ok(rest),
        Some((&KYBER1024_KEY_TYPE, _)) => Err(Error::InvalidKey(what)),
        Some(_) => Err(Error::InvalidKey("unknown KEM key type byte")),
        None => Err(Error::InvalidKey("empty KEM key")),
    }
}

/// A Kyber1024 public key.
#[derive(Clone)]
pub struct KyberPublicKey(MlKem1024PublicKey);

impl KyberPublicKey {
    /// `0x08 ‖ 1568 bytes`.
    pub fn serialize(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + KYBER1024_PUBLIC_KEY_LENGTH);
        out.push(KYBER1024_KEY_TYPE);
        out.extend_from_slice(self.0.as_ref());
        out
    }

    /// Parses `0x08 ‖ 1568 bytes` and checks the key is well formed (coefficients reduced).
    pub fn deserialize(bytes: &[u8]) -> Result<Self> {
        let raw = strip_type(
            bytes,
            KYBER1024_PUBLIC_KEY_LENGTH,
            "Kyber1024 public key length",
        )?;
        let key = MlKem1024PublicKey::try_from(raw)
            .map_err(|_| Error::InvalidKey("Kyber1024 public key length"))?;
        if !kyber1024::validate_public_key(&key) {
            return Err(Error::InvalidKey("Kyber1024 public key not canonical"));
        }
        Ok(Self(key))
    }

    /// Encapsulates a fresh shared secret; returns it with the serialized ciphertext
    /// (`0x08 ‖ 1568 bytes`).
    pub(crate) fn encapsulate(
        &self,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> (Zeroizing<[u8; 32]>, Vec<u8>) {
        let mut randomness = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(randomness.as_mut());
        let (ct, ss) = kyber1024::encapsulate(&self.0, *randomness);
        let mut out = Vec::with_capacity(KYBER1024_SERIALIZED_CIPHERTEXT_LENGTH);
        out.push(KYBER1024_KEY_TYPE);
        out.extend_from_slice(ct.as_ref());
        (Zeroizing::new(ss), out)
    }
}

impl PartialEq for KyberPublicKey {
    fn eq(&self, other: &Self) -> bool {
        bool::from(self.0.as_ref().ct_eq(other.0.as_ref()))
    }
}
impl Eq for KyberPublicKey {}

impl fmt::Debug for KyberPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KyberPublicKey(Kyber1024)")
    }
}

/// A Kyber1024 secret key. Zeroized on drop; `Debug` is redacted.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct KyberSecretKey(Vec<u8>);

impl KyberSecretKey {
    /// `0x08 ‖ 3168 bytes`, in a zeroizing buffer.
    pub fn serialize(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(1 + KYBER1024_SECRET_KEY_LENGTH));
        out.push(KYBER1024_KEY_TYPE);
        out.extend_from_slice(&self.0);
        out
    }

    /// Parses `0x08 ‖ 3168 bytes`.
    pub fn deserialize(bytes: &[u8]) -> Result<Self> {
        let raw = strip_type(
            bytes,
            KYBER1024_SECRET_KEY_LENGTH,
            "Kyber1024 secret key length",
        )?;
        Ok(Self(raw.to_vec()))
    }

    /// Decapsulates a serialized ciphertext. Kyber uses implicit rejection, so a corrupted
    /// ciphertext of the right length yields an unrelated secret (the session then fails to
    /// authenticate) rather than an error.
    pub(crate) fn decapsulate(&self, ciphertext: &[u8]) -> Result<Zeroizing<[u8; 32]>> {
        let raw = strip_type(
            ciphertext,
            KYBER1024_CIPHERTEXT_LENGTH,
            "Kyber1024 ciphertext length",
        )
        .map_err(|_| Error::InvalidMessage("bad Kyber1024 ciphertext"))?;
        let ct = MlKem1024Ciphertext::try_from(raw)
            .map_err(|_| Error::InvalidMessage("bad Kyber1024 ciphertext"))?;
        let sk = MlKem1024PrivateKey::try_from(self.0.as_slice())
            .map_err(|_| Error::InvalidKey("Kyber1024 secret key length"))?;
        Ok(Zeroizing::new(kyber1024::decapsulate(&sk, &ct)))
    }
}

impl fmt::Debug for KyberSecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KyberSecretKey([redacted])")
    }
}

/// A Kyber1024 key pair.
#[derive(Clone, Debug)]
pub struct KyberKeyPair {
    /// Public half.
    pub public_key: KyberPublicKey,
    /// Secret half.
    pub secret_key: KyberSecretKey,
}

impl KyberKeyPair {
    /// Fresh key pair from 64 random bytes.
    pub fn generate(rng: &mut (impl RngCore + CryptoRng)) -> Self {
        let mut seed = Zeroizing::new([0u8; 64]);
        rng.fill_bytes(seed.as_mut());
        let (sk, pk) = kyber1024::generate_key_pair(*seed).into_parts();
        Self {
            public_key: KyberPublicKey(pk),
            secret_key: KyberSecretKey(sk.as_ref().to_vec()),
        }
    }

    /// Rebuilds a pair from serialized halves.
    pub fn from_serialized(public: &[u8], secret: &[u8]) -> Result<Self> {
        Ok(Self {
            public_key: KyberPublicKey::deserialize(public)?,
            secret_key: KyberSecretKey::deserialize(secret)?,
        })
    }
}
