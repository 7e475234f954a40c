//! Named limits and timings of the media layer.

use std::time::Duration;

/// Longest SDP accepted from the peer.
pub const MAX_SDP_LEN: usize = 32 * 1024;
/// How long ICE gathering may take before setup fails.
pub const GATHER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the answer to a sotto-relay's offer waits for gathering to complete before it goes
/// out with the candidates gathered so far (host ones at least; a slow or dead STUN/TURN server
/// must not stop a join to a public relay).
pub const RELAY_GATHER_WAIT: Duration = Duration::from_secs(2);
/// Packets the sample builder waits for a late packet before giving up on a frame.
pub const MAX_LATE_PACKETS: u16 = 64;
/// Media time the sample builder waits for a missing packet before giving up on its frame
/// (bounds head-of-line blocking after a loss).
pub const MAX_LATE_TIME: Duration = Duration::from_millis(200);
/// One Opus packet per 20 ms.
pub const AUDIO_FRAME_INTERVAL: Duration = Duration::from_millis(20);
/// Longest remote ICE candidate (JSON) accepted.
pub const MAX_CANDIDATE_LEN: usize = 1024;
/// Remote candidates kept while the remote description has not arrived yet.
pub const MAX_EARLY_CANDIDATES: usize = 64;
/// Remote senders beyond the first that get their own sink files (group calls).
pub const MAX_EXTRA_SINKS: usize = 8;
/// Frames left under the current sender key at which [`super::MediaEvent::RotationNeeded`] fires
/// (about 17 minutes of audio and video at 65 frames/s before the key's counter runs out).
pub const ROTATION_MARGIN: u64 = 1 << 16;
/// How long a receiver waits for the key frame it asked for (PLI) before asking again. Longer than
/// the relay's `KEYFRAME_REQUEST_INTERVAL` (250 ms), inside which the relay drops repeated
/// requests for the same sender, so a dropped request is always repeated outside that window.
pub const KEYFRAME_REQUEST_RETRY: Duration = Duration::from_millis(300);
/// Interceptor slot of the keyframe-request surfacing interceptor (just above the loss knob,
/// i.e. near the wire, so inbound PLI/FIR are marked before anything else sees them).
pub(crate) const KEYFRAME_REQUEST_SLOT: usize = 510;
/// How long a received frame whose key has not arrived yet waits for it (a joiner's first
/// frames race the keys that come through the signaling server).
pub const KEY_WAIT: Duration = Duration::from_secs(1);
/// Frames waiting for their key, per remote track.
pub const MAX_HELD_FRAMES: usize = 128;
/// Bytes of frames waiting for their key, per remote track.
pub const MAX_HELD_BYTES: usize = 2 << 20;
/// Streams one TCP/TLS TURN bridge opens at most (one per ICE socket of its peer; webrtc-rs
/// opens one per local interface address).
pub const MAX_BRIDGE_CONNECTIONS: usize = 8;
/// How long a TCP/TLS TURN bridge's connection (TCP and TLS handshakes) may take.
pub const BRIDGE_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// TURN messages waiting to go out on one bridge stream; past it a message is dropped, as a
/// congested UDP path would drop it.
pub const BRIDGE_QUEUE: usize = 256;
