//! The sending side: a sender key that ratchets (on joins) and rotates (on leaves), and the key
//! material a sender hands to receivers through the pairwise Signal sessions.

use crate::codec::Codec;
use crate::consts::{KID_GENERATION_BITS, KID_STEP_BITS, MAX_FRAMES_PER_KEY, MAX_SENDER_ID};
use crate::error::Error;
use crate::frame::{check_sizes, FrameKey};
use crate::keys::BaseKey;
use crate::suite::CipherSuite;

/// The logical identity of a sender key: who sends, which generation (bumped by `rotate`) and
/// which ratchet step (bumped by `ratchet`). The wire KID carries the sender in full and the
/// generation and step modulo 2^[`KID_GENERATION_BITS`] and 2^[`KID_STEP_BITS`]:
///
/// ```text
///  63                          8 7        4 3        0
/// +-----------------------------+----------+----------+
/// |          sender id          |  gen % 16 | step % 16 |
/// +-----------------------------+----------+----------+
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyId {
    /// Sender (one per media stream of a participant), below 2^56.
    pub sender: u64,
    /// Key generation: 0 for the first key, +1 at each `rotate`.
    pub generation: u64,
    /// Ratchet step within the generation: +1 at each `ratchet`.
    pub step: u64,
}

const STEP_MASK: u64 = (1 << KID_STEP_BITS) - 1;
const GEN_MASK: u64 = (1 << KID_GENERATION_BITS) - 1;

impl KeyId {
    /// The 64-bit KID written in SFrame headers.
    pub fn kid(&self) -> u64 {
        (self.sender << (KID_GENERATION_BITS + KID_STEP_BITS))
            | ((self.generation & GEN_MASK) << KID_STEP_BITS)
            | (self.step & STEP_MASK)
    }

    /// Splits a wire KID into (sender, generation mod 16, step mod 16).
    pub fn split_kid(kid: u64) -> (u64, u64, u64) {
        (
            kid >> (KID_GENERATION_BITS + KID_STEP_BITS),
            (kid >> KID_STEP_BITS) & GEN_MASK,
            kid & STEP_MASK,
        )
    }
}

/// What a sender distributes so others can decrypt it: the suite, its [`KeyId`] and the base key
/// at that ratchet step. Serialized by [`KeyMaterial::to_bytes`] for transport inside a Signal
/// session (never in clear). `Debug` prints no key bytes; equality is constant-time in the key.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyMaterial {
    /// Cipher suite the key is for.
    pub suite: CipherSuite,
    /// Who, which generation, which step.
    pub id: KeyId,
    /// The base key at `id.step`.
    pub base_key: BaseKey,
}

/// Version byte of the [`KeyMaterial`] encoding.
pub const KEY_MATERIAL_VERSION: u8 = 1;

impl core::fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("KeyMaterial")
            .field("suite", &self.suite)
            .field("id", &self.id)
            .field("base_key", &self.base_key)
            .finish()
    }
}

impl KeyMaterial {
    /// `version(1)=1 ‖ suite(2) ‖ sender(8) ‖ generation(8) ‖ step(8) ‖ len(1) ‖ base_key(len)`,
    /// integers big-endian. The caller must only ever send this inside an encrypted channel.
    pub fn to_bytes(&self) -> zeroize::Zeroizing<Vec<u8>> {
        let key = self.base_key.expose_secret();
        let mut out = zeroize::Zeroizing::new(Vec::with_capacity(28 + key.len()));
        out.push(KEY_MATERIAL_VERSION);
        out.extend_from_slice(&self.suite.id().to_be_bytes());
        out.extend_from_slice(&self.id.sender.to_be_bytes());
        out.extend_from_slice(&self.id.generation.to_be_bytes());
        out.extend_from_slice(&self.id.step.to_be_bytes());
        out.push(key.len() as u8);
        out.extend_from_slice(key);
        out
    }

    /// Strict inverse of [`KeyMaterial::to_bytes`]: refuses unknown versions and suites,
    /// trailing bytes, out-of-range sender ids and key lengths.
    ///
    /// # Errors
    /// [`Error::InvalidKeyId`], [`Error::UnsupportedSuite`] or [`Error::InvalidKeyLength`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        let bad = Error::InvalidKeyId("malformed key material");
        if bytes.len() < 28 || bytes[0] != KEY_MATERIAL_VERSION {
            return Err(bad);
        }
        let u64_at = |at: usize| -> Result<u64, Error> {
            let arr: [u8; 8] = bytes
                .get(at..at + 8)
                .and_then(|s| s.try_into().ok())
                .ok_or(Error::InvalidKeyId("malformed key material"))?;
            Ok(u64::from_be_bytes(arr))
        };
        let suite = CipherSuite::from_id(u16::from_be_bytes([bytes[1], bytes[2]]))?;
        let id = KeyId {
            sender: u64_at(3)?,
            generation: u64_at(11)?,
            step: u64_at(19)?,
        };
        if id.sender > MAX_SENDER_ID {
            return Err(Error::InvalidKeyId("sender id too large"));
        }
        let len = usize::from(bytes[27]);
        if bytes.len() != 28 + len {
            return Err(bad);
        }
        let base_key = BaseKey::new(&bytes[28..])?;
        Ok(KeyMaterial {
            suite,
            id,
            base_key,
        })
    }
}

/// A sender's current key. Encrypts frames with strictly increasing counters, so no
/// (key, nonce) pair ever repeats; refuses to go past its counter limit.
///
/// ```
/// use sotto_frame::{CipherSuite, Codec, KeyRing, SenderKey};
/// use std::time::Instant;
///
/// let mut alice = SenderKey::new(CipherSuite::default(), 7, &[0x42; 16])?;
/// let mut bob = KeyRing::new(CipherSuite::default());
/// bob.add_key(&alice.material(), Instant::now())?;
///
/// let wire = alice.encrypt(Codec::Full, b"", b"an encoded frame")?;
/// let got = bob.decrypt(Codec::Full, b"", &wire, Instant::now())?;
/// assert_eq!(got.frame, b"an encoded frame");
/// assert_eq!(got.id.sender, 7);
/// # Ok::<(), sotto_frame::Error>(())
/// ```
pub struct SenderKey {
    suite: CipherSuite,
    id: KeyId,
    base_key: BaseKey,
    key: FrameKey,
    next_ctr: u64,
    counter_limit: u64,
}

impl core::fmt::Debug for SenderKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SenderKey")
            .field("suite", &self.suite)
            .field("id", &self.id)
            .field("next_ctr", &self.next_ctr)
            .finish_non_exhaustive()
    }
}

impl SenderKey {
    /// A sender key for `sender` at generation 0, step 0.
    ///
    /// # Errors
    /// [`Error::InvalidKeyId`] for a sender id above [`MAX_SENDER_ID`];
    /// [`Error::InvalidKeyLength`] for a base key outside the accepted sizes.
    pub fn new(suite: CipherSuite, sender: u64, base_key: &[u8]) -> Result<Self, Error> {
        let id = KeyId {
            sender,
            generation: 0,
            step: 0,
        };
        Self::from_parts(suite, id, BaseKey::new(base_key)?)
    }

    /// Resumes sending with persisted key material, continuing at counter `next_ctr`.
    ///
    /// The caller MUST pass a counter above every counter already used under this material
    /// (persist it before sending): reusing a counter reuses a nonce. When in doubt, call
    /// [`SenderKey::ratchet`] right after resuming, which moves to a fresh key.
    ///
    /// # Errors
    /// As [`SenderKey::new`].
    pub fn resume(material: &KeyMaterial, next_ctr: u64) -> Result<Self, Error> {
        let mut key = Self::from_parts(material.suite, material.id, material.base_key.clone())?;
        key.next_ctr = next_ctr;
        Ok(key)
    }

    /// The counter the next frame will use (persist it to [`SenderKey::resume`] safely).
    pub fn next_counter(&self) -> u64 {
        self.next_ctr
    }

    fn from_parts(suite: CipherSuite, id: KeyId, base_key: BaseKey) -> Result<Self, Error> {
        if id.sender > MAX_SENDER_ID {
            return Err(Error::InvalidKeyId("sender id too large"));
        }
        let key = FrameKey::derive(suite, id.kid(), base_key.expose_secret())?;
        Ok(SenderKey {
            suite,
            id,
            base_key,
            key,
            next_ctr: 0,
            counter_limit: MAX_FRAMES_PER_KEY,
        })
    }

    /// Lowers the number of frames this key may encrypt (never above [`MAX_FRAMES_PER_KEY`]).
    pub fn set_counter_limit(&mut self, limit: u64) {
        self.counter_limit = limit.min(MAX_FRAMES_PER_KEY);
    }

    /// Frames left before [`Error::CounterExhausted`].
    pub fn frames_left(&self) -> u64 {
        self.counter_limit.saturating_sub(self.next_ctr)
    }

    /// Who, which generation, which step.
    pub fn id(&self) -> KeyId {
        self.id
    }

    /// The wire KID.
    pub fn kid(&self) -> u64 {
        self.id.kid()
    }

    /// The suite.
    pub fn suite(&self) -> CipherSuite {
        self.suite
    }

    /// The material to hand to receivers (through an encrypted channel only).
    pub fn material(&self) -> KeyMaterial {
        KeyMaterial {
            suite: self.suite,
            id: self.id,
            base_key: self.base_key.clone(),
        }
    }

    /// Someone joined: step the base key forward (RFC 9605 §5.1) so the newcomer, who receives
    /// only the new material, cannot decrypt earlier frames. Existing receivers follow on their
    /// own when they see the new KID. The frame counter restarts under the new key.
    ///
    /// # Errors
    /// Only if the derived key is refused, which cannot happen for the suites here.
    pub fn ratchet(&mut self) -> Result<(), Error> {
        let id = KeyId {
            step: self.id.step.wrapping_add(1),
            ..self.id
        };
        let base_key = self.base_key.ratchet(self.suite);
        self.replace(id, base_key)
    }

    /// Someone left: replace the base key with fresh material (to be given only to those who
    /// remain), as a new generation at step 0.
    ///
    /// # Errors
    /// [`Error::InvalidKeyLength`] for a base key outside the accepted sizes.
    pub fn rotate(&mut self, new_base_key: &[u8]) -> Result<(), Error> {
        let id = KeyId {
            generation: self.id.generation.wrapping_add(1),
            step: 0,
            ..self.id
        };
        self.replace(id, BaseKey::new(new_base_key)?)
    }

    fn replace(&mut self, id: KeyId, base_key: BaseKey) -> Result<(), Error> {
        let key = FrameKey::derive(self.suite, id.kid(), base_key.expose_secret())?;
        self.id = id;
        self.base_key = base_key;
        self.key = key;
        self.next_ctr = 0;
        Ok(())
    }

    /// Encrypts one encoded frame. With a codec-aware [`Codec`], the codec's leading bytes stay
    /// in clear in front of the SFrame header and are authenticated, followed by `metadata`.
    ///
    /// # Errors
    /// [`Error::CounterExhausted`] at the counter limit (rotate or ratchet first),
    /// [`Error::FrameTooLarge`], [`Error::MetadataTooLarge`], [`Error::CodecFrameTooShort`].
    pub fn encrypt(
        &mut self,
        codec: Codec,
        metadata: &[u8],
        frame: &[u8],
    ) -> Result<Vec<u8>, Error> {
        let mut out = Vec::new();
        self.encrypt_into(codec, metadata, frame, &mut out)?;
        Ok(out)
    }

    /// As [`SenderKey::encrypt`], appending to `out` (reuse a buffer to avoid allocations).
    ///
    /// # Errors
    /// As [`SenderKey::encrypt`]. On error nothing is appended and no counter is used.
    pub fn encrypt_into(
        &mut self,
        codec: Codec,
        metadata: &[u8],
        frame: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), Error> {
        if self.next_ctr >= self.counter_limit {
            return Err(Error::CounterExhausted);
        }
        check_sizes(frame.len(), metadata.len())?;
        let clear = codec.clear_len(frame)?;
        let (clear_bytes, rest) = frame.split_at(clear);
        let start = out.len();
        out.extend_from_slice(clear_bytes);
        // Codec-aware: metadata (AAD after the header) = clear codec bytes ‖ caller metadata.
        let result = self
            .key
            .seal_parts(self.next_ctr, &[clear_bytes, metadata], rest, out);
        match result {
            Ok(()) => {
                self.next_ctr += 1;
                Ok(())
            }
            Err(e) => {
                out.truncate(start);
                Err(e)
            }
        }
    }
}
