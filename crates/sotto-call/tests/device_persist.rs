#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Persistent devices through the real signaling server (SQLite on disk, real WebSocket):
//! a device registered into a directory comes back in a later "process" (everything dropped and
//! loaded from disk) with its identity, prekeys, sessions and pinned peer identities; a wrong
//! store key changes nothing; a peer whose identity key changed is refused until the user
//! trusts the new key, and that decision survives a restart too.

use sotto_call::messages::Body;
use sotto_call::sealed::{
    read_profile, Device, SealedError, ONE_TIME_PREKEYS, PROFILE_FILE, STORE_FILE,
};
use sotto_ratchet::IdentityKeyPair;
use sotto_server::tls::ClientTls;
use sotto_testkit::device::{device, key_file, load, msg, recv, register};
use sotto_testkit::server::{server, server_with, SERVER_ID};

#[tokio::test]
async fn a_registered_device_comes_back_with_its_sessions_and_pins() {
    let tmp = tempfile::tempdir().unwrap();
    let srv = server(tmp.path()).await;
    let url = srv.url();
    let (adir, bdir) = (tmp.path().join("alice"), tmp.path().join("bob"));
    let (akey, bkey) = (key_file(tmp.path(), "a"), key_file(tmp.path(), "b"));

    let (alice, mut aev) = register(&url, "alice", &adir, &akey).await.unwrap();
    let (bob, mut bev) = register(&url, "bob", &bdir, &bkey).await.unwrap();
    alice.send("bob", 1, &msg(Body::Ringing)).await.unwrap();
    assert_eq!(recv(&bob, &mut bev).await.unwrap().body, Body::Ringing);
    bob.send("alice", 1, &msg(Body::Busy)).await.unwrap();
    assert_eq!(recv(&alice, &mut aev).await.unwrap().body, Body::Busy);
    let sn = alice.safety_number("bob", 1).unwrap();
    assert_eq!(Some(&sn), bob.safety_number("alice", 1).as_ref());
    let (a_id, b_id) = (alice.identity_key(), bob.identity_key());
    drop((alice, aev, bob, bev));

    // a second registration into the same directory is refused and changes nothing
    let before = std::fs::read(adir.join(STORE_FILE)).unwrap();
    let e = register(&url, "alice", &adir, &akey)
        .await
        .err()
        .expect("refused");
    assert!(
        matches!(e, SealedError::Device(ref m) if m.contains("already holds")),
        "{e}"
    );
    // a wrong key does not open the store, and leaves it as it was
    let wrong = key_file(tmp.path(), "wrong");
    let e = load(&adir, &wrong).await.err().expect("wrong key refused");
    assert!(matches!(e, SealedError::Device(_)), "{e}");
    assert_eq!(std::fs::read(adir.join(STORE_FILE)).unwrap(), before);
    // a malformed profile is a clear error, not a panic
    let good_profile = std::fs::read(adir.join(PROFILE_FILE)).unwrap();
    std::fs::write(adir.join(PROFILE_FILE), b"{\"version\":1,").unwrap();
    let e = load(&adir, &akey).await.err().expect("bad profile refused");
    assert!(e.to_string().contains(PROFILE_FILE), "{e}");
    std::fs::write(adir.join(PROFILE_FILE), good_profile).unwrap();

    // "restart": both come back from disk, sign in (not register) and continue the SAME
    // sessions: a store that had lost them could not open these messages (no prekey message
    // is sent once a session answered)
    let (alice, mut aev) = load(&adir, &akey).await.unwrap();
    let (bob, mut bev) = load(&bdir, &bkey).await.unwrap();
    assert_eq!(alice.identity_key(), a_id);
    assert_eq!(bob.identity_key(), b_id);
    assert_eq!(alice.safety_number("bob", 1), Some(sn.clone()));
    for i in 0..3u8 {
        let body = Body::Mute {
            audio: i % 2 == 0,
            video: i == 1,
        };
        alice.send("bob", 1, &msg(body.clone())).await.unwrap();
        assert_eq!(recv(&bob, &mut bev).await.unwrap().body, body);
        bob.send(
            "alice",
            1,
            &msg(Body::Hangup {
                reason: "bye".into(),
            }),
        )
        .await
        .unwrap();
        assert_eq!(
            recv(&alice, &mut aev).await.unwrap().body,
            Body::Hangup {
                reason: "bye".into()
            }
        );
    }
    srv.shutdown().await;
}

#[tokio::test]
async fn a_changed_identity_is_refused_until_trusted_and_the_trust_persists() {
    let tmp = tempfile::tempdir().unwrap();
    let srv = server(tmp.path()).await;
    let url = srv.url();
    let adir = tmp.path().join("alice");
    let akey = key_file(tmp.path(), "a");
    let (alice, mut aev) = register(&url, "alice", &adir, &akey).await.unwrap();
    let (bob, bev) = device(&url, "bob").await;
    bob.send("alice", 1, &msg(Body::Ringing)).await.unwrap();
    assert_eq!(recv(&alice, &mut aev).await.unwrap().body, Body::Ringing);
    let old_sn = alice.safety_number("bob", 1).unwrap();
    drop((alice, aev));

    // bob's device 1 is re-bound to a new key (a reinstall, or the server substituting keys):
    // through the protocol, bob's second device re-keys device 1; then the new key signs in
    let second = IdentityKeyPair::generate(&mut rand::rngs::OsRng);
    assert!(!bob.client().add_device(2, &second.public()).await.unwrap());
    let (bob2, _ev2) = sotto_server::Client::connect(sotto_server::ClientConfig::new(
        &url, SERVER_ID, "bob", 2, second,
    ))
    .await
    .unwrap();
    let new_kp = IdentityKeyPair::generate(&mut rand::rngs::OsRng);
    assert!(
        bob2.add_device(1, &new_kp.public()).await.unwrap(),
        "device 1 re-keyed"
    );
    drop((bob, bev, bob2));
    let (newbob, mut nbev) =
        Device::register_with_identity(&url, &ClientTls::default(), SERVER_ID, "bob", new_kp)
            .await
            .unwrap();

    // alice, restarted, still pins the old key: the new key's first message is refused
    let (alice, mut aev) = load(&adir, &akey).await.unwrap();
    newbob.send("alice", 1, &msg(Body::Ringing)).await.unwrap();
    let e = recv(&alice, &mut aev).await.expect_err("refused");
    assert!(
        matches!(
            e,
            SealedError::Ratchet(sotto_ratchet::Error::UntrustedIdentity(_))
        ),
        "{e}"
    );
    assert_eq!(alice.safety_number("bob", 1), Some(old_sn.clone()));

    // the user compares the offered safety number and trusts it
    // showing the number reads the device listing and uses up none of bob's one-time prekeys;
    // trusting fetches one bundle, whose key gives the same number
    let stock = || async {
        newbob
            .client()
            .publish_prekeys(None, None, vec![])
            .await
            .unwrap()
    };
    let before = stock().await;
    let listed = alice.listed_safety_number("bob", 1).await.unwrap().unwrap();
    let _ = alice.listed_safety_number("bob", 1).await.unwrap();
    assert_eq!(stock().await, before, "listing used no one-time prekey");
    let offer = alice.offered_identity("bob", 1).await.unwrap();
    assert_eq!(stock().await, before - 1, "the bundle used one");
    let offered = offer.safety_number.clone();
    assert_eq!(offered, listed);
    assert_ne!(offered, old_sn);
    alice.trust_identity(offer).unwrap();
    assert_eq!(alice.safety_number("bob", 1), Some(offered.clone()));
    // alice's next message goes to the new key (a fresh session from its bundle)
    alice.send("bob", 1, &msg(Body::Busy)).await.unwrap();
    assert_eq!(recv(&newbob, &mut nbev).await.unwrap().body, Body::Busy);
    assert_eq!(newbob.safety_number("alice", 1), Some(offered.clone()));
    drop((alice, aev));

    // the decision survives a restart, and the conversation goes on both ways
    let (alice, mut aev) = load(&adir, &akey).await.unwrap();
    assert_eq!(alice.safety_number("bob", 1), Some(offered));
    newbob
        .send(
            "alice",
            1,
            &msg(Body::Hangup {
                reason: "bye".into(),
            }),
        )
        .await
        .unwrap();
    assert_eq!(
        recv(&alice, &mut aev).await.unwrap().body,
        Body::Hangup {
            reason: "bye".into()
        }
    );
    srv.shutdown().await;
}

#[tokio::test]
async fn one_process_per_device_and_prekey_ids_are_never_reused_across_restarts() {
    let tmp = tempfile::tempdir().unwrap();
    // one fetcher drains the whole stock below: lift the server's fetch limits
    let mut cfg = sotto_server::ServerConfig::new(SERVER_ID);
    cfg.limits.bundle_fetches_per_minute = u32::MAX;
    cfg.limits.one_time_prekeys_per_target_per_minute = u32::MAX;
    cfg.limits.one_time_prekey_repeat_window = std::time::Duration::ZERO;
    let srv = server_with(tmp.path(), cfg).await;
    let url = srv.url();
    let dir = tmp.path().join("alice");
    let key = key_file(tmp.path(), "a");
    let (alice, aev) = register(&url, "alice", &dir, &key).await.unwrap();
    assert_eq!(
        read_profile(&dir).unwrap().next_prekey_id,
        1 + ONE_TIME_PREKEYS
    );

    // while alice's device is open, a second process cannot open or re-register it
    let e = load(&dir, &key).await.err().expect("second opener refused");
    assert!(
        matches!(e, SealedError::Device(ref m) if m.contains("in use")),
        "{e}"
    );
    let e = register(&url, "alice", &dir, &key)
        .await
        .err()
        .expect("re-register refused");
    assert!(
        matches!(e, SealedError::Device(ref m) if m.contains("in use")),
        "{e}"
    );

    // two replenishments at once reserve disjoint ranges
    let (r1, r2) = tokio::join!(alice.replenish_prekeys(), alice.replenish_prekeys());
    r1.unwrap();
    r2.unwrap();
    assert_eq!(
        read_profile(&dir).unwrap().next_prekey_id,
        1 + 3 * ONE_TIME_PREKEYS
    );
    drop((alice, aev));

    // after a restart the numbering goes on from the profile, not from the start
    let (alice, aev) = load(&dir, &key).await.unwrap();
    alice.replenish_prekeys().await.unwrap();
    assert_eq!(
        read_profile(&dir).unwrap().next_prekey_id,
        1 + 4 * ONE_TIME_PREKEYS
    );
    drop((alice, aev));

    // every one-time prekey the server hands out has a distinct id, and each opens a session
    // (the device holds its private half): bob drains the stock with fresh devices
    let mut ids = std::collections::BTreeSet::new();
    let fetcher = sotto_server::Client::connect(
        sotto_server::ClientConfig::new(
            &url,
            SERVER_ID,
            "bob",
            1,
            IdentityKeyPair::generate(&mut rand::rngs::OsRng),
        )
        .register(),
    )
    .await
    .unwrap()
    .0;
    for _ in 0..4 * ONE_TIME_PREKEYS {
        let b = fetcher.fetch_bundle("alice", 1).await.unwrap();
        let id = b.bundle.one_time_prekey.as_ref().expect("stock left").id;
        assert!(ids.insert(id), "one-time prekey id {id} handed out twice");
    }
    assert_eq!(ids.len() as u32, 4 * ONE_TIME_PREKEYS);
    srv.shutdown().await;
}

#[tokio::test]
async fn a_registration_cut_short_is_resumed_with_the_same_identity() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("alice");
    let key = key_file(tmp.path(), "a");
    // no server listens here: the identity is made, the registration cannot finish
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("ws://{}", l.local_addr().unwrap())
    };
    let e = register(&dead, "alice", &dir, &key)
        .await
        .err()
        .expect("no server");
    assert!(matches!(e, SealedError::Signaling(_)), "{e}");
    let p = read_profile(&dir).unwrap();
    assert!(!p.registered);
    let e = load(&dir, &key)
        .await
        .err()
        .expect("an unfinished device does not load");
    assert!(e.to_string().contains("did not finish"), "{e}");
    // another name into the same directory is refused
    let srv = server(tmp.path()).await;
    let url = srv.url();
    let e = register(&url, "carol", &dir, &key)
        .await
        .err()
        .expect("other name refused");
    assert!(
        e.to_string().contains("unfinished registration of alice"),
        "{e}"
    );

    // registering again with the server up finishes it, under the identity made the first time
    let store_before = std::fs::read(dir.join(STORE_FILE)).unwrap();
    assert!(!store_before.is_empty());
    let (alice, aev) = register(&url, "alice", &dir, &key).await.unwrap();
    let id = alice.identity_key();
    drop((alice, aev));
    let p = read_profile(&dir).unwrap();
    assert!(p.registered);
    assert_eq!(p.server, url);
    let (alice, mut aev) = load(&dir, &key).await.unwrap();
    assert_eq!(alice.identity_key(), id);
    let (bob, _bev) = device(&url, "bob").await;
    bob.send("alice", 1, &msg(Body::Ringing)).await.unwrap();
    assert_eq!(recv(&alice, &mut aev).await.unwrap().body, Body::Ringing);

    // a crash between writing device.json and writing the store (nothing reached the server):
    // registering again makes the identity and finishes
    let cut = tmp.path().join("cut");
    let e = register(&dead, "dora", &cut, &key)
        .await
        .err()
        .expect("no server");
    assert!(matches!(e, SealedError::Signaling(_)), "{e}");
    std::fs::remove_file(cut.join(STORE_FILE)).unwrap();
    assert!(!read_profile(&cut).unwrap().registered);
    let (dora, dev) = register(&url, "dora", &cut, &key).await.unwrap();
    drop((dora, dev));
    assert!(read_profile(&cut).unwrap().registered);
    load(&cut, &key).await.unwrap();

    // a name the server refuses leaves nothing behind
    let other = tmp.path().join("taken");
    let e = register(&url, "bob", &other, &key)
        .await
        .err()
        .expect("bob is taken");
    assert!(matches!(e, SealedError::Signaling(_)), "{e}");
    assert!(!other.join(STORE_FILE).exists());
    assert!(!other.join(PROFILE_FILE).exists());
    srv.shutdown().await;
}
