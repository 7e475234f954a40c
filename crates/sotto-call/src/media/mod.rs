//! Media: a webrtc-rs 0.21 peer connection whose every audio and video frame is SFrame-encrypted
//! *before* webrtc-rs packetizes it, and decrypted after reassembly on the far side.
//!
//! ```text
//!  source (IVF/Ogg) → encoded frame → sotto-frame encrypt (codec-aware) → write_sample → RTP/SRTP
//!  RTP → SampleBuilder (VP8/Opus depacketizer) → sotto-frame decrypt → sink (IVF/Ogg) + stats
//! ```
//!
//! DTLS-SRTP still protects each hop; SFrame protects the frame end to end, so a TURN server or
//! media relay that terminates or forwards the transport sees ciphertext only. One [`SenderKey`]
//! per peer covers both of its streams (one counter, so no nonce is ever reused); VP8 keeps its
//! 10/3 leading bytes and Opus its TOC byte in clear for the packetizer, authenticated as AAD.
//!
//! Two setup modes. Non-trickle: [`MediaPeer::create_offer`] / [`MediaPeer::accept_offer`]
//! return the SDP once ICE gathering completed (fast on loopback and with a nearby TURN server),
//! so one offer and one answer message carry everything. Trickle:
//! [`MediaPeer::create_offer_trickle`] / [`MediaPeer::accept_offer_trickle`] return at once, local
//! candidates come out as [`MediaEvent::LocalCandidate`] (W3C `RTCIceCandidateInit` JSON) and the
//! peer's go into [`MediaPeer::add_remote_candidate`] (kept if they arrive before the remote
//! description). Either way the SDP (with the DTLS fingerprint) and the candidates must travel
//! authenticated, which the call engine does inside the ratchet.
//!
//! Audio packets carry the RFC 6464 audio level of the PCM they were encoded from (header
//! extension `ssrc-audio-level`, negotiated on audio, in clear: [`level`]), which a sotto-relay
//! ranks speakers by.
//!
//! Keys: this is only the data plane. Which key we encrypt under and when it changes is the
//! call core's decision (the group key schedule, [`crate::group`]): it sets our key with
//! [`MediaPeer::use_send_key`] (a key never goes back), installs members' keys with
//! [`MediaPeer::install_remote_key`] and forgets a leaver's with [`MediaPeer::forget_sender`].
//! The receiver keeps older generations for a grace period (sotto-frame's `KeyRing`), so frames
//! in flight under the old key still decrypt and no frame is lost.
//!
//! Reassembly waits at most [`consts::MAX_LATE_TIME`] for a missing packet (NACK retransmits
//! video); a frame that never arrives whole is skipped, never handed to decryption in pieces. A
//! frame whose key has not arrived yet (a joiner's first frames race the keys) waits, at most
//! [`consts::KEY_WAIT`], and is tried again whenever a key is installed; a frame that fails to
//! decrypt otherwise is counted in [`MediaStats`] and dropped.
//!
//! Key frames: the first video frame under any new sender key (a ratchet step on a join, a new
//! generation on a leave), the first after a mute, and the next one after a keyframe request
//! (RTCP PLI/FIR from the relay or the peer) is a key frame ([`IvfSource::request_key_frame`]). A
//! receiver whose picture cannot be decoded (start, a frame that never decrypted or never
//! arrived) sends a PLI on that sender's track at each decrypted inter frame, at most one per
//! [`consts::KEYFRAME_REQUEST_RETRY`], until a key frame decrypts.
//!
//! Layout: `peer` ([`MediaPeer`]: building the connection, sources, mutes, closing),
//! `negotiate` (offer/answer, ICE candidates), `keys` (send key, remote keys), `send` (the send
//! loops), `receive` (reassembled frames: key wait, decryption, keyframe requests), `handler`
//! (webrtc-rs events), `ice` (candidate types, acceptance waits, privacy of relay candidates),
//! `record` (per-sender sink files), `shared` (state the tasks share), `stats`,
//! `config`, `types` (media kinds, events, tapped frames), `error`.
//!
//! [`SenderKey`]: sotto_frame::SenderKey

mod backend;
mod config;
pub mod consts;
mod error;
mod handler;
mod ice;
mod interceptors;
mod keys;
pub mod level;
mod loss;
mod negotiate;
mod peer;
mod receive;
mod record;
mod send;
mod shared;
pub mod sink;
pub mod source;
mod stats;
mod turn_bridge;
mod types;

pub use backend::{make_webrtc, MediaBackend, MediaFactory, MediaMaker, MediaMaking, WebrtcMedia};
pub use config::{IceServer, MediaConfig};
pub use error::MediaError;
pub use ice::{
    hide_related_address, hide_related_addresses_in_sdp, CandidateType, UnknownCandidateType,
    PRFLX_ACCEPTANCE_WAIT, RELAY_ACCEPTANCE_WAIT, SRFLX_ACCEPTANCE_WAIT,
};
pub use peer::MediaPeer;
pub use sink::{IvfSink, OggSink};
pub use source::{is_vp8_key_frame, IvfSource, OggOpusSource};
pub use stats::{MediaStats, SeenCandidate, StreamStats};
pub use types::{MediaEvent, MediaEvents, MediaKind, TapFrame};
