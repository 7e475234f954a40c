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

mod backend;
pub mod consts;
mod loss;
pub mod sink;
pub mod source;

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rtc::interceptor::Registry;
use rtc::media::io::sample_builder::SampleBuilder;
use rtc::media::Sample;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_OPUS, MIME_TYPE_VP8};
use rtc::peer_connection::configuration::{RTCConfigurationBuilder, RTCIceTransportPolicy};
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::transport::RTCIceServer;
use rtc::rtp::codec::opus::OpusPacket;
use rtc::rtp::codec::vp8::Vp8Packet;
use rtc::rtp::packetizer::Depacketizer;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use sotto_frame::{CipherSuite, Codec, KeyMaterial, KeyRing, SenderKey};
use tokio::sync::{mpsc, Notify};
use webrtc::media_stream::track_local::static_sample::TrackLocalStaticSample;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::media_stream::Track;
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCIceCandidateInit, RTCIceGatheringState, RTCPeerConnectionIceEvent, RTCPeerConnectionState,
    RTCStatsReportEntry, StatsSelector,
};
use webrtc::rtp_transceiver::RtpSender;
use zeroize::Zeroizing;

pub use backend::MediaBackend;
use consts::*;
pub use sink::{IvfSink, OggSink};
pub use source::{is_vp8_key_frame, IvfSource, OggOpusSource};

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
    #[error("ICE gathering did not complete within {0:?}")]
    GatherTimeout(Duration),
    /// Relay-only ICE was asked for but no relay candidate was gathered.
    #[error("relay-only ICE gathered no relay candidate (check the TURN server and credentials)")]
    NoRelayCandidate,
    /// A remote ICE candidate that is malformed, too long, or one too many.
    #[error("bad ICE candidate: {0}")]
    BadCandidate(String),
    /// An SDP over [`MAX_SDP_LEN`].
    #[error("SDP of {len} bytes exceeds MAX_SDP_LEN ({limit})")]
    SdpTooLarge { len: usize, limit: usize },
}

fn wr(e: impl std::fmt::Display) -> MediaError {
    MediaError::Webrtc(e.to_string())
}

/// A STUN or TURN server for ICE.
#[derive(Clone, Default)]
pub struct IceServer {
    /// `stun:host:port` or `turn:host:port?transport=udp`.
    pub urls: Vec<String>,
    /// TURN username (coturn REST form: `expiry:user`).
    pub username: String,
    /// TURN password.
    pub credential: String,
}

impl std::fmt::Debug for IceServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IceServer")
            .field("urls", &self.urls)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

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
    fn idx(self) -> usize {
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

/// Configuration of one [`MediaPeer`].
pub struct MediaConfig {
    /// STUN/TURN servers.
    pub ice_servers: Vec<IceServer>,
    /// Use relay candidates only (all media through TURN).
    pub relay_only: bool,
    /// Local address to bind ICE sockets on.
    pub bind: IpAddr,
    /// SFrame cipher suite.
    pub suite: CipherSuite,
    /// Our SFrame sender id (KID high bits), distinct per participant in a call.
    pub sender_id: u64,
    /// Video source (None: send no video).
    pub video: Option<IvfSource>,
    /// Audio source (None: send no audio).
    pub audio: Option<OggOpusSource>,
    /// Where to write what we receive and decrypt (`<prefix>.ivf`, `<prefix>.ogg`).
    pub record_prefix: Option<PathBuf>,
    /// Frames at the encryption boundary, for tests.
    pub tap: Option<mpsc::UnboundedSender<TapFrame>>,
}

impl MediaConfig {
    /// Loopback defaults: no ICE servers, bundled camera 1 and tone, AES-128-GCM.
    pub fn loopback(sender_id: u64) -> Result<Self, MediaError> {
        Ok(MediaConfig {
            ice_servers: Vec::new(),
            relay_only: false,
            bind: IpAddr::from([127, 0, 0, 1]),
            suite: CipherSuite::Aes128GcmSha256_128,
            sender_id,
            video: Some(IvfSource::camera1()?),
            audio: Some(OggOpusSource::tone()?),
            record_prefix: None,
            tap: None,
        })
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
    DecryptFailing(MediaKind, String),
    /// Frames decrypt again after failures.
    DecryptRecovered(MediaKind),
    /// Trickle ICE: a local candidate, as the W3C `RTCIceCandidateInit` JSON
    /// (`{"candidate":"candidate:…","sdpMid":"0","sdpMLineIndex":0,…}`), to be sent to the peer
    /// and given to its [`MediaPeer::add_remote_candidate`]. Emitted in both setup modes; the
    /// non-trickle SDP already contains every candidate.
    LocalCandidate(String),
    /// Trickle ICE: local gathering finished (no more [`MediaEvent::LocalCandidate`]).
    GatheringComplete,
    /// The sender key is close to its counter limit (at most [`ROTATION_MARGIN`] frames left,
    /// fired once per key): the call core rotates (hands the next key out, then sets it with
    /// [`MediaPeer::use_send_key`]). At the limit itself frames are no longer sent.
    RotationNeeded {
        /// Frames the current key may still encrypt.
        frames_left: u64,
    },
}

/// Per-stream counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamStats {
    /// Frames encrypted and handed to the packetizer.
    pub frames_sent: u64,
    /// SFrame bytes sent.
    pub bytes_sent: u64,
    /// RTP packets received.
    pub packets_received: u64,
    /// Frames reassembled from RTP.
    pub frames_received: u64,
    /// Frames that decrypted.
    pub frames_decrypted: u64,
    /// Frames that did not (authentication, replay, or no key within [`KEY_WAIT`]).
    pub frames_failed: u64,
    /// SFrame bytes received.
    pub bytes_received: u64,
    /// Video: key frames sent (the clip's own, or intra twins sent on request or key change).
    pub key_frames_sent: u64,
    /// Video: keyframe requests (PLI/FIR) received from the relay or the peer.
    pub keyframe_requests_received: u64,
    /// Video: keyframe requests (PLI) we sent because a sender's picture could not be decoded.
    pub keyframe_requests_sent: u64,
    /// Frames that arrived before their key, waited (at most [`KEY_WAIT`]) and then decrypted
    /// (included in `frames_decrypted`).
    pub frames_waited_for_key: u64,
    /// Frames under a key older than every key we hold for their sender: sent before that
    /// sender gave us access (a joiner's first frames, by design), or after that key's grace
    /// period. Not in `frames_failed`.
    pub frames_before_key: u64,
}

/// What a user wants to see about the media path.
#[derive(Debug, Clone, Default)]
pub struct MediaStats {
    /// Peer connection state.
    pub state: String,
    /// Type of the selected candidate pair: `host`, `srflx`, `prflx` or `relay` (local side).
    pub pair_type: Option<String>,
    /// Remote side of the selected pair. webrtc-rs 0.21 only reports remote candidates that
    /// were trickled in ([`MediaPeer::add_remote_candidate`]); with non-trickle setup this is
    /// `None`.
    pub remote_pair_type: Option<String>,
    /// Round-trip time of the selected pair.
    pub rtt: Option<Duration>,
    /// Send bitrate over the whole call so far, bits/s.
    pub send_bitrate: u64,
    /// Receive bitrate over the whole call so far, bits/s.
    pub recv_bitrate: u64,
    /// Audio counters.
    pub audio: StreamStats,
    /// Video counters.
    pub video: StreamStats,
    /// Our current SFrame key generation.
    pub local_generation: u64,
    /// The peer's newest key generation we hold.
    pub remote_generation: Option<u64>,
    /// Outgoing RTP packets dropped by the test loss knob.
    pub rtp_dropped_by_loss_knob: u64,
    /// Outgoing RTP packets that passed the loss knob (all of them when it is off).
    pub rtp_sent: u64,
}

#[derive(Default)]
struct Counters {
    frames_sent: AtomicU64,
    bytes_sent: AtomicU64,
    packets_received: AtomicU64,
    frames_received: AtomicU64,
    frames_decrypted: AtomicU64,
    frames_failed: AtomicU64,
    bytes_received: AtomicU64,
    key_frames_sent: AtomicU64,
    keyframe_requests_received: AtomicU64,
    keyframe_requests_sent: AtomicU64,
    frames_waited_for_key: AtomicU64,
    frames_before_key: AtomicU64,
    failing: AtomicBool,
}

impl Counters {
    fn snapshot(&self) -> StreamStats {
        StreamStats {
            frames_sent: self.frames_sent.load(Ordering::Relaxed),
            bytes_sent: self.bytes_sent.load(Ordering::Relaxed),
            packets_received: self.packets_received.load(Ordering::Relaxed),
            frames_received: self.frames_received.load(Ordering::Relaxed),
            frames_decrypted: self.frames_decrypted.load(Ordering::Relaxed),
            frames_failed: self.frames_failed.load(Ordering::Relaxed),
            bytes_received: self.bytes_received.load(Ordering::Relaxed),
            key_frames_sent: self.key_frames_sent.load(Ordering::Relaxed),
            keyframe_requests_received: self.keyframe_requests_received.load(Ordering::Relaxed),
            keyframe_requests_sent: self.keyframe_requests_sent.load(Ordering::Relaxed),
            frames_waited_for_key: self.frames_waited_for_key.load(Ordering::Relaxed),
            frames_before_key: self.frames_before_key.load(Ordering::Relaxed),
        }
    }
}

struct Sinks {
    ivf: Option<IvfSink>,
    ogg: Option<OggSink>,
    /// Where files go; the first remote sender gets `<prefix>.ivf/.ogg`, any further sender
    /// (group calls) `<prefix>-from-<sender id>.ivf/.ogg`, so no file mixes two streams.
    prefix: Option<PathBuf>,
    first_sender: Option<u64>,
    extra: std::collections::HashMap<u64, (IvfSink, OggSink)>,
}

impl Sinks {
    fn write(
        &mut self,
        sender: u64,
        kind: MediaKind,
        frame: &[u8],
        rtp_ts: u32,
    ) -> Result<(), MediaError> {
        let first = *self.first_sender.get_or_insert(sender);
        let (ivf, ogg) = if sender == first {
            (self.ivf.as_mut(), self.ogg.as_mut())
        } else {
            let Some(prefix) = self.prefix.clone() else {
                return Ok(());
            };
            if !self.extra.contains_key(&sender) {
                if self.extra.len() >= consts::MAX_EXTRA_SINKS {
                    return Ok(());
                }
                let base = format!(
                    "{}-from-{sender}",
                    prefix
                        .file_name()
                        .map(|f| f.to_string_lossy().into_owned())
                        .unwrap_or_default()
                );
                let p = prefix.with_file_name(base);
                let pair = (
                    IvfSink::create(&p.with_extension("ivf"), 15)?,
                    OggSink::create(&p.with_extension("ogg"))?,
                );
                self.extra.insert(sender, pair);
            }
            match self.extra.get_mut(&sender) {
                Some((i, o)) => (Some(i), Some(o)),
                None => (None, None),
            }
        };
        match kind {
            MediaKind::Video => {
                if let Some(s) = ivf {
                    s.write_frame(frame)?;
                }
            }
            MediaKind::Audio => {
                if let Some(s) = ogg {
                    s.write_packet(frame, rtp_ts)?;
                }
            }
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), MediaError> {
        if let Some(s) = self.ivf.as_mut() {
            s.finish()?;
        }
        if let Some(s) = self.ogg.as_mut() {
            s.finish()?;
        }
        for (i, o) in self.extra.values_mut() {
            i.finish()?;
            o.finish()?;
        }
        Ok(())
    }
}

struct Shared {
    sender_key: Mutex<SenderKey>,
    /// Frames each sender key may encrypt (see [`MediaPeer::set_counter_limit`]).
    counter_limit: AtomicU64,
    /// [`MediaEvent::RotationNeeded`] already fired for the current key.
    rotation_requested: AtomicBool,
    ring: Mutex<KeyRing>,
    /// Bumped at each key installed: receive loops retry the frames waiting for a key.
    key_epoch: tokio::sync::watch::Sender<u64>,
    remote_generation: Mutex<Option<u64>>,
    video_src: Mutex<Option<IvfSource>>,
    audio_src: Mutex<Option<OggOpusSource>>,
    muted: [AtomicBool; 2],
    counters: [Counters; 2],
    sinks: Mutex<Sinks>,
    events: mpsc::UnboundedSender<MediaEvent>,
    tap: Option<mpsc::UnboundedSender<TapFrame>>,
    state: Mutex<String>,
    gathered: Notify,
    gathering_done: AtomicBool,
    connected: Notify,
    closed: AtomicBool,
    started: Instant,
    /// Outgoing RTP loss for tests (see [`MediaPeer::set_outgoing_loss_per_mille`]).
    loss: Arc<loss::LossKnob>,
    /// Test knob: share of incoming RTP packets dropped before reassembly, per mille.
    rx_loss_per_mille: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding one of these locks cannot leave half-updated crypto state (every
    // update is a single assignment), so a poisoned lock is still safe to use.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Shared {
    fn emit(&self, e: MediaEvent) {
        let _ = self.events.send(e);
    }

    /// Tries to decrypt one reassembled frame; on success hands it to the sinks and the tap.
    /// Never panics on bad input. Counts decrypted frames, not failures (the caller decides
    /// whether a frame without its key yet waits).
    fn try_decrypt(&self, kind: MediaKind, wire: &[u8], rtp_ts: u32) -> Outcome {
        let c = &self.counters[kind.idx()];
        let now = Instant::now();
        let res = lock(&self.ring).decrypt(kind.codec(), b"", wire, now);
        match res {
            Ok(d) => {
                let n = c.frames_decrypted.fetch_add(1, Ordering::Relaxed);
                if n == 0 {
                    self.emit(MediaEvent::FirstFrameDecrypted(kind));
                }
                if c.failing.swap(false, Ordering::Relaxed) {
                    self.emit(MediaEvent::DecryptRecovered(kind));
                }
                {
                    let mut g = lock(&self.remote_generation);
                    if g.is_none_or(|x| x < d.id.generation) {
                        *g = Some(d.id.generation);
                    }
                }
                if let Err(e) = lock(&self.sinks).write(d.id.sender, kind, &d.frame, rtp_ts) {
                    tracing::warn!("sink: {e}");
                }
                let key_frame = kind == MediaKind::Video && source::is_vp8_key_frame(&d.frame);
                if let Some(tap) = &self.tap {
                    let _ = tap.send(TapFrame {
                        sent: false,
                        kind,
                        frame: d.frame,
                        wire: wire.to_vec(),
                    });
                }
                Outcome::Decrypted { key_frame }
            }
            // no key for this sender, generation or step yet: it may still arrive
            Err(
                sotto_frame::Error::UnknownKey { .. } | sotto_frame::Error::RatchetTooFar { .. },
            ) => Outcome::NoKeyYet,
            // under a key older than every one we hold for this sender
            Err(sotto_frame::Error::StaleGeneration { .. }) => Outcome::BeforeKey,
            Err(e) => Outcome::Failed(e.to_string()),
        }
    }

    /// Counts a frame that will never decrypt.
    fn count_lost(&self, kind: MediaKind, outcome: &Outcome) {
        let c = &self.counters[kind.idx()];
        match outcome {
            Outcome::BeforeKey => {
                c.frames_before_key.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Failed(_) | Outcome::NoKeyYet => {
                c.frames_failed.fetch_add(1, Ordering::Relaxed);
                if !c.failing.swap(true, Ordering::Relaxed) {
                    let why = match outcome {
                        Outcome::Failed(e) => e.clone(),
                        _ => "no key arrived within KEY_WAIT".into(),
                    };
                    self.emit(MediaEvent::DecryptFailing(kind, why));
                }
            }
            Outcome::Decrypted { .. } => {}
        }
    }
}

/// What became of one received frame.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    /// Decrypted (and whether it is a VP8 key frame).
    Decrypted { key_frame: bool },
    /// Its key has not arrived (yet).
    NoKeyYet,
    /// Sent under a key older than every key we hold for its sender (before we were given
    /// access, e.g. a joiner's first frames; or past that key's grace period).
    BeforeKey,
    /// Any other failure (authentication, replay, malformed).
    Failed(String),
}

/// A frame waiting for its key.
struct Held {
    at: Instant,
    wire: Vec<u8>,
    rtp_ts: u32,
}

/// Frames of one remote track waiting for their key, in arrival order, bounded by
/// [`MAX_HELD_FRAMES`], [`MAX_HELD_BYTES`] and [`KEY_WAIT`].
#[derive(Default)]
struct HeldFrames {
    frames: std::collections::VecDeque<Held>,
    bytes: usize,
}

struct Handler {
    shared: Arc<Shared>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            self.shared.gathering_done.store(true, Ordering::SeqCst);
            self.shared.gathered.notify_waiters();
            self.shared.emit(MediaEvent::GatheringComplete);
        }
    }

    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        match event
            .candidate
            .to_json()
            .map_err(wr)
            .and_then(|c| serde_json::to_string(&c).map_err(wr))
        {
            Ok(json) => self.shared.emit(MediaEvent::LocalCandidate(json)),
            Err(e) => tracing::debug!("local candidate not serializable: {e}"),
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let s = state.to_string();
        *lock(&self.shared.state) = s.clone();
        if state == RTCPeerConnectionState::Connected {
            self.shared.connected.notify_waiters();
        }
        self.shared.emit(MediaEvent::State(s));
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let shared = self.shared.clone();
        tokio::spawn(async move {
            match track.kind().await {
                RtpCodecKind::Video => {
                    receive_loop(
                        shared,
                        track,
                        MediaKind::Video,
                        SampleBuilder::new(MAX_LATE_PACKETS, Vp8Packet::default(), 90_000)
                            .with_max_time_delay(MAX_LATE_TIME),
                    )
                    .await
                }
                RtpCodecKind::Audio => {
                    receive_loop(
                        shared,
                        track,
                        MediaKind::Audio,
                        SampleBuilder::new(MAX_LATE_PACKETS, OpusPacket, 48_000)
                            .with_max_time_delay(MAX_LATE_TIME),
                    )
                    .await
                }
                _ => {}
            }
        });
    }
}

/// Receive side of keyframe requests, per remote video track (= per sender through a relay):
/// after a frame that did not decrypt (key not there yet) or went missing, and at the start, the
/// picture cannot be decoded until a key frame; each decrypted inter frame in that state sends a
/// PLI on the track, at most one per [`KEYFRAME_REQUEST_RETRY`].
struct KeyFrameWait {
    waiting: bool,
    last_request: Option<Instant>,
}

impl KeyFrameWait {
    /// Whether to send a PLI now, given the outcome of the frame just handled.
    fn after_frame(&mut self, outcome: &Outcome, now: Instant) -> bool {
        match outcome {
            Outcome::Decrypted { key_frame: true } => {
                self.waiting = false;
                false
            }
            Outcome::Decrypted { key_frame: false } if self.waiting => {
                let due = self
                    .last_request
                    .is_none_or(|t| now.duration_since(t) >= KEYFRAME_REQUEST_RETRY);
                if due {
                    self.last_request = Some(now);
                }
                due
            }
            Outcome::Decrypted { .. } => false,
            // a frame the decoder never gets: it needs a key frame again
            _ => {
                self.waiting = true;
                false
            }
        }
    }
}

async fn request_key_frame(shared: &Shared, track: &Arc<dyn TrackRemote>) {
    let Some(media_ssrc) = track.ssrcs().await.first().copied() else {
        return;
    };
    let pli = rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication {
        sender_ssrc: 0,
        media_ssrc,
    };
    match track.write_rtcp(vec![Box::new(pli)]).await {
        Ok(()) => {
            shared.counters[MediaKind::Video.idx()]
                .keyframe_requests_sent
                .fetch_add(1, Ordering::Relaxed);
        }
        Err(e) => tracing::debug!("PLI: {e}"),
    }
}

async fn receive_loop<D: Depacketizer>(
    shared: Arc<Shared>,
    track: Arc<dyn TrackRemote>,
    kind: MediaKind,
    mut builder: SampleBuilder<D>,
) {
    let mut wait = KeyFrameWait {
        waiting: true,
        last_request: None,
    };
    let mut held = HeldFrames::default();
    let mut keys = shared.key_epoch.subscribe();
    loop {
        let evt = tokio::select! {
            evt = track.poll() => evt,
            changed = keys.changed(), if !held.frames.is_empty() => {
                if changed.is_err() {
                    break;
                }
                let pli = retry_held(&shared, kind, &mut held, &mut wait, Instant::now());
                if pli {
                    request_key_frame(&shared, &track).await;
                }
                continue;
            }
        };
        let Some(evt) = evt else { break };
        if shared.closed.load(Ordering::Relaxed) {
            break;
        }
        if let TrackRemoteEvent::OnRtpPacket(packet) = evt {
            let loss = shared.rx_loss_per_mille.load(Ordering::Relaxed);
            if loss > 0 && rand::random::<u64>() % 1000 < loss {
                continue;
            }
            shared.counters[kind.idx()]
                .packets_received
                .fetch_add(1, Ordering::Relaxed);
            let now = Instant::now();
            builder.push(now, packet);
            let mut pli = false;
            while let Some(sample) = builder.pop(now) {
                let c = &shared.counters[kind.idx()];
                c.frames_received.fetch_add(1, Ordering::Relaxed);
                c.bytes_received
                    .fetch_add(sample.data.len() as u64, Ordering::Relaxed);
                if sample.prev_dropped_packets > sample.prev_padding_packets {
                    wait.waiting = true;
                }
                // behind frames still waiting for their key: wait in line (keeps the order)
                if !held.frames.is_empty() {
                    hold(
                        &shared,
                        kind,
                        &mut held,
                        &sample.data,
                        sample.packet_timestamp,
                        now,
                    );
                    pli |= retry_held(&shared, kind, &mut held, &mut wait, now);
                    continue;
                }
                match shared.try_decrypt(kind, &sample.data, sample.packet_timestamp) {
                    Outcome::NoKeyYet => hold(
                        &shared,
                        kind,
                        &mut held,
                        &sample.data,
                        sample.packet_timestamp,
                        now,
                    ),
                    o => {
                        shared.count_lost(kind, &o);
                        pli |= kind == MediaKind::Video && wait.after_frame(&o, now);
                    }
                }
            }
            if pli {
                request_key_frame(&shared, &track).await;
            }
        }
    }
}

/// Queues a frame whose key has not arrived; the oldest is dropped (counted failed) when a bound
/// is reached.
fn hold(
    shared: &Shared,
    kind: MediaKind,
    held: &mut HeldFrames,
    wire: &[u8],
    rtp_ts: u32,
    now: Instant,
) {
    while !held.frames.is_empty()
        && (held.frames.len() >= MAX_HELD_FRAMES || held.bytes + wire.len() > MAX_HELD_BYTES)
    {
        if let Some(old) = held.frames.pop_front() {
            held.bytes -= old.wire.len();
            shared.count_lost(kind, &Outcome::NoKeyYet);
        }
    }
    if wire.len() > MAX_HELD_BYTES {
        return shared.count_lost(kind, &Outcome::NoKeyYet);
    }
    held.bytes += wire.len();
    held.frames.push_back(Held {
        at: now,
        wire: wire.to_vec(),
        rtp_ts,
    });
}

/// Tries every held frame again, in order: decrypted ones go on, ones older than every key we
/// hold or held longer than [`KEY_WAIT`] are dropped and counted, the rest keep waiting.
/// Returns whether a keyframe request is due.
fn retry_held(
    shared: &Shared,
    kind: MediaKind,
    held: &mut HeldFrames,
    wait: &mut KeyFrameWait,
    now: Instant,
) -> bool {
    let mut pli = false;
    let mut keep = std::collections::VecDeque::new();
    while let Some(h) = held.frames.pop_front() {
        match shared.try_decrypt(kind, &h.wire, h.rtp_ts) {
            Outcome::NoKeyYet if now.duration_since(h.at) < KEY_WAIT => {
                keep.push_back(h);
                continue;
            }
            Outcome::Decrypted { key_frame } => {
                shared.counters[kind.idx()]
                    .frames_waited_for_key
                    .fetch_add(1, Ordering::Relaxed);
                pli |= kind == MediaKind::Video
                    && wait.after_frame(&Outcome::Decrypted { key_frame }, now);
            }
            o => {
                shared.count_lost(kind, &o);
                pli |= kind == MediaKind::Video && wait.after_frame(&o, now);
            }
        }
        held.bytes -= h.wire.len();
    }
    held.frames = keep;
    pli
}

/// One call leg: a webrtc-rs peer connection with an Opus and a VP8 track, SFrame on both.
pub struct MediaPeer {
    pc: Box<dyn PeerConnection>,
    shared: Arc<Shared>,
    video_track: Arc<TrackLocalStaticSample>,
    audio_track: Arc<TrackLocalStaticSample>,
    video_sender: Arc<dyn RtpSender>,
    audio_sender: Arc<dyn RtpSender>,
    relay_only: bool,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// Remote candidates that arrived before the remote description (applied with it).
    early_candidates: tokio::sync::Mutex<Option<Vec<RTCIceCandidateInit>>>,
}

/// Receiver of [`MediaEvent`]s.
pub type MediaEvents = mpsc::UnboundedReceiver<MediaEvent>;

fn track(
    kind: RtpCodecKind,
    mime: &str,
    clock: u32,
    channels: u16,
) -> Result<TrackLocalStaticSample, MediaError> {
    let name = if kind == RtpCodecKind::Video {
        "video"
    } else {
        "audio"
    };
    TrackLocalStaticSample::new(
        Instant::now(),
        MediaStreamTrack::new(
            "sotto".to_owned(),
            format!("sotto-{name}"),
            format!("sotto-{name}"),
            kind,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(rand::random::<u32>()),
                    ..Default::default()
                },
                codec: RTCRtpCodec {
                    mime_type: mime.to_owned(),
                    clock_rate: clock,
                    channels,
                    sdp_fmtp_line: String::new(),
                    rtcp_feedback: vec![],
                },
                ..Default::default()
            }],
        ),
    )
    .map_err(wr)
}

impl MediaPeer {
    /// Builds the peer connection (nothing is sent until the call connects).
    pub async fn new(cfg: MediaConfig) -> Result<(MediaPeer, MediaEvents), MediaError> {
        let mut base = Zeroizing::new(vec![0u8; cfg.suite.nh()]);
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut base);
        let sender_key = SenderKey::new(cfg.suite, cfg.sender_id, &base)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let sinks = Sinks {
            ivf: match &cfg.record_prefix {
                Some(p) => Some(IvfSink::create(&p.with_extension("ivf"), 15)?),
                None => None,
            },
            ogg: match &cfg.record_prefix {
                Some(p) => Some(OggSink::create(&p.with_extension("ogg"))?),
                None => None,
            },
            prefix: cfg.record_prefix.clone(),
            first_sender: None,
            extra: std::collections::HashMap::new(),
        };
        let shared = Arc::new(Shared {
            sender_key: Mutex::new(sender_key),
            counter_limit: AtomicU64::new(sotto_frame::consts::MAX_FRAMES_PER_KEY),
            rotation_requested: AtomicBool::new(false),
            ring: Mutex::new(KeyRing::new(cfg.suite)),
            key_epoch: tokio::sync::watch::Sender::new(0),
            remote_generation: Mutex::new(None),
            video_src: Mutex::new(cfg.video),
            audio_src: Mutex::new(cfg.audio),
            muted: [AtomicBool::new(false), AtomicBool::new(false)],
            counters: [Counters::default(), Counters::default()],
            sinks: Mutex::new(sinks),
            events: tx,
            tap: cfg.tap,
            state: Mutex::new("new".into()),
            gathered: Notify::new(),
            gathering_done: AtomicBool::new(false),
            connected: Notify::new(),
            closed: AtomicBool::new(false),
            started: Instant::now(),
            loss: Arc::new(loss::LossKnob::default()),
            rx_loss_per_mille: AtomicU64::new(0),
        });

        let mut media = MediaEngine::default();
        media.register_default_codecs().map_err(wr)?;
        let registry = register_default_interceptors(Registry::new(), &mut media)
            .map_err(wr)?
            .with(
                loss::LossInterceptor::slot(),
                loss::LossInterceptor::new(shared.loss.clone()),
            )
            // inbound PLI/FIR (from the relay or the peer) reach the video send track's events
            .with(
                rtc::interceptor::Slot::from(KEYFRAME_REQUEST_SLOT),
                sotto_relay::feedback::KeyframeRequests::passing_other_rtcp(),
            );
        let servers = cfg
            .ice_servers
            .iter()
            .map(|s| RTCIceServer {
                urls: s.urls.clone(),
                username: s.username.clone(),
                credential: s.credential.clone(),
            })
            .collect();
        let config = RTCConfigurationBuilder::new()
            .with_ice_servers(servers)
            .with_ice_transport_policy(if cfg.relay_only {
                RTCIceTransportPolicy::Relay
            } else {
                RTCIceTransportPolicy::All
            })
            .build();
        let pc = PeerConnectionBuilder::new()
            .with_configuration(config)
            .with_media_engine(media)
            .with_interceptor_registry(registry)
            .with_handler(Arc::new(Handler {
                shared: shared.clone(),
            }))
            .with_udp_addrs(vec![format!("{}:0", cfg.bind)])
            .build()
            .await
            .map_err(wr)?;
        let video_track = Arc::new(track(RtpCodecKind::Video, MIME_TYPE_VP8, 90_000, 0)?);
        let audio_track = Arc::new(track(RtpCodecKind::Audio, MIME_TYPE_OPUS, 48_000, 2)?);
        let video_sender = pc
            .add_track(video_track.clone() as Arc<dyn TrackLocal>)
            .await
            .map_err(wr)?;
        let audio_sender = pc
            .add_track(audio_track.clone() as Arc<dyn TrackLocal>)
            .await
            .map_err(wr)?;
        Ok((
            MediaPeer {
                pc: Box::new(pc),
                shared,
                video_track,
                audio_track,
                video_sender,
                audio_sender,
                relay_only: cfg.relay_only,
                tasks: Mutex::new(Vec::new()),
                early_candidates: tokio::sync::Mutex::new(Some(Vec::new())),
            },
            rx,
        ))
    }

    async fn gathered_sdp(&self) -> Result<String, MediaError> {
        let wait = async {
            loop {
                let notified = self.shared.gathered.notified();
                if self.shared.gathering_done.load(Ordering::SeqCst) {
                    return;
                }
                notified.await;
            }
        };
        if tokio::time::timeout(GATHER_TIMEOUT, wait).await.is_err() {
            // Relay-only gathering that never finishes is a TURN server that does not answer:
            // say so, rather than a generic timeout.
            let partial = self.pc.local_description().await.map(|d| d.sdp);
            if self.relay_only && !partial.is_some_and(|s| s.contains(" typ relay")) {
                return Err(MediaError::NoRelayCandidate);
            }
            return Err(MediaError::GatherTimeout(GATHER_TIMEOUT));
        }
        let sdp = self
            .pc
            .local_description()
            .await
            .ok_or_else(|| MediaError::Webrtc("no local description".into()))?
            .sdp;
        if self.relay_only && !sdp.contains(" typ relay") {
            return Err(MediaError::NoRelayCandidate);
        }
        Ok(sdp)
    }

    fn check_sdp(sdp: &str) -> Result<(), MediaError> {
        if sdp.len() > MAX_SDP_LEN {
            return Err(MediaError::SdpTooLarge {
                len: sdp.len(),
                limit: MAX_SDP_LEN,
            });
        }
        Ok(())
    }

    /// Creates the offer and returns its SDP once ICE gathering completed.
    pub async fn create_offer(&self) -> Result<String, MediaError> {
        let offer = self.pc.create_offer(None).await.map_err(wr)?;
        self.pc.set_local_description(offer).await.map_err(wr)?;
        self.gathered_sdp().await
    }

    /// Applies the remote offer; returns the answer SDP once ICE gathering completed.
    pub async fn accept_offer(&self, sdp: &str) -> Result<String, MediaError> {
        self.accept_offer_trickle(sdp).await?;
        self.gathered_sdp().await
    }

    /// Trickle ICE: creates the offer and returns its SDP at once, before gathering; local
    /// candidates then come out as [`MediaEvent::LocalCandidate`]. With `relay_only`, a missing
    /// relay candidate shows as a failed connection rather than [`MediaError::NoRelayCandidate`].
    pub async fn create_offer_trickle(&self) -> Result<String, MediaError> {
        let offer = self.pc.create_offer(None).await.map_err(wr)?;
        self.pc.set_local_description(offer).await.map_err(wr)?;
        self.current_local_sdp().await
    }

    /// Trickle ICE: applies the remote offer and returns the answer SDP at once.
    pub async fn accept_offer_trickle(&self, sdp: &str) -> Result<String, MediaError> {
        Self::check_sdp(sdp)?;
        let offer = RTCSessionDescription::offer(sdp.to_owned()).map_err(wr)?;
        self.pc.set_remote_description(offer).await.map_err(wr)?;
        self.apply_early_candidates().await?;
        let answer = self.pc.create_answer(None).await.map_err(wr)?;
        self.pc.set_local_description(answer).await.map_err(wr)?;
        self.current_local_sdp().await
    }

    async fn current_local_sdp(&self) -> Result<String, MediaError> {
        Ok(self
            .pc
            .local_description()
            .await
            .ok_or_else(|| MediaError::Webrtc("no local description".into()))?
            .sdp)
    }

    async fn apply_early_candidates(&self) -> Result<(), MediaError> {
        let early = self
            .early_candidates
            .lock()
            .await
            .take()
            .unwrap_or_default();
        for c in early {
            self.pc.add_ice_candidate(c).await.map_err(wr)?;
        }
        Ok(())
    }

    /// Trickle ICE: adds one remote candidate (the JSON of the peer's
    /// [`MediaEvent::LocalCandidate`]). Candidates that arrive before the remote description are
    /// kept (at most [`MAX_EARLY_CANDIDATES`]) and applied with it. Garbage is refused, never
    /// panics.
    pub async fn add_remote_candidate(&self, json: &str) -> Result<(), MediaError> {
        if json.len() > MAX_CANDIDATE_LEN {
            return Err(MediaError::BadCandidate(format!(
                "{} bytes exceeds MAX_CANDIDATE_LEN ({MAX_CANDIDATE_LEN})",
                json.len()
            )));
        }
        let init: RTCIceCandidateInit =
            serde_json::from_str(json).map_err(|e| MediaError::BadCandidate(e.to_string()))?;
        let mut early = self.early_candidates.lock().await;
        if let Some(list) = early.as_mut() {
            if list.len() >= MAX_EARLY_CANDIDATES {
                return Err(MediaError::BadCandidate(format!(
                    "more than MAX_EARLY_CANDIDATES ({MAX_EARLY_CANDIDATES}) before the remote description"
                )));
            }
            list.push(init);
            return Ok(());
        }
        drop(early);
        self.pc
            .add_ice_candidate(init)
            .await
            .map_err(|e| MediaError::BadCandidate(e.to_string()))
    }

    /// Applies the remote answer.
    pub async fn accept_answer(&self, sdp: &str) -> Result<(), MediaError> {
        Self::check_sdp(sdp)?;
        let answer = RTCSessionDescription::answer(sdp.to_owned()).map_err(wr)?;
        self.pc.set_remote_description(answer).await.map_err(wr)?;
        self.apply_early_candidates().await
    }

    /// Waits until the connection is up, or `limit` passes.
    pub async fn wait_connected(&self, limit: Duration) -> bool {
        let wait = async {
            loop {
                let notified = self.shared.connected.notified();
                if lock(&self.shared.state).as_str() == "connected" {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(limit, wait).await.is_ok()
    }

    /// Our current sender key, to be sent to the peer inside the ratchet. Never log it.
    pub fn local_key_material(&self) -> KeyMaterial {
        lock(&self.shared.sender_key).material()
    }

    /// Installs (or updates) the peer's key. Frames that failed for want of it are not replayed,
    /// but every later frame decrypts.
    pub fn install_remote_key(&self, material: &KeyMaterial) -> Result<(), MediaError> {
        lock(&self.shared.ring).add_key(material, Instant::now())?;
        self.shared.key_epoch.send_modify(|e| *e += 1);
        Ok(())
    }

    /// Data plane: encrypt under `material` from now on (the call core decides which key, and
    /// when: join ratchets, rotations, their activation). The counter starts again under the new
    /// key. A key never goes back: material older than the current key is refused, and the same
    /// key id only while nothing was encrypted under the current one (a reused counter would
    /// reuse a nonce).
    ///
    /// # Errors
    /// [`MediaError::Frame`] for a key sotto-frame refuses or one that goes back.
    pub fn use_send_key(&self, material: &KeyMaterial) -> Result<(), MediaError> {
        let mut next = SenderKey::resume(material, 0)?;
        next.set_counter_limit(self.shared.counter_limit.load(Ordering::Relaxed));
        let mut cur = lock(&self.shared.sender_key);
        let (c, n) = (cur.id(), next.id());
        let goes_back = (n.generation, n.step) < (c.generation, c.step)
            || ((n.generation, n.step) == (c.generation, c.step) && cur.next_counter() > 0);
        if goes_back || n.sender != c.sender {
            return Err(MediaError::Frame(sotto_frame::Error::InvalidKeyId(
                "send key does not move forward",
            )));
        }
        *cur = next;
        drop(cur);
        self.shared
            .rotation_requested
            .store(false, Ordering::Relaxed);
        Ok(())
    }

    /// Data plane: forget every key of sender id `sender` (a leaver's retention ended): their
    /// frames fail from now on.
    pub fn forget_sender(&self, sender: u64) {
        lock(&self.shared.ring).remove_sender(sender);
    }

    /// Lowers the number of frames each sender key may encrypt (the current one and every
    /// later generation; never above `sotto_frame::consts::MAX_FRAMES_PER_KEY`), e.g. to force
    /// periodic rotation. [`MediaEvent::RotationNeeded`] fires [`ROTATION_MARGIN`] frames
    /// before the limit (at once if the limit is lower than that).
    pub fn set_counter_limit(&self, limit: u64) {
        let limit = limit.min(sotto_frame::consts::MAX_FRAMES_PER_KEY);
        self.shared.counter_limit.store(limit, Ordering::Relaxed);
        lock(&self.shared.sender_key).set_counter_limit(limit);
    }

    /// Whether this peer was built relay-only (TURN candidates only).
    pub fn relay_only(&self) -> bool {
        self.relay_only
    }

    /// Frames the current key may still encrypt before its counter limit.
    pub fn frames_left(&self) -> u64 {
        lock(&self.shared.sender_key).frames_left()
    }

    /// Replaces the video source mid-call (no renegotiation; frames stay encrypted).
    pub fn switch_video_source(&self, src: IvfSource) {
        *lock(&self.shared.video_src) = Some(src);
    }

    /// Name of the current video source.
    pub fn video_source_name(&self) -> Option<String> {
        lock(&self.shared.video_src)
            .as_ref()
            .map(|s| s.name().to_string())
    }

    /// Stops (or resumes) sending audio frames.
    pub fn set_audio_muted(&self, muted: bool) {
        self.shared.muted[0].store(muted, Ordering::Relaxed);
    }

    /// Stops (or resumes) sending video frames.
    pub fn set_video_muted(&self, muted: bool) {
        self.shared.muted[1].store(muted, Ordering::Relaxed);
    }

    /// Test hook (`test-hooks` feature): drop this share (per mille, capped at 1000) of outgoing RTP packets right
    /// before the wire, as a lossy path would (RTCP is spared; NACK retransmissions may be
    /// dropped again). 0, the default, disables it.
    #[cfg(feature = "test-hooks")]
    pub fn set_outgoing_loss_per_mille(&self, p: u64) {
        self.shared
            .loss
            .per_mille
            .store(p.min(1000), Ordering::Relaxed);
    }

    /// Test hook (`test-hooks` feature): drop this share (per mille) of incoming RTP packets before frame reassembly,
    /// as a lossy network would (after the NACK interceptor, so nothing is retransmitted).
    #[cfg(feature = "test-hooks")]
    pub fn set_incoming_loss_per_mille(&self, p: u64) {
        self.shared
            .rx_loss_per_mille
            .store(p.min(1000), Ordering::Relaxed);
    }

    /// Starts streaming the sources (call once the connection is up).
    pub async fn start_sending(&self) -> Result<(), MediaError> {
        let vpt = payload_type(&self.video_sender).await?;
        let apt = payload_type(&self.audio_sender).await?;
        let vssrc = *self
            .video_track
            .ssrcs()
            .await
            .first()
            .ok_or_else(|| MediaError::Webrtc("video track has no SSRC".into()))?;
        let assrc = *self
            .audio_track
            .ssrcs()
            .await
            .first()
            .ok_or_else(|| MediaError::Webrtc("audio track has no SSRC".into()))?;
        let v = tokio::spawn(send_loop(
            self.shared.clone(),
            self.video_track.clone(),
            vssrc,
            vpt,
            MediaKind::Video,
        ));
        let a = tokio::spawn(send_loop(
            self.shared.clone(),
            self.audio_track.clone(),
            assrc,
            apt,
            MediaKind::Audio,
        ));
        let f = tokio::spawn(send_feedback(self.shared.clone(), self.video_track.clone()));
        lock(&self.tasks).extend([v, a, f]);
        Ok(())
    }

    /// What the call looks like now.
    pub async fn stats(&self) -> MediaStats {
        let report = self.pc.get_stats(Instant::now(), StatsSelector::None).await;
        let mut pair_type = None;
        let mut remote_pair_type = None;
        let mut rtt = None;
        let selected = report
            .transport()
            .map(|t| t.selected_candidate_pair_id.clone());
        let pair = report.iter().find_map(|e| match e {
            RTCStatsReportEntry::IceCandidatePair(p)
                if selected.as_deref() == Some(p.stats.id.as_str())
                    || (selected.as_deref().unwrap_or("").is_empty() && p.nominated) =>
            {
                Some(p)
            }
            _ => None,
        });
        if let Some(p) = pair {
            if p.current_round_trip_time > 0.0 {
                rtt = Some(Duration::from_secs_f64(p.current_round_trip_time));
            }
            for e in report.iter() {
                match e {
                    // stats ids are "RTCLocalIceCandidate_<candidate id>"
                    RTCStatsReportEntry::LocalCandidate(c)
                        if c.stats.id.ends_with(p.local_candidate_id.as_str()) =>
                    {
                        pair_type = Some(c.candidate_type.to_string());
                    }
                    RTCStatsReportEntry::RemoteCandidate(c)
                        if c.stats.id.ends_with(p.remote_candidate_id.as_str()) =>
                    {
                        remote_pair_type = Some(c.candidate_type.to_string());
                    }
                    _ => {}
                }
            }
        }
        let audio = self.shared.counters[0].snapshot();
        let video = self.shared.counters[1].snapshot();
        let secs = self.shared.started.elapsed().as_secs_f64().max(0.001);
        MediaStats {
            state: lock(&self.shared.state).clone(),
            pair_type,
            remote_pair_type,
            rtt,
            send_bitrate: ((audio.bytes_sent + video.bytes_sent) as f64 * 8.0 / secs) as u64,
            recv_bitrate: ((audio.bytes_received + video.bytes_received) as f64 * 8.0 / secs)
                as u64,
            audio,
            video,
            local_generation: lock(&self.shared.sender_key).id().generation,
            remote_generation: *lock(&self.shared.remote_generation),
            rtp_dropped_by_loss_knob: self.shared.loss.dropped.load(Ordering::Relaxed),
            rtp_sent: self.shared.loss.passed.load(Ordering::Relaxed),
        }
    }

    /// Stops sending, closes the connection and finishes the sink files.
    pub async fn close(&self) -> Result<(), MediaError> {
        self.shared.closed.store(true, Ordering::SeqCst);
        let tasks: Vec<_> = lock(&self.tasks).drain(..).collect();
        for t in tasks {
            t.abort();
        }
        let res = self.pc.close().await.map_err(wr);
        lock(&self.shared.sinks).finish()?;
        res
    }
}

async fn payload_type(sender: &Arc<dyn RtpSender>) -> Result<u8, MediaError> {
    sender
        .get_parameters()
        .await
        .map_err(wr)?
        .rtp_parameters
        .codecs
        .first()
        .map(|c| c.payload_type)
        .ok_or_else(|| MediaError::Webrtc("sender has no negotiated codec".into()))
}

/// Keyframe requests (PLI/FIR) about our video, from the relay or the peer: the next video frame
/// is a key frame (see [`IvfSource::request_key_frame`]).
async fn send_feedback(shared: Arc<Shared>, track: Arc<TrackLocalStaticSample>) {
    loop {
        if shared.closed.load(Ordering::Relaxed) {
            return;
        }
        match track.poll().await {
            Some(webrtc::media_stream::track_local::TrackLocalEvent::OnRtcpPacket(packets)) => {
                if packets
                    .iter()
                    .any(|p| sotto_relay::feedback::is_keyframe_request(p.as_ref()))
                {
                    shared.counters[MediaKind::Video.idx()]
                        .keyframe_requests_received
                        .fetch_add(1, Ordering::Relaxed);
                    if let Some(src) = lock(&shared.video_src).as_mut() {
                        src.request_key_frame();
                    }
                }
            }
            Some(_) => {}
            // not bound yet (or no longer)
            None => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

async fn send_loop(
    shared: Arc<Shared>,
    track: Arc<TrackLocalStaticSample>,
    ssrc: u32,
    pt: u8,
    kind: MediaKind,
) {
    let interval = match kind {
        MediaKind::Video => lock(&shared.video_src)
            .as_ref()
            .map(IvfSource::frame_interval)
            .unwrap_or(Duration::from_millis(66)),
        MediaKind::Audio => AUDIO_FRAME_INTERVAL,
    };
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // the key our last video frame went under: the first video frame under any other key (a
    // ratchet step on a join, a new generation on a leave) is a key frame
    let mut last_video_key: Option<sotto_frame::KeyId> = None;
    // after a mute the receivers' pictures lack the frames skipped: resume with a key frame
    let mut was_muted = false;
    loop {
        ticker.tick().await;
        if shared.closed.load(Ordering::Relaxed) {
            return;
        }
        if shared.muted[kind.idx()].load(Ordering::Relaxed) {
            // the clip moves on while muted (as a camera would)
            was_muted = true;
            match kind {
                MediaKind::Video => {
                    if let Some(s) = lock(&shared.video_src).as_mut() {
                        s.next_frame();
                    }
                }
                MediaKind::Audio => {
                    if let Some(s) = lock(&shared.audio_src).as_mut() {
                        s.next_packet();
                    }
                }
            }
            continue;
        }
        // frame and encryption under one lock order (source, then key), so that a key change
        // between taking a frame and encrypting it cannot slip an inter frame in first
        let (frame, wire, frames_left) = match kind {
            MediaKind::Video => {
                let mut src = lock(&shared.video_src);
                let Some(src) = src.as_mut() else { continue };
                let mut key = lock(&shared.sender_key);
                if was_muted || last_video_key.is_some_and(|k| k != key.id()) {
                    src.request_key_frame();
                }
                was_muted = false;
                last_video_key = Some(key.id());
                let frame = src.next_frame();
                let res = key.encrypt(kind.codec(), b"", &frame);
                (frame, res, key.frames_left())
            }
            MediaKind::Audio => {
                let Some(frame) = lock(&shared.audio_src)
                    .as_mut()
                    .map(OggOpusSource::next_packet)
                else {
                    continue;
                };
                let mut key = lock(&shared.sender_key);
                let res = key.encrypt(kind.codec(), b"", &frame);
                (frame, res, key.frames_left())
            }
        };
        if frames_left <= ROTATION_MARGIN
            && !shared.rotation_requested.swap(true, Ordering::Relaxed)
        {
            shared.emit(MediaEvent::RotationNeeded { frames_left });
        }
        let wire = match wire {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!("sframe encrypt: {e}");
                continue;
            }
        };
        let c = &shared.counters[kind.idx()];
        c.frames_sent.fetch_add(1, Ordering::Relaxed);
        if kind == MediaKind::Video && source::is_vp8_key_frame(&frame) {
            c.key_frames_sent.fetch_add(1, Ordering::Relaxed);
        }
        c.bytes_sent.fetch_add(wire.len() as u64, Ordering::Relaxed);
        if let Some(tap) = &shared.tap {
            let _ = tap.send(TapFrame {
                sent: true,
                kind,
                frame: frame.clone(),
                wire: wire.clone(),
            });
        }
        let sample = Sample {
            data: Bytes::from(wire),
            duration: interval,
            ..Sample::new(Instant::now())
        };
        if let Err(e) = track.sample_writer(ssrc, pt).write_sample(&sample).await {
            tracing::debug!("write_sample: {e}");
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    /// `sdp` padded with unknown attribute lines to exactly `len` bytes.
    fn pad_to(sdp: &str, len: usize) -> String {
        let mut s = sdp.to_owned();
        assert!(s.ends_with("\r\n") && s.len() + 20 < len);
        while len - s.len() > 1_010 {
            s.push_str(&format!("a=x-pad:{}\r\n", "p".repeat(1_000)));
        }
        let n = len - s.len() - "a=x-pad:\r\n".len();
        s.push_str(&format!("a=x-pad:{}\r\n", "p".repeat(n)));
        assert_eq!(s.len(), len);
        s
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sdp_limit_is_inclusive() {
        let (a, _ea) = MediaPeer::new(MediaConfig::loopback(1).unwrap())
            .await
            .unwrap();
        let offer = a.create_offer().await.unwrap();

        // exactly MAX_SDP_LEN: a real offer, padded, is accepted and answered
        let (b, _eb) = MediaPeer::new(MediaConfig::loopback(2).unwrap())
            .await
            .unwrap();
        let answer = b
            .accept_offer(&pad_to(&offer, MAX_SDP_LEN))
            .await
            .expect("an offer of exactly MAX_SDP_LEN bytes must be accepted");
        a.accept_answer(&pad_to(&answer, MAX_SDP_LEN))
            .await
            .unwrap();

        // one byte more is refused before webrtc-rs sees it
        let (c, _ec) = MediaPeer::new(MediaConfig::loopback(3).unwrap())
            .await
            .unwrap();
        let err = c.accept_offer(&pad_to(&offer, MAX_SDP_LEN + 1)).await;
        assert!(
            matches!(err, Err(MediaError::SdpTooLarge { len, limit }) if len == MAX_SDP_LEN + 1 && limit == MAX_SDP_LEN),
            "{err:?}"
        );
        let err = c.accept_answer(&pad_to(&answer, MAX_SDP_LEN + 1)).await;
        assert!(
            matches!(err, Err(MediaError::SdpTooLarge { .. })),
            "{err:?}"
        );
        for p in [a, b, c] {
            p.close().await.unwrap();
        }
    }
}
