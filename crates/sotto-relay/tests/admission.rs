#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Joining the real relay: what it refuses, with which code and words on the wire, before and
//! after negotiating. Participants answer with plain webrtc-rs peers on loopback (admission
//! needs the answer, not a connection) or speak raw JSON over the WebSocket.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use sotto_relay::client::{join, ClientTls, JoinError, RoomHandle};
use sotto_relay::consts::MAX_ROOM_SIZE;
use sotto_relay::protocol::{decode_server, ErrorCode, ServerMsg};
use sotto_relay::{serve, RelayConfig};
use sotto_testkit::plain::PlainPeer;
use tokio::sync::Barrier;
use tokio_tungstenite::tungstenite::Message;

/// A peer that answers the relay's offer (receiving only); kept open while the test runs.
type Answerer = PlainPeer;

/// Joins `room` as `name`, answering with `peer`.
async fn join_with(
    url: &str,
    room: &str,
    name: &str,
    peer: &Answerer,
) -> Result<RoomHandle, JoinError> {
    join(url, &ClientTls::default(), room, name, |offer| {
        peer.answer(offer)
    })
    .await
}

fn refused(r: Result<RoomHandle, JoinError>) -> (ErrorCode, String) {
    match r {
        Err(JoinError::Refused { code, message }) => (code, message),
        Err(e) => panic!("not refused: {e}"),
        Ok(_) => panic!("admitted"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_name_and_a_full_room_are_refused_before_the_offer() {
    let relay = serve(RelayConfig::loopback()).await.unwrap();
    let url = relay.url();
    let mut peers = Vec::new();
    let mut handles = Vec::new();
    for i in 0..MAX_ROOM_SIZE {
        let peer = Answerer::new().await;
        handles.push(
            join_with(&url, "full", &format!("p{i}"), &peer)
                .await
                .unwrap(),
        );
        peers.push(peer);
    }
    assert_eq!(relay.members("full").len(), MAX_ROOM_SIZE);
    let no_offer = |_offer: String| async { Err::<String, _>("an offer was made") };

    let taken = join(&url, &ClientTls::default(), "full", "p0", no_offer).await;
    let (code, message) = refused(taken);
    assert_eq!(code, ErrorCode::NameTaken);
    assert_eq!(message, "participant name in use");
    let full = join(&url, &ClientTls::default(), "full", "late", no_offer).await;
    let shown = full.as_ref().err().map(ToString::to_string);
    assert_eq!(
        shown.as_deref(),
        Some(format!("relay refused: room_full: MAX_ROOM_SIZE ({MAX_ROOM_SIZE})").as_str())
    );
    let (code, message) = refused(full);
    assert_eq!(code, ErrorCode::RoomFull);
    assert_eq!(message, format!("MAX_ROOM_SIZE ({MAX_ROOM_SIZE})"));

    // a leaver frees its place
    handles.pop();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while relay.members("full").len() == MAX_ROOM_SIZE {
        assert!(tokio::time::Instant::now() < deadline, "the leaver stayed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let peer = Answerer::new().await;
    handles.push(join_with(&url, "full", "late", &peer).await.unwrap());
    peers.push(peer);
    for p in &peers {
        let _ = p.pc.close().await;
    }
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_taken_while_negotiating_is_refused_after_the_answer() {
    let relay = serve(RelayConfig::loopback()).await.unwrap();
    let url = relay.url();
    let (a, b) = (Answerer::new().await, Answerer::new().await);
    // both hold their offer, so both passed the first check, until both have one
    let both_offered = Barrier::new(2);
    let (bo, pa, pb) = (&both_offered, &a, &b);
    let tls = ClientTls::default();
    let both = async {
        tokio::join!(
            join(&url, &tls, "race", "bob", |offer| async move {
                bo.wait().await;
                pa.answer(offer).await
            }),
            join(&url, &tls, "race", "bob", |offer| async move {
                bo.wait().await;
                pb.answer(offer).await
            }),
        )
    };
    let (ra, rb) = tokio::time::timeout(Duration::from_secs(60), both)
        .await
        .expect("a join never ended");
    let (admitted, refusal) = match (ra, rb) {
        (Ok(h), r) | (r, Ok(h)) => (h, r),
        (Err(x), Err(y)) => panic!("both refused: {x}; {y}"),
    };
    let (code, message) = refused(refusal);
    assert_eq!(code, ErrorCode::NameTaken);
    assert_eq!(message, "participant name in use");
    assert_eq!(admitted.members, Vec::<String>::new());
    assert_eq!(relay.members("race"), vec!["bob".to_string()]);
    for p in [&a, &b] {
        let _ = p.pc.close().await;
    }
    relay.shutdown().await;
}

type RawWs =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn raw(url: &str) -> RawWs {
    tokio_tungstenite::connect_async(url).await.unwrap().0
}

async fn next_text(ws: &mut RawWs) -> String {
    loop {
        match tokio::time::timeout(Duration::from_secs(20), ws.next())
            .await
            .expect("the relay said nothing")
        {
            Some(Ok(Message::Text(t))) => return t.to_string(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("not a text frame: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anything_but_a_join_then_an_answer_is_a_bad_message_on_the_wire() {
    let relay = serve(RelayConfig::loopback()).await.unwrap();
    let url = relay.url();

    let mut ws = raw(&url).await;
    ws.send(Message::text(r#"{"type":"leave"}"#)).await.unwrap();
    assert_eq!(
        next_text(&mut ws).await,
        r#"{"type":"error","code":"bad_message","message":"expected join"}"#
    );

    let mut ws = raw(&url).await;
    ws.send(Message::binary(vec![1, 2, 3])).await.unwrap();
    assert_eq!(
        next_text(&mut ws).await,
        r#"{"type":"error","code":"bad_message","message":"binary frames are not part of the protocol"}"#
    );

    let mut ws = raw(&url).await;
    ws.send(Message::text(
        r#"{"type":"join","room":"r","participant":"a/b"}"#,
    ))
    .await
    .unwrap();
    assert_eq!(
        next_text(&mut ws).await,
        r#"{"type":"error","code":"bad_message","message":"invalid name (1..=64 of A-Z a-z 0-9 . _ -)"}"#
    );

    let mut ws = raw(&url).await;
    ws.send(Message::text("{")).await.unwrap();
    let t = next_text(&mut ws).await;
    assert!(
        t.starts_with(
            r#"{"type":"error","code":"bad_message","message":"malformed control message: "#
        ),
        "{t}"
    );

    // after the offer: anything but an answer, and an answer that is not SDP
    let join_msg = r#"{"type":"join","room":"r","participant":"alice"}"#;
    let mut ws = raw(&url).await;
    ws.send(Message::text(join_msg)).await.unwrap();
    assert!(matches!(
        decode_server(&next_text(&mut ws).await),
        Ok(ServerMsg::Offer { .. })
    ));
    ws.send(Message::text(r#"{"type":"leave"}"#)).await.unwrap();
    assert_eq!(
        next_text(&mut ws).await,
        r#"{"type":"error","code":"bad_message","message":"expected answer"}"#
    );

    let mut ws = raw(&url).await;
    ws.send(Message::text(join_msg)).await.unwrap();
    assert!(matches!(
        decode_server(&next_text(&mut ws).await),
        Ok(ServerMsg::Offer { .. })
    ));
    ws.send(Message::text(r#"{"type":"answer","sdp":"not sdp"}"#))
        .await
        .unwrap();
    assert!(matches!(
        decode_server(&next_text(&mut ws).await),
        Ok(ServerMsg::Error {
            code: ErrorCode::Webrtc,
            ..
        })
    ));
    assert!(relay.members("r").is_empty());
    relay.shutdown().await;
}
