//! A device is connected to one node of a cluster at a time: logging in on node B while its
//! connection on node A is open takes over cleanly — A tells the old socket `replaced` and closes
//! it, as a single server does — and envelopes go to the new connection only. Real PostgreSQL
//! and NATS, two nodes.
//!
//! The takeover notice travels over NATS and may be lost; the second test loses it on purpose
//! (the nodes talk to different NATS servers) and shows the fence: the old node's next read of
//! the queue finds a newer connection epoch in PostgreSQL, so it closes the old socket without
//! delivering anything on it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use std::time::Duration;

use common::*;
use sotto_server::protocol::ServerMessage;
use sotto_server::{Client, ErrorCode, NatsUrl, ServerConfig};
use sotto_testkit::nats::NatsServer;

/// Generous for a loaded 2-core machine: a notice or a ring normally takes milliseconds.
const DELIVERY: Duration = Duration::from_secs(15);

fn node_cfg(nats: &NatsServer, poll: Duration) -> ServerConfig {
    let mut c = ServerConfig::new(SERVER_ID);
    c.nats_url = Some(NatsUrl::new(nats.url()));
    c.limits.cluster_poll_interval = poll;
    c
}

/// The next frame on the old socket, which must be the `replaced` error (not an envelope),
/// then the close.
async fn assert_replaced_then_closed(ws: &mut RawWs) {
    let m = tokio::time::timeout(DELIVERY, raw_recv(ws))
        .await
        .expect("the old socket was told within the deadline");
    assert_eq!(
        error_code(&m),
        Some(ErrorCode::Replaced),
        "the old socket's next frame: {m:?}"
    );
    assert_closed(ws).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_on_another_node_closes_the_old_socket() {
    let Some(db) = Db::new(Backend::Postgres) else {
        return;
    };
    let Some(nats) = NatsServer::start() else {
        return;
    };
    // a poll far longer than the test: only the NATS notice can close the old socket in time
    let slow = Duration::from_secs(3600);
    let node_a = start(node_cfg(&nats, slow), db.store()).await;
    let node_b = start(node_cfg(&nats, slow), db.store()).await;
    let (alice, _ea, _) = register(&node_a, "alice").await;
    let bob_id = identity();
    let mut old = raw_register(&node_a.url(), "bob", &bob_id).await;

    let (bob, mut bob_events) = Client::connect(client_cfg(&node_b, "bob", 1, bob_id))
        .await
        .unwrap();
    assert_replaced_then_closed(&mut old).await;

    let id = alice.send("bob", 1, 60, b"hi".to_vec()).await.unwrap();
    let e = tokio::time::timeout(DELIVERY, bob_events.next_envelope())
        .await
        .expect("delivered to the new connection")
        .unwrap();
    assert_eq!(e.envelope_id, id);
    bob.ack(id).await.unwrap();
}

/// The takeover notice is lost (node B publishes it on a NATS that node A does not hear): the
/// envelope alice sends through node A right after wakes A's stale connection, whose fenced
/// queue read closes it as `replaced` — the envelope is not written to the old socket — and the
/// new connection on B gets it at B's next poll (B's rings go to its own NATS, which A's do not
/// reach either). Without the fence, A writes the envelope to the old socket first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_takeover_notice_is_fenced_by_the_store() {
    let Some(db) = Db::new(Backend::Postgres) else {
        return;
    };
    let (Some(nats_a), Some(nats_b)) = (NatsServer::start(), NatsServer::start()) else {
        return;
    };
    let node_a = start(node_cfg(&nats_a, Duration::from_secs(3600)), db.store()).await;
    let node_b = start(node_cfg(&nats_b, Duration::from_millis(200)), db.store()).await;
    let (alice, _ea, _) = register(&node_a, "alice").await;
    let bob_id = identity();
    let mut old = raw_register(&node_a.url(), "bob", &bob_id).await;
    // the old connection's first queue read is done: it is caught up and idle
    let pong = raw_ping(&mut old).await;
    assert!(matches!(pong, Some(ServerMessage::Pong { .. })), "{pong:?}");

    let (bob, mut bob_events) = Client::connect(client_cfg(&node_b, "bob", 1, bob_id))
        .await
        .unwrap();
    let id = alice.send("bob", 1, 60, b"hi".to_vec()).await.unwrap();
    assert_replaced_then_closed(&mut old).await;

    let e = tokio::time::timeout(DELIVERY, bob_events.next_envelope())
        .await
        .expect("delivered to the new connection by its node's poll")
        .unwrap();
    assert_eq!(e.envelope_id, id);
    bob.ack(id).await.unwrap();
}

/// Sends `ping` and returns the next frame.
async fn raw_ping(ws: &mut RawWs) -> Option<ServerMessage> {
    raw_send(ws, 7, &sotto_server::protocol::ClientMessage::Ping).await;
    raw_recv(ws).await
}
