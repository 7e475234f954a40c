//! Every limit of the frame layer, by name. Tests exercise each at the limit and one past it.

use core::time::Duration;

/// Largest plaintext frame (encoded audio/video frame) we encrypt or accept, in bytes.
/// A 4K VP8 key frame at high quality stays well under this.
pub const MAX_FRAME_SIZE: usize = 1 << 20;

/// Largest metadata (additional authenticated data besides the header), in bytes.
pub const MAX_METADATA_SIZE: usize = 256;

/// Longest SFrame header: one config byte, up to 8 KID bytes, up to 8 CTR bytes (RFC 9605 §4.3).
pub const MAX_HEADER_SIZE: usize = 17;

/// Number of low KID bits that carry the ratchet step (RFC 9605 §5.1 "R").
pub const KID_STEP_BITS: u32 = 4;

/// Number of KID bits above the step that carry the key generation (rotations on leave).
pub const KID_GENERATION_BITS: u32 = 4;

/// Number of KID bits left for the sender (stream) identifier.
pub const KID_SENDER_BITS: u32 = 64 - KID_STEP_BITS - KID_GENERATION_BITS;

/// Largest sender identifier that fits the KID layout.
pub const MAX_SENDER_ID: u64 = (1 << KID_SENDER_BITS) - 1;

/// How many ratchet steps a receiver derives forward, on demand, from one frame's KID.
/// Must stay below half the step space so "ahead" and "behind" are unambiguous.
pub const MAX_RATCHET_AHEAD: u64 = 6;

/// How many generations of one sender a receiver keeps at once (current + previous).
pub const MAX_GENERATIONS: usize = 3;

/// How many older ratchet steps of one generation a receiver keeps during their grace period.
pub const MAX_OLD_STEPS: usize = 2;

/// How long a receiver keeps a superseded key (older generation or ratchet step) so that frames
/// already in flight still decrypt.
pub const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(5);

/// Size of the per-key replay window, in frame counters.
pub const REPLAY_WINDOW: u64 = 128;

/// Hard cap on frames a sender encrypts under one key before it must rotate or ratchet.
/// Far below the 2^64 counter space (no nonce can repeat) and below the AEAD usage limits
/// for the 32- and 64-bit-tag suites' forgery bounds at realistic frame rates.
pub const MAX_FRAMES_PER_KEY: u64 = 1 << 32;

/// Largest number of senders one receiver key ring tracks.
pub const MAX_SENDERS: usize = 1024;

/// Bytes of a VP8 key frame kept in clear in codec-aware mode (3-byte frame tag + 7-byte
/// start code and dimensions, RFC 6386 §9.1).
pub const VP8_KEY_FRAME_CLEAR_BYTES: usize = 10;

/// Bytes of a VP8 inter (delta) frame kept in clear in codec-aware mode (the 3-byte frame tag).
pub const VP8_DELTA_FRAME_CLEAR_BYTES: usize = 3;

/// Bytes of an Opus packet kept in clear in codec-aware mode (the TOC byte, RFC 6716 §3.1).
pub const OPUS_CLEAR_BYTES: usize = 1;

/// Shortest base key accepted from the application, in bytes.
pub const MIN_BASE_KEY_SIZE: usize = 16;

/// Longest base key accepted from the application, in bytes (Nh of SHA-512).
pub const MAX_BASE_KEY_SIZE: usize = 64;

/// Longest grace period a ring accepts (longer settings are capped).
pub const MAX_GRACE_PERIOD: Duration = Duration::from_secs(3600);

/// Largest generation or ratchet step accepted in key material (keeps every sum far from
/// overflowing; a sender ratcheting 80 times a second would need 3.6 billion years).
pub const MAX_STEP: u64 = 1 << 53;
