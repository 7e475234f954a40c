//! Garbage gets a typed `malformed` error and the connection survives (up to
//! MAX_MALFORMED_FRAMES); a frame of MAX_FRAME_BYTES is accepted and one byte more gets
//! `frame_too_large` and a close; nothing panics the server.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::*;
use futures_util::SinkExt;
use sotto_server::consts::{MAX_FRAME_BYTES, MAX_MALFORMED_FRAMES, WS_HARD_MAX_FACTOR};
use sotto_server::protocol::{ClientMessage, ServerMessage};
use sotto_server::ErrorCode;
use tokio_tungstenite::tungstenite::Message;

async fn authed(server: &sotto_server::Server, user: &str) -> RawWs {
    raw_register(&server.url(), user, &identity()).await
}

#[tokio::test]
async fn malformed_frames_get_typed_errors_and_the_connection_survives() {
    let server = start_default().await;
    let mut ws = authed(&server, "alice").await;
    let cases: &[(&str, ErrorCode)] = &[
        ("not json", ErrorCode::Malformed),
        ("{}", ErrorCode::Malformed),
        (
            r#"{"v":1,"id":3,"type":"launch_missiles"}"#,
            ErrorCode::Malformed,
        ),
        (
            r#"{"v":1,"id":4,"type":"send","to_user":"bob"}"#,
            ErrorCode::Malformed,
        ),
        (
            r#"{"v":1,"id":5,"type":"ack","envelope_id":"x"}"#,
            ErrorCode::Malformed,
        ),
        (
            r#"{"v":2,"id":6,"type":"ping"}"#,
            ErrorCode::UnsupportedVersion,
        ),
        (r#"{"v":"1","id":7,"type":"ping"}"#, ErrorCode::Malformed),
        (
            r#"{"v":1,"id":8,"type":"send","to_user":"bob","to_device":1,"ttl_secs":60,"ciphertext":"!"}"#,
            ErrorCode::Malformed,
        ),
    ];
    for (text, code) in cases {
        ws.send(Message::text(*text)).await.unwrap();
        let r = raw_recv(&mut ws).await;
        assert_eq!(error_code(&r), Some(*code), "{text}");
    }
    ws.send(Message::binary(vec![0u8, 1, 2])).await.unwrap();
    assert_eq!(
        error_code(&raw_recv(&mut ws).await),
        Some(ErrorCode::Malformed)
    );
    // The request id is echoed when it could be read.
    let Some(ServerMessage::Error { id, .. }) = ({
        ws.send(Message::text(r#"{"v":1,"id":42,"type":"nope"}"#))
            .await
            .unwrap();
        raw_recv(&mut ws).await
    }) else {
        panic!()
    };
    assert_eq!(id, Some(42));
    raw_send(&mut ws, 9, &ClientMessage::Ping).await;
    assert!(matches!(
        raw_recv(&mut ws).await,
        Some(ServerMessage::Pong { id: 9 })
    ));
    // Unknown fields are ignored (forward compatibility within a version).
    ws.send(Message::text(
        r#"{"v":1,"id":10,"type":"ping","future":true}"#,
    ))
    .await
    .unwrap();
    assert!(matches!(
        raw_recv(&mut ws).await,
        Some(ServerMessage::Pong { id: 10 })
    ));
}

#[tokio::test]
async fn malformed_limit_and_limit_plus_one() {
    let server = start_default().await;
    let mut ws = authed(&server, "alice").await;
    for _ in 0..MAX_MALFORMED_FRAMES - 1 {
        ws.send(Message::text("x")).await.unwrap();
        assert_eq!(
            error_code(&raw_recv(&mut ws).await),
            Some(ErrorCode::Malformed)
        );
    }
    raw_send(&mut ws, 1, &ClientMessage::Ping).await;
    assert!(matches!(
        raw_recv(&mut ws).await,
        Some(ServerMessage::Pong { .. })
    ));
    ws.send(Message::text("x")).await.unwrap();
    assert_eq!(
        error_code(&raw_recv(&mut ws).await),
        Some(ErrorCode::Malformed)
    );
    assert_closed(&mut ws).await;
}

fn padded_send(len: usize) -> String {
    let mut s = String::from(
        r#"{"v":1,"id":1,"type":"send","to_user":"bob","to_device":1,"ttl_secs":60,"ciphertext":"AAAA"}"#,
    );
    while s.len() < len {
        s.push(' ');
    }
    s
}

#[tokio::test]
async fn frame_size_limit_and_limit_plus_one() {
    let server = start_default().await;
    let _bob = authed(&server, "bob").await;
    let mut ws = authed(&server, "alice").await;
    let at = padded_send(MAX_FRAME_BYTES);
    assert_eq!(at.len(), MAX_FRAME_BYTES);
    ws.send(Message::text(at)).await.unwrap();
    assert!(matches!(
        raw_recv(&mut ws).await,
        Some(ServerMessage::Stored { .. })
    ));

    ws.send(Message::text(padded_send(MAX_FRAME_BYTES + 1)))
        .await
        .unwrap();
    assert_eq!(
        error_code(&raw_recv(&mut ws).await),
        Some(ErrorCode::FrameTooLarge)
    );
    assert_closed(&mut ws).await;
    assert!(server
        .metrics_text()
        .contains("code=\"frame_too_large\"} 1"));
}

#[tokio::test]
async fn oversized_frames_refused_before_auth_and_past_the_socket_cap() {
    let server = start_default().await;
    let (mut ws, _) = raw_connect(&server.url()).await;
    ws.send(Message::text(padded_send(MAX_FRAME_BYTES + 1)))
        .await
        .unwrap();
    assert_eq!(
        error_code(&raw_recv(&mut ws).await),
        Some(ErrorCode::FrameTooLarge)
    );
    assert_closed(&mut ws).await;

    // Far past the WebSocket layer's own cap: refused (typed when the socket allows), closed.
    let mut ws = authed(&server, "carol").await;
    let _ = ws
        .send(Message::binary(vec![
            b' ';
            MAX_FRAME_BYTES * WS_HARD_MAX_FACTOR
                + 1
        ]))
        .await;
    let r = raw_recv(&mut ws).await;
    assert!(
        r.is_none() || error_code(&r) == Some(ErrorCode::FrameTooLarge),
        "{r:?}"
    );
    assert_closed(&mut ws).await;
    // The server is fine.
    let mut ok = authed(&server, "dave").await;
    raw_send(&mut ok, 1, &ClientMessage::Ping).await;
    assert!(matches!(
        raw_recv(&mut ok).await,
        Some(ServerMessage::Pong { .. })
    ));
}
