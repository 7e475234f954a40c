//! Each one-time prekey is handed out to exactly one fetcher, even when 50 clients fetch the same
//! device's bundle at once (on SQLite and on PostgreSQL, real connections), and when those 50
//! fetch through three servers sharing one PostgreSQL; the owner is told when stock is low.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[macro_use]
mod common;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use common::*;
use sotto_server::{Client, Event, Server, ServerConfig};

const FETCHERS: usize = 50;
const STOCK: u32 = 40;

fn fetch_config() -> ServerConfig {
    let mut cfg = ServerConfig::new(SERVER_ID);
    cfg.limits.max_connections_per_addr = FETCHERS + 4;
    // fifty strangers at once: more than the per-target default allows one-time prekeys for
    cfg.limits.one_time_prekeys_per_target_per_minute = FETCHERS as u32;
    // ... and fifty accounts registered from one address
    cfg.limits.registrations_per_address_per_hour = FETCHERS as u32 + 1;
    cfg
}

on_both_backends!(
    fifty_concurrent_fetches_get_distinct_one_time_prekeys,
    fifty_fetches_one_server,
    (flavor = "multi_thread", worker_threads = 2)
);
async fn fifty_fetches_one_server(backend: Backend) {
    let Some(db) = Db::new(backend) else { return };
    let server = start(fetch_config(), db.store()).await;
    fifty_fetches(&[server]).await;
}

/// Three servers, each with its own connection to one PostgreSQL (as three nodes would have):
/// the fetchers are spread over them, the owner is on the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_time_prekeys_exactly_once_across_connections_postgres() {
    let Some(db) = Db::new(Backend::Postgres) else {
        return;
    };
    let mut servers = Vec::new();
    for _ in 0..3 {
        servers.push(start(fetch_config(), db.store()).await);
    }
    fifty_fetches(&servers).await;
}

/// Bob publishes `STOCK` one-time prekeys on `servers[0]`; `FETCHERS` clients, spread over
/// `servers`, fetch his bundle at once: every key is handed out once, the rest get none.
async fn fifty_fetches(servers: &[Server]) {
    let (bob, mut bob_events, bob_key) = register(&servers[0], "bob").await;
    let otks = one_time_prekeys(1..=STOCK);
    let published: HashMap<u32, Vec<u8>> =
        otks.iter().map(|k| (k.id, k.public.0.clone())).collect();
    let (spk, kpk) = signed_prekeys(&bob_key);
    assert_eq!(
        bob.publish_prekeys(Some(spk), Some(kpk), otks)
            .await
            .unwrap(),
        STOCK
    );

    let mut clients = Vec::new();
    for i in 0..FETCHERS {
        let server = &servers[i % servers.len()];
        let (c, _e) =
            Client::connect(client_cfg(server, &format!("f{i}"), 1, identity()).register())
                .await
                .unwrap();
        clients.push(c);
    }
    // All fetch at once.
    let barrier = Arc::new(tokio::sync::Barrier::new(FETCHERS));
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|c| {
            let b = barrier.clone();
            tokio::spawn(async move {
                b.wait().await;
                c.fetch_bundle("bob", 1)
                    .await
                    .unwrap()
                    .bundle
                    .one_time_prekey
            })
        })
        .collect();
    let mut got = Vec::new();
    for t in tasks {
        got.push(t.await.unwrap());
    }
    let ids: Vec<u32> = got.iter().flatten().map(|k| k.id).collect();
    let distinct: HashSet<u32> = ids.iter().copied().collect();
    assert_eq!(ids.len(), STOCK as usize, "every key handed out");
    assert_eq!(distinct.len(), ids.len(), "no key handed out twice");
    assert_eq!(
        got.iter().filter(|k| k.is_none()).count(),
        FETCHERS - STOCK as usize
    );
    for k in got.iter().flatten() {
        assert_eq!(k.public.0, published[&k.id], "key matches its id");
    }
    if servers.len() > 1 {
        // the low-stock notice goes to bob's connection on the server that served the fetch;
        // across servers that needs the doorbell between them (issue 15, not built yet)
        return;
    }
    // Bob was told the stock ran low.
    let mut low = None;
    while let Ok(Some(e)) =
        tokio::time::timeout(std::time::Duration::from_millis(500), bob_events.next()).await
    {
        if let Event::PrekeysLow { remaining } = e {
            low = Some(remaining);
        }
    }
    assert!(low.is_some_and(|r| r < sotto_server::consts::LOW_PREKEY_THRESHOLD));
}

#[tokio::test]
async fn upload_limits_and_limit_plus_one() {
    use sotto_server::consts::{MAX_ONE_TIME_PREKEYS_PER_UPLOAD, MAX_ONE_TIME_PREKEYS_STORED};
    let server = start_default().await;
    let (bob, _e, _) = register(&server, "bob").await;
    let batch = |from: u32, n: usize| one_time_prekeys(from..from + n as u32);
    let err = bob
        .publish_prekeys(None, None, batch(0, MAX_ONE_TIME_PREKEYS_PER_UPLOAD + 1))
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        sotto_server::Error::Refused {
            code: sotto_server::ErrorCode::InvalidField
        }
    ));
    let mut n = 0;
    while n < MAX_ONE_TIME_PREKEYS_STORED {
        let k = MAX_ONE_TIME_PREKEYS_PER_UPLOAD.min(MAX_ONE_TIME_PREKEYS_STORED - n);
        bob.publish_prekeys(None, None, batch(n as u32, k))
            .await
            .unwrap();
        n += k;
    }
    let err = bob
        .publish_prekeys(None, None, batch(n as u32, 1))
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        sotto_server::Error::Refused {
            code: sotto_server::ErrorCode::InvalidField
        }
    ));
}

/// Prekeys must be public keys of their type and size, and the signed ones signed by the
/// device's identity key: random bytes, keys of the other type and forged signatures are
/// refused by name and nothing is stored; a real upload is accepted.
#[tokio::test]
async fn uploads_of_non_keys_and_forged_signatures_are_refused() {
    use sotto_server::protocol::{OneTimePreKey, B64};
    use sotto_server::{Error, ErrorCode};
    let server = start_default().await;
    let (bob, _e, bob_key) = register(&server, "bob").await;
    let (spk, kpk) = signed_prekeys(&bob_key);
    let refused = |r: Result<u32, Error>| match r {
        Err(Error::Refused { code }) => Some(code),
        other => panic!("{other:?}"),
    };
    let junk = vec![OneTimePreKey {
        id: 1,
        public: B64(vec![0x42; 1600]),
    }];
    assert_eq!(
        refused(bob.publish_prekeys(None, None, junk).await),
        Some(ErrorCode::InvalidPrekey)
    );
    let mut kem_as_signed = spk.clone();
    kem_as_signed.public = kpk.public.clone();
    assert_eq!(
        refused(bob.publish_prekeys(Some(kem_as_signed), None, vec![]).await),
        Some(ErrorCode::InvalidPrekey)
    );
    let mut short_kem = kpk.clone();
    short_kem.public.0.truncate(1200);
    assert_eq!(
        refused(bob.publish_prekeys(None, Some(short_kem), vec![]).await),
        Some(ErrorCode::InvalidPrekey)
    );
    // well-formed keys signed by someone else's identity key
    let (other_spk, other_kpk) = signed_prekeys(&identity());
    assert_eq!(
        refused(bob.publish_prekeys(Some(other_spk), None, vec![]).await),
        Some(ErrorCode::BadPrekeySignature)
    );
    assert_eq!(
        refused(
            bob.publish_prekeys(Some(spk.clone()), Some(other_kpk), one_time_prekeys([1]))
                .await
        ),
        Some(ErrorCode::BadPrekeySignature)
    );
    // nothing was stored by any of them
    assert_eq!(bob.publish_prekeys(None, None, vec![]).await.unwrap(), 0);
    let (alice, _ea, _) = register(&server, "alice").await;
    assert!(matches!(
        alice.fetch_bundle("bob", 1).await.unwrap_err(),
        Error::Refused {
            code: ErrorCode::NoPrekeys
        }
    ));
    assert_eq!(
        bob.publish_prekeys(Some(spk), Some(kpk), one_time_prekeys([1, 2]))
            .await
            .unwrap(),
        2
    );
    assert!(alice
        .fetch_bundle("bob", 1)
        .await
        .unwrap()
        .bundle
        .one_time_prekey
        .is_some());
}
