//! Envelope rate (token bucket), connections per address and queued envelopes per device, each at
//! the limit and one past it, over real connections.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use sotto_server::consts::MAX_QUEUED_ENVELOPES_PER_DEVICE;
use sotto_server::protocol::{ClientMessage, ServerMessage, B64};
use sotto_server::{Error, ErrorCode, MemoryStore, ServerConfig};

#[tokio::test]
async fn envelope_burst_limit_and_limit_plus_one() {
    let mut cfg = ServerConfig::new(SERVER_ID);
    cfg.limits.envelopes_per_second = 1;
    cfg.limits.envelope_burst = 20;
    let server = start(cfg, Arc::new(MemoryStore::new())).await;
    let (alice, _ea, _) = register(&server, "alice").await;
    let (_bob, _eb, _) = register(&server, "bob").await;
    for _ in 0..20 {
        alice.send("bob", 1, 60, vec![0]).await.unwrap();
    }
    let e = alice.send("bob", 1, 60, vec![0]).await.unwrap_err();
    assert!(
        matches!(
            e,
            Error::Refused {
                code: ErrorCode::RateLimited
            }
        ),
        "{e:?}"
    );
    // Other requests from the same connection still work once the slow-down passes.
    alice.ping().await.unwrap();
}

#[tokio::test]
async fn connections_per_address_limit_and_limit_plus_one() {
    let mut cfg = ServerConfig::new(SERVER_ID);
    cfg.limits.max_connections_per_addr = 3;
    let server = start(cfg, Arc::new(MemoryStore::new())).await;
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(raw_connect(&server.url()).await.0);
    }
    let (mut ws, _) = tokio_tungstenite::connect_async(server.url())
        .await
        .unwrap();
    assert_eq!(
        error_code(&raw_recv(&mut ws).await),
        Some(ErrorCode::TooManyConnections)
    );
    assert_closed(&mut ws).await;
    // Closing one frees a slot.
    drop(open.pop());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (_ws, _) = raw_connect(&server.url()).await;
}

/// Behind one NAT, many users share an address: the per-address limit counts only connections
/// that have not logged in, so logged-in devices beyond it are fine; the logged-in limit is
/// separate (and refuses by name at its own limit + 1).
#[tokio::test]
async fn a_nats_worth_of_logged_in_devices_is_not_limited_by_the_pre_login_limit() {
    let mut cfg = ServerConfig::new(SERVER_ID);
    cfg.limits.max_connections_per_addr = 2;
    cfg.limits.max_authenticated_per_addr = 5;
    let server = start(cfg, Arc::new(MemoryStore::new())).await;
    let mut devices = Vec::new();
    for i in 0..5 {
        devices.push(register(&server, &format!("user{i}")).await);
    }
    // and the pre-login limit still holds for connections that do not log in
    let mut open = Vec::new();
    for _ in 0..2 {
        open.push(raw_connect(&server.url()).await.0);
    }
    let (mut ws, _) = tokio_tungstenite::connect_async(server.url())
        .await
        .unwrap();
    assert_eq!(
        error_code(&raw_recv(&mut ws).await),
        Some(ErrorCode::TooManyConnections)
    );
    drop(open);
    tokio::time::sleep(Duration::from_millis(100)).await;
    // a sixth logged-in device from the address is refused by name
    let mut ws = raw_register(&server.url(), "user5", &identity()).await;
    assert_eq!(
        error_code(&raw_recv(&mut ws).await),
        Some(ErrorCode::TooManyConnections)
    );
    assert_closed(&mut ws).await;
    drop(devices.pop());
    tokio::time::sleep(Duration::from_millis(100)).await;
    register(&server, "user6").await;
}

#[tokio::test]
async fn queued_envelopes_limit_and_limit_plus_one() {
    let mut cfg = ServerConfig::new(SERVER_ID);
    cfg.limits.envelope_burst = MAX_QUEUED_ENVELOPES_PER_DEVICE as u32 + 10;
    let server = start(cfg, Arc::new(MemoryStore::new())).await;
    let (_bob, _eb, bob_key) = register(&server, "bob").await;
    drop((_bob, _eb));
    let mut ws = raw_register(&server.url(), "alice", &identity()).await;
    // Pipeline the sends, then read the answers.
    for i in 0..=MAX_QUEUED_ENVELOPES_PER_DEVICE as u64 {
        raw_send(
            &mut ws,
            i,
            &ClientMessage::Send {
                to_user: "bob".into(),
                to_device: 1,
                ttl_secs: 60,
                ciphertext: B64(vec![1]),
            },
        )
        .await;
    }
    for i in 0..MAX_QUEUED_ENVELOPES_PER_DEVICE as u64 {
        match raw_recv(&mut ws).await {
            Some(ServerMessage::Stored { id, .. }) => assert_eq!(id, i),
            other => panic!("{i}: {other:?}"),
        }
    }
    assert_eq!(
        error_code(&raw_recv(&mut ws).await),
        Some(ErrorCode::RecipientQueueFull)
    );
    // Once bob drains one, there is room for one more.
    let (bob, mut ev) = sotto_server::Client::connect(client_cfg(&server, "bob", 1, bob_key))
        .await
        .unwrap();
    let first = ev.next_envelope().await.unwrap();
    bob.ack(first.envelope_id).await.unwrap();
    raw_send(
        &mut ws,
        9999,
        &ClientMessage::Send {
            to_user: "bob".into(),
            to_device: 1,
            ttl_secs: 60,
            ciphertext: B64(vec![1]),
        },
    )
    .await;
    assert!(matches!(
        raw_recv(&mut ws).await,
        Some(ServerMessage::Stored { id: 9999, .. })
    ));
}
