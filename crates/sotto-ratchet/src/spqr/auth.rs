//! The braid's authenticator: a root key and a MAC key, advanced with each epoch's secret, that
//! MAC the key header and the ciphertext (`protocol-spec/ratchet.md` SPQR-11, SPQR-12).

use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

use super::Epoch;
use crate::crypto::{hkdf, hmac_sha256};
use crate::error::{Error, Result};

const UPDATE_INFO: &[u8] = b"Signal_PQCKA_V1_MLKEM768:Authenticator Update";
const HEADER_INFO: &[u8] = b"Signal_PQCKA_V1_MLKEM768:ekheader";
const CIPHERTEXT_INFO: &[u8] = b"Signal_PQCKA_V1_MLKEM768:ciphertext";

/// MAC length (full HMAC-SHA256).
pub const MAC_SIZE: usize = 32;

/// Root and MAC keys.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub(crate) struct Authenticator {
    pub(crate) root_key: [u8; 32],
    pub(crate) mac_key: [u8; 32],
}

impl core::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Authenticator([redacted])")
    }
}

impl Authenticator {
    /// Starts from zero keys updated with `(epoch, key)`.
    pub(crate) fn new(key: &[u8], epoch: Epoch) -> Self {
        let mut a = Self {
            root_key: [0; 32],
            mac_key: [0; 32],
        };
        a.update(epoch, key);
        a
    }

    /// `HKDF(0×32, rk ‖ key, UPDATE_INFO ‖ BE64(epoch), 64)` → new root key ‖ MAC key.
    pub(crate) fn update(&mut self, epoch: Epoch, key: &[u8]) {
        let mut ikm = zeroize::Zeroizing::new(Vec::with_capacity(32 + key.len()));
        ikm.extend_from_slice(&self.root_key);
        ikm.extend_from_slice(key);
        let mut info = UPDATE_INFO.to_vec();
        info.extend_from_slice(&epoch.to_be_bytes());
        let okm = hkdf::<64>(Some(&[0u8; 32]), &ikm, &info);
        self.root_key.copy_from_slice(&okm[..32]);
        self.mac_key.copy_from_slice(&okm[32..]);
    }

    fn mac(&self, label: &[u8], epoch: Epoch, data: &[u8]) -> [u8; MAC_SIZE] {
        hmac_sha256(&self.mac_key, &[label, &epoch.to_be_bytes(), data])
    }

    pub(crate) fn mac_header(&self, epoch: Epoch, header: &[u8]) -> [u8; MAC_SIZE] {
        self.mac(HEADER_INFO, epoch, header)
    }

    pub(crate) fn mac_ciphertext(&self, epoch: Epoch, ct: &[u8]) -> [u8; MAC_SIZE] {
        self.mac(CIPHERTEXT_INFO, epoch, ct)
    }

    pub(crate) fn verify_header(&self, epoch: Epoch, header: &[u8], mac: &[u8]) -> Result<()> {
        check(&self.mac_header(epoch, header), mac)
    }

    pub(crate) fn verify_ciphertext(&self, epoch: Epoch, ct: &[u8], mac: &[u8]) -> Result<()> {
        check(&self.mac_ciphertext(epoch, ct), mac)
    }
}

fn check(ours: &[u8; MAC_SIZE], theirs: &[u8]) -> Result<()> {
    if bool::from(ours.as_slice().ct_eq(theirs)) {
        Ok(())
    } else {
        Err(Error::DecryptionFailed)
    }
}
