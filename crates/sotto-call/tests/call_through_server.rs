#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Whole calls between two devices through the real signaling server (SQLite on disk), with
//! sealed setup and SFrame media over real webrtc-rs peers on loopback.

use sotto_call::core::{CallError, CallState};
use sotto_call::state::EndReason;
use std::time::Duration;

use sotto_call::engine::{default_machine, Command, Engine, MediaFactory, Notice, RelayChoice};
use sotto_call::media::IvfSource;
use sotto_call::state::{CallMachine, Role};
use sotto_server::Server;
use sotto_testkit::device::device;
use sotto_testkit::media::loopback_factory;
use sotto_testkit::relay::TestRelay;
use sotto_testkit::server::{server, server_for_relay};

/// The tests in this file each run several real webrtc-rs peers; on a 2-core machine they run
/// one at a time so that timing-sensitive steps (ICE, DTLS) are not starved by each other.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const T: Duration = Duration::from_secs(45);

/// Loopback media, recording what `who` receives in `dir`.
fn media(dir: std::path::PathBuf, who: &'static str) -> MediaFactory {
    loopback_factory(move |c| c.record_prefix = Some(dir.join(format!("{who}-received"))))
}

/// `who`'s engine, peer to peer.
async fn engine(
    srv: &Server,
    dir: &std::path::Path,
    who: &'static str,
    machine: fn(Role) -> CallMachine,
) -> Engine {
    sotto_testkit::device::engine(
        &srv.url(),
        who,
        media(dir.to_path_buf(), who),
        machine,
        None,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_connects_mutes_switches_rotates_and_hangs_up() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let srv = server(dir.path()).await;
    let alice = engine(&srv, dir.path(), "alice", default_machine).await;
    let mut bob = engine(&srv, dir.path(), "bob", default_machine).await;

    alice.command(Command::Dial("bob".into())).await;
    // bob rings as soon as the offer is decrypted
    loop {
        match tokio::time::timeout(T, bob.notice())
            .await
            .unwrap()
            .unwrap()
        {
            Notice::Incoming(from) => {
                assert_eq!(from, "alice");
                break;
            }
            _ => continue,
        }
    }
    assert_eq!(bob.status().borrow().state, CallState::Incoming);
    assert!(alice.wait_state(CallState::Ringing, T).await.is_some());
    bob.command(Command::Answer).await;
    let a = alice
        .wait_state(CallState::Connected, T)
        .await
        .expect("alice connected");
    let b = bob
        .wait_state(CallState::Connected, T)
        .await
        .expect("bob connected");
    // both see the same safety number
    assert!(a.safety_number.is_some());
    assert_eq!(a.safety_number, b.safety_number);

    tokio::time::sleep(Duration::from_secs(2)).await;
    alice.command(Command::MuteAudio(true)).await;
    alice
        .command(Command::SwitchSource(IvfSource::camera2().unwrap()))
        .await;
    alice.command(Command::RotateKey).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let b = bob.status().borrow().clone();
    assert!(b.peer_audio_muted, "bob was not told alice muted");
    let bm = b.media.clone().unwrap();
    assert_eq!(
        bm.remote_generation,
        Some(1),
        "alice's rotation did not reach bob: {bm:?}"
    );
    assert_eq!(alice.status().borrow().source.as_deref(), Some("camera2"));

    bob.command(Command::Hangup).await;
    let a = alice.wait_state(CallState::Ended, T).await.unwrap();
    let b = bob.wait_state(CallState::Ended, T).await.unwrap();
    assert_eq!(a.end_reason, Some(EndReason::RemoteHangup));
    assert_eq!(b.end_reason, Some(EndReason::LocalHangup));
    let (am, bm) = (a.media.unwrap(), b.media.unwrap());
    assert!(
        bm.video.frames_decrypted > 20 && am.video.frames_decrypted > 20,
        "{am:?} {bm:?}"
    );
    assert_eq!(bm.video.frames_failed + bm.audio.frames_failed, 0, "{bm:?}");
    assert_eq!(am.video.frames_failed + am.audio.frames_failed, 0, "{am:?}");
    assert!(a.setup_time.is_some());
}

/// Waits until `e` has ended one more call than `before`; returns the end reason.
async fn next_end(e: &Engine, before: u32) -> Option<EndReason> {
    let mut rx = e.status();
    tokio::time::timeout(T, async {
        loop {
            {
                let s = rx.borrow_and_update();
                if s.calls_ended > before && s.state == CallState::Ended {
                    return s.end_reason.clone();
                }
            }
            rx.changed().await.unwrap();
        }
    })
    .await
    .expect("call did not end")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_busy_and_ring_timeout() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let srv = server(dir.path()).await;
    fn short(role: Role) -> CallMachine {
        CallMachine::with_timeouts(role, Duration::from_secs(3), Duration::from_secs(10))
    }
    let alice = engine(&srv, dir.path(), "alice", short).await;
    let bob = engine(&srv, dir.path(), "bob", short).await;
    let carol = engine(&srv, dir.path(), "carol", short).await;

    // reject
    alice.command(Command::Dial("bob".into())).await;
    bob.wait_state(CallState::Incoming, T).await.unwrap();
    bob.command(Command::Reject).await;
    let a = alice.wait_state(CallState::Ended, T).await.unwrap();
    assert_eq!(a.end_reason, Some(EndReason::Rejected));

    // ring timeout: nobody answers
    let (na, nb) = (
        alice.status().borrow().calls_ended,
        bob.status().borrow().calls_ended,
    );
    alice.command(Command::Dial("bob".into())).await;
    assert_eq!(next_end(&alice, na).await, Some(EndReason::RingTimeout));
    let b = next_end(&bob, nb).await;
    assert!(
        b == Some(EndReason::RingTimeout) || b == Some(EndReason::RemoteHangup),
        "{b:?}"
    );

    // busy: bob is in a call with alice; carol calls bob
    let nb = bob.status().borrow().calls_ended;
    alice.command(Command::Dial("bob".into())).await;
    bob.wait_state(CallState::Incoming, T).await.unwrap();
    bob.command(Command::Answer).await;
    alice.wait_state(CallState::Connected, T).await.unwrap();
    carol.command(Command::Dial("bob".into())).await;
    assert_eq!(next_end(&carol, 0).await, Some(EndReason::Busy));
    assert_eq!(bob.status().borrow().state, CallState::Connected);
    alice.command(Command::Hangup).await;
    assert_eq!(next_end(&bob, nb).await, Some(EndReason::RemoteHangup));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn glare_ends_in_one_connected_call() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let srv = server(dir.path()).await;
    let alice = engine(&srv, dir.path(), "alice", default_machine).await;
    let bob = engine(&srv, dir.path(), "bob", default_machine).await;
    alice.command(Command::Dial("bob".into())).await;
    bob.command(Command::Dial("alice".into())).await;
    let a = alice
        .wait_state(CallState::Connected, T)
        .await
        .expect("alice connected after glare");
    let b = bob
        .wait_state(CallState::Connected, T)
        .await
        .expect("bob connected after glare");
    assert_eq!(a.peer.as_deref(), Some("bob"));
    assert_eq!(b.peer.as_deref(), Some("alice"));
    alice.command(Command::Hangup).await;
    bob.wait_state(CallState::Ended, T).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_through_the_relay_connects_and_the_relay_sees_only_ciphertext() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let capture = dir.path().join("capture");
    let relay = TestRelay::start_with(|rc| rc.capture_dir = Some(capture)).await;
    let srv = server_for_relay(dir.path(), &relay).await;
    let mk = |who: &'static str| {
        let d = dir.path().to_path_buf();
        let url = relay.url();
        let srv_url = srv.url();
        async move {
            let (dev, events) = device(&srv_url, who).await;
            Engine::spawn_with_relay(
                dev,
                events,
                media(d, who),
                default_machine,
                Some(RelayChoice::Url(url)),
            )
        }
    };
    let alice = mk("alice").await;
    let bob = mk("bob").await;
    alice.command(Command::Dial("bob".into())).await;
    bob.wait_state(CallState::Incoming, T).await.unwrap();
    bob.command(Command::Answer).await;
    alice
        .wait_state(CallState::Connected, T)
        .await
        .expect("alice connected via relay");
    bob.wait_state(CallState::Connected, T)
        .await
        .expect("bob connected via relay");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (pin, pout, _) = relay.stats();
    assert!(pin > 100 && pout > 100, "relay forwarded {pout} of {pin}");
    alice.command(Command::Hangup).await;
    let a = alice.wait_state(CallState::Ended, T).await.unwrap();
    let b = bob.wait_state(CallState::Ended, T).await.unwrap();
    let (am, bm) = (a.media.unwrap(), b.media.unwrap());
    assert!(
        bm.video.frames_decrypted > 10 && am.audio.frames_decrypted > 30,
        "{am:?} {bm:?}"
    );
    assert_eq!(
        am.video.frames_failed
            + bm.video.frames_failed
            + am.audio.frames_failed
            + bm.audio.frames_failed,
        0
    );
    relay.flush_capture();
    let recs = sotto_relay::capture::parse(
        &std::fs::read(dir.path().join("capture/capture.bin")).unwrap(),
    )
    .unwrap();
    let frames = sotto_relay::capture::frames(&recs);
    assert!(frames.len() > 50);
    for f in &frames {
        let codec = if f.kind == sotto_relay::capture::Kind::Video {
            sotto_frame::Codec::Vp8
        } else {
            sotto_frame::Codec::Opus
        };
        // a whole RFC 9605 frame: the codec's clear bytes, a header, at least a tag of ciphertext
        let suite = sotto_call::media::MediaConfig::loopback(1).unwrap().suite;
        codec.split(suite, &f.frame).unwrap();
    }
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_third_member_joins_and_leaves_keys_ratchet_then_rotate() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let relay = TestRelay::start().await;
    let srv = server_for_relay(dir.path(), &relay).await;
    let mut engines = Vec::new();
    for who in ["alice", "bob", "carol"] {
        let (dev, events) = device(&srv.url(), who).await;
        engines.push(Engine::spawn_with_relay(
            dev,
            events,
            media(dir.path().to_path_buf(), who),
            default_machine,
            Some(RelayChoice::Url(relay.url())),
        ));
    }
    let carol = engines.pop().unwrap();
    let bob = engines.pop().unwrap();
    let alice = engines.pop().unwrap();
    alice.command(Command::Dial("bob".into())).await;
    bob.wait_state(CallState::Incoming, T).await.unwrap();
    bob.command(Command::Answer).await;
    alice.wait_state(CallState::Connected, T).await.unwrap();
    bob.wait_state(CallState::Connected, T).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;

    alice.command(Command::Invite("carol".into())).await;
    carol
        .wait_state(CallState::Incoming, T)
        .await
        .expect("carol rings");
    carol.command(Command::Answer).await;
    carol
        .wait_state(CallState::Connected, T)
        .await
        .expect("carol connected");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let c = carol.status().borrow().media.clone().unwrap();
    // carol decrypts both alice and bob (two senders): more than one stream's worth of frames
    assert!(c.video.frames_decrypted > 30, "{c:?}");
    assert_eq!(c.video.frames_failed + c.audio.frames_failed, 0, "{c:?}");
    let b_before = bob.status().borrow().media.clone().unwrap();
    assert_eq!(
        b_before.video.frames_failed + b_before.audio.frames_failed,
        0,
        "{b_before:?}"
    );

    carol.command(Command::Hangup).await;
    carol.wait_state(CallState::Ended, T).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let a = alice.status().borrow().clone();
    let b = bob.status().borrow().clone();
    assert_eq!(
        a.state,
        CallState::Connected,
        "alice stays in the call after carol leaves"
    );
    assert_eq!(b.state, CallState::Connected);
    let (am, bm) = (a.media.unwrap(), b.media.unwrap());
    assert_eq!(
        am.local_generation, 1,
        "alice rotated after carol left: {am:?}"
    );
    assert_eq!(
        bm.local_generation, 1,
        "bob rotated after carol left: {bm:?}"
    );
    assert_eq!(am.remote_generation, Some(1));
    assert_eq!(am.video.frames_failed + am.audio.frames_failed, 0, "{am:?}");
    assert_eq!(bm.video.frames_failed + bm.audio.frames_failed, 0, "{bm:?}");
    alice.command(Command::Hangup).await;
    bob.wait_state(CallState::Ended, T).await.unwrap();
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_relay_without_a_usable_turn_server_fails_with_a_typed_reason() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let srv = server(dir.path()).await;
    // nothing listens on this TURN address: relay-only ICE can gather no relay candidate
    let dead_turn = {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap().port()
    };
    let factory = loopback_factory(move |c| {
        c.relay_only = true;
        c.ice_servers = vec![sotto_call::media::IceServer {
            urls: vec![format!("turn:127.0.0.1:{dead_turn}?transport=udp")],
            username: "1:alice".into(),
            credential: "x".into(),
        }];
    });
    fn quick_connect(role: Role) -> CallMachine {
        CallMachine::with_timeouts(role, Duration::from_secs(30), Duration::from_secs(8))
    }
    let (dev, events) = device(&srv.url(), "alice").await;
    let alice = Engine::spawn(dev, events, factory, quick_connect);
    // bob keeps the default (longer) connect timeout: the caller's own typed reason must show
    let bob = engine(&srv, dir.path(), "bob", default_machine).await;
    let t0 = std::time::Instant::now();
    alice.command(Command::Dial("bob".into())).await;
    // the callee rings as soon as the offer is decrypted: ICE gathering (stuck on a dead TURN
    // server) is not waited for; candidates trickle afterwards
    bob.wait_state(CallState::Incoming, T).await.unwrap();
    let rang_after = t0.elapsed();
    assert!(
        rang_after < Duration::from_secs(3),
        "ringing waited {rang_after:?}"
    );
    bob.command(Command::Answer).await;
    let a = alice
        .wait_state(CallState::Ended, T)
        .await
        .expect("the caller must not hang silently");
    let why = a.end_reason;
    assert!(
        why == Some(EndReason::Failed(CallError::NoRelayCandidate.to_string()))
            || why == Some(EndReason::ConnectTimeout),
        "{why:?}"
    );
    bob.wait_state(CallState::Ended, T)
        .await
        .expect("bob is told the call ended");
}
