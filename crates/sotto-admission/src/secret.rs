//! The relay secret: the HMAC key the signaling server and the relay share.

use std::path::Path;

use rand_core::{CryptoRng, RngCore};
use zeroize::Zeroizing;

use crate::consts::{GENERATED_SECRET_BYTES, MAX_SECRET_LEN, MIN_SECRET_LEN};

/// The key relay tokens are MACed with: the bytes of the secret file with surrounding
/// whitespace trimmed. Zeroized on drop; `Debug` never shows it.
#[derive(Clone)]
pub struct RelaySecret(Zeroizing<Vec<u8>>);

impl std::fmt::Debug for RelaySecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RelaySecret(<redacted>)")
    }
}

/// Why a relay secret was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    /// The file could not be read.
    #[error("relay secret file: {0}")]
    Io(#[from] std::io::Error),
    /// Fewer than [`MIN_SECRET_LEN`] bytes (after trimming whitespace).
    #[error("relay secret of {0} bytes is shorter than MIN_SECRET_LEN ({MIN_SECRET_LEN})")]
    TooShort(usize),
    /// More than [`MAX_SECRET_LEN`] bytes.
    #[error("relay secret of {0} bytes is longer than MAX_SECRET_LEN ({MAX_SECRET_LEN})")]
    TooLong(usize),
}

impl RelaySecret {
    /// The secret in `bytes` (surrounding ASCII whitespace, e.g. a final newline, trimmed).
    ///
    /// # Errors
    /// [`SecretError::TooShort`] / [`SecretError::TooLong`].
    pub fn from_bytes(bytes: &[u8]) -> Result<RelaySecret, SecretError> {
        let t = bytes.trim_ascii();
        if t.len() < MIN_SECRET_LEN {
            return Err(SecretError::TooShort(t.len()));
        }
        if t.len() > MAX_SECRET_LEN {
            return Err(SecretError::TooLong(t.len()));
        }
        Ok(RelaySecret(Zeroizing::new(t.to_vec())))
    }

    /// Reads the secret file at `path` (see [`RelaySecret::from_bytes`]).
    ///
    /// # Errors
    /// [`SecretError::Io`], or as [`RelaySecret::from_bytes`].
    pub fn load(path: &Path) -> Result<RelaySecret, SecretError> {
        let bytes = Zeroizing::new(std::fs::read(path)?);
        RelaySecret::from_bytes(&bytes)
    }

    /// Text for a new secret file: [`GENERATED_SECRET_BYTES`] random bytes as hex digits and a
    /// newline (what `openssl rand -hex 32` prints).
    pub fn generate_file_text(rng: &mut (impl RngCore + CryptoRng)) -> Zeroizing<String> {
        let mut raw = Zeroizing::new([0u8; GENERATED_SECRET_BYTES]);
        rng.fill_bytes(raw.as_mut());
        let mut text = Zeroizing::new(hex::encode(raw.as_ref()));
        text.push('\n');
        text
    }

    pub(crate) fn key(&self) -> &[u8] {
        &self.0
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted() {
        let s = RelaySecret::from_bytes(&[b'k'; 40]).unwrap();
        assert_eq!(format!("{s:?}"), "RelaySecret(<redacted>)");
    }

    #[test]
    fn length_limits() {
        assert!(matches!(
            RelaySecret::from_bytes(&[b'k'; MIN_SECRET_LEN - 1]),
            Err(SecretError::TooShort(n)) if n == MIN_SECRET_LEN - 1
        ));
        assert!(RelaySecret::from_bytes(&[b'k'; MIN_SECRET_LEN]).is_ok());
        // whitespace does not count
        let mut padded = vec![b'k'; MIN_SECRET_LEN - 1];
        padded.extend_from_slice(b" \n");
        assert!(matches!(
            RelaySecret::from_bytes(&padded),
            Err(SecretError::TooShort(_))
        ));
        assert!(RelaySecret::from_bytes(&[b'k'; MAX_SECRET_LEN]).is_ok());
        assert!(matches!(
            RelaySecret::from_bytes(&[b'k'; MAX_SECRET_LEN + 1]),
            Err(SecretError::TooLong(_))
        ));
    }

    #[test]
    fn a_generated_file_loads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay.secret");
        let text = RelaySecret::generate_file_text(&mut rand::rngs::OsRng);
        assert_eq!(text.len(), 2 * GENERATED_SECRET_BYTES + 1);
        std::fs::write(&path, text.as_bytes()).unwrap();
        let s = RelaySecret::load(&path).unwrap();
        assert_eq!(s.key(), text.trim().as_bytes());
        assert!(matches!(
            RelaySecret::load(&dir.path().join("missing")),
            Err(SecretError::Io(_))
        ));
    }
}
