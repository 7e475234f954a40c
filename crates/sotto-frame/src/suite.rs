//! Cipher suites (RFC 9605 §4.5, IANA "SFrame Cipher Suites") and their AEADs.

use aes::cipher::{KeyIvInit, StreamCipher};
use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes128Gcm, Aes256Gcm, Nonce, Tag};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::consts::{MAX_FRAME_SIZE, MAX_HEADER_SIZE};
use crate::error::Error;

/// An SFrame cipher suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum CipherSuite {
    /// 0x0001: AES-128-CTR + HMAC-SHA256 with an 80-bit tag. Small overhead for audio.
    Aes128CtrHmacSha256_80,
    /// 0x0002: AES-128-CTR + HMAC-SHA256 with a 64-bit tag.
    Aes128CtrHmacSha256_64,
    /// 0x0003: AES-128-CTR + HMAC-SHA256 with a 32-bit tag.
    Aes128CtrHmacSha256_32,
    /// 0x0004: AES-128-GCM with SHA-256 for key derivation. The default: browsers speak it.
    #[default]
    Aes128GcmSha256_128,
    /// 0x0005: AES-256-GCM with SHA-512 for key derivation.
    Aes256GcmSha512_128,
}

/// Which hash the suite's HKDF uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hash {
    Sha256,
    Sha512,
}

impl CipherSuite {
    /// Every suite this crate implements.
    pub const ALL: [CipherSuite; 5] = [
        CipherSuite::Aes128CtrHmacSha256_80,
        CipherSuite::Aes128CtrHmacSha256_64,
        CipherSuite::Aes128CtrHmacSha256_32,
        CipherSuite::Aes128GcmSha256_128,
        CipherSuite::Aes256GcmSha512_128,
    ];

    /// The IANA identifier.
    pub const fn id(self) -> u16 {
        match self {
            CipherSuite::Aes128CtrHmacSha256_80 => 0x0001,
            CipherSuite::Aes128CtrHmacSha256_64 => 0x0002,
            CipherSuite::Aes128CtrHmacSha256_32 => 0x0003,
            CipherSuite::Aes128GcmSha256_128 => 0x0004,
            CipherSuite::Aes256GcmSha512_128 => 0x0005,
        }
    }

    /// The suite with IANA identifier `id`.
    ///
    /// # Errors
    /// [`Error::UnsupportedSuite`] for any other value.
    pub fn from_id(id: u16) -> Result<Self, Error> {
        CipherSuite::ALL
            .into_iter()
            .find(|s| s.id() == id)
            .ok_or(Error::UnsupportedSuite(id))
    }

    /// The IANA name.
    pub const fn name(self) -> &'static str {
        match self {
            CipherSuite::Aes128CtrHmacSha256_80 => "AES_128_CTR_HMAC_SHA256_80",
            CipherSuite::Aes128CtrHmacSha256_64 => "AES_128_CTR_HMAC_SHA256_64",
            CipherSuite::Aes128CtrHmacSha256_32 => "AES_128_CTR_HMAC_SHA256_32",
            CipherSuite::Aes128GcmSha256_128 => "AES_128_GCM_SHA256_128",
            CipherSuite::Aes256GcmSha512_128 => "AES_256_GCM_SHA512_128",
        }
    }

    /// Nh: output size of the hash, in bytes (also the size of a ratcheted base key).
    pub const fn nh(self) -> usize {
        match self.hash() {
            Hash::Sha256 => 32,
            Hash::Sha512 => 64,
        }
    }

    /// Nk: AEAD key size in bytes (for CTR+HMAC: encryption key ‖ authentication key).
    pub const fn nk(self) -> usize {
        match self {
            CipherSuite::Aes128CtrHmacSha256_80
            | CipherSuite::Aes128CtrHmacSha256_64
            | CipherSuite::Aes128CtrHmacSha256_32 => 48,
            CipherSuite::Aes128GcmSha256_128 => 16,
            CipherSuite::Aes256GcmSha512_128 => 32,
        }
    }

    /// Nn: nonce size in bytes.
    pub const fn nn(self) -> usize {
        12
    }

    /// Nt: authentication tag size in bytes.
    pub const fn nt(self) -> usize {
        match self {
            CipherSuite::Aes128CtrHmacSha256_80 => 10,
            CipherSuite::Aes128CtrHmacSha256_64 => 8,
            CipherSuite::Aes128CtrHmacSha256_32 => 4,
            CipherSuite::Aes128GcmSha256_128 | CipherSuite::Aes256GcmSha512_128 => 16,
        }
    }

    /// Longest wire frame under this suite: what a [`MAX_FRAME_SIZE`] plaintext becomes with
    /// the longest header and a tag, `MAX_FRAME_SIZE + MAX_HEADER_SIZE + Nt` (codec-aware clear
    /// bytes are part of the plaintext). [`crate::KeyRing::decrypt`] and
    /// [`crate::Codec::split`] refuse longer frames.
    pub const fn max_wire_frame_size(self) -> usize {
        MAX_FRAME_SIZE + MAX_HEADER_SIZE + self.nt()
    }

    pub(crate) const fn hash(self) -> Hash {
        match self {
            CipherSuite::Aes256GcmSha512_128 => Hash::Sha512,
            _ => Hash::Sha256,
        }
    }
}

impl core::fmt::Display for CipherSuite {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{} ({:#06x})", self.name(), self.id())
    }
}

type Aes128Ctr = ctr::Ctr32BE<aes::Aes128>;
type HmacSha256 = Hmac<Sha256>;

/// A keyed AEAD of one suite, with the key schedule expanded once.
#[derive(Clone)]
pub(crate) enum Aead {
    Gcm128(Box<Aes128Gcm>),
    Gcm256(Box<Aes256Gcm>),
    CtrHmac {
        enc_key: Zeroizing<[u8; 16]>,
        mac: Box<HmacSha256>,
        nt: usize,
    },
}

impl Aead {
    /// Keys the suite's AEAD with `key` (Nk bytes).
    pub(crate) fn new(suite: CipherSuite, key: &[u8]) -> Result<Self, Error> {
        if key.len() != suite.nk() {
            return Err(Error::InvalidKeyLength {
                expected: suite.nk(),
                got: key.len(),
            });
        }
        let bad_len = || Error::InvalidKeyLength {
            expected: suite.nk(),
            got: key.len(),
        };
        Ok(match suite {
            CipherSuite::Aes128GcmSha256_128 => Aead::Gcm128(Box::new(
                Aes128Gcm::new_from_slice(key).map_err(|_| bad_len())?,
            )),
            CipherSuite::Aes256GcmSha512_128 => Aead::Gcm256(Box::new(
                Aes256Gcm::new_from_slice(key).map_err(|_| bad_len())?,
            )),
            CipherSuite::Aes128CtrHmacSha256_80
            | CipherSuite::Aes128CtrHmacSha256_64
            | CipherSuite::Aes128CtrHmacSha256_32 => {
                // RFC 9605 §4.5.1: enc_key = key[..16], auth_key = key[16..]
                let (enc, auth) = key.split_at(16);
                let mut enc_key = Zeroizing::new([0u8; 16]);
                enc_key.copy_from_slice(enc);
                let mac = <HmacSha256 as Mac>::new_from_slice(auth).map_err(|_| bad_len())?;
                Aead::CtrHmac {
                    enc_key,
                    mac: Box::new(mac),
                    nt: suite.nt(),
                }
            }
        })
    }

    /// Encrypts `buf` in place and appends the tag.
    pub(crate) fn seal_in_place(
        &self,
        nonce: &[u8; 12],
        aad_parts: &[&[u8]],
        buf: &mut Vec<u8>,
        start: usize,
    ) -> Result<(), Error> {
        match self {
            Aead::Gcm128(c) => gcm_seal(c.as_ref(), nonce, aad_parts, buf, start),
            Aead::Gcm256(c) => gcm_seal(c.as_ref(), nonce, aad_parts, buf, start),
            Aead::CtrHmac { enc_key, mac, nt } => {
                let pt = buf.get_mut(start..).ok_or(Error::AuthenticationFailed)?;
                ctr_apply(enc_key, nonce, pt);
                let tag = ctr_tag(mac, *nt, nonce, aad_parts, &buf[start..]);
                buf.extend_from_slice(&tag[..*nt]);
                Ok(())
            }
        }
    }

    /// Checks the tag at the end of `buf[start..]`, then decrypts in place and truncates the tag.
    /// On failure `buf` holds no plaintext.
    pub(crate) fn open_in_place(
        &self,
        nonce: &[u8; 12],
        aad_parts: &[&[u8]],
        buf: &mut Vec<u8>,
        start: usize,
    ) -> Result<(), Error> {
        let nt = match self {
            Aead::Gcm128(_) | Aead::Gcm256(_) => 16,
            Aead::CtrHmac { nt, .. } => *nt,
        };
        if buf.len() < start + nt {
            return Err(Error::AuthenticationFailed);
        }
        let tag_at = buf.len() - nt;
        match self {
            Aead::Gcm128(c) => gcm_open(c.as_ref(), nonce, aad_parts, buf, start, tag_at),
            Aead::Gcm256(c) => gcm_open(c.as_ref(), nonce, aad_parts, buf, start, tag_at),
            Aead::CtrHmac { enc_key, mac, nt } => {
                let expected = ctr_tag(mac, *nt, nonce, aad_parts, &buf[start..tag_at]);
                let ok: bool = expected[..*nt].ct_eq(&buf[tag_at..]).into();
                if !ok {
                    return Err(Error::AuthenticationFailed);
                }
                buf.truncate(tag_at);
                ctr_apply(enc_key, nonce, &mut buf[start..]);
                Ok(())
            }
        }
    }
}

fn gcm_seal<C: AeadInPlace>(
    cipher: &C,
    nonce: &[u8; 12],
    aad_parts: &[&[u8]],
    buf: &mut Vec<u8>,
    start: usize,
) -> Result<(), Error> {
    let aad = join_aad(aad_parts);
    let tag = cipher
        .encrypt_in_place_detached(Nonce::from_slice(nonce), &aad, &mut buf[start..])
        .map_err(|_| Error::FrameTooLarge {
            len: buf.len(),
            limit: crate::consts::MAX_FRAME_SIZE,
        })?;
    buf.extend_from_slice(&tag);
    Ok(())
}

fn gcm_open<C: AeadInPlace>(
    cipher: &C,
    nonce: &[u8; 12],
    aad_parts: &[&[u8]],
    buf: &mut Vec<u8>,
    start: usize,
    tag_at: usize,
) -> Result<(), Error> {
    let aad = join_aad(aad_parts);
    let tag = Tag::clone_from_slice(&buf[tag_at..]);
    let body = &mut buf[start..tag_at];
    cipher
        .decrypt_in_place_detached(Nonce::from_slice(nonce), &aad, body, &tag)
        .map_err(|_| Error::AuthenticationFailed)?;
    buf.truncate(tag_at);
    Ok(())
}

/// AAD = header ‖ metadata. Small: avoid a heap allocation for the common case.
fn join_aad<'a>(parts: &[&'a [u8]]) -> smallbuf::SmallBuf<'a> {
    smallbuf::SmallBuf::concat(parts)
}

fn ctr_apply(enc_key: &[u8; 16], nonce: &[u8; 12], data: &mut [u8]) {
    // RFC 9605 §4.5.1: initial counter block = nonce ‖ 0x00000000
    let mut iv = [0u8; 16];
    iv[..12].copy_from_slice(nonce);
    let mut cipher = Aes128Ctr::new(enc_key.into(), &iv.into());
    cipher.apply_keystream(data);
}

/// RFC 9605 §4.5.1 compute_tag:
/// HMAC(auth_key, len(aad) ‖ len(ct) ‖ Nt ‖ nonce ‖ aad ‖ ct), each length as 8 bytes BE.
fn ctr_tag(
    mac: &HmacSha256,
    nt: usize,
    nonce: &[u8; 12],
    aad_parts: &[&[u8]],
    ct: &[u8],
) -> [u8; 32] {
    let mut m = mac.clone();
    let aad_len = aad_parts.iter().map(|p| p.len()).sum::<usize>() as u64;
    m.update(&aad_len.to_be_bytes());
    m.update(&(ct.len() as u64).to_be_bytes());
    m.update(&(nt as u64).to_be_bytes());
    m.update(nonce);
    for part in aad_parts {
        m.update(part);
    }
    m.update(ct);
    m.finalize().into_bytes().into()
}

/// A tiny stack buffer for AAD (header ‖ metadata), spilling to the heap when large.
mod smallbuf {
    use crate::consts::{MAX_HEADER_SIZE, MAX_METADATA_SIZE};

    const INLINE: usize = MAX_HEADER_SIZE + 64;

    pub(crate) enum SmallBuf<'a> {
        Borrowed(&'a [u8]),
        Inline([u8; INLINE], usize),
        Heap(Vec<u8>),
    }

    impl<'a> SmallBuf<'a> {
        pub(crate) fn concat(parts: &[&'a [u8]]) -> Self {
            // Common case (no metadata): the header alone, no copy.
            let mut non_empty = parts.iter().filter(|p| !p.is_empty());
            match (non_empty.next(), non_empty.next()) {
                (None, _) => return SmallBuf::Borrowed(&[]),
                (Some(only), None) => return SmallBuf::Borrowed(only),
                _ => {}
            }
            let n: usize = parts.iter().map(|p| p.len()).sum();
            if n <= INLINE {
                let mut buf = [0u8; INLINE];
                let mut at = 0;
                for p in parts {
                    buf[at..at + p.len()].copy_from_slice(p);
                    at += p.len();
                }
                SmallBuf::Inline(buf, n)
            } else {
                let mut v = Vec::with_capacity(n.min(2 * (MAX_HEADER_SIZE + MAX_METADATA_SIZE)));
                for p in parts {
                    v.extend_from_slice(p);
                }
                SmallBuf::Heap(v)
            }
        }
    }

    impl core::ops::Deref for SmallBuf<'_> {
        type Target = [u8];
        fn deref(&self) -> &[u8] {
            match self {
                SmallBuf::Borrowed(b) => b,
                SmallBuf::Inline(buf, n) => &buf[..*n],
                SmallBuf::Heap(v) => v,
            }
        }
    }
}

/// The suite's AEAD on its own (RFC 9605 §4.5): seals `plaintext`, returning `ciphertext ‖ tag`.
/// Low-level: frames go through [`crate::SenderKey`]; this exists for test vectors and tools.
///
/// # Errors
/// [`Error::InvalidKeyLength`] if `key` is not Nk bytes.
pub fn aead_seal(
    suite: CipherSuite,
    key: &[u8],
    nonce: &[u8; 12],
    aad: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, Error> {
    let aead = Aead::new(suite, key)?;
    let mut buf = plaintext.to_vec();
    aead.seal_in_place(nonce, &[aad], &mut buf, 0)?;
    Ok(buf)
}

/// Opens `ciphertext ‖ tag` sealed by [`aead_seal`]; no plaintext unless the tag verifies.
///
/// # Errors
/// [`Error::InvalidKeyLength`] or [`Error::AuthenticationFailed`].
pub fn aead_open(
    suite: CipherSuite,
    key: &[u8],
    nonce: &[u8; 12],
    aad: &[u8],
    ciphertext: &[u8],
) -> Result<Vec<u8>, Error> {
    let aead = Aead::new(suite, key)?;
    let mut buf = ciphertext.to_vec();
    aead.open_in_place(nonce, &[aad], &mut buf, 0)?;
    Ok(buf)
}
