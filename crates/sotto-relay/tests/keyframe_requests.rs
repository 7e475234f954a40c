#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Keyframe requests through the real relay: a receiver's PLI for one sender's slot reaches that
//! sender (with the sender's own SSRC) and no one else, at most once per
//! `KEYFRAME_REQUEST_INTERVAL`. Participants are plain webrtc-rs peers on loopback. (The relay
//! also asks a sender for a key frame when it gives it a video slot, at joins here: those are
//! counted before the receiver's requests start.)

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rtc::rtcp::payload_feedbacks::full_intra_request::{FirEntry, FullIntraRequest};
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use sotto_relay::client::RoomHandle;
use sotto_relay::consts::KEYFRAME_REQUEST_INTERVAL;
use sotto_testkit::relay::{rtp_participant, RtpParticipant, TestRelay};
use tokio::sync::mpsc;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::PeerConnection;

/// A remote video track that carries RTP, with the first payload byte seen on it.
struct Heard {
    tag: u8,
    track: Arc<dyn TrackRemote>,
}

struct Participant {
    pc: Arc<dyn PeerConnection>,
    ssrc: u32,
    /// media SSRCs of the keyframe requests this participant received for its video
    requests: Arc<Mutex<Vec<u32>>>,
    heard: mpsc::UnboundedReceiver<Heard>,
    _room: RoomHandle,
}

async fn participant(relay: &TestRelay, room: &str, name: &str, tag: u8) -> Participant {
    let (htx, hrx) = mpsc::unbounded_channel();
    let on_track = Box::new(move |track: Arc<dyn TrackRemote>| {
        let heard = htx.clone();
        tokio::spawn(async move {
            let mut told = false;
            while let Some(evt) = track.poll().await {
                if let TrackRemoteEvent::OnRtpPacket(p) = evt {
                    if !told && !p.payload.is_empty() {
                        told = true;
                        let _ = heard.send(Heard {
                            tag: p.payload[2],
                            track: track.clone(),
                        });
                    }
                }
            }
        });
    });
    let RtpParticipant {
        pc,
        ssrc,
        video,
        room: handle,
    } = rtp_participant(relay, room, name, true, on_track).await;
    let video = video.expect("a sending participant has a video track");

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
    // VP8-shaped RTP, one key frame per packet (the relay reads the VP8 payload descriptor and
    // the frame tag's key-frame bit, nothing else), tagged with the sender
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
                payload: bytes::Bytes::from([&[0x10, 0x00][..], &[tag; 118]].concat()),
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
    let relay = TestRelay::start().await;
    let alice = participant(&relay, "kf", "alice", 0xAA).await;
    let bob = participant(&relay, "kf", "bob", 0xBB).await;
    let mut carol = participant(&relay, "kf", "carol", 0xCC).await;

    // carol asks for a keyframe of alice's video, on the slot that carries alice
    let heard = tracks_of(&mut carol, &[0xAA, 0xBB]).await;
    let from_alice = heard[0].clone();
    let slot_ssrc = from_alice.ssrcs().await[0];
    assert_ne!(slot_ssrc, alice.ssrc, "the relay rewrites SSRCs per slot");
    // the relay's own requests (a video slot given to a sender) are over once every slot carries
    // media: from here on, only carol's requests reach anyone
    tokio::time::sleep(Duration::from_millis(300)).await;
    let alice_before = alice.requests.lock().unwrap().len();
    let bob_before = bob.requests.lock().unwrap().len();
    let deadline = Instant::now() + Duration::from_secs(20);
    while alice.requests.lock().unwrap().len() == alice_before {
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
    assert_eq!(
        bob.requests.lock().unwrap().len(),
        bob_before,
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
