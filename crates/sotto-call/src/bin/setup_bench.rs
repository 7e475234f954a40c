//! Call setup time with and without end-to-end encryption, in the same run.
//!
//! Measures, on loopback, the time from dial (`create_offer`) to the first *decrypted* video
//! frame at the callee, for:
//! - **sotto**: two [`MediaPeer`]s (SFrame on every frame, keys installed up front as the call
//!   engine does while the SDP travels);
//! - **plain**: two bare webrtc-rs 0.21 peer connections set up the same way (same codecs,
//!   default interceptors, non-trickle ICE, same bundled VP8/Opus media, same sample builder),
//!   without SFrame: the first reassembled video frame counts.
//!
//! Runs alternate (sotto, plain, sotto, ...) so machine load hits both alike. Prints each run,
//! the medians and the ratio sotto/plain (goal ≤ 1.15).
//!
//! `cargo run --release -p sotto-call --bin setup_bench -- [runs]` (default 15).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rtc::interceptor::Registry;
use rtc::media::io::sample_builder::SampleBuilder;
use rtc::media::Sample;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_OPUS, MIME_TYPE_VP8};
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::rtp::codec::vp8::Vp8Packet;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use sotto_call::media::consts::{AUDIO_FRAME_INTERVAL, MAX_LATE_PACKETS, MAX_LATE_TIME};
use sotto_call::media::{IvfSource, MediaConfig, MediaEvent, MediaKind, MediaPeer, OggOpusSource};
use tokio::sync::{mpsc, Notify};
use webrtc::media_stream::track_local::static_sample::TrackLocalStaticSample;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::media_stream::Track;
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCIceGatheringState, RTCPeerConnectionState,
};
use webrtc::rtp_transceiver::RtpSender;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Longest one setup may take before the run is counted as failed.
const RUN_LIMIT: Duration = Duration::from_secs(30);

async fn sotto_once() -> Result<Duration, BoxError> {
    let (a, _ea) = MediaPeer::new(MediaConfig::loopback(1)?).await?;
    let (b, mut eb) = MediaPeer::new(MediaConfig::loopback(2)?).await?;
    // keys travel through the ratchet next to the SDP; installing them first is what the engine
    // achieves when the sealed offer carries both
    b.install_remote_key(&a.local_key_material())?;
    a.install_remote_key(&b.local_key_material())?;
    let t0 = Instant::now();
    let offer = a.create_offer().await?;
    let answer = b.accept_offer(&offer).await?;
    a.accept_answer(&answer).await?;
    if !a.wait_connected(RUN_LIMIT).await {
        return Err("sotto: caller never connected".into());
    }
    a.start_sending().await?;
    let first = async {
        while let Some(e) = eb.recv().await {
            if e == MediaEvent::FirstFrameDecrypted(MediaKind::Video) {
                return Some(t0.elapsed());
            }
        }
        None
    };
    let r = tokio::time::timeout(RUN_LIMIT, first).await;
    a.close().await?;
    b.close().await?;
    match r {
        Ok(Some(d)) => Ok(d),
        _ => Err("sotto: no decrypted video frame".into()),
    }
}

struct PlainHandler {
    gathered: Arc<Notify>,
    gathering_done: Arc<AtomicBool>,
    connected: Arc<Notify>,
    is_connected: Arc<AtomicBool>,
    first_video: mpsc::UnboundedSender<Instant>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for PlainHandler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            self.gathering_done.store(true, Ordering::SeqCst);
            self.gathered.notify_waiters();
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        if state == RTCPeerConnectionState::Connected {
            self.is_connected.store(true, Ordering::SeqCst);
            self.connected.notify_waiters();
        }
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let tx = self.first_video.clone();
        tokio::spawn(async move {
            if track.kind().await != RtpCodecKind::Video {
                // drain audio so the track does not back up
                while track.poll().await.is_some() {}
                return;
            }
            let mut builder = SampleBuilder::new(MAX_LATE_PACKETS, Vp8Packet::default(), 90_000)
                .with_max_time_delay(MAX_LATE_TIME);
            while let Some(evt) = track.poll().await {
                if let TrackRemoteEvent::OnRtpPacket(p) = evt {
                    let now = Instant::now();
                    builder.push(now, p);
                    while let Some(s) = builder.pop(now) {
                        if !s.data.is_empty() {
                            let _ = tx.send(Instant::now());
                        }
                    }
                }
            }
        });
    }
}

struct Plain {
    pc: Box<dyn PeerConnection>,
    video: Arc<TrackLocalStaticSample>,
    audio: Arc<TrackLocalStaticSample>,
    video_sender: Arc<dyn RtpSender>,
    audio_sender: Arc<dyn RtpSender>,
    gathered: Arc<Notify>,
    gathering_done: Arc<AtomicBool>,
    connected: Arc<Notify>,
    is_connected: Arc<AtomicBool>,
    closed: Arc<AtomicBool>,
}

fn plain_track(
    kind: RtpCodecKind,
    mime: &str,
    clock: u32,
    channels: u16,
) -> Result<TrackLocalStaticSample, BoxError> {
    let name = if kind == RtpCodecKind::Video {
        "video"
    } else {
        "audio"
    };
    Ok(TrackLocalStaticSample::new(
        Instant::now(),
        MediaStreamTrack::new(
            "plain".to_owned(),
            format!("plain-{name}"),
            format!("plain-{name}"),
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
    )?)
}

impl Plain {
    async fn new() -> Result<(Plain, mpsc::UnboundedReceiver<Instant>), BoxError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let gathered = Arc::new(Notify::new());
        let gathering_done = Arc::new(AtomicBool::new(false));
        let connected = Arc::new(Notify::new());
        let is_connected = Arc::new(AtomicBool::new(false));
        let mut media = MediaEngine::default();
        media.register_default_codecs()?;
        let registry = register_default_interceptors(Registry::new(), &mut media)?;
        let pc = PeerConnectionBuilder::new()
            .with_configuration(RTCConfigurationBuilder::new().build())
            .with_media_engine(media)
            .with_interceptor_registry(registry)
            .with_handler(Arc::new(PlainHandler {
                gathered: gathered.clone(),
                gathering_done: gathering_done.clone(),
                connected: connected.clone(),
                is_connected: is_connected.clone(),
                first_video: tx,
            }))
            .with_udp_addrs(vec!["127.0.0.1:0".to_owned()])
            .build()
            .await?;
        let video = Arc::new(plain_track(RtpCodecKind::Video, MIME_TYPE_VP8, 90_000, 0)?);
        let audio = Arc::new(plain_track(RtpCodecKind::Audio, MIME_TYPE_OPUS, 48_000, 2)?);
        let video_sender = pc.add_track(video.clone() as Arc<dyn TrackLocal>).await?;
        let audio_sender = pc.add_track(audio.clone() as Arc<dyn TrackLocal>).await?;
        Ok((
            Plain {
                pc: Box::new(pc),
                video,
                audio,
                video_sender,
                audio_sender,
                gathered,
                gathering_done,
                connected,
                is_connected,
                closed: Arc::new(AtomicBool::new(false)),
            },
            rx,
        ))
    }

    async fn gathered_sdp(&self) -> Result<String, BoxError> {
        let wait = async {
            loop {
                let n = self.gathered.notified();
                if self.gathering_done.load(Ordering::SeqCst) {
                    return;
                }
                n.await;
            }
        };
        tokio::time::timeout(RUN_LIMIT, wait).await?;
        Ok(self
            .pc
            .local_description()
            .await
            .ok_or("no local description")?
            .sdp)
    }

    async fn wait_connected(&self) -> Result<(), BoxError> {
        let wait = async {
            loop {
                let n = self.connected.notified();
                if self.is_connected.load(Ordering::SeqCst) {
                    return;
                }
                n.await;
            }
        };
        Ok(tokio::time::timeout(RUN_LIMIT, wait).await?)
    }

    async fn start_sending(&self) -> Result<(), BoxError> {
        for (track, sender, kind) in [
            (&self.video, &self.video_sender, MediaKind::Video),
            (&self.audio, &self.audio_sender, MediaKind::Audio),
        ] {
            let pt = sender
                .get_parameters()
                .await?
                .rtp_parameters
                .codecs
                .first()
                .map(|c| c.payload_type)
                .ok_or("no negotiated codec")?;
            let ssrc = *track.ssrcs().await.first().ok_or("no ssrc")?;
            let track = track.clone();
            let closed = self.closed.clone();
            let mut video = IvfSource::camera1()?;
            let mut audio = OggOpusSource::tone()?;
            let interval = match kind {
                MediaKind::Video => video.frame_interval(),
                MediaKind::Audio => AUDIO_FRAME_INTERVAL,
            };
            tokio::spawn(async move {
                let mut ticker = tokio::time::interval(interval);
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                while !closed.load(Ordering::Relaxed) {
                    ticker.tick().await;
                    let frame = match kind {
                        MediaKind::Video => video.next_frame(),
                        MediaKind::Audio => audio.next_packet(),
                    };
                    let sample = Sample {
                        data: Bytes::from(frame),
                        duration: interval,
                        ..Sample::new(Instant::now())
                    };
                    let _ = track.sample_writer(ssrc, pt).write_sample(&sample).await;
                }
            });
        }
        Ok(())
    }

    async fn close(&self) -> Result<(), BoxError> {
        self.closed.store(true, Ordering::SeqCst);
        Ok(self.pc.close().await?)
    }
}

async fn plain_once() -> Result<Duration, BoxError> {
    let (a, _ra) = Plain::new().await?;
    let (b, mut rb) = Plain::new().await?;
    let t0 = Instant::now();
    let offer = a.pc.create_offer(None).await?;
    a.pc.set_local_description(offer).await?;
    let offer = a.gathered_sdp().await?;
    b.pc.set_remote_description(RTCSessionDescription::offer(offer)?)
        .await?;
    let answer = b.pc.create_answer(None).await?;
    b.pc.set_local_description(answer).await?;
    let answer = b.gathered_sdp().await?;
    a.pc.set_remote_description(RTCSessionDescription::answer(answer)?)
        .await?;
    a.wait_connected().await?;
    a.start_sending().await?;
    let r = tokio::time::timeout(RUN_LIMIT, rb.recv()).await;
    a.close().await?;
    b.close().await?;
    match r {
        Ok(Some(t)) => Ok(t.duration_since(t0)),
        _ => Err("plain: no video frame".into()),
    }
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    match v.len() {
        0 => Duration::ZERO,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2,
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), BoxError> {
    let runs: usize = match std::env::args().nth(1) {
        Some(s) => s.parse()?,
        None => 15,
    };
    // one warm-up of each (first-use costs: page faults, lazy statics)
    sotto_once().await?;
    plain_once().await?;
    let (mut sotto, mut plain) = (Vec::new(), Vec::new());
    for i in 0..runs {
        let s = sotto_once().await?;
        let p = plain_once().await?;
        println!(
            "run {:>2}: sotto {:>7.1} ms   plain {:>7.1} ms",
            i + 1,
            s.as_secs_f64() * 1e3,
            p.as_secs_f64() * 1e3
        );
        sotto.push(s);
        plain.push(p);
    }
    let (ms, mp) = (median(&mut sotto), median(&mut plain));
    let ratio = ms.as_secs_f64() / mp.as_secs_f64().max(1e-9);
    println!(
        "dial → first decrypted video frame, median of {runs}: sotto {:.1} ms, plain webrtc-rs {:.1} ms, ratio {ratio:.3} (goal ≤ 1.15: {})",
        ms.as_secs_f64() * 1e3,
        mp.as_secs_f64() * 1e3,
        if ratio <= 1.15 { "met" } else { "NOT met" }
    );
    Ok(())
}
