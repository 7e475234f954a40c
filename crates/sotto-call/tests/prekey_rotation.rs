#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Signed-prekey and last-resort Kyber prekey rotation through the real signaling server
//! (SQLite on disk, real WebSocket), with the clock passed in: a rotated pair is what the server
//! hands out next; a session start built on the replaced bundle still opens during the grace
//! period and is refused by name after it (the device's other sessions untouched); the pair
//! survives a restart; a resumed registration keeps the pair the server already handed out.

use std::time::{Duration, SystemTime};

use sotto_call::messages::{Body, CallMessage};
use sotto_call::sealed::{Device, SealedError, PROFILE_FILE};
use sotto_ratchet::{SIGNED_PREKEY_GRACE_MS, SIGNED_PREKEY_ROTATE_AFTER_MS};
use sotto_server::ServerConfig;
use sotto_testkit::device::{device, key_file, load, msg, recv, register};
use sotto_testkit::server::{server, server_with, SERVER_ID};

fn ringing() -> CallMessage {
    msg(Body::Ringing)
}

fn ms(d: u64) -> Duration {
    Duration::from_millis(d)
}

/// The signed and Kyber prekey ids the server hands out for `user` (uses a one-time prekey).
async fn served(asker: &Device, user: &str) -> (u32, u32) {
    let b = asker.client().fetch_bundle(user, 1).await.unwrap().bundle;
    (b.signed_prekey.id, b.kem_prekey.id)
}

#[tokio::test]
async fn a_rotated_pair_is_served_the_old_one_opens_until_its_grace_ends() {
    let tmp = tempfile::tempdir().unwrap();
    let srv = server(tmp.path()).await;
    let url = srv.url();
    let bdir = tmp.path().join("bob");
    let bkey = key_file(tmp.path(), "b");
    let (bob, mut bev) = register(&url, "bob", &bdir, &bkey).await.unwrap();
    let (alice, _aev) = device(&url, "alice").await;
    let (dave, _dev) = device(&url, "dave").await;
    let (carol, _cev) = device(&url, "carol").await;
    assert_eq!(served(&carol, "bob").await, (1, 1));

    // alice and dave fetch bob's bundle now and send their first message (the session start,
    // naming signed prekey 1 and Kyber prekey 1) only later
    alice.ensure_session("bob", 1).await.unwrap();
    dave.ensure_session("bob", 1).await.unwrap();

    // nothing is due yet: the same pair is published again
    let now = SystemTime::now();
    let r = bob.refresh_signed_prekeys(now).await.unwrap();
    assert_eq!(
        (r.signed_prekey_id, r.kyber_prekey_id, r.rotated, r.removed),
        (1, 1, false, 0)
    );

    // a week later: a new pair, which the server hands out from now on
    let t1 = now + ms(SIGNED_PREKEY_ROTATE_AFTER_MS);
    let r = bob.refresh_signed_prekeys(t1).await.unwrap();
    assert_eq!(
        (r.signed_prekey_id, r.kyber_prekey_id, r.rotated, r.removed),
        (2, 2, true, 0)
    );
    assert_eq!(served(&carol, "bob").await, (2, 2));
    carol.send("bob", 1, &ringing()).await.unwrap();
    assert_eq!(recv(&bob, &mut bev).await.unwrap().body, Body::Ringing);

    // within the grace period, alice's late session start on the replaced pair still opens
    alice.send("bob", 1, &ringing()).await.unwrap();
    assert_eq!(recv(&bob, &mut bev).await.unwrap().body, Body::Ringing);

    // one day short of the grace period after the replacement: pair 1 is still kept
    let t2 = t1 + ms(SIGNED_PREKEY_GRACE_MS) - Duration::from_secs(86_400);
    let r = bob.refresh_signed_prekeys(t2).await.unwrap();
    assert_eq!((r.signed_prekey_id, r.rotated, r.removed), (3, true, 0));
    // the grace period over: pair 1 is deleted (signed and Kyber), 2 and 3 stay
    let t3 = t1 + ms(SIGNED_PREKEY_GRACE_MS);
    let r = bob.refresh_signed_prekeys(t3).await.unwrap();
    assert_eq!((r.signed_prekey_id, r.rotated, r.removed), (3, false, 2));

    // dave's session start on pair 1 is refused by name, and changes nothing else
    dave.send("bob", 1, &ringing()).await.unwrap();
    let e = recv(&bob, &mut bev).await.expect_err("pair 1 is gone");
    assert!(
        matches!(
            e,
            SealedError::Ratchet(sotto_ratchet::Error::UnknownSignedPreKey(1))
                | SealedError::Ratchet(sotto_ratchet::Error::UnknownKyberPreKey(1))
        ),
        "{e}"
    );
    alice.send("bob", 1, &ringing()).await.unwrap();
    assert_eq!(recv(&bob, &mut bev).await.unwrap().body, Body::Ringing);
    assert_eq!(served(&carol, "bob").await, (3, 3));

    // after a restart: the same pair is published (its clock is behind the test's: nothing is
    // rotated or deleted), the sessions are there, new sessions start on pair 3
    drop((bob, bev));
    let (bob, mut bev) = load(&bdir, &bkey).await.unwrap();
    assert_eq!(served(&carol, "bob").await, (3, 3));
    alice.send("bob", 1, &ringing()).await.unwrap();
    assert_eq!(recv(&bob, &mut bev).await.unwrap().body, Body::Ringing);
    let (erin, _eev) = device(&url, "erin").await;
    erin.send("bob", 1, &ringing()).await.unwrap();
    assert_eq!(recv(&bob, &mut bev).await.unwrap().body, Body::Ringing);
    // the deleted pair stays deleted across the restart
    let r = bob.refresh_signed_prekeys(t3).await.unwrap();
    assert_eq!((r.signed_prekey_id, r.rotated, r.removed), (3, false, 0));
}

#[tokio::test]
async fn a_resumed_registration_keeps_the_pair_the_server_already_handed_out() {
    let tmp = tempfile::tempdir().unwrap();
    let srv = server(tmp.path()).await;
    let url = srv.url();
    let dir = tmp.path().join("alice");
    let key = key_file(tmp.path(), "a");
    let (alice, aev) = register(&url, "alice", &dir, &key).await.unwrap();
    drop((alice, aev));
    // as if the process died after publishing but before recording that the registration
    // finished
    let p = dir.join(PROFILE_FILE);
    let mut profile: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    profile["registered"] = serde_json::Value::Bool(false);
    std::fs::write(&p, serde_json::to_vec(&profile).unwrap()).unwrap();

    // meanwhile bob fetched alice's bundle and sent her a session start
    let (bob, _bev) = device(&url, "bob").await;
    bob.send("alice", 1, &ringing()).await.unwrap();

    let (alice, mut aev) = register(&url, "alice", &dir, &key)
        .await
        .expect("the registration resumes");
    assert_eq!(recv(&alice, &mut aev).await.unwrap().body, Body::Ringing);
    assert_eq!(served(&bob, "alice").await, (1, 1));
}

#[tokio::test]
async fn a_prekey_upload_refused_after_the_account_exists_keeps_the_identity() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("alice");
    let key = key_file(tmp.path(), "a");
    // a server that refuses the registration's one-time prekey batch (InvalidField), after it
    // has created the account
    let mut cfg = ServerConfig::new(SERVER_ID);
    cfg.limits.max_one_time_prekeys_per_upload = 1;
    let strict = server_with(tmp.path(), cfg).await;
    let e = register(&strict.url(), "alice", &dir, &key)
        .await
        .err()
        .expect("the prekey batch is refused");
    assert!(
        matches!(
            e,
            SealedError::Signaling(sotto_server::Error::Refused {
                code: sotto_server::ErrorCode::InvalidField
            })
        ),
        "{e}"
    );
    // the identity the server now binds to alice is kept, so the registration can finish
    assert!(dir.join(sotto_call::sealed::STORE_FILE).exists());
    strict.shutdown().await;
    let srv = server(tmp.path()).await;
    let url = srv.url();
    let (alice, mut aev) = register(&url, "alice", &dir, &key)
        .await
        .expect("the registration resumes under the same identity");
    let (bob, _bev) = device(&url, "bob").await;
    bob.send("alice", 1, &ringing()).await.unwrap();
    assert_eq!(recv(&alice, &mut aev).await.unwrap().body, Body::Ringing);
}
