//! `node_killed_mid_call_loses_nothing`: three `sotto-server` processes share one PostgreSQL
//! and one NATS. Bob (in a call with alice) and frank (receiving a stream of envelopes) are
//! signed in on node 1, which is SIGKILLed mid-call.
//!
//! How a device finds another node: its client is given the cluster's URLs (a comma-separated
//! list, see `sotto_server::client`), and a lost connection is re-established at the next one —
//! here node 2. The test does not tell the client anything after the kill.
//!
//! What it proves:
//! * every envelope the senders were told `stored` — before, during and after the kill — is
//!   delivered to frank after he moves to node 2 (at least once; he de-duplicates by id), and
//!   the ones he acknowledged before the kill are not delivered again;
//! * the call goes on: media runs peer to peer and never touched the signaling node, so the
//!   engines keep decrypting frames while bob is reconnecting; the call's signaling resumes on
//!   node 2 (alice's key rotation, sent while bob may still be reconnecting, is stored on node 0
//!   and reaches bob; bob's hang-up reaches alice). It does not end and redial: nothing in the
//!   call depends on which node carries its messages, so there is nothing to redo.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::time::Duration;

use sotto_call::core::CallState;
use sotto_call::engine::{default_machine, Command};
use sotto_call::state::EndReason;
use sotto_ratchet::IdentityKeyPair;
use sotto_server::{Client, ClientConfig, Events, ServerConfig};
use sotto_testkit::cluster::{Cluster, NodeProcess};
use sotto_testkit::device::engine;
use sotto_testkit::media::loopback_factory;
use sotto_testkit::server::SERVER_ID;

const BIN: &str = env!("CARGO_BIN_EXE_sotto-server");
const T: Duration = Duration::from_secs(45);
/// Envelopes erin sends before the kill, and again after it.
const BATCH: u8 = 20;

async fn plain_client(urls: &str, user: &str) -> (Client, Events) {
    let id = IdentityKeyPair::generate(&mut rand::thread_rng());
    let mut c = ClientConfig::new(urls, SERVER_ID, user, 1, id).register();
    c.backoff_min = Duration::from_millis(50);
    c.backoff_max = Duration::from_millis(500);
    c.request_timeout = Duration::from_secs(10);
    Client::connect(c).await.unwrap()
}

/// Waits (at most [`T`]) until `e`'s call has decrypted more than `n` video frames; how many.
async fn video_frames_after(e: &sotto_call::engine::Engine, n: u64) -> u64 {
    let t0 = std::time::Instant::now();
    loop {
        let m = e.status().borrow().media.clone();
        if let Some(f) = m.map(|m| m.video.frames_decrypted).filter(|f| *f > n) {
            return f;
        }
        assert!(t0.elapsed() < T, "no video frames past {n}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sends `n` envelopes from `from` to frank; the ids the server acknowledged as stored.
async fn send_batch(from: &Client, tag: u8, n: u8) -> Vec<u64> {
    let mut ids = Vec::new();
    for i in 0..n {
        ids.push(from.send("frank", 1, 600, vec![tag, i]).await.unwrap());
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_killed_mid_call_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let Some(cluster) = Cluster::start(dir.path(), 0, |_| ServerConfig::new(SERVER_ID)).await
    else {
        return;
    };
    let args = cluster.node_args();
    let n0 = NodeProcess::spawn(BIN, &args);
    let mut n1 = NodeProcess::spawn(BIN, &args);
    let n2 = NodeProcess::spawn(BIN, &args);
    let on_1_then_2 = format!("{},{}", n1.url, n2.url);

    let media = || loopback_factory(|_| {});
    let alice = engine(&n0.url, "alice", media(), default_machine, None).await;
    let bob = engine(&on_1_then_2, "bob", media(), default_machine, None).await;
    let (erin, _erin_events) = plain_client(&n0.url, "erin").await;
    let (frank, mut frank_events) = plain_client(&on_1_then_2, "frank").await;

    alice.command(Command::Dial("bob".into())).await;
    bob.wait_state(CallState::Incoming, T)
        .await
        .expect("bob rings");
    bob.command(Command::Answer).await;
    alice.wait_state(CallState::Connected, T).await.unwrap();
    bob.wait_state(CallState::Connected, T).await.unwrap();

    // before the kill: frank reads the first batch and acknowledges half of it
    let mut stored = send_batch(&erin, 1, BATCH).await;
    let mut acked = BTreeSet::new();
    for i in 0..usize::from(BATCH) {
        let e = tokio::time::timeout(T, frank_events.next_envelope())
            .await
            .expect("delivered before the kill")
            .unwrap();
        if i % 2 == 0 {
            frank.ack(e.envelope_id).await.unwrap();
            acked.insert(e.envelope_id);
        }
    }
    let frames_before = video_frames_after(&bob, 0).await;

    tokio::task::block_in_place(|| n1.kill());
    // while frank and bob move to node 2: stored on node 0 all the same
    stored.extend(send_batch(&erin, 2, BATCH).await);
    alice.command(Command::RotateKey).await;

    // frank gets every stored envelope he did not acknowledge, none he did
    let want: BTreeSet<u64> = stored
        .iter()
        .copied()
        .filter(|id| !acked.contains(id))
        .collect();
    let mut got = BTreeSet::new();
    while !want.is_subset(&got) {
        let e = tokio::time::timeout(T, frank_events.next_envelope())
            .await
            .unwrap_or_else(|_| panic!("missing after the kill: {:?}", want.difference(&got)))
            .unwrap();
        assert!(
            !acked.contains(&e.envelope_id),
            "{} was acknowledged before the kill",
            e.envelope_id
        );
        got.insert(e.envelope_id);
        frank.ack(e.envelope_id).await.unwrap();
    }

    // the call went on: media never stopped, the rotation reached bob through node 2
    video_frames_after(&bob, frames_before).await;
    let t0 = std::time::Instant::now();
    loop {
        let m = bob.status().borrow().media.clone().unwrap();
        if m.remote_generation == Some(1) {
            break;
        }
        assert!(
            t0.elapsed() < T,
            "alice's rotation never reached bob: {m:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(alice.status().borrow().state, CallState::Connected);
    assert_eq!(bob.status().borrow().state, CallState::Connected);
    bob.command(Command::Hangup).await;
    let a = alice.wait_state(CallState::Ended, T).await.unwrap();
    assert_eq!(a.end_reason, Some(EndReason::RemoteHangup));
    let m = a.media.unwrap();
    assert_eq!(m.video.frames_failed + m.audio.frames_failed, 0, "{m:?}");
    drop((n0, n2));
}
