//! [`MediaPeer`]: building the peer connection and its two tracks, the sources and mutes,
//! the test loss knobs, and closing.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_OPUS, MIME_TYPE_VP8};
use rtc::peer_connection::configuration::{RTCConfigurationBuilder, RTCIceTransportPolicy};
use rtc::peer_connection::transport::RTCIceServer;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RTCRtpHeaderExtensionCapability,
    RtpCodecKind,
};
use sotto_frame::{KeyRing, SenderKey};
use tokio::sync::{mpsc, Notify};
use webrtc::media_stream::track_local::static_sample::TrackLocalStaticSample;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, RTCIceCandidateInit,
};
use webrtc::rtp_transceiver::RtpSender;
use zeroize::Zeroizing;

use super::error::wr;
use super::handler::Handler;
use super::loss;
use super::record::Sinks;
use super::shared::{lock, Shared};
use super::stats::Counters;
use super::{IvfSink, IvfSource, MediaConfig, MediaError, MediaEvents, OggOpusSource, OggSink};

/// One call leg: a webrtc-rs peer connection with an Opus and a VP8 track, SFrame on both.
pub struct MediaPeer {
    pub(super) pc: Box<dyn PeerConnection>,
    pub(super) shared: Arc<Shared>,
    pub(super) video_track: Arc<TrackLocalStaticSample>,
    pub(super) audio_track: Arc<TrackLocalStaticSample>,
    pub(super) video_sender: Arc<dyn RtpSender>,
    pub(super) audio_sender: Arc<dyn RtpSender>,
    pub(super) relay_only: bool,
    /// Loopback bridges to TCP/TLS TURN servers (stopped when the peer is dropped).
    pub(super) _turn_bridges: super::turn_bridge::TurnBridges,
    pub(super) tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// Remote candidates that arrived before the remote description (applied with it).
    pub(super) early_candidates: tokio::sync::Mutex<Option<Vec<RTCIceCandidateInit>>>,
}

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
        // our audio carries its level (RFC 6464) for the relay's speaker ranking
        media
            .register_header_extension(
                RTCRtpHeaderExtensionCapability {
                    uri: super::level::AUDIO_LEVEL_URI.to_owned(),
                },
                RtpCodecKind::Audio,
                None,
            )
            .map_err(wr)?;
        let registry =
            super::interceptors::registry(&mut media, shared.loss.clone(), Arc::default())?;
        // TCP and TLS TURN through loopback bridges, which live as long as the peer
        let (ice_servers, turn_bridges) =
            super::turn_bridge::bridge_ice_servers(&cfg.ice_servers, &cfg.turn_tls).await?;
        let servers = ice_servers
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
            .with_setting_engine(super::ice::setting_engine())
            .with_handler(Arc::new(Handler {
                shared: shared.clone(),
                hide_related_addresses: cfg.relay_only,
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
                _turn_bridges: turn_bridges,
                tasks: Mutex::new(Vec::new()),
                early_candidates: tokio::sync::Mutex::new(Some(Vec::new())),
            },
            rx,
        ))
    }

    /// Whether this peer was built relay-only (TURN candidates only).
    pub fn relay_only(&self) -> bool {
        self.relay_only
    }

    /// Replaces the video source mid-call (no renegotiation; frames stay encrypted).
    pub fn switch_video_source(&self, src: IvfSource) {
        *lock(&self.shared.video_src) = Some(src);
    }

    /// Replaces the audio source mid-call (another microphone, or the same one hearing
    /// something else: its levels go out with its packets).
    pub fn switch_audio_source(&self, src: OggOpusSource) {
        *lock(&self.shared.audio_src) = Some(src);
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
