//! Envelopes for an offline device wait on the server and arrive, in order, when it connects;
//! anything delivered but not acknowledged comes back on the next connection; acknowledged
//! envelopes do not. Online devices get envelopes immediately.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[macro_use]
mod common;
use std::time::Duration;

use common::*;
use sotto_server::{Client, Event};

on_both_backends!(
    offline_envelopes_arrive_after_connect_and_unacked_are_redelivered,
    offline_then_redelivered
);
async fn offline_then_redelivered(backend: Backend) {
    let Some((server, _db)) = start_on(backend, sotto_server::ServerConfig::new(SERVER_ID)).await
    else {
        return;
    };
    let (alice, _ea, _) = register(&server, "alice").await;
    let (bob, bob_events, bob_key) = register(&server, "bob").await;
    drop((bob, bob_events));
    tokio::time::sleep(Duration::from_millis(50)).await;

    let mut sent = Vec::new();
    for i in 0..5u8 {
        sent.push(alice.send("bob", 1, 60, vec![i; 10]).await.unwrap());
    }
    let (bob, mut ev) = Client::connect(client_cfg(&server, "bob", 1, bob_key.clone()))
        .await
        .unwrap();
    let mut got = Vec::new();
    for _ in 0..5 {
        let e = ev.next_envelope().await.unwrap();
        assert_eq!(e.from_user, "alice");
        assert_eq!(e.ciphertext.0, vec![got.len() as u8; 10]);
        got.push(e.envelope_id);
    }
    assert_eq!(got, sent, "in order, ids as acknowledged to the sender");
    for id in &got[..3] {
        bob.ack(*id).await.unwrap();
    }
    drop((bob, ev));
    tokio::time::sleep(Duration::from_millis(50)).await;

    let (_bob, mut ev) = Client::connect(client_cfg(&server, "bob", 1, bob_key))
        .await
        .unwrap();
    let again = vec![
        ev.next_envelope().await.unwrap().envelope_id,
        ev.next_envelope().await.unwrap().envelope_id,
    ];
    assert_eq!(
        again,
        got[3..].to_vec(),
        "only the unacknowledged come back"
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(300), ev.next_envelope())
            .await
            .is_err()
    );
}

#[tokio::test]
async fn online_device_receives_at_once() {
    let server = start_default().await;
    let (alice, _ea, _) = register(&server, "alice").await;
    let (bob, mut ev, _) = register(&server, "bob").await;
    let t = std::time::Instant::now();
    let id = alice.send("bob", 1, 60, b"ring".to_vec()).await.unwrap();
    let e = ev.next_envelope().await.unwrap();
    assert_eq!(e.envelope_id, id);
    assert!(t.elapsed() < Duration::from_secs(1));
    bob.ack(id).await.unwrap();
}

on_both_backends!(
    client_reconnects_by_itself_after_the_server_restarts,
    reconnects_after_restart
);
async fn reconnects_after_restart(backend: Backend) {
    let Some(db) = Db::new(backend) else { return };
    let store = db.store();
    let server = start(sotto_server::ServerConfig::new(SERVER_ID), store.clone()).await;
    let addr = server.local_addr();
    let (alice, _ea, _) = register(&server, "alice").await;
    let (_bob, mut ev, _) = register(&server, "bob").await;
    server.shutdown().await;
    // Bob's client notices and keeps retrying; requests fail fast meanwhile.
    assert_eq!(ev.next().await, Some(Event::Disconnected));
    assert!(alice.ping().await.is_err());
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let _server =
        sotto_server::Server::spawn(sotto_server::ServerConfig::new(SERVER_ID), store, listener)
            .unwrap();
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(5), ev.next())
            .await
            .unwrap(),
        Some(Event::Reconnected)
    );
    // Alice's client reconnected too; her envelope reaches Bob.
    let mut id = None;
    for _ in 0..50 {
        if let Ok(i) = alice.send("bob", 1, 60, b"hi".to_vec()).await {
            id = Some(i);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(ev.next_envelope().await.unwrap().envelope_id, id.unwrap());
}
