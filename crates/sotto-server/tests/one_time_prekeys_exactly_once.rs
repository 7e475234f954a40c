//! Each one-time prekey is handed out to exactly one fetcher, even when 50 clients fetch the same
//! device's bundle at once (SQLite store, real connections); the owner is told when stock is low.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use std::collections::HashSet;
use std::sync::Arc;

use common::*;
use sotto_server::protocol::{OneTimePreKey, SignedPreKey, B64};
use sotto_server::{Client, Durability, Event, ServerConfig, SqliteStore};

const FETCHERS: usize = 50;
const STOCK: u32 = 40;

fn spk(id: u32) -> SignedPreKey {
    SignedPreKey {
        id,
        public: B64(vec![5; 33]),
        signature: B64(vec![7; 64]),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_fetches_get_distinct_one_time_prekeys() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("s.db"), Durability::Full).unwrap();
    let mut cfg = ServerConfig::new(SERVER_ID);
    cfg.limits.max_connections_per_addr = FETCHERS + 4;
    let server = start(cfg, Arc::new(store)).await;

    let (bob, mut bob_events, _) = register(&server, "bob").await;
    let otks: Vec<_> = (1..=STOCK)
        .map(|id| OneTimePreKey {
            id,
            public: B64(id.to_be_bytes().repeat(8)),
        })
        .collect();
    assert_eq!(
        bob.publish_prekeys(Some(spk(1)), Some(spk(2)), otks)
            .await
            .unwrap(),
        STOCK
    );

    let mut clients = Vec::new();
    for i in 0..FETCHERS {
        let (c, _e) =
            Client::connect(client_cfg(&server, &format!("f{i}"), 1, identity()).register())
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
        assert_eq!(
            k.public.0,
            k.id.to_be_bytes().repeat(8),
            "key matches its id"
        );
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
    let batch = |from: u32, n: usize| -> Vec<OneTimePreKey> {
        (from..from + n as u32)
            .map(|id| OneTimePreKey {
                id,
                public: B64(vec![1; 33]),
            })
            .collect()
    };
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
