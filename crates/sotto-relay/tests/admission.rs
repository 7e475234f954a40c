#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Joining the real relay: what it refuses, with which code and words on the wire, before and
//! after negotiating. Participants answer with plain webrtc-rs peers on loopback (admission
//! needs the answer, not a connection) or speak raw JSON over the WebSocket. Tokens come from
//! a real signaling server configured with the relay's secret, or are minted by the test (as
//! the server mints them) when a test needs a bad one.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use sotto_relay::admission::{mint, Claims, RelaySecret, RelayToken};
use sotto_relay::client::{join, ClientTls, JoinError, RoomHandle};
use sotto_relay::consts::{MAX_ROOMS_PER_ADDR, MAX_ROOM_SIZE};
use sotto_relay::protocol::{decode_server, ErrorCode, ServerMsg};
use sotto_testkit::plain::PlainPeer;
use sotto_testkit::relay::{connect_from, mint_token, now_ms, relay_secret, TestRelay};
use tokio::sync::Barrier;
use tokio_tungstenite::tungstenite::Message;

/// A peer that answers the relay's offer (receiving only); kept open while the test runs.
type Answerer = PlainPeer;

/// Joins `room` as `name` with a valid token, answering with `peer`.
async fn join_with(
    relay: &TestRelay,
    room: &str,
    name: &str,
    peer: &Answerer,
) -> Result<RoomHandle, JoinError> {
    let token = relay.token(room, name);
    join(
        &relay.url(),
        &ClientTls::default(),
        room,
        name,
        Some(&token),
        |offer| peer.answer(offer),
    )
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
    let relay = TestRelay::start().await;
    let url = relay.url();
    let mut peers = Vec::new();
    let mut handles = Vec::new();
    for i in 0..MAX_ROOM_SIZE {
        let peer = Answerer::new().await;
        handles.push(
            join_with(&relay, "full", &format!("p{i}"), &peer)
                .await
                .unwrap(),
        );
        peers.push(peer);
    }
    assert_eq!(relay.members("full").len(), MAX_ROOM_SIZE);
    let no_offer = |_offer: String| async { Err::<String, _>("an offer was made") };

    let t = relay.token("full", "p0");
    let taken = join(
        &url,
        &ClientTls::default(),
        "full",
        "p0",
        Some(&t),
        no_offer,
    )
    .await;
    let (code, message) = refused(taken);
    assert_eq!(code, ErrorCode::NameTaken);
    assert_eq!(message, "participant name in use");
    let t = relay.token("full", "late");
    let full = join(
        &url,
        &ClientTls::default(),
        "full",
        "late",
        Some(&t),
        no_offer,
    )
    .await;
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
    handles.push(join_with(&relay, "full", "late", &peer).await.unwrap());
    peers.push(peer);
    for p in &peers {
        let _ = p.pc.close().await;
    }
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_taken_while_negotiating_is_refused_after_the_answer() {
    let relay = TestRelay::start().await;
    let url = relay.url();
    let (a, b) = (Answerer::new().await, Answerer::new().await);
    let (ta, tb) = (relay.token("race", "bob"), relay.token("race", "bob"));
    // both hold their offer, so both passed the first check, until both have one
    let both_offered = Barrier::new(2);
    let (bo, pa, pb) = (&both_offered, &a, &b);
    let tls = ClientTls::default();
    let both = async {
        tokio::join!(
            join(&url, &tls, "race", "bob", Some(&ta), |offer| async move {
                bo.wait().await;
                pa.answer(offer).await
            }),
            join(&url, &tls, "race", "bob", Some(&tb), |offer| async move {
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
    let relay = TestRelay::start().await;
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
    let join_msg = join_json("r", "alice", Some(&relay.token("r", "alice")));
    let join_msg = join_msg.as_str();
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

/// A `join` as JSON text, with `token` if given.
fn join_json(room: &str, participant: &str, token: Option<&RelayToken>) -> String {
    let msg = sotto_relay::protocol::ClientMsg::Join {
        room: room.into(),
        participant: participant.into(),
        token: token.cloned(),
    };
    serde_json::to_string(&msg).unwrap()
}

/// Joins `room` as `name` with `token` (or none) and must be refused before any offer: the
/// relay's code, after checking that it created no state for the room.
async fn refused_code(
    relay: &TestRelay,
    room: &str,
    name: &str,
    token: Option<&RelayToken>,
) -> ErrorCode {
    let rooms_before = relay.members(room);
    let no_offer = |_offer: String| async { Err::<String, _>("an offer was made") };
    let r = join(
        &relay.url(),
        &ClientTls::default(),
        room,
        name,
        token,
        no_offer,
    )
    .await;
    let (code, _) = refused(r);
    assert_eq!(
        relay.members(room),
        rooms_before,
        "no room state for a refused join"
    );
    code
}

/// `text` with one character of its MAC part (the third, dot-separated) changed: still
/// base64url, different bytes.
fn flip_mac(text: &str) -> RelayToken {
    let mac_at = text.rfind('.').unwrap() + 5;
    let mut t: Vec<char> = text.chars().collect();
    t[mac_at] = if t[mac_at] == 'A' { 'B' } else { 'A' };
    RelayToken::from_text(t.into_iter().collect()).unwrap()
}

/// Issue 14: the relay admitted anyone to any room under any name. Now a `join` needs a token
/// the signaling server minted for this relay, room and name, unexpired, and not minted before
/// its holder left the room; each refusal has its own code and happens before the relay
/// creates any state, while a participant with a server-minted token is served by the same
/// relay. (Fails without the change: the relay admitted the tokenless join.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_refuses_a_join_without_a_valid_token() {
    let relay = TestRelay::start().await;
    let dir = tempfile::tempdir().unwrap();
    let server = sotto_testkit::server::server_for_relay(dir.path(), &relay).await;
    let (alice_dev, _alice_events) = sotto_testkit::device::device(&server.url(), "alice").await;
    let room = "c0ffee";
    let url = relay.public_url().to_owned();
    // alice claims the room at the server: her token and bob's
    let grant = alice_dev
        .client()
        .relay_tokens(Some(&url), room, &["alice".into(), "bob".into()])
        .await
        .unwrap()
        .tokens;
    let (alice_t, bob_t) = (grant[0].token.clone(), grant[1].token.clone());

    // a participant with a valid token is served: joined and connected
    let pa = Answerer::new().await;
    let mut alice = join(
        &relay.url(),
        &ClientTls::default(),
        room,
        "alice",
        Some(&alice_t),
        |o| pa.answer(o),
    )
    .await
    .unwrap();
    pa.wait_connected("alice").await;
    assert_eq!(relay.members(room), vec!["alice"]);

    // tokenless
    assert_eq!(
        refused_code(&relay, room, "bob", None).await,
        ErrorCode::TokenMissing
    );
    assert_eq!(
        refused_code(&relay, "fresh", "bob", None).await,
        ErrorCode::TokenMissing
    );
    // malformed
    let junk = RelayToken::from_text("v1.not-a-token".into()).unwrap();
    assert_eq!(
        refused_code(&relay, room, "bob", Some(&junk)).await,
        ErrorCode::TokenMalformed
    );
    // forged: another secret, and bob's token with one MAC byte changed
    let other: RelaySecret = relay_secret();
    let forged = mint_token(&other, &url, room, "bob");
    assert_eq!(
        refused_code(&relay, room, "bob", Some(&forged)).await,
        ErrorCode::TokenForged
    );
    let flipped = flip_mac(bob_t.as_str());
    assert_eq!(
        refused_code(&relay, room, "bob", Some(&flipped)).await,
        ErrorCode::TokenForged
    );
    // expired (well past the allowed clock skew)
    let long_ago = now_ms() - 3_600_000;
    let expired = mint(
        &relay.secret,
        &Claims {
            relay: url.clone(),
            room: room.into(),
            participant: "bob".into(),
            issued_at_ms: long_ago,
            expires_at_ms: long_ago + 60_000,
        },
    )
    .unwrap();
    assert_eq!(
        refused_code(&relay, room, "bob", Some(&expired)).await,
        ErrorCode::TokenExpired
    );
    // for another relay
    let elsewhere = mint_token(&relay.secret, "wss://relay.elsewhere:8443", room, "bob");
    assert_eq!(
        refused_code(&relay, room, "bob", Some(&elsewhere)).await,
        ErrorCode::TokenWrongRelay
    );
    // bob's server-minted token, for another room, and under another name
    assert_eq!(
        refused_code(&relay, "other", "bob", Some(&bob_t)).await,
        ErrorCode::TokenWrongRoom
    );
    assert_eq!(
        refused_code(&relay, room, "mallory", Some(&bob_t)).await,
        ErrorCode::TokenWrongParticipant
    );
    assert!(relay.members("other").is_empty());

    // bob joins with his token, then leaves: his old token does not bring him back
    let pb = Answerer::new().await;
    let mut bob = join(
        &relay.url(),
        &ClientTls::default(),
        room,
        "bob",
        Some(&bob_t),
        |o| pb.answer(o),
    )
    .await
    .unwrap();
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(10), alice.events.recv())
            .await
            .unwrap(),
        Some(ServerMsg::MemberJoined {
            participant: "bob".into()
        })
    );
    bob.leave();
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(10), alice.events.recv())
            .await
            .unwrap(),
        Some(ServerMsg::MemberLeft {
            participant: "bob".into()
        })
    );
    assert_eq!(
        refused_code(&relay, room, "bob", Some(&bob_t)).await,
        ErrorCode::TokenPredatesLeave
    );
    // a member re-invites him: a fresh token admits him. A token minted in the leave's own
    // millisecond predates it (`issued_at_ms <= left_at_ms`); a re-invitation comes later (CI
    // once minted it within that millisecond, right after the refusal above)
    tokio::time::sleep(Duration::from_millis(5)).await;
    let again = alice_dev
        .client()
        .relay_tokens(Some(&url), room, &["bob".into()])
        .await
        .unwrap()
        .tokens;
    let pb2 = Answerer::new().await;
    let _bob = join(
        &relay.url(),
        &ClientTls::default(),
        room,
        "bob",
        Some(&again[0].token),
        |o| pb2.answer(o),
    )
    .await
    .unwrap();
    assert_eq!(relay.members(room), vec!["alice", "bob"]);
    // alice is still served: her connection is up and she hears bob come back
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(10), alice.events.recv())
            .await
            .unwrap(),
        Some(ServerMsg::MemberJoined {
            participant: "bob".into()
        })
    );
    for p in [&pa, &pb, &pb2] {
        let _ = p.pc.close().await;
    }
    relay.shutdown().await;
    server.shutdown().await;
}

/// Sends a valid `join` for `room` as `name` over a connection from loopback address `ip` and
/// returns the relay's first message: an `offer` when admitted so far.
async fn first_answer_from(relay: &TestRelay, ip: [u8; 4], room: &str, name: &str) -> ServerMsg {
    let tcp = connect_from(ip, relay.local_addr()).await;
    let (mut ws, _) = tokio_tungstenite::client_async(relay.url(), tcp)
        .await
        .unwrap();
    let token = relay.token(room, name);
    ws.send(Message::text(join_json(room, name, Some(&token))))
        .await
        .unwrap();
    let text = tokio::time::timeout(Duration::from_secs(20), ws.next())
        .await
        .expect("the relay said nothing");
    match text {
        Some(Ok(Message::Text(t))) => decode_server(&t).unwrap(),
        other => panic!("not a text frame: {other:?}"),
    }
}

/// Issue 14 (sybil accounts): tokens say who may join which room, but accounts can be had for
/// each registration an address is allowed, and each opened relay rooms until `MAX_ROOMS` was
/// full. Rooms opened from one address are now capped at `MAX_ROOMS_PER_ADDR`: the next new
/// room from it is refused before any offer (valid token and all), while joining a room that
/// is already open is not counted, another address still opens rooms, and a room that closes
/// gives its place back. Fails without the cap (the ninth room is admitted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_opens_at_most_max_rooms_per_addr_rooms() {
    let relay = TestRelay::start().await;
    let mut held = Vec::new();
    for i in 0..MAX_ROOMS_PER_ADDR {
        let peer = Answerer::new().await;
        let h = join_with(&relay, &format!("r{i}"), "m", &peer)
            .await
            .unwrap();
        held.push((h, peer));
    }
    let code = refused_code(&relay, "one-more", "m", Some(&relay.token("one-more", "m"))).await;
    assert_eq!(code, ErrorCode::TooManyRoomsFromAddress);
    // joining an open room from the same address is not opening one
    let peer = Answerer::new().await;
    let joined = join_with(&relay, "r0", "friend", &peer).await.unwrap();
    assert_eq!(relay.members("r0").len(), 2);
    // another address opens a room (the relay's offer is the sign it was admitted)
    let first = first_answer_from(&relay, [127, 0, 0, 2], "elsewhere", "bob").await;
    assert!(matches!(first, ServerMsg::Offer { .. }), "{first:?}");
    // a room that closes gives its place back
    drop(joined);
    let (mut h, p) = held.remove(1);
    h.leave();
    drop(p);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !relay.members("r1").is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "r1 never closed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let peer = Answerer::new().await;
    join_with(&relay, "one-more", "m", &peer).await.unwrap();
    relay.shutdown().await;
}
