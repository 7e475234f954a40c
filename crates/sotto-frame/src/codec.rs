//! Codec-aware mode: which leading bytes of an encoded frame stay in clear.
//!
//! Packetizers and SFUs look at the first bytes of a frame (VP8's frame tag tells a key frame
//! from a delta frame; Opus's TOC byte tells the frame layout). In codec-aware mode those bytes
//! are sent in clear *before* the SFrame header and are authenticated as SFrame metadata, so a
//! relay that changes them makes decryption fail. See `protocol-spec/frame.md`.

use crate::consts::{OPUS_CLEAR_BYTES, VP8_DELTA_FRAME_CLEAR_BYTES, VP8_KEY_FRAME_CLEAR_BYTES};
use crate::error::Error;
use crate::header::Header;
use crate::suite::CipherSuite;

/// A frame's wire layout, as [`Codec::split`] found it: `frame[..clear_len]` in clear,
/// `frame[clear_len..clear_len + header_len]` the SFrame header, the rest ciphertext and tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameParts {
    /// Codec bytes kept in clear.
    pub clear_len: usize,
    /// The decoded SFrame header.
    pub header: Header,
    /// Its encoded length.
    pub header_len: usize,
    /// Ciphertext and tag.
    pub body_len: usize,
}

/// How a frame is laid out on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Codec {
    /// The whole frame is encrypted: wire = SFrame header ‖ ciphertext ‖ tag.
    #[default]
    Full,
    /// VP8: 10 bytes of a key frame, 3 of a delta frame stay in clear (RFC 6386 §9.1).
    Vp8,
    /// Opus: the TOC byte stays in clear (RFC 6716 §3.1).
    Opus,
}

impl Codec {
    /// Number of leading bytes kept in clear, decided by the frame's first byte.
    ///
    /// # Errors
    /// [`Error::CodecFrameTooShort`] if the frame is shorter than that number (or empty).
    pub fn clear_len(self, frame: &[u8]) -> Result<usize, Error> {
        let needed = match self {
            Codec::Full => return Ok(0),
            Codec::Opus => OPUS_CLEAR_BYTES,
            Codec::Vp8 => match frame.first() {
                // RFC 6386 §9.1: bit 0 of the frame tag is 0 for a key frame.
                Some(b) if b & 0x01 == 0 => VP8_KEY_FRAME_CLEAR_BYTES,
                Some(_) => VP8_DELTA_FRAME_CLEAR_BYTES,
                None => VP8_DELTA_FRAME_CLEAR_BYTES,
            },
        };
        if frame.len() < needed {
            return Err(Error::CodecFrameTooShort {
                len: frame.len(),
                needed,
            });
        }
        Ok(needed)
    }

    /// Checks that `frame` is laid out as an RFC 9605 frame of this codec under `suite`: the
    /// codec's clear bytes, a minimally encoded SFrame header, then at least the suite's tag
    /// length of ciphertext, at most [`CipherSuite::max_wire_frame_size`] in all (the limit
    /// [`crate::KeyRing::decrypt`] applies). Needs no key: what a relay, a capture tool or a
    /// test can check of a frame it cannot open.
    ///
    /// # Errors
    /// [`Error::CodecFrameTooShort`], [`Error::MalformedHeader`], [`Error::TruncatedCiphertext`]
    /// or [`Error::FrameTooLarge`].
    pub fn split(self, suite: CipherSuite, frame: &[u8]) -> Result<FrameParts, Error> {
        let limit = suite.max_wire_frame_size();
        if frame.len() > limit {
            return Err(Error::FrameTooLarge {
                len: frame.len(),
                limit,
            });
        }
        let clear_len = self.clear_len(frame)?;
        let (header, header_len) = Header::decode(&frame[clear_len..])?;
        let body_len = frame.len() - clear_len - header_len;
        if body_len < suite.nt() {
            return Err(Error::TruncatedCiphertext {
                len: body_len,
                needed: suite.nt(),
            });
        }
        Ok(FrameParts {
            clear_len,
            header,
            header_len,
            body_len,
        })
    }

    /// True for a VP8 key frame (frame tag bit 0 clear); false for anything else.
    pub fn is_key_frame(self, frame: &[u8]) -> bool {
        matches!((self, frame.first()), (Codec::Vp8, Some(b)) if b & 0x01 == 0)
    }
}
