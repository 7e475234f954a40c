//! Long-term identity keys.

use core::fmt;

use prost::Message;
use rand_core::{CryptoRng, RngCore};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::curve::{
    KeyPair, PrivateKey, PublicKey, PUBLIC_KEY_SERIALIZED_LENGTH, SIGNATURE_LENGTH,
};
use crate::error::{Error, Result};
use crate::proto;

/// A contact's public identity key, serialized as libsignal does: `0x05 ‖ X25519 public key`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct IdentityKey(PublicKey);

impl IdentityKey {
    /// Wraps a Curve25519 public key.
    pub fn new(key: PublicKey) -> Self {
        Self(key)
    }

    /// The underlying Curve25519 public key.
    pub fn public_key(&self) -> &PublicKey {
        &self.0
    }

    /// `0x05 ‖ 32 bytes`.
    pub fn serialize(&self) -> [u8; PUBLIC_KEY_SERIALIZED_LENGTH] {
        self.0.serialize()
    }

    /// Parses exactly 33 bytes starting with 0x05.
    pub fn deserialize(bytes: &[u8]) -> Result<Self> {
        PublicKey::deserialize(bytes).map(Self)
    }

    /// Verifies an XEdDSA signature made by [`IdentityKeyPair::sign`] or by libsignal's
    /// `PrivateKey::calculateSignature`. Returns `false` for anything malformed.
    pub fn verify_signature(&self, message: &[u8], signature: &[u8]) -> bool {
        self.0.verify_signature(message, signature)
    }

    /// Constant-time equality.
    pub fn ct_eq(&self, other: &Self) -> bool {
        bool::from(self.0.as_bytes().ct_eq(other.0.as_bytes()))
    }
}

impl fmt::Debug for IdentityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IdentityKey({:?})", self.0)
    }
}

/// Our own long-term identity key pair. The private half zeroizes on drop; `Debug` is redacted.
#[derive(Clone)]
pub struct IdentityKeyPair {
    public: IdentityKey,
    private: PrivateKey,
}

impl IdentityKeyPair {
    /// A fresh random identity.
    pub fn generate(rng: &mut (impl RngCore + CryptoRng)) -> Self {
        let KeyPair {
            public_key,
            private_key,
        } = KeyPair::generate(rng);
        Self {
            public: IdentityKey(public_key),
            private: private_key,
        }
    }

    /// The identity built from a private key.
    pub fn from_private_key(private: PrivateKey) -> Self {
        Self {
            public: IdentityKey(private.public_key()),
            private,
        }
    }

    /// Our public identity key.
    pub fn public(&self) -> IdentityKey {
        self.public
    }

    /// Our private identity key.
    pub fn private_key(&self) -> &PrivateKey {
        &self.private
    }

    /// XEdDSA signature over `message`, exactly as libsignal computes it (the last byte's top
    /// bit carries the Edwards sign bit).
    pub fn sign(
        &self,
        rng: &mut (impl RngCore + CryptoRng),
        message: &[u8],
    ) -> [u8; SIGNATURE_LENGTH] {
        self.private.sign_parts(rng, &[message])
    }

    /// Serializes the pair in libsignal's `IdentityKeyPairStructure` protobuf
    /// (`public_key = 1`: 33 bytes, `private_key = 2`: 32 bytes), in a zeroizing buffer.
    pub fn serialize(&self) -> Zeroizing<Vec<u8>> {
        let private = self.private.serialize();
        let structure = Zeroizing::new(proto::storage::IdentityKeyPairStructure {
            public_key: self.public.serialize().to_vec(),
            private_key: private.to_vec(),
        });
        Zeroizing::new(structure.encode_to_vec())
    }

    /// Parses [`Self::serialize`]'s output (and libsignal's). The public key must match the
    /// private key.
    pub fn deserialize(bytes: &[u8]) -> Result<Self> {
        let structure = Zeroizing::new(
            proto::storage::IdentityKeyPairStructure::decode(bytes)
                .map_err(|_| Error::InvalidKey("identity key pair: bad protobuf"))?,
        );
        let public = IdentityKey::deserialize(&structure.public_key)?;
        let private = PrivateKey::deserialize(&structure.private_key)?;
        let pair = Self::from_private_key(private);
        if !pair.public.ct_eq(&public) {
            return Err(Error::InvalidKey(
                "identity key pair: public key does not match",
            ));
        }
        Ok(pair)
    }
}

impl fmt::Debug for IdentityKeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdentityKeyPair")
            .field("public", &self.public)
            .field("private", &self.private)
            .finish()
    }
}
