//! A recipient that connects while envelopes are pouring in is served from two paths: its backlog
//! read from the store, then envelopes handed over directly after each group commit (and back to
//! store reads whenever its outbound queue is half full). Across the switch-overs it must get
//! every envelope acknowledged to the sender exactly once, in increasing id order.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use sotto_server::protocol::{ClientMessage, ServerMessage};
use sotto_server::{Durability, ServerConfig, SqliteStore};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_envelope_arrives_once_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("s.db"), Durability::Normal).unwrap();
    let mut cfg = ServerConfig::new(SERVER_ID);
    cfg.limits.envelopes_per_second = 1_000_000;
    cfg.limits.envelope_burst = 1_000_000;
    cfg.limits.max_queued_per_device = 100_000;
    // one sender account queues them all
    cfg.limits.max_queued_per_sender = 100_000;
    // A small outbound queue forces many switches between pushes and backlog reads.
    cfg.limits.outbound_queue_frames = 8;
    let server = start(cfg, Arc::new(store)).await;
    let (alice, _ea, _) = register(&server, "alice").await;
    let bob_key = identity();
    drop(raw_register(&server.url(), "bob", &bob_key).await);

    const SENDERS: u32 = 4;
    const PER_SENDER: u32 = 400;
    let acked: Arc<Mutex<BTreeSet<u64>>> = Arc::default();
    let mut tasks = Vec::new();
    for t in 0..SENDERS {
        let (alice, acked) = (alice.clone(), acked.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..PER_SENDER {
                let body = [t.to_be_bytes(), i.to_be_bytes()].concat();
                let id = alice.send("bob", 1, 600, body).await.unwrap();
                acked.lock().unwrap().insert(id);
            }
        }));
    }
    while acked.lock().unwrap().len() < 200 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }

    // Bob logs in mid-stream and acknowledges everything he gets.
    let (mut ws, nonce) = raw_connect(&server.url()).await;
    let sig = sotto_server::auth::sign(&bob_key, SERVER_ID, &nonce, "bob", 1);
    raw_send(
        &mut ws,
        0,
        &ClientMessage::Login {
            username: "bob".into(),
            device_id: 1,
            signature: sotto_server::protocol::B64(sig.to_vec()),
        },
    )
    .await;
    let total = (SENDERS * PER_SENDER) as usize;
    let mut got = Vec::with_capacity(total);
    let mut next_req = 1u64;
    let mut acks = 0;
    while got.len() < total || acks < total {
        match raw_recv(&mut ws).await {
            Some(ServerMessage::Envelope(e)) => {
                got.push(e.envelope_id);
                raw_send(
                    &mut ws,
                    next_req,
                    &ClientMessage::Ack {
                        envelope_id: e.envelope_id,
                    },
                )
                .await;
                next_req += 1;
            }
            Some(ServerMessage::Acked { .. }) => acks += 1,
            Some(ServerMessage::Authenticated { .. }) => {}
            other => panic!("bob got {other:?} after {} envelopes", got.len()),
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert!(
        got.windows(2).all(|w| w[0] < w[1]),
        "ids not strictly increasing (duplicate or reordering)"
    );
    let got: BTreeSet<u64> = got.into_iter().collect();
    assert_eq!(
        got,
        *acked.lock().unwrap(),
        "delivered set = acknowledged set"
    );
    // Nothing left over, nothing more to come.
    drop(ws);
    drop(alice);
    server.shutdown().await;
    let store = SqliteStore::open(&dir.path().join("s.db"), Durability::Normal).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let left =
            sotto_server::Store::queued(&store, &sotto_server::store::DeviceAddr::new("bob", 1))
                .unwrap();
        if left == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{left} envelopes never acked"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
