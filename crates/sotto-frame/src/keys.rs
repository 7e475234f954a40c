//! The SFrame key schedule (RFC 9605 §4.4.2 and §5.1) and secret newtypes.

use hkdf::Hkdf;
use sha2::{Sha256, Sha512};
use zeroize::{Zeroize, Zeroizing};

use crate::consts::{MAX_BASE_KEY_SIZE, MIN_BASE_KEY_SIZE};
use crate::error::Error;
use crate::suite::{CipherSuite, Hash};

/// Label prefix for the SFrame key (RFC 9605 §4.4.2). Note the trailing space.
pub const KEY_LABEL: &[u8] = b"SFrame 1.0 Secret key ";
/// Label prefix for the SFrame salt (RFC 9605 §4.4.2).
pub const SALT_LABEL: &[u8] = b"SFrame 1.0 Secret salt ";
/// Label of one ratchet step (RFC 9605 §5.1). Capital F; output is Nh bytes.
pub const RATCHET_LABEL: &[u8] = b"SFrame 1.0 Ratchet";

/// A base key: the secret a sender distributes. Zeroized on drop; `Debug` prints no bytes;
/// equality is constant-time.
#[derive(Clone)]
pub struct BaseKey(Zeroizing<Vec<u8>>);

impl PartialEq for BaseKey {
    fn eq(&self, other: &Self) -> bool {
        use subtle::ConstantTimeEq;
        self.0.len() == other.0.len() && bool::from(self.0.ct_eq(&other.0))
    }
}

impl Eq for BaseKey {}

impl BaseKey {
    /// Wraps `bytes` ([`MIN_BASE_KEY_SIZE`]..=[`MAX_BASE_KEY_SIZE`] bytes).
    ///
    /// # Errors
    /// [`Error::InvalidKeyLength`] outside those bounds.
    pub fn new(bytes: &[u8]) -> Result<Self, Error> {
        if !(MIN_BASE_KEY_SIZE..=MAX_BASE_KEY_SIZE).contains(&bytes.len()) {
            return Err(Error::InvalidKeyLength {
                expected: MIN_BASE_KEY_SIZE,
                got: bytes.len(),
            });
        }
        Ok(BaseKey(Zeroizing::new(bytes.to_vec())))
    }

    /// The secret bytes. Handle with care.
    pub fn expose_secret(&self) -> &[u8] {
        &self.0
    }

    /// The next base key: `HKDF-Expand(HKDF-Extract("", base_key), "SFrame 1.0 Ratchet", Nh)`.
    pub fn ratchet(&self, suite: CipherSuite) -> BaseKey {
        let mut out = Zeroizing::new(vec![0u8; suite.nh()]);
        extract_expand(suite, &self.0, &[RATCHET_LABEL], &mut out);
        BaseKey(out)
    }
}

impl core::fmt::Debug for BaseKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "BaseKey(<{} bytes redacted>)", self.0.len())
    }
}

/// The per-KID key and salt derived from a base key.
pub struct DerivedKey {
    /// `sframe_key`, Nk bytes.
    pub key: Zeroizing<Vec<u8>>,
    /// `sframe_salt`, Nn bytes.
    pub salt: [u8; 12],
}

impl Drop for DerivedKey {
    fn drop(&mut self) {
        self.salt.zeroize();
    }
}

impl core::fmt::Debug for DerivedKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("DerivedKey(<redacted>)")
    }
}

/// RFC 9605 §4.4.2 `derive_key_salt(KID, base_key)`:
/// `sframe_secret = HKDF-Extract("", base_key)`,
/// `sframe_key = HKDF-Expand(sframe_secret, "SFrame 1.0 Secret key " ‖ KID(8) ‖ suite(2), Nk)`,
/// `sframe_salt = HKDF-Expand(sframe_secret, "SFrame 1.0 Secret salt " ‖ KID(8) ‖ suite(2), Nn)`.
pub fn derive_key_salt(suite: CipherSuite, kid: u64, base_key: &[u8]) -> DerivedKey {
    let kid_be = kid.to_be_bytes();
    let suite_be = suite.id().to_be_bytes();
    let mut key = Zeroizing::new(vec![0u8; suite.nk()]);
    let mut salt = [0u8; 12];
    match suite.hash() {
        Hash::Sha256 => {
            let hk = Hkdf::<Sha256>::new(Some(&[]), base_key);
            expand(&hk, &[KEY_LABEL, &kid_be, &suite_be], &mut key);
            expand(&hk, &[SALT_LABEL, &kid_be, &suite_be], &mut salt);
        }
        Hash::Sha512 => {
            let hk = Hkdf::<Sha512>::new(Some(&[]), base_key);
            expand512(&hk, &[KEY_LABEL, &kid_be, &suite_be], &mut key);
            expand512(&hk, &[SALT_LABEL, &kid_be, &suite_be], &mut salt);
        }
    }
    DerivedKey { key, salt }
}

fn extract_expand(suite: CipherSuite, ikm: &[u8], info: &[&[u8]], out: &mut [u8]) {
    match suite.hash() {
        Hash::Sha256 => expand(&Hkdf::<Sha256>::new(Some(&[]), ikm), info, out),
        Hash::Sha512 => expand512(&Hkdf::<Sha512>::new(Some(&[]), ikm), info, out),
    }
}

// Output lengths here are at most 64 bytes, far below 255·Nh, so expand cannot fail; a zeroed
// output would be caught by every vector test, but we still never panic.
fn expand(hk: &Hkdf<Sha256>, info: &[&[u8]], out: &mut [u8]) {
    if hk.expand_multi_info(info, out).is_err() {
        out.zeroize();
    }
}

fn expand512(hk: &Hkdf<Sha512>, info: &[&[u8]], out: &mut [u8]) {
    if hk.expand_multi_info(info, out).is_err() {
        out.zeroize();
    }
}
