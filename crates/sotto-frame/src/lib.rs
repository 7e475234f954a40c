//! # sotto-frame: RFC 9605 SFrame for encoded media frames
//!
//! Every encoded audio or video frame is encrypted here, end to end, *before* it is packetized,
//! so that a media relay or TURN server that strips SRTP still sees only ciphertext.
//!
//! The crate does no I/O and has no clock: time comes in as `now` arguments.
//!
//! * [`Header`]: the RFC 9605 §4.3 header, with a strict decoder.
//! * [`CipherSuite`]: AES-128-GCM (default), AES-256-GCM, AES-128-CTR + HMAC-SHA256 (80/64/32-bit
//!   tags), on RustCrypto primitives.
//! * [`SenderKey`]: one sender's key; `ratchet()` when someone joins (RFC 9605 §5.1), `rotate()`
//!   when someone leaves; refuses to encrypt past its counter limit.
//! * [`KeyRing`]: a receiver's keys for one call: per sender, current and previous generations,
//!   ratchet-forward on demand within a bounded window, grace periods, per-key replay windows.
//! * [`Codec`]: full-frame mode or codec-aware mode (VP8/Opus leading bytes in clear,
//!   authenticated as metadata).
//!
//! The wire formats and key schedule are specified in `protocol-spec/frame.md`.
//!
//! ```
//! use sotto_frame::{CipherSuite, Codec, Error, KeyRing, SenderKey};
//! use std::time::{Duration, Instant};
//!
//! let t0 = Instant::now();
//! let mut alice = SenderKey::new(CipherSuite::Aes128GcmSha256_128, 1, &[7u8; 16])?;
//! let mut bob = KeyRing::new(CipherSuite::Aes128GcmSha256_128);
//! bob.add_key(&alice.material(), t0)?;
//!
//! // VP8 key frame: 10 bytes stay in clear for the packetizer, the rest is encrypted.
//! let frame = [0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0xe0, 0x01, 0xaa, 0xbb];
//! let wire = alice.encrypt(Codec::Vp8, b"", &frame)?;
//! assert_eq!(&wire[..10], &frame[..10]);
//! assert_eq!(bob.decrypt(Codec::Vp8, b"", &wire, t0)?.frame, frame);
//!
//! // Replays are refused.
//! assert!(matches!(bob.decrypt(Codec::Vp8, b"", &wire, t0), Err(Error::Replay { .. })));
//!
//! // Someone joined: Alice ratchets, Bob follows by himself.
//! alice.ratchet()?;
//! let wire = alice.encrypt(Codec::Full, b"", b"after the join")?;
//! let got = bob.decrypt(Codec::Full, b"", &wire, t0 + Duration::from_millis(20))?;
//! assert_eq!(got.id.step, 1);
//! # Ok::<(), Error>(())
//! ```

pub mod codec;
pub mod consts;
mod error;
pub mod frame;
pub mod header;
pub mod keys;
pub mod ring;
pub mod sender;
pub mod suite;

pub use codec::{Codec, FrameParts};
pub use error::Error;
pub use frame::FrameKey;
pub use header::Header;
pub use keys::{derive_key_salt, BaseKey};
pub use ring::{Decrypted, KeyRing, KeyUpdate, ReplayVerdict, ReplayWindow, RingConfig};
pub use sender::{KeyId, KeyMaterial, SenderKey};
pub use suite::CipherSuite;
