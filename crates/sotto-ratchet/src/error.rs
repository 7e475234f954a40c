//! The crate's single error type.

/// Everything that can go wrong in `sotto-ratchet`.
///
/// Variants are grouped into "the peer sent something we reject", "the caller misused the API"
/// and "local storage failed". No variant carries key material or plaintext; `Display` only names
/// the problem. Any failure to authenticate or decrypt a message is the single opaque
/// [`Error::DecryptionFailed`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    // ---- the peer sent something we reject ----
    /// A serialized key had the wrong type byte or length, or was not a valid point.
    #[error("invalid key: {0}")]
    InvalidKey(&'static str),
    /// A message could not be parsed (bad protobuf, missing field, bad length).
    #[error("invalid message: {0}")]
    InvalidMessage(&'static str),
    /// A message with an older, unsupported version byte.
    #[error("legacy message version {0}")]
    LegacyVersion(u8),
    /// A message with a version byte newer than this crate speaks.
    #[error("unrecognized message version {0}")]
    UnrecognizedVersion(u8),
    /// A message or file larger than the named limit in `consts`.
    #[error("input of {0} bytes exceeds the size limit")]
    TooLarge(usize),
    /// A signature in a prekey bundle did not verify.
    #[error("signature verification failed")]
    InvalidSignature,
    /// The message did not authenticate or decrypt. Deliberately says nothing more.
    #[error("decryption failed")]
    DecryptionFailed,
    /// A message whose key was already used (a replay or a duplicate delivery).
    #[error("duplicate message")]
    DuplicateMessage,
    /// The message counter jumps further ahead than `consts::MAX_FORWARD_JUMPS`.
    #[error("message counter jumps too far ahead")]
    TooFarInFuture,
    /// The PreKeySignalMessage names a one-time prekey we do not have (or already consumed).
    #[error("unknown one-time prekey {0}")]
    UnknownPreKey(u32),
    /// The PreKeySignalMessage names a signed prekey we do not have.
    #[error("unknown signed prekey {0}")]
    UnknownSignedPreKey(u32),
    /// The PreKeySignalMessage names a Kyber prekey we do not have.
    #[error("unknown kyber prekey {0}")]
    UnknownKyberPreKey(u32),
    /// The contact presented an identity key different from the one we trust for them.
    /// Nothing was stored; the application must decide (see `IdentityChange`).
    #[error("untrusted identity for {0}")]
    UntrustedIdentity(String),

    // ---- the caller misused the API ----
    /// No session exists for that address.
    #[error("no session for {0}")]
    NoSession(String),
    /// An argument was out of range or inconsistent.
    #[error("invalid argument: {0}")]
    InvalidArgument(&'static str),

    // ---- local storage ----
    /// The encrypted store file failed authentication: wrong key/passphrase or tampered file.
    #[error("store file failed authentication (wrong key or tampered file)")]
    StoreTampered,
    /// The store file is not in the expected format.
    #[error("store file is malformed: {0}")]
    StoreFormat(&'static str),
    /// An I/O error from the file store.
    #[error("store I/O error: {0}")]
    StoreIo(std::io::ErrorKind),
}

/// Result alias.
pub type Result<T> = core::result::Result<T, Error>;
