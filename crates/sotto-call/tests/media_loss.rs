#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! 10% of the sender's outgoing RTP packets are dropped right before the wire (a wire-most
//! interceptor; NACK retransmissions cross it again). Every frame that still arrives whole must
//! decrypt and equal what was encoded; not one decryption failure.

use std::collections::HashMap;
use std::time::Duration;

use sotto_call::media::{MediaKind, TapFrame};
use sotto_testkit::media::{drain, leg, Leg};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_percent_rtp_loss_every_whole_frame_decrypts() {
    let Leg {
        peer: a,
        tap: mut ta,
    } = leg(1, None).await;
    let Leg {
        peer: b,
        tap: mut tb,
    } = leg(2, None).await;
    a.set_outgoing_loss_per_mille(100);
    let offer = a.create_offer().await.unwrap();
    let answer = b.accept_offer(&offer).await.unwrap();
    a.accept_answer(&answer).await.unwrap();
    b.install_remote_key(&a.local_key_material()).unwrap();
    a.install_remote_key(&b.local_key_material()).unwrap();
    assert!(a.wait_connected(Duration::from_secs(20)).await);
    assert!(b.wait_connected(Duration::from_secs(20)).await);
    a.start_sending().await.unwrap();
    b.start_sending().await.unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let sa = a.stats().await;
    let sb = b.stats().await;
    a.close().await.unwrap();
    b.close().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let sent = drain(&mut ta);
    let got = drain(&mut tb);

    // the loss really happened, at about the asked rate
    let total = sa.rtp_sent + sa.rtp_dropped_by_loss_knob;
    assert!(total > 300, "too few RTP packets: {sa:?}");
    let rate = sa.rtp_dropped_by_loss_knob as f64 / total as f64;
    assert!((0.05..=0.15).contains(&rate), "loss rate {rate}: {sa:?}");
    // b's own sending was not lossy
    assert_eq!(sb.rtp_dropped_by_loss_knob, 0);

    assert_eq!(
        sb.video.frames_failed + sb.audio.frames_failed,
        0,
        "a frame that arrived failed to decrypt: {sb:?}"
    );
    for kind in [MediaKind::Video, MediaKind::Audio] {
        let s: Vec<&TapFrame> = sent.iter().filter(|f| f.sent && f.kind == kind).collect();
        let r: Vec<&TapFrame> = got.iter().filter(|f| !f.sent && f.kind == kind).collect();
        let index: HashMap<&[u8], usize> = s
            .iter()
            .enumerate()
            .map(|(i, f)| (f.wire.as_slice(), i))
            .collect();
        let mut last = None;
        for g in &r {
            let i = *index
                .get(g.wire.as_slice())
                .expect("received a frame that was never sent");
            assert_eq!(g.frame, s[i].frame, "{kind:?} frame {i} differs");
            assert!(
                last.is_none_or(|l| l < i),
                "{kind:?} frame {i} out of order"
            );
            last = Some(i);
        }
        // NACK recovers most video; audio frames are one packet each and not retransmitted, so
        // ~10% are simply gone (before the reassembly time bound, one loss stalled audio for 5 s)
        let share = r.len() as f64 / s.len().max(1) as f64;
        eprintln!(
            "{kind:?}: sent {} frames, {} decrypted ({:.0}%)",
            s.len(),
            r.len(),
            share * 100.0
        );
        assert!(
            share > 0.7,
            "{kind:?}: only {} of {} frames",
            r.len(),
            s.len()
        );
    }
}
