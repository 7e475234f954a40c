#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Keyframe requests through the real relay: a receiver's PLI for one sender's slot reaches that
//! sender (with the sender's own SSRC) and no one else, at most once per
//! `KEYFRAME_REQUEST_INTERVAL`. Participants are plain webrtc-rs peers on loopback.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rtc::interceptor::{Registry, Slot};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::media_engine::MIME_TYPE_VP8;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::rtcp::payload_feedbacks::full_intra_request::{FirEntry, FullIntraRequest};
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use sotto_relay::client::{join, RoomHandle};
use sotto_relay::consts::KEYFRAME_REQUEST_INTERVAL;
use sotto_relay::feedback::KeyframeRequests;
use sotto_relay::{serve, RelayConfig};
use tokio::sync::{mpsc, Notify};
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCIceGatheringState, RTCPeerConnectionState,
};

/// A remote video track that carries RTP, with the first payload byte seen on it.
struct Heard {
    tag: u8,
    track: Arc<dyn TrackRemote>,
}

struct H {
    gathered: Arc<Notify>,
    gathering_done: Arc<AtomicBool>,
    connected: Arc<AtomicBool>,
    heard: mpsc::UnboundedSender<Heard>,
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
            let mut told = false;
            while let Some(evt) = track.poll().await {
                if let TrackRemoteEvent::OnRtpPacket(p) = evt {
                    if !told && !p.payload.is_empty() {
                        told = true;
                        let _ = heard.send(Heard {
                            tag: p.payload[0],
                            track: track.clone(),
                        });
                    }
                }
            }
        });
    }
}

struct Participant {
    pc: Arc<dyn PeerConnection>,
    ssrc: u32,
    /// media SSRCs of the keyframe requests this participant received for its video
    requests: Arc<Mutex<Vec<u32>>>,
    heard: mpsc::UnboundedReceiver<Heard>,
    _room: RoomHandle,
}

async fn participant(url: &str, room: &str, name: &str, tag: u8) -> Participant {
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

    // the keyframe requests that reach this sender
    let requests = Arc::new(Mutex::new(Vec::new()));
    let (r2, v2) = (requests.clone(), video.clone());
    tokio::spawn(async move {
        loop {
            match v2.poll().await {
                Some(TrackLocalEvent::OnRtcpPacket(ps)) => {
                    for p in ps {
                        let any = p.as_any();
                        if let Some(pli) = any.downcast_ref::<PictureLossIndication>() {
                            r2.lock().unwrap().push(pli.media_ssrc);
                        } else if let Some(fir) = any.downcast_ref::<FullIntraRequest>() {
                            r2.lock().unwrap().push(fir.media_ssrc);
                        }
                    }
                }
                Some(_) => {}
                None => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    });
    // VP8-shaped RTP (the relay never looks inside), payload tagged with the sender
    let v3 = video.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        for seq in 0u16.. {
            tick.tick().await;
            let p = rtc::rtp::Packet {
                header: rtc::rtp::header::Header {
                    version: 2,
                    payload_type: 96,
                    sequence_number: seq,
                    timestamp: u32::from(seq).wrapping_mul(3000),
                    marker: true,
                    ssrc,
                    ..Default::default()
                },
                payload: bytes::Bytes::from(vec![tag; 120]),
            };
            if v3.write_rtp(p).await.is_err() && seq > 2000 {
                return;
            }
        }
    });
    Participant {
        pc,
        ssrc,
        requests,
        heard: hrx,
        _room: handle,
    }
}

/// The remote tracks carrying each of `tags`, in that order.
async fn tracks_of(p: &mut Participant, tags: &[u8]) -> Vec<Arc<dyn TrackRemote>> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut found: Vec<Option<Arc<dyn TrackRemote>>> = vec![None; tags.len()];
    while found.iter().any(Option::is_none) {
        let left = deadline.saturating_duration_since(Instant::now());
        let h = tokio::time::timeout(left, p.heard.recv())
            .await
            .unwrap_or_else(|_| panic!("no media from every sender of {tags:x?}"))
            .unwrap();
        if let Some(i) = tags.iter().position(|t| *t == h.tag) {
            found[i] = Some(h.track);
        }
    }
    found.into_iter().flatten().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyframe_request_reaches_the_right_sender_only_and_is_rate_limited() {
    let relay = serve(RelayConfig::loopback()).await.unwrap();
    let alice = participant(&relay.url(), "kf", "alice", 0xAA).await;
    let bob = participant(&relay.url(), "kf", "bob", 0xBB).await;
    let mut carol = participant(&relay.url(), "kf", "carol", 0xCC).await;

    // carol asks for a keyframe of alice's video, on the slot that carries alice
    let heard = tracks_of(&mut carol, &[0xAA, 0xBB]).await;
    let from_alice = heard[0].clone();
    let slot_ssrc = from_alice.ssrcs().await[0];
    assert_ne!(slot_ssrc, alice.ssrc, "the relay rewrites SSRCs per slot");
    let deadline = Instant::now() + Duration::from_secs(20);
    while alice.requests.lock().unwrap().is_empty() {
        assert!(
            Instant::now() < deadline,
            "alice never got carol's keyframe request (relay counters {:?})",
            relay.keyframe_requests()
        );
        let pli = PictureLossIndication {
            sender_ssrc: 0,
            media_ssrc: slot_ssrc,
        };
        let _ = from_alice.write_rtcp(vec![Box::new(pli)]).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // the request names alice's own SSRC, not the slot's
    assert!(alice
        .requests
        .lock()
        .unwrap()
        .iter()
        .all(|s| *s == alice.ssrc));

    // a FIR is a keyframe request too; a burst of them is limited per sender
    tokio::time::sleep(KEYFRAME_REQUEST_INTERVAL * 2).await;
    let before = alice.requests.lock().unwrap().len();
    let burst = Duration::from_millis(1500);
    let t0 = Instant::now();
    let mut sent = 0u8;
    while t0.elapsed() < burst {
        sent = sent.wrapping_add(1);
        let fir = FullIntraRequest {
            sender_ssrc: 0,
            media_ssrc: slot_ssrc,
            fir: vec![FirEntry {
                ssrc: slot_ssrc,
                sequence_number: sent,
            }],
        };
        let _ = from_alice.write_rtcp(vec![Box::new(fir)]).await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = alice.requests.lock().unwrap().len() - before;
    let cap = (burst.as_millis() / KEYFRAME_REQUEST_INTERVAL.as_millis()) as usize + 2;
    assert!(
        got >= 2 && got <= cap,
        "{got} keyframe requests forwarded for a {burst:?} burst of {sent} FIRs (cap {cap})"
    );
    assert!(alice
        .requests
        .lock()
        .unwrap()
        .iter()
        .all(|s| *s == alice.ssrc));
    // bob was never asked
    assert!(
        bob.requests.lock().unwrap().is_empty(),
        "bob got requests meant for alice: {:?}",
        bob.requests.lock().unwrap()
    );
    let (kin, kout) = relay.keyframe_requests();
    assert!(
        kin > kout && kout as usize >= got,
        "relay counters {kin} {kout}"
    );
    for p in [&alice, &bob, &carol] {
        let _ = p.pc.close().await;
    }
    relay.shutdown().await;
}
