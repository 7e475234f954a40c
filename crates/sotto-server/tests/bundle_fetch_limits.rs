//! Draining one-time prekeys is bounded: bundle fetches are limited per requesting account
//! (refused with `fetch_rate_limited`), one account gets one one-time prekey of a device per
//! window, and a device hands out a limited number of one-time prekeys per minute in all. Past
//! the last two the bundle is still served, without a one-time prekey, and a session set up from
//! it works (PQXDH on the signed prekey and the last-resort Kyber prekey). Real server, real
//! clients, real sotto-ratchet sessions.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use std::sync::Arc;
use std::time::SystemTime;

use common::*;
use sotto_ratchet::{
    decrypt, encrypt, process_prekey_bundle, IdentityKey, IdentityKeyPair, InMemoryStore,
    KyberPreKeyRecord, KyberPreKeyStore, KyberPublicKey, PreKeyBundle, PreKeyRecord, PreKeyStore,
    ProtocolAddress, PublicKey, SignedPreKeyRecord, SignedPreKeyStore,
};
use sotto_server::consts::{BUNDLE_FETCHES_PER_MINUTE, ONE_TIME_PREKEYS_PER_TARGET_PER_MINUTE};
use sotto_server::protocol::{OneTimePreKey, SignedPreKey, B64};
use sotto_server::{Bundle, Client, Error, ErrorCode, MemoryStore, ServerConfig};

const STOCK: u32 = 50;

/// Bob's device: its ratchet store (holding every private key) and its prekeys published.
async fn bob_publishes(bob: &Client, key: &IdentityKeyPair) -> InMemoryStore {
    let mut rng = rand::thread_rng();
    let mut store = InMemoryStore::new(key.clone(), 7);
    let signed = SignedPreKeyRecord::generate(1, 0, key, &mut rng);
    let kyber = KyberPreKeyRecord::generate(2, 0, key, &mut rng);
    let spk = SignedPreKey {
        id: 1,
        public: B64(signed.key_pair.public_key.serialize().to_vec()),
        signature: B64(signed.signature.to_vec()),
    };
    let kpk = SignedPreKey {
        id: 2,
        public: B64(kyber.key_pair.public_key.serialize()),
        signature: B64(kyber.signature.to_vec()),
    };
    store.save_signed_pre_key(signed).unwrap();
    store.save_kyber_pre_key(kyber, true).unwrap();
    let mut otks = Vec::new();
    for id in 1..=STOCK {
        let r = PreKeyRecord::generate(id, &mut rng);
        otks.push(OneTimePreKey {
            id,
            public: B64(r.key_pair.public_key.serialize().to_vec()),
        });
        store.save_pre_key(r).unwrap();
    }
    assert_eq!(
        bob.publish_prekeys(Some(spk), Some(kpk), otks)
            .await
            .unwrap(),
        STOCK
    );
    store
}

fn ratchet_bundle(b: &Bundle) -> PreKeyBundle {
    PreKeyBundle {
        registration_id: 7,
        device_id: b.device_id,
        pre_key: b
            .one_time_prekey
            .as_ref()
            .map(|k| (k.id, PublicKey::deserialize(&k.public.0).unwrap())),
        signed_pre_key_id: b.signed_prekey.id,
        signed_pre_key_public: PublicKey::deserialize(&b.signed_prekey.public.0).unwrap(),
        signed_pre_key_signature: b.signed_prekey.signature.0.clone(),
        identity_key: IdentityKey::deserialize(&b.identity_key.0).unwrap(),
        kyber_pre_key_id: b.kem_prekey.id,
        kyber_pre_key_public: KyberPublicKey::deserialize(&b.kem_prekey.public.0).unwrap(),
        kyber_pre_key_signature: b.kem_prekey.signature.0.clone(),
    }
}

/// Alice sets up a session from `bundle`, sends one message, and Bob's device opens it.
fn session_works(alice_key: &IdentityKeyPair, bob_store: &mut InMemoryStore, bundle: &Bundle) {
    let mut rng = rand::thread_rng();
    let mut alice = InMemoryStore::new(alice_key.clone(), 3);
    let bob_addr = ProtocolAddress::new("bob", 1);
    let now = SystemTime::now();
    process_prekey_bundle(
        &bob_addr,
        &mut alice,
        &ratchet_bundle(bundle),
        now,
        &mut rng,
    )
    .unwrap();
    let msg = encrypt(&bob_addr, &mut alice, b"ring ring", now).unwrap();
    let opened = decrypt(&ProtocolAddress::new("alice", 1), bob_store, &msg, &mut rng).unwrap();
    assert_eq!(opened, b"ring ring");
}

fn refused(e: &Error) -> Option<ErrorCode> {
    match e {
        Error::Refused { code } => Some(*code),
        _ => None,
    }
}

#[tokio::test]
async fn one_account_draining_a_user_gets_one_one_time_prekey_then_is_refused() {
    let server = start_default().await;
    let (bob, _eb, bob_key) = register(&server, "bob").await;
    let mut bob_store = bob_publishes(&bob, &bob_key).await;
    let (mallory, _em, _) = register(&server, "mallory").await;

    // at the limit: every fetch is served, one of them with a one-time prekey
    let mut with_one_time = 0;
    for _ in 0..BUNDLE_FETCHES_PER_MINUTE {
        let f = mallory.fetch_bundle("bob", 1).await.unwrap();
        with_one_time += usize::from(f.bundle.one_time_prekey.is_some());
    }
    assert_eq!(
        with_one_time, 1,
        "one one-time prekey per account and window"
    );
    // one past it: refused by name
    let e = mallory.fetch_bundle("bob", 1).await.unwrap_err();
    assert_eq!(refused(&e), Some(ErrorCode::FetchRateLimited), "{e:?}");
    // and another target does not help
    let e = mallory.fetch_bundle("alice", 1).await.unwrap_err();
    assert_eq!(refused(&e), Some(ErrorCode::FetchRateLimited), "{e:?}");

    // Bob lost one key; Alice is served and her sessions work, with a one-time prekey and,
    // on a second fetch in the window, without one
    let (alice, _ea, alice_key) = register(&server, "alice").await;
    let first = alice.fetch_bundle("bob", 1).await.unwrap().bundle;
    assert!(first.one_time_prekey.is_some());
    session_works(&alice_key, &mut bob_store, &first);
    let second = alice.fetch_bundle("bob", 1).await.unwrap().bundle;
    assert!(second.one_time_prekey.is_none());
    session_works(&alice_key, &mut bob_store, &second);
    assert_eq!(
        bob.publish_prekeys(None, None, vec![]).await.unwrap(),
        STOCK - 2
    );
}

#[tokio::test]
async fn many_accounts_cannot_drain_a_user_faster_than_the_target_limit() {
    let mut cfg = ServerConfig::new(SERVER_ID);
    cfg.limits.max_connections_per_addr = 64;
    let server = start(cfg, Arc::new(MemoryStore::new())).await;
    let (bob, _eb, bob_key) = register(&server, "bob").await;
    let mut bob_store = bob_publishes(&bob, &bob_key).await;

    let sybils = ONE_TIME_PREKEYS_PER_TARGET_PER_MINUTE as usize + 5;
    let mut handed = 0;
    for i in 0..sybils {
        let (s, _e, _) = register(&server, &format!("sybil{i}")).await;
        let f = s.fetch_bundle("bob", 1).await.unwrap();
        handed += usize::from(f.bundle.one_time_prekey.is_some());
    }
    assert_eq!(handed, ONE_TIME_PREKEYS_PER_TARGET_PER_MINUTE as usize);
    assert_eq!(
        bob.publish_prekeys(None, None, vec![]).await.unwrap(),
        STOCK - ONE_TIME_PREKEYS_PER_TARGET_PER_MINUTE
    );
    // a friend calling now still gets Bob's bundle, and the session works without the key
    let (alice, _ea, alice_key) = register(&server, "alice").await;
    let b = alice.fetch_bundle("bob", 1).await.unwrap().bundle;
    assert!(b.one_time_prekey.is_none());
    session_works(&alice_key, &mut bob_store, &b);
    // the admin sees it: five sybils and alice were served without one
    assert!(server
        .metrics_text()
        .contains("sotto_one_time_prekeys_withheld_total 6"));
}
