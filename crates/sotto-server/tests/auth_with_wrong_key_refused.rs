//! A device cannot authenticate without its identity private key, nor replay a signature made
//! for another nonce, server, user or device; an idle unauthenticated socket is cut off.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use std::time::Duration;

use common::*;
use sotto_server::protocol::{ClientMessage, ServerMessage, B64};
use sotto_server::{Client, Error, ErrorCode, MemoryStore, ServerConfig};

#[tokio::test]
async fn login_with_another_key_is_refused() {
    let server = start_default().await;
    let (_alice, _e, _) = register(&server, "alice").await;
    let err = Client::connect(client_cfg(&server, "alice", 1, identity()))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Refused {
                code: ErrorCode::AuthFailed
            }
        ),
        "{err:?}"
    );
    assert!(server
        .metrics_text()
        .contains("sotto_auth_failures_total 1"));
}

#[tokio::test]
async fn signatures_over_the_wrong_context_are_refused() {
    let server = start_default().await;
    let key = identity();
    let mut ws = raw_register(&server.url(), "alice", &key).await;
    ws.close(None).await.unwrap();

    // Each row signs something other than this connection's exact auth message.
    type Signer<'a> = Box<dyn Fn(&[u8]) -> [u8; 64] + 'a>;
    let cases: Vec<Signer> = vec![
        Box::new(|_n: &[u8]| sotto_server::auth::sign(&key, SERVER_ID, b"stale nonce", "alice", 1)),
        Box::new(|n: &[u8]| sotto_server::auth::sign(&key, "other.server", n, "alice", 1)),
        Box::new(|n: &[u8]| sotto_server::auth::sign(&key, SERVER_ID, n, "alice", 2)),
        Box::new(|n: &[u8]| sotto_server::auth::sign(&key, SERVER_ID, n, "alicf", 1)),
        Box::new(|_n: &[u8]| [0u8; 64]),
    ];
    for sign in cases {
        let (mut ws, nonce) = raw_connect(&server.url()).await;
        let sig = sign(&nonce);
        raw_send(
            &mut ws,
            1,
            &ClientMessage::Login {
                username: "alice".into(),
                device_id: 1,
                signature: B64(sig.to_vec()),
            },
        )
        .await;
        assert_eq!(
            error_code(&raw_recv(&mut ws).await),
            Some(ErrorCode::AuthFailed)
        );
        assert_closed(&mut ws).await;
    }
    // The right signature still works (the refusals above were not a broken server).
    let (mut ws, nonce) = raw_connect(&server.url()).await;
    let sig = sotto_server::auth::sign(&key, SERVER_ID, &nonce, "alice", 1);
    raw_send(
        &mut ws,
        1,
        &ClientMessage::Login {
            username: "alice".into(),
            device_id: 1,
            signature: B64(sig.to_vec()),
        },
    )
    .await;
    assert!(matches!(
        raw_recv(&mut ws).await,
        Some(ServerMessage::Authenticated { .. })
    ));
}

#[tokio::test]
async fn requests_before_auth_are_refused() {
    let server = start_default().await;
    let (mut ws, _) = raw_connect(&server.url()).await;
    raw_send(
        &mut ws,
        4,
        &ClientMessage::FetchBundle {
            username: "bob".into(),
            device_id: 1,
        },
    )
    .await;
    let r = raw_recv(&mut ws).await;
    assert_eq!(error_code(&r), Some(ErrorCode::NotAuthenticated));
    raw_send(&mut ws, 5, &ClientMessage::Ping).await;
    assert!(matches!(
        raw_recv(&mut ws).await,
        Some(ServerMessage::Pong { id: 5 })
    ));
}

#[tokio::test]
async fn auth_timeout_limit_and_past_it() {
    let mut cfg = ServerConfig::new(SERVER_ID);
    cfg.limits.auth_timeout = Duration::from_millis(400);
    let server = start(cfg, std::sync::Arc::new(MemoryStore::new())).await;
    // Authenticating inside the limit works.
    let key = identity();
    let (mut ws, nonce) = raw_connect(&server.url()).await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    let sig = sotto_server::auth::sign(&key, SERVER_ID, &nonce, "alice", 1);
    raw_send(
        &mut ws,
        1,
        &ClientMessage::Register {
            username: "alice".into(),
            device_id: 1,
            identity_key: B64(key.public().serialize().to_vec()),
            signature: B64(sig.to_vec()),
        },
    )
    .await;
    assert!(matches!(
        raw_recv(&mut ws).await,
        Some(ServerMessage::Authenticated { .. })
    ));
    // ...and an authenticated connection outlives the auth timeout.
    tokio::time::sleep(Duration::from_millis(500)).await;
    raw_send(&mut ws, 2, &ClientMessage::Ping).await;
    assert!(matches!(
        raw_recv(&mut ws).await,
        Some(ServerMessage::Pong { id: 2 })
    ));

    // Saying nothing past the limit gets `auth_timeout` and a close.
    let (mut idle, _) = raw_connect(&server.url()).await;
    let t = std::time::Instant::now();
    assert_eq!(
        error_code(&raw_recv(&mut idle).await),
        Some(ErrorCode::AuthTimeout)
    );
    assert!(t.elapsed() >= Duration::from_millis(300));
    assert_closed(&mut idle).await;
}
