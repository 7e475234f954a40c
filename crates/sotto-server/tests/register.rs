//! Registration binds a username to an identity key; login, idempotent re-registration, sibling
//! devices, identity changes visible to peers, TURN credentials.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::*;
use sotto_server::client::IdentityStatus;
use sotto_server::protocol::ServerMessage;
use sotto_server::{Client, Error, ErrorCode, MemoryStore, ServerConfig};
use std::sync::Arc;

#[tokio::test]
async fn register_then_login_and_devices() {
    let server = start_default().await;
    let (alice, _ev, id) = register(&server, "alice").await;
    assert_eq!(alice.list_devices("alice").await.unwrap(), vec![1]);
    assert_eq!(
        alice.list_devices("nobody").await.unwrap(),
        Vec::<u32>::new()
    );
    drop(alice);

    // Login with the same key works; register again with the same key is a login too.
    let (a2, _e) = Client::connect(client_cfg(&server, "alice", 1, id.clone()))
        .await
        .unwrap();
    a2.ping().await.unwrap();
    let (a3, _e) = Client::connect(client_cfg(&server, "alice", 1, id.clone()).register())
        .await
        .unwrap();
    a3.ping().await.unwrap();

    // Someone else cannot register a second device on alice's account...
    let err = Client::connect(client_cfg(&server, "alice", 2, identity()).register())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Refused {
                code: ErrorCode::UsernameTaken
            }
        ),
        "{err:?}"
    );
    // ...or take over device 1 with another key.
    let err = Client::connect(client_cfg(&server, "alice", 1, identity()).register())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Refused {
                code: ErrorCode::IdentityMismatch
            }
        ),
        "{err:?}"
    );

    // Alice herself adds device 2 from device 1; device 2 then logs in.
    let phone = identity();
    let phone_pub = phone.public();
    assert!(!a3.add_device(2, &phone.public()).await.unwrap());
    let (d2, _e) = Client::connect(client_cfg(&server, "alice", 2, phone))
        .await
        .unwrap();
    d2.ping().await.unwrap();
    assert_eq!(a3.list_devices("alice").await.unwrap(), vec![1, 2]);
    // the listing names each device's key (what a caller with a session compares its pin to),
    // and follows a re-key
    let keys = d2.device_identities("alice").await.unwrap();
    assert_eq!(
        keys,
        vec![
            (1, id.public().serialize().to_vec()),
            (2, phone_pub.serialize().to_vec())
        ]
    );
    let rekey = identity();
    assert!(d2.add_device(1, &rekey.public()).await.unwrap());
    let keys = a3.device_identities("alice").await;
    let keys = match keys {
        Ok(k) => k,
        // device 1's connection may be closed by its own re-key: ask from device 2
        Err(_) => d2.device_identities("alice").await.unwrap(),
    };
    assert_eq!(keys[0], (1, rekey.public().serialize().to_vec()));
    assert!(d2.device_identities("nobody").await.unwrap().is_empty());
}

#[tokio::test]
async fn unknown_device_cannot_log_in() {
    let server = start_default().await;
    let err = Client::connect(client_cfg(&server, "ghost", 1, identity()))
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
}

#[tokio::test]
async fn changed_identity_is_visible_to_peers() {
    let server = start_default().await;
    let (alice, _ea, _) = register(&server, "alice").await;
    let (bob, _eb, _) = register(&server, "bob").await;
    alice.add_device(2, &identity().public()).await.unwrap();
    let (a2_key, a2_key_new) = (identity(), identity());
    alice.add_device(2, &a2_key.public()).await.unwrap();
    let (spk, kpk) = signed_prekeys(&a2_key);
    let (a2, _e) = Client::connect(client_cfg(&server, "alice", 2, a2_key))
        .await
        .unwrap();
    a2.publish_prekeys(Some(spk), Some(kpk), vec![])
        .await
        .unwrap();
    let first = bob.fetch_bundle("alice", 2).await.unwrap();
    assert_eq!(first.identity, IdentityStatus::New);
    assert_eq!(
        bob.fetch_bundle("alice", 2).await.unwrap().identity,
        IdentityStatus::Unchanged
    );

    // Device 2 is re-keyed (e.g. reinstalled): its old session is kicked, prekeys dropped.
    assert!(alice.add_device(2, &a2_key_new.public()).await.unwrap());
    let (a2, _e) = Client::connect(client_cfg(&server, "alice", 2, a2_key_new.clone()))
        .await
        .unwrap();
    assert!(matches!(
        bob.fetch_bundle("alice", 2).await.unwrap_err(),
        Error::Refused {
            code: ErrorCode::NoPrekeys
        }
    ));
    let (spk, kpk) = signed_prekeys(&a2_key_new);
    a2.publish_prekeys(Some(spk), Some(kpk), one_time_prekeys([1]))
        .await
        .unwrap();
    let again = bob.fetch_bundle("alice", 2).await.unwrap();
    assert_eq!(again.identity, IdentityStatus::Changed);
    assert_eq!(
        again.bundle.identity_key.0,
        a2_key_new.public().serialize().to_vec()
    );
}

#[tokio::test]
async fn turn_credentials_follow_coturn_rest_scheme() {
    let mut cfg = sotto_server::ServerConfig::new(SERVER_ID);
    let clock = sotto_server::ManualClock::new(1_700_000_000_000);
    cfg.clock = std::sync::Arc::new(clock);
    cfg.turn = Some(sotto_server::TurnConfig {
        secret: b"north".to_vec(),
        uris: vec!["turn:127.0.0.1:3478?transport=udp".into()],
        ttl_secs: 600,
    });
    let server = start(cfg, std::sync::Arc::new(sotto_server::MemoryStore::new())).await;
    let (alice, _e, _) = register(&server, "alice").await;
    let t = alice.turn_credentials().await.unwrap();
    assert_eq!(t.username, "1700000600:alice.1");
    assert_eq!(
        t.password,
        sotto_server::turn::credentials(b"north", "alice.1", 1_700_000_600).password
    );
    assert_eq!(t.ttl_secs, 600);
    assert_eq!(t.uris.len(), 1);

    let plain = start_default().await;
    let (bob, _e, _) = register(&plain, "bob").await;
    assert!(matches!(
        bob.turn_credentials().await.unwrap_err(),
        Error::Refused {
            code: ErrorCode::TurnUnavailable
        }
    ));
}

/// Issue 14 (sybil accounts): account registration was unlimited, so every per-account limit
/// (bundle fetches, relay rooms, a sender's queue share) could be multiplied at will. New
/// accounts per address are now limited (`registrations_per_address_per_hour`; 3 here): the
/// next registration from that address is refused with `registration_rate_limited` and
/// creates nothing, while logging in, re-registering an existing device and registering from
/// another address still work, and users there still exchange messages. Fails without the
/// limit (the fourth account is created).
#[tokio::test]
async fn new_accounts_per_address_are_limited() {
    let mut cfg = ServerConfig::new(SERVER_ID);
    cfg.limits.registrations_per_address_per_hour = 3;
    let server = start(cfg, Arc::new(MemoryStore::new())).await;
    let sybil = [127, 0, 0, 2];
    let mut keys = Vec::new();
    for i in 0..3 {
        let key = identity();
        let (mut ws, nonce) = raw_connect_from(sybil, &server).await;
        let m = raw_register_on(&mut ws, &nonce, &format!("s{i}"), &key).await;
        assert!(
            matches!(m, Some(ServerMessage::Authenticated { created: true, .. })),
            "{m:?}"
        );
        keys.push(key);
    }
    let (mut ws, nonce) = raw_connect_from(sybil, &server).await;
    let m = raw_register_on(&mut ws, &nonce, "s3", &identity()).await;
    assert_eq!(error_code(&m), Some(ErrorCode::RegistrationRateLimited));
    assert_closed(&mut ws).await;
    // re-registering an existing device is a login, not a new account
    let (mut ws, nonce) = raw_connect_from(sybil, &server).await;
    let m = raw_register_on(&mut ws, &nonce, "s0", &keys[0]).await;
    assert!(
        matches!(m, Some(ServerMessage::Authenticated { created: false, .. })),
        "{m:?}"
    );
    // another address registers; nothing of s3 exists; messages flow
    let (alice, _ea, _) = register(&server, "alice").await;
    let (_bob, mut eb, _) = register(&server, "bob").await;
    assert!(alice.list_devices("s3").await.unwrap().is_empty());
    assert_eq!(alice.list_devices("s2").await.unwrap(), vec![1]);
    alice.send("bob", 1, 60, b"ring".to_vec()).await.unwrap();
    let env = tokio::time::timeout(std::time::Duration::from_secs(5), eb.next_envelope())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(env.ciphertext.0, b"ring");
    server.shutdown().await;
}
