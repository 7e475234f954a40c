//! `prekeys_low` reaches a device connected to another node of the cluster: alice (node 1)
//! takes bob's one-time prekeys below the threshold; bob, connected to node 0, is told at once
//! (the notice travels over NATS to the node bob is on). Real PostgreSQL and NATS.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use std::time::Duration;

use common::*;
use sotto_server::{Event, ServerConfig};
use sotto_testkit::cluster::Cluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_on_another_node_is_told_its_prekeys_are_low() {
    let dir = tempfile::tempdir().unwrap();
    let Some(cluster) = Cluster::start(dir.path(), 2, |_| ServerConfig::new(SERVER_ID)).await
    else {
        return;
    };
    let (bob, mut bob_events, bob_id) = register(&cluster.nodes[0], "bob").await;
    let (spk, kpk) = signed_prekeys(&bob_id);
    let threshold = sotto_server::consts::LOW_PREKEY_THRESHOLD;
    bob.publish_prekeys(Some(spk), Some(kpk), one_time_prekeys(1..=threshold))
        .await
        .unwrap();
    let (alice, _ea, _) = register(&cluster.nodes[1], "alice").await;
    let b = alice.fetch_bundle("bob", 1).await.unwrap();
    assert!(b.bundle.one_time_prekey.is_some());

    let told = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            match bob_events.next().await {
                Some(Event::PrekeysLow { remaining }) => return remaining,
                Some(_) => continue,
                None => panic!("bob's client closed"),
            }
        }
    })
    .await
    .expect("bob on node 0 is told through NATS");
    assert_eq!(told, threshold - 1);
}
