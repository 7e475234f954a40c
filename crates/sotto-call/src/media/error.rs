//! [`MediaError`]: what can go wrong in the media layer.

use std::time::Duration;

/// What can go wrong in the media layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MediaError {
    /// webrtc-rs refused an operation (bad SDP, ICE failure, closed connection...).
    #[error("webrtc: {0}")]
    Webrtc(String),
    /// A source file is not usable.
    #[error("bad media source: {0}")]
    BadSource(String),
    /// A sink could not be written.
    #[error("media sink: {0}")]
    Sink(String),
    /// SFrame refused a key or a frame.
    #[error("sframe: {0}")]
    Frame(#[from] sotto_frame::Error),
    /// ICE gathering did not complete within [`GATHER_TIMEOUT`].
    ///
    /// [`GATHER_TIMEOUT`]: super::consts::GATHER_TIMEOUT
    #[error("ICE gathering did not complete within {0:?}")]
    GatherTimeout(Duration),
    /// Relay-only ICE was asked for but no relay candidate was gathered.
    #[error("relay-only ICE gathered no relay candidate (check the TURN server and credentials)")]
    NoRelayCandidate,
    /// A remote ICE candidate that is malformed, too long, or one too many.
    #[error("bad ICE candidate: {0}")]
    BadCandidate(String),
    /// An SDP over [`MAX_SDP_LEN`].
    ///
    /// [`MAX_SDP_LEN`]: super::consts::MAX_SDP_LEN
    #[error("SDP of {len} bytes exceeds MAX_SDP_LEN ({limit})")]
    SdpTooLarge { len: usize, limit: usize },
    /// A remote media engine (the browser page of `sotto app`) is not connected.
    #[error("the media engine (call screen page) is not connected")]
    BackendGone,
    /// A remote media engine did not answer in time.
    #[error("the media engine did not answer within {0:?}")]
    BackendTimeout(Duration),
    /// A remote media engine refused an operation; `reason` is its short machine-readable
    /// reason (e.g. a DOMException name such as `NotAllowedError`).
    #[error("the media engine refused {op}: {reason}")]
    BackendRefused {
        /// The operation.
        op: &'static str,
        /// Why (from the page; print it escaped).
        reason: String,
    },
}

pub(super) fn wr(e: impl std::fmt::Display) -> MediaError {
    MediaError::Webrtc(e.to_string())
}
