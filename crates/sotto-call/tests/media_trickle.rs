#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Trickle ICE between two real webrtc-rs peers: the SDPs carry no candidate at all (any that
//! webrtc-rs put in are stripped), so the call can only connect through candidates delivered one
//! by one as `LocalCandidate` events and fed to `add_remote_candidate`, some of them before the
//! remote description exists.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sotto_call::media::consts::{MAX_CANDIDATE_LEN, MAX_EARLY_CANDIDATES};
use sotto_call::media::{
    CandidateType, MediaConfig, MediaError, MediaEvent, MediaEvents, MediaPeer,
};

fn strip_candidates(sdp: &str) -> String {
    sdp.split("\r\n")
        .filter(|l| !l.starts_with("a=candidate") && !l.starts_with("a=end-of-candidates"))
        .collect::<Vec<_>>()
        .join("\r\n")
}

/// Forwards `from`'s local candidates to `to`; counts them.
fn forward(mut from: MediaEvents, to: Arc<MediaPeer>, n: Arc<AtomicUsize>) {
    tokio::spawn(async move {
        while let Some(e) = from.recv().await {
            if let MediaEvent::LocalCandidate(c) = e {
                n.fetch_add(1, Ordering::SeqCst);
                to.add_remote_candidate(&c).await.unwrap();
            }
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickled_candidates_alone_connect_the_call_and_frames_decrypt() {
    let (a, ea) = MediaPeer::new(MediaConfig::loopback(1).unwrap())
        .await
        .unwrap();
    let (b, eb) = MediaPeer::new(MediaConfig::loopback(2).unwrap())
        .await
        .unwrap();
    let (a, b) = (Arc::new(a), Arc::new(b));
    let (na, nb) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    // a's candidates may reach b before b has the offer: b must keep them
    forward(ea, b.clone(), na.clone());
    forward(eb, a.clone(), nb.clone());
    b.install_remote_key(&a.local_key_material()).unwrap();
    a.install_remote_key(&b.local_key_material()).unwrap();

    let offer = a.create_offer_trickle().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await; // let candidates run ahead
    let answer = b
        .accept_offer_trickle(&strip_candidates(&offer))
        .await
        .unwrap();
    a.accept_answer(&strip_candidates(&answer)).await.unwrap();
    assert!(
        a.wait_connected(Duration::from_secs(20)).await,
        "a never connected"
    );
    assert!(
        b.wait_connected(Duration::from_secs(20)).await,
        "b never connected"
    );
    assert!(na.load(Ordering::SeqCst) > 0 && nb.load(Ordering::SeqCst) > 0);
    a.start_sending().await.unwrap();
    b.start_sending().await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let s = b.stats().await;
    assert!(s.video.frames_decrypted > 5, "{s:?}");
    assert!(s.audio.frames_decrypted > 20, "{s:?}");
    assert_eq!(s.video.frames_failed + s.audio.frames_failed, 0);
    assert_eq!(s.pair_type, Some(CandidateType::Host));
    // trickled remote candidates are the ones webrtc-rs reports in its stats
    assert_eq!(s.remote_pair_type, Some(CandidateType::Host), "{s:?}");
    a.close().await.unwrap();
    b.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_candidates_are_refused_and_early_ones_are_bounded() {
    let (p, _e) = MediaPeer::new(MediaConfig::loopback(1).unwrap())
        .await
        .unwrap();
    for bad in ["", "{", "null", "[1,2]", "{\"candidate\":5}"] {
        assert!(
            matches!(
                p.add_remote_candidate(bad).await,
                Err(MediaError::BadCandidate(_))
            ),
            "{bad:?} accepted"
        );
    }
    let c = r#"{"candidate":"candidate:1 1 udp 2130706431 127.0.0.1 40000 typ host","sdpMid":"0","sdpMLineIndex":0}"#;
    // too long: limit + 1 refused, limit accepted (padding inside the JSON is whitespace)
    let pad = |n: usize| format!("{c}{}", " ".repeat(n - c.len()));
    assert!(matches!(
        p.add_remote_candidate(&pad(MAX_CANDIDATE_LEN + 1)).await,
        Err(MediaError::BadCandidate(_))
    ));
    p.add_remote_candidate(&pad(MAX_CANDIDATE_LEN))
        .await
        .unwrap();
    // before any remote description: MAX_EARLY_CANDIDATES are kept, one more is refused
    for _ in 1..MAX_EARLY_CANDIDATES {
        p.add_remote_candidate(c).await.unwrap();
    }
    assert!(matches!(
        p.add_remote_candidate(c).await,
        Err(MediaError::BadCandidate(_))
    ));
    p.close().await.unwrap();
}
