//! Every limit and protocol constant of the crate, named in one place.
//!
//! Values marked "libsignal" match libsignal 0.90.0 (`rust/protocol/src/consts.rs`) so a session
//! with libsignal behaves the same on both ends.

/// Ciphertext message version this crate speaks (PQXDH, Kyber1024). libsignal 0.90.0: 4.
pub const CIPHERTEXT_MESSAGE_CURRENT_VERSION: u8 = 4;
/// Oldest message version accepted by the decoders (pre-Kyber X3DH). Sessions are never
/// *created* at this version; a decoded version-3 message is only useful with an existing session.
pub const CIPHERTEXT_MESSAGE_PRE_KYBER_VERSION: u8 = 3;

/// Key-type byte of a serialized Curve25519 public key ("Djb" in libsignal).
pub const DJB_KEY_TYPE: u8 = 0x05;
/// Key-type byte of a serialized round-3 Kyber1024 key or ciphertext.
pub const KYBER1024_KEY_TYPE: u8 = 0x08;

/// Length of the truncated HMAC-SHA256 on a `SignalMessage`.
pub const MAC_LENGTH: usize = 8;

/// How far ahead of the current chain index a single message may jump (libsignal: 25 000).
/// A message with `counter - chain_index > MAX_FORWARD_JUMPS` is rejected.
pub const MAX_FORWARD_JUMPS: usize = 25_000;
/// Skipped message keys kept per receiving chain for out-of-order delivery (libsignal: 2000);
/// the oldest is evicted first.
pub const MAX_MESSAGE_KEYS: usize = 2000;
/// Receiving chains kept per session state (libsignal: 5); the oldest is evicted first.
pub const MAX_RECEIVER_CHAINS: usize = 5;
/// Previous (archived) session states kept in a session record (libsignal: 40).
pub const ARCHIVED_STATES_MAX_LENGTH: usize = 40;
/// A session whose initial PreKeySignalMessage was never answered is not used to send
/// after this many seconds (libsignal: 30 days).
pub const MAX_UNACKNOWLEDGED_SESSION_AGE_SECS: u64 = 60 * 60 * 24 * 30;

/// Largest serialized message (either type) the decoders accept, in bytes. Not a libsignal
/// limit: a bound so that hostile input cannot make us allocate or hash without limit.
/// A PreKeySignalMessage carries a 1569-byte Kyber ciphertext plus the inner message.
pub const MAX_MESSAGE_SIZE: usize = 256 * 1024;
/// Largest plaintext `encrypt` accepts; chosen so the resulting PreKeySignalMessage always
/// fits in [`MAX_MESSAGE_SIZE`].
pub const MAX_PLAINTEXT_SIZE: usize = MAX_MESSAGE_SIZE - 4096;

/// Iterations of the fingerprint hash (libsignal's safety numbers: 5200).
pub const FINGERPRINT_ITERATIONS: u32 = 5200;
/// Version of the fingerprint format (hash input prefix, and scannable `version` field).
pub const FINGERPRINT_VERSION: u16 = 0;
/// Scannable fingerprint protobuf version (libsignal `ScannableFingerprint` version 1).
pub const SCANNABLE_FINGERPRINT_VERSION: u32 = 1;

/// Largest encrypted store file read back from disk.
pub const MAX_STORE_FILE_SIZE: usize = 64 * 1024 * 1024;

/// Argon2id memory cost for the file store's passphrase KDF, in KiB (OWASP minimum profile).
pub const STORE_ARGON2_M_COST_KIB: u32 = 19 * 1024;
/// Argon2id iterations for the file store's passphrase KDF.
pub const STORE_ARGON2_T_COST: u32 = 2;
/// Argon2id parallelism for the file store's passphrase KDF.
pub const STORE_ARGON2_P_COST: u32 = 1;

// ---- SPQR v1 (`protocol-spec/ratchet.md` §12) ----

/// Bytes per erasure-code chunk of the SPQR braid (SPQR v1: 32).
pub const SPQR_CHUNK_SIZE: usize = 32;
/// Largest message the SPQR erasure code carries: the ML-KEM-768 encapsulation-key vector
/// (1152 bytes), the biggest of header+MAC (96), ek (1152), ct1 (960), ct2+MAC (160).
pub const SPQR_MAX_CODED_MESSAGE_SIZE: usize = 1152;
/// How far ahead of the receiving SPQR chain's counter one message may jump (libsignal passes
/// its `MAX_FORWARD_JUMPS`).
pub const SPQR_MAX_JUMP: u32 = MAX_FORWARD_JUMPS as u32;
/// Skipped SPQR message keys kept per epoch for out-of-order delivery (libsignal passes its
/// `MAX_MESSAGE_KEYS`); keys older than `counter − SPQR_MAX_OOO_KEYS` are dropped.
pub const SPQR_MAX_OOO_KEYS: u32 = MAX_MESSAGE_KEYS as u32;
/// Skipped SPQR keys a restored session record may hold per epoch and direction: the receiving
/// chain keeps keys down to `counter − SPQR_MAX_OOO_KEYS`, one more than `SPQR_MAX_OOO_KEYS`.
pub const SPQR_MAX_STORED_SKIPPED_KEYS: usize = SPQR_MAX_OOO_KEYS as usize + 1;
/// SPQR chain epochs kept before the current sending epoch (SPQR v1: 1).
pub const SPQR_EPOCHS_KEPT_BEFORE_SEND: usize = 1;
/// Largest `pq_ratchet` field: version, epoch (u64 varint, ≤ 10 B), index (u32 varint, ≤ 5 B),
/// type, chunk index (u16 varint, ≤ 3 B), chunk.
pub const SPQR_MAX_WIRE_SIZE: usize = 1 + 10 + 5 + 1 + 3 + SPQR_CHUNK_SIZE;
