//! Curve25519 keys as libsignal serializes them, X25519 agreement and XEdDSA signatures.
//!
//! XEdDSA follows libsignal's deployed variant (see `protocol-spec/ratchet.md`, "XEdDSA"):
//! the Edwards public key is derived from the clamped private scalar without forcing its sign,
//! and the sign bit of that Edwards key travels in the top bit of the signature's last byte.
//! Verification reads that bit back to lift the Montgomery `u` coordinate to Edwards, so it
//! accepts both libsignal signatures and spec-shaped ones (whose top bit is always 0).

use core::fmt;

use curve25519_dalek::constants::ED25519_BASEPOINT_TABLE;
use curve25519_dalek::edwards::EdwardsPoint;
use curve25519_dalek::montgomery::MontgomeryPoint;
use curve25519_dalek::scalar::{clamp_integer, Scalar};
use rand_core::{CryptoRng, RngCore};
use sha2::{Digest, Sha512};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::consts::DJB_KEY_TYPE;
use crate::error::{Error, Result};

/// Length of a serialized public key: type byte plus 32 bytes of `u` coordinate.
pub const PUBLIC_KEY_SERIALIZED_LENGTH: usize = 33;
/// Length of an XEdDSA signature.
pub const SIGNATURE_LENGTH: usize = 64;

/// A Curve25519 (X25519) public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey([u8; 32]);

impl PublicKey {
    /// `0x05 ‖ u`.
    pub fn serialize(&self) -> [u8; PUBLIC_KEY_SERIALIZED_LENGTH] {
        let mut out = [0u8; PUBLIC_KEY_SERIALIZED_LENGTH];
        out[0] = DJB_KEY_TYPE;
        out[1..].copy_from_slice(&self.0);
        out
    }

    /// Parses exactly `0x05 ‖ 32 bytes`. (libsignal tolerates trailing bytes; we do not.)
    pub fn deserialize(bytes: &[u8]) -> Result<Self> {
        match bytes.split_first() {
            None => Err(Error::InvalidKey("empty public key")),
            Some((&DJB_KEY_TYPE, rest)) => {
                let raw: [u8; 32] = rest
                    .try_into()
                    .map_err(|_| Error::InvalidKey("public key must be 33 bytes"))?;
                Ok(Self(raw))
            }
            Some(_) => Err(Error::InvalidKey("unknown public key type byte")),
        }
    }

    /// The raw 32-byte `u` coordinate.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Builds a key from a raw `u` coordinate.
    pub fn from_bytes(raw: [u8; 32]) -> Self {
        Self(raw)
    }

    /// libsignal's canonicity check for an incoming base key: `u < p` with the top bit clear,
    /// and the Edwards lift (sign 0) is torsion-free.
    pub(crate) fn is_canonical(&self) -> bool {
        let k = &self.0;
        let top_bit = k[31] & 0x80 != 0;
        let non_reduced = k[0] >= 0xED && k[1..31].iter().all(|&b| b == 0xFF) && k[31] == 0x7F;
        let torsion_free = MontgomeryPoint(*k)
            .to_edwards(0)
            .is_some_and(|e| e.is_torsion_free());
        !top_bit && !non_reduced && torsion_free
    }

    /// XEdDSA verification (libsignal variant; see module docs). Never panics; any malformed
    /// input is `false`.
    pub fn verify_signature(&self, message: &[u8], signature: &[u8]) -> bool {
        self.verify_signature_parts(&[message], signature)
    }

    pub(crate) fn verify_signature_parts(&self, message: &[&[u8]], signature: &[u8]) -> bool {
        let Ok(sig) = <&[u8; SIGNATURE_LENGTH]>::try_from(signature) else {
            return false;
        };
        let sign_bit = sig[SIGNATURE_LENGTH - 1] >> 7;
        let Some(a_point) = MontgomeryPoint(self.0).to_edwards(sign_bit) else {
            return false;
        };
        let a_compressed = a_point.compress();
        let mut r_bytes = [0u8; 32];
        r_bytes.copy_from_slice(&sig[..32]);
        let mut s_bytes = [0u8; 32];
        s_bytes.copy_from_slice(&sig[32..]);
        s_bytes[31] &= 0x7F;
        // s must be below 2^253 (libsignal's bound; a reduced scalar always is).
        if s_bytes[31] & 0xE0 != 0 {
            return false;
        }
        let s = Scalar::from_bytes_mod_order(s_bytes);
        let mut hash = Sha512::new();
        hash.update(r_bytes);
        hash.update(a_compressed.as_bytes());
        for part in message {
            hash.update(part);
        }
        let h = Scalar::from_hash(hash);
        // R' = s·B − h·A
        let r_check = EdwardsPoint::vartime_double_scalar_mul_basepoint(&h, &(-a_point), &s);
        bool::from(r_check.compress().as_bytes().ct_eq(&r_bytes))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey(")?;
        for b in &self.0[..4] {
            write!(f, "{b:02x}")?;
        }
        write!(f, "…)")
    }
}

/// A Curve25519 private key (the clamped scalar bytes). Zeroized on drop; `Debug` is redacted.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct PrivateKey([u8; 32]);

impl PrivateKey {
    /// Draws 32 random bytes and clamps them.
    pub fn generate(rng: &mut (impl RngCore + CryptoRng)) -> Self {
        let mut bytes = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(bytes.as_mut());
        Self(clamp_integer(*bytes))
    }

    /// The 32 private bytes (clamped), in a zeroizing buffer.
    pub fn serialize(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.0)
    }

    /// Accepts 32 bytes and clamps them, as libsignal does.
    pub fn deserialize(bytes: &[u8]) -> Result<Self> {
        let raw: [u8; 32] = bytes
            .try_into()
            .map_err(|_| Error::InvalidKey("private key must be 32 bytes"))?;
        Ok(Self(clamp_integer(raw)))
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(MontgomeryPoint::mul_base_clamped(self.0).to_bytes())
    }

    /// X25519 with `their` public key (no all-zero check, like libsignal).
    pub fn agree(&self, their: &PublicKey) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(MontgomeryPoint(their.0).mul_clamped(self.0).to_bytes())
    }

    /// XEdDSA signature over the concatenation of `message` parts, libsignal variant.
    pub(crate) fn sign_parts(
        &self,
        rng: &mut (impl RngCore + CryptoRng),
        message: &[&[u8]],
    ) -> [u8; SIGNATURE_LENGTH] {
        let mut random = Zeroizing::new([0u8; 64]);
        rng.fill_bytes(random.as_mut());
        self.sign_parts_with_nonce_input(&random, message)
    }

    /// Deterministic core of [`Self::sign_parts`]: `random` is the 64-byte `Z` of the spec.
    pub(crate) fn sign_parts_with_nonce_input(
        &self,
        random: &[u8; 64],
        message: &[&[u8]],
    ) -> [u8; SIGNATURE_LENGTH] {
        let mut a = Scalar::from_bytes_mod_order(self.0);
        let a_compressed = (&a * ED25519_BASEPOINT_TABLE).compress();
        let sign_bit = a_compressed.as_bytes()[31] & 0x80;

        // r = SHA-512(0xFE ‖ 0xFF×31 ‖ k ‖ M ‖ Z) mod ℓ  (hash1 of the XEdDSA spec)
        let mut prefix = [0xFFu8; 32];
        prefix[0] = 0xFE;
        let mut h1 = Sha512::new();
        h1.update(prefix);
        h1.update(self.0);
        for part in message {
            h1.update(part);
        }
        h1.update(random);
        let mut r = Scalar::from_hash(h1);
        let r_compressed = (&r * ED25519_BASEPOINT_TABLE).compress();

        let mut h = Sha512::new();
        h.update(r_compressed.as_bytes());
        h.update(a_compressed.as_bytes());
        for part in message {
            h.update(part);
        }
        let hram = Scalar::from_hash(h);
        let s = hram * a + r;
        a.zeroize();
        r.zeroize();

        let mut sig = [0u8; SIGNATURE_LENGTH];
        sig[..32].copy_from_slice(r_compressed.as_bytes());
        sig[32..].copy_from_slice(s.as_bytes());
        sig[SIGNATURE_LENGTH - 1] &= 0x7F;
        sig[SIGNATURE_LENGTH - 1] |= sign_bit;
        sig
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKey([redacted])")
    }
}

/// A Curve25519 key pair.
#[derive(Clone)]
pub struct KeyPair {
    /// Public half.
    pub public_key: PublicKey,
    /// Private half.
    pub private_key: PrivateKey,
}

impl KeyPair {
    /// Fresh random key pair.
    pub fn generate(rng: &mut (impl RngCore + CryptoRng)) -> Self {
        let private_key = PrivateKey::generate(rng);
        Self {
            public_key: private_key.public_key(),
            private_key,
        }
    }

    /// Pair from a private key.
    pub fn from_private(private_key: PrivateKey) -> Self {
        Self {
            public_key: private_key.public_key(),
            private_key,
        }
    }
}

impl fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyPair")
            .field("public_key", &self.public_key)
            .field("private_key", &self.private_key)
            .finish()
    }
}
