#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Sender-key rotation on two real webrtc-rs peers on loopback: the data plane's key only moves
//! forward, and rotation forced by the SFrame counter limit.

use std::time::Duration;

use sotto_call::media::{MediaConfig, MediaEvent, MediaEvents, MediaPeer};
use sotto_testkit::media::{connect_pair, rotated};

async fn pair() -> (MediaPeer, MediaEvents, MediaPeer, MediaEvents) {
    let (a, ea) = MediaPeer::new(MediaConfig::loopback(1).unwrap())
        .await
        .unwrap();
    let (b, eb) = MediaPeer::new(MediaConfig::loopback(2).unwrap())
        .await
        .unwrap();
    connect_pair(&a, &b, true).await;
    (a, ea, b, eb)
}

async fn next_rotation_needed(events: &mut MediaEvents, limit: Duration) -> u64 {
    let wait = async {
        loop {
            match events.recv().await {
                Some(MediaEvent::RotationNeeded { frames_left }) => return frames_left,
                Some(_) => {}
                None => panic!("event channel closed"),
            }
        }
    };
    tokio::time::timeout(limit, wait)
        .await
        .expect("no RotationNeeded event")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_send_key_only_moves_forward_and_a_rotation_loses_nothing() {
    let (a, _ea, b, _eb) = pair().await;
    a.start_sending().await.unwrap();
    b.start_sending().await.unwrap();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let before = b.stats().await;
    assert!(before.video.frames_decrypted > 0, "{before:?}");

    // overlap: the peer holds the next key before the sender switches to it
    let old = a.local_key_material();
    let next = rotated(&old);
    b.install_remote_key(&next).unwrap();
    a.use_send_key(&next).unwrap();
    // back to the old key, or the same key again once frames went out under it: both would
    // reuse nonces, both refused
    assert!(a.use_send_key(&old).is_err());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(a.use_send_key(&next).is_err());
    assert_eq!(a.local_key_material(), next);
    let after = b.stats().await;
    assert_eq!(after.remote_generation, Some(1), "{after:?}");
    assert_eq!(
        after.video.frames_failed + after.audio.frames_failed,
        0,
        "frames lost to the rotation: {after:?}"
    );
    assert!(
        after.video.frames_decrypted >= before.video.frames_decrypted + 10,
        "video stalled after rotation: {before:?} -> {after:?}"
    );
    a.close().await.unwrap();
    b.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counter_limit_asks_for_rotation_and_rotation_resumes_media() {
    // Audio and video share one key: ~65 frames/s, so 150 frames last ~2.3 s.
    const LIMIT: u64 = 150;
    let (a, mut ea, b, _eb) = pair().await;
    a.set_counter_limit(LIMIT);
    a.start_sending().await.unwrap();
    b.start_sending().await.unwrap();
    let left = next_rotation_needed(&mut ea, Duration::from_secs(10)).await;
    assert!(left < LIMIT, "fired with {left} frames left");

    // Ignore the request: at the limit the sender stops instead of reusing a nonce.
    tokio::time::sleep(Duration::from_millis(4000)).await;
    let s = b.stats().await;
    let got = s.video.frames_decrypted + s.audio.frames_decrypted;
    assert!(
        got <= LIMIT && got + 40 >= LIMIT,
        "{got} frames decrypted under a key limited to {LIMIT}: {s:?}"
    );
    assert_eq!(a.frames_left(), 0);
    let sa = a.stats().await;
    assert_eq!(sa.video.frames_sent + sa.audio.frames_sent, LIMIT, "{sa:?}");

    // Now rotate: media resumes under generation 1, which carries the same limit.
    let next = rotated(&a.local_key_material());
    b.install_remote_key(&next).unwrap();
    a.use_send_key(&next).unwrap();
    let left = next_rotation_needed(&mut ea, Duration::from_secs(10)).await;
    assert!(left < LIMIT, "second key not limited: {left} left");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let s = b.stats().await;
    assert_eq!(s.remote_generation, Some(1), "{s:?}");
    assert!(
        s.video.frames_decrypted + s.audio.frames_decrypted > got + 20,
        "media did not resume after rotation: {s:?}"
    );
    assert_eq!(s.video.frames_failed + s.audio.frames_failed, 0, "{s:?}");
    a.close().await.unwrap();
    b.close().await.unwrap();
}
