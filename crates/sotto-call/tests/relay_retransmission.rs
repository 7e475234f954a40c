#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Packet loss on either hop of a call through the real sotto-relay is repaired hop by hop:
//! the relay NACKs the sender for what it did not receive, and answers the receivers' NACKs from
//! its buffer of what it forwarded. Alice sends to Bob and Carol through the relay; every video
//! frame Alice encoded (at most one per run, see below) arrives whole at both and decrypts
//! byte-identical, not one decryption fails, and the relay's counters show the retransmissions. (Audio carries no NACK: a lost Opus
//! packet stays lost, and every audio frame that does arrive must still be exact.)

use std::time::{Duration, Instant};

use sotto_call::media::{MediaKind, MediaStats, TapFrame};
use sotto_relay::nack::RetransmissionStats;
use sotto_testkit::media::drain;
use sotto_testkit::relay::{participant, TestRelay};

/// Each test runs four webrtc-rs peers (three participants and the relay's connections); on a
/// 2-core machine they run one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Loss-free start, so every stream's first packets arrive (a NACK generator learns a stream
/// from its first packet and cannot ask for one before it).
const WARM_UP: Duration = Duration::from_millis(500);
/// Media time under loss.
const LOSSY: Duration = Duration::from_secs(5);
/// Loss-free end, so the last lossy frames are followed by packets that reveal their gaps (no
/// NACK can ask for a packet lost at the very end of a stream: nothing after it shows it missing).
const CLEAN_TAIL: Duration = Duration::from_millis(500);
/// After Alice stops: time for the last frames to land.
const DRAIN: Duration = Duration::from_millis(500);

struct Run {
    alice: MediaStats,
    relay: RetransmissionStats,
}

/// Alice sends through a relay to Bob and Carol; for `LOSSY`, Alice drops `alice_out` per mille
/// of her outgoing RTP and the relay `relay_out` per mille of what it sends, each right before
/// the wire (after the NACK responder buffered it: the packets are lost on the path, not unsent).
/// Checks every frame at both receivers.
async fn alice_to_bob_and_carol(alice_out: u64, relay_out: u64) -> Run {
    let started = Instant::now();
    let relay = TestRelay::start().await;
    let mut alice = participant(&relay, "r", "alice", 1).await;
    let mut bob = participant(&relay, "r", "bob", 2).await;
    let mut carol = participant(&relay, "r", "carol", 3).await;
    for p in [&bob, &carol] {
        p.peer
            .install_remote_key(&alice.peer.local_key_material())
            .unwrap();
    }
    alice.peer.start_sending().await.unwrap();
    tokio::time::sleep(WARM_UP).await;
    alice.peer.set_outgoing_loss_per_mille(alice_out);
    relay.set_outgoing_loss_per_mille(relay_out);
    tokio::time::sleep(LOSSY).await;
    alice.peer.set_outgoing_loss_per_mille(0);
    relay.set_outgoing_loss_per_mille(0);
    tokio::time::sleep(CLEAN_TAIL).await;
    alice.peer.set_video_muted(true);
    alice.peer.set_audio_muted(true);
    tokio::time::sleep(DRAIN).await;
    let a = alice.peer.stats().await;
    let receivers = [
        ("bob", bob.peer.stats().await),
        ("carol", carol.peer.stats().await),
    ];
    let counters = relay.retransmissions();
    for p in [&alice, &bob, &carol] {
        p.peer.close().await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;

    let sent = drain(&mut alice.tap);
    for ((name, stats), tap) in receivers.iter().zip([&mut bob.tap, &mut carol.tap]) {
        let got = drain(tap);
        assert_eq!(
            stats.video.frames_failed + stats.audio.frames_failed,
            0,
            "{name}: a frame that arrived failed to decrypt: {stats:?}"
        );
        for kind in [MediaKind::Video, MediaKind::Audio] {
            let mut s: Vec<&TapFrame> = sent.iter().filter(|f| f.sent && f.kind == kind).collect();
            // reassembly hands a frame over once the next one begins, so Alice's last frame
            // before she stopped is still waiting in it
            s.pop();
            let r: Vec<&TapFrame> = got.iter().filter(|f| !f.sent && f.kind == kind).collect();
            // in order, each the frame Alice encoded, byte for byte
            let mut next = 0;
            for g in &r {
                let i = next
                    + s[next..]
                        .iter()
                        .position(|f| f.wire == g.wire)
                        .expect("received a frame not sent, or out of order");
                assert_eq!(g.frame, s[i].frame, "{name}: {kind:?} frame {i} differs");
                next = i + 1;
            }
            eprintln!(
                "{name}: {kind:?}: {} of {} frames decrypted",
                r.len(),
                s.len()
            );
            if kind == MediaKind::Video && r.len() != s.len() {
                let missing: Vec<usize> = (0..s.len())
                    .filter(|&i| !r.iter().any(|g| g.wire == s[i].wire))
                    .collect();
                eprintln!("{name}: video frames missing: {missing:?}");
            }
            if kind == MediaKind::Video {
                assert!(s.len() > 50, "too few video frames sent: {}", s.len());
                // The loss also hits retransmissions. A resend that is lost again is asked for
                // once more only after the receiver's NACK interval (webrtc's 100 ms), which
                // can outlast the receiver's reassembly wait (MAX_LATE_TIME, 200 ms) on a busy
                // machine: one frame in the run may go that way. Without retransmission 6-12
                // frames are lost per run (checked by switching either side off).
                assert!(
                    s.len() - r.len() <= 1,
                    "{name}: {} video frames lost despite retransmission: {stats:?}, relay {counters:?}",
                    s.len() - r.len()
                );
            } else {
                assert!(
                    r.len() * 10 >= s.len() * 7,
                    "{name}: only {} of {} audio frames",
                    r.len(),
                    s.len()
                );
            }
        }
    }
    eprintln!(
        "alice dropped {} of {} RTP packets; relay {counters:?}; {:.1} s",
        a.rtp_dropped_by_loss_knob,
        a.rtp_sent + a.rtp_dropped_by_loss_knob,
        started.elapsed().as_secs_f64()
    );
    relay.shutdown().await;
    Run {
        alice: a,
        relay: counters,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loss_between_sender_and_relay_is_repaired_by_the_relay_nacking_the_sender() {
    let _serial = SERIAL.lock().await;
    let run = alice_to_bob_and_carol(100, 0).await;
    let a = &run.alice;
    let total = a.rtp_sent + a.rtp_dropped_by_loss_knob;
    let rate = a.rtp_dropped_by_loss_knob as f64 / total as f64;
    assert!((0.05..=0.15).contains(&rate), "loss rate {rate}: {a:?}");
    // the relay asked, and Alice's repairs reached it (late, after higher sequence numbers)
    assert!(run.relay.nacks_out > 0, "{:?}", run.relay);
    assert!(run.relay.late_packets_in > 0, "{:?}", run.relay);
    assert_eq!(run.relay.dropped_out, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loss_between_relay_and_receiver_is_repaired_from_the_relay_buffer() {
    let _serial = SERIAL.lock().await;
    let run = alice_to_bob_and_carol(0, 100).await;
    // 10 % of the packets the relay sends out (a random draw per packet: about 60 in this
    // call, varying run to run; 49 was seen in CI, which the old bound of 50 failed): enough
    // losses for the repairs below to mean something
    assert!(
        run.relay.dropped_out > 20,
        "the relay lost too little: {:?}",
        run.relay
    );
    assert_eq!(run.alice.rtp_dropped_by_loss_knob, 0);
    // Bob and Carol asked the relay, which answered from its buffer (Alice was never asked)
    assert!(run.relay.nacks_in > 0, "{:?}", run.relay);
    assert!(run.relay.retransmissions_out > 0, "{:?}", run.relay);
    assert_eq!(run.relay.nacks_out, 0, "{:?}", run.relay);
}
