//! The media path's vocabulary: [`MediaKind`], the frames seen at the encryption boundary
//! ([`TapFrame`]) and the [`MediaEvent`]s a peer reports.

use sotto_frame::Codec;
use tokio::sync::mpsc;

/// Audio or video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MediaKind {
    /// Opus.
    Audio,
    /// VP8.
    Video,
}

impl MediaKind {
    /// The SFrame layout this stream uses (codec-aware: VP8 or Opus clear bytes).
    pub fn codec(self) -> Codec {
        match self {
            MediaKind::Audio => Codec::Opus,
            MediaKind::Video => Codec::Vp8,
        }
    }
    pub(super) fn idx(self) -> usize {
        match self {
            MediaKind::Audio => 0,
            MediaKind::Video => 1,
        }
    }
}

/// A frame seen at the boundary of the encryption layer (for tests and the demo report).
#[derive(Clone)]
pub struct TapFrame {
    /// True: plaintext handed to encryption; false: plaintext that came out of decryption.
    pub sent: bool,
    /// Which stream.
    pub kind: MediaKind,
    /// The encoded frame in clear.
    pub frame: Vec<u8>,
    /// Its SFrame ciphertext as it went on (or came off) the wire.
    pub wire: Vec<u8>,
}

impl std::fmt::Debug for TapFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TapFrame")
            .field("sent", &self.sent)
            .field("kind", &self.kind)
            .field("len", &self.frame.len())
            .finish()
    }
}

/// Something that happened on the media path.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MediaEvent {
    /// The peer connection changed state (`connecting`, `connected`, `failed`, ...).
    State(String),
    /// The first frame of this kind decrypted.
    FirstFrameDecrypted(MediaKind),
    /// A frame failed to decrypt (first failure of a run; the count is in [`MediaStats`]).
    ///
    /// [`MediaStats`]: super::MediaStats
    DecryptFailing(MediaKind, String),
    /// Frames decrypt again after failures.
    DecryptRecovered(MediaKind),
    /// Trickle ICE: a local candidate, as the W3C `RTCIceCandidateInit` JSON
    /// (`{"candidate":"candidate:…","sdpMid":"0","sdpMLineIndex":0,…}`), to be sent to the peer
    /// and given to its [`MediaPeer::add_remote_candidate`]. Emitted in both setup modes; the
    /// non-trickle SDP already contains every candidate.
    ///
    /// [`MediaPeer::add_remote_candidate`]: super::MediaPeer::add_remote_candidate
    LocalCandidate(String),
    /// Trickle ICE: local gathering finished (no more [`MediaEvent::LocalCandidate`]).
    GatheringComplete,
    /// The sender key is close to its counter limit (at most [`ROTATION_MARGIN`] frames left,
    /// fired once per key): the call core rotates (hands the next key out, then sets it with
    /// [`MediaPeer::use_send_key`]). At the limit itself frames are no longer sent.
    ///
    /// [`ROTATION_MARGIN`]: super::consts::ROTATION_MARGIN
    /// [`MediaPeer::use_send_key`]: super::MediaPeer::use_send_key
    RotationNeeded {
        /// Frames the current key may still encrypt.
        frames_left: u64,
    },
}

/// Receiver of [`MediaEvent`]s.
pub type MediaEvents = mpsc::UnboundedReceiver<MediaEvent>;
