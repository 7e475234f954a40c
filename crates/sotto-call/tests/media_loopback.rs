#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Two real webrtc-rs peers on loopback, SFrame on every frame.

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use sotto_call::media::{CandidateType, IvfSource, MediaKind, TapFrame};
use sotto_testkit::media::{connect_pair, drain, leg, rotated, Leg};

/// The tests of this file run one at a time: each streams real-time media, and on a loaded
/// 2-core machine five parallel calls starve each other.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Connects `a` and `b` and starts both sending.
async fn connect(a: &Leg, b: &Leg, exchange_keys: bool) {
    connect_pair(&a.peer, &b.peer, exchange_keys).await;
    a.peer.start_sending().await.unwrap();
    b.peer.start_sending().await.unwrap();
}

/// Every frame `rx` decrypted must equal, in order, a frame `tx` encrypted, with none skipped
/// in between (except frames that were still in flight at the end).
fn assert_byte_identical(tx: &[TapFrame], rx: &[TapFrame], kind: MediaKind) -> usize {
    let sent: Vec<&TapFrame> = tx.iter().filter(|f| f.sent && f.kind == kind).collect();
    let got: Vec<&TapFrame> = rx.iter().filter(|f| !f.sent && f.kind == kind).collect();
    assert!(!got.is_empty(), "no {kind:?} frames decrypted");
    // ciphertext identifies the frame uniquely (counter in the header)
    let index: HashMap<&[u8], usize> = sent
        .iter()
        .enumerate()
        .map(|(i, f)| (f.wire.as_slice(), i))
        .collect();
    let first = index[got[0].wire.as_slice()];
    for (k, g) in got.iter().enumerate() {
        let i = *index
            .get(g.wire.as_slice())
            .expect("received a frame that was never sent");
        assert_eq!(i, first + k, "{kind:?} frame {k} out of order or missing");
        assert_eq!(
            g.frame, sent[i].frame,
            "{kind:?} frame {k} differs from what was encoded"
        );
        assert_ne!(g.wire, g.frame, "the wire form must not be the plaintext");
    }
    got.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_frame_decrypts_byte_identical_and_sinks_play() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let mut a = leg(1, Some(dir.path().join("a-received"))).await;
    let mut b = leg(2, Some(dir.path().join("b-received"))).await;
    connect(&a, &b, true).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let sa = a.peer.stats().await;
    let sb = b.peer.stats().await;
    a.peer.close().await.unwrap();
    b.peer.close().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let ta = drain(&mut a.tap);
    let tb = drain(&mut b.tap);
    let v = assert_byte_identical(&ta, &tb, MediaKind::Video);
    let au = assert_byte_identical(&ta, &tb, MediaKind::Audio);
    assert!(v >= 20, "only {v} video frames in 3 s");
    assert!(au >= 80, "only {au} audio frames in 3 s");
    assert_byte_identical(&tb, &ta, MediaKind::Video);
    assert_eq!(sa.video.frames_failed + sa.audio.frames_failed, 0, "{sa:?}");
    assert_eq!(sb.video.frames_failed + sb.audio.frames_failed, 0, "{sb:?}");
    assert_eq!(sa.pair_type, Some(CandidateType::Host), "{sa:?}");
    assert_eq!(sb.state, "connected");
    assert!(
        sa.rtt.is_some_and(|r| r < Duration::from_secs(1)),
        "no RTT: {sa:?}"
    );
    assert!(
        sa.send_bitrate > 50_000 && sb.recv_bitrate > 50_000,
        "{sa:?} {sb:?}"
    );

    // What was written is what ffprobe (an implementation we did not write) reads.
    let ivf = dir.path().join("b-received.ivf");
    let ogg = dir.path().join("b-received.ogg");
    let probe = |path: &std::path::Path| -> (String, u64) {
        let out = Command::new("ffprobe")
            .args([
                "-v",
                "error",
                "-count_packets",
                "-show_entries",
                "stream=codec_name,nb_read_packets",
                "-of",
                "csv=p=0",
            ])
            .arg(path)
            .output()
            .expect("ffprobe is required (apt-get install ffmpeg)");
        assert!(
            out.status.success(),
            "ffprobe rejected {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let s = String::from_utf8(out.stdout).unwrap();
        let mut parts = s.trim().split(',');
        (
            parts.next().unwrap().to_string(),
            parts.next().unwrap().parse().unwrap(),
        )
    };
    let (codec, n) = probe(&ivf);
    assert_eq!(codec, "vp8");
    // the sink starts at the first key frame; from there on, every decrypted frame, same sizes
    let got_video: Vec<&TapFrame> = tb
        .iter()
        .filter(|f| !f.sent && f.kind == MediaKind::Video)
        .skip_while(|f| f.frame[0] & 1 != 0)
        .collect();
    assert_eq!(
        n as usize,
        got_video.len(),
        "ivf frames vs decrypted frames"
    );
    let sizes = |path: &std::path::Path| -> Vec<usize> {
        let out = Command::new("ffprobe")
            .args([
                "-v",
                "error",
                "-show_entries",
                "packet=size",
                "-of",
                "csv=p=0",
            ])
            .arg(path)
            .output()
            .expect("ffprobe is required (apt-get install ffmpeg)");
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| l.trim().parse().unwrap())
            .collect()
    };
    let want: Vec<usize> = got_video.iter().map(|f| f.frame.len()).collect();
    assert_eq!(sizes(&ivf), want, "ivf packet sizes");
    let want: Vec<usize> = tb
        .iter()
        .filter(|f| !f.sent && f.kind == MediaKind::Audio)
        .map(|f| f.frame.len())
        .collect();
    assert_eq!(sizes(&ogg), want, "ogg packet sizes");
    // and ffmpeg decodes both without an error
    for path in [&ivf, &ogg] {
        let out = Command::new("ffmpeg")
            .args(["-v", "error", "-i"])
            .arg(path)
            .args(["-f", "null", "-"])
            .output()
            .expect("ffmpeg is required (apt-get install ffmpeg)");
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "ffmpeg could not decode {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let (codec, n) = probe(&ogg);
    assert_eq!(codec, "opus");
    assert_eq!(n as usize, au, "ogg packets vs frames decrypted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_key_fails_then_recovers_and_rotation_loses_nothing() {
    let _serial = SERIAL.lock().await;
    let mut a = leg(1, None).await;
    let mut b = leg(2, None).await;
    connect(&a, &b, false).await;
    // b has no key for a yet: frames arrive but cannot decrypt, and nothing crashes; after
    // waiting KEY_WAIT for their key, the oldest count as failed.
    tokio::time::sleep(sotto_call::media::consts::KEY_WAIT + Duration::from_millis(1000)).await;
    let s = b.peer.stats().await;
    assert!(
        s.video.frames_received > 0 && s.video.frames_decrypted == 0,
        "{s:?}"
    );
    assert!(s.video.frames_failed > 0);
    b.peer
        .install_remote_key(&a.peer.local_key_material())
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let s = b.peer.stats().await;
    assert!(
        s.video.frames_decrypted > 0 && s.audio.frames_decrypted > 0,
        "no recovery: {s:?}"
    );
    let failed_before = s.video.frames_failed + s.audio.frames_failed;

    // rotation with overlap: give b the next key, then switch; mute and switch source too
    let next = rotated(&a.peer.local_key_material());
    b.peer.install_remote_key(&next).unwrap();
    a.peer.use_send_key(&next).unwrap();
    a.peer.switch_video_source(IvfSource::camera2().unwrap());
    tokio::time::sleep(Duration::from_millis(1000)).await;
    a.peer.set_audio_muted(true);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let muted_at = b.peer.stats().await.audio.frames_decrypted;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let s = b.peer.stats().await;
    assert!(
        s.audio.frames_decrypted <= muted_at + 3,
        "audio kept flowing while muted"
    );
    a.peer.set_audio_muted(false);
    tokio::time::sleep(Duration::from_millis(700)).await;
    let s = b.peer.stats().await;
    assert!(
        s.audio.frames_decrypted > muted_at + 10,
        "audio did not resume"
    );
    assert_eq!(s.remote_generation, Some(1));
    assert_eq!(
        s.video.frames_failed + s.audio.frames_failed,
        failed_before,
        "frames lost to the rotation"
    );
    a.peer.close().await.unwrap();
    b.peer.close().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let ta = drain(&mut a.tap);
    let tb = drain(&mut b.tap);
    // after the switch, camera2 frames arrived, still as ciphertext on the wire
    let cam2 = IvfSource::camera2().unwrap();
    let mut c2 = cam2.clone();
    let cam2_frames: Vec<Vec<u8>> = (0..cam2.len()).map(|_| c2.next_frame()).collect();
    let got_cam2 = tb
        .iter()
        .filter(|f| !f.sent && f.kind == MediaKind::Video && cam2_frames.contains(&f.frame))
        .count();
    assert!(got_cam2 > 5, "camera 2 frames received: {got_cam2}");
    for f in ta.iter().filter(|f| f.sent) {
        assert!(
            !f.wire
                .windows(16)
                .any(|w| f.frame[f.frame.len().min(10)..].windows(16).any(|p| p == w))
                || f.frame.len() < 26
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_percent_packet_loss_causes_no_decryption_failure() {
    let _serial = SERIAL.lock().await;
    let mut a = leg(1, None).await;
    let mut b = leg(2, None).await;
    b.peer.set_incoming_loss_per_mille(100);
    connect(&a, &b, true).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let s = b.peer.stats().await;
    a.peer.close().await.unwrap();
    b.peer.close().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let ta = drain(&mut a.tap);
    let tb = drain(&mut b.tap);
    let sent_video = ta
        .iter()
        .filter(|f| f.sent && f.kind == MediaKind::Video)
        .count() as u64;
    let sent_audio = ta
        .iter()
        .filter(|f| f.sent && f.kind == MediaKind::Audio)
        .count() as u64;
    // loss happened: fewer frames arrived whole than were sent
    assert!(
        s.audio.frames_decrypted + 10 < sent_audio,
        "no audio loss? {s:?} sent {sent_audio}"
    );
    assert!(
        s.video.frames_received < sent_video,
        "no video loss? {s:?} sent {sent_video}"
    );
    assert!(
        s.video.frames_decrypted > 10 && s.audio.frames_decrypted > 50,
        "{s:?}"
    );
    // every frame that arrived whole decrypted, and is what was sent
    assert_eq!(s.video.frames_failed + s.audio.frames_failed, 0, "{s:?}");
    let sent: HashMap<&[u8], &TapFrame> = ta
        .iter()
        .filter(|f| f.sent)
        .map(|f| (f.wire.as_slice(), f))
        .collect();
    for g in tb.iter().filter(|f| !f.sent) {
        assert_eq!(sent[g.wire.as_slice()].frame, g.frame);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_rotation_mid_call_loses_no_frame_and_an_unannounced_key_fails() {
    let _serial = SERIAL.lock().await;
    let mut a = leg(1, None).await;
    let mut b = leg(2, None).await;
    connect(&a, &b, true).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    for generation in 1..=2 {
        // overlap scheme: the peer gets the next key first, then the sender switches to it
        let next = rotated(&a.peer.local_key_material());
        assert_eq!(next.id.generation, generation);
        b.peer.install_remote_key(&next).unwrap();
        a.peer.use_send_key(&next).unwrap();
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let s = b.peer.stats().await;
        assert_eq!(s.remote_generation, Some(generation), "{s:?}");
        assert_eq!(s.video.frames_failed + s.audio.frames_failed, 0, "{s:?}");
    }
    assert_eq!(a.peer.stats().await.local_generation, 2);
    let before = b.peer.stats().await;
    // every frame across both rotations arrived, in order, byte-identical
    let ta = drain(&mut a.tap);
    let tb = drain(&mut b.tap);
    let v = assert_byte_identical(&ta, &tb, MediaKind::Video);
    let au = assert_byte_identical(&ta, &tb, MediaKind::Audio);
    assert!(v > 10 && au > 30, "video {v}, audio {au}");

    // the check can fail: a rotation the peer never heard of makes every later frame fail (once
    // it has waited KEY_WAIT for a key that never comes)
    let unannounced = rotated(&a.peer.local_key_material());
    a.peer.use_send_key(&unannounced).unwrap();
    tokio::time::sleep(sotto_call::media::consts::KEY_WAIT + Duration::from_millis(800)).await;
    let s = b.peer.stats().await;
    assert!(
        s.video.frames_failed > 0 && s.audio.frames_failed > 0,
        "frames under an unknown key decrypted? {s:?}"
    );
    assert!(s.audio.frames_decrypted <= before.audio.frames_decrypted + 5);
    a.peer.close().await.unwrap();
    b.peer.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn video_mute_stops_only_video_and_switching_back_and_forth_keeps_every_frame() {
    let _serial = SERIAL.lock().await;
    let mut a = leg(1, None).await;
    let mut b = leg(2, None).await;
    connect(&a, &b, true).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    a.peer.set_video_muted(true);
    tokio::time::sleep(Duration::from_millis(400)).await; // in-flight frames land
    let m0 = b.peer.stats().await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let m1 = b.peer.stats().await;
    assert!(
        m1.video.frames_decrypted <= m0.video.frames_decrypted + 1,
        "video flowed while muted: {m0:?} {m1:?}"
    );
    assert!(
        m1.audio.frames_decrypted >= m0.audio.frames_decrypted + 10,
        "audio stopped with video: {m0:?} {m1:?}"
    );
    a.peer.set_video_muted(false);
    a.peer.switch_video_source(IvfSource::camera2().unwrap());
    assert_eq!(a.peer.video_source_name().as_deref(), Some("camera2"));
    tokio::time::sleep(Duration::from_millis(800)).await;
    a.peer.switch_video_source(IvfSource::camera1().unwrap());
    tokio::time::sleep(Duration::from_millis(800)).await;
    let s = b.peer.stats().await;
    assert!(
        s.video.frames_decrypted > m1.video.frames_decrypted + 10,
        "video did not resume: {s:?}"
    );
    assert_eq!(s.video.frames_failed + s.audio.frames_failed, 0);
    a.peer.close().await.unwrap();
    b.peer.close().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let ta = drain(&mut a.tap);
    let tb = drain(&mut b.tap);
    // nothing lost or altered across mute and both switches
    assert_byte_identical(&ta, &tb, MediaKind::Video);
    assert_byte_identical(&ta, &tb, MediaKind::Audio);
    let cam2: Vec<Vec<u8>> = {
        let mut c = IvfSource::camera2().unwrap();
        (0..c.len()).map(|_| c.next_frame()).collect()
    };
    let got: Vec<bool> = tb
        .iter()
        .filter(|f| !f.sent && f.kind == MediaKind::Video)
        .map(|f| cam2.contains(&f.frame))
        .collect();
    // camera1, then camera2, then camera1 again
    let runs = got.windows(2).filter(|w| w[0] != w[1]).count();
    assert!(
        !got[0] && runs == 2 && got.iter().filter(|x| **x).count() > 5,
        "source sequence wrong: {runs} changes"
    );
}
