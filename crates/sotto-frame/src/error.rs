//! The one error type of this crate.

use core::fmt;

/// What went wrong. Variants say whether the peer sent something bad or the caller misused the
/// API; decryption failure is a single opaque variant. No variant carries key material or
/// plaintext, so printing an error never leaks a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    // ---- the peer (or the network) sent something we refuse ----
    /// The SFrame header is truncated or not minimally encoded.
    MalformedHeader(&'static str),
    /// No key is known for this KID (sender unknown, or its generation has not arrived yet).
    UnknownKey { kid: u64 },
    /// The KID names a generation or ratchet step older than the keys we still keep.
    StaleGeneration { kid: u64 },
    /// The KID's ratchet step is further ahead than [`crate::consts::MAX_RATCHET_AHEAD`].
    RatchetTooFar { kid: u64 },
    /// This counter was already accepted under this key.
    Replay { kid: u64, ctr: u64 },
    /// The counter is older than the replay window allows.
    CounterOutOfWindow { kid: u64, ctr: u64 },
    /// The ciphertext or tag did not authenticate. Deliberately says nothing more.
    AuthenticationFailed,
    /// The frame exceeds its size limit: [`crate::consts::MAX_FRAME_SIZE`] of plaintext, or
    /// [`crate::CipherSuite::max_wire_frame_size`] as it came off the wire.
    FrameTooLarge { len: usize, limit: usize },
    /// The metadata exceeds [`crate::consts::MAX_METADATA_SIZE`].
    MetadataTooLarge { len: usize, limit: usize },
    /// A codec-aware frame is shorter than the bytes its codec keeps in clear.
    CodecFrameTooShort { len: usize, needed: usize },
    /// After the header, fewer bytes than the suite's authentication tag.
    TruncatedCiphertext { len: usize, needed: usize },

    // ---- the caller misused the API ----
    /// The sender key hit its counter limit: call `rotate` or `ratchet` first.
    CounterExhausted,
    /// A key of the wrong length for the suite.
    InvalidKeyLength { expected: usize, got: usize },
    /// A cipher suite identifier this crate does not implement.
    UnsupportedSuite(u16),
    /// A sender id too large for the KID layout, or a generation/step that went backwards.
    InvalidKeyId(&'static str),
    /// The ring already tracks [`crate::consts::MAX_SENDERS`] senders.
    TooManySenders { limit: usize },
    /// A key was offered for a different cipher suite than the ring uses.
    SuiteMismatch,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::MalformedHeader(why) => write!(f, "malformed SFrame header: {why}"),
            Error::UnknownKey { kid } => write!(f, "no key for KID {kid:#x}"),
            Error::StaleGeneration { kid } => {
                write!(
                    f,
                    "KID {kid:#x} names a key generation or step no longer kept"
                )
            }
            Error::RatchetTooFar { kid } => write!(
                f,
                "KID {kid:#x} is more than {} ratchet steps ahead",
                crate::consts::MAX_RATCHET_AHEAD
            ),
            Error::Replay { kid, ctr } => write!(f, "replayed frame: KID {kid:#x} CTR {ctr}"),
            Error::CounterOutOfWindow { kid, ctr } => write!(
                f,
                "frame counter {ctr} under KID {kid:#x} fell out of the replay window"
            ),
            Error::AuthenticationFailed => write!(f, "frame failed authentication"),
            Error::FrameTooLarge { len, limit } => {
                write!(f, "frame of {len} bytes exceeds its size limit ({limit})")
            }
            Error::MetadataTooLarge { len, limit } => {
                write!(
                    f,
                    "metadata of {len} bytes exceeds MAX_METADATA_SIZE ({limit})"
                )
            }
            Error::TruncatedCiphertext { len, needed } => write!(
                f,
                "{len} bytes after the SFrame header, fewer than the {needed}-byte tag"
            ),
            Error::CodecFrameTooShort { len, needed } => write!(
                f,
                "codec frame of {len} bytes is shorter than its {needed} clear bytes"
            ),
            Error::CounterExhausted => {
                write!(
                    f,
                    "sender key reached its frame limit; rotate or ratchet it"
                )
            }
            Error::InvalidKeyLength { expected, got } => {
                write!(f, "key of {got} bytes, suite needs {expected}")
            }
            Error::UnsupportedSuite(id) => write!(f, "unsupported cipher suite {id:#06x}"),
            Error::InvalidKeyId(why) => write!(f, "invalid key id: {why}"),
            Error::TooManySenders { limit } => {
                write!(f, "key ring already tracks MAX_SENDERS ({limit}) senders")
            }
            Error::SuiteMismatch => write!(f, "key is for a different cipher suite"),
        }
    }
}

impl std::error::Error for Error {}
