//! Envelope rate (token bucket), connections per address and queued envelopes per device, each at
//! the limit and one past it, over real connections.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[macro_use]
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
    // over the limit the server closes the socket at accept, before any handshake
    assert!(tokio_tungstenite::connect_async(server.url())
        .await
        .is_err());
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
    assert!(tokio_tungstenite::connect_async(server.url())
        .await
        .is_err());
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

on_both_backends!(
    queued_envelopes_limit_and_limit_plus_one,
    queued_envelopes_limit
);
async fn queued_envelopes_limit(backend: Backend) {
    let mut cfg = ServerConfig::new(SERVER_ID);
    cfg.limits.envelope_burst = MAX_QUEUED_ENVELOPES_PER_DEVICE as u32 + 10;
    // one sender fills the whole queue here (the per-sender share has its own test)
    cfg.limits.max_queued_per_sender = MAX_QUEUED_ENVELOPES_PER_DEVICE;
    let Some((server, _db)) = start_on(backend, cfg).await else {
        return;
    };
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

/// A connection over the pre-login limit is closed at accept: no TLS handshake is answered
/// (a client that sends nothing sees the close at once, where a counted one would be waited
/// for until the authentication deadline). Logged-in users and other addresses are served.
#[tokio::test]
async fn connections_over_the_limit_are_closed_before_the_tls_handshake() {
    use tokio::io::AsyncReadExt;
    let dir = tempfile::tempdir().unwrap();
    let ca = sotto_testkit::tls::TestCa::new("signaling");
    let (files, _) = ca.write_server_cert(dir.path(), "server");
    let tls = ca.client_tls(dir.path(), "ca");
    let mut cfg = ServerConfig::new(SERVER_ID);
    cfg.tls = Some(files);
    cfg.limits.max_connections_per_addr = 2;
    let server = start(cfg, Arc::new(MemoryStore::new())).await;
    let connect = |user: &str| {
        sotto_server::Client::connect(
            client_cfg(&server, user, 1, identity())
                .register()
                .with_tls(tls.clone()),
        )
    };
    let (alice, _ea) = connect("alice").await.unwrap();
    let (_bob, mut eb) = connect("bob").await.unwrap();

    // the flood, from 127.0.0.2: two silent connections hold the address's slots
    let from_flooder = || async {
        let s = tokio::net::TcpSocket::new_v4().unwrap();
        s.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        s.connect(server.local_addr()).await.unwrap()
    };
    let _held = [from_flooder().await, from_flooder().await];
    let mut third = from_flooder().await;
    let mut buf = [0u8; 16];
    let closed = tokio::time::timeout(Duration::from_secs(3), third.read(&mut buf))
        .await
        .expect("the connection over the limit is closed at once, not left to time out");
    assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");

    // served meanwhile: a new user from another address, and an envelope between users
    let (carol, _ec) = connect("carol").await.unwrap();
    carol.ping().await.unwrap();
    alice.send("bob", 1, 60, b"hi".to_vec()).await.unwrap();
    assert!(eb.next_envelope().await.is_some());
    assert!(server
        .metrics_text()
        .contains("sotto_connections_refused_total 1"));
}

fn refused(e: &Error) -> Option<ErrorCode> {
    match e {
        Error::Refused { code } => Some(*code),
        _ => None,
    }
}

on_both_backends!(
    devices_per_account_limit_and_limit_plus_one,
    devices_per_account
);
async fn devices_per_account(backend: Backend) {
    let mut cfg = ServerConfig::new(SERVER_ID);
    cfg.limits.max_devices_per_account = 3;
    let Some((server, _db)) = start_on(backend, cfg).await else {
        return;
    };
    let (mallory, _em, _) = register(&server, "mallory").await;
    for d in 2..=3 {
        assert!(!mallory.add_device(d, &identity().public()).await.unwrap());
    }
    let e = mallory
        .add_device(4, &identity().public())
        .await
        .unwrap_err();
    assert_eq!(refused(&e), Some(ErrorCode::TooManyDevices), "{e:?}");
    assert_eq!(
        mallory.list_devices("mallory").await.unwrap(),
        vec![1, 2, 3]
    );
    // re-keying a device the account has is not adding one
    assert!(mallory.add_device(3, &identity().public()).await.unwrap());
    // another account is not affected
    let (alice, _ea, _) = register(&server, "alice").await;
    assert!(!alice.add_device(2, &identity().public()).await.unwrap());
}

#[tokio::test]
async fn device_ids_out_of_range_are_refused() {
    use sotto_server::consts::MAX_DEVICE_ID;
    let server = start_default().await;
    let (alice, _ea, _) = register(&server, "alice").await;
    for bad in [0, MAX_DEVICE_ID + 1, u32::MAX] {
        let e = alice
            .add_device(bad, &identity().public())
            .await
            .unwrap_err();
        assert_eq!(
            refused(&e),
            Some(ErrorCode::InvalidDeviceId),
            "{bad}: {e:?}"
        );
    }
    assert!(!alice
        .add_device(MAX_DEVICE_ID, &identity().public())
        .await
        .unwrap());
    // registering under an id out of range is refused by name too
    let key = identity();
    let (mut ws, nonce) = raw_connect(&server.url()).await;
    let sig = sotto_server::auth::sign(&key, SERVER_ID, &nonce, "mallory", u32::MAX);
    raw_send(
        &mut ws,
        1,
        &ClientMessage::Register {
            username: "mallory".into(),
            device_id: u32::MAX,
            identity_key: B64(key.public().serialize().to_vec()),
            signature: B64(sig.to_vec()),
        },
    )
    .await;
    assert_eq!(
        error_code(&raw_recv(&mut ws).await),
        Some(ErrorCode::InvalidDeviceId)
    );
    assert_closed(&mut ws).await;
}

on_both_backends!(sender_share_limit_and_limit_plus_one, sender_share);
/// A stranger fills only their share of an offline user's queue (the next is refused by name),
/// and a call from someone else still gets through.
async fn sender_share(backend: Backend) {
    use sotto_server::consts::MAX_QUEUED_PER_SENDER;
    let Some((server, _db)) = start_on(backend, ServerConfig::new(SERVER_ID)).await else {
        return;
    };
    let (bob, eb, bob_key) = register(&server, "bob").await;
    drop((bob, eb));
    let mut ws = raw_register(&server.url(), "mallory", &identity()).await;
    let junk = ClientMessage::Send {
        to_user: "bob".into(),
        to_device: 1,
        ttl_secs: 86_400,
        ciphertext: B64(vec![0; 64]),
    };
    for i in 0..=MAX_QUEUED_PER_SENDER as u64 {
        raw_send(&mut ws, i, &junk).await;
    }
    for i in 0..MAX_QUEUED_PER_SENDER as u64 {
        match raw_recv(&mut ws).await {
            Some(ServerMessage::Stored { id, .. }) => assert_eq!(id, i),
            other => panic!("{i}: {other:?}"),
        }
    }
    assert_eq!(
        error_code(&raw_recv(&mut ws).await),
        Some(ErrorCode::SenderShareFull)
    );
    let (alice, _ea, _) = register(&server, "alice").await;
    alice.send("bob", 1, 60, b"call".to_vec()).await.unwrap();
    let (_bob, mut ev) = sotto_server::Client::connect(client_cfg(&server, "bob", 1, bob_key))
        .await
        .unwrap();
    let mut from_alice = false;
    for _ in 0..=MAX_QUEUED_PER_SENDER {
        let e = ev.next_envelope().await.unwrap();
        from_alice |= e.from_user == "alice";
    }
    assert!(from_alice);
}

on_both_backends!(
    strangers_together_cannot_fill_a_queue_against_a_caller,
    strangers_together,
    (flavor = "multi_thread", worker_threads = 2)
);
/// Issue 14 (sybil accounts): the per-sender share stops one stranger, but
/// `MAX_QUEUED_ENVELOPES_PER_DEVICE / MAX_QUEUED_PER_SENDER` accounts (16, fewer than one
/// address may register in an hour) filled an offline user's queue, and every call to her then
/// failed with `recipient_queue_full` for a day. With default limits, 16 strangers fill bob's
/// queue; a call message from alice still gets in (the oldest envelope of the largest share
/// makes room), and bob receives it when he comes online. Fails before the fair queue (alice
/// gets `recipient_queue_full`).
async fn strangers_together(backend: Backend) {
    use sotto_server::consts::MAX_QUEUED_PER_SENDER;
    let Some((server, _db)) = start_on(backend, ServerConfig::new(SERVER_ID)).await else {
        return;
    };
    let (bob, eb, bob_key) = register(&server, "bob").await;
    drop((bob, eb));
    let sybils = MAX_QUEUED_ENVELOPES_PER_DEVICE.div_ceil(MAX_QUEUED_PER_SENDER);
    let junk = ClientMessage::Send {
        to_user: "bob".into(),
        to_device: 1,
        ttl_secs: 86_400,
        ciphertext: B64(vec![0; 64]),
    };
    let mut stored = 0;
    for s in 0..sybils {
        let mut ws = raw_register(&server.url(), &format!("sybil{s}"), &identity()).await;
        for i in 0..MAX_QUEUED_PER_SENDER as u64 {
            raw_send(&mut ws, i, &junk).await;
        }
        for _ in 0..MAX_QUEUED_PER_SENDER {
            if let Some(ServerMessage::Stored { .. }) = raw_recv(&mut ws).await {
                stored += 1;
            }
        }
    }
    assert!(
        stored >= MAX_QUEUED_ENVELOPES_PER_DEVICE,
        "the queue is full: {stored}"
    );
    let (alice, _ea, _) = register(&server, "alice").await;
    alice.send("bob", 1, 60, b"call".to_vec()).await.unwrap();
    let (_bob, mut ev) = sotto_server::Client::connect(client_cfg(&server, "bob", 1, bob_key))
        .await
        .unwrap();
    let mut from_alice = false;
    for _ in 0..MAX_QUEUED_ENVELOPES_PER_DEVICE {
        let e = tokio::time::timeout(std::time::Duration::from_secs(10), ev.next_envelope())
            .await
            .unwrap()
            .unwrap();
        if e.from_user == "alice" {
            from_alice = true;
            break;
        }
    }
    assert!(from_alice, "alice's call message was not delivered");
}
