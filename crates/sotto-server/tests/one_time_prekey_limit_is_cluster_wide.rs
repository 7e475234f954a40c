//! The limit on one-time prekeys one device hands out a minute
//! (`ONE_TIME_PREKEYS_PER_TARGET_PER_MINUTE`) is the cluster's, not each node's: twelve accounts
//! spread over three nodes fetch bob's bundle once each and, with the limit at 4, exactly 4 of
//! them get a one-time prekey (the limit) and the fifth and later do not (limit + 1) — though
//! each node on its own would have let 4 through (12 in all). The allowance is a token bucket
//! in PostgreSQL (`Store::take_limit_token`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use sotto_server::ServerConfig;
use sotto_testkit::cluster::Cluster;

const LIMIT: u32 = 4;
const REQUESTERS: usize = 12;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_time_prekeys_handed_out_are_limited_across_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let Some(cluster) = Cluster::start(dir.path(), 3, |_| {
        let mut c = ServerConfig::new(SERVER_ID);
        c.limits.one_time_prekeys_per_target_per_minute = LIMIT;
        c
    })
    .await
    else {
        return;
    };
    let (bob, _eb, bob_id) = register(&cluster.nodes[0], "bob").await;
    let (spk, kpk) = signed_prekeys(&bob_id);
    bob.publish_prekeys(Some(spk), Some(kpk), one_time_prekeys(1..=50))
        .await
        .unwrap();

    let mut with_one_time = Vec::new();
    for i in 0..REQUESTERS {
        let (m, _e, _) = register(&cluster.nodes[i % 3], &format!("m{i}")).await;
        let b = m.fetch_bundle("bob", 1).await.unwrap();
        with_one_time.push(b.bundle.one_time_prekey.is_some());
    }
    let handed = with_one_time.iter().filter(|w| **w).count();
    assert_eq!(handed, LIMIT as usize, "{with_one_time:?}");
    assert!(
        with_one_time[..LIMIT as usize].iter().all(|w| *w),
        "the first {LIMIT} get one: {with_one_time:?}"
    );
    assert_eq!(
        bob.publish_prekeys(None, None, vec![]).await.unwrap(),
        50 - LIMIT
    );
}
