#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Forwarding benchmark: 4 participants each send VP8-shaped RTP as fast as webrtc-rs takes it
//! through the relay (4 senders x 3 receivers each = "4x4" room); compared, in the same run, with
//! a plain UDP loopback forwarder doing the same fan-out. Prints packets/s, whole-process CPU per
//! forwarded packet and the ratio. Run: `cargo bench -p sotto-relay --bench forward`
//! (`--profile dev` for a quick run; numbers then are for unoptimised relay code).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rtc::interceptor::{Registry, Slot};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::media_engine::MIME_TYPE_VP8;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use sotto_relay::client::{join, RoomHandle};
use sotto_relay::feedback::KeyframeRequests;
use sotto_relay::{serve, RelayConfig};
use tokio::sync::{mpsc, Notify};
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCIceGatheringState, RTCPeerConnectionState,
};

const DURATION: Duration = Duration::from_secs(5);
const PAYLOAD: usize = 1000;
const PARTICIPANTS: usize = 4;

struct H {
    gathered: Arc<Notify>,
    gathering_done: Arc<AtomicBool>,
    connected: Arc<AtomicBool>,
    heard: mpsc::UnboundedSender<()>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for H {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            self.gathering_done.store(true, Ordering::SeqCst);
            self.gathered.notify_waiters();
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        if state == RTCPeerConnectionState::Connected {
            self.connected.store(true, Ordering::SeqCst);
        }
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let heard = self.heard.clone();
        tokio::spawn(async move {
            let _ = &heard;
            while let Some(evt) = track.poll().await {
                if let TrackRemoteEvent::OnRtpPacket(_) = evt {
                    RECEIVED.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
}

struct Participant {
    pc: Arc<dyn PeerConnection>,
    ssrc: u32,
    video: Arc<TrackLocalStaticRTP>,
    _room: RoomHandle,
}

async fn participant(url: &str, room: &str, name: &str) -> Participant {
    let gathered = Arc::new(Notify::new());
    let gathering_done = Arc::new(AtomicBool::new(false));
    let connected = Arc::new(AtomicBool::new(false));
    let (htx, hrx) = mpsc::unbounded_channel();
    let mut media = MediaEngine::default();
    media.register_default_codecs().unwrap();
    let registry = Registry::new().with(Slot::from(14_000), KeyframeRequests::default());
    let pc = PeerConnectionBuilder::new()
        .with_media_engine(media)
        .with_interceptor_registry(registry)
        .with_handler(Arc::new(H {
            gathered: gathered.clone(),
            gathering_done: gathering_done.clone(),
            connected: connected.clone(),
            heard: htx,
        }))
        .with_udp_addrs(vec!["127.0.0.1:0".to_owned()])
        .build()
        .await
        .unwrap();
    let pc: Arc<dyn PeerConnection> = Arc::new(pc);
    let ssrc = rand::random::<u32>();
    let video = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
        format!("{name}-stream"),
        format!("{name}-video"),
        format!("{name}-video"),
        RtpCodecKind::Video,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                ..Default::default()
            },
            codec: RTCRtpCodec {
                mime_type: MIME_TYPE_VP8.to_owned(),
                clock_rate: 90_000,
                channels: 0,
                sdp_fmtp_line: String::new(),
                rtcp_feedback: vec![],
            },
            ..Default::default()
        }],
    )));
    pc.add_track(video.clone() as Arc<dyn TrackLocal>)
        .await
        .unwrap();

    let pc2 = pc.clone();
    let (g2, d2) = (gathered.clone(), gathering_done.clone());
    let handle = join(url, room, name, |offer| async move {
        let e = |e: webrtc::error::Error| e.to_string();
        let offer = RTCSessionDescription::offer(offer).map_err(|e| e.to_string())?;
        pc2.set_remote_description(offer).await.map_err(e)?;
        let answer = pc2.create_answer(None).await.map_err(e)?;
        pc2.set_local_description(answer).await.map_err(e)?;
        let wait = async {
            loop {
                let n = g2.notified();
                if d2.load(Ordering::SeqCst) {
                    return;
                }
                n.await;
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(20), wait).await;
        Ok::<String, String>(
            pc2.local_description()
                .await
                .map(|d| d.sdp)
                .unwrap_or_default(),
        )
    })
    .await
    .unwrap();
    let t0 = Instant::now();
    while !connected.load(Ordering::SeqCst) {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "{name}: not connected"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let _ = hrx;
    Participant {
        pc,
        ssrc,
        video,
        _room: handle,
    }
}

static RECEIVED: AtomicU64 = AtomicU64::new(0);

/// Process CPU time (user + system) so far.
fn cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<u64> = after
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // fields 14 and 15 of stat (utime, stime) are 12 and 13 after the command name
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

async fn relay_run() -> (f64, f64) {
    let relay = serve(RelayConfig::loopback()).await.unwrap();
    let mut ps = Vec::new();
    for i in 0..PARTICIPANTS {
        ps.push(participant(&relay.url(), "bench", &format!("p{i}")).await);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let mut senders = Vec::new();
    for p in &ps {
        let (v, ssrc, stop) = (p.video.clone(), p.ssrc, stop.clone());
        senders.push(tokio::spawn(async move {
            let mut seq = 0u16;
            while !stop.load(Ordering::Relaxed) {
                seq = seq.wrapping_add(1);
                let pkt = rtc::rtp::Packet {
                    header: rtc::rtp::header::Header {
                        version: 2,
                        payload_type: 96,
                        sequence_number: seq,
                        timestamp: u32::from(seq / 4).wrapping_mul(3000),
                        marker: seq.is_multiple_of(4),
                        ssrc,
                        ..Default::default()
                    },
                    payload: bytes::Bytes::from(vec![seq as u8; PAYLOAD]),
                };
                if v.write_rtp(pkt).await.is_err() {
                    return;
                }
                if seq.is_multiple_of(64) {
                    tokio::task::yield_now().await;
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await; // warm up
    let (_, out0, _) = relay.stats();
    let rx0 = RECEIVED.load(Ordering::Relaxed);
    let (c0, t0) = (cpu(), Instant::now());
    tokio::time::sleep(DURATION).await;
    let (_, out1, _) = relay.stats();
    let rx1 = RECEIVED.load(Ordering::Relaxed);
    let (c1, t1) = (cpu(), t0.elapsed());
    stop.store(true, Ordering::Relaxed);
    for s in senders {
        let _ = s.await;
    }
    let fwd = (out1 - out0) as f64 / t1.as_secs_f64();
    let recv = (rx1 - rx0) as f64 / t1.as_secs_f64();
    let cpu_us = (c1 - c0).as_secs_f64() * 1e6 / ((out1 - out0).max(1) as f64);
    println!(
        "relay: {fwd:.0} packets/s forwarded, {recv:.0} packets/s received by participants, \
         {cpu_us:.1} us process CPU per forwarded packet (includes the {PARTICIPANTS} participants' stacks)"
    );
    for p in &ps {
        let _ = p.pc.close().await;
    }
    relay.shutdown().await;
    (fwd, cpu_us)
}

/// Plain UDP fan-out on loopback: every sender's datagram goes to the other receivers.
async fn udp_run() -> f64 {
    use tokio::net::UdpSocket;
    let fwd = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let fwd_addr = fwd.local_addr().unwrap();
    let mut rx_addrs = Vec::new();
    let received = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..PARTICIPANTS {
        let r = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        rx_addrs.push(r.local_addr().unwrap());
        let (received, stop) = (received.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut buf = vec![0u8; 2048];
            while !stop.load(Ordering::Relaxed) {
                if let Ok(Ok(_)) =
                    tokio::time::timeout(Duration::from_millis(50), r.recv(&mut buf)).await
                {
                    received.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    // senders are identified by their first byte
    let forwarded = Arc::new(AtomicU64::new(0));
    {
        let (fwd, rx_addrs, forwarded, stop) = (
            fwd.clone(),
            rx_addrs.clone(),
            forwarded.clone(),
            stop.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut buf = vec![0u8; 2048];
            while !stop.load(Ordering::Relaxed) {
                let Ok(Ok((n, _))) =
                    tokio::time::timeout(Duration::from_millis(50), fwd.recv_from(&mut buf)).await
                else {
                    continue;
                };
                let from = usize::from(buf[0]) % PARTICIPANTS;
                for (i, a) in rx_addrs.iter().enumerate() {
                    if i != from && fwd.send_to(&buf[..n], a).await.is_ok() {
                        forwarded.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    for i in 0..PARTICIPANTS {
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let mut pkt = vec![0u8; PAYLOAD + 12];
            pkt[0] = i as u8;
            let mut n = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let _ = s.send_to(&pkt, fwd_addr).await;
                n += 1;
                if n.is_multiple_of(64) {
                    tokio::task::yield_now().await;
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let f0 = forwarded.load(Ordering::Relaxed);
    let t0 = Instant::now();
    tokio::time::sleep(DURATION).await;
    let rate = (forwarded.load(Ordering::Relaxed) - f0) as f64 / t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    println!("udp loopback forwarder: {rate:.0} packets/s forwarded");
    rate
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (relay, _cpu) = relay_run().await;
        let udp = udp_run().await;
        println!(
            "ratio relay/udp: {:.3} ({PARTICIPANTS} senders x {} receivers each, {PAYLOAD}-byte payloads)",
            relay / udp.max(1.0),
            PARTICIPANTS - 1
        );
    });
}
