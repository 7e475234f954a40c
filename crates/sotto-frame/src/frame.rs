//! Stateless frame protection under one derived key (RFC 9605 §4.4.3 and §4.4.4).

use crate::consts::{MAX_FRAME_SIZE, MAX_HEADER_SIZE, MAX_METADATA_SIZE};
use crate::error::Error;
use crate::header::Header;
use crate::keys::derive_key_salt;
use crate::suite::{Aead, CipherSuite};

/// A key ready to protect frames: the suite's AEAD keyed with `sframe_key`, and `sframe_salt`.
/// Built once per KID; the AES key schedule is not repeated per frame.
#[derive(Clone)]
pub struct FrameKey {
    suite: CipherSuite,
    kid: u64,
    aead: Aead,
    salt: [u8; 12],
}

impl core::fmt::Debug for FrameKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("FrameKey")
            .field("suite", &self.suite)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl Drop for FrameKey {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.salt);
    }
}

impl FrameKey {
    /// Derives the key and salt for `kid` from `base_key` (RFC 9605 §4.4.2).
    ///
    /// # Errors
    /// Only if the suite's AEAD refuses the derived key, which cannot happen for the suites here.
    pub fn derive(suite: CipherSuite, kid: u64, base_key: &[u8]) -> Result<Self, Error> {
        let derived = derive_key_salt(suite, kid, base_key);
        Ok(FrameKey {
            suite,
            kid,
            aead: Aead::new(suite, &derived.key)?,
            salt: derived.salt,
        })
    }

    /// The KID this key is bound to.
    pub fn kid(&self) -> u64 {
        self.kid
    }

    /// The cipher suite.
    pub fn suite(&self) -> CipherSuite {
        self.suite
    }

    /// RFC 9605 §4.4.3: nonce = sframe_salt XOR CTR (CTR big-endian, left-padded to Nn bytes).
    pub fn nonce(&self, ctr: u64) -> [u8; 12] {
        let mut nonce = self.salt;
        for (n, c) in nonce[4..].iter_mut().zip(ctr.to_be_bytes()) {
            *n ^= c;
        }
        nonce
    }

    /// Appends `header ‖ ciphertext ‖ tag` for `plaintext` to `out`;
    /// AAD = header ‖ `metadata`.
    ///
    /// # Errors
    /// [`Error::FrameTooLarge`] / [`Error::MetadataTooLarge`] over the named limits.
    pub fn seal_into(
        &self,
        ctr: u64,
        metadata: &[u8],
        plaintext: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), Error> {
        check_sizes(plaintext.len(), metadata.len())?;
        self.seal_parts(ctr, &[metadata], plaintext, out)
    }

    /// As [`FrameKey::seal_into`] with metadata given in parts (already size-checked).
    pub(crate) fn seal_parts(
        &self,
        ctr: u64,
        metadata: &[&[u8]],
        plaintext: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), Error> {
        let (header, hlen) = Header::new(self.kid, ctr).encode_to_array();
        out.reserve(hlen + plaintext.len() + self.suite.nt());
        out.extend_from_slice(&header[..hlen]);
        let body = out.len();
        out.extend_from_slice(plaintext);
        let nonce = self.nonce(ctr);
        self.aead
            .seal_in_place(&nonce, &aad_parts(&header[..hlen], metadata), out, body)
    }

    /// Opens `header_bytes ‖ body` where `body = ciphertext ‖ tag`, returning `prefix ‖
    /// plaintext` (the prefix, e.g. clear codec bytes, is copied once into the output buffer).
    /// The tag is checked before any plaintext is produced.
    pub(crate) fn open(
        &self,
        ctr: u64,
        header_bytes: &[u8],
        metadata: &[&[u8]],
        prefix: &[u8],
        body: &[u8],
    ) -> Result<Vec<u8>, Error> {
        let mut buf = Vec::with_capacity(prefix.len() + body.len());
        buf.extend_from_slice(prefix);
        buf.extend_from_slice(body);
        let nonce = self.nonce(ctr);
        match self.aead.open_in_place(
            &nonce,
            &aad_parts(header_bytes, metadata),
            &mut buf,
            prefix.len(),
        ) {
            Ok(()) => Ok(buf),
            Err(e) => {
                zeroize::Zeroize::zeroize(&mut buf);
                Err(e)
            }
        }
    }

    /// Decrypts a whole SFrame ciphertext (header ‖ ciphertext ‖ tag) whose KID must be ours.
    /// No replay protection here: [`crate::KeyRing`] adds it.
    ///
    /// # Errors
    /// [`Error::MalformedHeader`], [`Error::UnknownKey`] for another KID,
    /// [`Error::AuthenticationFailed`], or a size limit.
    pub fn open_frame(&self, metadata: &[u8], sframe: &[u8]) -> Result<(Header, Vec<u8>), Error> {
        check_sizes(sframe.len().saturating_sub(MAX_HEADER_SIZE), metadata.len())?;
        let (header, consumed) = Header::decode(sframe)?;
        if header.kid != self.kid {
            return Err(Error::UnknownKey { kid: header.kid });
        }
        let (hb, body) = sframe.split_at(consumed);
        let pt = self.open(header.ctr, hb, &[metadata], &[], body)?;
        Ok((header, pt))
    }
}

pub(crate) fn check_sizes(frame: usize, metadata: usize) -> Result<(), Error> {
    if frame > MAX_FRAME_SIZE {
        return Err(Error::FrameTooLarge {
            len: frame,
            limit: MAX_FRAME_SIZE,
        });
    }
    if metadata > MAX_METADATA_SIZE {
        return Err(Error::MetadataTooLarge {
            len: metadata,
            limit: MAX_METADATA_SIZE,
        });
    }
    Ok(())
}

/// AAD = header ‖ metadata parts, as a short list of slices (no copy).
fn aad_parts<'a>(header: &'a [u8], metadata: &[&'a [u8]]) -> [&'a [u8]; 3] {
    [
        header,
        metadata.first().copied().unwrap_or_default(),
        metadata.get(1).copied().unwrap_or_default(),
    ]
}
