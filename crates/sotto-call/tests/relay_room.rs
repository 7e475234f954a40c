#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Participants with SFrame media through the real sotto-relay SFU on loopback, capture on.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use sotto_call::media::{MediaConfig, MediaKind, TapFrame};
use sotto_frame::Codec;
use sotto_relay::capture::{self, Kind};
use sotto_relay::consts::{AUDIO_SLOTS, VIDEO_SLOTS};
use sotto_testkit::media::drain;
use sotto_testkit::relay::{participant, participant_with, TestRelay};
use tokio::sync::mpsc;

/// The tests in this file each run several real webrtc-rs peers; on a 2-core machine they run
/// one at a time so that timing-sensitive steps (ICE, DTLS) are not starved by each other.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn room_of(n: usize) {
    let dir = tempfile::tempdir().unwrap();
    let relay = TestRelay::start_with(|cfg| cfg.capture_dir = Some(dir.path().to_path_buf())).await;
    let names = ["alice", "bob", "carol", "dave", "erin"];
    let mut ps = Vec::new();
    for (i, name) in names.iter().take(n).enumerate() {
        ps.push(participant(&relay, "r1", name, i as u64 + 1).await);
    }
    assert_eq!(relay.members("r1").len(), n);
    // keys: everyone gets everyone's key (the call engine sends them through the ratchet)
    for a in &ps {
        for b in &ps {
            if a.name != b.name {
                b.peer
                    .install_remote_key(&a.peer.local_key_material())
                    .unwrap();
            }
        }
    }
    for p in &ps {
        p.peer.start_sending().await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    // every sender's audio carried its level (the tone's, −21 dBov), read by the relay
    let (levels, (packets_in, _, _)) = (relay.audio_levels_in(), relay.stats());
    assert!(
        levels as usize > n * 100 && levels < packets_in,
        "{levels} audio levels in {packets_in} packets"
    );
    let mut stats = Vec::new();
    for p in &ps {
        stats.push(p.peer.stats().await);
        p.peer.close().await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    relay.flush_capture();

    let taps: Vec<Vec<TapFrame>> = ps.iter_mut().map(|p| drain(&mut p.tap)).collect();
    // who sent which wire frame
    let mut sent: HashMap<Vec<u8>, (usize, &TapFrame)> = HashMap::new();
    for (i, t) in taps.iter().enumerate() {
        for f in t.iter().filter(|f| f.sent) {
            sent.insert(f.wire.clone(), (i, f));
        }
    }
    for (i, t) in taps.iter().enumerate() {
        assert_eq!(
            stats[i].video.frames_failed + stats[i].audio.frames_failed,
            0,
            "{}: {:?}",
            ps[i].name,
            stats[i]
        );
        let mut from: HashMap<(usize, MediaKind), usize> = HashMap::new();
        for g in t.iter().filter(|f| !f.sent) {
            let (s, f) = sent.get(&g.wire).expect("decrypted a frame nobody sent");
            assert_ne!(*s, i);
            assert_eq!(f.frame, g.frame, "not byte-identical");
            *from.entry((*s, g.kind)).or_default() += 1;
        }
        // each receiver has AUDIO_SLOTS audio and VIDEO_SLOTS video slots: with everyone
        // equally loud (the tone) the places stay with whoever was heard first (a member whose
        // audio started a few packets later may lose its place at the start), and every
        // receiver gets, for the rest of the call, the first places that are not its own
        let streams = |k: MediaKind, min: usize| {
            (0..n)
                .filter(|&j| j != i && from.get(&(j, k)).copied().unwrap_or(0) > min)
                .count()
        };
        let expect_video = VIDEO_SLOTS.min(n - 1);
        let expect_audio = AUDIO_SLOTS.min(n - 1);
        assert_eq!(
            streams(MediaKind::Video, 10),
            expect_video,
            "{} video: {from:?}",
            ps[i].name
        );
        assert_eq!(
            streams(MediaKind::Audio, 50),
            expect_audio,
            "{} audio: {from:?}",
            ps[i].name
        );
    }

    // the capture: what an untrusted relay saw
    let records = capture::parse(&std::fs::read(dir.path().join("capture.bin")).unwrap()).unwrap();
    let reassembly = capture::reassemble(&records);
    // every video record is in a frame, but for a frame a sender may have been cut off in by
    // `close` (at most one per sender); nothing is lost or reordered on loopback before the relay
    assert_eq!(
        (reassembly.undepacketizable, reassembly.broken),
        (0, 0),
        "video records in no frame: {reassembly:?}"
    );
    assert!(
        reassembly.unfinished_frames <= n,
        "{} frames cut off for {n} senders",
        reassembly.unfinished_frames
    );
    println!(
        "capture: {} records, {} frames; video records in no frame: {} in {} frames cut off",
        records.len(),
        reassembly.frames.len(),
        reassembly.unfinished,
        reassembly.unfinished_frames
    );
    let frames: Vec<capture::CapturedFrame> =
        reassembly.frames.into_iter().map(|(_, f)| f).collect();
    assert!(frames.len() > 100);
    let mut plaintext_windows = HashSet::new();
    for t in &taps {
        for f in t.iter().filter(|f| f.sent) {
            let clear = if f.kind == MediaKind::Video {
                if f.frame[0] & 1 == 0 {
                    10
                } else {
                    3
                }
            } else {
                1
            };
            for w in f.frame[clear.min(f.frame.len())..].windows(16) {
                plaintext_windows.insert(w.to_vec());
            }
        }
    }
    let leaks = records
        .iter()
        .filter(|r| r.payload.windows(16).any(|w| plaintext_windows.contains(w)))
        .count();
    assert_eq!(leaks, 0, "{leaks} forwarded payloads contained plaintext");
    // every captured frame is a whole RFC 9605 frame, and exactly the SFrame ciphertext a
    // participant sent (every sent frame is tapped before it is packetized, and the taps are
    // drained after every peer closed: nothing captured can be missing from `sent`)
    let suite = MediaConfig::loopback(1).unwrap().suite;
    for f in &frames {
        let codec = if f.kind == Kind::Video {
            Codec::Vp8
        } else {
            Codec::Opus
        };
        // a whole RFC 9605 frame: clear codec bytes, header, at least a tag
        if let Err(e) = codec.split(suite, &f.frame) {
            panic!("captured {:?} frame of {}: {e}", f.kind, f.sender);
        }
        assert!(
            sent.contains_key(&f.frame),
            "a captured {:?} frame of {} matches no sent ciphertext",
            f.kind,
            f.sender
        );
    }
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_party_room_through_the_relay() {
    let _serial = SERIAL.lock().await;
    room_of(3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_party_room_through_the_relay() {
    let _serial = SERIAL.lock().await;
    room_of(5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_and_leaves_are_announced_and_a_leaver_is_no_longer_forwarded() {
    let _serial = SERIAL.lock().await;
    let relay = TestRelay::start().await;
    let mut a = participant(&relay, "r2", "alice", 1).await;
    let b = participant(&relay, "r2", "bob", 2).await;
    assert_eq!(b.room.members, vec!["alice".to_string()]);
    assert_eq!(
        next(&mut a.room.events).await,
        sotto_relay::protocol::ServerMsg::MemberJoined {
            participant: "bob".into()
        }
    );
    a.peer
        .install_remote_key(&b.peer.local_key_material())
        .unwrap();
    b.peer.start_sending().await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(a.peer.stats().await.video.frames_decrypted > 5);
    drop(b); // leaves the room (and stops its peer connection tasks with it)
    assert_eq!(
        next(&mut a.room.events).await,
        sotto_relay::protocol::ServerMsg::MemberLeft {
            participant: "bob".into()
        }
    );
    assert_eq!(relay.members("r2"), vec!["alice".to_string()]);
    let before = a.peer.stats().await.video.frames_received;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let after = a.peer.stats().await.video.frames_received;
    assert!(
        after <= before + 1,
        "frames still forwarded after leave: {before} -> {after}"
    );
    // a malformed control message gets a typed error, not a crash
    let (mut ws, _) = tokio_tungstenite::connect_async(relay.url()).await.unwrap();
    use futures_util::{SinkExt, StreamExt};
    ws.send(tokio_tungstenite::tungstenite::Message::text(
        "{\"type\":\"join\",\"room\":\"../x\",\"participant\":\"p\"}",
    ))
    .await
    .unwrap();
    let reply = ws.next().await.unwrap().unwrap().into_text().unwrap();
    assert!(
        reply.contains("\"bad_message\"") && reply.contains("invalid name"),
        "{reply}"
    );
    relay.shutdown().await;
}

/// The frames of an IVF file.
fn ivf_frames(data: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut at = 32;
    while at + 12 <= data.len() {
        let len = u32::from_le_bytes(data[at..at + 4].try_into().unwrap()) as usize;
        out.push(data[at + 12..at + 12 + len].to_vec());
        at += 12 + len;
    }
    out
}

/// An IVF file with `frames` (camera 1's header).
fn ivf(frames: &[Vec<u8>]) -> Vec<u8> {
    let mut d = sotto_call::media::source::CAMERA1_IVF[..32].to_vec();
    for f in frames {
        d.extend_from_slice(&(f.len() as u32).to_le_bytes());
        d.extend_from_slice(&0u64.to_le_bytes());
        d.extend_from_slice(f);
    }
    d
}

/// A receiver that gets the sender's key late fails the frames older than `KEY_WAIT`, decrypts
/// the ones still waiting and every later one, and asks for a key frame (PLI) which the sender
/// serves with the intra twin of its next frame. The sender's clip here has no key frame of its
/// own (camera 1 without its key frames, looped), so every key frame in the capture was asked
/// for. Measured from the capture: frames between the key's arrival and the first key frame.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_without_the_key_recovers_when_it_arrives_and_video_resumes_on_request() {
    use sotto_call::media::consts::{KEYFRAME_REQUEST_RETRY, KEY_WAIT};
    use sotto_call::media::source::{CAMERA1_INTRA_IVF, CAMERA1_IVF};
    use sotto_call::media::{is_vp8_key_frame, IvfSource};
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let relay = TestRelay::start_with(|cfg| cfg.capture_dir = Some(dir.path().to_path_buf())).await;

    let clip = ivf_frames(CAMERA1_IVF);
    let twin = ivf_frames(CAMERA1_INTRA_IVF);
    let inter: Vec<usize> = (0..clip.len())
        .filter(|&i| !is_vp8_key_frame(&clip[i]))
        .collect();
    assert!(inter.len() >= clip.len() - 5);
    let pick = |v: &[Vec<u8>]| inter.iter().map(|&i| v[i].clone()).collect::<Vec<_>>();
    let src = IvfSource::parse("inter-only", &ivf(&pick(&clip)))
        .unwrap()
        .with_intra_twin(IvfSource::parse("twin", &ivf(&pick(&twin))).unwrap())
        .unwrap();
    let mut ac = MediaConfig::loopback(1).unwrap();
    ac.video = Some(src);
    let mut alice = participant_with(&relay, "r4", "alice", ac).await;
    let bob = participant(&relay, "r4", "bob", 2).await;
    alice.peer.start_sending().await.unwrap();

    // no key at bob: frames wait, then the ones older than KEY_WAIT fail
    tokio::time::sleep(KEY_WAIT + Duration::from_millis(1500)).await;
    let s0 = bob.peer.stats().await;
    assert_eq!(s0.video.frames_decrypted + s0.audio.frames_decrypted, 0);
    assert!(s0.video.frames_failed > 5, "{s0:?}");
    assert_eq!(s0.video.keyframe_requests_sent, 0, "nothing decodable yet");
    let (at_key, _, _) = relay.stats();
    bob.peer
        .install_remote_key(&alice.peer.local_key_material())
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let s1 = bob.peer.stats().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let s2 = bob.peer.stats().await;
    let a = alice.peer.stats().await;
    // recovered by itself, and for good
    assert!(
        s1.video.frames_decrypted > 10 && s1.audio.frames_decrypted > 50,
        "{s1:?}"
    );
    assert!(
        s1.video.frames_waited_for_key + s1.audio.frames_waited_for_key > 0,
        "frames that were still waiting decrypt when the key comes: {s1:?}"
    );
    assert_eq!(
        s2.video.frames_failed + s2.audio.frames_failed,
        s1.video.frames_failed + s1.audio.frames_failed,
        "failures after the key arrived: {s2:?}"
    );
    assert!(s2.video.frames_decrypted > s1.video.frames_decrypted + 10);
    assert!(s1.video.keyframe_requests_sent >= 1 && a.video.keyframe_requests_received >= 1);
    for p in [&alice, &bob] {
        p.peer.close().await.unwrap();
    }
    relay.flush_capture();

    // from the capture: alice's video frames, after the key reached bob, until a key frame
    let records = capture::parse(&std::fs::read(dir.path().join("capture.bin")).unwrap()).unwrap();
    let reassembly = capture::reassemble(&records);
    assert_eq!(
        (reassembly.undepacketizable, reassembly.broken),
        (0, 0),
        "{reassembly:?}"
    );
    let video: Vec<(usize, Vec<u8>)> = reassembly
        .frames
        .into_iter()
        .filter(|(_, f)| f.sender == "alice" && f.kind == Kind::Video)
        .map(|(i, f)| (i, f.frame))
        .collect();
    assert!(
        video
            .iter()
            .filter(|(i, _)| (*i as u64) < at_key)
            .all(|(_, f)| f[0] & 1 == 1),
        "a key frame before anyone asked"
    );
    let after: Vec<&Vec<u8>> = video
        .iter()
        .filter(|(i, _)| (*i as u64) >= at_key)
        .map(|(_, f)| f)
        .collect();
    let waited = after.iter().take_while(|f| f[0] & 1 == 1).count();
    let interval = IvfSource::camera1().unwrap().frame_interval();
    let bound = 1 + KEYFRAME_REQUEST_RETRY
        .as_micros()
        .div_ceil(interval.as_micros()) as usize;
    assert!(
        waited < after.len() && waited <= bound,
        "{waited} frames after the key before a key frame (bound {bound})"
    );
    // the key frame is the intra twin of a clip frame, as alice encrypted it
    let sent: HashMap<Vec<u8>, Vec<u8>> = drain(&mut alice.tap)
        .into_iter()
        .filter(|t| t.sent)
        .map(|t| (t.wire, t.frame))
        .collect();
    let plain = sent.get(after[waited]).expect("captured frame alice sent");
    assert!(twin.contains(plain));
    println!(
        "late key: {} frames failed before it (older than KEY_WAIT), {} waited and decrypted, \
         {waited} video frames from the key to the first key frame (bound {bound}), {} PLI sent, \
         {} received",
        s1.video.frames_failed + s1.audio.frames_failed,
        s1.video.frames_waited_for_key + s1.audio.frames_waited_for_key,
        s1.video.keyframe_requests_sent,
        a.video.keyframe_requests_received
    );
    relay.shutdown().await;
}

async fn next(
    rx: &mut mpsc::UnboundedReceiver<sotto_relay::protocol::ServerMsg>,
) -> sotto_relay::protocol::ServerMsg {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .unwrap()
        .unwrap()
}

/// A TURN server that never answers (nothing listens on its port) does not hold a relay join
/// up: the answer goes out after RELAY_GATHER_WAIT with the host candidates, not after
/// GATHER_TIMEOUT (10 s) with an error, as it did when every call got the signaling server's
/// ICE servers by default.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_turn_server_does_not_hold_up_a_relay_join() {
    let _serial = SERIAL.lock().await;
    let relay = TestRelay::start().await;
    let dead = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = dead.local_addr().unwrap().port();
    drop(dead);
    let mut c = MediaConfig::loopback(1).unwrap();
    c.ice_servers = vec![sotto_call::media::IceServer {
        urls: vec![format!("turn:127.0.0.1:{port}?transport=udp")],
        username: "1:nobody".into(),
        credential: "x".into(),
    }];
    let t0 = std::time::Instant::now();
    let alice = participant_with(&relay, "r5", "alice", c).await;
    let took = t0.elapsed();
    assert!(
        took < sotto_call::media::consts::GATHER_TIMEOUT,
        "join took {took:?}"
    );
    assert!(alice.peer.wait_connected(Duration::from_secs(20)).await);
    alice.peer.close().await.unwrap();
}
