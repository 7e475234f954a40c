//! Three signaling nodes on loopback sharing one PostgreSQL and one NATS; devices signed in on
//! different nodes call each other through the real call engine (sealed setup, SFrame media
//! over webrtc-rs): peer to peer, and through the sotto-relays the cluster places the calls at
//! (two relays, one call on each), whose tokens the callers' nodes mint. Every call message
//! crosses nodes: stored by the sender's node, rung to the recipient's.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use sotto_call::core::CallState;
use sotto_call::engine::{default_machine, Command, Engine, RelayChoice};
use sotto_call::state::EndReason;
use sotto_server::ServerConfig;
use sotto_testkit::cluster::Cluster;
use sotto_testkit::device::engine;
use sotto_testkit::media::loopback_factory;
use sotto_testkit::relay::TestRelay;
use sotto_testkit::server::{relay_entry, SERVER_ID};

const T: Duration = Duration::from_secs(45);

/// Calls `callee` from `caller`, checks media flows both ways with no frame failing, hangs up.
async fn call_and_hang_up(caller: &Engine, callee: &Engine, name: &str) {
    caller.command(Command::Dial(name.into())).await;
    callee
        .wait_state(CallState::Incoming, T)
        .await
        .expect("the callee rings");
    callee.command(Command::Answer).await;
    caller
        .wait_state(CallState::Connected, T)
        .await
        .expect("caller connected");
    callee
        .wait_state(CallState::Connected, T)
        .await
        .expect("callee connected");
    tokio::time::sleep(Duration::from_secs(2)).await;
    caller.command(Command::Hangup).await;
    let a = caller.wait_state(CallState::Ended, T).await.unwrap();
    let b = callee.wait_state(CallState::Ended, T).await.unwrap();
    assert_eq!(a.end_reason, Some(EndReason::LocalHangup));
    assert_eq!(b.end_reason, Some(EndReason::RemoteHangup));
    let (am, bm) = (a.media.unwrap(), b.media.unwrap());
    assert!(
        am.video.frames_decrypted > 10 && bm.video.frames_decrypted > 10,
        "{am:?} {bm:?}"
    );
    assert_eq!(
        am.video.frames_failed
            + am.audio.frames_failed
            + bm.video.frames_failed
            + bm.audio.frames_failed,
        0,
        "{am:?} {bm:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_on_different_nodes_call_each_other_directly_and_through_the_relay() {
    let dir = tempfile::tempdir().unwrap();
    let (r1, r2) = (TestRelay::start().await, TestRelay::start().await);
    let Some(cluster) = Cluster::start(dir.path(), 3, |_| {
        let mut c = ServerConfig::new(SERVER_ID);
        c.relays = vec![relay_entry(&r1), relay_entry(&r2)];
        c
    })
    .await
    else {
        return;
    };
    let media = || loopback_factory(|_| {});

    // peer to peer: alice on node 0 calls bob on node 1
    let alice = engine(&cluster.url(0), "alice", media(), default_machine, None).await;
    let bob = engine(&cluster.url(1), "bob", media(), default_machine, None).await;
    call_and_hang_up(&alice, &bob, "bob").await;
    drop((alice, bob));

    // through a relay the cluster places each call at: carol on node 2 calls dave on node 0
    // (carol's node mints both tokens), then dave calls carol: the second call's room goes to
    // the other relay (the less loaded one)
    let placed = || Some(RelayChoice::Placed);
    let carol = engine(&cluster.url(2), "carol", media(), default_machine, placed()).await;
    let dave = engine(&cluster.url(0), "dave", media(), default_machine, placed()).await;
    call_and_hang_up(&carol, &dave, "dave").await;
    call_and_hang_up(&dave, &carol, "carol").await;
    for r in [&r1, &r2] {
        let (pin, pout, _) = r.stats();
        assert!(
            pin > 100 && pout > 100,
            "each relay forwarded: {pout} of {pin}"
        );
    }
    r1.shutdown().await;
    r2.shutdown().await;
}
